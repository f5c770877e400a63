"""The AVEC baselines' post-processing of per-frame predictions, fitted on the validation split.

Per-frame predictions jump from frame to frame while the annotations they follow are slow curves, lag behind
the media (annotators react late) and come out shrunk towards the mean. The AVEC challenge baselines end with a
chain fitted on the development set (Valstar et al. 2016, Ringeval et al. 2017-2019): smoothing, a delay, and a
bias and scale correction, each kept only if it raises the development CCC. mmemo does the same, per dimension
(valence, arousal), on the validation clips at the end of training, saves it in the run (``postprocess.json``)
and applies it in predict, evaluate and the live stream (switchable: ``--postprocess off``):

1. **Smoothing**: a centred moving average over ``window`` rows (odd; 1 = none) within each clip, shorter at the
   clip's ends (the mean of the rows that exist), chosen from ``WINDOWS``.
2. **Delay**: the prediction of row ``t`` becomes the smoothed prediction of row ``t - delay`` (the first rows
   repeat row 0), ``delay`` from 0 to ``MAX_DELAY_S`` seconds: what the model learnt early, moved to when the
   annotators said it.
3. **Bias and scale**: ``y <- (y - mu_pred) * sd_gold / sd_pred + mu_gold`` with the validation predictions'
   and labels' means and standard deviations (AVEC's centring and scaling): CCC punishes a shift and a shrunk
   range, which Pearson's r does not.

Each step is fitted after the ones before it and kept only when it raises the validation CCC (pooled over the
validation frames) by more than ``MIN_GAIN``; the report keeps the CCC before and after.

A live stream cannot see the future: it smooths with a *trailing* mean over the same ``window`` rows, which is
the centred mean ``(window - 1) / 2`` rows late, so that much of the delay is already there; the rest of the
delay is applied as is. When the fitted delay is shorter than ``(window - 1) / 2`` the stream's output is that
much later than predict's (said by ``stream_lag``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from mmemo import atomic
from mmemo.errors import ConfigError
from mmemo.pipeline.metrics import ccc

POSTPROCESS_FILE = "postprocess.json"
WINDOWS = (1, 3, 5, 9, 15, 25, 51, 101)  # rows (25 per second): none to 4 s
MAX_DELAY_S = 4.0
MIN_GAIN = 1e-3  # CCC: a step that gains less is not worth applying
DIMENSIONS = ("valence", "arousal")


@dataclass
class DimensionChain:
    """The fitted chain of one dimension (identity by default)."""

    window: int = 1
    delay: int = 0  # rows
    scale: bool = False
    mu_pred: float = 0.0
    sd_pred: float = 1.0
    mu_gold: float = 0.0
    sd_gold: float = 1.0
    ccc_before: float | None = None
    ccc_after: float | None = None
    steps: list[str] = field(default_factory=list)  # the steps kept, in order

    def describe(self) -> str:
        """What the chain does, in words ("mean of 5 rows, 3 rows later, rescaled" or "nothing")."""
        parts = [f"mean of {self.window} rows"] if self.window > 1 else []
        parts += [f"{self.delay} rows later"] if self.delay else []
        parts += ["rescaled"] if self.scale else []
        return ", ".join(parts) or "nothing"


@dataclass
class PostProcess:
    """Valence's and arousal's chains; ``apply`` works on one clip's (T, 2) predictions."""

    valence: DimensionChain = field(default_factory=DimensionChain)
    arousal: DimensionChain = field(default_factory=DimensionChain)
    fps: int = 25

    def chains(self) -> tuple[DimensionChain, DimensionChain]:
        return self.valence, self.arousal

    def apply(self, pred: np.ndarray) -> np.ndarray:
        """pred (T, 2) valence, arousal of one clip -> (T, 2) float32, post-processed (offline: centred)."""
        pred = np.asarray(pred, np.float64)
        out = np.empty_like(pred)
        for d, c in enumerate(self.chains()):
            out[:, d] = _chain(pred[:, d], c)
        return out.astype(np.float32)

    def stream_lag(self) -> float:
        """Seconds by which the live stream's output comes later than predict's (0 when the delay covers the
        trailing window's lag)."""
        return max((c.window - 1) / 2 - c.delay for c in self.chains()) / self.fps if self.fps else 0.0

    def to_dict(self) -> dict:
        return {"fps": self.fps, "valence": asdict(self.valence), "arousal": asdict(self.arousal)}

    @staticmethod
    def from_dict(d: dict) -> PostProcess:
        try:
            return PostProcess(DimensionChain(**d["valence"]), DimensionChain(**d["arousal"]), int(d["fps"]))
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"post-processing record unreadable ({e})") from None

    def save(self, run_dir: Path) -> None:
        atomic.write_text(Path(run_dir) / POSTPROCESS_FILE, json.dumps(self.to_dict(), indent=1) + "\n")

    @staticmethod
    def load(run_dir: Path) -> PostProcess | None:
        """The run's fitted chain, None for a run trained before post-processing existed."""
        path = Path(run_dir) / POSTPROCESS_FILE
        if not path.is_file():
            return None
        try:
            return PostProcess.from_dict(json.loads(path.read_text()))
        except (json.JSONDecodeError, ConfigError) as e:
            raise ConfigError(f"{path}: {e}") from None


