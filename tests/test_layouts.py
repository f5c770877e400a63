"""Corpus label layouts: detection, every reader's awkward parts, gold standards, and `mmemo extract` end to end.

Small annotation files are written by the tests; expected values are worked out by hand in the comments.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from mmemo.cli import main
from mmemo.config import TrainConfig
from mmemo.data.emotions import DEFAULT_MAP, LEXICON, parse_cremad, parse_ravdess
from mmemo.data.features_dir import load_corpus, split
from mmemo.data.labels import align, read_labels
from mmemo.data.layouts import detect, load_labels
from mmemo.data.raters import ewe_weights, gold_standard, read_rater_file
from mmemo.data.shards import read_clip
from mmemo.errors import ConfigError, LabelError
from mmemo.media.decode import decode_media
from mmemo.media.synth import counter_frames, tone, write_media

U = np.array([1.0, -1.0, 1.0, -1.0])  # zero-mean, orthogonal, equal norms: correlations come out by hand
W = np.array([1.0, 1.0, -1.0, -1.0])


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _csv_traces(times, *raters, names=None):
    names = names or [f"R{i + 1}" for i in range(len(raters))]
    lines = ["time;" + ";".join(names)]
    for i, t in enumerate(times):
        lines.append(f"{t:.2f};" + ";".join("" if np.isnan(r[i]) else f"{r[i]:g}" for r in raters))
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------- multi-rater: parsing
def test_recola_csv_with_gaps_averages_the_raters_present(tmp_path):
    """`;`-separated, header time;FM1;FM2;FF1, empty cells: the gold standard is the mean of who rated."""
    nan = np.nan
    text = _csv_traces([0, 0.04, 0.08], [0.1, 0.2, nan], [0.3, nan, nan], [nan, 0.4, 0.6], names=["FM1", "FM2", "FF1"])
    _write(tmp_path / "arousal/train_1.csv", text)
    _write(tmp_path / "valence/train_1.csv", text.replace("0.6", "-0.6"))
    table = load_labels(tmp_path, ["train_1"])
    assert table.layout == "multirater" and table.kind == "continuous"
    rows = table.for_clip("train_1")
    np.testing.assert_allclose(rows["time"], [0, 0.04, 0.08])
    np.testing.assert_allclose(rows["arousal"], [0.2, 0.3, 0.6])  # (0.1+0.3)/2, (0.2+0.4)/2, 0.6 alone
    np.testing.assert_allclose(rows["valence"], [0.2, 0.3, -0.6])
    trace = read_rater_file(tmp_path / "arousal/train_1.csv")[0]
    assert trace.raters == ["FM1", "FM2", "FF1"] and trace.key == "train_1"


def test_arff_headers_comments_quotes_and_case(tmp_path):
    """AVEC ARFF: % comments, @ATTRIBUTE in any case, quoted names, '?' missing, quoted instance names."""
    path = _write(
        tmp_path / "x.arff",
        "% AVEC 2016 ratings\n@RELATION 'ratings arousal'\n\n@attribute Instance_name string\n"
        "@ATTRIBUTE frameTime NUMERIC\n@Attribute 'FM 1' numeric\n@attribute \"FF1\" REAL\n\n@DATA\n"
        "% a comment inside the data\n'train_1',0.00,0.1,0.3\n'train_1',0.04,?,0.5\n\"train_2\",0.00,-1,1\n",
    )
    traces = {t.key: t for t in read_rater_file(path)}
    assert sorted(traces) == ["train_1", "train_2"]
    t1 = traces["train_1"]
    assert t1.raters == ["FM 1", "FF1"]
    np.testing.assert_array_equal(t1.time, [0.0, 0.04])
    np.testing.assert_array_equal(t1.ratings, [[0.1, 0.3], [np.nan, 0.5]])
    np.testing.assert_allclose(gold_standard(t1.ratings)[0], [0.2, 0.5])


def test_ewe_weights_hand_computed():
    """EWE weight = corr(rater, mean of the other raters), clipped at 0, normalised.

    (u, u, -u/2 + w): raters 1 and 2 each correlate 1/sqrt(5) with the others' mean (u/2 + w)/2, rater 3
    correlates -1/sqrt(5) with u: weights 0.5, 0.5, 0, and the estimate is u.
    (u, u + w, u - w): rater 1 correlates 1 with u; raters 2 and 3 each 0.5/sqrt(2.5) with u -/+ w/2.
    """
    r = np.stack([U, U, -U / 2 + W], axis=1)
    np.testing.assert_allclose(ewe_weights(r), [0.5, 0.5, 0.0])
    np.testing.assert_allclose(gold_standard(r, "ewe")[0], U)
    np.testing.assert_allclose(gold_standard(r, "mean")[0], U / 2 + W / 3)
    r = np.stack([U, U + W, U - W], axis=1)
    c = 0.5 / np.sqrt(2.5)
    np.testing.assert_allclose(ewe_weights(r), np.array([1, c, c]) / (1 + 2 * c))
    np.testing.assert_allclose(gold_standard(r, "ewe")[0], U)  # the +w and -w raters cancel


def test_ewe_through_the_layout_renormalises_over_rater_gaps(tmp_path):
    """--gold ewe on files; where a rater has a gap, the others' weights are renormalised at that time."""
    s = np.arange(6.0)
    r1 = s.copy()
    r1[1] = np.nan
    ratings = np.stack([r1, s + 1, 2 * s + 2], axis=1)
    gold, w = gold_standard(ratings, "ewe")
    assert (w > 0).all() and w.sum() == pytest.approx(1)
    assert gold[1] == pytest.approx((w[1] * 2 + w[2] * 4) / (w[1] + w[2]))  # raters 2 and 3 only, at step 1
    times = s * 0.04
    for d in ("arousal", "valence"):  # ratings are in [-1, 1]: the same ratings / 16 (exact in decimal and binary)
        _write(tmp_path / d / "c.csv", _csv_traces(times, *(ratings / 16).T))
    rows = load_labels(tmp_path, ["c"], gold="ewe").for_clip("c")
    np.testing.assert_allclose(rows["arousal"], gold / 16)  # correlations, hence weights, ignore the scale
    np.testing.assert_allclose(load_labels(tmp_path, ["c"]).for_clip("c")["arousal"], np.nanmean(ratings, axis=1) / 16)


