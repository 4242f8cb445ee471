"""Sizes of a prompt's input files (LoadImage, LoadImageMask), read inside ComfyUI so that the
service sizes an img2img or inpaint graph by the real file: ComfyUI's ``folder_paths`` finds the
file as the loader would, and PIL reads only its header (opening an image does not decode it).
A file that cannot be found or read is left out (the service then assumes a size and says so).
"""
from __future__ import annotations

import logging
import sys
from typing import Callable

logger = logging.getLogger("perflib_estimate")

LOADERS = ("LoadImage", "LoadImageMask", "LoadImageOutput")
MAX_FILES = 256  # as the service accepts in one request


def input_sizes(graph: dict, size_of: Callable[[str], tuple[int, int] | None] | None = None
                ) -> dict[str, dict[str, int]]:
    """``{name: {"width", "height"}}`` of the image files the graph's loaders name."""
    size_of = size_of or file_size
    sizes: dict[str, dict[str, int]] = {}
    for node in graph.values():
        name = (node.get("inputs") or {}).get("image") if isinstance(node, dict) else None
        if node.get("class_type") not in LOADERS or not isinstance(name, str) or name in sizes:
            continue
        if len(sizes) >= MAX_FILES:
            break
        size = size_of(name)
        if size is not None:
            sizes[name] = {"width": int(size[0]), "height": int(size[1])}
    return sizes


def file_size(name: str) -> tuple[int, int] | None:
    """(width, height) of an input file as ComfyUI names it (``photo.png``, ``x.png [output]``),
    from its header; None outside ComfyUI or when it cannot be read."""
    folder_paths = sys.modules.get("folder_paths")
    if folder_paths is None:
        return None
    try:
        from PIL import Image  # ComfyUI's own dependency

        with Image.open(folder_paths.get_annotated_filepath(name)) as image:
            return image.size
    except Exception as exc:
        logger.debug("perflib: no size for input %r: %s", name, exc)
        return None
