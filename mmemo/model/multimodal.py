"""MultiModalTransformer: audio and video branches, cross-modal attention both ways, fusion, per-frame heads."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from mmemo.model.config import ModelConfig
from mmemo.model.encoder import CrossModalAttention, TransformerEncoder
from mmemo.model.sync import global_stats


def sinusoidal_positions(T: int, dim: int, device: torch.device) -> torch.Tensor:
    """(T, dim) fixed sine/cosine position encodings (any length, no learned table to outgrow)."""
    pos = torch.arange(T, device=device, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    pe = torch.zeros(T, dim, device=device)
    pe[:, 0::2] = torch.sin(pos * freq)
    pe[:, 1::2] = torch.cos(pos * freq[: dim // 2])
    return pe


class MaskedBatchNorm(nn.Module):
    """Batch normalisation over the real positions of (B, T, D) only: padding never enters the statistics.

    Under DistributedDataParallel (``torch.distributed`` initialised, more than one process), the statistics are
    those of the global batch: each rank's sums, sums of squares and counts are added across ranks (autograd
    flows through the reduction), as ``SyncBatchNorm`` does for the frame CNN's batch norms on GPUs; small
    per-rank batches then do not skew them. A rank with no real position still takes part in the reduction.
    """

    def __init__(self, dim: int, momentum: float = 0.1, eps: float = 1e-5) -> None:
        super().__init__()
        self.momentum, self.eps = momentum, eps
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.register_buffer("running_mean", torch.zeros(dim))
        self.register_buffer("running_var", torch.ones(dim))
        self.sync = False  # set by the trainer under DistributedDataParallel (mmemo.model.sync.global_stats)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x (B, T, D), mask (B, T) bool -> (B, T, D)."""
        mean, var, n = self.running_mean, self.running_var, 0.0
        if self.training and self.sync:  # under DDP: the global batch's statistics
            mean, var, n = global_stats(x, mask)
        elif self.training:
            sel = x[mask].float()  # (N, D)
            n = float(sel.shape[0])
            if n > 1:
                mean, var = sel.mean(0), sel.var(0, unbiased=False)
        if self.training and n > 1:
            with torch.no_grad():
                self.running_mean.lerp_(mean.detach(), self.momentum)
                self.running_var.lerp_(var.detach() * n / (n - 1), self.momentum)
        else:
            mean, var = self.running_mean, self.running_var
        y = (x - mean.to(x.dtype)) * torch.rsqrt(var.to(x.dtype) + self.eps)
        return y * self.weight.to(x.dtype) + self.bias.to(x.dtype)


