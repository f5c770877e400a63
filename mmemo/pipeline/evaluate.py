"""`mmemo evaluate`: a trained run scored on the labelled clips of a features directory.

Every clip goes through ``prepare_inputs`` and ``infer``, the functions ``mmemo predict`` runs on a decoded file,
so a clip's predictions here are the very numbers ``predict`` gives for its media file (tested): what is scored is
what a user gets. Only labelled rows are scored.

Metrics per dimension (see ``mmemo.pipeline.metrics``): CCC pooled over all labelled frames of all clips, the
mean of per-clip CCCs (clips whose labels are constant, ``metrics.is_constant``, are left out of that mean and
have no CCC in ``clips.csv``: CCC needs variance), PCC, RMSE and MAE (pooled). One labelled clip is enough (the
two-clip minimum is a training rule).

Outputs, in ``--out``: ``metrics.json`` (everything, with the run, the features directory and the clip count),
``clips.csv`` (one row per clip: frames, labelled frames, per-dimension CCC / PCC / RMSE / MAE, mean prediction
and mean label), ``scatter.png`` (predicted against true, a sample of frames) and ``traces.png`` (the best and the
worst clips by mean CCC over the two dimensions).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mmemo import __version__, atomic
from mmemo.config import ExtractConfig
from mmemo.data.features_dir import load_corpus
from mmemo.data.labels import DIMENSIONS
from mmemo.data.shards import read_clip
from mmemo.errors import MmemoError
from mmemo.pipeline.metrics import clip_ccc, evaluate, mae, pcc, rmse
from mmemo.pipeline.plots import pyplot
from mmemo.pipeline.postprocess import POSTPROCESS_FILE, PostProcess
from mmemo.pipeline.postprocess import fit as fit_postprocess
from mmemo.pipeline.predict import Run, infer, load_run, prepare_inputs

# Settings that change the numbers of a feature: a features directory must agree with the run on all of them.
# (frame_codec only changes how frames are stored, skip_loop_filter frames by hundredths of a grey level; the
# features list is checked by name.)
# Face settings are checked by what the model reads (a model of whole frames ignores them): check_compatible.
_NOT_NUMERIC = ("frame_codec", "skip_loop_filter", "features", "faces", "face_size", "face_every")
_NUMERIC_KEYS = [k for k in ExtractConfig().to_dict() if k not in _NOT_NUMERIC]


@dataclass
class ClipPrediction:
    clip: str
    pred: np.ndarray  # (T, 2) valence, arousal (post-processed when the run has a fitted chain)
    truth: np.ndarray  # (T, 2), NaN where unlabelled
    mask: np.ndarray  # (T,) bool: labelled
    raw: np.ndarray | None = None  # (T, 2) the model's own outputs, when post-processing changed them


@dataclass
class Evaluation:
    metrics: dict[str, dict[str, float]]  # dimension -> ccc, ccc_clip, pcc, rmse, mae
    clips: pd.DataFrame  # one row per clip
    results: list[ClipPrediction]
    fps: int = 25
    metrics_raw: dict[str, dict[str, float]] | None = None  # before post-processing (None: none was applied)
    postprocess: dict | None = None  # the chain applied (mmemo.pipeline.postprocess.PostProcess.to_dict)

    def to_json(self, run_dir: str, features_dir: str) -> dict:
        out = {
            "run": str(run_dir),
            "features": str(features_dir),
            "clips": len(self.results),
            "frames": int(sum(r.mask.sum() for r in self.results)),
            "metrics": _nums(self.metrics),
            "mmemo_version": __version__,
        }
        if self.metrics_raw is not None:
            out |= {"metrics_before_postprocess": _nums(self.metrics_raw), "postprocess": self.postprocess}
        return out


def _nums(metrics: dict[str, dict[str, float]]) -> dict:
    return {d: {k: _num(v) for k, v in m.items()} for d, m in metrics.items()}


def _num(v: float) -> float | None:
    return None if not np.isfinite(v) else round(float(v), 6)


def check_compatible(run: Run, cfg: ExtractConfig, where: str) -> None:
    """A run only makes sense on features computed the way its training features were."""
    mine, theirs = run.extract_cfg.to_dict(), cfg.to_dict()
    diff = [k for k in _NUMERIC_KEYS if mine[k] != theirs[k]]
    if diff:
        k = diff[0]
        raise MmemoError(
            f"{where}: extracted with {k}={theirs[k]!r} but the run was trained on {k}={mine[k]!r}; "
            "re-extract with the run's settings (its config.json) or evaluate another run"
        )
    missing = [n for n in run.feature_names if n not in cfg.features]
    if missing:
        raise MmemoError(f"{where}: has no {', '.join(missing)} feature(s), which the run's model reads")
    sides = dict(cfg.imports)
    for imp in run.imports:
        flag = f"{imp.name}:audio" if imp.side == "audio" else imp.name
        if imp.name not in sides:
            raise MmemoError(f"{where}: extracted without --import {flag}=DIR, which the run's model reads "
                             f"({imp.side} side): re-extract with it")  # fmt: skip
        if sides[imp.name] != imp.side:
            raise MmemoError(f"{where}: import {imp.name} was extracted for the {sides[imp.name]} side, the run's "
                             f"model reads it on the {imp.side} side: re-extract with --import {flag}=DIR")  # fmt: skip
    if run.visual == "faces" and run.model_cfg.video:
        if not cfg.faces:
            raise MmemoError(f"{where}: extracted without faces (--faces off or before faces existed), but the run "
                             "was trained on faces: re-extract with --faces on (the default)")  # fmt: skip
        if cfg.face_size != run.extract_cfg.face_size:
            raise MmemoError(f"{where}: extracted with face_size={cfg.face_size} but the run was trained on "
                             f"face_size={run.extract_cfg.face_size}; re-extract with --face-size "
                             f"{run.extract_cfg.face_size}")  # fmt: skip


def predict_shard(run: Run, shard: str | os.PathLike) -> ClipPrediction:
    """The run's predictions (T, 2) for one extracted clip, with its labels."""
    clip = read_clip(shard, frames=run.model_cfg.video)
    faces = (clip.faces, clip.face_mask) if clip.faces is not None else None
    for imp in run.imports:
        if imp.name not in clip.imports:
            flag = f"{imp.name}:audio" if imp.side == "audio" else imp.name
            raise MmemoError(f"{Path(shard).parent}: {Path(shard).name} was extracted without --import {flag}=DIR, "
                             f"which the run's model reads ({imp.side} side): re-extract with it")  # fmt: skip
        cols = clip.import_columns[imp.name]
        if cols and tuple(cols) != imp.columns:
            raise MmemoError(f"{shard}: import {imp.name} holds columns {', '.join(cols[:4])}... ({len(cols)}), the "
                             f"run's model reads {', '.join(imp.columns[:4])}... ({len(imp.columns)})")  # fmt: skip
    inputs = prepare_inputs(run, clip.features, clip.frames, _mask(clip.audio_mask, clip), clip.video_mask, str(shard),
                            faces, clip.imports)  # fmt: skip
    raw = infer(run, *inputs)
    y = run.post.apply(raw) if run.post is not None else raw
    kept = raw if run.post is not None else None
    if clip.label_mask is None:
        return ClipPrediction(clip.clip_id, y, np.full_like(y, np.nan), np.zeros(len(y), bool), kept)
    truth = np.stack([clip.valence, clip.arousal], axis=1)
    return ClipPrediction(clip.clip_id, y, truth, clip.label_mask.astype(bool), kept)


