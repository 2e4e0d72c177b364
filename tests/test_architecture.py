"""The shape of the house: layers, no import cycles, small modules, short engine functions.

The engine sits at the bottom (arrays and classifiers only); reading and writing files is
``napari_medcam.io``'s; the command line and the napari plugin are front ends on top.
import-linter holds the layer contract (pyproject.toml); these tests run it and check
what it does not: cycles hidden in function-local imports, module and function size.
"""

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "napari_medcam"
MAX_MODULE_LINES = 400
MAX_ENGINE_FUNCTION_LINES = 80  # body, docstring excluded
LONG_REASON = "# long:"  # a comment in the body that says why a function stays long


def test_layer_contract_holds():
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert exe, "import-linter is part of the testing extra"
    run = subprocess.run([exe], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "0 broken" in run.stdout


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found = []
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(edges[w]))))
                    break
                if w in on:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        found.append(sorted(comp))
    return found


def test_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles_not_even_inside_functions():
    graph = grimp.build_graph("napari_medcam", exclude_type_checking_imports=True)
    edges = {
        m: {x for x in graph.find_modules_directly_imported_by(m) if x in graph.modules}
        for m in graph.modules
    }
    # a package's __init__ re-exporting its own modules is not a cycle of design
    for m in edges:
        edges[m] = {x for x in edges[m] if not m.startswith(x + ".")}
    assert _cycles(edges) == []


def _modules():
    return sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_modules_stay_small(path):
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_MODULE_LINES, f"{path.name}: {lines} lines; split it"


def _long_functions(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    out = []
    for node in ast.walk(ast.parse(text)):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        first = node.body[0]
        doc = isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
        start = first.end_lineno + 1 if doc and len(node.body) > 1 else first.lineno
        body = lines[start - 1 : node.end_lineno]
        if len(body) > MAX_ENGINE_FUNCTION_LINES and not any(LONG_REASON in ln for ln in body):
            out.append(f"{node.name} ({len(body)} lines)")
    return out


def test_engine_functions_are_short_or_say_why():
    long = {
        str(p.relative_to(PACKAGE)): f
        for p in sorted((PACKAGE / "engine").rglob("*.py"))
        if (f := _long_functions(p))
    }
    assert long == {}, f"split these, or say why in a '{LONG_REASON}' comment: {long}"


def test_the_engine_works_on_arrays_and_never_imports_napari_qt_or_files():
    graph = grimp.build_graph("napari_medcam", exclude_type_checking_imports=True)
    for outside in ("napari_medcam.io", "napari_medcam.cli", "napari_medcam.plugin"):
        assert not graph.chain_exists("napari_medcam.engine", outside, as_packages=True), outside
