"""Multi-head attention on ``torch.nn.functional.scaled_dot_product_attention``, with key-padding masks."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MultiHeadAttention(nn.Module):
    """Scaled dot-product attention over ``heads`` heads.

    ``key_padding_mask`` (B, S) is True where a key is *real* (False = padding or an absent modality): those keys
    get no weight. A query whose keys are all masked attends to nothing and returns zeros (rather than the NaN a
    softmax over no keys would give), e.g. cross-attention into a clip that has no video.
    """

    def __init__(self, dim: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"hidden size {dim} is not divisible by {heads} heads")
        self.heads, self.head_dim, self.dropout = heads, dim // heads, dropout
        # The mask as additive 0 / -inf instead of bool: the same attention (PyTorch turns a bool mask into that),
        # but ONNX's translation of a bool mask also scans every (T x S) weight for NaN, a quarter of onnxruntime's
        # time on a 1000-row window. Off in PyTorch; the ONNX export turns it on (mmemo.pipeline.export).
        self.additive_mask = False
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        return x.view(B, T, self.heads, self.head_dim).transpose(1, 2)  # (B, H, T, Dh)

    def forward(
        self, query: torch.Tensor, key_value: torch.Tensor | None = None, key_padding_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """query (B, T, D), key_value (B, S, D) (default: query), key_padding_mask (B, S) bool -> (B, T, D)."""
        kv = query if key_value is None else key_value
        q, k, v = self._split(self.q(query)), self._split(self.k(kv)), self._split(self.v(kv))
        attn_mask: torch.Tensor | None = None
        any_key: torch.Tensor | None = None
        if key_padding_mask is not None:
            any_key = key_padding_mask.any(dim=1)  # (B,)
            # Rows without any real key would softmax over nothing: let them see everything, then zero them.
            keep = key_padding_mask | ~any_key[:, None]
            attn_mask = keep[:, None, None, :]  # (B, 1, 1, S), True = attend
            if self.additive_mask:
                attn_mask = torch.zeros_like(attn_mask, dtype=q.dtype).masked_fill(~attn_mask, float("-inf"))
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.dropout if self.training else 0.0
        )  # (B, H, T, Dh)
        B, _, T, _ = y.shape
        y = self.out(y.transpose(1, 2).reshape(B, T, self.heads * self.head_dim))  # (B, T, D)
        if any_key is not None:
            y = y * any_key[:, None, None].to(y.dtype)
        return y
