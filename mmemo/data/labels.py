"""Label tables, aligned to the frame grid.

Two layouts of a CSV with a header row are read (``labels.csv`` in the corpus directory, or ``--labels FILE``):

- per clip: ``clip,valence,arousal``: one row per clip; the values hold for every frame of the clip.
- time-continuous: ``clip,time,valence,arousal`` with ``time`` in seconds from the clip's start: each frame
  ``t`` gets the values *linearly interpolated* at its time ``t / fps``. Frames before the first or after the
  last annotated time of the clip are not extrapolated: they are masked (unlabelled). A missing value (empty
  cell / NaN) masks the frames whose interpolation would use it.

``clip`` is the clip id (path relative to the corpus without suffix, ``/`` as separator); a media suffix in the
table (``speaker1/a.mp4``) is accepted and dropped. Extra columns are kept for later use (grouping).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mmemo.errors import LabelError
from mmemo.features.media import AUDIO_SUFFIXES, VIDEO_SUFFIXES

DIMENSIONS = ("valence", "arousal")
_MEDIA_SUFFIXES = {s.lower() for s in VIDEO_SUFFIXES + AUDIO_SUFFIXES}


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
    kind: str  # "clip" or "continuous"


@dataclass
class LabelTable:
    """A parsed label file: ``rows`` has columns clip[, time], valence, arousal (+ extras)."""

    path: Path
    kind: str  # "clip" or "continuous"
    rows: pd.DataFrame

    @property
    def clip_ids(self) -> list[str]:
        return sorted(self.rows["clip"].unique())

    def for_clip(self, clip_id: str) -> pd.DataFrame | None:
        sub = self.rows[self.rows["clip"] == clip_id]
        return None if sub.empty else sub.reset_index(drop=True)


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
            f"{path}: missing column(s) {', '.join(missing)}; expected clip,valence,arousal "
            f"or clip,time,valence,arousal (found {', '.join(df.columns)})"
        )
    kind = "continuous" if "time" in df.columns else "clip"
    numeric = [*DIMENSIONS, "time"] if kind == "continuous" else list(DIMENSIONS)
    for col in numeric:
        values = pd.to_numeric(df[col], errors="coerce")
        bad = values.isna() & df[col].notna()
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise LabelError(f"{path}:{i + 2}: column {col} holds {df[col].iloc[i]!r}, not a number")
        df[col] = values.astype(np.float64)
    if df["clip"].isna().any():
        i = int(np.flatnonzero(df["clip"].isna().to_numpy())[0])
        raise LabelError(f"{path}:{i + 2}: empty clip id")
    df["clip"] = df["clip"].map(normalise_clip_id)
    if kind == "clip":
        dup = df["clip"].duplicated()
        if dup.any():
            i = int(np.flatnonzero(dup.to_numpy())[0])
            raise LabelError(f"{path}:{i + 2}: clip {df['clip'].iloc[i]!r} is labelled twice")
    else:
        df = df.sort_values(["clip", "time"], kind="stable").reset_index(drop=True)
    return LabelTable(path, kind, df)


def align(rows: pd.DataFrame, kind: str, n_frames: int, fps: int) -> AlignedLabels:
    """Put one clip's label rows on its ``n_frames``-row grid (see the module docstring for the rules)."""
    if kind == "clip":
        vals = [np.full(n_frames, rows[d].iloc[0], np.float32) for d in DIMENSIONS]
    else:
        t = np.arange(n_frames) / fps
        vals = [_interpolate(rows["time"].to_numpy(), rows[d].to_numpy(), t) for d in DIMENSIONS]
    valence, arousal = vals
    mask = np.isfinite(valence) & np.isfinite(arousal)
    valence[~mask] = np.nan
    arousal[~mask] = np.nan
    return AlignedLabels(valence, arousal, mask, kind)


def _interpolate(times: np.ndarray, values: np.ndarray, t: np.ndarray) -> np.ndarray:
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
