"""A features directory, the output of `mmemo extract` and the input of training and evaluation.

Layout (one writer, ``write_manifest``, and one reader, ``read_manifest``, for its listing)::

    FEATURES_DIR/
      shards/<clip id>.h5     one HDF5 file per extracted clip (layout: mmemo.data.schema)
      manifest.csv            one row per clip of the corpus (MANIFEST_COLUMNS): status, shard, frames, ..., notes
      errors.csv              clip, source, error, level: every clip that failed (level "error") and every clip
                              kept with a warning about its source, e.g. a truncated file (level "warning")
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
MANIFEST_COLUMNS = [
    "clip", "shard", "status", "frames", "duration", "modalities", "labels", "bytes", "source", "error", "notes",
]  # fmt: skip
# Columns added after the first release, at the end: a manifest written before them is read with them empty.
OPTIONAL_MANIFEST_COLUMNS = ("notes",)
ERROR_COLUMNS = ["clip", "source", "error", "level"]  # level: "error" (the clip failed) or "warning" (kept)


def shard_relpath(clip_id: str) -> str:
    """Where a clip's shard lives, relative to FEATURES_DIR (mirrors the corpus tree)."""
    return f"{SHARD_DIR}/{clip_id}{SHARD_SUFFIX}"


def check_relative(rel: str, where: str) -> str:
    """``rel`` if it is a relative path that stays where it is joined: no absolute path, no ``..``, no empty part.

    Clip ids, shard paths and label paths come from files a user or an adversary may have written (a manifest,
    a label table, an HDF5 attribute): joined unchecked, ``../../x`` or ``/tmp/x`` would read or write outside the
    features directory.
    """
    parts = rel.replace("\\", "/").split("/")
    if not rel or rel.startswith(("/", "\\")) or Path(rel).is_absolute() or any(p in ("", ".", "..") for p in parts):
        raise MmemoError(f"{where}: {rel!r} is not a plain relative path (absolute, empty or with '..')")
    return rel


def inside(root: Path, rel: str, where: str) -> Path:
    """``root / rel``, refused with a one-line error unless it resolves to a path inside ``root``."""
    path = root / check_relative(rel, where)
    real_root = root.resolve()
    if real_root not in path.resolve().parents:
        raise MmemoError(f"{where}: {rel!r} leads outside {root}")
    return path


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
    notes: str = ""  # what is wrong with the source of a clip kept anyway ("truncated: 1.84 s missing"), or ""
    warnings: list[str] = field(default_factory=list)  # printed, not listed
    # The warnings about the source that are listed (errors.csv, level "warning") and that `--strict` turns into
    # this clip's failure (a truncated file); each is among ``warnings`` too.
    issues: list[str] = field(default_factory=list)


def write_manifest(out: Path, records: list[ClipRecord], record: dict, labels: pd.DataFrame | None) -> None:
    """manifest.csv, errors.csv, labels.csv (when ``labels`` is given) and extract_config.json, each atomically.

    ``record`` is what extract_config.json holds: ``config`` (an ExtractConfig as a dict), ``labels`` (the path of
    labels.csv or None), the label source and the versions.
    """
    rows = [{k: v for k, v in asdict(r).items() if k in MANIFEST_COLUMNS} for r in records]
    _write_csv(pd.DataFrame(rows, columns=MANIFEST_COLUMNS), out / MANIFEST)
    errors = []
    for r in records:
        if r.status == "failed":
            errors.append({"clip": r.clip, "source": r.source, "error": r.error, "level": "error"})
        elif r.issues:
            errors.append({"clip": r.clip, "source": r.source, "error": "; ".join(r.issues), "level": "warning"})
    _write_csv(pd.DataFrame(errors, columns=ERROR_COLUMNS), out / ERRORS)
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
    table: pd.DataFrame  # manifest.csv: strings ("" where empty), numbers in frames, bytes and duration
    record: dict | None  # extract_config.json, None when absent

    @property
    def extracted(self) -> pd.DataFrame:
        """The rows of clips that have a shard (extracted now or kept from an earlier run)."""
        return self.table[self.table["status"] != "failed"]

    @property
    def failed(self) -> pd.DataFrame:
        return self.table[self.table["status"] == "failed"]

    def shard_path(self, row) -> Path:
        """The shard of a manifest row, checked to lie inside FEATURES_DIR/shards."""
        return inside(self.root / SHARD_DIR, _under_shards(row.shard, self.root / MANIFEST), str(self.root / MANIFEST))

    @property
    def extract_cfg(self) -> ExtractConfig:
        path = self.root / RECORD
        if self.record is None:
            raise MmemoError(f"{path}: missing; run `mmemo extract` again")
        try:
            return ExtractConfig.from_dict(self.record["config"])
        except MmemoError as e:
            raise MmemoError(f"{path}: {e}") from None
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise MmemoError(f"{path}: not an extraction record of mmemo ({type(e).__name__}: {e})") from None

    @property
    def labels_path(self) -> Path | None:
        """FEATURES_DIR/labels.csv when the extraction had labels. The record names it relative to the directory
        (older versions wrote an absolute path: the table is always the directory's own labels.csv, which is what
        is read, so a moved features directory keeps its labels)."""
        if self.record is None or not self.record.get("labels"):
            return None
        path = self.root / LABELS_FILE
        if not path.exists():
            raise MmemoError(f"{path}: missing, though {self.root / RECORD} says the corpus is labelled; "
                             "run `mmemo extract` again")  # fmt: skip
        return path


