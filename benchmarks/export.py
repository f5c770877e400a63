"""`mmemo export` figures: latency, real-time factor, size on disk and validation CCC of each engine.

    python benchmarks/export.py [--work /tmp/mmemo-export-bench] [--threads 2] [--repeat 10] [--rows 1000]

1. Builds (once, cached under ``--work``) the demo of `mmemo demo`: its 12 synthetic clips extracted, the demo
   model trained on 9 of them, validated on the 3 clips of a held-out speaker (``train_demo``).
2. Exports the run as a torch.export program (pt2), float ONNX and int8 ONNX (``--quantize int8``: dynamic
   quantisation of the linear layers), each checked by `mmemo export` itself; and, as an experiment that is not
   part of mmemo, int8 ONNX whose frame CNN is also quantised statically (QDQ Conv, activation ranges calibrated
   on frames of the training clips), to see whether that is worth offering.
3. Times one window of ``--rows`` rows (batch 1, every row real, audio and video present: a long clip's window)
   through eager PyTorch, pt2, onnxruntime float and int8, on each of ``--threads`` intra-op thread counts. The
   engines take turns, round after round, and the best of ``--repeat`` rounds is kept, so a busy spell on a
   shared machine hits them alike; the ratios to eager come from the same rounds. Real-time factor = latency /
   window duration.
4. Scores each engine on the validation clips through `mmemo predict`'s own path (``predict_shard``): CCC per
   dimension pooled over the labelled rows, and the CCC between each engine's outputs and eager PyTorch's.
5. Times the same engines for the untrained default-size model (``ModelConfig()``: hidden 256, 4 layers), whose
   linear layers weigh more than the demo model's (``--no-default-model`` skips it).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import cpu_model, save_untrained_run  # noqa: E402

from mmemo.data.features_dir import load_corpus  # noqa: E402
from mmemo.data.labels import DIMENSIONS  # noqa: E402
from mmemo.data.shards import read_clip  # noqa: E402
from mmemo.pipeline.evaluate import predict_shard  # noqa: E402
from mmemo.pipeline.export import (  # noqa: E402
    example_inputs,
    export_run,
    quantize_int8,
    sidecar_path,
    validation_clips,
    wrap,
)
from mmemo.pipeline.metrics import ccc, evaluate  # noqa: E402
from mmemo.pipeline.predict import Run, load_exported, load_run, prepare_inputs  # noqa: E402


def build_demo(work: Path, epochs: int) -> Path:
    """The demo's features and trained run under ``work`` (made once)."""
    from mmemo.pipeline.demo import run_demo, train_demo

    if not (work / "run" / "best.pt").is_file():
        run_demo(work, log=print)
        train_demo(work, epochs=epochs, log=lambda s: None, progress=False)
    return work


