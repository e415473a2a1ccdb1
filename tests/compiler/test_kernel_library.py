"""The kernel library (compiler/kernels/lib): kernel modules import only lib/ and the compiler's
context/emitter/graph/errors, never each other; kernels() imports every kernel module by name and
fails loudly when one is missing; the shared dims, pools and batch records behave as documented."""
from __future__ import annotations

import ast
import inspect
import itertools
import sys
from pathlib import Path

import numpy as np
import pytest

import xputools.compiler.kernels as kernels_pkg
from xputools.compiler.kernels import lib
from xputools.compiler.kernels.lib.dims import ap_dims, coalesce, merge_dims
from xputools.compiler.kernels.lib.pools import SlotPool
from xputools.compiler.kernels.matmul import BatchGroup, _batch_groups

KERNELS_DIR = Path(kernels_pkg.__file__).parent
KERNEL_MODULES = sorted(p.stem for p in KERNELS_DIR.glob("*.py") if p.stem != "__init__")
LIB_MODULES = sorted(p.stem for p in (KERNELS_DIR / "lib").glob("*.py") if p.stem != "__init__")
COMPILER_MODULES_ALLOWED = {"context", "emitter", "graph", "errors"}


def _relative_imports(path: Path) -> list[tuple[int, str]]:
    """(level, dotted module) of every relative import; `from . import a, b` gives one per name."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            if node.module:
                out.append((node.level, node.module))
            else:
                out.extend((node.level, alias.name) for alias in node.names)
    return out


@pytest.mark.parametrize("name", KERNEL_MODULES)
def test_a_kernel_module_imports_only_the_library_and_the_compiler_core(name):
    for level, module in _relative_imports(KERNELS_DIR / f"{name}.py"):
        if level == 1:  # inside kernels/: lib only (the registry is lib/registry.py)
            assert module.split(".")[0] == "lib", f"{name}.py imports .{module}"
        else:
            assert level == 2 and module in COMPILER_MODULES_ALLOWED, f"{name}.py imports {'.' * level}{module}"


@pytest.mark.parametrize("name", LIB_MODULES)
def test_the_library_imports_no_kernel_module(name):
    for level, module in _relative_imports(KERNELS_DIR / "lib" / f"{name}.py"):
        if level == 1:
            assert module in LIB_MODULES, f"lib/{name}.py imports .{module}"
        else:
            assert level == 3 and module in COMPILER_MODULES_ALLOWED, f"lib/{name}.py imports {'.' * level}{module}"


def test_kernels_imports_every_kernel_module_by_name():
    imported = {module for level, module in _relative_imports(KERNELS_DIR / "__init__.py")
                if level == 1 and module.split(".")[0] != "lib"}
    assert imported == set(KERNEL_MODULES)
    assert "importlib" not in (KERNELS_DIR / "__init__.py").read_text()


def test_a_missing_kernel_module_fails_loudly(monkeypatch):
    monkeypatch.setattr(kernels_pkg, "_loaded", False)
    monkeypatch.delattr(kernels_pkg, "pool", raising=False)
    monkeypatch.setitem(sys.modules, "xputools.compiler.kernels.pool", None)  # as if renamed away
    with pytest.raises(ImportError, match="kernels.pool"):
        kernels_pkg.kernels()


def test_every_kernel_module_registers_kernels():
    registered = kernels_pkg.kernels()
    modules = {fn.__module__.rsplit(".", 1)[-1] for fn in registered.values()}
    assert modules == set(KERNEL_MODULES)


def test_public_library_functions_have_docstrings():
    import importlib

    missing = []
    for name in LIB_MODULES:
        module = importlib.import_module(f"{lib.__name__}.{name}")
        for attr, obj in vars(module).items():
            if attr.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
                continue
            if inspect.isfunction(obj) and not obj.__doc__:
                missing.append(f"{name}.{attr}")
            if inspect.isclass(obj):
                missing += [f"{name}.{attr}.{m}" for m, f in vars(obj).items()
                            if inspect.isfunction(f) and not m.startswith("_") and not f.__doc__]
    assert not missing


# ---- dims ------------------------------------------------------------------------------------------

def _offsets(dims) -> list[tuple[int, ...]]:
    """Per element, in iteration order, the offset in every stride column of (count, stride...) dims."""
    ncols = len(dims[0]) - 1 if dims else 0
    return [tuple(sum(i * d[c] for i, d in zip(idx, dims)) for c in range(1, ncols + 1))
            for idx in itertools.product(*(range(d[0]) for d in dims))]


def test_merge_dims_keeps_the_element_order_of_every_operand():
    rng = np.random.default_rng(7)
    for _ in range(300):
        ncols = int(rng.integers(1, 4))
        dims, inner = [], [1] * ncols
        for _ in range(int(rng.integers(1, 6))):
            count = int(rng.integers(1, 4))
            # strides that often continue the inner dim (mergeable), sometimes not, sometimes 0
            strides = [int(rng.choice([inner[c], inner[c] + 1, 0])) for c in range(ncols)]
            dims.insert(0, (count, *strides))
            inner = [s * count or 1 for s in strides]
        merged = merge_dims(dims)
        assert _offsets(merged or [(1,) + (0,) * ncols]) == _offsets(dims)
        assert len(merged) <= len(dims) and all(d[0] > 1 for d in merged)


def test_the_access_pattern_and_shape_forms_agree_with_merge_dims():
    assert merge_dims([(2, 12, 12), (3, 4, 4), (4, 1, 1)]) == [(24, 1, 1)]
    assert ap_dims([(12, 2), (4, 3), (1, 4)]) == ((1, 24),)
    assert ap_dims([(5, 1)]) == ((1, 1),)  # nothing left: one element
    assert coalesce((2, 1, 3, 4), [(12, 0, 4, 1), (0, 0, 0, 1)]) == ((6, 4), [(4, 1), (0, 1)])


# ---- pools and batch groups ---------------------------------------------------------------------------

class _Ring:
    def __init__(self):
        self.calls = []

    def alloc(self, nbytes):
        self.calls.append(nbytes)
        return 1000 * len(self.calls)


def test_slot_pools_hand_out_whole_blocks_round_robin():
    ring = _Ring()
    pool = SlotPool(ring, 100, 3)
    assert pool.nbytes == 256 and ring.calls == [256, 256, 256]
    assert [pool.take() for _ in range(4)] == [1000, 2000, 3000, 1000]
    ring = _Ring()
    block = SlotPool(ring, 300, 2, contiguous=True)
    assert ring.calls == [1024] and block.offsets == [1000, 1512]
    assert block.tile(4, 128, "f32").offset == 1000
    with pytest.raises(ValueError, match="does not fit"):
        block.tile(4, 129, "f32")


def test_batch_groups_are_named_records():
    groups, inner = _batch_groups((2, 3), [(3, 1), (0, 0), (3, 1), (0, 0)], lambda count: 2)
    assert groups == [BatchGroup(0, 0, 0, 0, 2), BatchGroup(2, 0, 2, 0, 2), BatchGroup(4, 0, 4, 0, 2)]
    assert inner == (1, 0, 1, 0) and groups[-1].count == 2
