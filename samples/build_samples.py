"""Builds the sample ONNX models and their sample inputs into samples/ (see samples/README.md).

Every weight comes from a fixed-seed numpy Generator and every file is written byte-stably, so running
this twice gives identical .onnx and .npz files (tests/test_samples.py checks that the committed files
equal a fresh build).

Run: python samples/build_samples.py [--out DIR] [--bert-mini PATH]
"""
from __future__ import annotations

import argparse
import io
import sys
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from numpy.lib.stride_tricks import sliding_window_view
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8  # the IR version that goes with opset 17; every onnxruntime >= 1.10 loads it
PRODUCER = "xputools-samples"
SAMPLES_DIR = Path(__file__).resolve().parent
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # fixed so the .npz bytes do not depend on when they were written

FLOAT = TensorProto.FLOAT
INT64 = TensorProto.INT64
INT8 = TensorProto.INT8


# --------------------------------------------------------------------------------------------------
# Byte-stable writers


def save_npz(path: str | Path, arrays: Mapping[str, np.ndarray]) -> None:
    """Writes an .npz that np.load reads with allow_pickle=False, with fixed zip timestamps."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        for key, array in arrays.items():
            array = np.asarray(array)
            if array.dtype.hasobject:
                raise ValueError(f"npz entry {key!r} has dtype object; only plain numeric arrays are saved")
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.ascontiguousarray(array), allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=_ZIP_DATE)
            info.create_system = 3
            info.external_attr = 0o644 << 16
            archive.writestr(info, buffer.getvalue())


def save_model(path: str | Path, model: onnx.ModelProto) -> None:
    Path(path).write_bytes(model.SerializeToString())


# --------------------------------------------------------------------------------------------------
# Graph building


def he_normal(rng: np.random.Generator, shape: tuple[int, ...], fan_in: int) -> np.ndarray:
    return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)


def scaled_normal(rng: np.random.Generator, shape: tuple[int, ...], std: float) -> np.ndarray:
    return (rng.standard_normal(shape) * std).astype(np.float32)


@dataclass
class GraphBuilder:
    """Collects nodes and initializers; a single-output node's output tensor carries the node's name."""

    name: str
    seed: int
    nodes: list[onnx.NodeProto] = field(default_factory=list)
    initializers: list[onnx.TensorProto] = field(default_factory=list)
    inputs: list[onnx.ValueInfoProto] = field(default_factory=list)
    outputs: list[onnx.ValueInfoProto] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.seed)
        self._tensor_names: set[str] = set()
        self._node_names: set[str] = set()

    def _claim(self, names: set[str], name: str) -> str:
        if name in names:
            raise ValueError(f"graph {self.name!r}: name {name!r} is used twice")
        names.add(name)
        return name

    def input(self, name: str, elem_type: int, shape: list[int | str]) -> str:
        self._claim(self._tensor_names, name)
        self.inputs.append(helper.make_tensor_value_info(name, elem_type, shape))
        return name

    def output(self, name: str, elem_type: int, shape: list[int | str]) -> None:
        if name not in self._tensor_names:
            raise ValueError(f"graph {self.name!r}: output {name!r} is not produced by any node")
        self.outputs.append(helper.make_tensor_value_info(name, elem_type, shape))

    def const(self, name: str, value: np.ndarray) -> str:
        self._claim(self._tensor_names, name)
        self.initializers.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def op(self, op_type: str, inputs: list[str], name: str, out: str | None = None, **attrs) -> str:
        return self.op_multi(op_type, inputs, name, [out or name], **attrs)[0]

    def op_multi(self, op_type: str, inputs: list[str], name: str, outs: list[str], **attrs) -> list[str]:
        self._claim(self._node_names, name)
        for out in outs:
            if out:
                self._claim(self._tensor_names, out)
        self.nodes.append(helper.make_node(op_type, inputs, outs, name=name, **attrs))
        return outs

    def model(self, doc: str) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, self.name, self.inputs, self.outputs, self.initializers)
        model = helper.make_model(
            graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name=PRODUCER, doc_string=doc
        )
        model.ir_version = IR_VERSION
        onnx.checker.check_model(model, full_check=True)
        return model

    # Layers shared by several samples -------------------------------------------------------------

    def linear(self, x: str, name: str, fan_in: int, fan_out: int, std: float | None = None) -> str:
        """MatMul by a [fan_in, fan_out] weight, then Add of the bias (works on any leading dims)."""
        weight_std = np.sqrt(1.0 / fan_in) if std is None else std
        w = self.const(f"{name}.weight", scaled_normal(self.rng, (fan_in, fan_out), weight_std))
        b = self.const(f"{name}.bias", scaled_normal(self.rng, (fan_out,), 0.02))
        return self.op("Add", [self.op("MatMul", [x, w], f"{name}/matmul"), b], f"{name}/add")

    def gemm(self, x: str, name: str, fan_in: int, fan_out: int, out: str | None = None) -> str:
        """Gemm with the weight stored [fan_out, fan_in] (transB=1), as PyTorch exports nn.Linear."""
        w = self.const(f"{name}.weight", he_normal(self.rng, (fan_out, fan_in), fan_in))
        b = self.const(f"{name}.bias", scaled_normal(self.rng, (fan_out,), 0.05))
        return self.op("Gemm", [x, w, b], name, out=out, transB=1)

    def conv(self, x: str, name: str, c_in: int, c_out: int, kernel: int, group: int = 1, **attrs) -> str:
        fan_in = (c_in // group) * kernel * kernel
        w = self.const(f"{name}.weight", he_normal(self.rng, (c_out, c_in // group, kernel, kernel), fan_in))
        b = self.const(f"{name}.bias", scaled_normal(self.rng, (c_out,), 0.05))
        return self.op("Conv", [x, w, b], name, kernel_shape=[kernel, kernel], group=group, **attrs)

    def batch_norm(self, x: str, name: str, channels: int) -> str:
        rng = self.rng
        scale = self.const(f"{name}.scale", rng.uniform(0.5, 1.5, channels).astype(np.float32))
        bias = self.const(f"{name}.bias", scaled_normal(rng, (channels,), 0.1))
        mean = self.const(f"{name}.mean", scaled_normal(rng, (channels,), 0.2))
        var = self.const(f"{name}.var", rng.uniform(0.5, 2.5, channels).astype(np.float32))
        return self.op("BatchNormalization", [x, scale, bias, mean, var], name, epsilon=1e-5)

    def layer_norm(self, x: str, name: str, hidden: int) -> str:
        gamma = (1.0 + scaled_normal(self.rng, (hidden,), 0.05)).astype(np.float32)
        scale = self.const(f"{name}.scale", gamma)
        bias = self.const(f"{name}.bias", scaled_normal(self.rng, (hidden,), 0.02))
        return self.op("LayerNormalization", [x, scale, bias], name, axis=-1, epsilon=1e-5)


@dataclass(frozen=True)
class Sample:
    model: onnx.ModelProto
    inputs: dict[str, np.ndarray]
    extra_npz: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # suffix -> arrays


# --------------------------------------------------------------------------------------------------
# 1. MLP


def build_mlp() -> Sample:
    g = GraphBuilder("mlp", seed=101)
    x = g.input("x", FLOAT, [4, 64])
    h = g.op("Relu", [g.gemm(x, "fc1", 64, 128)], "fc1/relu")
    h = g.op("Relu", [g.linear(h, "fc2", 128, 128, std=np.sqrt(2.0 / 128))], "fc2/relu")
    logits = g.gemm(h, "fc3", 128, 10)
    g.op("Softmax", [logits], "softmax", out="probs", axis=-1)
    g.output("probs", FLOAT, [4, 10])
    inputs = {"x": g.rng.standard_normal((4, 64)).astype(np.float32)}
    return Sample(g.model("MLP 64-128-128-10 with softmax"), inputs)


# --------------------------------------------------------------------------------------------------
# 2. CNN


def build_cnn() -> Sample:
    g = GraphBuilder("cnn", seed=202)
    x = g.input("x", FLOAT, [1, 3, 32, 32])
    h = g.conv(x, "stem/conv", 3, 16, 3, pads=[1, 1, 1, 1])  # [1,16,32,32]
    h = g.op("Relu", [g.batch_norm(h, "stem/bn", 16)], "stem/relu")
    h = g.op("MaxPool", [h], "stem/maxpool", kernel_shape=[2, 2], strides=[2, 2])  # [1,16,16,16]

    a = g.conv(h, "branch_a/dwconv", 16, 16, 3, group=16, pads=[1, 1, 1, 1])
    a = g.conv(a, "branch_a/pwconv", 16, 16, 1)
    a = g.op("HardSwish", [a], "branch_a/hardswish")  # [1,16,16,16]

    b = g.conv(h, "branch_b/conv", 16, 16, 3, strides=[2, 2], dilations=[2, 2], pads=[2, 2, 2, 2])  # 8x8
    b = g.op("Relu", [b], "branch_b/relu")
    scales = g.const("branch_b/resize.scales", np.array([1, 1, 2, 2], np.float32))
    b = g.op(
        "Resize", [b, "", scales], "branch_b/resize",
        mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor",
    )  # [1,16,16,16]

    h = g.op("Concat", [a, b], "concat", axis=1)  # [1,32,16,16]
    w_up = g.const("up/convtranspose.weight", he_normal(g.rng, (32, 16, 2, 2), 32))
    b_up = g.const("up/convtranspose.bias", scaled_normal(g.rng, (16,), 0.05))
    h = g.op("ConvTranspose", [h, w_up, b_up], "up/convtranspose", kernel_shape=[2, 2], strides=[2, 2])
    h = g.op("Relu", [h], "up/relu")  # [1,16,32,32]
    h = g.op("AveragePool", [h], "head/avgpool", kernel_shape=[2, 2], strides=[2, 2])  # [1,16,16,16]
    h = g.conv(h, "head/conv", 16, 32, 3, strides=[2, 2], pads=[1, 1, 1, 1])  # [1,32,8,8]
    h = g.op("Relu", [h], "head/relu")
    h = g.op("GlobalAveragePool", [h], "head/gap")  # [1,32,1,1]
    h = g.op("Flatten", [h], "head/flatten", axis=1)
    g.gemm(h, "head/fc", 32, 10, out="logits")
    g.output("logits", FLOAT, [1, 10])

    inputs = {"x": g.rng.standard_normal((1, 3, 32, 32)).astype(np.float32)}
    calib = {"x": g.rng.standard_normal((8, 1, 3, 32, 32)).astype(np.float32)}
    doc = "small CNN: conv/bn/pool/depthwise/dilated/resize/convtranspose"
    return Sample(g.model(doc), inputs, {"calib": calib})


# --------------------------------------------------------------------------------------------------
# 3. Transformer encoder (shared with build_bert_mini)


def build_encoder(
    name: str, *, layers: int, hidden: int, heads: int, seq: int, vocab: int, seed: int
) -> GraphBuilder:
    """Pre-LayerNorm transformer encoder; input "input_ids" int64 [batch, seq], output "hidden"."""
    if min(layers, hidden, heads, seq, vocab) < 1:
        raise ValueError("encoder sizes must all be >= 1")
    if hidden % heads:
        raise ValueError(f"hidden ({hidden}) must be a multiple of heads ({heads})")
    head_dim = hidden // heads
    ffn = 4 * hidden
    g = GraphBuilder(name, seed=seed)
    ids = g.input("input_ids", INT64, ["batch", seq])
    token_table = g.const("embed/token.weight", scaled_normal(g.rng, (vocab, hidden), 1.0))
    position_table = g.const("embed/position.weight", scaled_normal(g.rng, (seq, hidden), 0.5))
    x = g.op("Add", [g.op("Gather", [token_table, ids], "embed/token", axis=0), position_table], "embed/add")

    # Reshape with 0 copies the symbolic batch (and seq) dims from the input.
    split_heads = g.const("shape/split_heads", np.array([0, 0, heads, head_dim], np.int64))
    merge_heads = g.const("shape/merge_heads", np.array([0, 0, hidden], np.int64))
    sqrt_head_dim = g.const("const/sqrt_head_dim", np.array(np.sqrt(head_dim), np.float32))
    sqrt2 = g.const("const/sqrt2", np.array(np.sqrt(2.0), np.float32))
    one = g.const("const/one", np.array(1.0, np.float32))
    half = g.const("const/half", np.array(0.5, np.float32))

    for layer in range(layers):
        p = f"layer{layer}"
        normed = g.layer_norm(x, f"{p}/ln1", hidden)
        heads_of = {}
        for t in ("q", "k", "v"):
            projected = g.linear(normed, f"{p}/attn/{t}", hidden, hidden)
            split = g.op("Reshape", [projected, split_heads], f"{p}/attn/{t}_split")
            # q, v -> [batch, heads, seq, head_dim]; k -> [batch, heads, head_dim, seq] (pre-transposed)
            perm = [0, 2, 3, 1] if t == "k" else [0, 2, 1, 3]
            heads_of[t] = g.op("Transpose", [split], f"{p}/attn/{t}_heads", perm=perm)
        q, k, v = heads_of["q"], heads_of["k"], heads_of["v"]
        scores = g.op("Div", [g.op("MatMul", [q, k], f"{p}/attn/scores"), sqrt_head_dim], f"{p}/attn/scale")
        probs = g.op("Softmax", [scores], f"{p}/attn/softmax", axis=-1)
        context = g.op("MatMul", [probs, v], f"{p}/attn/context")
        context = g.op("Transpose", [context], f"{p}/attn/context_t", perm=[0, 2, 1, 3])
        context = g.op("Reshape", [context, merge_heads], f"{p}/attn/merge")
        attn_out = g.linear(context, f"{p}/attn/out", hidden, hidden)
        x = g.op("Add", [x, attn_out], f"{p}/attn/residual")

        normed = g.layer_norm(x, f"{p}/ln2", hidden)
        up = g.linear(normed, f"{p}/ffn/up", hidden, ffn)
        erf = g.op("Erf", [g.op("Div", [up, sqrt2], f"{p}/ffn/gelu/div")], f"{p}/ffn/gelu/erf")
        gelu = g.op("Mul", [up, g.op("Add", [erf, one], f"{p}/ffn/gelu/add")], f"{p}/ffn/gelu/mul")
        gelu = g.op("Mul", [gelu, half], f"{p}/ffn/gelu/half")
        down = g.linear(gelu, f"{p}/ffn/down", ffn, hidden)
        x = g.op("Add", [x, down], f"{p}/ffn/residual")

    scale = g.const("final_ln.scale", np.ones(hidden, np.float32))
    bias = g.const("final_ln.bias", np.zeros(hidden, np.float32))
    g.op("LayerNormalization", [x, scale, bias], "final_ln", out="hidden", axis=-1, epsilon=1e-5)
    g.output("hidden", FLOAT, ["batch", seq, hidden])
    return g


def build_transformer() -> Sample:
    g = build_encoder("transformer", layers=2, hidden=64, heads=4, seq=16, vocab=100, seed=303)
    inputs = {"input_ids": g.rng.integers(0, 100, (2, 16), dtype=np.int64)}
    return Sample(g.model("2-layer transformer encoder, hidden 64, 4 heads, symbolic batch"), inputs)


def build_bert_mini(
    path: str | Path, layers: int = 6, hidden: int = 384, heads: int = 12, seq: int = 128, vocab: int = 1000
) -> Path:
    """Writes a BERT-sized encoder (not committed; for benchmarks) and <stem>.inputs.npz (batch 1)."""
    path = Path(path)
    g = build_encoder("bert_mini", layers=layers, hidden=hidden, heads=heads, seq=seq, vocab=vocab, seed=404)
    inputs = {"input_ids": g.rng.integers(0, vocab, (1, seq), dtype=np.int64)}
    return write_bench_model(path, g.model(f"BERT-mini encoder: {layers} layers, hidden {hidden}, {heads} heads, "
                                           f"seq {seq}"), inputs)


def write_bench_model(path: str | Path, model: onnx.ModelProto, inputs: Mapping[str, np.ndarray]) -> Path:
    """Writes a benchmark model and its inputs beside it (<stem>.inputs.npz); returns the model's path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_model(path, model)
    save_npz(path.with_name(f"{path.stem}.inputs.npz"), inputs)
    return path


