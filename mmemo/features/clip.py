"""One clip from its file(s) to grid-aligned arrays: the single path that extract, predict and tests share.

Decoding, frame resizing and audio features all stream: frames go to ``on_frames`` in chunks as they are made,
audio samples feed an ``AudioFeatureStream`` whose rows go to ``on_features`` block by block, so memory does not
grow with the clip's length.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from mmemo.config import ExtractConfig
from mmemo.features.audio import AudioFeatureStream, FeatureCollector, FeatureSink
from mmemo.features.faces import FaceOptions, FaceRow, FaceTracker
from mmemo.media.decode import DecodedMedia, decode_media
from mmemo.media.grid import FrameSink


@dataclass
class FaceChunk:
    """Grid rows ``[start, start + n)`` of a clip's face (``mmemo.features.faces``); absent rows are masked (their
    crop black, their coordinates NaN): never a face."""

    start: int
    crops: np.ndarray  # (n, S, S, 3) uint8, S = face_size
    mask: np.ndarray  # (n,) bool: a face is there
    boxes: np.ndarray  # (n, 4) float32 x0, y0, x1, y1 in display pixels of the source
    landmarks: np.ndarray  # (n, 5, 2) float32: eyes, nose tip, mouth corners (x, y)
    scores: np.ndarray  # (n,) float32: the detector's score, interpolated between detection rows


FaceSink = Callable[[FaceChunk], None]
_END = object()  # the end of a FaceStream's queue
_DETECTOR: list = []  # one detector per process (its ONNX session costs ~50 ms to build)


def face_detector():
    """This process's face detector (built on first use; a one-line ConfigError when it cannot be)."""
    if not _DETECTOR:
        from mmemo.features.detector import RetinaFace

        _DETECTOR.append(RetinaFace(threads=1))  # extraction runs one process per core
    return _DETECTOR[0]


def face_options(cfg: ExtractConfig) -> FaceOptions:
    return FaceOptions(size=cfg.face_size, every=cfg.face_every)


class FaceStream:
    """Feeds a FaceTracker one picture per grid row and hands its rows on in chunks of ``chunk`` rows.

    ``background``: the tracker runs in a thread of its own, fed through a bounded queue, so that detection and
    alignment (onnxruntime and Pillow let go of the GIL) overlap with decoding and the audio features instead of
    following them; the rows, their order and every number are the same, and ``sink`` is still only called in
    the caller's thread (from ``push`` and ``finish``: a shard writer is not shared between threads).
    ``close`` stops the thread on a failure elsewhere."""

    _QUEUE = 32  # pictures in flight at most (each holds a decoded frame)

    def __init__(self, cfg: ExtractConfig, sink: FaceSink, chunk: int = 16, detector=None,
                 background: bool = False) -> None:  # fmt: skip
        # The process's detector is built at the first detection, so an audio-only clip never builds one.
        self.tracker = FaceTracker(detector or (lambda rgb: face_detector()(rgb)), face_options(cfg))
        self.sink, self.chunk, self.size = sink, chunk, cfg.face_size
        self.rows: list[FaceRow] = []
        self.n_rows = self.n_present = 0
        self._queue: queue.Queue | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._emit: FaceSink = sink
        if background:
            self._done: queue.SimpleQueue = queue.SimpleQueue()  # chunks made by the thread, for the caller's sink
            self._emit = self._done.put
            self._queue = queue.Queue(maxsize=self._QUEUE)
            self._thread = threading.Thread(target=self._work, name="mmemo-faces", daemon=True)
            self._thread.start()

    def _work(self) -> None:
        try:
            while True:
                item = self._queue.get()
                if item is _END:
                    return
                self._take(self.tracker.push(item))
        except BaseException as e:  # handed to the decoding thread by push / finish
            self._error = e
            while self._queue.get() is not _END:  # drain, so that a waiting producer is never stuck
                pass

    def push(self, picture) -> None:
        if self._queue is None:
            self._take(self.tracker.push(picture))
            return
        if self._error is not None:
            raise self._error
        self._queue.put(picture)
        self._forward()

    def _forward(self) -> None:
        """Hand the chunks the thread has made so far to the sink, in order, in this thread."""
        while True:
            try:
                chunk = self._done.get_nowait()
            except queue.Empty:
                return
            self.sink(chunk)

    def close(self) -> None:
        """Stop the background thread once it has taken the pictures already queued."""
        if self._thread is not None and self._thread.is_alive():
            self._queue.put(_END)
            self._thread.join()

    def finish(self) -> dict:
        """Flush every row; returns the clip's face summary (rows, rows with a face, detector runs, ...)."""
        self.close()
        if self._error is not None:
            raise self._error
        if self._thread is not None:
            self._forward()
            self._emit = self.sink  # the thread is done: the last rows go straight to the sink
        self._take(self.tracker.finish())
        self._flush()
        t = self.tracker
        return {"rows": self.n_rows, "present": self.n_present, "detections": t.n_detections, "multi": t.multi,
                "follows": t.follows}  # fmt: skip

    def _take(self, rows: list[FaceRow]) -> None:
        self.rows.extend(rows)
        while len(self.rows) >= self.chunk:
            self._flush(self.chunk)

    def _flush(self, n: int | None = None) -> None:
        rows, self.rows = (self.rows[:n], self.rows[n:]) if n is not None else (self.rows, [])
        if not rows:
            return
        s = self.size
        crops = np.zeros((len(rows), s, s, 3), np.uint8)
        for i, r in enumerate(rows):
            if r.present:
                crops[i] = r.crop
        mask = np.array([r.present for r in rows], bool)
        self.n_rows += len(rows)
        self.n_present += int(mask.sum())
        self._emit(
            FaceChunk(
                rows[0].row,
                crops,
                mask,
                np.stack([r.box for r in rows]),
                np.stack([r.landmarks for r in rows]),
                np.array([r.score for r in rows], np.float32),
            )
        )