def test_annotation_delay_shifts_by_exactly_that_many_seconds(tmp_path):
    """Delay 0.2 s: the label at 0.2 s + t is given to media time t, so aligned row t = undelayed row t + 5."""
    t = np.round(np.arange(0, 2.0001, 0.04), 2)
    for d in ("arousal", "valence"):
        _write(tmp_path / d / "c.csv", _csv_traces(t, np.sin(3 * t) if d == "arousal" else (t / 2) ** 2))
    plain = load_labels(tmp_path, ["c"])
    late = load_labels(tmp_path, ["c"], annotation_delay=0.2)
    a = align(plain.for_clip("c"), plain.kind, 50, 25)
    b = align(late.for_clip("c"), late.kind, 50, 25)
    np.testing.assert_allclose(b.arousal[:45], a.arousal[5:50], atol=1e-6)
    np.testing.assert_allclose(b.valence[:45], a.valence[5:50], atol=1e-6)
    assert b.mask[:46].all() and not b.mask[46:].any()  # 1.84 s + 0.2 = 2.04 s is past the last annotation
    with pytest.raises(ConfigError, match="--annotation-delay applies to time-continuous labels; these are cremad"):
        load_labels(tmp_path / "crema", ["1001_DFA_ANG_XX"], annotation_delay=0.2)


def test_dimensions_on_different_time_steps_share_one_time_column(tmp_path):
    """Arousal every 0.08 s, valence every 0.04 s: one time column, arousal interpolated between its samples."""
    _write(tmp_path / "arousal/c.csv", _csv_traces([0, 0.08], [0.0, 0.8]))
    _write(tmp_path / "valence/c.csv", _csv_traces([0, 0.04, 0.08, 0.12], [0.1, 0.2, 0.3, 0.4]))
    rows = load_labels(tmp_path, ["c"]).for_clip("c")
    np.testing.assert_allclose(rows["time"], [0, 0.04, 0.08, 0.12])
    np.testing.assert_allclose(rows["valence"], [0.1, 0.2, 0.3, 0.4])
    np.testing.assert_allclose(rows["arousal"], [0, 0.4, 0.8, np.nan])  # not extrapolated past 0.08 s


