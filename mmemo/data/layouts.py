"""Corpus label layouts: find a corpus's annotations, read them as they are, resolve one gold-standard table.

Every layout resolves to a ``LabelTable`` in mmemo's generic layout (``mmemo.data.labels``): per clip, time-continuous
or per native frame, with extra columns (``speaker``, ``emotion``, ...) kept.

=============  ==========================================================================================
layout         what is read
=============  ==========================================================================================
``csv``        the generic table: ``labels.csv`` (``clip,[time|frame,]valence,arousal[,extras]``)
``dimtables``  ``arousal.csv`` and ``valence.csv``, no header, ``file,value`` per line (per clip)
``multirater`` ``arousal/`` and ``valence/`` directories of per-clip rater files, CSV or ARFF (RECOLA / AVEC);
               the gold standard is the raters' mean or their EWE (``mmemo.data.raters``)
``affwild``    one ``.txt`` per video (its stem), header ``valence,arousal``, one line per native video frame,
               -5 where unannotated (Aff-Wild2)
``avec2019``   AVEC 2019 CES (SEWA) gold standards: one ``;`` file per recording, header
               ``name;timestamp;arousal;valence;liking``, the quoted name in every row, seconds (10 Hz)
``muse``       MuSe 2020-2023 ``label_segments/<dimension>/<id>.csv``: ``timestamp,value,segment_id``,
               milliseconds; ``physio-arousal/`` is arousal where there is no ``arousal/``
``cremad``     nothing but the clips' file names, ``1001_DFA_ANG_XX`` (``mmemo.data.emotions``)
``ravdess``    nothing but the clips' file names, ``01-01-05-02-01-01-12`` (``mmemo.data.emotions``)
=============  ==========================================================================================

Auto-detection (``--label-format auto``, the default). ``--labels FILE`` is read as ``csv`` (as ``avec2019``
when its first line is that layout's header). Otherwise the directory ``D`` (``--labels DIR``, else the corpus
directory) is searched for the files of every layout:

- ``csv``: ``D/labels.csv``;
- ``dimtables``: ``D/arousal.csv`` or ``D/valence.csv`` (names case-insensitive);
- ``multirater``: directories named ``arousal`` or ``valence`` (case-insensitive, up to 4 levels below ``D``, hidden
  ones skipped) holding ``.arff`` files, or ``.csv`` files whose first one is not MuSe's (two directories of one
  name: an error asking for ``--labels DIR``);
- ``affwild``: ``.txt`` files below ``D`` starting with the line ``valence,arousal``;
- ``avec2019``: ``.csv`` files below ``D`` starting with ``name;timestamp;``;
- ``muse``: directories up to 4 levels below ``D`` whose first ``.csv`` has the header ``timestamp,value[,segment_id]``,
  beside a ``valence``, ``arousal`` or ``physio-arousal`` one (two such ``label_segments`` directories: an error).

One layout found: that one. Two or more: an error naming them (``--label-format`` or ``--labels DIR`` chooses; no
silent precedence). None: more than half the clips named like CREMA-D clips means ``cremad``, else like RAVDESS
clips ``ravdess``, else the corpus is unlabelled. ``--label-format NAME`` looks for that layout only and fails with
one line when its files are not there.

Annotation files are matched to clips by name: a file (or ARFF instance, AVEC recording name, or table entry) named
``x`` labels the clip whose id is ``x``, else every clip whose file stem is ``x`` (RECOLA's audio and video
recordings of one session both get its labels). Files that match no clip, and clips without labels, are reported as
notes, not errors.

mmemo trains valence and arousal together (one label mask for both), so a layout that has only one of the two
dimensions is an error, and a clip annotated in only one dimension stays unlabelled (with a note).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pandas as pd

from mmemo.config import GOLD_METHODS, LABEL_FORMATS
from mmemo.data.emotions import PARSERS, read_categorical
from mmemo.data.labels import DIMENSIONS, LABELS_FILE, LabelTable, interpolate, normalise_clip_id, read_labels
from mmemo.data.raters import RATER_SUFFIXES, ewe_weights, gold_standard, parse_number, read_rater_file
from mmemo.errors import ConfigError, LabelError

AFFWILD_HEADER = "valence,arousal"
AFFWILD_UNANNOTATED = -5.0
# MuSe label files: "timestamp" in the challenge packages, "Time" in the files MuSe-Toolbox writes (both ms).
MUSE_COLUMNS = {"timestamp", "time", "value", "segment_id"}
MUSE_AROUSAL = ("arousal", "physio-arousal")  # MuSe's arousal directories, the one used first when both are there
# Time-continuous challenge labels (AVEC 2019, MuSe): two samples further apart than this many times the file's
# usual step leave the time between them unlabelled (one missing sample is bridged, a longer gap is not made up).
GAP_STEPS = 2.5
_DIM_DIR_DEPTH = 4  # how deep below D dimension directories are looked for (RECOLA: ratings_individual/arousal)


def load_labels(
    corpus: str | os.PathLike,
    clip_ids: list[str],
    *,
    path: str | os.PathLike | None = None,
    label_format: str = "auto",
    gold: str = "mean",
    annotation_delay: float = 0.0,
    emotion_map: str | os.PathLike | None = None,
) -> LabelTable | None:
    """The corpus's gold-standard labels in the generic layout, or None when it has none.

    Args:
        corpus: the corpus directory (where annotations are looked for unless ``path`` is given).
        clip_ids: the corpus's clip ids (annotations are matched to them; CREMA-D / RAVDESS labels come from them).
        path: ``--labels``: a label file (generic CSV) or a directory to look in.
        label_format: one of LABEL_FORMATS.
        gold: ``mean`` or ``ewe``: how multi-rater annotations become one gold standard.
        annotation_delay: seconds; the label at time t + d is given to media time t (time-continuous labels).
        emotion_map: CSV ``emotion,valence,arousal`` replacing the built-in table (CREMA-D / RAVDESS).

    Raises:
        LabelError: malformed annotations (one line, ``path:line: what``); ConfigError: options that do not apply.
    """
    if label_format not in LABEL_FORMATS:
        raise ConfigError(f"label format {label_format!r} is not one of {', '.join(LABEL_FORMATS)}")
    if gold not in GOLD_METHODS:
        raise ConfigError(f"gold standard {gold!r} is not one of {', '.join(GOLD_METHODS)}")
    layout, where = detect(Path(corpus), clip_ids, Path(path) if path else None, label_format)
    _check_options(layout, gold, annotation_delay, emotion_map)
    if layout is None:
        return None
    if layout == "csv":
        table = read_labels(where)
    elif layout == "dimtables":
        table = read_dimtables(where, clip_ids)
    elif layout == "multirater":
        table = read_multirater(where, clip_ids, gold=gold)
    elif layout == "affwild":
        table = read_affwild(where, clip_ids)
    elif layout == "avec2019":
        table = read_avec2019(where, clip_ids)
    elif layout == "muse":
        table = read_muse(where, clip_ids)
    else:
        table = read_categorical(layout, clip_ids, where, emotion_map)
    return delay_labels(table, annotation_delay) if annotation_delay else table


def _check_options(layout: str | None, gold: str, delay: float, emotion_map) -> None:
    if emotion_map and layout not in ("cremad", "ravdess"):
        raise ConfigError(f"--emotion-map applies to CREMA-D / RAVDESS corpora; these labels are {layout or 'absent'}")
    if gold != "mean" and layout != "multirater":
        raise ConfigError(f"--gold {gold} applies to multi-rater annotations; these labels are {layout or 'absent'}")
    if delay and layout in (None, "affwild", "cremad", "ravdess", "dimtables"):
        raise ConfigError(f"--annotation-delay applies to time-continuous labels; these are {layout or 'absent'}")


# ---------------------------------------------------------------------------------------------------- detection
def detect(corpus: Path, clip_ids: list[str], path: Path | None, fmt: str = "auto") -> tuple[str | None, object]:
    """(layout, what to read) by the rules in the module docstring; (None, None) when there are no labels."""
    if path is not None and not path.exists():
        raise LabelError(f"{path}: no such label file or directory")
    if fmt in PARSERS:
        if path is not None:
            raise ConfigError(f"--label-format {fmt} takes the labels from the clips' file names; drop --labels")
        if not _named_like(fmt, clip_ids, at_least=1):
            raise LabelError(f"{corpus}: no clip is named like a {fmt} clip (see docs/labels.md)")
        return fmt, corpus
    if path is not None and path.is_file():
        if fmt in ("auto", "avec2019") and _is_avec2019_header(_first_line(path)):
            return "avec2019", [path]  # one AVEC 2019 label file given on its own
        if fmt not in ("auto", "csv"):
            raise ConfigError(f"{path}: --label-format {fmt} reads a directory, not one file")
        return "csv", path
    root = path if path is not None else corpus
    if fmt != "auto":
        found = _LOCATORS[fmt](root)
        if not found:
            raise LabelError(f"{root}: no {fmt} annotations found ({_LOOKED_FOR[fmt]})")
        return fmt, found
    hits = [(layout, found) for layout, locate in _LOCATORS.items() if (found := locate(root))]
    if len(hits) > 1:
        both = " and ".join(f"{layout} ({_shown(root, found)})" for layout, found in hits)
        raise LabelError(
            f"{root}: annotations of {len(hits)} layouts: {both}; choose one with --label-format NAME "
            f"(or point --labels at the directory that holds them)"
        )
    if hits:
        return hits[0]
    if path is not None:
        raise LabelError(f"{path}: no annotations found ({'; '.join(_LOOKED_FOR.values())})")
    for layout in PARSERS:
        if _named_like(layout, clip_ids, at_least=len(clip_ids) // 2 + 1):
            return layout, corpus
    return None, None


def _shown(root: Path, found) -> str:
    """Where a locator found annotations, short enough for a one-line error."""
    paths = [found] if isinstance(found, Path) else list(found.values()) if isinstance(found, dict) else found
    shown = ", ".join(str(p.relative_to(root)) if p.is_relative_to(root) else str(p) for p in paths[:2])
    return shown + (f" and {len(paths) - 2} more" if len(paths) > 2 else "")


def _find_csv(root: Path) -> Path | None:
    p = root / LABELS_FILE
    return p if p.is_file() else None


def _find_dimtables(root: Path) -> dict[str, Path] | None:
    if not root.is_dir():
        return None
    found = {p.stem.lower(): p for p in root.iterdir() if p.is_file() and p.name.lower() in _DIM_FILES}
    return found or None


def _find_dimension_dirs(root: Path) -> dict[str, Path] | None:
    found: dict[str, list[Path]] = {}
    for d, _, files in _walk(root, _DIM_DIR_DEPTH):
        if d.name.lower() in DIMENSIONS and _holds_rater_files(d, files):
            found.setdefault(d.name.lower(), []).append(d)
    for dim, dirs in found.items():
        if len(dirs) > 1:
            listed = ", ".join(str(x.relative_to(root)) for x in dirs[:4])
            raise LabelError(f"{root}: several {dim} annotation directories ({listed}); choose one with --labels DIR")
    return {dim: dirs[0] for dim, dirs in found.items()} or None


def _holds_rater_files(d: Path, files: list[str]) -> bool:
    """RECOLA / AVEC rater files: ``.arff`` files, or ``.csv`` files unless the first one has MuSe's header
    (``timestamp,value``: MuSe's dimension directories share RECOLA's names, its times are milliseconds; the
    directory is then MuSe's, as ``_find_muse`` decides) or names per-segment classes (refused)."""
    if any(f.lower().endswith(".arff") for f in files):
        return True
    csvs = [f for f in files if f.lower().endswith(".csv")]
    if not csvs:
        return False
    header = _first_line(d / csvs[0])
    if "class_id" in header.split(","):
        raise LabelError(
            f"{d / csvs[0]}: per-segment classes (a class_id column, as MuSe-Sent / MuSe-Topic ship them); mmemo "
            f"reads time-continuous or per-clip valence and arousal, not classes (docs/labels.md)"
        )
    return not _is_muse_header(header)


def _find_affwild(root: Path) -> list[Path] | None:
    found = []
    for d, _, files in _walk(root, None):
        for f in files:
            if f.lower().endswith(".txt") and _first_line(d / f) == AFFWILD_HEADER:
                found.append(d / f)
    return sorted(found) or None


def _find_avec2019(root: Path) -> list[Path] | None:
    found = []
    for d, _, files in _walk(root, None):
        for f in files:
            if f.lower().endswith(".csv") and _is_avec2019_header(_first_line(d / f)):
                found.append(d / f)
    return sorted(found) or None


def _is_avec2019_header(line: str) -> bool:
    """``name;timestamp;arousal;valence;liking`` (spaces removed, lower case): AVEC 2019 CES's label header."""
    cells = [c.strip("'\"") for c in line.split(";")]
    return len(cells) >= 3 and cells[:2] == ["name", "timestamp"]


def _find_muse(root: Path) -> dict[str, Path] | None:
    """{dimension directory name (lower case): directory} of the one MuSe ``label_segments`` directory below root."""
    parents: dict[Path, dict[str, Path]] = {}
    for d, _, files in _walk(root, _DIM_DIR_DEPTH):
        csvs = [f for f in files if f.lower().endswith(".csv")]
        if csvs and _is_muse_header(_first_line(d / csvs[0])):
            parents.setdefault(d.parent, {})[d.name.lower()] = d
    # A directory of timestamp,value files is MuSe's when a valence or arousal directory sits beside it.
    found = {p: dims for p, dims in parents.items() if {"valence", *MUSE_AROUSAL} & set(dims)}
    if len(found) > 1:
        listed = ", ".join(str(p.relative_to(root)) if p.is_relative_to(root) else str(p) for p in list(found)[:4])
        raise LabelError(f"{root}: several MuSe label directories ({listed}); choose one with --labels DIR")
    return next(iter(found.values()), None)


def _is_muse_header(line: str) -> bool:
    """``timestamp,value,segment_id`` in any order, ``segment_id`` optional, ``time`` for ``timestamp`` as
    MuSe-Toolbox writes it (spaces removed, lower case)."""
    cells = [c.strip("'\"") for c in line.split(",")]
    one_time = len({"timestamp", "time"} & set(cells)) == 1
    return len(set(cells)) == len(cells) and one_time and "value" in cells and set(cells) <= MUSE_COLUMNS


_DIM_FILES = {f"{d}.csv" for d in DIMENSIONS}
_LOCATORS = {"csv": _find_csv, "dimtables": _find_dimtables, "multirater": _find_dimension_dirs,
             "affwild": _find_affwild, "avec2019": _find_avec2019, "muse": _find_muse}  # fmt: skip
_LOOKED_FOR = {
    "csv": f"looked for {LABELS_FILE}",
    "dimtables": "looked for arousal.csv and valence.csv",
    "multirater": "looked for arousal/ and valence/ directories of .csv or .arff files",
    "affwild": f".txt files starting with the line {AFFWILD_HEADER}",
    "avec2019": ".csv files starting with the line name;timestamp;arousal;valence...",
    "muse": "looked for valence/ and arousal/ (or physio-arousal/) directories of timestamp,value,segment_id files",
}


def _walk(root: Path, max_depth: int | None):
    """(directory, subdirectory names, file names) below ``root``, sorted, hidden entries skipped."""
    if not root.is_dir():
        return
    for d, dirs, files in os.walk(root):
        here = Path(d)
        depth = len(here.relative_to(root).parts)
        dirs[:] = sorted(x for x in dirs if not x.startswith(".")) if max_depth is None or depth < max_depth else []
        yield here, dirs, sorted(f for f in files if not f.startswith("."))


def _first_line(path: Path) -> str:
    try:
        with open(path, encoding="utf-8-sig", errors="replace") as f:
            return f.readline().strip().replace(" ", "").lower()
    except OSError:
        return ""


def _named_like(layout: str, clip_ids: list[str], at_least: int) -> bool:
    parse = PARSERS[layout]
    return sum(parse(c.rsplit("/", 1)[-1]) is not None for c in clip_ids) >= max(1, at_least)


# ------------------------------------------------------------------------------------------------------ matching
def match_clips(keys, clip_ids: list[str]) -> tuple[dict[str, list[str]], list[str]]:
    """Annotation names -> the clips they label (by id, else by file stem), and the names that label none."""
    ids = set(clip_ids)
    by_stem: dict[str, list[str]] = {}
    for c in clip_ids:
        by_stem.setdefault(c.rsplit("/", 1)[-1], []).append(c)
    matched, unmatched = {}, []
    for key in keys:
        clips = [key] if key in ids else by_stem.get(key.rsplit("/", 1)[-1], [])
        if clips:
            matched[key] = clips
        else:
            unmatched.append(key)
    return matched, unmatched


def _note_list(where, what: str, names: list[str]) -> list[str]:
    if not names:
        return []
    return [f"{where}: {len(names)} {what}: " + ", ".join(names[:5]) + (" ..." if len(names) > 5 else "")]


def _require_both(where, found: dict) -> None:
    missing = [d for d in DIMENSIONS if d not in found]
    if missing:
        raise LabelError(
            f"{where}: no {' or '.join(missing)} annotations next to the {', '.join(found)} ones; mmemo trains "
            f"valence and arousal together and needs both"
        )


def _one_dimension_notes(where, per_dim: dict[str, dict]) -> tuple[set, list[str]]:
    """Clips labelled in both dimensions, and a note for those labelled in one only."""
    both = set(per_dim[DIMENSIONS[0]]) & set(per_dim[DIMENSIONS[1]])
    notes = []
    for d, other in (DIMENSIONS, DIMENSIONS[::-1]):
        only = sorted(set(per_dim[d]) - both)
        notes += _note_list(where, f"clip(s) have {d} but no {other} annotation (left unlabelled)", only)
    return both, notes


# ----------------------------------------------------------------------------------------------------- dimtables
def read_dimtables(files: dict[str, Path], clip_ids: list[str]) -> LabelTable:
    """``arousal.csv`` + ``valence.csv`` (``file,value``, no header) -> a per-clip table."""
    root = next(iter(files.values())).parent
    _require_both(root, files)
    per_dim, notes = {}, []
    for d in DIMENSIONS:
        values = _read_dim_table(files[d], d)
        matched, unmatched = match_clips(values, clip_ids)
        notes += _note_list(files[d], "entries name no clip of the corpus", unmatched)
        per_dim[d] = {c: values[key] for key, clips in matched.items() for c in clips}
    both, more = _one_dimension_notes(root, per_dim)
    rows = pd.DataFrame(
        {"clip": sorted(both), **{d: [per_dim[d][c] for c in sorted(both)] for d in DIMENSIONS}},
        columns=["clip", *DIMENSIONS],
    ).astype({d: float for d in DIMENSIONS})
    return LabelTable(root, "clip", rows, layout="dimtables", notes=notes + more)


def _read_dim_table(path: Path, dim: str) -> dict[str, float]:
    """``{clip key: value}``; refused with ``path:line``: a value that is not a number, not finite (``nan``,
    ``inf``) or outside [-1, 1], and one clip listed twice with different values (naming both lines; a line
    repeated with the same value is kept once)."""
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise LabelError(f"{path}: cannot read ({e})") from None
    values: dict[str, float] = {}
    first: dict[str, int] = {}  # clip key -> the line that labelled it
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        cells = [c.strip() for c in line.split(",")]
        if len(cells) != 2 or not cells[0]:
            raise LabelError(f"{path}:{n}: expected file,value; found {line.strip()!r}")
        try:
            value = float(cells[1])
        except ValueError:
            if n == 1 and cells[1].lower() in (dim, "value"):  # a header after all
                continue
            raise LabelError(f"{path}:{n}: value {cells[1]!r} is not a number") from None
        if not math.isfinite(value):
            hint = " (leave the line out to leave the clip unlabelled)" if math.isnan(value) else ""
            raise LabelError(f"{path}:{n}: value {_show(value)} is not a finite number{hint}")
        if not -1 <= value <= 1:
            raise LabelError(f"{path}:{n}: {dim} {_show(value)} is outside [-1, 1]")
        key = normalise_clip_id(cells[0])
        if key in values:
            if values[key] == value:
                continue
            raise LabelError(
                f"{path}:{n}: clip {key!r} is labelled twice, differently from line {first[key]} "
                f"({dim} {_show(values[key])} there, {_show(value)} here)"
            )
        values[key], first[key] = value, n
    return values


def _show(value: float) -> str:
    """A number as an error shows it, as short as it round-trips (2, 1.5, -inf, nan), as ``read_labels`` does."""
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text


# ---------------------------------------------------------------------------------------------------- multirater
def read_multirater(dirs: dict[str, Path], clip_ids: list[str], *, gold: str = "mean") -> LabelTable:
    """``arousal/`` + ``valence/`` rater files -> a time-continuous gold standard per clip."""
    root = Path(os.path.commonpath([str(p) for p in dirs.values()]))
    _require_both(root, dirs)
    per_dim, notes = {}, []
    for d in DIMENSIONS:
        traces = _gold_traces(dirs[d], gold, notes)
        matched, unmatched = match_clips(traces, clip_ids)
        notes += _note_list(dirs[d], "annotated instance(s) match no clip of the corpus", unmatched)
        per_dim[d] = {c: traces[key] for key, clips in matched.items() for c in clips}
    both, more = _one_dimension_notes(root, per_dim)
    frames = [_merge_dimensions(c, per_dim["valence"][c], per_dim["arousal"][c]) for c in sorted(both)]
    rows = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["clip", "time", *DIMENSIONS])
    return LabelTable(root, "continuous", rows, layout="multirater", notes=notes + more)


