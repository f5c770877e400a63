"""The model's parts against reference computations: attention with masks, padding that changes nothing,
missing modalities, a learnable toy problem; the metrics against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mmemo.model.attention import MultiHeadAttention
from mmemo.model.config import ModelConfig
from mmemo.model.multimodal import MultiModalTransformer
from mmemo.pipeline.metrics import ccc, evaluate
from mmemo.pipeline.train import masked_ccc

TINY = {"audio_dim": 6, "hidden": 16, "heads": 2, "layers": 1, "video_size": 8, "cnn_channels": (4, 8)}


def _reference_attention(mha, x, kv, keep):
    """softmax(Q K^T / sqrt(d) with masked keys at -inf) V, head by head, in plain tensor algebra."""
    B, T, D = x.shape
    H, Dh = mha.heads, D // mha.heads
    q = (x @ mha.q.weight.T + mha.q.bias).view(B, T, H, Dh)
    k = (kv @ mha.k.weight.T + mha.k.bias).view(B, kv.shape[1], H, Dh)
    v = (kv @ mha.v.weight.T + mha.v.bias).view(B, kv.shape[1], H, Dh)
    out = torch.zeros(B, T, H, Dh)
    for b in range(B):
        for h in range(H):
            scores = q[b, :, h] @ k[b, :, h].T / math.sqrt(Dh)
            scores = scores.masked_fill(~keep[b][None, :], float("-inf"))
            out[b, :, h] = torch.softmax(scores, dim=-1) @ v[b, :, h]
    return out.reshape(B, T, D) @ mha.out.weight.T + mha.out.bias


def test_attention_matches_reference_with_masks():
    """Self- and cross-attention with key-padding masks equal the textbook formula."""
    torch.manual_seed(0)
    mha = MultiHeadAttention(16, 4).eval()
    x, kv = torch.randn(3, 5, 16), torch.randn(3, 7, 16)
    keep = torch.ones(3, 7, dtype=torch.bool)
    keep[0, 4:] = False
    keep[2, :2] = False
    torch.testing.assert_close(mha(x, kv, keep), _reference_attention(mha, x, kv, keep), atol=1e-5, rtol=1e-5)
    keep_self = keep[:, :5]
    torch.testing.assert_close(
        mha(x, None, keep_self), _reference_attention(mha, x, x, keep_self), atol=1e-5, rtol=1e-5
    )


def test_attention_to_no_key_is_zero_not_nan():
    """A sample whose keys are all masked (e.g. no video at all) gets zeros from cross-attention."""
    mha = MultiHeadAttention(8, 2).eval()
    keep = torch.tensor([[False, False, False], [True, False, True]])
    y = mha(torch.randn(2, 4, 8), torch.randn(2, 3, 8), keep)
    assert torch.isfinite(y).all() and (y[0] == 0).all() and (y[1] != 0).any()


def _inputs(B=2, T=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    audio = torch.randn(B, T, 6, generator=g)
    frames = torch.rand(B, T, 8, 8, 3, generator=g)
    return audio, frames


@pytest.mark.parametrize("stats_head", [False, True])
@pytest.mark.parametrize("train_mode", [False, True])
def test_padding_changes_nothing_real(train_mode, stats_head):
    """Junk in padded positions leaves real outputs and their gradients unchanged (batch norm and the statistics
    pooling head included)."""
    torch.manual_seed(1)
    model = MultiModalTransformer(ModelConfig(**TINY, dropout=0.0, modality_dropout=0.0, stats_head=stats_head))
    model.train(train_mode)
    audio, frames = _inputs(T=12)
    pad = torch.ones(2, 12, dtype=torch.bool)
    pad[1, 7:] = False  # sample 1 has 7 real rows
    outs, grads = [], []
    for junk in (0.0, 100.0):
        a, f = audio.clone(), frames.clone()
        a[1, 7:] = junk
        f[1, 7:] = junk / 100
        a.requires_grad_(True)
        if train_mode:  # fresh running statistics each time so both passes start equal
            model.fuse_norm.running_mean.zero_()
            model.fuse_norm.running_var.fill_(1)
        out = model(a, f, pad)
        out[pad].sum().backward()
        outs.append(out[pad].detach())
        grads.append(a.grad[pad].clone())
        assert (a.grad[~pad] == 0).all()  # nothing real depends on a padded input
        model.zero_grad()
    torch.testing.assert_close(outs[0], outs[1], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(grads[0], grads[1], atol=1e-5, rtol=1e-5)


def test_missing_modalities_shapes():
    """Audio-only, video-only and mixed batches all give (B, T, 2) finite outputs."""
    model = MultiModalTransformer(ModelConfig(**TINY)).eval()
    audio, frames = _inputs(B=3, T=9)
    pad = torch.ones(3, 9, dtype=torch.bool)
    for a, f in ((audio, None), (None, frames), (audio, frames)):
        y = model(a, f, pad)
        assert y.shape == (3, 9, 2) and torch.isfinite(y).all()
    vmask = torch.tensor([[True] * 9, [False] * 9, [True] * 4 + [False] * 5])
    y = model(audio, frames, pad, audio_mask=torch.ones_like(pad), video_mask=vmask)
    assert y.shape == (3, 9, 2) and torch.isfinite(y).all()


def test_audio_only_model_has_no_video_branch():
    """video=False builds no frame encoder and ignores frames."""
    model = MultiModalTransformer(ModelConfig(**{**TINY, "video": False})).eval()
    assert model.frame_encoder is None
    audio, frames = _inputs()
    pad = torch.ones(2, 12, dtype=torch.bool)
    torch.testing.assert_close(model(audio, frames, pad), model(audio, None, pad))


@pytest.mark.slow
def test_learns_a_toy_problem():
    """Valence = mean brightness of the frame, arousal = first audio feature: the loss falls by more than 80 %."""
    torch.manual_seed(0)
    model = MultiModalTransformer(ModelConfig(**TINY, dropout=0.0, modality_dropout=0.0))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(150):
        audio = torch.randn(8, 10, 6, generator=g)
        level = torch.rand(8, 10, 1, 1, 1, generator=g)
        frames = level.expand(8, 10, 8, 8, 3).clone()
        target = torch.stack([level.view(8, 10) * 2 - 1, audio[..., 0].clamp(-1, 1)], -1)
        loss = ((model(audio, frames, torch.ones(8, 10, dtype=torch.bool)) - target) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-10:]) < 0.2 * np.mean(losses[:10])


def test_ccc_known_values():
    """The field's known values: 0.9777 (n - 1 variance) and 2/3 (n variance); perfect, constant, negated."""
    assert ccc([3, -0.5, 2, 7], [2.5, 0, 2, 8], ddof=1) == pytest.approx(0.9777, abs=1e-4)
    assert ccc([0, 1, 2], [0, 1, 1], ddof=0) == pytest.approx(2 / 3)
    y = np.array([0.1, -0.3, 0.5, 0.2])
    assert ccc(y, y) == pytest.approx(1.0)
    assert ccc(np.full(4, y.mean()), y) == pytest.approx(0.0)
    assert ccc(-y, y) < 0
    # by hand: x=[1,2,3], y=[2,4,6]: means 2,4; var 2/3, 8/3; cov 4/3 -> 2*(4/3) / (2/3 + 8/3 + 4) = 8/22
    assert ccc([1, 2, 3], [2, 4, 6]) == pytest.approx(8 / 22)


