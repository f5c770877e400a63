"""Label tables in mmemo's generic layout, aligned to the frame grid.

Every corpus layout mmemo reads (``mmemo.data.layouts``) resolves to one gold-standard table in this layout, and
``mmemo extract`` writes that table to ``FEATURES_DIR/labels.csv``. Three kinds of CSV with a header row:

- per clip: ``clip,valence,arousal``: one row per clip; the values hold for every frame of the clip.
- time-continuous: ``clip,time,valence,arousal`` with ``time`` in seconds from the clip's start: each frame
  ``t`` gets the values *linearly interpolated* at its time ``t / fps``. Frames before the first or after the
  last annotated time of the clip are not extrapolated: they are masked (unlabelled). A missing value (empty
  cell / NaN) masks the frames whose interpolation would use it.
- per native frame: ``clip,frame,valence,arousal`` with ``frame`` the 0-based index of the clip's own video frame
  (Aff-Wild2 style). Row ``t`` gets the values of the source frame on screen at ``t / fps``
  (``DecodedMedia.source_index``); rows with no source frame, frames without a value and frames past the end of
  the table are masked, never filled.

``clip`` is the clip id (path relative to the corpus without suffix, ``/`` as separator); a media suffix in the
table (``speaker1/a.mp4``) is accepted and dropped. Extra columns are kept for later use (grouping). Values are in
[-1, 1]; what ``read_labels`` refuses is listed in its docstring.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from mmemo.errors import LabelError
from mmemo.media.files import MEDIA_SUFFIXES

DIMENSIONS = ("valence", "arousal")
LABELS_FILE = "labels.csv"  # the generic layout's table: looked for in a corpus, written into FEATURES_DIR
KINDS = ("clip", "continuous", "frames")
# A per-frame table may differ from the video's frame count by this much before it is worth a note: Aff-Wild2
# files are sometimes one frame longer or shorter than their video.
FRAME_COUNT_SLACK = 2
_MEDIA_SUFFIXES = set(MEDIA_SUFFIXES)  # all lower case


def normalise_clip_id(raw: str) -> str:
    """``a\\b.MP4`` / ``./a/b.mp4`` / ``a/b`` -> ``a/b``."""
    s = str(raw).strip().replace("\\", "/")
    while s.startswith("./"):
        s = s[2:]
    stem, dot, suffix = s.rpartition(".")
    if dot and "/" not in suffix and f".{suffix.lower()}" in _MEDIA_SUFFIXES:
        s = stem
    return s


@dataclass
class AlignedLabels:
    """Labels of one clip on its grid: (T,) float32 values (NaN where unlabelled) and a (T,) bool mask."""

    valence: np.ndarray
    arousal: np.ndarray
    mask: np.ndarray
    kind: str  # "clip", "continuous" or "frames"
    notes: list[str] = field(default_factory=list)  # worth telling the user (frame-count mismatch, ...)


@dataclass
class LabelTable:
    """A resolved gold standard: ``rows`` has columns clip[, time | frame], valence, arousal (+ extras).

    ``path`` is what it was read from (a file or a directory), ``layout`` the layout it was read as and ``notes``
    what the reader could not match (annotation files without a clip, ...).
    """

    path: Path
    kind: str  # one of KINDS
    rows: pd.DataFrame
    layout: str = "csv"
    notes: list[str] = field(default_factory=list)
    _index: dict | None = field(default=None, init=False, repr=False)

    @property
    def clip_ids(self) -> list[str]:
        return sorted(self.rows["clip"].unique())

    def for_clip(self, clip_id: str) -> pd.DataFrame | None:
        if self._index is None:  # one pass over the table, not one scan per clip (Aff-Wild2: millions of rows)
            self._index = self.rows.groupby("clip", sort=False).indices
        idx = self._index.get(clip_id)
        return None if idx is None else self.rows.iloc[idx].reset_index(drop=True)


def read_labels(path: str | os.PathLike) -> LabelTable:
    """Read and check a label CSV; a malformed one raises one LabelError line ``path:LINE: what is wrong``.

    LINE is the physical line of the file (the header's is 1), counting the blank lines pandas skips (lines of
    spaces and tabs only) and the line breaks inside quoted fields (a row spanning lines is named by its first).
    Refused, the first bad line of the table first:

    - a valence, arousal, time or frame cell that is not a number; a frame that is not a 0-based integer or empty;
    - an empty clip id;
    - time-continuous tables: an empty ``time`` cell, or a time that is NaN or infinite (``nan``, ``NA``, ``inf``);
      negative times are allowed (an annotation delay shifts the first ones below 0);
    - a valence or arousal of +-inf, or outside [-1, 1] (both bounds included: mmemo's labels are in [-1, 1]
      everywhere). An empty (or ``nan``) valence or arousal is allowed: those rows / frames are unlabelled;
    - two rows for one clip (per-clip table), one (clip, time) or one (clip, frame) that differ in any column:
      the error names both lines. Rows identical in every column (after clip-id normalisation) are kept once.
    """
    path = Path(path)
    try:
        df = pd.read_csv(path, dtype={"clip": str}, skipinitialspace=True)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise LabelError(f"{path}: cannot read label table ({str(e).strip().splitlines()[0]})") from None
    df.columns = [str(c).strip().lower() for c in df.columns]
    missing = [c for c in ("clip", *DIMENSIONS) if c not in df.columns]
    if missing:
        raise LabelError(
            f"{path}: missing column(s) {', '.join(missing)}; expected clip,valence,arousal, "
            f"clip,time,valence,arousal or clip,frame,valence,arousal (found {', '.join(df.columns)})"
        )
    if "time" in df.columns and "frame" in df.columns:
        raise LabelError(f"{path}: has both a time and a frame column; keep the one the labels are indexed by")
    kind = "continuous" if "time" in df.columns else "frames" if "frame" in df.columns else "clip"
    index_col = {"continuous": ["time"], "frames": ["frame"], "clip": []}[kind]
    source = _Source(path)
    problems: list[tuple[int, str]] = []  # (row, what is wrong): the first row's is reported
    for col in [*DIMENSIONS, *index_col]:
        values = pd.to_numeric(df[col], errors="coerce")
        bad = (values.isna() & df[col].notna()).to_numpy(copy=True)
        if kind == "frames" and col == "frame":
            bad |= (values.notna() & ((values < 0) | (values % 1 != 0)) | df[col].isna()).to_numpy()
        if bad.any():
            i = _first(bad)
            what = "not a frame index (0, 1, 2, ...)" if col == "frame" else "not a number"
            problems.append((i, f"column {col} holds {_show(df[col].iloc[i])}, {what}"))
        x = values.to_numpy(np.float64)
        if col == "time":
            nan = np.isnan(x) & ~bad
            if nan.any():
                i = _first(nan)
                raw = source.cell(i, df.columns.get_loc(col))
                problems.append(
                    (i, "empty time" if not raw.strip() else f"column time holds {raw!r}, not a finite number")
                )
        if col in ("time", *DIMENSIONS) and np.isinf(x).any():
            i = _first(np.isinf(x))
            problems.append((i, f"column {col} holds {_show(x[i])}, not a finite number"))
        out = np.isfinite(x) & (np.abs(x) > 1)
        if col in DIMENSIONS and out.any():
            i = _first(out)
            problems.append((i, f"{col} {_show(x[i])} is outside [-1, 1]"))
        if not bad.any():
            df[col] = values.astype(np.int64 if col == "frame" else np.float64)
    if df["clip"].isna().any():
        problems.append((_first(df["clip"].isna().to_numpy()), "empty clip id"))
    if problems:
        i, what = min(problems, key=lambda p: p[0])
        raise LabelError(f"{path}:{source.line(i)}: {what}")
    df["clip"] = df["clip"].map(normalise_clip_id)
    df = _drop_repeats(df, index_col, source)
    if index_col:
        df = df.sort_values(["clip", *index_col], kind="stable").reset_index(drop=True)
    return LabelTable(path, kind, df)


def _drop_repeats(df: pd.DataFrame, index_col: list[str], source: _Source) -> pd.DataFrame:
    """Keep one of each set of identical rows; two different rows for one clip (and time / frame): LabelError."""
    key = ["clip", *index_col]
    same_key = df.duplicated(key).to_numpy()
    if not same_key.any():
        return df
    same_row = df.duplicated().to_numpy()  # identical in every column to an earlier row (NaN equals NaN here)
    conflict = same_key & ~same_row
    if conflict.any():
        j = _first(conflict)
        here = df.iloc[j]
        i = _first((df[key] == here[key]).all(axis=1).to_numpy())  # the first row of that key differs from row j
        there = df.iloc[i]
        col = next(c for c in df.columns if not _same(there[c], here[c]))
        at = f" at {index_col[0]} {_show(here[index_col[0]])}" if index_col else ""
        raise LabelError(
            f"{source.path}:{source.line(j)}: clip {here['clip']!r} is labelled twice{at}, differently from line "
            f"{source.line(i)} ({col} {_show(there[col])} there, {_show(here[col])} here)"
        )
    return df[~same_row].reset_index(drop=True)


def _first(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def _same(a, b) -> bool:
    if pd.isna(a) or pd.isna(b):
        return bool(pd.isna(a) and pd.isna(b))
    return bool(a == b)


def _show(value) -> str:
    """A cell as an error shows it: strings quoted, numbers as short as they round-trip (2, 1.5, -inf, nan)."""
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text


class _Source:
    """Where pandas' data row ``i`` of a label CSV is in the file: its physical line and its raw cells.

    pandas skips lines of spaces and tabs only (``skip_blank_lines``), before the header too, and a quoted field
    may hold line breaks, so row ``i`` is not always on line ``i + 2``. The file is read again with the csv module
    (same quoting, ``skipinitialspace``) only when an error needs a line, so a good table costs nothing more.
    """

    def __init__(self, path: Path):
        self.path = path
        self._rows: list[tuple[int, list[str]]] | None = None

    def line(self, i: int) -> int:
        rows = self._scan()
        return rows[i][0] if i < len(rows) else i + 2  # (a file the csv module reads otherwise: best guess)

    def cell(self, i: int, col: int) -> str:
        rows = self._scan()
        cells = rows[i][1] if i < len(rows) else []
        return cells[col] if col < len(cells) else ""

    def _scan(self) -> list[tuple[int, list[str]]]:
        if self._rows is None:
            self._rows = []
            try:
                with open(self.path, encoding="utf-8-sig", errors="replace", newline="") as f:
                    lines = _Lines(f)
                    reader = csv.reader(lines, skipinitialspace=True)
                    start, header = 1, False
                    for cells in reader:
                        first, start = start, reader.line_num + 1
                        if first == reader.line_num and not lines.last.strip(" \t\r\n"):
                            continue  # a blank line: pandas skips it
                        if header:
                            self._rows.append((first, cells))
                        header = True
            except (OSError, csv.Error):
                pass
        return self._rows


class _Lines:
    """A file's lines, remembering the last one handed out (to tell a blank line from a quoted empty field)."""

    def __init__(self, f):
        self._f = iter(f)
        self.last = ""

    def __iter__(self):
        return self

    def __next__(self) -> str:
        self.last = next(self._f)
        return self.last