def _under_shards(shard: str, where: Path) -> str:
    prefix = SHARD_DIR + "/"
    if not isinstance(shard, str) or not shard.startswith(prefix) or not shard.endswith(SHARD_SUFFIX):
        raise MmemoError(f"{where}: shard {shard!r} is not {prefix}<clip id>{SHARD_SUFFIX}")
    return shard[len(prefix) :]


def read_manifest(features_dir: str | os.PathLike) -> Manifest:
    """The listing of ``features_dir``, checked; a one-line MmemoError when it is not a readable one."""
    root = Path(features_dir)
    path = root / MANIFEST
    if not path.exists():
        raise MmemoError(f"{root}: no {MANIFEST} here; is this a directory written by `mmemo extract`?")
    try:
        table = pd.read_csv(path, keep_default_na=False, dtype=str)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise MmemoError(f"{path}: not a readable CSV ({str(e).strip().splitlines()[0]})") from None
    missing = [c for c in MANIFEST_COLUMNS if c not in table.columns and c not in OPTIONAL_MANIFEST_COLUMNS]
    if missing:
        raise MmemoError(f"{path}: not a manifest of `mmemo extract` (no column {', '.join(missing)})")
    for c in OPTIONAL_MANIFEST_COLUMNS:  # an older manifest: nothing was noted
        if c not in table.columns:
            table[c] = ""
    for line, row in zip(range(2, len(table) + 2), table.itertuples(), strict=True):
        where = f"{path}:{line}"
        check_relative(row.clip, where)
        if row.status != "failed":
            check_relative(_under_shards(row.shard, where), where)
            if not row.frames.isdigit():
                raise MmemoError(f"{where}: frames {row.frames!r} is not a whole number")
    for col in ("frames", "bytes", "duration"):  # numbers where there are numbers: "" stays for failed rows
        table[col] = pd.to_numeric(table[col].replace("", "0"), errors="coerce").fillna(0)
    record_path = root / RECORD
    record = None
    if record_path.exists():
        try:
            record = json.loads(record_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise MmemoError(f"{record_path}: not valid JSON ({e})") from None
        if not isinstance(record, dict):
            raise MmemoError(f"{record_path}: not an extraction record of mmemo (a JSON object is expected)")
    return Manifest(root, table, record)


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


def load_corpus(features_dir: str | os.PathLike, *, min_clips: int = 2) -> LabelledCorpus:
    """The labelled clips of an extraction and its feature configuration.

    ``min_clips``: training needs two (one to learn from, one to validate on); scoring a run needs one.
    """
    manifest = read_manifest(features_dir)
    root, cfg = manifest.root, manifest.extract_cfg
    ok = manifest.extracted[manifest.extracted["labels"] != ""]
    if len(ok) < min_clips:
        need = "training needs at least 2" if min_clips == 2 else f"at least {min_clips} needed"
        raise MmemoError(f"{root}: {len(ok)} labelled clip(s); {need} (see labels.csv)")
    clips = [ClipRef(r.clip, str(manifest.shard_path(r)), int(r.frames)) for r in ok.itertuples()]
    missing = [c.path for c in clips if not Path(c.path).is_file()]
    if missing:
        raise MmemoError(f"{missing[0]}: listed in {root / MANIFEST} but missing ({len(missing)} shard(s)); "
                         "run `mmemo extract` again")  # fmt: skip
    return LabelledCorpus(
        root,
        clips,
        cfg,
        bool(ok["modalities"].str.contains("video").any()),
        manifest.labels_path,
        dict(zip(ok["clip"], ok["labels"], strict=True)),
    )


def label_columns(corpus: LabelledCorpus) -> list[str]:
    """The columns of the corpus's label table (none when it has no table)."""
    path = corpus.labels_path
    return [] if path is None else list(pd.read_csv(path, nrows=0).columns)


def clip_groups(corpus: LabelledCorpus, column: str | None, groups_file: Path | None = None) -> list[str]:
    """Each clip's value of the label table's ``column`` (its own id when ``column`` is None)."""
    ids = [c.clip_id for c in corpus.clips]
    if not column:
        return ids
    path = groups_file or corpus.labels_path
    if path is None or not Path(path).exists():
        raise ConfigError(f"--group-by {column}: no label table to read it from ({path or 'the corpus has none'})")
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
