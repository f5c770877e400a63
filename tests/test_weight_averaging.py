"""Weight averaging (mmemo.model.averaging) and mixup (mmemo.pipeline.train.mixup_batch): hand-computed averages
and mixes on toy inputs, the trainer saving the average of its live weights, resuming an averaged run with mixup,
and runs saved before either existed."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner
from conftest import SMALL
from torch import nn

from mmemo.cli import main
from mmemo.config import SMALL_EMA_DECAY, TrainConfig
from mmemo.errors import ConfigError
from mmemo.model.averaging import WeightAverage, ema_decay
from mmemo.model.checkpoint import load_checkpoint, save_checkpoint
from mmemo.pipeline.train import Trainer, mixup_batch, mixup_draw


def test_the_decay_warms_up_then_holds():
    # (1 + n) / (10 + n): 2/11 after the first update, 1/2 after the eighth, then the configured decay
    assert ema_decay(0.9, 1) == pytest.approx(2 / 11)
    assert ema_decay(0.9, 8) == pytest.approx(9 / 18)
    assert ema_decay(0.5, 8) == 0.5 and ema_decay(0.5, 100) == 0.5


def test_the_average_equals_the_hand_computed_one():
    """A 1-weight linear model and a batch norm: avg_n = d_n avg_(n-1) + (1 - d_n) live_n, integers copied."""
    model = nn.Sequential(nn.Linear(1, 1, bias=False), nn.BatchNorm1d(1))
    with torch.no_grad():
        model[0].weight.fill_(1.0)
    avg = WeightAverage(model, decay=0.25)
    bn = model[1]
    for live, running in ((2.0, 0.5), (4.0, 1.0), (8.0, -1.0)):
        with torch.no_grad():
            model[0].weight.fill_(live)
            bn.running_mean.fill_(running)
            bn.num_batches_tracked += 3
        avg.update(model)
    # d_1 = min(0.25, 2/11) = 2/11, then 0.25 twice (3/12 = 0.25, 4/13 > 0.25)
    w = 2 / 11 * 1.0 + 9 / 11 * 2.0  # 20/11
    w = 0.25 * w + 0.75 * 4.0
    w = 0.25 * w + 0.75 * 8.0
    m = 2 / 11 * 0.0 + 9 / 11 * 0.5
    m = 0.25 * m + 0.75 * 1.0
    m = 0.25 * m + 0.75 * -1.0
    assert avg.updates == 3
    assert avg.module[0].weight.item() == pytest.approx(w, rel=1e-6)  # 6.8409...
    assert avg.module[1].running_mean.item() == pytest.approx(m, rel=1e-6)
    assert int(avg.module[1].num_batches_tracked) == 9  # copied, not averaged
    assert not avg.module.training and not any(p.requires_grad for p in avg.module.parameters())
    assert model[0].weight.item() == 8.0  # the live model is left alone


def test_a_decay_outside_0_1_is_refused():
    with pytest.raises(ValueError, match="EMA decay 1.0"):
        WeightAverage(nn.Linear(1, 1), decay=1.0)
    with pytest.raises(ConfigError, match="ema_decay 1.5 is not in"):
        TrainConfig(ema_decay=1.5)


def _cfg(**kw) -> TrainConfig:
    return TrainConfig(**{"epochs": 2, "batch_size": 4, "workers": 0, "max_seq_len": 40, "patience": 5, **kw})


def test_the_trainer_saves_the_average_of_its_live_weights(demo_features, tmp_path):
    """The checkpoint's "model" is the EMA of the live weights after every step, computed here by hand from
    snapshots; "model_live" is the last live state; validation scores the average."""
    decay = 0.6
    with Trainer(demo_features, tmp_path / "run", _cfg(ema_decay=decay), SMALL, log=lambda s: None,
                 progress=False) as t:  # fmt: skip
        expected = {k: v.detach().clone().double() for k, v in t.model.state_dict().items()}
        step = t.train_step
        n = 0

        def recording_step(batch):
            nonlocal n
            loss = step(batch)
            n += 1
            d = min(decay, (1 + n) / (10 + n))
            for k, v in t.model.state_dict().items():
                expected[k] = d * expected[k] + (1 - d) * v.double() if v.is_floating_point() else v.double()
            return loss

        t.train_step = recording_step
        t.fit()
        live = {k: v.clone() for k, v in t.model.state_dict().items()}
    ckpt = load_checkpoint(tmp_path / "run" / "last.pt", keys=("model", "model_live", "ema_updates"))
    assert ckpt["ema_updates"] == n > 4 and ckpt["train_config"]["ema_decay"] == decay
    for k, v in ckpt["model"].items():
        torch.testing.assert_close(v.double(), expected[k], rtol=1e-5, atol=1e-6, msg=k)
    for k, v in ckpt["model_live"].items():
        torch.testing.assert_close(v, live[k], rtol=0, atol=0, msg=k)
    moved = [k for k, v in ckpt["model"].items() if v.is_floating_point() and not torch.equal(v, live[k])]
    assert moved  # the average is not the live model


def test_small_corpora_average_by_default_and_0_turns_it_off(demo_features, tmp_path):
    with Trainer(demo_features, tmp_path / "a", _cfg(epochs=1), SMALL, log=lambda s: None, progress=False) as t:
        assert t.cfg.ema_decay == SMALL_EMA_DECAY and t.ema is not None  # the demo corpus is under an hour
    with Trainer(demo_features, tmp_path / "b", _cfg(epochs=1, ema_decay=0), SMALL, log=lambda s: None,
                 progress=False) as t:  # fmt: skip
        assert t.ema is None
        t.fit()
        assert t.served is t.model
    ckpt = load_checkpoint(tmp_path / "b" / "last.pt")
    assert "model_live" not in ckpt and "ema_updates" not in ckpt


@pytest.mark.slow
def test_resuming_an_averaged_mixup_run_matches_an_uninterrupted_one(demo_features, tmp_path):
    """Stopped after epoch 1 and resumed to 3: the average, the live weights and the metrics are those of one go
    (the mixup draws too: they come from the seed and the step)."""
    cfg = _cfg(epochs=3, ema_decay=0.7, mixup=0.4)
    with Trainer(demo_features, tmp_path / "a", cfg, SMALL, log=lambda s: None, progress=False) as t:
        straight = t.fit()
    with Trainer(demo_features, tmp_path / "b", cfg, SMALL, log=lambda s: None, progress=False) as t:
        t.fit(stop_after=1)
    with Trainer(demo_features, tmp_path / "b", _cfg(epochs=3), resume=True, log=lambda s: None, progress=False) as t:
        assert t.epoch == 1 and t.ema is not None and t.ema.updates == t.step > 0
        resumed = t.fit()
    keys = ("model", "model_live", "ema_updates")
    a, b = (
        load_checkpoint(tmp_path / "a" / "last.pt", keys=keys),
        load_checkpoint(tmp_path / "b" / "last.pt", keys=keys),
    )
    assert a["ema_updates"] == b["ema_updates"]
    for part in ("model", "model_live"):
        for k in a[part]:
            torch.testing.assert_close(a[part][k], b[part][k], rtol=0, atol=0, msg=f"{part} {k}")
    torch.testing.assert_close(torch.tensor(resumed["val_loss"].values), torch.tensor(straight["val_loss"].values))


def test_a_run_saved_before_averaging_resumes_and_predicts_without_it(demo_features, demo, tmp_path):
    """A checkpoint whose train_config has no ema_decay nor mixup (written before they existed), no model_live:
    resumed, the run goes on without averaging from its "model"; `mmemo predict` reads it."""
    run = tmp_path / "old"
    with Trainer(demo_features, run, _cfg(epochs=2, ema_decay=0), SMALL, log=lambda s: None, progress=False) as t:
        t.fit(stop_after=1)
    for name in ("last.pt", "best.pt"):
        ckpt = load_checkpoint(run / name, keys=("train_config",))
        for key in ("ema_decay", "mixup"):
            del ckpt["train_config"][key]
        save_checkpoint(ckpt, run / name)
    old = load_checkpoint(run / "last.pt")["model"]
    with Trainer(demo_features, run, _cfg(epochs=2), resume=True, log=lambda s: None, progress=False) as t:
        assert t.cfg.ema_decay == 0 and t.ema is None
        for k, v in t.model.state_dict().items():
            torch.testing.assert_close(v.cpu(), old[k], rtol=0, atol=0, msg=k)
        t.fit()
    clip = demo / "corpus" / "speaker0" / "clip00.mp4"
    out = CliRunner().invoke(main, ["predict", str(clip), "--run", str(run)])
    assert out.exit_code == 0, out.output
    assert "valence" in out.output.splitlines()[0]


def test_mixup_mixes_inputs_and_labels_on_the_rows_both_windows_hold():
    """Two windows of 3 and 2 rows, lam (0.25, 1.0), perm (1, 0): window 0 = 0.25 w0 + 0.75 w1 on its first 2
    rows; window 1 = 1.0 w1 + 0 w0, cut to the 2 rows w1 has; a modality absent on a row of either is absent."""
    pad = torch.tensor([[True, True, True], [True, True, False]])
    b = {
        "audio": torch.tensor([[[1.0], [2.0], [3.0]], [[5.0], [9.0], [0.0]]]),  # (B, T, 1)
        "frames": torch.zeros(2, 3, 2, 2, 3),
        "labels": torch.tensor([[[0.4, -0.8]] * 3, [[-0.4, 0.8]] * 2 + [[0.0, 0.0]]]),  # (B, T, 2)
        "pad_mask": pad,
        "label_mask": pad.clone(),
        "audio_mask": torch.tensor([[True, False, True], [True, True, False]]),
        "video_mask": torch.zeros(2, 3, dtype=torch.bool),
        "has_audio": torch.tensor([True, True]),
    }
    b["frames"][0] = 1.0
    out = mixup_batch(b, torch.tensor([0.25, 1.0]), torch.tensor([1, 0]))
    assert out["pad_mask"].tolist() == [[True, True, False], [True, True, False]]
    assert out["audio_mask"].tolist() == [[True, False, False], [True, False, False]]
    assert out["label_mask"].tolist() == out["pad_mask"].tolist() and not out["video_mask"].any()
    torch.testing.assert_close(out["audio"][0, :2, 0], torch.tensor([0.25 * 1 + 0.75 * 5, 0.25 * 2 + 0.75 * 9]))
    torch.testing.assert_close(out["audio"][1, :2, 0], torch.tensor([5.0, 9.0]))
    torch.testing.assert_close(out["labels"][0, 0], torch.tensor([0.25 * 0.4 - 0.75 * 0.4, -0.25 * 0.8 + 0.75 * 0.8]))
    torch.testing.assert_close(out["labels"][1, 0], torch.tensor([-0.4, 0.8]))
    assert out["frames"][0].unique().tolist() == [0.25] and out["frames"][1].unique().tolist() == [0.0]
    assert b["pad_mask"][0, 2]  # the input batch is left alone


def test_mixup_draws_come_from_the_seed_and_the_step():
    lam, perm = mixup_draw(8, 0.4, seed=3, step=11)
    lam2, perm2 = mixup_draw(8, 0.4, seed=3, step=11)
    assert torch.equal(lam, lam2) and torch.equal(perm, perm2)
    assert sorted(perm.tolist()) == list(range(8)) and ((lam >= 0) & (lam <= 1)).all()
    assert not torch.equal(mixup_draw(8, 0.4, seed=3, step=12)[0], lam)
    # Beta(a, a) has mean 1/2 and variance 1 / (4 (2a + 1)): 0.1389 for a = 0.4
    many = torch.cat([mixup_draw(64, 0.4, seed=0, step=s)[0] for s in range(200)]).double()
    assert abs(many.mean().item() - 0.5) < 0.02 and abs(many.var().item() - 1 / (4 * 1.8)) < 0.01


def test_the_cli_options_reach_the_run(demo_features, tmp_path):
    """`mmemo train --ema-decay D --mixup A` lands in the run's config.json; a decay of 1 is refused by name."""
    import json

    args = ["train", str(demo_features), "--out", str(tmp_path / "run"), "--epochs", "1", "--batch-size", "4",
            "--workers", "0", "--max-seq-len", "40", "--hidden", "16", "--heads", "2", "--layers", "1", "-q",
            "--ema-decay", "0.5", "--mixup", "0.2", "--postprocess", "off"]  # fmt: skip
    out = CliRunner().invoke(main, args)
    assert out.exit_code == 0, out.output
    train = json.loads((tmp_path / "run" / "config.json").read_text())["train"]
    assert train["ema_decay"] == 0.5 and train["mixup"] == 0.2
    bad = CliRunner().invoke(main, [*args[:3], str(tmp_path / "bad"), "--ema-decay", "1"])
    assert bad.exit_code == 2 and "--ema-decay" in bad.output


def test_an_averaged_run_without_its_live_weights_is_refused_on_resume(demo_features, tmp_path):
    from mmemo.errors import MmemoError

    run = tmp_path / "run"
    with Trainer(demo_features, run, _cfg(epochs=2, ema_decay=0.5), SMALL, log=lambda s: None, progress=False) as t:
        t.fit(stop_after=1)
    ckpt = load_checkpoint(run / "last.pt", keys=("model_live",))
    del ckpt["model_live"]
    save_checkpoint(ckpt, run / "last.pt")
    with pytest.raises(MmemoError, match=r"last.pt: the run averages its weights \(ema_decay 0.5\).*model_live"):
        Trainer(demo_features, run, _cfg(epochs=2), resume=True, log=lambda s: None, progress=False)
