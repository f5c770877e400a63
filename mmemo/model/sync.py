"""Batch statistics over every rank's batch under DistributedDataParallel (for ``MaskedBatchNorm``).

No ``from __future__ import annotations`` here on purpose: TorchScript reads this function's signature from its
real annotations (it is ``torch.jit.unused``: an exported model never trains, so never calls it)."""

from typing import Tuple  # noqa: UP035 (TorchScript reads typing's names)

import torch


@torch.jit.unused
def global_stats(x: torch.Tensor, mask: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, float]:  # noqa: UP006
    """(mean (D,), biased variance (D,), count N) of ``x`` (B, T, D) over the positions where ``mask`` (B, T) is
    True, on every rank's batch together: the sums, sums of squares and counts are added across ranks by an
    all-reduce whose backward hands each rank the gradient of its own share (as ``SyncBatchNorm``). Every rank
    must call it, also one with no real position."""
    from torch.distributed.nn.functional import all_reduce

    sel = x[mask].float()  # (N, D)
    local = torch.cat([sel.sum(0), (sel * sel).sum(0), sel.new_tensor([float(sel.shape[0])])])
    total = all_reduce(local)
    d = x.shape[-1]
    n = float(total[-1].detach())
    mean = total[:d] / max(n, 1.0)
    var = (total[d : 2 * d] / max(n, 1.0) - mean * mean).clamp_min(0.0)
    return mean, var, n
