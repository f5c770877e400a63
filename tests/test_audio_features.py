"""Audio features checked against known answers on synthetic signals, and against librosa called directly.

Grid: 16 kHz, 25 fps, so hop = 640 samples per row; row t's n_fft = 1024 window is centred on sample t * 640 with
zeros beyond the ends (librosa's center=True, pad_mode="constant"). Every expected value below follows from that.
"""

from __future__ import annotations

import json
import re

import librosa
import numpy as np
import pytest

from mmemo.config import DEFAULT_FEATURES, ExtractConfig
from mmemo.errors import ConfigError
from mmemo.features.audio import compute_features
from mmemo.features.registry import FEATURES, check_features, feature_dims, register

SR, FPS, HOP, N_FFT = 16000, 25, 640, 1024
BIN_HZ = SR / N_FFT  # 15.625 Hz between FFT bins
CFG = ExtractConfig()
try:
    import opensmile  # noqa: F401

    HAVE_SMILE = True
except ImportError:
    HAVE_SMILE = False
# The openSMILE sets (mmemo.features.smile) are parametrised too, skipped with the reason when it is absent.
FEATURE_NAMES = [
    pytest.param(
        n, marks=pytest.mark.skipif(not HAVE_SMILE, reason="openSMILE not installed: pip install 'mmemo[smile]'")
    )
    if FEATURES[n].requires is not None
    else n
    for n in sorted(FEATURES)
]


# ---------------------------------------------------------------------------------------------------------------
# Synthetic signals (float32, mono, exactly T * HOP samples)


def _t(n_rows: int) -> np.ndarray:
    return np.arange(n_rows * HOP) / SR


def noise(n_rows: int, seed: int = 0, amp: float = 0.1) -> np.ndarray:
    return (amp * np.random.default_rng(seed).standard_normal(n_rows * HOP)).astype(np.float32)


def silence(n_rows: int) -> np.ndarray:
    return np.zeros(n_rows * HOP, np.float32)


def sine(n_rows: int, freq: float, amp: float = 0.5) -> np.ndarray:
    return (amp * np.sin(2 * np.pi * freq * _t(n_rows))).astype(np.float32)


def speech_like(n_rows: int, seed: int = 0) -> np.ndarray:
    """Gliding 120-180 Hz harmonic voice, 4 Hz syllable envelope, a little breath noise."""
    t = _t(n_rows)
    f0 = 150 + 30 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / SR
    voice = sum(np.sin(k * phase) / k for k in range(1, 25))
    envelope = np.clip(np.sin(2 * np.pi * 4 * t), 0, None) ** 2
    breath = 0.003 * np.random.default_rng(seed).standard_normal(t.size)
    return (0.2 * envelope * voice + breath).astype(np.float32)


def clicks(n_rows: int, rows: list[int] | range, amp: float = 1.0) -> np.ndarray:
    y = silence(n_rows)
    y[np.asarray(rows) * HOP] = amp
    return y


def features(y: np.ndarray, **overrides) -> dict[str, np.ndarray]:
    return compute_features(y, ExtractConfig(**overrides))


# ---------------------------------------------------------------------------------------------------------------
# 1. Every registered feature: shape, dtype, finiteness


SHAPE_SIGNALS = {
    "noise": lambda: noise(50),
    "silence": lambda: silence(50),
    "noise_T1": lambda: noise(1),
    "noise_T2": lambda: noise(2),
    "silence_T1": lambda: silence(1),
    "speech_like": lambda: speech_like(50),
}


