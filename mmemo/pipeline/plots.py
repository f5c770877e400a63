"""PNG figures of a run: learning curves and predicted-vs-true traces (matplotlib, no display needed)."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from mmemo.data.labels import DIMENSIONS


def pyplot():
    """matplotlib.pyplot on the Agg backend (imported on first use: only the commands that draw pay for it)."""
    import matplotlib

    matplotlib.use("Agg")  # files only: works on servers without a display
    import matplotlib.pyplot as plt

    return plt


def learning_curves(history: pd.DataFrame, path: str | os.PathLike) -> None:
    """Train / validation loss and validation CCC per epoch."""
    plt = pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.5))
    ax1.plot(history["epoch"], history["train_loss"], label="train")
    ax1.plot(history["epoch"], history["val_loss"], label="validation")
    ax1.set(xlabel="epoch", ylabel="loss", title="loss")
    ax1.legend()
    for dim in DIMENSIONS:
        ax2.plot(history["epoch"], history[f"{dim}_ccc"], label=f"{dim} (pooled)")
        ax2.plot(history["epoch"], history[f"{dim}_ccc_clip"], "--", label=f"{dim} (per clip)")
    ax2.set(xlabel="epoch", ylabel="CCC", title="validation CCC", ylim=(-0.2, 1.0))
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def traces(preds: dict, names: list[str], path: str | os.PathLike, n: int = 3, fps: int = 25) -> None:
    """Predicted and true valence / arousal over time for up to ``n`` validation clips."""
    plt = pyplot()
    keys = list(preds)[:n]
    fig, axes = plt.subplots(len(keys), 2, figsize=(10, 2.2 * len(keys)), squeeze=False)
    for row, ci in enumerate(keys):
        p, y, m = preds[ci]["pred"], preds[ci]["labels"], preds[ci]["mask"]
        t = np.arange(len(p)) / fps
        for k, dim in enumerate(DIMENSIONS):
            ax = axes[row, k]
            ax.plot(t, np.where(m, y[:, k], np.nan), label="true", color="black", lw=1)
            ax.plot(t, p[:, k], label="predicted", color="tab:red", lw=1)
            ax.set(title=f"{names[ci]}: {dim}", xlabel="s", ylim=(-1.1, 1.1))
    axes[0, 0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
