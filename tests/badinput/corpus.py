"""The bad-input corpus: hostile or broken files and options, built at test time in a directory.

Each case is (id, argv for `xpu`, expected exit code). Exit 2 is bad input (one line on stderr);
exit 1 is the documented "a check failed" (a hang found). Building the files is cheap: small text
programs, forged .xpu bytes, tiny ONNX models and .npz files.
"""
from __future__ import annotations

import base64
import io
import os
import sys
import zipfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "samples"
SECRET = b"TOP-SECRET-BYTES-0123456789"

COPY_XASM = """.arch xpu1
.tensor input x @0x0 shape=4 dtype=f32
.tensor output y @0x40 shape=4 dtype=f32
dma0 dma_copy dst=hbm@0x40{1:4}:f32 src=hbm@0x0{1:4}:f32
"""


def _model_bytes(nodes, inputs, outputs, inits=(), opset=17) -> bytes:
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outputs],
                              list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model.SerializeToString()


def _external_const(location: str) -> onnx.TensorProto:
    c = numpy_helper.from_array(np.zeros(4, np.float32), "c")
    c.ClearField("raw_data")
    c.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", "16")):
        c.external_data.add(key=key, value=value)
    return c


def _host_xasm(payload: bytes, inputs="[x]", outputs="[y]", y_shape="4") -> str:
    return (".arch xpu1\n.tensor input x @0x0 shape=4 dtype=f32\n"
            f".tensor output y @0x40 shape={y_shape} dtype=f32\n"
            f".hostop 0 h Custom inputs={inputs} outputs={outputs} "
            f"payload={base64.b64encode(payload).decode()}\nhost host_call op=0\n")


def _arch_toml(**changes) -> str:
    lines = []
    for line in (ROOT / "device_model/presets/xpu1.toml").read_text().splitlines():
        key = line.split("=", 1)[0].strip()
        if key == "name":
            line = 'name = "variant"'
        elif key in changes:
            line = f"{key} = {changes[key]}"
        lines.append(line)
    return "\n".join(lines) + "\n"


