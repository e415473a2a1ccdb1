"""ONNX -> XPU compiler.

Front end (this package's first half): `frontend.load_model` / `frontend.import_model` turn an ONNX
file into a `graph.Graph` with static shapes and folded constants; `passes.run_passes` cleans and
fuses it; `support.placement` decides device or host per node and `support.check_report` feeds
`xpu check`; `host` evaluates nodes on the host (fallback, folding, reference runs).
The lowering to instructions consumes the Graph that `run_passes` returns.
"""
