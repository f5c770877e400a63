"""Decode a clip file with PyAV onto mmemo's time grid (see ``mmemo.media.grid`` for how rows are made).

Time origin: t = 0 is the start of the video stream (of the audio stream for audio-only clips). Audio that
starts later than the video is preceded by silence and those rows are marked absent in ``audio_mask``; audio
before the origin is dropped. The picture is the clip's timeline: a clip with video ends when its last frame
leaves the screen (audio past that point is dropped, with a warning beyond a second); without video, the audio's
end is the clip's end.

One sequential demux pass reads both streams of a container; containers are always closed. Frames are handed to
a callback in chunks as they are made, so memory does not grow with clip length.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np

from mmemo.errors import MediaError
from mmemo.media.grid import (
    AudioSink,
    AudioTrack,
    FrameSink,
    GridConfig,
    VideoTrack,
    audio_row_mask,
    best_stream,
    ffmpeg_reason,
    stream_start,
)

# A decode that ends this much before the duration the container declares is reported as truncated.
_TRUNCATION_TOLERANCE_S = 0.5


@dataclass
class DecodedMedia:
    """Everything one decode produced, on the grid ``t / fps``; ``T = n_frames``.

    ``frames`` is only filled when no frame callback was given.
    """

    n_frames: int  # T
    fps: int
    sample_rate: int
    has_video: bool
    has_audio: bool
    audio: np.ndarray | None  # (T * hop,) float32 mono, zero where absent; None when streamed to on_audio
    video_mask: np.ndarray  # (T,) bool: a source frame is on screen in this row
    audio_mask: np.ndarray  # (T,) bool: the centre of row t's analysis window (t / fps) is decoded audio
    source_time: np.ndarray  # (T,) float64: presentation time (s, from origin) of the source frame shown
    duration: float  # seconds, from origin to the end of the longer stream
    native_fps: float = 0.0
    native_width: int = 0  # display size, after rotation and sample aspect ratio
    native_height: int = 0
    rotation: int = 0  # degrees clockwise applied to the coded picture
    native_sample_rate: int = 0
    native_channels: int = 0
    frames: np.ndarray | None = None  # (T, size, size, 3) uint8 when collected
    warnings: list[str] = field(default_factory=list)
    # (T,) int64: index of the source frame shown in row t, counting every frame the decoder delivered from 0 in
    # presentation order; -1 where no source frame is on screen (before the first frame, past the last, no video).
    # Per-frame annotations (one line per native frame) are put on the grid with it.
    source_index: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(m for m, present in (("audio", self.has_audio), ("video", self.has_video)) if present)


def _open(path: Path) -> av.container.InputContainer:
    if not path.exists():
        raise MediaError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise MediaError(f"{path}: empty file (0 bytes)")
    try:
        return av.open(str(path), mode="r")
    except av.FFmpegError as e:
        raise MediaError(f"{path}: not a readable media file ({ffmpeg_reason(e)})") from None


def _check_wav_header(path: Path) -> None:
    """A WAV file cut short still decodes (FFmpeg trusts the bytes it finds), so compare with its header.

    The RIFF ``data`` chunk states its size; a file shorter than that lost its end. Sizes 0 and 0xFFFFFFFF
    mean "unknown" (written while streaming) and are not checked.
    """
    with open(path, "rb") as f:
        head = f.read(1 << 16)
    if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return
    pos = 12
    while pos + 8 <= len(head):
        chunk, size = head[pos : pos + 4], int.from_bytes(head[pos + 4 : pos + 8], "little")
        if chunk == b"data":
            have = path.stat().st_size - (pos + 8)
            if 0 < size < 0xFFFFFFFF and have < size:
                raise MediaError(f"{path}: truncated WAV file ({have} of the {size} data bytes its header declares)")
            return
        pos += 8 + size + (size & 1)


def _declared_duration(stream) -> float | None:
    """How long the container says the stream lasts (Matroska and others only say it for the whole file)."""
    if stream is None:
        return None
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    container_duration = stream.container.duration
    if container_duration is None:
        return None
    return container_duration / av.time_base - float(stream_start(stream))


def _demux(container, streams: list, handlers: dict, path: Path) -> None:
    at = 0.0  # media time reached, to say where a damaged file breaks
    try:
        for packet in container.demux(streams):
            if packet.pts is not None and packet.time_base is not None:
                at = max(at, float(packet.pts * packet.time_base))
            handler = handlers[packet.stream.index]
            for frame in packet.decode():
                handler(frame)
    except av.FFmpegError as e:
        raise MediaError(f"{path}: decoding failed near {at:.2f} s ({ffmpeg_reason(e)})") from None


def decode_media(
    path: str | os.PathLike,
    *,
    audio_path: str | os.PathLike | None = None,
    fps: int = 25,
    sample_rate: int = 16000,
    size: int = 224,
    aspect: str = "letterbox",
    use_video: bool = True,
    use_audio: bool = True,
    on_frames: FrameSink | None = None,
    on_audio: AudioSink | None = None,
    chunk_frames: int = 16,
    threads: int = 0,
) -> DecodedMedia:
    """Decode ``path`` (and, when given, its audio from ``audio_path``) onto the ``fps`` grid.

    Args:
        path: a video container or an audio file.
        audio_path: a separate audio file holding this clip's sound (used instead of ``path``'s audio).
        on_frames: called with each chunk of rows ``(n, size, size, 3)`` uint8 in order; when None the frames
            are collected into ``DecodedMedia.frames`` ``(T, size, size, 3)``.
        on_audio: called with consecutive mono samples from the origin on (samples past the clip's end may
            follow; they are the consumer's to drop); when None they are collected into ``DecodedMedia.audio``.
        threads: decoder threads for the video (0: FFmpeg picks, one per core).

    Raises:
        MediaError: one line naming the file and what is wrong with it.
    """
    path = Path(path)
    cfg = GridConfig(fps, sample_rate, size, aspect)
    hop = sample_rate // fps
    collected: list[np.ndarray] = []
    sink = on_frames if on_frames is not None else collected.append
    samples: list[np.ndarray] = []
    audio_sink = on_audio if on_audio is not None else samples.append
    video = audio = None
    declared: dict[str, tuple[Path, float | None]] = {}
    warnings: list[str] = []
    if path.suffix.lower() == ".wav":
        _check_wav_header(path)
    container = _open(path)
    try:
        vstream = best_stream(container, "video") if use_video else None
        astream = best_stream(container, "audio") if use_audio and audio_path is None else None
        if vstream is None and astream is None and audio_path is None:
            raise MediaError(f"{path}: no audio or video stream")
        origin = stream_start(vstream if vstream is not None else astream)
        handlers = {}
        if vstream is not None:
            vstream.thread_type = "AUTO"  # frame + slice threads: decoding is the cost that matters
            vstream.thread_count = threads
            video = VideoTrack(vstream, origin, cfg, sink, chunk_frames)
            handlers[vstream.index] = video.push
            declared["video"] = (path, _declared_duration(vstream))
        if astream is not None:
            audio = AudioTrack(astream, origin, sample_rate, audio_sink)
            handlers[astream.index] = audio.push
            declared["audio"] = (path, _declared_duration(astream))
        _demux(container, [s for s in (vstream, astream) if s is not None], handlers, path)
    finally:
        container.close()

    if audio_path is not None and use_audio:
        apath = Path(audio_path)
        if apath.suffix.lower() == ".wav":
            _check_wav_header(apath)
        acontainer = _open(apath)
        try:
            astream = best_stream(acontainer, "audio")
            if astream is None:
                raise MediaError(f"{apath}: no audio stream")
            audio = AudioTrack(astream, stream_start(astream), sample_rate, audio_sink)  # starts with its video
            declared["audio"] = (apath, _declared_duration(astream))
            _demux(acontainer, [astream], {astream.index: audio.push}, apath)
        finally:
            acontainer.close()

    if video is not None and video.n_decoded == 0:
        raise MediaError(f"{path}: video stream has no decodable frames")
    if audio is not None:
        audio.finish()
        if audio.n_decoded == 0:
            raise MediaError(f"{declared['audio'][0]}: audio stream has no decodable samples")

    video_end = float(video.end_position()) / fps if video is not None else 0.0
    first, end = audio.span if audio is not None else (0, 0)
    audio_end = end / sample_rate
    _check_truncation(declared, {"video": video_end, "audio": (end - first) / sample_rate})
    # The picture is the clip's timeline: with video, the clip ends when the last frame leaves the screen and
    # audio past that point is dropped; without video, the audio's end is the clip's end.
    duration = video_end if video is not None else audio_end
    n_rows = math.ceil(duration * fps - 1e-6)
    if n_rows == 0:
        raise MediaError(f"{path}: nothing to decode (duration 0)")
    if video is not None and audio is not None and audio_end - video_end > 1.0:
        warnings.append(f"{path}: audio runs {audio_end - video_end:.1f} s past the end of the video; dropped")

    rows = np.arange(n_rows)
    audio_mask = audio_row_mask(rows, hop, audio.span, audio.gaps) if audio is not None else np.zeros(n_rows, bool)
    audio_grid = None
    if on_audio is None:
        y = np.concatenate(samples) if samples else np.zeros(0, np.float32)
        audio_grid = np.zeros(n_rows * hop, np.float32)
        audio_grid[: min(y.size, audio_grid.size)] = y[: audio_grid.size]
    if video is not None:
        video.finish(n_rows)
        video_mask = np.asarray(video.grid.mask, bool)
        source_time = np.asarray(video.grid.source_time, np.float64)
        source_index = np.asarray(video.grid.source_index, np.int64)
    else:
        video_mask = np.zeros(n_rows, bool)
        source_time = np.arange(n_rows, dtype=np.float64) / fps
        source_index = np.full(n_rows, -1, np.int64)

    out = DecodedMedia(
        n_frames=n_rows,
        fps=fps,
        sample_rate=sample_rate,
        has_video=video is not None,
        has_audio=audio is not None,
        audio=audio_grid,
        video_mask=video_mask,
        audio_mask=audio_mask,
        source_time=source_time,
        duration=duration,
        warnings=warnings,
        source_index=source_index,
    )
    if video is not None:
        geo = video.geometry
        out.native_width, out.native_height = geo.display
        out.rotation = geo.rotation
        out.native_fps = _native_fps(video)
    if audio is not None:
        out.native_sample_rate, out.native_channels = audio.native_sr, audio.native_channels
    if on_frames is None and video is not None:
        out.frames = np.concatenate(collected) if collected else np.zeros((0, size, size, 3), np.uint8)
    return out


def _native_fps(video: VideoTrack) -> float:
    """Mean frame rate over the decoded frames (exact for constant rate, the average for VFR)."""
    span = float(video.end_position()) / video.cfg.fps
    return video.n_decoded / span if span > 0 else 0.0


def _check_truncation(declared: dict, decoded_span: dict) -> None:
    for kind, (path, expected) in declared.items():
        got = decoded_span[kind]
        if expected and expected > 1.0 and got < expected - max(_TRUNCATION_TOLERANCE_S, 0.05 * expected):
            raise MediaError(
                f"{path}: truncated {kind} stream (decoded {got:.2f} s of the {expected:.2f} s it declares)"
            )
