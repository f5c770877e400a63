"""The challenge label layouts: AVEC 2019 CES (SEWA) and MuSe 2020-2023, read as the packages ship them.

The files below are small but written the way the real ones are (AVEC 2019: `;`, the recording name quoted in every
row, seconds at 10 Hz, the first rows exact zeros; MuSe: `timestamp,value,segment_id`, milliseconds, segments with
a gap between them). Their values are simple functions of time, so every grid row's label is worked out by hand:
row k of the 25 fps grid is the instant k / 25 s.
"""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from conftest import extract_cmd

from mmemo.cli import main
from mmemo.data.labels import align, read_labels
from mmemo.data.layouts import detect, load_labels
from mmemo.data.shards import read_clip
from mmemo.errors import LabelError
from mmemo.media.synth import tone, write_media


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _avec2019(name: str, seconds: float = 1.0) -> str:
    """An AVEC 2019 CES label file at 10 Hz: arousal = t / 2, valence = max(0, t - 0.2) (zero for the first three
    rows, as real files often start), liking = -t / 4."""
    lines = ["name;timestamp;arousal;valence;liking"]
    for t in np.round(np.arange(0, seconds + 1e-9, 0.1), 1):
        lines.append(f"'{name}';{t:.6f};{t / 2:.6f};{max(0.0, t - 0.2):.6f};{0.0 - t / 4:.6f}")
    return "\n".join(lines) + "\n"


# Real MuSe label files: integer milliseconds, a value, the segment the row belongs to. Two segments (0.5-1.5 s and
# 3.0-3.5 s) with 1.5 s between them that nobody annotated. Arousal = t / 4, valence = -t / 5 (t in seconds).
MUSE_AROUSAL = "timestamp,value,segment_id\n500,0.125,1\n1000,0.25,1\n1500,0.375,1\n3000,0.75,2\n3500,0.875,2\n"
MUSE_VALENCE = "timestamp,value,segment_id\n500,-0.1,1\n1000,-0.2,1\n1500,-0.3,1\n3000,-0.6,2\n3500,-0.7,2\n"


def _extract(*args):
    return CliRunner().invoke(main, ["extract", *map(str, args), "--jobs", "1", "--frame-size", "16"])


