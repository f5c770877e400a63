"""Transformer blocks: self-attention encoder and cross-modal attention, pre-LayerNorm with residuals."""

from __future__ import annotations

import torch
from torch import nn

from mmemo.model.attention import MultiHeadAttention


class FeedForward(nn.Sequential):
    def __init__(self, dim: int, mult: int, dropout: float) -> None:
        super().__init__(nn.Linear(dim, dim * mult), nn.GELU(), nn.Dropout(dropout), nn.Linear(dim * mult, dim))


class TransformerEncoder(nn.Module):
    """One encoder block: x + SelfAttention(LN(x)), then x + FFN(LN(x)).

    Pre-LN keeps deep stacks trainable without warm-up tricks; every operation but attention is per position,
    and attention ignores masked keys, so padded positions cannot change real ones.
    """

    def __init__(self, dim: int, heads: int, dropout: float = 0.1, ff_mult: int = 4, attn_dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = MultiHeadAttention(dim, heads, attn_dropout)
        self.ff = FeedForward(dim, ff_mult, dropout)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, T, D), mask (B, T) bool (True = real) -> (B, T, D)."""
        x = x + self.drop(self.attn(self.norm1(x), key_padding_mask=mask))
        return x + self.drop(self.ff(self.norm2(x)))


class CrossModalAttention(nn.Module):
    """x attends to the other modality y: x + CrossAttention(LN(x), LN(y)), then x + FFN(LN(x))."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.1, ff_mult: int = 4, attn_dropout: float = 0.0) -> None:
        super().__init__()
        self.norm_q, self.norm_kv, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = MultiHeadAttention(dim, heads, attn_dropout)
        self.ff = FeedForward(dim, ff_mult, dropout)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, y: torch.Tensor, y_mask: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, T, D) queries, y (B, S, D) keys/values, y_mask (B, S) bool -> (B, T, D)."""
        x = x + self.drop(self.attn(self.norm_q(x), self.norm_kv(y), key_padding_mask=y_mask))
        return x + self.drop(self.ff(self.norm2(x)))
