"""`kill -9` of the main `mmemo extract` process alone, and of one worker alone, as an out-of-memory killer or a
lost SSH session does it (not the whole process group): no orphaned worker goes on writing, nothing is lost, and
a re-run gives shards equal, dataset by dataset and attribute by attribute, to an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import assert_same_shards, extract_cmd, noisy_frames

from mmemo.atomic import PARTIAL_SUFFIX, writer_pid
from mmemo.data import features_dir as FD
from mmemo.media.synth import tone, write_media

pytestmark = pytest.mark.slow
N_CLIPS = 6


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Six 10-s clips whose frames compress badly (each shard takes a while to write), labels for some."""
    root = tmp_path_factory.mktemp("kill_main_corpus")
    for k in range(N_CLIPS):
        audio = tone(200 + 50 * k, 10.0)[None]
        write_media(root / f"s{k % 2}/clip{k}.mp4", frames=noisy_frames(250, k), fps=25, audio=audio)
    (root / "labels.csv").write_text("clip,time,valence,arousal\n" + "".join(
        f"s{k % 2}/clip{k},{t / 2},{np.sin(t / 3):.3f},{np.cos(t / 5):.3f}\n" for k in range(3) for t in range(21)
    ))  # fmt: skip
    return root


@pytest.fixture(scope="module")
def reference(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("kill_main_reference")
    subprocess.run(extract_cmd(corpus, out, "-j", "1", "-q"), check=True, capture_output=True)
    return out


def _partials(out: Path) -> list[Path]:
    shards = out / FD.SHARD_DIR
    return list(shards.rglob("*" + PARTIAL_SUFFIX)) if shards.exists() else []


def _done(out: Path) -> list[Path]:
    shards = out / FD.SHARD_DIR
    return list(shards.rglob("*" + FD.SHARD_SUFFIX)) if shards.exists() else []


def _session(sid: int) -> list[int]:
    """Live processes of session ``sid`` (the run started with start_new_session: it and all its workers)."""
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[3]) == sid and fields[0] != "Z":  # fields: state, ppid, pgrp, session, ...
                pids.append(int(d.name))
    return pids


def _wait_until(condition, timeout: float = 120.0) -> bool:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        try:
            if condition():
                return True
        except FileNotFoundError:  # a partial renamed under our feet
            pass
        time.sleep(0.002)
    return False


def _writing(out: Path, min_bytes: int) -> list[Path]:
    found = []
    for p in _partials(out):
        try:
            if p.stat().st_size > min_bytes:
                found.append(p)
        except FileNotFoundError:
            pass
    return found


WHEN = {
    "while the first shards are written": lambda out: not _done(out) and _writing(out, 50_000),
    "mid-corpus": lambda out: 2 <= len(_done(out)) < N_CLIPS,
    "during a shard write after others completed": lambda out: _done(out) and _writing(out, 100_000),
}


@pytest.mark.parametrize("when", list(WHEN))
def test_kill_9_of_the_main_process_alone(corpus, reference, tmp_path, when):
    """The workers notice their parent is gone and stop; the re-run discards their partials and ends equal."""
    out = tmp_path / "out"
    proc = subprocess.Popen(extract_cmd(corpus, out, "-j", "2"), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    try:
        assert _wait_until(lambda: proc.poll() is None and WHEN[when](out)), f"never saw the moment '{when}'"
        os.kill(proc.pid, signal.SIGKILL)  # the main process only: its loky workers are left behind
        proc.wait()
        assert _wait_until(lambda: not _session(proc.pid), timeout=60), "orphaned workers kept running"
    finally:
        for pid in _session(proc.pid):
            os.kill(pid, signal.SIGKILL)
    rerun = subprocess.run(extract_cmd(corpus, out, "-j", "2"), capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert not _partials(out)
    assert_same_shards(out, reference)
    check = subprocess.run([sys.executable, "-m", "mmemo", "validate", str(out)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


def test_kill_9_of_one_worker_alone(corpus, reference, tmp_path):
    """The worker writing a shard is killed: the run still writes its manifest, names the clips it could not finish
    in one line each and exits 1; nothing it finished is lost; the re-run ends equal to an uninterrupted run."""
    out = tmp_path / "out"
    proc = subprocess.Popen(extract_cmd(corpus, out, "-j", "2"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)  # fmt: skip
    try:
        assert _wait_until(lambda: proc.poll() is None and _done(out) and _writing(out, 100_000))
        victim = _writing(out, 100_000)[0]
        pid = writer_pid(victim)  # the partial names its writer
        assert pid != proc.pid
        os.kill(pid, signal.SIGKILL)
        _, stderr = proc.communicate(timeout=120)
    finally:
        for p in _session(proc.pid):
            os.kill(p, signal.SIGKILL)
    assert proc.returncode == 1, stderr
    assert "a worker process died while extracting it" in stderr
    m = pd.read_csv(out / FD.MANIFEST, keep_default_na=False)
    assert len(m) == N_CLIPS and (m["status"] == "failed").any()
    for row in m[m["status"] != "failed"].itertuples():
        assert (out / row.shard).exists()
    rerun = subprocess.run(extract_cmd(corpus, out, "-j", "2"), capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert_same_shards(out, reference)
