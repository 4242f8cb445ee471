"""Stored models read back: skops blobs loaded only with perflib's trusted types, models stored
by an earlier perflib read under their classes' current modules, and every loaded model checked
before use."""
from __future__ import annotations

import io
import json
import zipfile

import skops.io

from perflib.prediction.trained import (MODEL_FORMAT, IncompatibleModelError, InvalidModelError,
                                        TrainedModel, UntrustedModelError)
from perflib.store.model_registry import StoredVersion

TRUSTED_TYPES = [
    "perflib.prediction.trained.TrainedModel", "perflib.prediction.models.AnchoredRegressor",
    "perflib.prediction.models.CostModel", "perflib.prediction.models.Calibration",
    "perflib.prediction.models._signed_log1p",
    "perflib.config.ModelProfile", "numpy.dtype", "sklearn.tree._tree.Tree",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "perflib.prediction.models.MatrixEncoder", "perflib.prediction.pooling.PooledSpeeds",
]


# Where the classes of models stored by an earlier perflib live now (the package move of #18,
# then the predictor's split): a stored model names its classes' modules, and is read as if it
# named the new ones.
MOVED_MODULES = {"perflib.prediction.predictor": "perflib.prediction.trained",
                 "perflib.predictor": "perflib.prediction.trained",
                 "perflib.models": "perflib.prediction.models",
                 "perflib.pooling": "perflib.prediction.pooling"}


def with_current_modules(blob: bytes) -> bytes:
    """The skops file `blob` with the modules in MOVED_MODULES renamed in its schema (the same
    bytes when it names none)."""
    with zipfile.ZipFile(io.BytesIO(blob)) as source:
        members = {name: source.read(name) for name in source.namelist()}
    schema = json.loads(members["schema.json"])
    if not _rename_modules(schema):
        return blob
    members["schema.json"] = json.dumps(schema).encode()
    renamed = io.BytesIO()
    with zipfile.ZipFile(renamed, "w", zipfile.ZIP_DEFLATED) as target:
        for name, data in members.items():
            target.writestr(name, data)
    return renamed.getvalue()


def _rename_modules(node) -> bool:
    """Rename, in place, every ``__module__`` of `node` (a skops schema) found in
    MOVED_MODULES; whether any was."""
    renamed = False
    if isinstance(node, dict):
        if node.get("__module__") in MOVED_MODULES:
            node["__module__"] = MOVED_MODULES[node["__module__"]]
            renamed = True
        children = node.values()
    elif isinstance(node, list):
        children = node
    else:
        return False
    for child in children:
        renamed = _rename_modules(child) or renamed
    return renamed


def load_model_blob(blob: bytes) -> TrainedModel:
    """Load a stored model, refusing any blob that holds a type outside TRUSTED_TYPES, and any
    whose parts fail :meth:`TrainedModel.check` (RefusedModelError says why)."""
    try:
        blob = with_current_modules(blob)
        untrusted = skops.io.get_untrusted_types(data=blob)
    except Exception as exc:
        raise UntrustedModelError(f"stored model blob is not a readable skops file: {exc}") \
            from None
    unexpected = sorted(set(untrusted) - set(TRUSTED_TYPES))
    if unexpected:
        raise UntrustedModelError("stored model blob contains types that are not trusted and "
                                  f"was not loaded: {', '.join(unexpected)}")
    try:
        model = skops.io.loads(blob, trusted=untrusted)
    except Exception as exc:  # a damaged member raises whatever its reader raises
        raise InvalidModelError(f"stored model blob could not be loaded: "
                                f"{type(exc).__name__}: {exc}") from None
    if not isinstance(model, TrainedModel):
        raise UntrustedModelError(f"stored model blob holds a {type(model).__name__}, "
                                  "not a perflib TrainedModel")
    if getattr(model, "format", 1) != MODEL_FORMAT:
        raise IncompatibleModelError(
            f"stored model has format {getattr(model, 'format', 1)}, this perflib reads format "
            f"{MODEL_FORMAT}: retrain it (perflib train)")
    model.check()
    return model


def load_version(blob: bytes, version: StoredVersion) -> TrainedModel:
    model = load_model_blob(blob)
    model.version = version.version
    return model
