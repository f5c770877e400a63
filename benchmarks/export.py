"""`mmemo export` figures for the default model: export time, max abs difference from PyTorch, CPU inference time.

    python benchmarks/export.py [--repeat 5] [--rows 1000] [--threads N]

An untrained default model (``ModelConfig()`` with the default audio features and video) is saved as a run
directory (the checkpoint keys ``mmemo train`` writes that export reads), exported to TorchScript and, where
``mmemo[onnx]`` is installed, to ONNX; then one window of ``--rows`` rows (batch 1, every row real, audio and
video present) goes through eager PyTorch, the TorchScript file and onnxruntime, best of ``--repeat`` runs.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import cpu_model, save_untrained_run  # noqa: E402

from mmemo.config import ExtractConfig  # noqa: E402
from mmemo.features.registry import feature_dims  # noqa: E402
from mmemo.model.multimodal import MultiModalTransformer  # noqa: E402
from mmemo.pipeline.export import example_inputs, export_run, reference, sidecar_path, wrap  # noqa: E402


def untrained_run(run_dir: Path) -> tuple[MultiModalTransformer, np.ndarray, np.ndarray]:
    """The default model, untrained, with feature statistics that are not the identity (a lost one would show)."""
    D = sum(feature_dims(ExtractConfig()).values())
    mean, std = np.random.default_rng(0).normal(size=D).astype(np.float32), np.full(D, 2.0, np.float32)
    return save_untrained_run(run_dir, mean, std)


def best_of(runners: dict, repeat: int) -> dict[str, float]:
    """Best time of each runner over ``repeat`` rounds; the runners take turns, so a busy spell hits all alike."""
    for fn in runners.values():
        fn()  # warm-up (TorchScript profiles and optimises its graph on the first calls)
    times: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(repeat):
        for name, fn in runners.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: min(t) for name, t in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--rows", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=None, help="torch / onnxruntime intra-op threads")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    have_onnx = all(importlib.util.find_spec(p) for p in ("onnx", "onnxscript", "onnxruntime"))
    print(f"{cpu_model()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}")

    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        model, mean, std = untrained_run(run_dir)
        n_params = sum(p.numel() for p in model.parameters())
        print(f"default model: {n_params / 1e6:.1f} M parameters, window of {args.rows} rows, batch 1")
        files = {}
        for fmt in ("torchscript", "onnx") if have_onnx else ("torchscript",):
            t0 = time.perf_counter()
            files[fmt] = export_run(run_dir, fmt=fmt)
            meta = json.loads(sidecar_path(files[fmt]).read_text())
            print(f"export {fmt:<11}: {time.perf_counter() - t0:6.2f} s in all ({meta['export_seconds']:.2f} s writing,"
                  f" the rest loading and checking), {files[fmt].stat().st_size / 2**20:.1f} MiB,"
                  f" check max abs diff {meta['check']['max_abs_diff']:.2e}")  # fmt: skip
        if not have_onnx:
            print("onnx: not measured (pip install 'mmemo[onnx]')")

        inputs = example_inputs(wrap(model, mean, std), 1, args.rows)
        inputs["pad_mask"][:] = True  # one full window, as `mmemo predict` runs a long clip
        inputs["audio_mask"][:] = True
        inputs["video_mask"][:] = True
        ref = reference(model, mean, std, inputs)
        scripted = torch.jit.load(str(files["torchscript"])).eval()
        runners = {
            "eager PyTorch": lambda: reference(model, mean, std, inputs),
            "TorchScript": lambda: _no_grad(scripted, inputs),
        }
        if have_onnx:
            import onnxruntime as ort

            opts = ort.SessionOptions()
            if args.threads:
                opts.intra_op_num_threads = args.threads
            sess = ort.InferenceSession(str(files["onnx"]), opts, providers=["CPUExecutionProvider"])
            feed = {k: v.numpy() for k, v in inputs.items()}
            runners["onnxruntime"] = lambda: sess.run(None, feed)[0]
        diffs = {name: float(np.abs(fn() - ref).max()) for name, fn in runners.items()}
        best = best_of(runners, args.repeat)
        eager = best["eager PyTorch"]
        for name, t in best.items():
            print(f"{name:<14}: {t * 1000:8.1f} ms per {args.rows}-row window ({eager / t:4.2f}x eager),"
                  f" max abs diff from eager {diffs[name]:.2e}")  # fmt: skip


def _no_grad(module, inputs):
    with torch.no_grad():
        return module(*inputs.values()).numpy()


if __name__ == "__main__":
    main()
