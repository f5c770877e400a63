"""The model reads the ``--import`` streams (issue 16): training, evaluate, predict, export and inspect with them.

The known answer: a synthetic corpus whose labels are carried only by an imported CSV column (valence = its column
``x``, arousal = its column ``z``), not by the audio (white noise) or the frames (grey noise), both drawn the same
way for every clip. A model trained with the import predicts held-out clips well; the same training with
``--imports none`` cannot (the labels are independent of what it sees).
"""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from mmemo.cli import main
from mmemo.config import TrainConfig
from mmemo.data.dataset import ImportInput, collate, import_block, to_device
from mmemo.data.features_dir import load_corpus
from mmemo.errors import MmemoError
from mmemo.media.synth import write_media
from mmemo.model.config import ModelConfig
from mmemo.model.multimodal import MultiModalTransformer
from mmemo.pipeline.evaluate import evaluate_features, predict_shard
from mmemo.pipeline.predict import load_run, predict_clip
from mmemo.pipeline.train import Trainer

FPS, SECONDS = 25, 4.0
N = int(FPS * SECONDS)  # 100 rows a clip
TINY = {"hidden": 16, "heads": 2, "layers": 1, "cnn_channels": [4], "video_size": 8, "dropout": 0.0,
        "stats_head": False, "modality_dropout": 0.0}  # fmt: skip
TRAIN = dict(epochs=8, batch_size=4, workers=0, max_seq_len=50, lr=3e-3, augment=False, val_fraction=0, seed=0)


def _curve(rng: np.random.Generator) -> np.ndarray:
    """(N,) a slow curve in about [-0.9, 0.9]: a level and a sinusoid."""
    t = np.arange(N) / FPS
    return np.clip(rng.uniform(-0.4, 0.4) + rng.uniform(0.2, 0.5) * np.sin(2 * np.pi * t / rng.uniform(2, 5)
                   + rng.uniform(0, 6.3)), -0.9, 0.9)  # fmt: skip


def _corpus(root, names, seed, cue_dir, emb_dir, skip=()):
    """Clips ``names`` (grey-noise frames, white-noise audio), labels.csv (valence = x, arousal = z per frame), a
    video-side import ``cue`` (columns x, z, and a distractor) and an audio-side import ``emb`` (one column e =
    a clip constant plus a ramp); the clips in ``skip`` have no ``cue`` file."""
    rows = []
    for k, name in enumerate(names):
        rng = np.random.default_rng([seed, k])
        frames = (128 + rng.normal(0, 20, (N, 16, 16, 3))).clip(0, 255).astype(np.uint8)
        audio = (0.05 * rng.standard_normal(int(SECONDS * 16000))).astype(np.float32)
        write_media(root / f"{name}.mp4", frames=frames, fps=FPS, audio=audio[None], sample_rate=16000)
        x, z = _curve(rng), _curve(rng)
        t = np.arange(N) / FPS
        if name not in skip:
            table = pd.DataFrame({"time": t, "x": x, "z": z, "noise": rng.normal(0, 1, N)})
            table.to_csv(cue_dir / f"{name}.csv", index=False, float_format="%.6f")
        np.save(emb_dir / f"{name}.npy", np.stack([t, 10 + k + t], axis=1))
        rows += [{"clip": name, "time": round(float(ti), 3), "valence": round(float(v), 6),
                  "arousal": round(float(a), 6)} for ti, v, a in zip(t, x, z, strict=True)]  # fmt: skip
    pd.DataFrame(rows).to_csv(root / "labels.csv", index=False)


