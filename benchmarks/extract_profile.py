"""Where extraction's time goes, stage by stage, per clip; prints figures, asserts nothing.

    python benchmarks/extract_profile.py CLIP [CLIP ...] [--faces on|off|both] [--threads 1]

Each clip is extracted once in this process, exactly as an `mmemo extract` worker does (``extract_clip``: decode,
grid, audio features, faces, shard writes with the default configuration), under cProfile measuring *this
process's CPU time* (so other jobs on a shared machine do not inflate it), the decoder on ``--threads`` threads
(1: a stage's CPU is not spread over FFmpeg's threads, whose time would land on whatever Python runs meanwhile)
and the face tracker and the shard writer's compression in line instead of in their threads (for the same reason:
the numbers written are the same).

The stages, by the functions that make them (disjoint; "other" is the rest: Python glue, the demuxer, timestamps):

- video decode: libavcodec's decoding calls (``Packet.decode``), the demuxer's packet reads
- grid scale: the whole frame to the 224-px grid (one swscale call per shown frame, letterboxing)
- audio: resampling to 16 kHz mono and every audio feature (their shard writes excluded)
- faces: detector input (the frame scaled for it), detector (onnxruntime and its decoding), crops (the aligned
  112-px crop from the YUV planes), tracker (scheduling, interpolation, smoothing, chunking)
- shard writes: h5py writes of frames, features and faces, with their compression (lzf by default)

`benchmarks/extract.py` measures the same clips end to end against the ffmpeg command line (section 2b).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import resource
import shutil
import sys
import tempfile
import time
from concurrent.futures import Future
from pathlib import Path

from mmemo.config import ExtractConfig
from mmemo.data import shards as shards_mod
from mmemo.features import clip as clip_mod
from mmemo.media.files import ClipSource
from mmemo.pipeline.extract import extract_clip

# (stage, [(file suffix, function name, "cum" or "self")]); "cum" counts the function with what it calls.
STAGES = [
    ("video decode", [("~", "<method 'decode' of 'av.packet.Packet' objects>", "self"),
                      ("~", "<method 'demux' of 'av.container.input.InputContainer' objects>", "self")]),
    ("grid scale", [("media/grid.py", "__call__", "cum")]),
    ("audio", [("media/grid.py", "AudioTrack.push", "cum"), ("media/grid.py", "AudioTrack.finish", "cum"),
               ("features/audio.py", "AudioFeatureStream.finish", "cum")]),
    ("faces: detector input", [("media/picture.py", "small", "cum")]),
    ("faces: detector", [("features/detector.py", "__call__", "cum")]),
    ("faces: crops", [("media/picture.py", "warp", "cum")]),
    ("faces: tracker", [("features/clip.py", "FaceStream.push", "cum"),
                        ("features/clip.py", "FaceStream.finish", "cum")]),
    ("shard writes", [("data/shards.py", "append_frames", "cum"), ("data/shards.py", "append_rows", "cum"),
                      ("data/shards.py", "append_faces", "cum"), ("data/shards.py", "write", "cum"),
                      ("data/shards.py", "__exit__", "cum")]),
]  # fmt: skip


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _qualname_matches(func: tuple[str, int, str], suffix: str, name: str, code_names: dict) -> bool:
    filename, line, fname = func
    if suffix == "~":
        return filename == "~" and fname == name
    if not filename.endswith(suffix):
        return False
    qual = code_names.get((filename, line), fname)
    return fname == name or qual.endswith("." + name) or qual == name


def _code_names() -> dict[tuple[str, int], str]:
    """(file, first line) -> qualified name of every function in the modules the stages name."""
    import inspect

    from mmemo.data import shards
    from mmemo.features import audio, detector
    from mmemo.media import grid, picture

    out = {}
    for mod in (grid, audio, detector, picture, clip_mod, shards):
        for _, cls in inspect.getmembers(mod, inspect.isclass):
            if cls.__module__ != mod.__name__:
                continue
            for attr, fn in vars(cls).items():
                code = getattr(fn, "__code__", None)
                if code is not None:
                    out[(code.co_filename, code.co_firstlineno)] = f"{cls.__name__}.{attr}"
    return out


class _InLine:
    """A stand-in for the shard writer's one-thread pool that runs each job at once, in the caller's thread."""

    def __init__(self, *a, **kw) -> None:
        pass

    def submit(self, fn, *a, **kw) -> Future:
        f: Future = Future()
        try:
            f.set_result(fn(*a, **kw))
        except BaseException as e:
            f.set_exception(e)
        return f

    def shutdown(self, wait: bool = True) -> None:
        pass


def profile_clip(path: Path, faces: bool, threads: int) -> dict:
    """Stage CPU seconds of one extraction of ``path`` (see the module docstring)."""
    original = clip_mod.FaceStream.__init__

    def in_line(self, *a, **kw):  # the tracker in the caller's thread: its CPU lands on its own functions
        kw["background"] = False
        original(self, *a, **kw)

    clip_mod.FaceStream.__init__ = in_line
    pool = shards_mod.ThreadPoolExecutor
    shards_mod.ThreadPoolExecutor = _InLine  # the compression of frames and crops in line: it lands on the writes
    out = Path(tempfile.mkdtemp(prefix="mmemo-profile-"))
    try:
        (out / "shards").mkdir()
        src = ClipSource(path.stem, path.resolve())
        cfg = ExtractConfig(faces=faces)
        extract_clip(src, src.path.parent, out, cfg, None, "warm-up", threads=threads)  # imports, detector, caches
        shutil.rmtree(out / "shards")
        (out / "shards").mkdir()
        prof = cProfile.Profile(time.process_time)
        c0, t0 = _cpu(), time.perf_counter()
        prof.enable()
        rec = extract_clip(src, src.path.parent, out, cfg, None, "profiled", threads=threads)
        prof.disable()
        cpu, wall = _cpu() - c0, time.perf_counter() - t0
    finally:
        clip_mod.FaceStream.__init__ = original
        shards_mod.ThreadPoolExecutor = pool
        shutil.rmtree(out, ignore_errors=True)
    if rec.status != "ok":
        raise SystemExit(f"{path}: extraction failed: {rec.error}")
    stats = pstats.Stats(prof).stats
    names = _code_names()
    total = sum(tt for _, _, tt, _, _ in stats.values())
    sec: dict[str, float] = {}
    for stage, parts in STAGES:
        sec[stage] = 0.0
        for suffix, name, kind in parts:
            for func, (_, _, tt, ct, _) in stats.items():
                if _qualname_matches(func, suffix, name, names):
                    sec[stage] += ct if kind == "cum" else tt

    # the face rows' writes are made inside the tracker's calls (its chunk sink): a part of "shard writes"
    def cum(name: str) -> float:
        return sum(ct for func, (_, _, _, ct, _) in stats.items() if _qualname_matches(func, "data/shards.py", name,
                                                                                        names))  # fmt: skip

    faces_w, feats_w = cum("append_faces"), cum("append_rows")
    sec["audio"] -= feats_w
    sec["faces: tracker"] -= sec["faces: detector input"] + sec["faces: detector"] + sec["faces: crops"] + faces_w
    sec["other"] = total - sum(sec.values())
    media_s = rec.duration or 0.0
    return {"path": path, "faces": faces, "cpu": cpu, "wall": wall, "profiled": total, "media_s": media_s,
            "rows": rec.frames, "stages": sec}  # fmt: skip


def report(r: dict) -> None:
    per_min = 60.0 / max(r["media_s"], 1e-9)
    print(f"\n{r['path'].name} (faces {'on' if r['faces'] else 'off'}): {r['media_s']:.1f} media s, {r['rows']} rows; "
          f"process CPU {r['cpu']:.2f} s (profiled {r['profiled']:.2f} s) = {r['cpu'] * per_min:.2f} CPU s per media "
          f"minute, {r['media_s'] / max(r['cpu'], 1e-9):.1f}x real time per core")  # fmt: skip
    print(f"  {'stage':24s} {'CPU s':>7s} {'s/media min':>11s} {'share':>6s}")
    for stage, s in r["stages"].items():
        print(f"  {stage:24s} {s:7.2f} {s * per_min:11.2f} {100 * s / max(r['profiled'], 1e-9):5.0f}%")


def profile_clips(paths: list[Path], settings: list[bool], threads: int = 1, each=None) -> dict[bool, dict[str, float]]:
    """CPU seconds per media minute of each stage and of the whole process ("whole process"), over all ``paths``,
    for each faces setting; ``each`` (optional) sees every clip's result (``profile_clip``) as it comes."""
    totals: dict[bool, dict[str, float]] = {f: {} for f in settings}
    for path in paths:
        for faces in settings:
            r = profile_clip(path, faces, threads)
            if each is not None:
                each(r)
            t = totals[faces]
            for k, v in {**r["stages"], "whole process": r["cpu"], "media_s": r["media_s"]}.items():
                t[k] = t.get(k, 0.0) + v
    return {f: {k: v * 60 / t["media_s"] for k, v in t.items() if k != "media_s"} for f, t in totals.items()}


def format_table(per_minute: dict[bool, dict[str, float]]) -> str:
    """The stages down, the faces settings across (``profile_clips``'s figures)."""
    settings = list(per_minute)
    lines = [
        f"{'CPU s per media minute':28s} " + " ".join(f"{'faces ' + ('on' if f else 'off'):>10s}" for f in settings)
    ]
    for k in per_minute[settings[0]]:
        lines.append(f"{k:28s} " + " ".join(f"{per_minute[f][k]:10.2f}" for f in settings))
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("clips", nargs="+", type=Path, help="media files (extracted one at a time, nothing kept)")
    ap.add_argument("--faces", choices=("on", "off", "both"), default="both")
    ap.add_argument("--threads", type=int, default=1, help="decoder threads (default 1: see the docstring)")
    args = ap.parse_args()
    for path in args.clips:
        if not path.is_file():
            sys.exit(f"{path}: no such file")
    settings = {"on": [True], "off": [False], "both": [False, True]}[args.faces]
    per_minute = profile_clips(args.clips, settings, args.threads, each=report)
    print("\nall clips:")
    print(format_table(per_minute))


if __name__ == "__main__":
    main()
