"""Shards: what is written is what is read back; writes are atomic; validation finds damage."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from mmemo.config import ExtractConfig
from mmemo.data import schema as S
from mmemo.data.shards import ShardWriter, open_shard, read_attrs, read_clip, validate_shard
from mmemo.errors import SchemaError

T, SIZE = 37, 32  # 37 rows: two full write blocks of 16 and a partial one


def _attrs(**over):
    a = {
        "schema_version": S.SCHEMA_VERSION, "clip_id": "spk/clip", "source": "spk/clip.mp4", "audio_source": "",
        "source_size": 1234, "source_mtime": 1.5, "audio_source_size": 0, "audio_source_mtime": 0.0,
        "n_frames": T, "fps": 25, "duration": T / 25, "modalities": "audio,video", "frame_codec": "lzf",
        "native_fps": 29.97,
        "native_width": 640, "native_height": 360, "rotation": 0, "sample_rate": 16000,
        "native_sample_rate": 48000, "native_channels": 2, "label_kind": "continuous", "key": "abc",
    }  # fmt: skip
    a.update(over)
    return a


def _write(path, rng, frames=True, labels=True, codec="lzf", frame_data=None):
    cfg = ExtractConfig(frame_size=SIZE, features=("rms", "mfcc"), frame_codec=codec)
    data = {
        "frames": rng.integers(0, 256, (T, SIZE, SIZE, 3), dtype=np.uint8) if frame_data is None else frame_data,
        "rms": rng.random((T, 1), dtype=np.float32),
        "mfcc": rng.standard_normal((T, 20)).astype(np.float32),
        "valence": rng.uniform(-1, 1, T).astype(np.float32),
    }
    with ShardWriter(path, frame_size=SIZE, codec=codec) as w:
        if frames:
            for i in range(0, T, S.FRAME_WRITE_ROWS):
                w.append_frames(data["frames"][i : i + S.FRAME_WRITE_ROWS])
            w.write(S.VIDEO_MASK, np.ones(T, bool))
            w.write(S.SOURCE_TIME, np.arange(T) / 25)
        w.write(S.TIMESTAMPS, np.arange(T) / 25)
        w.write(S.feature_path("rms"), data["rms"])
        w.write(S.feature_path("mfcc"), data["mfcc"])
        w.write(S.AUDIO_MASK, np.ones(T, bool))
        if labels:
            w.write(S.VALENCE, data["valence"])
            w.write(S.AROUSAL, -data["valence"])
            w.write(S.LABEL_MASK, np.ones(T, bool))
        mods = "audio,video" if frames else "audio"
        meta = {
            "feature_config": cfg.to_json(),
            "config_hash": cfg.config_hash(),
            "mmemo_version": "0",
            "versions": "{}",
        }
        w.set_attrs(_attrs(modalities=mods, frame_codec=codec), meta)
    return data


def test_shard_round_trip(tmp_path):
    """Frames, features, labels and attributes read back bit for bit."""
    rng = np.random.default_rng(0)
    path = tmp_path / "shards" / "spk" / "clip.h5"
    data = _write(path, rng)
    clip = read_clip(path)
    np.testing.assert_array_equal(clip.frames, data["frames"])
    np.testing.assert_array_equal(clip.features["rms"], data["rms"])
    np.testing.assert_array_equal(clip.features["mfcc"], data["mfcc"])
    np.testing.assert_array_equal(clip.valence, data["valence"])
    assert clip.clip_id == "spk/clip" and clip.n_frames == T and clip.modalities == ("audio", "video")
    assert clip.attrs["native_fps"] == pytest.approx(29.97) and clip.feature_config["features"] == ["rms", "mfcc"]
    assert validate_shard(path) == []
    with h5py.File(path) as h:  # chunked along time and compressed
        assert h[S.FRAMES].chunks == (S.FRAME_CHUNK, SIZE, SIZE, 3)
        assert h[S.FRAMES].compression == "lzf"  # the default codec
    assert not list(tmp_path.rglob("*.partial"))


def test_audio_only_shard_has_no_video_group(tmp_path):
    """An audio-only clip is written without /video, reads back with frames None, and validates."""
    path = tmp_path / "a.h5"
    _write(path, np.random.default_rng(1), frames=False, labels=False)
    clip = read_clip(path)
    assert clip.frames is None and clip.valence is None and clip.modalities == ("audio",)
    assert validate_shard(path) == []


def test_failed_write_leaves_nothing(tmp_path):
    """An exception inside the writer removes the partial file; no shard appears."""
    path = tmp_path / "x.h5"
    with pytest.raises(RuntimeError):
        with ShardWriter(path, frame_size=SIZE) as w:
            w.append_frames(np.zeros((4, SIZE, SIZE, 3), np.uint8))
            raise RuntimeError("decoder died")
    assert list(tmp_path.iterdir()) == []


def test_wrong_frame_shape_is_refused(tmp_path):
    """Frames of another size never enter a shard."""
    with pytest.raises(ValueError, match="does not match the schema"):
        with ShardWriter(tmp_path / "x.h5", frame_size=SIZE) as w:
            w.append_frames(np.zeros((4, SIZE + 1, SIZE, 3), np.uint8))


def test_older_schema_is_refused_with_one_line(tmp_path):
    """A shard of another schema version: one line telling the user to re-run extract."""
    path = tmp_path / "old.h5"
    _write(path, np.random.default_rng(2))
    with h5py.File(path, "a") as h:
        h.attrs["schema_version"] = 0
    with pytest.raises(SchemaError, match=rf"schema version 0 is not {S.SCHEMA_VERSION}; re-run `mmemo extract`"):
        read_attrs(path)
    assert validate_shard(path) == [f"{path}: shard schema version 0 is not {S.SCHEMA_VERSION}; re-run `mmemo extract`"]


def test_validate_finds_damage(tmp_path):
    """NaN in a feature, a short mask and a missing feature are each reported."""
    path = tmp_path / "bad.h5"
    _write(path, np.random.default_rng(3))
    with h5py.File(path, "a") as h:
        h[S.feature_path("rms")][3, 0] = np.nan
        del h[S.AUDIO_MASK]
        h.create_dataset(S.AUDIO_MASK, data=np.ones(T - 1, bool))
        del h[S.feature_path("mfcc")]
    problems = validate_shard(path)
    assert any("rms holds 1 NaN/Inf" in p for p in problems)
    assert any(f"/audio/mask is ({T - 1},)" in p for p in problems)
    assert any("features ['rms'] differ" in p for p in problems)


def test_not_hdf5_is_a_schema_error(tmp_path):
    """A file that is not HDF5 is reported, not crashed on."""
    path = tmp_path / "junk.h5"
    path.write_bytes(b"not hdf5 at all")
    with pytest.raises(SchemaError, match="not a readable HDF5 shard"):
        open_shard(path)


def _smooth_frames():
    """Frames with smooth gradients (what JPEG is for), moving over time."""
    y, x = np.mgrid[0:SIZE, 0:SIZE]
    f = [np.stack([(x * 7 + t * 3) % 256, (y * 5 + t) % 256, ((x + y) * 2) % 256], -1) for t in range(T)]
    return np.asarray(f, np.uint8)


@pytest.mark.parametrize("codec", ["lzf", "gzip", "zstd"])
def test_lossless_codecs_round_trip(tmp_path, codec):
    """lzf, gzip and zstd give back the very frames written."""
    if codec == "zstd":
        pytest.importorskip("hdf5plugin", reason="zstd needs hdf5plugin (pip install 'mmemo[zstd]')")
    path = tmp_path / f"{codec}.h5"
    data = _write(path, np.random.default_rng(4), codec=codec)
    np.testing.assert_array_equal(read_clip(path).frames, data["frames"])
    assert validate_shard(path) == []


def test_jpeg_codec_is_close_and_small(tmp_path):
    """jpeg90: mean absolute error under 4 grey levels on smooth frames, a third of raw or less."""
    path = tmp_path / "j.h5"
    frames = _smooth_frames()
    _write(path, np.random.default_rng(5), codec="jpeg90", frame_data=frames)
    back = read_clip(path).frames
    assert back.shape == frames.shape and back.dtype == np.uint8
    assert np.abs(back.astype(int) - frames).mean() < 4  # saturated colours lose some to chroma subsampling
    with h5py.File(path) as h:
        assert S.FRAMES not in h and h[S.FRAMES_JPEG].shape == (T,)
        # 32x32 frames carry ~600 bytes of JPEG headers each; real 224x224 frames shrink ~19x (benchmarks)
        assert sum(len(b) for b in h[S.FRAMES_JPEG][()]) < frames.nbytes / 3
    assert validate_shard(path) == []


def test_unknown_codec_is_a_config_error():
    """A codec mmemo cannot write is refused up front with the choices."""
    from mmemo.errors import ConfigError

    with pytest.raises(ConfigError, match="frame codec 'png' is not one of lzf, gzip, zstd"):
        ExtractConfig(frame_codec="png")


def test_a_partial_name_carries_its_writer(tmp_path):
    """`<name>.<pid>.partial` names its writer (so a process deletes only its own); `<name>.partial` names none."""
    import os

    from mmemo.atomic import partial_path, writer_pid

    shard = tmp_path / "clip.v2.h5"
    assert writer_pid(partial_path(shard, unique=True)) == os.getpid()
    assert writer_pid(partial_path(shard)) is None and writer_pid(shard) is None
