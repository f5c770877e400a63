"""Benchmark `mmemo predict`: real-time factor by stage, and live-stream latency; prints figures only.

    python benchmarks/predict.py [--work /tmp/mmemo-predict-bench] [--sections 512,720p] [--clip FILE]
                                 [--repeat 1] [--hd-repeat 1] [--no-stream] [--device cpu|cuda|both]
                                 [--visual faces|frames]

Section "512" (today's figures, the README's first table):

1. The clip (built once, cached under --work, with the ffmpeg command line): a real talking-face recording of
   ../shared/realdata (HDTF, WDA_AlexandriaOcasioCortez_000.mp4, 512x512 H.264 + AAC) looped to 60 s, video
   stream copied, audio re-encoded to AAC. ``--clip FILE`` uses another file instead.
2. The model: the default ``ModelConfig`` (hidden 256, 4 layers, 8 heads, cross-modal attention, frame CNN on
   56x56 frames, audio + video) with the default features, untrained (timing does not depend on the weights),
   saved as a run directory exactly as `mmemo train` saves one, then loaded with ``load_run``. ``--visual faces``
   (the default) makes it a model trained on faces: predict and stream then find, follow and align the face.
3. Real-time factor (wall time / media time) of ``predict_clip``, whole and split by stage, median of --repeat:
   decode (PyAV demux + decode + resize onto the 25 fps grid, ``decode_media``), faces (the same decode with the
   face tracker fed every row in line, less the decode alone), audio features (``compute_features`` on the
   decoded audio), model (frame pooling, standardisation and the windowed model, ``prepare_inputs`` +
   ``infer``). The whole ``predict_clip`` runs the face tracker in a thread beside the decoding and the features
   in the same pass, so its time is not the sum. Target: RTF <= 0.1.
4. ``--stream`` on the same clip read at its natural pace (``stream_predict(..., realtime=True)``, hop 0.5 s,
   context 10 s): latency from the arrival of a hop's newest row (its frame and audio decoded) to the prediction,
   median and p95 over the hops (target p95 <= 0.5 s); the same per row (every row waits for the end of its hop
   too, so this is about hop / 2 more); hops dropped.
5. ``--device both`` (the default) runs 3 and 4 on the GPU as well when there is one: the model runs on it, decoding
   and features stay on the CPU.

Section "720p" (issue 15: where users' time goes), CPU only:

6. Two clips built the way ``benchmarks/extract.py`` builds its HD_PLAN (its helpers, imported): the same HDTF
   recording scaled and padded to 1280x720, re-encoded to H.264 + AAC, looped to 30 s and to 120 s.
7. For the faces model and the whole-frame model, ``predict_clip`` and its stages as in 3 on both clips (median of
   --hd-repeat), wall seconds and CPU seconds (every thread of the process), and the *marginal* real-time factor
   (seconds of the 120-s clip - seconds of the 30-s clip) / 90 s, which leaves out start-up costs. Targets:
   marginal RTF <= 0.1 (goal 0.05).
8. ``--stream`` with the faces model on the 30-s 720p clip at its natural pace: latency median / p95, hops
   dropped, and the CPU seconds it used per media second (the share of the machine a live 720p source takes).

Ends with a Markdown summary for the README. Wall seconds on a shared machine are noisy; CPU seconds much less so.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import cpu_model, save_untrained_run

SOURCE = "sadtalker_hdtf_talking_faces/WDA_AlexandriaOcasioCortez_000.mp4"
SECONDS = 60
# Section 720p: (file, source under realdata, media seconds, recipe of benchmarks/extract.py's build_dir)
HD_SHORT, HD_LONG = 30, 120
HD_PLAN = [(f"aoc_720p_{s}s.mp4", SOURCE, s, "720p") for s in (HD_SHORT, HD_LONG)]
STAGES = ("decode", "faces", "features", "model", "predict_clip")


def say(msg: str = "") -> None:
    print(msg, flush=True)


def build_clip(work: Path) -> Path:
    """SOURCE looped to SECONDS (video copy, AAC audio), made once with the ffmpeg command line."""
    out = work / f"talking_face_{SECONDS}s.mp4"
    if out.exists():
        return out
    src = Path(__file__).resolve().parents[2] / "shared" / "realdata" / SOURCE
    if not src.exists():
        sys.exit(f"real recording not found: {src} (expected ../shared/realdata beside the checkout)")
    if shutil.which("ffmpeg") is None:
        sys.exit("the ffmpeg command line is needed to build the clip (apt-get install -y ffmpeg), or give --clip")
    work.mkdir(parents=True, exist_ok=True)
    part = work / ("part-" + out.name)
    cmd = ["ffmpeg", "-v", "error", "-nostdin", "-y", "-stream_loop", "-1", "-i", str(src), "-t", str(SECONDS),
           "-map", "0:v:0", "-map", "0:a:0", "-c:v", "copy", "-af", "aresample=async=1", "-c:a", "aac",
           "-b:a", "128k", "-movflags", "+faststart", str(part)]  # fmt: skip
    subprocess.run(cmd, check=True)
    part.replace(out)
    return out


def build_hd_clips(work: Path) -> tuple[Path, Path]:
    """The 30-s and 120-s 720p clips of HD_PLAN, made once with benchmarks/extract.py's recipe (1280x720 H.264 +
    AAC, scaled and padded, looped), so both benchmarks measure the same kind of footage."""
    if shutil.which("ffmpeg") is None:
        sys.exit("the ffmpeg command line is needed to build the 720p clips (apt-get install -y ffmpeg)")
    from extract import build_dir, realdata_dir  # imports h5py and mmemo's schema: only when this section runs

    (work / "tmp").mkdir(parents=True, exist_ok=True)
    short, long_ = build_dir(work / "hd", HD_PLAN, realdata_dir(), work / "tmp", False)
    return short.path, long_.path


def timed(fn, *args, **kw):
    """(fn's result, wall seconds, CPU seconds of every thread of this process)."""
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn(*args, **kw)
    return out, time.perf_counter() - t0, time.process_time() - c0


def bench_rtf(run, clip: Path, repeat: int, warm_up: bool = True) -> dict:
    """Median wall and CPU seconds per stage over ``repeat`` runs (after one warm-up run of the whole predict
    unless ``warm_up`` is False: the caller warmed up on another clip)."""
    from mmemo.features.audio import compute_features
    from mmemo.features.clip import FaceStream, join_faces
    from mmemo.media.decode import decode_media
    from mmemo.pipeline.predict import infer, predict_clip, prepare_inputs

    cfg = run.extract_cfg
    sync = run.device.type == "cuda"
    if warm_up:
        predict_clip(run, clip)  # imports, first torch call, page cache
    wall: dict[str, list[float]] = {k: [] for k in STAGES}
    cpu: dict[str, list[float]] = {k: [] for k in STAGES}
    n_rows = 0

    def record(stage: str, t: float, c: float) -> None:
        wall[stage].append(t)
        cpu[stage].append(c)

    for _ in range(repeat):
        dec, t, c = timed(decode_media, clip, fps=cfg.fps, sample_rate=cfg.sample_rate, size=cfg.frame_size,
                          aspect=cfg.aspect)  # fmt: skip
        record("decode", t, c)
        n_rows = dec.n_frames
        faces = None
        if run.input_cfg.faces:  # the face stage: decoding with the tracker on every row, less decoding alone
            chunks = []
            stream = FaceStream(run.input_cfg, chunks.append)

            def decode_with_faces(stream=stream):
                decode_media(clip, fps=cfg.fps, sample_rate=cfg.sample_rate, size=cfg.frame_size, aspect=cfg.aspect,
                             on_picture=stream.push)  # fmt: skip
                stream.finish()

            _, t, c = timed(decode_with_faces)
            record("faces", t - wall["decode"][-1], c - cpu["decode"][-1])
            faces = join_faces(chunks)
            faces = (faces.crops, faces.mask)
        else:
            record("faces", 0.0, 0.0)
        feats, t, c = timed(compute_features, dec.audio, cfg, dec.n_frames)
        record("features", t, c)

        def model(feats=feats, dec=dec, faces=faces):
            infer(run, *prepare_inputs(run, feats, dec.frames, dec.audio_mask, dec.video_mask, "bench", faces))
            if sync:
                import torch

                torch.cuda.synchronize()

        _, t, c = timed(model)
        record("model", t, c)
        del dec, feats, faces
        _, t, c = timed(predict_clip, run, clip)
        record("predict_clip", t, c)
    media_s = n_rows / cfg.fps
    out = {"media_s": media_s}
    for k in STAGES:
        out[k], out[f"cpu_{k}"] = statistics.median(wall[k]), statistics.median(cpu[k])
        out[f"rtf_{k}"] = out[k] / media_s
    return out


def bench_stream(run, clip: Path) -> dict:
    import numpy as np

    from mmemo.pipeline.stream import stream_predict

    c0 = time.process_time()
    stats = stream_predict(run, str(clip), lambda p: None, hop_s=0.5, context_s=10.0, realtime=True)
    cpu = time.process_time() - c0
    lat, rows = np.array(stats.latencies), np.array(stats.row_latencies)
    return {
        "predictions": stats.predictions,
        "dropped": stats.dropped,
        "median": float(np.median(lat)),
        "p95": float(np.percentile(lat, 95)),
        "max": float(lat.max()),
        "row_median": float(np.median(rows)),
        "row_p95": float(np.percentile(rows, 95)),
        "lag": stats.decoder_lag_s,
        "wall": stats.wall_s,
        "cpu_per_media_s": cpu / (stats.rows / run.extract_cfg.fps) if stats.rows else float("nan"),
    }


def say_stream(stream: dict) -> None:
    say(
        f"stream at natural pace: {stream['predictions']} predictions, {stream['dropped']} dropped, "
        f"latency (newest row -> prediction) median {stream['median']:.3f} s, p95 {stream['p95']:.3f} s, max "
        f"{stream['max']:.3f} s; per row (incl. waiting for the hop's end) median {stream['row_median']:.3f} s, "
        f"p95 {stream['row_p95']:.3f} s; decoder lag max {stream['lag']:.3f} s; wall {stream['wall']:.1f} s; "
        f"{stream['cpu_per_media_s']:.2f} CPU s per media s (warm-up included)"
    )


def stream_row(label: str, stream: dict) -> str:
    return (
        f"| {label} | stream latency median / p95 | {stream['median']:.3f} / {stream['p95']:.3f} s "
        f"({stream['dropped']} of {stream['predictions'] + stream['dropped']} hops dropped; per row "
        f"{stream['row_median']:.2f} / {stream['row_p95']:.2f} s; {stream['cpu_per_media_s']:.2f} CPU s per "
        "media s) | p95 <= 0.5 s |"
    )


def report(device: str, rtf: dict, stream: dict | None) -> list[str]:
    say(f"\n## {device}\n")
    say(f"media {rtf['media_s']:.1f} s; median seconds (real-time factor):")
    for k in STAGES:
        say(f"  {k:13s} {rtf[k]:7.2f} s  RTF {rtf[f'rtf_{k}']:.3f}  (CPU {rtf[f'cpu_{k}']:.2f} s)")
    target = "meets" if rtf["rtf_predict_clip"] <= 0.1 else "misses"
    say(f"  predict_clip RTF {rtf['rtf_predict_clip']:.3f} {target} the 0.1 target")
    parts = ", ".join(f"{k} {rtf[f'rtf_{k}']:.3f}" for k in STAGES[:-1])
    rows = [f"| {device} | predict RTF | {rtf['rtf_predict_clip']:.3f} ({parts}) | <= 0.1 |"]
    if stream is not None:
        say_stream(stream)
        rows.append(stream_row(device, stream))
    return rows


def section_512(args, run_dir: Path, gpu: str | None) -> list[str]:
    """Section 512: the looped 512x512 clip (or --clip) on the CPU and, with --device, the GPU."""
    import torch

    from mmemo.pipeline.predict import load_run

    clip = args.clip or build_clip(args.work)
    say(f"\n# 512x512: {clip} ({clip.stat().st_size / 2**20:.1f} MiB)")
    devices = []
    if args.device in ("cpu", "both"):
        devices.append("cpu")
    if args.device in ("cuda", "both") and gpu:
        devices.append("cuda")
    elif args.device == "cuda":
        sys.exit("--device cuda: no GPU")
    table = []
    for dev in devices:
        run = load_run(run_dir)
        run.device = torch.device(dev)
        run.model.to(run.device)
        name = "CPU" if dev == "cpu" else f"GPU ({gpu}, bf16 autocast)"
        rtf = bench_rtf(run, clip, args.repeat)
        stream = None if args.no_stream else bench_stream(run, clip)
        table += report(name, rtf, stream)
    return table


def section_720p(args) -> list[str]:
    """Section 720p: marginal real-time factor (120-s minus 30-s clip) per stage for both models, then the stream."""
    import torch

    from mmemo.pipeline.predict import load_run

    short, long_ = build_hd_clips(args.work)
    say(f"\n# 720p: {short.name} and {long_.name} (1280x720 H.264 + AAC, under {short.parent})")
    span = HD_LONG - HD_SHORT
    table = ["| model | stage | 30 s clip: wall / CPU s | 120 s clip: wall / CPU s | marginal RTF wall / CPU |",
             "|---|---|---:|---:|---:|"]  # fmt: skip
    stream = None
    for visual in ("faces", "frames"):
        run_dir = args.work / f"run-default-untrained-{visual}"
        save_untrained_run(run_dir, visual=visual)
        run = load_run(run_dir)
        run.device = torch.device("cpu")
        run.model.to(run.device)
        a = bench_rtf(run, short, args.hd_repeat)  # warms up on the short clip
        b = bench_rtf(run, long_, args.hd_repeat, warm_up=False)
        name = "faces" if visual == "faces" else "whole frames"
        say(f"\n## 720p, model on {name}: seconds (wall / CPU), median of {args.hd_repeat}\n")
        say(f"  {'stage':13s} {'30 s clip':>15s} {'120 s clip':>15s}   marginal RTF wall / CPU")
        for k in STAGES:
            if visual == "frames" and k == "faces":
                continue
            mw, mc = (b[k] - a[k]) / span, (b[f"cpu_{k}"] - a[f"cpu_{k}"]) / span
            say(f"  {k:13s} {a[k]:6.2f} / {a[f'cpu_{k}']:6.2f} {b[k]:6.2f} / {b[f'cpu_{k}']:6.2f}   "
                f"{mw:.3f} / {mc:.3f}")  # fmt: skip
            table.append(f"| {name} | {k} | {a[k]:.2f} / {a[f'cpu_{k}']:.2f} | {b[k]:.2f} / {b[f'cpu_{k}']:.2f} | "
                         f"{mw:.3f} / {mc:.3f} |")  # fmt: skip
        marginal = (b["predict_clip"] - a["predict_clip"]) / span
        verdict = "meets" if marginal <= 0.1 else "misses"
        say(f"  predict_clip marginal RTF {marginal:.3f} {verdict} the 0.1 target (goal 0.05)")
        if visual == "faces" and not args.no_stream:
            stream = bench_stream(run, short)
            say_stream(stream)
    if stream is not None:
        table += ["", "| source | measure | figure | target |", "|---|---|---|---|", stream_row("720p, faces", stream)]
    return table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "mmemo-predict-bench")
    ap.add_argument("--sections", default="512,720p", help="comma-separated: 512 (the looped 512x512 clip), 720p")
    ap.add_argument("--clip", type=Path, help="section 512: use this media file instead of the looped real clip")
    ap.add_argument("--repeat", type=int, default=1, help="section 512: runs per stage (median)")
    ap.add_argument("--hd-repeat", type=int, default=1, help="section 720p: runs per stage and clip (median)")
    ap.add_argument("--no-stream", action="store_true", help="skip the natural-pace stream measurements")
    ap.add_argument("--device", choices=["cpu", "cuda", "both"], default="both", help="section 512")
    ap.add_argument(
        "--visual",
        choices=["faces", "frames"],
        default="faces",
        help="section 512: what the model reads: faces (predict and stream find and align them) or whole frames",
    )
    args = ap.parse_args()
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = set(sections) - {"512", "720p"}
    if unknown or not sections:
        sys.exit(f"--sections {args.sections!r}: choose from 512, 720p")

    import torch

    from mmemo import __version__

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    say("# mmemo predict benchmark\n")
    say(f"machine: {cpu_model()}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} "
        f"threads), mmemo {__version__}; GPU: {gpu or 'none'}")  # fmt: skip
    say("model: default ModelConfig, untrained")
    summary = []
    if "512" in sections:
        run_dir = args.work / f"run-default-untrained-{args.visual}"
        save_untrained_run(run_dir, visual=args.visual)
        table = ["| device | measure | figure | target |", "|---|---|---|---|"]
        summary += ["### 512x512 clip, 60 s", "", *table, *section_512(args, run_dir, gpu), ""]
    if "720p" in sections:
        summary += ["### 720p clips, 30 s and 120 s (CPU)", "", *section_720p(args)]
    say("\n## Markdown summary\n")
    say("\n".join(summary))


if __name__ == "__main__":
    main()
