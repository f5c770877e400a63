"""THE definition of a shard's layout. Writer, reader, validation and tests all import it from here.

One shard is one HDF5 file holding one clip (where it lives: ``mmemo.data.features_dir``), written by one
process::

    /                         attrs: ROOT_ATTRS (schema_version, clip_id, source, sizes, durations, ...)
    /timestamps               (T,)            float64  seconds from the clip's origin: t / fps
    /video/frames             (T, S, S, 3)    uint8    RGB, S = frame_size, chunked (FRAME_CHUNK, S, S, 3),
                                                       compressed losslessly (lzf, gzip or zstd), or instead
    /video/frames_jpeg        (T,)            vlen uint8  one JPEG per row (frame_codec "jpegNN")
    /video/mask               (T,)            bool     a source frame is on screen in row t
    /video/source_time        (T,)            float64  presentation time (s) of the source frame shown in row t
    /faces/crops              (T, F, F, 3)    uint8    the aligned face (F = face_size), stored as the frames are,
                                                       except raw under lzf (rows without a face left unwritten)
    /faces/crops_jpeg         (T,)            vlen uint8  (or one JPEG per row, frame_codec "jpegNN")
    /faces/mask               (T,)            bool     a face is there in row t (crop black where not: masked)
    /faces/boxes              (T, 4)          float32  x0, y0, x1, y1 in display pixels of the source, NaN if none
    /faces/landmarks          (T, 5, 2)       float32  eyes, nose tip, mouth corners (x, y), NaN if none
    /faces/scores             (T,)            float32  the detector's score (interpolated between its runs)
                              attrs: FACE_ATTRS (size, detector, every, detections, multi, follows)
    /imports/<name>/values    (T, D)          float32  a user's per-frame features (``--import``), NaN where masked
    /imports/<name>/mask      (T,)            bool     the import's file has a usable row on screen in row t
                              attrs: IMPORT_ATTRS (side, columns, kind, file)
    /audio/features/<name>    (T, D_name)     float32  one dataset per registered audio feature
    /audio/mask               (T,)            bool     row t holds decoded audio
    /labels/valence           (T,)            float32  NaN where unlabelled
    /labels/arousal           (T,)            float32  NaN where unlabelled
    /labels/mask              (T,)            bool     both dimensions are labelled in row t
    /meta                     attrs: feature_config (JSON), config_hash, mmemo_version, versions (JSON)

``/video`` is absent for audio-only clips, ``/audio`` for video-only clips and ``/labels`` for unlabelled
clips; ``modalities`` in the root attrs says which are present. ``/faces`` is there for every clip with video
extracted with faces on (``mmemo extract --faces on``, the default), even when no face was found (all masked).

``/imports/<name>`` is there for each ``--import`` of the extraction (all masked for a clip without its file).

Schema history: version 2 added ``/faces``; ``/imports`` is optional within version 2 (a shard without it was
extracted without imports, which its configuration says). Version 1 shards are still read, as clips without
faces; ``mmemo extract`` re-extracts them on its next run over the same directory (the schema version is part of
each clip's key).
The feature configuration lives in ``/meta`` rather than on the root so that the clip's own string attributes name
only the clip.
"""

from __future__ import annotations

import numpy as np

SCHEMA_VERSION = 2
READABLE_VERSIONS = (1, 2)  # what readers accept (a version 1 shard has no /faces)

TIMESTAMPS = "timestamps"
VIDEO = "video"
FRAMES = "video/frames"
FRAMES_JPEG = "video/frames_jpeg"
VIDEO_MASK = "video/mask"
SOURCE_TIME = "video/source_time"
FACES = "faces"
FACE_CROPS = "faces/crops"
FACE_CROPS_JPEG = "faces/crops_jpeg"
FACE_MASK = "faces/mask"
FACE_BOXES = "faces/boxes"
FACE_LANDMARKS = "faces/landmarks"
FACE_SCORES = "faces/scores"
IMPORTS = "imports"
AUDIO = "audio"
AUDIO_FEATURES = "audio/features"
AUDIO_MASK = "audio/mask"
LABELS = "labels"
VALENCE = "labels/valence"
AROUSAL = "labels/arousal"
LABEL_MASK = "labels/mask"
META = "meta"

# HDF5 chunk of the frames, in rows: the fastest for reading training windows at the same file size
# (benchmarks/extract.py, section 5). The decoder hands frames over FRAME_WRITE_ROWS at a time (whole chunks).
FRAME_CHUNK = 4
FRAME_WRITE_ROWS = 16
FEATURE_CHUNK = 1024  # rows per chunk of an audio feature dataset

ROOT_ATTRS: dict[str, type] = {
    "schema_version": int,
    "clip_id": str,
    "source": str,  # path relative to the corpus directory
    "audio_source": str,  # separate audio file relative to the corpus ("" when the audio is in `source`)
    "source_size": int,
    "source_mtime": float,
    "audio_source_size": int,
    "audio_source_mtime": float,
    "n_frames": int,
    "fps": int,
    "duration": float,
    "modalities": str,  # "audio,video", "audio" or "video"
    "frame_codec": str,  # how /video holds the frames (mmemo.data.codecs)
    "native_fps": float,
    "native_width": int,
    "native_height": int,
    "rotation": int,
    "sample_rate": int,
    "native_sample_rate": int,
    "native_channels": int,
    "label_kind": str,  # "clip", "continuous", "frames" (per native frame) or "" (unlabelled)
    "key": str,  # what the shard was made from: resume compares it (see mmemo.pipeline.extract.clip_key)
}

# Root attributes only some shards have (absent means "nothing to say"; no schema version change).
OPTIONAL_ROOT_ATTRS: dict[str, type] = {
    "truncation": str,  # JSON list: the source file held less than it declared; what was kept (mmemo.media.decode)
}

META_ATTRS: dict[str, type] = {
    "feature_config": str,
    "config_hash": str,
    "mmemo_version": str,
    "versions": str,
}

# Attributes of /faces: how the faces were found, and what the detector saw.
FACE_ATTRS: dict[str, type] = {
    "size": int,  # F
    "detector": str,  # e.g. "retinaface-mobilenet0.25"
    "every": int,  # the detector ran on every k-th row (and every row while the face was lost)
    "detections": int,  # detector runs
    "multi": int,  # runs that found more than one face (several people in the clip)
    "follows": int,  # faces followed one after the other (1: one person throughout; 0: no face at all)
}

# Attributes of /imports/<name>: what the user's file was and where it goes.
IMPORT_ATTRS: dict[str, type] = {
    "side": str,  # "audio" or "video": the branch of the model it feeds
    "columns": str,  # JSON list of the file's feature columns (empty for a clip without its file)
    "kind": str,  # "openface", "csv", "npy" or "" (no file)
    "file": str,  # the file read, "" when the clip had none
}


def import_values(name: str) -> str:
    return f"{IMPORTS}/{name}/values"


def import_mask(name: str) -> str:
    return f"{IMPORTS}/{name}/mask"


# The one-value-per-row datasets: path -> dtype, each of shape (T,).
PER_ROW = {
    TIMESTAMPS: np.float64,
    VIDEO_MASK: np.bool_,
    SOURCE_TIME: np.float64,
    AUDIO_MASK: np.bool_,
    VALENCE: np.float32,
    AROUSAL: np.float32,
    LABEL_MASK: np.bool_,
    FACE_MASK: np.bool_,
    FACE_SCORES: np.float32,
}


FEATURE_DTYPE = np.float32  # of every /audio/features/<name> dataset (features return float32, checked)


def feature_path(name: str) -> str:
    return f"{AUDIO_FEATURES}/{name}"
