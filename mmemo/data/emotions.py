"""Categorical emotion corpora labelled by file name (CREMA-D, RAVDESS), mapped to valence and arousal.

File names (the clip's stem):

- CREMA-D ``1001_DFA_ANG_XX``: actor (1001-1091), sentence (3 letters), emotion (ANG anger, DIS disgust,
  FEA fear, HAP happy, NEU neutral, SAD sad), level (LO low, MD medium, HI high, XX unspecified).
- RAVDESS ``01-01-05-02-01-01-12``: modality (01 full-AV, 02 video-only, 03 audio-only), vocal channel
  (01 speech, 02 song), emotion (01 neutral, 02 calm, 03 happy, 04 sad, 05 angry, 06 fearful, 07 disgust,
  08 surprised), intensity (01 normal, 02 strong), statement (01, 02), repetition (01, 02), actor (01-24; odd male,
  even female).

Each clip gets one (valence, arousal) point in [-1, 1] from its emotion; the actor becomes the ``speaker`` column
(so ``mmemo train --group-by speaker`` holds actors out), and emotion, intensity and the other fields are kept as
columns. Intensity does not move the point.

The default points come from the NRC Valence, Arousal, and Dominance Lexicon, version 1.0 of 4 May 2018
(S. M. Mohammad, "Obtaining Reliable Human Ratings of Valence, Arousal, and Dominance for 20,000 English Words",
Proceedings of the 56th Annual Meeting of the ACL, Melbourne, 2018; http://saifmohammad.com/WebPages/nrc-vad.html),
which gives each word a valence and an arousal in [0, 1] from best-worst scaling by crowd annotators. They are not
a published circumplex placement of these categories: mmemo derives them as follows. Each emotion is
looked up by its name as a noun (the emotion category itself: "anger", not the adjective "angry") where the
lexicon has one, and the score x is rescaled to [-1, 1] as 2x - 1. ``LEXICON`` below holds the word used and the
lexicon's two scores; ``DEFAULT_MAP`` is computed from it. ``--emotion-map FILE`` (CSV ``emotion,valence,arousal``)
replaces the whole table.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pandas as pd

from mmemo.data.labels import LabelTable
from mmemo.errors import LabelError

# emotion -> (word looked up in NRC VAD v1.0, its valence, its arousal), both in [0, 1] as the lexicon gives them.
LEXICON: dict[str, tuple[str, float, float]] = {
    "neutral": ("neutral", 0.469, 0.184),
    "calm": ("calm", 0.875, 0.100),
    "happy": ("happiness", 0.960, 0.732),
    "sad": ("sadness", 0.052, 0.288),
    "angry": ("anger", 0.167, 0.865),
    "fearful": ("fear", 0.073, 0.840),
    "disgust": ("disgust", 0.052, 0.775),
    "surprised": ("surprise", 0.875, 0.875),
}
DEFAULT_MAP: dict[str, tuple[float, float]] = {
    emotion: (round(2 * v - 1, 3), round(2 * a - 1, 3)) for emotion, (_, v, a) in LEXICON.items()
}

CREMAD_EMOTIONS = {"ANG": "angry", "DIS": "disgust", "FEA": "fearful", "HAP": "happy", "NEU": "neutral", "SAD": "sad"}
CREMAD_LEVELS = {"LO": "low", "MD": "medium", "HI": "high", "XX": "unspecified"}
RAVDESS_EMOTIONS = ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised")
RAVDESS_MODALITIES = ("full-AV", "video-only", "audio-only")
_CREMAD = re.compile(r"^(\d{4})_([A-Z]{3})_([A-Z]{3})_([A-Z]{2})$")
_RAVDESS = re.compile(r"^(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)$")


def parse_cremad(stem: str) -> dict | None:
    """``1001_DFA_ANG_XX`` -> its fields; None for a name that is not CREMA-D's."""
    m = _CREMAD.match(stem)
    if not m or m.group(3) not in CREMAD_EMOTIONS or m.group(4) not in CREMAD_LEVELS:
        return None
    actor, sentence, emotion, level = m.groups()
    return {"speaker": actor, "emotion": CREMAD_EMOTIONS[emotion], "intensity": CREMAD_LEVELS[level],
            "sentence": sentence}  # fmt: skip