@pytest.mark.parametrize("signal", sorted(SHAPE_SIGNALS))
@pytest.mark.parametrize("name", FEATURE_NAMES)
def test_feature_shape_dtype_finite(name: str, signal: str) -> None:
    """Each feature alone gives (T, dim(cfg)) float32, all finite, for noise, silence and 1- or 2-row clips."""
    y = SHAPE_SIGNALS[signal]()
    cfg = ExtractConfig(features=(name,))
    out = compute_features(y, cfg)
    assert list(out) == [name]
    x = out[name]
    assert x.shape == (y.size // HOP, FEATURES[name].dim(cfg))
    assert x.dtype == np.float32
    assert np.isfinite(x).all()


@pytest.mark.parametrize(("n_mels", "n_mfcc"), [(40, 13), (128, 30), (64, 20)])
@pytest.mark.parametrize("name", FEATURE_NAMES)
def test_feature_dims_follow_config(name: str, n_mels: int, n_mfcc: int) -> None:
    """logmel has n_mels columns and mfcc n_mfcc; the others keep their fixed width (rms 1, rhythm 3, ...)."""
    cfg = ExtractConfig(n_mels=n_mels, n_mfcc=n_mfcc, features=(name,))
    expected = {"logmel": n_mels, "mfcc": n_mfcc, "rhythm": 3, "egemaps": 25, "compare": 65}.get(name, 1)
    assert FEATURES[name].dim(cfg) == expected
    assert feature_dims(cfg) == {name: expected}
    x = compute_features(noise(30), cfg)[name]
    assert x.shape == (30, expected)
    assert x.dtype == np.float32 and np.isfinite(x).all()


def test_registry_table_is_consistent() -> None:
    """Keys equal Feature.name, descriptions are non-empty; the config's defaults are registered, in registry order."""
    for name, feat in FEATURES.items():
        assert feat.name == name
        assert feat.description.strip()
    assert set(FEATURES) >= {"logmel", "rms", "centroid", "rolloff", "zcr", "mfcc", "rhythm"}
    assert ExtractConfig().features == DEFAULT_FEATURES
    assert DEFAULT_FEATURES == tuple(n for n in FEATURES if n in DEFAULT_FEATURES)
    assert set(DEFAULT_FEATURES) <= set(FEATURES)
    assert set(compute_features(noise(5), CFG)) == set(DEFAULT_FEATURES)


def test_unknown_feature_is_refused_where_features_are_computed() -> None:
    """The registry sits above the config: a name it does not know is a ConfigError naming it, before any work."""
    cfg = ExtractConfig(features=("rms", "bogus_feature"))
    for call in (
        lambda: check_features(cfg.features),
        lambda: feature_dims(cfg),
        lambda: compute_features(noise(5), cfg),
    ):
        with pytest.raises(ConfigError, match="unknown feature\\(s\\) bogus_feature; known: logmel, rms"):
            call()


def test_register_twice_raises() -> None:
    """Registering an existing name raises ValueError and leaves the table unchanged."""
    before = dict(FEATURES)
    with pytest.raises(ValueError, match="rms"):
        register("rms", dim=1, description="duplicate")(lambda a: None)
    assert FEATURES == before


# ---------------------------------------------------------------------------------------------------------------
# 2. Pure tones


@pytest.fixture(scope="module")
def tone440() -> dict[str, np.ndarray]:
    return features(sine(100, 440.0, amp=0.5))


def test_sine_centroid(tone440: dict[str, np.ndarray]) -> None:
    """A 440 Hz sine has its spectral centroid at 440 Hz (median over rows, within 1%)."""
    assert np.median(tone440["centroid"][:, 0]) == pytest.approx(440.0, rel=0.01)


def test_sine_rolloff(tone440: dict[str, np.ndarray]) -> None:
    """A 440 Hz sine has its 85% rolloff within two FFT bins (2 * 15.6 Hz) of 440 Hz on every inner row."""
    r = tone440["rolloff"][1:, 0]
    assert np.all(np.abs(r - 440.0) <= 2 * BIN_HZ)


def test_sine_zcr(tone440: dict[str, np.ndarray]) -> None:
    """A 440 Hz sine crosses zero 2 * 440 / 16000 = 0.055 times per sample (within 2 crossings per window)."""
    z = tone440["zcr"][1:, 0]
    assert np.all(np.abs(z - 2 * 440 / SR) <= 2 / N_FFT)


def test_sine_rms(tone440: dict[str, np.ndarray]) -> None:
    """RMS of a 0.5-amplitude sine is 0.5 / sqrt(2) within 1% on every row whose window lies inside the clip."""
    # Row 0's window starts 512 samples before the clip (zeros); row T-1's ends 128 samples before its end.
    rms = tone440["rms"][:, 0]
    np.testing.assert_allclose(rms[1:], 0.5 / np.sqrt(2), rtol=0.01)
    assert rms[0] == pytest.approx(0.5 / np.sqrt(2) * np.sqrt(512 / 1024), rel=0.02)


@pytest.mark.parametrize(("freq", "n_mels"), [(1000.0, 64), (1000.0, 40), (3000.0, 64)])
def test_tone_logmel_peak_band(freq: float, n_mels: int) -> None:
    """A pure tone's log-mel peak is the mel band whose triangle centre (librosa.mel_frequencies) is nearest."""
    lm = features(sine(50, freq), n_mels=n_mels)["logmel"]
    centres = librosa.mel_frequencies(n_mels + 2, fmin=CFG.fmin, fmax=CFG.fmax)[1:-1]
    expected = int(np.argmin(np.abs(centres - freq)))
    assert np.all(np.argmax(lm[1:], axis=1) == expected)


# ---------------------------------------------------------------------------------------------------------------
# 3. Silence


def test_silence_known_values() -> None:
    """Silence: RMS, centroid, rolloff, zcr, rhythm exactly 0; logmel at the -100 dB floor; MFCC = DCT of a constant."""
    out = features(silence(60))
    for name in ("rms", "centroid", "rolloff", "zcr", "rhythm"):
        assert np.all(out[name] == 0), name
    np.testing.assert_allclose(out["logmel"], -100.0, atol=1e-3)
    # Orthonormal DCT-II of a constant -100 dB column: c0 = -100 * sqrt(n_mels), all others 0.
    np.testing.assert_allclose(out["mfcc"][:, 0], -100.0 * np.sqrt(CFG.n_mels), rtol=1e-5)
    np.testing.assert_allclose(out["mfcc"][:, 1:], 0.0, atol=1e-3)
    for x in out.values():
        assert not np.isnan(x).any()


# ---------------------------------------------------------------------------------------------------------------
# 4. Agreement with librosa on the same signal

AGREE_SIGNALS = {"noise": lambda: noise(100, seed=3), "speech_like": lambda: speech_like(100)}


@pytest.fixture(scope="module", params=sorted(AGREE_SIGNALS))
def agree(request) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    y = AGREE_SIGNALS[request.param]()
    return y, compute_features(y, CFG)


def _ref_mel_db(y: np.ndarray) -> np.ndarray:
    """librosa's own mel pipeline with audio.py's dB convention (absolute: ref 1, amin 1e-10, no top_db)."""
    mel = librosa.feature.melspectrogram(
        y=y, sr=SR, n_fft=N_FFT, hop_length=HOP, n_mels=CFG.n_mels, fmin=CFG.fmin, fmax=CFG.fmax
    )
    return librosa.power_to_db(mel, ref=1.0, amin=1e-10, top_db=None)


def test_librosa_rms(agree) -> None:
    """RMS equals librosa.feature.rms(center=True, pad_mode='constant'), first T of its T + 1 columns."""
    y, out = agree
    ref = librosa.feature.rms(y=y, frame_length=N_FFT, hop_length=HOP, center=True, pad_mode="constant")
    assert ref.shape[1] == 101  # librosa also frames the trailing pad: one extra column
    np.testing.assert_allclose(out["rms"][:, 0], ref[0, :100], rtol=1e-5, atol=1e-8)


def test_librosa_centroid_rolloff(agree) -> None:
    """Centroid and rolloff equal librosa.feature.spectral_centroid / spectral_rolloff with default (centred) STFT."""
    y, out = agree
    kw = dict(y=y, sr=SR, n_fft=N_FFT, hop_length=HOP)
    centroid = librosa.feature.spectral_centroid(**kw)
    rolloff = librosa.feature.spectral_rolloff(**kw, roll_percent=CFG.rolloff_percent)
    np.testing.assert_allclose(out["centroid"][:, 0], centroid[0, :100], rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(out["rolloff"][:, 0], rolloff[0, :100], rtol=1e-4, atol=1e-3)


def test_librosa_zcr(agree) -> None:
    """ZCR equals librosa.feature.zero_crossing_rate(center=True) on rows 1.. (librosa pads row 0 with 'edge')."""
    # librosa's zero_crossing_rate pads with mode="edge", not zeros, so only row 0's window can differ.
    y, out = agree
    ref = librosa.feature.zero_crossing_rate(y, frame_length=N_FFT, hop_length=HOP, center=True)
    np.testing.assert_allclose(out["zcr"][1:, 0], ref[0, 1:100], atol=1e-6)


def test_librosa_logmel_and_mfcc(agree) -> None:
    """logmel equals power_to_db(librosa melspectrogram) and mfcc equals librosa.feature.mfcc of that (atol 1e-3 dB)."""
    y, out = agree
    ref_db = _ref_mel_db(y)
    np.testing.assert_allclose(out["logmel"], ref_db[:, :100].T, rtol=1e-4, atol=1e-3)
    ref_mfcc = librosa.feature.mfcc(S=ref_db, n_mfcc=CFG.n_mfcc)
    np.testing.assert_allclose(out["mfcc"], ref_mfcc[:, :100].T, rtol=1e-4, atol=1e-3)


def test_librosa_mfcc_from_audio_on_noise() -> None:
    """On noise (mel dynamic range < 80 dB) mfcc equals librosa.feature.mfcc(y=...) called with plain defaults."""
    # librosa.feature.mfcc(y=...) applies power_to_db's default top_db=80; audio.py uses top_db=None. They agree
    # exactly when the clip's mel range is under 80 dB, which the first assert checks.
    y = noise(100, seed=4)
    ref_db = _ref_mel_db(y)
    assert ref_db.max() - ref_db.min() < 80
    ref = librosa.feature.mfcc(
        y=y, sr=SR, n_fft=N_FFT, hop_length=HOP, n_mels=CFG.n_mels, n_mfcc=CFG.n_mfcc, fmin=CFG.fmin, fmax=CFG.fmax
    )
    np.testing.assert_allclose(features(y)["mfcc"], ref[:, :100].T, rtol=1e-4, atol=1e-3)


# ---------------------------------------------------------------------------------------------------------------
# 5. Time alignment


@pytest.mark.parametrize("k", [1, 37, 99])
def test_click_alignment(k: int) -> None:
    """A unit click at sample k * 640 gives RMS 1/32 at row k only and onset strength > 0 at row k only (not k+1)."""
    # Only window k (|t*640 - k*640| < 512) contains the click, and the onset of row t is the flux S[t] - S[t-1].
    out = features(clicks(100, [k]))
    rms = out["rms"][:, 0]
    assert np.flatnonzero(rms).tolist() == [k]
    assert rms[k] == pytest.approx(1 / np.sqrt(N_FFT), rel=1e-5)
    onset = out["rhythm"][:, 0]
    assert np.flatnonzero(onset).tolist() == [k]


def test_tone_burst_onset_row() -> None:
    """A 440 Hz burst starting at 2.0 s (sample 32000): RMS is 0 up to row 49, A/2 at row 50, A/sqrt(2) after."""
    amp = 0.5
    y = sine(100, 440.0, amp)
    y[: 50 * HOP] = 0
    out = features(y)
    rms = out["rms"][:, 0]
    assert np.flatnonzero(rms)[0] == 50  # row 49's window ends at sample 31872 < 32000
    assert rms[50] == pytest.approx(amp / 2, rel=0.02)  # half of row 50's window holds the tone
    np.testing.assert_allclose(rms[51:], amp / np.sqrt(2), rtol=0.01)
    assert int(np.argmax(out["rhythm"][:, 0])) == 50


# ---------------------------------------------------------------------------------------------------------------
# 6. Rhythm


@pytest.fixture(scope="module")
def click_train_rhythm() -> np.ndarray:
    """Clicks every 12 rows (0.48 s = 125 BPM) for 10 s."""
    return features(clicks(250, range(0, 250, 12)))["rhythm"]


def test_click_train_tempo(click_train_rhythm: np.ndarray) -> None:
    """A 125 BPM click train reads 125 BPM (not 62.5 or 250) within 3%, median and on >= 90% of the rows."""
    tempo = click_train_rhythm[:, 1]
    assert np.median(tempo) == pytest.approx(125.0, rel=0.03)
    assert np.mean(np.abs(tempo - 125.0) <= 0.03 * 125.0) >= 0.9


def test_click_train_pulse_clarity_high(click_train_rhythm: np.ndarray) -> None:
    """A click train has pulse clarity > 0.5, and every clarity value lies in [0, 1]."""
    clarity = click_train_rhythm[:, 2]
    assert np.median(clarity) > 0.5
    assert np.all((clarity >= 0) & (clarity <= 1))


def test_white_noise_pulse_clarity_low(click_train_rhythm: np.ndarray) -> None:
    """White noise has no pulse: clarity median < 0.5 and below the click train's."""
    clarity = features(noise(250, seed=7))["rhythm"][:, 2]
    assert np.all((clarity >= 0) & (clarity <= 1))
    assert np.median(clarity) < np.median(click_train_rhythm[:, 2])
    assert np.median(clarity) < 0.5


# ---------------------------------------------------------------------------------------------------------------
# 7. ExtractConfig


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        (dict(aspect="squash"), "squash"),
        (dict(sample_rate=16000, fps=30), "sample_rate 16000"),
        (dict(sample_rate=16000, fps=30), "fps 30"),
        (dict(n_fft=512), "n_fft 512"),
        (dict(frame_size=4), "frame_size 4"),
    ],
    ids=lambda v: ",".join(f"{k}={x}" for k, x in v.items()) if isinstance(v, dict) else str(v),
)
def test_config_rejects_bad_value(kwargs: dict, named: str) -> None:
    """Invalid values raise ConfigError whose message names the offending value."""
    with pytest.raises(ConfigError, match=re.escape(named)):
        ExtractConfig(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        (dict(fps=0), "fps"),
        (dict(sample_rate=0), "sample_rate"),
        (dict(n_mels=16, n_mfcc=20), "n_mfcc"),
        (dict(n_mels=0), "n_mels"),
        (dict(rolloff_percent=0.0), "rolloff_percent"),
        (dict(rolloff_percent=1.5), "rolloff_percent"),
        (dict(fmin=4000.0, fmax=2000.0), "fmax"),
        (dict(fmax=12000.0), "fmax"),
    ],
    ids=lambda v: ",".join(f"{k}={x}" for k, x in v.items()) if isinstance(v, dict) else "",
)
def test_config_rejects_values_that_cannot_be_computed(kwargs: dict, named: str) -> None:
    """Values compute_features cannot honour raise ConfigError at construction, naming the field."""
    with pytest.raises(ConfigError, match=named):
        ExtractConfig(**kwargs)


