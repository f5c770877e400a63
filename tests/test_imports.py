"""Per-frame features brought by the user (``mmemo extract --import``): files put on the grid with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from mmemo.errors import ConfigError, MediaError
from mmemo.features.imports import ImportSpec, import_stream, read_table, to_grid

OPENFACE_HEADER = "frame, face_id, timestamp, confidence, success, gaze_0_x, x_0, AU01_r, AU12_r, AU12_c, pose_Rx"


def _openface(path, n, fps, success=None, faces=1, skip=()):
    """An OpenFace FeatureExtraction CSV of a ``fps`` video: row k at k / fps, AU01_r = k, AU12_r = 10 k,
    AU12_c = k % 2, gaze_0_x = -k, pose_Rx = k / 100, x_0 (a landmark: not taken) = 500 + k."""
    lines = [OPENFACE_HEADER]
    for k in range(n):
        if k in skip:
            continue
        for f in range(faces):
            ok = 1 if success is None else success(k)
            lines.append(f"{k + 1}, {f}, {k / fps:.3f}, 0.98, {ok}, {-k + 100 * f}, {500 + k}, {k + 100 * f}, "
                         f"{10 * k}, {k % 2}, {k / 100}")  # fmt: skip
    path.write_text("\n".join(lines) + "\n")
    return path


def test_openface_at_30_fps_lands_on_the_25_fps_grid_as_its_frames_would(tmp_path):
    """Row t (t / 25 s) takes OpenFace's row on screen then: k = floor(30 t / 25); the landmark column is not taken;
    rows past the last frame's 1/30 s are masked."""
    path = _openface(tmp_path / "c.csv", n=60, fps=30)  # 2.0 s
    t, values, usable, cols, kind = read_table(path)
    assert kind == "openface" and cols == ["gaze_0_x", "AU01_r", "AU12_r", "AU12_c", "pose_Rx"]
    out, mask = to_grid(t, values, usable, 55, 25)  # 2.2 s of grid
    k = np.floor(np.arange(55) * 30 / 25 + 1e-9).astype(int)
    inside = k < 60
    np.testing.assert_array_equal(mask, inside)
    np.testing.assert_allclose(out[inside, 1], k[inside])  # AU01_r = k
    np.testing.assert_allclose(out[inside, 2], 10 * k[inside])
    np.testing.assert_allclose(out[inside, 0], -k[inside])
    assert np.isnan(out[~inside]).all()


def test_success_zero_and_missing_frames_are_masked_never_filled(tmp_path):
    """success = 0 (the face was not tracked) masks its rows; frames 30-49 missing from a 25 fps file (a gap of
    20 steps) leave their rows masked, while one missing frame (k = 10) is bridged by its predecessor, like a
    video frame shown twice."""
    path = _openface(tmp_path / "c.csv", n=60, fps=25, success=lambda k: 0 if 5 <= k < 8 else 1,
                     skip={10, *range(30, 50)})  # fmt: skip
    t, values, usable, _, _ = read_table(path)
    out, mask = to_grid(t, values, usable, 60, 25)
    expected = np.ones(60, bool)
    expected[5:8] = False  # not tracked
    expected[30:50] = False  # no rows in the file
    np.testing.assert_array_equal(mask, expected)
    assert out[10, 1] == 9  # frame 10 missing: frame 9 still on screen
    assert out[29, 1] == 29 and out[50, 1] == 50 and np.isnan(out[30:50]).all()


def test_several_faces_in_a_frame_take_the_lowest_face_id(tmp_path):
    path = _openface(tmp_path / "c.csv", n=10, fps=25, faces=2)
    t, values, usable, _, _ = read_table(path)
    out, mask = to_grid(t, values, usable, 10, 25)
    assert mask.all()
    np.testing.assert_allclose(out[:, 1], np.arange(10))  # face 0's AU01_r, not face 1's (k + 100)


def test_generic_csv_and_npy_with_a_timestamp_column(tmp_path):
    """A CSV with a time column (every other numeric column a feature) and an NPY with the timestamp in column 0,
    both at 10 Hz: row t takes the value at floor(t / 2.5) / 10 s."""
    n = 20
    (tmp_path / "a.csv").write_text("time,emb1,emb2\n" + "".join(f"{k / 10},{k},{2 * k}\n" for k in range(n)))
    np.save(tmp_path / "b.npy", np.stack([np.arange(n) / 10, np.arange(n), 2 * np.arange(n)], axis=1))
    for name, kind, cols in (("a.csv", "csv", ["emb1", "emb2"]), ("b.npy", "npy", ["c1", "c2"])):
        t, values, usable, got_cols, got_kind = read_table(tmp_path / name)
        assert (got_kind, got_cols) == (kind, cols)
        out, mask = to_grid(t, values, usable, 52, 25)
        k = np.arange(52) * 10 // 25
        np.testing.assert_array_equal(mask, k < n)
        np.testing.assert_allclose(out[k < n, 1], 2 * k[k < n])


@pytest.mark.parametrize(
    "text, message",
    [
        ("frame,value\n1,2\n", ":1: no timestamp (or time) column in the header"),
        ("timestamp,a\n0.0,1\n0.1\n", ":3: 1 fields where the header has 2"),
        ("timestamp,a\n0.0,1\n0.1,x\n", ":3: column a holds 'x', not a number"),
        ("timestamp,a\n0.1,1\n0.0,1\n", ":3: timestamp 0 comes before the previous row's 0.1"),
        ("timestamp,a\n0.0,1\n0.1,inf\n", ":3: column a holds 'inf', not a finite number"),
    ],
)
def test_a_malformed_file_is_one_line_with_its_file_and_line(tmp_path, text, message):
    path = tmp_path / "c.csv"
    path.write_text(text)
    with pytest.raises(MediaError) as e:
        read_table(path)
    assert str(e.value) == f"{path}{message}"


