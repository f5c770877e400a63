"""Windows of shards for training and evaluation (a torch Dataset).

- HDF5 files are opened lazily, inside the process that reads them (each DataLoader worker opens its own handles
  on first use, never before the fork), and kept open for the worker's life.
- Training: each item is a window of up to ``max_len`` rows at a random start (drawn from the seed, the epoch
  and the item index, so a run is reproducible whatever the number of workers); a clip of T rows contributes
  ``ceil(T / max_len)`` items per epoch, so long clips are seen in proportion to their length.
- Evaluation: consecutive windows ``[0, L), [L, 2L), ...`` cover every row of every clip exactly once.
- Frames stay uint8 here (pooled to the model's ``video_size``): they become float in [0, 1] in the model
  input path (``to_device``). Audio features are standardised with statistics of the training split.
- Augmentation (training): drawn per window here, from (seed, epoch, item); the audio's masks and noise are
  applied here, the frames' crop, flip and colour jitter and the time stretch of every stream on the training
  device, on the whole batch (``augment_batch``), so that the loader only copies bytes.
- Rows without labels are masked out of the loss (``label_mask``), never filled in.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset

from mmemo import atomic
from mmemo.data import schema as S
from mmemo.data.features_dir import ClipRef, check_relative
from mmemo.data.shards import face_rows, has_faces, open_shard, read_faces, read_frames


@dataclass(frozen=True)
class Augment:
    """On-the-fly augmentation of training windows (all off for evaluation)."""

    enabled: bool = True
    crop: float = 0.85  # random crop keeping at least this fraction of each side, resized back
    flip: float = 0.5  # probability of a horizontal flip
    jitter: float = 0.2  # brightness / contrast / saturation factors in [1 - j, 1 + j]
    time_masks: int = 2  # spans of rows zeroed in the audio features ...
    time_mask_len: int = 10  # ... each up to this many rows
    freq_masks: int = 2  # bands of feature dimensions zeroed ...
    freq_mask_len: int = 8  # ... each up to this many dimensions
    noise: float = 0.05  # std of Gaussian noise added to the standardised audio features
    stretch: float = 0.1  # time stretch of the whole window by a factor in [1 - s, 1 + s]


def feature_stats(clips: list[ClipRef], names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension mean and std (D,) of the concatenated features over rows that hold audio (training split)."""
    total = sq = None
    n = 0
    for c in clips:
        with open_shard(c.path) as h5:
            if S.AUDIO not in h5:
                continue
            m = h5[S.AUDIO_MASK][()]
            x = np.concatenate([h5[S.feature_path(k)][()] for k in names], axis=1)[m].astype(np.float64)
        if total is None:
            total, sq = np.zeros(x.shape[1]), np.zeros(x.shape[1])
        total += x.sum(0)
        sq += (x**2).sum(0)
        n += len(x)
    if n == 0:
        return np.zeros(0, np.float32), np.ones(0, np.float32)
    mean = total / n
    std = np.sqrt(np.maximum(sq / n - mean**2, 0.0))
    return mean.astype(np.float32), np.where(std > 1e-8, std, 1.0).astype(np.float32)


def pool_frames(frames: np.ndarray, size: int) -> np.ndarray:
    """(n, S, S, 3) uint8 -> (n, size, size, 3) uint8 by block averaging (S a multiple of size) or area resizing."""
    if frames.shape[1] == size:
        return frames
    # torch's pooling is several times faster than a numpy reshape-mean and gives the same bytes (area = block
    # mean when the sizes divide)
    t = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()
    t = torch.nn.functional.interpolate(t, size=(size, size), mode="area")
    return t.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


VISUALS = ("frames", "faces")  # what the video branch sees (mmemo.config.VISUAL_INPUTS less "auto")