def static_conv_int8(float_onnx: Path, out: Path, run: Run, features: Path, rows: int) -> None:
    """The experiment: the frame CNN's convolutions quantised statically (QDQ, per-channel int8 weights, uint8
    activations whose ranges are calibrated on ``rows`` frames of the training clips), then the linear layers
    dynamically as `mmemo export --quantize int8` does."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    from mmemo.pipeline.export import INT8_OPS

    record = json.loads((Path(run.path).parent / "config.json").read_text())
    train = [c for c in load_corpus(features).clips if c.clip_id in set(record["train_clips"])]
    feeds = []
    for c in train:
        clip = read_clip(c.path, frames=True)
        faces = (clip.faces, clip.face_mask) if clip.faces is not None else None
        audio, frames, am, vm = prepare_inputs(run, clip.features, clip.frames, clip.audio_mask, clip.video_mask,
                                               c.path, faces)  # fmt: skip
        n = min(len(am), rows // len(train))
        raw = (audio[:n] * run.std + run.mean).astype(np.float32)
        feeds.append({"audio": raw[None], "frames": frames[:n][None], "pad_mask": np.ones((1, n), bool),
                      "audio_mask": am[:n][None], "video_mask": vm[:n][None]})  # fmt: skip

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(feeds)

        def get_next(self):
            return next(self.it, None)

    import onnx

    model = onnx.load(str(float_onnx))
    convs = [n.name for n in model.graph.node if n.op_type == "Conv"]
    with tempfile.TemporaryDirectory() as tmp:
        mid = Path(tmp) / "conv.onnx"
        quantize_static(float_onnx, mid, Reader(), quant_format=QuantFormat.QDQ, op_types_to_quantize=["Conv"],
                        nodes_to_quantize=convs, per_channel=True, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8)  # fmt: skip
        from onnxruntime.quantization import quantize_dynamic

        quantize_dynamic(mid, out, op_types_to_quantize=list(INT8_OPS), per_channel=True, weight_type=QuantType.QInt8,
                         extra_options={"MatMulConstBOnly": True})  # fmt: skip


def validation_scores(run: Run, clips: list, reference: list[np.ndarray] | None) -> tuple[dict, list[np.ndarray]]:
    """Validation CCC per dimension (pooled over labelled rows), and the outputs' CCC against ``reference``."""
    res = [predict_shard(run, c.path) for c in clips]
    m = {d: evaluate([r.pred[r.mask, k] for r in res], [r.truth[r.mask, k] for r in res])["ccc"]
         for k, d in enumerate(DIMENSIONS)}  # fmt: skip
    preds = [r.pred for r in res]
    if reference is not None:
        p, q = np.concatenate(preds), np.concatenate(reference)
        m |= {f"{d}_vs_eager": ccc(p[:, k], q[:, k]) for k, d in enumerate(DIMENSIONS)}
    return m, preds


def best_of(runners: dict, repeat: int) -> dict[str, float]:
    """Best time of each runner over ``repeat`` rounds; the runners take turns, so a busy spell hits all alike."""
    for fn in runners.values():
        fn()  # warm-up: first calls allocate and plan
    times: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(repeat):
        for name, fn in runners.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: min(t) for name, t in times.items()}


def latency(run: Run, files: dict[str, Path], rows: int, threads: int, repeat: int) -> tuple[dict, dict]:
    """Best time per ``rows``-row window of eager PyTorch and each file on ``threads`` threads, and each one's
    largest difference from eager on that window."""
    torch.set_num_threads(threads)
    module = wrap(run.model, run.mean, run.std)
    x = example_inputs(module, 1, rows)
    for k in ("pad_mask", "audio_mask", "video_mask"):
        x[k][:] = True  # one full window of a long clip, both modalities present
    feed = {k: v.numpy() for k, v in x.items()}
    fns = {e: load_exported(p, "onnx" if e.startswith("onnx") else "pt2", threads=threads) for e, p in files.items()}
    with torch.inference_mode():
        ref = module(*x.values()).numpy()

    def eager():
        with torch.inference_mode():
            return module(*x.values())

    runners = {"eager": eager, **{e: (lambda fn=fn: fn(feed)) for e, fn in fns.items()}}
    diffs = {"eager": 0.0, **{e: float(np.abs(fn(feed) - ref).max()) for e, fn in fns.items()}}
    return best_of(runners, repeat), diffs


def print_table(title: str, run: Run, files: dict[str, Path], args, scores: dict | None = None) -> None:
    seconds = args.rows / run.extract_cfg.fps
    size = {"eager": Path(run.path).stat().st_size, **{e: p.stat().st_size for e, p in files.items()}}
    print(f"\n{title}: one {args.rows}-row window ({seconds:.0f} s of media), batch 1, best of {args.repeat} rounds")
    head = f"{'engine':<17}{'threads':>8}{'ms/window':>10}{'RTF':>8}{'x eager':>8}{'MiB':>7}{'max|d|':>9}"
    if scores:
        head += f"{'V.ccc':>8}{'A.ccc':>8}{'V~eager':>9}{'A~eager':>9}"
    print(head)
    for threads in args.threads:
        best, diffs = latency(run, files, args.rows, threads, args.repeat)
        for e, t in best.items():
            line = (f"{e:<17}{threads:>8}{t * 1000:10.1f}{t / seconds:8.4f}{best['eager'] / t:8.2f}"
                    f"{size[e] / 2**20:7.2f}{diffs[e]:9.1e}")  # fmt: skip
            if scores:
                s = scores[e]
                agree = f"{s['valence_vs_eager']:9.4f}{s['arousal_vs_eager']:9.4f}" if e != "eager" else ""
                line += f"{s['valence']:8.4f}{s['arousal']:8.4f}{agree}"
            print(line)


