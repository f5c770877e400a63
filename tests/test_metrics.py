"""CCC, PCC and the one flatness test (`is_constant`) that decides which clips have a per-clip CCC.

Expected values are worked out by hand in the comments.
"""

from __future__ import annotations

import numpy as np
import pytest

from mmemo.pipeline.metrics import ccc, clip_ccc, evaluate, is_constant, pcc

FLAT_VALUES = [0.1, 0.3, 1 / 3, -0.7, 1e-3]
FLAT_LENGTHS = [2, 7, 1000, 12345]
# np.std of these float32 constants is 0 for some (0.3 x 1000) and 1e-8 for others (0.1 x 7): a `std > 0` test
# scored the latter (CCC exactly 0, pulling the per-clip mean down) and skipped the former.

# A 5-point example by hand: x = 1..5, y = 2, 2, 3, 5, 4.
# mean x = 3, mean y = 3.2; x - mx = -2, -1, 0, 1, 2; y - my = -1.2, -1.2, -0.2, 1.8, 0.8;
# sum of products = 2.4 + 1.2 + 0 + 1.8 + 1.6 = 7; sum of squares: x 10, y 1.44 + 1.44 + 0.04 + 3.24 + 0.64 = 6.8.
# ddof 0: cov 7/5, var x 2, var y 1.36, bias^2 0.04: CCC = 2.8 / 3.4 = 14/17.
# ddof 1: cov 7/4, var x 2.5, var y 1.7: CCC = 3.5 / 4.24 = 175/212. Pearson: 7 / sqrt(10 * 6.8) = 7 / sqrt(68).
X5 = np.array([1, 2, 3, 4, 5], np.float64)
Y5 = np.array([2, 2, 3, 5, 4], np.float64)


def test_ccc_hand_computed_on_five_points():
    assert ccc(X5, Y5) == pytest.approx(14 / 17, abs=1e-12)
    assert ccc(X5, Y5, ddof=1) == pytest.approx(175 / 212, abs=1e-12)
    assert pcc(X5, Y5) == pytest.approx(7 / np.sqrt(68), abs=1e-12)
    assert clip_ccc(X5, Y5) == ccc(X5, Y5)  # a clip with variation is scored, with the plain CCC


@pytest.mark.parametrize("n", FLAT_LENGTHS)
@pytest.mark.parametrize("value", FLAT_VALUES)
def test_float32_constants_are_constant_whatever_the_value_and_length(value, n):
    t = np.full(n, value, np.float32)
    assert is_constant(t) and is_constant(t.astype(np.float64))
    assert np.isnan(clip_ccc(np.linspace(-1, 1, n), t))  # no per-clip CCC for a flat truth
    assert np.isnan(pcc(np.linspace(-1, 1, n), t))
    assert ccc(np.linspace(-1, 1, n), t) == 0.0  # pooled, a constant side has no covariance: exactly 0


@pytest.mark.parametrize("n", FLAT_LENGTHS)
@pytest.mark.parametrize("value", FLAT_VALUES)
def test_a_flat_clip_is_left_out_of_the_per_clip_mean(value, n):
    """One varying clip (CCC 14/17) and one flat clip: the per-clip mean is the varying clip's CCC alone."""
    flat_truth = np.full(n, value, np.float32)
    flat_pred = np.linspace(-0.5, 0.5, n).astype(np.float32)  # a prediction that varies: CCC 0 if it were scored
    r = evaluate([X5.astype(np.float32), flat_pred], [Y5.astype(np.float32), flat_truth])
    assert r["ccc_clip"] == pytest.approx(14 / 17, abs=1e-6)
    only = evaluate([flat_pred], [flat_truth])
    assert np.isnan(only["ccc_clip"])  # nothing left to average
    assert only["ccc"] == 0.0 and np.isnan(only["pcc"])


def test_is_constant_edges():
    one_ulp = np.array([0.1, np.nextafter(np.float32(0.1), np.float32(1))], np.float32)
    assert is_constant(one_ulp)  # float32 rounding
    assert is_constant([0.1, float(np.float32(0.1))])  # a float64 label beside its float32 copy
    assert not is_constant([0.1, 0.1001])  # a real variation, however small against the range [-1, 1]
    assert not is_constant([1e-9, 2e-9])  # relative to the magnitude: this doubles
    assert is_constant(np.zeros(10)) and is_constant([]) and is_constant([0.4])
    assert not is_constant([0.1, np.nan]) and not is_constant([np.nan, np.nan])
    assert is_constant([np.inf, np.inf]) and not is_constant([-np.inf, np.inf])
    assert not is_constant(np.linspace(-1, 1, 12345).astype(np.float32))


def test_varying_clips_are_all_scored():
    """Three clips with variation: the per-clip mean is the mean of their three CCCs."""
    rng = np.random.default_rng(0)
    truths = [rng.uniform(-1, 1, n).astype(np.float32) for n in (5, 40, 300)]
    preds = [0.5 * t + rng.normal(0, 0.1, len(t)).astype(np.float32) for t in truths]
    r = evaluate(preds, truths)
    expected = np.mean([ccc(p, t) for p, t in zip(preds, truths, strict=True)])
    assert r["ccc_clip"] == pytest.approx(expected, abs=1e-12)
    assert all(np.isfinite(clip_ccc(p, t)) for p, t in zip(preds, truths, strict=True))
