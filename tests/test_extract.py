"""`mmemo extract` end to end on generated media: shards, manifest, labels, resume, bad files, CLI exit codes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from mmemo.cli import main
from mmemo.config import ExtractConfig
from mmemo.data.shards import read_clip, validate_shard
from mmemo.features.clip import featurise_in_memory
from mmemo.media.decode import decode_media
from mmemo.media.synth import counter_frames, tone, write_media


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Four good clips of every kind, and a labels table with one unknown id."""
    root = tmp_path_factory.mktemp("corpus")
    (root / "spk1").mkdir()
    (root / "spk2").mkdir()
    write_media(root / "spk1/av.mp4", frames=counter_frames(60, 48, 64), fps=30,
                audio=np.stack([tone(440, 2.0), tone(440, 2.0)]), sample_rate=16000)  # fmt: skip
    write_media(root / "spk1/voice.wav", audio=np.stack([tone(1000, 1.5, 44100), tone(1000, 1.5, 44100)]),
                sample_rate=44100)  # fmt: skip
    write_media(root / "spk2/silent.mp4", frames=counter_frames(25, 48, 64), fps=25)
    write_media(root / "spk2/pair.mp4", frames=counter_frames(20, 48, 64), fps=20)
    write_media(root / "spk2/pair.wav", audio=tone(300, 1.0)[None], sample_rate=16000)
    (root / "labels.csv").write_text(
        "clip,time,valence,arousal\nspk1/av,0,0,1\nspk1/av,2,1,0\nspk1/voice,0,0.5,0.5\nspk1/voice,1.5,0.5,0.5\n"
        "ghost,0,0,0\n"
    )
    return root


def _extract(args, **kw):
    return CliRunner().invoke(main, ["extract", *map(str, args)], catch_exceptions=False, **kw)


