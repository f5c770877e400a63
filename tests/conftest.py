"""Shared test helpers: where the real recordings are, whether the ffmpeg command line is at hand, and the demo
corpus, its extracted features and a small model trained on them, built once per session.

The session fixtures are shared by every test that asks for them: a test that would change the features
directory or the run (damage a shard, touch its mtime, re-extract) copies it to its own ``tmp_path`` first.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

REALDATA = Path(__file__).resolve().parents[1].parent / "shared" / "realdata"
HAVE_FFMPEG = shutil.which("ffmpeg") is not None

needs_ffmpeg = pytest.mark.skipif(
    not HAVE_FFMPEG, reason="the ffmpeg command line is not installed (apt-get install ffmpeg)"
)
needs_realdata = pytest.mark.skipif(not REALDATA.is_dir(), reason=f"real recordings not found at {REALDATA}")


@pytest.fixture
def realdata() -> Path:
    if not REALDATA.is_dir():
        pytest.skip(f"real recordings not found at {REALDATA}")
    return REALDATA


# The demo corpus the training, prediction and cross-validation tests share: 4 speakers x 2 clips of 6 s, i.e.
# 150 rows a clip (4 windows of 40 rows, a stream of 12 half-second hops) and 4 groups for grouped folds.
DEMO_CLIPS, DEMO_SECONDS = 8, 6.0

# A tiny model: enough to train end to end in seconds on the demo corpus.
SMALL = {"hidden": 16, "heads": 2, "layers": 1, "cnn_channels": [4, 8], "video_size": 28}


@pytest.fixture(scope="session")
def demo(tmp_path_factory) -> Path:
    """The demo corpus (``corpus/``: speaker{k % 4}/clip{k:02d}.mp4 and labels.csv) and its features
    (``features/``), extracted with the default configuration. Shared: never modify it in place."""
    from mmemo.config import ExtractConfig
    from mmemo.pipeline.demo import make_demo_corpus
    from mmemo.pipeline.extract import extract_corpus

    root = tmp_path_factory.mktemp("demo")
    make_demo_corpus(root / "corpus", n_clips=DEMO_CLIPS, seconds=DEMO_SECONDS)
    extract_corpus(root / "corpus", root / "features", ExtractConfig(), jobs=1, progress=False, log=lambda s: None)
    return root


@pytest.fixture(scope="session")
def demo_features(demo) -> Path:
    """The demo corpus's extracted features directory (shared: copy it before changing anything in it)."""
    return demo / "features"


@pytest.fixture(scope="session")
def small_run(demo_features, tmp_path_factory) -> Path:
    """The run directory of the SMALL model trained for 2 epochs with 40-row windows on the demo features."""
    from mmemo.config import TrainConfig
    from mmemo.pipeline.train import Trainer

    run = tmp_path_factory.mktemp("small_run") / "run"
    cfg = TrainConfig(epochs=2, batch_size=4, workers=0, max_seq_len=40)
    with Trainer(demo_features, run, cfg, SMALL, log=lambda s: None, progress=False) as t:
        t.fit()
    return run


def save_untrained_run(
    run_dir: Path, *, audio: bool = True, video: bool = True, seed: int = 0, visual: str = "frames"
) -> Path:
    """A run directory whose best.pt holds an untrained SMALL model with the default features (statistics 0 / 1):
    what `mmemo train` would save, minus the training, for tests of what reads a run. ``visual``: what its video
    branch reads ("frames" or "faces")."""
    import torch

    from mmemo.config import ExtractConfig
    from mmemo.features.registry import feature_dims
    from mmemo.model.checkpoint import CHECKPOINT_VERSION
    from mmemo.model.config import ModelConfig
    from mmemo.model.multimodal import MultiModalTransformer

    ecfg = ExtractConfig()
    dim = sum(feature_dims(ecfg).values()) if audio else 0
    torch.manual_seed(seed)
    model = MultiModalTransformer(ModelConfig(audio_dim=dim, video=video, **SMALL))
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.save(
        {"version": CHECKPOINT_VERSION, "model": model.state_dict(), "model_config": model.cfg.to_dict(),
         "extract_config": ecfg.to_dict(), "feature_names": list(ecfg.features), "epoch": 0, "best": 0.0,
         "feature_mean": torch.zeros(dim), "feature_std": torch.ones(dim), "visual": visual},
        run_dir / "best.pt",
    )  # fmt: skip
    return run_dir


def extract_cmd(corpus: Path, out: Path, *extra: str) -> list[str]:
    """`mmemo extract CORPUS --out OUT` as a real process, with progress lines (not a bar) on stderr."""
    import sys

    return [sys.executable, "-m", "mmemo", "extract", str(corpus), "--out", str(out), "--progress", "lines", *extra]


def shard_contents(out: Path) -> dict:
    """clip -> {dataset path or "@group/attribute": value} for every shard the manifest of ``out`` lists."""
    import h5py
    import pandas as pd

    m = pd.read_csv(out / "manifest.csv", keep_default_na=False)
    result = {}
    for row in m.itertuples():
        assert row.status != "failed", row.error
        items: dict = {}
        with h5py.File(out / row.shard, "r") as h5:
            items.update({f"@/{k}": v for k, v in h5.attrs.items()})

            def visit(name, obj, items=items):
                items.update({f"@{name}/{k}": v for k, v in obj.attrs.items()})
                if isinstance(obj, h5py.Dataset):
                    items[name] = obj[()]

            h5.visititems(visit)
        result[row.clip] = items
    return result


def assert_same_shards(out: Path, reference: Path) -> None:
    """Every dataset and every attribute of every listed shard of ``out`` equals ``reference``'s."""
    import numpy as np

    a, b = shard_contents(out), shard_contents(reference)
    assert sorted(a) == sorted(b)
    for clip in a:
        assert sorted(a[clip]) == sorted(b[clip]), clip
        for name in a[clip]:
            x, y = a[clip][name], b[clip][name]
            if isinstance(x, np.ndarray) and x.dtype == object:  # variable-length rows (JPEG frames)
                assert len(x) == len(y) and all(np.array_equal(p, q) for p, q in zip(x, y, strict=True))
            else:
                np.testing.assert_array_equal(x, y, err_msg=f"{clip} {name}")


def noisy_frames(n: int, seed: int) -> np.ndarray:
    """(n, 96, 128, 3) uint8 frames that compress badly, so each shard takes a noticeable time to write."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (8, 96, 128, 3), dtype=np.uint8)
    return np.stack([np.roll(base[i % 8], i, axis=1) for i in range(n)])
