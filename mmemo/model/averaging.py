"""Weight averaging: an exponential moving average (EMA) of a model's weights, the copy that is saved and served.

On a small corpus the weights of the last step carry the noise of the last few batches straight into the
predictions; an average of the weights over the last stretch of training is the standard cut of that variance
(Polyak averaging; timm's ``ModelEma``, SWA). After every optimisation step

    avg <- d * avg + (1 - d) * live,    d = min(decay, (1 + n) / (10 + n))

over every floating-point parameter and buffer (the batch norms' running statistics too, so that the averaged
model's normalisation follows its averaged weights), n being the number of updates so far: the warm-up term keeps
the first, random-looking weights from lingering in the average of a short run (d is 0.18 after the first update,
0.55 after ten). Integer buffers (a batch norm's step count) are copied.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def ema_decay(decay: float, updates: int) -> float:
    """The decay of update number ``updates`` (1 for the first): ``decay``, warmed up as ``(1 + n) / (10 + n)``."""
    return min(decay, (1.0 + updates) / (10.0 + updates))


class WeightAverage:
    """An exponential moving average of ``model``'s state: ``update(model)`` after each optimiser step; ``module``
    is the averaged copy (eval mode, no gradients), the one to validate and save.

    ``updates`` and ``module.state_dict()`` are its whole state (a resumed run restores both with ``load``)."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0 < decay < 1:
            raise ValueError(f"EMA decay {decay} is not in (0, 1)")
        self.decay = decay
        self.updates = 0
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average towards ``model``'s current weights and buffers (same architecture as ``module``)."""
        self.updates += 1
        d = ema_decay(self.decay, self.updates)
        live = model.state_dict()
        for name, avg in self.module.state_dict().items():
            cur = live[name].detach()
            if avg.is_floating_point():
                avg.lerp_(cur.to(avg.dtype), 1.0 - d)  # avg + (1 - d) (cur - avg) = d avg + (1 - d) cur
            else:
                avg.copy_(cur)

    def load(self, state: dict[str, torch.Tensor], updates: int) -> None:
        """Restore a saved average (``module.state_dict()``) and its update count."""
        self.module.load_state_dict(state)
        self.updates = int(updates)
