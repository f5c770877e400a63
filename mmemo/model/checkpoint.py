"""The checkpoint format: what `mmemo train` saves and everything downstream (predict, evaluate, export) loads.

A checkpoint is a dict of tensors, numbers, strings and lists only, so ``torch.load(..., weights_only=True)`` reads
it and nothing in it can execute code. Keys (``CHECKPOINT_VERSION`` 1):

- ``version``, ``mmemo_version``; ``model``: the state dict; ``model_config``: the ModelConfig as a dict, from
  which ``build_model`` rebuilds the model alone;
- ``extract_config`` (an ExtractConfig as a dict), ``feature_names``, ``feature_mean`` / ``feature_std`` (D,): how
  the model's inputs were made, so a new clip can be made the same way (D covers the audio-side imports' columns
  and presence columns too); ``imports`` (optional; absent before imports: none): one dict per ``--import``
  stream the model reads (``name``, ``side``, ``columns``, ``mean``, ``std``: ``mmemo.data.dataset.ImportInput``);
- training state for ``mmemo train --resume``: ``optimizer``, ``scheduler``, ``epoch``, ``step``, ``best``,
  ``bad_epochs``, ``rng`` and ``train_config``; with weight averaging (``train_config["ema_decay"]`` > 0), ``model``
  holds the averaged weights (what is served) and two more keys the state training goes on from: ``model_live``
  (the optimiser's weights) and ``ema_updates`` (the number of averaging steps so far). Checkpoints written before
  averaging have neither and a ``train_config`` without ``ema_decay``: they load, predict and resume as before.
"""

from __future__ import annotations

import os
import pickle
import zipfile

import torch

from mmemo import atomic
from mmemo.errors import MmemoError
from mmemo.model.config import ModelConfig
from mmemo.model.multimodal import MultiModalTransformer

CHECKPOINT_VERSION = 1
# What serving (predict, evaluate, export, stream) reads; resuming a run needs the training state as well.
SERVING_KEYS = ("model", "model_config", "extract_config", "feature_names", "feature_mean", "feature_std")
TRAINING_KEYS = ("optimizer", "scheduler", "epoch", "step", "best", "bad_epochs", "rng", "train_config")


def save_checkpoint(ckpt: dict, path: str | os.PathLike) -> None:
    """Write ``ckpt`` to ``path`` atomically (a kill mid-write leaves the previous checkpoint whole)."""
    with atomic.atomic_path(path) as tmp:
        torch.save(ckpt, tmp)


def load_checkpoint(path: str | os.PathLike, *, mmap: bool = False, keys: tuple[str, ...] = SERVING_KEYS) -> dict:
    """A checkpoint as data, with at least ``keys``: refuses anything that would need code to load
    (``weights_only=True``), and says in one line what is wrong with a file that is not a whole mmemo checkpoint."""
    bad = f"{path}: not a loadable mmemo checkpoint"
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive; anything else is not one of ours
        raise MmemoError(f"{bad} (not a PyTorch checkpoint file: damaged, cut short or something else)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError:
        raise MmemoError(f"{bad} (it holds objects other than tensors and plain data: refused, a checkpoint is "
                         "data, never code)") from None  # fmt: skip
    except Exception as e:  # a damaged archive, a truncated tensor
        raise MmemoError(f"{bad} ({type(e).__name__}: {str(e).strip().splitlines()[0][:200]})") from None
    if not isinstance(ckpt, dict):
        raise MmemoError(f"{bad} (a {type(ckpt).__name__}, not a checkpoint dict)")
    missing = [k for k in keys if k not in ckpt]
    if missing:
        raise MmemoError(f"{bad} (no {', '.join(missing)}: not written by `mmemo train`?)")
    version = ckpt.get("version", CHECKPOINT_VERSION)
    if not isinstance(version, int) or version > CHECKPOINT_VERSION:
        raise MmemoError(f"{bad} (format version {version!r}; this mmemo reads up to {CHECKPOINT_VERSION}: upgrade)")
    return ckpt


def build_model(ckpt: dict, path: str | os.PathLike = "checkpoint") -> MultiModalTransformer:
    """The model of a checkpoint, rebuilt from its ``model_config`` and loaded with its weights (on the CPU)."""
    try:
        model = MultiModalTransformer(ModelConfig.from_dict(dict(ckpt["model_config"])))
    except (MmemoError, TypeError, ValueError) as e:
        raise MmemoError(f"{path}: model_config does not describe a model ({e})") from None
    try:
        model.load_state_dict(ckpt["model"])
    except (RuntimeError, TypeError, AttributeError) as e:
        first = str(e).strip().splitlines()
        detail = next((ln.strip() for ln in first[1:] if ln.strip()), first[0] if first else type(e).__name__)
        raise MmemoError(
            f"{path}: the weights do not fit the model its model_config describes ({detail[:200]})"
        ) from None
    return model
