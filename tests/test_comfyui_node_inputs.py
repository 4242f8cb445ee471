"""Inside ComfyUI the node sizes a prompt's input files from their headers, found the way
ComfyUI's loaders find them (``folder_paths.get_annotated_filepath``), and sends the sizes as
``comfyui_inputs``."""
from __future__ import annotations

import importlib
import sys
import types

from PIL import Image

from tests.test_comfyui_graph import img2img_graph
from tests.test_comfyui_inputs import inpaint_graph
from tests.test_comfyui_node import comfyui_dir, load_package, package  # noqa: F401 (fixtures)


def folder_paths_for(folder) -> types.ModuleType:
    """ComfyUI's folder_paths as far as the node uses it: annotated names → input files."""
    module = types.ModuleType("folder_paths")
    module.get_annotated_filepath = lambda name: str(folder / name.removesuffix(" [input]"))
    return module


def test_input_files_are_sized_from_their_headers(package, tmp_path, monkeypatch):
    Image.new("RGB", (640, 384)).save(tmp_path / "room.png")
    Image.new("L", (640, 384)).save(tmp_path / "room-mask.png")
    monkeypatch.setitem(sys.modules, "folder_paths", folder_paths_for(tmp_path))
    files = importlib.import_module(f"{package.__name__}.input_files")
    assert files.input_sizes(inpaint_graph("VAEEncodeForInpaint")) == {
        "room.png": {"width": 640, "height": 384},
        "room-mask.png": {"width": 640, "height": 384}}


def test_a_missing_or_unreadable_file_is_left_out(package, tmp_path, monkeypatch):
    (tmp_path / "photo.png").write_text("not an image")
    monkeypatch.setitem(sys.modules, "folder_paths", folder_paths_for(tmp_path))
    files = importlib.import_module(f"{package.__name__}.input_files")
    assert files.input_sizes(img2img_graph(with_scale=False)) == {}
    monkeypatch.delitem(sys.modules, "folder_paths")
    assert files.input_sizes(img2img_graph(with_scale=False)) == {}  # outside ComfyUI
