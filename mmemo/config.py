"""What `mmemo extract` computes and how `mmemo train` trains: the configuration the CLI is built from.

Each dataclass is saved with the output it produced (``to_dict`` / ``from_dict``) and validates itself on
construction; the tuples of choices here (aspect policies, frame codecs, losses, targets) are what the CLI offers.
The model's sizes live beside the model (``mmemo.model.config.ModelConfig``). This module imports nothing of mmemo
but its errors, so every layer can read it.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, fields

from mmemo.errors import ConfigError

ASPECT_POLICIES = ("letterbox", "crop", "stretch")  # how frames become square (mmemo.media.grid)
BACKENDS = ("loky", "dask")  # where `mmemo extract` runs its clips: processes here, or a Dask cluster's workers
PROGRESS_MODES = ("auto", "bar", "lines")  # a live bar (terminals) or a line every 10 s (logs)
# Label layouts (mmemo.data.layouts, docs/labels.md) and how several raters' traces become one gold standard.
LABEL_FORMATS = ("auto", "csv", "dimtables", "multirater", "affwild", "avec2019", "muse", "cremad", "ravdess")
GOLD_METHODS = ("mean", "ewe")
# `mmemo export` (mmemo.pipeline.export): torch.export's ExportedProgram first (the format the next PyTorch still
# loads), ONNX for onnxruntime (and int8), TorchScript last (deprecated upstream; kept for old deployments).
EXPORT_FORMATS = ("pt2", "onnx", "torchscript")
QUANTIZE_MODES = ("int8",)  # `mmemo export --format onnx --quantize int8` (onnxruntime's quantisation tools)
# What `mmemo predict --engine` runs: the PyTorch model of the checkpoint, or one of the run's exported files.
ENGINES = ("torch", "pt2", "onnx", "onnx-int8", "torchscript")
# `mmemo report --previews`: auto: the original where browsers play it, a small MP4 otherwise; all: one for every clip
PREVIEW_MODES = ("auto", "all")
# The audio features `mmemo extract` computes unless told otherwise: every librosa-based one registered in
# mmemo.features.audio, in registry order; openSMILE's sets (egemaps, compare: an optional extra) are asked for
# with --features +egemaps.
DEFAULT_FEATURES = ("logmel", "rms", "centroid", "rolloff", "zcr", "mfcc", "rhythm")
# Frame storage (mmemo.data.codecs): a lossless HDF5 filter, or "jpeg" / "jpegNN" (JPEG quality NN, default 90).
LOSSLESS_CODECS = ("lzf", "gzip", "zstd")
# Which decoded frames skip H.264 / HEVC deblocking (FFmpeg's ``skip_loop_filter``): ``none`` (every frame deblocked,
# as the ffmpeg command line does), ``noref`` (frames no other frame is predicted from: their pictures differ, no
# error carries on to the next ones), ``bidir`` (every B-frame), ``all``. Measured by benchmarks/deblock.py.
SKIP_LOOP_FILTER = ("none", "noref", "bidir", "all")
JPEG_CODEC = re.compile(r"^jpeg(\d{2,3})?$")


def check_frame_codec(codec: str) -> str:
    """``codec`` if mmemo can write it here, else a ConfigError saying why."""
    m = JPEG_CODEC.match(codec)
    if m:
        q = int(m.group(1) or 90)
        if not 1 <= q <= 100:
            raise ConfigError(f"frame codec {codec!r}: JPEG quality {q} is not in 1..100")
        return codec
    if codec not in LOSSLESS_CODECS:
        raise ConfigError(f"frame codec {codec!r} is not one of {', '.join(LOSSLESS_CODECS)}, jpeg or jpegNN (quality)")
    if codec == "zstd":
        try:
            import hdf5plugin  # noqa: F401
        except ImportError:
            raise ConfigError("frame codec 'zstd' needs hdf5plugin: pip install 'mmemo[zstd]'") from None
    return codec


class Serialisable:
    """to_dict / from_dict for the frozen config dataclasses (tuples travel as lists, unknown keys refused)."""

    def to_dict(self) -> dict:
        return {k: _plain(v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict):
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ConfigError(f"unknown {cls.__name__} key(s): {', '.join(sorted(unknown))}")
        return cls(**d)


def _plain(v):
    """Tuples (nested too) as lists: what JSON writes."""
    return [_plain(x) for x in v] if isinstance(v, tuple) else v


@dataclass(frozen=True)
class ExtractConfig(Serialisable):
    """What `mmemo extract` computes. Everything here changes the arrays, so all of it is hashed.

    The time grid is fixed by ``fps`` and ``sample_rate``: row ``t`` is the instant ``t / fps``, its frame the one
    on screen then, its audio features computed on an ``n_fft``-sample window centred on it (rows are
    ``hop_length = sample_rate / fps`` samples apart).
    """

    sample_rate: int = 16000
    fps: int = 25
    frame_size: int = 224
    aspect: str = "letterbox"
    frame_codec: str = "lzf"  # lzf, gzip, zstd or jpegNN: see mmemo.data.codecs
    n_fft: int = 1024
    n_mels: int = 64
    n_mfcc: int = 20
    fmin: float = 0.0
    fmax: float = 8000.0
    rolloff_percent: float = 0.85
    tempo_window_s: float = 8.0
    features: tuple[str, ...] = DEFAULT_FEATURES  # names of mmemo.features.registry.FEATURES
    # Faces (mmemo.features.faces): found, tracked and aligned to a face_size x face_size crop per row of every clip
    # with video; the detector runs on every face_every-th row (and on every row while the face is lost).
    faces: bool = True
    face_size: int = 112
    face_every: int = 5
    # Deblocking skipped on the frames nothing refers to: 10 % less decoding for a difference of 0.01 grey levels on
    # average in the 224-px frames (0.04-0.13 in a face crop), which does not build up (docs/extract.md).
    skip_loop_filter: str = "noref"
    # Per-frame features the user brings (mmemo.features.imports, `--import NAME[:SIDE]=DIR`): (name, side) pairs,
    # side "audio" or "video" (the branch they feed). Where the files are is not part of the configuration.
    imports: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        # JSON gives lists back: frozen, hashable, comparable configurations hold tuples
        object.__setattr__(self, "imports", tuple((str(n), str(s)) for n, s in self.imports))
        names = [n for n, _ in self.imports]
        if len(set(names)) != len(names):
            raise ConfigError(f"import name(s) given twice: {', '.join(names)}")
        if any(s not in ("audio", "video") for _, s in self.imports):
            raise ConfigError(f"import sides must be audio or video: {self.imports}")
        # Feature names are checked against the registry where features are computed
        # (mmemo.features.registry.feature_dims): the registry sits above this module.
        for name in ("sample_rate", "fps", "n_fft", "n_mels", "n_mfcc"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, not {getattr(self, name)}")
        if self.n_mfcc > self.n_mels:
            raise ConfigError(f"n_mfcc {self.n_mfcc} is more than n_mels {self.n_mels} (MFCC come from the mel bands)")
        if not 0 <= self.fmin < self.fmax <= self.sample_rate / 2:
            raise ConfigError(
                f"mel range fmin {self.fmin} .. fmax {self.fmax} Hz must satisfy 0 <= fmin < fmax <= "
                f"{self.sample_rate / 2:g} (half the sample rate)"
            )
        if not 0 < self.rolloff_percent < 1:
            raise ConfigError(f"rolloff_percent {self.rolloff_percent} is not between 0 and 1")
        if len(set(self.features)) != len(tuple(self.features)):
            raise ConfigError(f"feature(s) listed twice: {', '.join(self.features)}")
        check_frame_codec(self.frame_codec)
        if self.aspect not in ASPECT_POLICIES:
            raise ConfigError(f"aspect policy {self.aspect!r} is not one of {', '.join(ASPECT_POLICIES)}")
        if self.sample_rate % self.fps:
            raise ConfigError(f"sample_rate {self.sample_rate} is not a multiple of fps {self.fps}")
        if self.n_fft < self.hop_length:
            raise ConfigError(f"n_fft {self.n_fft} is shorter than the hop {self.hop_length}")
        if self.frame_size < 8:
            raise ConfigError(f"frame_size {self.frame_size} is too small")
        if not self.features:
            raise ConfigError("no audio feature selected")
        if not 16 <= self.face_size <= 1024:
            raise ConfigError(f"face_size {self.face_size} is not between 16 and 1024 pixels")
        if self.face_every < 1:
            raise ConfigError(f"face_every {self.face_every} must be at least 1")
        if self.skip_loop_filter not in SKIP_LOOP_FILTER:
            raise ConfigError(f"skip_loop_filter {self.skip_loop_filter!r} is not one of {', '.join(SKIP_LOOP_FILTER)}")
        object.__setattr__(self, "features", tuple(self.features))

    def to_dict(self) -> dict:
        d = super().to_dict()
        if not self.imports:  # left out when empty: the configurations (and hashes) of before imports stand
            del d["imports"]
        if self.skip_loop_filter == "none":  # what every extraction did before the option: the same hash
            del d["skip_loop_filter"]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ExtractConfig:
        """A saved configuration; one written before faces existed (no ``faces`` key) had none, one written before
        ``skip_loop_filter`` (or with ``none``) deblocked every frame."""
        d = dict(d)
        d.setdefault("faces", False)
        d.setdefault("skip_loop_filter", "none")
        return super().from_dict(d)

    @property
    def hop_length(self) -> int:
        """Audio samples per video frame (640 at 16 kHz and 25 fps)."""
        return self.sample_rate // self.fps

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def config_hash(self) -> str:
        """A short stable hash of everything that changes the extracted arrays (used to key resume)."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:16]


