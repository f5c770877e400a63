"""The audio feature stream: any way of feeding it gives the same bits, and it holds one block at most."""

from __future__ import annotations

import numpy as np
import pytest

from mmemo.config import ExtractConfig
from mmemo.features.audio import AudioFeatureStream, FeatureCollector, compute_features


def _speechy(seconds, seed=0):
    rng = np.random.default_rng(seed)
    n = int(seconds * 16000)
    t = np.arange(n) / 16000
    env = (np.sin(2 * np.pi * 3 * t) > 0).astype(np.float32)
    return (0.2 * env * np.sin(2 * np.pi * 180 * t) + 0.01 * rng.standard_normal(n)).astype(np.float32)


def _stream(y, cfg, n_rows, pieces, block_rows):
    sink = FeatureCollector()
    s = AudioFeatureStream(cfg, sink, block_rows=block_rows)
    peak = 0
    for part in np.array_split(y, pieces):
        s.push(part)
        peak = max(peak, s.buf.size + s.n_pending)
    s.finish(n_rows)
    return sink.arrays(n_rows), peak


@pytest.mark.parametrize("pieces", [1, 7, 333])
def test_pushing_in_pieces_gives_identical_bits(pieces):
    """1, 7 or 333 pushes of the same 30 s: every feature bit-identical to compute_features."""
    cfg = ExtractConfig()
    y = _speechy(30.0)
    whole = compute_features(y, cfg)
    got, _ = _stream(y, cfg, 750, pieces, block_rows=1500)
    for name in whole:
        np.testing.assert_array_equal(got[name], whole[name], err_msg=name)


def test_blocks_agree_with_one_big_block():
    """Blocks of 100 rows give the same numbers (to float32 rounding) as one block of the whole clip."""
    cfg = ExtractConfig()
    y = _speechy(20.0, seed=1)
    small, _ = _stream(y, cfg, 500, 11, block_rows=100)
    big, _ = _stream(y, cfg, 500, 1, block_rows=10_000)
    for name in big:
        np.testing.assert_allclose(small[name], big[name], rtol=1e-4, atol=1e-3, err_msg=name)


def test_buffer_stays_bounded():
    """Fed 5 minutes in 0.1 s pieces with 10 s blocks, the stream never holds more than ~one block of samples."""
    cfg = ExtractConfig(features=("rms", "logmel"))
    y = _speechy(300.0, seed=2)
    _, peak = _stream(y, cfg, 7500, 3000, block_rows=250)
    assert peak <= 250 * 640 + 1024 + 1600


def test_rows_past_the_audio_are_zeros_and_rows_past_the_clip_are_dropped():
    """finish(n_rows) beyond the audio pads with silence; fewer rows than the audio cuts it."""
    cfg = ExtractConfig(features=("rms",))
    y = _speechy(2.0)
    longer = compute_features(y, cfg, n_rows=80)["rms"]
    assert longer.shape == (80, 1) and (longer[52:] == 0).all() and (longer[:50] > 0).all()
    shorter = compute_features(y, cfg, n_rows=20)["rms"]
    np.testing.assert_array_equal(shorter, longer[:20])
