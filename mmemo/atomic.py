"""Atomic writes: a file is written under a temporary name beside its target and renamed over it when complete.

A reader (another process, or the next run after a kill) therefore sees the old file or the new one, never half
of one. ``os.replace`` is atomic within one file system, which a name in the same directory guarantees.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

PARTIAL_SUFFIX = ".partial"  # what a half-written file's name ends with (cleaned up by `mmemo extract`)


def partial_path(path: str | os.PathLike, *, unique: bool = False) -> Path:
    """The temporary name of ``path`` while it is written: ``<name>.partial``, or ``<name>.<pid>.partial`` when
    several processes may write the same target at once (each then renames its own complete file)."""
    p = Path(path)
    return p.with_name(f"{p.name}.{os.getpid()}{PARTIAL_SUFFIX}" if unique else p.name + PARTIAL_SUFFIX)


def writer_pid(partial: str | os.PathLike) -> int | None:
    """The pid in a ``<name>.<pid>.partial`` name (``partial_path(..., unique=True)``); None for ``<name>.partial``."""
    name = Path(partial).name
    if not name.endswith(PARTIAL_SUFFIX):
        return None
    pid = name[: -len(PARTIAL_SUFFIX)].rpartition(".")[2]
    return int(pid) if pid.isdigit() else None


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, unique: bool = False) -> Iterator[Path]:
    """Yield a temporary path to write ``path``'s content to; on leaving the block it replaces ``path``.

    If the block raises, the temporary file is removed and ``path`` is left as it was.
    """
    tmp = partial_path(path, unique=unique)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: str | os.PathLike, text: str) -> None:
    """``Path(path).write_text(text)``, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | os.PathLike, obj: object) -> None:
    """``obj`` as indented JSON with a final newline, atomically."""
    write_text(path, json.dumps(obj, indent=2) + "\n")