def align(
    rows: pd.DataFrame,
    kind: str,
    n_frames: int,
    fps: int,
    *,
    source_index: np.ndarray | None = None,
    n_source_frames: int | None = None,
) -> AlignedLabels:
    """Put one clip's label rows on its ``n_frames``-row grid (see the module docstring for the rules).

    Args:
        source_index: (T,) index of the native video frame shown in each row, -1 where none
            (``DecodedMedia.source_index``); needed for ``kind == "frames"``.
        n_source_frames: how many frames the video has, to report a per-frame table of another length.
    """
    notes: list[str] = []
    if kind == "clip":
        vals = [np.full(n_frames, rows[d].iloc[0], np.float32) for d in DIMENSIONS]
    elif kind == "frames":
        vals, notes = _per_frame(rows, n_frames, source_index, n_source_frames)
    else:
        t = np.arange(n_frames) / fps
        vals = [interpolate(rows["time"].to_numpy(), rows[d].to_numpy(), t) for d in DIMENSIONS]
        notes = _coverage_notes(rows["time"].to_numpy(np.float64), t, fps)
    valence, arousal = vals
    mask = np.isfinite(valence) & np.isfinite(arousal)
    valence[~mask] = np.nan
    arousal[~mask] = np.nan
    return AlignedLabels(valence, arousal, mask, kind, notes)


