"""The house rules on size, checked: no module over 600 lines (the stdlib-only ComfyUI graph
parser aside) and no function over 60 lines, in the package and in tools/."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted([*(ROOT / "perflib").rglob("*.py"), *(ROOT / "tools").rglob("*.py")])
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 60
LONG_MODULES_ALLOWED = {"perflib/comfyui/graph.py"}  # stdlib only: it ships inside the node


def relative(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def long_functions(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    return [f"{relative(path)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1})"
            for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]


def test_the_checks_see_the_package():
    assert len(SOURCES) > 100 and ROOT / "perflib" / "config.py" in SOURCES


def test_no_module_is_over_600_lines():
    too_long = [f"{relative(p)} ({n})" for p in SOURCES
                if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES
                and relative(p) not in LONG_MODULES_ALLOWED]
    assert not too_long, f"modules over {MAX_MODULE_LINES} lines: {too_long}"


def test_the_function_check_flags_61_lines_not_60(tmp_path, monkeypatch):
    monkeypatch.setitem(globals(), "ROOT", tmp_path)
    fits, too_long = tmp_path / "fits.py", tmp_path / "too_long.py"
    fits.write_text("def fits():\n" + "    x = 1\n" * (MAX_FUNCTION_LINES - 1))
    too_long.write_text("class C:\n    def too_long(self):\n" + "        x = 1\n" * MAX_FUNCTION_LINES)
    assert long_functions(fits) == []
    assert long_functions(too_long) == [f"too_long.py:2 too_long ({MAX_FUNCTION_LINES + 1})"]


def test_no_function_is_over_60_lines():
    too_long = [entry for path in SOURCES for entry in long_functions(path)]
    assert not too_long, f"functions over {MAX_FUNCTION_LINES} lines: {too_long}"