def test_spec_parsing_and_file_lookup(tmp_path):
    (tmp_path / "of" / "spk1").mkdir(parents=True)
    _openface(tmp_path / "of" / "spk1" / "take1.csv", n=5, fps=25)
    _openface(tmp_path / "of" / "video2.csv", n=5, fps=25)
    spec = ImportSpec.parse(f"au={tmp_path / 'of'}")
    assert (spec.name, spec.side) == ("au", "video")
    assert ImportSpec.parse(f"w2v:audio={tmp_path / 'of'}").side == "audio"
    assert spec.file_for("spk1/take1", "take1") == tmp_path / "of" / "spk1" / "take1.csv"  # by clip id
    assert spec.file_for("clips/video2", "video2") == tmp_path / "of" / "video2.csv"  # by the file's stem
    assert spec.file_for("nothing", "nothing") is None
    assert import_stream(None, 10, 25, "au") is None  # no file: the caller notes it
    for bad, message in ((f"au:face={tmp_path}", "side 'face' is not audio or video"),
                         ("au", "expected NAME=DIR"), (f"9x={tmp_path}", "must start with a letter"),
                         (f"au={tmp_path / 'none'}", "is not a directory")):  # fmt: skip
        with pytest.raises(ConfigError, match=message):
            ImportSpec.parse(bad)
    np.save(tmp_path / "of" / "video2.npy", np.zeros((2, 2)))
    with pytest.raises(ConfigError, match="two files for import 'au'"):
        spec.file_for("video2", "video2")


# --------------------------------------------------------------------------------------- through `mmemo extract`
def _extract(*args):
    from click.testing import CliRunner

    from mmemo.cli import main

    return CliRunner().invoke(main, ["extract", *map(str, args), "--jobs", "1", "--frame-size", "16", "--faces", "off"])


def test_extract_stores_an_import_per_clip_and_masks_a_clip_without_its_file(tmp_path):
    """Two 2-s clips at 25 fps, an OpenFace file for one at 30 fps: its shard holds the AU values of the frame on
    screen in each row (row t: OpenFace frame floor(30 t / 25)); the other clip's stream is all masked, with a
    warning; a second run is up to date; a changed file extracts its clip again; a malformed one fails only its
    clip, in one line naming the file and line."""
    import h5py

    from mmemo.media.synth import counter_frames, write_media

    corpus, of = tmp_path / "corpus", tmp_path / "of"
    of.mkdir()
    for name in ("a", "b"):
        write_media(corpus / f"{name}.mp4", frames=counter_frames(50), fps=25)
    _openface(of / "a.csv", n=60, fps=30)
    out = tmp_path / "feats"
    r = _extract(corpus, "--out", out, "--import", f"au={of}")
    assert r.exit_code == 0, r.output
    assert "b: no file for import au" in r.output and "its rows are masked" in r.output
    with h5py.File(out / "shards" / "a.h5") as h5:
        g = h5["imports/au"]
        assert g.attrs["side"] == "video" and g.attrs["kind"] == "openface"
        values, mask = g["values"][()], g["mask"][()]
    k = np.floor(np.arange(50) * 30 / 25 + 1e-9).astype(int)
    assert mask.all() and values.shape == (50, 5)
    np.testing.assert_allclose(values[:, 1], k)  # AU01_r
    with h5py.File(out / "shards" / "b.h5") as h5:
        assert not h5["imports/au/mask"][()].any() and h5["imports/au/values"].shape == (50, 0)
    r = _extract(corpus, "--out", out, "--import", f"au={of}")
    assert "0 extracted, 2 up to date" in r.output
    (of / "a.csv").write_text((of / "a.csv").read_text().replace("0.98, 1, -3,", "0.98, 1, x,"))
    r = _extract(corpus, "--out", out, "--import", f"au={of}")
    assert r.exit_code == 1
    assert f"error: {of / 'a.csv'}:5: column gaze_0_x holds 'x', not a number" in r.output
    assert "0 extracted, 1 up to date, 1 failed" in r.output
    r = _extract(corpus, "--out", out, "--import", f"au:face={of}")
    assert r.exit_code != 0 and "side 'face' is not audio or video" in r.output


def test_a_spec_for_prediction_may_name_one_clips_file(tmp_path):
    """`mmemo predict --import NAME=FILE`: the file is the clip's, whatever its name; extraction wants a directory."""
    f = tmp_path / "whatever.csv"
    f.write_text("time,a\n0,1\n")
    spec = ImportSpec.parse(f"au={f}", files=True)
    assert spec.is_file and spec.file_for("clip", "clip") == f
    assert not ImportSpec.parse(f"au={tmp_path}", files=True).is_file
    with pytest.raises(ConfigError, match="is not a directory"):
        ImportSpec.parse(f"au={f}")
    (tmp_path / "x.txt").write_text("")
    with pytest.raises(ConfigError, match=r"x.txt is not a .csv or .npy file"):
        ImportSpec.parse(f"au={tmp_path / 'x.txt'}", files=True)
