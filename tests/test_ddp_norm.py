"""The batch norms under DistributedDataParallel (issue 14): two real processes on gloo, each with half of a batch,
give the outputs, input gradients, parameter gradients and running statistics of one process holding the whole
batch: the fusion's masked batch norm (although the halves have different numbers of real, unpadded rows) and the
frame CNN's BatchNorm2d (turned into GlobalBatchNorm2d on CPU ranks, where SyncBatchNorm refuses to run)."""

from __future__ import annotations

import os
import socket
import sys

import torch
import torch.multiprocessing as mp

from mmemo.model.multimodal import MaskedBatchNorm
from mmemo.model.sync import global_batch_norms

D = 6


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 7, D, generator=g) * 3 + 1
    mask = torch.ones(4, 7, dtype=torch.bool)
    mask[0, 5:] = False  # rank 0's half has 12 real rows, rank 1's 9: unequal shares
    mask[2, 2:] = False
    mask[3, 6:] = False
    return x, mask


def _run(norm: MaskedBatchNorm, x: torch.Tensor, mask: torch.Tensor) -> dict:
    x = x.clone().requires_grad_(True)
    y = norm(x, mask)
    (y * torch.arange(1, D + 1) * mask[..., None]).sum().backward()  # a loss that weighs the features differently
    return {"y": y.detach(), "gx": x.grad, "gw": norm.weight.grad, "gb": norm.bias.grad,
            "mean": norm.running_mean.clone(), "var": norm.running_var.clone()}  # fmt: skip


def _rank(rank: int, port: int, out: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    x, mask = _batch()
    norm = MaskedBatchNorm(D)
    norm.sync = True
    half = slice(2 * rank, 2 * rank + 2)
    _save_rank(_run(norm, x[half], mask[half]), out, rank)


def _save_rank(got: dict, out: str, rank: int) -> None:
    """Sum the parameter gradients over ranks (DDP averages them; summed, as one process would get them), save this
    rank's results for the test process, leave the group."""
    import torch.distributed as dist

    for k in ("gw", "gb"):
        dist.all_reduce(got[k])
    torch.save(got, f"{out}.{rank}")
    dist.destroy_process_group()


def _two_ranks(target, tmp_path, monkeypatch) -> list[dict]:
    """Run ``target(rank, port, out)`` in two spawned processes on gloo; their saved results."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = str(tmp_path / "rank")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(sys.path))  # the spawned ranks import this test module
    mp.start_processes(target, args=(port, out), nprocs=2, join=True, start_method="spawn")
    return [torch.load(f"{out}.{r}", weights_only=True) for r in (0, 1)]


def _assert_halves_equal_whole(parts: list[dict], whole: dict) -> None:
    torch.testing.assert_close(torch.cat([p["y"] for p in parts]), whole["y"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(torch.cat([p["gx"] for p in parts]), whole["gx"], rtol=1e-4, atol=1e-5)
    for k in ("gw", "gb", "mean", "var"):
        for p in parts:
            torch.testing.assert_close(p[k], whole[k], rtol=1e-5, atol=1e-5, msg=k)


def test_two_ranks_on_gloo_equal_one_process_on_the_whole_batch(tmp_path, monkeypatch):
    parts = _two_ranks(_rank, tmp_path, monkeypatch)
    x, mask = _batch()
    whole = _run(MaskedBatchNorm(D), x, mask)
    _assert_halves_equal_whole(parts, whole)
    # without the reduction each rank normalises by its own half: not the same numbers
    alone = _run(MaskedBatchNorm(D), x[:2], mask[:2])
    assert not torch.allclose(alone["y"], whole["y"][:2], atol=1e-3)


def _frames() -> torch.Tensor:
    return torch.randn(4, 3, 5, 5, generator=torch.Generator().manual_seed(1)) * 2 + 0.5


def _run2d(norm: torch.nn.BatchNorm2d, x: torch.Tensor) -> dict:
    x = x.clone().requires_grad_(True)
    y = norm(x)
    (y * torch.arange(1, 4).view(1, 3, 1, 1)).sum().backward()
    return {"y": y.detach(), "gx": x.grad, "gw": norm.weight.grad, "gb": norm.bias.grad,
            "mean": norm.running_mean.clone(), "var": norm.running_var.clone()}  # fmt: skip


def _rank2d(rank: int, port: int, out: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    net = global_batch_norms(torch.nn.Sequential(torch.nn.BatchNorm2d(3)))
    _save_rank(_run2d(net[0], _frames()[2 * rank : 2 * rank + 2]), out, rank)


def test_the_frame_cnns_batch_norm_takes_the_global_batch_on_gloo(tmp_path, monkeypatch):
    parts = _two_ranks(_rank2d, tmp_path, monkeypatch)
    _assert_halves_equal_whole(parts, _run2d(torch.nn.BatchNorm2d(3), _frames()))
    # without a process group it is BatchNorm2d itself, and its state dict is unchanged by the conversion
    plain = torch.nn.Sequential(torch.nn.BatchNorm2d(3))
    converted = global_batch_norms(torch.nn.Sequential(torch.nn.BatchNorm2d(3)))
    assert list(plain.state_dict()) == list(converted.state_dict())
    torch.testing.assert_close(converted(_frames()), plain(_frames()))
