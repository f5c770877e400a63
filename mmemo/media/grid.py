"""The 25 fps grid: the track classes that put decoded frames and samples onto it, for files and live sources.

Video: row ``t`` is the source frame *on screen* at time ``t / fps`` (the last frame whose presentation timestamp
is <= t / fps), chosen from timestamps, never by index arithmetic, so 23.976, 29.97, 60 fps and variable-frame-rate
sources all land on the same grid. Rotation metadata is applied, then each frame is resized to ``size x size`` RGB
uint8 under one of the aspect policies of ``mmemo.config.ASPECT_POLICIES``:

- ``letterbox`` (default): scale to fit inside the square keeping the display aspect ratio, pad with black;
  nothing of the picture is lost and faces keep their shape.
- ``crop``: scale so the short side fills the square, keep the centre (edges are lost).
- ``stretch``: scale both sides to the square (shapes are distorted).

Audio: resampled to ``sample_rate`` Hz and downmixed to mono as the arithmetic mean of all channels
(stereo: ``(L + R) / 2``), float32, placed on the clip's time origin.

``VideoTrack`` and ``AudioTrack`` are fed one decoded frame at a time by ``mmemo.media.decode`` (a file, one
demux pass) and ``mmemo.media.live`` (a live source, in a thread): the same code, so the two give the same rows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from mmemo.media.picture import FramePicture

# Area averaging: the natural filter for shrinking a picture several times (no aliasing), and cheaper than bicubic,
# ffmpeg's default, while staying within about a grey level of it on real clips (docs/benchmarks.md, extraction).
_INTERPOLATION = "AREA"
# Audio timestamps that jump ahead by more than this are a hole, filled with (masked) silence.
_AUDIO_GAP_S = 0.1
FrameSink = Callable[[np.ndarray], None]  # rows (n, size, size, 3) uint8, in order
AudioSink = Callable[[np.ndarray], None]  # mono float32 samples from the origin on, in order
PictureSink = Callable[["FramePicture | None"], None]  # one call per row: the source picture on screen, or None


def ffmpeg_reason(e: Exception) -> str:
    msg = getattr(e, "strerror", None) or str(e)
    return msg.strip().rstrip(".") or type(e).__name__


def best_stream(container: av.container.InputContainer, kind: str):
    """The stream ffmpeg's command line would pick: video by largest area, audio by most channels."""
    streams = [s for s in container.streams if s.type == kind and s.codec_context is not None]
    if kind == "video":  # cover art is a one-frame "video" stream, not the clip's video
        streams = [s for s in streams if not (s.disposition & av.stream.Disposition.attached_pic)]
    if not streams:
        return None
    if kind == "video":
        return max(streams, key=lambda s: (s.codec_context.width or 0) * (s.codec_context.height or 0))
    return max(streams, key=lambda s: s.codec_context.channels or 0)


def set_skip_loop_filter(stream, mode: str) -> None:
    """Ask ``stream``'s decoder (before its first packet) to skip deblocking on ``mode``'s frames ("none": on none).

    FFmpeg's ``skip_loop_filter`` option, given by its AVDiscard name; decoders without a loop filter ignore it."""
    if mode != "none":
        stream.codec_context.options = {**stream.codec_context.options, "skip_loop_filter": mode}


def stream_start(stream) -> Fraction:
    if stream is None or stream.start_time is None:
        return Fraction(0)
    return stream.start_time * stream.time_base


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
        self.display = (int(round(disp_w)), int(round(disp_h)))  # either side may carry the pixel aspect ratio
        w, h = target_size(float(disp_w), float(disp_h), size, aspect)
        self.coded_target = (h, w) if self.rotation in (90, 270) else (w, h)
        # One reformatter for the whole stream keeps its swscale context: frame.reformat() builds a new one per
        # call, which costs more than the scaling itself.
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
    """Turns a timestamped frame sequence into grid rows and hands them out in chunks.

    ``on_picture``, when given, is called once per row, in order, with the source picture shown in it (the same
    ``FramePicture`` object for the rows that repeat a frame; None where nothing is on screen): the face tracker's
    input, at the source's full resolution."""

    def __init__(self, size: int, sink: FrameSink, chunk: int, on_picture: PictureSink | None = None) -> None:
        self.size, self.sink, self.chunk, self.on_picture = size, sink, chunk, on_picture
        self.buf = np.empty((chunk, size, size, 3), np.uint8)
        self.n_buf = 0
        self.t = 0
        self.mask: list[bool] = []
        self.source_time: list[float] = []
        self.source_index: list[int] = []

    def emit(self, img: np.ndarray, on_screen: bool, src_time: float, src_index: int = -1, picture=None) -> None:
        if self.on_picture is not None:
            self.on_picture(picture if on_screen else None)
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


class VideoTrack:
    """State of the video stream during the demux pass."""

    def __init__(
        self, stream, origin: Fraction, cfg: GridConfig, sink: FrameSink, chunk: int,
        on_picture: PictureSink | None = None,
    ) -> None:  # fmt: skip
        self.stream, self.origin, self.cfg = stream, origin, cfg
        self.grid = _GridWriter(cfg.size, sink, chunk, on_picture)
        self.cur_picture: FramePicture | None = None
        self._picture_scaler = VideoReformatter() if on_picture is not None else None
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

    def _picture(self) -> FramePicture | None:
        if self._picture_scaler is None:
            return None
        if self.cur_picture is None or self.cur_picture.frame is not self.cur:
            g = self.geometry
            self.cur_picture = FramePicture(self.cur, g.rotation, g.display, self._picture_scaler)
        return self.cur_picture

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
                g.emit(self._img(), True, float(self.cur_pos) / self.cfg.fps, self.cur_index, self._picture())
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
            g.emit(self._img(), True, float(self.cur_pos) / self.cfg.fps, self.cur_index, self._picture())
        while g.t < n_rows:
            g.emit(self._img(), False, float(self.cur_pos) / self.cfg.fps)
        g.flush()


class AudioTrack:
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
class GridConfig:
    fps: int
    sample_rate: int
    size: int
    aspect: str


def audio_row_mask(rows: np.ndarray, hop: int, span: tuple[int, int], gaps: list[tuple[int, int]]) -> np.ndarray:
    """(n,) bool for grid ``rows``: a row holds audio when the centre of its analysis window (sample row * hop) is
    decoded audio, inside ``span`` = [first, end) and in none of the filled ``gaps`` (sample ranges)."""
    centres = rows * hop
    first, end = span
    mask = (centres >= max(0, first)) & (centres < end)
    for g0, g1 in gaps:
        mask &= (centres < g0) | (centres >= g1)
    return mask