def parse_ravdess(stem: str) -> dict | None:
    """``01-01-05-02-01-01-12`` -> its fields; None for a name that is not RAVDESS's."""
    m = _RAVDESS.match(stem)
    if not m:
        return None
    modality, channel, emotion, intensity, statement, repetition, actor = map(int, m.groups())
    ranges = ((modality, 3), (channel, 2), (emotion, 8), (intensity, 2), (statement, 2), (repetition, 2), (actor, 24))
    if any(not 1 <= v <= hi for v, hi in ranges):
        return None
    return {
        "speaker": f"{actor:02d}",
        "emotion": RAVDESS_EMOTIONS[emotion - 1],
        "intensity": ("normal", "strong")[intensity - 1],
        "statement": statement,
        "repetition": repetition,
        "modality": RAVDESS_MODALITIES[modality - 1],
        "vocal_channel": ("speech", "song")[channel - 1],
        "sex": "male" if actor % 2 else "female",
    }


PARSERS = {"cremad": parse_cremad, "ravdess": parse_ravdess}


def read_emotion_map(path: str | Path) -> dict[str, tuple[float, float]]:
    """A CSV ``emotion,valence,arousal`` (header row, values in [-1, 1]) -> {emotion: (valence, arousal)}."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise LabelError(f"{path}: cannot read emotion map ({e})") from None
    rows = [(n, [c.strip() for c in cells]) for n, cells in enumerate(csv.reader(lines), 1) if any(cells)]
    if not rows or [c.lower() for c in rows[0][1]] != ["emotion", "valence", "arousal"]:
        raise LabelError(f"{path}:1: an emotion map starts with the header emotion,valence,arousal")
    table: dict[str, tuple[float, float]] = {}
    for n, cells in rows[1:]:
        if len(cells) != 3:
            raise LabelError(f"{path}:{n}: {len(cells)} fields; expected emotion,valence,arousal")
        emotion = cells[0].lower()
        if emotion in table:
            raise LabelError(f"{path}:{n}: emotion {cells[0]!r} is mapped twice")
        table[emotion] = (_unit(path, n, "valence", cells[1]), _unit(path, n, "arousal", cells[2]))
    return table


def _unit(path: Path, n: int, name: str, cell: str) -> float:
    try:
        x = float(cell)
    except ValueError:
        raise LabelError(f"{path}:{n}: {name} {cell!r} is not a number") from None
    if not -1 <= x <= 1:
        raise LabelError(f"{path}:{n}: {name} {x:g} is outside [-1, 1]")
    return x


def read_categorical(layout: str, clip_ids: list[str], root: Path, emotion_map: str | Path | None = None) -> LabelTable:
    """Label every clip whose file name follows ``layout`` (cremad / ravdess) with its emotion's point."""
    parse = PARSERS[layout]
    table = read_emotion_map(emotion_map) if emotion_map else DEFAULT_MAP
    source = str(emotion_map) if emotion_map else "the built-in emotion table (mmemo/data/emotions.py)"
    records = []
    for clip in clip_ids:
        fields = parse(clip.rsplit("/", 1)[-1])
        if fields is None:
            continue
        point = table.get(fields["emotion"])
        if point is None:
            raise LabelError(
                f"{source}: no valence/arousal for emotion {fields['emotion']!r} (clip {clip}); "
                f"add a row {fields['emotion']},VALENCE,AROUSAL"
            )
        records.append({"clip": clip, "valence": point[0], "arousal": point[1], **fields})
    rows = pd.DataFrame.from_records(records) if records else pd.DataFrame(columns=["clip", "valence", "arousal"])
    rows[["valence", "arousal"]] = rows[["valence", "arousal"]].astype(float)
    return LabelTable(root, "clip", rows, layout=layout)
