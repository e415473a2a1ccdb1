"""`compile_model`: ONNX model -> XPU Program (import, passes, lowering), the library form of
`xpu compile`; `check_model`: what would run where, the library form of `xpu check`."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from device_model.arch import load_arch
from device_model.program import Program

from .budget import check_work
from .context import CompileOptions
from .frontend import import_model, load_model
from .graph import Graph
from .lower import lower_graph
from .passes import PassOptions, run_passes
from .precision import unmatched_keep_patterns
from .support import check_report


@dataclass
class Compiled:
    """A compiled model: the program, and the graph that was lowered (after passes)."""

    program: Program
    graph: Graph
    unmatched_keep: list[str] = field(default_factory=list)  # --keep patterns that named no node


def compile_model(source, options: CompileOptions | None = None,
                  progress: Callable[[int, int], None] | None = None) -> Compiled:
    """Compile an ONNX model (path, bytes or ModelProto) for `options.arch` (default xpu1); the
    program embeds that arch. `progress(done, total)` is called per lowered node."""
    options = options or CompileOptions()
    model = load_model(source)
    graph = import_model(model, options.shapes, options.const_inputs)
    check_work(graph, options.arch or load_arch())
    graph = run_passes(graph, PassOptions(target=options))
    if options.precision == "int8" or options.calibration is not None:
        from .quantize import quantize_graph

        graph = quantize_graph(graph, options)
    program = lower_graph(graph, options, progress)
    program.meta.setdefault("precision", options.precision)
    program.meta.setdefault("model", getattr(graph, "name", ""))
    return Compiled(program, graph, unmatched_keep_patterns(options.keep, graph.nodes))


def check_model(source, shapes: dict[str, tuple[int, ...]] | None = None, arch=None) -> dict:
    """Where each node of an ONNX model would run (device or host, and why), with op counts,
    FLOPs, weights and the largest SBUF working set on `arch` (an Arch, preset name or TOML path)."""
    target = PassOptions(target=CompileOptions(arch=arch))
    return check_report(run_passes(import_model(load_model(source), shapes or {}), target), arch)