# --------------------------------------------------------------------------------------------------
# 4. LSTM


def build_resnet(path: str | Path, size: int = 224, blocks: tuple[int, ...] = (2, 2, 2, 2), width: int = 64) -> Path:
    """Writes a ResNet-18-style CNN (not committed; for benchmarks) with random weights: 7x7/2 stem,
    max pool, basic residual blocks (BatchNorm after every conv), global average pool, 1000-way
    Gemm; and <stem>.inputs.npz (one [1,3,size,size] image)."""
    path = Path(path)
    g = GraphBuilder("resnet", seed=505)
    x = g.input("x", FLOAT, [1, 3, size, size])
    h = g.conv(x, "stem/conv", 3, width, 7, strides=[2, 2], pads=[3, 3, 3, 3])
    h = g.op("Relu", [g.batch_norm(h, "stem/bn", width)], "stem/relu")
    h = g.op("MaxPool", [h], "stem/maxpool", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    c_in = width
    for stage, count in enumerate(blocks):
        c_out = width << stage
        for i in range(count):
            name, stride = f"s{stage}b{i}", 2 if stage and not i else 1
            y = g.conv(h, f"{name}/conv1", c_in, c_out, 3, strides=[stride, stride], pads=[1, 1, 1, 1])
            y = g.op("Relu", [g.batch_norm(y, f"{name}/bn1", c_out)], f"{name}/relu1")
            y = g.batch_norm(g.conv(y, f"{name}/conv2", c_out, c_out, 3, pads=[1, 1, 1, 1]), f"{name}/bn2", c_out)
            if stride != 1 or c_in != c_out:
                h = g.batch_norm(g.conv(h, f"{name}/down", c_in, c_out, 1, strides=[stride, stride]),
                                 f"{name}/down_bn", c_out)
            h = g.op("Relu", [g.op("Add", [y, h], f"{name}/add")], f"{name}/relu2")
            c_in = c_out
    h = g.op("Flatten", [g.op("GlobalAveragePool", [h], "head/gap")], "head/flatten", axis=1)
    g.gemm(h, "head/fc", c_in, 1000, out="logits")
    g.output("logits", FLOAT, [1, 1000])
    inputs = {"x": g.rng.standard_normal((1, 3, size, size)).astype(np.float32)}
    return write_bench_model(path, g.model(f"ResNet-style CNN {size}x{size}, blocks {blocks}, random weights"), inputs)


def build_yolo(path: str | Path, size: int = 320, width: int = 16, classes: int = 80) -> Path:
    """Writes a YOLO-style detector (not committed; for benchmarks) with random weights: a strided
    conv backbone with BatchNorm and SiLU (x * Sigmoid(x), as exporters write it), a top-down neck
    (nearest Resize x2 + Concat), and three 1x1 detection heads (3 anchors x (5 + classes)) at strides
    8, 16 and 32, flattened and concatenated to [1, anchors*cells, 5 + classes]."""
    g = GraphBuilder("yolo", seed=707)
    x = g.input("x", FLOAT, [1, 3, size, size])

    def cbs(h: str, name: str, c_in: int, c_out: int, kernel: int, stride: int = 1) -> str:
        h = g.batch_norm(g.conv(h, f"{name}/conv", c_in, c_out, kernel, strides=[stride, stride],
                                pads=[kernel // 2] * 4), f"{name}/bn", c_out)
        return g.op("Mul", [h, g.op("Sigmoid", [h], f"{name}/sigmoid")], f"{name}/silu")

    h, c = cbs(x, "stem", 3, width, 3, 2), width
    features = []
    for stage in range(4):  # strides 4, 8, 16, 32
        h = cbs(h, f"down{stage}", c, 2 * c, 3, 2)
        c *= 2
        h = g.op("Add", [h, cbs(cbs(h, f"res{stage}a", c, c // 2, 1), f"res{stage}b", c // 2, c, 3)], f"res{stage}/add")
        features.append((h, c))
    (p3, c3), (p4, c4), (p5, c5) = features[1:]
    scales = g.const("up.scales", np.array([1, 1, 2, 2], np.float32))
    up = g.op("Resize", [cbs(p5, "lat5", c5, c4, 1), "", scales], "up5", mode="nearest")
    p4 = cbs(g.op("Concat", [up, p4], "cat4", axis=1), "neck4", 2 * c4, c4, 3)
    up = g.op("Resize", [cbs(p4, "lat4", c4, c3, 1), "", scales], "up4", mode="nearest")
    p3 = cbs(g.op("Concat", [up, p3], "cat3", axis=1), "neck3", 2 * c3, c3, 3)
    per_anchor = 5 + classes
    heads = []
    for level, (feat, ch) in enumerate([(p3, c3), (p4, c4), (p5, c5)]):
        y = g.conv(feat, f"head{level}/conv", ch, 3 * per_anchor, 1)
        shape = g.const(f"head{level}/shape", np.array([1, 3 * per_anchor, -1], np.int64))
        y = g.op("Transpose", [g.op("Reshape", [y, shape], f"head{level}/flatten")], f"head{level}/cells",
                 perm=[0, 2, 1])
        per_cell = g.const(f"head{level}/anchor_shape", np.array([1, -1, per_anchor], np.int64))
        heads.append(g.op("Reshape", [y, per_cell], f"head{level}/anchors"))
    g.op("Sigmoid", [g.op("Concat", heads, "detections/concat", axis=1)], "detections/sigmoid", out="detections")
    cells = sum((size // s) ** 2 for s in (8, 16, 32))
    g.output("detections", FLOAT, [1, 3 * cells, per_anchor])
    inputs = {"x": g.rng.uniform(0.0, 1.0, (1, 3, size, size)).astype(np.float32)}
    return write_bench_model(path, g.model(f"YOLO-style detector {size}x{size}, random weights"), inputs)


def build_crnn(path: str | Path, height: int = 32, width: int = 128, hidden: int = 128, classes: int = 37) -> Path:
    """Writes a CRNN-style text recognizer (not committed; for benchmarks) with random weights: a VGG-like
    conv stack on a [1, 1, height, width] line image pooled to height 1, the columns as a sequence, one
    LSTM, a per-step linear layer to `classes` and a Softmax: [steps, 1, classes]."""
    g = GraphBuilder("crnn", seed=808)
    h = g.input("x", FLOAT, [1, 1, height, width])
    c_in = 1
    for i, (c_out, pool) in enumerate([(32, (2, 2)), (64, (2, 2)), (128, (2, 1)), (128, (2, 1)), (256, (2, 1))]):
        h = g.op("Relu", [g.batch_norm(g.conv(h, f"conv{i}", c_in, c_out, 3, pads=[1, 1, 1, 1]), f"bn{i}", c_out)],
                 f"relu{i}")
        h = g.op("MaxPool", [h], f"pool{i}", kernel_shape=list(pool), strides=list(pool))
        c_in = c_out
    steps = width // 4
    seq = g.op("Transpose", [g.op("Squeeze", [h, g.const("squeeze.axes", np.array([2], np.int64))], "squeeze")],
               "to_sequence", perm=[2, 0, 1])  # [steps, 1, channels]
    bound = 1.0 / np.sqrt(hidden)
    w = g.const("lstm.W", g.rng.uniform(-bound, bound, (1, 4 * hidden, c_in)).astype(np.float32))
    r = g.const("lstm.R", g.rng.uniform(-bound, bound, (1, 4 * hidden, hidden)).astype(np.float32))
    b = g.const("lstm.B", g.rng.uniform(-bound, bound, (1, 8 * hidden)).astype(np.float32))
    y, _ = g.op_multi("LSTM", [seq, w, r, b], "lstm", ["lstm/y", "lstm/h_last"], hidden_size=hidden)
    y = g.op("Squeeze", [y, g.const("lstm.axes", np.array([1], np.int64))], "lstm/squeeze")  # [steps, 1, hidden]
    g.op("Softmax", [g.linear(y, "classifier", hidden, classes)], "probs", out="probs", axis=-1)
    g.output("probs", FLOAT, [steps, 1, classes])
    inputs = {"x": g.rng.uniform(0.0, 1.0, (1, 1, height, width)).astype(np.float32)}
    return write_bench_model(path, g.model(f"CRNN-style recognizer {height}x{width}, random weights"), inputs)


def build_lstm() -> Sample:
    seq, batch, n_in, n_hidden, n_out = 8, 2, 16, 32, 10
    g = GraphBuilder("lstm", seed=505)
    x = g.input("x", FLOAT, [seq, batch, n_in])
    bound = 1.0 / np.sqrt(n_hidden)  # PyTorch's LSTM init
    w = g.const("lstm.W", g.rng.uniform(-bound, bound, (1, 4 * n_hidden, n_in)).astype(np.float32))
    r = g.const("lstm.R", g.rng.uniform(-bound, bound, (1, 4 * n_hidden, n_hidden)).astype(np.float32))
    b = g.const("lstm.B", g.rng.uniform(-bound, bound, (1, 8 * n_hidden)).astype(np.float32))
    _, h_last = g.op_multi("LSTM", [x, w, r, b], "lstm", ["", "lstm/h_last"], hidden_size=n_hidden,
                           direction="forward")  # h_last: [1, batch, hidden]
    axes = g.const("squeeze.axes", np.array([0], np.int64))
    h = g.op("Squeeze", [h_last, axes], "lstm/squeeze")
    g.gemm(h, "fc", n_hidden, n_out, out="logits")
    g.output("logits", FLOAT, [batch, n_out])
    inputs = {"x": g.rng.standard_normal((seq, batch, n_in)).astype(np.float32)}
    doc = "LSTM (seq 8, batch 2, input 16, hidden 32) + Gemm on the last hidden state"
    return Sample(g.model(doc), inputs)


# --------------------------------------------------------------------------------------------------
# 5. Detector head


def build_detector_head() -> Sample:
    anchors, classes, grid = 3, 4, 8
    per_anchor = 5 + classes
    g = GraphBuilder("detector_head", seed=606)
    x = g.input("features", FLOAT, [1, 32, grid, grid])
    h = g.conv(x, "pred/conv", 32, anchors * per_anchor, 1)  # [1, 27, 8, 8]
    anchor_shape = g.const("shape/anchors", np.array([1, anchors, per_anchor, grid, grid], np.int64))
    h = g.op("Reshape", [h, anchor_shape], "pred/reshape")
    h = g.op("Transpose", [h], "pred/transpose", perm=[0, 1, 3, 4, 2])  # [1, 3, 8, 8, 9]
    sizes = g.const("split.sizes", np.array([2, 2, 1, classes], np.int64))
    xy, wh, obj, cls = g.op_multi("Split", [h, sizes], "pred/split",
                                  ["pred/xy", "pred/wh", "pred/obj", "pred/cls"], axis=-1)
    xy = g.op("Sigmoid", [xy], "pred/xy_sigmoid")
    obj = g.op("Sigmoid", [obj], "pred/obj_sigmoid")
    cls = g.op("Sigmoid", [cls], "pred/cls_sigmoid")
    h = g.op("Concat", [xy, wh, obj, cls], "pred/concat", axis=-1)
    boxes = anchors * grid * grid
    g.op("Reshape", [h, g.const("shape/out", np.array([1, boxes, per_anchor], np.int64))], "pred/flatten",
         out="detections")
    g.output("detections", FLOAT, [1, boxes, per_anchor])
    inputs = {"features": np.maximum(g.rng.standard_normal((1, 32, grid, grid)), 0).astype(np.float32)}
    return Sample(g.model("YOLO-style detector head: 3 anchors x (4 box + 1 obj + 4 classes) on 8x8"), inputs)


# --------------------------------------------------------------------------------------------------
# 6. int8 QDQ CNN


def _conv2d_f64(x: np.ndarray, w: np.ndarray, b: np.ndarray, stride: int, pad: int) -> np.ndarray:
    """Float64 reference Conv (NCHW, group 1) for calibration; float64 keeps the ranges machine-stable."""
    x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    kh, kw = w.shape[2:]
    windows = sliding_window_view(x, (kh, kw), axis=(2, 3))[:, :, ::stride, ::stride]  # N,C,H,W,kh,kw
    out = np.einsum("nchwij,ocij->nohw", windows, w.astype(np.float64))
    return out + b.astype(np.float64)[None, :, None, None]


def _int8_float_forward(weights: dict[str, np.ndarray], x: np.ndarray) -> dict[str, np.ndarray]:
    """Float64 forward pass of the int8 sample's float model; returns every quantized activation."""
    acts = {"x": x.astype(np.float64)}
    for name, source, stride in (("conv1", "x", 1), ("conv2", "conv1", 2)):
        conv = _conv2d_f64(acts[source], weights[f"{name}.weight"], weights[f"{name}.bias"], stride, pad=1)
        acts[name] = np.maximum(conv, 0)
    acts["gap"] = acts["conv2"].mean(axis=(2, 3))
    acts["logits"] = acts["gap"] @ weights["fc.weight"].astype(np.float64) + weights["fc.bias"]
    return acts


def _int8_weights() -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    rng = np.random.default_rng(707)
    weights = {
        "conv1.weight": he_normal(rng, (8, 3, 3, 3), 27),
        "conv1.bias": scaled_normal(rng, (8,), 0.05),
        "conv2.weight": he_normal(rng, (16, 8, 3, 3), 72),
        "conv2.bias": scaled_normal(rng, (16,), 0.05),
        "fc.weight": he_normal(rng, (16, 10), 16),
        "fc.bias": scaled_normal(rng, (10,), 0.05),
    }
    calib = rng.standard_normal((8, 1, 3, 16, 16)).astype(np.float32)
    return weights, calib, calib[0]


def int8_float_reference(x: np.ndarray) -> np.ndarray:
    """Logits of the unquantized model behind int8_qdq.onnx (float64), to measure quantization error."""
    weights, _, _ = _int8_weights()
    return _int8_float_forward(weights, x)["logits"]


def _activation_qparams(values: np.ndarray) -> tuple[np.float32, np.int8]:
    """Asymmetric int8 (range always includes 0), as onnxruntime's static QDQ quantizer does."""
    low, high = min(float(values.min()), 0.0), max(float(values.max()), 0.0)
    scale = np.float32((high - low) / 255.0 if high > low else 1.0)
    zero_point = np.int8(np.clip(np.round(-128.0 - low / float(scale)), -128, 127))
    return scale, zero_point


def _per_channel_scales(w: np.ndarray) -> np.ndarray:
    max_abs = np.abs(w.reshape(w.shape[0], -1)).max(axis=1)
    return np.where(max_abs > 0, max_abs / 127.0, 1.0).astype(np.float32)


def _quantize(w: np.ndarray, scale: np.ndarray, dtype: type) -> np.ndarray:
    info = np.iinfo(dtype)
    return np.clip(np.round(w / scale), info.min, info.max).astype(dtype)


def build_int8_qdq() -> Sample:
    weights, calib, sample = _int8_weights()
    ranges: dict[str, list[np.ndarray]] = {}
    for x in calib:
        for key, value in _int8_float_forward(weights, x).items():
            ranges.setdefault(key, []).append(value)
    qparams = {key: _activation_qparams(np.stack(values)) for key, values in ranges.items()}

    g = GraphBuilder("int8_qdq", seed=0)

    def qdq(tensor: str, key: str) -> str:
        scale, zero_point = qparams[key]
        s = g.const(f"{key}.act_scale", np.array(scale, np.float32))
        z = g.const(f"{key}.act_zero_point", np.array(zero_point, np.int8))
        q = g.op("QuantizeLinear", [tensor, s, z], f"{key}/quantize")
        return g.op("DequantizeLinear", [q, s, z], f"{key}/dequantize")

    def dq_weight(name: str, w: np.ndarray, scale: np.ndarray, dtype: type) -> str:
        """Symmetric (zero point 0) constant; a 1-D scale means per output channel (axis 0)."""
        per_channel = scale.ndim == 1
        broadcast_scale = scale.reshape(-1, *[1] * (w.ndim - 1)) if per_channel else scale
        q = g.const(f"{name}_quantized", _quantize(w, broadcast_scale, dtype))
        s = g.const(f"{name}_scale", scale)
        z = g.const(f"{name}_zero_point", np.zeros(scale.shape, dtype))
        attrs = {"axis": 0} if per_channel else {}
        return g.op("DequantizeLinear", [q, s, z], f"{name}/dequantize", **attrs)

    def qconv(x: str, in_key: str, name: str, stride: int) -> str:
        w, b = weights[f"{name}.weight"], weights[f"{name}.bias"]
        w_scale = _per_channel_scales(w)
        b_scale = (w_scale.astype(np.float64) * float(qparams[in_key][0])).astype(np.float32)
        w_dq = dq_weight(f"{name}.weight", w, w_scale, np.int8)
        b_dq = dq_weight(f"{name}.bias", b, b_scale, np.int32)
        conv = g.op("Conv", [x, w_dq, b_dq], name, kernel_shape=[3, 3], strides=[stride, stride],
                    pads=[1, 1, 1, 1])
        return g.op("Relu", [conv], f"{name}/relu")

    x = g.input("x", FLOAT, [1, 3, 16, 16])
    h = qconv(qdq(x, "x"), "x", "conv1", 1)  # [1, 8, 16, 16]
    h = qconv(qdq(h, "conv1"), "conv1", "conv2", 2)  # [1, 16, 8, 8]
    h = g.op("GlobalAveragePool", [qdq(h, "conv2")], "gap")
    h = g.op("Flatten", [h], "flatten", axis=1)
    h = qdq(h, "gap")
    fc_w = weights["fc.weight"]
    fc_scale = np.array(np.abs(fc_w).max() / 127.0, np.float32)
    fc_bias_scale = np.array(fc_scale * qparams["gap"][0], np.float32)
    w_dq = dq_weight("fc.weight", fc_w, fc_scale, np.int8)
    b_dq = dq_weight("fc.bias", weights["fc.bias"], fc_bias_scale, np.int32)
    g.op("Add", [g.op("MatMul", [h, w_dq], "fc/matmul"), b_dq], "fc/add", out="logits")
    g.output("logits", FLOAT, [1, 10])
    doc = "int8 QDQ CNN: per-tensor asymmetric activations, per-channel symmetric conv weights, int32 biases"
    return Sample(g.model(doc), {"x": sample}, {"calib": {"x": calib}})


# --------------------------------------------------------------------------------------------------

MODELS: dict[str, Callable[[], Sample]] = {
    "mlp": build_mlp,
    "cnn": build_cnn,
    "transformer": build_transformer,
    "lstm": build_lstm,
    "detector_head": build_detector_head,
    "int8_qdq": build_int8_qdq,
}


def build_all(out_dir: str | Path = SAMPLES_DIR) -> list[Path]:
    """Writes <model>.onnx, <model>.inputs.npz and any <model>.calib.npz; returns the paths written."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, build in MODELS.items():
        sample = build()
        files = {f"{name}.onnx": sample.model, f"{name}.inputs.npz": sample.inputs}
        files.update({f"{name}.{suffix}.npz": arrays for suffix, arrays in sample.extra_npz.items()})
        for filename, content in files.items():
            path = out_dir / filename
            if isinstance(content, onnx.ModelProto):
                save_model(path, content)
            else:
                save_npz(path, content)
            written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build the sample ONNX models and their inputs.")
    parser.add_argument("--out", type=Path, default=SAMPLES_DIR, help="output directory (default: samples/)")
    parser.add_argument("--bert-mini", type=Path, metavar="PATH",
                        help="also write a BERT-mini encoder (6 layers, hidden 384) to PATH, for benchmarks")
    args = parser.parse_args(argv)
    for path in build_all(args.out):
        print(path)
    if args.bert_mini is not None:
        print(build_bert_mini(args.bert_mini))
    return 0


if __name__ == "__main__":
    sys.exit(main())