def visual_rows(frames: np.ndarray, crops: np.ndarray | None, face_mask: np.ndarray | None, size: int) -> np.ndarray:
    """What the video branch sees in each row, (n, size, size, 3) uint8: the aligned face crop where a face was
    found (``face_mask``), the whole frame where not (a back of a head, a scene, a cartoon), both pooled to
    ``size``. With ``crops`` None: the whole frames.

    Args:
        frames: (n, S, S, 3) uint8; crops: (n, F, F, 3) uint8 or None; face_mask: (n,) bool or None.
    """
    out = pool_frames(frames, size)
    if crops is not None and face_mask is not None and face_mask.any():
        out = np.array(out)  # pool_frames may hand back its input: never write into the caller's frames
        out[face_mask] = pool_frames(crops[face_mask], size)
    return out


def read_visual(h5: h5py.File, visual: str, size: int, start: int = 0, stop: int | None = None) -> np.ndarray:
    """Rows ``[start, stop)`` of what the video branch sees (``visual_rows``) read from a shard."""
    frames = read_frames(h5, start, stop)
    if visual == "faces" and has_faces(h5):
        crops, mask = read_faces(h5, start, stop)
        return visual_rows(frames, crops, mask, size)
    return pool_frames(frames, size)


def face_share(clips: list[ClipRef]) -> float | None:
    """Share of the clips' video rows with a face found; None when none of the shards holds faces."""
    counts = []
    for c in clips:
        with open_shard(c.path) as h5:
            counts.append(face_rows(h5))
    counts = [n for n in counts if n is not None]
    if not counts:
        return None
    found, rows = (sum(x) for x in zip(*counts, strict=True))
    return found / rows if rows else 0.0


POOL_BLOCK = 256  # rows pooled at a time while a cache file is built (bounded memory for any clip length)


def pooled_frames(h5: h5py.File, ref: ClipRef, size: int, cache_dir: Path, visual: str = "frames") -> np.ndarray | None:
    """The clip's frames pooled to ``size``, as a read-only memory map of ``cache_dir/frames-SIZE/<clip>.npy``
    (``visual`` "faces": what ``visual_rows`` gives, in ``cache_dir/faces-SIZE``).

    Pooling a 224-px frame to 56 px costs more CPU than training a small model on it, and every epoch paid it
    again: the first reader of a clip writes its pooled frames once (``*.partial`` then rename, so readers in
    other DataLoader workers never see half a file, and two builders of the same clip just race to one result),
    every later read is a slice of a memory map, 16x less data. A cache file older than its shard is rebuilt.
    The bytes are those ``pool_frames`` gives. Returns None (the caller pools as it reads) when the cache
    cannot be written, e.g. a read-only features directory; that is said once per process.
    """
    path = cache_dir / f"{visual}-{size}" / f"{check_relative(ref.clip_id, str(ref.path))}.npy"
    try:
        if path.exists() and path.stat().st_mtime_ns >= Path(ref.path).stat().st_mtime_ns:
            return np.load(path, mmap_mode="r")
        path.parent.mkdir(parents=True, exist_ok=True)
        T = ref.n_frames
        with atomic.atomic_path(path, unique=True) as tmp:  # per process: workers may build the same clip
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(T, size, size, 3))
            for r0 in range(0, T, POOL_BLOCK):
                out[r0 : r0 + POOL_BLOCK] = read_visual(h5, visual, size, r0, min(T, r0 + POOL_BLOCK))
            out.flush()
            del out
        return np.load(path, mmap_mode="r")
    except OSError as e:
        if not _CACHE_WARNED:
            _CACHE_WARNED.append(True)
            warnings.warn(f"{cache_dir}: frame cache not usable ({e}); pooling frames on every read", stacklevel=2)
        return None


_CACHE_WARNED: list[bool] = []


