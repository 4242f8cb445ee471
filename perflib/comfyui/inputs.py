"""Input files of an img2img or inpaint graph (LoadImage, LoadImageMask): their sizes, given by
the caller (``comfyui_inputs``), else assumed and said so, so such a graph is always estimated.

The caller is the custom node (it reads each file's header inside ComfyUI) or an API client. A
size the caller does not give is assumed to be :data:`ASSUMED_SIZE` and listed in the parsed job
as ``assumed_input_sizes``.
"""
from __future__ import annotations

from typing import Any, Mapping

from perflib.comfyui.graph import IMAGE_LOADERS, ParsedPrompt, parse_prompt

ASSUMED_SIZE = (512, 512)  # an SD1.5-sized input: what an unknown file is taken to be
MAX_INPUTS = 256  # input files named in one request
MAX_INPUT_SIDE = 16_384  # pixels, as ComfyUI's own MAX_RESOLUTION
MAX_NAME_LENGTH = 1024


def parse_with_inputs(prompt: Any, inputs: Mapping[str, Mapping[str, int]] | None = None
                      ) -> tuple[ParsedPrompt, dict[str, dict[str, int]]]:
    """The parsed prompt, its input files sized from `inputs` (``{name: {"width", "height"}}``)
    and the rest assumed, and the sizes assumed by file name. Raises ValueError as
    :func:`parse_prompt` does."""
    sizes = {name: (size["width"], size["height"]) for name, size in (inputs or {}).items()}
    parsed = parse_prompt(prompt, input_sizes=sizes)
    unsized = _unsized_files(prompt, parsed)
    if not unsized:
        return parsed, {}
    assumed = {name: ASSUMED_SIZE for name in unsized}
    parsed = parse_prompt(prompt, input_sizes={**sizes, **assumed})
    return parsed, {name: {"width": ASSUMED_SIZE[0], "height": ASSUMED_SIZE[1]}
                    for name in unsized}


def _unsized_files(prompt: Mapping[str, Any], parsed: ParsedPrompt) -> list[str]:
    """File names of the image loaders whose size the parse could not know."""
    names = []
    for node_id in parsed.unknown_sizes:
        node = prompt.get(node_id) or prompt.get(_as_key(prompt, node_id)) or {}
        name = (node.get("inputs") or {}).get("image")
        if node.get("class_type") in IMAGE_LOADERS and isinstance(name, str) \
                and name not in names:
            names.append(name)
    return names


def _as_key(prompt: Mapping[str, Any], node_id: str) -> Any:
    """The prompt's own key of `node_id` (a JSON body's keys are text; a Python caller's may be
    numbers)."""
    return next((key for key in prompt if str(key) == node_id), node_id)
