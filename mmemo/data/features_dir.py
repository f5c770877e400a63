"""A features directory, the output of `mmemo extract` and the input of training and evaluation.

Layout (one writer, ``write_manifest``, and one reader, ``read_manifest``, for its listing)::

    FEATURES_DIR/
      shards/<clip id>.h5     one HDF5 file per extracted clip (layout: mmemo.data.schema)
      manifest.csv            one row per clip of the corpus (MANIFEST_COLUMNS): status, shard, frames, ...
      errors.csv              clip, source, error for every clip that failed
      extract_config.json     the ExtractConfig, the label source, the versions: what made the directory
      labels.csv              the resolved gold standard in the generic layout (when the corpus has labels)
      cache/frames-N/<clip>.npy   frames pooled to the model's size, built by the first training run that reads them
      .extract.lock           held by the one `mmemo extract` writing here

Training reads the *labelled corpus* of a directory (``load_corpus``): its extracted, labelled clips, the
extraction settings and the label table, and splits it (``split``) by clip or by group into train / validation.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from mmemo import atomic
from mmemo.config import SMALL_CORPUS_S, ExtractConfig, TrainConfig
from mmemo.data.labels import LABELS_FILE, normalise_clip_id
from mmemo.errors import ConfigError, MmemoError

SHARD_DIR = "shards"
SHARD_SUFFIX = ".h5"
MANIFEST = "manifest.csv"
ERRORS = "errors.csv"
RECORD = "extract_config.json"
LOCK_FILE = ".extract.lock"
CACHE_DIR = "cache"
MANIFEST_COLUMNS = ["clip", "shard", "status", "frames", "duration", "modalities", "labels", "bytes", "source", "error"]


def shard_relpath(clip_id: str) -> str:
    """Where a clip's shard lives, relative to FEATURES_DIR (mirrors the corpus tree)."""
    return f"{SHARD_DIR}/{clip_id}{SHARD_SUFFIX}"


# ------------------------------------------------------------------------------------------------- the listing
@dataclass
class ClipRecord:
    """What happened to one clip in `mmemo extract`; one row of the manifest."""

    clip: str
    source: str
    status: str  # "ok" (extracted now), "up-to-date" (kept from an earlier run) or "failed"
    shard: str = ""
    frames: int = 0
    duration: float = 0.0
    modalities: str = ""
    labels: str = ""  # "clip", "continuous", "frames" or ""
    bytes: int = 0
    error: str = ""
    warnings: list[str] = field(default_factory=list)  # printed, not listed


def write_manifest(out: Path, records: list[ClipRecord], record: dict, labels: pd.DataFrame | None) -> None:
    """manifest.csv, errors.csv, labels.csv (when ``labels`` is given) and extract_config.json, each atomically.

    ``record`` is what extract_config.json holds: ``config`` (an ExtractConfig as a dict), ``labels`` (the path of
    labels.csv or None), the label source and the versions.
    """
    rows = [{k: v for k, v in asdict(r).items() if k != "warnings"} for r in records]
    _write_csv(pd.DataFrame(rows, columns=MANIFEST_COLUMNS), out / MANIFEST)
    errors = [{"clip": r.clip, "source": r.source, "error": r.error} for r in records if r.status == "failed"]
    _write_csv(pd.DataFrame(errors, columns=["clip", "source", "error"]), out / ERRORS)
    if labels is not None:
        _write_csv(labels, out / LABELS_FILE)
    atomic.write_json(out / RECORD, record)


def _write_csv(df: pd.DataFrame, path: Path) -> None:
    with atomic.atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)


@dataclass
class Manifest:
    """A features directory's listing, as ``write_manifest`` wrote it."""

    root: Path
    table: pd.DataFrame  # manifest.csv, every value a string ("" where empty)
    record: dict | None  # extract_config.json, None when absent

    @property
    def extracted(self) -> pd.DataFrame:
        """The rows of clips that have a shard (extracted now or kept from an earlier run)."""
        return self.table[self.table["status"] != "failed"]

    @property
    def failed(self) -> pd.DataFrame:
        return self.table[self.table["status"] == "failed"]

    @property
    def extract_cfg(self) -> ExtractConfig:
        if self.record is None:
            raise MmemoError(f"{self.root}: no {RECORD}; run `mmemo extract` again")
        return ExtractConfig.from_dict(self.record["config"])


def read_manifest(features_dir: str | os.PathLike) -> Manifest:
    """The listing of ``features_dir``; a one-line MmemoError when it is not a features directory."""
    root = Path(features_dir)
    path = root / MANIFEST
    if not path.exists():
        raise MmemoError(f"{root}: no {MANIFEST} here; is this a directory written by `mmemo extract`?")
    record_path = root / RECORD
    record = json.loads(record_path.read_text()) if record_path.exists() else None
    return Manifest(root, pd.read_csv(path, keep_default_na=False), record)


