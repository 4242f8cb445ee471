"""Copy the slices of ../shared/data that the tests read into tests/fixtures/data, so CI runs
the real-data tests (and the README's accuracy figures) without ../shared.

Run once when the shared data changes: ``python -m tools.vendor_fixtures``. The job CSVs are
copied whole (the figures train on 70% and test on the rest); of the ComfyUI recordings, only the
files the tests open, the websocket messages of the first 20 prompts and each queue snapshot's
times and queue."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SOURCE = REPO.parent / "shared" / "data"
TARGET = REPO / "tests" / "fixtures" / "data"
WHOLE = ["README.md", "diffusion-jobs.csv", "video-dit-jobs.csv"]
RECORDED = ["history.json", "system_stats.json", "prompts.jsonl", "derived-timings.csv",
            "object_info-subset.json"]
SNAPSHOT_KEYS = ("t", "t_end", "queue")
FIRST_PROMPTS = 20  # tests/test_comfyui_node.py replays the first 20 of sd15's history


def copy_snapshots(source: Path, target: Path) -> None:
    """Each queue snapshot with only what the fake server serves: its times and queue."""
    with open(source) as lines, open(target, "w") as out:
        for line in lines:
            snapshot = json.loads(line)
            out.write(json.dumps({key: snapshot[key] for key in SNAPSHOT_KEYS}) + "\n")


def copy_first_messages(recording: Path, target: Path) -> None:
    """The websocket messages (verbatim lines) of the first prompts in the recorded history."""
    history = json.loads((recording / "history.json").read_text())
    wanted = set(list(history)[:FIRST_PROMPTS])
    with open(recording / "ws-messages.jsonl") as lines, open(target, "w") as out:
        for line in lines:
            data = json.loads(line)["msg"].get("data")
            if isinstance(data, dict) and data.get("prompt_id") in wanted:
                out.write(line)


def vendor() -> None:
    for name in WHOLE:
        TARGET.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(SOURCE / name, TARGET / name)
    for run in ("sd15", "wan21"):
        source, target = SOURCE / "comfyui" / run, TARGET / "comfyui" / run
        target.mkdir(parents=True, exist_ok=True)
        for name in RECORDED:
            shutil.copyfile(source / name, target / name)
        copy_snapshots(source / "queue-snapshots.jsonl", target / "queue-snapshots.jsonl")
    sd15 = SOURCE / "comfyui" / "sd15"
    copy_first_messages(sd15, TARGET / "comfyui" / "sd15" / "ws-messages.jsonl")


if __name__ == "__main__":
    vendor()
