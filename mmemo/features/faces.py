"""Faces on the grid: from per-frame detections to one tracked, smoothed, aligned face per row (issue 13, part 1).

This module is the post-processing that sits behind any face detector. A detector is a callable
``frame (H, W, 3) uint8 RGB -> list[Detection]`` giving, per face, a box, five landmarks (left eye, right eye,
nose tip, left and right mouth corners, in the picture's own left/right) and a score. What happens next is mmemo's:

1. **Schedule**: detection runs on every ``every``-th row and on any row where the face being followed was not
   found on the previous detection (``DetectionSchedule``), not on every frame.
2. **Tracks**: detections of consecutive detection rows are linked greedily by box overlap (IoU >= ``min_iou``);
   a track survives ``max_gap`` rows without a detection (a hand in front of the face, a turn of the head), then
   ends (``link_tracks``).
3. **Primary face**: one track per clip, the one with the largest sum over rows of its box area: the largest face
   present longest (``primary_track``). Other people are left out; a clip with several is reported by the count.
4. **Rows between detections** get their box and landmarks interpolated linearly from the detections around them
   (only inside a track, never across its gaps), then a centred moving average over ``smooth`` rows steadies the
   crop (``track_rows``). Rows outside the track have no face: masked, never filled.
5. **Alignment**: the similarity transform (rotation, uniform scale, translation) that takes the five landmarks to
   a canonical template in least squares (Umeyama 1991) maps the frame to a ``size x size`` crop
   (``similarity_transform``, ``warp_affine``, ``align_face``).

No torch and no detector here: everything is NumPy, so it is tested with known answers (a known transform undone,
an occlusion bridged) and runs in extraction workers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# Five-point template for a 112 x 112 crop (x, y): eyes, nose tip, mouth corners; the layout face-recognition
# crops use, so the face fills the crop with a margin for the chin and the brow.
TEMPLATE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]]
)


def template(size: int) -> np.ndarray:
    """(5, 2) template landmarks for a ``size x size`` crop (the 112-px template scaled)."""
    return TEMPLATE_112 * (size / 112.0)


@dataclass(frozen=True)
class Detection:
    """One face found in one frame, in source-pixel coordinates."""

    box: np.ndarray  # (4,) x0, y0, x1, y1
    landmarks: np.ndarray  # (5, 2) x, y
    score: float

    @property
    def area(self) -> float:
        return float(max(0.0, self.box[2] - self.box[0]) * max(0.0, self.box[3] - self.box[1]))


# ---------------------------------------------------------------------------------------------- alignment
def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The (2, 3) matrix ``M`` of the similarity transform (rotation, uniform scale, translation, no reflection)
    minimising ``sum |M @ [src_i, 1] - dst_i|^2`` (Umeyama 1991). ``src``, ``dst``: (N, 2), N >= 2."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    var_s = (s**2).sum() / len(src)
    cov = d.T @ s / len(src)  # (2, 2)
    u, sigma, vt = np.linalg.svd(cov)
    sign = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:  # a reflection fits better: take the best rotation instead
        sign[1, 1] = -1
    rot = u @ sign @ vt
    scale = (sigma * np.diag(sign)).sum() / var_s if var_s > 0 else 1.0
    t = mu_d - scale * rot @ mu_s
    return np.hstack([scale * rot, t[:, None]])


def apply_transform(m: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(N, 2) points mapped by the (2, 3) matrix ``m``."""
    points = np.asarray(points, np.float64)
    return points @ m[:, :2].T + m[:, 2]


def warp_affine(image: np.ndarray, m: np.ndarray, size: int) -> np.ndarray:
    """The ``size x size`` crop whose pixel (x, y) is ``image`` at ``m^-1 (x, y)``, bilinear, black outside.

    Args:
        image: (H, W, 3) uint8; m: (2, 3) source -> crop coordinates (pixel centres at integer positions).
    Returns:
        (size, size, 3) uint8.
    """
    a = np.vstack([m, [0.0, 0.0, 1.0]])
    inv = np.linalg.inv(a)[:2]
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    sx = inv[0, 0] * xs + inv[0, 1] * ys + inv[0, 2]
    sy = inv[1, 0] * xs + inv[1, 1] * ys + inv[1, 2]
    h, w = image.shape[:2]
    x0, y0 = np.floor(sx).astype(np.int64), np.floor(sy).astype(np.int64)
    fx, fy = (sx - x0)[..., None], (sy - y0)[..., None]
    img = image.astype(np.float32)
    out = np.zeros((size, size, image.shape[2]), np.float32)
    for dy, dx, wgt in ((0, 0, (1 - fx) * (1 - fy)), (0, 1, fx * (1 - fy)), (1, 0, (1 - fx) * fy), (1, 1, fx * fy)):
        xi, yi = x0 + dx, y0 + dy
        ok = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
        out += np.where(ok[..., None], img[np.clip(yi, 0, h - 1), np.clip(xi, 0, w - 1)], 0.0) * wgt
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def align_face(image: np.ndarray, landmarks: np.ndarray, size: int = 112) -> tuple[np.ndarray, np.ndarray]:
    """(crop (size, size, 3) uint8, M (2, 3)): the face of ``landmarks`` (5, 2) moved onto the template."""
    m = similarity_transform(landmarks, template(size))
    return warp_affine(image, m, size), m