LOSSES = ("mix", "ccc", "mse")
# What the loss compares: "frame" (every labelled row), "clip" (each window's mean prediction against its mean
# label: for corpora labelled per clip, where rows of one clip share one value), "auto" (clip when every training
# clip is labelled per clip, else frame).
TARGETS = ("auto", "frame", "clip")
# Below this much labelled training media a corpus is small: the trainer then defaults to the small model, more
# epochs and patience, and a smaller validation share (docs/training.md has the cross-validation behind it).
SMALL_CORPUS_S = 3600
# What the video branch sees (mmemo.data.dataset.visual_rows): "faces" (the aligned face where one was found, the
# whole frame where not), "frames" (the whole picture), or "auto": faces when the features hold them and a face was
# found in at least FACE_SHARE_MIN of the training clips' video rows, else frames.
VISUAL_INPUTS = ("auto", "faces", "frames")
FACE_SHARE_MIN = 0.5
# What `mmemo train --resume` may change: how long to go on, and how the data is read; not what is learnt.
RESUMABLE = ("epochs", "patience", "workers", "frame_cache")
# The small-corpus default of TrainConfig.ema_decay (docs/training.md, "Real data: what was tried").
SMALL_EMA_DECAY = 0.99


@dataclass(frozen=True)
class TrainConfig(Serialisable):
    """How `mmemo train` trains (saved in RUN_DIR/config.json and in every checkpoint)."""

    epochs: int | None = None  # None: 30, or 60 for small corpora (under SMALL_CORPUS_S of training media)
    batch_size: int = 8
    lr: float = 1e-3  # OneCycleLR's peak learning rate
    weight_decay: float = 0.01
    pct_start: float = 0.1  # warm-up share of the OneCycle schedule
    loss: str = "mix"  # "ccc" (1 - CCC), "mse", or "mix": ccc_weight * (1 - CCC) + (1 - ccc_weight) * MSE
    ccc_weight: float = 0.7
    grad_clip: float = 1.0
    patience: int | None = None  # epochs without a better validation mean CCC before stopping; None: 8, or 15 small
    # Share of groups held out for early stopping; None: 0.2, or 0.1 small (0 when cross-validating a small corpus).
    # 0: no validation, every clip trains and best.pt is the last epoch's weights (the schedule annealed to its end).
    val_fraction: float | None = None
    group_by: str | None = None  # labels-table column whose groups never straddle train and validation
    seed: int = 0
    workers: int = 2
    augment: bool = True
    max_seq_len: int = 1000  # rows per training window (40 s at 25 fps)
    target: str = "auto"  # one of TARGETS
    # Keep each clip's frames pooled to the model's video_size in FEATURES_DIR/cache (built on first read, 16x
    # less to read than 224-px frames): the loader was what a GPU waited for.
    frame_cache: bool = True
    visual: str = "auto"  # one of VISUAL_INPUTS
    # Which of the features directory's --import streams the model reads: None every one of them (a user who
    # extracted with --import expects it used), () none, or these names.
    imports: tuple[str, ...] | None = None
    # Decay per optimisation step of the exponential moving average of the weights that is validated and saved
    # (mmemo.model.averaging); 0: no averaging, the live weights are saved. None: SMALL_EMA_DECAY for small corpora
    # (under SMALL_CORPUS_S of training media), 0 otherwise.
    ema_decay: float | None = None
    # Mixup between the training windows of a batch (inputs and labels, mmemo.pipeline.train.mixup_batch): the
    # Beta(mixup, mixup) parameter of the mixing weights; 0: off.
    mixup: float = 0.0

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        """A saved configuration; one written before weight averaging and mixup (no ``ema_decay`` / ``mixup`` key)
        had neither."""
        d = dict(d)
        d.setdefault("ema_decay", 0.0)
        d.setdefault("mixup", 0.0)
        return super().from_dict(d)

    def __post_init__(self) -> None:
        if self.ema_decay is not None and not 0 <= self.ema_decay < 1:
            raise ConfigError(f"ema_decay {self.ema_decay} is not in [0, 1)")
        if self.mixup < 0:
            raise ConfigError(f"mixup {self.mixup} is negative (0 turns it off)")
        if self.imports is not None:  # JSON gives a list back
            object.__setattr__(self, "imports", tuple(str(n) for n in self.imports))
        if self.visual not in VISUAL_INPUTS:
            raise ConfigError(f"visual {self.visual!r} is not one of {', '.join(VISUAL_INPUTS)}")
        if self.target not in TARGETS:
            raise ConfigError(f"target {self.target!r} is not one of {', '.join(TARGETS)}")
        if self.loss not in LOSSES:
            raise ConfigError(f"loss {self.loss!r} is not one of {', '.join(LOSSES)}")
        if self.val_fraction is not None and not 0 <= self.val_fraction < 1:
            raise ConfigError(f"val_fraction {self.val_fraction} is not in [0, 1)")
        for name in ("epochs", "patience", "batch_size", "max_seq_len"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, not {getattr(self, name)}")
