"""openSMILE's eGeMAPS v02 and ComParE 2016 descriptors on the 25 fps grid (mmemo.features.smile).

Every expected value is computed here by hand from ``opensmile.Smile.process_signal`` called directly on the same
audio: frame k's centre is its start plus 12.5 ms (the middle of the 25 ms window most descriptors come from), row t
the mean of the frames whose centre lies in [t * 640 - 320, t * 640 + 320) samples (16 kHz), or the frame
nearest to t * 640 where none does. The signal is the audio zero-padded to T * 640 + 320 samples.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import librosa
import numpy as np
import pytest
from conftest import REALDATA, SMALL, extract_cmd, needs_realdata

from mmemo.config import DEFAULT_FEATURES, ExtractConfig
from mmemo.errors import ConfigError
from mmemo.features.audio import AudioFeatureStream, FeatureCollector, compute_features
from mmemo.features.registry import FEATURES, check_features, feature_dims, resolve_features

try:
    import opensmile
except ImportError:  # the tests that compute the features skip; the missing-extra error is tested either way
    opensmile = None
needs_smile = pytest.mark.skipif(opensmile is None, reason="openSMILE is not installed: pip install 'mmemo[smile]'")

SR, HOP = 16000, 640
SETS = {"egemaps": ("eGeMAPSv02", 25), "compare": ("ComParE_2016", 65)}
SPEECH = REALDATA / "pyaudioanalysis_speechEmotion"


def direct(name: str, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """openSMILE called directly on ``y``: (start seconds (F,), end seconds (F,), values (F, D))."""
    feature_set = getattr(opensmile.FeatureSet, SETS[name][0])
    smile = opensmile.Smile(feature_set=feature_set, feature_level=opensmile.FeatureLevel.LowLevelDescriptors)
    df = smile.process_signal(y, SR)
    start = df.index.get_level_values("start").total_seconds().to_numpy()
    end = df.index.get_level_values("end").total_seconds().to_numpy()
    return start, end, df.to_numpy()


def by_hand(name: str, y: np.ndarray, n_rows: int) -> np.ndarray:
    """The documented grid rule, written out row by row from the direct call's frames."""
    y = np.clip(y, -1.0, 32767 / 32768).astype(np.float32)
    y = np.pad(y, (0, max(0, n_rows * HOP + HOP // 2 - y.size)))
    start, _, values = direct(name, y)
    centre = start + 0.0125
    rows = np.empty((n_rows, values.shape[1]))
    for t in range(n_rows):
        inside = (centre >= (t * HOP - HOP // 2) / SR - 1e-9) & (centre < (t * HOP + HOP // 2) / SR - 1e-9)
        if inside.any():
            rows[t] = values[inside].astype(np.float64).mean(axis=0)
        else:
            rows[t] = values[np.argmin(np.abs(centre - t * HOP / SR))]
    return rows.astype(np.float32)


def speech(n_files: int) -> np.ndarray:
    files = sorted(SPEECH.glob("*.wav"))[:n_files]
    return np.concatenate([librosa.load(f, sr=SR)[0] for f in files]).astype(np.float32)


@needs_smile
def test_frame_lengths_and_names_are_opensmiles() -> None:
    """The registry's widths and frame lengths are what openSMILE reports (20 ms / 60 ms frames every 10 ms)."""
    from mmemo.features.smile import SMILE_SETS, descriptor_names

    y = np.random.default_rng(0).standard_normal(SR).astype(np.float32) * 0.1
    for name, (_, dim) in SETS.items():
        start, end, values = direct(name, y)
        assert values.shape[1] == dim == FEATURES[name].dim(ExtractConfig()) == SMILE_SETS[name].dim
        assert end[0] - start[0] == pytest.approx(SMILE_SETS[name].reported_frame_s)
        np.testing.assert_allclose(start[:50], np.arange(50) * 0.01, atol=1e-9)
        assert len(descriptor_names(name)) == dim
    assert descriptor_names("egemaps")[0] == "Loudness_sma3"
    assert descriptor_names("compare")[0] == "F0final_sma"


@needs_smile
@needs_realdata
@pytest.mark.parametrize("name", sorted(SETS))
def test_equals_direct_call_resampled_by_hand(name: str) -> None:
    """A real speech clip (2.09 s, 53 rows): every row equals the hand-made mean of openSMILE's own frames."""
    y = librosa.load(SPEECH / "00.wav", sr=SR)[0]
    n_rows = 53  # ceil(33401 / 640): the last row's window reaches past the audio (zeros)
    got = compute_features(y, ExtractConfig(features=(name,)), n_rows)[name]
    assert got.shape == (n_rows, SETS[name][1]) and got.dtype == np.float32
    np.testing.assert_allclose(got, by_hand(name, y, n_rows), rtol=1e-6, atol=1e-6)


@needs_smile
@needs_realdata
@pytest.mark.parametrize("name", sorted(SETS))
def test_blocks_equal_one_call_on_the_whole_signal(name: str) -> None:
    """31 s of real speech in 10 s blocks, pushed in odd-sized pieces: bit for bit one openSMILE call's rows."""
    from mmemo.features import smile

    y = speech(12)
    n_rows = -(-y.size // HOP)
    sink = FeatureCollector()
    stream = AudioFeatureStream(ExtractConfig(features=(name,)), sink, block_rows=250)
    for i in range(0, y.size, 7777):
        stream.push(y[i : i + 7777])
    stream.finish(n_rows)
    got = sink.arrays(n_rows)[name]
    signal = np.pad(smile.to_int16_range(y), (0, n_rows * HOP + HOP // 2 - y.size))
    starts, values = smile.smile_frames(name, signal, SR)
    whole = smile.frames_to_rows(starts, values, round(smile.WINDOW_S * SR), range(n_rows), HOP)
    np.testing.assert_array_equal(got, whole)
    np.testing.assert_allclose(got, by_hand(name, y, n_rows), rtol=1e-6, atol=1e-6)


@needs_smile
@pytest.mark.parametrize("row", [20, 61])
def test_click_lands_in_its_row(row: int) -> None:
    """An impulse at t = row / 25 s in 4 s of silence: the loudness / RMS-energy peak is that row."""
    y = np.zeros(100 * HOP, np.float32)
    y[row * HOP] = 0.9
    out = compute_features(y, ExtractConfig(features=("egemaps", "compare")))
    assert int(np.argmax(out["egemaps"][:, 0])) == row  # Loudness_sma3
    assert int(np.argmax(out["compare"][:, 8])) == row  # pcm_RMSenergy_sma


@needs_smile
def test_silence_gives_opensmiles_floor_values() -> None:
    """Silence: F0 (semitones) 0 in eGeMAPS, finite floors elsewhere; nothing non-finite, nothing invented."""
    out = compute_features(np.zeros(50 * HOP, np.float32), ExtractConfig(features=("egemaps", "compare")))
    for x in out.values():
        assert np.isfinite(x).all()
    assert (out["egemaps"][:, 10] == 0).all()  # F0semitoneFrom27.5Hz_sma3nz
    assert (out["compare"][:, 0] == 0).all()  # F0final_sma


def test_features_flag_resolution() -> None:
    """``+egemaps`` adds to the defaults, plain names replace them, -name removes one."""
    assert resolve_features("+egemaps") == (*DEFAULT_FEATURES, "egemaps")
    assert resolve_features("+egemaps,+compare,-logmel")[-2:] == ("egemaps", "compare")
    assert "logmel" not in resolve_features("-logmel,+compare")
    assert resolve_features("rms,egemaps") == ("rms", "egemaps")
    with pytest.raises(ConfigError, match="not both"):
        resolve_features("rms,+egemaps")
    with pytest.raises(ConfigError, match="unknown feature\\(s\\) egemap;"):
        resolve_features("+egemap")


def test_dims_known_without_opensmile() -> None:
    """Widths come from the registry alone: reading extracted features (training) does not need openSMILE."""
    assert feature_dims(ExtractConfig(features=("rms", "egemaps", "compare"))) == {"rms": 1, "egemaps": 25,
                                                                                   "compare": 65}  # fmt: skip


@needs_smile
@needs_realdata
def test_live_rows_equal_extraction() -> None:
    """Fed as a live stream (0.5 s pieces, rows taken as soon as ``advance`` gives them), 8.7 s of real speech
    gives the rows extraction does: each row waits for 0.5 s of audio after it (LIVE_LOOKAHEAD_S)."""
    y = speech(4)
    n = y.size // HOP
    y = y[: n * HOP]
    cfg = ExtractConfig(features=("rms", "egemaps", "compare"))
    check_features(cfg.features)
    sink = FeatureCollector()
    stream = AudioFeatureStream(cfg, sink)
    done = []
    for i in range(0, y.size, 8000):
        stream.push(y[i : i + 8000])
        done.append(stream.advance(n))
    stream.finish(n)
    ref = compute_features(y, cfg)
    for name, x in sink.arrays(n).items():
        np.testing.assert_array_equal(x, ref[name])
    assert done[:4] == [0, 12, 25, 37]  # rows whose window and the 0.5 s after it are in


@needs_smile
@needs_realdata
def test_extract_writes_the_feature_into_the_shard(tmp_path: Path) -> None:
    """A real `mmemo extract --features rms,egemaps,compare` on a real clip: (T, 25) and (T, 65) float32 datasets
    equal to the direct computation, and the configuration in /meta names them."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    shutil.copy(SPEECH / "03.wav", corpus / "c.wav")
    out = tmp_path / "features"
    r = subprocess.run(extract_cmd(corpus, out, "--features", "rms,egemaps,compare", "--jobs", "1"),
                       capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 0, r.stderr
    (shard,) = (out / "shards").rglob("*.h5")
    with h5py.File(shard, "r") as h5:
        T = int(h5.attrs["n_frames"])
        config = json.loads(h5["meta"].attrs["feature_config"])
        eg, co = h5["audio/features/egemaps"][()], h5["audio/features/compare"][()]
        assert set(h5["audio/features"]) == {"rms", "egemaps", "compare"}
    assert config["features"] == ["rms", "egemaps", "compare"]
    assert eg.shape == (T, 25) and co.shape == (T, 65) and eg.dtype == co.dtype == np.float32
    y = librosa.load(SPEECH / "03.wav", sr=SR)[0]  # the same 16 kHz mono file: decoded without resampling
    np.testing.assert_allclose(eg, by_hand("egemaps", y, T), rtol=1e-5, atol=1e-4)


BLOCKED = (
    "import sys; sys.modules['opensmile'] = None\n"  # `import opensmile` now raises ImportError
    "from mmemo.cli import main\n"
    "main(sys.argv[1:])\n"
)


def test_missing_extra_is_one_line_before_any_work(tmp_path: Path) -> None:
    """With openSMILE unimportable, asking for egemaps exits 1 with one line saying how to install it, and writes
    nothing."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    sf = np.zeros(SR, np.int16)
    import wave

    with wave.open(str(corpus / "c.wav"), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(SR), w.writeframes(sf.tobytes())
    out = tmp_path / "features"
    r = subprocess.run([sys.executable, "-c", BLOCKED, "extract", str(corpus), "--out", str(out), "--features",
                        "rms,egemaps"], capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert lines == ["Error: the eGeMAPS / ComParE features need openSMILE: pip install 'mmemo[smile]'"]
    assert not (out / "shards").exists()


@needs_smile
@pytest.mark.slow
def test_train_one_epoch_with_egemaps(demo: Path, tmp_path: Path) -> None:
    """The demo corpus extracted with +egemaps trains: audio_dim and the standardisation follow the feature list."""
    import torch

    from mmemo.config import TrainConfig
    from mmemo.pipeline.extract import extract_corpus
    from mmemo.pipeline.train import Trainer

    # 56-px frames (the small model pools them to 28): the test is about the audio columns, not the pictures
    cfg = ExtractConfig(features=resolve_features("+egemaps"), faces=False, frame_size=56)
    extract_corpus(demo / "corpus", tmp_path / "f", cfg, jobs=1, progress=False, log=lambda s: None)
    run = tmp_path / "run"
    with Trainer(tmp_path / "f", run, TrainConfig(epochs=1, batch_size=4, workers=0, max_seq_len=40), SMALL,
                 log=lambda s: None, progress=False) as t:  # fmt: skip
        t.fit()
    ckpt = torch.load(run / "best.pt", weights_only=True)
    assert ckpt["feature_names"][-1] == "egemaps"
    dim = sum(feature_dims(cfg).values())
    assert ckpt["model_config"]["audio_dim"] == dim == 64 + 1 + 1 + 1 + 1 + 20 + 3 + 25
    assert ckpt["feature_mean"].shape == (dim,) and torch.isfinite(ckpt["feature_std"]).all()
