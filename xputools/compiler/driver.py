"""`compile_model`: ONNX model -> XPU Program (import, passes, lowering), the library form of
`xpu compile`."""
from __future__ import annotations

from dataclasses import dataclass

from device_model.program import Program

from .context import CompileOptions
from .frontend import import_model, load_model
from .lower import lower_graph
from .passes import run_passes


@dataclass
class Compiled:
    program: Program
    graph: object  # the graph that was lowered (after passes)


def compile_model(source, options: CompileOptions | None = None, progress=None) -> Compiled:
    """Compile an ONNX model (path, bytes or ModelProto). `progress(done, total)` is called per node."""
    options = options or CompileOptions()
    model = load_model(source)
    graph = import_model(model, options.shapes, options.const_inputs)
    graph = run_passes(graph)
    if options.precision == "int8" or options.calibration is not None:
        from .quantize import quantize_graph

        graph = quantize_graph(graph, options)
    program = lower_graph(graph, options, progress)
    program.meta.setdefault("precision", options.precision)
    program.meta.setdefault("model", getattr(graph, "name", ""))
    return Compiled(program, graph)
