"""What the node sends to the browser's panel: the prompt's total, its slowest nodes (shown on
hover and on click), and the top two recommendations; and how the panel words them."""
from __future__ import annotations

import json
import shutil
import subprocess

import pytest

import tests.test_comfyui_node as node_tests
from perflib.comfyui.install import PACKAGE_NAME, install_node
from tests.clock import FakeClock
from tests.test_comfyui_node_queue import board_with

comfyui_dir, package = node_tests.comfyui_dir, node_tests.package  # fixtures

NODES = [{"id": "3", "class_type": "KSampler", "seconds": 9.0, "cached": False},
         {"id": "4", "class_type": "CheckpointLoaderSimple", "seconds": 0.0, "cached": True},
         {"id": "8", "class_type": "VAEDecodeTiled", "seconds": 2.5, "cached": False},
         {"id": "9", "class_type": "SaveImage", "seconds": 0.1, "cached": False},
         {"id": "7", "class_type": "CLIPTextEncode", "seconds": 0.2, "cached": False}]
EDITS = [{"node_id": "3", "input": "steps", "new_value": 15, "seconds_saved": 2.2,
          "description": "20 → 15 steps on KSampler 3"},
         {"node_id": "3", "input": "cfg", "new_value": 1.0, "seconds_saved": 4.4,
          "description": "cfg 7 → 1 on KSampler 3"},
         {"node_id": "8", "input": "class_type", "new_value": "VAEDecode",
          "seconds_saved": 1.7, "description": "VAEDecodeTiled 8 → VAEDecode"}]


def test_the_browser_gets_the_total_the_slowest_nodes_and_the_top_two_edits(package):
    board, (running, pending) = board_with(package, {"a": 11.8}, FakeClock(1_000.0))
    answer = {"predicted_time_seconds": 11.8, "nodes": NODES, "recommendations": EDITS}
    board.ask = lambda graph, previous=None: answer
    sent = []
    board.send = lambda event, payload, client: sent.append((event, payload))
    board.submitted({"prompt": {"name": "a"}, "prompt_id": "a"})
    pending.append([0, "a", {"name": "a"}, {}, []])
    board._by_id["a"].done.wait(5)
    board.queue_changed()
    [(event, payload)] = sent
    assert event == "perflib.estimate" and payload["predicted_time_seconds"] == 11.8
    assert [n["id"] for n in payload["slowest_nodes"]] == ["3", "8", "7"]  # the cached: none
    assert [r["seconds_saved"] for r in payload["recommendations"]] == [4.4, 2.2]
    assert payload["nodes"] == NODES
    board.close()


def test_an_answer_without_nodes_or_edits_shows_none(package):
    board, (running, pending) = board_with(package, {"a": 3.0}, FakeClock(1_000.0))
    board.submitted({"prompt": {"name": "a"}, "prompt_id": "a"})
    pending.append([0, "a", {"name": "a"}, {}, []])
    board._by_id["a"].done.wait(5)
    view = board.view("a")
    assert view["slowest_nodes"] == [] and view["recommendations"] == []
    board.close()


PANEL_CHECK = """
import { slowestNodes, recommendationLines } from "./extensions/perflib_estimate/perflib.js";
const estimate = %s;
console.log(JSON.stringify([slowestNodes(estimate), recommendationLines(estimate),
                            slowestNodes({}), recommendationLines({})]));
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed")
def test_the_panel_words_the_slowest_nodes_and_the_edits(comfyui_dir, tmp_path):
    installed = install_node(comfyui_dir)
    site = tmp_path / "site"
    shutil.copytree(installed.path / "web", site / "extensions" / PACKAGE_NAME)
    (site / "scripts").mkdir()
    (site / "scripts" / "app.js").write_text("export const app = {registerExtension() {}};\n")
    (site / "scripts" / "api.js").write_text(
        "export const api = {addEventListener() {}, fetchApi() {}};\n")
    (site / "package.json").write_text('{"type": "module"}\n')
    payload = {"slowest_nodes": [NODES[0], NODES[2]],
               "recommendations": [EDITS[1], {**EDITS[0], "seconds_saved": 95.0}]}
    (site / "check.js").write_text(PANEL_CHECK % json.dumps(payload))
    done = subprocess.run(["node", "check.js"], cwd=site, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [
        ["KSampler 3: 9.0 s", "VAEDecodeTiled 8: 2.5 s"],
        ["save 4.4 s: cfg 7 → 1 on KSampler 3", "save 2 min: 20 → 15 steps on KSampler 3"],
        [], []]
