"""The epilogue that evacuates PSUM: dst = act(src * scale + bias), with the activation fused into
the matmul or convolution (node attribute `fused_activation`)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from device_model.isa import AP
from device_model.numerics import HARDSIGMOID_ALPHA, HARDSIGMOID_BETA

from ...context import LoweringContext
from ...emitter import Emitter
from ...errors import CompileError
from ...graph import Node

ACT_FUNCS = {"Relu": "relu", "Sigmoid": "sigmoid", "Tanh": "tanh", "HardSwish": "hardswish",
             "LeakyRelu": "leaky_relu"}


@dataclass
class Epilogue:
    """dst = act(src * scale + bias) where bias is a per-partition [P,1] AP (`row_bias`), a tile of
    the same shape as src (`tile_bias`) or a number (`const_bias`)."""

    scale: float = 1.0
    const_bias: float = 0.0
    act: dict | None = None
    mode: str = "exact"

    def emit(self, ctx: LoweringContext, src: AP, dst: AP, row_bias: AP | None = None,
             tile_bias: AP | None = None) -> None:
        """Emit dst = act(src * scale + bias)."""
        em = ctx.em
        cur = src
        if tile_bias is not None:
            if self.scale != 1.0:
                em.emit("dve", "tensor_scalar", {"dst": dst, "src": cur}, op0="mul", s0=self.scale)
                cur = dst
            em.emit("dve", "tensor_tensor", {"dst": dst, "a": cur, "b": tile_bias}, op="add")
            self._activation(ctx, dst, dst, 1.0, None, 0.0)
            return
        self._activation(ctx, cur, dst, self.scale, row_bias, self.const_bias)

    def _activation(self, ctx: LoweringContext, src: AP, dst: AP, scale: float, row_bias: AP | None,
                    const_bias: float) -> None:
        em, act = ctx.em, self.act
        name = act["name"] if act else None
        func, func_attrs = act_function(act)
        affine = []  # tensor_scalar stages for x*scale + bias
        if scale != 1.0:
            affine.append(("mul", scale, None))
        if row_bias is not None:
            affine.append(("add", None, row_bias))
        elif const_bias != 0.0:
            affine.append(("add", const_bias, None))
        if name is None or name == "Relu":
            stages = affine + ([("max", 0.0, None)] if name == "Relu" else [])
            if len(stages) <= 2:
                _tensor_scalar(em, src, dst, stages)
                return
        if func is not None:
            attrs = {"func": func, "mode": self.mode, **func_attrs}
            operands = {"dst": dst, "src": src}
            if scale != 1.0:
                attrs["scale"] = float(scale)
            if row_bias is not None:
                operands["bias_ap"] = row_bias
            elif const_bias != 0.0:
                attrs["bias"] = float(const_bias)
            em.emit("act", "activate", operands, **attrs)
            return
        # DVE-only tails: Clip and HardSigmoid with non-default parameters
        if affine or src != dst:
            _tensor_scalar(em, src, dst, affine)
        if name == "Clip":
            clip = [(op, float(v), None) for op, v in (("max", act.get("min")), ("min", act.get("max")))
                    if v is not None]
            if clip:
                _tensor_scalar(em, dst, dst, clip)
        elif name == "HardSigmoid":
            _tensor_scalar(em, dst, dst, [("mul", float(act.get("alpha", HARDSIGMOID_ALPHA)), None),
                                          ("add", float(act.get("beta", HARDSIGMOID_BETA)), None)])
            _tensor_scalar(em, dst, dst, [("max", 0.0, None), ("min", 1.0, None)])
        else:
            raise CompileError(f"fused activation {name} is not supported by the matmul/conv epilogue")


def act_function(act: dict | None) -> tuple[str | None, dict]:
    """(ACT function, its attributes) computing the fused activation `act` exactly, or (None, {})
    when the DVE must do it."""
    if not act:
        return "identity", {}
    name = act["name"]
    if name in ACT_FUNCS:
        return ACT_FUNCS[name], ({"alpha": float(act.get("alpha", 0.01))} if name == "LeakyRelu" else {})
    if name == "Gelu":
        return ("gelu_tanh" if act.get("approximate", "none") == "tanh" else "gelu"), {}
    if name == "HardSigmoid" and _same_f32(act.get("alpha", HARDSIGMOID_ALPHA), HARDSIGMOID_ALPHA) \
            and _same_f32(act.get("beta", HARDSIGMOID_BETA), HARDSIGMOID_BETA):
        return "hardsigmoid", {}  # the device's fixed parameters (ONNX attributes are float32)
    return None, {}


def _same_f32(a: float, b: float) -> bool:
    return np.float32(a) == np.float32(b)


def _tensor_scalar(em: Emitter, src: AP, dst: AP, stages: list[tuple[str, float | None, AP | None]]) -> None:
    if not stages:
        em.emit("dve", "copy", {"dst": dst, "src": src})
        return
    attrs, operands = {}, {"dst": dst, "src": src}
    for i, (op, value, ap) in enumerate(stages):
        attrs[f"op{i}"] = op
        if ap is not None:
            operands[f"s{i}_ap"] = ap
        else:
            attrs[f"s{i}"] = float(value)
    em.emit("dve", "tensor_scalar", operands, **attrs)


def epilogue_for(ctx: LoweringContext, node: Node, scale: float = 1.0, const_bias: float = 0.0) -> Epilogue:
    """The epilogue of `node`: its fused activation, evaluated exactly or by table per its precision."""
    return Epilogue(scale=scale, const_bias=const_bias, act=node.attrs.get("fused_activation"),
                    mode=ctx.act_mode(node))
