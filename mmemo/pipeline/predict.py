"""`mmemo predict`: a trained run + a clip -> valence and arousal for every frame (25 per second).

The clip goes through ``featurise_in_memory``, the very code ``mmemo extract`` runs, with the feature
configuration stored in the run's checkpoint, so nothing differs between training data and serving data.

Clips longer than the model's ``max_seq_len`` are cut into windows of that length overlapping by half; each
window's predictions are weighted by a triangular ramp (highest in its middle, where the model saw most context)
and the overlapping parts are averaged with those weights, so there is no step at window borders.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from mmemo.config import ExtractConfig
from mmemo.data.dataset import pool_frames
from mmemo.data.labels import DIMENSIONS
from mmemo.errors import MmemoError
from mmemo.features.clip import ClipArrays, featurise_in_memory
from mmemo.model.checkpoint import build_model, load_checkpoint
from mmemo.model.config import ModelConfig
from mmemo.model.multimodal import MultiModalTransformer
from mmemo.pipeline.plots import pyplot


@dataclass
class Run:
    """What prediction needs, all from one checkpoint: the model and how its inputs were made."""

    model: MultiModalTransformer
    model_cfg: ModelConfig
    extract_cfg: ExtractConfig
    feature_names: list[str]
    mean: np.ndarray  # (D,)
    std: np.ndarray  # (D,)
    device: torch.device
    path: Path


def load_run(run_dir: str | os.PathLike, checkpoint: str = "best.pt") -> Run:
    """Rebuild the model of ``run_dir/checkpoint`` (weights only, nothing executed)."""
    path = Path(run_dir) / checkpoint
    if not path.exists():
        raise MmemoError(f"{path}: no such checkpoint; is {run_dir} a run directory of `mmemo train`?")
    ckpt = load_checkpoint(path)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = build_model(ckpt).to(device).eval()
    return Run(
        model, model.cfg, ExtractConfig.from_dict(ckpt["extract_config"]), list(ckpt["feature_names"]),
        ckpt["feature_mean"].numpy(), ckpt["feature_std"].numpy(), device, path,
    )  # fmt: skip


def window_starts(T: int, L: int) -> list[int]:
    """Starts of windows of length L overlapping by half that cover [0, T); the last one ends at T."""
    if T <= L:
        return [0]
    hop = max(1, L // 2)
    starts = list(range(0, T - L, hop))
    return starts + [T - L]


def _ramp(n: int) -> np.ndarray:
    """Triangular weights (n,), highest in the middle, never 0 (the clip's first and last rows need a weight)."""
    x = np.arange(n, dtype=np.float64)
    return np.minimum(x + 1, n - x)


@torch.no_grad()
def infer(
    run: Run,
    audio: np.ndarray | None,
    frames: np.ndarray | None,
    audio_mask: np.ndarray,
    video_mask: np.ndarray,
) -> np.ndarray:
    """Per-frame predictions (T, 2) for one clip's model inputs, stitched over overlapping windows.

    Args:
        audio: (T, D) standardised features or None; frames: (T, s, s, 3) uint8 at the model's video size or None.
    """
    T, L = len(audio_mask), run.model_cfg.max_seq_len
    acc, wsum = np.zeros((T, 2)), np.zeros(T)
    for s0 in window_starts(T, L):
        s1 = min(T, s0 + L)
        n = s1 - s0
        pad = torch.ones(1, n, dtype=torch.bool, device=run.device)
        a = torch.from_numpy(audio[s0:s1])[None].to(run.device) if audio is not None else None
        f = torch.from_numpy(frames[s0:s1])[None].to(run.device).float().div_(255.0) if frames is not None else None
        am = torch.from_numpy(audio_mask[s0:s1])[None].to(run.device)
        vm = torch.from_numpy(video_mask[s0:s1])[None].to(run.device)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=run.device.type == "cuda"):
            y = run.model(a, f, pad, am, vm)[0].float().cpu().numpy()  # (n, 2)
        w = _ramp(n)
        acc[s0:s1] += y * w[:, None]
        wsum[s0:s1] += w
    return (acc / wsum[:, None]).astype(np.float32)


def model_inputs(run: Run, arrays: ClipArrays) -> tuple:
    """(audio (T, D) standardised or None, frames (T, s, s, 3) uint8 or None, audio_mask, video_mask)."""
    media = arrays.media
    return prepare_inputs(run, arrays.features, arrays.frames, media.audio_mask, media.video_mask)


def prepare_inputs(
    run: Run,
    features: dict[str, np.ndarray] | None,
    frames: np.ndarray | None,
    audio_mask: np.ndarray,
    video_mask: np.ndarray | None,
) -> tuple:
    """The model's inputs from a clip's arrays, wherever they come from (a decoded file, a shard, a live window).

    Args:
        features: name -> (T, D_k) raw feature rows (None or empty without audio); frames: (T, S, S, 3) uint8 or
            None; audio_mask, video_mask: (T,) bool (video_mask None without video).

    Returns:
        (audio (T, D) standardised float32 or None, frames (T, s, s, 3) uint8 pooled to the model's video size or
        None, audio_mask (T,), video_mask (T,) all False when the model gets no frames).
    """
    audio = None
    if features and run.model_cfg.audio_dim > 0:
        x = np.concatenate([features[k] for k in run.feature_names], axis=1)
        audio = ((x - run.mean) / run.std).astype(np.float32)
    pooled = None
    if frames is not None and run.model_cfg.video:
        pooled = pool_frames(frames, run.model_cfg.video_size)
    T = len(audio_mask)
    return audio, pooled, audio_mask, video_mask if pooled is not None else np.zeros(T, bool)


@dataclass
class Prediction:
    clip: str
    table: pd.DataFrame  # time, valence, arousal (one row per frame)

    def summary(self) -> dict:
        t = self.table
        return {
            "clip": self.clip,
            "frames": len(t),
            "duration_s": round(len(t) / 25, 3),
            **{f"{d}_{k}": round(float(getattr(t[d], k)()), 4) for d in DIMENSIONS for k in ("mean", "std")},
        }


def predict_clip(run: Run, path: str | os.PathLike, audio_path: str | os.PathLike | None = None) -> Prediction:
    """Decode and featurise ``path`` as extraction does, then predict every frame."""
    arrays = featurise_in_memory(path, run.extract_cfg, audio_path=audio_path)
    y = infer(run, *model_inputs(run, arrays))
    T = len(y)
    table = pd.DataFrame(
        {"time": np.round(np.arange(T) / run.extract_cfg.fps, 3), "valence": y[:, 0], "arousal": y[:, 1]}
    )
    return Prediction(str(path), table)


def format_prediction(pred: Prediction, fmt: str) -> str:
    """CSV (``time,valence,arousal``, one row per frame) or JSON (``{"summary": ..., "frames": [...]}``)."""
    table = pred.table.round({"time": 3, "valence": 5, "arousal": 5})
    if fmt == "csv":
        return table.to_csv(index=False)
    return json.dumps({"summary": pred.summary(), "frames": table.to_dict(orient="records")}) + "\n"


def plot_prediction(pred: Prediction, path: str | os.PathLike) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(10, 3))
    t = pred.table
    ax.plot(t["time"], t["valence"], label="valence", color="tab:blue")
    ax.plot(t["time"], t["arousal"], label="arousal", color="tab:red")
    ax.axhline(0, color="grey", lw=0.5)
    ax.set(xlabel="time (s)", ylim=(-1.1, 1.1), title=Path(pred.clip).name)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
