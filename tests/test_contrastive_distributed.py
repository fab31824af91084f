"""The global DDP budget (docs/method.md B6) with 2 CPU processes and gloo, against one process."""

from __future__ import annotations

import os
import socket
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from contrastive_reference import EQUAL_CELLS, X, cell_labels
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from msccl.contrastive import MSCSContrastiveLoss

WORLD = 2
SIZES = (8, 4, 4)
# Four images, two per rank. Every present pair covers 6 cells, so sampling takes every pixel and the
# result does not depend on the draw; rank 1 has one pair fewer than rank 0, so the ranks hold
# different numbers of samples (the gather pads).
CELLS = [
    *EQUAL_CELLS,
    [[1, 1, 1, 1], [1, 1, 0, 0], [0, 0, 0, 0], [X, X, X, X]],
    [[2, 2, 2, 2], [2, 2, X, X], [X, X, X, X], [X, X, X, X]],
]


def make_batch():
    g = torch.Generator().manual_seed(0)
    labels = cell_labels(CELLS)
    features = [torch.randn(len(CELLS), 5, s, s, generator=g, dtype=torch.float64) for s in SIZES]
    inputs = [torch.randn(len(CELLS), 3, s, s, generator=g, dtype=torch.float64) for s in SIZES]
    return labels, features, inputs


def make_model() -> nn.Module:
    torch.manual_seed(1)
    return nn.Conv2d(3, 5, kernel_size=1).double()


def _worker(rank: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD, timeout=timedelta(seconds=60))
    try:
        labels, features, inputs = make_batch()
        local = slice(2 * rank, 2 * rank + 2)
        loss_fn = MSCSContrastiveLoss(num_classes=3, budget="global")

        # the loss on this rank's features, gradient w.r.t. them
        mine = [f[local].clone().requires_grad_() for f in features]
        loss, terms = loss_fn(mine, labels[local])
        loss.backward()

        # a DDP-wrapped model: parameter gradients after DDP's averaging
        model = DistributedDataParallel(make_model())
        model_loss, _ = loss_fn([model(x[local]) for x in inputs], labels[local])
        model_loss.backward()

        torch.save(
            {
                "loss": loss.detach(),
                "terms": terms,
                "grads": [f.grad for f in mine],
                "model_loss": model_loss.detach(),
                "param_grads": [p.grad for p in model.parameters()],
            },
            Path(out_dir) / f"rank{rank}.pt",
        )
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_global_budget_matches_one_process_over_the_concatenated_batch(tmp_path):
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    results = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]

    labels, features, inputs = make_batch()
    single_fn = MSCSContrastiveLoss(num_classes=3)  # one process, the whole batch
    features = [f.clone().requires_grad_() for f in features]
    single, single_terms = single_fn(features, labels)
    single.backward()
    model = make_model()
    model_single, _ = single_fn([model(x) for x in inputs], labels)
    model_single.backward()

    # every rank sees both ranks' samples: 4 + 3 pairs of 24 (8x8) and 6 (4x4) pixels
    assert [single_terms[f"samples/s{s}"].item() for s in range(3)] == [168, 42, 42]
    for rank, result in enumerate(results):
        assert set(result["terms"]) == set(single_terms)
        for key, value in single_terms.items():
            torch.testing.assert_close(result["terms"][key], value, rtol=1e-10, atol=1e-12, msg=key)
        torch.testing.assert_close(result["loss"], single.detach(), rtol=1e-10, atol=1e-12)
        # the local rows carry world_size x dL/dz_r, which DDP's averaging turns into dL/dz_r
        for grad, f in zip(result["grads"], features, strict=True):
            torch.testing.assert_close(grad / WORLD, f.grad[2 * rank : 2 * rank + 2], rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(result["model_loss"], model_single.detach(), rtol=1e-10, atol=1e-12)
        for got, p in zip(result["param_grads"], model.parameters(), strict=True):
            torch.testing.assert_close(got, p.grad, rtol=1e-9, atol=1e-12)
