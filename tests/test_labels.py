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


# ------------------------------------------------------------------ what the generic reader refuses (issue 12, item 7)
def _error(path) -> str:
    with pytest.raises(LabelError) as e:
        read_labels(path)
    message = str(e.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(
    "text, message",
    [
        # an empty time cell, after two blank lines (one of spaces): pandas skips them, the line number does not
        ("clip,time,valence,arousal\nc,0,0,0\n\n  \nc,,0.5,0.5\n", ":5: empty time"),
        ("clip,time,valence,arousal\nc,0,0,0\nc, ,0.5,0.5\n", ":3: empty time"),
        ("clip,time,valence,arousal\nc,0,0,0\nc,nan,0,0\n", ":3: column time holds 'nan', not a finite number"),
        ("clip,time,valence,arousal\nc,0,0,0\nc,NA,0,0\n", ":3: column time holds 'NA', not a finite number"),
        ("clip,time,valence,arousal\nc,0,0,0\nc,inf,0,0\n", ":3: column time holds inf, not a finite number"),
        ("clip,time,valence,arousal\nc,-inf,0,0\n", ":2: column time holds -inf, not a finite number"),
    ],
)
def test_a_time_must_be_a_finite_number(tmp_path, text, message):
    """Time-continuous tables: an empty, NaN or infinite time is an error naming the physical line."""
    path = _write(tmp_path, text)
    assert _error(path) == f"{path}{message}"


@pytest.mark.parametrize(
    "text, message",
    [
        ("clip,valence,arousal\na,inf,0\n", ":2: column valence holds inf, not a finite number"),
        ("clip,time,valence,arousal\nc,0,0,0\nc,0.1,0,-inf\n", ":3: column arousal holds -inf, not a finite number"),
        ("clip,valence,arousal\na,1.5,0\n", ":2: valence 1.5 is outside [-1, 1]"),
        ("clip,valence,arousal\na,0,0\nb,0,-1.01\n", ":3: arousal -1.01 is outside [-1, 1]"),
        ("clip,time,valence,arousal\nc,0,0,0\n\nc,0.1,0,7\n", ":4: arousal 7 is outside [-1, 1]"),
        ("clip,frame,valence,arousal\nv,0,0,0\nv,1,-5,-5\n", ":3: valence -5 is outside [-1, 1]"),
        # the first bad line wins, whichever column it is in
        ("clip,valence,arousal\na,0,2\nb,3,0\n", ":2: arousal 2 is outside [-1, 1]"),
    ],
)
def test_values_must_be_finite_and_within_minus_one_one(tmp_path, text, message):
    """valence / arousal: +-inf and values outside [-1, 1] are errors naming line, column and value."""
    path = _write(tmp_path, text)
    assert _error(path) == f"{path}{message}"


def test_bounds_and_empty_values_are_accepted(tmp_path):
    """Exactly -1 and 1 are in range; an empty (or nan) valence / arousal stays allowed: unlabelled."""
    table = read_labels(_write(tmp_path, "clip,valence,arousal\na,-1,1\nb,,0.5\nc,nan,\n"))
    assert table.rows["valence"].tolist()[0] == -1 and table.rows["arousal"].tolist()[0] == 1
    assert np.isnan(table.rows["valence"].tolist()[1:]).all()


@pytest.mark.parametrize(
    "text, message",
    [
        (
            "clip,time,valence,arousal\nc,0,0,0\nc,0.5,0.1,0\n\nc,0.5,0.2,0\n",
            ":5: clip 'c' is labelled twice at time 0.5, differently from line 3 (valence 0.1 there, 0.2 here)",
        ),
        (
            "clip,valence,arousal\na.mp4,0.5,0.5\n\n\nb,0,0\na,0.5,-0.5\n",
            ":6: clip 'a' is labelled twice, differently from line 2 (arousal 0.5 there, -0.5 here)",
        ),
        (
            "clip,valence,arousal,speaker\na,0.5,0.5,s1\na,0.5,0.5,s2\n",
            ":3: clip 'a' is labelled twice, differently from line 2 (speaker 's1' there, 's2' here)",
        ),
        (
            "clip,frame,valence,arousal\nv,0,0,0\nv,1,0,0\nv,1,0,\n",
            ":4: clip 'v' is labelled twice at frame 1, differently from line 3 (arousal 0 there, nan here)",
        ),
    ],
)
def test_conflicting_duplicates_name_both_lines(tmp_path, text, message):
    """Two rows for one (clip, time), one clip or one (clip, frame) that differ: an error naming both lines."""
    path = _write(tmp_path, text)
    assert _error(path) == f"{path}{message}"


def test_exact_duplicates_are_kept_once(tmp_path):
    """A row repeated word for word (after clip-id normalisation) says nothing new: it is kept once."""
    per_clip = read_labels(_write(tmp_path, "clip,valence,arousal\na,0.5,0.5\nb,0,0\na.mp4,0.5,0.5\n"))
    assert per_clip.rows["clip"].tolist() == ["a", "b"]
    cont = read_labels(_write(tmp_path, "clip,time,valence,arousal\nc,0,0,0\nc,0.1,0.5,\nc,0.1,0.5,\nc,0.2,1,0\n"))
    assert cont.rows["time"].tolist() == [0, 0.1, 0.2]


def test_line_numbers_count_blank_lines_and_quoted_line_breaks(tmp_path):
    """Blank lines (before the header too) and a quoted clip id spanning two lines are counted as pandas reads them."""
    path = _write(tmp_path, '\nclip,valence,arousal\n"a\nb",0,0\n\n \t\nc,0,high\n')
    assert _error(path) == f"{path}:7: column arousal holds 'high', not a number"
    path = _write(tmp_path, "clip,valence,arousal\na,0,0\n\n,0,0\n")
    assert _error(path) == f"{path}:4: empty clip id"
    path = _write(tmp_path, "clip,frame,valence,arousal\nv,0,0,0\n\nv,1.5,0,0\n")
    assert _error(path) == f"{path}:4: column frame holds 1.5, not a frame index (0, 1, 2, ...)"


@pytest.mark.parametrize(
    "text, note",
    [
        ("c,30,0,0\nc,42,0.5,0.5\n", "labels span 30.00-42.00 s, outside the clip (0-12.00 s): no row labelled"),
        ("c,-3,0,0\nc,-0.5,0.5,0.5\n", "labels span -3.00--0.50 s, outside the clip (0-12.00 s): no row labelled"),
        (
            "c,5.01,0,0\nc,5.03,0.5,0.5\n",
            "labels span 5.01-5.03 s, which holds no row of the 25 fps grid (rows at 0-11.96 s): no row labelled",
        ),
    ],
)
def test_continuous_labels_outside_their_clip_are_noted(tmp_path, text, note):
    """A 12 s clip (300 rows) whose labels cover none of its rows: nothing is labelled, and a note says why."""
    table = read_labels(_write(tmp_path, "clip,time,valence,arousal\n" + text))
    a = align(table.for_clip("c"), table.kind, 300, 25)
    assert not a.mask.any()
    assert a.notes == [note]


def test_labels_partly_inside_their_clip_give_no_note(tmp_path):
    """Labels from 10 to 20 s on a 12 s clip: rows 10-11.96 s are labelled, nothing to note."""
    table = read_labels(_write(tmp_path, "clip,time,valence,arousal\nc,10,0,0\nc,20,0.5,0.5\n"))
    a = align(table.for_clip("c"), table.kind, 300, 25)
    assert a.mask[250:].all() and not a.mask[:250].any() and a.notes == []
