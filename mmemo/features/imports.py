"""Per-frame features a user brings (``mmemo extract --import NAME=DIR``): OpenFace 2.0 outputs or any table of
values with a timestamp column, one file per clip, put on the 25 fps grid and stored as a feature stream.

Files (one per clip, found as ``DIR/<clip id>.csv|.npy``, else ``DIR/<file stem>.csv|.npy``, as OpenFace names its
output after the video):

- **OpenFace 2.0** (``FeatureExtraction`` / ``FaceLandmarkVidMulti`` CSV; recognised by its ``frame, face_id,
  timestamp, confidence, success`` columns, spaces after the commas allowed): the action units (``AU*_r``
  intensities, ``AU*_c`` presences), the gaze (``gaze_*``) and the head pose (``pose_*``) are taken, not the
  landmark coordinates (positions in the picture, not expressions). ``success = 0`` rows are masked. Where several
  faces share a frame (``FaceLandmarkVidMulti``), the row with the lowest ``face_id`` is used.
- **CSV**: a header, a ``timestamp`` (or ``time``) column in seconds, every other numeric column a feature
  (``frame``, ``face_id``, ``confidence`` and ``success`` are read as OpenFace's when present).
- **NPY**: a 2-D float array, column 0 the timestamp in seconds, the other columns the features (``c1``, ``c2``...).

Grid rule (as video frames): row ``t`` (the instant ``t / fps``) takes the file's row *on screen* then: the last one
whose timestamp is at or before ``t / fps``, shown until the next one, and the last row for one usual step (the
median of the timestamp steps). Rows before the first timestamp, after the last row's step, inside a gap of more
than ``GAP_STEPS`` usual steps (no row there: the file does not say), on a ``success = 0`` row or on a row with a
missing value are masked: their values are NaN, never a number made up. A clip without a file gets the whole
stream masked and a note, not an error; a malformed file fails its clip with one line naming the file and line.
"""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mmemo.errors import ConfigError, MediaError

SIDES = ("audio", "video")
GAP_STEPS = 2.5  # timestamps further apart than this many usual steps leave the time between them masked
_EPS = 1e-6  # seconds: a timestamp written with fewer decimals than the grid time still counts as on screen
_OPENFACE = ("frame", "face_id", "timestamp", "confidence", "success")
_OPENFACE_KEEP = re.compile(r"^(AU\d+_[rc]|gaze_.*|pose_.*)$")
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")


@dataclass(frozen=True)
class ImportSpec:
    """One ``--import NAME[:SIDE]=DIR``: the stream's name, the branch it feeds and where its files are."""

    name: str
    side: str
    directory: Path

    @staticmethod
    def parse(text: str, *, files: bool = False) -> ImportSpec:
        """``NAME=DIR`` (video side) or ``NAME:audio=DIR`` / ``NAME:video=DIR``; a ConfigError naming the problem.

        ``files``: a ``.csv`` / ``.npy`` file may stand for the directory (`mmemo predict --import NAME=FILE`: one
        clip's own file, whatever its name); ``file_for`` then gives that file."""
        if "=" not in text:
            raise ConfigError(f"--import {text!r}: expected NAME=DIR or NAME:SIDE=DIR (SIDE audio or video)")
        head, directory = text.split("=", 1)
        name, _, side = head.partition(":")
        side = side or "video"
        if not _NAME.match(name):
            raise ConfigError(f"--import {text!r}: the name {name!r} must start with a letter (letters, digits, _ -)")
        if side not in SIDES:
            raise ConfigError(f"--import {text!r}: side {side!r} is not audio or video")
        path = Path(directory).expanduser()
        if files and path.is_file():
            if path.suffix.lower() not in (".csv", ".npy"):
                raise ConfigError(f"--import {text!r}: {path} is not a .csv or .npy file")
            return ImportSpec(name, side, path.resolve())
        if not path.is_dir():
            raise ConfigError(f"--import {text!r}: {path} is not a {'file or ' if files else ''}directory")
        return ImportSpec(name, side, path.resolve())

    @property
    def is_file(self) -> bool:
        """The spec names one clip's file rather than a directory of them (``parse(files=True)``)."""
        return self.directory.is_file()

    def file_for(self, clip_id: str, stem: str) -> Path | None:
        """The clip's file (``<clip id>`` first, then the media file's stem), or None; two candidates of one name
        (``.csv`` and ``.npy``) are a ConfigError naming both. A spec naming a file gives that file."""
        if self.is_file:
            return self.directory
        for base in dict.fromkeys((clip_id, stem)):
            found = [p for p in (self.directory / f"{base}.csv", self.directory / f"{base}.npy") if p.is_file()]
            if len(found) > 1:
                raise ConfigError(f"{found[0]} and {found[1]}: two files for import {self.name!r}; keep one")
            if found:
                return found[0]
        return None