def _coverage_notes(times: np.ndarray, t: np.ndarray, fps: int) -> list[str]:
    """A note when time-continuous labels span no row of the clip (all after its end, all negative, or between two
    rows): ``align`` then labels nothing, which must not pass silently."""
    times = times[np.isfinite(times)]
    if times.size == 0 or t.size == 0:
        return []
    lo, hi = float(times.min()), float(times.max())
    covered = np.isclose(t, lo) if lo == hi else (t >= lo) & (t <= hi)  # as interpolate() decides
    if covered.any():
        return []
    span, end = f"labels span {lo:.2f}-{hi:.2f} s", t.size / fps
    if hi < 0 or lo >= end:
        return [f"{span}, outside the clip (0-{end:.2f} s): no row labelled"]
    return [f"{span}, which holds no row of the {fps} fps grid (rows at 0-{t[-1]:.2f} s): no row labelled"]


def _per_frame(
    rows: pd.DataFrame, n_frames: int, source_index: np.ndarray | None, n_source_frames: int | None
) -> tuple[list[np.ndarray], list[str]]:
    """Row t takes the values of native frame ``source_index[t]``; no frame, or a frame past the table: NaN."""
    frame = rows["frame"].to_numpy(np.int64)
    n_table = int(frame.max()) + 1 if frame.size else 0
    notes = []
    if source_index is None or not (np.asarray(source_index) >= 0).any():
        notes.append(f"{n_table} per-frame labels but no video frames to put them on; the clip stays unlabelled")
        return [np.full(n_frames, np.nan, np.float32) for _ in DIMENSIONS], notes
    if n_source_frames is not None and abs(n_table - n_source_frames) > FRAME_COUNT_SLACK:
        notes.append(f"{n_table} per-frame labels for a video of {n_source_frames} frames")
    k = np.asarray(source_index, np.int64)[:n_frames]
    known = (k >= 0) & (k < n_table)
    vals = []
    for d in DIMENSIONS:
        lut = np.full(n_table, np.nan, np.float32)
        lut[frame] = rows[d].to_numpy(np.float32)
        v = np.full(n_frames, np.nan, np.float32)
        v[: k.size][known] = lut[k[known]]
        vals.append(v)
    return vals, notes


