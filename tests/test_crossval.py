"""Cross-validation: folds keep groups whole, the baselines' known answers, the protocol end to end."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from mmemo.cli import main
from mmemo.errors import ConfigError
from mmemo.pipeline.crossval import grouped_folds, ridge_fit, score


def test_folds_never_split_a_group_and_are_balanced():
    keys = [f"s{i % 7}" for i in range(40)]  # 7 groups of 5 or 6 clips
    for seed in range(5):
        folds = grouped_folds(keys, 3, seed)
        assert sorted(i for f in folds for i in f) == list(range(40))
        groups = [{keys[i] for i in f} for f in folds]
        assert all(not (a & b) for j, a in enumerate(groups) for b in groups[j + 1 :])
        assert max(map(len, folds)) - min(map(len, folds)) <= 6  # at most one group apart
    assert grouped_folds(keys, 3, 0) != grouped_folds(keys, 3, 1)  # the seed reshuffles
    with pytest.raises(ConfigError, match="only 7 group"):
        grouped_folds(keys, 8, 0)


def test_training_mean_scores_ccc_zero():
    """A constant prediction has no covariance with the truth: CCC exactly 0, PCC undefined (NaN)."""
    truth = [np.array([[0.1, -0.2], [0.5, 0.3], [0.9, 0.0]]), np.array([[-0.4, 0.6], [0.2, 0.1]])]
    masks = [np.ones(3, bool), np.ones(2, bool)]
    const = [np.broadcast_to(np.array([0.3, 0.1]), t.shape) for t in truth]
    for level in ("frame", "clip"):
        s = score(const, truth, masks, level)
        assert s["valence"]["ccc"] == 0.0 and s["arousal"]["ccc"] == 0.0
        assert np.isnan(s["valence"]["pcc"])
    # by hand, frame level: valence truth 0.1 0.5 0.9 -0.4 0.2 -> RMSE of 0.3 against it
    t = np.array([0.1, 0.5, 0.9, -0.4, 0.2])
    assert score(const, truth, masks, "frame")["valence"]["rmse"] == pytest.approx(np.sqrt(np.mean((t - 0.3) ** 2)))


def test_ridge_recovers_a_linear_map_and_its_loo_is_exact():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(30, 4)) * [1, 10, 0.1, 3] + [5, -2, 0, 1]
    w = np.array([[0.5, -1.0], [0.02, 0.0], [3.0, 1.0], [0.0, 0.2]])
    Y = X @ w + [0.3, -0.1]
    W, b, alpha = ridge_fit(X, Y)
    assert alpha == 0.01  # noiseless data: the smallest penalty wins the leave-one-out comparison
    np.testing.assert_allclose(X @ W + b, Y, atol=0.02)
    # The closed-form leave-one-out error equals refitting without each row in turn.
    Yn = Y + rng.normal(scale=0.5, size=Y.shape)
    W, b, alpha = ridge_fit(X, Yn, alphas=(3.0,))
    mu, sd = X.mean(0), X.std(0)

    def fit_std(Xs, Ys):  # ridge on X standardised with the full-data statistics, as ridge_fit does
        Z = (Xs - mu) / sd
        zm, ym = Z.mean(0), Ys.mean(0)
        Wz = np.linalg.solve((Z - zm).T @ (Z - zm) + 3.0 * np.eye(4), (Z - zm).T @ (Ys - ym))
        return Wz, ym - zm @ Wz

    Wz, bz = fit_std(X, Yn)
    np.testing.assert_allclose(((X - mu) / sd) @ Wz + bz, X @ W + b, atol=1e-10)
    assert alpha == 3.0


ARGS = ["--epochs", "1", "--batch-size", "4", "--workers", "0", "--hidden", "16", "--layers", "1", "--heads", "2",
        "--max-seq-len", "50", "-q"]  # fmt: skip


@pytest.mark.slow
def test_cross_validation_end_to_end_and_resume(demo_features, tmp_path):
    """The demo corpus (4 speakers x 2 clips), 2 folds x 2 seeds by speaker (the labels' speaker column is found
    by itself): every fold's run kept, test folds hold whole speakers, the mean baseline at 0, results as JSON and
    Markdown; a second call reuses every finished fold."""
    out = tmp_path / "cv"
    r = CliRunner().invoke(
        main, ["train", str(demo_features), "--out", str(out), "--folds", "2", "--seeds", "2", *ARGS]
    )
    assert r.exit_code == 0, r.output
    assert "grouped by speaker (4 groups)" in r.output and "| mmemo transformer |" in r.output
    folds = pd.read_csv(out / "folds.csv")
    assert len(folds) == 2 * 2 * 3 * 2  # seeds x folds x models x dimensions
    assert (folds[folds["model"] == "mean"]["ccc"] == 0).all()
    for seed in (0, 1):
        for k in (0, 1):
            cfg = json.loads((out / f"seed{seed}" / f"fold{k}" / "config.json").read_text())
            seen = {c.split("/")[0] for c in cfg["train_clips"] + cfg["val_clips"]}
            assert len(seen) == 2  # the other fold's two speakers: the test speakers were never trained on
            assert (out / f"seed{seed}" / f"fold{k}" / "best.pt").exists()
    doc = json.loads((out / "results.json").read_text())
    assert doc["folds"] == 2 and doc["seeds"] == 2 and doc["group"] == "speaker" and doc["level"] == "frame"
    assert doc["models"]["mean"]["valence"]["ccc"] == {"mean": 0.0, "std": 0.0}
    assert (out / "results.md").read_text().count("|") > 20
    r = CliRunner().invoke(
        main, ["train", str(demo_features), "--out", str(out), "--folds", "2", "--seeds", "2", *ARGS]
    )
    assert r.exit_code == 0 and r.output.count("done before") == 4
    assert pd.read_csv(out / "folds.csv").equals(folds)


def test_too_many_folds_is_one_clear_line(demo_features, tmp_path):
    r = CliRunner().invoke(main, ["train", str(demo_features), "--out", str(tmp_path / "x"), "--folds", "5", *ARGS])
    assert r.exit_code == 1 and "only 4 group(s)" in r.output
