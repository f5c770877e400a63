"""`mmemo validate`: re-read every shard of a features directory against the schema and the manifest."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from mmemo.atomic import PARTIAL_SUFFIX
from mmemo.data.features_dir import MANIFEST, SHARD_DIR, SHARD_SUFFIX, read_manifest
from mmemo.data.shards import read_attrs, validate_shard
from mmemo.errors import SchemaError


def _check_listed(path: Path, row: pd.Series) -> list[str]:
    """Problems of one manifest row whose clip was extracted: its shard ``path`` exists, validates and agrees."""
    if not path.exists():
        return [f"{path}: listed in the manifest but missing"]
    problems = validate_shard(path)
    if problems:
        return problems
    try:
        a = read_attrs(path)
    except SchemaError as e:
        return [str(e)]
    if a["clip_id"] != row["clip"]:
        problems.append(f"{path}: holds clip {a['clip_id']!r}, the manifest says {row['clip']!r}")
    if int(a["n_frames"]) != int(row["frames"]):
        problems.append(f"{path}: {a['n_frames']} frames, the manifest says {row['frames']}")
    if a["modalities"] != row["modalities"]:
        problems.append(f"{path}: modalities {a['modalities']!r}, the manifest says {row['modalities']!r}")
    return problems


def validate_features_dir(features_dir: str | os.PathLike, jobs: int = 1) -> tuple[int, list[str]]:
    """(shards checked, problems) for a features directory. Every dataset of every shard is read.

    Checks: the manifest is there and lists each clip once; each extracted clip's shard exists, follows the
    schema (shapes, dtypes, no NaN/Inf, frame and feature counts agree) and agrees with its manifest row; no
    shard on disk is missing from the manifest; no half-written shard is left over.
    """
    manifest = read_manifest(features_dir)
    root, df = manifest.root, manifest.table
    where = root / MANIFEST
    problems = [f"{where}: clip {c!r} is listed {n} times" for c, n in df["clip"].value_counts().items() if n > 1]
    good = manifest.extracted
    rows = [(manifest.shard_path(row), row) for _, row in good.iterrows()]
    if jobs > 1 and len(rows) > 1:
        from joblib import Parallel, delayed

        found = Parallel(n_jobs=jobs)(delayed(_check_listed)(path, row) for path, row in rows)
    else:
        found = [_check_listed(path, row) for path, row in rows]
    for p in found:
        problems += p
    listed = {str(path) for path, _ in rows}
    shard_dir = root / SHARD_DIR
    if shard_dir.exists():
        for path in sorted(shard_dir.rglob("*" + SHARD_SUFFIX)):
            if str(path) not in listed:
                problems.append(
                    f"{path}: shard not in the manifest (its clip left the corpus, or a run was interrupted: "
                    "re-run `mmemo extract`)"
                )
        for path in sorted(shard_dir.rglob("*" + PARTIAL_SUFFIX)):
            problems.append(f"{path}: half-written shard of an interrupted run (re-run `mmemo extract`)")
    return len(rows), problems
