"""Audio features on the video frame grid, computed with librosa from one shared analysis.

Row ``t`` of every feature belongs to video frame ``t``: hop = sample_rate / fps = 640 samples (40 ms at
16 kHz and 25 fps) and the analysis window of ``n_fft`` samples (64 ms by default) is centred on the frame's
timestamp ``t / fps``, the instant whose picture row ``t`` shows, with zeros beyond the signal's ends. This is
librosa's ``center=True`` convention, so row ``t`` equals column ``t`` of ``librosa.feature.*(y, hop_length=640,
center=True)`` on the same audio. One framing of the signal feeds the time-domain features (RMS,
zero-crossing rate); one STFT feeds the spectral ones (log-mel, centroid, rolloff); the log-mel spectrogram feeds
MFCC and the onset envelope; the onset envelope feeds the tempogram.
"""

from __future__ import annotations

from functools import cached_property

import librosa
import numpy as np
from threadpoolctl import threadpool_limits

from mmemo.config import ExtractConfig
from mmemo.features.registry import FEATURES, register

# Tempi outside this range are not rhythm a listener would tap to; pulse clarity is measured within it.
_MIN_BPM, _MAX_BPM = 30.0, 300.0


class AudioAnalysis:
    """Shared intermediate results for one clip's audio ``y`` of ``T * hop`` samples (float32, mono)."""

    def __init__(self, y: np.ndarray, cfg: ExtractConfig) -> None:
        hop = cfg.hop_length
        if y.ndim != 1 or y.size == 0 or y.size % hop:
            raise ValueError(f"audio of shape {y.shape} is not a whole number of {hop}-sample rows")
        self.y, self.cfg = y.astype(np.float32, copy=False), cfg
        self.n_rows = y.size // hop

    @cached_property
    def padded(self) -> np.ndarray:
        """The signal with zeros so that window t is centred on sample t * hop: (T - 1) * hop + n_fft samples."""
        cfg = self.cfg
        half = cfg.n_fft // 2
        return np.pad(self.y, (half, half))[: (self.n_rows - 1) * cfg.hop_length + cfg.n_fft]

    @cached_property
    def frames(self) -> np.ndarray:
        """(n_fft, T) time-domain analysis frames."""
        return librosa.util.frame(self.padded, frame_length=self.cfg.n_fft, hop_length=self.cfg.hop_length)

    @cached_property
    def magnitude(self) -> np.ndarray:
        """(1 + n_fft // 2, T) magnitude of the Hann-windowed STFT."""
        stft = librosa.stft(
            self.padded, n_fft=self.cfg.n_fft, hop_length=self.cfg.hop_length, center=False, window="hann"
        )
        return np.abs(stft)

    @cached_property
    def mel_db(self) -> np.ndarray:
        """(n_mels, T) log-mel power spectrogram in dB (absolute, ref 1.0, floor -100 dB)."""
        cfg = self.cfg
        mel = librosa.feature.melspectrogram(
            S=self.magnitude**2,
            sr=cfg.sample_rate,
            n_fft=cfg.n_fft,
            n_mels=cfg.n_mels,
            fmin=cfg.fmin,
            fmax=cfg.fmax,
        )
        # top_db=None: a clip-relative floor would make the same sound differ between clips.
        return librosa.power_to_db(mel, ref=1.0, amin=1e-10, top_db=None)

    @cached_property
    def onset(self) -> np.ndarray:
        """(T,) onset strength (mean positive log-mel flux), aligned to the rows (no extra centring shift)."""
        env = librosa.onset.onset_strength(S=self.mel_db, sr=self.cfg.sample_rate, lag=1, center=False)
        return env[: self.n_rows]

    @cached_property
    def tempogram(self) -> np.ndarray:
        """(win, T) autocorrelation tempogram of the onset envelope, each column normalised to max 1.

        The envelope's mean is removed first: an envelope that never goes negative correlates with itself at
        every lag, which would make white noise look as rhythmic as a metronome. Negative correlations (no
        periodicity at that lag) are clipped to 0, as librosa's tempo estimator expects.
        """
        win = max(8, int(round(self.cfg.tempo_window_s * self.cfg.fps)))
        tg = librosa.feature.tempogram(
            onset_envelope=self.onset - self.onset.mean(),
            sr=self.cfg.sample_rate,
            hop_length=self.cfg.hop_length,
            win_length=win,
        )
        return np.clip(tg, 0, None)


def _rows(x: np.ndarray) -> np.ndarray:
    """(D, T) or (T,) -> (T, D) float32."""
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
)
def rhythm(a: AudioAnalysis) -> np.ndarray:
    cfg, tg = a.cfg, a.tempogram
    tempo = librosa.feature.tempo(
        tg=tg, sr=cfg.sample_rate, hop_length=cfg.hop_length, aggregate=None, max_tempo=_MAX_BPM
    )
    lags = np.arange(tg.shape[0])
    with np.errstate(divide="ignore"):
        bpm = 60.0 * cfg.fps / lags
    band = (bpm >= _MIN_BPM) & (bpm <= _MAX_BPM)
    clarity = tg[band].max(axis=0) if band.any() else np.zeros(a.n_rows)
    # Without any onset there is no tempo to speak of: report 0 BPM rather than the prior's favourite.
    tempo = np.where(clarity > 0, tempo, 0.0)
    return np.stack([a.onset, tempo, clarity], axis=1).astype(np.float32)


def feature_dims(cfg: ExtractConfig) -> dict[str, int]:
    """Dimension of each selected feature under ``cfg``."""
    return {name: FEATURES[name].dim(cfg) for name in cfg.features}


def compute_features(y: np.ndarray, cfg: ExtractConfig) -> dict[str, np.ndarray]:
    """Every feature of ``cfg.features`` for mono audio ``y`` of ``T * hop`` samples.

    Returns:
        name -> ``(T, D)`` float32 array, finite.
    """
    analysis = AudioAnalysis(y, cfg)
    out = {}
    # One BLAS thread: a multi-threaded matrix product sums in another order, and the same clip must give the
    # same bits whether it is extracted in the main process or in one of N workers (parallelism is per clip).
    with threadpool_limits(limits=1):
        for name in cfg.features:
            out[name] = _checked(name, analysis, cfg)
    return out


def _checked(name: str, analysis: AudioAnalysis, cfg: ExtractConfig) -> np.ndarray:
    x = FEATURES[name].fn(analysis)
    expected = (analysis.n_rows, FEATURES[name].dim(cfg))
    if x.shape != expected or x.dtype != np.float32:
        raise AssertionError(f"feature {name} returned {x.shape} {x.dtype}, expected {expected} float32")
    return x
