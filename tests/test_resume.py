"""Crash safety at corpus scale: real `kill -9` of a real extraction, then a re-run equal to an uninterrupted one;
validation of damaged shards; one writer per directory; a Dask LocalCluster giving the same arrays."""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from conftest import REALDATA, assert_same_shards, extract_cmd, noisy_frames

from mmemo.cli import main
from mmemo.data import features_dir as FD
from mmemo.data import schema as S
from mmemo.media.synth import tone, write_media

pytestmark = pytest.mark.slow  # crash safety at corpus scale: every test needs the six 12-s clips written first

N_CLIPS = 6
# A real talking face joins the corpus where the recordings are at hand (8 s): resumption with faces found.
FACE = REALDATA / "sadtalker_hdtf_talking_faces" / "WDA_KatieHill_000.mp4"
N_LISTED = N_CLIPS + 1 + FACE.exists()  # + voice.wav (+ the face)
MEDIA_S = N_CLIPS * 12 + 3 + 8 * FACE.exists()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Six 12-s clips (video + audio), one audio-only file, labels for some; and a real talking face (8 s) where the
    real recordings are at hand, so that resumption is checked on faces found, tracked and aligned too."""
    root = tmp_path_factory.mktemp("kill_corpus")
    for k in range(N_CLIPS):
        audio = tone(200 + 50 * k, 12.0)[None]
        write_media(root / f"s{k % 2}/clip{k}.mp4", frames=noisy_frames(300, k), fps=25, audio=audio)
    write_media(root / "voice.wav", audio=tone(500, 3.0)[None])
    if FACE.exists():
        shutil.copy(FACE, root / "s1" / "face.mp4")
    (root / "labels.csv").write_text("clip,valence,arousal\ns0/clip0,0.5,0.1\nvoice,-0.2,0.3\n")
    return root


@pytest.fixture(scope="module")
def reference(corpus, tmp_path_factory):
    """An uninterrupted run, the answer every interrupted one must reach."""
    out = tmp_path_factory.mktemp("reference")
    subprocess.run(extract_cmd(corpus, out, "-j", "1", "-q"), check=True, capture_output=True)
    return out


def _state(out):
    shards = out / FD.SHARD_DIR
    done = list(shards.rglob("*.h5")) if shards.exists() else []
    partial = list(shards.rglob("*.partial")) if shards.exists() else []
    return done, partial


WHEN = {
    "before the first shard completes": lambda done, partial: not done and any(p.stat().st_size > 0 for p in partial),
    "mid-corpus": lambda done, partial: 2 <= len(done) < N_CLIPS,
    "during a shard write": lambda done, partial: len(done) >= 1 and any(p.stat().st_size > 100_000 for p in partial),
}


def _kill_when(cmd, condition, timeout=120.0):
    """Start the extraction and SIGKILL it the moment ``condition(done, partial)`` holds on its output."""
    out = Path(cmd[cmd.index("--out") + 1])
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    t0 = time.monotonic()
    try:
        while proc.poll() is None and time.monotonic() - t0 < timeout:
            try:
                hit = condition(*_state(out))
            except FileNotFoundError:  # a partial renamed under our feet
                hit = False
            if hit:
                os.killpg(proc.pid, signal.SIGKILL)  # the whole group: loky workers die too
                proc.wait()
                return True
            time.sleep(0.002)
        return False
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.mark.parametrize("jobs", ["1", "2"])
@pytest.mark.parametrize("when", list(WHEN))
def test_kill_9_then_rerun_equals_uninterrupted(corpus, reference, tmp_path, when, jobs):
    """SIGKILL at a chosen moment, re-run the same command: valid, complete, and bit-identical to the reference."""
    out = tmp_path / "out"
    killed = _kill_when(extract_cmd(corpus, out, "-j", jobs), WHEN[when])
    assert killed, f"the run finished before the moment '{when}' was seen"
    done, partial = _state(out)
    assert len(done) < N_LISTED
    rerun = subprocess.run(extract_cmd(corpus, out, "-j", jobs), capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    if partial:
        assert "discarded" in rerun.stderr and "half-written shard(s)" in rerun.stderr
    assert f"{len(done)} up to date" in rerun.stdout  # what was complete is not extracted again
    assert not _state(out)[1]
    check = CliRunner().invoke(main, ["validate", str(out)])
    assert check.exit_code == 0, check.output
    assert_same_shards(out, reference)


def test_damaged_shards_fail_validation(reference, tmp_path):
    """A truncated shard, a NaN feature, a dropped dataset, a stray partial: each named, exit 1."""
    out = tmp_path / "damaged"
    shutil.copytree(reference, out)
    shards = out / FD.SHARD_DIR
    clip0, clip1, clip2 = shards / "s0/clip0.h5", shards / "s1/clip1.h5", shards / "s0/clip2.h5"
    data = clip0.read_bytes()
    clip0.write_bytes(data[: len(data) // 2])
    with h5py.File(clip1, "a") as h:
        h[S.feature_path("rms")][10, 0] = np.nan
    with h5py.File(clip2, "a") as h:
        del h[S.AUDIO_MASK]
    (shards / "s1/clip3.h5.partial").write_bytes(b"half")
    r = CliRunner().invoke(main, ["validate", str(out), "-j", "1"])
    assert r.exit_code == 1
    assert str(clip0) in r.output and "not a readable HDF5 shard" in r.output
    assert f"{clip1}: feature rms holds 1 NaN/Inf values" in r.output
    assert f"{clip2}: missing dataset /audio/mask" in r.output
    assert "clip3.h5.partial: half-written shard" in r.output
    assert "4 problem(s)" in r.output


def test_validate_checks_the_manifest_against_the_shards(reference, tmp_path):
    """A shard missing from the manifest and a manifest row without its shard are both reported."""
    out = tmp_path / "m"
    shutil.copytree(reference, out)
    m = pd.read_csv(out / FD.MANIFEST, keep_default_na=False)
    m = m[m["clip"] != "voice"]
    m.to_csv(out / FD.MANIFEST, index=False)
    (out / FD.SHARD_DIR / "s0/clip4.h5").unlink()
    r = CliRunner().invoke(main, ["validate", str(out), "-j", "1"])
    assert r.exit_code == 1
    assert "voice.h5: shard not in the manifest" in r.output
    assert "clip4.h5: listed in the manifest but missing" in r.output
    good = CliRunner().invoke(main, ["validate", str(reference), "-j", "2"])
    assert good.exit_code == 0 and f"{N_LISTED} shards valid" in good.output


def test_a_second_writer_is_refused(corpus, tmp_path):
    """While one extraction holds the directory, another exits 1 naming the holder."""
    out = tmp_path / "locked"
    out.mkdir()
    with open(out / ".extract.lock", "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        f.write("pid 12345 on elsewhere\n")
        f.flush()
        r = CliRunner().invoke(main, ["extract", str(corpus), "--out", str(out), "-q"])
    assert r.exit_code == 1 and "another `mmemo extract` is writing here (pid 12345 on elsewhere)" in r.output


def test_progress_lines_and_summary(corpus, tmp_path):
    """Not a terminal: plain progress lines with clips, x real time, ETA and failures; a final summary."""
    r = subprocess.run(extract_cmd(corpus, tmp_path / "p", "-j", "2"), capture_output=True, text=True)
    assert r.returncode == 0
    last = [line for line in r.stderr.splitlines() if line.startswith("extract: ")][-1]
    assert last.startswith(f"extract: {N_LISTED}/{N_LISTED} clips, {MEDIA_S / 60:.1f} media min, ")
    assert "x real time, ETA 0:00:00, 0 failed" in last
    assert f"this run: {N_LISTED} clips, {MEDIA_S / 3600:.3f} media hours in" in r.stdout
    assert "MiB written, 0 failed" in r.stdout


def test_dask_local_cluster_gives_the_same_arrays(corpus, reference, tmp_path):
    """--backend dask against a LocalCluster on loopback: same shards as the local run."""
    distributed = pytest.importorskip("dask.distributed", reason="dask[distributed] not installed")
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
    ) as cluster:
        out = tmp_path / "dask"
        r = subprocess.run(
            extract_cmd(corpus, out, "--backend", "dask", "--scheduler", cluster.scheduler_address, "-q"),
            capture_output=True,
            text=True,
        )
        assert r.returncode == 0, r.stderr
    assert_same_shards(out, reference)


def test_dask_without_scheduler_is_a_usage_error(corpus, tmp_path):
    """--backend dask alone says what is missing."""
    r = CliRunner().invoke(main, ["extract", str(corpus), "--out", str(tmp_path / "x"), "--backend", "dask"])
    assert r.exit_code == 1 and "--backend dask needs --scheduler ADDRESS" in r.output
