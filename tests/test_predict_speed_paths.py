"""The parallel paths of prediction give the numbers of the plain ones, on a real 720p talking-face clip.

Prediction at 720p (issue 15) leans on threads: FFmpeg's frame threads decode the video, and the face tracker runs
in a thread of its own beside the decoding (``FaceStream(background=True)``, what ``featurise`` and so predict and
extract use). Threads may only change when work is done, never what comes out: these tests run each threaded path
and its in-line twin on the same real file and ask for the same bytes (frames, crops) and the same numbers (masks,
timestamps, boxes, landmarks, scores, the tracker's counts).

The clip is a real HDTF recording (../shared/realdata) scaled and padded to 1280x720 H.264 + AAC by the ffmpeg
command line, as benchmarks/predict.py builds its 720p clips, cut to 3 s (75 rows).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import REALDATA, needs_ffmpeg, needs_realdata

from mmemo.config import ExtractConfig
from mmemo.features.clip import FaceChunk, FaceStream, join_faces
from mmemo.media.decode import DecodedMedia, decode_media

pytestmark = [needs_realdata, needs_ffmpeg]

SOURCE = REALDATA / "sadtalker_hdtf_talking_faces" / "WDA_AlexandriaOcasioCortez_000.mp4"
VF_720P = "scale=1280:720:force_original_aspect_ratio=decrease,pad=1280:720:(ow-iw)/2:(oh-ih)/2,setsar=1"
SECONDS, ROWS = 3, 75


@pytest.fixture(scope="module")
def clip_720p(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("hd") / "aoc_720p.mp4"
    cmd = ["ffmpeg", "-v", "error", "-nostdin", "-y", "-i", str(SOURCE), "-t", str(SECONDS), "-vf", VF_720P,
           "-c:v", "libx264", "-preset", "veryfast", "-crf", "23", "-pix_fmt", "yuv420p", "-c:a", "aac",
           "-b:a", "128k", str(out)]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True)
    return out


def _decode(path: Path, threads: int, faces: FaceStream | None = None) -> DecodedMedia:
    cfg = ExtractConfig()
    return decode_media(path, fps=cfg.fps, sample_rate=cfg.sample_rate, size=cfg.frame_size, aspect=cfg.aspect,
                        threads=threads, on_picture=faces.push if faces is not None else None)  # fmt: skip


def _faces(path: Path, background: bool) -> tuple[FaceChunk, dict, DecodedMedia]:
    chunks: list[FaceChunk] = []
    stream = FaceStream(ExtractConfig(), chunks.append, background=background)
    try:
        dec = _decode(path, threads=0, faces=stream)
    finally:
        stream.close()
    stats = stream.finish()
    return join_faces(chunks), stats, dec


def test_the_clip_is_720p_and_75_rows(clip_720p):
    dec = _decode(clip_720p, threads=1)
    assert (dec.native_width, dec.native_height) == (1280, 720)
    assert dec.n_frames == ROWS
    assert dec.video_mask.all() and dec.frames.shape == (ROWS, 224, 224, 3)
    # letterboxed 16:9 at 224 px: 224 x 126 of picture, 49 black rows above and below
    assert not dec.frames[:, :49].any() and not dec.frames[:, 224 - 49 :].any()


@pytest.mark.parametrize("threads", [0, 2])
def test_frame_threaded_decoding_gives_the_single_threaded_rows(clip_720p, threads):
    one = _decode(clip_720p, threads=1)
    many = _decode(clip_720p, threads=threads)
    assert many.n_frames == one.n_frames == ROWS
    assert np.array_equal(many.frames, one.frames)  # byte for byte: H.264 decoding is exact under any threading
    assert np.array_equal(many.video_mask, one.video_mask)
    assert np.array_equal(many.source_index, one.source_index)
    assert np.array_equal(many.source_time, one.source_time)
    assert np.array_equal(many.audio, one.audio) and np.array_equal(many.audio_mask, one.audio_mask)


def test_the_face_thread_gives_the_in_line_trackers_rows(clip_720p):
    inline, inline_stats, inline_dec = _faces(clip_720p, background=False)
    threaded, threaded_stats, threaded_dec = _faces(clip_720p, background=True)
    assert threaded_stats == inline_stats
    # a talking face in every row, the detector on rows 0, 5, ..., 70 and once more to decide rows 71-74
    assert inline_stats == {"rows": ROWS, "present": ROWS, "detections": 16, "multi": 0, "follows": 1}
    assert threaded.start == inline.start == 0
    assert np.array_equal(threaded.crops, inline.crops)
    assert np.array_equal(threaded.mask, inline.mask)
    np.testing.assert_array_equal(threaded.boxes, inline.boxes)  # NaN where absent compares equal here
    np.testing.assert_array_equal(threaded.landmarks, inline.landmarks)
    np.testing.assert_array_equal(threaded.scores, inline.scores)
    assert np.array_equal(threaded_dec.frames, inline_dec.frames)
