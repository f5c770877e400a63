"""Live sources: decode a stream onto the grid while it plays, in a background thread.

A source is anything PyAV (FFmpeg) opens: a file, an RTSP/HTTP URL, a capture device (with ``input_format``,
e.g. ``v4l2``, ``avfoundation``, ``dshow``), or ``-`` for standard input. The decoder thread maps frames and
samples onto the clip grid with the same code as ``decode_media`` (``VideoTrack`` / ``AudioTrack``), so a
live row ``t`` is the row ``t`` that ``mmemo extract`` would have written for a recording of the same stream.

What the consumer gets, through a queue, as soon as it exists:

- ``("video", rows (n, S, S, 3) uint8, mask (n,) bool, wall time)``: the next grid rows. Row ``t`` is known when
  the *next* source frame arrives (until then the frame on screen at ``t / fps`` could still be replaced), so rows
  arrive one source-frame interval after their frame.
- ``("audio", samples (n,) float32, wall time, span, gaps)``: consecutive mono samples from the origin on, with
  the audio track's decoded ``span`` and filled ``gaps`` (sample ranges) as of these samples.
- whatever the ``on_picture`` / ``on_end`` callbacks ``put`` (``mmemo.pipeline.stream``: ``("faces", chunk)``,
  each row's aligned face, a few rows after its frame);
- ``("end", n_rows, wall time)`` once the source ends (``n_rows`` as ``decode_media`` would count them), or
  ``("error", message, wall time)``.

``realtime=True`` reads a file at its natural pace (as ``ffmpeg -re``): each packet is released when the wall
clock reaches its timestamp, so a file stands in for a camera. Live sources pace themselves.
"""

from __future__ import annotations

import math
import os
import queue
import sys
import threading
import time
from collections.abc import Callable
from fractions import Fraction

import av
import numpy as np

from mmemo.errors import MediaError
from mmemo.media.grid import (
    AudioTrack,
    GridConfig,
    PictureSink,
    VideoTrack,
    best_stream,
    ffmpeg_reason,
    set_skip_loop_filter,
    stream_start,
)


def open_source(source: str, input_format: str | None = None, options: dict[str, str] | None = None):
    """Open ``source`` with PyAV ("-" = standard input); a one-line MediaError when it cannot be opened."""
    try:
        if source == "-":
            return av.open(sys.stdin.buffer, mode="r", format=input_format, options=options or {})
        return av.open(source, mode="r", format=input_format, options=options or {})
    except (av.FFmpegError, OSError) as e:
        raise MediaError(f"{source}: cannot open stream ({ffmpeg_reason(e)})") from None