# ------------------------------------------------------------------------------------------------ AVEC 2019 CES
def test_avec2019_folder_in_the_corpus_through_the_cli(tmp_path):
    """`mmemo extract` (a real process) finds labels/ by itself: the recording name labels the clip, liking is kept
    as a column, rows past the last label are masked, and labels.csv holds the file's values at the file's times."""
    corpus = tmp_path / "corpus"
    write_media(corpus / "audio/Devel_DE_01.wav", audio=tone(300, 1.2)[None])  # 30 rows, 0-1.16 s
    write_media(corpus / "audio/Devel_DE_02.wav", audio=tone(300, 0.4)[None])  # no label file: a note
    _write(corpus / "labels/Devel_DE_01.csv", _avec2019("Devel_DE_01"))  # 0-1.0 s
    _write(corpus / "labels/Devel_DE_03.csv", _avec2019("Devel_DE_03"))  # no such clip: a note
    assert _avec2019("Devel_DE_01").splitlines()[:5] == [
        "name;timestamp;arousal;valence;liking",
        "'Devel_DE_01';0.000000;0.000000;0.000000;0.000000",
        "'Devel_DE_01';0.100000;0.050000;0.000000;-0.025000",
        "'Devel_DE_01';0.200000;0.100000;0.000000;-0.050000",
        "'Devel_DE_01';0.300000;0.150000;0.100000;-0.075000",
    ]
    out = tmp_path / "features"
    r = subprocess.run(extract_cmd(corpus, out, "--jobs", "1", "--frame-size", "16"), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "annotated recording(s) match no clip of the corpus: Devel_DE_03" in r.stderr
    assert "1 clip(s) have no labels: audio/Devel_DE_02" in r.stderr
    clip = read_clip(out / "shards/audio/Devel_DE_01.h5", frames=False)
    k = np.arange(30)
    labelled = k <= 25  # 25 / 25 = 1.0 s is the last annotated instant
    np.testing.assert_array_equal(clip.label_mask, labelled)
    np.testing.assert_allclose(clip.arousal[labelled], k[labelled] / 50, atol=1e-6)  # (k / 25) / 2
    np.testing.assert_allclose(clip.valence[labelled], np.maximum(0, k[labelled] / 25 - 0.2), atol=1e-6)
    assert np.isnan(clip.arousal[~labelled]).all()  # masked, not zeroed
    record = json.loads((out / "extract_config.json").read_text())
    assert record["label_source"]["layout"] == "avec2019" and record["label_source"]["kind"] == "continuous"
    table = pd.read_csv(out / "labels.csv")
    assert table.columns.tolist() == ["clip", "time", "valence", "arousal", "liking"]
    rows = table[table["clip"] == "audio/Devel_DE_01"]
    t = np.round(np.arange(11) / 10, 1)
    np.testing.assert_array_equal(rows["time"], t)
    np.testing.assert_array_equal(rows["liking"], np.round(-t / 4, 6))  # the file's values, exactly
    assert read_labels(out / "labels.csv").kind == "continuous"  # the resolved table reads back as a generic CSV


def test_avec2019_labels_folder_outside_the_corpus_single_file_and_delay(tmp_path):
    """--labels FOLDER (the package's labels/ beside the corpus), one label file given on its own, and the
    annotation delay, which applies to these time-continuous labels as to any."""
    labels = _write(tmp_path / "AVEC2019_CES_traindeveltest/labels/Train_HU_07.csv", _avec2019("Train_HU_07")).parent
    table = load_labels(tmp_path / "corpus", ["hu/Train_HU_07"], path=labels)
    assert table.layout == "avec2019" and table.clip_ids == ["hu/Train_HU_07"] and not table.notes
    assert detect(tmp_path, [], labels / "Train_HU_07.csv") == ("avec2019", [labels / "Train_HU_07.csv"])
    late = load_labels(tmp_path / "corpus", ["hu/Train_HU_07"], path=labels, annotation_delay=0.2)
    rows = late.for_clip("hu/Train_HU_07")
    np.testing.assert_allclose(rows["time"][:3], [-0.2, -0.1, 0.0])
    a = align(rows, late.kind, 25, 25)
    np.testing.assert_allclose(a.arousal[:21], (np.arange(21) / 25 + 0.2) / 2, atol=1e-6)  # label at t + 0.2
    assert a.mask[:21].all() and not a.mask[21:].any()  # 0.84 s + 0.2 s = 1.04 s: past the last label


# ------------------------------------------------------------------------------------------------------- MuSe
def test_muse_label_segments_through_the_cli(tmp_path):
    """MuSe-Stress 2022 / -Personalisation 2023: physio-arousal/ and valence/; ms timestamps; the rows between the
    two segments and outside the annotated span are masked, the others interpolated at k / 25 s."""
    corpus = tmp_path / "corpus"
    write_media(corpus / "1.wav", audio=tone(300, 4.0)[None])  # 100 rows, 0-3.96 s
    segs = corpus / "c3_muse_stress_2022/label_segments"
    _write(segs / "physio-arousal/1.csv", MUSE_AROUSAL)
    _write(segs / "valence/1.csv", MUSE_VALENCE)
    _write(segs / "physio-arousal/64.csv", MUSE_AROUSAL)  # a test-partition subject with no recording here
    _write(segs / "valence/64.csv", MUSE_VALENCE)
    out = tmp_path / "features"
    r = _extract(corpus, "--out", out)
    assert r.exit_code == 0, r.output
    assert "label file(s) match no clip of the corpus: 64" in r.stderr
    clip = read_clip(out / "shards/1.h5", frames=False)
    k = np.arange(100)
    labelled = ((k >= 13) & (k <= 37)) | ((k >= 75) & (k <= 87))  # 0.52-1.48 s and 3.00-3.48 s
    np.testing.assert_array_equal(clip.label_mask, labelled)
    np.testing.assert_allclose(clip.arousal[labelled], k[labelled] / 100, atol=1e-6)  # (k / 25) / 4
    np.testing.assert_allclose(clip.valence[labelled], -k[labelled] / 125, atol=1e-6)  # -(k / 25) / 5
    table = pd.read_csv(out / "labels.csv")
    np.testing.assert_array_equal(table["time"], [0.5, 1.0, 1.5, 2.25, 3.0, 3.5])  # 2.25: the gap, unlabelled
    assert table["arousal"].isna().tolist() == [False, False, False, True, False, False]
    assert json.loads((out / "extract_config.json").read_text())["label_source"]["layout"] == "muse"


def test_muse_arousal_directory_and_extra_dimensions(tmp_path):
    """MuSe-Wilder 2021 (arousal/, valence/) is MuSe, not RECOLA rater files, though the directories share names;
    with arousal/ and physio-arousal/ both there, arousal/ is arousal and the rest become columns; an empty value
    (a test subject's hidden label) is missing."""
    segs = tmp_path / "c1_muse_wilder/label_segments"
    _write(segs / "arousal/7.csv", MUSE_AROUSAL)
    _write(segs / "valence/7.csv", MUSE_VALENCE.replace("-0.2,1", ",1"))
    assert detect(tmp_path, ["7"], None)[0] == "muse"
    with pytest.raises(LabelError, match="no multirater annotations found"):
        detect(tmp_path, ["7"], None, "multirater")
    rows = load_labels(tmp_path, ["7"]).for_clip("7")
    assert np.isnan(rows["valence"][1]) and rows["arousal"][1] == 0.25
    _write(segs / "physio-arousal/7.csv", MUSE_AROUSAL.replace(",0.", ",-0."))
    _write(segs / "trustworthiness/7.csv", "timestamp,segment_id,value\n500,1,0.5\n1000,1,0.6\n")
    table = load_labels(tmp_path, ["7"])
    assert table.rows.columns.tolist() == ["clip", "time", "valence", "arousal", "physio-arousal", "trustworthiness"]
    rows = table.for_clip("7")
    assert rows["arousal"][0] == 0.125 and rows["physio-arousal"][0] == -0.125
    assert rows["trustworthiness"][:2].tolist() == [0.5, 0.6] and np.isnan(rows["trustworthiness"][2])  # not made up
    assert any("physio-arousal/ is kept as an extra column" in n for n in table.notes)


def test_muse_toolbox_time_value_files_are_muse(tmp_path):
    """MuSe-Toolbox (the tool that fused MuSe's gold standards) writes ``Time,value`` in milliseconds, no segment id:
    read as MuSe, times divided by 1000."""
    segs = tmp_path / "processed"
    _write(segs / "arousal/11.csv", "Time,value\n0,0.0501\n500,0.0593\n1000,0.0681\n")
    _write(segs / "valence/11.csv", "Time,value\n0,-0.01\n500,-0.02\n1000,-0.03\n")
    assert detect(tmp_path, ["11"], None)[0] == "muse"
    rows = load_labels(tmp_path, ["11"]).for_clip("11")
    np.testing.assert_allclose(rows["time"], [0.0, 0.5, 1.0])
    np.testing.assert_allclose(rows["arousal"], [0.0501, 0.0593, 0.0681])
    np.testing.assert_allclose(rows["valence"], [-0.01, -0.02, -0.03])


def test_gaps_longer_than_two_and_a_half_steps_are_masked_one_missing_sample_is_bridged(tmp_path):
    """AVEC 2019 at 10 Hz with 0.3 s missing (0.3 s apart: bridged) and 0.5-0.9 s missing (0.5 s apart: masked)."""
    keep = [0.0, 0.1, 0.2, 0.4, 0.5, 1.0, 1.1, 1.2]  # arousal = t / 2 at each
    text = "name;timestamp;arousal;valence;liking\n" + "".join(f"'g';{t:.6f};{t / 2:.6f};0.0;0.0\n" for t in keep)
    table = load_labels(tmp_path, ["g"], path=_write(tmp_path / "labels/g.csv", text).parent)
    rows = table.for_clip("g")
    np.testing.assert_allclose(rows["time"], [0.0, 0.1, 0.2, 0.4, 0.5, 0.75, 1.0, 1.1, 1.2])
    assert rows["arousal"].isna().tolist() == [False] * 5 + [True] + [False] * 3  # the gap's empty row at 0.75 s
    a = align(rows, table.kind, 31, 25)  # rows at 0-1.2 s
    k = np.arange(31)
    labelled = (k <= 12) | (k >= 25)  # 0-0.48 s (0.3 s bridged), 1.0-1.2 s; 0.52-0.96 s masked
    np.testing.assert_array_equal(a.mask, labelled)
    np.testing.assert_allclose(a.arousal[labelled], k[labelled] / 50, atol=1e-6)


def test_two_muse_packages_in_one_corpus_ask_for_labels_dir(tmp_path):
    for package in ("c1_muse_wilder", "c3_muse_stress"):
        _write(tmp_path / package / "label_segments/arousal/1.csv", MUSE_AROUSAL)
        _write(tmp_path / package / "label_segments/valence/1.csv", MUSE_VALENCE)
    with pytest.raises(
        LabelError,
        match=r"several MuSe label directories \(c1_muse_wilder/label_segments, "
        r"c3_muse_stress/label_segments\); choose one with --labels DIR",
    ):
        load_labels(tmp_path, ["1"])
    assert load_labels(tmp_path, ["1"], path=tmp_path / "c3_muse_stress").layout == "muse"


# ----------------------------------------------------------------------------------------- detection, errors
def test_two_challenge_layouts_in_one_corpus_are_an_error_and_a_format_picks_one(tmp_path):
    corpus = tmp_path / "corpus"
    write_media(corpus / "1.wav", audio=tone(300, 1.0)[None])
    _write(corpus / "label_segments/arousal/1.csv", MUSE_AROUSAL)
    _write(corpus / "label_segments/valence/1.csv", MUSE_VALENCE)
    _write(corpus / "labels/1.csv", _avec2019("1"))
    r = _extract(corpus, "--out", tmp_path / "f1")
    assert r.exit_code == 1
    assert (
        f"{corpus}: annotations of 2 layouts: avec2019 (labels/1.csv) and muse (label_segments/arousal, "
        f"label_segments/valence); choose one with --label-format NAME" in r.stderr
    )
    r = _extract(corpus, "--out", tmp_path / "f2", "--label-format", "muse")
    assert r.exit_code == 0, r.output
    clip = read_clip(tmp_path / "f2/shards/1.h5", frames=False)
    assert clip.label_mask.sum() == 12 and clip.arousal[13] == np.float32(0.13)  # rows 13-24: 0.52-0.96 s
    r = _extract(corpus, "--out", tmp_path / "f3", "--label-format", "avec2019")
    assert r.exit_code == 0 and read_clip(tmp_path / "f3/shards/1.h5", frames=False).label_mask.sum() == 25


AVEC_HEADER = "name;timestamp;arousal;valence;liking\n"
MALFORMED = [
    ("labels/c.csv", AVEC_HEADER + "'c';0.0;0;0;0\n'c';0.1;0;0;0\n'c';0.2;abc;0;0\n",
     "4: column arousal holds 'abc', not a number"),
    ("labels/c.csv", AVEC_HEADER + "'c';0.0;0;0;0\n'c';0.1;0;0\n", "3: 4 fields where the header declares 5"),
    ("labels/c.csv", AVEC_HEADER + "'c';0.0;0;0;0\n'c';0.1;0;0;0\n'c';0.1;0;0;0\n",
     "4: time 0.1 does not come after 0.1 (line 3)"),
    ("labels/c.csv", AVEC_HEADER + "'c';0.0;0;0;0\n'c';0.1;0;1.5;0\n", "3: valence 1.5 is outside [-1, 1]"),
    ("labels/c.csv", AVEC_HEADER + "'c';0.0;0;0;0\n'c';0.1;-inf;0;0\n",
     "3: column arousal holds -inf, not a finite number"),
    ("labels/c.csv", "name;timestamp;arousal;liking\n'c';0.0;0;0\n",
     "1: no valence column in the header 'name;timestamp;arousal;liking'; AVEC 2019 label files start with "
     "name;timestamp;arousal;valence[;liking]"),
    ("segs/arousal/c.csv", "timestamp,value,segment_id\n0,0.1,1\n250,x,1\n", "3: column value holds 'x', not a number"),
    ("segs/arousal/c.csv", "timestamp,value,segment_id\n0,0.1,1\n250,1.5,1\n", "3: arousal 1.5 is outside [-1, 1]"),
    ("segs/arousal/c.csv", "timestamp,value,segment_id\n0,0.1,1\n250,inf,1\n",
     "3: column value holds inf, not a finite number"),
    ("segs/arousal/c.csv", "timestamp,value,segment_id\n0,0.1,1\n250,0.1\n", "3: 2 fields where the header declares 3"),
    ("segs/arousal/c.csv", "timestamp,value,segment_id\n250,0.1,1\n0,0.1,1\n",
     "3: time 0 does not come after 250 (line 2)"),
    ("segs/arousal/c.csv", "timestamp,value,segment_id\n0.5,0.1,1\n1.0,0.1,1\n1.5,0.1,1\n",
     " timestamps step by 0.5; MuSe label files count milliseconds (250 or 500 a step); for times in seconds write "
     "the generic labels.csv (clip,time,valence,arousal)"),
    ("segs/arousal/c2.csv", "t,value\n0,0.1\n",
     "1: header 't,value', expected timestamp,value,segment_id (MuSe label files)"),
]  # fmt: skip


@pytest.mark.parametrize("name, text, message", MALFORMED)
def test_malformed_challenge_files_name_the_file_and_line(tmp_path, name, text, message):
    bad = _write(tmp_path / name, text)
    if name.startswith("segs/"):  # the other files are fine
        _write(tmp_path / "segs/valence/c.csv", "timestamp,value,segment_id\n0,0.1,1\n")
        if name.endswith("c2.csv"):
            _write(tmp_path / "segs/arousal/c.csv", "timestamp,value,segment_id\n0,0.1,1\n")
    with pytest.raises(LabelError) as e:
        load_labels(tmp_path, ["c", "c2"])
    assert str(e.value) == f"{bad}:{message}"


def test_muse_sent_classes_are_refused_with_the_reason(tmp_path):
    """MuSe-Sent ships per-segment classes in arousal/ and valence/ directories: not RECOLA ratings, not labels
    over time. One line says so rather than reading segment ids as times."""
    bad = _write(tmp_path / "label_segments/arousal/3.csv", "id,segment_id,class_id\n3,1,2\n3,2,4\n")
    with pytest.raises(LabelError, match=rf"^{bad}: per-segment classes \(a class_id column"):
        load_labels(tmp_path, ["3"])
