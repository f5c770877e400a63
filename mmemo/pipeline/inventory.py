"""`mmemo inspect`: what a features directory holds, from its manifest and shard metadata."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import pandas as pd

from mmemo.data import schema as S
from mmemo.data.features_dir import MANIFEST, SHARD_DIR, read_manifest
from mmemo.data.shards import open_shard
from mmemo.features.registry import feature_dims


@dataclass
class Inventory:
    root: Path
    clips: int
    ok: int
    failed: int
    hours: float
    modalities: dict[str, int]  # "audio,video" -> clips
    labelled: int
    features: dict[str, int]  # name -> dimension
    frame_size: int
    bytes_by_modality: dict[str, int]  # "video", "audio", "other" -> bytes on disk
    failures: list[tuple[str, str]] = field(default_factory=list)  # (source, error)

    @property
    def bytes_total(self) -> int:
        return sum(self.bytes_by_modality.values())

    def bytes_per_hour(self, modality: str | None = None) -> float:
        b = self.bytes_total if modality is None else self.bytes_by_modality.get(modality, 0)
        return b / self.hours if self.hours > 0 else 0.0


def _storage(h5: h5py.File, group: str) -> int:
    total = 0
    if group not in h5:
        return 0

    def visit(_, obj):
        nonlocal total
        if isinstance(obj, h5py.Dataset):
            total += obj.id.get_storage_size()

    h5[group].visititems(visit)
    return total


def inventory(features_dir: str | os.PathLike) -> Inventory:
    manifest = read_manifest(features_dir)
    root, df, good = manifest.root, manifest.table, manifest.extracted
    mods = good["modalities"].value_counts().to_dict()
    by_mod = {"video": 0, "audio": 0, "other": 0}
    for row in good.itertuples():
        path = manifest.shard_path(row)
        with open_shard(path) as h5:
            v, a = _storage(h5, S.VIDEO), _storage(h5, S.AUDIO)
        by_mod["video"] += v
        by_mod["audio"] += a
        by_mod["other"] += path.stat().st_size - v - a
    features, frame_size = {}, 0
    if manifest.record is not None:
        cfg = manifest.extract_cfg
        features, frame_size = feature_dims(cfg), cfg.frame_size
    failed = manifest.failed
    return Inventory(
        root=root,
        clips=len(df),
        ok=len(good),
        failed=len(failed),
        hours=float(pd.to_numeric(good["duration"]).sum()) / 3600,
        modalities={str(k): int(v) for k, v in mods.items()},
        labelled=int((good["labels"] != "").sum()),
        features=features,
        frame_size=frame_size,
        bytes_by_modality=by_mod,
        failures=list(zip(failed["source"], failed["error"], strict=True)),
    )


def format_inventory(inv: Inventory) -> str:
    mb = 1024**2
    lines = [
        f"{inv.root}",
        f"  shards       {inv.root / SHARD_DIR} (one HDF5 file per clip); manifest {inv.root / MANIFEST}",
        f"  clips        {inv.clips} ({inv.ok} extracted, {inv.failed} failed), {inv.hours * 60:.2f} media minutes "
        f"({inv.hours:.4f} h), {inv.labelled} labelled",
        "  modalities   " + ", ".join(f"{k or 'none'}: {v}" for k, v in sorted(inv.modalities.items())),
    ]
    if inv.frame_size:
        lines.append(f"  video        frames (T, {inv.frame_size}, {inv.frame_size}, 3) uint8 at 25 fps")
    if inv.features:
        total = sum(inv.features.values())
        lines.append(
            f"  audio        {len(inv.features)} features, {total} dims: "
            + ", ".join(f"{k} ({v})" for k, v in inv.features.items())
        )
    lines.append(
        f"  storage      {inv.bytes_total / mb:.1f} MiB; per media hour: "
        f"video {inv.bytes_per_hour('video') / mb:.0f} MiB, audio {inv.bytes_per_hour('audio') / mb:.1f} MiB, "
        f"total {inv.bytes_per_hour() / mb:.0f} MiB"
    )
    for src, err in inv.failures:
        lines.append(f"  failed       {src}: {err}")
    return "\n".join(lines)