def _extract(corpus, out, *imports):
    args = ["extract", str(corpus), "--out", str(out), "--jobs", "1", "--frame-size", "16", "--faces", "off"]
    for i in imports:
        args += ["--import", i]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    return r.output


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Training corpus (12 clips, one without its cue file), held-out corpus (4 clips), both extracted with the
    video-side ``cue`` and the audio-side ``emb``; two runs: with ``cue`` and with ``--imports none``."""
    root = tmp_path_factory.mktemp("imports_model")
    cue, emb = root / "cue", root / "emb"
    cue.mkdir()
    emb.mkdir()
    train_names = [f"t{k:02d}" for k in range(12)]
    held_names = [f"h{k}" for k in range(4)]
    _corpus(root / "train", train_names, 0, cue, emb, skip={"t11"})
    _corpus(root / "held", held_names, 1, cue, emb)
    imports = (f"cue={cue}", f"emb:audio={emb}")
    out = _extract(root / "train", root / "train_feats", *imports)
    assert "t11: no file for import cue" in out
    _extract(root / "held", root / "held_feats", *imports)
    runs, logs = {}, {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: on a shared 2-core machine, more threads only wait for each other
    try:
        for key, chosen in (("cue", ("cue",)), ("none", ())):
            lines: list[str] = []
            with Trainer(root / "train_feats", root / key, TrainConfig(**TRAIN, imports=chosen), TINY,
                         log=lines.append, progress=False, plots=False) as t:  # fmt: skip
                t.fit()
            runs[key], logs[key] = root / key, lines
    finally:
        torch.set_num_threads(threads)
    return {"root": root, "cue": cue, "emb": emb, "runs": runs, "logs": logs}


def _mean_ccc(ev) -> float:
    return float(np.mean([ev.metrics[d]["ccc"] for d in ("valence", "arousal")]))


def test_the_label_in_an_imported_column_is_learnt_only_with_the_import(world):
    """Held-out CCC (4 unseen clips): high with the video-side import, near 0 with --imports none (same seed)."""
    held = world["root"] / "held_feats"
    with_cue = evaluate_features(load_run(world["runs"]["cue"]), held)
    without = evaluate_features(load_run(world["runs"]["none"]), held)
    assert _mean_ccc(with_cue) > 0.7, with_cue.metrics
    assert _mean_ccc(without) < 0.3, without.metrics
    # the clip without a file trained, masked, and was reported
    assert any("import cue: 3 columns into the video branch; masked in 1 of 12 training clips" in s and "t11" in s
               for s in world["logs"]["cue"])  # fmt: skip


def test_checkpoint_and_config_record_the_imports(world):
    run = world["runs"]["cue"]
    ckpt = torch.load(run / "best.pt", weights_only=True)
    (rec,) = ckpt["imports"]
    assert (rec["name"], rec["side"], rec["columns"]) == ("cue", "video", ["x", "z", "noise"])
    assert ckpt["model_config"]["video_import_dim"] == 4 and ckpt["model_config"]["video_import_streams"] == 1
    assert json.loads((run / "config.json").read_text())["imports"] == ckpt["imports"]
    # the statistics are those of the unmasked rows of the training clips, by hand
    rows = np.concatenate([pd.read_csv(world["cue"] / f"t{k:02d}.csv")[["x", "z", "noise"]].to_numpy()
                           for k in range(11)])  # fmt: skip
    np.testing.assert_allclose(rec["mean"], rows.mean(0), atol=1e-5)
    np.testing.assert_allclose(rec["std"], rows.std(0), rtol=1e-4)
    assert torch.load(world["runs"]["none"] / "best.pt", weights_only=True)["imports"] == []


def test_audio_side_import_joins_the_audio_vector_standardised(world):
    """The audio-side ``emb`` (e = 10 + k + t in clip k) is the last value column of the audio vector, then its
    presence column; standardised with the training rows' mean and std, by hand."""
    feats = world["root"] / "train_feats"
    cfg = TrainConfig(**{**TRAIN, "epochs": 1}, imports=("emb",))
    with Trainer(feats, world["root"] / "emb_run", cfg, TINY, log=lambda s: None, progress=False, plots=False) as t:
        assert t.model_cfg.audio_dim == 91 + 2 and t.model_cfg.video_import_dim == 0
        e = np.concatenate([10 + k + np.arange(N) / FPS for k in range(12)])
        np.testing.assert_allclose(t.mean[-2:], [e.mean(), 0.0], rtol=1e-5)
        np.testing.assert_allclose(t.std[-2:], [e.std(), 1.0], rtol=1e-4)
        ds = t.train_set
        ds.train = False  # evaluation windows: [0, 50) of clip 0
        b = to_device(collate([ds[0]]), torch.device("cpu"))
    k = int(load_corpus(feats).clips[0].clip_id[1:])
    want = (10 + k + np.arange(50) / FPS - e.mean()) / e.std()
    np.testing.assert_allclose(b["audio"][0, :, -2].numpy(), want, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(b["audio"][0, :, -1].numpy(), np.ones(50))


def test_a_masked_import_is_never_a_real_zero():
    """A masked row gets the import's training mean (0 after standardisation) and presence 0; a present row its
    value and presence 1; a clip without the file ((T, 0) values) is all masked."""
    imp = ImportInput("cue", "video", ("x", "z"), np.array([1.0, -2.0], np.float32), np.ones(2, np.float32))
    values = np.array([[5.0, 6.0], [np.nan, np.nan], [7.0, 8.0]], np.float32)
    block = import_block([imp], "video", {"cue": (values, np.array([True, False, True]))}, 3, "here")
    np.testing.assert_array_equal(block, [[5, 6, 1], [1, -2, 0], [7, 8, 1]])
    empty = import_block([imp], "video", {"cue": (np.zeros((3, 0), np.float32), np.zeros(3, bool))}, 3, "here")
    np.testing.assert_array_equal(empty, [[1, -2, 0]] * 3)
    assert import_block([imp], "audio", {}, 3, "here").shape == (3, 0)


def test_predict_with_import_equals_evaluate_on_the_shard(world):
    """The held-out clip through `mmemo predict --import cue=DIR` (decoded, file found by its name) gives the rows
    evaluate gives on its shard; the clip's own file as PATH too."""
    run = load_run(world["runs"]["cue"])
    shard = next(c.path for c in load_corpus(world["root"] / "held_feats").clips if c.clip_id == "h0")
    ev = predict_shard(run, shard)
    clip = world["root"] / "held" / "h0.mp4"
    r = CliRunner().invoke(main, ["predict", str(clip), "--run", str(world["runs"]["cue"]), "--import",
                                  f"cue={world['cue']}"])  # fmt: skip
    assert r.exit_code == 0, r.output
    table = pd.read_csv(io.StringIO(r.stdout))
    np.testing.assert_allclose(table[["valence", "arousal"]].to_numpy(), ev.pred, atol=2e-5)
    from mmemo.features.imports import ImportSpec

    one = predict_clip(run, clip, imports=[ImportSpec.parse(f"cue={world['cue'] / 'h0.csv'}", files=True)])
    np.testing.assert_allclose(one.table[["valence", "arousal"]].to_numpy(), ev.pred, atol=1e-5)


def test_predict_a_clip_without_its_file_is_masked_with_a_note(world):
    run = load_run(world["runs"]["cue"])
    from mmemo.features.imports import ImportSpec

    pred = predict_clip(run, world["root"] / "train" / "t11.mp4", imports=[ImportSpec.parse(f"cue={world['cue']}")])
    assert any("t11: no file for import cue" in w and "masked" in w for w in pred.warnings)
    assert len(pred.table) == N and np.isfinite(pred.table[["valence", "arousal"]].to_numpy()).all()


def test_one_line_errors(world, tmp_path):
    """predict without the needed --import, with an import the model does not read, --stream with an import model;
    evaluate on features extracted without the import; an unknown --imports name."""
    run_dir, clip = world["runs"]["cue"], world["root"] / "held" / "h0.mp4"
    r = CliRunner().invoke(main, ["predict", str(clip), "--run", str(run_dir)])
    assert r.exit_code != 0
    want = f"Error: the model of {run_dir / 'best.pt'} reads the video-side import cue: pass --import cue=DIR"
    assert want in r.output
    r = CliRunner().invoke(main, ["predict", str(clip), "--run", str(run_dir), "--import", f"cue={world['cue']}",
                                  "--import", f"emb={world['emb']}"])  # fmt: skip
    assert r.exit_code != 0 and "--import emb: the model of" in r.output and "reads no such import" in r.output
    r = CliRunner().invoke(main, ["predict", "--run", str(run_dir), "--stream", str(clip)])
    assert r.exit_code != 0 and "a live source cannot give" in r.output
    assert len([ln for ln in r.output.splitlines() if ln.strip()]) == 2  # the csv header, then the one line
    plain = tmp_path / "plain"
    _extract(world["root"] / "held", plain)
    with pytest.raises(MmemoError) as e:
        evaluate_features(load_run(run_dir), plain)
    assert str(e.value) == (f"{plain}: extracted without --import cue=DIR, which the run's model reads (video side): "
                            "re-extract with it")  # fmt: skip
    with pytest.raises(MmemoError, match=r"h0.h5 was extracted without --import cue=DIR"):
        predict_shard(load_run(run_dir), next((plain / "shards").rglob("h0.h5")))
    r = CliRunner().invoke(main, ["train", str(world["root"] / "train_feats"), "--out", str(tmp_path / "r"),
                                  "--imports", "cue,face", "--epochs", "1"])  # fmt: skip
    assert r.exit_code != 0
    assert "--imports cue,face: " in r.output and "holds no import face (available: cue, emb)" in r.output


def test_pt2_export_with_a_video_import_equals_the_eager_model(world, tmp_path):
    """torch.export's program takes ``video_import``; predicting the held-out clip through it equals the PyTorch
    path with the import (and masked rows may hold any finite value: the program zeroes them)."""
    from mmemo.pipeline.export import export_run
    from mmemo.pipeline.predict import load_exported_run

    out = export_run(world["runs"]["cue"], tmp_path / "m.pt2")
    meta = json.loads((tmp_path / "m.pt2.json").read_text())
    assert [i["name"] for i in meta["inputs"]] == ["audio", "frames", "video_import", "pad_mask", "audio_mask",
                                                   "video_mask"]  # fmt: skip
    assert meta["imports"][0]["presence_column"] == 3 and meta["check"]["max_abs_diff"] < 1e-4
    shard = next(c.path for c in load_corpus(world["root"] / "held_feats").clips if c.clip_id == "h1")
    eager = predict_shard(load_run(world["runs"]["cue"]), shard).pred
    exported = predict_shard(load_exported_run(tmp_path, "pt2", path=out), shard).pred
    np.testing.assert_allclose(exported, eager, atol=1e-4)


def test_inspect_shows_the_import_streams(world):
    r = CliRunner().invoke(main, ["inspect", str(world["root"] / "train_feats")])
    assert r.exit_code == 0, r.output
    assert ("import       cue (video side; columns: x, z, noise): present in 91.7% of rows; 1 of 12 clips with "
            "none") in r.output  # fmt: skip
    assert "cue share    the 5 lowest of 12: t11 0.0%, t00 100.0%" in r.output
    assert "import       emb (audio side; columns: c1): present in 100.0% of rows" in r.output


def test_old_model_configs_and_checkpoints_still_load(tmp_path):
    """A ModelConfig dict from before imports (no video_import_* keys) and a checkpoint without ``imports``."""
    from tests.conftest import save_untrained_run

    old = {k: v for k, v in ModelConfig().to_dict().items() if not k.startswith("video_import")}
    assert ModelConfig.from_dict(old).video_import_dim == 0
    run = load_run(save_untrained_run(tmp_path / "old"))
    assert run.imports == [] and run.model.video_import_in is None


def test_the_video_branch_reads_an_import_where_the_frame_is_missing():
    """A row with no frame but a present import feeds the video branch (changing the import changes the output);
    a masked import row influences nothing (its values may be anything)."""
    torch.manual_seed(0)
    cfg = ModelConfig(audio_dim=0, video=True, video_import_dim=3, video_import_streams=1, **TINY)
    model = MultiModalTransformer(cfg).eval()
    B, T = 1, 6
    frames, pad = torch.rand(B, T, 8, 8, 3), torch.ones(B, T, dtype=torch.bool)
    no_frame = torch.zeros(B, T, dtype=torch.bool)
    vi = torch.randn(B, T, 3)
    vi[..., 2] = 1.0  # present
    other = vi.clone()
    other[..., :2] += 1.0
    with torch.no_grad():
        y, y2 = model(None, frames, pad, None, no_frame, vi), model(None, frames, pad, None, no_frame, other)
        assert not torch.allclose(y, y2)
        vi[..., 2], other[..., 2] = 0.0, 0.0  # masked: the values do not matter, and no row is present at all
        torch.testing.assert_close(model(None, frames, pad, None, no_frame, vi),
                                   model(None, frames, pad, None, no_frame, other))  # fmt: skip


def test_a_resumed_run_keeps_its_imports(world, tmp_path):
    """--resume takes the imports, their columns and statistics from last.pt, not from the features directory."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(world["runs"]["cue"], run)
    cfg = TrainConfig(**{**TRAIN, "epochs": 9}, imports=("cue",))
    with Trainer(world["root"] / "train_feats", run, cfg, None, resume=True, log=lambda s: None, progress=False,
                 plots=False, given=("epochs",)) as t:  # fmt: skip
        assert [i.to_dict() for i in t.imports] == torch.load(run / "last.pt", weights_only=True)["imports"]
        assert t.model_cfg.video_import_dim == 4
        t.fit()
    assert torch.load(run / "last.pt", weights_only=True)["epoch"] == 9


def test_cross_validation_gives_ridge_the_imports_the_transformer_reads(world):
    """The ridge baseline's clip statistics hold what the transformer reads: with the ``cue`` import, the mean and
    std of its present rows and their share (known from the shard), NaN for the clip without its file (imputed
    from the training folds later); with ``--imports none`` (or a directory without imports) none of it."""
    from mmemo.data.features_dir import load_corpus
    from mmemo.data.shards import open_shard, read_import
    from mmemo.pipeline.crossval import corpus_statistics

    corpus = load_corpus(world["root"] / "train_feats")
    with_cue, _ = corpus_statistics(corpus, ("cue",))
    without, targets = corpus_statistics(corpus, ())
    everything, _ = corpus_statistics(corpus)  # default: every import (cue, 3 columns; emb, 1 column)
    assert with_cue.shape[1] == without.shape[1] + 3 * 2 + 1 and everything.shape[1] == with_cue.shape[1] + 3
    np.testing.assert_array_equal(with_cue[:, : without.shape[1]], without)
    for k, ref in enumerate(corpus.clips):
        with open_shard(ref.path) as h5:
            values, mask = read_import(h5, "cue")
        tail = with_cue[k, without.shape[1] :]
        if ref.clip_id == "t11":  # no cue file
            assert np.isnan(tail[:6]).all() and tail[6] == 0.0
        else:
            v = values[mask].astype(np.float64)
            np.testing.assert_allclose(tail, [*v.mean(0), *v.std(0), mask.mean()], rtol=1e-9)
    assert len(targets) == len(corpus.clips)
