"""Continuous multi-rater annotations (RECOLA / AVEC style) and the gold standard made from them.

One file per clip and dimension, under directories named by dimension (``arousal/train_1.csv``,
``valence/train_1.arff``), each holding a time column and one column per rater:

- CSV, as RECOLA ships it: ``;``-separated (``,`` is accepted too) with a header such as
  ``time;FM1;FM2;FM3;FF1;FF2;FF3``; the time column is the one named ``time`` / ``frameTime`` (else the first);
  a column named ``Instance_name`` / ``name`` is an instance name, every other column is a rater.
- ARFF, as the AVEC challenges ship it: ``@relation``, ``@attribute Instance_name string``,
  ``@attribute frameTime numeric``, one numeric attribute per rater, ``@data``, rows such as
  ``'train_1',0.04,0.1,...``. Keywords are case-insensitive, names may be quoted, ``%`` starts a comment line,
  ``?`` is a missing value. An ARFF file whose ``Instance_name`` holds several names is split by name.

Empty cells, ``nan`` and ``?`` are missing ratings. A rating is in [-1, 1], the scale RECOLA's ANNEMO ratings
and the AVEC challenges' (RECOLA, SEWA) share: an infinite rating or one outside [-1, 1] is refused with
``path:line`` (ratings on another scale must be rescaled first), as is an infinite time.

The gold standard of each time step is

- ``mean``: the mean of the raters present at that time (gaps in one rater's trace leave the others);
- ``ewe``: the evaluator-weighted estimator (Grimm & Kroschel, 2005): rater k is weighted by the Pearson
  correlation of its trace with the mean trace of the *other* raters (leave-one-out, so that with a handful of
  raters none is weighted by its agreement with itself; the original uses the mean of all raters), computed over
  the clip's time steps where both are known; negative weights are clipped to 0 and the weights normalised to
  sum to 1. At each time the estimate is the weighted mean of the raters present there (renormalised); where
  only zero-weight raters are present it is missing. A single rater is its own gold standard; when every weight
  is 0 (raters who all disagree) the plain mean is used and a note says so.
"""

from __future__ import annotations

import csv
import math
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mmemo.config import GOLD_METHODS
from mmemo.errors import LabelError

RATER_SUFFIXES = (".csv", ".arff")
_TIME_NAMES = {"time", "frametime", "frame_time", "timestamp", "times"}
_NAME_NAMES = {"instance_name", "instancename", "name", "instance", "file", "filename"}
_MISSING = {"", "nan", "?", "na", "n/a"}


@dataclass
class RaterTrace:
    """The ratings of one instance (clip) for one dimension: ``ratings`` (N, R), NaN where a rater is missing."""

    path: Path
    key: str  # the clip stem it belongs to (file stem, or the ARFF instance name)
    time: np.ndarray  # (N,) seconds, increasing
    ratings: np.ndarray  # (N, R) float64
    raters: list[str] = field(default_factory=list)


