"""Audio features on the video frame grid, computed with librosa, streamed block by block.

Row ``t`` of every feature belongs to video frame ``t``: hop = sample_rate / fps = 640 samples (40 ms at
16 kHz and 25 fps) and the analysis window of ``n_fft`` samples (64 ms by default) is centred on the frame's
timestamp ``t / fps``, the instant whose picture row ``t`` shows, with zeros beyond the signal's ends. This is
librosa's ``center=True`` convention, so row ``t`` equals column ``t`` of ``librosa.feature.*(y, hop_length=640,
center=True)`` on the same audio.

Within a block of rows, one framing of the signal feeds the time-domain features (RMS, zero-crossing rate), one
STFT feeds the spectral ones (log-mel, centroid, rolloff) and the log-mel spectrogram feeds MFCC and the onset
envelope. The rhythm features need seconds of context (an 8 s tempogram), so they are computed at the end from
the onset envelope, which is the one per-row value kept for the whole clip (4 bytes a row).

The openSMILE sets (``egemaps``, ``compare``: ``mmemo.features.smile``) are registered here too, as stream
features: each reads the raw samples through its own block stream, fed by ``AudioFeatureStream`` beside the rest.

Memory does not grow with clip length: ``AudioFeatureStream`` holds at most one block (BLOCK_ROWS rows, 60 s)
of samples (an openSMILE stream one block plus its margins). Blocks always start at multiples of BLOCK_ROWS, so
the numbers do not depend on how the audio arrives; ``compute_features`` on a whole signal runs the very same
stream.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property, partial

import librosa
import numpy as np
from threadpoolctl import threadpool_limits

from mmemo.config import ExtractConfig
from mmemo.features.registry import FEATURES, check_features, register
from mmemo.features.smile import SMILE_SETS, SmileStream, check_smile

# Tempi outside this range are not rhythm a listener would tap to; pulse clarity is measured within it.
_MIN_BPM, _MAX_BPM = 30.0, 300.0
BLOCK_ROWS = 1500  # 60 s at 25 fps: a block's STFT is ~3 MB

FeatureSink = Callable[[str, int, np.ndarray], None]  # (feature name, first row, rows (n, D) float32)


class AudioAnalysis:
    """Shared intermediate results for ``n_rows`` consecutive rows of one clip.

    ``padded`` holds the samples of their windows: ``(n_rows - 1) * hop + n_fft`` samples starting ``n_fft // 2``
    before the first row's centre. ``prev_mel`` is the log-mel column of the row before the block (for the onset
    flux); None at the start of a clip.
    """

    def __init__(self, padded: np.ndarray, n_rows: int, cfg: ExtractConfig, prev_mel: np.ndarray | None) -> None:
        self.padded, self.n_rows, self.cfg, self.prev_mel = padded, n_rows, cfg, prev_mel

    @cached_property
    def frames(self) -> np.ndarray:
        """(n_fft, n) time-domain analysis frames."""
        return librosa.util.frame(self.padded, frame_length=self.cfg.n_fft, hop_length=self.cfg.hop_length)

    @cached_property
    def magnitude(self) -> np.ndarray:
        """(1 + n_fft // 2, n) magnitude of the Hann-windowed STFT."""
        stft = librosa.stft(
            self.padded, n_fft=self.cfg.n_fft, hop_length=self.cfg.hop_length, center=False, window="hann"
        )
        return np.abs(stft)

    @cached_property
    def mel_db(self) -> np.ndarray:
        """(n_mels, n) log-mel power spectrogram in dB (absolute, ref 1.0, floor -100 dB)."""
        cfg = self.cfg
        mel = librosa.feature.melspectrogram(
            S=self.magnitude**2, sr=cfg.sample_rate, n_fft=cfg.n_fft, n_mels=cfg.n_mels, fmin=cfg.fmin, fmax=cfg.fmax
        )
        # top_db=None: a clip-relative floor would make the same sound differ between clips.
        return librosa.power_to_db(mel, ref=1.0, amin=1e-10, top_db=None)

    @cached_property
    def onset(self) -> np.ndarray:
        """(n,) onset strength: mean positive log-mel flux from the previous row (librosa's definition, lag 1).

        Row 0 of a clip has no previous row and gets 0, as ``librosa.onset.onset_strength(center=False)`` does.
        """
        mel = self.mel_db
        prev = mel[:, :1] if self.prev_mel is None else self.prev_mel[:, None]
        flux = np.maximum(0.0, np.diff(np.concatenate([prev, mel], axis=1), axis=1))
        return flux.mean(axis=0)


def _rows(x: np.ndarray) -> np.ndarray:
    """(D, n) or (n,) -> (n, D) float32."""
    x = np.asarray(x, np.float32)
    return x.reshape(1, -1).T.copy() if x.ndim == 1 else np.ascontiguousarray(x.T)


@register("logmel", dim=lambda cfg: cfg.n_mels, description="log-mel power spectrogram, dB (n_mels bands)")
def logmel(a: AudioAnalysis) -> np.ndarray:
    return _rows(a.mel_db)


@register("rms", dim=1, description="RMS energy of the analysis window (linear amplitude)")
def rms(a: AudioAnalysis) -> np.ndarray:
    return _rows(np.sqrt(np.mean(a.frames.astype(np.float64) ** 2, axis=0)))


@register("centroid", dim=1, description="spectral centroid, Hz (0 for silence)")
def centroid(a: AudioAnalysis) -> np.ndarray:
    c = librosa.feature.spectral_centroid(S=a.magnitude, sr=a.cfg.sample_rate, n_fft=a.cfg.n_fft)
    return _rows(c[0])


@register("rolloff", dim=1, description="spectral rolloff frequency, Hz (rolloff_percent of the energy below)")
def rolloff(a: AudioAnalysis) -> np.ndarray:
    r = librosa.feature.spectral_rolloff(
        S=a.magnitude, sr=a.cfg.sample_rate, n_fft=a.cfg.n_fft, roll_percent=a.cfg.rolloff_percent
    )
    return _rows(r[0])


@register("zcr", dim=1, description="zero-crossing rate, crossings per sample")
def zcr(a: AudioAnalysis) -> np.ndarray:
    crossings = librosa.zero_crossings(a.frames, axis=0, pad=False)
    return _rows(crossings.mean(axis=0))


@register("mfcc", dim=lambda cfg: cfg.n_mfcc, description="MFCC from the log-mel spectrogram (n_mfcc)")
def mfcc(a: AudioAnalysis) -> np.ndarray:
    return _rows(librosa.feature.mfcc(S=a.mel_db, n_mfcc=a.cfg.n_mfcc))


@register(
    "rhythm",
    dim=3,
    description="onset strength; local tempo, BPM; pulse clarity in [0, 1] (tempogram peak in 30-300 BPM)",
    context=True,
)
def rhythm(onset: np.ndarray, rows: slice, cfg: ExtractConfig) -> np.ndarray:
    """Rows ``rows`` of [onset, local tempo, pulse clarity] from the whole clip's onset envelope (T,)."""
    tg = _tempogram(onset, rows, cfg)
    tempo = librosa.feature.tempo(
        tg=tg, sr=cfg.sample_rate, hop_length=cfg.hop_length, aggregate=None, max_tempo=_MAX_BPM
    )
    lags = np.arange(tg.shape[0])
    with np.errstate(divide="ignore"):
        bpm = 60.0 * cfg.fps / lags
    band = (bpm >= _MIN_BPM) & (bpm <= _MAX_BPM)
    clarity = tg[band].max(axis=0) if band.any() else np.zeros(tg.shape[1])
    # Without any onset there is no tempo to speak of: report 0 BPM rather than the prior's favourite.
    tempo = np.where(clarity > 0, tempo, 0.0)
    return np.stack([onset[rows], tempo, clarity], axis=1).astype(np.float32)


_SMILE_DESCRIPTIONS = {
    "egemaps": "eGeMAPS v02 low-level descriptors (openSMILE; loudness, F0, jitter, shimmer, formants, ...)",
    "compare": "ComParE 2016 low-level descriptors (openSMILE; auditory spectrum, MFCC, F0, voicing, energy, ...)",
}
for _name, _set in SMILE_SETS.items():
    register(_name, dim=_set.dim, description=_SMILE_DESCRIPTIONS[_name], stream=True, requires=check_smile)(
        partial(SmileStream, _name)
    )


def _tempogram(onset: np.ndarray, rows: slice, cfg: ExtractConfig) -> np.ndarray:
    """(win, n) autocorrelation tempogram for ``rows``, as ``librosa.feature.tempogram(center=True)``.

    The envelope's mean is removed first: an envelope that never goes negative correlates with itself at every
    lag, which would make white noise look as rhythmic as a metronome. Negative correlations (no periodicity at
    that lag) are clipped to 0, as librosa's tempo estimator expects.
    """
    win = max(8, int(round(cfg.tempo_window_s * cfg.fps)))
    x = onset - onset.mean()
    x = np.pad(x, (win // 2, win // 2), mode="linear_ramp", end_values=(0, 0))
    frames = librosa.util.frame(x, frame_length=win, hop_length=1)[:, rows]  # view: (win, n)
    window = librosa.filters.get_window("hann", win, fftbins=True)[:, None]
    tg = librosa.util.normalize(librosa.autocorrelate(frames * window, axis=0), norm=np.inf, axis=0)
    return np.clip(tg, 0, None)


class AudioFeatureStream:
    """Computes ``cfg.features`` row block by row block as mono samples arrive.

    ``push(samples)`` any number of times, then ``finish(n_rows)``: every feature's rows ``[0, n_rows)`` reach
    ``sink(name, first_row, rows)`` in order (rows past ``n_rows`` may be sent too and are to be dropped by the
    sink; rows past the audio's end see zeros). Holds at most one block of samples.
    """

    def __init__(self, cfg: ExtractConfig, sink: FeatureSink, block_rows: int = BLOCK_ROWS) -> None:
        check_features(cfg.features)
        self.cfg, self.sink, self.block = cfg, sink, block_rows
        self.half = cfg.n_fft // 2
        self.buf = np.zeros(self.half, np.float32)  # the zeros before sample 0
        self.buf_start = -self.half  # sample index of buf[0]
        self.pending: list[np.ndarray] = []  # pushed pieces not yet joined to buf (joined once per block)
        self.n_pending = 0
        self.next_row = 0
        self.prev_mel: np.ndarray | None = None
        self.onsets: list[np.ndarray] = []
        self.onset_base = 0  # row of self.onsets' first value
        self.local = [n for n in cfg.features if not FEATURES[n].context and not FEATURES[n].stream]
        self.context = [n for n in cfg.features if FEATURES[n].context]
        # Stream features read the samples themselves (their own buffers and blocks, their rows to the same sink).
        self.streams = [FEATURES[n].fn(cfg, sink, block_rows) for n in cfg.features if FEATURES[n].stream]

    def _needed_end(self, rows: int) -> int:
        """Sample index just past the last window of rows [next_row, next_row + rows)."""
        return (self.next_row + rows - 1) * self.cfg.hop_length + self.half

    def push(self, samples: np.ndarray) -> None:
        for s in self.streams:
            s.push(samples)
        self.pending.append(np.asarray(samples, np.float32))
        self.n_pending += self.pending[-1].size
        if self.buf_start + self.buf.size + self.n_pending >= self._needed_end(self.block):
            self._join()
            while self.buf_start + self.buf.size >= self._needed_end(self.block):
                self._compute(self.block)

    def _join(self) -> None:
        if self.pending:
            self.buf = np.concatenate([self.buf, *self.pending])
            self.pending, self.n_pending = [], 0

    def _compute(self, n: int) -> None:
        hop = self.cfg.hop_length
        start = self.next_row * hop - self.half
        length = (n - 1) * hop + self.cfg.n_fft
        seg = self.buf[start - self.buf_start : start - self.buf_start + length]
        if seg.size < length:
            seg = np.pad(seg, (0, length - seg.size))
        a = AudioAnalysis(seg, n, self.cfg, self.prev_mel)
        # One BLAS thread: a multi-threaded matrix product sums in another order, and a clip must give the same
        # bits in the main process as in any of N workers (the parallelism is per clip).
        with threadpool_limits(limits=1):
            for name in self.local:
                self.sink(name, self.next_row, _checked(name, FEATURES[name].fn(a), n, self.cfg))
            if self.context:
                self.onsets.append(a.onset.astype(np.float32))
                self.prev_mel = a.mel_db[:, -1]
        self.next_row += n
        keep_from = self.next_row * hop - self.half  # the next block's first window starts here
        self.buf = self.buf[keep_from - self.buf_start :]
        self.buf_start = keep_from

    def advance(self, limit: int | None = None) -> int:
        """Compute, as one block, every row (up to ``limit``) whose analysis window has fully arrived.

        For live input, where rows are wanted as soon as their audio is in rather than a block at a time. Rows
        computed this way can differ from block-computed ones in the last bits (BLAS sums a matrix of another
        shape in another order), never more. Returns the number of rows computed so far.
        """
        self._join()
        hop, end = self.cfg.hop_length, self.buf_start + self.buf.size
        ready = (end - self.half) // hop + 1  # rows whose window [t * hop - half, t * hop + half) is in
        if limit is not None:
            ready = min(ready, limit)
        if ready > self.next_row:
            self._compute(ready - self.next_row)
        return min([self.next_row] + [s.advance(limit) for s in self.streams])

    def onset_envelope(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """(n,) onset strength of rows [start, stop) computed so far (the context features' input)."""
        if not self.onsets:
            return np.zeros(0, np.float32)
        if start < self.onset_base:
            raise IndexError(f"onsets from row {start} asked for, only those from {self.onset_base} are kept")
        stop = self.next_row if stop is None else stop
        return np.concatenate(self.onsets)[start - self.onset_base : stop - self.onset_base]

    def forget_onsets_before(self, row: int) -> None:
        """Let go of the onset envelope before ``row`` (a live stream's context window has moved past it)."""
        cut = min(row, self.next_row) - self.onset_base
        if cut > 0 and self.onsets:
            self.onsets = [np.concatenate(self.onsets)[cut:]]
            self.onset_base += cut

    def finish(self, n_rows: int) -> None:
        """Compute the rows still missing up to ``n_rows`` (zeros past the audio), then the context features."""
        for s in self.streams:
            s.finish(n_rows)
        self._join()
        while self.next_row < n_rows:
            self._compute(min(self.block, n_rows - self.next_row))
        if not self.context:
            return
        for name, r0, x in context_features(self.onset_envelope(0, n_rows), self.cfg, self.context, self.block):
            self.sink(name, r0, x)


def context_features(onset: np.ndarray, cfg: ExtractConfig, names: list[str], block: int = BLOCK_ROWS):
    """Yield (name, first row, rows (n, D)) of the context features of a clip whose onset envelope is ``onset``.

    A live stream calls this on the envelope of its latest window, which it treats as a clip ending now.
    """
    n_rows = onset.size
    with threadpool_limits(limits=1):
        for name in names:
            for r0 in range(0, n_rows, block):
                rows = slice(r0, min(n_rows, r0 + block))
                x = FEATURES[name].fn(onset, rows, cfg)
                yield name, r0, _checked(name, x, rows.stop - rows.start, cfg)


def _checked(name: str, x: np.ndarray, n: int, cfg: ExtractConfig) -> np.ndarray:
    expected = (n, FEATURES[name].dim(cfg))
    if x.shape != expected or x.dtype != np.float32:
        raise AssertionError(f"feature {name} returned {x.shape} {x.dtype}, expected {expected} float32")
    return x


class FeatureCollector:
    """A sink that keeps every feature's rows in memory: ``arrays(n_rows)`` gives name -> (n_rows, D)."""

    def __init__(self) -> None:
        self.parts: dict[str, list[np.ndarray]] = {}

    def __call__(self, name: str, first_row: int, rows: np.ndarray) -> None:
        self.parts.setdefault(name, []).append(rows)

    def arrays(self, n_rows: int) -> dict[str, np.ndarray]:
        return {name: np.concatenate(parts)[:n_rows] for name, parts in self.parts.items()}


def compute_features(y: np.ndarray, cfg: ExtractConfig, n_rows: int | None = None) -> dict[str, np.ndarray]:
    """Every feature of ``cfg.features`` for mono audio ``y`` (float32) on the grid of ``n_rows`` rows.

    ``n_rows`` defaults to ``len(y) / hop``, which must then be a whole number. Runs the same block stream as
    extraction, so the result is bit-identical to a shard's.

    Returns:
        name -> ``(n_rows, D)`` float32 array, finite.
    """
    hop = cfg.hop_length
    y = np.asarray(y)
    if n_rows is None:
        if y.ndim != 1 or y.size == 0 or y.size % hop:
            raise ValueError(f"audio of shape {y.shape} is not a whole number of {hop}-sample rows")
        n_rows = y.size // hop
    if y.ndim != 1 or n_rows <= 0:
        raise ValueError(f"audio of shape {y.shape} on {n_rows} rows: need 1-D audio and at least one row")
    sink = FeatureCollector()
    stream = AudioFeatureStream(cfg, sink)
    stream.push(y.astype(np.float32, copy=False))
    stream.finish(n_rows)
    return sink.arrays(n_rows)