@dataclass
class ImportStream:
    """One clip's import on the grid: ``values (T, D) float32`` (NaN where masked), ``mask (T,) bool``."""

    values: np.ndarray
    mask: np.ndarray
    columns: list[str]
    kind: str  # "openface", "csv" or "npy"
    notes: list[str]
    file: Path  # the file read


def read_table(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str], str]:
    """(timestamps (N,), values (N, D), usable (N,) bool, columns, kind) of one import file, rows sorted by time
    (one row per timestamp). Raises MediaError ``path:line: ...`` for a malformed file."""
    if path.suffix.lower() == ".npy":
        return _read_npy(path)
    return _read_csv(path)


def _read_npy(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str], str]:
    try:
        a = np.load(path, allow_pickle=False)  # never unpickle what a user hands over
    except (ValueError, OSError) as e:
        raise MediaError(f"{path}: not a readable .npy array ({e})") from None
    if a.ndim != 2 or a.shape[1] < 2 or not np.issubdtype(a.dtype, np.number):
        raise MediaError(f"{path}: expected a 2-D numeric array (timestamp, features...), got {a.dtype} {a.shape}")
    a = a.astype(np.float64)
    t, values = a[:, 0], a[:, 1:]
    if not np.isfinite(t).all():
        raise MediaError(f"{path}: row {int(np.flatnonzero(~np.isfinite(t))[0])}: the timestamp is not a number")
    cols = [f"c{i + 1}" for i in range(values.shape[1])]
    return (*_sorted_unique(path, t, values, np.ones(len(t), bool), np.zeros(len(t)), lines=None), cols, "npy")


def _read_csv(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str], str]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError) as e:
        raise MediaError(f"{path}: not a readable CSV file ({e})") from None
    if not rows:
        raise MediaError(f"{path}:1: empty file, expected a header with a timestamp column")
    header = [c.strip() for c in rows[0]]
    lower = [c.lower() for c in header]
    openface = all(c in lower for c in _OPENFACE)
    time_col = next((lower.index(c) for c in ("timestamp", "time") if c in lower), None)
    if time_col is None:
        raise MediaError(f"{path}:1: no timestamp (or time) column in the header")
    skip = {time_col} | {lower.index(c) for c in _OPENFACE if c in lower}
    if openface:
        keep = [i for i, c in enumerate(header) if i not in skip and _OPENFACE_KEEP.match(c)]
    else:
        keep = [i for i in range(len(header)) if i not in skip]
    if not keep:
        raise MediaError(f"{path}:1: no feature column (OpenFace: AU*_r, AU*_c, gaze_*, pose_*)")
    success = lower.index("success") if "success" in lower else None
    face = lower.index("face_id") if "face_id" in lower else None
    n = len(rows) - 1
    t, values = np.empty(n), np.empty((n, len(keep)))
    ok, faces, lines = np.ones(n, bool), np.zeros(n), np.arange(2, n + 2)
    for r, row in enumerate(rows[1:]):
        line = r + 2
        if len(row) != len(header):
            raise MediaError(f"{path}:{line}: {len(row)} fields where the header has {len(header)}")
        t[r] = _number(path, line, header[time_col], row[time_col], allow_missing=False)
        values[r] = [_number(path, line, header[i], row[i]) for i in keep]
        if success is not None:
            ok[r] = _number(path, line, header[success], row[success], allow_missing=False) != 0
        if face is not None:
            faces[r] = _number(path, line, header[face], row[face], allow_missing=False)
    cols = [header[i] for i in keep]
    return (*_sorted_unique(path, t, values, ok, faces, lines), cols, "openface" if openface else "csv")