class LiveDecoder(threading.Thread):
    """Demuxes and decodes ``source`` onto the grid, putting rows and samples on ``self.queue`` as they come."""

    def __init__(
        self,
        source: str,
        *,
        fps: int = 25,
        sample_rate: int = 16000,
        size: int = 224,
        aspect: str = "letterbox",
        use_video: bool = True,
        use_audio: bool = True,
        realtime: bool = False,
        every_hop: bool = False,
        input_format: str | None = None,
        options: dict[str, str] | None = None,
        threads: int = 0,
        on_picture: PictureSink | None = None,
        on_end: Callable[[], None] | None = None,
        skip_loop_filter: str = "none",
    ) -> None:
        """``on_picture``: called in this thread once per grid row with its source picture (the face tracker's
        input, as in ``decode_media``); ``on_end``: called in this thread after the last row, before ("end", ...)
        is queued (the tracker gives back its last rows). Both may ``put`` items of their own on the queue."""
        super().__init__(name="mmemo-live-decoder", daemon=True)
        self.on_picture, self.on_end = on_picture, on_end
        self.source, self.realtime = source, realtime
        self.cfg = GridConfig(fps, sample_rate, size, aspect)
        # A paced source (live, or a file read at its natural pace) is never made to wait: the consumer drops
        # work instead. A file read as fast as it decodes waits for the consumer (a bounded queue).
        # every_hop: the user wants every prediction of a recording piped in, and the pipe may wait for us.
        self.paced = (realtime or not os.path.isfile(source)) and not every_hop
        self.queue: queue.Queue = queue.Queue(maxsize=0 if self.paced else 64)
        self.stop_event = threading.Event()
        self.lag_s = 0.0  # how far the decoder ran behind the source's clock (realtime pacing only)
        self.container = open_source(source, input_format, options)  # errors surface in the caller's thread
        c = self.container
        self.vstream = best_stream(c, "video") if use_video else None
        self.astream = best_stream(c, "audio") if use_audio else None
        if self.vstream is None and self.astream is None:
            c.close()
            raise MediaError(f"{source}: no {'audio or video' if use_video and use_audio else 'usable'} stream")
        if self.vstream is not None:
            self.vstream.thread_type = "AUTO"
            self.vstream.thread_count = threads
            set_skip_loop_filter(self.vstream, skip_loop_filter)
        self.video: VideoTrack | None = None
        self.audio: AudioTrack | None = None

    @property
    def has_video(self) -> bool:
        return self.vstream is not None

    @property
    def has_audio(self) -> bool:
        return self.astream is not None

    def stop(self) -> None:
        self.stop_event.set()

    def put(self, item: tuple) -> None:
        """Queue ``item`` for the consumer (from this thread: ``on_picture`` / ``on_end`` use it)."""
        self._put(item)

    def _put(self, item: tuple) -> None:
        while not self.stop_event.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def _put_rows(self, rows: np.ndarray) -> None:
        # The grid writer hands rows over one at a time (chunk 1); its mask list says which were on screen.
        g = self.video.grid
        n = len(rows)
        self._put(("video", rows, np.asarray(g.mask[g.t - n : g.t], bool), time.monotonic()))

    def _put_audio(self, x: np.ndarray) -> None:
        # The track's span and holes travel with the samples: the consumer must not read this thread's objects.
        a = self.audio
        span, gaps = (a.span, tuple(a.gaps)) if a is not None else ((0, 0), ())
        self._put(("audio", x, time.monotonic(), span, gaps))

    def _pace(self, packet, clock: list) -> None:
        """Sleep until the wall clock reaches the packet's timestamp (measured from the first packet)."""
        ts = packet.dts if packet.dts is not None else packet.pts
        if ts is None or packet.time_base is None:
            return
        t = float(ts * packet.time_base)
        if not clock:
            clock.extend([t, time.monotonic()])
            return
        due = clock[1] + (t - clock[0])
        wait = due - time.monotonic()
        if wait > 0:
            self.stop_event.wait(wait)
        else:
            self.lag_s = max(self.lag_s, -wait)

    def run(self) -> None:
        try:
            self._run()
        except MediaError as e:
            self._put(("error", str(e), time.monotonic()))
        except av.FFmpegError as e:
            hint = ""
            if self.source == "-":  # an MP4 whose index sits at its end cannot be read from a pipe
                hint = "; a pipe needs a streamable container: MPEG-TS, Matroska/WebM, or MP4 with +faststart"
            self._put(("error", f"{self.source}: decoding failed ({ffmpeg_reason(e)}){hint}", time.monotonic()))
        except Exception as e:  # noqa: BLE001 - the consumer must hear of any end, or it waits forever
            self._put(("error", f"{self.source}: {type(e).__name__}: {e}", time.monotonic()))
        finally:
            self.container.close()

    def _run(self) -> None:
        primary = self.vstream if self.vstream is not None else self.astream
        # A file knows where its streams start; a live source may not: then its first timestamp is the origin.
        origin: Fraction | None = stream_start(primary) if primary.start_time is not None else None
        streams = [s for s in (self.vstream, self.astream) if s is not None]
        held: list = []  # packets demuxed before the origin is known
        clock: list = []
        for packet in self.container.demux(streams):
            if self.stop_event.is_set():
                return
            if self.realtime:
                self._pace(packet, clock)
            if origin is None:
                if packet.stream is primary and packet.pts is not None:
                    origin = packet.pts * packet.time_base
                else:
                    held.append(packet)
                    continue
            for p in [*held, packet]:
                self._decode(p, origin)
            held.clear()
        if origin is None:
            raise MediaError(f"{self.source}: the stream ended before any timestamped data")
        self._finish()  # (demux ends each stream with an empty packet, which flushed its decoder)

    def _decode(self, packet, origin: Fraction) -> None:
        for frame in packet.decode():
            self._frame(packet.stream, frame, origin)

    def _frame(self, stream, frame, origin: Fraction) -> None:
        if stream is self.vstream:
            if self.video is None:
                self.video = VideoTrack(stream, origin, self.cfg, self._put_rows, 1, self.on_picture)
            self.video.push(frame)
        else:
            if self.audio is None:
                self.audio = AudioTrack(stream, origin, self.cfg.sample_rate, self._put_audio)
            self.audio.push(frame)

    def _finish(self) -> None:
        fps, sr = self.cfg.fps, self.cfg.sample_rate
        if self.audio is not None:
            self.audio.finish()
        if self.video is not None:
            n_rows = math.ceil(float(self.video.end_position()) - 1e-6)
            self.video.finish(n_rows)
        elif self.audio is not None:
            n_rows = math.ceil(self.audio.span[1] / sr * fps - 1e-6)
        else:
            raise MediaError(f"{self.source}: no decodable frames or samples")
        if self.on_end is not None and self.video is not None:
            self.on_end()
        self._put(("end", n_rows, time.monotonic()))