def test_one_dimension_only_is_an_error_and_a_one_sided_clip_a_note(tmp_path):
    """mmemo trains both dimensions with one mask: a corpus with only arousal cannot train; say so."""
    _write(tmp_path / "a/arousal/c.csv", _csv_traces([0, 0.04], [0.1, 0.2]))
    with pytest.raises(LabelError, match="no valence annotations next to the arousal ones"):
        load_labels(tmp_path / "a", ["c"])
    _write(tmp_path / "b/arousal/c.csv", _csv_traces([0, 0.04], [0.1, 0.2]))
    _write(tmp_path / "b/arousal/d.csv", _csv_traces([0, 0.04], [0.1, 0.2]))
    _write(tmp_path / "b/valence/c.csv", _csv_traces([0, 0.04], [0.1, 0.2]))
    table = load_labels(tmp_path / "b", ["c", "d"])
    assert table.clip_ids == ["c"]
    assert any("1 clip(s) have arousal but no valence annotation" in n and ": d" in n for n in table.notes)


# ------------------------------------------------------------------------------------------- Aff-Wild2 per frame
def test_source_index_names_the_native_frame_of_each_row(tmp_path):
    """30 fps: row t (t/25 s) shows frame floor(6t/5); audio-only clips have no source frame (-1)."""
    video = write_media(tmp_path / "v.mp4", frames=counter_frames(45, 48, 64), fps=30)
    d = decode_media(video, size=32)
    assert d.n_frames == 38
    np.testing.assert_array_equal(d.source_index, np.floor(np.arange(38) * 6 / 5).astype(int))
    audio = write_media(tmp_path / "a.wav", audio=tone(440, 0.5)[None])
    assert (decode_media(audio).source_index == -1).all()


def _affwild_text(n_lines, unannotated=(6, 7)):
    lines = ["valence,arousal"]
    for k in range(n_lines):
        lines.append("-5,-5" if k in unannotated else f"{k / 100:g},{-k / 100:g}")
    return "\n".join(lines) + "\n"


def test_affwild_30fps_annotation_resampled_to_25fps(tmp_path):
    """45 frames at 30 fps, 40 annotated lines (frames 6, 7 at -5): row t gets line floor(6t/5) or is masked."""
    video = write_media(tmp_path / "corpus/vid1.mp4", frames=counter_frames(45, 48, 64), fps=30)
    _write(tmp_path / "corpus/annotations/vid1.txt", _affwild_text(40))
    table = load_labels(tmp_path / "corpus", ["vid1"])
    assert table.layout == "affwild" and table.kind == "frames"
    d = decode_media(video, size=32)
    a = align(table.for_clip("vid1"), table.kind, d.n_frames, 25, source_index=d.source_index, n_source_frames=45)
    k = np.floor(np.arange(38) * 6 / 5).astype(int)
    known = (k < 40) & ~np.isin(k, [6, 7])  # -5 frames and frames past the file's end: masked, not zeroed
    np.testing.assert_array_equal(a.mask, known)
    np.testing.assert_array_equal(a.valence[known], (k[known] / 100).astype(np.float32))
    np.testing.assert_array_equal(a.arousal[known], (-k[known] / 100).astype(np.float32))
    assert np.isnan(a.valence[~known]).all()
    assert a.notes == ["40 per-frame labels for a video of 45 frames"]
    ok = align(table.for_clip("vid1"), "frames", 38, 25, source_index=d.source_index, n_source_frames=41)
    assert ok.notes == []  # off by one: Aff-Wild2 files often are; not worth a note


# --------------------------------------------------------------------------------------- CREMA-D, RAVDESS names
def test_emotion_table_is_the_nrc_vad_lexicon_rescaled():
    """Every default point is 2x - 1 of the lexicon's [0, 1] scores for the word it names."""
    assert DEFAULT_MAP["angry"] == (round(2 * 0.167 - 1, 3), round(2 * 0.865 - 1, 3)) == (-0.666, 0.73)
    for emotion, (_, v, a) in LEXICON.items():
        assert DEFAULT_MAP[emotion] == (round(2 * v - 1, 3), round(2 * a - 1, 3))
        assert all(-1 <= x <= 1 for x in DEFAULT_MAP[emotion])


