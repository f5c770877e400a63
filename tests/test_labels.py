"""Label tables: parsing, clip-id normalisation, alignment to the 25 fps grid (hand-computed values)."""

from __future__ import annotations

import numpy as np
import pytest

from mmemo.data.labels import align, normalise_clip_id, read_labels
from mmemo.errors import LabelError


def _write(tmp_path, text):
    p = tmp_path / "labels.csv"
    p.write_text(text)
    return p


@pytest.mark.parametrize(
    "raw, expected",
    [("a/b", "a/b"), ("a/b.mp4", "a/b"), ("./a/b.WAV", "a/b"), ("a\\b.mkv", "a/b"), ("v1.2", "v1.2")],
)
def test_clip_ids_are_normalised(raw, expected):
    """A media suffix, ./ and backslashes are dropped; other dots are kept."""
    assert normalise_clip_id(raw) == expected


def test_per_clip_labels_hold_for_every_row(tmp_path):
    """clip,valence,arousal: the same value on all T rows, all masked in."""
    table = read_labels(_write(tmp_path, "clip,valence,arousal\nx.mp4,0.5,-0.25\ny,0,1\n"))
    assert table.kind == "clip" and table.clip_ids == ["x", "y"]
    a = align(table.for_clip("x"), table.kind, 7, 25)
    assert a.mask.all() and np.allclose(a.valence, 0.5) and np.allclose(a.arousal, -0.25)
    assert a.valence.dtype == np.float32 and a.valence.shape == (7,)


def test_continuous_labels_are_interpolated_at_frame_times(tmp_path):
    """Annotations at 0, 0.1, 0.2 s: row t (time t/25) gets the linear interpolation; no extrapolation."""
    table = read_labels(
        _write(tmp_path, "clip,time,valence,arousal\nc,0.2,1.0,0\nc,0.0,0.0,0\nc,0.1,0.5,1.0\n")
    )  # rows out of order on purpose
    assert table.kind == "continuous"
    a = align(table.for_clip("c"), table.kind, 8, 25)  # rows at 0, .04, .08, .12, .16, .20, .24, .28 s
    # valence: 0 -> 0.5 over [0, 0.1], 0.5 -> 1 over [0.1, 0.2]
    np.testing.assert_allclose(a.valence[:6], [0.0, 0.2, 0.4, 0.6, 0.8, 1.0], atol=1e-6)
    np.testing.assert_allclose(a.arousal[:6], [0.0, 0.4, 0.8, 0.8, 0.4, 0.0], atol=1e-6)
    assert a.mask.tolist() == [True] * 6 + [False] * 2  # 0.24 and 0.28 s are past the last annotation
    assert np.isnan(a.valence[6:]).all()


def test_missing_values_mask_only_their_neighbourhood(tmp_path):
    """A NaN at 0.1 s masks rows whose interpolation uses it; an exact hit on a known sample stays."""
    table = read_labels(_write(tmp_path, "clip,time,valence,arousal\nc,0,0,0\nc,0.1,,0\nc,0.2,1,0\nc,0.4,1,0\n"))
    a = align(table.for_clip("c"), table.kind, 11, 25)
    times = np.arange(11) / 25
    expect = (times == 0) | (times >= 0.2 - 1e-9) & (times <= 0.4 + 1e-9)
    assert a.mask.tolist() == expect.tolist()


def test_annotation_starting_late_masks_the_start(tmp_path):
    """Labels from 1.0 s on: rows before 1.0 s are unlabelled, not filled."""
    table = read_labels(_write(tmp_path, "clip,time,valence,arousal\nc,1.0,0.3,0.3\nc,2.0,0.3,0.3\n"))
    a = align(table.for_clip("c"), table.kind, 60, 25)
    assert not a.mask[:25].any() and a.mask[25:51].all() and not a.mask[51:].any()


@pytest.mark.parametrize(
    "text, message",
    [
        ("clip,valence\na,1\n", "missing column(s) arousal"),
        ("clip,valence,arousal\na,1,high\n", ":2: column arousal holds 'high'"),
        ("clip,valence,arousal\na,1,1\na,0,0\n", ":3: clip 'a' is labelled twice"),
        ("clip,frame,valence,arousal\na,0,1,1\na,0,0,0\n", ":3: clip 'a' is labelled twice at frame 0"),
        ("clip,frame,valence,arousal\na,-1,1,1\n", ":2: column frame holds -1, not a frame index"),
        ("clip,time,frame,valence,arousal\na,0,0,1,1\n", "has both a time and a frame column"),
        ("", "cannot read label table"),
    ],
)
def test_malformed_tables_name_file_and_line(tmp_path, text, message):
    """A bad table raises one LabelError naming the file (and line)."""
    path = _write(tmp_path, text)
    with pytest.raises(LabelError) as e:
        read_labels(path)
    assert str(path) in str(e.value) and message in str(e.value) and "\n" not in str(e.value)


def test_extra_columns_are_kept(tmp_path):
    """A speaker column survives for later grouping."""
    table = read_labels(_write(tmp_path, "clip,valence,arousal,speaker\na,0,0,s1\n"))
    assert table.for_clip("a")["speaker"].tolist() == ["s1"]