def _number(path: Path, line: int, column: str, cell: str, allow_missing: bool = True) -> float:
    cell = cell.strip()
    if cell.lower() in ("", "nan", "na", "null") and allow_missing:
        return math.nan
    try:
        x = float(cell)
    except ValueError:
        raise MediaError(f"{path}:{line}: column {column} holds {cell!r}, not a number") from None
    if math.isinf(x) or (math.isnan(x) and not allow_missing):
        raise MediaError(f"{path}:{line}: column {column} holds {cell!r}, not a finite number")
    return x


def _sorted_unique(path, t, values, ok, faces, lines):
    """Rows by time; of rows sharing a timestamp (several faces in one frame) the lowest face id's."""
    if t.size and (np.diff(t) < 0).any():
        i = int(np.flatnonzero(np.diff(t) < 0)[0]) + 1
        where = f"{path}:{lines[i]}" if lines is not None else f"{path}: row {i}"
        raise MediaError(f"{where}: timestamp {t[i]:g} comes before the previous row's {t[i - 1]:g}")
    order = np.lexsort((faces, t))  # stable: by time, then face id
    t, values, ok = t[order], values[order], ok[order]
    first = np.ones(len(t), bool)
    first[1:] = t[1:] != t[:-1]
    return t[first], values[first], ok[first]


def to_grid(
    t: np.ndarray, values: np.ndarray, usable: np.ndarray, n_rows: int, fps: int
) -> tuple[np.ndarray, np.ndarray]:
    """(values (T, D) float32 NaN where masked, mask (T,)) for ``n_rows`` grid rows (module docstring's rule).

    t (N,) increasing seconds, values (N, D), usable (N,) bool (False: the file says the row is not valid)."""
    out = np.full((n_rows, values.shape[1]), np.nan, np.float32)
    mask = np.zeros(n_rows, bool)
    if t.size == 0 or n_rows == 0:
        return out, mask
    step = float(np.median(np.diff(t))) if t.size > 1 else 1.0 / fps
    grid = np.arange(n_rows) / fps
    idx = np.searchsorted(t, grid + _EPS, side="right") - 1  # the last row at or before each grid instant
    on = idx >= 0
    idx_c = np.clip(idx, 0, None)
    nxt = np.append(t[1:], t[-1] + step)  # when each row stops being on screen
    shown_until = np.where(nxt - t > GAP_STEPS * step, t + step, nxt)  # a gap: the row holds one step, then none
    on &= grid < shown_until[idx_c] - _EPS
    row_ok = usable & np.isfinite(values).all(axis=1)
    on &= row_ok[idx_c]
    out[on] = values[idx_c[on]]
    mask[:] = on
    return out, mask


def import_stream(path: Path | None, n_rows: int, fps: int, name: str) -> ImportStream | None:
    """The stream of import ``name`` from the clip's file ``path`` (``ImportSpec.file_for``) on ``n_rows`` grid
    rows, or None when the clip has no file (a note's job)."""
    if path is None:
        return None
    t, values, usable, cols, kind = read_table(path)
    out, mask = to_grid(t, values, usable, n_rows, fps)
    notes = []
    if not mask.any():
        notes.append(f"{path}: import {name}: no usable row on the clip's {n_rows} rows")
    return ImportStream(out, mask, cols, kind, notes, path)
