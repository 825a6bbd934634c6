"""The house rules of DESIGN.md's layout, checked on the source: which package may import which,
no torch on the serving path at import time, and modules and functions kept small."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# package -> top-level packages of this repo it may import (anywhere in a module)
ALLOWED = {
    "engines": {"engines"},
    "export": {"export", "engines"},
    "realtime": {"realtime", "engines", "export"},  # export: only to run avatar preparation (below)
}
REALTIME_MAY_USE_FROM_EXPORT = {"export.avatar"}  # the built-in avatar's first-use preparation
CLI = ROOT / "realtime" / "cli.py"  # the one command line: it runs export's commands, imported on use
OURS = {"realtime", "engines", "export", "benchmarks", "tests"}
MAX_MODULE_LINES = 420
MAX_FUNCTION_LINES = 70


def _modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def _imports(path: Path) -> list[tuple[str, int, bool]]:
    """(module imported, line, at module level) for every import in the file."""
    tree = ast.parse(path.read_text(), str(path))
    top = {id(n) for n in tree.body}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno, id(node) in top) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.module, node.lineno, id(node) in top))
    return out


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_packages_import_only_what_the_layout_allows(package: str) -> None:
    bad = []
    for path in _modules(package):
        for name, line, top in _imports(path):
            root = name.split(".")[0]
            if root in OURS and root not in ALLOWED[package]:
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
            if package == "realtime" and root == "export" and (top or path != CLI) \
                    and name not in REALTIME_MAY_USE_FROM_EXPORT:
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {name} (only avatar preparation may be run)")
    assert not bad, "\n".join(bad)


def test_serving_path_imports_no_torch_at_import_time() -> None:
    bad = [f"{p.relative_to(ROOT)}:{line}" for pkg in ("realtime", "engines") for p in _modules(pkg)
           for name, line, top in _imports(p) if top and name.split(".")[0] in {"torch", "librosa"}]
    assert not bad, f"module-level torch/librosa import on the serving path: {bad}"


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_modules_and_functions_stay_small(package: str) -> None:
    long_modules = [f"{p.relative_to(ROOT)}: {n} lines" for p in _modules(package)
                    if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES]
    long_functions = []
    for path in _modules(package):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long_functions.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: {n} lines")
    assert not long_modules and not long_functions, "\n".join(long_modules + long_functions)