def _npz_header_claiming(nbytes: int) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False, "shape": (nbytes // 4,)})
    buf.write(b"\0" * 16)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("x.npy", buf.getvalue())
    return out.getvalue()


def build(d: Path) -> list[tuple[str, list, int]]:
    """Write the corpus files into `d` and return the cases. Run them with `d` as the current
    directory (a SECRET file sits there: no case may read it)."""
    from device_model.assembly import assemble
    from device_model.container import program_to_bytes

    def w(name: str, data: bytes | str) -> Path:
        (d / name).write_bytes(data if isinstance(data, bytes) else data.encode())
        return d / name

    (d / "secret.bin").write_bytes(SECRET)
    (d / "outside").mkdir()
    (d / "outside" / "secret.bin").write_bytes(SECRET)
    model_dir = d / "models"
    model_dir.mkdir()
    copy = w("copy.xasm", COPY_XASM)
    good = w("copy.xpu", program_to_bytes(assemble(COPY_XASM)))
    w("exists.xpu", b"an existing output: must not change")
    w("exists.npz", b"an existing output: must not change")
    w("exists.txt", b"an existing output: must not change")
    np.savez(d / "in.npz", x=np.ones(4, np.float32))
    np.save(d / "in.npy", np.ones(4, np.float32))
    mlp = SAMPLES / "mlp.onnx"
    tf = SAMPLES / "transformer.onnx"
    identity = _model_bytes([helper.make_node("Identity", ["a"], ["b"])], [("a", [4])], [("b", [4])])
    ext_payload = _model_bytes([helper.make_node("Add", ["a", "c"], ["b"])], [("a", [4])], [("b", [4])],
                               [_external_const("secret.bin")])
    two_inputs = _model_bytes([helper.make_node("Add", ["a", "a2"], ["b"])], [("a", [4]), ("a2", [4])],
                              [("b", [4])])
    ext_model = onnx.load_from_string(_model_bytes([helper.make_node("Add", ["a", "c"], ["b"])], [("a", [4])],
                                                   [("b", [4])], [_external_const("../outside/secret.bin")]))
    onnx.save(ext_model, str(model_dir / "ext_exists.onnx"))
    ext_missing = onnx.load_from_string(_model_bytes([helper.make_node("Add", ["a", "c"], ["b"])], [("a", [4])],
                                                     [("b", [4])], [_external_const("../outside/nothing.bin")]))
    onnx.save(ext_missing, str(model_dir / "ext_missing.onnx"))
    corrupt = bytearray(good.read_bytes())
    corrupt[len(corrupt) // 2] ^= 0xFF
    big = "9" * 5000
    readonly = Path("/proc/xpu-badinput.out") if sys.platform == "linux" and os.geteuid() == 0 else None
    if readonly is None:
        (d / "ro").mkdir()
        os.chmod(d / "ro", 0o555)
        readonly = d / "ro" / "out"
    x = w
    cases = [
        # ---- assembler and asm writer
        ("asm-missing", ["asm", d / "nope.xasm", "-o", d / "o1.xpu"], 2),
        ("asm-binary", ["asm", w("bin.xasm", b"\xff\xfe\x00\x01" * 50), "-o", d / "o2.xpu"], 2),
        ("asm-over-input", ["asm", copy, "-o", copy], 2),
        ("asm-exists", ["asm", copy, "-o", d / "exists.xpu"], 2),
        ("asm-missing-dir", ["asm", copy, "-o", d / "no" / "dir" / "o.xpu"], 2),
        ("asm-readonly-dir", ["asm", copy, "-o", readonly], 2),
        ("asm-huge-stride-count-1", ["asm", x("stride.xasm", COPY_XASM.replace(
            "src=hbm@0x0{1:4}", "src=hbm@0x0{99999999999999999999:1,1:4}")), "-o", d / "o3.xpu"], 2),
        ("asm-5000-digit-offset", ["asm", x("digits.xasm", COPY_XASM.replace("@0x40 shape", f"@{big} shape")),
                                   "-o", d / "o4.xpu"], 2),
        ("asm-5000-digit-count", ["asm", x("digits2.xasm", COPY_XASM.replace("{1:4}:f32 src",
                                                                              "{1:" + big + "}:f32 src")),
                                  "-o", d / "o5.xpu"], 2),
        ("asm-overlapping-tensors", ["asm", x("overlap.xasm", COPY_XASM.replace("@0x40 shape", "@0x8 shape")),
                                     "-o", d / "o6.xpu"], 2),
        ("asm-tap-count-1e20", ["asm", x("tap.xasm", COPY_XASM + ".tap t shape=4 dtype=f32 after=dma0:0\n"
                                         ".piece hbm@0x40{1:100000000000000000000}:f32 offset=0 strides=1\n"),
                                "-o", d / "o7.xpu"], 2),
        ("asm-tap-outside-tensor", ["asm", x("tap2.xasm", COPY_XASM + ".tap t shape=4 dtype=f32 after=dma0:0\n"
                                           ".piece hbm@0x40{1:4}:f32 offset=2 strides=1\n"), "-o", d / "o8.xpu"], 2),
        ("asm-semaphore-beyond-arch", ["asm", x("sem.xasm", COPY_XASM.replace("f32\n", "f32 signal=s99999+=1\n")
                                                .replace("shape=4 dtype=f32 signal=s99999+=1", "shape=4 dtype=f32")),
                                       "-o", d / "o9.xpu"], 2),
        # ---- .xpu loader
        ("xpu-truncated", ["run", w("cut.xpu", good.read_bytes()[:100]), "--random-inputs"], 2),
        ("xpu-random-bytes", ["run", w("rand.xpu", np.random.default_rng(5).bytes(4096)), "--random-inputs"], 2),
        ("xpu-flipped-byte", ["run", w("flip.xpu", bytes(corrupt)), "--random-inputs"], 2),
        ("disasm-garbage", ["disasm", w("junk.xpu", b"XPUPROG\0" + b"\xff" * 64)], 2),
        # ---- host-op payloads
        ("hostop-external-data", ["run", x("ext.xasm", _host_xasm(ext_payload)), "--random-inputs"], 2),
        ("hostop-garbage-payload", ["run", x("garb.xasm", _host_xasm(b"\x08\x99\xff\xff")), "--random-inputs"], 2),
        ("hostop-input-count", ["run", x("cnt.xasm", _host_xasm(two_inputs)), "--random-inputs"], 2),
        ("hostop-output-shape", ["run", x("shape.xasm", _host_xasm(identity, y_shape="5")), "--random-inputs"], 2),
        # ---- inputs
        ("inputs-npy", ["run", good, "--inputs", d / "in.npy"], 2),
        ("inputs-40GB-header", ["run", good, "--inputs", w("huge.npz", _npz_header_claiming(40 * 10**9))], 2),
        ("inputs-not-zip", ["run", good, "--inputs", w("nz.npz", b"PK\x03\x04 not really")], 2),
        ("inputs-wrong-name", ["run", good, "--inputs", _savez(d / "wn.npz", q=np.ones(4, np.float32))], 2),
        ("inputs-wrong-shape", ["run", good, "--inputs", _savez(d / "ws.npz", x=np.ones(5, np.float32))], 2),
        ("inputs-pickle", ["run", good, "--inputs", _savez(d / "pk.npz", x=np.array([{}], dtype=object))], 2),
        ("inputs-and-random", ["run", good, "--inputs", d / "in.npz", "--random-inputs"], 2),
        ("random-inputs-huge", ["run", x("huge.xasm", COPY_XASM.replace(
            ".tensor input x @0x0 shape=4", ".tensor input x @0x100000 shape=100000x100000x10")),
            "--random-inputs"], 2),
        # ---- run -o writer
        ("run-o-exists", ["run", good, "--random-inputs", "-o", d / "exists.npz"], 2),
        ("run-o-missing-dir", ["run", good, "--random-inputs", "-o", d / "no" / "out.npz"], 2),
        ("run-o-over-program", ["run", good, "--random-inputs", "-o", good], 2),
        ("run-o-over-inputs", ["run", good, "--inputs", d / "in.npz", "-o", d / "in.npz"], 2),
        ("run-o-readonly-dir", ["run", good, "--random-inputs", "-o", readonly], 2),
        # ---- disasm -o writer
        ("disasm-o-exists", ["disasm", good, "-o", d / "exists.txt"], 2),
        ("disasm-o-missing-dir", ["disasm", good, "-o", d / "no" / "out.txt"], 2),
        ("disasm-o-over-program", ["disasm", good, "-o", good], 2),
        # ---- ONNX models, shapes, options
        ("shape-superscript", ["run", tf, "--shape", "input_ids=²x16", "--random-inputs"], 2),
        ("shape-huge-number", ["run", tf, "--shape", "input_ids=99999999999999999999999x16", "--random-inputs"], 2),
        ("shape-needs-too-much-hbm", ["run", tf, "--shape", "input_ids=100000000x16", "--random-inputs"], 2),
        ("check-shape-garbage", ["check", tf, "--shape", "input_ids=axb"], 2),
        ("onnx-garbage", ["compile", w("junk.onnx", b"\x00\x01garbage" * 20), "-o", d / "o10.xpu"], 2),
        ("onnx-external-outside-exists", ["compile", model_dir / "ext_exists.onnx", "-o", d / "o11.xpu"], 2),
        ("onnx-external-outside-missing", ["compile", model_dir / "ext_missing.onnx", "-o", d / "o12.xpu"], 2),
        ("compile-o-exists", ["compile", mlp, "-o", d / "exists.xpu"], 2),
        ("compile-o-over-model", ["compile", mlp, "-o", mlp], 2),
        ("compile-o-missing-dir", ["compile", mlp, "-o", d / "no" / "m.xpu"], 2),
        ("compile-o-readonly-dir", ["compile", mlp, "-o", readonly], 2),
        ("compile-keep-unmatched-strict", ["compile", mlp, "--keep", "no_such_node*=fp32", "--strict",
                                           "-o", d / "o13.xpu"], 2),
        ("compile-calibration-npy", ["compile", mlp, "--precision", "int8", "--calibration", d / "in.npy",
                                     "-o", d / "o14.xpu"], 2),
        # ---- arch TOML
        ("arch-clock-inf", ["arch", "show", x("inf.toml", _arch_toml(clock_ghz="inf"))], 2),
        ("arch-clock-nan", ["arch", "show", x("nan.toml", _arch_toml(clock_ghz="nan"))], 2),
        ("arch-1e12-semaphores", ["arch", "show", x("sem.toml", _arch_toml(semaphores="1000000000000"))], 2),
        ("compile-arch-inf", ["compile", mlp, "--arch", d / "inf.toml", "-o", d / "o15.xpu"], 2),
        # ---- the documented exit 1
        ("run-deadlock", ["run", SAMPLES / "programs/deadlock.xasm"], 1),
    ]
    return [(name, [str(a) for a in args], code) for name, args, code in cases]


def _savez(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path