# ------------------------------------------------------------------------------------------ the labelled corpus
@dataclass(frozen=True)
class ClipRef:
    """Where a clip's shard is and how long it is: enough to plan windows without opening the file."""

    clip_id: str
    path: str
    n_frames: int


@dataclass
class LabelledCorpus:
    """The labelled, extracted clips of a features directory: what training and evaluation read."""

    root: Path
    clips: list[ClipRef]
    extract_cfg: ExtractConfig
    has_video: bool
    labels_path: Path | None  # the label table (FEATURES_DIR/labels.csv), with its group columns
    label_kinds: dict[str, str] = field(default_factory=dict)  # clip id -> "clip" or "continuous"

    @property
    def cache_dir(self) -> Path:
        return self.root / CACHE_DIR


def load_corpus(features_dir: str | os.PathLike) -> LabelledCorpus:
    """The labelled clips of an extraction and its feature configuration."""
    manifest = read_manifest(features_dir)
    root, cfg = manifest.root, manifest.extract_cfg
    ok = manifest.extracted[manifest.extracted["labels"] != ""]
    if len(ok) < 2:
        raise MmemoError(f"{root}: {len(ok)} labelled clip(s); training needs at least 2 (see labels.csv)")
    clips = [ClipRef(r.clip, str(root / r.shard), int(r.frames)) for r in ok.itertuples()]
    labels = manifest.record.get("labels")
    return LabelledCorpus(
        root,
        clips,
        cfg,
        bool(ok["modalities"].str.contains("video").any()),
        Path(labels) if labels else None,
        dict(zip(ok["clip"], ok["labels"], strict=True)),
    )


def label_columns(corpus: LabelledCorpus) -> list[str]:
    """The columns of the corpus's label table (none when it has no table)."""
    path = corpus.labels_path
    return [] if path is None or not Path(path).exists() else list(pd.read_csv(path, nrows=0).columns)


def clip_groups(corpus: LabelledCorpus, column: str | None, groups_file: Path | None = None) -> list[str]:
    """Each clip's value of the label table's ``column`` (its own id when ``column`` is None)."""
    ids = [c.clip_id for c in corpus.clips]
    if not column:
        return ids
    path = groups_file or corpus.labels_path
    if path is None or not Path(path).exists():
        raise ConfigError(f"--group-by {column}: no label table to read it from")
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    if column not in table.columns:
        raise ConfigError(f"{path}: no column {column!r} (columns: {', '.join(table.columns)})")
    # A time-continuous table repeats a clip on many rows: the last one stands for it.
    group_of = dict(zip(table["clip"].map(normalise_clip_id), table[column], strict=True))
    missing = [i for i in ids if i not in group_of]
    if missing:
        raise ConfigError(f"{path}: clip(s) without a {column}: {', '.join(missing[:5])}")
    return [group_of[i] for i in ids]


def media_seconds(clips: list[ClipRef], fps: int) -> float:
    return sum(c.n_frames for c in clips) / fps


def val_fraction(corpus: LabelledCorpus, cfg: TrainConfig) -> float:
    """The configured share, or by default 0.2, and 0.1 for a small corpus, where every training clip counts
    (docs/training.md: it lifted valence CCC in the small-corpus cross-validation)."""
    if cfg.val_fraction is not None:
        return cfg.val_fraction
    return 0.1 if media_seconds(corpus.clips, corpus.extract_cfg.fps) < SMALL_CORPUS_S else 0.2


def split(
    corpus: LabelledCorpus, cfg: TrainConfig, groups_file: Path | None = None
) -> tuple[list[ClipRef], list[ClipRef]]:
    """Seeded split into (train, validation): by clip, or by the ``group_by`` column so no group straddles."""
    keys = clip_groups(corpus, cfg.group_by, groups_file)
    unique = sorted(set(keys))
    if len(unique) < 2:
        raise ConfigError(f"only {len(unique)} group(s): cannot hold any out for validation")
    rng = random.Random(cfg.seed)
    rng.shuffle(unique)
    n_val = min(len(unique) - 1, max(1, round(val_fraction(corpus, cfg) * len(unique))))
    val_keys = set(unique[:n_val])
    train = [c for c, k in zip(corpus.clips, keys, strict=True) if k not in val_keys]
    val = [c for c, k in zip(corpus.clips, keys, strict=True) if k in val_keys]
    return train, val
