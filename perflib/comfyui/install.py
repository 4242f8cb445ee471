"""``perflib comfyui install``: put the perflib custom node package into a ComfyUI checkout.

The package (``perflib/comfyui/node/``) and perflib's graph parser are copied into
``<ComfyUI>/custom_nodes/perflib_estimate/`` (or the ``custom_nodes`` of ComfyUI's
``--base-directory``). Installing again replaces the package's files with this perflib's and
keeps what the node wrote there (its spool) and its settings unless new ones are given.
"""
from __future__ import annotations

import json
import pathlib
import shutil
from dataclasses import dataclass

from perflib.comfyui.node.settings import CONFIG_FILE

PACKAGE_NAME = "perflib_estimate"
NODE_SOURCE = pathlib.Path(__file__).resolve().parent / "node"
GRAPH_SOURCE = pathlib.Path(__file__).resolve().parent / "graph.py"
COMFYUI_MARKERS = ("main.py", "server.py", "execution.py", "nodes.py", "comfy")
SHIPPED = ("*.py", "web/*.js", "README.md")


@dataclass(frozen=True)
class Installed:
    path: pathlib.Path
    files: list[str]
    config: pathlib.Path | None


def install_node(comfyui_dir: str | pathlib.Path, service_url: str | None = None,
                 base_directory: str | pathlib.Path | None = None) -> Installed:
    """Install (or update) the node package; refuses a folder that is not a ComfyUI checkout."""
    comfyui = pathlib.Path(comfyui_dir).expanduser().resolve()
    missing = [marker for marker in COMFYUI_MARKERS if not (comfyui / marker).exists()]
    if missing:
        raise ValueError(f"{comfyui} is not a ComfyUI checkout (no {', '.join(missing)} there); "
                         "give the folder that holds ComfyUI's main.py")
    if service_url is not None and not service_url.startswith(("http://", "https://")):
        raise ValueError(f"service URL {service_url!r} must start with http:// or https://")
    custom_nodes = pathlib.Path(base_directory or comfyui).expanduser().resolve() / "custom_nodes"
    target = custom_nodes / PACKAGE_NAME
    target.mkdir(parents=True, exist_ok=True)
    files = _copy_package(target)
    config = _write_config(target, service_url) if service_url else None
    return Installed(target, files, config)


def _copy_package(target: pathlib.Path) -> list[str]:
    sources = [path for pattern in SHIPPED for path in NODE_SOURCE.glob(pattern)]
    sources.append(GRAPH_SOURCE)
    copied = []
    for source in sorted(sources):
        relative = source.name if source == GRAPH_SOURCE else source.relative_to(NODE_SOURCE)
        destination = target / relative
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, destination)
        copied.append(str(relative))
    shutil.rmtree(target / "__pycache__", ignore_errors=True)  # stale bytecode of older files
    return copied


def _write_config(target: pathlib.Path, service_url: str) -> pathlib.Path:
    """The node's settings file, with this service URL and any other settings kept."""
    path = target / CONFIG_FILE
    try:
        settings = json.loads(path.read_text()) if path.is_file() else {}
    except ValueError:
        settings = {}  # unreadable: the node ignores it too; replaced by a good one
    settings["service_url"] = service_url.rstrip("/")
    path.write_text(json.dumps(settings, indent=2) + "\n")
    return path
