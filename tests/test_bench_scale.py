"""`make bench-scale`'s guard: it refuses to start without the disk its histories need."""
from __future__ import annotations

import shutil

import pytest

from tools.bench_scale import BYTES_PER_JOB, check_disk, disk_needed


def test_disk_needed_is_the_largest_history_of_each_backend():
    assert disk_needed([1_000_000, 10_000_000], [1_000_000]) == (
        10_000_000 * BYTES_PER_JOB["postgresql"] + 1_000_000 * BYTES_PER_JOB["sqlite"])
    assert disk_needed([], []) == 0


def test_refuses_without_enough_free_disk_saying_how_much(tmp_path):
    free = shutil.disk_usage(tmp_path).free
    with pytest.raises(SystemExit, match=r"needs about \d+ GB free in .* GB are free"):
        check_disk(tmp_path, free * 2)
    check_disk(tmp_path, free // 2)