def test_evaluate_pooled_and_per_clip():
    """Pooled CCC over all frames differs from the mean of per-clip CCCs; RMSE / MAE by hand."""
    p = [np.array([0.0, 1.0, 2.0]), np.array([5.0, 6.0])]
    t = [np.array([0.0, 1.0, 1.0]), np.array([5.0, 7.0])]
    r = evaluate(p, t)
    assert r["ccc_clip"] == pytest.approx((2 / 3 + ccc([5, 6], [5, 7])) / 2)
    assert r["ccc"] == pytest.approx(ccc(np.concatenate(p), np.concatenate(t)))
    assert r["rmse"] == pytest.approx(math.sqrt(2 / 5)) and r["mae"] == pytest.approx(2 / 5)


def test_masked_ccc_matches_numpy():
    """The differentiable batch CCC equals the numpy CCC over the labelled positions only."""
    g = torch.Generator().manual_seed(3)
    pred, target = torch.randn(2, 20, 2, generator=g), torch.randn(2, 20, 2, generator=g)
    mask = torch.rand(2, 20, generator=g) > 0.3
    got = masked_ccc(pred, target, mask)
    for k in range(2):
        expected = ccc(pred[..., k][mask].numpy(), target[..., k][mask].numpy())
        assert float(got[k]) == pytest.approx(expected, abs=1e-5)


