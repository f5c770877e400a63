"""Benchmark `mmemo train`: data loader and training step, CPU (and a GPU when there is one); prints figures only.

    python benchmarks/train.py [--work /tmp/mmemo-train-bench] [--workers 0,1,2] [--passes 2] [--steps 5]
                               [--warmup 1] [--skip-build] [--repeat-clips 40] [--prefetch 2]

1. Builds (once, cached under --work) the demo corpus long enough for 1000-row windows: 8 labelled clips of
   60 s (8 media minutes, 1500 rows each), extracted with the default ExtractConfig and 2 jobs.
2. Loader throughput for 0, 1 and 2 DataLoader workers (and 8 where a GPU and 8 cores are there) with the
   default configuration (TrainConfig: 1000-row windows, batch 8; ModelConfig: video_size 56): the training
   loader exactly as the Trainer builds it (``Trainer._loader``: a WindowLoader, EpochSampler, spawned persistent
   workers, ``--prefetch`` batches in flight per worker) over the training clips listed ``--repeat-clips`` times
   (40: 560 windows, 70 batches a pass), one warm-up pass then ``--passes`` timed passes; windows/s and rows
   (frames)/s, worker start-up apart. Standardisation and augmentation run on the training device with the step
   (issue 14): the loader only reads and copies. Beside it, the copy limit: one core copying the same windows'
   cached frames into a reused buffer, nothing else.
3. Training step (to_device, forward, loss, backward, gradient clipping, AdamW and scheduler step, exactly the
   body of ``Trainer.train_epoch``) of the default model and of the demo model on CPU, batch 8 windows of
   1000 rows pre-loaded: median over ``--steps`` steps after ``--warmup``; batch 2 as well if a default step
   takes more than ``--slow`` seconds.
4. Peak memory: every measurement runs in a fresh child process of this script, so each max RSS
   (``getrusage(RUSAGE_SELF).ru_maxrss``) belongs to that one configuration alone.
5. With a GPU (``torch.cuda.is_available()``): the same step with bf16 autocast on the GPU, its peak GPU memory
   (``torch.cuda.max_memory_allocated``), and the ratio loader (the most workers measured) / GPU consumption in
   windows per second, which must stay >= 1 for the GPU never to wait. Without one these lines say they were
   skipped.
Ends with a Markdown summary for the README.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import cpu_model

MIB = 2**20
RESULT = "RESULT "  # prefix of the one stdout line a child process answers with
RECIPE = {"n_clips": 8, "seconds": 60, "seed": 0, "jobs": 2}  # the corpus; a change rebuilds it
# name -> ModelConfig overrides. "default" is ModelConfig's size, spelt out: the 8-min corpus is under the hour
# below which the Trainer would pick its small model. (demo: mmemo.demo.DEMO_MODEL, filled late)
MODELS = {"default": {"hidden": 256, "layers": 4, "heads": 8, "dropout": 0.1}, "demo": None}


def say(msg: str = "") -> None:
    """Print and flush (the script runs for minutes; show progress as it goes)."""
    print(msg, flush=True)


def note(msg: str) -> None:
    """Progress of a child process: on stderr (its stdout carries the result), indented under the parent's."""
    print(f"    {msg}", file=sys.stderr, flush=True)


