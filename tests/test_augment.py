"""Augmentation on the training device (issue 14): the batched ``augment_batch`` gives what the per-window code it
replaced gave (the same draws from the same generator; pixels within a grey level), reproducibly by seed, epoch and
item whatever the number of DataLoader workers; and the epoch figures (data wait, step time, windows/s) are kept."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from mmemo.data.dataset import Augment, ShardDataset, _augment, augment_batch, collate, to_device
from mmemo.data.features_dir import load_corpus


# ------------------------------------------------------------------------------- the per-window reference
def _old_augment(item: dict, a: Augment, rng: np.random.Generator, max_len: int) -> dict:
    """The per-window augmentation as it ran in the loader before issue 14 (the reference, kept verbatim)."""
    frames = item["frames"]
    if item["video_mask"].any():
        s = frames.shape[1]
        if a.crop < 1:
            c = int(round(s * rng.uniform(a.crop, 1.0)))
            y0, x0 = rng.integers(0, s - c + 1, size=2)
            t = torch.from_numpy(np.ascontiguousarray(frames[:, y0 : y0 + c, x0 : x0 + c])).permute(0, 3, 1, 2).float()
            t = torch.nn.functional.interpolate(t, size=(s, s), mode="bilinear", align_corners=False)
            frames = t.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
        if rng.random() < a.flip:
            frames = frames[:, :, ::-1]
        if a.jitter > 0:
            f = frames.astype(np.float32)
            b, con, sat = rng.uniform(1 - a.jitter, 1 + a.jitter, size=3)
            grey = f.mean(axis=3, keepdims=True)
            f = grey + (f - grey) * sat
            f = (f - f.mean()) * con + f.mean()
            frames = np.clip(f * b, 0, 255).astype(np.uint8)
        item["frames"] = np.ascontiguousarray(frames)
    x = item["audio"].copy()
    L, D = x.shape
    if D and item["audio_mask"].any():
        for _ in range(a.time_masks):
            w = int(rng.integers(0, a.time_mask_len + 1))
            t0 = int(rng.integers(0, max(1, L - w)))
            x[t0 : t0 + w] = 0.0
        for _ in range(a.freq_masks):
            w = int(rng.integers(0, min(a.freq_mask_len, D) + 1))
            d0 = int(rng.integers(0, max(1, D - w)))
            x[:, d0 : d0 + w] = 0.0
        if a.noise > 0:
            x += rng.normal(0, a.noise, x.shape).astype(np.float32)
    item["audio"] = x
    if a.stretch > 0 and L > 1:
        factor = rng.uniform(1 - a.stretch, 1 + a.stretch)
        n = min(max_len, max(2, int(round(L * factor))))
        src = np.minimum(np.arange(n) / factor, L - 1)
        near = np.rint(src).astype(int)
        lo = np.floor(src).astype(int)
        hi = np.minimum(lo + 1, L - 1)
        w = (src - lo)[:, None].astype(np.float32)
        out = dict(item)
        out["audio"] = (item["audio"][lo] * (1 - w) + item["audio"][hi] * w).astype(np.float32)
        out["labels"] = (item["labels"][lo] * (1 - w) + item["labels"][hi] * w).astype(np.float32)
        out["label_mask"] = item["label_mask"][lo] & item["label_mask"][hi]
        for k in ("frames", "audio_mask", "video_mask"):
            out[k] = item[k][near]
        item = out
    return item


MEAN = np.array([0.5, -2.0, 10.0, 0.0, 3.0, -0.25], np.float32)  # the training split's feature statistics
STD = np.array([2.0, 0.5, 4.0, 1.0, 0.1, 3.0], np.float32)


def _window(L: int, seed: int, video: bool = True, S: int = 16, D: int = 6) -> dict:
    """A window as the loader hands it over: audio features as stored (raw), the statistics beside them."""
    rng = np.random.default_rng(seed)
    return {
        "clip": seed, "start": 0,
        "audio": (rng.normal(size=(L, D)) * STD + MEAN).astype(np.float32),
        "audio_mean": MEAN, "audio_std": STD, "has_audio": True,
        "audio_mask": rng.random(L) > 0.1,
        "frames": rng.integers(0, 256, size=(L, S, S, 3), dtype=np.uint8),
        "video_mask": np.ones(L, bool) if video else np.zeros(L, bool),
        "labels": rng.uniform(-1, 1, size=(L, 2)).astype(np.float32),
        "label_mask": rng.random(L) > 0.2,
    }  # fmt: skip


def _copy(item: dict) -> dict:
    return {k: v.copy() if isinstance(v, np.ndarray) else v for k, v in item.items()}


@pytest.mark.parametrize("seed", range(6))
def test_the_batched_device_augmentation_gives_what_the_per_window_code_gave(seed):
    """Windows of different lengths (padding in the batch), one without video: every stream of every window equals
    the per-window reference (standardised, then augmented, in the loader) drawn from the same generator (features
    and labels to float rounding, masks and lengths exactly, pixels within one grey level: bilinear sampling by
    another routine)."""
    a, max_len = Augment(), 40
    lengths = [40, 33, 17, 2]
    items = [_window(L, 10 * seed + i, video=i != 2) for i, L in enumerate(lengths)]
    # the old loader standardised each window, then augmented it
    standardised = [{**_copy(it), "audio": ((it["audio"] - MEAN) / STD).astype(np.float32)} for it in items]
    expected = [_old_augment(it, a, np.random.default_rng([seed, i]), max_len) for i, it in enumerate(standardised)]
    drawn = [{**_copy(it), "aug": _augment(it, a, np.random.default_rng([seed, i]))} for i, it in enumerate(items)]
    b = augment_batch(to_device(collate(drawn), torch.device("cpu")), max_len)
    for i, exp in enumerate(expected):
        n = len(exp["audio"])
        assert int(b["pad_mask"][i].sum()) == n and not b["pad_mask"][i, n:].any()
        np.testing.assert_allclose(b["audio"][i, :n].numpy(), exp["audio"], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(b["labels"][i, :n].numpy(), exp["labels"], rtol=1e-5, atol=1e-6)
        for k in ("audio_mask", "video_mask", "label_mask"):
            np.testing.assert_array_equal(b[k][i, :n].numpy(), exp[k], err_msg=k)
        got = np.rint(b["frames"][i, :n].numpy() * 255).astype(int)
        diff = np.abs(got - exp["frames"].astype(int))
        assert diff.max() <= 1 and diff.mean() < 0.05, (i, diff.max(), diff.mean())


def test_without_augmentation_nothing_is_drawn_and_the_batch_is_the_windows_as_stored(demo_features):
    """Evaluation windows (no augmentation): no aug_* keys, and each window's frames and labels are the shard's."""
    from mmemo.data.dataset import pool_frames
    from mmemo.data.shards import read_clip

    corpus = load_corpus(demo_features)
    names = list(corpus.extract_cfg.features)
    ds = ShardDataset(corpus.clips, names, np.zeros(91, np.float32), np.ones(91, np.float32), max_len=40,
                      train=False, video_size=28)  # fmt: skip
    batch = collate([ds[i] for i in range(3)])
    assert not [k for k in batch if k.startswith("aug_")]
    clip = read_clip(corpus.clips[0].path)
    np.testing.assert_array_equal(batch["frames"][0].numpy(), pool_frames(clip.frames[:40], 28))
    np.testing.assert_array_equal(batch["labels"][0, :, 0].numpy(), np.nan_to_num(clip.valence[:40]))


def test_the_draws_are_reproducible_by_seed_and_epoch_with_0_or_2_workers(demo_features):
    """The same (seed, epoch) gives the same batches, augmentation parameters included, with 0 and 2 spawned
    DataLoader workers; another epoch or seed other ones."""
    from torch.utils.data import DataLoader

    from mmemo.data.dataset import EpochSampler

    corpus = load_corpus(demo_features)
    names = list(corpus.extract_cfg.features)

    def batches(workers: int, epoch: int, seed: int = 0) -> list[dict]:
        ds = ShardDataset(corpus.clips, names, np.zeros(91, np.float32), np.ones(91, np.float32), max_len=40,
                          train=True, video_size=28, augment=Augment(), seed=seed)  # fmt: skip
        sampler = EpochSampler(len(ds), seed=seed)
        sampler.set_epoch(epoch)
        loader = DataLoader(ds, batch_size=4, sampler=sampler, num_workers=workers, collate_fn=collate,
                            multiprocessing_context="spawn" if workers else None)  # fmt: skip
        return list(loader)

    zero, two = batches(0, 1), batches(2, 1)
    assert len(zero) == len(two) > 1
    for x, y in zip(zero, two, strict=True):
        assert sorted(x) == sorted(y)
        for k in x:
            assert torch.equal(x[k], y[k]), k
    other = batches(0, 2)
    assert not all(torch.equal(x["aug_stretch"], y["aug_stretch"]) for x, y in zip(zero, other, strict=True))


def test_the_epoch_figures_are_kept(small_run):
    """metrics.csv holds the seconds spent waiting for data and computing, and windows per second, per epoch."""
    history = pd.read_csv(small_run / "metrics.csv")
    for col in ("data_s", "step_s", "windows_per_s"):
        assert col in history and (history[col] > 0).all(), col
    assert "gpu_mem_mib" in history and history["gpu_mem_mib"].isna().all()  # no GPU here