def test_stats_head_sees_the_window_as_a_whole():
    """With statistics pooling a row's output depends on the other rows of its window (their mean and spread);
    without it, a change to row 0's input reaches row 5 only through attention, which a 0-layer model lacks."""
    torch.manual_seed(0)
    cfg = {**TINY, "layers": 0, "cross_layers": 0, "video": False, "dropout": 0.0, "modality_dropout": 0.0}
    audio, _ = _inputs(B=1, T=8)
    pad = torch.ones(1, 8, dtype=torch.bool)
    for stats, changes in ((False, False), (True, True)):
        model = MultiModalTransformer(ModelConfig(**cfg, stats_head=stats)).eval()
        a2 = audio.clone()
        a2[0, 0] += 3.0
        moved = not torch.allclose(model(audio, None, pad)[0, 5], model(a2, None, pad)[0, 5])
        assert moved == changes


def test_audio_norm_off_keeps_a_rows_level():
    """With the LayerNorm after the audio projection, a row and the same row 3x louder embed alike (the norm divides
    the level out: a projection without bias maps 3x to 3x, which the norm rescales back); without it
    (``audio_norm=False``, the small-corpus model) the embedding is 3x too, so the level reaches the encoders."""
    torch.manual_seed(0)
    x = torch.randn(1, 4, 6)
    pad = torch.ones(1, 4, dtype=torch.bool)
    for norm in (True, False):
        model = MultiModalTransformer(ModelConfig(**TINY, video=False, audio_norm=norm)).eval()
        torch.nn.init.zeros_(model.audio_in[0].bias)
        a1, *_ = model.embed(x, None, pad)
        a3, *_ = model.embed(3 * x, None, pad)
        if norm:
            torch.testing.assert_close(a3, a1, atol=1e-4, rtol=1e-4)
        else:
            torch.testing.assert_close(a3, 3 * a1)


def test_fusion_norm_none_makes_samples_independent_in_training():
    """Batch norm over the fused states (``fusion_norm="batch"``) makes a training sample's output depend on the
    clips batched with it; with ``"none"`` it is the same whatever the other sample is."""
    torch.manual_seed(0)
    cfg = {**TINY, "video": False, "dropout": 0.0, "modality_dropout": 0.0}
    x = torch.randn(3, 5, 6)
    pad = torch.ones(2, 5, dtype=torch.bool)
    for norm, independent in (("batch", False), ("none", True)):
        model = MultiModalTransformer(ModelConfig(**cfg, fusion_norm=norm)).train()
        with_1 = model(x[[0, 1]], None, pad)[0]
        with_2 = model(x[[0, 2]], None, pad)[0]
        assert torch.allclose(with_1, with_2) == independent


def test_model_config_norm_options_and_old_checkpoints():
    """A model configuration saved before the options (no keys) rebuilds the model as it was trained: LayerNorm
    after the audio projection, batch norm over the fused states; an unknown fusion norm is one clear error."""
    from mmemo.errors import ConfigError

    old = ModelConfig(**TINY).to_dict()
    del old["audio_norm"], old["fusion_norm"]
    cfg = ModelConfig.from_dict(old)
    assert cfg.audio_norm is True and cfg.fusion_norm == "batch"
    keys = set(MultiModalTransformer(cfg).state_dict())
    assert {"audio_in.1.weight", "fuse_norm.running_mean"} <= keys
    new = set(MultiModalTransformer(ModelConfig(**TINY, audio_norm=False, fusion_norm="none")).state_dict())
    assert keys - new == {"audio_in.1.weight", "audio_in.1.bias", "fuse_norm.weight", "fuse_norm.bias",
                          "fuse_norm.running_mean", "fuse_norm.running_var"}  # fmt: skip
    with pytest.raises(ConfigError, match="fusion_norm 'layer' is not one of batch, none"):
        ModelConfig(**TINY, fusion_norm="layer")
