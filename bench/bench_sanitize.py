"""Sanitizer overhead: `sanitize --check race,uninit` against a plain run of the same program on
the same inputs, in the same process (target <= 5x; compute-sanitizer costs 10-100x).

    python bench/bench_sanitize.py [--repeat 3] [--bert-layers 2]

Programs: the hand-written 512x512x512 GEMM, the cnn and transformer samples (bf16), and a
BERT-mini encoder (hidden 384, seq 128; `--bert-layers 0` skips it) built into a temporary folder.
Both sides load the program on a fresh device each time (sanitize always does). Importable:
`measure(program, feeds, repeat)` returns (plain seconds, sanitize seconds) for bench_debug.py.
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))  # when imported from another benchmark

from bench_emulator import best_of  # noqa: E402

from device_model.assembly import assemble  # noqa: E402
from xputools.compiler.context import CompileOptions  # noqa: E402
from xputools.compiler.driver import compile_model  # noqa: E402
from xputools.debug.sanitize import sanitize  # noqa: E402
from xputools.runtime import random_inputs, read_npz, run_program  # noqa: E402

CHECKS = "race,uninit"


def measure(program, feeds, repeat: int = 3) -> tuple[float, float]:
    """(plain run seconds, sanitize race+uninit seconds), best of `repeat` each."""
    plain = best_of(lambda: run_program(program, feeds), repeat)
    report = sanitize(program, feeds, CHECKS)
    if not report.clean:
        raise SystemExit(f"benchmark program is not clean: {report.findings[0].message}")
    checked = best_of(lambda: sanitize(program, feeds, CHECKS), repeat)
    return plain, checked


def _programs(bert_layers: int, tmp: Path):
    gemm = assemble((ROOT / "samples/programs/gemm512.xasm").read_text(), source="gemm512.xasm")
    yield "gemm512 (hand-written)", gemm, random_inputs(gemm, 0)
    for name, shapes in (("cnn", {}), ("transformer", {"input_ids": (2, 16)})):
        prog = compile_model(ROOT / f"samples/{name}.onnx", CompileOptions(precision="bf16", shapes=shapes)).program
        yield f"{name} bf16", prog, read_npz(ROOT / f"samples/{name}.inputs.npz")
    if bert_layers:
        spec = importlib.util.spec_from_file_location("build_samples", ROOT / "samples/build_samples.py")
        builder = importlib.util.module_from_spec(spec)
        sys.modules["build_samples"] = builder
        spec.loader.exec_module(builder)
        path = tmp / "bert_mini.onnx"
        builder.build_bert_mini(path, layers=bert_layers)
        prog = compile_model(path, CompileOptions(precision="bf16", shapes={"input_ids": (1, 128)})).program
        yield f"bert-mini {bert_layers} layers bf16", prog, read_npz(tmp / "bert_mini.inputs.npz")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--bert-layers", type=int, default=2)
    args = parser.parse_args()
    print(f"{'program':32s} {'instrs':>7s} {'plain s':>9s} {'sanitize s':>11s} {'ratio':>7s}  (target <= 5x)")
    with tempfile.TemporaryDirectory() as tmp:
        for label, program, feeds in _programs(args.bert_layers, Path(tmp)):
            plain, checked = measure(program, feeds, args.repeat)
            print(f"{label:32s} {len(program.instrs):7d} {plain:9.3f} {checked:11.3f} {checked / plain:6.2f}x")


if __name__ == "__main__":
    main()
