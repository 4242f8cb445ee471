"""The packages' imports run one way: each module imports only its own layer or lower ones.

Layers, lowest first: config/record/cache/units (and the stdlib-only ComfyUI graph parser, copied
into the ComfyUI node) → store → tracking → prediction → analysis → queue → capacity → ops →
sim/report/comfyui → serve → cli. The test reads every module under perflib/ with ast (nothing is
imported), so a new back-import fails here before it can close a circle.
"""
from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest
from setuptools import find_packages

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "perflib"

LAYERS = {
    "perflib.config": 0, "perflib.record": 0, "perflib.cache": 0, "perflib.units": 0,
    "perflib.threads": 0,
    "perflib.comfyui.graph": 0,
    # The one definition of a job's work terms: the store computes its stored columns with it.
    "perflib.prediction.workload": 0, "perflib.prediction.work_terms": 0,
    "perflib.store": 1,
    "perflib.tracking": 2,
    "perflib.prediction": 3,
    "perflib.analysis": 4,
    "perflib.queue": 5,
    "perflib.capacity": 6,
    "perflib.ops": 7,
    "perflib.sim": 8, "perflib.report": 8, "perflib.comfyui": 8,
    "perflib.serve": 9,
    "perflib.cli": 10,
    # The documented entry points: re-exports of lower layers, imported by nothing inside.
    "perflib": 11, "perflib.predictor": 11,
}

# (importer, imported): imports that run upwards on purpose, each inside a function.
EXCEPTIONS = {
    ("perflib.analysis", "perflib.ops.aggregates"):
        "PerformanceAnalyzer.aggregate_daily, documented in the README, runs the refresh",
    ("perflib.analysis", "perflib.ops.alerts"):
        "PerformanceAnalyzer.detect_alerts, documented in the README, saves the alerts",
    ("perflib.analysis", "perflib.ops.maintenance"):
        "PerformanceAnalyzer.maintain runs maintenance (perflib maintain, the service)",
    ("perflib.analysis", "perflib.ops.alert_delivery"):
        "PerformanceAnalyzer.maintain delivers the alerts it raised to Alertmanager",
    ("perflib.analysis", "perflib.ops.auto_retrain"):
        "PerformanceAnalyzer.maintain retrains the pipelines that are due",
}


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> int:
    """The layer of the longest LAYERS prefix of `module`."""
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        prefix = ".".join(parts[:end])
        if prefix in LAYERS:
            return LAYERS[prefix]
    raise KeyError(f"{module} has no layer: add its package to LAYERS")


def perflib_imports(tree: ast.AST) -> set[str]:
    """Every perflib module `tree` imports, at module level or inside a function."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "perflib")
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module \
                and node.module.split(".")[0] == "perflib":
            found.update(f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in MODULES
                         else node.module for a in node.names)
    return found


def perflib_modules() -> dict[str, Path]:
    """Every module of the package, the ComfyUI node aside (it is copied into ComfyUI, which
    imports it by relative imports only)."""
    node = PACKAGE / "comfyui" / "node"
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py")) if node not in p.parents}


MODULES = perflib_modules()


def test_every_module_has_a_layer():
    for module in MODULES:
        layer_of(module)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_run_downwards(module):
    tree = ast.parse(MODULES[module].read_text(), filename=str(MODULES[module]))
    upward = sorted(imported for imported in perflib_imports(tree)
                    if layer_of(imported) > layer_of(module)
                    and (module, imported) not in EXCEPTIONS)
    assert not upward, f"{module} (layer {layer_of(module)}) imports higher layers: {upward}"


def test_exceptions_are_still_needed_and_inside_functions():
    for importer, imported in EXCEPTIONS:
        tree = ast.parse(MODULES[importer].read_text())
        top_level = perflib_imports(ast.Module(body=[n for n in tree.body
                                                     if isinstance(n, (ast.Import, ast.ImportFrom))],
                                               type_ignores=[]))
        assert imported in perflib_imports(tree), f"{importer} no longer imports {imported}"
        assert imported not in top_level, f"{importer} imports {imported} at module level"


def test_the_wheel_holds_no_repository_tooling():
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    include = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = find_packages(str(REPO), include=include)
    assert "perflib" in packages and "perflib.prediction" in packages
    assert not [p for p in packages if p.split(".")[0] != "perflib"], packages
    assert not (PACKAGE / "tools").exists()
    shipped = {module.rsplit(".", 1)[-1] for module in MODULES}
    assert not shipped & {"bench", "bench_scale", "loadtest", "scale_data", "screenshots",
                          "pgserver"}
