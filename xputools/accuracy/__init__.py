"""The accuracy analyzer (`xpu acc`): not built yet; programs already carry a tap for every ONNX
tensor (xputools.runtime.run_program(..., taps=True)) for it to read."""
