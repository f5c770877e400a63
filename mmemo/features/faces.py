"""Faces on the grid: from a face detector run on a schedule to one tracked, smoothed, aligned face per row.

This module is what sits behind any face detector. A detector is a callable ``rgb (H, W, 3) uint8 ->
list[Detection]`` giving, per face, a box, five landmarks (left eye, right eye, nose tip, left and right mouth
corners, in the picture's own left/right) and a score (``mmemo.features.detector.RetinaFace``). What happens next
is mmemo's, in ``FaceTracker`` (its docstring has the rules):

1. **Schedule**: the detector runs on every ``every``-th row, and on every row for a while after the followed
   face was lost; never on every frame of a clip without a face.
2. **Which face**: the largest face at the first detection is followed from row to row by box overlap, through
   occlusions of up to ``max_gap`` rows; other people are not cropped, only counted.
3. **Rows between detections** are interpolated; the rows where a face appears or disappears between two scheduled
   detections are found by looking at each of them; a centred moving average steadies the crop. Rows without the
   face are absent: masked, never filled.
4. **Alignment**: the similarity transform (rotation, uniform scale, translation) that takes the five landmarks to
   a canonical template in least squares (Umeyama 1991) maps the picture to a ``size x size`` crop
   (``similarity_transform``, ``warp_affine``, ``align_face``).

The same tracker serves a file (extraction, prediction: every row is given back in order) and a live source (rows
come back at most ``every + smooth // 2`` rows after they went in). No torch and no detector here: NumPy only, so
it is tested with known answers (a known transform undone, an occlusion bridged, the exact rows of a cut) and runs
in extraction workers and in the live decoder's thread.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from mmemo.media.sampling import box_factors

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
    minimising ``sum |M @ [src_i, 1] - dst_i|^2`` (Umeyama 1991). ``src``, ``dst``: (N, 2), N >= 2.

    In 2-D the linear part of a similarity is ``[[a, -b], [b, a]]``, and the least-squares ``a``, ``b`` have a
    closed form on the centred points (the same optimum as Umeyama's SVD with its reflection check, without the
    SVD: this runs once per row with a face)."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    norm = float((s * s).sum())
    if norm <= 0:  # all source points coincide: no rotation or scale can be told, only the shift
        return np.array([[1.0, 0.0, mu_d[0] - mu_s[0]], [0.0, 1.0, mu_d[1] - mu_s[1]]])
    a = float((s * d).sum()) / norm
    b = float((s[:, 0] * d[:, 1] - s[:, 1] * d[:, 0]).sum()) / norm
    return np.array([[a, -b, mu_d[0] - a * mu_s[0] + b * mu_s[1]], [b, a, mu_d[1] - b * mu_s[0] - a * mu_s[1]]])


def apply_transform(m: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(N, 2) points mapped by the (2, 3) matrix ``m``."""
    points = np.asarray(points, np.float64)
    return points @ m[:, :2].T + m[:, 2]


# How a crop is sampled from its picture; part of each extracted clip's key (mmemo.pipeline.extract.clip_key), so
# features whose crops were sampled otherwise (bilinear alone, before 2026-11-30) are extracted again on resume.
CROP_SAMPLING = "box-reduced, bilinear"


