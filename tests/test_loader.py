"""The loader is a copy (issue 14): ``WindowLoader`` batches equal, byte for byte, the windows read straight from
the shards as the old per-window loader read them (frames pooled to the model's size, audio standardised per
window), with and without the frame cache and with 0 or 2 workers; the batch buffers it reuses never overwrite a
batch the caller still holds; a worker's error reaches the caller.

Elsewhere: workers 0 and 2 give identical batches through the Trainer's loader, epoch after epoch
(tests/test_train.py::test_dataloader_workers_give_the_same_batches) and with augmentation drawn
(tests/test_augment.py::test_the_draws_are_reproducible_by_seed_and_epoch_with_0_or_2_workers); the data-wait and
step columns (tests/test_augment.py::test_the_epoch_figures_are_kept); two gloo ranks equal one process on the
whole batch (tests/test_ddp_norm.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from mmemo.data import schema as S
from mmemo.data.dataset import (
    POOLED_BUFFERS,
    EpochSampler,
    ShardDataset,
    WindowLoader,
    feature_stats,
    pool_frames,
    to_device,
)
from mmemo.data.features_dir import load_corpus
from mmemo.errors import SchemaError

SIZE, MAX_LEN, BATCH = 28, 40, 4


def _old_batch(ds: ShardDataset, indices: list[int]) -> dict[str, np.ndarray]:
    """The reference: each window read from its shard with h5py and finished on the CPU as the loader did before
    issue 14 (frames pooled, audio standardised in float32, labels without NaN), padded with zeros to the longest."""
    windows = []
    for i in indices:
        ci, start, stop = ds.window(i)
        with h5py.File(ds.clips[ci].path, "r") as h5:
            x = np.concatenate([h5[S.feature_path(k)][start:stop] for k in ds.names], axis=1)
            y = np.stack([h5[S.VALENCE][start:stop], h5[S.AROUSAL][start:stop]], axis=1)
            windows.append({
                "audio": ((x - ds.mean) / ds.std).astype(np.float32),
                "frames": pool_frames(h5[S.FRAMES][start:stop], SIZE),
                "labels": np.nan_to_num(y, nan=0.0).astype(np.float32),
                "audio_mask": h5[S.AUDIO_MASK][start:stop],
                "video_mask": h5[S.VIDEO_MASK][start:stop],
                "label_mask": h5[S.LABEL_MASK][start:stop] & np.isfinite(y).all(axis=1),
                "start": start,
            })  # fmt: skip
    T = max(len(w["audio"]) for w in windows)
    out = {}
    for k in ("audio", "frames", "labels", "audio_mask", "video_mask", "label_mask"):
        first = windows[0][k]
        out[k] = np.zeros((len(windows), T, *first.shape[1:]), first.dtype)
        for b, w in enumerate(windows):
            out[k][b, : len(w[k])] = w[k]
    out["pad_mask"] = np.zeros((len(windows), T), bool)
    for b, w in enumerate(windows):
        out["pad_mask"][b, : len(w["audio"])] = True
    out["start"] = np.array([w["start"] for w in windows])
    return out


def _dataset(features, *, train: bool, cache) -> ShardDataset:
    corpus = load_corpus(features)
    clips, names = corpus.clips, list(corpus.extract_cfg.features)
    mean, std = feature_stats(clips, names)
    return ShardDataset(clips, names, mean, std, max_len=MAX_LEN, train=train, video_size=SIZE, augment=None,
                        seed=5, frame_cache=cache)  # fmt: skip


def _assert_old_batches(ds: ShardDataset, loader: WindowLoader, epoch: int) -> tuple[int, int]:
    """Every batch of one epoch of ``loader`` against ``_old_batch`` of the sampler's indices; the number of
    batches, and of padded rows among them."""
    loader.sampler.set_epoch(epoch)
    indices = list(loader.sampler)
    n = padded = 0
    for k, batch in enumerate(loader):
        want = _old_batch(ds, indices[k * BATCH : (k + 1) * BATCH])
        assert not [key for key in batch if key.startswith("aug_")]
        np.testing.assert_array_equal(batch["start"].numpy(), want["start"])
        for key in ("frames", "labels", "audio_mask", "video_mask", "label_mask", "pad_mask"):
            assert batch[key].numpy().tobytes() == want[key].tobytes(), key  # the bytes, dtype and shape included
            assert batch[key].shape == want[key].shape, key
        # the audio leaves the loader as stored and is standardised on the device, on the whole batch
        on_device = to_device(batch, torch.device("cpu"))
        assert on_device["audio"].numpy().tobytes() == want["audio"].tobytes()
        np.testing.assert_array_equal(on_device["frames"].numpy(), want["frames"] / np.float32(255))
        n += 1
        padded += int((~batch["pad_mask"]).sum())
    return n, padded


@pytest.mark.parametrize("train", [False, True], ids=["eval-windows", "random-windows"])
def test_batches_equal_the_windows_read_from_the_shards(demo_features, tmp_path, train):
    """Frame cache on, no worker: frames copied by the loader from the cache's memory maps into its reused
    buffers; audio standardised on the device; every byte as the old loader gave (evaluation windows pad the
    clips' last windows)."""
    ds = _dataset(demo_features, train=train, cache=tmp_path / "cache")
    loader = WindowLoader(ds, batch_size=BATCH, sampler=EpochSampler(len(ds), seed=5, shuffle=train))
    for epoch in (0, 1):
        n, padded = _assert_old_batches(ds, loader, epoch)
        assert n == len(loader) > 2
        assert padded > 0 or train  # evaluation windows end with each clip: shorter, padded
    assert sorted(loader._maps) == sorted(str(p) for p in (tmp_path / "cache").rglob("*.npy"))  # copied from maps


def test_without_the_frame_cache_the_batches_are_the_same(demo_features):
    """No cache: the frames are pooled from the shard per window and copied into the batch by collate."""
    ds = _dataset(demo_features, train=True, cache=None)
    loader = WindowLoader(ds, batch_size=BATCH, sampler=EpochSampler(len(ds), seed=5))
    assert _assert_old_batches(ds, loader, 0)[0] == len(loader)
    assert not loader._maps


@pytest.mark.slow
def test_two_workers_give_the_old_batches_and_stop_cleanly(demo_features, tmp_path):
    """Two spawned workers (the frames named by them, copied here by the loader's thread): the same bytes. A pass
    left after one batch, then whole passes: each is complete and right (the thread and the workers' persistent
    iterator are reset)."""
    ds = _dataset(demo_features, train=True, cache=tmp_path / "cache")
    loader = WindowLoader(ds, batch_size=BATCH, sampler=EpochSampler(len(ds), seed=5), workers=2)
    loader.sampler.set_epoch(0)
    for _ in loader:
        break
    for epoch in (1, 2):
        assert _assert_old_batches(ds, loader, epoch)[0] == len(loader)
    assert loader._maps  # the workers named the frames, this process copied them


def test_reused_buffers_never_overwrite_a_batch_the_caller_keeps(demo_features, tmp_path):
    """Batches kept (``list(loader)``) hold their own frames; batches let go of give their buffer back: a pass
    then needs no more frame buffers than the pool holds."""
    ds = _dataset(demo_features, train=True, cache=tmp_path / "cache")
    loader = WindowLoader(ds, batch_size=BATCH, sampler=EpochSampler(len(ds), seed=5))
    kept = list(loader)
    assert len({b["frames"].data_ptr() for b in kept}) == len(kept) > POOLED_BUFFERS  # kept: none shared
    indices = list(loader.sampler)
    for k, batch in enumerate(kept):
        want = _old_batch(ds, indices[k * BATCH : (k + 1) * BATCH])
        assert batch["frames"].numpy().tobytes() == want["frames"].tobytes(), k
    del kept, batch
    pointers = {b["frames"].data_ptr() for b in loader}  # each batch dropped when the next arrives
    assert len(pointers) <= 2


@pytest.mark.slow
def test_a_workers_error_reaches_the_caller(demo_features, tmp_path):
    """A shard that disappears under a running loader: the worker's one-line error is raised in the caller,
    through the copying thread, not swallowed into a short epoch."""
    features = shutil.copytree(demo_features, tmp_path / "features")
    ds = _dataset(features, train=True, cache=tmp_path / "cache")
    loader = WindowLoader(ds, batch_size=BATCH, sampler=EpochSampler(len(ds), seed=5), workers=2)
    Path(ds.clips[0].path).unlink()
    with pytest.raises(SchemaError, match="shard missing") as e:
        list(loader)
    assert "\n" not in str(e.value) and "Traceback" not in str(e.value)  # the worker's message alone, one line