class ShardDataset(Dataset):
    """Windows of (audio features, frames, masks, labels) from shards. See the module docstring."""

    def __init__(
        self,
        clips: list[ClipRef],
        feature_names: list[str],
        mean: np.ndarray,
        std: np.ndarray,
        *,
        max_len: int = 1000,
        train: bool = True,
        video_size: int = 56,
        use_video: bool = True,
        augment: Augment | None = None,
        seed: int = 0,
        frame_cache: str | os.PathLike | None = None,
        visual: str = "frames",
    ) -> None:
        """``frame_cache``: a directory for each clip's frames pooled to ``video_size`` (see ``pooled_frames``);
        None reads and pools the stored frames on every access. ``visual``: "frames" (the whole picture) or
        "faces" (the aligned face where one was found, the whole picture where not: ``visual_rows``)."""
        if visual not in VISUALS:
            raise ValueError(f"visual {visual!r} is not one of {VISUALS}")
        self.visual = visual
        self.clips, self.names = clips, list(feature_names)
        self.frame_cache = Path(frame_cache) if frame_cache is not None else None
        self._pooled: dict[str, np.ndarray | None] = {}
        self.mean, self.std = np.asarray(mean, np.float32), np.asarray(std, np.float32)
        self.max_len, self.train, self.video_size, self.use_video = max_len, train, video_size, use_video
        self.augment = augment if (augment is not None and augment.enabled and train) else None
        self.seed = seed
        self.audio_dim = int(self.mean.size)
        self._files: dict[str, h5py.File] = {}
        self._pid = None
        # item -> (clip index, window number): training draws the start at random, evaluation tiles the clip
        self.items = [(ci, w) for ci, c in enumerate(clips) for w in range(max(1, math.ceil(c.n_frames / max_len)))]

    def __len__(self) -> int:
        return len(self.items)

    def _h5(self, path: str) -> h5py.File:
        if self._pid != os.getpid():  # a new process (DataLoader worker): never reuse a parent's handles
            self._files, self._pid = {}, os.getpid()
        f = self._files.get(path)
        if f is None:
            f = self._files[path] = open_shard(path)
        return f

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_files"], state["_pid"] = {}, None  # handles never cross a process boundary
        state["_pooled"] = {}  # nor do memory maps
        return state

    def window(self, index: int) -> tuple[int, int, int]:
        """(clip index, start, stop) of item ``index``; an index past ``len`` carries its epoch (EpochSampler)."""
        epoch, index = divmod(index, len(self.items))
        ci, w = self.items[index]
        T = self.clips[ci].n_frames
        L = min(self.max_len, T)
        if self.train:
            rng = np.random.default_rng([self.seed, epoch, index])
            start = int(rng.integers(0, T - L + 1))
        else:
            start = w * self.max_len
            L = min(self.max_len, T - start)
        return ci, start, start + L

    def _frames(self, ci: int, h5: h5py.File, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) of clip ``ci``'s frames at ``video_size``: from the cache when there is one."""
        if self.frame_cache is not None:
            key = self.clips[ci].path  # one memory map per file, however often a clip is listed
            if key not in self._pooled:
                self._pooled[key] = pooled_frames(h5, self.clips[ci], self.video_size, self.frame_cache, self.visual)
            cached = self._pooled[key]
            if cached is not None:
                return cached[start:stop]  # a read-only view of the memory map: collate makes the one copy
        return read_visual(h5, self.visual, self.video_size, start, stop)

    def __getitem__(self, index: int) -> dict:
        epoch = index // len(self.items)
        ci, start, stop = self.window(index)
        h5 = self._h5(self.clips[ci].path)
        L = stop - start
        item = {"clip": ci, "start": start}
        if S.AUDIO in h5 and self.audio_dim:
            x = np.concatenate([h5[S.feature_path(k)][start:stop] for k in self.names], axis=1)
            item["audio"] = ((x - self.mean) / self.std).astype(np.float32)
            item["audio_mask"] = h5[S.AUDIO_MASK][start:stop]
        else:
            item["audio"] = np.zeros((L, self.audio_dim), np.float32)
            item["audio_mask"] = np.zeros(L, bool)
        s = self.video_size
        if self.use_video and S.VIDEO in h5:
            item["frames"] = self._frames(ci, h5, start, stop)
            item["video_mask"] = h5[S.VIDEO_MASK][start:stop]
        else:
            item["frames"] = np.zeros((L, s, s, 3), np.uint8)
            item["video_mask"] = np.zeros(L, bool)
        if S.LABELS in h5:
            y = np.stack([h5[S.VALENCE][start:stop], h5[S.AROUSAL][start:stop]], axis=1)
            m = h5[S.LABEL_MASK][start:stop]
        else:
            y, m = np.zeros((L, 2), np.float32), np.zeros(L, bool)
        item["labels"] = np.nan_to_num(y, nan=0.0).astype(np.float32)
        item["label_mask"] = m & np.isfinite(y).all(axis=1)
        if self.augment is not None:
            rng = np.random.default_rng([self.seed, epoch, index % len(self), 1])
            item = _augment(item, self.augment, rng)
        return item


