"""The field's metrics for continuous emotion: CCC (pooled and per clip), PCC, RMSE, MAE.

Concordance correlation coefficient (Lin, 1989)::

    CCC = 2 cov(x, y) / (var(x) + var(y) + (mean(x) - mean(y))^2)

It is 1 only when predictions equal the truth, penalises bias and scale errors that Pearson's r ignores, and is
0 for a constant prediction. ``ddof`` chooses the variance estimator: 0 (population, n) is what the AVEC
challenges compute, 1 (sample, n - 1) what some papers report; both are offered, n is the default.

"Constant" has one meaning everywhere, ``is_constant``: all values equal up to float32 rounding, relative to
their magnitude. (``np.std`` of n equal float32 values is often 1e-8, not 0, depending on the value and on n, so a
test such as ``std > 0`` calls some flat clips varying and others flat.) A clip whose truth is constant has no
per-clip CCC (``clip_ccc``: NaN, left out of the per-clip mean); a constant side has no covariance in ``ccc`` and
no correlation in ``pcc``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# Two values count as equal when they differ by at most this fraction of the larger magnitude: float32 carries
# 24 bits (a relative step of 1.2e-7), so this allows a few roundings (a float32 mean, a float64 -> float32 cast).
FLAT_RTOL = 1e-6


def is_constant(x: np.ndarray) -> bool:
    """True when every value of ``x`` equals every other up to float32 rounding: ``max - min <= FLAT_RTOL * max|x|``.

    The test is relative to the values' magnitude (all zeros are constant; 1e-9 beside 2e-9 is variation) and the
    same whatever the dtype, value and length. Fewer than 2 values are constant (nothing varies). NaN equals
    nothing, so an array holding a NaN is not constant; one infinity repeated is.
    """
    a = np.asarray(x, np.float64).ravel()
    if a.size < 2:
        return True
    lo, hi = float(a.min()), float(a.max())
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return lo == hi  # NaN: False; inf everywhere: True
    return hi - lo <= FLAT_RTOL * max(abs(lo), abs(hi))


def ccc(x: np.ndarray, y: np.ndarray, ddof: int = 0) -> float:
    """Concordance of predictions ``x`` and truth ``y`` (1-D, same length); NaN for fewer than 2 points."""
    x, y = np.asarray(x, np.float64).ravel(), np.asarray(y, np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"ccc of arrays of different shapes {x.shape} and {y.shape}")
    n = x.size
    if n < 2:
        return float("nan")
    mx, my = x.mean(), y.mean()
    # A constant (up to rounding) side has no covariance with anything: exactly 0, not 1e-17.
    cov = 0.0 if is_constant(x) or is_constant(y) else ((x - mx) * (y - my)).sum() / (n - ddof)
    vx, vy = x.var(ddof=ddof), y.var(ddof=ddof)
    denom = vx + vy + (mx - my) ** 2
    return float(2 * cov / denom) if denom > 0 else float("nan")


def pcc(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation; NaN when either side is constant."""
    x, y = np.asarray(x, np.float64).ravel(), np.asarray(y, np.float64).ravel()
    # "Constant" up to rounding: the mean of n equal floats need not be bit-equal to them.
    if is_constant(x) or is_constant(y):  # fewer than 2 points included
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


def clip_ccc(pred: np.ndarray, truth: np.ndarray, ddof: int = 0) -> float:
    """One clip's CCC, or NaN when its truth is constant (``is_constant``; fewer than 2 frames included).

    A constant truth has no variance for a CCC to measure agreement with: any prediction scores 0 (NaN when it
    equals the truth), however close it is. The per-clip mean (``evaluate``) and ``mmemo evaluate``'s clip table
    both leave such clips out through this one function.
    """
    return float("nan") if is_constant(truth) else ccc(pred, truth, ddof)


def rmse(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.asarray(x, np.float64) - np.asarray(y, np.float64)) ** 2)))


def mae(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))))


def evaluate(preds: Sequence[np.ndarray], truths: Sequence[np.ndarray], ddof: int = 0) -> dict[str, float]:
    """Metrics of one dimension over clips: ``preds[i]`` and ``truths[i]`` are clip i's labelled frames (T_i,).

    Returns ``ccc`` (pooled over all frames of all clips), ``ccc_clip`` (mean of per-clip CCCs, clips with
    fewer than 2 frames or a constant truth skipped: ``clip_ccc``), ``pcc``, ``rmse`` and ``mae`` (pooled).
    """
    if not preds:
        return {k: float("nan") for k in ("ccc", "ccc_clip", "pcc", "rmse", "mae")}
    p, t = np.concatenate([np.ravel(a) for a in preds]), np.concatenate([np.ravel(a) for a in truths])
    per_clip = [clip_ccc(a, b, ddof) for a, b in zip(preds, truths, strict=True)]
    per_clip = [c for c in per_clip if np.isfinite(c)]
    return {
        "ccc": ccc(p, t, ddof),
        "ccc_clip": float(np.mean(per_clip)) if per_clip else float("nan"),
        "pcc": pcc(p, t),
        "rmse": rmse(p, t),
        "mae": mae(p, t),
    }
