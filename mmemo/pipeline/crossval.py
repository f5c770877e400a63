"""`mmemo train --folds K --seeds S`: the field's protocol, grouped K-fold cross-validation repeated over seeds.

Folds: the clips' groups (``--group-by COLUMN``; by default the label table's ``speaker`` column when it has one,
else every clip is its own group) are shuffled with the seed and dealt, largest first, to the fold with the fewest
clips, so folds are balanced and **a group never straddles two folds** (subject-independent when the groups are
speakers). Each seed repeats the whole protocol with another shuffle and another model initialisation.

In each fold the transformer trains on the other folds, holding ``val_fraction`` of their groups out for early
stopping (the test fold is never looked at until the best checkpoint is chosen), then predicts the test fold's
clips through ``prepare_inputs`` + ``infer``, the path of ``mmemo predict`` and ``mmemo evaluate``. A small corpus
(under ``SMALL_CORPUS_S`` of media) labelled per clip gets no validation share unless one is asked for
(``CV_SMALL_VAL_FRACTION``): the transformer trains on every training clip for the whole schedule and keeps its
last epoch, what ``mmemo train --val-fraction 0`` does. Two reference baselines are scored on the very same folds:

- **training mean**: every test frame gets the mean label of the training clips. A constant prediction has no
  covariance with the truth, so its CCC is 0 by construction: the floor a model must clear.
- **ridge**: ridge regression on clip-level statistics (mean and standard deviation over the clip's rows of every
  audio feature column, and of 4x4 RGB thumbnails of the frames when there is video; with ``--import`` streams, the
  mean and standard deviation of their columns and their share of rows present: the inputs the transformer reads),
  standardised on the training clips, the penalty chosen from a grid by leave-one-out error on the training clips
  (closed form).

With ``ensemble`` M > 1, each fold trains M transformers (``seed<S>/fold<K>/member<j>/``, each with its own seed:
initialisation, validation share, augmentations) and the transformer's prediction is the mean of theirs.

Scores: for corpora labelled per clip, one value per clip (the mean of the model's frame predictions against the
clip's label); for time-continuous labels, pooled over all labelled frames of the fold. CCC, PCC and RMSE per
dimension, per fold and seed (``folds.csv``), summarised as mean +- std over all folds x seeds
(``results.json``, ``results.md``), with the transformer's margin over ridge (``margin``: does it beat ridge by
more than the seed-to-seed noise?). Every fold's run directory is kept (``seed<S>/fold<K>/``); a fold whose
``result.json`` exists is not trained again, so an interrupted cross-validation resumes where it stopped.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from mmemo import atomic
from mmemo.config import SMALL_CORPUS_S, TrainConfig
from mmemo.data.dataset import pool_frames
from mmemo.data.features_dir import LabelledCorpus, clip_groups, label_columns, load_corpus, media_seconds
from mmemo.data.labels import DIMENSIONS
from mmemo.data.shards import ClipData, open_shard, read_clip, read_import
from mmemo.errors import ConfigError
from mmemo.pipeline.evaluate import predict_shard
from mmemo.pipeline.metrics import ccc, pcc, rmse
from mmemo.pipeline.predict import load_run
from mmemo.pipeline.train import Trainer, train_val_split

MODELS = ("transformer", "ridge", "mean")
# A small corpus (under SMALL_CORPUS_S of media) labelled per clip is cross-validated without a validation share:
# each fold's transformer trains on every training clip for the whole schedule and keeps its last epoch. Early
# stopping on the 3-5 labels a validation share holds picked epochs by noise (docs/training.md, "Real data: what
# was tried"). Time-continuous labels give a validation share hundreds of labelled rows: they keep theirs.
CV_SMALL_VAL_FRACTION = 0.0
# Seed offset between the members of a fold's ensemble: far from the protocol's own seeds (seed, seed + 1, ...).
MEMBER_SEED_STEP = 1000
RIDGE_ALPHAS = tuple(10.0**k for k in range(-2, 5))


# ---------------------------------------------------------------------------------------------------- folds
def group_keys(corpus: LabelledCorpus, group_by: str | None) -> tuple[list[str], str | None]:
    """Each clip's group and the column used: ``group_by``, else the labels' ``speaker`` column, else the clip."""
    column = group_by or ("speaker" if "speaker" in label_columns(corpus) else None)
    return clip_groups(corpus, column), column


def grouped_folds(keys: list[str], k: int, seed: int) -> list[list[int]]:
    """``k`` lists of clip indices; clips of one group always land in the same list. Balanced by clip count."""
    groups: dict[str, list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    if k < 2:
        raise ConfigError(f"--folds {k}: cross-validation needs at least 2 folds")
    if len(groups) < k:
        raise ConfigError(f"--folds {k}: only {len(groups)} group(s) to deal out; use at most {len(groups)} folds")
    names = sorted(groups)
    random.Random(seed).shuffle(names)
    names.sort(key=lambda g: -len(groups[g]))  # stable: equal sizes keep the seeded order
    folds: list[list[int]] = [[] for _ in range(k)]
    for g in names:
        min(folds, key=len).extend(groups[g])
    return [sorted(f) for f in folds]


# ------------------------------------------------------------------------------------------------ baselines
def clip_statistics(
    clip: ClipData, feature_names: list[str], imports: list[tuple[np.ndarray, np.ndarray]] = ()
) -> np.ndarray:
    """(F,) mean and std over the clip's rows of each audio feature column (+ 4x4 RGB thumbnails of its frames,
    when they were read; + for each ``--import`` stream the transformer reads, given as (values (T, D), mask (T,)),
    the mean and std of its columns over its present rows and the share of rows present; NaN where the clip has no
    present row, which ``impute`` fills with the training folds' means)."""
    parts = []
    if clip.features:
        x = np.concatenate([clip.features[n] for n in feature_names], axis=1).astype(np.float64)
        m = clip.audio_mask if clip.audio_mask is not None and clip.audio_mask.any() else np.ones(len(x), bool)
        parts += [x[m].mean(0), x[m].std(0)]
    if clip.frames is not None:
        f = pool_frames(clip.frames, 4).reshape(len(clip.frames), -1).astype(np.float64) / 255.0
        m = clip.video_mask if clip.video_mask is not None and clip.video_mask.any() else np.ones(len(f), bool)
        parts += [f[m].mean(0), f[m].std(0)]
    for values, mask in imports:
        mask = np.asarray(mask, bool)
        v = values[mask].astype(np.float64)
        nan = np.full(values.shape[1], np.nan)
        parts += [v.mean(0) if len(v) else nan, v.std(0) if len(v) else nan, [mask.mean() if len(mask) else 0.0]]
    return np.concatenate(parts) if parts else np.zeros(0)


