"""DFT and STFT as one MatMul with a constant DFT matrix."""
from __future__ import annotations

import numpy as np

from ..graph import Graph, Node
from .builder import Builder, Rewrite, dtype_of, scalar_input, shape_of


# ---- DFT / STFT -------------------------------------------------------------------------------------
def _dft_params(node: Node, g: Graph) -> tuple[int, int, bool, bool] | str:
    """(signal axis, transform length, inverse, onesided) of a DFT, or why it cannot be rewritten."""
    shape = shape_of(g, node.input(0))
    rank = len(shape)
    if rank < 2 or shape[-1] not in (1, 2):
        return "DFT input must end in a dim of 1 (real) or 2 (complex)"
    if node.input(2) or g.opset.get("", 17) >= 20:
        axis, why = scalar_input(g, node, 2, "axis")
        axis = -2 if axis is None and not why else axis
    else:
        axis, why = int(node.attrs.get("axis", 1)), None
    length, why_len = scalar_input(g, node, 1, "dft_length")
    if why or why_len:
        return why or why_len
    if not -rank <= axis < rank or axis % rank == rank - 1:
        return "DFT axis out of range"
    axis %= rank
    inverse, onesided = bool(node.attrs.get("inverse", 0)), bool(node.attrs.get("onesided", 0))
    n = shape[axis]
    length = length if length is not None else (2 * (n - 1) if inverse and onesided else n)
    if length < 1:
        return "DFT length must be positive"
    return axis, length, inverse, onesided