class EpochSampler(torch.utils.data.Sampler):
    """Indices of one epoch, shuffled by (seed, epoch), each offset by ``epoch * len(dataset)``.

    Carrying the epoch in the index lets persistent DataLoader workers draw the right windows without being told
    about the new epoch. With ``num_replicas > 1`` (DistributedDataParallel) each rank takes every
    ``num_replicas``-th index of the same permutation, padded so that all ranks get the same count.
    """

    def __init__(self, n: int, *, seed: int = 0, shuffle: bool = True, rank: int = 0, num_replicas: int = 1) -> None:
        self.n, self.seed, self.shuffle, self.rank, self.num_replicas = n, seed, shuffle, rank, num_replicas
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _order(self) -> list[int]:
        order = list(range(self.n))
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch, 7]).permutation(self.n).tolist()
        per_rank = -(-self.n // self.num_replicas)
        order += order[: per_rank * self.num_replicas - self.n]  # pad so every rank has the same count
        return order[self.rank :: self.num_replicas]

    def __iter__(self):
        offset = self.epoch * self.n
        return iter([offset + i for i in self._order()])

    def __len__(self) -> int:
        return -(-self.n // self.num_replicas)


def _augment(item: dict, a: Augment, rng: np.random.Generator) -> dict:
    """Draw one training window's augmentation and apply what is cheap here (the audio's time and feature masks
    and noise: (L, D) floats); the frames' crop, flip and colour jitter and the time stretch of every stream are
    only drawn here, as numbers in ``item["aug"]``, and applied to the whole batch on the training device by
    ``augment_batch`` (a window's frames are ~9 MB; float work on them was what the GPU waited for).

    The draws are made in the same order from the same generator as when all of it ran here, so the distribution
    of every parameter, and its reproducibility by seed, epoch and item, are unchanged."""
    s = item["frames"].shape[1]
    aug = {"video": bool(item["video_mask"].any()), "crop": (s, 0, 0), "flip": False, "jitter": (1.0, 1.0, 1.0),
           "stretch": 1.0}  # fmt: skip
    if aug["video"]:
        if a.crop < 1:
            c = int(round(s * rng.uniform(a.crop, 1.0)))
            y0, x0 = rng.integers(0, s - c + 1, size=2)
            aug["crop"] = (c, int(y0), int(x0))
        aug["flip"] = bool(rng.random() < a.flip)
        if a.jitter > 0:
            aug["jitter"] = tuple(float(v) for v in rng.uniform(1 - a.jitter, 1 + a.jitter, size=3))  # b, con, sat
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
        aug["stretch"] = float(rng.uniform(1 - a.stretch, 1 + a.stretch))
    item["aug"] = aug
    return item


def augment_batch(b: dict[str, torch.Tensor], max_len: int) -> dict[str, torch.Tensor]:
    """Apply the frames' augmentation and the time stretch drawn by ``_augment`` to a collated batch on its
    device, all windows at once. ``b["frames"]`` (B, T, S, S, 3) float in [0, 1] (after ``to_device``).

    Per window, as the per-window code did: a crop of c x c pixels at (y0, x0) resized back to S x S (bilinear,
    rounded to a grey level), a horizontal flip, then saturation, contrast (around the window's mean) and
    brightness (truncated to a grey level), on windows with video only; then every stream resampled on one time
    axis ``factor`` times slower (linear for features and labels, nearest for frames and masks), cut to
    ``max_len`` rows. Returns a new batch dict (T may change; ``pad_mask`` says which rows are real).
    """
    frames, pad = b["frames"], b["pad_mask"]
    B, T, S = frames.shape[:3]
    video = b["aug_video"]
    if bool(video.any()):
        x = frames * 255.0  # grey levels, as the stored bytes
        crop = b["aug_crop"]  # (B, 3): c, y0, x0
        ylo, yhi, wy = _resize_axis(crop[:, 1], crop[:, 0], S, torch.zeros_like(video))
        xlo, xhi, wx = _resize_axis(crop[:, 2], crop[:, 0], S, b["aug_flip"])
        # separable bilinear resize of each window's crop, along W then H (the order PyTorch's bilinear resize adds
        # in, so that the rounding below agrees with it)
        cols = _take(x, xlo, 3) * (1 - wx.view(B, 1, 1, S, 1)) + _take(x, xhi, 3) * wx.view(B, 1, 1, S, 1)
        y = _take(cols, ylo, 2) * (1 - wy.view(B, 1, S, 1, 1)) + _take(cols, yhi, 2) * wy.view(B, 1, S, 1, 1)
        y = y.round().clamp_(0, 255).permute(0, 1, 4, 2, 3)  # (B, T, 3, S, S)
        jit = b["aug_jitter"].to(y.dtype)  # (B, 3): brightness, contrast, saturation
        bright, con, sat = (jit[:, k].view(B, 1, 1, 1, 1) for k in range(3))
        grey = y.mean(dim=2, keepdim=True)
        y = grey + (y - grey) * sat
        w = pad.to(y.dtype).view(B, T, 1, 1, 1)
        mean = (y * w).sum(dim=(1, 2, 3, 4), keepdim=True) / (w.sum(dim=1, keepdim=True) * 3 * S * S).clamp_min(1)
        y = (y - mean) * con + mean
        y = (y * bright).clamp_(0, 255).floor_()  # the per-window code truncated to uint8 here
        y = y.permute(0, 1, 3, 4, 2) / 255.0
        frames = torch.where(video.view(B, 1, 1, 1, 1), y, frames)
    factor = b["aug_stretch"].to(torch.float64)  # (B,)
    lengths = pad.sum(dim=1)  # L per window
    n = torch.where(factor != 1.0, torch.clamp(torch.round(lengths * factor), min=2), lengths.to(torch.float64))
    n = torch.minimum(n, torch.full_like(n, max_len)).to(torch.long)
    n = torch.where(lengths > 1, n, lengths)
    T2 = int(n.max())
    t = torch.arange(T2, device=pad.device, dtype=torch.float64)
    last = (lengths - 1).clamp_min(0).to(torch.float64)[:, None]
    src = torch.minimum(t[None] / factor[:, None], last)  # (B, T2): source position of each new row
    lo = src.floor().long()
    hi = torch.minimum(lo + 1, last.long())
    near = src.round().long()  # round half to even, as np.rint
    wgt = (src - lo).to(b["audio"].dtype)[..., None]
    out = dict(b)
    bi = torch.arange(B, device=pad.device)[:, None]
    out["audio"] = b["audio"][bi, lo] * (1 - wgt) + b["audio"][bi, hi] * wgt
    out["labels"] = b["labels"][bi, lo] * (1 - wgt) + b["labels"][bi, hi] * wgt
    out["label_mask"] = b["label_mask"][bi, lo] & b["label_mask"][bi, hi]
    out["frames"] = frames[bi, near]
    out["audio_mask"], out["video_mask"] = b["audio_mask"][bi, near], b["video_mask"][bi, near]
    out["pad_mask"] = t[None] < n[:, None]
    for k in ("audio", "labels", "frames"):
        keep = out["pad_mask"].view(B, T2, *([1] * (out[k].dim() - 2)))
        out[k] = torch.where(keep, out[k], torch.zeros((), dtype=out[k].dtype, device=out[k].device))
    for k in ("label_mask", "audio_mask", "video_mask"):
        out[k] = out[k] & out["pad_mask"]
    return out


def _resize_axis(start: torch.Tensor, c: torch.Tensor, S: int, flip: torch.Tensor) -> tuple:
    """Per window, the two source pixels and the weight of the second for each of the S output positions of a
    ``c``-pixel stretch starting at ``start`` resized to S (bilinear, half-pixel centres, as PyTorch's resize:
    negative positions clamped to 0); reversed where ``flip``. Returns (lo, hi) long and w float, each (B, S)."""
    j = torch.arange(S, device=c.device, dtype=torch.float32)
    cf = c.to(torch.float32)[:, None]
    src = ((j[None] + 0.5) * (cf / S) - 0.5).clamp_min(0)
    lo = src.floor().long()
    w = src - lo
    hi = torch.minimum(lo + 1, c[:, None] - 1)
    lo, hi = lo + start[:, None], hi + start[:, None]
    rev = flip.view(-1, 1)
    return (torch.where(rev, lo.flip(1), lo), torch.where(rev, hi.flip(1), hi), torch.where(rev, w.flip(1), w))


def _take(x: torch.Tensor, idx: torch.Tensor, dim: int) -> torch.Tensor:
    """``x`` (B, T, H, W, 3) gathered along ``dim`` (2 or 3) at ``idx`` (B, n), per window."""
    shape = [x.shape[0], 1, 1, 1, 1]
    shape[dim] = idx.shape[1]
    size = list(x.shape)
    size[dim] = idx.shape[1]
    return torch.gather(x, dim, idx.view(shape).expand(size))


def collate(items: list[dict]) -> dict[str, torch.Tensor]:
    """Pad a list of windows to the longest: tensors (B, T, ...) plus ``pad_mask`` (B, T) True where real."""
    B, T = len(items), max(len(it["audio"]) for it in items)
    first = items[0]
    out = {
        "audio": torch.zeros(B, T, first["audio"].shape[1]),
        "frames": torch.zeros(B, T, *first["frames"].shape[1:], dtype=torch.uint8),
        "labels": torch.zeros(B, T, 2),
        "pad_mask": torch.zeros(B, T, dtype=torch.bool),
        "audio_mask": torch.zeros(B, T, dtype=torch.bool),
        "video_mask": torch.zeros(B, T, dtype=torch.bool),
        "label_mask": torch.zeros(B, T, dtype=torch.bool),
        "clip": torch.tensor([it["clip"] for it in items]),
        "start": torch.tensor([it["start"] for it in items]),
    }
    arrays = {k: out[k].numpy() for k in ("audio", "frames", "labels", "audio_mask", "video_mask", "label_mask")}
    for i, it in enumerate(items):
        n = len(it["audio"])
        out["pad_mask"][i, :n] = True
        for k, a in arrays.items():
            a[i, :n] = it[k]  # one copy per stream, straight from the window (a memory-mapped view for frames)
    if "aug" in first:  # the augmentation drawn for each window, applied on the device (augment_batch)
        augs = [it["aug"] for it in items]
        out["aug_video"] = torch.tensor([a["video"] for a in augs])
        out["aug_crop"] = torch.tensor([a["crop"] for a in augs], dtype=torch.long)
        out["aug_flip"] = torch.tensor([a["flip"] for a in augs])
        out["aug_jitter"] = torch.tensor([a["jitter"] for a in augs], dtype=torch.float32)
        out["aug_stretch"] = torch.tensor([a["stretch"] for a in augs], dtype=torch.float64)
    return out


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """Move a batch to ``device``; frames become float in [0, 1] here, after the (4x smaller) uint8 transfer."""
    out = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
    out["frames"] = out["frames"].float().div_(255.0)
    return out