def corpus_statistics(
    corpus: LabelledCorpus, imports: tuple[str, ...] | None = None
) -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
    """Every clip's ``clip_statistics`` (N, F), with the ``--import`` streams the transformer reads (``imports``:
    None every one the corpus holds, as ``TrainConfig.imports``), and its labels (T, 2) with their mask (T,)."""
    names = list(corpus.extract_cfg.features)
    available = dict(corpus.extract_cfg.imports)
    wanted = [n for n in (available if imports is None else imports) if n in available]
    streams = []
    for ref in corpus.clips:
        with open_shard(ref.path) as h5:
            streams.append([read_import(h5, n) for n in wanted])
    # a clip without an import's file stores (T, 0) values: give it the import's width, every row masked
    widths = [max(s[j][0].shape[1] for s in streams) for j in range(len(wanted))]
    stats, targets = [], []
    for ref, clip_streams in zip(corpus.clips, streams, strict=True):
        clip = read_clip(ref.path, frames=corpus.has_video)
        clip_streams = [(v, m) if v.shape[1] == w else (np.full((len(m), w), np.nan), np.zeros(len(m), bool))
                        for (v, m), w in zip(clip_streams, widths, strict=True)]  # fmt: skip
        stats.append(clip_statistics(clip, names, clip_streams))
        targets.append((np.stack([clip.valence, clip.arousal], axis=1), clip.label_mask.astype(bool)))
    return np.stack(stats), targets


