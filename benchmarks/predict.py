"""Benchmark `mmemo predict`: real-time factor by stage, and live-stream latency; prints figures only.

    python benchmarks/predict.py [--work /tmp/mmemo-predict-bench] [--sections 512,720p] [--clip FILE]
                                 [--repeat 1] [--hd-repeat 1] [--model-repeat 3] [--no-stream]
                                 [--device cpu|cuda|both]
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
   ``infer``, which embeds each row once and encodes the windows from slices). The whole ``predict_clip`` runs the
   face tracker in a thread beside the decoding and the features in the same pass, so its time is not the sum.
   Target: RTF <= 0.1. Beside them, measured in the same run: "model, per window (before)", the whole model on
   every window (``infer(..., embed_once=False)``), and "predict_clip (before)", prediction as it was before issue
   15 (``featurise_in_memory``: the clip held at 224 px, then the per-window model).
4. ``--stream`` on the same clip read at its natural pace (``stream_predict(..., realtime=True)``, hop 0.5 s,
   context 10 s): latency from the arrival of a hop's newest row (its frame and audio decoded) to the prediction,
   median and p95 over the hops (target p95 <= 0.5 s); the same per row (every row waits for the end of its hop
   too, so this is about hop / 2 more); hops dropped; then the same with the whole model rerun on the context
   every hop (``embed_once=False``, before issue 15) instead of the ring buffer of row embeddings; then both with
   the file read as fast as it decodes and every hop predicted (no drops): wall and CPU seconds per media second,
   the work a live source asks for (wall < 1: the machine keeps up with every hop).
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
   dropped, and the CPU seconds it used per media second (the share of the machine a live 720p source takes);
   after (the ring buffer of row embeddings) and before (the model rerun on the whole context every hop).

Section "reuse" (the model's own cost, before and after issue 15's changes, 720p, faces model):

9. The 120-s clip decoded once; then, alternately ``--model-repeat`` times: ``infer`` with the whole model per
   window and with each row embedded once, and the 30-s clip streamed with every hop predicted, without and with
   the ring buffer of row embeddings. CPU seconds per media second and their ratio; ``--threads 1`` keeps a second
   torch thread from spinning on a busy machine.

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
# Measured in the same run for comparison: the model run per window (each row's frame CNN once per window that holds
# it, ``infer(..., embed_once=False)``) and `mmemo predict` as it was before issue 15 (the clip held at its stored
# size, then that model). Printed beside their twins, not part of the sum.
BEFORE = ("model_before", "predict_clip_before")
LABELS = {"model_before": "model, per window (before)", "predict_clip_before": "predict_clip (before)"}


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


def bench_rtf(run, clip: Path, repeat: int, warm_up: bool = True, model_repeat: int = 1) -> dict:
    """Median wall and CPU seconds per stage over ``repeat`` runs (after one warm-up run of the whole predict
    unless ``warm_up`` is False: the caller warmed up on another clip); the model stage and its per-window twin
    ``model_repeat`` times each per run."""
    from mmemo.features.audio import compute_features
    from mmemo.features.clip import FaceStream, featurise_in_memory, join_faces
    from mmemo.media.decode import decode_media
    from mmemo.pipeline.predict import infer, model_inputs, predict_clip, prepare_inputs

    cfg = run.extract_cfg
    sync = run.device.type == "cuda"
    if warm_up:
        predict_clip(run, clip)  # imports, first torch call, page cache
    wall: dict[str, list[float]] = {k: [] for k in STAGES + BEFORE}
    cpu: dict[str, list[float]] = {k: [] for k in STAGES + BEFORE}
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

        def model(feats=feats, dec=dec, faces=faces, embed_once=True):
            inputs = prepare_inputs(run, feats, dec.frames, dec.audio_mask, dec.video_mask, "bench", faces)
            infer(run, *inputs, embed_once=embed_once)
            if sync:
                import torch

                torch.cuda.synchronize()

        for _ in range(model_repeat):  # alternately, so that a busy spell of the machine falls on both
            _, t, c = timed(model, embed_once=False)
            record("model_before", t, c)
            _, t, c = timed(model)
            record("model", t, c)
        del dec, feats, faces

        def predict_before():  # predict_clip before issue 15 (a run without imports or post-processing)
            arrays = featurise_in_memory(clip, run.input_cfg)
            infer(run, *model_inputs(run, arrays, str(clip)), embed_once=False)

        _, t, c = timed(predict_before)
        record("predict_clip_before", t, c)
        _, t, c = timed(predict_clip, run, clip)
        record("predict_clip", t, c)
    media_s = n_rows / cfg.fps
    out = {"media_s": media_s}
    for k in STAGES + BEFORE:
        out[k], out[f"cpu_{k}"] = statistics.median(wall[k]), statistics.median(cpu[k])
        out[f"rtf_{k}"] = out[k] / media_s
    return out


def bench_every_hop(run, clip: Path, embed_once: bool = True) -> dict:
    """``--stream`` on ``clip`` read as fast as it decodes, every hop predicted: the work a live source asks for
    without drops, as wall and CPU seconds per media second (wall < 1: the machine keeps up with every hop)."""
    from mmemo.pipeline.stream import stream_predict

    c0 = time.process_time()
    stats = stream_predict(run, str(clip), lambda p: None, hop_s=0.5, context_s=10.0, embed_once=embed_once)
    media = stats.rows / run.extract_cfg.fps
    return {"wall_per_media_s": stats.wall_s / media, "cpu_per_media_s": (time.process_time() - c0) / media}


def say_every_hop(after: dict, before: dict) -> None:
    say(f"stream, every hop (the file as fast as it decodes): {after['wall_per_media_s']:.2f} wall / "
        f"{after['cpu_per_media_s']:.2f} CPU s per media s; whole model every hop (before): "
        f"{before['wall_per_media_s']:.2f} / {before['cpu_per_media_s']:.2f} (CPU ratio "
        f"{after['cpu_per_media_s'] / before['cpu_per_media_s']:.2f})")  # fmt: skip


def every_hop_row(label: str, after: dict, before: dict) -> str:
    return (f"| {label} | stream with every hop: wall / CPU s per media s | {after['wall_per_media_s']:.2f} / "
            f"{after['cpu_per_media_s']:.2f} (before: {before['wall_per_media_s']:.2f} / "
            f"{before['cpu_per_media_s']:.2f}) | wall < 1 |")  # fmt: skip


def bench_stream(run, clip: Path, embed_once: bool = True) -> dict:
    """``--stream`` on ``clip`` at its natural pace; ``embed_once`` False: the whole model on the context every hop
    (before issue 15)."""
    import numpy as np

    from mmemo.pipeline.stream import stream_predict

    c0 = time.process_time()
    stats = stream_predict(run, str(clip), lambda p: None, hop_s=0.5, context_s=10.0, realtime=True,
                           embed_once=embed_once)  # fmt: skip
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


def say_stream(stream: dict, label: str = "") -> None:
    say(
        f"stream at natural pace{label}: {stream['predictions']} predictions, {stream['dropped']} dropped, "
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


def report(device: str, rtf: dict, stream: dict | None, before: dict | None = None) -> list[str]:
    say(f"\n## {device}\n")
    say(f"media {rtf['media_s']:.1f} s; median seconds (real-time factor):")
    for k in STAGES + BEFORE:
        say(f"  {LABELS.get(k, k):27s} {rtf[k]:7.2f} s  RTF {rtf[f'rtf_{k}']:.3f}  (CPU {rtf[f'cpu_{k}']:.2f} s)")
    target = "meets" if rtf["rtf_predict_clip"] <= 0.1 else "misses"
    say(f"  predict_clip RTF {rtf['rtf_predict_clip']:.3f} {target} the 0.1 target")
    parts = ", ".join(f"{k} {rtf[f'rtf_{k}']:.3f}" for k in STAGES[:-1])
    rows = [f"| {device} | predict RTF | {rtf['rtf_predict_clip']:.3f} ({parts}) | <= 0.1 |",
            f"| {device} | predict RTF before issue 15 | {rtf['rtf_predict_clip_before']:.3f} (model per window "
            f"{rtf['rtf_model_before']:.3f}) | |"]  # fmt: skip
    if stream is not None:
        say_stream(stream)
        rows.append(stream_row(device, stream))
    if before is not None:
        say_stream(before, ", whole model every hop (before)")
        rows.append(stream_row(f"{device}, before", before))
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
        rtf = bench_rtf(run, clip, args.repeat, model_repeat=args.model_repeat)
        stream = None if args.no_stream else bench_stream(run, clip)
        before = None if args.no_stream else bench_stream(run, clip, embed_once=False)
        table += report(name, rtf, stream, before)
        if not args.no_stream:
            hops = bench_every_hop(run, clip), bench_every_hop(run, clip, embed_once=False)
            say_every_hop(*hops)
            table.append(every_hop_row(name, *hops))
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
    stream = before = None
    for visual in ("faces", "frames"):
        run_dir = args.work / f"run-default-untrained-{visual}"
        save_untrained_run(run_dir, visual=visual)
        run = load_run(run_dir)
        run.device = torch.device("cpu")
        run.model.to(run.device)
        a = bench_rtf(run, short, args.hd_repeat, model_repeat=args.model_repeat)  # warms up on the short clip
        b = bench_rtf(run, long_, args.hd_repeat, warm_up=False, model_repeat=args.model_repeat)
        name = "faces" if visual == "faces" else "whole frames"
        say(f"\n## 720p, model on {name}: seconds (wall / CPU), median of {args.hd_repeat}\n")
        say(f"  {'stage':27s} {'30 s clip':>15s} {'120 s clip':>15s}   marginal RTF wall / CPU")
        for k in STAGES[:3] + ("model_before", "model", "predict_clip_before", "predict_clip"):
            if visual == "frames" and k == "faces":
                continue
            mw, mc = (b[k] - a[k]) / span, (b[f"cpu_{k}"] - a[f"cpu_{k}"]) / span
            label = LABELS.get(k, k)
            say(f"  {label:27s} {a[k]:6.2f} / {a[f'cpu_{k}']:6.2f} {b[k]:6.2f} / {b[f'cpu_{k}']:6.2f}   "
                f"{mw:.3f} / {mc:.3f}")  # fmt: skip
            label = f"**{label}**" if k == "predict_clip" else label
            table.append(f"| {name} | {label} | {a[k]:.2f} / {a[f'cpu_{k}']:.2f} | {b[k]:.2f} / "
                         f"{b[f'cpu_{k}']:.2f} | {mw:.3f} / {mc:.3f} |")  # fmt: skip
        marginal = (b["predict_clip"] - a["predict_clip"]) / span
        cpu_now = (b["cpu_predict_clip"] - a["cpu_predict_clip"]) / span
        cpu_then = (b["cpu_predict_clip_before"] - a["cpu_predict_clip_before"]) / span
        verdict = "meets" if marginal <= 0.1 else "misses"
        say(f"  predict_clip marginal RTF {marginal:.3f} {verdict} the 0.1 target (goal 0.05); marginal CPU "
            f"{cpu_now:.3f} s per media s, {cpu_then:.3f} before (ratio {cpu_now / cpu_then:.2f})")  # fmt: skip
        # What the clip's pictures take in memory (uint8 RGB; crops only for the faces model): arithmetic on sizes.
        ec, n_rows, faces = run.extract_cfg, round(b["media_s"] * run.extract_cfg.fps), int(run.input_cfg.faces)
        now = n_rows * run.model_cfg.video_size**2 * 3 * (1 + faces) / 2**20
        then = n_rows * (ec.frame_size**2 + faces * ec.face_size**2) * 3 / 2**20
        say(f"  frames{' and crops' * faces} held for the 120-s clip: {now:.0f} MB at the model's "
            f"{run.model_cfg.video_size} px, {then:.0f} MB before (at {ec.frame_size} px)")  # fmt: skip
        if visual == "faces" and not args.no_stream:
            stream = bench_stream(run, short)
            say_stream(stream)
            before = bench_stream(run, short, embed_once=False)
            say_stream(before, ", whole model every hop (before)")
            hops = bench_every_hop(run, short), bench_every_hop(run, short, embed_once=False)
            say_every_hop(*hops)
    if stream is not None:
        table += ["", "| source | measure | figure | target |", "|---|---|---|---|", stream_row("720p, faces", stream),
                  stream_row("720p, faces, before", before), every_hop_row("720p, faces", *hops)]  # fmt: skip
    return table


def section_reuse(args) -> list[str]:
    """Section reuse: the model's own cost before and after issue 15, nothing else timed in between. The 720p
    clips decoded once (faces model); then, alternately ``--model-repeat`` times, ``infer`` with the whole model
    per window and with each row embedded once on the 120-s clip's inputs, and the 30-s clip streamed with every
    hop predicted, the whole model rerun on the context and the ring buffer of embeddings. CPU seconds of the
    process; with ``--threads 1`` no second torch thread spins while it waits for a busy core."""
    import numpy as np
    import torch

    from mmemo.features.clip import featurise_in_memory
    from mmemo.pipeline.predict import infer, load_run, model_inputs

    short, long_ = build_hd_clips(args.work)
    run_dir = args.work / "run-default-untrained-faces"
    save_untrained_run(run_dir, visual="faces")
    run = load_run(run_dir)
    run.device = torch.device("cpu")
    inputs = model_inputs(run, featurise_in_memory(long_, run.input_cfg), str(long_))
    media = len(inputs[2]) / run.extract_cfg.fps
    infer(run, *inputs)  # first calls
    cpu: dict[str, list[float]] = {"model_before": [], "model": [], "stream_before": [], "stream": []}
    ys = {}
    for _ in range(args.model_repeat):
        for key, once in (("model_before", False), ("model", True)):
            ys[key], _, c = timed(infer, run, *inputs, embed_once=once)
            cpu[key].append(c / media)
        for key, once in (("stream_before", False), ("stream", True)):
            cpu[key].append(bench_every_hop(run, short, embed_once=once)["cpu_per_media_s"])
    med = {k: statistics.median(v) for k, v in cpu.items()}
    diff = float(np.abs(ys["model"] - ys["model_before"]).max())
    say(f"\n## Model cost before / after (faces model, torch {torch.get_num_threads()} thread(s), median of "
        f"{args.model_repeat}, CPU s per media s)\n")  # fmt: skip
    say(f"  infer on the 120-s clip: {med['model_before']:.3f} per window, {med['model']:.3f} embedded once "
        f"(ratio {med['model'] / med['model_before']:.2f}; max difference {diff:.1e}); runs {cpu['model_before']} "
        f"/ {cpu['model']}")  # fmt: skip
    say(f"  stream of the 30-s clip, every hop (decoding and faces included): {med['stream_before']:.3f} whole "
        f"model every hop, {med['stream']:.3f} ring buffer (ratio {med['stream'] / med['stream_before']:.2f}); "
        f"runs {cpu['stream_before']} / {cpu['stream']}")  # fmt: skip
    return ["| measure (CPU s per media s) | before | after | ratio |", "|---|---:|---:|---:|",
            f"| infer, 120-s 720p clip | {med['model_before']:.3f} | {med['model']:.3f} | "
            f"{med['model'] / med['model_before']:.2f} |",
            f"| stream, every hop, 30-s 720p clip | {med['stream_before']:.3f} | {med['stream']:.3f} | "
            f"{med['stream'] / med['stream_before']:.2f} |"]  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "mmemo-predict-bench")
    ap.add_argument("--sections", default="512,720p",
                    help="comma-separated: 512 (the looped 512x512 clip), 720p, reuse (the model alone)")  # fmt: skip
    ap.add_argument("--threads", type=int, default=0, help="torch's intra-op threads (0: its default)")
    ap.add_argument("--clip", type=Path, help="section 512: use this media file instead of the looped real clip")
    ap.add_argument("--repeat", type=int, default=1, help="section 512: runs per stage (median)")
    ap.add_argument("--hd-repeat", type=int, default=1, help="section 720p: runs per stage and clip (median)")
    ap.add_argument("--model-repeat", type=int, default=3,
                    help="runs of the model stage and of its per-window twin, alternately (median)")  # fmt: skip
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
    unknown = set(sections) - {"512", "720p", "reuse"}
    if unknown or not sections:
        sys.exit(f"--sections {args.sections!r}: choose from 512, 720p, reuse")

    import torch

    from mmemo import __version__

    if args.threads:
        torch.set_num_threads(args.threads)
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
    if "reuse" in sections:
        summary += ["", "### The model's cost before and after issue 15 (720p, CPU)", "", *section_reuse(args)]
    say("\n## Markdown summary\n")
    say("\n".join(summary))


if __name__ == "__main__":
    main()