class NoNorm(nn.Module):
    """``MaskedBatchNorm``'s place when the fused states are not normalised (``ModelConfig.fusion_norm`` "none")."""

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x (B, T, D), mask (B, T) -> x unchanged."""
        return x


class FrameEncoder(nn.Module):
    """A small CNN: one (3, S, S) frame -> one ``hidden`` vector (strided convolutions, global average pool)."""

    def __init__(self, channels: tuple[int, ...], hidden: int) -> None:
        super().__init__()
        layers, c_in = [], 3
        for c in channels:
            layers += [nn.Conv2d(c_in, c, 3, stride=2, padding=1), nn.BatchNorm2d(c), nn.GELU()]
            c_in = c
        self.convs = nn.Sequential(*layers)
        self.proj = nn.Linear(c_in, hidden)
        # ImageNet statistics: a neutral, well-known centring of RGB in [0, 1]
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """frames (N, S, S, 3) float in [0, 1] -> (N, hidden)."""
        x = frames.permute(0, 3, 1, 2)  # (N, 3, S, S)
        x = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        x = self.convs(x).mean(dim=(2, 3))  # (N, C)
        return self.proj(x)


class MultiModalTransformer(nn.Module):
    """Valence and arousal for every frame from audio features and/or frames.

    Inputs are (B, T, ...) along time with masks that say which positions are real (``pad_mask``) and where each
    modality is present (``audio_mask``, ``video_mask``); a clip with only one modality has the other masked out
    entirely, and no masked position influences a real one. Video-side imports (``video_import``) join the video
    branch: a row is present there when its frame or any of its imports is.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        # plain copies of what forward reads: TorchScript cannot read a dataclass attribute
        self.hidden, self.modality_dropout = cfg.hidden, cfg.modality_dropout
        H = cfg.hidden
        # (Identity keeps the state dict's keys: audio_in.0 is the projection either way)
        audio_norm = nn.LayerNorm(H) if cfg.audio_norm else nn.Identity()
        self.audio_in = nn.Sequential(nn.Linear(cfg.audio_dim, H), audio_norm) if cfg.audio_dim > 0 else None
        self.frame_encoder = FrameEncoder(cfg.cnn_channels, H) if cfg.video else None
        # Video-side imports (OpenFace action units, embeddings): projected as the audio features are, and added to
        # the frame's embedding on the rows where they are present.
        self.video_import_in = (
            nn.Sequential(nn.Linear(cfg.video_import_dim, H), nn.LayerNorm(H)) if cfg.video_import_dim > 0 else None
        )
        self.import_streams = cfg.video_import_streams
        self.audio_enc = nn.ModuleList(
            TransformerEncoder(H, cfg.heads, cfg.dropout, cfg.ff_mult, cfg.attention_dropout) for _ in range(cfg.layers)
        )
        self.video_enc = nn.ModuleList(
            TransformerEncoder(H, cfg.heads, cfg.dropout, cfg.ff_mult, cfg.attention_dropout) for _ in range(cfg.layers)
        )
        self.audio_from_video = nn.ModuleList(
            CrossModalAttention(H, cfg.heads, cfg.dropout, cfg.ff_mult, cfg.attention_dropout)
            for _ in range(cfg.cross_layers)
        )
        self.video_from_audio = nn.ModuleList(
            CrossModalAttention(H, cfg.heads, cfg.dropout, cfg.ff_mult, cfg.attention_dropout)
            for _ in range(cfg.cross_layers)
        )
        self.fuse = nn.Linear(2 * H, H)
        self.fuse_norm = MaskedBatchNorm(H) if cfg.fusion_norm == "batch" else NoNorm()
        self.drop = nn.Dropout(cfg.dropout)
        self.stats_head = cfg.stats_head
        self.head = nn.Linear(3 * H if cfg.stats_head else H, 2)  # (valence, arousal)

    def _modality_dropout(self, audio_ok: torch.Tensor, video_ok: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Hide one modality of some training samples (never both) so that a missing face or silence is survivable."""
        p = self.modality_dropout
        if not self.training or p <= 0:
            return audio_ok, video_ok
        B = audio_ok.shape[0]
        r = torch.rand(B, device=audio_ok.device)
        both = audio_ok.any(1) & video_ok.any(1)
        hide_audio = (r < p / 2) & both
        hide_video = (r >= p / 2) & (r < p) & both
        return audio_ok & ~hide_audio[:, None], video_ok & ~hide_video[:, None]

    def forward(
        self,
        audio: torch.Tensor | None,
        frames: torch.Tensor | None,
        pad_mask: torch.Tensor,
        audio_mask: torch.Tensor | None = None,
        video_mask: torch.Tensor | None = None,
        video_import: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """audio (B, T, Da) normalised features; frames (B, T, S, S, 3) in [0, 1]; masks (B, T) bool;
        video_import (B, T, Dvi): standardised video-side import columns, 0 where masked, then one 0/1 presence
        column per import (``mmemo.data.dataset.import_block``), or None.

        Returns:
            (B, T, 2): valence and arousal per frame.
        """
        a, v, audio_ok, video_ok = self.embed(audio, frames, pad_mask, audio_mask, video_mask, video_import)
        return self.encode(a, v, audio_ok, video_ok, pad_mask)

    def embed(
        self,
        audio: torch.Tensor | None,
        frames: torch.Tensor | None,
        pad_mask: torch.Tensor,
        audio_mask: torch.Tensor | None = None,
        video_mask: torch.Tensor | None = None,
        video_import: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The input embedding of each row (``forward``'s arguments): the audio projection, the frame CNN on the
        present frames, the video-side imports' projection, the masks, and in training the modality dropout.

        In eval mode a row's embedding depends on that row alone (the CNN's batch norms use their running
        statistics; the dropout is off), so a clip can be embedded once and its overlapping windows encoded from
        slices (``mmemo.pipeline.predict.infer``, the live stream's ring buffer). A row's audio embedding is its
        projection times its mask: a caller may project rows once and mask them later.

        Returns:
            (a, v, audio_ok, video_ok): a, v (B, T, H) zero where absent; audio_ok, video_ok (B, T) bool, the rows
            each branch attends to (video: its frame or any of its imports is there). ``encode``'s inputs.
        """
        B, T = pad_mask.shape
        H, device = self.hidden, pad_mask.device
        audio_ok = pad_mask & (audio_mask if audio_mask is not None else pad_mask)
        frame_ok = pad_mask & (video_mask if video_mask is not None else pad_mask)
        if self.audio_in is None or audio is None:
            audio_ok = torch.zeros_like(pad_mask)
        if self.frame_encoder is None or frames is None:
            frame_ok = torch.zeros_like(pad_mask)
        import_ok = torch.zeros_like(pad_mask)
        if self.video_import_in is not None and video_import is not None:
            import_ok = pad_mask & (video_import[..., video_import.shape[-1] - self.import_streams :] > 0.5).any(-1)
        audio_ok, video_ok = self._modality_dropout(audio_ok, frame_ok | import_ok)
        frame_ok, import_ok = frame_ok & video_ok, import_ok & video_ok  # a hidden video branch hides both

        a = torch.zeros(B, T, H, device=device)
        # (the None tests are implied by the masks; TorchScript needs them spelt out)
        if audio is not None and self.audio_in is not None and audio_ok.any():
            a = self.audio_in(audio) * audio_ok[..., None]  # (B, T, H), absent positions zeroed
        v = torch.zeros(B, T, H, device=device, dtype=a.dtype)
        if frames is not None and self.frame_encoder is not None and frame_ok.any():
            v = v.index_put([frame_ok], self.frame_encoder(frames[frame_ok]).to(v.dtype))  # CNN on present frames only
        if video_import is not None and self.video_import_in is not None and import_ok.any():
            v = v + self.video_import_in(video_import).to(v.dtype) * import_ok[..., None]  # (B, T, H)
        return a, v, audio_ok, video_ok

    def encode(
        self, a: torch.Tensor, v: torch.Tensor, audio_ok: torch.Tensor, video_ok: torch.Tensor, pad_mask: torch.Tensor
    ) -> torch.Tensor:
        """Everything after the input embeddings: positions, encoders, cross-modal attention, fusion, head.

        a, v (B, T, H) embedded audio / frames, zero where absent; audio_ok, video_ok, pad_mask (B, T) bool.
        Returns (B, T, 2). ``forward`` calls it; so does the ONNX export, whose embeddings are computed without
        data-dependent branches (``mmemo.pipeline.export``).
        """
        pos = sinusoidal_positions(a.shape[1], self.hidden, a.device)  # (T, H)
        a, v = a + pos, v + pos
        for block in self.audio_enc:
            a = block(a, audio_ok)
        for block in self.video_enc:
            v = block(v, video_ok)
        # equal lengths by construction; TorchScript knows no zip(strict=...)
        for a_blk, v_blk in zip(self.audio_from_video, self.video_from_audio):  # noqa: B905
            a, v = a_blk(a, v, video_ok), v_blk(v, a, audio_ok)

        z = torch.cat([a * audio_ok[..., None], v * video_ok[..., None]], dim=-1)  # (B, T, 2H)
        z = F.gelu(self.fuse_norm(self.fuse(z), pad_mask))  # (B, T, H)
        if self.stats_head:  # each row also gets the window's mean and spread (real rows only)
            # Pooled before the dropout: a spread measured on dropped-out states is larger in training than at
            # inference, which shifted inference's predictions (arousal by +0.11 on average on the training clips
            # of the 47 real speech clips; docs/training.md, "Real data: what was tried").
            w = pad_mask.to(z.dtype)[..., None]
            n = w.sum(1, keepdim=True).clamp_min(1.0)
            mu = (z * w).sum(1, keepdim=True) / n  # (B, 1, H)
            sd = ((((z - mu) ** 2) * w).sum(1, keepdim=True) / n + 1e-6).sqrt()
            z = torch.cat([z, mu.expand_as(z), sd.expand_as(z)], dim=-1)  # (B, T, 3H)
        return self.head(self.drop(z))  # (B, T, 2)
