"""One clip from its file(s) to grid-aligned arrays: the single path that extract, predict and tests share.

Decoding, frame resizing and audio features all stream: frames go to ``on_frames`` in chunks as they are made,
audio samples feed an ``AudioFeatureStream`` whose rows go to ``on_features`` block by block, so memory does not
grow with the clip's length.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from mmemo.config import ExtractConfig
from mmemo.features.audio import AudioFeatureStream, FeatureCollector, FeatureSink
from mmemo.media.decode import DecodedMedia, decode_media
from mmemo.media.grid import FrameSink


def featurise(
    path: str | os.PathLike,
    cfg: ExtractConfig,
    *,
    audio_path: str | os.PathLike | None = None,
    on_frames: FrameSink,
    on_features: FeatureSink,
    chunk_frames: int = 16,
    threads: int = 0,
) -> DecodedMedia:
    """Decode ``path`` onto the grid, sending frame chunks to ``on_frames`` and feature rows to ``on_features``.

    Feature rows past the returned ``n_frames`` may be sent (audio that outlasts the video); sinks drop them.
    """
    stream = AudioFeatureStream(cfg, on_features)
    dec = decode_media(
        path,
        audio_path=audio_path,
        fps=cfg.fps,
        sample_rate=cfg.sample_rate,
        size=cfg.frame_size,
        aspect=cfg.aspect,
        on_frames=on_frames,
        on_audio=stream.push,
        chunk_frames=chunk_frames,
        threads=threads,
    )
    if dec.has_audio:
        stream.finish(dec.n_frames)
    return dec


@dataclass
class ClipArrays:
    """A featurised clip in memory (what a shard holds, without the file)."""

    media: DecodedMedia
    frames: np.ndarray | None  # (T, S, S, 3) uint8, None without video
    features: dict[str, np.ndarray]  # name -> (T, D) float32, empty without audio


def featurise_in_memory(
    path: str | os.PathLike, cfg: ExtractConfig, *, audio_path: str | os.PathLike | None = None
) -> ClipArrays:
    """``featurise`` into memory: the same numbers ``mmemo extract`` writes, for prediction and tests."""
    chunks: list[np.ndarray] = []
    sink = FeatureCollector()
    dec = featurise(path, cfg, audio_path=audio_path, on_frames=chunks.append, on_features=sink)
    frames = np.concatenate(chunks) if chunks else None
    features = sink.arrays(dec.n_frames) if dec.has_audio else {}
    return ClipArrays(dec, frames if dec.has_video else None, features)