@pytest.fixture(scope="module")
def extracted(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("features")
    result = _extract([corpus, "--out", out, "--jobs", "1"])
    return out, result


def test_good_corpus_extracts(extracted):
    """Every clip ok, frame counts = ceil(duration x 25), modalities as made; exit 0."""
    out, result = extracted
    assert result.exit_code == 0, result.output
    m = pd.read_csv(out / "manifest.csv", keep_default_na=False).set_index("clip")
    assert list(m.index) == ["spk1/av", "spk1/voice", "spk2/pair", "spk2/silent"]
    assert (m["status"] == "ok").all()
    assert m.loc["spk1/av", "frames"] == 50 and m.loc["spk1/av", "modalities"] == "audio,video"
    assert m.loc["spk1/voice", "frames"] == 38 and m.loc["spk1/voice", "modalities"] == "audio"  # ceil(37.5)
    assert m.loc["spk2/silent", "frames"] == 25 and m.loc["spk2/silent", "modalities"] == "video"
    assert m.loc["spk2/pair", "frames"] == 25 and m.loc["spk2/pair", "modalities"] == "audio,video"
    assert "4 extracted, 0 up to date, 0 failed" in result.output
    for shard in m["shard"]:
        assert validate_shard(out / shard) == []
    assert pd.read_csv(out / "errors.csv").empty


def test_label_mismatches_are_reported(extracted):
    """The unknown id and the unlabelled clips are named on stderr, not fatal."""
    _, result = extracted
    assert "1 labelled clip id(s) not in the corpus: ghost" in result.stderr
    assert "2 clip(s) have no labels: spk2/pair, spk2/silent" in result.stderr


def test_shard_equals_a_direct_decode(corpus, extracted):
    """What the shard holds is exactly what the decoder and the feature functions produce."""
    out, _ = extracted
    clip = read_clip(out / "shards/spk1/av.h5")
    mem = featurise_in_memory(corpus / "spk1/av.mp4", ExtractConfig())
    np.testing.assert_array_equal(clip.frames, mem.frames)
    np.testing.assert_array_equal(clip.frames, decode_media(corpus / "spk1/av.mp4").frames)
    assert sorted(mem.features) == sorted(clip.features)
    for name, x in mem.features.items():
        np.testing.assert_array_equal(clip.features[name], x)
    np.testing.assert_array_equal(clip.audio_mask, mem.media.audio_mask)
    np.testing.assert_array_equal(clip.timestamps, np.arange(50) / 25)
    assert clip.attrs["source"] == "spk1/av.mp4" and clip.attrs["native_fps"] == pytest.approx(30, rel=1e-3)
    assert clip.attrs["source_size"] == (corpus / "spk1/av.mp4").stat().st_size
    # labels: linear from (v=0, a=1) at 0 s to (1, 0) at 2 s; row 25 is at 1 s
    assert clip.label_mask.all()
    assert clip.valence[25] == pytest.approx(0.5) and clip.arousal[25] == pytest.approx(0.5)


def test_separate_audio_file_is_the_clips_audio(extracted):
    """pair.mp4 has no audio track; pair.wav (300 Hz) beside it gives the clip its audio."""
    out, _ = extracted
    clip = read_clip(out / "shards/spk2/pair.h5", frames=False)
    assert clip.attrs["audio_source"] == "spk2/pair.wav"
    assert np.median(clip.features["centroid"][5:20]) == pytest.approx(300, rel=0.03)


def test_rerun_extracts_nothing_and_says_so(corpus, extracted):
    """Same corpus, same configuration: every clip up to date."""
    out, _ = extracted
    result = _extract([corpus, "--out", out, "--jobs", "1", "-q"])
    assert result.exit_code == 0
    assert "0 extracted, 4 up to date, 0 failed" in result.output
    assert "nothing to extract: every clip is up to date" in result.output


def test_changes_re_extract_what_they_affect(corpus, tmp_path):
    """A touched source re-extracts that clip; another n_mfcc re-extracts all."""
    out = tmp_path / "f"
    assert _extract([corpus, "--out", out, "-q", "--jobs", "1"]).exit_code == 0
    copy = tmp_path / "c"
    shutil.copytree(corpus, copy)
    assert _extract([copy, "--out", out, "-q", "--jobs", "1"]).exit_code == 0  # new mtimes: all redone
    os.utime(copy / "spk2/silent.mp4", (1, 1))
    result = _extract([copy, "--out", out, "-q", "--jobs", "1"])
    assert "1 extracted, 3 up to date" in result.output
    result = _extract([copy, "--out", out, "-q", "--jobs", "1", "--n-mfcc", "13"])
    assert "4 extracted, 0 up to date" in result.output
    assert read_clip(out / "shards/spk1/av.h5", frames=False).features["mfcc"].shape == (50, 13)


@pytest.mark.slow
def test_parallel_jobs_give_identical_arrays(corpus, extracted, tmp_path):
    """--jobs 2 (loky worker processes) writes the same arrays as --jobs 1."""
    out1, _ = extracted
    out2 = tmp_path / "f2"
    assert _extract([corpus, "--out", out2, "-q", "--jobs", "2"]).exit_code == 0
    for shard in ["spk1/av", "spk1/voice", "spk2/pair", "spk2/silent"]:
        a, b = read_clip(out1 / f"shards/{shard}.h5"), read_clip(out2 / f"shards/{shard}.h5")
        assert a.attrs["n_frames"] == b.attrs["n_frames"]
        if a.frames is not None:
            np.testing.assert_array_equal(a.frames, b.frames)
        for name in a.features:
            np.testing.assert_array_equal(a.features[name], b.features[name])


def test_broken_files_fail_cleanly_and_the_rest_extracts(corpus, tmp_path):
    """Empty, garbage, text-as-wav and truncated-before-its-index files: one error line each, exit 1, good clips
    done (a truncated file that decodes in part is kept with a warning: tests/test_truncated.py)."""
    c = tmp_path / "c"
    shutil.copytree(corpus, c)
    (c / "bad").mkdir()
    (c / "bad/empty.mp4").write_bytes(b"")
    (c / "bad/garbage.mkv").write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    (c / "bad/text.wav").write_text("this is not audio\n")
    whole = (c / "spk1/av.mp4").read_bytes()  # its index (moov) is at the end: the cut copy has nothing decodable
    (c / "bad/truncated.mp4").write_bytes(whole[: len(whole) // 3])
    out = tmp_path / "f"
    result = _extract([c, "--out", out, "--jobs", "2"])
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 4
    for name in ["empty.mp4", "garbage.mkv", "text.wav", "truncated.mp4"]:
        assert any(str(c / "bad" / name) in e for e in errors), name
    assert "empty file (0 bytes)" in result.stderr
    assert "4 clip(s) failed; see" in result.stderr and "errors.csv" in result.stderr
    m = pd.read_csv(out / "manifest.csv", keep_default_na=False).set_index("clip")
    assert (m.loc[[i for i in m.index if i.startswith("bad/")], "status"] == "failed").all()
    assert (m.loc[[i for i in m.index if not i.startswith("bad/")], "status"] == "ok").all()
    errors = pd.read_csv(out / "errors.csv")
    assert sorted(errors["clip"]) == ["bad/empty", "bad/garbage", "bad/text", "bad/truncated"]
    assert (errors["level"] == "error").all() and list(errors.columns) == ["clip", "source", "error", "level"]
    assert "warning: " not in result.stderr
    assert not (out / "shards/bad").exists() or not list((out / "shards/bad").iterdir())
    assert "4 extracted, 0 up to date, 4 failed" in result.output


def test_feature_subset(corpus, tmp_path):
    """--features rms,centroid writes exactly those two features."""
    out = tmp_path / "f"
    assert _extract([corpus, "--out", out, "-q", "--features", "rms,centroid", "-j", "1"]).exit_code == 0
    assert sorted(read_clip(out / "shards/spk1/voice.h5").features) == ["centroid", "rms"]


def test_usage_errors(corpus, tmp_path):
    """Unknown feature: exit 2 listing the choices; missing or empty corpus: exit 1 with one line."""
    r = _extract([corpus, "--out", tmp_path / "f", "--features", "rms,loudness"])
    assert r.exit_code == 2 and "unknown feature(s) loudness; choose from logmel, rms" in r.output
    r = _extract([tmp_path / "nope", "--out", tmp_path / "f"])
    assert r.exit_code == 1 and "nope: not a directory" in r.output
    (tmp_path / "empty").mkdir()
    r = _extract([tmp_path / "empty", "--out", tmp_path / "f"])
    assert r.exit_code == 1 and "no audio or video files found" in r.output


def test_inspect_and_features_commands(extracted):
    """inspect summarises the directory; features lists the registry."""
    out, _ = extracted
    r = CliRunner().invoke(main, ["inspect", str(out)])
    assert r.exit_code == 0
    assert "4 (4 extracted, 0 failed)" in r.output and "audio,video: 2" in r.output
    assert "logmel (64)" in r.output and "per media hour" in r.output
    r = CliRunner().invoke(main, ["features"])
    assert r.exit_code == 0 and r.output.splitlines()[0].split()[:2] == ["logmel", "64"]
    r = CliRunner().invoke(main, ["inspect", str(out / "shards")])
    assert r.exit_code == 1 and "no manifest.csv here" in r.output


@pytest.mark.slow
def test_console_script_exit_code(corpus, tmp_path):
    """The installed entry point (a real process) exits 1 with an error line when a clip fails."""
    c = tmp_path / "c"
    c.mkdir()
    shutil.copy(corpus / "spk2/silent.mp4", c / "ok.mp4")
    (c / "broken.mp4").write_bytes(b"\x00" * 100)
    proc = subprocess.run([sys.executable, "-m", "mmemo", "extract", str(c), "--out", str(tmp_path / "f"), "-q"],
                          capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 1
    assert f"error: {c / 'broken.mp4'}: " in proc.stderr
    assert "1 extracted, 0 up to date, 1 failed" in proc.stdout


def test_removed_clip_leaves_a_noted_orphan(corpus, tmp_path):
    """A clip deleted from the corpus: its old shard is kept but named, and the manifest drops it."""
    c = tmp_path / "c"
    shutil.copytree(corpus, c)
    out = tmp_path / "f"
    assert _extract([c, "--out", out, "-j", "1", "-q"]).exit_code == 0
    (c / "spk2/silent.mp4").unlink()
    r = _extract([c, "--out", out, "-j", "1"])
    assert r.exit_code == 0
    assert "1 shard(s) in" in r.stderr and "belong to no clip of the corpus (kept, not listed): spk2/silent" in r.stderr
    assert "spk2/silent" not in set(pd.read_csv(out / "manifest.csv")["clip"])
