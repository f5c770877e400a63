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
table (``speaker1/a.mp4``) is accepted and dropped. Extra columns are kept for later use (grouping).
"""

from __future__ import annotations

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
    """Read and check a label CSV; a malformed one raises LabelError naming the file (and line)."""
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
    for col in [*DIMENSIONS, *index_col]:
        values = pd.to_numeric(df[col], errors="coerce")
        bad = values.isna() & df[col].notna()
        if kind == "frames" and col == "frame":
            bad |= values.notna() & ((values < 0) | (values % 1 != 0)) | df[col].isna()
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            what = "not a frame index (0, 1, 2, ...)" if col == "frame" else "not a number"
            cell = df[col].iloc[i]
            shown = repr(cell) if isinstance(cell, str) else f"{cell:g}"
            raise LabelError(f"{path}:{i + 2}: column {col} holds {shown}, {what}")
        df[col] = values.astype(np.int64 if col == "frame" else np.float64)
    if df["clip"].isna().any():
        i = int(np.flatnonzero(df["clip"].isna().to_numpy())[0])
        raise LabelError(f"{path}:{i + 2}: empty clip id")
    df["clip"] = df["clip"].map(normalise_clip_id)
    # Two values for one clip (or one native frame) cannot both hold; continuous tables keep their old leniency.
    dup = df.duplicated(["clip", *index_col]) if kind != "continuous" else pd.Series(False, index=df.index)
    if dup.any():
        i = int(np.flatnonzero(dup.to_numpy())[0])
        at = f" at {index_col[0]} {df[index_col[0]].iloc[i]}" if index_col else ""
        raise LabelError(f"{path}:{i + 2}: clip {df['clip'].iloc[i]!r} is labelled twice{at}")
    if index_col:
        df = df.sort_values(["clip", *index_col], kind="stable").reset_index(drop=True)
    return LabelTable(path, kind, df)


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
    valence, arousal = vals
    mask = np.isfinite(valence) & np.isfinite(arousal)
    valence[~mask] = np.nan
    arousal[~mask] = np.nan
    return AlignedLabels(valence, arousal, mask, kind, notes)


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


def interpolate(times: np.ndarray, values: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Linear interpolation of ``values`` at ``t``; NaN outside ``[times[0], times[-1]]`` or next to a NaN."""
    out = np.full(t.shape, np.nan, np.float32)
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
