"""A stored model made only of trusted types but with damaged trees — a child index out of range
or back to the root, a feature the estimator is not given, a NaN threshold or value — or a
network whose weights do not chain, is refused before anything predicts with it (scikit-learn
follows tree indices unchecked: such a model crashed the service or hung it at 100% CPU), and
the previous version, else the heuristic, answers."""
from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import pytest
import skops.io
import sqlalchemy as sa

from perflib.config import Settings
from perflib.prediction.predictor import InvalidModelError, PerformancePredictor, load_model_blob
from perflib.serve import create_app
from perflib.sim.simulate import generate_jobs
from perflib.store import Store
from perflib.store.model_checks import check_learner
from perflib.store.schema import performance_prediction_models as models_table
from tests.test_model_fallback import API, VIDEO, _copy, _edit_blob, _sound

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette's notice about httpx
    from fastapi.testclient import TestClient

TREE_FAMILIES = ("random_forest", "gradient_boosting")
# The fields of a tree's nodes array: scikit-learn's Tree (a forest's trees) and histogram
# gradient boosting's TreePredictor name them differently.
FIELDS = {"Tree": {"left": "left_child", "right": "right_child", "feature": "feature",
                   "threshold": "threshold"},
          "TreePredictor": {"left": "left", "right": "right",
                            "feature": "feature_idx", "threshold": "num_threshold"}}


# -- tampering with the first tree of a stored skops blob ---------------------------------------
def _first_tree(node):
    """The schema node of the first tree (depth first), or None."""
    if isinstance(node, dict):
        if node.get("__class__") in FIELDS:
            return node
        children = node.values()
    elif isinstance(node, list):
        children = node
    else:
        return None
    return next((tree for child in children if (tree := _first_tree(child))), None)


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _tampered(blob: bytes, change) -> bytes:
    """`blob` with `change(nodes, values, fields)` applied to its first tree's nodes array and
    node values (a view into the nodes where they hold them)."""
    def edit(schema, members):
        tree = _first_tree(schema)
        state = tree["content"]["content"]
        nodes = np.load(io.BytesIO(members[state["nodes"]["file"]]))
        separate = "values" in state
        values = np.load(io.BytesIO(members[state["values"]["file"]])) if separate \
            else nodes["value"]
        change(nodes, values, FIELDS[tree["__class__"]])
        members[state["nodes"]["file"]] = _npy(nodes)
        if separate:
            members[state["values"]["file"]] = _npy(values)
    return _edit_blob(blob, edit)


def child_back_to_the_root(nodes, values, field):
    nodes[field["left"]][0] = nodes[field["right"]][0] = 0


def child_out_of_range(nodes, values, field):
    nodes[field["left"]][0] = nodes[field["right"]][0] = 10 ** 6


def feature_out_of_range(nodes, values, field):
    nodes[field["feature"]][0] = 999


def nan_threshold(nodes, values, field):
    nodes[field["threshold"]][0] = np.nan


def nan_value(nodes, values, field):
    values[-1] = np.nan


TAMPERINGS = {"a child back to the root": (child_back_to_the_root, "left child is 0, not a later"),
              "a child out of range": (child_out_of_range, "left child is 1000000"),
              "a feature out of range": (feature_out_of_range, "feature 999, not one of the"),
              "a NaN threshold": (nan_threshold, "threshold is nan"),
              "a NaN node value": (nan_value, "node values that are not finite")}


# -- stored models --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def stored(tmp_path_factory) -> dict[str, Path]:
    """Per tree family, a database with a week of simulated history and video v1 and v2 of
    that family stored (v2 active), trained through perflib's own training path."""
    jobs = list(generate_jobs(weeks=1, gpus=2, seed=0))
    paths = {}
    for family in TREE_FAMILIES:
        paths[family] = tmp_path_factory.mktemp(family) / "perflib.db"
        store = Store(f"sqlite:///{paths[family]}")
        store.write_jobs(jobs)
        predictor = PerformancePredictor(store)
        predictor.train_model("video", family)
        for _ in range(2):
            predictor.save_model_to_db("video", family)
    return paths


def _blob(store: Store, version: int) -> bytes:
    with store.engine.connect() as conn:
        return conn.execute(sa.select(models_table.c.blob).where(
            models_table.c.version == version)).scalar_one()


def _tamper_stored(store: Store, version: int, change) -> None:
    blob = _tampered(_blob(store, version), change)
    with store.engine.begin() as conn:
        conn.execute(sa.update(models_table).where(models_table.c.version == version)
                     .values(blob=blob))


@pytest.mark.parametrize("tampering", TAMPERINGS)
@pytest.mark.parametrize("family", TREE_FAMILIES)
def test_a_tampered_tree_is_refused_at_load_with_its_reason(stored, tmp_path, family,
                                                            tampering):
    change, reason = TAMPERINGS[tampering]
    store = _copy(stored[family], tmp_path)
    assert load_model_blob(_blob(store, 2)).family == family  # untouched, it is accepted
    with pytest.raises(InvalidModelError, match=reason) as refused:
        load_model_blob(_tampered(_blob(store, 2), change))
    assert str(refused.value).startswith("estimator.correction_.steps[1].")


