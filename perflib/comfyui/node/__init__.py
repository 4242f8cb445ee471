"""perflib for ComfyUI: an estimate of every submitted prompt (time, interval, when it starts)
shown in the browser, and a job record with per-node phases of every executed prompt, sent to a
``perflib serve`` service. Installed by ``perflib comfyui install /path/to/ComfyUI``.

It adds no nodes. It imports only the standard library (``pynvml`` if present) and its copy of
perflib's graph parser; if anything of it fails, ComfyUI runs as it would without it.
"""
import logging
import pathlib
import sys

NODE_CLASS_MAPPINGS = {}
NODE_DISPLAY_NAME_MAPPINGS = {}
WEB_DIRECTORY = "./web"

logger = logging.getLogger("perflib_estimate")


def _attach():
    """Attach to the running ComfyUI server (None outside ComfyUI, e.g. imported by perflib)."""
    server = sys.modules.get("server")
    prompt_server = getattr(getattr(server, "PromptServer", None), "instance", None)
    if prompt_server is None:
        return None
    from .hooks import Integration
    from .settings import load_settings

    settings = load_settings(pathlib.Path(__file__).resolve().parent)
    return Integration(prompt_server, settings, getattr(server, "web", None)).attach()


try:
    integration = _attach()
except Exception:  # never stop ComfyUI from starting
    integration = None
    logger.exception("perflib: not attached to ComfyUI; prompts run without estimates")