def _gold_traces(directory: Path, gold: str, notes: list[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """instance name -> (times, gold standard) for every rater file below ``directory``."""
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    origin: dict[str, Path] = {}
    for d, _, files in _walk(directory, None):
        for f in files:
            if not f.lower().endswith(RATER_SUFFIXES):
                continue
            for trace in read_rater_file(d / f):
                if trace.key in out:
                    raise LabelError(f"{d / f}: annotates {trace.key!r} again (already in {origin[trace.key]})")
                values, _ = gold_standard(trace.ratings, gold)
                if gold == "ewe" and not (ewe_weights(trace.ratings) > 0).any():
                    notes.append(f"{d / f}: no rater of {trace.key} agrees with the others; used their mean")
                out[trace.key], origin[trace.key] = (trace.time, values), d / f
    return out


def _merge_dimensions(clip: str, valence: tuple, arousal: tuple) -> pd.DataFrame:
    """Both dimensions on one time column (the union of their times, each interpolated, never extrapolated)."""
    (tv, v), (ta, a) = valence, arousal
    if not np.array_equal(tv, ta):
        t = np.union1d(tv, ta)
        v, a = interpolate(tv, v, t).astype(np.float64), interpolate(ta, a, t).astype(np.float64)
        tv = t
    return pd.DataFrame({"clip": clip, "time": tv, "valence": v, "arousal": a})


def delay_labels(table: LabelTable, seconds: float) -> LabelTable:
    """Shift time-continuous labels back by ``seconds``: the label at time t + d goes to media time t."""
    if table.kind != "continuous":
        raise ConfigError(f"--annotation-delay applies to time-continuous labels; {table.path} holds {table.kind}")
    rows = table.rows.copy()
    rows["time"] = rows["time"] - float(seconds)
    return LabelTable(table.path, table.kind, rows, layout=table.layout, notes=table.notes)


# ------------------------------------------------------------------------------------------------------- affwild
def read_affwild(files: list[Path], clip_ids: list[str]) -> LabelTable:
    """Aff-Wild2 per-frame files -> a per-native-frame table (``clip,frame,valence,arousal``, NaN where -5)."""
    root = Path(os.path.commonpath([str(p.parent) for p in files]))
    by_key: dict[str, Path] = {}
    for f in files:
        if f.stem in by_key:
            raise LabelError(f"{f}: annotates {f.stem!r} again (already in {by_key[f.stem]})")
        by_key[f.stem] = f
    matched, unmatched = match_clips(by_key, clip_ids)
    notes = _note_list(root, "annotation file(s) match no clip of the corpus", [str(by_key[k]) for k in unmatched])
    frames = []
    for key, clips in matched.items():
        values = _read_affwild_file(by_key[key])
        for c in clips:
            frames.append(pd.DataFrame({"clip": c, "frame": np.arange(len(values)), "valence": values[:, 0],
                                        "arousal": values[:, 1]}))  # fmt: skip
    rows = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["clip", "frame", *DIMENSIONS])
    rows = rows.sort_values(["clip", "frame"], kind="stable").reset_index(drop=True)
    return LabelTable(root, "frames", rows, layout="affwild", notes=notes)


def _read_affwild_file(path: Path) -> np.ndarray:
    """(n_frames, 2) valence, arousal; NaN where the file says -5 (unannotated). Refused with ``path:line``: a
    line that is not two numbers, a ``nan`` or infinite value, a value outside [-1, 1] other than -5."""
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise LabelError(f"{path}: cannot read ({e})") from None
    while lines and not lines[-1].strip():
        lines.pop()
    out = np.empty((max(0, len(lines) - 1), 2), np.float64)
    for n, line in enumerate(lines[1:], 2):
        cells = line.split(",")
        try:
            v, a = (float(c) for c in cells) if len(cells) == 2 else (None, None)
        except ValueError:
            v = None
        if v is None:
            raise LabelError(f"{path}:{n}: expected valence,arousal (two numbers); found {line.strip()!r}")
        for name, x in (("valence", v), ("arousal", a)):
            if not math.isfinite(x):
                raise LabelError(
                    f"{path}:{n}: column {name} holds {_show(x)}, not a finite number (-5 marks an unannotated frame)"
                )
            if x != AFFWILD_UNANNOTATED and not -1 <= x <= 1:
                raise LabelError(f"{path}:{n}: {name} {_show(x)} is outside [-1, 1] (and not -5, unannotated)")
        out[n - 2] = (v, a)
    out[out == AFFWILD_UNANNOTATED] = np.nan
    return out


# ------------------------------------------------------------------------------------------------------ avec2019
def read_avec2019(files: list[Path], clip_ids: list[str]) -> LabelTable:
    """AVEC 2019 CES (SEWA) label files -> a time-continuous table ``clip,time,valence,arousal[,liking,...]``.

    Each file is ``;``-separated with the header ``name;timestamp;arousal;valence;liking``, the recording's name
    quoted in every row (``'Devel_DE_01'``) and times in seconds (10 Hz). The name labels the clip of that name;
    dimensions other than valence and arousal are kept as extra columns.
    """
    root = Path(os.path.commonpath([str(p.parent) for p in files]))
    traces: dict[str, pd.DataFrame] = {}
    origin: dict[str, Path] = {}
    for f in files:
        for key, frame in _read_avec2019_file(f).items():
            if key in traces:
                raise LabelError(f"{f}: annotates {key!r} again (already in {origin[key]})")
            traces[key], origin[key] = frame, f
    matched, unmatched = match_clips(traces, clip_ids)
    notes = _note_list(root, "annotated recording(s) match no clip of the corpus", unmatched)
    frames = [traces[key].assign(clip=c) for key, clips in matched.items() for c in clips]
    return LabelTable(root, "continuous", _continuous_rows(frames), layout="avec2019", notes=notes)


def _read_avec2019_file(path: Path) -> dict[str, pd.DataFrame]:
    """recording name -> its rows (``time``, valence, arousal, extras), times increasing; NaN where a cell is empty.

    Refused with ``path:line``: a header without name, timestamp, valence and arousal columns, a row with another
    number of fields, a time that is missing or does not increase, a cell that is not a number or is infinite, a
    valence or arousal outside [-1, 1].
    """
    lines = _lines(path)
    header = [c.strip().strip("'\"").lower() for c in lines[0][1].split(";")] if lines else []
    missing = [c for c in ("name", "timestamp", *DIMENSIONS) if c not in header]
    if missing or len(set(header)) != len(header):
        what = f"no {' or '.join(missing)} column" if missing else "a column named twice"
        raise LabelError(
            f"{path}:{lines[0][0] if lines else 1}: {what} in the header {';'.join(header)!r}; AVEC 2019 label "
            f"files start with name;timestamp;arousal;valence[;liking]"
        )
    at = {c: i for i, c in enumerate(header)}
    values = [c for c in header if c not in ("name", "timestamp")]  # valence, arousal and the extra dimensions
    groups: dict[str, list[list[float]]] = {}
    last: dict[str, tuple[int, float]] = {}
    for n, line in lines[1:]:
        cells = [c.strip() for c in line.split(";")]
        if len(cells) != len(header):
            raise LabelError(f"{path}:{n}: {len(cells)} fields where the header declares {len(header)}")
        key = cells[at["name"]].strip("'\"").strip() or path.stem
        t = _time(path, n, "timestamp", cells[at["timestamp"]], last.get(key))
        last[key] = (n, t)
        groups.setdefault(key, []).append([t, *(_value(path, n, c, cells[at[c]]) for c in values)])
    if not groups:
        raise LabelError(f"{path}: no data rows")
    return {key: _mask_gaps(pd.DataFrame(rows, columns=["time", *values])) for key, rows in groups.items()}


# ---------------------------------------------------------------------------------------------------------- muse
def read_muse(dirs: dict[str, Path], clip_ids: list[str]) -> LabelTable:
    """MuSe ``label_segments/<dimension>/<id>.csv`` -> a time-continuous table ``clip,time,valence,arousal,...``.

    ``dirs`` maps the lower-case dimension directory names (``valence``, ``arousal``, ``physio-arousal``,
    ``trustworthiness``, ...) to the directories. Arousal is ``arousal/``, else ``physio-arousal/`` (MuSe-Stress
    2022, MuSe-Personalisation 2023); the other directories become extra columns named after them.
    """
    root = Path(os.path.commonpath([str(p.parent) for p in dirs.values()]))
    arousal = next((d for d in MUSE_AROUSAL if d in dirs), None)
    columns = {"valence": "valence", arousal: "arousal"} if arousal else {"valence": "valence"}
    _require_both(root, {columns[d]: dirs[d] for d in columns if d in dirs})
    columns.update({d: d for d in sorted(dirs) if d not in columns})
    notes = []
    if arousal == "arousal" and "physio-arousal" in dirs:
        notes.append(f"{root}: arousal is read from arousal/; physio-arousal/ is kept as an extra column")
    per_dim: dict[str, dict] = {}
    for name, column in columns.items():
        files = sorted(p for p in dirs[name].iterdir() if p.suffix.lower() == ".csv" and not p.name.startswith("."))
        traces = {f.stem: _read_muse_file(f, column) for f in files}
        matched, unmatched = match_clips(traces, clip_ids)
        notes += _note_list(dirs[name], "label file(s) match no clip of the corpus", unmatched)
        per_dim[column] = {c: traces[key] for key, clips in matched.items() for c in clips}
    both, more = _one_dimension_notes(root, per_dim)
    frames = [
        _merge_traces(c, {col: traces[c] for col, traces in per_dim.items() if c in traces}) for c in sorted(both)
    ]
    return LabelTable(root, "continuous", _continuous_rows(frames), layout="muse", notes=notes + more)


def _read_muse_file(path: Path, column: str) -> pd.DataFrame:
    """``time`` (seconds) and ``column``: one MuSe label file, the gaps between segments masked (NaN rows).

    The header names ``timestamp`` (milliseconds) and ``value``, and may name ``segment_id`` (not needed: gaps are
    found from the times). Refused with ``path:line``: another header, a row with another number of fields, a
    missing or non-increasing timestamp, a value that is not a number or is infinite, a valence or arousal outside
    [-1, 1], and times that step by less than a millisecond (seconds written where MuSe writes milliseconds).
    """
    lines = _lines(path)
    header = [c.strip().strip("'\"").lower() for c in lines[0][1].split(",")] if lines else []
    if not _is_muse_header(",".join(header)):
        raise LabelError(
            f"{path}:{lines[0][0] if lines else 1}: header {','.join(header)!r}, expected timestamp,value,segment_id "
            f"(MuSe label files)"
        )
    at = {c: i for i, c in enumerate(header)}
    time_col = "timestamp" if "timestamp" in at else "time"
    rows: list[tuple[float, float]] = []
    last = None
    for n, line in lines[1:]:
        cells = [c.strip() for c in line.split(",")]
        if len(cells) != len(header):
            raise LabelError(f"{path}:{n}: {len(cells)} fields where the header declares {len(header)}")
        t = _time(path, n, time_col, cells[at[time_col]], last)
        last = (n, t)
        rows.append((t, _value(path, n, "value", cells[at["value"]], name=column)))
    if not rows:
        raise LabelError(f"{path}: no data rows")
    frame = pd.DataFrame(rows, columns=["time", column])
    step = float(np.median(np.diff(frame["time"]))) if len(frame) > 1 else 1.0
    if step < 1:
        raise LabelError(
            f"{path}: timestamps step by {step:g}; MuSe label files count milliseconds (250 or 500 a step); "
            f"for times in seconds write the generic labels.csv (clip,time,valence,arousal)"
        )
    frame["time"] /= 1000.0
    return _mask_gaps(frame)


# --------------------------------------------------------------------------------- shared by avec2019 and muse
def _lines(path: Path) -> list[tuple[int, str]]:
    """(line number, text) of the file's non-blank lines."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise LabelError(f"{path}: cannot read ({e})") from None
    return [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]


def _time(path: Path, n: int, name: str, cell: str, last: tuple[int, float] | None) -> float:
    """A time cell: a finite number, after the previous time of the same trace (``last``: its line and time)."""
    t = parse_number(path, n, name, cell)
    if not np.isfinite(t):
        raise LabelError(f"{path}:{n}: no time in column {name}")
    if last is not None and t <= last[1]:
        raise LabelError(f"{path}:{n}: time {t:g} does not come after {last[1]:g} (line {last[0]})")
    return t


def _value(path: Path, n: int, column: str, cell: str, *, name: str | None = None) -> float:
    """A label cell: a number or missing (NaN); valence and arousal (``name`` or ``column``) within [-1, 1]."""
    x = parse_number(path, n, column, cell)
    dim = name or column
    if dim in DIMENSIONS and abs(x) > 1:  # False for NaN (missing)
        raise LabelError(f"{path}:{n}: {dim} {_show(x)} is outside [-1, 1]")
    return x


def _mask_gaps(frame: pd.DataFrame) -> pd.DataFrame:
    """Insert an all-NaN row in the middle of every gap longer than GAP_STEPS usual steps (the median step).

    Linear interpolation never spans a NaN (``labels.interpolate``), so the grid rows inside such a gap (a part of
    the recording between two MuSe segments that nobody annotated) are masked rather than made up.
    """
    t = frame["time"].to_numpy(np.float64)
    if t.size < 3:
        return frame
    step = np.diff(t)
    gaps = np.flatnonzero(step > GAP_STEPS * np.median(step))
    if not gaps.size:
        return frame
    holes = pd.DataFrame({"time": (t[gaps] + t[gaps + 1]) / 2})
    return pd.concat([frame, holes], ignore_index=True).sort_values("time", kind="stable").reset_index(drop=True)


def _merge_traces(clip: str, traces: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """One clip's traces (each ``time`` + its column) on one time column: the union of their times, each trace
    interpolated linearly at the others' times (float64, never extrapolated, never across a NaN)."""
    frames = list(traces.values())
    t = frames[0]["time"].to_numpy(np.float64)
    same = all(np.array_equal(f["time"].to_numpy(np.float64), t) for f in frames[1:])
    if not same:
        t = np.unique(np.concatenate([f["time"].to_numpy(np.float64) for f in frames]))
    out = {"clip": clip, "time": t}
    for column, f in traces.items():
        v = f[column].to_numpy(np.float64)
        out[column] = v if same else interpolate(f["time"].to_numpy(np.float64), v, t, dtype=np.float64)
    return pd.DataFrame(out)


def _continuous_rows(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Clips' rows as one table, columns ``clip,time,valence,arousal`` first, then the extra dimensions."""
    if not frames:
        return pd.DataFrame(columns=["clip", "time", *DIMENSIONS])
    rows = pd.concat(frames, ignore_index=True)
    extras = [c for c in rows.columns if c not in ("clip", "time", *DIMENSIONS)]
    rows = rows[["clip", "time", *DIMENSIONS, *extras]]
    return rows.sort_values(["clip", "time"], kind="stable").reset_index(drop=True)