def read_rater_file(path: str | Path) -> list[RaterTrace]:
    """Parse one CSV or ARFF annotation file into one trace per instance. Malformed: LabelError path:line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise LabelError(f"{path}: cannot read annotation file ({e})") from None
    if path.suffix.lower() == ".arff":
        names, types, rows = _parse_arff(path, text)
    else:
        names, types, rows = _parse_csv(path, text)
    return _traces(path, names, types, rows)


# ------------------------------------------------------------------------------------------------------ parsing
def _parse_csv(path: Path, text: str) -> tuple[list[str], list[str], list[tuple[int, list[str]]]]:
    lines = [(i + 1, line) for i, line in enumerate(text.splitlines()) if line.strip()]
    if not lines:
        raise LabelError(f"{path}: empty annotation file")
    delimiter = ";" if ";" in lines[0][1] else ","
    rows = [(n, [c.strip() for c in next(csv.reader([line], delimiter=delimiter))]) for n, line in lines]
    first = rows[0][1]
    if any(not _is_number(c) and c.lower() not in _MISSING for c in first):  # a header row
        names, rows = first, rows[1:]
    else:
        names = ["time"] + [f"rater{i}" for i in range(1, len(first))]
    types = ["string" if n.strip().lower() in _NAME_NAMES else "numeric" for n in names]
    return names, types, rows


_ATTRIBUTE = re.compile(r"""^('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|\S+)\s+(.+?)\s*$""")
# One ARFF data field: 'quoted', "quoted" or bare, then a comma or the end of the line.
_ARFF_FIELD = re.compile(r"""\s*(?:'((?:[^'\\]|\\.)*)'|"((?:[^"\\]|\\.)*)"|([^,'"]*?))\s*(,|$)""")


def _parse_arff(path: Path, text: str) -> tuple[list[str], list[str], list[tuple[int, list[str]]]]:
    names, types, rows, in_data = [], [], [], False
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("%"):
            continue
        if in_data:
            rows.append((n, _split_arff_row(path, n, line)))
            continue
        keyword = line.split(None, 1)[0].lower()
        if keyword == "@relation":
            continue
        if keyword == "@data":
            in_data = True
        elif keyword == "@attribute":
            m = _ATTRIBUTE.match(line[len("@attribute") :].strip())
            if not m:
                raise LabelError(f"{path}:{n}: cannot read the attribute declaration {line!r}")
            names.append(_unquote(m.group(1)))
            typ = m.group(2).strip().lower()
            types.append("numeric" if typ in ("numeric", "real", "integer") else "string")
        else:
            raise LabelError(f"{path}:{n}: expected @relation, @attribute or @data, found {line[:40]!r}")
    if not in_data:
        raise LabelError(f"{path}: no @data section")
    return names, types, rows


def _split_arff_row(path: Path, n: int, line: str) -> list[str]:
    if line.startswith("{"):
        raise LabelError(f"{path}:{n}: sparse ARFF rows are not supported; write the file dense")
    if "'" not in line and '"' not in line:
        return [c.strip() for c in line.split(",")]
    fields, pos = [], 0
    while True:
        m = _ARFF_FIELD.match(line, pos)
        if m is None:
            raise LabelError(f"{path}:{n}: cannot split the data row near column {pos + 1}: {line[pos : pos + 30]!r}")
        quoted = m.group(1) if m.group(1) is not None else m.group(2)
        fields.append(re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else m.group(3))
        if m.group(4) != ",":
            return fields
        pos = m.end()


def _unquote(s: str) -> str:
    if len(s) >= 2 and s[0] == s[-1] and s[0] in "'\"":
        return re.sub(r"\\(.)", r"\1", s[1:-1])
    return s


def _is_number(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def parse_number(path: Path, n: int, name: str, cell: str) -> float:
    """A cell's number (line ``n`` of ``path``, column ``name``): NaN for a missing one (``_MISSING``, or any
    spelling of NaN); LabelError ``path:n: ...`` for text or +-inf."""
    if cell.strip().lower() in _MISSING:
        return np.nan
    try:
        x = float(cell)
    except ValueError:
        raise LabelError(f"{path}:{n}: column {name} holds {cell!r}, not a number") from None
    if math.isinf(x):
        raise LabelError(f"{path}:{n}: column {name} holds {_show(x)}, not a finite number")
    return x


def _rating(path: Path, n: int, name: str, cell: str) -> float:
    """A rater's cell: ``parse_number``, and in [-1, 1]."""
    x = parse_number(path, n, name, cell)
    if abs(x) > 1:  # False for NaN (missing)
        raise LabelError(f"{path}:{n}: {name} rating {_show(x)} is outside [-1, 1]")
    return x


def _show(value: float) -> str:
    """A number as an error shows it, as short as it round-trips (2, 1.5, -inf), as ``read_labels`` does."""
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text


def _traces(path: Path, names: list[str], types: list[str], rows: list[tuple[int, list[str]]]) -> list[RaterTrace]:
    """Columns -> roles (time, instance name, raters), rows -> one RaterTrace per instance."""
    low = [n.strip().lower() for n in names]
    time_col = next((i for i, n in enumerate(low) if n in _TIME_NAMES), None)
    if time_col is None:
        if path.suffix.lower() == ".arff" or types[0] != "numeric":
            raise LabelError(f"{path}: no time column (an attribute named frameTime or time)")
        time_col = 0
    name_col = next((i for i, t in enumerate(types) if t == "string"), None)
    raters = [i for i, t in enumerate(types) if t == "numeric" and i != time_col]
    if not raters:
        raise LabelError(f"{path}: no rater column besides {names[time_col]}")
    groups: dict[str, list[tuple[float, list[float]]]] = {}
    last: dict[str, tuple[int, float]] = {}
    for n, cells in rows:
        if len(cells) != len(names):
            raise LabelError(f"{path}:{n}: {len(cells)} fields where the header declares {len(names)}")
        key = cells[name_col].strip() if name_col is not None and cells[name_col].strip() else path.stem
        t = parse_number(path, n, names[time_col], cells[time_col])
        if not np.isfinite(t):
            raise LabelError(f"{path}:{n}: no time in column {names[time_col]}")
        if key in last and t <= last[key][1]:
            raise LabelError(f"{path}:{n}: time {t:g} does not come after {last[key][1]:g} (line {last[key][0]})")
        last[key] = (n, t)
        groups.setdefault(key, []).append((t, [_rating(path, n, names[i], cells[i]) for i in raters]))
    if not groups:
        raise LabelError(f"{path}: no data rows")
    return [
        RaterTrace(
            path,
            key,
            np.array([t for t, _ in g], np.float64),
            np.array([r for _, r in g], np.float64).reshape(len(g), len(raters)),
            [names[i] for i in raters],
        )
        for key, g in groups.items()
    ]


# ------------------------------------------------------------------------------------------------ gold standard
def ewe_weights(ratings: np.ndarray) -> np.ndarray:
    """(N, R) ratings -> (R,) EWE weights: correlation with the mean of the other raters, >= 0, summing to 1.

    All zeros when no rater correlates positively with the others (the caller falls back to the mean).
    """
    n_raters = ratings.shape[1]
    if n_raters == 1:
        return np.ones(1)
    w = np.zeros(n_raters)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows: their mean is NaN, as wanted
        for k in range(n_raters):
            others = np.nanmean(np.delete(ratings, k, axis=1), axis=1)
            w[k] = max(0.0, _pearson(ratings[:, k], others))
    total = w.sum()
    return w / total if total > 0 else w


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 2:
        return 0.0
    dx, dy = x[ok] - x[ok].mean(), y[ok] - y[ok].mean()
    denom = np.sqrt((dx**2).sum() * (dy**2).sum())
    return float((dx * dy).sum() / denom) if denom > 0 else 0.0


def gold_standard(ratings: np.ndarray, method: str = "mean") -> tuple[np.ndarray, np.ndarray]:
    """(N, R) ratings -> ((N,) gold standard, NaN where nobody counted rated; (R,) weights used)."""
    if method not in GOLD_METHODS:
        raise LabelError(f"gold standard {method!r} is not one of {', '.join(GOLD_METHODS)}")
    n_raters = ratings.shape[1]
    w = np.full(n_raters, 1.0 / n_raters) if method == "mean" else ewe_weights(ratings)
    if not (w > 0).any():
        w = np.full(n_raters, 1.0 / n_raters)
    present = np.isfinite(ratings) & (w > 0)
    num = np.where(present, ratings, 0.0) @ w
    den = present @ w
    gold = np.divide(num, den, out=np.full(len(ratings), np.nan), where=den > 0)
    return gold, w