# ------------------------------------------------------------------------------------------------- tracks
def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two (4,) x0, y0, x1, y1 boxes."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


@dataclass
class Track:
    """One face followed over rows: its detections by row."""

    id: int
    rows: list[int] = field(default_factory=list)
    detections: list[Detection] = field(default_factory=list)

    @property
    def last_row(self) -> int:
        return self.rows[-1]

    def weight(self) -> float:
        """Sum over its detection rows of the box area: large and long-present faces weigh most."""
        return sum(d.area for d in self.detections)


class DetectionSchedule:
    """Which rows to run the detector on: every ``every``-th row, and the row after any detection that lost the
    face being followed (so a face coming back is found at once, not up to ``every`` rows later)."""

    def __init__(self, every: int = 5) -> None:
        if every < 1:
            raise ValueError(f"every {every} must be at least 1")
        self.every, self.retry = every, False

    def due(self, row: int) -> bool:
        return self.retry or row % self.every == 0

    def found(self, any_face: bool) -> None:
        """Tell the schedule what the last detection found."""
        self.retry = not any_face


def link_tracks(detections: dict[int, list[Detection]], *, min_iou: float = 0.3, max_gap: int = 25) -> list[Track]:
    """Tracks from ``detections`` (row -> the faces found there, for the rows the detector ran on).

    At each row in order, each open track takes the unclaimed detection that overlaps its last box most (IoU at
    least ``min_iou``; the track with the largest overlap chooses first); a track whose last detection is more
    than ``max_gap`` rows back is closed; a detection no track takes opens a new track.
    """
    tracks: list[Track] = []
    open_: list[Track] = []
    for row in sorted(detections):
        open_ = [t for t in open_ if row - t.last_row <= max_gap]
        dets = list(detections[row])
        pairs = sorted(
            ((iou(t.detections[-1].box, d.box), ti, di) for ti, t in enumerate(open_) for di, d in enumerate(dets)),
            reverse=True,
        )
        used_t, used_d = set(), set()
        for overlap, ti, di in pairs:
            if overlap < min_iou:
                break
            if ti in used_t or di in used_d:
                continue
            used_t.add(ti)
            used_d.add(di)
            open_[ti].rows.append(row)
            open_[ti].detections.append(dets[di])
        for di, d in enumerate(dets):
            if di not in used_d:
                t = Track(len(tracks), [row], [d])
                tracks.append(t)
                open_.append(t)
    return tracks


def primary_track(tracks: list[Track]) -> Track | None:
    """The largest face present longest (largest ``Track.weight``; the earlier track on a tie), or None."""
    return max(tracks, key=lambda t: (t.weight(), -t.id), default=None)


@dataclass
class FaceRows:
    """One face per grid row for a clip of ``T`` rows (the primary track), in source-pixel coordinates."""

    present: np.ndarray  # (T,) bool: the face is there (inside its track's span and not in one of its gaps)
    boxes: np.ndarray  # (T, 4) float32, NaN where absent
    landmarks: np.ndarray  # (T, 5, 2) float32, NaN where absent
    scores: np.ndarray  # (T,) float32: the detector's score (interpolated between detections), NaN where absent


def track_rows(track: Track | None, n_rows: int, *, max_gap: int = 25, smooth: int = 5) -> FaceRows:
    """The track on every row: detections where the detector ran, linear interpolation between two detections at
    most ``max_gap`` rows apart (a longer gap is a face gone: those rows are absent), then a centred moving average
    of ``smooth`` rows (odd; 1 = none) over each present stretch, so the crop does not jitter."""
    present = np.zeros(n_rows, bool)
    vals = np.full((n_rows, 4 + 10 + 1), np.nan)  # box, landmarks, score per row
    if track is not None:
        rows = np.asarray(track.rows)
        data = np.stack([np.concatenate([d.box, np.ravel(d.landmarks), [d.score]]) for d in track.detections])
        vals[rows] = data
        present[rows] = True
        for (r0, v0), (r1, v1) in zip(zip(rows[:-1], data[:-1], strict=True), zip(rows[1:], data[1:], strict=True),
                                      strict=True):  # fmt: skip
            if 1 < r1 - r0 <= max_gap:
                w = (np.arange(r0 + 1, r1) - r0)[:, None] / (r1 - r0)
                vals[r0 + 1 : r1] = v0 * (1 - w) + v1 * w
                present[r0 + 1 : r1] = True
    if smooth > 1:
        vals = _smooth(vals, present, smooth)
    vals = vals.astype(np.float32)
    return FaceRows(present, vals[:, :4], vals[:, 4:14].reshape(n_rows, 5, 2), vals[:, 14])


def _smooth(vals: np.ndarray, present: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average over ``window`` rows within each run of present rows (shorter at a run's ends)."""
    out = vals.copy()
    half = window // 2
    edges = np.flatnonzero(np.diff(np.concatenate([[0], present.astype(np.int8), [0]])))
    for start, stop in zip(edges[::2], edges[1::2], strict=True):
        run = vals[start:stop]
        csum = np.vstack([np.zeros((1, run.shape[1])), np.cumsum(run, axis=0)])
        idx = np.arange(len(run))
        lo, hi = np.maximum(0, idx - half), np.minimum(len(run), idx + half + 1)
        out[start:stop] = (csum[hi] - csum[lo]) / (hi - lo)[:, None]
    return out
