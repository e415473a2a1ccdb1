"""The architecture, checked: every module's imports (read with `ast`, function-level imports
included) point one way between the layers

    device_model  <-  xputools.runtime  <-  xputools.compiler  <-  tools (profile, debug, accuracy, ...)
                  <-  tool UIs (`<tool>/cli.py`, `tui`, clikit)  <-  the root CLI (`xputools/cli/`)

with no import circles between modules, and the headless cores import neither click nor textual.
New packages are classified by where they live, so they are covered without editing this test."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("device_model", "xputools")

DEVICE, RUNTIME, COMPILER, TOOL, TOOL_UI, ROOT_CLI = range(6)
LAYER_NAMES = ("device_model", "runtime", "compiler", "tool core", "tool UI", "root CLI")
UI_LIBRARIES = ("click", "textual")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


MODULES = all_modules()


def layer(module: str) -> int:
    """The layer a module belongs to, from its place in the tree."""
    parts = module.split(".")
    if parts[0] == "device_model":
        return DEVICE
    if parts[:2] == ["xputools", "cli"] or module == "xputools.__main__":
        return ROOT_CLI
    if "cli" in parts or "tui" in parts or module == "xputools.clikit":
        return TOOL_UI
    if len(parts) == 1 or module == "xputools.errors" or parts[1] == "runtime":
        return RUNTIME  # the package itself only names (lazily) what the layers export
    if parts[1] == "compiler":
        return COMPILER
    if (ROOT / "xputools" / parts[1]).is_dir():
        return TOOL  # profile, debug, accuracy and any tool added later
    raise AssertionError(f"{module}: a top-level module outside the layers; put it in a package "
                         "(runtime, compiler or a tool) or classify it here")


def _resolve(module: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    package = module.split(".")
    if not MODULES[module].name == "__init__.py":
        package = package[:-1]
    base = package[:len(package) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports(module: str) -> list[tuple[str, int]]:
    """(imported name, line) for every import statement in the module, at any depth."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(module, node)
            for alias in node.names:
                full = f"{base}.{alias.name}"
                out.append((full if full in MODULES else base, node.lineno))
    return out


def internal_edges() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {m: set() for m in MODULES}
    for module in MODULES:
        for name, _line in imports(module):
            target = name
            while target and target not in MODULES:  # `import a.b.c` of a name inside a module
                target = target.rpartition(".")[0]
            if target and target.split(".")[0] in PACKAGES and target != module:
                edges[module].add(target)
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(edges)))
    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_every_module_is_in_a_layer():
    assert len(MODULES) > 50  # the walk found the tree
    for module in MODULES:
        layer(module)


def test_no_import_circles_between_modules():
    assert cycles(internal_edges()) == []


def test_imports_point_down_the_layers_only():
    wrong = [f"{m} ({LAYER_NAMES[layer(m)]}) imports {t} ({LAYER_NAMES[layer(t)]})"
             for m, targets in internal_edges().items() for t in sorted(targets) if layer(t) > layer(m)]
    assert wrong == []


def test_cores_import_no_ui_library():
    wrong = [f"{m}:{line} imports {name}" for m in MODULES if layer(m) <= TOOL
             for name, line in imports(m) if name.split(".")[0] in UI_LIBRARIES]
    assert wrong == []


def test_the_checker_sees_what_it_must():
    """The rules would catch a violation: function-level and relative imports are read."""
    assert "xputools.compiler.driver" in internal_edges()["xputools.compiler.loading"]  # inside a function
    assert layer("xputools.debug.tui.app") == TOOL_UI and layer("xputools.accuracy.cli") == TOOL_UI
    assert layer("xputools.accuracy.metrics") == TOOL and layer("xputools.cli.run") == ROOT_CLI
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"d"}}
    assert cycles(edges) == [["a", "b", "c"]]


@pytest.mark.parametrize("module", ["xputools", "xputools.cli"])
def test_start_up_stays_light(module):
    """`import xputools` and the CLI's start-up load no numpy or onnx (commands import what they need)."""
    code = (f"import sys, {module}; heavy = sorted({{m.split('.')[0] for m in sys.modules}} & "
            "{'numpy', 'onnx', 'onnxruntime', 'scipy', 'matplotlib', 'textual'}); print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_public_api_is_documented_and_importable():
    import xputools

    for name in xputools.__all__:
        obj = getattr(xputools, name)
        assert name == "__version__" or (obj.__doc__ or "").strip(), f"xputools.{name} has no docstring"
    assert "compile_model" in xputools.__doc__ and "record" in xputools.__doc__
