"""``perflib comfyui install``: put the perflib custom node package into a ComfyUI checkout.

The package (``perflib/comfyui/node/``) and perflib's graph parser are copied into
``<ComfyUI>/custom_nodes/perflib_estimate/`` (or the ``custom_nodes`` of ComfyUI's
``--base-directory``). Installing again replaces the package's files with this perflib's and
keeps what the node wrote there (its spool) and its settings unless new ones are given.

Refused: a checkout without ComfyUI's files, a base directory without ComfyUI's folders, and a
symbolic link anywhere the install would write (the package folder, a file or folder in it), so
an install never writes through a link to a file elsewhere.
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
COMFYUI_MARKERS = ("main.py", "server.py", "execution.py", "nodes.py", "folder_paths.py",
                   "comfy", "custom_nodes")
# A base directory holds custom_nodes/ (ComfyUI lists it at start) and some of its data folders.
BASE_FOLDERS = ("models", "input", "output", "user")
SHIPPED = ("*.py", "web/*.js", "README.md")


@dataclass(frozen=True)
class Installed:
    path: pathlib.Path
    files: list[str]
    config: pathlib.Path | None


def install_node(comfyui_dir: str | pathlib.Path, service_url: str | None = None,
                 base_directory: str | pathlib.Path | None = None) -> Installed:
    """Install (or update) the node package; ValueError for a folder that is not ComfyUI's,
    a service URL that is not HTTP, or a symbolic link where the install would write."""
    comfyui = pathlib.Path(comfyui_dir).expanduser().resolve()
    missing = [marker for marker in COMFYUI_MARKERS if not (comfyui / marker).exists()]
    if missing:
        raise ValueError(f"{comfyui} is not a ComfyUI checkout (no {', '.join(missing)} there); "
                         "give the folder that holds ComfyUI's main.py")
    if service_url is not None and not service_url.startswith(("http://", "https://")):
        raise ValueError(f"service URL {service_url!r} must start with http:// or https://")
    base = _base_directory(base_directory) if base_directory else comfyui
    target = base / "custom_nodes" / PACKAGE_NAME
    shipped = _shipped()
    written = [relative for _, relative in shipped]
    _refuse_links(target, [*written, CONFIG_FILE] if service_url else written)
    target.mkdir(exist_ok=True)
    files = _copy_package(target, shipped)
    config = _write_config(target, service_url) if service_url else None
    return Installed(target, files, config)


def _base_directory(folder: str | pathlib.Path) -> pathlib.Path:
    """ComfyUI's ``--base-directory``: it must hold custom_nodes/ and a data folder."""
    base = pathlib.Path(folder).expanduser().resolve()
    if not (base / "custom_nodes").is_dir() or \
            not any((base / name).is_dir() for name in BASE_FOLDERS):
        raise ValueError(f"{base} is not a ComfyUI base directory (it needs a custom_nodes "
                         f"folder and one of {', '.join(BASE_FOLDERS)}); give the folder "
                         "ComfyUI's --base-directory names")
    return base


def _shipped() -> list[tuple[pathlib.Path, pathlib.PurePath]]:
    """Each file the package ships, with its path in the installed package."""
    sources = [path for pattern in SHIPPED for path in NODE_SOURCE.glob(pattern)]
    return sorted([(source, source.relative_to(NODE_SOURCE)) for source in sources]
                  + [(GRAPH_SOURCE, pathlib.PurePath(GRAPH_SOURCE.name))])


def _refuse_links(target: pathlib.Path, written: list) -> None:
    """ValueError naming the first symbolic link among the paths the install writes: the
    package folder, and each file it writes with the folders between."""
    paths = {target}
    for relative in written:
        parts = pathlib.PurePath(relative).parts
        paths.update(target.joinpath(*parts[:depth]) for depth in range(1, len(parts) + 1))
    for path in sorted(paths):
        if path.is_symlink():
            raise ValueError(f"{path} is a symbolic link: the install writes only real files "
                             f"and folders in {target} (remove the link and install again)")


def _copy_package(target: pathlib.Path,
                  shipped: list[tuple[pathlib.Path, pathlib.PurePath]]) -> list[str]:
    for source, relative in shipped:
        destination = target / relative
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, destination)
    shutil.rmtree(target / "__pycache__", ignore_errors=True)  # stale bytecode of older files
    return [str(relative) for _, relative in shipped]


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
