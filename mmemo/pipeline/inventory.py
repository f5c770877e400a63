"""`mmemo inspect`: what a features directory holds, from its manifest and shard metadata.

Faces: per clip, the share of its video rows (``/video/mask`` True) that hold a face (``/faces/mask``); only the two
(T,) masks are read, never the crops, so a large corpus is summarised in seconds.

Imports (``--import``): per stream, its side and columns, and the share of each clip's rows present
(``/imports/NAME/mask``) and of all rows; only the masks and attributes are read.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from mmemo.data import schema as S
from mmemo.data.features_dir import MANIFEST, SHARD_DIR, read_manifest
from mmemo.data.shards import face_rows, import_columns, import_names, open_shard
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
    # Faces. face_share: clip id -> share of its video rows with a face, for the clips with video whose shard holds
    # /faces (NaN when not one of its rows has a picture on screen); clips without video or faces are absent.
    face_share: dict[str, float] = field(default_factory=dict)
    face_size: int = 0  # F of the aligned crops (0: no faces stored)
    video_clips: int = 0  # extracted clips with video
    face_rows: int = 0  # video rows with a face, over every clip with faces
    face_video_rows: int = 0  # video rows of the clips with faces (the overall share's denominator)
    face_multi: list[str] = field(default_factory=list)  # clips where a detector run saw more than one face
    imports: dict[str, ImportSummary] = field(default_factory=dict)  # --import streams, by name

    @property
    def face_share_all(self) -> float:
        """Share of all video rows (of the clips with faces) that hold a face; NaN when there are none."""
        return self.face_rows / self.face_video_rows if self.face_video_rows else float("nan")

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
    by_mod = {"video": 0, "faces": 0, "audio": 0, "other": 0}
    faces = _Faces()
    imports: dict[str, ImportSummary] = {}
    for row in good.itertuples():
        path = manifest.shard_path(row)
        with open_shard(path) as h5:
            v, f, a = _storage(h5, S.VIDEO), _storage(h5, S.FACES), _storage(h5, S.AUDIO)
            faces.add(str(row.clip), h5)
            _add_imports(imports, str(row.clip), h5)
        by_mod["video"] += v
        by_mod["faces"] += f
        by_mod["audio"] += a
        by_mod["other"] += path.stat().st_size - v - f - a
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
        face_share=faces.share,
        face_size=faces.size,
        video_clips=faces.video_clips,
        face_rows=faces.rows,
        face_video_rows=faces.video_rows,
        face_multi=faces.multi,
        imports=imports,
    )


@dataclass
class ImportSummary:
    """One ``--import`` stream across a directory: its side, its columns (of the first clip that had a file) and
    per clip the share of rows present (NaN for a clip of no rows)."""

    side: str
    columns: list[str]
    share: dict[str, float] = field(default_factory=dict)
    rows: int = 0
    present: int = 0

    @property
    def share_all(self) -> float:
        return self.present / self.rows if self.rows else float("nan")


def _add_imports(imports: dict[str, ImportSummary], clip: str, h5: h5py.File) -> None:
    for name in import_names(h5):
        mask = h5[S.import_mask(name)][()]
        side = str(h5[f"{S.IMPORTS}/{name}"].attrs.get("side", "video"))
        summary = imports.setdefault(name, ImportSummary(side, []))
        summary.columns = summary.columns or import_columns(h5, name)
        summary.share[clip] = float(mask.mean()) if mask.size else float("nan")
        summary.rows += int(mask.size)
        summary.present += int(mask.sum())


@dataclass
class _Faces:
    """The face counts of a directory, gathered shard by shard."""

    share: dict[str, float] = field(default_factory=dict)
    size: int = 0
    video_clips: int = 0
    rows: int = 0
    video_rows: int = 0
    multi: list[str] = field(default_factory=list)

    def add(self, clip: str, h5: h5py.File) -> None:
        if S.VIDEO not in h5:
            return
        self.video_clips += 1
        counts = face_rows(h5)
        if counts is None:
            return  # a version-1 shard, or extracted with --faces off (a damaged /faces is `mmemo validate`'s)
        n_face, n_video = counts
        self.share[clip] = n_face / n_video if n_video else float("nan")
        self.rows += n_face
        self.video_rows += n_video
        attrs = h5[S.FACES].attrs
        self.size = self.size or int(attrs.get("size", 0))
        if int(attrs.get("multi", 0)) > 0:
            self.multi.append(clip)


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
    lines += format_faces(inv)
    lines += format_imports(inv)
    faces = f"faces {inv.bytes_per_hour('faces') / mb:.0f} MiB, " if inv.bytes_by_modality.get("faces") else ""
    lines.append(
        f"  storage      {inv.bytes_total / mb:.1f} MiB; per media hour: "
        f"video {inv.bytes_per_hour('video') / mb:.0f} MiB, {faces}audio {inv.bytes_per_hour('audio') / mb:.1f} MiB, "
        f"total {inv.bytes_per_hour() / mb:.0f} MiB"
    )
    for src, err in inv.failures:
        lines.append(f"  failed       {src}: {err}")
    return "\n".join(lines)


LISTED_SHARES = 10  # every clip's face share is listed up to this many clips with faces; beyond, only the lowest
LOWEST_SHARES = 5


def _pct(x: float) -> str:
    return "n/a" if np.isnan(x) else f"{100 * x:.1f}%"


def _ranked(shares: dict[str, float]) -> tuple[str, list[tuple[str, float]]]:
    """Per-clip shares, lowest first (NaN first: the one to look at; ties keep the manifest's order), all of them
    up to LISTED_SHARES clips, else the LOWEST_SHARES lowest; and the words saying which."""
    ranked = sorted(shares.items(), key=lambda kv: -1.0 if np.isnan(kv[1]) else kv[1])
    n = len(ranked)
    if n <= LISTED_SHARES:
        return "all, lowest first", ranked
    return f"the {LOWEST_SHARES} lowest of {n}", ranked[:LOWEST_SHARES]


def format_imports(inv: Inventory) -> list[str]:
    """The ``imports`` lines: per stream its side and columns, the share of rows present overall and per clip."""
    if not inv.imports:
        return []
    lines = []
    for name, imp in sorted(inv.imports.items()):
        cols = ", ".join(imp.columns[:6]) + (f", ... ({len(imp.columns)})" if len(imp.columns) > 6 else "")
        head, shown = _ranked(imp.share)
        missing = sum(1 for x in imp.share.values() if x == 0)
        lines.append(
            f"  import       {name} ({imp.side} side; columns: {cols or 'none: no clip had a file'}): present in "
            f"{_pct(imp.share_all)} of rows; {missing} of {len(imp.share)} clips with none"
        )
        lines.append(f"  {name} share".ljust(15) + f"{head}: " + ", ".join(f"{c} {_pct(x)}" for c, x in shown))
    return lines


def format_faces(inv: Inventory) -> list[str]:
    """The ``faces`` line(s) of the summary: the overall share, how many clips mostly / never show a face, several
    people, and the per-clip shares (all of them for a small directory, else the lowest: where to look first)."""
    if not inv.video_clips:
        return ["  faces        none (no clip has video)"]
    if not inv.face_share:
        return ["  faces        none stored (extracted with --faces off or before faces existed)"]
    shares = np.array([v for v in inv.face_share.values()], float)
    n = len(shares)
    mostly, never = int((shares >= 0.5).sum()), int((shares == 0).sum())
    line = (
        f"  faces        {inv.face_size}-px aligned crops; face in {_pct(inv.face_share_all)} of video rows "
        f"({mostly} of {n} clips with video have a face in >= 50% of rows; {never} with none); "
        f"several people seen in {len(inv.face_multi)} clip{'' if len(inv.face_multi) == 1 else 's'}"
    )
    if n < inv.video_clips:  # a directory extracted in parts, some clips before faces existed
        line += f"; {inv.video_clips - n} clip(s) with video hold no faces"
    # Lowest first (NaN, a clip with no picture on screen, sorts first: it is the one to look at)
    head, shown = _ranked(inv.face_share)
    return [line, f"  face share   {head}: " + ", ".join(f"{clip} {_pct(x)}" for clip, x in shown)]
