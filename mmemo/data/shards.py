"""Shard writer (atomic: ``*.partial`` then rename) and reader, following ``mmemo.data.schema``."""

from __future__ import annotations

import json
import os
import sys
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from mmemo import atomic
from mmemo.config import check_frame_codec
from mmemo.data import codecs
from mmemo.data import schema as S
from mmemo.errors import SchemaError

try:  # registers extra HDF5 filters (zstd) with HDF5 when installed, so shards written with them read back
    import hdf5plugin  # noqa: F401
except ImportError:  # pragma: no cover - optional
    pass

_MAX_PENDING_CHUNKS = 4  # frame blocks queued for the writer thread: bounds memory (4 x 16 rows x 147 kB)


class ShardWriter:
    """Writes one clip's shard under ``<path>.<pid>.partial`` and renames it to ``path`` only when complete.

    Use as a context manager: an exception inside the block deletes the partial file, so a failed clip never
    leaves a shard behind. The partial name carries the writer's process id, so two processes that write the same
    clip (a new run and an orphaned worker of a killed one) never touch each other's file; each deletes only its
    own. Frames are appended chunk by chunk (``append_frames``); their compression and writing
    run on a background thread (HDF5 filters release the GIL), so they overlap with decoding.
    """

    def __init__(self, path: str | os.PathLike, *, frame_size: int, codec: str = "lzf") -> None:
        self.path = Path(path)
        self._atomic = atomic.atomic_path(self.path, unique=True)  # readers see no shard or a whole one
        self.partial: Path | None = None
        self.frame_size = frame_size
        self.codec = check_frame_codec(codec)
        self.h5: h5py.File | None = None
        self.n_frames = 0
        self.n_faces = 0
        self._face_rows: list[tuple[np.ndarray, ...]] = []  # (mask, boxes, landmarks, scores) per face chunk
        self._pool: ThreadPoolExecutor | None = None
        self._pending: deque[Future] = deque()

    def __enter__(self) -> ShardWriter:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.partial = self._atomic.__enter__()
        self.h5 = h5py.File(self.partial, "w")
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mmemo-shard-writer")
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                self._write_face_rows()
                self._drain(0)  # a failed frame write surfaces here and fails the clip
        except BaseException:
            self._close()
            self._atomic.__exit__(*sys.exc_info())  # removes the partial file
            raise
        self._close()
        self._atomic.__exit__(exc_type, exc, tb)  # complete: renamed into place; failed: removed

    def _write_face_rows(self) -> None:
        """The face mask, boxes, landmarks and scores of every row appended, in one write each."""
        if not self._face_rows:
            return
        for i, name in enumerate((S.FACE_MASK, S.FACE_BOXES, S.FACE_LANDMARKS, S.FACE_SCORES)):
            data = np.concatenate([rows[i] for rows in self._face_rows])
            ds = self.h5[name]
            ds.resize(len(data), axis=0)
            ds[:] = data
        self._face_rows = []

    def _close(self) -> None:
        for f in self._pending:
            f.cancel()
        self._pool.shutdown(wait=True)
        self.h5.close()
        self.h5 = None

    def _drain(self, keep: int) -> None:
        while len(self._pending) > keep:
            self._pending.popleft().result()

    def append_frames(self, chunk: np.ndarray) -> None:
        """Append rows ``(n, S, S, 3)`` uint8 to the frames (written in the background)."""
        if chunk.dtype != np.uint8 or chunk.shape[1:] != (self.frame_size, self.frame_size, 3):
            raise ValueError(f"frame chunk {chunk.shape} {chunk.dtype} does not match the schema")
        if self.n_frames == 0:
            self._create_frames()
        self._pending.append(self._pool.submit(self._write_frames, self.n_frames, chunk))
        self.n_frames += len(chunk)
        self._drain(_MAX_PENDING_CHUNKS)

    def _create_frames(self) -> None:
        self._create_images(S.FRAMES, S.FRAMES_JPEG, self.frame_size)

    def _create_images(self, name: str, jpeg_name: str, s: int, options: dict | None = None) -> None:
        if codecs.is_jpeg(self.codec):
            self.h5.create_dataset(
                jpeg_name, shape=(0,), maxshape=(None,), dtype=h5py.vlen_dtype(np.uint8), chunks=(256,)
            )
        else:
            self.h5.create_dataset(
                name, shape=(0, s, s, 3), maxshape=(None, s, s, 3), dtype=np.uint8,
                chunks=(S.FRAME_CHUNK, s, s, 3), **(codecs.dataset_options(self.codec) if options is None else options),
            )  # fmt: skip

    def _write_frames(self, start: int, chunk: np.ndarray) -> None:
        self._write_images(S.FRAMES, S.FRAMES_JPEG, start, chunk)

    def _write_images(self, name: str, jpeg_name: str, start: int, chunk: np.ndarray) -> None:
        end = start + len(chunk)
        if codecs.is_jpeg(self.codec):
            blobs = codecs.encode_jpeg(chunk, codecs.jpeg_quality(self.codec))
            ds = self.h5[jpeg_name]
            ds.resize(end, axis=0)
            for i, b in enumerate(blobs):
                ds[start + i] = b
        else:
            ds = self.h5[name]
            ds.resize(end, axis=0)
            ds[start:end] = chunk

    def _write_crops(self, start: int, crops: np.ndarray, mask: np.ndarray) -> None:
        """Face crops at rows ``start..``: as the frames are, except that with the crops stored raw (the lzf
        default, ``codecs.crop_options``) rows without a face are not written: an HDF5 chunk none of whose rows has
        a face is never allocated (no space), and unwritten rows read back as the fill value, black, which is what
        a masked row holds anyway."""
        ds = self.h5.get(S.FACE_CROPS)
        if ds is None or ds.compression is not None:
            self._write_images(S.FACE_CROPS, S.FACE_CROPS_JPEG, start, crops)
            return
        end = start + len(crops)
        ds.resize(end, axis=0)
        run: list[int] | None = None  # [first, last + 1) rows of consecutive chunk parts with a face
        lo = start
        while lo < end:  # the part of each HDF5 chunk that this call covers
            hi = min(end, (lo // S.FRAME_CHUNK + 1) * S.FRAME_CHUNK)
            if mask[lo - start : hi - start].any():
                run = [run[0] if run else lo, hi]
            elif run:
                self._write_rows(ds, start, crops, *run)
                run = None
            lo = hi
        if run:
            self._write_rows(ds, start, crops, *run)

    @staticmethod
    def _write_rows(ds, start: int, rows: np.ndarray, lo: int, hi: int) -> None:
        ds[lo:hi] = rows[lo - start : hi - start]  # one h5py call per run: its cost is per call

    def append_faces(self, chunk) -> None:
        """Append a ``mmemo.features.clip.FaceChunk`` (its rows must follow the last ones written): the crops are
        written in the background like the frames (``_write_crops``), the per-row arrays at once."""
        n = len(chunk.mask)
        if S.FACES not in self.h5:
            self._create_images(S.FACE_CROPS, S.FACE_CROPS_JPEG, chunk.crops.shape[1], codecs.crop_options(self.codec))
            for name, shape, dtype in (
                (S.FACE_MASK, (), np.bool_),
                (S.FACE_BOXES, (4,), np.float32),
                (S.FACE_LANDMARKS, (5, 2), np.float32),
                (S.FACE_SCORES, (), np.float32),
            ):
                self.h5.create_dataset(name, shape=(0, *shape), maxshape=(None, *shape), dtype=dtype,
                                       chunks=(S.FEATURE_CHUNK, *shape))  # fmt: skip
        if chunk.start != self.n_faces:
            raise ValueError(f"face rows from {chunk.start} after {self.n_faces} rows written")
        # The per-row arrays are kept and written once when the shard is complete (a few bytes a row; h5py's cost
        # is per call, and the shard only exists once complete anyway).
        self._face_rows.append((chunk.mask, chunk.boxes, chunk.landmarks, chunk.scores))
        self._pending.append(self._pool.submit(self._write_crops, self.n_faces, chunk.crops, chunk.mask))
        self.n_faces += n
        self._drain(_MAX_PENDING_CHUNKS)

    def write_import(self, name: str, side: str, values: np.ndarray | None, mask: np.ndarray, columns: list[str],
                     kind: str, file: str) -> None:  # fmt: skip
        """One ``--import`` stream: values (T, D) float32 (NaN where masked; None for a clip without its file: a
        (T, 0) dataset) and mask (T,), with IMPORT_ATTRS."""
        T = len(mask)
        data = np.zeros((T, 0), np.float32) if values is None else np.asarray(values, np.float32)
        self.h5.create_dataset(S.import_values(name), data=data)
        self.h5.create_dataset(S.import_mask(name), data=np.asarray(mask, np.bool_))
        self.h5[f"{S.IMPORTS}/{name}"].attrs.update(
            {"side": side, "columns": json.dumps(list(columns)), "kind": kind, "file": file}
        )

    def append_rows(self, name: str, first_row: int, rows: np.ndarray) -> None:
        """Write rows ``(n, D)`` at ``first_row`` of a growing (T, D) dataset (the audio feature stream's sink)."""
        if name not in self.h5:
            self.h5.create_dataset(
                name, shape=(0, rows.shape[1]), maxshape=(None, rows.shape[1]), dtype=rows.dtype,
                chunks=(S.FEATURE_CHUNK, rows.shape[1]),
            )  # fmt: skip
        ds = self.h5[name]
        end = first_row + len(rows)
        if end > ds.shape[0]:
            ds.resize(end, axis=0)
        ds[first_row:end] = rows

    def truncate_rows(self, group: str, n_rows: int) -> None:
        """Cut every dataset of ``group`` to ``n_rows`` (rows computed past the clip's end are dropped)."""
        for ds in self.h5[group].values():
            if ds.shape[0] > n_rows:
                ds.resize(n_rows, axis=0)

    def write(self, name: str, data: np.ndarray, dtype: type | None = None) -> None:
        data = np.asarray(data, dtype=dtype)
        self.h5.create_dataset(name, data=data, chunks=True if data.ndim and data.size else None)

    def set_group_attrs(self, group: str, attrs: dict) -> None:
        """Attributes of ``group`` (the /faces summary), typed by the schema's FACE_ATTRS."""
        g = self.h5.require_group(group)
        for k, v in attrs.items():
            g.attrs[k] = S.FACE_ATTRS[k](v)

    def set_attrs(self, root: dict, meta: dict) -> None:
        for k, v in root.items():
            self.h5.attrs[k] = (S.ROOT_ATTRS.get(k) or S.OPTIONAL_ROOT_ATTRS[k])(v)
        g = self.h5.require_group(S.META)
        for k, v in meta.items():
            g.attrs[k] = S.META_ATTRS[k](v)


@dataclass
class ClipData:
    """One clip read back from its shard; arrays are (T, ...) along time."""

    attrs: dict
    meta: dict
    timestamps: np.ndarray  # (T,)
    features: dict[str, np.ndarray] = field(default_factory=dict)  # name -> (T, D)
    audio_mask: np.ndarray | None = None  # (T,)
    frames: np.ndarray | None = None  # (T, S, S, 3) uint8 (only when asked for)
    video_mask: np.ndarray | None = None  # (T,)
    source_time: np.ndarray | None = None  # (T,)
    valence: np.ndarray | None = None  # (T,)
    arousal: np.ndarray | None = None  # (T,)
    label_mask: np.ndarray | None = None  # (T,)
    faces: np.ndarray | None = None  # (T, F, F, 3) uint8 aligned face crops (only when frames are asked for)
    face_mask: np.ndarray | None = None  # (T,) bool; None: the shard holds no faces
    face_boxes: np.ndarray | None = None  # (T, 4)
    face_landmarks: np.ndarray | None = None  # (T, 5, 2)
    face_scores: np.ndarray | None = None  # (T,)
    # --import streams: name -> (values (T, D) float32 NaN where masked ((T, 0) without a file), mask (T,) bool)
    imports: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    import_columns: dict[str, list[str]] = field(default_factory=dict)  # name -> its columns ([] without a file)

    @property
    def clip_id(self) -> str:
        return self.attrs["clip_id"]

    @property
    def n_frames(self) -> int:
        return int(self.attrs["n_frames"])

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(m for m in self.attrs["modalities"].split(",") if m)

    @property
    def feature_config(self) -> dict:
        return json.loads(self.meta["feature_config"])


def _attr(v):
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, np.generic):
        return v.item()
    return v


def open_shard(path: str | os.PathLike) -> h5py.File:
    """Open a shard read-only, refusing one written under another schema version with one clear line."""
    path = Path(path)
    if not path.is_file():
        raise SchemaError(f"{path}: shard missing; run `mmemo extract` again")
    try:
        h5 = h5py.File(path, "r")
    except OSError as e:
        raise SchemaError(f"{path}: not a readable HDF5 shard ({e})") from None
    version = h5.attrs.get("schema_version")
    if version not in S.READABLE_VERSIONS:
        h5.close()
        raise SchemaError(f"{path}: shard schema version {version} is not {S.SCHEMA_VERSION}; re-run `mmemo extract`")
    return h5


def read_attrs(path: str | os.PathLike) -> dict:
    """The root attributes of a shard (cheap: no dataset is read)."""
    with open_shard(path) as h5:
        return {k: _attr(v) for k, v in h5.attrs.items()}


def read_frames(h5: h5py.File, start: int = 0, stop: int | None = None) -> np.ndarray:
    """Rows ``[start, stop)`` of a shard's frames as (n, S, S, 3) uint8, whatever codec stored them."""
    if S.FRAMES in h5:
        return h5[S.FRAMES][start:stop]
    ds = h5[S.FRAMES_JPEG]
    size = int(json.loads(_attr(h5[S.META].attrs["feature_config"]))["frame_size"])
    return codecs.decode_jpeg(ds[start:stop], size)


def has_faces(h5: h5py.File) -> bool:
    """Whether the shard holds faces (extracted with faces on, and the clip has video)."""
    return S.FACES in h5


def face_rows(h5: h5py.File) -> tuple[int, int] | None:
    """(video rows with a face, video rows) of a shard; None when it holds no faces (no video, extracted with
    --faces off, or a version-1 shard). A face outside the video rows cannot be (no picture, no detection): the
    count is of both masks together anyway, so a share never exceeds 1."""
    if S.VIDEO not in h5 or not has_faces(h5) or S.FACE_MASK not in h5:
        return None
    video = h5[S.VIDEO_MASK][()]
    return int((h5[S.FACE_MASK][()] & video).sum()), int(video.sum())


def import_names(h5: h5py.File) -> list[str]:
    """The shard's ``--import`` streams, in name order."""
    return sorted(h5[S.IMPORTS]) if S.IMPORTS in h5 else []


def read_import(h5: h5py.File, name: str, start: int = 0, stop: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Rows ``[start, stop)`` of an import's values (n, D) float32 (NaN where masked) and mask (n,) bool."""
    if S.import_mask(name) not in h5:
        raise SchemaError(f"{h5.filename}: no import {name!r} (extracted without --import {name}=DIR)")
    return h5[S.import_values(name)][start:stop], h5[S.import_mask(name)][start:stop]


def import_columns(h5: h5py.File, name: str) -> list[str]:
    """The feature columns of import ``name`` in this shard (empty for a clip that had no file for it)."""
    return list(json.loads(_attr(h5[f"{S.IMPORTS}/{name}"].attrs.get("columns", "[]"))))


def read_faces(h5: h5py.File, start: int = 0, stop: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Rows ``[start, stop)`` of a shard's face crops (n, F, F, 3) uint8 and mask (n,) bool (black where False)."""
    mask = h5[S.FACE_MASK][start:stop]
    if S.FACE_CROPS in h5:
        return h5[S.FACE_CROPS][start:stop], mask
    return codecs.decode_jpeg(h5[S.FACE_CROPS_JPEG][start:stop], int(h5[S.FACES].attrs["size"])), mask


def read_clip(path: str | os.PathLike, *, frames: bool = True) -> ClipData:
    """Read a whole clip back (frames only when ``frames``; they are the large part)."""
    with open_shard(path) as h5:
        clip = ClipData(
            attrs={k: _attr(v) for k, v in h5.attrs.items()},
            meta={k: _attr(v) for k, v in h5[S.META].attrs.items()},
            timestamps=h5[S.TIMESTAMPS][()],
        )
        if S.AUDIO in h5:
            clip.features = {name: ds[()] for name, ds in h5[S.AUDIO_FEATURES].items()}
            clip.audio_mask = h5[S.AUDIO_MASK][()]
        if S.VIDEO in h5:
            clip.video_mask = h5[S.VIDEO_MASK][()]
            clip.source_time = h5[S.SOURCE_TIME][()]
            if frames:
                clip.frames = read_frames(h5)
        if has_faces(h5):
            clip.face_mask, clip.face_scores = h5[S.FACE_MASK][()], h5[S.FACE_SCORES][()]
            clip.face_boxes, clip.face_landmarks = h5[S.FACE_BOXES][()], h5[S.FACE_LANDMARKS][()]
            if frames:
                clip.faces = read_faces(h5)[0]
        if S.LABELS in h5:
            clip.valence, clip.arousal = h5[S.VALENCE][()], h5[S.AROUSAL][()]
            clip.label_mask = h5[S.LABEL_MASK][()]
        for name in import_names(h5):
            clip.imports[name] = read_import(h5, name)
            clip.import_columns[name] = import_columns(h5, name)
    return clip


def validate_shard(path: str | os.PathLike) -> list[str]:
    """Problems found in one shard against the schema (empty when it is sound). Reads every dataset."""
    path = Path(path)
    try:
        h5 = open_shard(path)
    except SchemaError as e:
        return [str(e)]
    problems: list[str] = []
    with h5:
        for k in S.ROOT_ATTRS:
            if k not in h5.attrs:
                problems.append(f"{path}: missing attribute {k}")
        if problems:
            return problems
        T = int(h5.attrs["n_frames"])
        mods = set(filter(None, str(_attr(h5.attrs["modalities"])).split(",")))
        for name, dtype in S.PER_ROW.items():
            group = name.split("/")[0] if "/" in name else None
            if group is not None and group not in h5:
                continue  # an absent modality or unlabelled clip
            if name not in h5:
                problems.append(f"{path}: missing dataset /{name}")
                continue
            ds = h5[name]
            if ds.shape != (T,) or ds.dtype != dtype:
                problems.append(f"{path}: /{name} is {ds.shape} {ds.dtype}, expected ({T},) {np.dtype(dtype)}")
        for mod in ("audio", "video"):
            if (mod in mods) != (mod in h5):
                state = "present" if mod in h5 else "absent"
                problems.append(f"{path}: modalities say {sorted(mods)} but /{mod} is {state}")
        if S.VIDEO in h5:
            problems += _check_frames(h5, path, T)
        if S.FACES in h5:
            problems += _check_faces(h5, path, T)
        if S.AUDIO in h5:
            config = json.loads(_attr(h5[S.META].attrs.get("feature_config", "{}")))
            expected = set(config.get("features", []))
            got = set(h5[S.AUDIO_FEATURES].keys())
            if expected and got != expected:
                problems.append(f"{path}: features {sorted(got)} differ from the configuration's {sorted(expected)}")
            for name, ds in h5[S.AUDIO_FEATURES].items():
                x = ds[()]
                if x.ndim != 2 or x.shape[0] != T or x.dtype != np.float32:
                    problems.append(f"{path}: feature {name} is {x.shape} {x.dtype}, expected ({T}, D) float32")
                elif not np.isfinite(x).all():
                    problems.append(f"{path}: feature {name} holds {int((~np.isfinite(x)).sum())} NaN/Inf values")
    return problems


def _check_frames(h5: h5py.File, path: Path, T: int) -> list[str]:
    """Shape, dtype and readability of the frames: every chunk is decompressed (or every JPEG decoded)."""
    if S.FRAMES not in h5 and S.FRAMES_JPEG not in h5:
        return [f"{path}: /video holds no frames"]
    n = h5[S.FRAMES].shape[0] if S.FRAMES in h5 else h5[S.FRAMES_JPEG].shape[0]
    if S.FRAMES in h5:
        ds = h5[S.FRAMES]
        if ds.ndim != 4 or ds.shape[3] != 3 or ds.dtype != np.uint8:
            return [f"{path}: /{S.FRAMES} is {ds.shape} {ds.dtype}, expected ({T}, S, S, 3) uint8"]
    if n != T:
        return [f"{path}: {n} frames for {T} rows"]
    return _unreadable(read_frames, h5, path, T, "frames")


def _unreadable(read, h5: h5py.File, path: Path, T: int, what: str) -> list[str]:
    """Read rows ``[0, T)`` with ``read(h5, start, stop)`` 256 at a time (every chunk decompressed, every JPEG
    decoded); one problem line at the first block that fails."""
    for i in range(0, T, 256):
        try:
            read(h5, i, min(T, i + 256))
        except (OSError, ValueError) as e:
            return [f"{path}: {what} unreadable near row {i} ({str(e).splitlines()[0]})"]
    return []


def _check_faces(h5: h5py.File, path: Path, T: int) -> list[str]:
    """Shapes of the face arrays, coordinates where (and only where) a face is, every crop chunk readable."""
    problems = []
    for name, shape in ((S.FACE_BOXES, (T, 4)), (S.FACE_LANDMARKS, (T, 5, 2))):
        if name not in h5 or h5[name].shape != shape:
            problems.append(f"{path}: /{name} is {h5[name].shape if name in h5 else 'missing'}, expected {shape}")
    crops = S.FACE_CROPS if S.FACE_CROPS in h5 else S.FACE_CROPS_JPEG
    if crops not in h5 or len(h5[crops]) != T:
        problems.append(f"{path}: /{crops} does not hold {T} rows")
    if problems or S.FACE_MASK not in h5:
        return problems
    mask = h5[S.FACE_MASK][()]
    boxes = h5[S.FACE_BOXES][()]
    if not np.isfinite(boxes[mask]).all() or np.isfinite(boxes[~mask]).any():
        problems.append(f"{path}: face boxes are not finite exactly where /faces/mask says a face is")
    return problems + _unreadable(read_faces, h5, path, T, "face crops")
