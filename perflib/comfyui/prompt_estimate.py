"""A ComfyUI prompt as an estimate request: its graph gives the job's parameters, the caller may
add where it will run. The service's ``estimate-time`` and ``perflib estimate --comfyui-prompt``
both use this."""
from __future__ import annotations

import json
from typing import Any, Mapping

from perflib.comfyui.graph import ParsedPrompt
from perflib.comfyui.inputs import parse_with_inputs
from perflib.record import RecordError, estimate_params

FIELD = "comfyui_prompt"
GIVEN_BESIDE = ("gpu_name", "hostname", "job_type")  # what the graph cannot say
PASS_NEEDS = ("width", "height", "steps")


def prompt_estimate(prompt: Any, inputs: Mapping[str, Mapping[str, int]] | None = None,
                    **given: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """(estimate parameters, the parsed job) of an API-format prompt, as
    :func:`parsed_estimate` gives them."""
    params, job, _ = parsed_estimate(prompt, inputs, **given)
    return params, job


def parsed_estimate(prompt: Any, inputs: Mapping[str, Mapping[str, int]] | None = None,
                    **given: Any) -> tuple[dict[str, Any], dict[str, Any], ParsedPrompt]:
    """(estimate parameters, the parsed job, the parsed prompt) of an API-format prompt. `inputs`: the sizes of
    its input files (``{name: {"width", "height"}}``; the others are assumed and listed as
    ``assumed_input_sizes``). `given` may hold gpu_name, hostname and job_type. Raises
    RecordError naming ``comfyui_prompt`` when the graph is malformed or does not say enough to
    estimate it (no sampler, or a latent size nothing in it states)."""
    unexpected = sorted(set(given) - set(GIVEN_BESIDE))
    if unexpected:
        raise RecordError(unexpected[0], f"cannot be given with {FIELD}: the graph says it")
    try:
        parsed, assumed = parse_with_inputs(prompt, inputs)
    except ValueError as exc:
        raise RecordError(FIELD, str(exc)) from None
    job = parsed.job_params()
    if assumed:
        job["extra_params"]["comfyui"]["assumed_input_sizes"] = assumed
    passes = [p for p in job["passes"] if all(p.get(name) for name in PASS_NEEDS)]
    if not job["passes"]:
        raise RecordError(FIELD, "no sampling pass (KSampler, SamplerCustom, ...) reaches an "
                                 "output node: nothing to estimate")
    if passes[:1] != job["passes"][:1]:
        unknown = job["extra_params"]["comfyui"]["unknown_sizes"]
        raise RecordError(FIELD, "the first sampling pass's size or steps are not in the graph"
                          + (f" (the size comes from node {', '.join(unknown)}, which says "
                             "nothing of it)" if unknown else ""))
    params = {name: value for name, value in job.items()
              if name != "extra_params" and value is not None}
    params.update(passes=passes, **{name: value for name, value in given.items()
                                    if value is not None})
    return estimate_params(params), job, parsed


def read_prompt_file(path: str) -> dict[str, Any]:
    """The API-format prompt in a JSON file: the graph itself, or a ``/prompt`` body holding it
    under ``"prompt"``. A UI workflow (the editor's own save format) is refused with how to get
    the API format."""
    try:
        with open(path, encoding="utf-8") as handle:
            document = json.load(handle)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not JSON ({exc})") from None
    if isinstance(document, dict) and isinstance(document.get("prompt"), dict):
        document = document["prompt"]
    if isinstance(document, dict) and isinstance(document.get("nodes"), list) \
            and "links" in document:
        raise ValueError(f"{path}: a ComfyUI UI workflow, not the API format: export it with "
                         "Workflow → Export (API)")
    if not isinstance(document, dict):
        raise ValueError(f"{path}: a ComfyUI prompt is a JSON object of nodes")
    return document
