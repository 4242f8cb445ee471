"""Edits of a ComfyUI prompt that could make it faster: each changes one input of one node (or
its class), and says what it changes. Whether it saves anything, and how much, is for the
estimator to say (:mod:`perflib.comfyui.recommend`): nothing here guesses a time.

- fewer steps (a KSampler or a scheduler node): three quarters of them;
- cfg 1 (KSampler, KSamplerAdvanced, SamplerCustom, CFGGuider): ComfyUI then skips the
  negative, one model call per step instead of two;
- a sampler with one model call per step for one with two or three (heun, dpm_2, *_sde, ...);
- a lower hires scale (ImageScaleBy, LatentUpscaleBy): half the enlargement;
- an untiled VAE decode or encode for a tiled one (faster where the image fits in VRAM).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Iterator, Mapping

from perflib.comfyui.graph import MODEL_CALLS_PER_STEP, SCHEDULERS

MIN_STEPS = 8  # fewer steps are not proposed below this
CFG_NODES = {"KSampler", "KSamplerAdvanced", "SamplerCustom", "CFGGuider"}
SAMPLER_NAME_NODES = {"KSampler", "KSamplerAdvanced", "KSamplerSelect"}
SCALE_NODES = {"ImageScaleBy", "LatentUpscaleBy"}
UNTILED = {"VAEDecodeTiled": "VAEDecode", "VAEEncodeTiled": "VAEEncode"}
CLASS_INPUT = "class_type"  # an edit of the node's class, not of one of its inputs


@dataclass(frozen=True)
class GraphEdit:
    """Set `input` of node `node_id` to `new_value` (was `old_value`)."""

    node_id: str
    class_type: str
    input: str
    old_value: Any
    new_value: Any
    description: str

    def applied(self, graph: Mapping[str, Any]) -> dict[str, Any]:
        """A copy of `graph` with this edit made."""
        edited = copy.deepcopy(dict(graph))
        node = edited[self.node_id]
        if self.input == CLASS_INPUT:
            node["class_type"] = self.new_value
        else:
            node["inputs"][self.input] = self.new_value
        return edited


def candidate_edits(graph: Mapping[str, Any], nodes: set[str]) -> list[GraphEdit]:
    """Every edit this module knows for the `nodes` (the ones that will run) of `graph`."""
    edits = []
    for node_id in sorted(nodes):
        node = graph.get(node_id)
        if isinstance(node, Mapping) and isinstance(node.get("inputs"), Mapping):
            edits.extend(_node_edits(node_id, str(node.get("class_type")), node["inputs"]))
    return edits


def _node_edits(node_id: str, class_type: str, inputs: Mapping[str, Any]
                ) -> Iterator[GraphEdit]:
    steps, cfg, sampler = inputs.get("steps"), inputs.get("cfg"), inputs.get("sampler_name")
    if class_type in {"KSampler", *SCHEDULERS} and _number(steps) and steps >= MIN_STEPS:
        fewer = max(MIN_STEPS // 2, round(steps * 0.75))
        yield GraphEdit(node_id, class_type, "steps", steps, fewer,
                        f"{steps} → {fewer} steps on {class_type} {node_id}")
    if class_type in CFG_NODES and _number(cfg) and cfg > 1:
        yield GraphEdit(node_id, class_type, "cfg", cfg, 1.0,
                        f"cfg {cfg:g} → 1 on {class_type} {node_id}: one model call per step "
                        "instead of two (the negative prompt is skipped; suits distilled and "
                        "turbo models)")
    if class_type in SAMPLER_NAME_NODES and MODEL_CALLS_PER_STEP.get(str(sampler), 1) > 1:
        one_call = _one_call_sampler(str(sampler))
        yield GraphEdit(node_id, class_type, "sampler_name", sampler, one_call,
                        f"sampler {sampler} → {one_call} on {class_type} {node_id}: one model "
                        f"call per step instead of {MODEL_CALLS_PER_STEP[str(sampler)]}")
    scale = inputs.get("scale_by")
    if class_type in SCALE_NODES and _number(scale) and scale > 1.05:
        lower = round(1 + (scale - 1) / 2, 2)
        yield GraphEdit(node_id, class_type, "scale_by", scale, lower,
                        f"hires scale {scale:g} → {lower:g} on {class_type} {node_id}")
    if class_type in UNTILED:
        yield GraphEdit(node_id, class_type, CLASS_INPUT, class_type, UNTILED[class_type],
                        f"{class_type} {node_id} → {UNTILED[class_type]}: untiled, faster "
                        "where the whole image fits in the GPU's memory")


def _one_call_sampler(sampler: str) -> str:
    """The usual one-call counterpart of a multi-call sampler."""
    if "ancestral" in sampler:
        return "euler_ancestral"
    if "sde" in sampler:
        return "dpmpp_2m_sde_gpu" if sampler.endswith("_gpu") else "dpmpp_2m_sde"
    return "dpmpp_2m" if sampler.startswith("dpm") else "euler"


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
