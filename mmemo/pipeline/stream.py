"""`mmemo predict --stream`: valence and arousal of a live source, every hop, in real time.

A ``LiveDecoder`` thread puts grid rows and audio samples on a queue as the source delivers them. This thread
computes each row's local audio features as soon as its analysis window is in (``AudioFeatureStream.advance``),
pools frames to the model's size a hop at a time (``_PooledOnRead``), and every ``hop`` seconds of media runs
the model on the sliding context window of the last ``context`` seconds (at most the model's ``max_seq_len``
rows), treated exactly as a clip that ends now: the same feature code, the same standardisation, the same model
as ``mmemo predict`` (and so the same engine: the PyTorch model, or an exported file with ``--engine``,
``Run.engine``).
Context features (rhythm) are computed on the window's onset envelope, as they would be for a clip of that length.

With the PyTorch model, each row's input embedding (``MultiModalTransformer.embed``: the frame CNN's output, the
audio projection) is kept in a ring buffer beside the context, so a hop embeds only the rows it brings and runs
``MultiModalTransformer.encode`` on the context: the numbers of running the whole model on the context (what
``infer`` does, ``embed_once=False``) to float rounding, without the CNN seeing each row once per hop (20 times at
a 10-s context and 0.5-s hops). The audio projection is kept too unless the model reads a context feature, whose
rows change with every window (it is one linear layer: recomputing it costs little).

One prediction per hop: ``time`` is the media time at the end of the hop, the values are the model's mean over
the hop's rows, ``latency_s`` the wall time from the arrival of the hop's newest row (the moment its frame and
audio were decoded) to the prediction.

When the machine is slower than the source, predictions are skipped, never queued: after each prediction the
loop jumps to the newest complete hop and counts (and reports) the hops it dropped, so latency stays bounded
instead of growing with the stream's length. Features are still computed for every row (they are cheap and the
rhythm context needs them).
"""

from __future__ import annotations

import math
import queue
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from mmemo.data.dataset import pool_frames
from mmemo.errors import MediaError, MmemoError
from mmemo.features.audio import AudioFeatureStream, compute_features, context_features
from mmemo.features.clip import FaceStream
from mmemo.features.registry import FEATURES
from mmemo.media.grid import audio_row_mask
from mmemo.media.live import LiveDecoder
from mmemo.pipeline.postprocess import StreamPostProcess
from mmemo.pipeline.predict import Run, check_modalities, embed_rows, encode_rows, infer, prepare_inputs


@dataclass
class StreamPrediction:
    time: float  # media time (s) at the end of the hop
    valence: float
    arousal: float
    latency_s: float  # from the arrival of the hop's newest row to this prediction
    first_row: int  # the hop covers grid rows [first_row, last_row)
    last_row: int
    dropped: int = 0  # hops skipped just before this one because the machine was behind

    def as_dict(self) -> dict:
        return {"time": round(self.time, 3), "valence": round(self.valence, 5), "arousal": round(self.arousal, 5),
                "latency_s": round(self.latency_s, 4), "dropped": self.dropped}  # fmt: skip


@dataclass
class StreamStats:
    predictions: int = 0
    dropped: int = 0
    rows: int = 0
    # The most recent ones only: a live stream runs for days. Per prediction, newest row -> prediction (a day at
    # 2 hops a second), and per row, its arrival -> the first prediction on it (an hour at 25 rows a second).
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=172_800))
    row_latencies: deque[float] = field(default_factory=lambda: deque(maxlen=90_000))
    decoder_lag_s: float = 0.0
    wall_s: float = 0.0

    def summary(self, fps: int) -> str:
        def q(xs, p):
            return float(np.percentile(xs, p)) if xs else float("nan")

        return (
            f"{self.predictions} predictions over {self.rows / fps:.1f} s of media in {self.wall_s:.1f} s; "
            f"{self.dropped} dropped (machine behind); latency median {q(self.latencies, 50):.3f} s, "
            f"p95 {q(self.latencies, 95):.3f} s"
        )