def impute(X: np.ndarray, rows: list[int]) -> np.ndarray:
    """X (N, F) with each NaN replaced by its column's mean over ``rows`` (the training clips; 0 where none of
    them has a value): a clip without an import's file gets the training clips' typical statistics."""
    X, train = X.copy(), X[rows]
    ok = ~np.isnan(train)
    n = ok.sum(0)
    fill = np.where(ok, train, 0.0).sum(0) / np.maximum(n, 1)  # (F,): 0 where no training clip has a value
    nan = np.isnan(X)
    X[nan] = np.broadcast_to(fill, X.shape)[nan]
    return X


def ridge_fit(X: np.ndarray, Y: np.ndarray, alphas=RIDGE_ALPHAS) -> tuple[np.ndarray, np.ndarray, float]:
    """Ridge regression of Y (n, K) on X (n, F) with intercept; the penalty by leave-one-out squared error.

    X is standardised inside (the returned weights apply to raw X). Closed form through the SVD of the centred,
    scaled X = U S V^T: hat matrix H = U diag(s^2 / (s^2 + a)) U^T, leave-one-out residual e_i / (1 - H_ii).

    Returns:
        (W (F, K), b (K,), alpha) such that ``X @ W + b`` predicts Y.
    """
    mu, sd = X.mean(0), X.std(0)
    sd = np.where(sd > 1e-12, sd, 1.0)
    Z = (X - mu) / sd
    ym = Y.mean(0)
    Yc = Y - ym
    U, s, Vt = np.linalg.svd(Z, full_matrices=False)
    UtY = U.T @ Yc
    best = (np.inf, alphas[0])
    for a in alphas:
        d = s**2 / (s**2 + a)
        fitted = U @ (d[:, None] * UtY)
        h = np.einsum("ij,j,ij->i", U, d, U)  # diag(H)
        # Centring costs one degree of freedom: with the intercept, H_ii gains 1/n.
        loo = (Yc - fitted) / (1.0 - h - 1.0 / len(Z))[:, None]
        err = float(np.mean(loo**2))
        if err < best[0]:
            best = (err, a)
    a = best[1]
    Wz = Vt.T @ ((s / (s**2 + a))[:, None] * UtY)  # (F, K) on the standardised scale
    W = Wz / sd[:, None]
    return W, ym - mu @ W, a


# ---------------------------------------------------------------------------------------------------- scores
def score(preds: list[np.ndarray], truths: list[np.ndarray], masks: list[np.ndarray], level: str) -> dict:
    """CCC, PCC, RMSE per dimension: per clip (frame mean vs the clip's label) or pooled over labelled frames."""
    if level == "clip":  # in float64: float32 means of one repeated value differ by more than rounding allows
        p = np.stack([np.asarray(x[m], np.float64).mean(0) for x, m in zip(preds, masks, strict=True)])
        t = np.stack([np.asarray(y[m], np.float64).mean(0) for y, m in zip(truths, masks, strict=True)])
    else:
        p = np.concatenate([x[m] for x, m in zip(preds, masks, strict=True)])
        t = np.concatenate([y[m] for y, m in zip(truths, masks, strict=True)])
    return {d: {"ccc": ccc(p[:, k], t[:, k]), "pcc": pcc(p[:, k], t[:, k]), "rmse": rmse(p[:, k], t[:, k])}
            for k, d in enumerate(DIMENSIONS)}  # fmt: skip


