"""The field's metrics for continuous emotion: CCC (pooled and per clip), PCC, RMSE, MAE.

Concordance correlation coefficient (Lin, 1989)::

    CCC = 2 cov(x, y) / (var(x) + var(y) + (mean(x) - mean(y))^2)

It is 1 only when predictions equal the truth, penalises bias and scale errors that Pearson's r ignores, and is
0 for a constant prediction. ``ddof`` chooses the variance estimator: 0 (population, n) is what the AVEC
challenges compute, 1 (sample, n - 1) what some papers report; both are offered, n is the default.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


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
    cov = 0.0 if _flat(x) or _flat(y) else ((x - mx) * (y - my)).sum() / (n - ddof)
    vx, vy = x.var(ddof=ddof), y.var(ddof=ddof)
    denom = vx + vy + (mx - my) ** 2
    return float(2 * cov / denom) if denom > 0 else float("nan")


def pcc(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation; NaN when either side is constant."""
    x, y = np.asarray(x, np.float64).ravel(), np.asarray(y, np.float64).ravel()
    # "Constant" up to rounding: the mean of n equal floats need not be bit-equal to them.
    if x.size < 2 or _flat(x) or _flat(y):
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


def _flat(x: np.ndarray) -> bool:
    return bool(x.std() <= 1e-6 * max(1.0, float(np.abs(x).max())))  # float32 rounding is ~1e-7


def rmse(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.asarray(x, np.float64) - np.asarray(y, np.float64)) ** 2)))


def mae(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))))


def evaluate(preds: Sequence[np.ndarray], truths: Sequence[np.ndarray], ddof: int = 0) -> dict[str, float]:
    """Metrics of one dimension over clips: ``preds[i]`` and ``truths[i]`` are clip i's labelled frames (T_i,).

    Returns ``ccc`` (pooled over all frames of all clips), ``ccc_clip`` (mean of per-clip CCCs, clips with
    fewer than 2 frames or a constant truth skipped), ``pcc``, ``rmse`` and ``mae`` (pooled).
    """
    if not preds:
        return {k: float("nan") for k in ("ccc", "ccc_clip", "pcc", "rmse", "mae")}
    p, t = np.concatenate([np.ravel(a) for a in preds]), np.concatenate([np.ravel(a) for a in truths])
    per_clip = [ccc(a, b, ddof) for a, b in zip(preds, truths, strict=True) if np.size(a) > 1 and np.std(b) > 0]
    per_clip = [c for c in per_clip if np.isfinite(c)]
    return {
        "ccc": ccc(p, t, ddof),
        "ccc_clip": float(np.mean(per_clip)) if per_clip else float("nan"),
        "pcc": pcc(p, t),
        "rmse": rmse(p, t),
        "mae": mae(p, t),
    }
