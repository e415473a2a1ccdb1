"""Per-tensor error metrics of a value against a reference, and their aggregation over samples.

- cosine: of the flattened tensors (1.0 when both are all zero);
- sqnr_db: 20·log10(‖ref‖ / ‖ref − x‖), the signal-to-quantization-noise ratio ORT's qdq_loss_debug
  reports (capped at MAX_SQNR_DB for an exact match);
- max_abs, mean_abs, rmse;
- max_rel: max |x − ref| / max(|ref|, floor), where the absolute floor (REL_FLOOR × the reference's
  RMS) keeps elements near zero from exploding the ratio;
- beyond_tol: share of elements with |x − ref| > atol + rtol·|ref| (rtol per precision, atol = rtol ×
  the reference's RMS), the "one-thousandth" style ratio msprobe reports;
- nan / inf: non-finite elements in the value (the reference's are `ref_nan` / `ref_inf`).
Non-finite elements are left out of the numeric metrics and counted instead.
Squared norms come from float32 dot products (BLAS): their last digits may differ between machines,
far below anything the verdicts and rankings depend on.
"""
from __future__ import annotations

import math

import numpy as np

MAX_SQNR_DB = 200.0
REL_FLOOR = 1e-3
# rtol per device precision: a few units in the last place of the format (int8: a few steps of 1/127)
RTOL = {"fp32": 1e-4, "bf16": 1.6e-2, "fp16": 2e-3, "fp8": 0.25, "int8": 5e-2}
METRIC_KEYS = ("cosine", "sqnr_db", "max_abs", "mean_abs", "rmse", "max_rel", "beyond_tol", "nan", "inf")
# for aggregation: which direction is worse
_WORSE_IS_LOWER = {"cosine", "sqnr_db"}


def _flat32(a) -> np.ndarray:
    a = np.asarray(a).reshape(-1)
    return a if a.dtype == np.float32 else a.astype(np.float32)


def tensor_metrics(value: np.ndarray, ref: np.ndarray, rtol: float = RTOL["bf16"]) -> dict[str, float]:
    """Error metrics of `value` against `ref` (same number of elements), computed in float32 (the
    device's widest float; relative error of the sums ~1e-6, far below what the metrics resolve)."""
    xs, rs = _flat32(value), _flat32(ref)
    if xs.size != rs.size:
        raise ValueError(f"{xs.size} elements compared with a reference of {rs.size}")
    out = {"nan": 0, "inf": 0, "ref_nan": 0, "ref_inf": 0}
    x, r = xs, rs
    keep = None
    with np.errstate(over="ignore", invalid="ignore"):
        ref_sq, x_sq = float(r @ r), float(x @ x)  # non-finite if any element is (or the squares overflow)
    if not math.isfinite(ref_sq + x_sq):
        bad_x, bad_r = ~np.isfinite(xs), ~np.isfinite(rs)
        if bad_x.any() or bad_r.any():
            out = {"nan": int(np.isnan(xs).sum()), "inf": int(np.isinf(xs).sum()),
                   "ref_nan": int(np.isnan(rs).sum()), "ref_inf": int(np.isinf(rs).sum())}
            keep = ~(bad_x | bad_r)
            x, r = xs[keep], rs[keep]
    if x.size == 0:
        out.update(cosine=1.0, sqnr_db=MAX_SQNR_DB, max_abs=0.0, mean_abs=0.0, rmse=0.0, max_rel=0.0,
                   beyond_tol=0.0)
        return out
    diff = x - r
    with np.errstate(over="ignore", invalid="ignore"):
        if keep is not None:
            ref_sq, x_sq = float(r @ r), float(x @ x)
        err_sq, xr = float(diff @ diff), float(x @ r)
    if not math.isfinite(ref_sq + err_sq + x_sq):  # huge values: square in float64
        x64, r64, d64 = x.astype(np.float64), r.astype(np.float64), diff.astype(np.float64)
        ref_sq, err_sq, x_sq, xr = float(r64 @ r64), float(d64 @ d64), float(x64 @ x64), float(x64 @ r64)
    adiff = np.abs(diff, out=diff)
    ref_norm, err_norm, x_norm = math.sqrt(ref_sq), math.sqrt(err_sq), math.sqrt(x_sq)
    if ref_norm == 0.0 and x_norm == 0.0:
        cosine = 1.0
    elif ref_norm == 0.0 or x_norm == 0.0:
        cosine = 0.0
    else:
        cosine = float(min(1.0, max(-1.0, xr / (ref_norm * x_norm))))
    if err_norm == 0.0:
        sqnr = MAX_SQNR_DB
    elif ref_norm == 0.0:
        sqnr = -MAX_SQNR_DB
    else:
        sqnr = float(min(MAX_SQNR_DB, 20.0 * math.log10(ref_norm / err_norm)))
    rms = ref_norm / math.sqrt(r.size)
    floor = np.float32(max(REL_FLOOR * rms, np.finfo(np.float32).tiny))
    abs_r = np.abs(r)
    buf = np.maximum(abs_r, floor)
    max_rel = float(np.divide(adiff, buf, out=buf).max())
    limit = np.multiply(abs_r, np.float32(rtol), out=abs_r)
    limit += np.float32(rtol * rms)
    out.update(
        cosine=cosine, sqnr_db=sqnr, max_abs=float(adiff.max()), mean_abs=float(adiff.sum(dtype=np.float64)) / r.size,
        rmse=err_norm / math.sqrt(r.size), max_rel=max_rel,
        beyond_tol=float(np.count_nonzero(adiff > limit)) / r.size,
    )
    if keep is not None:  # a non-finite element is beyond tolerance unless both sides agree on it
        agree = (np.isnan(xs) & np.isnan(rs)) | (xs == rs)
        disagree = int(np.count_nonzero(~keep & ~agree))
        out["beyond_tol"] = (out["beyond_tol"] * r.size + disagree) / keep.size
    return out


def worst(metrics: list[dict[str, float]]) -> dict[str, float]:
    """Per key, the worst value over samples (lowest cosine/SQNR, highest errors and counts)."""
    if len(metrics) == 1:
        return dict(metrics[0])
    return {k: (min if k in _WORSE_IS_LOWER else max)(m[k] for m in metrics) for k in metrics[0]}


def mean(metrics: list[dict[str, float]]) -> dict[str, float]:
    """Per key, the mean over samples."""
    return {k: float(np.mean([m[k] for m in metrics])) for k in metrics[0]}


def rtol_for(precision: str) -> float:
    return RTOL.get(precision, RTOL["bf16"])


HIST_SAMPLE = 1 << 16  # histograms look at most about this many elements per tensor
HIST_EDGES = tuple(float(e) for e in np.linspace(-10.0, 2.0, 25))


def error_histogram(value: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Counts of log10 |value − ref| in HIST_EDGES bins (exact matches and smaller errors in the
    first bin, larger ones in the last; non-finite elements left out), over every k-th element of
    big tensors."""
    x, r = _flat32(value), _flat32(ref)
    step = max(1, x.size // HIST_SAMPLE)  # a fixed stride: same counts for the same values
    d = np.abs(x[::step] - r[::step])
    d = d[np.isfinite(d)]
    logs = np.clip(np.log10(np.maximum(d, np.float32(1e-30))), HIST_EDGES[0], HIST_EDGES[-1])
    return np.histogram(logs, bins=np.asarray(HIST_EDGES))[0]