def max_rss_mib(who: int = resource.RUSAGE_SELF) -> float:
    """Peak resident memory so far (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(who).ru_maxrss / 1024


def machine() -> dict[str, str]:
    """CPU model and cores, torch and mmemo versions, the GPU when there is one."""
    import torch

    import mmemo

    cpu = cpu_model()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "cpu": f"{cpu}, {os.cpu_count()} cores",
        "torch": torch.__version__,
        "threads": str(torch.get_num_threads()),
        "mmemo": mmemo.__version__,
        "gpu": gpu or "none",
    }


# ------------------------------------------------------------------------------------------------------ corpus
def build(work: Path, skip: bool, frame_size: int = 224) -> tuple[Path, float | None]:
    """The demo corpus of RECIPE under work/corpus, extracted into work/features (frames of ``frame_size``; other
    sizes in work/features-SIZE), each made once (cached).

    Returns the features directory and the seconds the build took (None when it was cached)."""
    from mmemo.config import ExtractConfig
    from mmemo.pipeline.demo import make_demo_corpus
    from mmemo.pipeline.extract import extract_corpus

    suffix = "" if frame_size == 224 else f"-{frame_size}"
    corpus, features = work / "corpus", work / f"features{suffix}"
    stamp, corpus_stamp = work / f".recipe{suffix}.json", work / ".corpus.json"
    if stamp.exists() and json.loads(stamp.read_text()) == RECIPE and (features / "manifest.csv").exists():
        return features, None
    if skip:
        sys.exit(f"--skip-build: no corpus of this recipe under {work}; run once without it")
    t0 = time.perf_counter()
    shutil.rmtree(features, ignore_errors=True)
    made = (work / ".recipe.json", corpus_stamp)  # (the first stamp: corpora built before sizes were an option)
    if not any(p.exists() and json.loads(p.read_text()) == RECIPE for p in made):
        shutil.rmtree(corpus, ignore_errors=True)
        say(f"building {RECIPE['n_clips']} demo clips of {RECIPE['seconds']} s in {corpus}")
        make_demo_corpus(corpus, n_clips=RECIPE["n_clips"], seconds=RECIPE["seconds"], seed=RECIPE["seed"])
        corpus_stamp.write_text(json.dumps(RECIPE))
    t1 = time.perf_counter()
    say(f"  corpus ready in {t1 - t0:.1f} s; extracting {frame_size}-px frames, {RECIPE['jobs']} jobs, into {features}")
    summary = extract_corpus(
        corpus, features, ExtractConfig(frame_size=frame_size), jobs=RECIPE["jobs"], progress=False,
        log=lambda s: say(f"  {s}"),
    )  # fmt: skip
    if summary.failed:
        sys.exit(f"extraction failed for {len(summary.failed)} clip(s): see {features}/errors.csv")
    say(f"  extracted in {time.perf_counter() - t1:.1f} s")
    stamp.write_text(json.dumps(RECIPE))
    return features, time.perf_counter() - t0


def describe(features: Path, built_s: float | None) -> dict:
    """Section 1: what was built, and how the Trainer's default split cuts it into 1000-row windows."""
    import pandas as pd

    from mmemo.config import TrainConfig
    from mmemo.data.features_dir import load_corpus, split, val_fraction

    cfg = TrainConfig()
    corpus = load_corpus(features)
    train, val = split(corpus, cfg)
    manifest = pd.read_csv(features / "manifest.csv", keep_default_na=False)
    shard_mib = sum(p.stat().st_size for p in (features / "shards").rglob("*.h5")) / MIB
    rows = int(manifest["frames"].sum())

    def windows(clips) -> int:
        return sum(-(-c.n_frames // cfg.max_seq_len) for c in clips)

    info = {
        "clips": len(manifest),
        "media_min": float(manifest["duration"].sum()) / 60,
        "rows": rows,
        "shard_mib": shard_mib,
        "train_clips": len(train),
        "val_clips": len(val),
        "train_windows": windows(train),
        "val_windows": windows(val),
    }
    when = "cached" if built_s is None else f"built in {built_s:.0f} s"
    say(f"\n## 1. Corpus ({when}): {features}\n")
    say(
        f"{info['clips']} labelled demo clips ({', '.join(sorted(set(manifest['modalities'])))}), "
        f"{info['media_min']:.1f} media min, {rows} rows at 25 fps, shards {shard_mib:.0f} MiB "
        f"({shard_mib / max(rows, 1) * 1024:.0f} KiB per row: {corpus.extract_cfg.frame_size}-px lzf frames + audio "
        "features)"
    )
    say(
        f"Trainer split (val_fraction {val_fraction(corpus, cfg)}, seed {cfg.seed}): {len(train)} training clips = "
        f"{info['train_windows']} windows of {cfg.max_seq_len} rows per epoch, {len(val)} validation clips = "
        f"{info['val_windows']} windows"
    )
    return info


# ------------------------------------------------------------------------------------------- child processes
def child(args: argparse.Namespace, spec: dict, cuda: bool = False) -> dict | None:
    """Run one measurement in a fresh process of this script; its answer, or None (reason printed) on failure.

    CPU measurements hide any GPU from the child (CUDA_VISIBLE_DEVICES=""), so the Trainer builds on the CPU."""
    env = dict(os.environ)
    if spec["kind"] == "step" and not cuda:
        env["CUDA_VISIBLE_DEVICES"] = ""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--work", str(args.work), "--child", json.dumps(spec)]
    r = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, env=env)
    answer = [line for line in r.stdout.splitlines() if line.startswith(RESULT)]
    if r.returncode != 0 or not answer:
        say(f"  measurement {spec} failed (exit {r.returncode}); its output:\n{r.stdout[-2000:]}")
        return None
    return json.loads(answer[-1][len(RESULT) :])


def make_trainer(features: Path, run_dir: Path, overrides: dict | None = None, **cfg):
    """A Trainer of the default TrainConfig (with ``cfg`` changes), quiet, writing its run files to ``run_dir``."""
    from mmemo.config import TrainConfig
    from mmemo.pipeline.train import Trainer

    return Trainer(features, run_dir, TrainConfig(**cfg), overrides, log=lambda s: None, progress=False)


def measure_loader(
    features: Path, run_dir: Path, workers: int, passes: int, repeat: int = 1, prefetch: int = 2
) -> dict:
    """In a child: iterate the Trainer's training DataLoader; one warm-up pass (workers start), then ``passes``.

    Start-up is the warm-up pass's time minus the mean timed pass: spawning the workers, importing torch and
    mmemo in each, opening the shards. Each pass calls ``sampler.set_epoch`` as ``train_epoch`` does. ``repeat``:
    the training clips listed that many times (the same shards and frame cache, read again at other random
    window starts), so that a pass is hundreds of batches, as on a real corpus, without extracting hours.
    ``prefetch``: batches in flight per worker (the Trainer's PREFETCH_FACTOR, set for this process)."""
    import mmemo.pipeline.train as train_module
    from mmemo.data.dataset import Augment, ShardDataset

    train_module.PREFETCH_FACTOR = prefetch
    trainer = make_trainer(features, run_dir, workers=workers)
    base = trainer.train_set
    dataset = ShardDataset(
        base.clips * repeat, base.names, base.mean, base.std, max_len=base.max_len, train=True,
        video_size=base.video_size, use_video=base.use_video, augment=Augment(enabled=trainer.cfg.augment),
        seed=base.seed, frame_cache=base.frame_cache, visual=base.visual,
    )  # fmt: skip
    loader = trainer._loader(dataset, shuffle=True)
    times, first_batch, windows, rows, longest, sizes = [], None, 0, 0, 0, []
    for epoch in range(passes + 1):
        loader.sampler.set_epoch(epoch)
        t0 = time.perf_counter()
        n_win = n_rows = 0
        sizes = []
        for batch in loader:
            if first_batch is None:
                first_batch = time.perf_counter() - t0
            sizes.append(len(batch["clip"]))
            n_win += len(batch["clip"])
            n_rows += int(batch["pad_mask"].sum())
            longest = max(longest, batch["pad_mask"].shape[1])
        times.append(time.perf_counter() - t0)
        note(f"{workers} worker(s), {'warm-up pass' if epoch == 0 else f'pass {epoch}'}: {times[-1]:.1f} s")
        if epoch > 0:
            windows, rows = windows + n_win, rows + n_rows
    main_rss = max_rss_mib()
    del loader  # shuts the persistent workers down and joins them: RUSAGE_CHILDREN then covers them
    trainer.close()
    gc.collect()
    timed = sum(times[1:])
    limit = copy_limit(dataset, passes, trainer.cfg.batch_size) if workers == 0 else None
    return {
        "copy_limit_s": limit,
        "prefetch": prefetch,
        "workers": workers,
        "warmup_s": times[0],
        "first_batch_s": first_batch,
        "pass_s": timed / passes,
        "startup_s": times[0] - timed / passes,
        "windows_s": windows / timed,
        "rows_s": rows / timed,
        "window_rows": rows / max(windows, 1),
        "longest": longest,
        "batches": sizes,
        "main_rss_mib": main_rss,
        "worker_rss_mib": max_rss_mib(resource.RUSAGE_CHILDREN) if workers else None,
    }


def copy_limit(dataset, passes: int, batch: int) -> dict:
    """Windows/s of the copy alone: every window of ``passes`` epochs, its rows of the frame cache's memory map
    (pages already in memory) copied by one thread into a reused batch buffer, as the loader copies them; and the
    same copies into a fresh batch buffer every ``batch`` windows (what building each batch in new memory costs:
    the kernel faults in and zeroes every new page of its 75 MB)."""
    import numpy as np
    import torch

    torch.set_num_threads(1)
    maps = {}
    shape = (batch, dataset.max_len, dataset.video_size, dataset.video_size, 3)
    reused = torch.empty(shape, dtype=torch.uint8)
    out = {}
    for name in ("reused", "fresh"):
        n = 0
        t0 = time.perf_counter()
        for epoch in range(1, passes + 1):
            for i in range(len(dataset)):
                if i % batch == 0:
                    buf = reused if name == "reused" else torch.empty(shape, dtype=torch.uint8)
                ci, start, stop = dataset.window(epoch * len(dataset) + i)
                path = dataset._pooled[dataset.clips[ci].path][0]  # the cache file the loader maps
                if path not in maps:
                    maps[path] = torch.from_numpy(np.load(path, mmap_mode="c"))
                buf[i % batch, : stop - start].copy_(maps[path][start:stop])
                n += 1
        out[name] = n / (time.perf_counter() - t0)
    return out


def train_step(trainer, batch: dict) -> float:
    """One step exactly as training takes it (``Trainer.train_step``); ``.item()`` also syncs a GPU."""
    return trainer.train_step(batch).item()


def measure_step(features: Path, run_dir: Path, model: str, batch_size: int, steps: int, warmup: int) -> dict:
    """In a child: time training steps of ``model`` on one pre-loaded batch of ``batch_size`` 1000-row windows.

    The windows are drawn as in training but without augmentation, so each is exactly max_seq_len rows (the
    time stretch of training windows makes them 900-1100 rows). The device is the Trainer's: CUDA when visible
    (bf16 autocast, pinned batch), else the CPU."""
    import torch

    from mmemo.data.dataset import collate

    trainer = make_trainer(features, run_dir, MODELS[model], workers=0, batch_size=batch_size)
    ds = trainer.train_set
    ds.augment = None
    t0 = time.perf_counter()
    batch = collate([ds[i] for i in range(batch_size)])  # indices past len(ds) carry the next epoch's windows
    note(f"{model}, batch {batch_size}: {batch_size} windows loaded in {time.perf_counter() - t0:.1f} s")
    cuda = trainer.device.type == "cuda"
    if cuda:
        batch = {k: v.pin_memory() for k, v in batch.items()}
        torch.cuda.reset_peak_memory_stats(trainer.device)
    rss_before = max_rss_mib()
    trainer.model.train()
    times = []
    for i in range(warmup + steps):
        if cuda:
            torch.cuda.synchronize(trainer.device)
        t0 = time.perf_counter()
        loss = train_step(trainer, batch)
        if cuda:
            torch.cuda.synchronize(trainer.device)
        times.append(time.perf_counter() - t0)
        note(f"{model}, batch {batch_size}, {trainer.device}: {'warm-up' if i < warmup else 'step'} "
             f"{times[-1]:.2f} s, loss {loss:.3f}")  # fmt: skip
    timed = times[warmup:]
    rows = int(batch["pad_mask"].sum())
    med = statistics.median(timed)
    return {
        "model": model,
        "device": str(trainer.device),
        "gpu": torch.cuda.get_device_name(trainer.device) if cuda else None,
        "threads": torch.get_num_threads(),
        "params_m": sum(p.numel() for p in trainer.model.parameters()) / 1e6,
        "config": {k: getattr(trainer.model_cfg, k) for k in ("hidden", "heads", "layers", "video_size")},
        "batch": batch_size,
        "rows": rows,
        "warmup_s": times[:warmup],
        "steps_s": timed,
        "median_s": med,
        "windows_s": batch_size / med,
        "rows_s": rows / med,
        "rss_before_mib": rss_before,
        "rss_mib": max_rss_mib(),
        "gpu_peak_mib": torch.cuda.max_memory_allocated(trainer.device) / MIB if cuda else None,
    }


def run_child(spec: dict, work: Path) -> None:
    """The child side: one measurement, answered as one JSON line on stdout."""
    from mmemo.pipeline.demo import DEMO_MODEL

    MODELS["demo"] = dict(DEMO_MODEL)
    size = spec.get("frame_size", 224)
    features = work / ("features" if size == 224 else f"features-{size}")
    run_dir = work / "runs" / f"{spec['kind']}-{os.getpid()}"
    if spec["kind"] == "loader":
        out = measure_loader(features, run_dir, spec["workers"], spec["passes"], spec.get("repeat", 1),
                             spec.get("prefetch", 2))  # fmt: skip
    else:
        out = measure_step(features, run_dir, spec["model"], spec["batch"], spec["steps"], spec["warmup"])
    shutil.rmtree(run_dir, ignore_errors=True)
    print(RESULT + json.dumps(out), flush=True)


# ------------------------------------------------------------------------------------------------ sections
def bench_loader(args: argparse.Namespace, workers_list: list[int]) -> list[dict]:
    """Section 2: the training DataLoader alone, for each number of workers."""
    say(
        f"\n## 2. Loader throughput (Trainer._loader, batch 8, 1000-row windows, {args.frame_size}-px frames stored, "
        f"video_size 56, augmentation on, prefetch factor {args.prefetch})\n"
    )
    say(f"the training clips listed {args.repeat_clips} times (--repeat-clips: other random windows, same shards)")
    say(f"one warm-up pass, then {args.passes} timed passes over the epoch's windows; start-up = warm-up pass - timed")
    say("pass (spawning workers, imports, opening shards); max RSS of the main process and of the largest worker")
    rows = []
    for w in workers_list:
        spec = {"kind": "loader", "workers": w, "passes": args.passes, "frame_size": args.frame_size,
                "repeat": args.repeat_clips, "prefetch": args.prefetch}  # fmt: skip
        r = child(args, spec)
        if r is None:
            continue
        rows.append(r)
        wrss = f", largest worker {r['worker_rss_mib']:.0f} MiB" if r["worker_rss_mib"] else ""
        say(
            f"{w} worker(s): {r['windows_s']:5.2f} windows/s, {r['rows_s']:6.0f} rows/s | pass {r['pass_s']:5.1f} s, "
            f"start-up {r['startup_s']:+5.1f} s (first batch after {r['first_batch_s']:.1f} s) | "
            f"{r['window_rows']:.0f} rows per window on average, longest batch {r['longest']} rows | "
            f"max RSS main {r['main_rss_mib']:.0f} MiB{wrss}"
        )
        if r["copy_limit_s"] is not None:
            c = r["copy_limit_s"]
            say(
                f"copy limit: {c['reused']:.0f} windows/s (one thread copying the same windows' cached frames into a "
                f"reused batch buffer, nothing else); into a fresh batch buffer each batch: {c['fresh']:.0f} windows/s"
            )
    if rows:
        b = rows[-1]["batches"]
        say(
            f"note: an epoch of this corpus is {len(b)} batch(es) of {' + '.join(map(str, b))} windows; each worker "
            "builds whole batches, so with more workers than batches a pass cannot get faster, and with uneven "
            "batches it lasts as long as the largest one"
        )
    return rows


def bench_steps(args: argparse.Namespace, cuda: bool) -> list[dict]:
    """Section 3 (CPU) or 5 (GPU): the training step of the default and the demo model, batch 8 (and 2)."""
    steps, warmup = (args.gpu_steps, args.gpu_warmup) if cuda else (args.steps, args.warmup)
    where = "GPU, bf16 autocast" if cuda else "CPU"
    say(f"\n## {5 if cuda else 3}. Training step on the {where}: median of {steps} steps after {warmup} warm-up\n")
    if not cuda:
        say("to_device + forward + loss + backward + clip + AdamW + OneCycleLR, one pre-loaded batch of 1000-row")
        say("windows (no augmentation), one fresh process per configuration: max RSS is that configuration's alone")
    rows = []
    plan = [("default", 8), ("demo", 8)]
    for model, batch in plan:
        spec = {"kind": "step", "model": model, "batch": batch, "steps": steps, "warmup": warmup,
                "frame_size": args.frame_size}  # fmt: skip
        r = child(args, spec, cuda=cuda)
        if r is None:
            continue
        rows.append(r)
        say(step_line(r))
        if model == "default" and batch == 8 and not cuda and r["median_s"] > args.slow:
            say(f"  a default step takes more than {args.slow:.0f} s on this CPU: also with batch 2")
            r2 = child(args, {**spec, "batch": 2}, cuda=cuda)
            if r2 is not None:
                rows.append(r2)
                say(step_line(r2))
    return rows


def step_line(r: dict) -> str:
    """One printed line of a step measurement."""
    c = r["config"]
    mem = f"GPU peak {r['gpu_peak_mib']:.0f} MiB, " if r["gpu_peak_mib"] is not None else ""
    return (
        f"{r['model']:7s} (hidden {c['hidden']}, {c['heads']} heads, {c['layers']} layers, video {c['video_size']}, "
        f"{r['params_m']:.2f} M params) batch {r['batch']} x {r['rows'] // r['batch']} rows on {r['device']} "
        f"({r['threads']} threads): step {r['median_s']:.3f} s median (min {min(r['steps_s']):.3f}, max "
        f"{max(r['steps_s']):.3f}; warm-up {', '.join(f'{t:.2f} s' for t in r['warmup_s']) or 'none'}) = "
        f"{r['windows_s']:.2f} windows/s, {r['rows_s']:.0f} rows/s | {mem}max RSS {r['rss_mib']:.0f} MiB "
        f"({r['rss_before_mib']:.0f} MiB before the first step)"
    )


def gpu_ratio(loader: list[dict], gpu: list[dict]) -> dict | None:
    """Loader (the most workers measured) windows/s over the GPU's consumption of the default model at batch 8."""
    top = max(loader, key=lambda r: r["workers"], default=None)
    step = next((r for r in gpu if r["model"] == "default" and r["batch"] == 8), None)
    if top is None or step is None:
        say("loader / GPU ratio: not computed (no loader or GPU default measurement)")
        return None
    ratio = top["windows_s"] / step["windows_s"]
    verdict = "the loader keeps up" if ratio >= 1 else "the GPU would WAIT for the loader"
    say(
        f"loader with {top['workers']} workers {top['windows_s']:.2f} windows/s / GPU consumption "
        f"{step['windows_s']:.2f} windows/s = {ratio:.2f} (must be >= 1: {verdict})"
    )
    return {"ratio": ratio, "loader": top["windows_s"], "gpu": step["windows_s"], "workers": top["workers"]}


def markdown(info: dict, corpus: dict, loader: list[dict], cpu: list[dict], gpu: list[dict], ratio) -> str:
    """The compact Markdown summary for the README."""
    lines = [
        f"Machine: {info['cpu']}; torch {info['torch']} ({info['threads']} threads), mmemo {info['mmemo']}, "
        f"GPU: {info['gpu']}. Corpus: {corpus['clips']} demo clips, {corpus['media_min']:.0f} media min, "
        f"{corpus['train_windows']} training windows of 1000 rows per epoch.",
        "",
        "| loader workers | start-up (s) | windows/s | rows/s |",
        "|---:|---:|---:|---:|",
    ]
    lines += [f"| {r['workers']} | {r['startup_s']:.1f} | {r['windows_s']:.2f} | {r['rows_s']:.0f} |" for r in loader]
    lines += [
        "",
        "| model | params (M) | device | batch x rows | step (s) | windows/s | rows/s | peak memory (MiB) |",
        "|---|---:|---|---|---:|---:|---:|---:|",
    ]
    for r in cpu + gpu:
        c = r["config"]
        name = f"{r['model']} ({c['hidden']}/{c['heads']}h/{c['layers']}l)"
        dev = "CPU" if r["gpu"] is None else f"{r['gpu']} bf16"
        mem = f"{r['rss_mib']:.0f} RSS" + (f", {r['gpu_peak_mib']:.0f} GPU" if r["gpu_peak_mib"] is not None else "")
        lines.append(
            f"| {name} | {r['params_m']:.2f} | {dev} | {r['batch']} x {r['rows'] // r['batch']} | {r['median_s']:.3f} "
            f"| {r['windows_s']:.2f} | {r['rows_s']:.0f} | {mem} |"
        )
    lines.append("")
    if ratio is not None:
        lines.append(f"Loader ({ratio['workers']} workers) / GPU consumption: {ratio['ratio']:.2f} (must be >= 1).")
    else:
        lines.append("Loader / GPU consumption ratio: no GPU on this machine (bf16 GPU lines skipped).")
    return "\n".join(lines)


def main() -> None:
    """Parse options; as the parent build the corpus and run the sections, as a child run one measurement."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/mmemo-train-bench"), help="cache and scratch directory")
    ap.add_argument(
        "--workers", help="comma-separated DataLoader worker counts (default 0,1,2; 0,1,2,8 with a GPU and 8 cores)"
    )
    ap.add_argument("--prefetch", type=int, default=2, help="batches in flight per loader worker (prefetch_factor)")
    ap.add_argument("--passes", type=int, default=2, help="timed loader passes after the warm-up pass")
    ap.add_argument("--steps", type=int, default=5, help="timed CPU training steps")
    ap.add_argument("--warmup", type=int, default=1, help="CPU warm-up steps (not timed)")
    ap.add_argument("--gpu-steps", type=int, default=20, help="timed GPU training steps")
    ap.add_argument("--gpu-warmup", type=int, default=3, help="GPU warm-up steps (not timed)")
    ap.add_argument("--slow", type=float, default=60.0, help="median default step (s) above which batch 2 is added")
    ap.add_argument("--skip-build", action="store_true", help="use the cached corpus; fail if it is missing")
    ap.add_argument("--no-cpu-steps", action="store_true", help="skip the CPU training steps (on a GPU machine)")
    ap.add_argument("--frame-size", type=int, default=224, help="extract the frames at this size (56: the model's)")
    ap.add_argument(
        "--repeat-clips",
        type=int,
        default=40,
        help="list the training clips this many times in the loader measurement (hundreds of batches)",
    )
    ap.add_argument("--child", help=argparse.SUPPRESS)  # internal: one measurement in a fresh process
    args = ap.parse_args()
    args.work = args.work.resolve()
    if args.child:
        run_child(json.loads(args.child), args.work)
        return
    import torch

    t_start = time.perf_counter()
    info = machine()
    say(f"# mmemo train benchmark\n\nmachine: {info['cpu']}; GPU: {info['gpu']}")
    say(f"versions: torch {info['torch']} ({info['threads']} threads), mmemo {info['mmemo']}")
    features, built_s = build(args.work, args.skip_build, args.frame_size)
    corpus = describe(features, built_s)

    if args.workers is None:
        args.workers = "0,1,2,8" if torch.cuda.is_available() and (os.cpu_count() or 1) >= 8 else "0,1,2"
    loader = bench_loader(args, [int(w) for w in args.workers.split(",") if w.strip()])
    cpu = [] if args.no_cpu_steps else bench_steps(args, cuda=False)
    say("\n## 4. Peak memory\n")
    say("max RSS (ru_maxrss, RUSAGE_SELF) of each child process, printed on its line above; in short:")
    for r in cpu:
        say(f"{r['model']:7s} batch {r['batch']}: {r['rss_mib']:6.0f} MiB ({r['rss_before_mib']:.0f} before stepping)")
    if cpu and loader:
        two = next((r for r in loader if r["workers"] == 2), loader[-1])
        default = next((r for r in cpu if r["model"] == "default"), None)
        if default is not None:
            ratio_cpu = two["windows_s"] / default["windows_s"]
            say(
                f"\nCPU: loader ({two['workers']} workers, measured alone) {two['windows_s']:.2f} windows/s / default "
                f"model batch {default['batch']} {default['windows_s']:.2f} windows/s = {ratio_cpu:.2f}"
            )
    gpu, ratio = [], None
    if torch.cuda.is_available():
        gpu = bench_steps(args, cuda=True)
        ratio = gpu_ratio(loader, gpu)
    else:
        say("\n## 5. GPU\n")
        say("no GPU found (torch.cuda.is_available() is False): bf16 step time, GPU peak memory and the")
        say("loader / GPU consumption ratio are skipped")
    shutil.rmtree(args.work / "runs", ignore_errors=True)

    say("\n## Summary (Markdown)\n")
    say(markdown(info, corpus, loader, cpu, gpu, ratio))
    say(f"\ntotal benchmark time: {time.perf_counter() - t_start:.0f} s")
    if loader:  # the last line, in the form tooling reads: the largest worker count measured
        top = max(loader, key=lambda r: r["workers"])
        say(f"loader: {top['windows_s']:.1f} windows/s with {top['workers']} workers")


if __name__ == "__main__":
    main()