def test_config_empty_features_rejected() -> None:
    """An empty feature selection raises ConfigError."""
    with pytest.raises(ConfigError, match="no audio feature"):
        ExtractConfig(features=())


@pytest.mark.parametrize(
    "cfg",
    [ExtractConfig(), ExtractConfig(n_mels=40, n_mfcc=13, fmax=7600.0, features=("rms", "mfcc"), aspect="crop")],
)
def test_config_round_trip(cfg: ExtractConfig) -> None:
    """from_dict(to_dict(c)) == c, also through JSON; features come back as a tuple."""
    assert ExtractConfig.from_dict(cfg.to_dict()) == cfg
    back = ExtractConfig.from_dict(json.loads(cfg.to_json()))
    assert back == cfg
    assert isinstance(back.features, tuple)
    assert back.config_hash() == cfg.config_hash()


def test_config_hash() -> None:
    """config_hash is equal for equal configs, 16 hex digits, and changes with n_mels (or any other field)."""
    a, b = ExtractConfig(), ExtractConfig()
    assert a.config_hash() == b.config_hash()
    assert re.fullmatch(r"[0-9a-f]{16}", a.config_hash())
    assert ExtractConfig(features=list(a.features)).config_hash() == a.config_hash()
    assert ExtractConfig(n_mels=40).config_hash() != a.config_hash()
    assert ExtractConfig(features=("rms",)).config_hash() != a.config_hash()


