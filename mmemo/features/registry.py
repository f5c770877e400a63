"""The audio feature registry: name -> (function, dimension, description). It holds the table and nothing else.

Every feature is registered exactly once, with the decorator below, next to the code that computes it
(``mmemo.features.audio``, which also registers the openSMILE sets of ``mmemo.features.smile``; importing
``mmemo.features`` registers them all). The CLI's ``--features`` choices,
``mmemo features`` and the shard schema all read this table, so adding a feature is one decorated function (and,
if it should be computed by default, its name in ``mmemo.config.DEFAULT_FEATURES``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from mmemo.config import DEFAULT_FEATURES, ExtractConfig
from mmemo.errors import ConfigError


@dataclass(frozen=True)
class Feature:
    """One registered audio feature, returning ``(n, dim(cfg))`` float32 (``mmemo.data.schema.FEATURE_DTYPE``).

    A frame feature (``context=False``) is ``fn(analysis) -> (n, D)`` for the n rows of one block of audio. A
    context feature (``context=True``) needs seconds around each row: ``fn(onset, rows, cfg) -> (n, D)`` for the
    ``rows`` slice, given the whole clip's onset envelope ``(T,)``. A stream feature (``stream=True``) reads the raw
    samples itself: ``fn(cfg, sink, block_rows)`` is an object with ``push(samples)``, ``advance(limit) -> rows
    done`` and ``finish(n_rows)`` sending its rows to ``sink`` (openSMILE, which needs seconds of audio around a
    row). ``requires`` raises a one-line ConfigError when what the feature needs is not installed.
    """

    name: str
    fn: Callable
    dim: Callable[[ExtractConfig], int]
    description: str
    context: bool = False
    stream: bool = False
    requires: Callable[[], None] | None = None


FEATURES: dict[str, Feature] = {}


def register(
    name: str,
    *,
    dim: int | Callable[[ExtractConfig], int],
    description: str,
    context: bool = False,
    stream: bool = False,
    requires: Callable[[], None] | None = None,
):
    """Decorator registering a feature function under ``name`` (see ``Feature`` for the three signatures)."""

    def wrap(fn: Callable) -> Callable:
        if name in FEATURES:
            raise ValueError(f"feature {name!r} is registered twice")
        dim_fn = dim if callable(dim) else (lambda cfg, d=dim: d)
        FEATURES[name] = Feature(name, fn, dim_fn, description, context, stream, requires)
        return fn

    return wrap


def check_known(names: tuple[str, ...] | list[str]) -> None:
    """A ConfigError naming the unknown ones when ``names`` are not all registered."""
    unknown = [f for f in names if f not in FEATURES]
    if unknown:
        raise ConfigError(f"unknown feature(s) {', '.join(unknown)}; known: {', '.join(FEATURES)}")


def check_features(names: tuple[str, ...] | list[str]) -> None:
    """Before computing ``names``: a ConfigError for an unknown name, or for one whose package is not installed
    (saying how to install it). Reading features already extracted needs only ``check_known``."""
    check_known(names)
    for name in names:
        if FEATURES[name].requires is not None:
            FEATURES[name].requires()


def feature_dims(cfg: ExtractConfig) -> dict[str, int]:
    """Dimension of each selected feature under ``cfg`` (a ConfigError for a name that is not registered)."""
    check_known(cfg.features)
    return {name: FEATURES[name].dim(cfg) for name in cfg.features}


def resolve_features(spec: str, default: tuple[str, ...] = DEFAULT_FEATURES) -> tuple[str, ...]:
    """The feature names a ``--features`` value asks for: ``a,b`` exactly these; ``+a,+b`` the defaults and these
    (``+egemaps``); ``-a`` the defaults without ``a``; ``+`` and ``-`` items combine, plain names stand alone.

    Raises:
        ConfigError: an unknown name, a mix of plain and +/- items, or nothing left.
    """
    items = [v.strip() for v in spec.split(",") if v.strip()]
    signed = [v[0] in "+-" for v in items]
    if any(signed) and not all(signed):
        raise ConfigError(f"features {spec!r}: either plain names (exactly these) or +name / -name (the defaults "
                          f"changed), not both")  # fmt: skip
    bare = [v.lstrip("+-").strip() for v in items]
    check_known(bare)
    if any(signed):
        removed = {n for n, i in zip(bare, items, strict=True) if i.startswith("-")}
        names = [n for n in default if n not in removed]
        names += [n for n, i in zip(bare, items, strict=True) if i.startswith("+") and n not in names]
    else:
        names = bare
    names = list(dict.fromkeys(names))
    if not names:
        raise ConfigError(f"features {spec!r}: no feature left")
    return tuple(names)
