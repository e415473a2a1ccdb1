"""Rewrites of ONNX ops the device has no kernel for into ops it runs (a graph pass).

Each rewrite replaces one node by a few nodes the device already lowers (Gather, Where, compares,
reductions, Slice/Pad, elementwise arithmetic) or by a constant, computing the same result:

- GatherElements: Gather from the flattened data at flat indices = sum of each position's strides
  plus the (wrapped) index times the axis stride; constant indices give a constant flat index;
- GatherND: the same with one flat row index per index tuple;
- Trilu (constant k): Where with a constant triangle mask;
- ArgMax/ArgMin: Where(x == max(x), position, sentinel) reduced with Min (first index) or Max
  (select_last_index); Hardmax compares that index with every position;
- CumSum/CumProd (constant axis): a log-step scan (Hillis-Steele), shifted copies by Slice + Pad
  with the identity, exact for integers;
- TopK (constant k <= 16): k rounds of selecting the best element not taken yet;
- ScatterElements/ScatterND (none/add/max/min): each update's flat target compared with every row
  (quadratic: capped at SCATTER_MAX_PAIRS; the ISA has no scatter);
- Clip with run-time bounds: Max then Min; a constant Pad with a run-time value: Pad, then Where;
- Dropout in inference (or ratio 0): Identity, with an all-true mask constant;
- EyeLike: a constant (the output depends only on the static shape); Mean: Sum then Div;
- CastLike: Cast to the other input's dtype; LpNormalization (p 1 or 2): x over its norm;
- DFT/STFT: one MatMul with a constant DFT matrix (STFT frames by a constant-index Gather);
- IsInf: Equal with +-inf (of |x| when both signs are detected);
- GridSample (nearest, linear; any padding; 2-D/3-D): coordinate arithmetic, a Gather per corner;
- ReduceProd: a pairwise product tree; a reduction of an empty tensor: its constant;
- LpPool, LRN, InstanceNormalization: pools, reductions and elementwise ops; Tile: Reshape + Expand;
  Pad mode wrap: a Gather of source positions per axis;
- Conv/ConvTranspose whose weights do not fit on chip (the planner refuses it): partials over blocks
  of kernel taps that fit, summed (conv_split).

The rewrites live by family in indexing, selection, scans, signal, sampling, normalize, simple and conv_split;
builder holds what they share.

A rewrite that cannot apply (a run-time k or axis, a dtype the device does not store) leaves the node
alone and `rewrite_problem` says why; support.py reports that reason and the node runs on the host.
Inner values and nodes are named after the node they replace (`<node>/<what>`), and keep its
`origin`, so `xpu check` and the debugger show where they came from.
"""
from __future__ import annotations

from ..graph import Graph, Node
from . import conv_split, indexing, normalize, sampling, scans, selection, signal, simple
from .builder import Builder, Rewrite, unstored
from .conv_split import planning_for
from .scans import EMPTY_REDUCTION

# Inputs whose value decides how the device computes a node (not its output shape): a compile with
# these frozen (--const-inputs) runs the node on the device, otherwise on the host.
STRUCTURAL_INPUTS: dict[str, tuple[int, ...]] = {"Trilu": (1,), "CumSum": (1,), "CumProd": (1,), "DFT": (1, 2),
                                                  "STFT": (1, 3)}
REWRITES: dict[str, Rewrite] = {**indexing.REWRITES, **selection.REWRITES, **scans.REWRITES, **signal.REWRITES,
                                 **sampling.REWRITES, **normalize.REWRITES, **simple.REWRITES,
                                 **conv_split.REWRITES}
# ops the device runs in some forms already: their own support rule stays, the rewrite covers the rest
PARTLY_SUPPORTED = ("Clip", "Pad", "Conv", "ConvTranspose", *EMPTY_REDUCTION)


def rewrite_problem(node: Node, g: Graph) -> str | None:
    """Why `node` cannot be rewritten into device ops (None: `decompose` rewrites it)."""
    entry = REWRITES.get(node.op_type)
    if entry is None or node.domain:
        return f"op {node.op_type} is not implemented on the device"
    names = node.present_inputs() + [o for o in node.outputs if o]
    if any(not g.values[n].is_static for n in names if n in g.values):
        return "shapes are not static"
    return unstored(g, names) or entry[0](node, g)


def decompose(graph: Graph, target=None) -> Graph:
    """A copy of `graph` where every node REWRITES knows (and `rewrite_problem` accepts) is replaced
    by device ops computing the same values. `target` (the CompileOptions compiled for; None: fp32 on
    the default arch) is what the conv planner is asked about (conv_split)."""
    with planning_for(target):
        return _decompose(graph)


def _decompose(graph: Graph) -> Graph:
    g = graph.copy()
    nodes: list[Node] = []
    changed = False
    for node in g.nodes:
        if node.op_type not in REWRITES or rewrite_problem(node, g):
            nodes.append(node)
            continue
        b = Builder(g, node)
        REWRITES[node.op_type][1](b, node)
        nodes += b.nodes
        changed = True
    if changed:
        g.nodes = nodes
        g.changed()
        for n in nodes:  # outputs written through `out=` keep their Value (shape and dtype as imported)
            for o in n.outputs:
                assert o in g.values, o
    return g