def _mask(m: np.ndarray | None, clip) -> np.ndarray:
    return m if m is not None else np.zeros(clip.n_frames, bool)


def evaluate_features(run: Run, features_dir: str | os.PathLike, log=lambda s: None) -> Evaluation:
    """Score ``run`` on every labelled, extracted clip of ``features_dir`` (one is enough)."""
    corpus = load_corpus(features_dir, min_clips=1)
    check_compatible(run, corpus.extract_cfg, str(features_dir))
    results = []
    for i, ref in enumerate(corpus.clips, 1):
        results.append(predict_shard(run, ref.path))
        log(f"[{i}/{len(corpus.clips)}] {ref.clip_id}")
    metrics = {
        d: evaluate([r.pred[r.mask, k] for r in results], [r.truth[r.mask, k] for r in results])
        for k, d in enumerate(DIMENSIONS)
    }
    raw = None
    if run.post is not None:  # the same clips before the chain: what post-processing bought, or cost
        raw = {
            d: evaluate([r.raw[r.mask, k] for r in results], [r.truth[r.mask, k] for r in results])
            for k, d in enumerate(DIMENSIONS)
        }
    return Evaluation(metrics, _clip_table(results), results, corpus.extract_cfg.fps, raw,
                      run.post.to_dict() if run.post is not None else None)  # fmt: skip


def _clip_table(results: list[ClipPrediction]) -> pd.DataFrame:
    rows = []
    for r in results:
        row: dict = {"clip": r.clip, "frames": len(r.pred), "labelled": int(r.mask.sum())}
        for k, d in enumerate(DIMENSIONS):
            p, t = r.pred[r.mask, k], r.truth[r.mask, k]
            row |= {
                f"{d}_ccc": clip_ccc(p, t),  # NaN for a constant truth, as in the per-clip mean
                f"{d}_pcc": pcc(p, t),
                f"{d}_rmse": rmse(p, t) if t.size else np.nan,
                f"{d}_mae": mae(p, t) if t.size else np.nan,
                f"{d}_pred_mean": float(p.mean()) if p.size else np.nan,
                f"{d}_true_mean": float(t.mean()) if t.size else np.nan,
            }
        rows.append(row)
    return pd.DataFrame(rows)


