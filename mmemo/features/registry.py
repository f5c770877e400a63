"""Audio feature registry: name -> (function, dimension, dtype, description).

Every feature is registered exactly once, with the decorator below, next to the code that computes it
(``mmemo.features.audio``). The CLI's ``--features`` choices, ``mmemo features`` and the shard schema all read
this table, so adding a feature is one decorated function.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from mmemo.config import ExtractConfig


@dataclass(frozen=True)
class Feature:
    """One registered audio feature, returning ``(n, dim(cfg))`` of ``dtype``.

    A frame feature (``context=False``) is ``fn(analysis) -> (n, D)`` for the n rows of one block of audio. A
    context feature (``context=True``) needs seconds around each row: ``fn(onset, rows, cfg) -> (n, D)`` for the
    ``rows`` slice, given the whole clip's onset envelope ``(T,)``.
    """

    name: str
    fn: Callable
    dim: Callable[[ExtractConfig], int]
    description: str
    dtype: type = np.float32
    default: bool = True
    context: bool = False


FEATURES: dict[str, Feature] = {}


def register(
    name: str,
    *,
    dim: int | Callable[[ExtractConfig], int],
    description: str,
    default: bool = True,
    context: bool = False,
) -> Callable:
    """Decorator registering a feature function under ``name`` (see ``Feature`` for the two signatures)."""

    def wrap(fn: Callable) -> Callable:
        if name in FEATURES:
            raise ValueError(f"feature {name!r} is registered twice")
        dim_fn = dim if callable(dim) else (lambda cfg, d=dim: d)
        FEATURES[name] = Feature(name, fn, dim_fn, description, np.float32, default, context)
        return fn

    return wrap


def default_feature_names() -> tuple[str, ...]:
    return tuple(name for name, f in FEATURES.items() if f.default)


# Importing the implementations fills FEATURES (kept at the bottom: they import `register` from here).
from mmemo.features import audio as _audio  # noqa: E402,F401