class StreamPostProcess:
    """The chain applied row by row to a live stream's predictions (trailing mean, then the rest of the delay)."""

    def __init__(self, post: PostProcess) -> None:
        self.post = post
        self.history: list[np.ndarray] = []  # raw rows, newest last (as many as the windows and delays need)
        self.smoothed: list[np.ndarray] = []
        keep = [c.window + max(0, c.delay - (c.window - 1) // 2) for c in post.chains()]
        self.keep = max(keep) + 1

    def push(self, rows: np.ndarray) -> np.ndarray:
        """rows (n, 2) new raw predictions, in order -> (n, 2) post-processed (causal)."""
        out = []
        for r in np.asarray(rows, np.float64):
            self.history.append(r)
            vals = []
            for d, c in enumerate(self.post.chains()):
                w = np.array([h[d] for h in self.history[-c.window :]])
                vals.append(w.mean())
            self.smoothed.append(np.array(vals))
            y = np.empty(2)
            for d, c in enumerate(self.post.chains()):
                rest = max(0, c.delay - (c.window - 1) // 2)
                y[d] = self.smoothed[max(0, len(self.smoothed) - 1 - rest)][d]
                y[d] = _scale(y[d], c)
            out.append(y)
            del self.history[: -self.keep]
            del self.smoothed[: -self.keep]
        return np.asarray(out, np.float32).reshape(-1, 2)


# --------------------------------------------------------------------------------------------------- the steps
def smooth(x: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average of (T,) over ``window`` rows (odd), the mean of the rows that exist at the ends."""
    if window <= 1 or x.size == 0:
        return np.asarray(x, np.float64).copy()
    h = window // 2
    c = np.concatenate([[0.0], np.cumsum(np.asarray(x, np.float64))])
    idx = np.arange(x.size)
    lo, hi = np.maximum(idx - h, 0), np.minimum(idx + h + 1, x.size)
    return (c[hi] - c[lo]) / (hi - lo)


def delay(x: np.ndarray, rows: int) -> np.ndarray:
    """Row t takes row t - rows (the first rows repeat row 0)."""
    if rows <= 0 or x.size == 0:
        return np.asarray(x, np.float64).copy()
    return np.concatenate([np.full(min(rows, x.size), x[0]), x[: max(0, x.size - rows)]])


def _scale(y, c: DimensionChain):
    if not c.scale:
        return y
    return (y - c.mu_pred) * (c.sd_gold / c.sd_pred) + c.mu_gold


def _chain(x: np.ndarray, c: DimensionChain) -> np.ndarray:
    return _scale(delay(smooth(x, c.window), c.delay), c)


# --------------------------------------------------------------------------------------------------- fitting
def _pooled_ccc(clips: list[tuple[np.ndarray, np.ndarray]], c: DimensionChain) -> float:
    """CCC over every labelled frame of the clips, predictions through chain ``c``."""
    p = np.concatenate([_chain(x, c)[m] for x, _, m in clips])
    g = np.concatenate([g[m] for _, g, m in clips])
    return float(ccc(p, g)) if p.size > 1 else float("nan")


def fit_dimension(clips: list[tuple[np.ndarray, np.ndarray, np.ndarray]], fps: int = 25) -> DimensionChain:
    """The chain of one dimension from validation clips: each (pred (T,), gold (T,), mask (T,) bool)."""
    c = DimensionChain()
    clips = [(np.asarray(p, np.float64), np.asarray(g, np.float64), np.asarray(m, bool)) for p, g, m in clips]
    if sum(int(m.sum()) for _, _, m in clips) < 2:
        return c
    best = c.ccc_before = _pooled_ccc(clips, c)
    # 1. smoothing
    trial = {w: _pooled_ccc(clips, DimensionChain(window=w)) for w in WINDOWS}
    w = max(trial, key=lambda k: (trial[k], -k))
    if trial[w] > best + MIN_GAIN:
        c.window, best = w, trial[w]
        c.steps.append("smooth")
    # 2. delay
    delays = range(int(MAX_DELAY_S * fps) + 1)
    trial = {d: _pooled_ccc(clips, DimensionChain(window=c.window, delay=d)) for d in delays}
    d = max(trial, key=lambda k: (trial[k], -k))
    if trial[d] > best + MIN_GAIN:
        c.delay, best = d, trial[d]
        c.steps.append("delay")
    # 3. bias and scale, from the validation frames through the steps kept so far
    p = np.concatenate([_chain(x, c)[m] for x, _, m in clips])
    g = np.concatenate([g[m] for _, g, m in clips])
    if p.std() > 1e-8 and g.std() > 1e-8:
        scaled = DimensionChain(c.window, c.delay, True, float(p.mean()), float(p.std()), float(g.mean()),
                                float(g.std()))  # fmt: skip
        s = _pooled_ccc(clips, scaled)
        if s > best + MIN_GAIN:
            c.scale, c.mu_pred, c.sd_pred, c.mu_gold, c.sd_gold = (True, scaled.mu_pred, scaled.sd_pred,
                                                                   scaled.mu_gold, scaled.sd_gold)  # fmt: skip
            best = s
            c.steps.append("scale")
    c.ccc_after = best
    return c


def fit(clips: list[tuple[np.ndarray, np.ndarray, np.ndarray]], fps: int = 25) -> PostProcess:
    """The chain from validation clips, each (pred (T, 2), gold (T, 2), mask (T,) bool), valence then arousal."""
    per_dim = [fit_dimension([(p[:, d], g[:, d], m) for p, g, m in clips], fps) for d in range(2)]
    return PostProcess(per_dim[0], per_dim[1], fps)