def test_config_from_dict_rejects_unknown_key() -> None:
    """from_dict with an unknown key raises ConfigError naming that key."""
    d = ExtractConfig().to_dict()
    d["n_melz"] = 80
    with pytest.raises(ConfigError, match="n_melz"):
        ExtractConfig.from_dict(d)


# ---------------------------------------------------------------------------------------------------------------
# 8. Input validation; 9. feature subsets


@pytest.mark.parametrize("n_samples", [HOP - 1, HOP + 1, 10 * HOP + 320, 1])
def test_wrong_length_raises(n_samples: int) -> None:
    """Audio that is not a whole number of 640-sample rows raises ValueError."""
    with pytest.raises(ValueError, match="640"):
        compute_features(np.zeros(n_samples, np.float32), CFG)


def test_non_mono_raises() -> None:
    """2-D (multichannel) audio raises ValueError even when its size is a multiple of the hop."""
    with pytest.raises(ValueError):
        compute_features(np.zeros((2, 10 * HOP), np.float32), CFG)


def test_empty_audio_is_handled() -> None:
    """Zero samples either give (0, D) float32 arrays or raise ValueError, never a librosa internal error."""
    try:
        out = compute_features(np.zeros(0, np.float32), CFG)
    except ValueError:
        return
    for name, x in out.items():
        assert x.shape == (0, FEATURES[name].dim(CFG)) and x.dtype == np.float32


@pytest.mark.parametrize("subset", [("rms", "mfcc"), ("mfcc", "rms"), ("rhythm",), ("zcr", "logmel", "centroid")])
def test_subset_returns_exactly_those_keys(subset: tuple[str, ...]) -> None:
    """compute_features with features=subset returns exactly those keys, in that order, equal to the full run."""
    y = speech_like(40)
    out = compute_features(y, ExtractConfig(features=subset))
    assert tuple(out) == subset
    full = compute_features(y, CFG)
    for name in subset:
        np.testing.assert_array_equal(out[name], full[name])