def interpolate(times: np.ndarray, values: np.ndarray, t: np.ndarray, *, dtype=np.float32) -> np.ndarray:
    """Linear interpolation of ``values`` at ``t``; NaN outside ``[times[0], times[-1]]`` or next to a NaN.

    ``times`` (N,) increasing, ``values`` (N,), ``t`` (M,) -> (M,) of ``dtype`` (float32 on the grid; the layouts
    that merge traces onto a common time column ask for float64 so the table keeps the file's values).
    """
    out = np.full(t.shape, np.nan, dtype)
    if times.size == 0:
        return out
    if times.size == 1:
        out[np.isclose(t, times[0])] = values[0]
        return out
    idx = np.searchsorted(times, t, side="right")  # times[idx-1] <= t < times[idx]
    inside = (t >= times[0]) & (t <= times[-1])
    lo = np.clip(idx - 1, 0, times.size - 1)
    hi = np.clip(idx, 0, times.size - 1)
    span = times[hi] - times[lo]
    w = np.divide(t - times[lo], span, out=np.zeros_like(t, dtype=np.float64), where=span > 0)
    v = values[lo] * (1 - w) + values[hi] * w
    # An exact hit on a sample needs only that sample; elsewhere both neighbours must be known.
    exact = w == 0
    v = np.where(exact, values[lo], v)
    out[inside] = v[inside]
    return out