# --------------------------------------------------------------------------------------------------- protocol
def cross_validate(
    features_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    cfg: TrainConfig,
    model_overrides: dict | None = None,
    *,
    folds: int = 5,
    seeds: int = 1,
    ensemble: int = 1,
    log: Callable[[str], None] = print,
    progress: bool = False,
) -> dict:
    """Run the protocol of the module docstring; returns the summary written to ``out_dir/results.json``.

    ``ensemble``: transformers trained per fold (each with its own seed and validation share), their predictions
    averaged; 1 is a single model."""
    if ensemble < 1:
        raise ConfigError(f"ensemble {ensemble}: at least one model per fold")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    corpus = load_corpus(features_dir)
    keys, column = group_keys(corpus, cfg.group_by)
    level = "clip" if all(corpus.label_kinds.get(c.clip_id) == "clip" for c in corpus.clips) else "frame"
    stats, targets = corpus_statistics(corpus, cfg.imports)
    data = _Data(corpus, stats, targets, level)
    small = media_seconds(corpus.clips, corpus.extract_cfg.fps) < SMALL_CORPUS_S
    if cfg.val_fraction is None and small and level == "clip":  # the test fold is the held-out set
        cfg = dataclasses.replace(cfg, val_fraction=CV_SMALL_VAL_FRACTION)
    log(
        f"{folds}-fold cross-validation x {seeds} seed(s) on {len(corpus.clips)} clips, "
        + (f"grouped by {column} ({len(set(keys))} groups)" if column else "each clip its own group")
        + f"; scored per {level}"
        + (f"; {ensemble} transformers per fold, predictions averaged" if ensemble > 1 else "")
        + ("; no validation share: each fold's transformer trains on every training clip for the whole schedule"
           if cfg.val_fraction == 0 else "")
    )  # fmt: skip
    rows = []
    for s in range(seeds):
        seed = cfg.seed + s
        for k, test_idx in enumerate(grouped_folds(keys, folds, seed)):
            fold_dir = out / f"seed{seed}" / f"fold{k}"
            done = fold_dir / "result.json"
            if done.exists():
                rows += json.loads(done.read_text())
                log(f"seed {seed} fold {k}: done before ({done})")
                continue
            fold_cfg = dataclasses.replace(cfg, seed=seed, group_by=column)
            fold_rows = _run_fold(features_dir, fold_dir, fold_cfg, model_overrides, data, test_idx, progress, ensemble)
            atomic.write_text(done, json.dumps(fold_rows, indent=1) + "\n")  # its existence marks the fold done
            rows += fold_rows
            c = {(r["model"], r["dimension"]): r["ccc"] for r in fold_rows}
            log(
                f"seed {seed} fold {k}: {len(test_idx)} test clips; CCC valence {c['transformer', 'valence']:.3f} / "
                f"arousal {c['transformer', 'arousal']:.3f} (ridge {c['ridge', 'valence']:.3f} / "
                f"{c['ridge', 'arousal']:.3f}); run in {fold_dir}"
            )
    table = pd.DataFrame(rows)
    table.to_csv(out / "folds.csv", index=False)
    summary = summarise(
        table,
        folds=folds,
        seeds=seeds,
        level=level,
        group=column,
        n_clips=len(corpus.clips),
        ensemble=ensemble,
        val_fraction=cfg.val_fraction,
    )
    atomic.write_json(out / "results.json", summary)
    atomic.write_text(out / "results.md", format_markdown(summary) + "\n")
    return summary


@dataclasses.dataclass
class _Data:
    corpus: LabelledCorpus
    stats: np.ndarray  # (N, F) clip statistics for the ridge baseline
    targets: list[tuple[np.ndarray, np.ndarray]]  # per clip: labels (T, 2), label mask (T,)
    level: str  # "clip" or "frame"


