"""Training end to end on a small extracted demo corpus: outputs, checkpoints as data, resume, early stop, splits."""

from __future__ import annotations

import pickle
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import SMALL

from mmemo.config import ExtractConfig, TrainConfig
from mmemo.data.features_dir import load_corpus, split
from mmemo.errors import MmemoError
from mmemo.model.checkpoint import load_checkpoint
from mmemo.pipeline.train import Trainer


def _cfg(**kw):
    base = {"epochs": 2, "batch_size": 4, "workers": 0, "max_seq_len": 40, "patience": 5}
    return TrainConfig(**{**base, **kw})


def _train(features, run, **kw):
    with Trainer(features, run, _cfg(**kw), SMALL, log=lambda s: None, progress=False) as t:
        return t.fit()


def test_a_run_writes_everything(demo_features, tmp_path):
    """metrics.csv per epoch, best.pt / last.pt loadable as data, config.json, the two PNGs."""
    history = _train(demo_features, tmp_path / "run")
    run = tmp_path / "run"
    assert list(history["epoch"]) == [1, 2]
    for col in ("train_loss", "val_loss", "valence_ccc", "valence_ccc_clip", "arousal_pcc", "arousal_rmse"):
        assert col in history and np.isfinite(history[col]).all()
    for name in ("best.pt", "last.pt", "config.json", "learning_curves.png", "val_traces.png"):
        assert (run / name).exists(), name
    ckpt = load_checkpoint(run / "last.pt")
    assert ckpt["epoch"] == 2 and ckpt["model_config"]["hidden"] == 16
    assert ckpt["feature_mean"].shape == (91,) and ckpt["extract_config"]["n_mels"] == 64
    assert ckpt["feature_names"] == list(ExtractConfig().features)


@pytest.mark.slow
def test_resume_matches_an_uninterrupted_run(demo_features, tmp_path):
    """Stop after epoch 1, resume to epoch 3: same weights and metrics as three epochs in one go."""
    straight = _train(demo_features, tmp_path / "a", epochs=3)
    with Trainer(demo_features, tmp_path / "b", _cfg(epochs=3), SMALL, log=lambda s: None, progress=False) as t:
        t.fit(stop_after=1)
    with Trainer(demo_features, tmp_path / "b", _cfg(epochs=3), resume=True, log=lambda s: None, progress=False) as t:
        assert t.epoch == 1
        history = t.fit()
    a, b = load_checkpoint(tmp_path / "a" / "last.pt"), load_checkpoint(tmp_path / "b" / "last.pt")
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], rtol=0, atol=0, msg=k)
    np.testing.assert_allclose(history["val_loss"], straight["val_loss"], rtol=1e-6)


@pytest.mark.slow
def test_early_stopping_stops(demo_features, tmp_path):
    """Training stops ``patience`` epochs after the last epoch whose validation mean CCC was a new best. With no
    learning (lr 0) only batch-norm running statistics move, so that comes long before the 10 epochs allowed."""
    history = _train(demo_features, tmp_path / "r", epochs=10, patience=2, lr=0.0)
    scores = history["mean_ccc"].to_numpy()
    last_best = 1 + max(i for i in range(len(scores)) if scores[i] > scores[:i].max(initial=-np.inf))
    assert list(history["epoch"]) == list(range(1, last_best + 3)) and last_best + 2 < 10


def test_pickled_code_is_refused(tmp_path):
    """A checkpoint that would run code when unpickled is refused with one line."""

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"model": Evil()}, f)
    with pytest.raises(MmemoError, match="not a loadable mmemo checkpoint"):
        load_checkpoint(path)
    torch.save({"fn": Evil()}, tmp_path / "evil2.pt")
    with pytest.raises(MmemoError, match="not a loadable mmemo checkpoint"):
        load_checkpoint(tmp_path / "evil2.pt")


def test_group_split_keeps_groups_whole(demo_features):
    """--group-by speaker: no speaker on both sides; the split is the same for the same seed."""
    corpus = load_corpus(demo_features)
    labels = pd.read_csv(corpus.labels_path)
    speaker = dict(zip(labels["clip"], labels["speaker"], strict=False))
    for seed in range(5):
        train, val = split(corpus, TrainConfig(group_by="speaker", seed=seed))
        assert {speaker[c.clip_id] for c in train}.isdisjoint({speaker[c.clip_id] for c in val})
        assert len(train) + len(val) == 8 and val
        assert split(corpus, TrainConfig(group_by="speaker", seed=seed)) == (train, val)