def export_all(run_dir: Path, features: Path | None, static: tuple | None) -> dict[str, Path]:
    """pt2, float ONNX and int8 ONNX of ``run_dir`` (int8 measured on ``features``' validation clips, or made
    with ``quantize_int8`` alone when there are none: an untrained model), and the static experiment."""
    files: dict[str, Path] = {}
    for engine, fmt in (("pt2", "pt2"), ("onnx", "onnx")):
        t0 = time.perf_counter()
        files[engine] = export_run(run_dir, fmt=fmt)
        meta = json.loads(sidecar_path(files[engine]).read_text())
        print(f"export {engine:<9}: {time.perf_counter() - t0:5.1f} s, check max abs diff "
              f"{meta['check']['max_abs_diff']:.1e}")  # fmt: skip
    files["onnx-int8"] = run_dir / "best.int8.onnx"
    if features is not None:
        export_run(run_dir, fmt="onnx", quantize="int8", features_dir=features, force=True,
                   log=lambda s: print(f"export onnx-int8: {s}"))  # fmt: skip
    else:
        quantize_int8(files["onnx"], files["onnx-int8"], "{}")
    if static is not None:
        files["onnx-int8-static"] = run_dir / "best.int8-static.onnx"
        static_conv_int8(files["onnx"], files["onnx-int8-static"], *static)
    return files


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "mmemo-export-bench")
    ap.add_argument("--epochs", type=int, default=40, help="demo training epochs (when it is built)")
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--rows", type=int, default=1000)
    ap.add_argument("--threads", default="2,1", help="intra-op thread counts to time (torch and onnxruntime alike)")
    ap.add_argument("--no-static", action="store_true", help="skip the static-quantisation experiment")
    ap.add_argument("--no-default-model", action="store_true", help="skip the untrained default-size model")
    args = ap.parse_args()
    args.threads = [int(t) for t in args.threads.split(",")]
    work = build_demo(args.work, args.epochs)
    features, run_dir = work / "features", work / "run"
    print(f"{cpu_model()}, torch {torch.__version__}; demo run {run_dir}")

    run = load_run(run_dir)
    run.model = run.model.float().cpu().eval()
    files = export_all(run_dir, features, None if args.no_static else (run, features, 400))
    clips, where = validation_clips(run_dir, features, run)
    scores = {}
    scores["eager"], ref_preds = validation_scores(run, clips, None)
    for e, p in files.items():
        fmt = "onnx" if e.startswith("onnx") else "pt2"
        erun = dataclasses.replace(run, engine=load_exported(p, fmt), engine_name=e, model=None)
        scores[e], _ = validation_scores(erun, clips, ref_preds)
    print(f"validation CCC on {where}; V~eager / A~eager: CCC between the engine's outputs and eager PyTorch's")
    print_table(f"demo model ({sum(p.numel() for p in run.model.parameters()) / 1e6:.2f} M parameters)", run, files,
                args, scores)  # fmt: skip
    if not args.no_default_model:
        default_dir = work / "default-run"
        save_untrained_run(default_dir)
        drun = load_run(default_dir)
        dfiles = export_all(default_dir, None, None)
        n = sum(p.numel() for p in drun.model.parameters()) / 1e6
        print_table(f"default-size model, untrained ({n:.2f} M parameters)", drun, dfiles, args)
    print(
        "(eager MiB: the checkpoint; the demo run's also holds the optimiser state. max|d|: largest difference "
        "from eager on the timed window)"
    )


if __name__ == "__main__":
    main()
