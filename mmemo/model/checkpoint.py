"""The checkpoint format: what `mmemo train` saves and everything downstream (predict, evaluate, export) loads.

A checkpoint is a dict of tensors, numbers, strings and lists only, so ``torch.load(..., weights_only=True)`` reads
it and nothing in it can execute code. Keys (``CHECKPOINT_VERSION`` 1):

- ``version``, ``mmemo_version``; ``model``: the state dict; ``model_config``: the ModelConfig as a dict, from
  which ``build_model`` rebuilds the model alone;
- ``extract_config`` (an ExtractConfig as a dict), ``feature_names``, ``feature_mean`` / ``feature_std`` (D,): how
  the model's inputs were made, so a new clip can be made the same way;
- training state for ``mmemo train --resume``: ``optimizer``, ``scheduler``, ``epoch``, ``step``, ``best``,
  ``bad_epochs``, ``rng`` and ``train_config``.
"""

from __future__ import annotations

import os

import torch

from mmemo import atomic
from mmemo.errors import MmemoError
from mmemo.model.config import ModelConfig
from mmemo.model.multimodal import MultiModalTransformer

CHECKPOINT_VERSION = 1


def save_checkpoint(ckpt: dict, path: str | os.PathLike) -> None:
    """Write ``ckpt`` to ``path`` atomically (a kill mid-write leaves the previous checkpoint whole)."""
    with atomic.atomic_path(path) as tmp:
        torch.save(ckpt, tmp)


def load_checkpoint(path: str | os.PathLike, *, mmap: bool = False) -> dict:
    """A checkpoint as data: refuses anything that would need code to load (``weights_only=True``)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as e:  # pickle.UnpicklingError for code, RuntimeError for a damaged file
        raise MmemoError(f"{path}: not a loadable mmemo checkpoint ({str(e).splitlines()[0]})") from None


def build_model(ckpt: dict) -> MultiModalTransformer:
    """The model of a checkpoint, rebuilt from its ``model_config`` and loaded with its weights (on the CPU)."""
    model = MultiModalTransformer(ModelConfig.from_dict(ckpt["model_config"]))
    model.load_state_dict(ckpt["model"])
    return model
