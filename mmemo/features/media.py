"""Decode a clip with PyAV onto mmemo's time grid.

Video: row ``t`` of the output is the source frame *on screen* at time ``t / fps`` (the last frame whose
presentation timestamp is <= t / fps), chosen from timestamps, never by index arithmetic, so 23.976, 29.97, 60 fps
and variable-frame-rate sources all land on the same 25 fps grid. Rotation metadata is applied, then each frame
is resized to ``size x size`` RGB uint8 under one of three aspect policies:

- ``letterbox`` (default): scale to fit inside the square keeping the display aspect ratio, pad with black;
  nothing of the picture is lost and faces keep their shape.
- ``crop``: scale so the short side fills the square, keep the centre (edges are lost).
- ``stretch``: scale both sides to the square (shapes are distorted).

Audio: decoded, resampled to ``sample_rate`` Hz, and downmixed to mono as the arithmetic mean of all channels
(stereo: ``(L + R) / 2``), float32.

Time origin: t = 0 is the start of the video stream (of the audio stream for audio-only clips). Audio that
starts later than the video is preceded by silence and those rows are marked absent in ``audio_mask``; audio
before the origin is dropped. A clip lasts until the later of its streams ends; rows past the end of the video
repeat its last frame with ``video_mask`` False.

One sequential demux pass reads both streams of a container; containers are always closed. Frames are handed to
a callback in chunks as they are made, so memory does not grow with clip length.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from mmemo.errors import MediaError

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".flv", ".m4v", ".mpg")
AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".m4a", ".ogg", ".opus")

# Area averaging: the natural filter for shrinking a picture several times (no aliasing), and the cheapest of
# swscale's good ones (0.36 vs 0.64 ms a 720p frame for bicubic, ffmpeg's default); frames stay within a median
# 0.8 grey levels of ffmpeg's bicubic decode on the real clips.
_INTERPOLATION = "AREA"
# Audio timestamps that jump ahead by more than this are a hole, filled with (masked) silence.
_AUDIO_GAP_S = 0.1
# A decode that ends this much before the duration the container declares is reported as truncated.
_TRUNCATION_TOLERANCE_S = 0.5

FrameSink = Callable[[np.ndarray], None]  # rows (n, size, size, 3) uint8, in order
AudioSink = Callable[[np.ndarray], None]  # mono float32 samples from the origin on, in order


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
        raise MediaError(f"{path}: not a readable media file ({_reason(e)})") from None


def _reason(e: Exception) -> str:
    msg = getattr(e, "strerror", None) or str(e)
    return msg.strip().rstrip(".") or type(e).__name__


def _best_stream(container: av.container.InputContainer, kind: str):
    """The stream ffmpeg's command line would pick: video by largest area, audio by most channels."""
    streams = [s for s in container.streams if s.type == kind and s.codec_context is not None]
    if kind == "video":  # cover art is a one-frame "video" stream, not the clip's video
        streams = [s for s in streams if not (s.disposition & av.stream.Disposition.attached_pic)]
    if not streams:
        return None
    if kind == "video":
        return max(streams, key=lambda s: (s.codec_context.width or 0) * (s.codec_context.height or 0))
    return max(streams, key=lambda s: s.codec_context.channels or 0)


def _start(stream) -> Fraction:
    if stream is None or stream.start_time is None:
        return Fraction(0)
    return stream.start_time * stream.time_base


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
    return container_duration / av.time_base - float(_start(stream))


def target_size(width: float, height: float, size: int, aspect: str) -> tuple[int, int]:
    """Scaled (w, h) of a display-oriented ``width x height`` picture before padding/cropping to ``size``."""
    if aspect == "stretch":
        return size, size
    scale = size / (max(width, height) if aspect == "letterbox" else min(width, height))
    w, h = max(1, round(width * scale)), max(1, round(height * scale))
    if aspect == "letterbox":
        return min(w, size), min(h, size)
    return max(w, size), max(h, size)