def _dft_matrix(n: int, channels: int, length: int, inverse: bool, onesided: bool,
                window: np.ndarray | None = None) -> np.ndarray:
    """The constant W with y = x W for x = [n inputs x channels (re[, im])] and y = [outputs x (re, im)]
    (only re for an inverse one-sided transform): the DFT as one matrix product, in float64."""
    if inverse and onesided:  # the spectrum's missing half is the conjugate mirror of the given one
        used = np.arange(min(n, length // 2 + 1))
        weight = np.where((used == 0) | ((length % 2 == 0) & (used == length // 2)), 1.0, 2.0) / length
        phase = 2 * np.pi * np.outer(used, np.arange(length)) / length
        w = np.zeros((n, channels, length, 1))
        w[used, 0, :, 0] = weight[:, None] * np.cos(phase)
        if channels == 2:
            w[used, 1, :, 0] = -weight[:, None] * np.sin(phase)
        return w.reshape(n * channels, length)
    outputs = length // 2 + 1 if onesided else length
    sign, scale = (1.0, 1.0 / length) if inverse else (-1.0, 1.0)
    used = np.arange(min(n, length))  # a longer signal is cut, a shorter one padded with zeros
    phase = 2 * np.pi * np.outer(used, np.arange(outputs)) / length
    cos, sin = np.cos(phase) * scale, np.sin(phase) * scale
    if window is not None:
        cos, sin = cos * window[used, None], sin * window[used, None]
    w = np.zeros((n, channels, outputs, 2))
    w[used, 0, :, 0], w[used, 0, :, 1] = cos, sign * sin
    if channels == 2:
        w[used, 1, :, 0], w[used, 1, :, 1] = -sign * sin, cos
    return w.reshape(n * channels, outputs * 2)


MAX_DFT_MATRIX = 1 << 22  # elements of the constant matrix (16 MiB in f32): O(n^2), unlike an FFT


def _dft_problem(node: Node, g: Graph) -> str | None:
    dt = dtype_of(g, node.input(0))
    if not (dt.kind == "f" or dt.name == "bfloat16"):
        return f"{node.op_type} of {dt.name}"
    params = _dft_params(node, g) if node.op_type == "DFT" else _stft_params(node, g)
    if isinstance(params, str):
        return params
    channels = shape_of(g, node.input(0))[-1]
    if node.op_type == "DFT":
        axis, length = params[0], params[1]
        inputs = shape_of(g, node.input(0))[axis] * channels
    else:
        inputs = length = params[1]
        inputs *= channels
    if inputs * 2 * length > MAX_DFT_MATRIX:
        return (f"{node.op_type} of length {length}: its DFT matrix would exceed {MAX_DFT_MATRIX} elements "
                "(an FFT kernel would do)")
    return None


def _dft(b: Builder, node: Node) -> None:
    """Signal axis next to the channel dim, rows flattened, one MatMul with the DFT matrix, back."""
    g = b.g
    x = node.input(0)
    shape, dt = shape_of(g, x), dtype_of(g, x)
    axis, length, inverse, onesided = _dft_params(node, g)
    rank, n, channels = len(shape), shape[axis], shape[-1]
    w = _dft_matrix(n, channels, length, inverse, onesided)
    perm = [i for i in range(rank - 1) if i != axis] + [axis, rank - 1]
    moved = tuple(shape[i] for i in perm)
    if perm != list(range(rank)):
        x = b.op("Transpose", [x], moved, dt, "signal_last", perm=perm)
    rows = int(np.prod(moved[:-2], dtype=np.int64))
    flat = b.op("Reshape", [x, b.const("rows", np.array([rows, n * channels], np.int64))], (rows, n * channels), dt,
                "signal_rows")
    spectrum = b.op("MatMul", [flat, b.const("dft_matrix", w.astype(dt))], (rows, w.shape[1]), dt, "spectrum_rows")
    out_channels = 1 if inverse and onesided else 2
    out_moved = moved[:-2] + (w.shape[1] // out_channels, out_channels)
    back = [perm.index(i) for i in range(rank)]
    if back == list(range(rank)):
        b.op("Reshape", [spectrum, b.const("out_shape", np.array(out_moved, np.int64))], (), None,
             out=node.outputs[0])
        return
    unflat = b.op("Reshape", [spectrum, b.const("out_shape", np.array(out_moved, np.int64))], out_moved, dt,
                  "spectrum")
    b.op("Transpose", [unflat], (), None, out=node.outputs[0], perm=back)


def _stft_params(node: Node, g: Graph) -> tuple[int, int, bool] | str:
    """(frame step, frame length, onesided) of an STFT, or why it cannot be rewritten."""
    shape = shape_of(g, node.input(0))
    if len(shape) != 3 or shape[-1] not in (1, 2):
        return "STFT signal must be [batch, length, 1 or 2]"
    step, why = scalar_input(g, node, 1, "frame_step")
    length, why_len = scalar_input(g, node, 3, "frame_length")
    if why or why_len or step is None:
        return why or why_len or "STFT needs a frame_step"
    if node.input(2):
        length = shape_of(g, node.input(2))[0]
    if length is None or not 0 < length <= shape[1] or step < 1:
        return "STFT frame length/step out of range"
    return step, length, bool(node.attrs.get("onesided", 1))


def _stft(b: Builder, node: Node) -> None:
    """Frames by a constant-index Gather, the (constant) window folded into the DFT matrix."""
    g = b.g
    x, window = node.input(0), node.input(2)
    (batch, total, channels), dt = shape_of(g, x), dtype_of(g, x)
    step, length, onesided = _stft_params(node, g)
    frames = (total - length) // step + 1
    starts = np.arange(frames, dtype=np.int64)[:, None] * step + np.arange(length, dtype=np.int64)
    framed_shape = (batch, frames, length, channels)
    framed = b.op("Gather", [x, b.const("frame_positions", starts)], framed_shape, dt, "frames", axis=1)
    const_window = g.const(window) if window else None
    if window and const_window is None:  # a run-time window multiplies the frames
        column = b.op("Reshape", [window, b.const("window_column", np.array([length, 1], np.int64))], (length, 1),
                      dt, "window_column")
        framed = b.op("Mul", [framed, column], framed_shape, dt, "windowed")
    w = _dft_matrix(length, channels, length, False, onesided,
                    None if const_window is None else np.asarray(const_window, np.float64))
    rows = b.op("Reshape", [framed, b.const("rows", np.array([batch * frames, length * channels], np.int64))],
                (batch * frames, length * channels), dt, "frame_rows")
    spectrum = b.op("MatMul", [rows, b.const("dft_matrix", w.astype(dt))], (batch * frames, w.shape[1]), dt,
                    "spectrum_rows")
    b.op("Reshape", [spectrum, b.const("out_shape", np.array([batch, frames, w.shape[1] // 2, 2], np.int64))], (),
         None, out=node.outputs[0])


REWRITES: dict[str, Rewrite] = {
    "DFT": (_dft_problem, _dft), "STFT": (_dft_problem, _stft),
}
