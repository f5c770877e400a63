"""Helpers shared by the benchmark scripts (run as `python benchmarks/NAME.py`, so this file is importable)."""

from __future__ import annotations

from pathlib import Path


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo ("unknown CPU" elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def save_untrained_run(run_dir: Path, mean=None, std=None, visual: str = "frames"):
    """An untrained default model (``ModelConfig`` with the default audio features and video, seed 0) saved as a
    run directory's best.pt with the keys ``load_run`` reads; feature statistics 0 / 1 unless given; ``visual``:
    what its video branch reads ("frames", or "faces": then predict and stream find and align faces).

    Returns (model, mean (D,), std (D,))."""
    import numpy as np
    import torch

    import mmemo
    from mmemo.config import ExtractConfig, TrainConfig
    from mmemo.features.registry import feature_dims
    from mmemo.model.checkpoint import CHECKPOINT_VERSION
    from mmemo.model.config import ModelConfig
    from mmemo.model.multimodal import MultiModalTransformer

    ecfg = ExtractConfig()
    D = sum(feature_dims(ecfg).values())
    torch.manual_seed(0)
    model = MultiModalTransformer(ModelConfig(audio_dim=D, video=True)).eval()
    mean = np.zeros(D, np.float32) if mean is None else np.asarray(mean, np.float32)
    std = np.ones(D, np.float32) if std is None else np.asarray(std, np.float32)
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.save(
        {"version": CHECKPOINT_VERSION, "mmemo_version": mmemo.__version__, "model": model.state_dict(),
         "model_config": model.cfg.to_dict(), "extract_config": ecfg.to_dict(), "train_config": TrainConfig().to_dict(),
         "epoch": 0, "best": float("-inf"), "feature_names": list(ecfg.features),
         "feature_mean": torch.from_numpy(mean), "feature_std": torch.from_numpy(std), "visual": visual},
        run_dir / "best.pt",
    )  # fmt: skip
    return model, mean, std
