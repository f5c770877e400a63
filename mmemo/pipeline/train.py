"""`mmemo train`: shards -> MultiModalTransformer, read top to bottom.

1. Clips: the labelled clips of the manifest (``mmemo.data.features_dir.load_corpus``), split by clip (or by
   ``group_by`` groups) into train / validation.
2. Statistics: per-dimension mean / std of the audio features on the training split (saved with the model), and
   of each ``--import`` stream the model reads (``TrainConfig.imports``) over its unmasked rows.
3. Model, AdamW, OneCycleLR with warm-up.
4. Each epoch: train on random windows (after each step, the moving average of the weights follows them when
   ``ema_decay`` > 0: that average is what is validated and saved), validate on windows covering every
   validation row, compute the field's metrics, print a table, append metrics.csv, draw curves, save last.pt (and
   best.pt when the validation mean CCC improves), stop early after ``patience`` epochs without improvement.

Checkpoints follow ``mmemo.model.checkpoint`` (data only, read with ``weights_only=True``). Only the training use
cases import this module (``crossval``, ``demo``): serving code (predict, stream, evaluate, export) never does.
"""

from __future__ import annotations

import dataclasses
import math
import os
import random
import sys
import time
from collections.abc import Callable, Collection
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from mmemo import __version__, atomic
from mmemo.config import FACE_SHARE_MIN, RESUMABLE, SMALL_CORPUS_S, SMALL_EMA_DECAY, TrainConfig
from mmemo.data import schema as S
from mmemo.data.dataset import (
    Augment,
    EpochSampler,
    ImportInput,
    ShardDataset,
    WindowLoader,
    augment_batch,
    face_share,
    feature_stats,
    import_inputs,
    import_stats,
    import_width,
    to_device,
)
from mmemo.data.features_dir import ClipRef, LabelledCorpus, load_corpus, media_seconds, split, val_fraction
from mmemo.data.labels import DIMENSIONS
from mmemo.data.shards import open_shard
from mmemo.errors import ConfigError, MmemoError
from mmemo.features.registry import feature_dims
from mmemo.model.averaging import WeightAverage
from mmemo.model.checkpoint import (
    CHECKPOINT_VERSION,
    SERVING_KEYS,
    TRAINING_KEYS,
    load_checkpoint,
    save_checkpoint,
)
from mmemo.model.config import ModelConfig
from mmemo.model.multimodal import MaskedBatchNorm, MultiModalTransformer
from mmemo.model.sync import global_batch_norms
from mmemo.pipeline.metrics import ccc, evaluate, is_constant
from mmemo.provenance import package_versions

# Under SMALL_CORPUS_S of training media the default model is this small one (docs/training.md, "Real data: what was
# tried": on a 47-clip speech corpus it did better than the default size in cross-validation). Its audio projection
# keeps each row's level (no LayerNorm).
SMALL_MODEL = {"hidden": 64, "layers": 2, "heads": 4, "dropout": 0.3, "stats_head": True, "audio_norm": False}
# ... and where the loss is on clip means (per-clip labels), its fused states are not batch-normalised: with a batch
# of a few clips, batch statistics normalise each clip by the ones it is batched with (47 real clips: +0.027
# valence, +0.009 arousal CCC). With time-continuous labels the batch norm stays: without it the demo's held-out
# valence fell (docs/training.md, "The audio LayerNorm and the fusion batch norm").
SMALL_CLIP_MODEL = {**SMALL_MODEL, "fusion_norm": "none"}
# Batches each DataLoader worker keeps in flight: PyTorch's default. 4 gave no more windows/s with 2 workers on 2
# cores (benchmarks/train.py --workers 2 --prefetch 4: 171-176 against 182-319 windows/s on a shared machine) and
# holds twice the batches in shared memory. Persistent workers: the spawn and imports are paid once per run.
PREFETCH_FACTOR = 2