class _Rows:
    """A growing (n, ...) array whose rows before a given one can be let go; rows keep their absolute index.

    Appended pieces are joined only when rows are read (once a hop), not on every append: a live stream appends
    a frame at a time, and re-copying the whole context window each time would cost more than the model.
    """

    def __init__(self) -> None:
        self.base, self.n, self.pieces = 0, 0, []

    @property
    def end(self) -> int:
        return self.base + self.n

    @property
    def data(self) -> np.ndarray | None:
        if len(self.pieces) > 1:
            self.pieces = [np.concatenate(self.pieces)]
        return self.pieces[0] if self.pieces else None

    def append(self, rows: np.ndarray) -> None:
        self.pieces.append(rows)
        self.n += len(rows)

    def forget_before(self, row: int) -> None:
        cut = min(row, self.end) - self.base
        if cut > 0:
            self.pieces, self.base, self.n = [self.data[cut:]], self.base + cut, self.n - cut

    def restart_at(self, row: int) -> None:
        """Let every row go and take the next appended one as row ``row`` (>= end: rows are never reused)."""
        if row < self.end:
            raise IndexError(f"restart at row {row}, before the end {self.end} of the rows kept")
        self.base, self.n, self.pieces = row, 0, []

    def get(self, start: int, stop: int) -> np.ndarray:
        if start < self.base:
            raise IndexError(f"rows from {start} requested, only rows from {self.base} are kept")
        return self.data[start - self.base : stop - self.base]


class _PooledOnRead:
    """Image rows (n, S, S, 3) uint8 appended as they arrive and pooled to ``size`` (``pool_frames``) when first
    read, every row not pooled yet in one call; a row is held at full size only until then, and rows that leave
    the context unread (dropped hops) are never pooled. Pooling is per row, so the bytes are those of pooling each
    row as it comes; but torch pools one 224-px frame in about 3 ms of CPU with its 2 threads on a 2-core machine
    (16 ms beside the decoder thread), a batch of 13 in about 1.3 ms a frame.
    """

    def __init__(self, size: int) -> None:
        self.size, self.raw, self.pooled = size, _Rows(), _Rows()

    @property
    def end(self) -> int:
        return self.raw.end

    def append(self, rows: np.ndarray) -> None:
        self.raw.append(rows)

    def get(self, start: int, stop: int) -> np.ndarray:
        if self.pooled.end < start:  # the rows in between were never read: skip them
            self.pooled.restart_at(start)
        if self.pooled.end < stop:
            self.pooled.append(pool_frames(self.raw.get(self.pooled.end, stop), self.size))
            self.raw.forget_before(stop)
        return self.pooled.get(start, stop)

    def forget_before(self, row: int) -> None:
        self.raw.forget_before(row)
        self.pooled.forget_before(row)


