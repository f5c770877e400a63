"""Write small media files with PyAV: the demo corpus and the test suite's known-answer clips."""

from __future__ import annotations

import os
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def write_media(
    path: str | os.PathLike,
    *,
    frames: np.ndarray | None = None,
    fps: float | Fraction = 25,
    frame_times: Sequence[float] | None = None,
    audio: np.ndarray | None = None,
    sample_rate: int = 16000,
    video_codec: str = "libx264",
    audio_codec: str | None = None,
    audio_start: float = 0.0,
) -> Path:
    """Encode ``frames`` (N, H, W, 3) uint8 and/or ``audio`` (C, n) float in [-1, 1] into ``path``.

    Args:
        fps: nominal frame rate (a Fraction such as 30000/1001 for NTSC rates).
        frame_times: presentation time (s) of each frame, for variable frame rate; default ``i / fps``.
        audio_codec: default by container: pcm_s16le for .wav, flac for .flac, aac otherwise.
        audio_start: presentation time (s) of the first audio sample (a stream start offset).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    if audio_codec is None:
        audio_codec = {
            ".wav": "pcm_s16le",
            ".flac": "flac",
            ".mp3": "libmp3lame",
            ".ogg": "libvorbis",
            ".opus": "libopus",
        }.get(suffix, "aac")
    fps = Fraction(fps).limit_denominator(100000)
    with av.open(str(path), "w") as c:
        vs = as_ = None
        if frames is not None:
            vs = c.add_stream(video_codec, rate=fps)
            vs.height, vs.width = frames.shape[1], frames.shape[2]
            vs.pix_fmt = "yuv420p" if frames.shape[1] % 2 == 0 and frames.shape[2] % 2 == 0 else "yuv444p"
            if video_codec == "libx264":
                vs.options = {"preset": "ultrafast", "crf": "18"}
            if frame_times is not None:
                vs.codec_context.time_base = Fraction(1, 1000)
        if audio is not None:
            audio = np.atleast_2d(np.asarray(audio, np.float32))
            layout = "mono" if audio.shape[0] == 1 else "stereo"
            as_ = c.add_stream(audio_codec, rate=sample_rate, layout=layout)
        if vs is not None:
            for i, img in enumerate(frames):
                f = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
                if frame_times is not None:
                    f.pts = int(round(frame_times[i] * 1000))
                    f.time_base = Fraction(1, 1000)
                for p in vs.encode(f):
                    c.mux(p)
            for p in vs.encode():
                c.mux(p)
        if as_ is not None:
            fmt = "fltp" if audio_codec in ("aac", "libopus", "libvorbis", "libmp3lame") else "s16p"
            _encode_audio(c, as_, audio, sample_rate, fmt, audio_start)
    return path


def _encode_audio(c, stream, audio: np.ndarray, sr: int, fmt: str, start: float) -> None:
    layout = "mono" if audio.shape[0] == 1 else "stereo"
    block = 1024
    pts0 = int(round(start * sr))
    for i in range(0, audio.shape[1], block):
        x = audio[:, i : i + block]
        if fmt == "s16p":
            x = (np.clip(x, -1, 1) * 32767).astype(np.int16)
        f = av.AudioFrame.from_ndarray(np.ascontiguousarray(x), format=fmt, layout=layout)
        f.sample_rate = sr
        f.pts = pts0 + i
        f.time_base = Fraction(1, sr)
        for p in stream.encode(f):
            c.mux(p)
    for p in stream.encode():
        c.mux(p)


def tone(freq: float, seconds: float, sample_rate: int = 16000, amplitude: float = 0.5) -> np.ndarray:
    """(n,) float32 sine."""
    t = np.arange(int(round(seconds * sample_rate))) / sample_rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


COUNTER_PERIOD = 18  # distinct grey levels: 16, 28, ..., 220


def counter_frames(n: int, height: int = 48, width: int = 64) -> np.ndarray:
    """(n, H, W, 3) uint8 frames whose grey level encodes the index: frame i is level 16 + 12 * (i % 18).

    Steps of 12 grey levels survive RGB -> yuv420p -> RGB and lossy encoding (steps of 4 do not: ffmpeg itself
    decodes level 8 as 6), so the index can be read back from the centre of a decoded frame.
    """
    levels = 16 + 12 * (np.arange(n) % COUNTER_PERIOD)
    return np.broadcast_to(levels[:, None, None, None], (n, height, width, 3)).astype(np.uint8).copy()


def read_counter(frames: np.ndarray) -> np.ndarray:
    """Inverse of ``counter_frames`` on decoded rows (T, S, S, 3): the source index modulo 18 of each row."""
    c = frames.shape[1] // 2
    centre = frames[:, c - 4 : c + 4, c - 4 : c + 4].reshape(len(frames), -1).mean(axis=1)
    return np.round((centre - 16) / 12).astype(int)
