"""Benchmark `mmemo predict`: real-time factor by stage, and live-stream latency; prints figures only.

    python benchmarks/predict.py [--work /tmp/mmemo-predict-bench] [--clip FILE] [--repeat 3] [--no-stream]
                                 [--device cpu|cuda|both] [--visual faces|frames]

1. The clip (built once, cached under --work, with the ffmpeg command line): a real talking-face recording of
   ../shared/realdata (HDTF, WDA_AlexandriaOcasioCortez_000.mp4, 512x512 H.264 + AAC) looped to 60 s, video
   stream copied, audio re-encoded to AAC. ``--clip FILE`` uses another file instead.
2. The model: the default ``ModelConfig`` (hidden 256, 4 layers, 8 heads, cross-modal attention, frame CNN on
   56x56 frames, audio + video) with the default features, untrained (timing does not depend on the weights),
   saved as a run directory exactly as `mmemo train` saves one, then loaded with ``load_run``. ``--visual faces``
   (the default) makes it a model trained on faces: predict and stream then find, follow and align the face.
3. Real-time factor (wall time / media time) of ``predict_clip``, whole and split by stage, median of --repeat:
   decode (PyAV demux + decode + resize onto the 25 fps grid, ``decode_media``), audio features
   (``compute_features`` on the decoded audio), model (frame pooling, standardisation and the windowed model,
   ``prepare_inputs`` + ``infer``). The whole ``predict_clip`` interleaves decode and features in one pass, so
   its time is not exactly the sum. Target: RTF <= 0.1.
4. ``--stream`` on the same clip read at its natural pace (``stream_predict(..., realtime=True)``, hop 0.5 s,
   context 10 s): latency from the arrival of a hop's newest row (its frame and audio decoded) to the prediction,
   median and p95 over the hops (target p95 <= 0.5 s); the same per row (every row waits for the end of its hop
   too, so this is about hop / 2 more); hops dropped.
5. ``--device both`` (the default) runs 3 and 4 on the GPU as well when there is one: the model runs on it, decoding
   and features stay on the CPU.
Ends with a Markdown summary for the README.
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


def timed(fn, *args, **kw):
    t0 = time.perf_counter()
    out = fn(*args, **kw)
    return out, time.perf_counter() - t0


def bench_rtf(run, clip: Path, repeat: int) -> dict:
    """Median seconds per stage over ``repeat`` runs (after one warm-up run of the whole predict)."""
    from mmemo.features.audio import compute_features
    from mmemo.features.clip import FaceStream, join_faces
    from mmemo.media.decode import decode_media
    from mmemo.pipeline.predict import infer, predict_clip, prepare_inputs

    cfg = run.extract_cfg
    sync = run.device.type == "cuda"
    pred, _ = timed(predict_clip, run, clip)  # warm-up: imports, first torch call, page cache
    media_s = len(pred.table) / cfg.fps
    stages: dict[str, list[float]] = {"decode": [], "faces": [], "features": [], "model": [], "predict_clip": []}
    for _ in range(repeat):
        dec, t = timed(decode_media, clip, fps=cfg.fps, sample_rate=cfg.sample_rate, size=cfg.frame_size,
                       aspect=cfg.aspect)  # fmt: skip
        stages["decode"].append(t)
        faces = None
        if run.input_cfg.faces:  # the face stage: decoding with the tracker on every row, less decoding alone
            chunks = []
            stream = FaceStream(run.input_cfg, chunks.append)
            _, t = timed(decode_media, clip, fps=cfg.fps, sample_rate=cfg.sample_rate, size=cfg.frame_size,
                         aspect=cfg.aspect, on_picture=stream.push)  # fmt: skip
            stream.finish()
            stages["faces"].append(t - stages["decode"][-1])
            faces = join_faces(chunks)
            faces = (faces.crops, faces.mask)
        else:
            stages["faces"].append(0.0)
        feats, t = timed(compute_features, dec.audio, cfg, dec.n_frames)
        stages["features"].append(t)
        t0 = time.perf_counter()
        infer(run, *prepare_inputs(run, feats, dec.frames, dec.audio_mask, dec.video_mask, "bench", faces))
        if sync:
            import torch

            torch.cuda.synchronize()
        stages["model"].append(time.perf_counter() - t0)
        _, t = timed(predict_clip, run, clip)
        stages["predict_clip"].append(t)
    med = {k: statistics.median(v) for k, v in stages.items()}
    return {"media_s": media_s, **med, **{f"rtf_{k}": v / media_s for k, v in med.items()}}


def bench_stream(run, clip: Path) -> dict:
    import numpy as np

    from mmemo.pipeline.stream import stream_predict

    stats = stream_predict(run, str(clip), lambda p: None, hop_s=0.5, context_s=10.0, realtime=True)
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
    }


def report(device: str, rtf: dict, stream: dict | None) -> list[str]:
    say(f"\n## {device}\n")
    say(f"media {rtf['media_s']:.1f} s; median seconds (real-time factor):")
    for k in ("decode", "faces", "features", "model", "predict_clip"):
        say(f"  {k:13s} {rtf[k]:7.2f} s  RTF {rtf[f'rtf_{k}']:.3f}")
    target = "meets" if rtf["rtf_predict_clip"] <= 0.1 else "misses"
    say(f"  predict_clip RTF {rtf['rtf_predict_clip']:.3f} {target} the 0.1 target")
    parts = ", ".join(f"{k} {rtf[f'rtf_{k}']:.3f}" for k in ("decode", "faces", "features", "model"))
    rows = [f"| {device} | predict RTF | {rtf['rtf_predict_clip']:.3f} ({parts}) | <= 0.1 |"]
    if stream is not None:
        say(
            f"stream at natural pace: {stream['predictions']} predictions, {stream['dropped']} dropped, "
            f"latency (newest row -> prediction) median {stream['median']:.3f} s, p95 {stream['p95']:.3f} s, max "
            f"{stream['max']:.3f} s; per row (incl. waiting for the hop's end) median {stream['row_median']:.3f} s, "
            f"p95 {stream['row_p95']:.3f} s; decoder lag max {stream['lag']:.3f} s; wall {stream['wall']:.1f} s"
        )
        rows.append(
            f"| {device} | stream latency median / p95 | {stream['median']:.3f} / {stream['p95']:.3f} s "
            f"({stream['dropped']} of {stream['predictions'] + stream['dropped']} hops dropped; per row "
            f"{stream['row_median']:.2f} / {stream['row_p95']:.2f} s) | p95 <= 0.5 s |"
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "mmemo-predict-bench")
    ap.add_argument("--clip", type=Path, help="use this media file instead of the looped real clip")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-stream", action="store_true", help="skip the 60-s natural-pace stream measurement")
    ap.add_argument("--device", choices=["cpu", "cuda", "both"], default="both")
    ap.add_argument(
        "--visual",
        choices=["faces", "frames"],
        default="faces",
        help="what the model reads: faces (predict and stream find and align them) or whole frames",
    )
    args = ap.parse_args()

    import torch

    from mmemo import __version__
    from mmemo.pipeline.predict import load_run

    clip = args.clip or build_clip(args.work)
    run_dir = args.work / f"run-default-untrained-{args.visual}"
    save_untrained_run(run_dir, visual=args.visual)
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    say("# mmemo predict benchmark\n")
    say(f"machine: {cpu_model()}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} "
        f"threads), mmemo {__version__}; GPU: {gpu or 'none'}")  # fmt: skip
    say(
        f"clip: {clip} ({clip.stat().st_size / 2**20:.1f} MiB); model: default ModelConfig, untrained, "
        f"video branch on {args.visual}"
    )
    devices = []
    if args.device in ("cpu", "both"):
        devices.append("cpu")
    if args.device in ("cuda", "both") and gpu:
        devices.append("cuda")
    elif args.device == "cuda":
        sys.exit("--device cuda: no GPU")
    table = ["| device | measure | figure | target |", "|---|---|---|---|"]
    for dev in devices:
        run = load_run(run_dir)
        run.device = torch.device(dev)
        run.model.to(run.device)
        name = "CPU" if dev == "cpu" else f"GPU ({gpu}, bf16 autocast)"
        rtf = bench_rtf(run, clip, args.repeat)
        stream = None if args.no_stream else bench_stream(run, clip)
        table += report(name, rtf, stream)
    say("\n## Markdown summary\n")
    say("\n".join(table))


if __name__ == "__main__":
    main()
