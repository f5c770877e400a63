"""Windows of shards for training and evaluation (a torch Dataset), and the loader that batches them.

- HDF5 files are opened lazily, inside the process that reads them (each DataLoader worker opens its own handles
  on first use, never before the fork), and kept open for the worker's life.
- Training: each item is a window of up to ``max_len`` rows at a random start (drawn from the seed, the epoch
  and the item index, so a run is reproducible whatever the number of workers); a clip of T rows contributes
  ``ceil(T / max_len)`` items per epoch, so long clips are seen in proportion to their length.
- Evaluation: consecutive windows ``[0, L), [L, 2L), ...`` cover every row of every clip exactly once.
- Nothing is converted per window: frames stay uint8 (pooled to the model's ``video_size``, a view of the frame
  cache's memory map) and audio features stay as stored; ``to_device`` turns the whole batch's frames into float
  in [0, 1] and standardises its audio features (statistics of the training split) on the training device.
- Augmentation (training): drawn per window here, from (seed, epoch, item); applied on the training device to the
  whole batch (``augment_batch``): the frames' crop, flip and colour jitter, the audio's masks and noise, the time
  stretch of every stream.
- ``WindowLoader``: DataLoader workers read the HDF5 rows and draw the augmentation; the frames of cached clips
  are copied once, from their memory maps into a reused (on CUDA pinned) batch buffer, by the training process.
- Rows without labels are masked out of the loss (``label_mask``), never filled in.
"""

from __future__ import annotations

import math
import os
import queue
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import h5py
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from mmemo import atomic
from mmemo.data import schema as S
from mmemo.data.features_dir import ClipRef, check_relative
from mmemo.data.shards import (
    face_rows,
    has_faces,
    import_columns,
    open_shard,
    read_faces,
    read_frames,
    read_import,
)
from mmemo.errors import ConfigError, MmemoError, SchemaError


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