def box_reduce(image: np.ndarray, kx: int, ky: int) -> np.ndarray:
    """(ceil(H / ky), ceil(W / kx), C) uint8: the means of ``kx x ky`` blocks of ``image`` (H, W, C) uint8, rounded
    half up; the blocks at the right and bottom edges average the pixels they have (as Pillow's ``Image.reduce``)."""
    h, w = image.shape[:2]
    rows, cols = -(-h // ky), -(-w // kx)
    padded = np.zeros((rows * ky, cols * kx, *image.shape[2:]), np.uint32)
    padded[:h, :w] = image
    sums = padded.reshape(rows, ky, cols, kx, -1).sum(axis=(1, 3))
    counts = np.minimum(ky, h - ky * np.arange(rows))[:, None] * np.minimum(kx, w - kx * np.arange(cols))[None, :]
    counts = counts[..., None]
    return ((sums + counts // 2) // counts).astype(np.uint8).reshape(rows, cols, *image.shape[2:])


def warp_affine(image: np.ndarray, m: np.ndarray, size: int) -> np.ndarray:
    """The ``size x size`` crop whose pixel (x, y) is ``image`` at ``m^-1 (x, y)``, bilinear, black outside; where a
    crop pixel spans k >= 2 source pixels the source is first averaged over k x k blocks (``box_factors``), so a
    face larger than its crop does not alias.

    Args:
        image: (H, W, 3) uint8; m: (2, 3) source -> crop coordinates (pixel centres at integer positions).
    Returns:
        (size, size, 3) uint8.
    """
    a = np.vstack([m, [0.0, 0.0, 1.0]])
    inv = np.linalg.inv(a)
    kx, ky = box_factors(inv)
    if kx > 1 or ky > 1:
        # block (i, j) of the reduced picture has its centre at source (kx i + (kx - 1) / 2, ky j + (ky - 1) / 2)
        image = box_reduce(image, kx, ky)
        inv = np.array([[1 / kx, 0, -(kx - 1) / (2 * kx)], [0, 1 / ky, -(ky - 1) / (2 * ky)], [0, 0, 1.0]]) @ inv
    inv = inv[:2]
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


# ------------------------------------------------------------------------------------------------- tracking
def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two (4,) x0, y0, x1, y1 boxes."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


class Picture(Protocol):
    """One source picture as the tracker needs it, in display coordinates (after rotation and pixel aspect).

    ``mmemo.media.picture.FramePicture`` serves a decoded video frame; ``ArrayPicture`` an RGB array (tests)."""

    def small(self, max_side: int, max_area: int | None = None) -> tuple[np.ndarray, float, float]:
        """(rgb (h, w, 3) uint8 with max(h, w) <= max_side and h * w <= max_area, sx, sy): display x = small x * sx,
        y = small y * sy."""
        ...

    def warp(self, m: np.ndarray, size: int) -> np.ndarray:
        """(size, size, 3) uint8: the picture mapped by ``m`` (2, 3), display -> crop coordinates (``warp_affine``)."""
        ...


class ArrayPicture:
    """A ``Picture`` over an (H, W, 3) uint8 RGB array (no rotation, square pixels)."""

    def __init__(self, rgb: np.ndarray) -> None:
        self.rgb = rgb

    def small(self, max_side: int, max_area: int | None = None) -> tuple[np.ndarray, float, float]:
        h, w = self.rgb.shape[:2]
        step = max(1, -(-max(h, w) // max_side))  # integer decimation: tests need exact coordinates, not beauty
        while max_area is not None and -(-h // step) * -(-w // step) > max_area:
            step += 1
        return self.rgb[::step, ::step], float(step), float(step)

    def warp(self, m: np.ndarray, size: int) -> np.ndarray:
        return warp_affine(self.rgb, m, size)


Detector = Callable[[np.ndarray], list[Detection]]  # rgb (h, w, 3) uint8 -> faces in its pixels


@dataclass(frozen=True)
class FaceOptions:
    """How faces are found and cropped (``mmemo extract --faces on --face-size S``; saved with the features)."""

    size: int = 112  # side of the aligned crop (the 112-px template scaled)
    every: int = 5  # detect on every k-th row (and on every row while the face is lost)
    # The detector sees the picture scaled (never up) to at most detect_size px on its long side and detect_area px
    # in all: 320 x 180 for 16:9, 240 x 240 for a square talking-head crop (its cost follows the pixel count).
    detect_size: int = 320
    detect_area: int = 320 * 180
    min_iou: float = 0.3  # a detection continues the followed face if its box overlaps the last one this much
    max_gap: int = 25  # rows a followed face may be missing (an occlusion) and still be the same face after
    smooth: int = 5  # centred moving average over this many rows of the box and landmarks (odd; 1 = none)


@dataclass
class FaceRow:
    """The face of one grid row: ``present`` False means no face (``crop`` None, the arrays NaN)."""

    row: int
    present: bool
    crop: np.ndarray | None  # (S, S, 3) uint8
    box: np.ndarray  # (4,) float32, display pixels
    landmarks: np.ndarray  # (5, 2) float32, display pixels
    score: float  # the detector's score, interpolated between detection rows


_NAN_VALS = np.full(15, np.nan)  # box (4), landmarks (10), score (1): one row's raw values


def _pack(d: Detection) -> np.ndarray:
    return np.concatenate([np.asarray(d.box, np.float64), np.ravel(d.landmarks), [d.score]])


class FaceTracker:
    """The face of every grid row, from a detector run on a schedule: fed one row at a time, gives rows back in
    order a few rows later. The same object serves a file (extraction, prediction) and a live source.

    - **Schedule**: the detector runs on every ``every``-th row, and on every row while the followed face is
      missing, so a face that comes back is found at once.
    - **Which face**: the *followed face* is the largest face at the first detection; later detections continue it
      when their box overlaps its last one (IoU >= ``min_iou``, or for a lone face, a centre within one face width:
      a quick turn). Missing for more than ``max_gap`` rows, it is let go and the largest face found next is
      followed. Other people are not cropped; how often the detector saw more than one face is counted
      (``multi``), so a clip with several people is reported as such.
    - **Rows between detections**: a face found on two consecutive detection rows is interpolated linearly
      between them; a face lost between them is looked for on each row in between (only then), so the rows
      where it is gone are known exactly, never guessed. Rows without it are absent: never filled.
    - **Smoothing**: a centred moving average of ``smooth`` rows over each run of present rows (shorter at a
      run's ends) steadies the box and landmarks, so the crop does not jitter.
    - **Alignment**: each present row's picture is warped by the similarity transform taking its (smoothed)
      landmarks to the template, into a ``size x size`` crop.

    A row is given back once it is decided and ``smooth // 2`` rows after it are: at most ``every + smooth // 2``
    rows after it was pushed (a live source's added latency: 7 rows, 0.28 s, by default).
    """

    def __init__(self, detector: Detector, options: FaceOptions | None = None) -> None:
        self.detector, self.opt = detector, options or FaceOptions()
        if self.opt.every < 1 or self.opt.smooth < 1 or self.opt.size < 8:
            raise ValueError(f"face options out of range: {self.opt}")
        self.t = 0  # rows pushed
        self.pending: list[list] = []  # [row, picture, state ("?", "y", "n"), vals (15,)] not given back yet
        self.history: list[tuple[int, np.ndarray | None]] = []  # the last rows given back: (row, vals or None)
        self.last_det: int | None = None  # row of the last detection
        self.last_hit: int | None = None  # row where the followed face was last found
        self.followed: np.ndarray | None = None  # its last box
        self.n_detections = 0  # detector runs
        self.multi = 0  # detector runs that found more than one face
        self.follows = 0  # faces followed (a new one after each loss beyond max_gap)
        self._cache: tuple[object, list[Detection]] | None = None

    # -- detection
    def _run(self, picture: Picture) -> list[Detection]:
        if self._cache is not None and self._cache[0] is picture:  # a source frame shown on several rows
            return self._cache[1]
        rgb, sx, sy = picture.small(self.opt.detect_size, self.opt.detect_area)
        scale = np.array([sx, sy])
        found = [
            Detection(np.asarray(d.box, np.float64) * np.tile(scale, 2), np.asarray(d.landmarks) * scale, d.score)
            for d in self.detector(rgb)
        ]
        self.n_detections += 1
        self.multi += len(found) > 1
        self._cache = (picture, found)
        return found

    def _match(self, found: list[Detection]) -> Detection | None:
        if not found:
            return None
        if self.followed is None:
            self.follows += 1
            return max(found, key=lambda d: d.area)
        best = max(found, key=lambda d: iou(self.followed, d.box))
        if iou(self.followed, best.box) >= self.opt.min_iou:
            return best
        if len(found) == 1:  # a quick turn or step: a lone face near where the followed one was is the same
            b, f = best.box, self.followed
            dist = np.hypot((b[0] + b[2] - f[0] - f[2]) / 2, (b[1] + b[3] - f[1] - f[3]) / 2)
            if dist <= f[2] - f[0]:
                return best
        return None

    def _entry(self, row: int) -> list:
        return self.pending[row - self.pending[0][0]]

    def _detect(self, row: int) -> None:
        e = self._entry(row)
        hit = self._match(self._run(e[1]))
        prev, prev_hit = self.last_det, self.last_hit is not None and self.last_hit == self.last_det
        between = [] if prev is None else [self._entry(r) for r in range(max(prev + 1, self.pending[0][0]), row)]
        if hit is not None:
            vals = _pack(hit)
            if prev_hit:  # found on both detection rows: the rows between follow a straight line
                v0 = self._entry(prev)[3] if prev >= self.pending[0][0] else self._history_vals(prev)
                for b in between:
                    if b[1] is not None:
                        w = (b[0] - prev) / (row - prev)
                        b[2], b[3] = "y", v0 * (1 - w) + vals * w
            elif between:  # the face came into view since the last detection: look back for where, row by row
                self.followed = np.asarray(hit.box, np.float64)
                for b in reversed(between):
                    found = self._match(self._run(b[1])) if b[1] is not None else None
                    if found is None:
                        break
                    b[2], b[3] = "y", _pack(found)
                    self.followed = np.asarray(found.box, np.float64)
            e[2], e[3] = "y", vals
            self.last_hit, self.followed = row, np.asarray(hit.box, np.float64)
        else:
            if prev_hit:  # lost somewhere since the last detection: look on each row between, in order
                for i, b in enumerate(between):
                    found = self._match(self._run(b[1])) if b[1] is not None else None
                    if found is None:
                        for rest in between[i:]:
                            rest[2] = "n"
                        break
                    b[2], b[3] = "y", _pack(found)
                    self.last_hit, self.followed = b[0], np.asarray(found.box, np.float64)
            e[2] = "n"
            if self.last_hit is not None and row - self.last_hit > self.opt.max_gap:
                self.followed = None  # gone too long: the next face found is followed, whoever it is
        for b in between:
            if b[2] == "?":
                b[2] = "n"
        self.last_det = row

    def _history_vals(self, row: int) -> np.ndarray:
        for r, v in reversed(self.history):
            if r == row and v is not None:
                return v
        return _NAN_VALS

    # -- rows in, rows out
    def push(self, picture: Picture | None) -> list[FaceRow]:
        """The next grid row's picture (None: nothing on screen in this row). Returns the rows now decided."""
        row = self.t
        self.t += 1
        self.pending.append([row, picture, "?" if picture is not None else "n", None])
        # Lost a moment ago: look on every row, so that it is found again at once; never seen, or gone for longer
        # than max_gap rows (a clip without a face): back to every k-th row.
        searching = (
            self.last_det is not None
            and self.last_hit is not None
            and self.last_hit != self.last_det
            and row - self.last_hit <= self.opt.max_gap
        )
        due = self.last_det is None or searching or row - self.last_det >= self.opt.every
        if picture is not None and due:
            self._detect(row)
        elif picture is None and due:
            # Nothing on screen where a detection was due: decide the rows waiting before it now (detect on the
            # last of them with a picture), so that a stretch without pictures never holds rows back.
            undecided = [e for e in self.pending if e[2] == "?"]
            if undecided:
                self._detect(undecided[-1][0])
        return self._emit(final=False)

    def finish(self) -> list[FaceRow]:
        """The remaining rows (the last undecided ones are decided by one more detection)."""
        undecided = [e for e in self.pending if e[2] == "?"]
        if undecided:
            self._detect(undecided[-1][0])
        return self._emit(final=True)

    def _emit(self, final: bool) -> list[FaceRow]:
        half = self.opt.smooth // 2
        known = 0  # length of the decided prefix of pending
        while known < len(self.pending) and self.pending[known][2] != "?":
            known += 1
        out = []
        while self.pending and known > 0:
            e = self.pending[0]
            if e[2] == "y" and not final and not self._window_decided(half):
                break  # rows its smoothing window reaches are not decided yet
            out.append(self._give(e))
            self.pending.pop(0)
            known -= 1
        return out

    def _window_decided(self, half: int) -> bool:
        """Whether the ``half`` rows after the first pending one are decided, or its run ends before them."""
        ahead = self.pending[1 : 1 + half]
        for a in ahead:
            if a[2] == "?":
                return False
            if a[2] == "n":
                return True  # the run ends: the rows past it do not enter the average
        return len(ahead) == half

    def _give(self, e: list) -> FaceRow:
        row, picture, state, vals = e
        if state != "y":
            self.history = (self.history + [(row, None)])[-(self.opt.smooth + 1) :]
            return FaceRow(row, False, None, np.full(4, np.nan, np.float32), np.full((5, 2), np.nan, np.float32),
                           float("nan"))  # fmt: skip
        half = self.opt.smooth // 2
        window = [vals]
        for r, v in reversed(self.history[-half:] if half else []):  # earlier rows of the same run
            if v is None or r < row - half:
                break
            window.append(v)
        for a in self.pending[1 : 1 + half]:  # later rows of the same run
            if a[2] != "y":
                break
            window.append(a[3])
        smooth = np.mean(window, axis=0)
        self.history = (self.history + [(row, vals)])[-(self.opt.smooth + 1) :]
        landmarks = smooth[4:14].reshape(5, 2)
        crop = picture.warp(similarity_transform(landmarks, template(self.opt.size)), self.opt.size)
        return FaceRow(row, True, crop, smooth[:4].astype(np.float32), landmarks.astype(np.float32),
                       float(smooth[14]))  # fmt: skip