@pytest.mark.parametrize("tampering", TAMPERINGS)
@pytest.mark.parametrize("family", TREE_FAMILIES)
def test_a_tampered_active_model_gives_way_to_the_previous_version(stored, tmp_path, family,
                                                                   tampering):
    change, reason = TAMPERINGS[tampering]
    store = _copy(stored[family], tmp_path)
    _tamper_stored(store, 2, change)
    predictor = PerformancePredictor(store)
    answers = [predictor.estimate(VIDEO) for _ in range(2)]
    assert all(_sound(answer) and answer["model_used"] == f"{family} v1 (video)"
               for answer in answers)
    [refused] = predictor.model_status()["video"]["refused"]
    assert refused["version"] == 2 and reason in refused["reason"]


@pytest.mark.parametrize("family", TREE_FAMILIES)
def test_the_service_answers_with_the_heuristic_when_its_only_model_loops(stored, tmp_path,
                                                                          db_url, family):
    """On SQLite and PostgreSQL: estimate-time (through the shared batcher) and model-status
    answer, and say why the stored model is not used."""
    store = Store(db_url, Settings(spool_dir=tmp_path / "spool"))
    source = _copy(stored[family], tmp_path / "source")
    with source.engine.connect() as conn:
        row = conn.execute(sa.select(models_table).where(models_table.c.version == 2)
                           ).mappings().one()
    store.write_jobs(list(generate_jobs(weeks=1, gpus=2, seed=0)))
    with store.engine.begin() as conn:
        conn.execute(sa.insert(models_table).values(
            {**{key: value for key, value in row.items() if key != "id"}, "is_active": True,
             "blob": _tampered(row["blob"], child_back_to_the_root)}))
    with TestClient(base_url="http://127.0.0.1", app=create_app(store)) as client:
        answers = [client.post(f"{API}/estimate-time", json=VIDEO) for _ in range(2)]
        status = client.get(f"{API}/model-status")
    assert all(answer.status_code == 200 for answer in answers), answers[0].text
    assert all(_sound(answer.json()) and answer.json()["model_used"] == "heuristic"
               for answer in answers)
    video = status.json()["video"]
    assert video["heuristic_in_use"] is True and video["active"]["family"] == family
    [refused] = video["refused"]
    assert "left child is 0, not a later node" in refused["reason"]


def test_an_infinite_threshold_is_scikit_learns_own_and_accepted(stored, tmp_path):
    """+inf is how scikit-learn marks a split of missing values from all others."""
    def infinite_threshold(nodes, values, field):
        nodes[field["threshold"]][0] = np.inf

    store = _copy(stored["random_forest"], tmp_path)
    assert load_model_blob(_tampered(_blob(store, 2), infinite_threshold)).family == \
        "random_forest"


# -- networks -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def network_blob(tmp_path_factory) -> bytes:
    store = Store(f"sqlite:///{tmp_path_factory.mktemp('network') / 'perflib.db'}")
    store.write_jobs(list(generate_jobs(weeks=1, gpus=2, seed=0)))
    predictor = PerformancePredictor(store)
    predictor.train_model("video", "neural_network")
    return skops.io.dumps(predictor.trained_model("video", "neural_network"))


def _network_arrays(schema: dict, part: str) -> list[str]:
    """The .npy members of the fitted network's coefs_ or intercepts_, layer by layer."""
    found = []

    def walk(node):
        if isinstance(node, dict):
            if node.get("__class__") == "MLPRegressor" and part in node["content"]["content"]:
                found.extend(item["file"] for item in node["content"]["content"][part]["content"])
                return
            for child in node.values():
                walk(child)
        elif isinstance(node, list):
            for child in node:
                walk(child)
    walk(schema)
    return found


@pytest.mark.parametrize("part, layer, damage, reason", [
    ("coefs_", 1, lambda weights: weights[:-1], r"coefs_\[1\] is not a matrix of 16 rows"),
    ("intercepts_", 0, lambda bias: np.full_like(bias, np.nan), "layer 0 holds weights that"),
])
def test_a_network_whose_weights_do_not_chain_is_refused_naming_the_layer(
        network_blob, part, layer, damage, reason):
    def edit(schema, members):
        name = _network_arrays(schema, part)[layer]
        members[name] = _npy(damage(np.load(io.BytesIO(members[name]))))

    assert load_model_blob(network_blob).family == "neural_network"
    with pytest.raises(InvalidModelError, match=reason):
        load_model_blob(_edit_blob(network_blob, edit))


def test_a_tree_of_another_type_or_without_features_is_refused(stored, tmp_path):
    model = load_model_blob(_blob(_copy(stored["gradient_boosting"], tmp_path), 2))
    boosting = model.estimator.correction_[-1]
    boosting._predictors[0][0] = "not a tree"
    with pytest.raises(ValueError, match=r"_predictors\[0\]\[0\] is a str, not a scikit"):
        check_learner(model.estimator.correction_, "correction")
    boosting.n_features_in_ = None
    with pytest.raises(ValueError, match="n_features_in_ is not a positive whole number"):
        check_learner(boosting, "correction")