class _Moments:
    """Running per-column sums of rows (float64), for a mean and a standard deviation over many shards."""

    def __init__(self) -> None:
        self.total: np.ndarray | None = None
        self.sq: np.ndarray | None = None
        self.n = 0

    def add(self, x: np.ndarray) -> None:
        """x (N, D): rows to count (only the real ones: the caller masks)."""
        x = np.asarray(x, np.float64)
        if self.total is None:
            self.total, self.sq = np.zeros(x.shape[1]), np.zeros(x.shape[1])
        self.total += x.sum(0)
        self.sq += (x**2).sum(0)
        self.n += len(x)

    def result(self, dim: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """(mean, std) float32 (D,); a constant column gets std 1 (standardising it must not divide by 0)."""
        if self.n == 0 or self.total is None:
            return np.zeros(dim, np.float32), np.ones(dim, np.float32)
        mean = self.total / self.n
        std = np.sqrt(np.maximum(self.sq / self.n - mean**2, 0.0))
        return mean.astype(np.float32), np.where(std > 1e-8, std, 1.0).astype(np.float32)


def feature_stats(clips: list[ClipRef], names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension mean and std (D,) of the concatenated features over rows that hold audio (training split)."""
    acc = _Moments()
    for c in clips:
        with open_shard(c.path) as h5:
            if S.AUDIO not in h5:
                continue
            m = h5[S.AUDIO_MASK][()]
            acc.add(np.concatenate([h5[S.feature_path(k)][()] for k in names], axis=1)[m])
    return acc.result()


# ------------------------------------------------------------------------------------------------ imported streams
@dataclass(frozen=True)
class ImportInput:
    """One ``--import`` stream as the model reads it: its name, the branch it feeds (``side`` "audio" or "video"),
    its columns and their standardisation statistics (mean, std (D,) float32) over the training split's unmasked
    rows. Saved in the checkpoint (``to_dict``), so that serving builds the same inputs alone."""

    name: str
    side: str
    columns: tuple[str, ...]
    mean: np.ndarray
    std: np.ndarray

    def to_dict(self) -> dict:
        """Plain data (lists of floats: float32 values survive the round trip exactly)."""
        return {"name": self.name, "side": self.side, "columns": list(self.columns),
                "mean": [float(x) for x in self.mean], "std": [float(x) for x in self.std]}  # fmt: skip

    @staticmethod
    def from_dict(d: dict) -> ImportInput:
        mean, std = np.asarray(d["mean"], np.float32), np.asarray(d["std"], np.float32)
        cols = tuple(str(c) for c in d["columns"])
        if str(d["side"]) not in ("audio", "video") or not (mean.shape == std.shape == (len(cols),)):
            raise ValueError(f"import {d.get('name')!r}: side {d.get('side')!r}, {len(cols)} columns, "
                             f"statistics of shape {mean.shape} / {std.shape}")  # fmt: skip
        return ImportInput(str(d["name"]), str(d["side"]), cols, mean, std)


def side_imports(imports: list[ImportInput], side: str) -> list[ImportInput]:
    """The imports of one side, in the recorded order (the order of their columns in the model's input)."""
    return [i for i in imports if i.side == side]


def import_width(imports: list[ImportInput], side: str) -> int:
    """Columns the imports of ``side`` add to the model's input: their values, then one presence column each."""
    mine = side_imports(imports, side)
    return sum(len(i.columns) for i in mine) + len(mine)


def import_stats(imports: list[ImportInput], side: str) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std) (import_width,) of the side's block: the imports' own statistics for their values, 0 / 1 for
    the presence columns (a 0/1 column stays 0/1 after standardisation)."""
    mine = side_imports(imports, side)
    k = len(mine)
    mean = np.concatenate([i.mean for i in mine] + [np.zeros(k, np.float32)]).astype(np.float32)
    std = np.concatenate([i.std for i in mine] + [np.ones(k, np.float32)]).astype(np.float32)
    return mean, std


def import_gates(imports: list[ImportInput], side: str) -> np.ndarray:
    """(import_width,) int64: for each value column of the side's block, the index (in the block) of its import's
    presence column; -1 for the presence columns themselves. An exported model zeroes a masked row's values with
    it (``mmemo.pipeline.export``), whatever finite numbers the caller put there."""
    mine = side_imports(imports, side)
    n_values = sum(len(i.columns) for i in mine)
    gates = [n_values + j for j, i in enumerate(mine) for _ in i.columns]
    return np.array(gates + [-1] * len(mine), np.int64)


def import_block(
    imports: list[ImportInput], side: str, streams: dict[str, tuple[np.ndarray, np.ndarray]], n: int, where: str
) -> np.ndarray:
    """The side's imports for ``n`` rows as the model's raw input block, (n, import_width) float32: each import's
    values (masked rows hold the import's training mean, so that standardisation makes them 0: nothing made up),
    then one presence column per import (1 where its file had a usable row, 0 where masked).

    Args:
        streams: name -> (values (n, D) float32 NaN where masked, or (n, 0) for a clip without the file; mask (n,)).
        where: the shard or file named by the one-line error for a stream of the wrong width.
    """
    mine = side_imports(imports, side)
    values, presence = [], []
    for imp in mine:
        v, m = streams[imp.name]
        m = np.asarray(m, bool)
        if v.shape[1] not in (0, len(imp.columns)):
            raise SchemaError(f"{where}: import {imp.name} has {v.shape[1]} columns, but the model reads "
                              f"{len(imp.columns)} ({', '.join(imp.columns[:4])}...)")  # fmt: skip
        block = np.broadcast_to(imp.mean, (n, len(imp.columns))).copy()
        if m.any():
            block[m] = v[m]
        values.append(block)
        presence.append(m.astype(np.float32)[:, None])
    if not mine:
        return np.zeros((n, 0), np.float32)
    return np.concatenate(values + presence, axis=1).astype(np.float32)


def check_import_columns(h5: h5py.File, imp: ImportInput) -> None:
    """A SchemaError (one line naming the shard) when the shard lacks ``imp`` or stores other columns for it."""
    if S.import_mask(imp.name) not in h5:
        flag = f"{imp.name}:audio" if imp.side == "audio" else imp.name
        raise SchemaError(f"{h5.filename}: extracted without --import {flag}=DIR, which the model reads "
                          f"({imp.side} side)")  # fmt: skip
    cols = import_columns(h5, imp.name)
    if cols and tuple(cols) != imp.columns:
        raise SchemaError(f"{h5.filename}: import {imp.name} holds columns {', '.join(cols[:4])}... "
                          f"({len(cols)}), but the model reads {', '.join(imp.columns[:4])}... "
                          f"({len(imp.columns)})")  # fmt: skip


def import_inputs(
    clips: list[ClipRef], wanted: list[tuple[str, str]]
) -> tuple[list[ImportInput], dict[str, list[str]]]:
    """The ``wanted`` (name, side) imports of a training split: their columns (the same in every shard with a
    file, else a SchemaError naming two shards) and statistics over their unmasked rows (``_Moments``, as the audio
    features); and, per import, the clips without a usable row (their stream is masked: reported, not fatal).

    Raises ConfigError when no training clip has a usable row of an import (nothing to learn its scale from)."""
    out, empty = [], {}
    for name, side in wanted:
        acc, columns, first, empty[name] = _Moments(), None, None, []
        for c in clips:
            with open_shard(c.path) as h5:
                if S.import_mask(name) not in h5:
                    raise SchemaError(f"{c.path}: no import {name} (extracted without --import {name}=DIR); "
                                      "re-extract the directory with it")  # fmt: skip
                values, mask = read_import(h5, name)
                cols = import_columns(h5, name)
            if not mask.any():
                empty[name].append(c.clip_id)
                continue
            if columns is None:
                columns, first = tuple(cols), c.path
            elif tuple(cols) != columns:
                raise SchemaError(f"{c.path}: import {name} has columns {', '.join(cols[:4])}... ({len(cols)}), "
                                  f"{first} has {', '.join(columns[:4])}... ({len(columns)}): one tool, one "
                                  "version, for every clip")  # fmt: skip
            acc.add(values[mask])
        if columns is None:
            raise ConfigError(f"import {name}: none of the {len(clips)} training clips has a usable row (no file, "
                              "or all rows masked): nothing to learn from; leave it out with --imports")  # fmt: skip
        mean, std = acc.result()
        out.append(ImportInput(name, side, columns, mean, std))
    return out, empty


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


def cache_file(ref: ClipRef, size: int, cache_dir: Path, visual: str = "frames") -> Path:
    """Where ``pooled_frames`` keeps a clip's rows pooled to ``size``: ``cache_dir/VISUAL-SIZE/<clip>.npy``."""
    return cache_dir / f"{visual}-{size}" / f"{check_relative(ref.clip_id, str(ref.path))}.npy"


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
    path = cache_file(ref, size, cache_dir, visual)
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
        imports: list[ImportInput] = (),
    ) -> None:
        """``frame_cache``: a directory for each clip's frames pooled to ``video_size`` (see ``pooled_frames``);
        None reads and pools the stored frames on every access. ``visual``: "frames" (the whole picture) or
        "faces" (the aligned face where one was found, the whole picture where not: ``visual_rows``).
        ``imports``: the ``--import`` streams the model reads (``import_block``): the audio side's columns follow
        the audio features in ``audio`` (``mean`` / ``std`` cover them: ``import_stats``), the video side's are
        ``video_import``."""
        if visual not in VISUALS:
            raise ValueError(f"visual {visual!r} is not one of {VISUALS}")
        self.visual = visual
        self.clips, self.names = clips, list(feature_names)
        self.frame_cache = Path(frame_cache) if frame_cache is not None else None
        self._pooled: dict[str, tuple[str, np.ndarray] | None] = {}  # shard -> (cache file, memory map)
        self.mean, self.std = np.asarray(mean, np.float32), np.asarray(std, np.float32)
        self.max_len, self.train, self.video_size, self.use_video = max_len, train, video_size, use_video
        self.augment = augment if (augment is not None and augment.enabled and train) else None
        self.seed = seed
        self.audio_dim = int(self.mean.size)
        self.imports = list(imports)
        self.vi_mean, self.vi_std = import_stats(self.imports, "video")
        self._files: dict[str, h5py.File] = {}
        self._sets: dict[str, dict[str, h5py.Dataset]] = {}  # shard -> the datasets a window reads, by name
        self._pid = None
        # item -> (clip index, window number): training draws the start at random, evaluation tiles the clip
        self.items = [(ci, w) for ci, c in enumerate(clips) for w in range(max(1, math.ceil(c.n_frames / max_len)))]

    def __len__(self) -> int:
        return len(self.items)

    def _h5(self, path: str) -> h5py.File:
        if self._pid != os.getpid():  # a new process (DataLoader worker): never reuse a parent's handles
            self._files, self._sets, self._pid = {}, {}, os.getpid()
        f = self._files.get(path)
        if f is None:
            f = self._files[path] = open_shard(path)
        return f

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_files"], state["_sets"], state["_pid"] = {}, {}, None  # handles never cross a process boundary
        state["_pooled"] = {}  # nor do memory maps
        return state

    def _datasets(self, path: str) -> dict[str, h5py.Dataset]:
        """The shard's datasets a window reads (those present), looked up once per process: a lookup by path
        costs HDF5 as much as reading a window's rows of a feature."""
        sets = self._sets.get(path) if self._pid == os.getpid() else None
        if sets is None:
            h5 = self._h5(path)
            paths = {k: S.feature_path(k) for k in self.names} if S.AUDIO in h5 and self.audio_dim else {}
            paths.update(audio_mask=S.AUDIO_MASK, video_mask=S.VIDEO_MASK, valence=S.VALENCE, arousal=S.AROUSAL,
                         label_mask=S.LABEL_MASK)  # fmt: skip
            sets = self._sets[path] = {k: h5[v] for k, v in paths.items() if v in h5}
            for imp in self.imports:  # checked once per shard and process: a window then only reads rows
                check_import_columns(h5, imp)
                sets[f"import/{imp.name}"] = h5[S.import_values(imp.name)]
                sets[f"import_mask/{imp.name}"] = h5[S.import_mask(imp.name)]
        return sets

    def _imports(self, d: dict[str, h5py.Dataset], side: str, start: int, stop: int, where: str) -> np.ndarray:
        """Rows [start, stop) of the side's imports as the model's raw block (``import_block``)."""
        streams = {i.name: (d[f"import/{i.name}"][start:stop], d[f"import_mask/{i.name}"][start:stop])
                   for i in side_imports(self.imports, side)}  # fmt: skip
        return import_block(self.imports, side, streams, stop - start, where)

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

    def _frames(self, ci: int, h5: h5py.File, start: int, stop: int) -> tuple[np.ndarray, str | None]:
        """Rows [start, stop) of clip ``ci``'s frames at ``video_size``, and the cache file they are a read-only
        view of (None: read from the shard and pooled now, when there is no usable cache)."""
        if self.frame_cache is not None:
            key = self.clips[ci].path  # one memory map per file, however often a clip is listed
            if key not in self._pooled:
                ref = self.clips[ci]
                m = pooled_frames(h5, ref, self.video_size, self.frame_cache, self.visual)
                self._pooled[key] = None if m is None else (str(cache_file(ref, self.video_size, self.frame_cache,
                                                                            self.visual)), m)  # fmt: skip
            cached = self._pooled[key]
            if cached is not None:
                return cached[1][start:stop], cached[0]
        return read_visual(h5, self.visual, self.video_size, start, stop), None

    def __getitem__(self, index: int) -> dict:
        """One window, nothing converted: ``audio`` (L, D) float32 as stored (``audio_mean`` / ``audio_std``, the
        dataset's statistics, ride along for ``to_device``), ``video_import`` (L, Dvi) float32 raw
        (``import_block``; only with video-side imports; ``video_import_mean`` / ``_std`` ride along),
        ``frames`` (L, S, S, 3) uint8 (a view of the frame cache's memory map, whose path is ``frame_file``; ""
        for a window without video, whose frames are a zero view; None when the frames were pooled from the shard
        now), masks (L,) bool, ``labels`` (L, 2)."""
        epoch = index // len(self.items)
        ci, start, stop = self.window(index)
        h5, d = self._h5(self.clips[ci].path), self._datasets(self.clips[ci].path)
        L = stop - start
        item = {"clip": ci, "start": start, "audio_mean": self.mean, "audio_std": self.std}
        where = self.clips[ci].path
        if self.vi_mean.size:  # only for a model that reads video-side imports
            item["video_import"] = self._imports(d, "video", start, stop, where)
            item["video_import_mean"], item["video_import_std"] = self.vi_mean, self.vi_std
        if self.audio_dim and self.names[0] in d:
            # one contiguous row range per feature dataset (and the audio side's imports after them);
            # standardised on the device, for the whole batch
            rows = [d[k][start:stop] for k in self.names] + [self._imports(d, "audio", start, stop, where)]
            item["audio"] = np.concatenate(rows, axis=1)
            item["audio_mask"] = d["audio_mask"][start:stop]
            item["has_audio"] = True
        else:
            item["audio"] = np.zeros((L, self.audio_dim), np.float32)
            item["audio_mask"] = np.zeros(L, bool)
            item["has_audio"] = False
        s = self.video_size
        if self.use_video and "video_mask" in d:
            item["frames"], item["frame_file"] = self._frames(ci, h5, start, stop)
            item["video_mask"] = d["video_mask"][start:stop]
        else:
            item["frames"] = np.broadcast_to(np.zeros((1, s, s, 3), np.uint8), (L, s, s, 3))  # no bytes behind it
            item["frame_file"] = ""
            item["video_mask"] = np.zeros(L, bool)
        if "label_mask" in d:
            y = np.stack([d["valence"][start:stop], d["arousal"][start:stop]], axis=1)
            m = d["label_mask"][start:stop]
        else:
            y, m = np.zeros((L, 2), np.float32), np.zeros(L, bool)
        item["labels"] = np.nan_to_num(y, nan=0.0).astype(np.float32, copy=False)
        item["label_mask"] = m & np.isfinite(y).all(axis=1)
        if self.augment is not None:
            rng = np.random.default_rng([self.seed, epoch, index % len(self), 1])
            item["aug"] = _augment(item, self.augment, rng)
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
    """Draw one training window's augmentation: numbers (and the audio's noise, (L, D) float32) that
    ``augment_batch`` applies to the whole batch on the training device; nothing is applied here (a window's
    frames are ~9 MB: float work on them per window was what the GPU waited for).

    The draws are made in the same order from the same generator as when the loader applied them, so the
    distribution of every parameter, and its reproducibility by seed, epoch and item, are unchanged."""
    s = item["frames"].shape[1]
    aug = {"video": bool(item["video_mask"].any()), "crop": (s, 0, 0), "flip": False, "jitter": (1.0, 1.0, 1.0),
           "time_masks": [(0, 0)] * a.time_masks, "freq_masks": [(0, 0)] * a.freq_masks, "noise": None,
           "stretch": 1.0}  # fmt: skip
    if aug["video"]:
        if a.crop < 1:
            c = int(round(s * rng.uniform(a.crop, 1.0)))
            y0, x0 = rng.integers(0, s - c + 1, size=2)
            aug["crop"] = (c, int(y0), int(x0))
        aug["flip"] = bool(rng.random() < a.flip)
        if a.jitter > 0:
            aug["jitter"] = tuple(float(v) for v in rng.uniform(1 - a.jitter, 1 + a.jitter, size=3))  # b, con, sat
    L, D = item["audio"].shape
    if D and item["audio_mask"].any():
        for k in range(a.time_masks):  # (start row, rows) of each span zeroed
            w = int(rng.integers(0, a.time_mask_len + 1))
            aug["time_masks"][k] = (int(rng.integers(0, max(1, L - w))), w)
        for k in range(a.freq_masks):  # (first dimension, dimensions) of each band zeroed
            w = int(rng.integers(0, min(a.freq_mask_len, D) + 1))
            aug["freq_masks"][k] = (int(rng.integers(0, max(1, D - w))), w)
        if a.noise > 0:
            aug["noise"] = rng.normal(0, a.noise, (L, D)).astype(np.float32)
    if a.stretch > 0 and L > 1:
        aug["stretch"] = float(rng.uniform(1 - a.stretch, 1 + a.stretch))
    return aug


def augment_batch(b: dict[str, torch.Tensor], max_len: int) -> dict[str, torch.Tensor]:
    """Apply the augmentation drawn by ``_augment`` to a collated batch on its device, all windows at once.
    ``b`` as ``to_device`` gives it: ``frames`` (B, T, S, S, 3) float in [0, 1], ``audio`` (B, T, D) standardised.

    Per window, as the per-window code did: the audio's time and feature-band masks (zeros), then its noise; a
    crop of c x c pixels at (y0, x0) resized back to S x S (bilinear, rounded to a grey level), a horizontal flip,
    then saturation, contrast (around the window's mean) and brightness (truncated to a grey level), on windows
    with video only; then every stream resampled on one time axis ``factor`` times slower (linear for features and
    labels, nearest for frames and masks), cut to ``max_len`` rows. Returns a new batch dict (T may change;
    ``pad_mask`` says which rows are real).
    """
    frames, pad = b["frames"], b["pad_mask"]
    B, T, S = frames.shape[:3]
    b = dict(b, audio=_audio_masks(b))
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
    if "video_import" in b:  # linear, as the audio features (a presence column between 0 and 1 reads as present)
        vi = b["video_import"]
        out["video_import"] = vi[bi, lo] * (1 - wgt.to(vi.dtype)) + vi[bi, hi] * wgt.to(vi.dtype)
    out["labels"] = b["labels"][bi, lo] * (1 - wgt) + b["labels"][bi, hi] * wgt
    out["label_mask"] = b["label_mask"][bi, lo] & b["label_mask"][bi, hi]
    out["frames"] = frames[bi, near]
    out["audio_mask"], out["video_mask"] = b["audio_mask"][bi, near], b["video_mask"][bi, near]
    out["pad_mask"] = t[None] < n[:, None]
    for k in ("audio", "labels", "frames", "video_import"):
        if k not in out:
            continue
        keep = out["pad_mask"].view(B, T2, *([1] * (out[k].dim() - 2)))
        out[k] = torch.where(keep, out[k], torch.zeros((), dtype=out[k].dtype, device=out[k].device))
    for k in ("label_mask", "audio_mask", "video_mask"):
        out[k] = out[k] & out["pad_mask"]
    return out


def _audio_masks(b: dict[str, torch.Tensor]) -> torch.Tensor:
    """The batch's standardised audio (B, T, D) with each window's time and feature-band masks zeroed (spans
    ``aug_time_masks`` (B, K, 2) and ``aug_freq_masks`` (B, K', 2) of (start, length)) and its noise added."""
    x = b["audio"]
    rows = torch.arange(x.shape[1], device=x.device)
    dims = torch.arange(x.shape[2], device=x.device)

    def covered(idx: torch.Tensor, spans: torch.Tensor) -> torch.Tensor:  # (B, n): idx inside any span
        lo, n = spans[..., 0:1], spans[..., 1:2]  # (B, K, 1)
        return ((idx >= lo) & (idx < lo + n)).any(dim=1)

    zero = covered(rows, b["aug_time_masks"])[:, :, None] | covered(dims, b["aug_freq_masks"])[:, None, :]
    return x.masked_fill(zero, 0.0) + b["aug_noise"]


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


# What collate copies from every window besides the frames, and as what.
STREAMS = {"audio": torch.float32, "labels": torch.float32, "audio_mask": torch.bool, "video_mask": torch.bool,
           "label_mask": torch.bool}  # fmt: skip


def _empty(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """An uninitialised tensor; in a DataLoader worker, in shared memory from the start (as torch's own collate
    does), so that handing the batch to the training process copies nothing more."""
    if torch.utils.data.get_worker_info() is None:
        return torch.empty(shape, dtype=dtype)
    storage = torch.UntypedStorage._new_shared(math.prod(shape) * dtype.itemsize)
    return torch.empty(0, dtype=dtype).set_(storage).view(shape)


def _fill(dst: np.ndarray, windows: list[np.ndarray | None], lengths: list[int]) -> None:
    """dst[i, :n] = windows[i] (zeros for None), dst[i, n:] = 0: one copy per window, padding zeroed."""
    for i, (w, n) in enumerate(zip(windows, lengths, strict=True)):
        if w is None:
            dst[i, :n] = 0
        else:
            dst[i, :n] = w
        dst[i, n:] = 0


def collate(items: list[dict], *, defer_frames: bool = False) -> dict:
    """Pad a list of windows to the longest: tensors (B, T, ...) plus ``pad_mask`` (B, T) True where real,
    ``has_audio`` (B,), the feature statistics ``audio_mean`` / ``audio_std`` (D,) for ``to_device``, and the
    augmentation drawn for each window (``aug_*``, applied by ``augment_batch``).

    Each stream is copied once, straight from the window (frames from a view of the cache's memory map) into the
    batch, in shared memory inside a DataLoader worker. With ``defer_frames`` and every window's frames in the
    frame cache (or absent), the frames are not copied here: ``frame_src`` lists (cache file, start, rows) per
    window for ``WindowLoader`` to copy in the training process."""
    B, T = len(items), max(len(it["audio"]) for it in items)
    lengths = [len(it["audio"]) for it in items]
    first = items[0]
    out: dict = {k: _empty((B, T, *first[k].shape[1:]), dtype) for k, dtype in STREAMS.items()}
    for k in STREAMS:
        _fill(out[k].numpy(), [it[k] for it in items], lengths)
    out["pad_mask"] = torch.arange(T)[None] < torch.tensor(lengths)[:, None]
    out["has_audio"] = torch.tensor([bool(it["has_audio"]) for it in items])
    out["audio_mean"] = torch.from_numpy(np.array(first["audio_mean"], np.float32))
    out["audio_std"] = torch.from_numpy(np.array(first["audio_std"], np.float32))
    if "video_import" in first:  # a model that reads video-side imports: copied as the other streams
        out["video_import"] = _empty((B, T, first["video_import"].shape[1]), torch.float32)
        _fill(out["video_import"].numpy(), [it["video_import"] for it in items], lengths)
        out["video_import_mean"] = torch.from_numpy(np.array(first["video_import_mean"], np.float32))
        out["video_import_std"] = torch.from_numpy(np.array(first["video_import_std"], np.float32))
    out["clip"] = torch.tensor([it["clip"] for it in items])
    out["start"] = torch.tensor([it["start"] for it in items])
    if defer_frames and all(it.get("frame_file") is not None for it in items):
        out["frame_src"] = [(it["frame_file"], it["start"], n) for it, n in zip(items, lengths, strict=True)]
    else:
        out["frames"] = _empty((B, T, *first["frames"].shape[1:]), torch.uint8)
        _fill(out["frames"].numpy(), [it["frames"] for it in items], lengths)
    if "aug" in first:  # the augmentation drawn for each window, applied on the device (augment_batch)
        augs = [it["aug"] for it in items]
        out["aug_video"] = torch.tensor([a["video"] for a in augs])
        out["aug_crop"] = torch.tensor([a["crop"] for a in augs], dtype=torch.long)
        out["aug_flip"] = torch.tensor([a["flip"] for a in augs])
        out["aug_jitter"] = torch.tensor([a["jitter"] for a in augs], dtype=torch.float32)
        for k in ("time_masks", "freq_masks"):  # (B, K, 2): start, length of each span
            out[f"aug_{k}"] = torch.tensor([a[k] for a in augs], dtype=torch.long).reshape(B, len(augs[0][k]), 2)
        out["aug_noise"] = _empty((B, T, out["audio"].shape[2]), torch.float32)
        _fill(out["aug_noise"].numpy(), [a["noise"] for a in augs], lengths)
        out["aug_stretch"] = torch.tensor([a["stretch"] for a in augs], dtype=torch.float64)
    return out


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """Move a batch to ``device`` and finish it there, on the whole batch at once: frames become float in [0, 1]
    after the (4x smaller) uint8 transfer; audio features are standardised with ``audio_mean`` / ``audio_std``
    (zero on padding and in windows without audio, as the model expects), the video-side imports with
    ``video_import_mean`` / ``_std`` (zero on padding; masked rows hold the mean, so they are zero too)."""
    out = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
    out["frames"] = out["frames"].float().div_(255.0)
    keep = (out["pad_mask"] & out["has_audio"][:, None])[..., None]
    z = (out["audio"] - out["audio_mean"]) / out["audio_std"]
    out["audio"] = torch.where(keep, z, torch.zeros((), dtype=z.dtype, device=z.device))
    if "video_import" in out:
        vi = (out["video_import"] - out["video_import_mean"]) / out["video_import_std"]
        zero = torch.zeros((), dtype=vi.dtype, device=vi.device)
        out["video_import"] = torch.where(out["pad_mask"][..., None], vi, zero)
    return out


_use_count = getattr(torch._C, "_storage_Use_Count", None)  # None: buffers are never reused (always correct)


class WindowLoader:
    """The DataLoader of a ``ShardDataset`` whose frames take one copy, from the frame cache's memory maps into a
    reused batch buffer (pinned when ``pin_device`` is a CUDA device), made in this process.

    The workers read each window's HDF5 rows (audio features, masks, labels) and draw its augmentation; for the
    frames of cached clips their batch only names the file and rows (``frame_src``). Carrying 75 MB of frames a
    batch through shared memory cost more than the copy: the worker writes into fresh pages the kernel must fault
    in and zero, for every batch (benchmarks/train.py and docs/benchmarks.md have the figures). Here, with
    workers, a thread copies the next batches' frames while the training step runs (the copy releases the GIL).

    A CPU buffer is reused only once nothing else holds it (a batch kept by the caller keeps its own); pinned
    buffers come from CUDA's caching host allocator, which reuses a block once its copies to the device are done.
    Without the frame cache the workers copy the frames into the batch themselves (``collate``).
    """

    def __init__(
        self,
        dataset: ShardDataset,
        *,
        batch_size: int,
        sampler: torch.utils.data.Sampler,
        workers: int = 0,
        pin_device: torch.device | None = None,
        prefetch_factor: int = 2,
    ) -> None:
        """``workers`` DataLoader processes (spawned, persistent: no HDF5 handle or thread crosses a fork; 0:
        everything in this process); ``pin_device``: the CUDA device the batches go to (pinned memory), None on
        the CPU; ``prefetch_factor`` batches in flight per worker."""
        self.loader = DataLoader(
            dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
            collate_fn=partial(collate, defer_frames=True), persistent_workers=workers > 0,
            multiprocessing_context="spawn" if workers > 0 else None,
            prefetch_factor=prefetch_factor if workers > 0 else None,
        )  # fmt: skip
        self.pin_device = pin_device if pin_device is not None and pin_device.type == "cuda" else None
        self.pin, self.workers = self.pin_device is not None, workers
        self.frame_shape = (dataset.video_size, dataset.video_size, 3)
        self.capacity = batch_size * dataset.max_len * math.prod(self.frame_shape)  # bytes of the largest batch
        self._maps: dict[str, np.ndarray] = {}
        self._pool: list[tuple[torch.Tensor, int]] = []  # (buffer, its use count when nothing else holds it)

    @property
    def sampler(self) -> torch.utils.data.Sampler:
        return self.loader.sampler

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        if self.workers == 0:
            return (self._finish(b) for b in self.loader)
        return self._threaded()

    def _buffer(self, shape: tuple[int, ...]) -> torch.Tensor:
        """An uninitialised uint8 tensor of ``shape`` (contiguous): a free pooled buffer when there is one."""
        n = math.prod(shape)
        if self.pin:
            return torch.empty(shape, dtype=torch.uint8, pin_memory=True)
        for buf, idle in self._pool:
            if buf.numel() >= n and _use_count(buf.untyped_storage()._cdata) <= idle:
                return buf[:n].view(shape)
        buf = torch.empty(max(n, self.capacity), dtype=torch.uint8)
        if _use_count is not None and len(self._pool) < POOLED_BUFFERS:
            self._pool.append((buf, _use_count(buf.untyped_storage()._cdata)))
        return buf[:n].view(shape)

    def _rows(self, path: str) -> torch.Tensor:
        """The whole cache file as a (rows, S, S, 3) uint8 tensor over its memory map (one map per file)."""
        m = self._maps.get(path)
        if m is None:  # copy-on-write: writable for torch, never written, pages shared with the page cache
            m = self._maps[path] = np.load(path, mmap_mode="c")
        return torch.from_numpy(m)

    def _finish(self, batch: dict) -> dict[str, torch.Tensor]:
        """Copy the frames a worker named into a batch buffer (windows of one clip in file order); pin on CUDA."""
        src = batch.pop("frame_src", None)
        if src is not None:
            B, T = batch["pad_mask"].shape
            frames = self._buffer((B, T, *self.frame_shape))
            for i in sorted(range(B), key=lambda i: src[i][:2]):
                path, start, n = src[i]
                if path:
                    frames[i, :n].copy_(self._rows(path)[start : start + n])
                else:
                    frames[i, :n].zero_()
                frames[i, n:].zero_()
            batch["frames"] = frames
        if self.pin:
            batch = {k: v if v.is_pinned() else v.pin_memory() for k, v in batch.items()}
        return batch

    def _threaded(self) -> Iterator[dict[str, torch.Tensor]]:
        """Batches from the workers, finished (``_finish``) in a thread up to PREFETCHED batches ahead."""
        it = iter(self.loader)  # made here: the DataLoader sets its signal handlers in the main thread
        ready: queue.Queue = queue.Queue(maxsize=PREFETCHED)
        stop = threading.Event()

        def put(msg: tuple) -> None:
            while not stop.is_set():
                try:
                    ready.put(msg, timeout=0.1)
                    return
                except queue.Full:
                    continue

        def run() -> None:
            torch.set_num_threads(1)  # per thread: the copy does not compete with the step's threads
            if self.pin_device is not None:  # pin for this rank's GPU (no CUDA context made on GPU 0 by every rank)
                torch.cuda.set_device(self.pin_device)
            try:
                for b in it:
                    put(("batch", self._finish(b)))
                    if stop.is_set():
                        return
                put(("end", None))
            except BaseException as e:  # handed to the consumer, raised there
                put(("error", e))

        worker = threading.Thread(target=run, name="mmemo-frames", daemon=True)
        worker.start()
        try:
            while True:
                kind, value = ready.get()
                if kind == "end":
                    return
                if kind == "error":
                    raise _unwrapped(value) from None
                yield value
        finally:
            stop.set()
            worker.join()


def _unwrapped(e: BaseException) -> BaseException:
    """A worker's mmemo error as its own one line: PyTorch re-raises it in the caller as the same class with the
    worker's whole traceback for a message ("Caught SchemaError in DataLoader worker process 0. Original
    Traceback ... mmemo.errors.SchemaError: <message>"); a user is owed only the message."""
    text = str(e)
    if not isinstance(e, MmemoError) or "Original Traceback" not in text:
        return e
    last = [ln for ln in text.splitlines() if ln.strip()][-1]
    prefix = f"{type(e).__module__}.{type(e).__qualname__}: "
    return type(e)(last[len(prefix) :] if last.startswith(prefix) else last)


POOLED_BUFFERS = 4  # CPU frame buffers kept for reuse: the one being filled, PREFETCHED ready, one in the step
PREFETCHED = 2  # batches finished ahead of the training step
