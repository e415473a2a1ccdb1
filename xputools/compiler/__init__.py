"""ONNX -> XPU compiler. `driver.compile_model` is the library form of `xpu compile`,
`driver.check_model` of `xpu check`, `loading.load_program_or_model` opens any source a tool is given.

Front end: `frontend.load_model` / `frontend.import_model` turn an ONNX file into a `graph.Graph`
with static shapes and folded constants, where `functions.expand_functions` has replaced ops the
device lacks by their ONNX function bodies; `passes.run_passes` cleans and fuses it; `quantize` makes
int8 nodes; `support.placement` decides device or host per node and `support.check_report` feeds
`xpu check`; `host` evaluates nodes on the host (fallback, folding, reference runs) through
`expand`, which spells the IR back in plain ONNX. Back end: `lower.lower_graph` turns the Graph
into a Program for `CompileOptions.arch` with one kernel per device node (`kernels/`) through the
`emitter`. `precision` holds the precision vocabulary; `outputs` gives a program's outputs their
ONNX dtypes.
"""
