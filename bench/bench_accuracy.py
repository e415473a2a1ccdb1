"""Accuracy analyzer benchmarks, ratios against peers measured in the same run.

1. `compare` wall time / (one emulated device run + one ONNX Runtime run with every intermediate
   exposed), both sides including their set-up (compile, session creation). Target <= 1.3x.
   compare itself runs the device twice (free run + teacher-forced run for local errors); shown
   without and with the default 3 recovery compiles.
2. Device runs used by `bisect` vs ⌈log₂N⌉+1 builds of a prefix bisection (Polygraphy
   `debug precision`) over the same N nodes.
3. `compare` vs ORT's `qdq_loss_debug` on samples/int8_qdq.onnx (same model, same inputs; both
   against the float model the QDQ model was quantized from): wall time ratio and whether both name
   the same worst node.

    python bench/bench_accuracy.py [--layers 2]
"""
from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "samples"))
sys.path.insert(0, str(ROOT / "tests" / "accuracy"))

from xputools.accuracy import bisect, compare  # noqa: E402
from xputools.compiler.context import CompileOptions  # noqa: E402
from xputools.compiler.driver import compile_model  # noqa: E402
from xputools.runtime import DeviceSession, read_npz  # noqa: E402
from xputools.runtime.host_runner import ModelRunner, expose_values  # noqa: E402


def peer_time(path, feeds: dict, options: CompileOptions) -> float:
    """Compile + one device run + one ORT run with every intermediate exposed."""
    t0 = time.perf_counter()
    program = compile_model(path, options).program
    DeviceSession(program).run(feeds)
    model = onnx.load(str(path))
    names = [o for n in model.graph.node for o in n.output if o]
    exposed = expose_values(model, names)
    ModelRunner(exposed.SerializeToString(), exposed, engine="onnxruntime")(feeds)
    return time.perf_counter() - t0


def timed(fn, repeat: int = 2):
    """Best wall time of `repeat` calls (the first also warms imports and caches) and the result."""
    best, out = math.inf, None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def bench_compare(label: str, path, feeds: dict, options: CompileOptions) -> None:
    peer = min(peer_time(path, feeds, options) for _ in range(2))
    t0, doc = timed(lambda: compare(path, options, [feeds], recover_top=0))
    t3, _ = timed(lambda: compare(path, options, [feeds], recover_top=3))
    print(f"compare {label:22s} {t0:7.3f} s vs device+ORT {peer:7.3f} s = {t0 / peer:5.2f}x (target <= 1.3x); "
          f"with 3 recovery compiles {t3 / peer:5.2f}x; {doc['device_runs']} device runs, "
          f"{len(doc['tensors'])} tensors")


def bench_bisect(label: str, path, feeds: dict, options: CompileOptions, **thr) -> None:
    dt, doc = timed(lambda: bisect(path, options, [feeds], **thr))
    print(f"bisect  {label:22s} keep {[k['node'] for k in doc['keep']]} met={doc['met']}: {doc['runs']} device runs "
          f"({doc['builds']} compiles) vs prefix bisection ⌈log2 {doc['nodes']}⌉+1 = {doc['prefix_bisection_runs']} "
          f"builds+runs; {dt:.2f} s")


def strip_qdq(model: onnx.ModelProto) -> onnx.ModelProto:
    """The float model behind a QDQ model: weights dequantized, activation Q/DQ pairs removed."""
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    rename, new_inits, keep = {}, {}, []
    for node in model.graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] in inits:
            q, s = inits[node.input[0]].astype(np.float32), inits[node.input[1]].astype(np.float32)
            z = inits[node.input[2]].astype(np.float32) if len(node.input) > 2 and node.input[2] else 0.0
            axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
            if np.ndim(s) == 1 and q.ndim > 1:
                shape = [1] * q.ndim
                shape[axis] = -1
                s = s.reshape(shape)
                z = np.reshape(z, shape) if np.ndim(z) else z
            new_inits[node.output[0]] = ((q - z) * s).astype(np.float32)
        elif node.op_type == "QuantizeLinear":
            rename[node.output[0]] = rename.get(node.input[0], node.input[0])
        elif node.op_type == "DequantizeLinear":
            rename[node.output[0]] = rename.get(node.input[0], node.input[0])
        else:
            keep.append(node)
    graph = onnx.GraphProto()
    graph.CopyFrom(model.graph)
    del graph.node[:]
    for node in keep:
        n = onnx.NodeProto()
        n.CopyFrom(node)
        for i, name in enumerate(n.input):
            n.input[i] = rename.get(name, name)
        graph.node.append(n)
    used = {i for n in keep for i in n.input}
    del graph.initializer[:]
    for name, value in {**inits, **new_inits}.items():
        if name in used:
            graph.initializer.append(numpy_helper.from_array(value, name))
    out = onnx.helper.make_model(graph, opset_imports=model.opset_import, ir_version=model.ir_version)
    onnx.checker.check_model(out)
    return out


