"""Checks of a stored correction's fitted scikit-learn parts, made before it predicts anything.

scikit-learn's tree code follows the child and feature indices it is given without bounds
checks: in a damaged stored model an index out of range crashes the process, and a child that
leads back up the tree loops forever. So every tree — a forest's or classic gradient
boosting's ``tree_``, histogram gradient boosting's ``TreePredictor`` — is checked first: each
split node's children come after it and within the tree (so every path ends at a leaf), its
feature is one the estimator is given, its threshold a number (not NaN or -inf; +inf is
scikit-learn's own mark for "missing values to the right"), and every node value is finite. A
network's weights must chain from its input width to one output, all finite. The checks are a
few vectorised passes per tree.
"""
from __future__ import annotations

import numbers
from typing import Any, Iterator

import numpy as np
from sklearn.ensemble._hist_gradient_boosting.predictor import TreePredictor
from sklearn.tree._tree import Tree

TREE_LEAF = -1  # sklearn.tree._tree.TREE_LEAF: the children of a leaf
HIST_NODE_FIELDS = {"value", "feature_idx", "num_threshold", "left", "right", "is_leaf",
                    "is_categorical"}


def check_learner(learner: Any, name: str) -> None:
    """Raise ValueError naming the part at fault unless every tree and network weight inside
    `learner` (a pipeline, an ensemble or one estimator) is sound."""
    steps = getattr(learner, "steps", None)
    if steps is not None:
        if not isinstance(steps, list):
            raise ValueError(f"{name}.steps is a {type(steps).__name__}, not a list")
        for position, step in enumerate(steps):
            if not isinstance(step, tuple) or len(step) != 2:
                raise ValueError(f"{name}.steps[{position}] is not a (name, estimator) pair")
            check_learner(step[1], f"{name}.steps[{position}]")
        return
    trees = list(_trees(learner, name))
    if trees or hasattr(learner, "coefs_"):
        width = _input_width(learner, name)
        for where, tree in trees:
            check_tree(tree, width, where)
        if hasattr(learner, "coefs_"):
            check_network(learner, width, name)
    for where, member in _members(learner, name):
        if not hasattr(member, "tree_"):  # a member tree is its ensemble's, checked above
            check_learner(member, where)


def _members(learner: Any, name: str) -> Iterator[tuple[str, Any]]:
    members = getattr(learner, "estimators_", None)
    if members is None:
        return
    if isinstance(members, np.ndarray) and members.dtype == object:
        members = list(members.ravel())  # classic gradient boosting: iterations × outputs
    if not isinstance(members, list):
        raise ValueError(f"{name}.estimators_ is a {type(members).__name__}, not a list")
    for position, member in enumerate(members):
        yield f"{name}.estimators_[{position}]", member


def _trees(learner: Any, name: str) -> Iterator[tuple[str, Any]]:
    """(name, tree) of each tree `learner` predicts with: its own, its members', or its
    boosting iterations'."""
    if hasattr(learner, "tree_"):
        yield f"{name}.tree_", learner.tree_
    for where, member in _members(learner, name):
        if hasattr(member, "tree_"):
            yield f"{where}.tree_", member.tree_
    iterations = getattr(learner, "_predictors", None)
    if iterations is None:
        return
    if not isinstance(iterations, list) or not all(isinstance(i, list) for i in iterations):
        raise ValueError(f"{name}._predictors is not a list of lists of trees")
    for iteration, predictors in enumerate(iterations):
        for position, predictor in enumerate(predictors):
            yield f"{name}._predictors[{iteration}][{position}]", predictor


def _input_width(learner: Any, name: str) -> int:
    """How many features `learner` is given (predict refuses any other number)."""
    width = getattr(learner, "n_features_in_", None)
    if isinstance(width, bool) or not isinstance(width, numbers.Integral) or width < 1:
        raise ValueError(f"{name}.n_features_in_ is not a positive whole number")
    return int(width)


def check_tree(tree: Any, width: int, name: str) -> None:
    """Raise ValueError unless `tree` (a scikit-learn ``Tree`` or ``TreePredictor``) is a sound
    tree over `width` features."""
    if isinstance(tree, Tree):
        _check_sklearn_tree(tree, width, name)
    elif isinstance(tree, TreePredictor):
        _check_hist_tree(tree, width, name)
    else:
        raise ValueError(f"{name} is a {type(tree).__name__}, not a scikit-learn tree")


