"""The built-in demo: a small synthetic labelled corpus whose signals carry their labels.

Each clip is a talking-face cartoon: a face that drifts across the picture while a voice-like sound plays.

- **Valence is carried only by the video**: the face's colour runs from cool blue (negative) to warm yellow
  (positive) and its mouth from a frown to a smile.
- **Arousal is carried only by the audio**: a harmonic "voice" in syllables whose loudness, pitch and syllable
  rate rise with arousal.

Both move slowly and independently over each clip, and ``labels.csv`` gives them time-continuously
(``clip,time,valence,arousal`` every 0.1 s), so a model must read each modality to predict both.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from mmemo.config import ExtractConfig, TrainConfig
from mmemo.data.labels import DIMENSIONS, align, read_labels
from mmemo.media.synth import write_media
from mmemo.pipeline.evaluate import fit_run_postprocess
from mmemo.pipeline.extract import extract_corpus
from mmemo.pipeline.metrics import ccc
from mmemo.pipeline.predict import format_prediction, load_run, plot_prediction, predict_clip
from mmemo.pipeline.train import Trainer

FPS = 25
SR = 16000
SIZE = (96, 128)  # (H, W)


def _trajectory(rng: np.random.Generator, t: np.ndarray) -> np.ndarray:
    """A slow random curve in [-0.9, 0.9]: a mean plus one or two slow sinusoids."""
    mean = rng.uniform(-0.5, 0.5)
    x = np.full_like(t, mean)
    for _ in range(2):
        period = rng.uniform(3.0, 9.0)
        x += rng.uniform(0.15, 0.4) * np.sin(2 * np.pi * t / period + rng.uniform(0, 2 * np.pi))
    return np.clip(x, -0.9, 0.9)


def _face_frames(valence: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(N, H, W, 3) uint8: a face whose colour and mouth follow ``valence`` (N,) in [-1, 1]."""
    n, (h, w) = len(valence), SIZE
    yy, xx = np.mgrid[0:h, 0:w]
    phase, speed = rng.uniform(0, 2 * np.pi), rng.uniform(0.5, 1.2)
    frames = np.empty((n, h, w, 3), np.uint8)
    bg = np.array([70, 70, 70], np.float32)
    for i, v in enumerate(valence):
        a = phase + speed * i / FPS
        cx, cy, r = w / 2 + 25 * np.cos(a), h / 2 + 12 * np.sin(1.3 * a), 26
        warm = (v + 1) / 2  # 0 = blue, 1 = yellow
        colour = np.array([60 + 190 * warm, 90 + 130 * warm, 230 - 180 * warm], np.float32)
        img = np.broadcast_to(bg, (h, w, 3)).copy()
        face = (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
        img[face] = colour
        for ex in (-9, 9):  # eyes
            img[(xx - cx - ex) ** 2 + (yy - cy + 7) ** 2 <= 9] = 20
        mx = xx - cx
        mouth_y = cy + 10 - v * 6 * (1 - (mx / 12) ** 2)  # smile (v > 0) bends the ends up
        img[(np.abs(mx) <= 12) & (np.abs(yy - mouth_y) <= 1.5)] = 20
        frames[i] = img.astype(np.uint8)
    return frames


def _voice(arousal_at: Callable[[np.ndarray], np.ndarray], seconds: float, rng: np.random.Generator) -> np.ndarray:
    """(n,) float32 voice-like audio whose loudness, pitch and syllable rate follow arousal in [-1, 1]."""
    n = int(seconds * SR)
    y = np.zeros(n, np.float32)
    t = 0.05
    while t < seconds - 0.1:
        a = float(arousal_at(np.array([t]))[0])
        dur = rng.uniform(0.12, 0.22) * (1.2 - 0.4 * a)  # faster syllables when aroused
        i0, i1 = int(t * SR), min(n, int((t + dur) * SR))
        tt = np.arange(i1 - i0) / SR
        f0 = (150 + 80 * a) * (1 + 0.08 * np.sin(2 * np.pi * tt / dur))  # pitch rises with arousal
        phase = 2 * np.pi * np.cumsum(f0) / SR
        formant = rng.uniform(500, 900)
        sig = sum(np.sin(k * phase) / k * np.exp(-(((k * f0 - formant) / 900) ** 2)) for k in range(1, 16))
        env = np.sin(np.pi * tt / dur) ** 2
        y[i0:i1] += (0.06 + 0.22 * (a + 1) / 2) * env * sig / 3  # louder when aroused
        t += dur + rng.uniform(0.04, 0.12) * (1.2 - 0.5 * a)
    y += 0.003 * rng.standard_normal(n).astype(np.float32)
    return np.clip(y, -1, 1).astype(np.float32)


def make_demo_corpus(out: str | os.PathLike, n_clips: int = 12, seconds: float = 6.0, seed: int = 0) -> Path:
    """Write ``n_clips`` MP4 clips (H.264 + AAC) and a time-continuous ``labels.csv`` into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for k in range(n_clips):
        rng = np.random.default_rng(seed * 1000 + k)
        clip = f"speaker{k % 4}/clip{k:02d}"
        label_t = np.arange(0, seconds + 1e-9, 0.1)
        frame_t = np.arange(int(seconds * FPS)) / FPS
        val_rng, aro_rng = np.random.default_rng(rng.integers(1 << 31)), np.random.default_rng(rng.integers(1 << 31))
        valence = _trajectory(val_rng, label_t)
        arousal = _trajectory(aro_rng, label_t)

        def arousal_at(t, lt=label_t, a=arousal):
            return np.interp(t, lt, a)

        frames = _face_frames(np.interp(frame_t, label_t, valence), rng)
        audio = _voice(arousal_at, seconds, rng)
        (out / clip).parent.mkdir(parents=True, exist_ok=True)
        write_media(out / f"{clip}.mp4", frames=frames, fps=FPS, audio=audio[None], sample_rate=SR)
        rows += [
            {
                "clip": clip,
                "time": round(float(t), 3),
                "valence": round(float(v), 4),
                "arousal": round(float(a), 4),
                "speaker": f"speaker{k % 4}",
            }
            for t, v, a in zip(label_t, valence, arousal, strict=True)
        ]
    pd.DataFrame(rows).to_csv(out / "labels.csv", index=False)
    return out


# The dozen clips need no 256-wide model; the rest pinned so that the demo's figures do not move with the
# small-corpus defaults of the Trainer.
DEMO_MODEL = {"hidden": 64, "layers": 2, "heads": 4, "dropout": 0.1, "stats_head": False, "audio_norm": True,
              "fusion_norm": "batch"}  # fmt: skip


def run_demo(out: str | os.PathLike, *, n_clips: int = 12, jobs: int = 1, log: Callable[[str], None] = print):
    """Make the demo corpus under ``out/corpus`` and extract it into ``out/features``."""
    out = Path(out)
    corpus = out / "corpus"
    if not (corpus / "labels.csv").exists():
        log(f"writing {n_clips} synthetic clips to {corpus}")
        make_demo_corpus(corpus, n_clips=n_clips)
    return extract_corpus(corpus, out / "features", ExtractConfig(), jobs=jobs, log=log)


def train_demo(out: str | os.PathLike, *, epochs: int = 40, log: Callable[[str], None] = print, progress: bool = True):
    """Train the demo model on ``out/features`` into ``out/run``, holding out whole speakers for validation.

    Returns the metrics row of the best epoch (its ``valence_ccc`` and ``arousal_ccc`` are on held-out clips).
    """
    out = Path(out)
    cfg = TrainConfig(epochs=epochs, batch_size=4, max_seq_len=150, workers=0, group_by="speaker", patience=8)
    with Trainer(out / "features", out / "run", cfg, DEMO_MODEL, log=log, progress=progress) as trainer:
        history = trainer.fit()
    fit_run_postprocess(out / "run", out / "features", [c.clip_id for c in trainer.val_clips], trainer.target, log=log)
    return history.loc[history["mean_ccc"].idxmax()], trainer


def predict_unseen(out: str | os.PathLike, seconds: float = 12.0) -> dict:
    """Make a clip the model never saw (another seed, twice as long as the training clips), predict it with the
    demo run's best checkpoint, write ``out/unseen.csv`` and ``out/unseen.png``, and score it against its labels."""
    out = Path(out)
    corpus = make_demo_corpus(out / "unseen", n_clips=1, seconds=seconds, seed=99)
    clip = corpus / "speaker0" / "clip00.mp4"
    run = load_run(out / "run")
    post, run.post = run.post, None
    pred = predict_clip(run, clip)  # the model's own rows, decoded and run once
    raw = None
    if post is not None:  # the run's post-processing on those rows (what predict gives); the raw kept for scoring
        raw = pred.table
        y = post.apply(raw[["valence", "arousal"]].to_numpy())
        pred = dataclasses.replace(pred, table=raw.assign(valence=y[:, 0], arousal=y[:, 1]))
    (out / "unseen.csv").write_text(format_prediction(pred, "csv"))
    plot_prediction(pred, out / "unseen.png")
    table = read_labels(corpus / "labels.csv")
    truth = align(table.for_clip("speaker0/clip00"), table.kind, len(pred.table), FPS)
    m = truth.mask
    return {
        "clip": clip,
        "frames": len(pred.table),
        "seconds": len(pred.table) / pred.fps,
        "csv": out / "unseen.csv",
        "png": out / "unseen.png",
        **{f"{d}_ccc": ccc(pred.table[d].to_numpy()[m], getattr(truth, d)[m]) for d in DIMENSIONS},
        **{f"{d}_mean": (float(pred.table[d].mean()), float(np.mean(getattr(truth, d)[m]))) for d in DIMENSIONS},
        **{
            f"{d}_ccc_raw": ccc(raw[d].to_numpy()[m], getattr(truth, d)[m]) if raw is not None else None
            for d in DIMENSIONS
        },  # fmt: skip
    }