def format_table(metrics: dict[str, dict[str, float]]) -> str:
    """A fixed-width table: one row per dimension, one column per metric."""
    cols = [("ccc", "CCC"), ("ccc_clip", "CCC/clip"), ("pcc", "PCC"), ("rmse", "RMSE"), ("mae", "MAE")]
    lines = [f"{'':8s}" + "".join(f"{name:>10s}" for _, name in cols)]
    for d, m in metrics.items():
        lines.append(f"{d:8s}" + "".join(f"{m[k]:10.4f}" for k, _ in cols))
    return "\n".join(lines)


def write_evaluation(ev: Evaluation, out_dir: str | os.PathLike, run_dir: str, features_dir: str) -> Path:
    """metrics.json, clips.csv, scatter.png and traces.png in ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic.write_json(out / "metrics.json", ev.to_json(run_dir, features_dir))
    ev.clips.round(6).to_csv(out / "clips.csv", index=False)
    _scatter(ev.results, out / "scatter.png")
    _traces(ev, out / "traces.png")
    return out


def _scatter(results: list[ClipPrediction], path: Path, max_points: int = 20000) -> None:
    plt = pyplot()
    p = np.concatenate([r.pred[r.mask] for r in results]) if results else np.zeros((0, 2))
    t = np.concatenate([r.truth[r.mask] for r in results]) if results else np.zeros((0, 2))
    if len(p) > max_points:  # a fixed sample keeps the figure light and the same from run to run
        keep = np.random.default_rng(0).choice(len(p), max_points, replace=False)
        p, t = p[keep], t[keep]
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.2))
    for k, (ax, d) in enumerate(zip(axes, DIMENSIONS, strict=True)):
        ax.scatter(t[:, k], p[:, k], s=3, alpha=0.3)
        ax.plot([-1, 1], [-1, 1], color="grey", lw=0.8)
        ax.set(xlabel=f"true {d}", ylabel=f"predicted {d}", xlim=(-1.05, 1.05), ylim=(-1.05, 1.05), title=d)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _traces(ev: Evaluation, path: Path, n: int = 2) -> None:
    """The ``n`` best and ``n`` worst clips by mean per-clip CCC (clips without a CCC left out)."""
    plt = pyplot()
    score = ev.clips[[f"{d}_ccc" for d in DIMENSIONS]].mean(axis=1, skipna=True)
    order = [i for i in np.argsort(score.to_numpy()) if np.isfinite(score.iloc[i])]
    if not order:  # clip-level labels only: no per-clip CCC, show the first clips
        order = list(range(len(ev.results)))
    tags = {i: "worst" for i in order[:n]} | {i: "best" for i in order[::-1][:n]}
    picks = list(dict.fromkeys(order[::-1][:n] + order[:n]))
    fig, axes = plt.subplots(len(picks), 2, figsize=(10, 2.2 * max(1, len(picks))), squeeze=False)
    for row, i in enumerate(picks):
        r = ev.results[i]
        t = np.arange(len(r.pred)) / ev.fps
        tag = tags[i]
        for k, d in enumerate(DIMENSIONS):
            ax = axes[row, k]
            ax.plot(t, np.where(r.mask, r.truth[:, k], np.nan), color="black", lw=1, label="true")
            ax.plot(t, r.pred[:, k], color="tab:red", lw=1, label="predicted")
            ax.set(title=f"{r.clip} ({tag}): {d}, CCC {ev.clips[f'{d}_ccc'].iloc[i]:.3f}", xlabel="s", ylim=(-1.1, 1.1))
    axes[0, 0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ------------------------------------------------------------------------------------------- at the end of a run
def fit_run_postprocess(run_dir: str | Path, features_dir: str | Path, val_clips: list[str], target: str,
                        log=print) -> PostProcess | None:  # fmt: skip
    """Fit the chain of a finished run (its best.pt) on its validation clips' whole-clip predictions and save it
    as ``RUN_DIR/postprocess.json``; returns it, or None when there is nothing to fit on: no validation clip, or
    labels per clip (``target`` "clip": a clip's rows share one value, nothing to smooth or delay)."""
    path = Path(run_dir) / POSTPROCESS_FILE
    if target != "frame" or not val_clips:
        path.unlink(missing_ok=True)  # an older run's chain would not describe this one
        why = "labels per clip" if target != "frame" else "no validation clips"
        log(f"post-processing: not fitted ({why})")
        return None
    run = load_run(run_dir)
    run.post = None  # the model's own outputs
    wanted = set(val_clips)
    shards = [c.path for c in load_corpus(features_dir, min_clips=1).clips if c.clip_id in wanted]
    clips = []
    for shard in shards:
        p = predict_shard(run, shard)
        clips.append((p.pred, np.nan_to_num(p.truth), p.mask))
    post = fit_postprocess(clips, run.extract_cfg.fps)
    post.save(run_dir)
    words = "; ".join(
        f"{d} CCC {c.ccc_before:.3f} -> {c.ccc_after:.3f} ({c.describe()})"
        for d, c in zip(DIMENSIONS, post.chains(), strict=True)
        if c.ccc_before is not None
    )
    log(f"post-processing fitted on {len(shards)} validation clip(s): {words or 'nothing to fit'}")
    return post