def _check_sklearn_tree(tree: Tree, width: int, name: str) -> None:
    count = tree.node_count
    if not 0 < count <= tree.capacity:  # before any array is read: each spans `count` nodes
        raise ValueError(f"{name} counts {count} nodes in an array of {tree.capacity}")
    if tree.n_features != width:
        raise ValueError(f"{name} reads {tree.n_features} features; its estimator is given "
                         f"{width}")
    if (tree.n_outputs, tree.max_n_classes) != (1, 1):
        raise ValueError(f"{name}.value has shape ({count}, {tree.n_outputs}, "
                         f"{tree.max_n_classes}), not one value per node ({count}, 1, 1)")
    left, right = tree.children_left, tree.children_right
    split = left != TREE_LEAF
    half = np.flatnonzero(~split & (right != TREE_LEAF))
    if len(half):
        raise ValueError(f"{name}: node {half[0]} has a right child but no left one")
    _check_nodes(name, width, split, left, right, tree.feature, tree.threshold, tree.value)


def _check_hist_tree(tree: TreePredictor, width: int, name: str) -> None:
    nodes = getattr(tree, "nodes", None)
    if not isinstance(nodes, np.ndarray) or nodes.ndim != 1 or not len(nodes) or \
            not HIST_NODE_FIELDS <= set(nodes.dtype.names or ()):
        raise ValueError(f"{name}.nodes is not an array of tree nodes")
    split = nodes["is_leaf"] == 0
    categorical = np.flatnonzero(split & (nodes["is_categorical"] != 0))
    if len(categorical):  # perflib's trees split on category codes as numbers
        raise ValueError(f"{name}: node {categorical[0]} splits on categories")
    _check_nodes(name, width, split, nodes["left"], nodes["right"], nodes["feature_idx"],
                 nodes["num_threshold"], nodes["value"])


def _check_nodes(name: str, width: int, split: np.ndarray, left, right, feature, threshold,
                 values) -> None:
    """Each split node's children later in the tree and within it, its feature among the
    `width` given and its threshold a number; every value finite."""
    count = len(split)
    position = np.arange(count)
    for side, child in (("left", left), ("right", right)):
        child = np.asarray(child, dtype=np.int64)
        wrong = np.flatnonzero(split & ((child <= position) | (child >= count)))
        if len(wrong):
            raise ValueError(f"{name}: node {wrong[0]}'s {side} child is {child[wrong[0]]}, "
                             f"not a later node of the {count} (out of range, or a loop)")
    feature = np.asarray(feature, dtype=np.int64)
    wrong = np.flatnonzero(split & ((feature < 0) | (feature >= width)))
    if len(wrong):
        raise ValueError(f"{name}: node {wrong[0]} splits on feature {feature[wrong[0]]}, "
                         f"not one of the {width} given")
    threshold = np.asarray(threshold, dtype=float)
    wrong = np.flatnonzero(split & (np.isnan(threshold) | (threshold == -np.inf)))
    if len(wrong):
        raise ValueError(f"{name}: node {wrong[0]}'s threshold is {threshold[wrong[0]]}, not "
                         "a number")
    if not np.isfinite(np.asarray(values, dtype=float)).all():
        raise ValueError(f"{name} holds node values that are not finite (NaN or infinite)")


def check_network(network: Any, width: int, name: str) -> None:
    """Raise ValueError unless a network's weight matrices and biases chain from `width`
    inputs to one output, all finite."""
    coefs, intercepts = getattr(network, "coefs_", None), getattr(network, "intercepts_", None)
    if not isinstance(coefs, list) or not isinstance(intercepts, list) or not coefs or \
            len(coefs) != len(intercepts):
        raise ValueError(f"{name}.coefs_ and intercepts_ are not lists of one array per layer")
    inputs = width
    for layer, (weights, bias) in enumerate(zip(coefs, intercepts)):
        if not isinstance(weights, np.ndarray) or weights.dtype.kind != "f" or \
                weights.ndim != 2 or weights.shape[0] != inputs:
            raise ValueError(f"{name}.coefs_[{layer}] is not a matrix of {inputs} rows")
        if not isinstance(bias, np.ndarray) or bias.dtype.kind != "f" or \
                bias.shape != weights.shape[1:]:
            raise ValueError(f"{name}.intercepts_[{layer}] does not have shape "
                             f"{weights.shape[1:]}")
        if not (np.isfinite(weights).all() and np.isfinite(bias).all()):
            raise ValueError(f"{name} layer {layer} holds weights that are not finite")
        inputs = weights.shape[1]
    if inputs != 1:
        raise ValueError(f"{name} has {inputs} outputs, not one")