def test_cremad_and_ravdess_names_parse():
    assert parse_cremad("1001_DFA_ANG_XX") == {"speaker": "1001", "emotion": "angry", "intensity": "unspecified",
                                               "sentence": "DFA"}  # fmt: skip
    assert parse_cremad("1091_IEO_FEA_HI")["intensity"] == "high"
    assert parse_cremad("1001_DFA_XYZ_XX") is None and parse_cremad("clip01") is None
    r = parse_ravdess("02-01-06-01-02-01-12")
    assert r["emotion"] == "fearful" and r["speaker"] == "12" and r["sex"] == "female"
    assert r["modality"] == "video-only" and r["intensity"] == "normal" and r["statement"] == 2
    assert parse_ravdess("01-01-09-01-01-01-12") is None  # emotion 09 does not exist


def test_cremad_table_values_and_speakers(tmp_path):
    clips = ["a/1001_DFA_ANG_XX", "a/1001_IEO_HAP_HI", "b/1002_DFA_SAD_LO", "b/1002_ITS_NEU_XX", "b/readme"]
    table = load_labels(tmp_path, clips)
    assert table.layout == "cremad" and table.kind == "clip" and len(table.rows) == 4
    rows = table.rows.set_index("clip")
    assert tuple(rows.loc["a/1001_DFA_ANG_XX", ["valence", "arousal"]]) == DEFAULT_MAP["angry"]
    assert tuple(rows.loc["b/1002_DFA_SAD_LO", ["valence", "arousal"]]) == DEFAULT_MAP["sad"]
    assert rows["speaker"].tolist() == ["1001", "1001", "1002", "1002"]
    assert rows.loc["a/1001_IEO_HAP_HI", "emotion"] == "happy" and rows.loc["b/1002_DFA_SAD_LO", "intensity"] == "low"


def test_emotion_map_overrides_and_unknown_emotion_is_one_line(tmp_path):
    emap = _write(tmp_path / "map.csv", "emotion,valence,arousal\nangry,-0.5,0.5\nhappy,0.5,0.25\n")
    clips = ["03-01-05-01-01-01-01", "03-01-03-02-01-01-02"]
    rows = load_labels(tmp_path, clips, emotion_map=emap).rows.set_index("clip")
    assert tuple(rows.loc["03-01-05-01-01-01-01", ["valence", "arousal"]]) == (-0.5, 0.5)
    assert tuple(rows.loc["03-01-03-02-01-01-02", ["valence", "arousal"]]) == (0.5, 0.25)
    with pytest.raises(LabelError) as e:
        load_labels(tmp_path, [*clips, "03-01-08-01-01-01-03"], emotion_map=emap)
    msg = str(e.value)
    assert str(emap) in msg and "'surprised'" in msg and "\n" not in msg


# ------------------------------------------------------------------------------------------ per-dimension tables
def test_dimension_tables_without_header(tmp_path):
    """arousal.csv + valence.csv, `file,value`, no header, last line without newline; an entry with no clip."""
    _write(tmp_path / "arousal.csv", "00.wav,0.7\n01.wav,0.6\nghost.wav,0.1")
    _write(tmp_path / "valence.csv", "00.wav,-0.7\n01.wav,-0.45\n")
    table = load_labels(tmp_path, ["00", "01"])
    assert table.layout == "dimtables" and table.clip_ids == ["00", "01"]
    rows = table.rows.set_index("clip")
    assert rows.loc["01", "valence"] == -0.45 and rows.loc["00", "arousal"] == 0.7
    assert any("1 entries name no clip of the corpus: ghost" in n for n in table.notes)
    (tmp_path / "valence.csv").unlink()
    with pytest.raises(LabelError, match="no valence annotations"):
        load_labels(tmp_path, ["00", "01"])


def test_the_real_per_dimension_tables_label_all_47_clips(realdata):
    corpus = realdata / "pyaudioanalysis_speechEmotion"
    ids = [p.stem for p in sorted(corpus.glob("*.wav"))]
    table = load_labels(corpus, ids)
    assert table.layout == "dimtables" and table.clip_ids == ids and len(ids) == 47 and not table.notes