def _run_fold(features_dir, fold_dir: Path, cfg: TrainConfig, model_overrides: dict | None, data: _Data,
              test_idx: list[int], progress: bool, ensemble: int = 1) -> list[dict]:  # fmt: skip
    """Train on the other folds (early stopping on a grouped share of them), score the three models on this one.

    With ``ensemble`` M > 1 the fold trains M transformers in ``fold_dir/member<j>/``, member j with seed
    ``seed + MEMBER_SEED_STEP * j`` (another initialisation, another validation share, other augmentations), and
    the transformer's prediction of a test clip is the mean of theirs (``ensemble_predict``)."""
    clips, targets = data.corpus.clips, data.targets
    test = set(test_idx)
    train_idx = [i for i in range(len(clips)) if i not in test]
    fold_corpus = dataclasses.replace(data.corpus, clips=[clips[i] for i in train_idx])
    runs = []
    for j in range(ensemble):
        member_cfg = dataclasses.replace(cfg, seed=cfg.seed + MEMBER_SEED_STEP * j)
        member_dir = fold_dir if ensemble == 1 else fold_dir / f"member{j}"
        train, val = train_val_split(fold_corpus, member_cfg)
        done = member_dir / "member.json"  # a member trained to the end: an interrupted ensemble keeps it
        if ensemble == 1 or not done.exists():
            with Trainer(features_dir, member_dir, member_cfg, model_overrides, log=lambda m: None,
                         progress=progress, clips=(train, val), plots=False) as trainer:  # fmt: skip
                trainer.fit()
            if ensemble > 1:
                atomic.write_json(done, {"seed": member_cfg.seed, "epochs": trainer.epoch})
        runs.append(load_run(member_dir))  # its best.pt: chosen on its validation share, never on the test fold
    labelled = [targets[i][0][targets[i][1]] for i in train_idx]
    mean = np.concatenate(labelled).astype(np.float64).mean(0)
    stats = impute(data.stats, train_idx)
    W, b, alpha = ridge_fit(stats[train_idx], np.stack([y.mean(0) for y in labelled]))
    preds = {
        "transformer": [ensemble_predict(runs, clips[i].path) for i in test_idx],
        "ridge": [np.broadcast_to(stats[i] @ W + b, targets[i][0].shape) for i in test_idx],
        "mean": [np.broadcast_to(mean, targets[i][0].shape) for i in test_idx],
    }
    rows = []
    for model in MODELS:
        sc = score(preds[model], [targets[i][0] for i in test_idx], [targets[i][1] for i in test_idx], data.level)
        rows += [{"seed": cfg.seed, "fold": int(fold_dir.name[4:]), "model": model, "dimension": d, **sc[d],
                  "test_clips": len(test_idx), "train_clips": len(train), "val_clips": len(val),
                  "ridge_alpha": alpha} for d in DIMENSIONS]  # fmt: skip
    return rows


def ensemble_predict(runs: list, shard: str | os.PathLike) -> np.ndarray:
    """(T, 2): the mean of the runs' frame predictions for one extracted clip (one run: its own prediction)."""
    return np.mean([predict_shard(run, shard).pred for run in runs], axis=0)


def summarise(table: pd.DataFrame, **info) -> dict:
    """mean and std (over folds x seeds) of each metric, per model and dimension; with ``margin``, the
    transformer's CCC against ridge's (``summary["margin"][dimension]``)."""
    result: dict = {**info, "models": {}}
    for model in MODELS:
        sub = table[table["model"] == model]
        per_dim = {d: sub[sub["dimension"] == d] for d in DIMENSIONS}
        result["models"][model] = {
            d: {m: {"mean": _r(x[m].mean()), "std": _r(x[m].std(ddof=0))} for m in ("ccc", "pcc", "rmse")}
            for d, x in per_dim.items()
        }
    result["margin"] = {d: margin(table, d) for d in DIMENSIONS}
    return result