def _square(img: np.ndarray, size: int) -> np.ndarray:
    """Centre ``img`` (h, w, 3) on a black size x size canvas, cropping what overflows."""
    h, w = img.shape[:2]
    if h == size and w == size:
        return img
    y0, x0 = max(0, (h - size) // 2), max(0, (w - size) // 2)
    img = img[y0 : y0 + size, x0 : x0 + size]
    h, w = img.shape[:2]
    out = np.zeros((size, size, 3), np.uint8)
    oy, ox = (size - h) // 2, (size - w) // 2
    out[oy : oy + h, ox : ox + w] = img
    return out


class _FrameGeometry:
    """Rotation + aspect policy for one stream, worked out once from its first frame."""

    def __init__(self, frame: av.VideoFrame, sar: Fraction | None, size: int, aspect: str) -> None:
        # PyAV reports the display matrix as a counter-clockwise angle; a clip tagged "rotate=90" must be
        # turned 90 degrees clockwise for display, which is what ffmpeg's autorotate does.
        ccw = int(getattr(frame, "rotation", 0) or 0) % 360
        self.rotation = (-ccw) % 360  # clockwise
        self.size, self.aspect = size, aspect
        sar = sar if sar and sar > 0 else Fraction(1)
        disp_w, disp_h = frame.width * sar, frame.height
        if self.rotation in (90, 270):
            disp_w, disp_h = disp_h, disp_w
        self.display = (int(round(disp_w)), int(disp_h))
        w, h = target_size(float(disp_w), float(disp_h), size, aspect)
        self.coded_target = (h, w) if self.rotation in (90, 270) else (w, h)
        # One reformatter for the whole stream keeps its swscale context: frame.reformat() builds a new one per
        # call, which costs more than the scaling itself (3.3 vs 0.6 ms a 720p frame).
        self.reformatter = VideoReformatter()

    def __call__(self, frame: av.VideoFrame) -> np.ndarray:
        w, h = self.coded_target
        img = self.reformatter.reformat(
            frame, width=w, height=h, format="rgb24", interpolation=_INTERPOLATION
        ).to_ndarray()
        if self.rotation:
            img = np.rot90(img, k=-self.rotation // 90)  # np.rot90 turns counter-clockwise for k > 0
        return _square(np.ascontiguousarray(img), self.size)


class _GridWriter:
    """Turns a timestamped frame sequence into grid rows and hands them out in chunks."""

    def __init__(self, size: int, sink: FrameSink, chunk: int) -> None:
        self.size, self.sink, self.chunk = size, sink, chunk
        self.buf = np.empty((chunk, size, size, 3), np.uint8)
        self.n_buf = 0
        self.t = 0
        self.mask: list[bool] = []
        self.source_time: list[float] = []
        self.source_index: list[int] = []

    def emit(self, img: np.ndarray, on_screen: bool, src_time: float, src_index: int = -1) -> None:
        self.buf[self.n_buf] = img
        self.n_buf += 1
        self.t += 1
        self.mask.append(on_screen)
        self.source_time.append(src_time)
        self.source_index.append(src_index if on_screen else -1)
        if self.n_buf == self.chunk:
            self.flush()

    def flush(self) -> None:
        if self.n_buf:
            self.sink(self.buf[: self.n_buf].copy())
            self.n_buf = 0


class _VideoTrack:
    """State of the video stream during the demux pass."""

    def __init__(self, stream, origin: Fraction, cfg: _GridCfg, sink: FrameSink, chunk: int) -> None:
        self.stream, self.origin, self.cfg = stream, origin, cfg
        self.grid = _GridWriter(cfg.size, sink, chunk)
        self.geometry: _FrameGeometry | None = None
        self.cur: av.VideoFrame | None = None
        self.cur_pos: Fraction | None = None  # grid position (time * fps) of the frame on screen
        self.cur_img: np.ndarray | None = None
        self.prev_pts: int | None = None
        self.n_decoded = 0
        self.n_delivered = 0  # every frame the decoder handed over, shown or not: the source frame index
        self.cur_index = -1
        step = stream.average_rate or stream.guessed_rate or Fraction(cfg.fps)
        self.nominal_step = 1 / Fraction(step)  # seconds per source frame, for frames without pts/duration
        self.last_duration: Fraction | None = None

    def _pos(self, frame: av.VideoFrame) -> Fraction | None:
        if frame.pts is None:
            if self.cur_pos is None:
                return Fraction(0)
            return self.cur_pos + self.nominal_step * self.cfg.fps
        return (frame.pts * frame.time_base - self.origin) * self.cfg.fps

    def _img(self) -> np.ndarray:
        if self.cur_img is None:
            self.cur_img = self.geometry(self.cur)
        return self.cur_img

    def push(self, frame: av.VideoFrame) -> None:
        index = self.n_delivered
        self.n_delivered += 1
        pos = self._pos(frame)
        if self.cur_pos is not None and pos <= self.cur_pos:
            return  # a repeated or out-of-order timestamp cannot be on screen after its successor
        if self.geometry is None:
            self.geometry = _FrameGeometry(frame, self.stream.sample_aspect_ratio, self.cfg.size, self.cfg.aspect)
        self.n_decoded += 1
        if frame.duration:
            self.last_duration = frame.duration * frame.time_base
        g = self.grid
        if self.cur is None:  # rows before the first frame: nothing on screen yet, show the first frame
            first = self.geometry(frame)
            while g.t < pos:
                g.emit(first, False, float(pos) / self.cfg.fps)
        else:
            while g.t < pos:
                g.emit(self._img(), True, float(self.cur_pos) / self.cfg.fps, self.cur_index)
        self.cur, self.cur_pos, self.cur_img, self.cur_index = frame, pos, None, index

    def end_position(self) -> Fraction:
        """Grid position where the last frame stops being on screen."""
        if self.cur_pos is None:
            return Fraction(0)
        dur = self.last_duration or self.nominal_step
        return self.cur_pos + dur * self.cfg.fps

    def finish(self, n_rows: int) -> None:
        """Emit the last frame until its end, then (masked) until the clip's ``n_rows``."""
        g, end = self.grid, self.end_position()
        while g.t < end:
            g.emit(self._img(), True, float(self.cur_pos) / self.cfg.fps, self.cur_index)
        while g.t < n_rows:
            g.emit(self._img(), False, float(self.cur_pos) / self.cfg.fps)
        g.flush()


class _AudioTrack:
    """Resample + downmix during the demux pass, place the samples on the clip's time origin, hand them on.

    ``sink`` receives consecutive mono float32 samples starting at the origin (t = 0): silence first when the
    stream starts late, the stream's head dropped when it starts early.
    """

    _ZEROS_BLOCK = 1 << 20

    def __init__(self, stream, origin: Fraction, sample_rate: int, sink: AudioSink) -> None:
        self.origin, self.sr, self.sink = origin, sample_rate, sink
        self.resampler: av.AudioResampler | None = None
        self.layout: str | None = None
        self.offset: int | None = None  # sample index of the first decoded sample, relative to origin
        self.to_drop = 0
        self.n_decoded = 0  # resampled samples (gap silence included), before any dropping
        self.next_time: Fraction | None = None  # where the next frame should start if the stream has no hole
        self.gaps: list[tuple[int, int]] = []  # [start, end) sample ranges of filled holes, relative to origin
        self.native_sr = stream.codec_context.sample_rate or 0
        self.native_channels = stream.codec_context.channels or 0

    def _emit(self, x: np.ndarray) -> None:
        self.n_decoded += x.size
        if self.to_drop:
            k = min(self.to_drop, x.size)
            x, self.to_drop = x[k:], self.to_drop - k
        if x.size:
            self.sink(x)

    def _resample(self, frame: av.AudioFrame | None) -> None:
        for out in self.resampler.resample(frame):
            x = out.to_ndarray()  # (channels, n) float32, planar
            self._emit(x.mean(axis=0, dtype=np.float32) if x.shape[0] > 1 else x[0].copy())

    def _silence(self, n: int) -> None:
        for i in range(0, n, self._ZEROS_BLOCK):
            self.sink(np.zeros(min(self._ZEROS_BLOCK, n - i), np.float32))

    def push(self, frame: av.AudioFrame) -> None:
        start = frame.pts * frame.time_base if frame.pts is not None else None
        if self.offset is None:
            self.offset = round(((start if start is not None else self.origin) - self.origin) * self.sr)
            self.to_drop = max(0, -self.offset)
            self._silence(max(0, self.offset))  # a late start: silence until then
        elif start is not None and self.next_time is not None and start - self.next_time > _AUDIO_GAP_S:
            # A hole in the timestamps (a dropped stretch, a splice): keep the later audio at its time, fill the
            # hole with silence and remember it so that those rows are marked as holding no audio.
            n = round((start - self.next_time) * self.sr)
            at = self.offset + self.n_decoded
            self.gaps.append((at, at + n))
            self._emit(np.zeros(n, np.float32))
        if start is not None:
            self.next_time = start + Fraction(frame.samples, frame.sample_rate)
        if frame.layout.name != self.layout:  # a layout change mid-stream needs a fresh resampler
            if self.resampler is not None:
                self._resample(None)
            self.layout = frame.layout.name
            self.resampler = av.AudioResampler(format="fltp", layout=frame.layout, rate=self.sr)
        self._resample(frame)

    def finish(self) -> None:
        if self.resampler is not None:
            self._resample(None)

    @property
    def span(self) -> tuple[int, int]:
        """[first, end) sample indices, relative to the origin, that hold decoded audio (first may be < 0)."""
        first = self.offset or 0
        return first, first + self.n_decoded


@dataclass(frozen=True)
class _GridCfg:
    fps: int
    sample_rate: int
    size: int
    aspect: str


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
        raise MediaError(f"{path}: decoding failed near {at:.2f} s ({_reason(e)})") from None


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
    cfg = _GridCfg(fps, sample_rate, size, aspect)
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
        vstream = _best_stream(container, "video") if use_video else None
        astream = _best_stream(container, "audio") if use_audio and audio_path is None else None
        if vstream is None and astream is None and audio_path is None:
            raise MediaError(f"{path}: no audio or video stream")
        origin = _start(vstream if vstream is not None else astream)
        handlers = {}
        if vstream is not None:
            vstream.thread_type = "AUTO"  # frame + slice threads: decoding is the cost that matters
            vstream.thread_count = threads
            video = _VideoTrack(vstream, origin, cfg, sink, chunk_frames)
            handlers[vstream.index] = video.push
            declared["video"] = (path, _declared_duration(vstream))
        if astream is not None:
            audio = _AudioTrack(astream, origin, sample_rate, audio_sink)
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
            astream = _best_stream(acontainer, "audio")
            if astream is None:
                raise MediaError(f"{apath}: no audio stream")
            audio = _AudioTrack(astream, _start(astream), sample_rate, audio_sink)  # starts with its video
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


def audio_row_mask(rows: np.ndarray, hop: int, span: tuple[int, int], gaps: list[tuple[int, int]]) -> np.ndarray:
    """(n,) bool for grid ``rows``: a row holds audio when the centre of its analysis window (sample row * hop) is
    decoded audio, inside ``span`` = [first, end) and in none of the filled ``gaps`` (sample ranges)."""
    centres = rows * hop
    first, end = span
    mask = (centres >= max(0, first)) & (centres < end)
    for g0, g1 in gaps:
        mask &= (centres < g0) | (centres >= g1)
    return mask


def _native_fps(video: _VideoTrack) -> float:
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
