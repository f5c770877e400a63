"""The model's sizes, beside the model (as nanoGPT's GPTConfig): saved in every checkpoint, which rebuilds it alone."""

from __future__ import annotations

from dataclasses import dataclass

from mmemo.config import Serialisable
from mmemo.errors import ConfigError

FUSION_NORMS = ("batch", "none")


@dataclass(frozen=True)
class ModelConfig(Serialisable):
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
    # (T x T) matrix: several times the step time and memory (benchmarks/train.py measures it). Off by default.
    attention_dropout: float = 0.0
    max_seq_len: int = 1000
    video_size: int = 56
    cnn_channels: tuple[int, ...] = (16, 32, 64, 128)
    modality_dropout: float = 0.1  # per training sample: chance that one of its two modalities is hidden
    # Statistics pooling: the head also sees the mean and standard deviation over the window of the fused states
    # (what ridge regression on clip statistics gets), so one linear layer can weigh the clip as a whole.
    stats_head: bool = False
    # LayerNorm after the audio projection. It rescales every row to unit spread, so a row's overall level (how loud
    # and bright the voice is: the strongest arousal cue) reaches the encoders only as a direction. Off in the
    # small-corpus model (docs/training.md, "Real data: what was tried": +0.05 valence, +0.006 arousal CCC on the
    # 47 real speech clips); a checkpoint from before the option has no key and gets True, as it was trained.
    audio_norm: bool = True
    # Normalisation of the fused states: "batch" (MaskedBatchNorm: statistics over the batch's real rows) or "none".
    # With per-clip labels and a batch of a few clips, batch statistics normalise each clip by the others it is
    # batched with: a batch of loud clips looks average. The small-corpus model uses "none" where its labels are per
    # clip (+0.03 valence, +0.01 arousal on the 47 real clips; with time-continuous labels the batch norm helped the
    # demo); a checkpoint from before the option gets "batch".
    fusion_norm: str = "batch"
    # Video-side ``--import`` streams (mmemo.data.dataset.import_block): the width of the ``video_import`` input
    # (B, T, Dvi) (0: no such input; a checkpoint from before imports has no key and gets 0), of which the last
    # ``video_import_streams`` columns say, one per import, whether its row is present (1) or masked (0).
    video_import_dim: int = 0
    video_import_streams: int = 0

    def __post_init__(self) -> None:
        if self.hidden % self.heads:
            raise ConfigError(f"hidden {self.hidden} is not divisible by heads {self.heads}")
        if self.audio_dim <= 0 and not self.video and self.video_import_dim <= 0:
            raise ConfigError("a model needs audio features, video or video-side imports")
        if self.video_import_dim < 0 or not (
            (self.video_import_dim == self.video_import_streams == 0)
            or 0 < self.video_import_streams < self.video_import_dim
        ):
            raise ConfigError(
                f"video_import_dim {self.video_import_dim} with {self.video_import_streams} presence column(s): "
                "each import needs at least one value column and one presence column"
            )
        if not 0 <= self.dropout < 1 or not 0 <= self.modality_dropout < 1:
            raise ConfigError(f"dropout {self.dropout} / modality_dropout {self.modality_dropout} not in [0, 1)")
        if self.fusion_norm not in FUSION_NORMS:
            raise ConfigError(f"fusion_norm {self.fusion_norm!r} is not one of {', '.join(FUSION_NORMS)}")
        object.__setattr__(self, "cnn_channels", tuple(self.cnn_channels))
