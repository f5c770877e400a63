"""Batch statistics over every rank's batch under DistributedDataParallel (for ``MaskedBatchNorm``).

No ``from __future__ import annotations`` here on purpose: TorchScript reads this function's signature from its
real annotations (it is ``torch.jit.unused``: an exported model never trains, so never calls it)."""

from typing import Tuple  # noqa: UP035 (TorchScript reads typing's names)

import torch


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks whose backward sums the gradients over ranks too: each rank's input feeds every rank's
    output, so its gradient is the sum of what every rank's loss says about the total. Blocking collectives of
    ``torch.distributed`` (the autograd-aware ``torch.distributed.nn.functional.all_reduce`` is deprecated, and
    its ranks could abort at exit with a thread still attached)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        y = x.clone()
        dist.all_reduce(y)
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        g = grad.contiguous().clone()
        dist.all_reduce(g)
        return g


@torch.jit.unused
def global_stats(x: torch.Tensor, mask: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, float]:  # noqa: UP006
    """(mean (D,), biased variance (D,), count N) of ``x`` (B, T, D) over the positions where ``mask`` (B, T) is
    True, on every rank's batch together: the sums, sums of squares and counts are added across ranks by an
    all-reduce whose backward hands each rank the gradient of its own share (as ``SyncBatchNorm``). Every rank
    must call it, also one with no real position."""
    sel = x[mask].float()  # (N, D)
    local = torch.cat([sel.sum(0), (sel * sel).sum(0), sel.new_tensor([float(sel.shape[0])])])
    total = _AllReduceSum.apply(local)
    d = x.shape[-1]
    n = float(total[-1].detach())
    mean = total[:d] / max(n, 1.0)
    var = (total[d : 2 * d] / max(n, 1.0) - mean * mean).clamp_min(0.0)
    return mean, var, n


class GlobalBatchNorm2d(torch.nn.BatchNorm2d):
    """``BatchNorm2d`` whose training statistics are the global batch's under DistributedDataParallel on any
    backend (``SyncBatchNorm`` needs CUDA; on CPU ranks with gloo this takes its place): the per-channel sums,
    sums of squares and counts of every rank's (N, C, H, W) batch are added by ``global_stats``. Without a
    process group, or in evaluation, it is ``BatchNorm2d``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        c = x.shape[1]
        rows = x.permute(0, 2, 3, 1).reshape(1, -1, c)  # (1, N*H*W, C): every position real
        mean, var, n = global_stats(rows, torch.ones(rows.shape[:2], dtype=torch.bool, device=x.device))
        if n > 1 and self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), m)
                self.running_var.lerp_((var.detach() * n / (n - 1)).to(self.running_var.dtype), m)
        shape = (1, c, 1, 1)
        y = (x - mean.to(x.dtype).view(shape)) * torch.rsqrt(var.to(x.dtype).view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.to(x.dtype).view(shape) + self.bias.to(x.dtype).view(shape)
        return y


def global_batch_norms(module: torch.nn.Module) -> torch.nn.Module:
    """``module`` with every ``BatchNorm2d`` turned into a ``GlobalBatchNorm2d`` (same parameters and running
    statistics, in place; the state dict is unchanged), for DistributedDataParallel without CUDA."""
    for child in module.children():
        if type(child) is torch.nn.BatchNorm2d:
            child.__class__ = GlobalBatchNorm2d  # same attributes: only forward differs
        else:
            global_batch_norms(child)
    return module
