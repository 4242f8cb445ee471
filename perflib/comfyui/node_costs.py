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

from perflib.comfyui.graph import LATENT_FACTOR, ParsedPrompt

MIN_FIT = 3  # observations with different sizes before a linear fit


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


def pass_features(one: Mapping[str, Any], batches: int) -> tuple[float, float]:
    """(model calls, latent work) of a sampling pass as the job record lists it (``passes``):
    work is latent cells × model calls."""
    calls = (one.get("steps") or 0) * (one.get("model_calls_per_step") or 1) * batches
    spatial = one.get("vae_spatial_factor") or LATENT_FACTOR
    temporal = one.get("vae_temporal_factor") or 1
    frames = 1 + ((one.get("frame_count") or 1) - 1) // temporal
    cells = (one.get("width") or 0) / spatial * (one.get("height") or 0) / spatial * frames \
        * (one.get("batch_size") or 1)
    return float(calls), float(calls * cells)


def job_node_features(job: Mapping[str, Any]) -> dict[str, tuple[float, ...]]:
    """Per node id, the work features a job record (or ``ParsedPrompt.job_params()``) states:
    a sampler's (calls, work), a pixel node's (pixels,). A record made before
    ``sampler_batches`` was kept counts one batch, two when cfg > 1."""
    comfy = (job.get("extra_params") or {}).get("comfyui") or {}
    batches = comfy.get("sampler_batches") or {}
    features: dict[str, tuple[float, ...]] = {
        str(node_id): (float(pixels),) for node_id, pixels in
        (comfy.get("node_pixels") or {}).items() if isinstance(pixels, (int, float))}
    for node_id, one in zip(comfy.get("sampler_nodes") or (), job.get("passes") or ()):
        guided = 2 if (one.get("guidance_scale") or 0) > 1 else 1
        features[str(node_id)] = pass_features(one, int(batches.get(str(node_id), guided)))
    return features


def node_features(graph: Mapping[str, Any], parsed: ParsedPrompt, node_id: str
                  ) -> tuple[float, ...]:
    """The work features of one node of a parsed prompt."""
    return job_node_features(parsed.job_params()).get(node_id, ())


def observations(graph: Mapping[str, Any], parsed: ParsedPrompt,
                 node_seconds: Mapping[str, float]) -> list[NodeObservation]:
    """What one executed prompt teaches: each node it ran, with its features and seconds."""
    features = job_node_features(parsed.job_params())
    return [NodeObservation(str((graph.get(node_id) or {}).get("class_type")),
                            features.get(node_id, ()), float(seconds))
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
        features = job_node_features(parsed.job_params())
        for node_id in sorted(parsed.needed_nodes, key=_order):
            class_type = str((graph.get(node_id) or {}).get("class_type"))
            seconds = 0.0 if node_id in cached else self.seconds(
                class_type, features.get(node_id, ()))
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