def margin(table: pd.DataFrame, dimension: str, a: str = "transformer", b: str = "ridge", metric: str = "ccc") -> dict:
    """Does model ``a`` beat model ``b`` by more than the seed-to-seed noise? (docs/training.md)

    Each seed is one complete repetition of the protocol (its own folds and initialisations), so the unit of
    noise is the seed: ``d_s`` = the mean over seed s's folds of (a - b), the paired difference on the same test
    clips. ``a`` beats ``b`` when the mean of ``d_s`` over seeds exceeds the standard deviation of ``d_s`` over
    seeds (sample std, n - 1); with one seed there is no seed-to-seed noise to compare with, so no verdict
    (``beats`` None). Also given: the paired differences over all folds x seeds (mean, std, how many ``a`` won).

    Returns:
        {"per_seed": [d_s, ...], "mean", "seed_std", "paired_mean", "paired_std", "wins", "n", "beats"}
    """
    rows = table[(table["dimension"] == dimension) & table["model"].isin((a, b))]
    wide = rows.pivot_table(index=["seed", "fold"], columns="model", values=metric)
    diff = (wide[a] - wide[b]).dropna()
    per_seed = diff.groupby(level="seed").mean()
    mean = float(per_seed.mean()) if len(per_seed) else math.nan
    seed_std = float(per_seed.std(ddof=1)) if len(per_seed) > 1 else math.nan
    return {
        "per_seed": [_r(v) for v in per_seed],
        "mean": _r(mean),
        "seed_std": _r(seed_std),
        "paired_mean": _r(diff.mean()),
        "paired_std": _r(diff.std(ddof=1)) if len(diff) > 1 else None,
        "wins": int((diff > 0).sum()),
        "n": len(diff),
        "beats": None if not math.isfinite(seed_std) else bool(mean > seed_std),
    }


def _r(v: float) -> float | None:
    return None if not np.isfinite(v) else round(float(v), 4)


def format_markdown(summary: dict) -> str:
    """| model | valence CCC | PCC | RMSE | arousal CCC | PCC | RMSE | with mean +- std cells."""
    label = {"transformer": "mmemo transformer", "ridge": "ridge on clip statistics", "mean": "training mean"}
    head = "| model | " + " | ".join(f"{d} {m.upper()}" for d in DIMENSIONS for m in ("ccc", "pcc", "rmse")) + " |"
    lines = [
        f"{summary['folds']}-fold cross-validation x {summary['seeds']} seed(s), {summary['n_clips']} clips, "
        + (f"grouped by {summary['group']}" if summary["group"] else "clips as groups")
        + f", scored per {summary['level']}; mean +- std over folds x seeds",
        "",
        head,
        "|---" * 7 + "|",
    ]
    for model, dims in summary["models"].items():
        cells = []
        for d in DIMENSIONS:
            for m in ("ccc", "pcc", "rmse"):
                v = dims[d][m]
                cells.append("n/a" if v["mean"] is None else f"{v['mean']:.3f} +- {v['std'] or 0:.3f}")
        lines.append(f"| {label[model]} | " + " | ".join(cells) + " |")
    if summary.get("margin"):
        lines.append("")
        lines += [margin_text(d, m) for d, m in summary["margin"].items()]
    return "\n".join(lines)


def margin_text(dimension: str, m: dict) -> str:
    """One line: the transformer's CCC minus ridge's, per seed and overall, and the verdict of ``margin``."""
    if m["mean"] is None:
        return f"{dimension}: transformer - ridge CCC undefined"
    seeds = " ".join(f"{v:+.3f}" for v in m["per_seed"] if v is not None)
    text = f"{dimension}: transformer - ridge CCC {m['mean']:+.3f} (per seed {seeds}"
    if m["beats"] is None:
        return text + f"; {m['wins']}/{m['n']} folds won): one seed, no seed-to-seed noise to compare with"
    verdict = "beats ridge by more than" if m["beats"] else "does not beat ridge by more than"
    return text + (
        f"; std over seeds {m['seed_std']:.3f}; {m['wins']}/{m['n']} folds won): the transformer "
        f"{verdict} the seed-to-seed noise"
    )