# ------------------------------------------------------------------------------------------- detection, errors
def test_detection_is_unambiguous_and_formats_can_be_forced(tmp_path):
    """Each layout's files alone are detected as that layout; files of two layouts in one directory are an error
    naming both (no silent precedence), and --label-format or --labels DIR picks one."""
    _write(tmp_path / "a/annot/v.txt", _affwild_text(3))
    _write(tmp_path / "m/r/arousal/v.csv", _csv_traces([0], [0.1]))
    _write(tmp_path / "d/arousal.csv", "v.wav,0.1\n")
    _write(tmp_path / "c/labels.csv", "clip,valence,arousal\nv,0,0\n")
    for sub, layout in (("a", "affwild"), ("m", "multirater"), ("d", "dimtables"), ("c", "csv")):
        assert detect(tmp_path / sub, ["v"], None)[0] == layout
    # labels.csv and arousal.csv count in the directory itself only; rater directories and Aff-Wild2 files below it
    with pytest.raises(LabelError, match=r"annotations of 2 layouts: multirater \(m/r/arousal\) and affwild"):
        detect(tmp_path, ["v"], None)
    _write(tmp_path / "labels.csv", "clip,valence,arousal\nv,0,0\n")
    with pytest.raises(
        LabelError,
        match=r"annotations of 3 layouts: csv \(labels.csv\) and multirater \(m/r/arousal\) "
        r"and affwild \(a/annot/v.txt\); choose one with --label-format NAME",
    ):
        detect(tmp_path, ["v"], None)
    assert detect(tmp_path, ["v"], None, "csv") == ("csv", tmp_path / "labels.csv")
    assert detect(tmp_path, ["v"], None, "affwild")[0] == "affwild"
    assert detect(tmp_path, ["v"], tmp_path / "m")[0] == "multirater"  # --labels DIR looks there only
    empty = tmp_path / "empty"
    empty.mkdir()
    assert detect(empty, ["1001_DFA_ANG_XX", "1001_DFA_SAD_XX", "x"], None)[0] == "cremad"  # 2 of 3 named so
    assert detect(empty, ["1001_DFA_ANG_XX", "x", "y"], None) == (None, None)  # 1 of 3: not a CREMA-D corpus
    with pytest.raises(LabelError, match="no multirater annotations found"):
        detect(empty, ["v"], None, "multirater")
    with pytest.raises(LabelError, match="no annotations found"):
        detect(empty, ["v"], empty)
    with pytest.raises(ConfigError, match="--emotion-map applies to CREMA-D"):
        load_labels(tmp_path / "c", ["v"], emotion_map=tmp_path / "labels.csv")


def test_two_directories_of_one_dimension_ask_for_labels_dir(tmp_path):
    for sub in ("ratings_individual", "ratings_gold_standard"):
        _write(tmp_path / sub / "arousal/c.csv", _csv_traces([0], [0.1]))
    with pytest.raises(LabelError, match="several arousal annotation directories.*--labels DIR"):
        detect(tmp_path, ["c"], None)


MALFORMED = [
    ("arousal/c.arff", "@relation r\n@attribute frameTime numeric\n@attribute FM1 numeric\n@data\n0.0,0.1\n0.04,x\n",
     ":6: column FM1 holds 'x', not a number"),
    ("arousal/c.arff", "@relation r\n@attribute frameTime numeric\n@attribute FM1 numeric\n@data\n0.0,0.1,0.2\n",
     ":5: 3 fields where the header declares 2"),
    ("arousal/c.arff", "@relation r\n@atribute frameTime numeric\n@data\n",
     ":2: expected @relation, @attribute or @data"),
    ("arousal/c.csv", "time;FM1\n0.00;0.1\n0.04;high\n", ":3: column FM1 holds 'high', not a number"),
    ("arousal/c.csv", "time;FM1\n0.04;0.1\n0.04;0.2\n", ":3: time 0.04 does not come after 0.04 (line 2)"),
    ("annot/c.txt", "valence,arousal\n0.1,0.2\n0.3\n", ":3: expected valence,arousal (two numbers)"),
    ("annot/c.txt", "valence,arousal\n0.1,0.2\n1.5,0.2\n", ":3: valence 1.5 is outside [-1, 1]"),
    ("arousal.csv", "c.wav,0.1\nc2.wav,lots\n", ":2: value 'lots' is not a number"),
    ("arousal.csv", "c.wav,0.1\nc.wav,0.2\n", ":2: clip 'c' is labelled twice, differently from line 1"),
]  # fmt: skip


