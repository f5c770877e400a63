"""Issue 12: inputs a careful user or an adversary would try. Each ends in the right result, or in one clear line
that names the file and a non-zero exit, with nothing written where it should not be."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from conftest import SMALL, save_untrained_run

from mmemo.cli import main
from mmemo.config import ExtractConfig, TrainConfig
from mmemo.data import features_dir as FD
from mmemo.errors import ConfigError, MmemoError
from mmemo.media.synth import tone, write_media
from mmemo.model.checkpoint import load_checkpoint
from mmemo.pipeline.crossval import group_keys
from mmemo.pipeline.demo import make_demo_corpus
from mmemo.pipeline.extract import extract_corpus
from mmemo.pipeline.predict import load_run
from mmemo.pipeline.train import Trainer

FAST = ["--epochs", "1", "--batch-size", "4", "--workers", "0", "--max-seq-len", "50", "-q"]


def _extract(corpus: Path, out: Path) -> Path:
    extract_corpus(corpus, out, ExtractConfig(), jobs=1, progress=False, log=lambda s: None)
    return out


@pytest.fixture(scope="module")
def features(demo_features) -> Path:
    """The shared demo features (8 clips of 6 s, speakers 0-3): tests that change anything copy it first."""
    return demo_features


@pytest.fixture(scope="module")
def per_clip(tmp_path_factory) -> Path:
    """The same clips with one label per clip: a default split holds out a single validation clip."""
    root = tmp_path_factory.mktemp("per_clip")
    make_demo_corpus(root / "corpus", n_clips=4, seconds=2.0)
    (root / "corpus/labels.csv").write_text(
        "clip,valence,arousal\n"
        + "".join(f"speaker{k}/clip{k:02d},{0.2 * k - 0.3},{0.1 - 0.2 * k}\n" for k in range(4))
    )
    return _extract(root / "corpus", root / "features")


def _copy(features: Path, dest: Path) -> Path:
    shutil.copytree(features, dest, ignore=shutil.ignore_patterns("cache"))
    return dest


def _one_line_error(result, *needles: str) -> None:
    """Exit 1 and one `Error: ...` line naming what is wrong (no traceback)."""
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = [ln for ln in result.output.splitlines() if ln.startswith("Error:")]
    assert len(lines) == 1, result.output
    for n in needles:
        assert n in lines[0], lines[0]


# ------------------------------------------------------------------------------------- 3. paths and trust
@pytest.mark.parametrize(
    ("column", "value", "said"),
    [
        ("clip", "../../escaped", "'../../escaped' is not a plain relative path"),
        ("clip", "/tmp/escaped", "'/tmp/escaped' is not a plain relative path"),
        ("shard", "/etc/passwd", "shard '/etc/passwd' is not shards/<clip id>.h5"),
        ("shard", "shards/../../../x.h5", "is not a plain relative path"),
    ],
)
def test_manifest_paths_stay_inside_the_features_directory(features, tmp_path, column, value, said):
    out = _copy(features, tmp_path / "f")
    m = pd.read_csv(out / FD.MANIFEST, keep_default_na=False, dtype=str)
    m.loc[0, column] = value
    m.to_csv(out / FD.MANIFEST, index=False)
    runner = CliRunner()
    for args in (["train", str(out), "--out", str(tmp_path / "run"), *FAST], ["inspect", str(out)],
                 ["validate", str(out)]):  # fmt: skip
        _one_line_error(runner.invoke(main, args), f"{out / FD.MANIFEST}:2", said)
    assert not list(tmp_path.rglob("escaped*")) and not (tmp_path / "run").exists()


def test_a_clip_id_cannot_lead_the_frame_cache_out(features, tmp_path):
    from mmemo.data.dataset import pooled_frames
    from mmemo.data.features_dir import ClipRef

    ref = ClipRef("../../outside", str(features / "shards/speaker0/clip00.h5"), 50)
    with pytest.raises(MmemoError, match="not a plain relative path"):
        pooled_frames(None, ref, 28, tmp_path / "cache")
    assert not (tmp_path / "outside.npy").exists()


# ------------------------------------------------------------------------- 4. a moved features directory
def test_a_moved_features_directory_keeps_its_labels_and_groups(features, tmp_path):
    moved = _copy(features, tmp_path / "a")
    moved = Path(shutil.move(moved, tmp_path / "b"))
    assert json.loads((moved / FD.RECORD).read_text())["labels"] == "labels.csv"  # relative
    corpus = FD.load_corpus(moved)
    assert corpus.labels_path == moved / "labels.csv"
    keys, column = group_keys(corpus, None)
    assert column == "speaker" and len(set(keys)) == 4  # speakers, not one group per clip
    train, val = FD.split(corpus, TrainConfig(group_by="speaker", seed=0))
    assert {c.clip_id.split("/")[0] for c in train}.isdisjoint({c.clip_id.split("/")[0] for c in val})


def test_an_older_absolute_labels_path_still_finds_the_moved_table(features, tmp_path):
    moved = _copy(features, tmp_path / "m")
    record = json.loads((moved / FD.RECORD).read_text())
    record["labels"] = "/somewhere/that/is/gone/labels.csv"  # as mmemo 0.1 wrote it
    (moved / FD.RECORD).write_text(json.dumps(record))
    assert FD.load_corpus(moved).labels_path == moved / "labels.csv"


def test_a_grouping_that_cannot_be_honoured_is_an_error_not_a_fallback(features, tmp_path):
    out = _copy(features, tmp_path / "f")
    (out / "labels.csv").unlink()
    with pytest.raises(MmemoError, match="labels.csv: missing"):
        group_keys(FD.load_corpus(out), None)
    r = CliRunner().invoke(main, ["train", str(out), "--out", str(tmp_path / "cv"), "--folds", "2", *FAST])
    _one_line_error(r, "labels.csv: missing")


# ------------------------------------------------------------------------------- 5. silent wrong answers
def test_a_validation_set_without_a_ccc_is_scored_by_loss_and_leaves_a_best_checkpoint(per_clip, tmp_path):
    """Per-clip labels and one validation clip: CCC over clips is undefined; best.pt must still be written."""
    r = CliRunner().invoke(main, ["train", str(per_clip), "--out", str(tmp_path / "run"), "--hidden", "16",
                                  "--heads", "2", "--layers", "1", *FAST[:-3], "--epochs", "2"])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "validation CCC is undefined (per-clip labels and 1 labelled validation clip(s)" in r.output
    assert "best validation loss" in r.output and "-inf" not in r.output
    run = load_run(tmp_path / "run")
    assert run.epoch in (1, 2)
    metrics = pd.read_csv(tmp_path / "run/metrics.csv")
    assert len(metrics) == 2 and metrics["val_loss"].notna().all()


def test_resume_applies_what_may_change_and_refuses_the_rest(features, tmp_path):
    runner = CliRunner()
    run = tmp_path / "run"
    args = ["--hidden", "16", "--heads", "2", "--layers", "1", "--batch-size", "4", "--workers", "0",
            "--max-seq-len", "50", "-q"]  # fmt: skip
    assert runner.invoke(main, ["train", str(features), "--out", str(run), "--epochs", "1", *args]).exit_code == 0
    r = runner.invoke(main, ["train", str(features), "--resume", str(run), "--lr", "0.5"])
    _one_line_error(r, "lr 0.5 given, but the run was trained with 0.001; it cannot change on resume")
    r = runner.invoke(main, ["train", str(features), "--resume", str(run), "--hidden", "32"])
    _one_line_error(r, "model hidden 32 given, but the run's model has 16")
    # The same value as the run's is no change; epochs and patience apply.
    r = runner.invoke(main, ["train", str(features), "--resume", str(run), "--lr", "0.001", "--epochs", "2",
                             "--patience", "9", "--workers", "0", "-q"])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert len(pd.read_csv(run / "metrics.csv")) == 2
    ckpt = load_checkpoint(run / "last.pt", keys=("train_config",))
    assert ckpt["train_config"]["epochs"] == 2 and ckpt["train_config"]["patience"] == 9


def test_resume_through_the_api_refuses_a_changed_setting(features, tmp_path):
    cfg = TrainConfig(epochs=1, batch_size=4, workers=0, max_seq_len=50)
    with Trainer(features, tmp_path / "run", cfg, SMALL, log=lambda s: None, progress=False) as t:
        t.fit()
    changed = TrainConfig(epochs=1, batch_size=2, workers=0, max_seq_len=50)
    with pytest.raises(ConfigError, match="batch_size 2 given, but the run was trained with 4"):
        Trainer(features, tmp_path / "run", changed, resume=True, given=["batch_size"], log=lambda s: None)


def test_predicted_files_never_collide(tmp_path):
    run = save_untrained_run(tmp_path / "run")
    for d, f in (("px", 300), ("py", 600)):
        write_media(tmp_path / f"in/{d}/a.wav", audio=tone(f, 1.0)[None])
    r = CliRunner().invoke(main, ["predict", str(tmp_path / "in/px/a.wav"), str(tmp_path / "in/py/a.wav"),
                                  "--run", str(run), "--out", str(tmp_path / "preds")])  # fmt: skip
    assert r.exit_code == 0, r.output
    a, b = (pd.read_csv(tmp_path / f"preds/{d}/a.csv") for d in ("px", "py"))
    assert len(a) == len(b) == 25 and not np.allclose(a["arousal"], b["arousal"], atol=0)
    write_media(tmp_path / "in/px/a.mp4", frames=np.zeros((10, 32, 32, 3), np.uint8), fps=25)
    r = CliRunner().invoke(main, ["predict", str(tmp_path / "in/px/a.wav"), str(tmp_path / "in/px/a.mp4"),
                                  "--run", str(run), "--out", str(tmp_path / "p2")])  # fmt: skip
    _one_line_error(r, "would both be written as a")


def test_a_clip_the_model_cannot_read_is_refused(tmp_path):
    audio_only = save_untrained_run(tmp_path / "run", video=False)
    write_media(tmp_path / "silent.mp4", frames=np.zeros((25, 32, 32, 3), np.uint8), fps=25)
    write_media(tmp_path / "voice.wav", audio=tone(440, 1.0)[None])
    r = CliRunner().invoke(main, ["predict", str(tmp_path / "silent.mp4"), str(tmp_path / "voice.wav"), "--run",
                                  str(audio_only), "--out", str(tmp_path / "preds")])  # fmt: skip
    assert r.exit_code == 1
    assert f"error: {tmp_path / 'silent.mp4'}: has video, but the model of" in r.output
    assert "reads audio only; nothing to predict from" in r.output
    assert (tmp_path / "preds/voice.csv").exists() and not (tmp_path / "preds/silent.csv").exists()


# ------------------------------------------------------------------------- 11. one line, never a traceback
def _checkpoint_variants(run: Path) -> dict[str, tuple[callable, str]]:
    def drop(key):
        def f(path):
            ckpt = torch.load(path, weights_only=True)
            del ckpt[key]
            torch.save(ckpt, path)

        return f

    def wrong_shape(path):
        ckpt = torch.load(path, weights_only=True)
        ckpt["model_config"]["hidden"] = 32
        ckpt["model_config"]["heads"] = 2
        torch.save(ckpt, path)

    return {
        "no extract_config": (drop("extract_config"), "(no extract_config: not written by `mmemo train`?)"),
        "weights of another shape": (wrong_shape, "the weights do not fit the model its model_config describes"),
        "garbage": (lambda p: p.write_bytes(np.random.default_rng(0).bytes(5000)), "not a PyTorch checkpoint"),
        "text": (lambda p: p.write_text("hello\n"), "not a PyTorch checkpoint"),
        "truncated": (lambda p: p.write_bytes(p.read_bytes()[:3000]), "not a loadable mmemo checkpoint"),
    }


@pytest.mark.parametrize("case", list(_checkpoint_variants(Path("."))))
def test_a_damaged_checkpoint_is_one_line(tmp_path, case):
    run = save_untrained_run(tmp_path / "run")
    damage, said = _checkpoint_variants(run)[case]
    damage(run / "best.pt")
    write_media(tmp_path / "voice.wav", audio=tone(440, 1.0)[None])
    r = CliRunner().invoke(main, ["predict", str(tmp_path / "voice.wav"), "--run", str(run)])
    _one_line_error(r, str(run / "best.pt"), said)
    r = CliRunner().invoke(main, ["export", str(run)])
    _one_line_error(r, str(run / "best.pt"), said)


@pytest.mark.parametrize(
    ("damage", "said"),
    [
        (lambda out: (out / FD.MANIFEST).write_text("clip,shard\na,shards/a.h5\n"), "(no column status, frames"),
        (lambda out: (out / FD.MANIFEST).write_bytes(b"\xff\xfe\x00garbage"), "manifest.csv"),
        (lambda out: (out / FD.RECORD).write_text('{"config": {"n_mels": "many"}}'), "extract_config.json: "),
        (lambda out: (out / FD.RECORD).write_text("{not json"), "extract_config.json: not valid JSON"),
        (lambda out: (out / FD.RECORD).write_text('{"config": {"n_melz": 3}}'), "unknown ExtractConfig key(s)"),
    ],
    ids=["manifest without columns", "manifest not text", "record with a bad value", "record not JSON",
         "record with an unknown key"],
)  # fmt: skip
def test_a_malformed_features_directory_is_one_line(features, tmp_path, damage, said):
    out = _copy(features, tmp_path / "f")
    damage(out)
    runner = CliRunner()
    run = save_untrained_run(tmp_path / "run")
    commands = [["train", str(out), "--out", str(tmp_path / "r"), *FAST], ["evaluate", str(out), "--run", str(run)]]
    if "manifest" in said or "status" in said:
        commands += [["inspect", str(out)], ["validate", str(out)]]
    for args in commands:
        _one_line_error(runner.invoke(main, args), said)


@pytest.mark.parametrize("damage", ["missing", "garbage"])
def test_a_missing_or_damaged_shard_is_one_line(features, tmp_path, damage):
    out = _copy(features, tmp_path / "f")
    shard = out / "shards/speaker1/clip01.h5"
    if damage == "missing":
        shard.unlink()
    else:
        shard.write_bytes(b"not an HDF5 file at all" * 100)
    said = "missing" if damage == "missing" else "not a readable HDF5 shard"
    run = save_untrained_run(tmp_path / "run")
    for args in (["train", str(out), "--out", str(tmp_path / "r"), *FAST], ["evaluate", str(out), "--run", str(run)],
                 ["inspect", str(out)]):  # fmt: skip
        _one_line_error(CliRunner().invoke(main, args), str(shard), said)


def test_a_corpus_of_silent_videos_trains_a_video_only_model_that_predicts(tmp_path):
    """No clip has audio: the model is built without its audio branch (its statistics would be empty), and the
    run predicts a new silent clip (it failed in load_run: 0 statistics for 91 audio columns)."""
    root = tmp_path / "corpus"
    rows = ["clip,valence,arousal"]
    for k in range(5):
        frames = np.full((50, 32, 32, 3), 40 * k, np.uint8)
        write_media(root / f"c{k}.mp4", frames=frames, fps=25)
        rows.append(f"c{k},{0.3 * k - 0.6},{0.1 * k}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    ecfg = ExtractConfig(faces=False, frame_size=32)
    extract_corpus(root, tmp_path / "features", ecfg, jobs=1, progress=False, log=lambda s: None)
    r = CliRunner().invoke(main, ["train", str(tmp_path / "features"), "--out", str(tmp_path / "run"),
                                  "--hidden", "16", "--heads", "2", "--layers", "1", *FAST])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "no training clip has audio" in r.output
    run = load_run(tmp_path / "run")
    assert run.model_cfg.audio_dim == 0 and run.model.audio_in is None
    r = CliRunner().invoke(main, ["predict", str(root / "c1.mp4"), "--run", str(tmp_path / "run"),
                                  "--out", str(tmp_path / "c1.csv")])  # fmt: skip
    assert r.exit_code == 0, r.output
    table = pd.read_csv(tmp_path / "c1.csv")
    assert len(table) == 50 and table[["valence", "arousal"]].notna().all().all()
