"""The audio feature registry: name -> (function, dimension, description). It holds the table and nothing else.

Every feature is registered exactly once, with the decorator below, next to the code that computes it
(``mmemo.features.audio``; importing ``mmemo.features`` registers them all). The CLI's ``--features`` choices,
``mmemo features`` and the shard schema all read this table, so adding a feature is one decorated function (and,
if it should be computed by default, its name in ``mmemo.config.DEFAULT_FEATURES``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from mmemo.config import ExtractConfig
from mmemo.errors import ConfigError


@dataclass(frozen=True)
class Feature:
    """One registered audio feature, returning ``(n, dim(cfg))`` float32 (``mmemo.data.schema.FEATURE_DTYPE``).

    A frame feature (``context=False``) is ``fn(analysis) -> (n, D)`` for the n rows of one block of audio. A
    context feature (``context=True``) needs seconds around each row: ``fn(onset, rows, cfg) -> (n, D)`` for the
    ``rows`` slice, given the whole clip's onset envelope ``(T,)``.
    """

    name: str
    fn: Callable
    dim: Callable[[ExtractConfig], int]
    description: str
    context: bool = False


FEATURES: dict[str, Feature] = {}


def register(name: str, *, dim: int | Callable[[ExtractConfig], int], description: str, context: bool = False):
    """Decorator registering a feature function under ``name`` (see ``Feature`` for the two signatures)."""

    def wrap(fn: Callable) -> Callable:
        if name in FEATURES:
            raise ValueError(f"feature {name!r} is registered twice")
        dim_fn = dim if callable(dim) else (lambda cfg, d=dim: d)
        FEATURES[name] = Feature(name, fn, dim_fn, description, context)
        return fn

    return wrap


def check_features(names: tuple[str, ...] | list[str]) -> None:
    """A ConfigError naming the unknown ones when ``names`` are not all registered."""
    unknown = [f for f in names if f not in FEATURES]
    if unknown:
        raise ConfigError(f"unknown feature(s) {', '.join(unknown)}; known: {', '.join(FEATURES)}")


def feature_dims(cfg: ExtractConfig) -> dict[str, int]:
    """Dimension of each selected feature under ``cfg`` (a ConfigError for a name that is not registered)."""
    check_features(cfg.features)
    return {name: FEATURES[name].dim(cfg) for name in cfg.features}