@pytest.mark.parametrize("name, text, message", MALFORMED)
def test_malformed_files_name_path_and_line(tmp_path, name, text, message):
    """One LabelError line: `path:line: what is wrong`."""
    bad = _write(tmp_path / name, text)
    if name.startswith("arousal/"):  # the other dimension is fine
        _write(tmp_path / "valence/c.csv", _csv_traces([0], [0.1]))
    elif name == "arousal.csv":
        _write(tmp_path / "valence.csv", "c.wav,0.1\n")
    with pytest.raises(LabelError) as e:
        load_labels(tmp_path, ["c", "c2"])
    assert str(e.value).startswith(f"{bad}:") and message in str(e.value) and "\n" not in str(e.value)


# Non-finite and out-of-range values in the other layouts, as the generic labels.csv refuses them (the exact line).
NOT_FINITE_OR_OUT_OF_RANGE = [
    ("arousal.csv", "c.wav,0.1\nc2.wav,inf\n", "2: value inf is not a finite number"),
    ("arousal.csv", "c.wav,0.1\nc2.wav,-Infinity\n", "2: value -inf is not a finite number"),
    ("arousal.csv", "c.wav,0.1\nc2.wav,nan\n",
     "2: value nan is not a finite number (leave the line out to leave the clip unlabelled)"),
    ("arousal.csv", "c.wav,0.1\nc2.wav,1.5\n", "2: arousal 1.5 is outside [-1, 1]"),
    ("arousal.csv", "c.wav,-1\nc2.wav,0.2\nc,-1.0\nc.mp4,0.3\n",
     "4: clip 'c' is labelled twice, differently from line 1 (arousal -1 there, 0.3 here)"),
    ("arousal/c.csv", "time;FM1;FM2\n0.00;0.1;0.2\n0.04;inf;0.2\n", "3: column FM1 holds inf, not a finite number"),
    ("arousal/c.csv", "time;FM1;FM2\n0.00;0.1;0.2\n0.04;0.1;-1.5\n", "3: FM2 rating -1.5 is outside [-1, 1]"),
    ("arousal/c.csv", "time;FM1\n0.00;0.1\ninf;0.2\n", "3: column time holds inf, not a finite number"),
    ("arousal/c.arff", "@relation r\n@attribute frameTime numeric\n@attribute FM1 numeric\n@data\n0.0,0.1\n0.04,-inf\n",
     "6: column FM1 holds -inf, not a finite number"),
    ("arousal/c.arff", "@relation r\n@attribute frameTime numeric\n@attribute FM1 numeric\n@data\n0.0,1\n0.04,2\n",
     "6: FM1 rating 2 is outside [-1, 1]"),
    ("annot/c.txt", "valence,arousal\n0.1,0.2\nnan,0.2\n",
     "3: column valence holds nan, not a finite number (-5 marks an unannotated frame)"),
    ("annot/c.txt", "valence,arousal\n0.1,-inf\n",
     "2: column arousal holds -inf, not a finite number (-5 marks an unannotated frame)"),
]  # fmt: skip


@pytest.mark.parametrize("name, text, message", NOT_FINITE_OR_OUT_OF_RANGE)
def test_non_finite_and_out_of_range_values_name_path_and_line(tmp_path, name, text, message):
    """dimtables, multirater and affwild refuse inf, nan (where it is not a missing rating), values outside
    [-1, 1] and conflicting repeats with the exact `path:line: what` line, as the generic labels.csv does."""
    bad = _write(tmp_path / name, text)
    if name.startswith("arousal/"):
        _write(tmp_path / "valence/c.csv", _csv_traces([0], [0.1]))
    elif name == "arousal.csv":
        _write(tmp_path / "valence.csv", "c.wav,0.1\nc2.wav,0.1\n")
    with pytest.raises(LabelError) as e:
        load_labels(tmp_path, ["c", "c2"])
    assert str(e.value) == f"{bad}:{message}"


def test_repeated_identical_lines_are_kept_once_and_missing_ratings_stay_missing(tmp_path):
    """A dimension table line repeated with the same value (after clip-id normalisation) is kept once, as in the
    generic table; in rater files `nan` / `NaN` / empty are missing ratings, not errors; -1 and 1 are allowed."""
    _write(tmp_path / "d/arousal.csv", "c.wav,0.5\nc,0.5\n")
    _write(tmp_path / "d/valence.csv", "c.wav,-1\nc.wav,-1.0\n")
    rows = load_labels(tmp_path, ["c"], path=tmp_path / "d").rows
    assert rows[["clip", "valence", "arousal"]].values.tolist() == [["c", -1.0, 0.5]]
    _write(tmp_path / "r/arousal/c.csv", "time;FM1;FM2\n0.00;1;NaN\n0.04;nan;-1\n0.08;;0.5\n")
    _write(tmp_path / "r/valence/c.csv", "time;FM1\n0.00;0.1\n0.04;0.2\n0.08;0.3\n")
    rows = load_labels(tmp_path, ["c"], path=tmp_path / "r").for_clip("c")
    np.testing.assert_allclose(rows["arousal"], [1.0, -1.0, 0.5])