@pytest.mark.slow
def test_dataloader_workers_give_the_same_batches(demo_features, tmp_path):
    """Two worker processes (spawned, each opening its own HDF5 handles) give the batches of zero workers."""
    with (
        Trainer(demo_features, tmp_path / "w0", _cfg(workers=0), SMALL, log=lambda s: None, progress=False) as t0,
        Trainer(demo_features, tmp_path / "w2", _cfg(workers=2), SMALL, log=lambda s: None, progress=False) as t2,
    ):
        l0, l2 = t0._loader(t0.train_set, shuffle=True), t2._loader(t2.train_set, shuffle=True)
        for epoch in (0, 1):  # persistent workers still draw each epoch's own windows
            l0.sampler.set_epoch(epoch)
            l2.sampler.set_epoch(epoch)
            b0, b2 = list(l0), list(l2)
            assert len(b0) == len(b2)
            for x, y in zip(b0, b2, strict=True):
                for k in x:
                    torch.testing.assert_close(x[k], y[k], msg=k)
            if epoch == 0:
                first = b0
    assert not all(torch.equal(x["start"], y["start"]) for x, y in zip(first, b0, strict=True))


def test_epoch_sampler_splits_ranks_evenly():
    """Two ranks see disjoint halves of one permutation (padded to equal counts); the epoch rides in the index."""
    from mmemo.data.dataset import EpochSampler

    a, b = EpochSampler(7, seed=1, rank=0, num_replicas=2), EpochSampler(7, seed=1, rank=1, num_replicas=2)
    for s in (a, b):
        s.set_epoch(3)
    ia, ib = list(a), list(b)
    assert len(ia) == len(ib) == 4
    assert all(i // 7 == 3 for i in ia + ib)
    assert {i % 7 for i in ia + ib} == set(range(7))  # every item seen, one repeated for padding


@pytest.mark.slow
def test_torchrun_ddp_two_processes_on_cpu(demo_features, tmp_path):
    """torchrun --nproc_per_node 2 -m mmemo train: gloo on loopback, one metrics row per epoch, rank 0 writes."""
    import subprocess
    import sys

    run = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "mmemo",
           "train", str(demo_features), "--out", str(run), "--epochs", "2", "--workers", "0", "--batch-size", "2",
           "--max-seq-len", "40", "--hidden", "16", "--layers", "1", "--heads", "2", "-q"]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert r.stdout.count("training on ") == 1  # only rank 0 speaks
    history = pd.read_csv(run / "metrics.csv")
    assert list(history["epoch"]) == [1, 2] and np.isfinite(history["valence_ccc"]).all()
    assert load_checkpoint(run / "last.pt")["epoch"] == 2


def test_frame_cache_gives_the_same_windows(demo_features, tmp_path):
    """Windows read through the pooled-frame cache are byte-identical to pooling on every read; the cache file
    holds every row at the model's size, is reused, and is rebuilt when its shard is newer."""
    import os

    from mmemo.data.dataset import ShardDataset, pool_frames
    from mmemo.data.shards import read_clip

    features = shutil.copytree(demo_features, tmp_path / "features")  # this test makes a shard newer than its cache
    corpus = load_corpus(features)
    names = list(corpus.extract_cfg.features)
    mean, std = np.zeros(91, np.float32), np.ones(91, np.float32)
    plain = ShardDataset(corpus.clips, names, mean, std, max_len=40, video_size=28, seed=3)
    cache = tmp_path / "cache"
    cached = ShardDataset(corpus.clips, names, mean, std, max_len=40, video_size=28, seed=3, frame_cache=cache)
    for i in range(len(plain)):
        a, b = plain[i], cached[i]
        assert a["start"] == b["start"] and np.array_equal(a["frames"], b["frames"])
    ref = corpus.clips[0]
    f = cache / "frames-28" / f"{ref.clip_id}.npy"
    full = np.load(f)
    assert full.shape == (ref.n_frames, 28, 28, 3)
    assert np.array_equal(full, pool_frames(read_clip(ref.path).frames, 28))
    assert not list(cache.rglob("*.partial"))
    mtime = f.stat().st_mtime_ns
    ShardDataset(corpus.clips, names, mean, std, max_len=40, video_size=28, frame_cache=cache)[0]
    assert f.stat().st_mtime_ns == mtime  # reused
    os.utime(ref.path, ns=(mtime + 10**9, mtime + 10**9))  # the shard is now newer than its cache file
    ShardDataset(corpus.clips[:1], names, mean, std, max_len=40, video_size=28, frame_cache=cache)[0]
    assert f.stat().st_mtime_ns > mtime


def test_an_unwritable_frame_cache_falls_back_with_a_warning(demo_features, tmp_path):
    from mmemo.data import dataset as D

    corpus = load_corpus(demo_features)
    names = list(corpus.extract_cfg.features)
    mean, std = np.zeros(91, np.float32), np.ones(91, np.float32)
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    D._CACHE_WARNED.clear()
    ds = D.ShardDataset(corpus.clips, names, mean, std, max_len=40, video_size=28, frame_cache=blocker)
    with pytest.warns(UserWarning, match="frame cache not usable"):
        item = ds[0]
    plain = D.ShardDataset(corpus.clips, names, mean, std, max_len=40, video_size=28)
    assert np.array_equal(item["frames"], plain[0]["frames"])