# ----------------------------------------------------------------------------------------------------------- loss
def masked_ccc(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """CCC per output dimension over the masked positions of a batch: pred, target (B, T, K), mask (B, T) -> (K,)."""
    w = mask.to(pred.dtype)[..., None]  # (B, T, 1)
    n = w.sum().clamp_min(1.0)
    mp, mt = (pred * w).sum((0, 1)) / n, (target * w).sum((0, 1)) / n
    dp, dt = (pred - mp) * w, (target - mt) * w
    cov = (dp * dt).sum((0, 1)) / n
    vp, vt = (dp**2).sum((0, 1)) / n, (dt**2).sum((0, 1)) / n
    return 2 * cov / (vp + vt + (mp - mt) ** 2 + 1e-8)


def clip_means(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> tuple:
    """(B, T, K), (B, T, K), (B, T) -> masked means over time as (B, 1, K), (B, 1, K), (B, 1)."""
    w = mask.to(pred.dtype)[..., None]
    n = w.sum(1, keepdim=True).clamp_min(1.0)
    return (pred * w).sum(1, keepdim=True) / n, (target * w).sum(1, keepdim=True) / n, mask.any(1, keepdim=True)


def loss_fn(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, cfg: TrainConfig) -> torch.Tensor:
    """The configured loss over labelled positions only (unlabelled rows contribute nothing)."""
    w = mask.to(pred.dtype)[..., None]
    mse = (((pred - target) ** 2) * w).sum() / (w.sum() * pred.shape[-1]).clamp_min(1.0)
    if cfg.loss == "mse":
        return mse
    ccc_term = (1 - masked_ccc(pred, target, mask)).mean()
    return ccc_term if cfg.loss == "ccc" else cfg.ccc_weight * ccc_term + (1 - cfg.ccc_weight) * mse


# ---------------------------------------------------------------------------------------------------------- mixup
def mixup_batch(b: dict[str, torch.Tensor], lam: torch.Tensor, perm: torch.Tensor) -> dict[str, torch.Tensor]:
    """Mixup between the windows of a batch (Zhang et al. 2018): window i becomes lam_i x window i + (1 - lam_i) x
    window perm_i, inputs and labels alike, on the rows both hold (a pair of windows of unequal length is cut to
    the shorter: padding has no value to mix). ``b`` as ``to_device`` / ``augment_batch`` give it (standardised
    audio, frames in [0, 1]); lam (B,) in [0, 1], perm (B,) a permutation. Returns a new batch dict.

    A row keeps a modality (or a label) only where both windows have it: mixing a real row with an absent one
    would teach the model values no clip has."""
    out = dict(b)
    both = lambda key: b[key] & b[key][perm]  # noqa: E731  (B, T) bool
    out["pad_mask"] = pad = both("pad_mask")
    for key in ("audio_mask", "video_mask", "label_mask"):
        out[key] = both(key) & pad
    for key in ("audio", "frames", "labels", "video_import"):
        if key in b:
            x = b[key]
            w = lam.to(x.dtype).view(-1, *([1] * (x.dim() - 1)))  # (B, 1, ...)
            out[key] = w * x + (1 - w) * x[perm]
    if "has_audio" in b:
        out["has_audio"] = b["has_audio"] & b["has_audio"][perm]
    return out


def mixup_draw(batch_size: int, alpha: float, seed: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(lam (B,) ~ Beta(alpha, alpha), a permutation (B,)) for optimisation step ``step``: drawn from the seed and
    the step alone (not from the global RNG), so that a resumed run draws what an uninterrupted one does."""
    rng = np.random.default_rng([seed, step])
    perm = rng.permutation(batch_size)
    lam = rng.beta(alpha, alpha, size=batch_size)
    return torch.from_numpy(lam.astype(np.float32)), torch.from_numpy(perm)


# ------------------------------------------------------------------------------------------------------- training
def _rng_state() -> dict:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *map(float, np_state[2:])],
        "python": [list(x) if isinstance(x, tuple) else x for x in random.getstate()],
    }


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), float(cached)))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def _init_distributed() -> tuple[int, int, int]:
    """(rank, world size, local rank): torchrun's environment, or (0, 1, 0) for a plain process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, 0
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0"))


def _truncate_history(path: Path, epoch: int) -> None:
    """Drop metrics rows past the checkpoint's epoch (written before a kill, redone after the resume)."""
    if path.exists():
        h = pd.read_csv(path)
        if (h["epoch"] > epoch).any():
            h[h["epoch"] <= epoch].to_csv(path, index=False)


def unscorable(val_clips: list[ClipRef], target: str) -> str | None:
    """Why the validation mean CCC cannot be computed on ``val_clips`` (None when it can).

    CCC needs variance: per clip (``target`` "clip") it needs two validation clips whose mean labels differ, per
    frame two labelled rows that differ, in valence or in arousal.
    """
    rows, means = [], []
    for c in val_clips:
        with open_shard(c.path) as h5:
            if S.LABELS not in h5:
                continue
            m = h5[S.LABEL_MASK][()]
            y = np.stack([h5[S.VALENCE][()], h5[S.AROUSAL][()]], axis=1)[m].astype(np.float64)
        if len(y):
            rows.append(y)
            means.append(y.mean(0))
    if target == "clip":
        if len(means) < 2:
            return f"per-clip labels and {len(means)} labelled validation clip(s); CCC over clips needs 2"
        y, what = np.stack(means), "the validation clips' labels are all equal"
    else:
        y, what = (np.concatenate(rows) if rows else np.zeros((0, 2))), "the validation labels are constant"
    if len(y) < 2:
        return f"{len(y)} labelled validation row(s)"
    if all(is_constant(y[:, k]) for k in range(y.shape[1])):  # means of equal labels differ by rounding only
        return what
    return None


def _resumed_config(ckpt: dict, cfg: TrainConfig, given: Collection[str], model: dict, where: Path) -> TrainConfig:
    """The run's own TrainConfig, with the resumable fields the user gave; a ConfigError for any other change."""
    saved = TrainConfig.from_dict(ckpt["train_config"])
    changes = {}
    for name in given:
        new, old = getattr(cfg, name), getattr(saved, name)
        if name in RESUMABLE:
            changes[name] = new
        elif new != old:
            raise ConfigError(
                f"{where}: {name} {new!r} given, but the run was trained with {old!r}; it cannot change on "
                f"resume (only {', '.join(RESUMABLE)} can): start a new run with --out"
            )
    saved_model = ckpt["model_config"]
    for name, new in model.items():
        if saved_model.get(name) != new:
            raise ConfigError(
                f"{where}: model {name} {new!r} given, but the run's model has {saved_model.get(name)!r}; "
                "a resumed run keeps its model: start a new run with --out"
            )
    return dataclasses.replace(saved, **changes)


def train_val_split(corpus: LabelledCorpus, cfg: TrainConfig) -> tuple[list[ClipRef], list[ClipRef]]:
    """(train, validation) clips: ``split``'s seeded, grouped split, or with ``val_fraction`` 0 every clip for
    training and none for validation (no early stopping: the run ends with the schedule)."""
    if cfg.val_fraction == 0:
        return list(corpus.clips), []
    return split(corpus, cfg)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class Trainer:
    """Holds the run's state; ``fit()`` trains until the epochs are done or early stopping says stop.

    Use it as a context manager (``with Trainer(...) as t: t.fit()``): leaving the block shuts its DataLoader
    workers and, under torchrun, the process group down, whatever happened inside.
    """

    def __init__(
        self,
        features_dir: str | os.PathLike,
        run_dir: str | os.PathLike,
        cfg: TrainConfig,
        model_overrides: dict | None = None,
        *,
        resume: bool = False,
        log: Callable[[str], None] = print,
        progress: bool = True,
        clips: tuple[list[ClipRef], list[ClipRef]] | None = None,
        plots: bool = True,
        given: Collection[str] = (),
    ) -> None:
        """``clips``: an explicit (train, validation) split (cross-validation) instead of ``split``'s;
        ``plots``: draw learning_curves.png / val_traces.png after every epoch;
        ``given``: with ``resume``, the fields of ``cfg`` the user set. Those of ``RESUMABLE`` (epochs, patience,
        workers, frame cache) apply to the resumed run; any other that differs from the run's, and any model size
        in ``model_overrides`` that differs, is refused (as nanoGPT's init_from="resume" keeps the run's)."""
        self.rank, self.world, local = _init_distributed()
        self.is_main = self.rank == 0
        self.run_dir, self.progress = Path(run_dir), progress and self.rank == 0
        self.log = log if self.is_main else (lambda s: None)  # one voice: rank 0 logs and writes
        self.device = torch.device(f"cuda:{local}" if torch.cuda.is_available() else "cpu")
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        ckpt = None
        if resume:
            last = self.run_dir / "last.pt"
            if not last.exists():
                raise MmemoError(f"{self.run_dir}: no last.pt to resume from")
            ckpt = load_checkpoint(last, keys=SERVING_KEYS + TRAINING_KEYS)
            cfg = _resumed_config(ckpt, cfg, given, model_overrides or {}, last)
        seed_everything(cfg.seed)
        self.corpus = load_corpus(features_dir)
        self.train_clips, self.val_clips = clips if clips is not None else train_val_split(self.corpus, cfg)
        labelled_s = media_seconds(self.train_clips, self.corpus.extract_cfg.fps)
        small = labelled_s < SMALL_CORPUS_S
        # A small corpus makes a handful of steps an epoch: more epochs and more patience (validation is noisy).
        cfg = dataclasses.replace(
            cfg, epochs=cfg.epochs or (60 if small else 30), patience=cfg.patience or (15 if small else 8),
            val_fraction=val_fraction(self.corpus, cfg),
            ema_decay=cfg.ema_decay if cfg.ema_decay is not None else (SMALL_EMA_DECAY if small else 0.0),
        )  # fmt: skip
        self.cfg = cfg
        self.plots = plots
        kinds = {self.corpus.label_kinds.get(c.clip_id) for c in self.train_clips}
        self.target = cfg.target if cfg.target != "auto" else ("clip" if kinds == {"clip"} else "frame")
        # Early stopping and best.pt follow the validation mean CCC; where the validation labels cannot give one,
        # the validation loss, so that a run always ends with a usable best.pt. Without validation clips
        # (val_fraction 0) there is nothing to compare: every epoch is saved as best.pt, the last one stays.
        reason = unscorable(self.val_clips, self.target) if self.val_clips else None
        self.score_by = "last" if not self.val_clips else "ccc" if reason is None else "loss"
        if reason:
            self.log(f"validation CCC is undefined ({reason}): epochs are compared by validation loss")
        if not self.val_clips:
            self.log(f"no validation clips (val_fraction {cfg.val_fraction}): training on every clip for "
                     f"{cfg.epochs} epochs; best.pt is the last epoch")  # fmt: skip
        ecfg = self.corpus.extract_cfg
        self.feature_names = list(ecfg.features)
        if ckpt is not None:
            self.imports = [ImportInput.from_dict(d) for d in ckpt.get("imports", [])]
            self.mean, self.std = ckpt["feature_mean"].numpy(), ckpt["feature_std"].numpy()
            self.model_cfg = ModelConfig.from_dict(ckpt["model_config"])
        else:
            self.imports = self._imports(cfg)
            mean, std = feature_stats(self.train_clips, self.feature_names)
            # audio-side imports join the audio vector: their columns, then a presence column each
            a_mean, a_std = import_stats(self.imports, "audio")
            dims = sum(feature_dims(ecfg).values()) + import_width(self.imports, "audio")
            if mean.size == 0:  # no training clip has audio (silent videos): a model without the audio branch
                if a_mean.size:
                    raise ConfigError("no training clip has audio, so the audio-side imports "
                                      f"({', '.join(i.name for i in self.imports if i.side == 'audio')}) have no "
                                      "rows to ride with: extract them as video side (NAME=DIR)")  # fmt: skip
                self.log("no training clip has audio: the model has no audio branch (video only)")
                dims = 0
            self.mean, self.std = np.concatenate([mean, a_mean]), np.concatenate([std, a_std])
            base = {"audio_dim": dims, "video": self.corpus.has_video, "max_seq_len": cfg.max_seq_len,
                    "video_import_dim": import_width(self.imports, "video"),
                    "video_import_streams": sum(i.side == "video" for i in self.imports)}  # fmt: skip
            size = (SMALL_CLIP_MODEL if self.target == "clip" else SMALL_MODEL) if small else {}
            self.model_cfg = ModelConfig.from_dict({**base, **size, **(model_overrides or {})})
            if size and set(size) - set(model_overrides or {}):
                self.log(
                    f"{labelled_s / 60:.1f} min of training media (under {SMALL_CORPUS_S // 60} min): the small "
                    f"model ({', '.join(f'{k} {v}' for k, v in size.items())}) unless given otherwise; "
                    f"{cfg.epochs} epochs, patience {cfg.patience}"
                    + (f", weights averaged (EMA decay {cfg.ema_decay})" if cfg.ema_decay else "")
                )
        self.visual = self._visual(cfg, ckpt)
        self.model = MultiModalTransformer(self.model_cfg).to(self.device)
        self.net = self.model  # what the training step calls: the DDP wrapper under torchrun
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        cache = self.corpus.cache_dir if cfg.frame_cache and self.model_cfg.video else None
        self.train_set = ShardDataset(
            self.train_clips, self.feature_names, self.mean, self.std, max_len=cfg.max_seq_len, train=True,
            video_size=self.model_cfg.video_size, use_video=self.model_cfg.video,
            augment=Augment(enabled=cfg.augment), seed=cfg.seed, frame_cache=cache, visual=self.visual,
            imports=self.imports,
        )  # fmt: skip
        self.val_set = ShardDataset(
            self.val_clips, self.feature_names, self.mean, self.std, max_len=cfg.max_seq_len, train=False,
            video_size=self.model_cfg.video_size, use_video=self.model_cfg.video, frame_cache=cache,
            visual=self.visual, imports=self.imports,
        ) if self.val_clips else None  # fmt: skip
        per_rank = math.ceil(len(self.train_set) / self.world)
        steps = max(5, cfg.epochs * math.ceil(per_rank / cfg.batch_size))
        # OneCycleLR divides by (pct_start * steps - 1): keep the warm-up at least two steps long on tiny runs.
        self.sched = torch.optim.lr_scheduler.OneCycleLR(
            self.opt, max_lr=cfg.lr, total_steps=steps, pct_start=max(cfg.pct_start, min(0.5, 2.0 / steps))
        )
        self.epoch, self.step, self.best, self.bad_epochs = 0, 0, -math.inf, 0
        self.timing: dict[str, float] = {}
        self._starved_said = False
        self.train_loader: WindowLoader | None = None
        self.val_loader: WindowLoader | None = None
        # The averaged weights (when averaging): what is validated, saved as the checkpoint's "model" and served.
        self.ema = WeightAverage(self.model, cfg.ema_decay) if cfg.ema_decay > 0 else None
        if ckpt is not None:
            # with averaging, "model" holds the average and "model_live" the weights training goes on from
            if self.ema is not None and not {"model_live", "ema_updates"} <= set(ckpt):
                raise MmemoError(f"{self.run_dir / 'last.pt'}: the run averages its weights (ema_decay "
                                 f"{cfg.ema_decay}) but the checkpoint holds no model_live / ema_updates to go on "
                                 "from: damaged? start a new run with --out")  # fmt: skip
            self.model.load_state_dict(ckpt["model_live"] if self.ema is not None else ckpt["model"])
            if self.ema is not None:
                self.ema.load(ckpt["model"], ckpt["ema_updates"])
            self.opt.load_state_dict(ckpt["optimizer"])
            self.sched.load_state_dict(ckpt["scheduler"])
            self.epoch, self.step = int(ckpt["epoch"]), int(ckpt["step"])
            self.best, self.bad_epochs = float(ckpt["best"]), int(ckpt["bad_epochs"])
            _set_rng_state(ckpt["rng"])
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            # Unused parameters happen: a batch without video leaves the frame encoder out of the graph.
            ids = [self.device.index] if self.device.type == "cuda" else None
            if self.device.type == "cuda":  # the frame CNN's batch norms over the global batch (NCCL only)
                self.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
            else:  # gloo: the same statistics through mmemo's all-reduce (SyncBatchNorm refuses CPU tensors)
                global_batch_norms(self.model)
            for m in self.model.modules():  # the fusion's masked batch norm: any backend, gloo included
                if isinstance(m, MaskedBatchNorm):
                    m.sync = True
            self.net = DistributedDataParallel(self.model, device_ids=ids, find_unused_parameters=True)
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            if ckpt is None:
                self._write_config()
            else:
                _truncate_history(self.run_dir / "metrics.csv", self.epoch)

    def _imports(self, cfg: TrainConfig) -> list[ImportInput]:
        """The --import streams the model reads (``TrainConfig.imports``: None every one the features directory
        holds), with their columns and training statistics; says which, and the clips whose stream is masked."""
        available = dict(self.corpus.extract_cfg.imports)  # name -> side
        names = list(available) if cfg.imports is None else list(cfg.imports)
        unknown = [n for n in names if n not in available]
        if unknown:
            have = ", ".join(available) if available else "none: it was extracted without --import"
            raise ConfigError(f"--imports {','.join(names)}: {self.corpus.root} holds no import "
                              f"{', '.join(unknown)} (available: {have})")  # fmt: skip
        imports, empty = import_inputs(self.train_clips, [(n, available[n]) for n in names])
        for imp in imports:
            masked = empty[imp.name]
            note = (f"; masked in {len(masked)} of {len(self.train_clips)} training clips (no file or no usable "
                    f"row): {', '.join(masked[:5])}{' ...' if len(masked) > 5 else ''}") if masked else ""  # fmt: skip
            n = len(imp.columns)
            self.log(f"import {imp.name}: {n} column{'' if n == 1 else 's'} into the {imp.side} branch{note}")
        return imports

    def _visual(self, cfg: TrainConfig, ckpt: dict | None) -> str:
        """What the video branch sees: "faces" or "frames" (``TrainConfig.visual``; a resumed run keeps its own)."""
        if ckpt is not None:
            return str(ckpt.get("visual", "frames"))
        if not self.model_cfg.video:
            return "frames"
        share = face_share(self.train_clips)
        where = self.corpus.root
        if cfg.visual == "faces":
            if share is None:
                raise ConfigError(
                    f"{where}: --visual faces, but the features hold no faces (extracted with "
                    "--faces off, or before faces existed): run `mmemo extract` again with --faces on"
                )
            visual = "faces"
        elif cfg.visual == "frames" or share is None:
            visual = "frames"
        else:
            visual = "faces" if share >= FACE_SHARE_MIN else "frames"
        if share is not None:
            fallback = "; the whole frame where none" if visual == "faces" else ""
            self.log(f"faces found in {100 * share:.1f}% of the training clips' video rows: the video branch sees "
                     f"{'the aligned faces' + fallback if visual == 'faces' else 'whole frames'}"
                     + (f" (--visual auto needs {100 * FACE_SHARE_MIN:.0f}%)" if cfg.visual == "auto" and
                        visual == "frames" else ""))  # fmt: skip
        return visual

    # --------------------------------------------------------------------------------------------- bookkeeping
    def _write_config(self) -> None:
        record = {
            "train": self.cfg.to_dict(),
            "model": self.model_cfg.to_dict(),
            "extract": self.corpus.extract_cfg.to_dict(),
            "visual": self.visual,
            "imports": [i.to_dict() for i in self.imports],
            "train_clips": [c.clip_id for c in self.train_clips],
            "val_clips": [c.clip_id for c in self.val_clips],
            "device": str(self.device),
            "versions": {**package_versions(), "torch": torch.__version__},
        }
        atomic.write_json(self.run_dir / "config.json", record)

    @property
    def served(self) -> torch.nn.Module:
        """The weights that are validated and saved as the checkpoint's ``model``: the average when averaging."""
        return self.ema.module if self.ema is not None else self.model

    def checkpoint(self) -> dict:
        averaging = (
            {"model_live": self.model.state_dict(), "ema_updates": self.ema.updates} if self.ema is not None else {}
        )
        return {
            "version": CHECKPOINT_VERSION,
            "mmemo_version": __version__,
            "model": self.served.state_dict(),
            **averaging,
            "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict(),
            "epoch": self.epoch,
            "step": self.step,
            "best": self.best,
            "bad_epochs": self.bad_epochs,
            "rng": _rng_state(),
            "model_config": self.model_cfg.to_dict(),
            "train_config": self.cfg.to_dict(),
            "extract_config": self.corpus.extract_cfg.to_dict(),
            "visual": self.visual,
            "imports": [i.to_dict() for i in self.imports],
            "feature_names": self.feature_names,
            "feature_mean": torch.from_numpy(np.asarray(self.mean, np.float32)),
            "feature_std": torch.from_numpy(np.asarray(self.std, np.float32)),
        }

    def _loader(self, dataset: ShardDataset, shuffle: bool) -> WindowLoader:
        """The run's loader of ``dataset`` (``WindowLoader``): spawned workers, so that no HDF5 handle or thread
        crosses a fork, that live for the run; frames copied once into reused batch buffers, pinned on CUDA.

        Its workers only read and copy: standardisation and augmentation run in ``train_step``, on the whole
        batch, on the training device (the CPU's own cores when there is no GPU)."""
        sampler = EpochSampler(len(dataset), seed=self.cfg.seed, shuffle=shuffle, rank=self.rank,
                               num_replicas=self.world)  # fmt: skip
        return WindowLoader(dataset, batch_size=self.cfg.batch_size, sampler=sampler, workers=self.cfg.workers,
                            pin_device=self.device, prefetch_factor=PREFETCH_FACTOR)  # fmt: skip

    def _autocast(self):
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return torch.autocast("cpu", enabled=False)

    # ------------------------------------------------------------------------------------------------ the loop
    def train_step(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """One optimisation step on a collated batch: augmentation on the device (``augment_batch``), forward,
        loss, backward, clipping, AdamW, OneCycle."""
        b = to_device(batch, self.device)
        if "aug_stretch" in b:
            b = augment_batch(b, self.cfg.max_seq_len)
        if self.cfg.mixup > 0 and len(b["pad_mask"]) > 1:
            lam, perm = mixup_draw(
                len(b["pad_mask"]), self.cfg.mixup, self.cfg.seed, self.world * self.step + self.rank
            )
            b = mixup_batch(b, lam.to(self.device), perm.to(self.device))
        with self._autocast():
            pred = self.net(b["audio"], b["frames"], b["pad_mask"], b["audio_mask"], b["video_mask"], self._vi(b))
        pred, labels, mask = pred.float(), b["labels"], b["label_mask"]
        if self.target == "clip":  # one value per window: its mean prediction against its mean label
            pred, labels, mask = clip_means(pred, labels, mask)
        loss = loss_fn(pred, labels, mask, self.cfg)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.opt.step()
        if self.step < self.sched.total_steps:
            self.sched.step()
        if self.ema is not None:
            self.ema.update(self.model)
        self.step += 1
        return loss.detach()

    def _vi(self, b: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """The batch's video-side imports when the model reads any (None keeps a model without them unchanged)."""
        return b["video_import"] if self.model_cfg.video_import_dim else None

    def train_epoch(self) -> float:
        """One pass over the training windows; the mean training loss. ``self.timing`` gets the epoch's figures:
        seconds waiting for the loader (``data_s``) and computing (``step_s``), windows per second, and on CUDA the
        peak GPU memory (as timm's ``Data:`` / ``Time:``)."""
        self.model.train()
        if self.train_loader is None:
            self.train_loader = self._loader(self.train_set, shuffle=True)
        self.train_loader.sampler.set_epoch(self.epoch)
        total, n = 0.0, 0
        batches = self.train_loader
        from tqdm import tqdm

        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        bar = tqdm(batches, desc=f"epoch {self.epoch + 1}", unit="batch", leave=False, disable=not self.progress,
                   file=sys.stderr)  # fmt: skip
        data_s = step_s = 0.0
        t = time.perf_counter()
        for batch in bar:
            ready = time.perf_counter()
            data_s += ready - t  # waiting for the loader (the bar's own bookkeeping included: microseconds)
            loss = self.train_step(batch)
            value = loss.item()  # waits for the device: the step is done
            t = time.perf_counter()
            step_s += t - ready
            total += value * len(batch["clip"])
            n += len(batch["clip"])
            bar.set_postfix(loss=f"{value:.4f}")
        self.timing = {
            "data_s": data_s,
            "step_s": step_s,
            "windows_per_s": n / (data_s + step_s) if data_s + step_s > 0 else math.nan,
            "gpu_mem_mib": torch.cuda.max_memory_allocated(self.device) / 2**20 if self.device.type == "cuda"
            else math.nan,
        }  # fmt: skip
        self._say_if_starved()
        if self.world > 1:
            import torch.distributed as dist

            t = torch.tensor([total, float(n)], dtype=torch.float64)
            dist.all_reduce(t)
            total, n = float(t[0]), int(t[1])
        return total / max(n, 1)

    def _say_if_starved(self) -> None:
        """Once per run: the model waited for data longer than it computed (from the second epoch, when the frame
        cache is built and the workers are up), with what to do about it."""
        data, step = self.timing["data_s"], self.timing["step_s"]
        if self._starved_said or self.epoch == 0 or data <= step:
            return
        self._starved_said = True
        fixes = [f"more DataLoader workers (--workers, now {self.cfg.workers}; one per free core)"]
        if not self.cfg.frame_cache:
            fixes.append("the frame cache (drop --no-frame-cache)")
        self.log(f"the {self.device.type.upper()} waited for data {data:.1f} s and computed {step:.1f} s this epoch: "
                 f"the loader is the bottleneck; try {' or '.join(fixes)}")  # fmt: skip

    @torch.no_grad()
    def predict(self, dataset: ShardDataset) -> dict[int, dict[str, np.ndarray]]:
        """clip index -> {"pred": (T, 2), "labels": (T, 2), "mask": (T,)} over every row (eval windows), by the
        weights that are saved (``served``: the average when averaging)."""
        model = self.served
        model.eval()
        out = {
            ci: {"pred": np.zeros((c.n_frames, 2), np.float32), "labels": np.zeros((c.n_frames, 2), np.float32),
                 "mask": np.zeros(c.n_frames, bool), "covered": np.zeros(c.n_frames, bool)}
            for ci, c in enumerate(dataset.clips)
        }  # fmt: skip
        if dataset is self.val_set:
            if self.val_loader is None:
                self.val_loader = self._loader(dataset, shuffle=False)
            loader = self.val_loader
        else:
            loader = self._loader(dataset, shuffle=False)
        for batch in loader:
            b = to_device(batch, self.device)
            with self._autocast():
                pred = model(b["audio"], b["frames"], b["pad_mask"], b["audio_mask"], b["video_mask"], self._vi(b))
            pred = pred.float().cpu().numpy()
            for i in range(len(batch["clip"])):
                ci, s0 = int(batch["clip"][i]), int(batch["start"][i])
                n = int(batch["pad_mask"][i].sum())
                out[ci]["pred"][s0 : s0 + n] = pred[i, :n]
                out[ci]["labels"][s0 : s0 + n] = batch["labels"][i, :n].numpy()
                out[ci]["mask"][s0 : s0 + n] = batch["label_mask"][i, :n].numpy()
                out[ci]["covered"][s0 : s0 + n] = True
        if self.world > 1:  # each rank predicted its share of the windows: put the clips back together
            import torch.distributed as dist

            parts: list = [None] * self.world
            dist.all_gather_object(parts, out)
            for part in parts:
                for ci, v in part.items():
                    c = v["covered"]
                    for k in ("pred", "labels", "mask", "covered"):
                        out[ci][k][c] = v[k][c]
        return out

    def validate(self) -> tuple[float, dict[str, float], dict]:
        preds = self.predict(self.val_set)
        p = torch.from_numpy(np.concatenate([v["pred"] for v in preds.values()]))[None]
        t = torch.from_numpy(np.concatenate([v["labels"] for v in preds.values()]))[None]
        m = torch.from_numpy(np.concatenate([v["mask"] for v in preds.values()]))[None]
        val_loss = float(loss_fn(p, t, m, self.cfg))
        metrics = {}
        for k, dim in enumerate(DIMENSIONS):
            r = evaluate([v["pred"][v["mask"], k] for v in preds.values()],
                         [v["labels"][v["mask"], k] for v in preds.values()])  # fmt: skip
            metrics.update({f"{dim}_{name}": value for name, value in r.items()})
            if self.target == "clip":  # the score the loss works for: each clip's mean against its label
                p_, t_ = zip(*[(v["pred"][v["mask"], k].mean(), v["labels"][v["mask"], k].mean())
                               for v in preds.values() if v["mask"].any()], strict=True)  # fmt: skip
                metrics[f"{dim}_ccc_of_means"] = ccc(np.array(p_), np.array(t_))
        return val_loss, metrics, preds

    def _no_validation(self) -> tuple[float, dict[str, float], dict]:
        """What ``validate`` gives without validation clips: NaN loss and metrics (the same columns), no traces."""
        empty = evaluate([], [])
        return math.nan, {f"{d}_{k}": v for d in DIMENSIONS for k, v in empty.items()}, {}

    def fit(self, stop_after: int | None = None) -> pd.DataFrame:
        """Train until done (or until epoch ``stop_after``, as if killed then); returns RUN_DIR/metrics.csv."""
        history_path = self.run_dir / "metrics.csv"
        self.log(
            f"training on {len(self.train_clips)} clips ({len(self.train_set)} windows), validating on "
            f"{len(self.val_clips)}; {sum(p.numel() for p in self.model.parameters()) / 1e6:.2f} M parameters, "
            f"{self.device}"
        )
        last = self.cfg.epochs if stop_after is None else min(stop_after, self.cfg.epochs)
        first = True
        while self.epoch < last and self.bad_epochs < self.cfg.patience:
            t0 = time.perf_counter()
            train_loss = self.train_epoch()
            val_loss, metrics, preds = self.validate() if self.val_set is not None else self._no_validation()
            self.epoch += 1
            key = "ccc_of_means" if self.target == "clip" else "ccc"
            cccs = [v for v in (metrics.get(f"valence_{key}", math.nan), metrics.get(f"arousal_{key}", math.nan))
                    if np.isfinite(v)]  # fmt: skip
            mean_ccc = float(np.mean(cccs)) if cccs else math.nan
            score = mean_ccc if self.score_by == "ccc" else -val_loss  # higher is better
            score = score if math.isfinite(score) else -math.inf
            # the first epoch is the best so far; without validation, each epoch replaces the one before
            improved = score > self.best or not math.isfinite(self.best) or self.score_by == "last"
            if improved:
                self.best, self.bad_epochs = score, 0
            else:
                self.bad_epochs += 1
            row = {"epoch": self.epoch, "train_loss": train_loss, "val_loss": val_loss, "mean_ccc": mean_ccc,
                   **metrics, "lr": self.sched.get_last_lr()[0], "seconds": time.perf_counter() - t0,
                   **self.timing}  # fmt: skip
            ckpt = self.checkpoint() if self.is_main else None
            if self.is_main:
                header = not history_path.exists()
                _append_history(history_path, row)
                save_checkpoint(ckpt, self.run_dir / "last.pt")
                if improved:
                    save_checkpoint(ckpt, self.run_dir / "best.pt")
                self.log(format_row(row, header=header or first, best=improved))
                if self.plots:
                    self._plots(pd.read_csv(history_path), preds)
            first = False
            self._barrier()
        if self.bad_epochs >= self.cfg.patience:
            what = "mean CCC" if self.score_by == "ccc" else "loss"
            self.log(f"early stop: no better validation {what} for {self.cfg.patience} epochs ({self.best_text()})")
        return pd.read_csv(history_path) if history_path.exists() else pd.DataFrame()

    def best_text(self) -> str:
        """The best validation score so far, in words."""
        if self.score_by == "last":
            return f"no validation: best.pt is epoch {self.epoch}"
        if self.score_by == "loss":
            return f"best validation loss {-self.best:.4f}"
        return f"best validation mean CCC {self.best:.3f}"

    def _barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()

    def __enter__(self) -> Trainer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Shut the DataLoader workers and, under torchrun, the process group down."""
        self.train_loader = self.val_loader = None
        if self.world > 1:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()

    def _plots(self, history: pd.DataFrame, preds: dict) -> None:
        from mmemo.pipeline.plots import learning_curves, traces

        learning_curves(history, self.run_dir / "learning_curves.png")
        if not preds:  # no validation clips to draw
            return
        names = [c.clip_id for c in self.val_clips]
        traces(preds, names, self.run_dir / "val_traces.png", fps=self.corpus.extract_cfg.fps)


def _append_history(path: Path, row: dict) -> None:
    """Append one epoch to metrics.csv; a file written by an older mmemo (fewer columns) is rewritten with the
    union of the columns, so that a resumed run never misaligns them."""
    new = pd.DataFrame([row])
    if path.exists():
        old_cols = pd.read_csv(path, nrows=0).columns
        if list(old_cols) != list(new.columns):
            atomic.write_text(path, pd.concat([pd.read_csv(path), new], ignore_index=True).to_csv(index=False))
            return
    new.to_csv(path, mode="a", header=not path.exists(), index=False)


def format_row(row: dict, header: bool, best: bool) -> str:
    cols = [("epoch", "{:>5d}"), ("train_loss", "{:>10.4f}"), ("val_loss", "{:>8.4f}")]
    for d in DIMENSIONS:
        cols += [(f"{d}_ccc", "{:>7.3f}"), (f"{d}_ccc_clip", "{:>8.3f}"), (f"{d}_pcc", "{:>6.3f}"),
                 (f"{d}_rmse", "{:>6.3f}"), (f"{d}_mae", "{:>6.3f}")]  # fmt: skip
    cols += [("data_s", "{:>6.1f}"), ("step_s", "{:>6.1f}"), ("windows_per_s", "{:>6.1f}")]
    gpu = math.isfinite(row.get("gpu_mem_mib", math.nan))
    if gpu:
        cols.append(("gpu_mem_mib", "{:>8.0f}"))
    line = " ".join(fmt.format(row.get(k, math.nan)) for k, fmt in cols) + ("  *" if best else "")
    if not header:
        return line
    titles = ["epoch", "train_loss", "val_loss"]
    for d in ("V", "A"):
        titles += [f"{d}.ccc", f"{d}.ccc/clip", f"{d}.pcc", f"{d}.rmse", f"{d}.mae"]
    titles += ["data", "step", "win/s"] + (["GPU MiB"] if gpu else [])
    widths = [5, 10, 8] + [7, 8, 6, 6, 6] * 2 + [6, 6, 6] + ([8] if gpu else [])
    head = " ".join(t.rjust(w) for t, w in zip(titles, widths, strict=True))
    return head + "\n" + line