def test_bad_emotion_map_names_path_and_line(tmp_path):
    emap = _write(tmp_path / "m.csv", "emotion,valence,arousal\nangry,-0.5,2\n")
    with pytest.raises(LabelError, match=r"m\.csv:2: arousal 2 is outside \[-1, 1\]"):
        load_labels(tmp_path, ["1001_DFA_ANG_XX"], emotion_map=emap)


def test_generic_table_per_native_frame(tmp_path):
    """The resolved Aff-Wild2 table is itself a generic CSV (`clip,frame,valence,arousal`)."""
    table = read_labels(_write(tmp_path / "labels.csv", "clip,frame,valence,arousal\nv,1,0.5,0.5\nv,0,0.1,0.2\n"))
    assert table.kind == "frames" and table.for_clip("v")["frame"].tolist() == [0, 1]
    a = align(table.for_clip("v"), "frames", 4, 25, source_index=np.array([-1, 0, 1, 2]))
    assert a.mask.tolist() == [False, True, True, False] and a.valence[2] == np.float32(0.5)
    with pytest.raises(LabelError, match=r":3: column frame holds 1\.5"):
        read_labels(_write(tmp_path / "bad.csv", "clip,frame,valence,arousal\nv,0,0,0\nv,1.5,0,0\n"))


# ------------------------------------------------------------------------------------------------- end to end
def _extract(*args):
    return CliRunner().invoke(main, ["extract", *map(str, args), "--jobs", "1", "--frame-size", "16"])


def test_extract_multirater_ewe_with_delay(tmp_path):
    """RECOLA layout: audio in recordings/, `;` rater files in ratings/{arousal,valence}/; EWE, 0.2 s delay."""
    corpus = tmp_path / "corpus"
    for name in ("train_1", "train_2"):
        write_media(corpus / f"recordings/{name}.wav", audio=tone(300, 1.0)[None])
    t = np.round(np.arange(0, 1.5001, 0.04), 2)
    for name in ("train_1", "train_2", "dev_9"):  # dev_9 has no recording: a note
        # EWE: t/2 and t/2 + 0.1 each correlate 1 with the others' mean, -t/4 correlates -1: gold = t/2 + 0.05
        _write(corpus / f"ratings/arousal/{name}.csv", _csv_traces(t, t / 2, t / 2 + 0.1, -t / 4))
        _write(corpus / f"ratings/valence/{name}.csv", _csv_traces(t, -t / 2, -t / 2))
    out = tmp_path / "features"
    r = _extract(corpus, "--out", out, "--gold", "ewe", "--annotation-delay", "0.2")
    assert r.exit_code == 0, r.output
    assert "annotated instance(s) match no clip of the corpus: dev_9" in r.stderr
    clip = read_clip(out / "shards/recordings/train_1.h5", frames=False)
    rows = np.arange(25) / 25
    assert clip.label_mask.all()
    np.testing.assert_allclose(clip.arousal, (rows + 0.2) / 2 + 0.05, atol=1e-5)  # gold(t + 0.2) = (t + 0.2)/2 + 0.05
    np.testing.assert_allclose(clip.valence, -(rows + 0.2) / 2, atol=1e-5)
    record = json.loads((out / "extract_config.json").read_text())
    assert record["label_source"]["layout"] == "multirater" and record["label_source"]["gold"] == "ewe"
    assert pd.read_csv(out / record["labels"])["time"].min() == pytest.approx(-0.2)
    # the same labels again: nothing to do; another gold standard: the shards are redone
    assert (
        "0 extracted, 2 up to date"
        in _extract(corpus, "--out", out, "--gold", "ewe", "--annotation-delay", "0.2").output
    )
    assert "2 extracted, 0 up to date" in _extract(corpus, "--out", out, "--annotation-delay", "0.2").output


