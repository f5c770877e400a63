"""Configuration dataclasses. Each is saved with the output it produced (to_dict / from_dict)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields

from mmemo.errors import ConfigError

ASPECT_POLICIES = ("letterbox", "crop", "stretch")


def _default_features() -> tuple[str, ...]:
    from mmemo.features.registry import default_feature_names

    return default_feature_names()


class _Serialisable:
    """to_dict / from_dict for the frozen config dataclasses (tuples travel as lists, unknown keys refused)."""

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict):
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ConfigError(f"unknown {cls.__name__} key(s): {', '.join(sorted(unknown))}")
        return cls(**d)


@dataclass(frozen=True)
class ExtractConfig(_Serialisable):
    """What `mmemo extract` computes. Everything here changes the arrays, so all of it is hashed.

    The time grid is fixed by ``fps`` and ``sample_rate``: frame ``t`` covers ``[t/fps, (t+1)/fps)`` and the
    audio features of row ``t`` summarise the same ``hop_length = sample_rate / fps`` samples.
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
    features: tuple[str, ...] = field(default_factory=_default_features)

    def __post_init__(self) -> None:
        from mmemo.features.registry import FEATURES

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
        from mmemo.data.codecs import check_codec

        check_codec(self.frame_codec)
        if self.aspect not in ASPECT_POLICIES:
            raise ConfigError(f"aspect policy {self.aspect!r} is not one of {', '.join(ASPECT_POLICIES)}")
        if self.sample_rate % self.fps:
            raise ConfigError(f"sample_rate {self.sample_rate} is not a multiple of fps {self.fps}")
        if self.n_fft < self.hop_length:
            raise ConfigError(f"n_fft {self.n_fft} is shorter than the hop {self.hop_length}")
        if self.frame_size < 8:
            raise ConfigError(f"frame_size {self.frame_size} is too small")
        unknown = [f for f in self.features if f not in FEATURES]
        if unknown:
            raise ConfigError(f"unknown feature(s) {', '.join(unknown)}; known: {', '.join(FEATURES)}")
        if not self.features:
            raise ConfigError("no audio feature selected")
        object.__setattr__(self, "features", tuple(self.features))

    @property
    def hop_length(self) -> int:
        """Audio samples per video frame (640 at 16 kHz and 25 fps)."""
        return self.sample_rate // self.fps

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def config_hash(self) -> str:
        """A short stable hash of everything that changes the extracted arrays (used to key resume)."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:16]


@dataclass(frozen=True)
class ModelConfig(_Serialisable):
    """Sizes of the MultiModalTransformer (saved in every checkpoint; the model is rebuilt from it alone).

    The frame encoder sees frames average-pooled from the stored size to ``video_size`` (56 = 224 / 4): valence
    and arousal live in faces and gestures, not in fine texture, and a CPU can then afford a few hundred frames
    per step. Raise it (and ``cnn_channels``) on a GPU.
    """

    audio_dim: int = 91  # total dimension of the selected audio features (0: no audio branch)
    video: bool = True  # build the video branch
    hidden: int = 256
    heads: int = 8
    layers: int = 4
    cross_layers: int = 1
    ff_mult: int = 4
    dropout: float = 0.1  # on residual branches, the fusion and the feed-forward layers
    # Dropout on the attention weights themselves makes PyTorch's CPU attention fall back to materialising every
    # (T x T) matrix: 2.7x the step time and +8 GiB at batch 8 x 1000 rows (benchmarks/train.py). Off by default.
    attention_dropout: float = 0.0
    max_seq_len: int = 1000
    video_size: int = 56
    cnn_channels: tuple[int, ...] = (16, 32, 64, 128)
    modality_dropout: float = 0.1  # per training sample: chance that one of its two modalities is hidden
    # Statistics pooling: the head also sees the mean and standard deviation over the window of the fused states
    # (what ridge regression on clip statistics gets), so one linear layer can weigh the clip as a whole.
    stats_head: bool = False

    def __post_init__(self) -> None:
        if self.hidden % self.heads:
            raise ConfigError(f"hidden {self.hidden} is not divisible by heads {self.heads}")
        if self.audio_dim <= 0 and not self.video:
            raise ConfigError("a model needs audio features or video")
        if not 0 <= self.dropout < 1 or not 0 <= self.modality_dropout < 1:
            raise ConfigError(f"dropout {self.dropout} / modality_dropout {self.modality_dropout} not in [0, 1)")
        object.__setattr__(self, "cnn_channels", tuple(self.cnn_channels))


LOSSES = ("ccc", "mse", "mix")


@dataclass(frozen=True)
class TrainConfig(_Serialisable):
    """How `mmemo train` trains (saved in RUN_DIR/config.json and in every checkpoint)."""

    epochs: int | None = None  # None: 30, or 60 for small corpora (see SMALL_CORPUS_S in mmemo.pipeline.train)
    batch_size: int = 8
    lr: float = 1e-3  # OneCycleLR's peak learning rate
    weight_decay: float = 0.01
    pct_start: float = 0.1  # warm-up share of the OneCycle schedule
    loss: str = "mix"  # "ccc" (1 - CCC), "mse", or "mix": ccc_weight * (1 - CCC) + (1 - ccc_weight) * MSE
    ccc_weight: float = 0.7
    grad_clip: float = 1.0
    patience: int | None = None  # epochs without a better validation mean CCC before stopping; None: 8, or 15 small
    val_fraction: float | None = None  # share of groups held out for early stopping; None: 0.2, or 0.1 small
    group_by: str | None = None  # labels-table column whose groups never straddle train and validation
    seed: int = 0
    workers: int = 2
    augment: bool = True
    max_seq_len: int = 1000  # rows per training window (40 s at 25 fps)
    # What the loss compares: "frame" (every labelled row), "clip" (each window's mean prediction against its mean
    # label: for corpora labelled per clip, where rows of one clip share one value), "auto" (clip when every
    # training clip is labelled per clip, else frame).
    target: str = "auto"
    # Keep each clip's frames pooled to the model's video_size in FEATURES_DIR/cache (built on first read, 16x
    # less to read than 224-px frames): the loader was what a GPU waited for.
    frame_cache: bool = True

    def __post_init__(self) -> None:
        if self.target not in ("auto", "frame", "clip"):
            raise ConfigError(f"target {self.target!r} is not one of auto, frame, clip")
        if self.loss not in LOSSES:
            raise ConfigError(f"loss {self.loss!r} is not one of {', '.join(LOSSES)}")
        if self.val_fraction is not None and not 0 < self.val_fraction < 1:
            raise ConfigError(f"val_fraction {self.val_fraction} is not between 0 and 1")
        for name in ("epochs", "patience", "batch_size", "max_seq_len"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, not {getattr(self, name)}")
