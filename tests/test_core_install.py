"""`pip install perflib` is the tracker and its SQLite store: importing it loads no data-science
stack, a fresh venv holds none of the extras and records the README's example, the wheel holds no
developer tooling, and a subcommand that needs an extra names it."""
from __future__ import annotations

import math
import re
import shutil
import sqlite3
import subprocess
import sys
import venv
import zipfile

import pytest
from hypothesis import given, settings, strategies as st

from perflib.config import ModelProfile
from perflib.prediction.work_terms import STORED_TERMS, stored_terms
from perflib.prediction.workload import cost_terms
from tests.conftest import REPO

HEAVY = ("pandas", "sklearn", "numpy", "scipy", "fastapi", "matplotlib", "psycopg")
EXTRAS_ONLY = ("jupyterlab", "papermill", "fastapi", "uvicorn", "seaborn", "matplotlib",
               "statsmodels", "scikit-learn", "nbconvert", "pandas", "numpy", "psycopg")
TOOLING = ("bench", "bench_scale", "loadtest", "scale_data", "screenshots")
# Stands in for a core install in this venv: the extras' modules cannot be imported.
WITHOUT_EXTRAS = """
import importlib.abc, sys
class NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
sys.meta_path.insert(0, NotInstalled())
"""


def test_importing_the_tracker_loads_no_extra():
    code = ("import sys; import perflib; from perflib import track_performance; "
            f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                            text=True, check=True).stdout.strip()
    assert loaded == ""


@pytest.mark.parametrize("command, extra", [("serve", "serve"), ("report", "report"),
                                             ("train", "predict"), ("analyze", "predict")])
def test_a_subcommand_needing_an_extra_names_it_in_one_line(tmp_path, command, extra):
    blocked = {"pandas", "numpy", "sklearn", "scipy", "fastapi", "uvicorn", "papermill",
               "matplotlib", "statsmodels", "tqdm"}
    code = WITHOUT_EXTRAS.format(blocked=blocked) + (
        "from perflib.cli import main\nsys.exit(main(sys.argv[1:]))")
    env = {"PERFLIB_DATABASE_URL": f"sqlite:///{tmp_path}/jobs.db", "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", code, command], cwd=REPO, env=env,
                          capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr == (f"perflib {command}: needs perflib[{extra}] "
                           f"({_missing(done.stderr)} is not installed): "
                           f"pip install 'perflib[{extra}]'\n")


def _missing(line: str) -> str:
    found = re.search(r"\((\S+) is not installed\)", line)
    return found.group(1) if found else "?"


_pass = st.fixed_dictionaries({}, optional={
    "width": st.sampled_from([None, 512, 832.0]), "height": st.sampled_from([None, 480, 1024]),
    "steps": st.sampled_from([None, 4, 30]), "frame_count": st.sampled_from([None, 1, 33]),
    "guidance_scale": st.sampled_from([None, 1.0, 6.0]), "model_calls_per_step": st.just(2),
    "model_name": st.sampled_from(["wan", "sdxl"])})
_record = st.fixed_dictionaries({}, optional={
    "width": st.sampled_from([None, 512, 768.0, "640", "wide", math.nan, 0]),
    "height": st.sampled_from([None, 512, 1024]),
    "frame_count": st.sampled_from([None, 0, 1, 17, 81]),
    "batch_size": st.sampled_from([None, 1, 4]), "steps": st.sampled_from([None, 0, 20]),
    "guidance_scale": st.sampled_from([None, 1.0, 7.5]),
    "model_name": st.sampled_from([None, "wan", "sdxl", "other"]),
    "passes": st.one_of(st.none(), st.lists(_pass, max_size=3))})
PROFILES = {"wan": ModelProfile(vae_spatial_factor=8, patch_size=2, vae_temporal_factor=4,
                                full_attention=True)}


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@settings(max_examples=300, deadline=None)
@given(st.lists(_record, min_size=1, max_size=6))
def test_stored_terms_without_numpy_equal_the_models_terms(records):
    """The store's plain-Python terms (the core write path) and the models' numpy terms are
    one formula: equal for every record."""
    stored = stored_terms(records, PROFILES)
    columns = {name: [r.get(name) for r in records]
               for name in ("width", "height", "frame_count", "batch_size", "steps",
                            "guidance_scale", "model_name", "passes")}
    models = cost_terms(columns, PROFILES)
    for row, terms in enumerate(stored):
        for name in STORED_TERMS:
            if terms[name] is not None:
                assert terms[name] == pytest.approx(float(models[name][row]), rel=1e-12)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """perflib's wheel, built from a copy of the checkout (the build leaves nothing in it)."""
    folder = tmp_path_factory.mktemp("wheel")
    source = folder / "source"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "*.egg-info", "__pycache__", ".hypothesis", ".pytest_cache"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", str(source),
                    "-w", str(folder)], check=True, capture_output=True)
    return next(folder.glob("perflib-*.whl"))


def test_the_wheel_holds_no_developer_tooling(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert "perflib/__init__.py" in names and "perflib/tracking/tracker.py" in names
    assert not [n for n in names if n.startswith(("tools/", "tests/"))]
    modules = {n.rsplit("/", 1)[-1].removesuffix(".py") for n in names if n.endswith(".py")}
    assert not modules & set(TOOLING)


def _readme_tracker_example() -> str:
    section = (REPO / "README.md").read_text().split("## Tracking jobs", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)


def test_a_core_install_records_the_readme_example_into_sqlite(wheel, tmp_path):
    """A real `pip install` of the wheel with no extras: none of the extras' packages arrive,
    the README's tracker example stores its jobs, `perflib --help` works and `perflib serve`
    names its extra."""
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    subprocess.run([python, "-m", "pip", "install", "--quiet", str(wheel)], check=True,
                   capture_output=True)
    listed = subprocess.run([python, "-m", "pip", "list", "--format=freeze"], check=True,
                            capture_output=True, text=True).stdout.lower()
    installed = {line.split("==")[0].replace("_", "-") for line in listed.split()}
    assert not installed & set(EXTRAS_ONLY)
    script = tmp_path / "example.py"
    script.write_text("def load_models(): pass\ndef denoise(): pass\ndef decode(): pass\n"
                      + _readme_tracker_example() + 'generate("a cat")\ngenerate("a dog")\n')
    database = tmp_path / "jobs.db"
    env = {"PERFLIB_DATABASE_URL": f"sqlite:///{database}", "PATH": "/usr/bin:/bin",
           "PERFLIB_SPOOL_DIR": str(tmp_path / "spool")}
    subprocess.run([python, str(script)], cwd=tmp_path, env=env, check=True)
    with sqlite3.connect(database) as conn:
        rows = conn.execute("SELECT job_id, pipeline_type, status FROM generation_performance "
                            "ORDER BY pipeline_type").fetchall()
    assert [(p, s) for _, p, s in rows] == [("image", "success")] * 2 + [("video", "success")]
    assert ("job-42", "video", "success") in rows
    perflib = env_dir / "bin" / "perflib"
    assert subprocess.run([perflib, "--help"], env=env, capture_output=True).returncode == 0
    serve = subprocess.run([perflib, "serve"], env=env, capture_output=True, text=True)
    assert serve.returncode == 2
    assert serve.stderr.count("\n") == 1
    assert serve.stderr.endswith("pip install 'perflib[serve]'\n")