def test_extract_affwild_per_frame(tmp_path):
    corpus = tmp_path / "corpus"
    write_media(corpus / "videos/vid1.mp4", frames=counter_frames(45, 48, 64), fps=30)
    _write(corpus / "annotations/VA_Set/vid1.txt", _affwild_text(40))
    _write(corpus / "annotations/VA_Set/vid1_left.txt", _affwild_text(3))  # two faces: no such video
    out = tmp_path / "features"
    r = _extract(corpus, "--out", out)
    assert r.exit_code == 0, r.output
    assert "vid1_left.txt" in r.stderr and "40 per-frame labels for a video of 45 frames" in r.stderr
    clip = read_clip(out / "shards/videos/vid1.h5", frames=False)
    k = np.floor(np.arange(38) * 6 / 5).astype(int)
    known = (k < 40) & ~np.isin(k, [6, 7])
    np.testing.assert_array_equal(clip.label_mask, known)
    np.testing.assert_array_equal(clip.valence[known], (k[known] / 100).astype(np.float32))
    assert clip.attrs["label_kind"] == "frames"
    assert read_labels(out / "labels.csv").kind == "frames"  # the resolved table reads back as a generic CSV


def test_extract_cremad_and_group_by_speaker(tmp_path):
    corpus = tmp_path / "corpus"
    names = ["1001_DFA_ANG_XX", "1001_IEO_HAP_HI", "1002_DFA_SAD_LO", "1002_ITS_NEU_XX", "1003_DFA_FEA_MD"]
    for i, name in enumerate(names):
        write_media(corpus / f"{name}.wav", audio=tone(200 + 50 * i, 0.4)[None])
    out = tmp_path / "features"
    r = _extract(corpus, "--out", out)
    assert r.exit_code == 0, r.output
    clip = read_clip(out / "shards/1002_DFA_SAD_LO.h5", frames=False)
    assert np.allclose(clip.valence, DEFAULT_MAP["sad"][0]) and np.allclose(clip.arousal, DEFAULT_MAP["sad"][1])
    fc = load_corpus(out)
    assert fc.labels_path == out.absolute() / "labels.csv"
    speaker = pd.read_csv(fc.labels_path, dtype=str).set_index("clip")["speaker"]
    train, val = split(fc, TrainConfig(group_by="speaker", seed=0))
    assert val and train and {speaker[c.clip_id] for c in train}.isdisjoint({speaker[c.clip_id] for c in val})


def test_extract_ravdess_with_emotion_map(tmp_path):
    corpus = tmp_path / "corpus"
    for name in ("03-01-05-01-01-01-01", "03-01-03-02-01-01-02"):
        write_media(corpus / f"Actor/{name}.wav", audio=tone(300, 0.4)[None])
    emap = _write(tmp_path / "map.csv", "emotion,valence,arousal\nangry,-0.5,0.5\nhappy,0.5,0.25\n")
    out = tmp_path / "features"
    r = _extract(corpus, "--out", out, "--label-format", "ravdess", "--emotion-map", emap)
    assert r.exit_code == 0, r.output
    clip = read_clip(out / "shards/Actor/03-01-05-01-01-01-01.h5", frames=False)
    assert np.allclose(clip.valence, -0.5) and np.allclose(clip.arousal, 0.5)
    emap.write_text("emotion,valence,arousal\nangry,-0.5,0.5\n")
    r = _extract(corpus, "--out", tmp_path / "f2", "--emotion-map", emap)
    assert r.exit_code == 1 and f"{emap}: no valence/arousal for emotion 'happy'" in r.stderr


def test_extract_dimension_tables(tmp_path):
    corpus = tmp_path / "corpus"
    for name in ("00", "01"):
        write_media(corpus / f"{name}.wav", audio=tone(300, 0.4)[None])
    _write(corpus / "arousal.csv", "00.wav,0.7\n01.wav,0.6\n")
    _write(corpus / "valence.csv", "00.wav,-0.7\n01.wav,-0.45\n")
    out = tmp_path / "features"
    assert _extract(corpus, "--out", out).exit_code == 0
    clip = read_clip(out / "shards/01.h5", frames=False)
    assert np.allclose(clip.valence, -0.45) and np.allclose(clip.arousal, 0.6) and clip.label_mask.all()