class StreamPredictor:
    """Consumes a ``LiveDecoder``'s queue; see the module docstring."""

    def __init__(self, run: Run, decoder: LiveDecoder, *, hop_s: float = 0.5, context_s: float = 10.0,
                 embed_once: bool = True) -> None:  # fmt: skip
        cfg = run.extract_cfg
        check_modalities(run, decoder.has_audio, decoder.has_video, decoder.source)
        self.run, self.dec, self.fps = run, decoder, cfg.fps
        # Hop k ends at row ceil(k * hop_s * fps): the prediction "at" k * hop_s covers all media up to then, and
        # hops of a fractional number of rows (0.5 s = 12.5 rows) alternate (13, 12, ...) to keep that pace.
        self.hop_rows = hop_s * cfg.fps
        self.hop = max(1, math.ceil(self.hop_rows))
        self.k = 0  # hops done
        self.context = max(self.hop, min(round(context_s * cfg.fps), run.model_cfg.max_seq_len))
        self.use_audio = run.model_cfg.audio_dim > 0 and decoder.has_audio
        self.use_video = run.model_cfg.video and decoder.has_video
        self.local = [n for n in run.feature_names if not FEATURES[n].context]
        self.ctx_names = [n for n in run.feature_names if FEATURES[n].context]
        self.feats = {n: _Rows() for n in self.local}
        self.features = AudioFeatureStream(cfg, self._on_features) if self.use_audio else None
        self.audio_arrival = _Rows()  # (n, 2): [end sample, wall time] of each audio piece
        self.n_samples = 0
        size = run.model_cfg.video_size
        self.frames, self.vmask, self.v_arrival = _PooledOnRead(size), _Rows(), _Rows()
        # Faces (a model trained on them): the decoder thread's tracker sends each row's crop a few rows after its
        # frame (the tracker's delay: every + smooth // 2 rows); a row is ready when its face has come too.
        self.use_faces = self.use_video and run.visual == "faces"
        self.crops, self.fmask = _PooledOnRead(size), _Rows()
        self.n_rows: int | None = None  # known at the end of the source
        self.done = 0  # rows covered by predictions so far
        # The run's fitted post-processing, causal (a trailing mean, then the rest of the delay)
        self.post = StreamPostProcess(run.post) if run.post is not None else None
        self.row_latencies = np.zeros(0)
        # The audio track's decoded span and holes, as the decoder thread sent them with its latest samples.
        self.audio_span: tuple[int, int] | None = None
        self.audio_gaps: tuple[tuple[int, int], ...] = ()
        # The ring buffer of input embeddings (the module docstring): rows [emb_v.base, embedded) of the context.
        # emb_v (n, H) float32 the frame CNN's output, zero where no frame; emb_vok (n,) bool where there is one;
        # emb_a (n, H) the audio projection before its mask (the mask is the window's, applied per hop).
        self.embed_once = embed_once and run.engine is None
        self.emb_v, self.emb_vok, self.emb_a = _Rows(), _Rows(), _Rows()
        self.embedded = 0

    def _on_features(self, name: str, first_row: int, rows: np.ndarray) -> None:
        if name in self.feats:
            self.feats[name].append(rows)

    # --------------------------------------------------------------------------------------------- intake
    def _take(self, item: tuple) -> None:
        kind = item[0]
        if kind == "video":
            _, rows, mask, wall = item
            if self.use_video:
                self.frames.append(rows)
                self.vmask.append(mask)
            self.v_arrival.append(np.full(len(rows), wall))
        elif kind == "faces":
            if self.use_faces:
                chunk = item[1]
                self.crops.append(chunk.crops)
                self.fmask.append(chunk.mask)
        elif kind == "audio":
            _, x, wall, self.audio_span, self.audio_gaps = item
            if self.use_audio:
                self.features.push(x)
            self.n_samples += x.size
            self.audio_arrival.append(np.array([[self.n_samples, wall]]))
        elif kind == "end":
            self.n_rows = item[1]
            if self.use_audio:  # rows past the audio's end see zeros, as in a recording
                need = (self.n_rows - 1) * self.run.extract_cfg.hop_length + self.features.half - self.n_samples
                self.features.push(np.zeros(max(0, need) + 1, np.float32))
        else:
            raise MediaError(item[1])

    def _available(self) -> int:
        """Rows for which every input the model reads has arrived."""
        n = math.inf
        if self.dec.has_video:
            n = min(n, self.v_arrival.end)
        if self.use_faces:
            n = min(n, self.fmask.end)
        if self.use_audio:
            n = min(n, self.features.advance(self.n_rows))
        elif self.dec.has_audio and not self.dec.has_video:  # audio-only source, model without audio input
            n = min(n, self._audio_rows())
        if self.n_rows is not None:
            n = self.n_rows if n == math.inf else min(n, self.n_rows)
        return 0 if n == math.inf else int(n)

    def _audio_rows(self) -> int:
        half, hop = self.run.extract_cfg.n_fft // 2, self.run.extract_cfg.hop_length
        return max(0, (self.n_samples - half) // hop + 1)

    def _arrival(self, rows: np.ndarray) -> np.ndarray:
        """Wall time at which each of ``rows`` had its frame and audio decoded (what latency is measured from: the
        face tracker's delay, a row's face coming a few rows after its frame, is part of the latency)."""
        t = np.full(len(rows), -np.inf)
        if self.dec.has_video:
            t = np.maximum(t, self.v_arrival.get(int(rows[0]), int(rows[-1]) + 1))
        if self.use_audio and self.audio_arrival.data is not None:
            arr = self.audio_arrival.data
            need = rows * self.run.extract_cfg.hop_length + self.run.extract_cfg.n_fft // 2
            i = np.minimum(np.searchsorted(arr[:, 0], need, side="left"), len(arr) - 1)
            t = np.maximum(t, arr[i, 1])
        return t

    # ---------------------------------------------------------------------------------------------- model
    def _inputs(self, w0: int, w1: int) -> tuple:
        n = w1 - w0
        features = None
        if self.use_audio:
            features = self._features(w0, w1, w0)
            audio_mask = self._audio_mask(w0, w1)
        else:
            audio_mask = np.zeros(n, bool)
        frames = self.frames.get(w0, w1) if self.use_video else None
        video_mask = self.vmask.get(w0, w1) if self.use_video else None
        faces = (self.crops.get(w0, w1), self.fmask.get(w0, w1)) if self.use_faces else None
        return prepare_inputs(self.run, features, frames, audio_mask, video_mask, self.dec.source, faces)

    def _features(self, r0: int, r1: int, w0: int) -> dict[str, np.ndarray]:
        """Rows [r0, r1) of every audio feature: the local ones as computed, the context ones (rhythm) on the
        onsets of the window's rows [w0, r1), as for a clip that starts at w0 and ends at r1."""
        features = {name: self.feats[name].get(r0, r1) for name in self.local}
        if self.ctx_names:
            onset = self.features.onset_envelope(w0, r1)
            for name, _, x in context_features(onset, self.run.extract_cfg, self.ctx_names):
                features[name] = x[r0 - w0 :]
        return features

    def _audio_mask(self, w0: int, w1: int) -> np.ndarray:
        """Rows whose window centre is decoded audio (not the silence before a late start or in a hole)."""
        if self.audio_span is None:
            return np.zeros(w1 - w0, bool)
        return audio_row_mask(np.arange(w0, w1), self.run.extract_cfg.hop_length, self.audio_span, self.audio_gaps)

    def _encode(self, w0: int, w1: int) -> np.ndarray:
        """The model on the context rows [w0, w1) from the ring buffer of embeddings, after embedding the rows
        that are new to it (all of them on the first hop, or after dropped hops left a gap): (w1 - w0, 2)."""
        r0 = max(w0, self.embedded)
        if r0 > self.embedded:  # the rows in between fell out of the context unseen (dropped hops)
            for rows in (self.emb_v, self.emb_vok, self.emb_a):
                rows.restart_at(r0)
        if r0 < w1:
            self._embed(r0, w1)
        self.embedded = w1
        n, H, dev = w1 - w0, self.run.model_cfg.hidden, self.run.device
        a, audio_ok = np.zeros((n, H), np.float32), np.zeros(n, bool)
        if self.use_audio:
            audio_ok = self._audio_mask(w0, w1)
            if self.ctx_names:  # the window's rhythm rows: projected anew, masked as the model masks them
                a = self._embed_audio(w0, w1, w0, audio_ok)
            else:
                a = self.emb_a.get(w0, w1) * audio_ok[:, None]  # (n, H), the product embed makes
        v, video_ok = np.zeros((n, H), np.float32), np.zeros(n, bool)
        if self.use_video:
            v, video_ok = self.emb_v.get(w0, w1), self.emb_vok.get(w0, w1)
        emb = tuple(torch.from_numpy(np.ascontiguousarray(x))[None].to(dev) for x in (a, v, audio_ok, video_ok))
        return encode_rows(self.run, emb, 0, n)

    def _embed(self, r0: int, r1: int) -> None:
        """Append rows [r0, r1)'s embeddings to the ring buffer: the frame CNN on their frames (or faces), and,
        without context features, their audio projection."""
        n = r1 - r0
        if self.use_video:
            frames, vmask = self.frames.get(r0, r1), self.vmask.get(r0, r1)
            faces = (self.crops.get(r0, r1), self.fmask.get(r0, r1)) if self.use_faces else None
            _, pooled, _, video_mask = prepare_inputs(self.run, None, frames, np.zeros(n, bool), vmask,
                                                      self.dec.source, faces)  # fmt: skip
            _, v, _, video_ok = embed_rows(self.run, None, pooled, np.zeros(n, bool), video_mask)
            self.emb_v.append(v[0].float().cpu().numpy())
            self.emb_vok.append(video_ok[0].cpu().numpy())
        if self.use_audio and not self.ctx_names:
            self.emb_a.append(self._embed_audio(r0, r1, r0, np.ones(n, bool)))

    def _embed_audio(self, r0: int, r1: int, w0: int, mask: np.ndarray) -> np.ndarray:
        """The audio projection (r1 - r0, H) of rows [r0, r1) times ``mask``, their features standardised as
        ``prepare_inputs`` does; context features computed on the onsets of rows [w0, r1)."""
        audio = prepare_inputs(self.run, self._features(r0, r1, w0), None, mask, None, self.dec.source)[0]
        a = embed_rows(self.run, audio, None, mask, np.zeros(r1 - r0, bool))[0]
        return a[0].float().cpu().numpy()

    def predict(self, end: int, dropped: int) -> StreamPrediction:
        """The prediction for the hop ending at row ``end``, from the context window that ends there."""
        w0 = max(0, end - self.context)
        y = self._encode(w0, end) if self.embed_once else infer(self.run, *self._inputs(w0, end))  # (end - w0, 2)
        h0 = max(w0, self.done, self._boundary(self.k - 1))  # this hop's rows (the last hop may be shorter)
        rows = y[h0 - w0 :]
        if self.post is not None:  # the fitted chain, causal: each row once, in order
            rows = self.post.push(y[max(w0, self.done) - w0 :])[-len(rows) :] if len(rows) else rows
        v, a = rows.mean(axis=0)
        now = time.monotonic()
        # Rows of dropped hops that fall out of the window never get a prediction: only the window's count.
        arrival = self._arrival(np.arange(max(self.done, w0), end))
        p = StreamPrediction(end / self.fps, float(v), float(a), now - float(arrival[-1]), h0, end, dropped)
        self.row_latencies = now - arrival  # the rows since the last prediction get their first one now
        self.done = end
        # The next window starts at or after end + 1 - context: older rows are not needed again.
        for rows in (*self.feats.values(), self.frames, self.vmask, self.v_arrival, self.crops, self.fmask,
                     self.emb_v, self.emb_vok, self.emb_a):  # fmt: skip
            rows.forget_before(end + 1 - self.context)
        if self.features is not None and self.audio_arrival.n:
            self.features.forget_onsets_before(end + 1 - self.context)
            # Arrival times are looked up from row `end` on: keep the audio piece that reaches that row's window.
            need = end * self.run.extract_cfg.hop_length + self.features.half
            i = int(np.searchsorted(self.audio_arrival.data[:, 0], need, side="left"))
            self.audio_arrival.forget_before(self.audio_arrival.base + min(i, self.audio_arrival.n - 1))
        return p

    # ----------------------------------------------------------------------------------------------- loop
    def run_loop(self, emit: Callable[[StreamPrediction], None], stats: StreamStats) -> StreamStats:
        t0 = time.monotonic()
        while True:
            self._drain()
            avail = self._available()
            finished = self.n_rows is not None and avail >= self.n_rows
            newest = self._hops_in(avail)
            if newest > self.k:
                # A paced source: jump to the newest complete hop, dropping (not queueing) the ones before it.
                # A file read as fast as it decodes: every hop, in order (the decoder waits for us).
                k = newest if self.dec.paced else self.k + 1
                end, dropped, self.k = self._boundary(k), k - self.k - 1, k
            elif finished and avail > self.done:
                end, dropped = avail, 0  # the last, shorter hop
            elif finished:
                break
            else:
                continue
            p = self.predict(end, dropped)
            emit(p)
            stats.predictions += 1
            stats.dropped += dropped
            stats.latencies.append(p.latency_s)
            stats.row_latencies.extend(self.row_latencies.tolist())
        stats.rows = self.done
        stats.decoder_lag_s = self.dec.lag_s
        stats.wall_s = time.monotonic() - t0
        return stats

    def _boundary(self, k: int) -> int:
        return math.ceil(k * self.hop_rows - 1e-9)

    def _hops_in(self, rows: int) -> int:
        """The number of hops complete within ``rows`` rows."""
        k = int(rows // self.hop_rows)
        while self._boundary(k + 1) <= rows:
            k += 1
        while k > 0 and self._boundary(k) > rows:
            k -= 1
        return k

    def _drain(self) -> None:
        """Take everything queued; wait for at least one item when nothing new can be predicted yet."""
        q = self.dec.queue
        if not self._ready():
            try:
                self._take(q.get(timeout=30.0))
            except queue.Empty:
                if not self.dec.is_alive():
                    raise MediaError(f"{self.dec.source}: the decoder stopped without a word") from None
                return
        while True:
            try:
                self._take(q.get_nowait())
            except queue.Empty:
                return

    def _ready(self) -> bool:
        return self.n_rows is not None or self._hops_in(self._available()) > self.k


def stream_predict(
    run: Run,
    source: str,
    emit: Callable[[StreamPrediction], None],
    *,
    hop_s: float = 0.5,
    context_s: float = 10.0,
    realtime: bool = False,
    every_hop: bool = False,
    input_format: str | None = None,
    options: dict[str, str] | None = None,
    threads: int = 0,
    embed_once: bool = True,
) -> StreamStats:
    """Predict ``source`` live, calling ``emit`` once per hop; returns the stream's statistics.

    ``embed_once=False`` runs the whole model on the context every hop instead of keeping each row's embedding
    (the reference the ring buffer is tested and measured against; the same numbers to float rounding).

    Raises:
        MmemoError: one line when the source cannot be opened or breaks, or (before opening it) when the run's
            model reads ``--import`` streams: a live source has none.
    """
    if hop_s <= 0 or context_s <= 0:
        raise MmemoError(f"hop {hop_s} s and context {context_s} s must be positive")
    if run.imports:  # refused before the source is opened: predictions with every import masked would mislead
        names = ", ".join(i.name for i in run.imports)
        raise MmemoError(f"{run.path}: the model reads imported features ({names}), which a live source cannot "
                         "give: predict recorded clips with `mmemo predict CLIP --import NAME=DIR`")  # fmt: skip
    cfg = run.extract_cfg
    decoder: LiveDecoder | None = None
    # The face tracker of extraction, in the decoder thread, handing each row's face on as soon as it lets go of it.
    faces = (
        FaceStream(cfg, lambda chunk: decoder.put(("faces", chunk)), chunk=1)
        if run.visual == "faces" and run.model_cfg.video
        else None
    )
    decoder = LiveDecoder(
        source, fps=cfg.fps, sample_rate=cfg.sample_rate, size=cfg.frame_size, aspect=cfg.aspect,
        use_video=run.model_cfg.video, use_audio=run.model_cfg.audio_dim > 0, realtime=realtime, every_hop=every_hop,
        input_format=input_format, options=options, threads=threads,
        on_picture=faces.push if faces is not None else None, on_end=faces.finish if faces is not None else None,
        skip_loop_filter=cfg.skip_loop_filter,
    )  # fmt: skip
    predictor = StreamPredictor(run, decoder, hop_s=hop_s, context_s=context_s, embed_once=embed_once)
    _warm_up(run, predictor.context)
    stats = StreamStats()
    decoder.start()
    try:
        return predictor.run_loop(emit, stats)
    finally:
        decoder.stop()
        decoder.join(timeout=5)


def _warm_up(run: Run, rows: int) -> None:
    """One pass on silence before the source starts: librosa's lazy imports and torch's first call take
    seconds, which a live stream would otherwise pay in dropped hops."""
    cfg = run.extract_cfg
    features = compute_features(np.zeros(rows * cfg.hop_length, np.float32), cfg, rows)
    size = run.model_cfg.video_size
    frames = np.zeros((rows, size, size, 3), np.uint8) if run.model_cfg.video else None
    mask = np.ones(rows, bool)
    faces = (frames, np.zeros(rows, bool)) if frames is not None else None
    infer(run, *prepare_inputs(run, features, frames, mask, mask, "warm-up", faces))
