"""The small-corpus model's normalisations, measured (docs/training.md, "The audio LayerNorm and the fusion batch
norm"); prints figures only.

    python benchmarks/small_model.py cv FEATURES OUT VARIANT [--seeds 3]
    python benchmarks/small_model.py demo FEATURES OUT

``cv``: the cross-validation of ``mmemo train FEATURES --out OUT --folds 5 --seeds 3 --workers 0 -q`` with the
small-corpus model changed as VARIANT says, for the rows of the 47-clip table that no option of ``mmemo train``
gives:

- ``audio-norm-off``: no LayerNorm after the audio projection, the fusion batch norm kept (the first step);
- ``audio-norm-off-no-stretch``: the same without the time-stretch augmentation (the other augmentations kept);
- ``weight-decay-0.1``: today's small-corpus model with AdamW's weight decay 0.1 instead of 0.01;
- ``earlier-model-no-stretch``: the small model before 2026-11-30 (both normalisations) without the time stretch.

It prints the margins lines of ``results.md`` (the fold lines as they finish). FEATURES is the extraction of
``../shared/realdata/pyaudioanalysis_speechEmotion``; about 10 minutes a variant on 2 free cores.

``demo``: FEATURES is ``mmemo demo``'s ``features`` folder (time-continuous labels). The demo's own schedule
(``mmemo.pipeline.demo.train_demo``: 40 epochs, batch 4, speaker2 held out) trains the small-corpus dropout and
statistics head four times: with both normalisations (the small model before 2026-11-30), without the audio
LayerNorm, without the fusion batch norm, without both; it prints each best epoch's held-out valence and arousal
CCC. About 3 minutes.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
from pathlib import Path

import mmemo.pipeline.train as train_module
from mmemo.config import TrainConfig
from mmemo.pipeline.crossval import cross_validate
from mmemo.pipeline.demo import DEMO_MODEL
from mmemo.pipeline.train import SMALL_MODEL, Trainer

CV_VARIANTS = {  # (model overrides on the Trainer's small-corpus rule, TrainConfig changes, time stretch on)
    "audio-norm-off": ({"audio_norm": False, "fusion_norm": "batch"}, {}, True),
    "audio-norm-off-no-stretch": ({"audio_norm": False, "fusion_norm": "batch"}, {}, False),
    "weight-decay-0.1": ({}, {"weight_decay": 0.1}, True),
    "earlier-model-no-stretch": ({"audio_norm": True, "fusion_norm": "batch"}, {}, False),
}
DEMO_VARIANTS = {
    "both norms (the small model before)": {"audio_norm": True, "fusion_norm": "batch"},
    "no audio LayerNorm": {"audio_norm": False, "fusion_norm": "batch"},
    "no fusion batch norm": {"audio_norm": True, "fusion_norm": "none"},
    "neither": {"audio_norm": False, "fusion_norm": "none"},
}


def cv(features: Path, out: Path, variant: str, seeds: int) -> None:
    overrides, train_changes, stretch = CV_VARIANTS[variant]
    if not stretch:  # the loader draws each window's augmentation from Augment's ranges: no stretch range
        train_module.Augment = functools.partial(train_module.Augment, stretch=0.0)
    cfg = dataclasses.replace(TrainConfig(workers=0), **train_changes)
    summary = cross_validate(features, out, cfg, overrides, folds=5, seeds=seeds, log=print)
    for d, m in summary["margin"].items():
        spread = f"std over seeds {m['seed_std']:.3f}" if m["seed_std"] is not None else "one seed"
        print(f"{variant}: {d} transformer - ridge CCC {m['mean']:+.3f} (per seed "
              f"{' '.join(f'{x:+.3f}' for x in m['per_seed'])}; {spread}); beats: {m['beats']}")  # fmt: skip


def demo(features: Path, out: Path) -> None:
    small = {k: SMALL_MODEL[k] for k in ("dropout", "stats_head")}
    for i, (name, norms) in enumerate(DEMO_VARIANTS.items()):
        cfg = TrainConfig(epochs=40, batch_size=4, max_seq_len=150, workers=0, group_by="speaker", patience=8)
        with Trainer(features, out / f"run{i}", cfg, {**DEMO_MODEL, **small, **norms}, log=lambda m: None,
                     progress=False) as trainer:  # fmt: skip
            history = trainer.fit()
        best = history.loc[history["mean_ccc"].idxmax()]
        print(f"{name}: best epoch {int(best['epoch'])}, held-out CCC valence {best['valence_ccc']:.3f} / "
              f"arousal {best['arousal_ccc']:.3f}", flush=True)  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="what", required=True)
    c = sub.add_parser("cv")
    c.add_argument("features", type=Path)
    c.add_argument("out", type=Path)
    c.add_argument("variant", choices=sorted(CV_VARIANTS))
    c.add_argument("--seeds", type=int, default=3)
    d = sub.add_parser("demo")
    d.add_argument("features", type=Path)
    d.add_argument("out", type=Path)
    a = ap.parse_args()
    if a.what == "cv":
        cv(a.features, a.out, a.variant, a.seeds)
    else:
        demo(a.features, a.out)


if __name__ == "__main__":
    main()