def featurise(
    path: str | os.PathLike,
    cfg: ExtractConfig,
    *,
    audio_path: str | os.PathLike | None = None,
    on_frames: FrameSink,
    on_features: FeatureSink,
    on_faces: FaceSink | None = None,
    chunk_frames: int = 16,
    threads: int = 0,
) -> DecodedMedia:
    """Decode ``path`` onto the grid, sending frame chunks to ``on_frames``, feature rows to ``on_features`` and,
    when ``cfg.faces`` and the clip has video, face chunks to ``on_faces`` (its summary in ``face_stats``; the
    face tracker runs in a thread beside the decoding).

    Feature rows past the returned ``n_frames`` may be sent (audio that outlasts the video); sinks drop them.
    """
    stream = AudioFeatureStream(cfg, on_features)
    faces = FaceStream(cfg, on_faces, chunk_frames, background=True) if cfg.faces and on_faces is not None else None
    try:
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
            on_picture=faces.push if faces is not None else None,
            skip_loop_filter=cfg.skip_loop_filter,
        )
    except BaseException:
        if faces is not None:
            faces.close()  # no thread left behind holding decoded frames
        raise
    if dec.has_audio:
        stream.finish(dec.n_frames)
    if faces is not None:
        stats = faces.finish()
        if dec.has_video:
            dec.face_stats = stats
            if stats["rows"] != dec.n_frames:
                raise AssertionError(f"{stats['rows']} face rows for {dec.n_frames} rows")
    return dec


@dataclass
class ClipArrays:
    """A featurised clip in memory (what a shard holds, without the file)."""

    media: DecodedMedia
    frames: np.ndarray | None  # (T, S, S, 3) uint8, None without video
    features: dict[str, np.ndarray]  # name -> (T, D) float32, empty without audio
    faces: FaceChunk | None = None  # every row's face (start 0), None without video or with faces off


def featurise_in_memory(
    path: str | os.PathLike, cfg: ExtractConfig, *, audio_path: str | os.PathLike | None = None
) -> ClipArrays:
    """``featurise`` into memory: the same numbers ``mmemo extract`` writes, for prediction and tests."""
    chunks: list[np.ndarray] = []
    face_chunks: list[FaceChunk] = []
    sink = FeatureCollector()
    dec = featurise(path, cfg, audio_path=audio_path, on_frames=chunks.append, on_features=sink,
                    on_faces=face_chunks.append)  # fmt: skip
    frames = np.concatenate(chunks) if chunks else None
    features = sink.arrays(dec.n_frames) if dec.has_audio else {}
    faces = join_faces(face_chunks) if face_chunks else None
    return ClipArrays(dec, frames if dec.has_video else None, features, faces)


def join_faces(chunks: list[FaceChunk]) -> FaceChunk:
    """Consecutive chunks as one."""
    return FaceChunk(chunks[0].start, *(np.concatenate([getattr(c, k) for c in chunks])
                                        for k in ("crops", "mask", "boxes", "landmarks", "scores")))  # fmt: skip
