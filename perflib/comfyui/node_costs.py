"""Seconds per ComfyUI node class, learned from the per-node phases of executed prompts
(``"<node id>:<class>"``), and a prompt priced as the sum over the nodes that will run.

- a sampler (KSampler, ...): ``a + b·model calls + c·latent work``, where model calls are steps ×
  calls per step × conditioning batches (cfg > 1 adds the negative; every extra conditioning
  that ConditioningCombine joins adds another UNet batch per step) and latent work is the
  latent cells those calls process;
- a decode, encode, scale or save node: ``a + b·pixels`` (its ``node_pixels``);
- any other node (loaders, text encoders): its median time.

Fits are least squares with non-negative coefficients (scikit-learn), so a cost never falls as
work grows. A class with too few observations has no fit: :meth:`NodeCosts.price` then leaves
the node to the caller's prior.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import numpy as np

from perflib.comfyui.graph import LATENT_FACTOR, ParsedPrompt, SamplingPass

MIN_FIT = 3  # observations with different sizes before a linear fit
COMBINERS = {"ConditioningCombine"}  # each joins two conditionings: one more UNet batch


@dataclass(frozen=True)
class NodeObservation:
    """One executed node: its class, its work features (empty: a fixed cost) and seconds."""

    class_type: str
    features: tuple[float, ...]
    seconds: float


@dataclass(frozen=True)
class NodePrice:
    node_id: str
    class_type: str
    seconds: float | None  # None: nothing learned for its class
    cached: bool

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.node_id, "class_type": self.class_type,
                "seconds": round(self.seconds or 0.0, 4), "cached": self.cached}


def sampler_features(graph: Mapping[str, Any], one: SamplingPass) -> tuple[float, float]:
    """(model calls, latent work) of a sampling pass: work is latent cells × model calls."""
    calls = (one.steps or 0) * one.model_calls_per_step * conditioning_batches(
        graph, one.node_id, (one.guidance_scale or 0) > 1)
    spatial = LATENT_FACTOR if not one.geometry else one.geometry[1]
    temporal = 1 if not one.geometry else one.geometry[0]
    frames = 1 + ((one.frame_count or 1) - 1) // temporal
    cells = (one.width or 0) / spatial * (one.height or 0) / spatial * frames \
        * (one.batch_size or 1)
    return float(calls), float(calls * cells)


def conditioning_batches(graph: Mapping[str, Any], sampler: str, guided: bool) -> int:
    """UNet batches per step: one per positive conditioning, plus the negatives when cfg > 1
    (a ConditioningCombine counts both of its sides)."""
    inputs = (graph.get(sampler) or {}).get("inputs") or {}
    sides = ("positive", "negative") if guided else ("positive",)
    return sum(_conditionings(graph, inputs.get(side), set()) for side in sides) or 1


def _conditionings(graph: Mapping[str, Any], link: Any, seen: set[str]) -> int:
    if not isinstance(link, list) or str(link[0]) in seen or str(link[0]) not in graph:
        return 1
    seen.add(str(link[0]))
    node = graph[str(link[0])]
    if node.get("class_type") not in COMBINERS:
        return 1
    inputs = node.get("inputs") or {}
    return sum(_conditionings(graph, inputs.get(name), seen)
               for name in ("conditioning_1", "conditioning_2"))


def node_features(graph: Mapping[str, Any], parsed: ParsedPrompt, node_id: str
                  ) -> tuple[float, ...]:
    """The work features of a node: a sampler's (calls, work), a pixel node's (pixels,)."""
    passes = {one.node_id: one for one in parsed.passes}
    if node_id in passes:
        return sampler_features(graph, passes[node_id])
    if node_id in parsed.node_pixels:
        return (float(parsed.node_pixels[node_id]),)
    return ()


def observations(graph: Mapping[str, Any], parsed: ParsedPrompt,
                 node_seconds: Mapping[str, float]) -> list[NodeObservation]:
    """What one executed prompt teaches: each node it ran, with its features and seconds."""
    return [NodeObservation(str((graph.get(node_id) or {}).get("class_type")),
                            node_features(graph, parsed, node_id), float(seconds))
            for node_id, seconds in node_seconds.items() if node_id in graph]


class NodeCosts:
    """Per node class, a cost fitted on observations (``fit`` returns self)."""

    def fit(self, seen: Iterable[NodeObservation]) -> "NodeCosts":
        by_class: dict[str, list[NodeObservation]] = {}
        for one in seen:
            by_class.setdefault(one.class_type, []).append(one)
        self.costs_ = {class_type: _fitted(rows) for class_type, rows in by_class.items()}
        return self

    def seconds(self, class_type: str, features: tuple[float, ...]) -> float | None:
        """Predicted seconds of a node of `class_type` doing `features`; None: not learned."""
        cost = self.costs_.get(class_type)
        if cost is None or len(cost) != len(features) + 1:
            return None
        return max(0.0, float(cost[0] + np.dot(cost[1:], features)))

    def price(self, graph: Mapping[str, Any], parsed: ParsedPrompt, cached: set[str]
              ) -> list[NodePrice]:
        """Every node the prompt needs, in id order: 0 s when cached, else its class's cost."""
        prices = []
        for node_id in sorted(parsed.needed_nodes, key=_order):
            class_type = str((graph.get(node_id) or {}).get("class_type"))
            seconds = 0.0 if node_id in cached else self.seconds(
                class_type, node_features(graph, parsed, node_id))
            prices.append(NodePrice(node_id, class_type, seconds, node_id in cached))
        return prices


def _fitted(rows: list[NodeObservation]) -> np.ndarray | None:
    """[intercept, coefficients…] of a class: a non-negative linear fit where the features vary
    enough, else the median seconds per unit of the first feature, else the median."""
    seconds = np.array([row.seconds for row in rows])
    widths = {len(row.features) for row in rows}
    if widths == {0}:
        return np.array([float(np.median(seconds))])
    features = np.array([row.features for row in rows if len(row.features) == max(widths)])
    seconds = np.array([row.seconds for row in rows if len(row.features) == max(widths)])
    if len(features) >= MIN_FIT and len(np.unique(features[:, -1])) >= 2:
        from sklearn.linear_model import LinearRegression

        model = LinearRegression(positive=True).fit(features, seconds)
        return np.concatenate([[max(float(model.intercept_), 0.0)], model.coef_])
    per_unit = float(np.median(seconds / np.maximum(features[:, -1], 1.0)))
    return np.array([0.0, *([0.0] * (features.shape[1] - 1)), per_unit])


def _order(node_id: str) -> tuple:
    return (0, int(node_id), "") if node_id.isdigit() else (1, 0, node_id)
