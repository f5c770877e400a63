"""`mmemo evaluate` on a features directory with one labelled clip, and the clip table's flatness rule.

The run is an untrained tiny model saved the way `mmemo train` saves one (no training: the numbers do not matter
here, only that one labelled clip is scored and the table printed).
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from conftest import save_untrained_run

from mmemo.cli import main
from mmemo.config import ExtractConfig
from mmemo.data.labels import DIMENSIONS
from mmemo.pipeline.demo import make_demo_corpus
from mmemo.pipeline.evaluate import ClipPrediction, _clip_table, evaluate_features
from mmemo.pipeline.extract import extract_corpus
from mmemo.pipeline.metrics import ccc, evaluate
from mmemo.pipeline.predict import load_run

KEPT = "speaker0/clip00"


@pytest.fixture(scope="module")
def one_clip_features(tmp_path_factory):
    """A features directory of two extracted clips, one of them labelled (labels.csv edited to keep one)."""
    root = tmp_path_factory.mktemp("one_clip")
    corpus = make_demo_corpus(root / "corpus", n_clips=2, seconds=2.0)
    labels = pd.read_csv(corpus / "labels.csv")
    assert sorted(labels["clip"].unique()) == [KEPT, "speaker1/clip01"]
    labels[labels["clip"] == KEPT].to_csv(corpus / "labels.csv", index=False)
    extract_corpus(corpus, root / "features", ExtractConfig(), jobs=1, progress=False, log=lambda s: None)
    return root / "features"


@pytest.fixture(scope="module")
def untrained_run(tmp_path_factory):
    return save_untrained_run(tmp_path_factory.mktemp("run") / "run")


def test_one_labelled_clip_is_scored(one_clip_features, untrained_run):
    """The two-clip minimum is a training rule: evaluation scores a single labelled clip."""
    ev = evaluate_features(load_run(untrained_run), one_clip_features)
    assert [r.clip for r in ev.results] == [KEPT]
    r = ev.results[0]
    assert r.mask.sum() == 50  # 2 s at 25 fps, labelled from 0 to 2 s
    for k, d in enumerate(DIMENSIONS):
        p, t = r.pred[r.mask, k], r.truth[r.mask, k]
        assert ev.metrics[d]["ccc"] == pytest.approx(ccc(p, t), abs=1e-12)
        assert ev.metrics[d]["ccc_clip"] == pytest.approx(ev.metrics[d]["ccc"], abs=1e-12)  # one clip: the same
        assert ev.clips[f"{d}_ccc"].iloc[0] == pytest.approx(ev.metrics[d]["ccc"], abs=1e-12)


def test_cli_evaluate_one_labelled_clip(one_clip_features, untrained_run, tmp_path):
    out = tmp_path / "eval"
    r = CliRunner().invoke(main, ["evaluate", str(one_clip_features), "--run", str(untrained_run), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "1 clips, 50 labelled frames (2.0 s)" in r.output
    header = next(line for line in r.output.splitlines() if "CCC/clip" in line)
    assert header.split() == ["CCC", "CCC/clip", "PCC", "RMSE", "MAE"]
    for d in DIMENSIONS:
        row = next(line for line in r.output.splitlines() if line.startswith(d))
        assert len(row.split()) == 6
    record = json.loads((out / "metrics.json").read_text())
    assert record["clips"] == 1 and record["frames"] == 50
    assert (out / "clips.csv").is_file() and (out / "traces.png").is_file()


@pytest.mark.parametrize("n", [2, 7, 1000, 12345])
@pytest.mark.parametrize("value", [0.1, 0.3, 1 / 3, -0.7, 1e-3])
def test_clip_table_and_per_clip_mean_skip_the_same_flat_clips(value, n):
    """A float32 constant truth has no CCC in clips.csv, whatever its value and length, as in the per-clip mean."""
    rng = np.random.default_rng(1)
    flat = np.full((n, 2), value, np.float32)
    varying = rng.uniform(-1, 1, (n, 2)).astype(np.float32)
    pred = rng.uniform(-0.5, 0.5, (n, 2)).astype(np.float32)
    results = [ClipPrediction("flat", pred, flat, np.ones(n, bool)),
               ClipPrediction("varying", pred, varying, np.ones(n, bool))]  # fmt: skip
    table = _clip_table(results)
    for k, d in enumerate(DIMENSIONS):
        assert np.isnan(table[f"{d}_ccc"].iloc[0]) and np.isnan(table[f"{d}_pcc"].iloc[0])
        assert table[f"{d}_ccc"].iloc[1] == pytest.approx(ccc(pred[:, k], varying[:, k]), abs=1e-12)
        per_clip = evaluate([pred[:, k], pred[:, k]], [flat[:, k], varying[:, k]])["ccc_clip"]
        assert per_clip == pytest.approx(table[f"{d}_ccc"].mean(skipna=True), abs=1e-12)