def bench_qdq_loss_debug(tmp: Path) -> None:
    from onnxruntime.quantization.calibrate import CalibrationDataReader
    from onnxruntime.quantization.qdq_loss_debug import (
        collect_activations,
        compute_activation_error,
        create_activation_matching,
        modify_model_output_intermediate_tensors,
    )

    qdq_path = ROOT / "samples/int8_qdq.onnx"
    feeds = read_npz(ROOT / "samples/int8_qdq.inputs.npz")
    float_model = strip_qdq(onnx.load(str(qdq_path)))
    float_path = tmp / "int8_float.onnx"
    onnx.save(float_model, str(float_path))

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter([feeds])

        def get_next(self):
            return next(self.items, None)

    def ort_debug():
        aug_q, aug_f = tmp / "aug_q.onnx", tmp / "aug_f.onnx"
        modify_model_output_intermediate_tensors(qdq_path, aug_q)
        modify_model_output_intermediate_tensors(float_path, aug_f)
        q_act = collect_activations(str(aug_q), Reader())
        f_act = collect_activations(str(aug_f), Reader())
        matching = create_activation_matching(q_act, f_act)
        if not matching:  # it matches only its own quantizer's names (X_QuantizeLinear_Output): do its pairing here
            qdq = onnx.load(str(qdq_path))
            dq_of = {n.input[0]: n.output[0] for n in qdq.graph.node if n.op_type == "DequantizeLinear"}
            for n in qdq.graph.node:
                x = n.input[0]
                if n.op_type == "QuantizeLinear" and n.output[0] in dq_of and x in q_act and x in f_act:
                    matching[x] = {"pre_qdq": q_act[x], "post_qdq": q_act[dq_of[n.output[0]]], "float": f_act[x]}
        return compute_activation_error(matching)

    t_ort, errs = timed(ort_debug)
    # worst by the error the quantization of each activation introduces (qdq_err, lowest SQNR)
    ort_worst = min((e["qdq_err"], name) for name, e in errs.items() if "qdq_err" in e)[1]
    producer = {o: n.name for n in float_model.graph.node for o in n.output}
    producer.update({n.input[0]: n.name for n in onnx.load(str(qdq_path)).graph.node  # graph inputs: their Q node
                     if n.op_type == "QuantizeLinear" and n.input[0] not in producer})
    t_ours, doc = timed(lambda: compare(qdq_path, CompileOptions(precision="int8"), [feeds], recover_top=0,
                                        reference_model=float_model))
    ours = doc["culprits"][0] if doc["culprits"] else None
    same = ours is not None and producer.get(ort_worst, ort_worst) in ours["nodes"]
    print(f"int8_qdq: compare {t_ours:6.3f} s vs qdq_loss_debug {t_ort:6.3f} s = {t_ours / t_ort:5.2f}x; "
          f"worst node: ours {ours and ours['node']} (fused {ours and ours['nodes']}), ORT qdq_err on tensor "
          f"{ort_worst} (node {producer.get(ort_worst, '?')}): {'same' if same else 'DIFFERENT'}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=2, help="BERT-mini layers")
    args = ap.parse_args()
    import acc_models
    import build_samples

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        bert = tmp / "bert_mini.onnx"
        build_samples.build_bert_mini(bert, layers=args.layers)
        bert_feeds = read_npz(bert.with_name("bert_mini.inputs.npz"))
        bert_shapes = {k: v.shape for k, v in bert_feeds.items()}
        bench_compare("cnn bf16", ROOT / "samples/cnn.onnx", read_npz(ROOT / "samples/cnn.inputs.npz"),
                      CompileOptions(precision="bf16"))
        bench_compare("transformer bf16", ROOT / "samples/transformer.onnx",
                      read_npz(ROOT / "samples/transformer.inputs.npz"),
                      CompileOptions(precision="bf16", shapes={"input_ids": (2, 16)}))
        bench_compare(f"bert-mini{args.layers} bf16", bert, bert_feeds,
                      CompileOptions(precision="bf16", shapes=bert_shapes))
        for name in ("cancel_chain", "cancel_branches"):
            m = getattr(acc_models, name)()
            path = tmp / f"{name}.onnx"
            onnx.save(m, str(path))
            bench_bisect(name, path, acc_models.inputs_for(m), CompileOptions(precision="bf16"), min_sqnr=30.0)
        bench_bisect("cnn bf16 (46 dB)", ROOT / "samples/cnn.onnx", read_npz(ROOT / "samples/cnn.inputs.npz"),
                     CompileOptions(precision="bf16"), min_sqnr=46.0)
        bench_bisect(f"bert-mini{args.layers} bf16 (cos)", bert, bert_feeds,
                     CompileOptions(precision="bf16", shapes=bert_shapes), min_cosine=0.99999)
        bench_qdq_loss_debug(tmp)
    print(f"(⌈log2 N⌉+1 for reference: N=100 -> {math.ceil(math.log2(100)) + 1})")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
