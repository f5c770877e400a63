"""Truncated files (issue 12, item 2): a clip that holds less than its container or header declares (a download
cut short) is extracted as far as it decodes, with one warning line naming the file and how much is missing, a
manifest note and an errors.csv row of level "warning"; exit 0. ``--strict`` fails it instead (no shard). A file
with nothing decodable still fails. Resume reports the warning again and honours ``--strict``.

The reference for what is decodable is the ffmpeg command line where it is installed, and otherwise the packets
that lie wholly inside the cut file (every frame of an x264 "ultrafast" stream is one packet, no B-frames).
"""

from __future__ import annotations

import math
import re
import shutil
import subprocess
from pathlib import Path

import av
import h5py
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from conftest import HAVE_FFMPEG, needs_ffmpeg

from mmemo.cli import main
from mmemo.data.features_dir import read_manifest
from mmemo.errors import MediaError
from mmemo.media.decode import decode_media
from mmemo.media.synth import counter_frames, tone, write_media

FPS = 25
HOP = 16000 // FPS
MESSAGE = re.compile(
    r"^(?P<path>.+): truncated: decoded (?P<decoded>\d+\.\d\d) s of the (?P<declared>\d+\.\d\d) s the "
    r"(?P<by>container|header) declares \((?P<missing>\d+\.\d\d) s missing\)$"
)
REAL_CLIP = "sadtalker_hdtf_talking_faces/WDA_AlexandriaOcasioCortez_000.mp4"  # 8 s, 25 fps, mpeg4 + aac


# --------------------------------------------------------------------------------------------------------------
# helpers


def faststart(src: Path, dst: Path) -> Path:
    """Remux ``src`` (video + audio, packets as they are) with its index (moov) first, as a streamed download is:
    a copy cut short still opens and declares the whole length. PyAV, so that no ffmpeg command line is needed."""
    with av.open(str(src)) as i, av.open(str(dst), "w", format="mp4", options={"movflags": "+faststart"}) as o:
        keep = [s for s in i.streams if s.type in ("video", "audio")]
        out = {s.index: o.add_stream_from_template(s) for s in keep}
        for p in i.demux(keep):
            if p.dts is None:  # the demuxer's flush packets
                continue
            p.stream = out[p.stream.index]
            o.mux(p)
    assert _boxes(dst)[1] == b"moov", _boxes(dst)
    return dst


def _boxes(path: Path) -> list[bytes]:
    data, pos, names = path.read_bytes(), 0, []
    while pos + 8 <= len(data):
        size = int.from_bytes(data[pos : pos + 4], "big")
        names.append(data[pos + 4 : pos + 8])
        if size < 8:
            break
        pos += size
    return names


def cut(src: Path, dst: Path, keep: float) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * keep)])
    return dst


def whole_video_packets(full: Path, n_bytes: int) -> int:
    """Video packets of ``full`` that lie wholly within its first ``n_bytes``: the frames a copy cut there holds."""
    with av.open(str(full)) as c:
        return sum(p.pos + p.size <= n_bytes for p in c.demux(c.streams.video[0]) if p.size)


