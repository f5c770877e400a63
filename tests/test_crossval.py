"""Cross-validation: folds keep groups whole, the baselines' known answers, the protocol end to end."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from mmemo.cli import main
from mmemo.errors import ConfigError
from mmemo.pipeline.crossval import ensemble_predict, grouped_folds, margin, margin_text, ridge_fit, score


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
    # float32 labels (as shards hold them): the float32 mean of -0.25070405 repeated 148 times is -0.2507041, over
    # 135 rows -0.25070393, 1.3e-6 apart relative: no longer "constant" unless clip means are taken in float64.
    lengths = (37, 38, 40, 148, 156, 135, 39, 89, 91)
    rng = np.random.default_rng(0)
    truth32 = [rng.uniform(-1, 1, size=(n, 2)).astype(np.float32) for n in lengths]
    const32 = [np.broadcast_to(np.float32([-0.25070405, 0.01278572]), t.shape) for t in truth32]
    s = score(const32, truth32, [np.ones(n, bool) for n in lengths], "clip")
    assert s["valence"]["ccc"] == 0.0 and np.isnan(s["valence"]["pcc"]) and np.isnan(s["arousal"]["pcc"])
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
    assert doc["val_fraction"] != 0  # frame labels: the default validation share stays
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


def _table(cells: dict) -> pd.DataFrame:
    """Rows of a folds.csv from {(seed, fold): (transformer CCC, ridge CCC)}, valence only."""
    rows = []
    for (seed, fold), (t, r) in cells.items():
        rows += [{"seed": seed, "fold": fold, "model": "transformer", "dimension": "valence", "ccc": t},
                 {"seed": seed, "fold": fold, "model": "ridge", "dimension": "valence", "ccc": r}]  # fmt: skip
    return pd.DataFrame(rows)


def test_margin_is_the_mean_difference_over_seeds_against_its_std():
    """By hand: per-seed differences (0.1 + 0.3) / 2 = 0.2, (0.0 + 0.2) / 2 = 0.1, (0.3 + 0.3) / 2 = 0.3; their
    mean 0.2, sample std 0.1; 0.2 > 0.1 beats. Paired over the six folds: 5 won, one tie (not a win)."""
    cells = {(0, 0): (0.5, 0.4), (0, 1): (0.6, 0.3), (1, 0): (0.4, 0.4), (1, 1): (0.7, 0.5),
             (2, 0): (0.8, 0.5), (2, 1): (0.9, 0.6)}  # fmt: skip
    m = margin(_table(cells), "valence")
    assert m["per_seed"] == pytest.approx([0.2, 0.1, 0.3])
    assert m["mean"] == pytest.approx(0.2) and m["seed_std"] == pytest.approx(0.1)
    d = np.array([0.1, 0.3, 0.0, 0.2, 0.3, 0.3])
    assert m["paired_mean"] == pytest.approx(d.mean(), abs=1e-4)
    assert m["paired_std"] == pytest.approx(d.std(ddof=1), abs=1e-4)
    assert (m["wins"], m["n"], m["beats"]) == (5, 6, True)
    assert "+0.200 (per seed +0.200 +0.100 +0.300; std over seeds 0.100; 5/6 folds won)" in margin_text("valence", m)
    # Noisier seeds (0.0, 0.6): mean 0.3, std 0.42: the mean is within the seed-to-seed noise.
    cells = {(0, 0): (0.5, 0.5), (0, 1): (0.5, 0.5), (1, 0): (0.9, 0.3), (1, 1): (0.9, 0.3)}
    m = margin(_table(cells), "valence")
    assert m["mean"] == pytest.approx(0.3) and m["seed_std"] == pytest.approx(np.std([0.0, 0.6], ddof=1), abs=1e-4)
    assert m["beats"] is False and "does not beat ridge" in margin_text("valence", m)
    # One seed: no seed-to-seed noise, no verdict.
    m = margin(_table({(0, 0): (0.5, 0.4), (0, 1): (0.6, 0.3)}), "valence")
    assert m["beats"] is None and m["seed_std"] is None and "one seed" in margin_text("valence", m)


def test_ensemble_averages_its_members(demo_features, tmp_path):
    """Two copies of one model predict what it predicts; two different models predict the mean of the two."""
    from conftest import save_untrained_run

    from mmemo.data.features_dir import load_corpus
    from mmemo.pipeline.evaluate import predict_shard
    from mmemo.pipeline.predict import load_run

    shard = load_corpus(demo_features).clips[0].path
    a = load_run(save_untrained_run(tmp_path / "a", seed=0))
    b = load_run(save_untrained_run(tmp_path / "b", seed=1))
    pa, pb = predict_shard(a, shard).pred, predict_shard(b, shard).pred
    assert not np.allclose(pa, pb)
    np.testing.assert_allclose(ensemble_predict([a, a], shard), pa, rtol=0, atol=1e-7)
    np.testing.assert_allclose(ensemble_predict([a, b], shard), (pa + pb) / 2, rtol=0, atol=1e-7)
    np.testing.assert_array_equal(ensemble_predict([a], shard), pa)


def test_val_fraction_zero_trains_on_every_clip_and_keeps_the_last_epoch(demo_features, tmp_path):
    import torch

    from mmemo.config import TrainConfig
    from mmemo.pipeline.train import Trainer

    cfg = TrainConfig(epochs=2, batch_size=4, workers=0, max_seq_len=40, val_fraction=0)
    lines: list[str] = []
    with Trainer(demo_features, tmp_path / "run", cfg, {"hidden": 16, "layers": 1, "heads": 2}, log=lines.append,
                 progress=False) as t:  # fmt: skip
        history = t.fit()
    assert len(t.train_clips) == 8 and t.val_clips == []
    assert any("no validation clips" in line for line in lines)
    assert list(history["epoch"]) == [1, 2] and history["val_loss"].isna().all()  # no early stop, no validation
    best = torch.load(tmp_path / "run" / "best.pt", weights_only=True)
    last = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert best["epoch"] == last["epoch"] == 2
    assert all(torch.equal(best["model"][k], last["model"][k]) for k in last["model"])
    assert t.best_text() == "no validation: best.pt is epoch 2"
    assert (tmp_path / "run" / "learning_curves.png").exists()


@pytest.mark.slow
def test_cross_validation_with_an_ensemble_per_fold(demo_features, tmp_path):
    """2 folds x 1 seed with 2 transformers per fold (no validation share): each member's run kept under the
    fold, trained on every clip of the other fold with its own seed; the margin in results.json, no verdict."""
    from mmemo.config import TrainConfig
    from mmemo.pipeline.crossval import MEMBER_SEED_STEP, cross_validate

    cfg = TrainConfig(epochs=1, batch_size=4, workers=0, max_seq_len=50, val_fraction=0)
    out = tmp_path / "cv"
    doc = cross_validate(demo_features, out, cfg, {"hidden": 16, "layers": 1, "heads": 2}, folds=2, ensemble=2,
                         log=lambda s: None)  # fmt: skip
    for k in (0, 1):
        seeds = []
        for j in (0, 1):
            run = json.loads((out / "seed0" / f"fold{k}" / f"member{j}" / "config.json").read_text())
            assert len(run["train_clips"]) == 4 and run["val_clips"] == []  # the other fold's 4 clips, all trained
            seeds.append(run["train"]["seed"])
            assert (out / "seed0" / f"fold{k}" / f"member{j}" / "member.json").exists()  # kept on a resume
        assert seeds == [0, MEMBER_SEED_STEP]
    assert doc["ensemble"] == 2 and set(doc["margin"]) == {"valence", "arousal"}
    assert doc["margin"]["valence"]["n"] == 2 and doc["margin"]["valence"]["beats"] is None
    assert "one seed" in (out / "results.md").read_text()


@pytest.mark.slow
def test_a_small_corpus_labelled_per_clip_cross_validates_without_a_validation_share(tmp_path):
    """Labels one per clip on a corpus of a few minutes at most: each fold's transformer trains on every training
    clip (the test fold is the held-out set), while a frame-labelled corpus keeps its validation share
    (``test_cross_validation_end_to_end_and_resume``)."""
    from mmemo.config import ExtractConfig, TrainConfig
    from mmemo.pipeline.crossval import cross_validate
    from mmemo.pipeline.demo import make_demo_corpus
    from mmemo.pipeline.extract import extract_corpus

    make_demo_corpus(tmp_path / "corpus", n_clips=4, seconds=2.0)
    extract_corpus(tmp_path / "corpus", tmp_path / "features_tc", ExtractConfig(faces=False), jobs=1,
                   progress=False, log=lambda s: None)  # fmt: skip
    (tmp_path / "corpus/labels.csv").write_text(
        "clip,valence,arousal\n"
        + "".join(f"speaker{k}/clip{k:02d},{0.2 * k - 0.3},{0.1 - 0.2 * k}\n" for k in range(4))
    )
    features = tmp_path / "features"
    extract_corpus(tmp_path / "corpus", features, ExtractConfig(faces=False), jobs=1, progress=False,
                   log=lambda s: None)  # fmt: skip
    lines: list[str] = []
    cfg = TrainConfig(epochs=1, batch_size=4, workers=0, max_seq_len=50)  # val_fraction left to the default
    doc = cross_validate(features, tmp_path / "cv", cfg, {"hidden": 16, "layers": 1, "heads": 2}, folds=2,
                         log=lines.append)  # fmt: skip
    assert doc["level"] == "clip" and doc["val_fraction"] == 0
    assert "no validation share" in lines[0]
    for k in (0, 1):
        run = json.loads((tmp_path / "cv" / "seed0" / f"fold{k}" / "config.json").read_text())
        assert run["val_clips"] == [] and len(run["train_clips"]) == 2
        # the small-corpus model for per-clip labels: no LayerNorm after the audio projection, no fusion batch norm
        assert run["model"]["audio_norm"] is False and run["model"]["fusion_norm"] == "none"
    # the same clips labelled over time (the demo's own labels): the fusion batch norm stays
    from mmemo.pipeline.train import Trainer

    with Trainer(tmp_path / "features_tc", tmp_path / "run_tc", cfg, {"hidden": 16, "layers": 1, "heads": 2},
                 log=lambda s: None, progress=False) as trainer:  # fmt: skip
        assert trainer.target == "frame"
        assert trainer.model_cfg.audio_norm is False and trainer.model_cfg.fusion_norm == "batch"


def test_ridge_statistics_of_an_import_and_the_imputation_of_a_clip_without_it():
    """An import's clip statistics are the mean and std of its present rows and the share present; a clip without
    a present row gets NaN there, filled with the training clips' mean (0 where none has a value)."""
    from mmemo.data.shards import ClipData
    from mmemo.pipeline.crossval import clip_statistics, impute

    clip = ClipData(attrs={}, meta={}, timestamps=np.arange(4) / 25)
    values = np.array([[1.0, 10.0], [3.0, 30.0], [np.nan, np.nan], [5.0, 50.0]], np.float32)
    mask = np.array([True, True, False, True])
    got = clip_statistics(clip, [], [(values, mask)])
    np.testing.assert_allclose(got, [3.0, 30.0, np.std([1, 3, 5]), np.std([10, 30, 50]), 0.75], rtol=1e-6)
    none = clip_statistics(clip, [], [(values, np.zeros(4, bool))])
    assert np.isnan(none[:4]).all() and none[4] == 0.0
    X = np.stack([got, got * 2, none])
    X[1, 0] = np.nan
    filled = impute(X, [0, 1])
    np.testing.assert_allclose(filled[2], [got[0], *(1.5 * got[1:4]), 0.0])  # column 0: only clip 0 has it
    assert filled[1, 0] == got[0]  # the one training value of that column
    assert not np.isnan(impute(np.array([[np.nan], [np.nan]]), [0])).any()