def ffmpeg_frames(path: Path) -> int:
    """Video frames the ffmpeg command line decodes from ``path`` (it goes on past the partial packet at a cut)."""
    cmd = ["ffmpeg", "-v", "error", "-i", str(path), "-map", "0:v:0", "-f", "framecrc", "-"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return sum(1 for line in out.splitlines() if line and not line.startswith("#"))


def ffprobe_video_duration(path: Path) -> float:
    cmd = ["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "stream=duration", "-of", "csv=p=0",
           str(path)]  # fmt: skip
    return float(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip())


def extract(*args):
    return CliRunner().invoke(main, ["extract", *map(str, args)], catch_exceptions=False)


def lines(output: str, prefix: str) -> list[str]:
    return [line[len(prefix) :] for line in output.splitlines() if line.startswith(prefix)]


def manifest(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "manifest.csv", keep_default_na=False, dtype=str).set_index("clip")


def errors(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "errors.csv", keep_default_na=False, dtype=str)


def check_shard(shard: Path, frames: int) -> None:
    """A kept truncated clip: ``frames`` rows, every one with its decoded frame (none invented past the cut), audio
    rows masked where the audio ended, features as long as the clip, the truncation recorded."""
    with h5py.File(shard, "r") as h5:
        assert int(h5.attrs["n_frames"]) == frames == len(h5["timestamps"])
        assert h5["video/frames"].shape[0] == frames
        assert h5["video/mask"][()].all()
        source_time = h5["video/source_time"][()]
        assert np.all(np.diff(source_time) > 0) and source_time[-1] < frames / FPS
        audio_mask = h5["audio/mask"][()]
        assert audio_mask[: frames - 3].all()  # the audio reaches about as far as the video at the cut
        for ds in h5["audio/features"].values():
            assert ds.shape[0] == frames and np.isfinite(ds[()]).all()
        assert "truncation" in h5.attrs


def check_kept(result, out: Path, clip: str, path: Path, missing: str, frames: int, status: str = "ok") -> str:
    """Exit 0; one warning line naming ``path`` and the missing seconds; manifest note; errors.csv warning row."""
    assert result.exit_code == 0, result.output
    warnings = lines(result.stderr, "warning: ")
    assert len(warnings) == 1, result.stderr
    m = MESSAGE.match(warnings[0])
    assert m and m["path"] == str(path) and m["missing"] == missing, warnings[0]
    assert lines(result.stderr, "error: ") == []
    row = manifest(out).loc[clip]
    assert row["status"] == status and int(row["frames"]) == frames
    assert row["notes"] == f"truncated: {missing} s missing" and row["error"] == ""
    e = errors(out)
    assert list(e.columns) == ["clip", "source", "error", "level"]
    assert e.to_dict("records") == [{"clip": clip, "source": row["source"], "error": warnings[0], "level": "warning"}]
    assert "1 with warnings (see errors.csv)" in result.stdout and "0 failed" in result.stdout
    return warnings[0]


def check_strict_failure(result, out: Path, clip: str, message: str) -> None:
    """--strict: exit 1, the warning's text as the one error line, status failed, no shard (an older one removed)."""
    assert result.exit_code == 1, result.output
    assert lines(result.stderr, "error: ") == [message], result.stderr
    assert lines(result.stderr, "warning: ") == []
    row = manifest(out).loc[clip]
    assert row["status"] == "failed" and row["error"] == message and row["shard"] == ""
    e = errors(out)
    assert e.to_dict("records") == [{"clip": clip, "source": row["source"], "error": message, "level": "error"}]
    assert not (out / "shards" / f"{clip}.h5").exists()
    assert not list((out / "shards").rglob("*.partial"))


# --------------------------------------------------------------------------------------------------------------
# 1. a real partial MP4 against the ffmpeg command line


@needs_ffmpeg
def test_real_partial_mp4_keeps_what_ffmpeg_decodes(realdata, tmp_path):
    """A real talking-face MP4 with its index first, its last 30 % of bytes gone: mmemo keeps exactly the frames
    ffmpeg decodes, warns once with the seconds missing (from ffprobe's declared duration), exit 0; --strict: exit 1
    and the shard of the first run is not kept."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    full = faststart(realdata / REAL_CLIP, tmp_path / "full.mp4")
    clip = cut(full, corpus / "talk.mp4", 0.7)
    write_media(corpus / "good.mp4", frames=counter_frames(25, 48, 64), fps=25, audio=tone(440, 1.0)[None])

    n = ffmpeg_frames(clip)
    declared = ffprobe_video_duration(clip)
    assert 0 < n < ffmpeg_frames(full) and declared == pytest.approx(8.0, abs=0.05)
    with av.open(str(clip)) as c:
        assert c.streams.video[0].average_rate == FPS  # one source frame per grid row

    out = tmp_path / "f"
    result = extract(corpus, "--out", out, "-j", "1")
    missing = f"{declared - n / FPS:.2f}"
    message = check_kept(result, out, "talk", clip, missing, n)
    assert f"decoded {n / FPS:.2f} s of the {declared:.2f} s the container declares" in message
    assert manifest(out).loc["good", "notes"] == "" and manifest(out).loc["good", "status"] == "ok"
    check_shard(out / "shards/talk.h5", n)

    strict = extract(corpus, "--out", out, "-j", "2", "--strict")  # same directory: the kept shard goes
    check_strict_failure(strict, out, "talk", message)
    assert manifest(out).loc["good", "status"] == "up-to-date"


# --------------------------------------------------------------------------------------------------------------
# 2. the same with a synthetic clip (no real recordings needed)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> tuple[Path, Path, int]:
    """(the whole faststart MP4, a copy cut to 60 % of its bytes, the video frames wholly inside the cut):
    3 s of noise frames at 25 fps with a 440 Hz tone."""
    d = tmp_path_factory.mktemp("synthetic")
    frames = np.random.default_rng(1).integers(0, 256, (75, 48, 64, 3), dtype=np.uint8)
    src = write_media(d / "src.mp4", frames=frames, fps=25, audio=tone(440, 3.0)[None])
    full = faststart(src, d / "full.mp4")
    clip = cut(full, d / "clip.mp4", 0.6)
    return full, clip, whole_video_packets(full, clip.stat().st_size)


@pytest.mark.parametrize("threads", [0, 1])
def test_synthetic_partial_mp4_decodes_what_is_there(synthetic, threads):
    """decode_media keeps every whole frame and no more, one Truncation, whatever the decoder threading (one thread
    raises on the partial packet at the cut, frame threads drop it)."""
    full, clip, n = synthetic
    dec = decode_media(clip, size=32, threads=threads)
    assert 20 <= n <= 70
    assert dec.n_frames == n and dec.video_mask.all()
    assert len(np.unique(dec.source_index)) == n and dec.source_index.min() == 0
    assert dec.duration == pytest.approx(n / FPS)
    [t] = dec.truncations
    assert t.declared_s == pytest.approx(3.0, abs=0.05) and t.decoded_s == pytest.approx(n / FPS)
    assert dec.warnings == [t.message] and t.note == f"truncated: {t.missing_s:.2f} s missing"
    assert MESSAGE.match(t.message)["path"] == str(clip)
    # The audio up to the cut is the tone, the rest of the clip's last row is zeros; rows match the mask.
    assert dec.audio.shape == (n * HOP,) and dec.audio_mask[: n - 2].all()
    whole = decode_media(full, size=32)
    assert whole.truncations == [] and whole.n_frames == 75
    np.testing.assert_array_equal(dec.frames, whole.frames[:n])
    k = int(dec.audio_mask.sum()) * HOP - HOP
    np.testing.assert_allclose(dec.audio[:k], whole.audio[:k], atol=1e-4)
    if HAVE_FFMPEG:
        assert ffmpeg_frames(clip) == n


def _cut_corpus(clip: Path, corpus: Path) -> Path:
    """A corpus of the cut clip (as cut.mp4) beside a whole one (good.wav)."""
    corpus.mkdir()
    shutil.copy(clip, corpus / "cut.mp4")
    write_media(corpus / "good.wav", audio=tone(300, 1.0)[None])
    return corpus


def test_synthetic_partial_mp4_extracts_with_a_warning_and_fails_with_strict(synthetic, tmp_path):
    full, clip, n = synthetic
    corpus = _cut_corpus(clip, tmp_path / "corpus")
    out = tmp_path / "f"
    t = decode_media(corpus / "cut.mp4", size=32).truncations[0]
    check_kept(extract(corpus, "--out", out, "-j", "1"), out, "cut", corpus / "cut.mp4", f"{t.missing_s:.2f}", n)
    check_shard(out / "shards/cut.h5", n)
    strict_out = tmp_path / "strict"
    check_strict_failure(extract(corpus, "--out", strict_out, "-j", "1", "--strict"), strict_out, "cut", t.message)
    assert manifest(strict_out).loc["good", "status"] == "ok"


def test_truncated_mkv_and_avi(tmp_path):
    """Matroska declares its duration: the same warning. An AVI without its index (FFmpeg then measures it by the
    packets there) cut inside a packet: a warning that says the amount is unknown, note "the end is missing"."""
    frames = np.random.default_rng(2).integers(0, 256, (75, 48, 64, 3), dtype=np.uint8)
    mkv = cut(write_media(tmp_path / "full.mkv", frames=frames, audio=tone(440, 3.0)[None]), tmp_path / "c.mkv", 0.5)
    [t] = decode_media(mkv, size=32).truncations
    assert MESSAGE.match(t.message) and t.declared_s == pytest.approx(3.0, abs=0.1) and t.missing_s > 1

    full = write_media(tmp_path / "full.avi", frames=frames, audio=tone(440, 3.0)[None])
    with av.open(str(full)) as c:
        video = [p for p in c.demux(c.streams.video[0]) if p.size]
    mid = video[len(video) // 2]
    avi = tmp_path / "c.avi"
    avi.write_bytes(full.read_bytes()[: mid.pos + mid.size // 2])  # inside a frame's packet
    dec = decode_media(avi, size=32)
    [t] = dec.truncations
    assert t.declared_s is None and t.note == "truncated: the end is missing"
    assert t.message == f"{avi}: truncated: the file ends inside a packet after {t.decoded_s:.2f} s " \
        "(how much is missing is unknown)"  # fmt: skip
    on_a_boundary = tmp_path / "b.avi"
    on_a_boundary.write_bytes(full.read_bytes()[: mid.pos])
    assert decode_media(on_a_boundary, size=32).truncations == []  # nothing says anything is missing


# --------------------------------------------------------------------------------------------------------------
# 3. a truncated WAV


def _data_offset(wav: Path) -> int:
    """Where the samples of a PCM WAV file begin (after the RIFF header, its LIST chunk and the data chunk's head)."""
    head = wav.read_bytes()[:4096]
    return head.index(b"data") + 8


def test_truncated_wav_is_kept_with_a_warning(tmp_path):
    """The RIFF header declares 3 s of 16-bit mono at 16 kHz; 40 % of the file is there: those samples, exactly."""
    full = write_media(tmp_path / "full.wav", audio=tone(440, 3.0)[None], sample_rate=16000)
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    wav = cut(full, corpus / "voice.wav", 0.4)
    have = wav.stat().st_size - _data_offset(full)
    dec = decode_media(wav, size=32)
    [t] = dec.truncations
    assert (t.declared_by, t.declared_s, t.decoded_s) == ("header", 3.0, have / 32000)
    assert t.message == f"{wav}: truncated: decoded {have / 32000:.2f} s of the 3.00 s the header declares " \
        f"({3 - have / 32000:.2f} s missing)"  # fmt: skip
    assert dec.n_frames == math.ceil(have / 2 / HOP) and dec.audio_mask.sum() == dec.n_frames
    np.testing.assert_allclose(dec.audio[: have // 2], decode_media(full).audio[: have // 2], atol=1e-6)

    out = tmp_path / "f"
    check_kept(extract(corpus, "--out", out, "-j", "1"), out, "voice", wav, f"{3 - have / 32000:.2f}", dec.n_frames)


# --------------------------------------------------------------------------------------------------------------
# 4. nothing decodable: still a failure


def _moov_at_end(d: Path, src: Path) -> Path:
    """The index (moov) at the end, cut off: nothing says what the bytes are."""
    return cut(src, d / "c.mp4", 0.7)


def _index_only(d: Path, src: Path) -> Path:
    """The index first, cut where the media data begins: it declares 2 s, and no frame is there."""
    data = faststart(src, d / "fs.mp4").read_bytes()
    path = d / "c.mp4"
    path.write_bytes(data[: data.index(b"mdat") + 4])
    return path


def _wav_header_only(d: Path, src: Path) -> Path:
    wav = write_media(d / "w.wav", audio=tone(440, 1.0)[None])
    path = d / "c.wav"
    path.write_bytes(wav.read_bytes()[: _data_offset(wav)])
    return path


NOTHING_DECODABLE = {
    "moov-at-end": (_moov_at_end, "not a readable media file"),
    "index-only": (_index_only, "video stream has no decodable frames"),
    "wav-header-only": (_wav_header_only, "audio stream has no decodable samples"),
}


@pytest.mark.parametrize("case", list(NOTHING_DECODABLE))
def test_nothing_decodable_still_fails(tmp_path, case):
    """One line naming the file; in `mmemo extract`: one error line, level "error", status failed, exit 1."""
    make, reason = NOTHING_DECODABLE[case]
    src = write_media(tmp_path / "src.mp4", frames=counter_frames(50, 48, 64), fps=25, audio=tone(440, 2.0)[None])
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    path = make(corpus, src)
    for other in corpus.iterdir():
        if other != path:
            other.unlink()
    with pytest.raises(MediaError) as info:
        decode_media(path, size=32)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{path}: ") and reason in message

    out = tmp_path / "f"
    r = extract(corpus, "--out", out, "-j", "1")
    assert r.exit_code == 1 and lines(r.stderr, "error: ") == [message] and lines(r.stderr, "warning: ") == []
    assert list(errors(out)["level"]) == ["error"] and manifest(out)["status"].tolist() == ["failed"]
    assert manifest(out)["notes"].tolist() == [""]


# --------------------------------------------------------------------------------------------------------------
# 5. resume


def test_resume_reports_the_warning_again_and_strict_fails_the_kept_clip(synthetic, tmp_path):
    """Kept with a warning, then re-run unchanged: up to date, the warning printed and listed again, exit 0.
    Re-run with --strict: failed, shard removed, exit 1. Re-run without: extracted again, with its warning."""
    _, clip, n = synthetic
    corpus = _cut_corpus(clip, tmp_path / "corpus")
    out = tmp_path / "f"
    first = extract(corpus, "--out", out, "-j", "1", "-q")
    [message] = lines(first.stderr, "warning: ")
    missing = MESSAGE.match(message)["missing"]

    again = extract(corpus, "--out", out, "-j", "1", "-q")
    assert "0 extracted, 2 up to date, 0 failed, 1 with warnings" in again.stdout
    check_kept(again, out, "cut", corpus / "cut.mp4", missing, n, status="up-to-date")

    strict = extract(corpus, "--out", out, "-j", "1", "-q", "--strict")
    check_strict_failure(strict, out, "cut", message)
    assert "0 extracted, 1 up to date, 1 failed" in strict.stdout

    lenient = extract(corpus, "--out", out, "-j", "1", "-q")
    assert "1 extracted, 1 up to date, 0 failed, 1 with warnings" in lenient.stdout
    check_kept(lenient, out, "cut", corpus / "cut.mp4", missing, n)


def test_a_manifest_written_before_notes_is_read(synthetic, tmp_path):
    """Manifests and errors.csv files of earlier versions (no notes, no level column) are still read."""
    _, clip, _ = synthetic
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    shutil.copy(clip, corpus / "cut.mp4")
    out = tmp_path / "f"
    assert extract(corpus, "--out", out, "-j", "1", "-q").exit_code == 0
    m = pd.read_csv(out / "manifest.csv", keep_default_na=False, dtype=str)
    assert list(m.columns)[-1] == "notes"
    m.drop(columns=["notes"]).to_csv(out / "manifest.csv", index=False)
    table = read_manifest(out).table
    assert table["notes"].tolist() == [""] and table["status"].tolist() == ["ok"]
    assert CliRunner().invoke(main, ["inspect", str(out)]).exit_code == 0


def test_predict_on_a_partial_file_says_so(synthetic, tmp_path):
    """`mmemo predict` goes through the same decode: it predicts the rows that are there and prints the warning."""
    from click.testing import CliRunner
    from conftest import save_untrained_run

    from mmemo.cli import main

    _, clip, n = synthetic
    run = save_untrained_run(tmp_path / "run")
    r = CliRunner().invoke(main, ["predict", str(clip), "--run", str(run), "--out", str(tmp_path / "p.csv")])
    assert r.exit_code == 0, r.output
    [warning] = lines(r.output, "warning: ")
    assert MESSAGE.match(warning)["path"] == str(clip)
    assert len(pd.read_csv(tmp_path / "p.csv")) == n
