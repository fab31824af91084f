"""Pixel contrast (docs/method.md P): the vectorised sampler, loss and memory against slow references
written from the description (plain loops, float64), edge cases, the module wiring, and an exact resume.

The references carry the original's formula, not its code: per anchor view i,
    -(tau / tau_base) x mean over positives p of [l_ip - log(exp(l_ip) + sum over negatives n of exp(l_in))]
with l = z_i . z_j / tau, averaged over the views that have a positive.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from msccl.cli import build_cli
from msccl.contrastive import PixelContrastLoss, PixelSegmentMemory, sample_hard_anchors
from msccl.models import FPN
from msccl.training import SegmentationModule
from tests.conftest import TINY_SYNTHETIC
from tests.test_resume import _checkpoint_every_two_steps

IGNORE = 255


# ---- slow references ------------------------------------------------------------------------------
def reference_sample(labels, predictions, num_classes, max_samples, max_views, draws):
    """Hard anchors with loops: anchor classes per image, V, then hard / easy views by increasing draw."""
    batch, pixels = labels.shape
    classes = [
        [c for c in range(num_classes) if int((labels[b] == c).sum()) > max_views] for b in range(batch)
    ]
    total = sum(len(c) for c in classes)
    if total == 0 or max_samples // total == 0:
        return None
    views = min(max_samples // total, max_views)
    rows, row_labels, hard_counts = [], [], []
    for b in range(batch):
        for c in classes[b]:
            hard = [p for p in range(pixels) if labels[b, p] == c and predictions[b, p] != c]
            easy = [p for p in range(pixels) if labels[b, p] == c and predictions[b, p] == c]
            if len(hard) >= views / 2 and len(easy) >= views / 2:
                hard_keep = views // 2
            elif len(hard) >= views / 2:
                hard_keep = views - len(easy)
            else:
                hard_keep = len(hard)
            hard = sorted(hard, key=lambda p: float(draws[b, p]))[:hard_keep]
            easy = sorted(easy, key=lambda p: float(draws[b, p]))[: views - hard_keep]
            rows.append([b * pixels + p for p in hard + easy])
            row_labels.append(c)
            hard_counts.append(hard_keep)
    return torch.tensor(rows), torch.tensor(row_labels), torch.tensor(hard_counts)


def reference_loss(anchors, labels, temperature, base_temperature, contrast=None, contrast_labels=None):
    """The loss with loops (against ``contrast`` when given); ``anchors`` [T, V, D] normalised, rows taken
    view-major like the original."""
    num_anchors, views, _ = anchors.shape
    z = [anchors[t, v].double() for v in range(views) for t in range(num_anchors)]
    y = [int(labels[t]) for _ in range(views) for t in range(num_anchors)]
    own = contrast is None
    c = z if own else [row.double() for row in contrast]
    yc = y if own else [int(v) for v in contrast_labels]
    per_view = []
    for i in range(len(z)):
        # the self pair is never a positive; with a queue the original drops column i instead
        positives = [j for j in range(len(c)) if yc[j] == y[i] and j != i]
        negatives = [j for j in range(len(c)) if yc[j] != y[i]]
        if not positives:
            continue
        negative_sum = sum(math.exp(float(z[i] @ c[n]) / temperature) for n in negatives)
        terms = []
        for p in positives:
            logit = float(z[i] @ c[p]) / temperature
            terms.append(logit - math.log(math.exp(logit) + negative_sum))
        per_view.append(sum(terms) / len(terms))
    if not per_view:
        return 0.0
    return -(temperature / base_temperature) * sum(per_view) / len(per_view)


def reference_enqueue(memory, queues, keys, labels, draws, skip_class_zero=True, pool="image_prefix"):
    """The enqueue with loops over images and classes, on plain copies ``queues`` (dict of tensors)."""
    size, freq = memory.size, memory.pixel_update_freq
    batch, _, _ = keys.shape
    draw_at = 0
    for b in range(batch):
        present = sorted(set(labels[b].tolist()) - {IGNORE} - ({0} if skip_class_zero else set()))
        for c in present:
            where = [p for p in range(labels.shape[1]) if labels[b, p] == c]
            mean = torch.stack([keys[b, :, p] for p in where]).mean(0)
            ptr = int(queues["segment_queue_ptr"][c])
            queues["segment_queue"][c, ptr] = F.normalize(mean, dim=0)
            queues["segment_queue_ptr"][c] = (ptr + 1) % size
            pool_positions = where if pool == "class" else list(range(len(where)))
            own = draws[draw_at : draw_at + len(pool_positions)]
            draw_at += len(pool_positions)
            order = sorted(range(len(pool_positions)), key=lambda i: float(own[i]))
            count = min(len(where), freq)
            chosen = [pool_positions[i] for i in order[:count]]
            rows = F.normalize(torch.stack([keys[b, :, p] for p in chosen]), dim=1)
            ptr = int(queues["pixel_queue_ptr"][c])
            if ptr + count >= size:
                queues["pixel_queue"][c, size - count :] = rows
                queues["pixel_queue_ptr"][c] = 0
            else:
                queues["pixel_queue"][c, ptr : ptr + count] = rows
                queues["pixel_queue_ptr"][c] = (ptr + 1) % size


# ---- inputs ---------------------------------------------------------------------------------------
def _inputs(seed: int, classes: int = 4, batch: int = 2, size: int = 8, dim: int = 6, ignore: float = 0.2):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, classes, (batch, size, size), generator=g)
    labels[torch.rand(batch, size, size, generator=g) < ignore] = IGNORE
    predictions = torch.where(
        torch.rand(batch, size, size, generator=g) < 0.3,
        torch.randint(0, classes, (batch, size, size), generator=g),
        labels.clamp(max=classes - 1),
    )
    features = torch.randn(batch, dim, size, size, generator=g, dtype=torch.float64)
    return features, labels, predictions


def _msccl_and_reference(loss_fn, features, labels, predictions, seed=7):
    """msccl's loss, and the reference on the sample drawn from the same draws."""
    loss, terms = loss_fn([features], labels, predictions, generator=torch.Generator().manual_seed(seed))
    batch = labels.shape[0]
    draws = torch.rand(labels.reshape(batch, -1).shape, generator=torch.Generator().manual_seed(seed))
    flat_labels, flat_predictions = labels.reshape(batch, -1), predictions.reshape(batch, -1)
    sample = reference_sample(
        flat_labels, flat_predictions, loss_fn.num_classes, loss_fn.max_samples, loss_fn.max_views, draws
    )
    return loss, terms, sample


@pytest.mark.parametrize("seed", range(4))
def test_sampler_matches_the_loop_reference(seed):
    _, labels, predictions = _inputs(seed, size=10)
    flat, flat_pred = labels.reshape(2, -1), predictions.reshape(2, -1)
    draws = torch.rand(flat.shape, generator=torch.Generator().manual_seed(seed))
    for max_samples, max_views in [(64, 5), (12, 9), (1024, 100)]:
        got = sample_hard_anchors(flat, flat_pred, 4, IGNORE, max_samples, max_views, draws)
        expected = reference_sample(flat, flat_pred, 4, max_samples, max_views, draws)
        if expected is None:
            assert got is None
            continue
        assert torch.equal(got.index, expected[0])
        assert torch.equal(got.labels, expected[1]) and torch.equal(got.hard_views, expected[2])


@pytest.mark.parametrize("seed", range(3))
def test_loss_equals_the_reference_formula(seed):
    features, labels, predictions = _inputs(seed)
    loss_fn = PixelContrastLoss(4, IGNORE, max_samples=40, max_views=4, embedding_dim=6)
    loss, terms, (index, anchor_labels, _) = _msccl_and_reference(loss_fn, features, labels, predictions)
    rows = F.normalize(features, dim=1).permute(0, 2, 3, 1).reshape(-1, 6)
    expected = reference_loss(rows[index], anchor_labels, 0.1, 0.07)
    assert loss.dtype == torch.float64 and loss.item() == pytest.approx(expected, rel=1e-10)
    assert terms["anchors"] == index.shape[0] and terms["views"] == index.shape[1]


def test_edge_cases_one_class_no_hard_pixels_a_lone_pixel_and_all_ignore():
    features, labels, predictions = _inputs(0, ignore=0.0)
    loss_fn = PixelContrastLoss(4, IGNORE, max_samples=40, max_views=4, embedding_dim=6)
    rows = F.normalize(features, dim=1).permute(0, 2, 3, 1).reshape(-1, 6)

    # no hard pixel anywhere (predictions perfect): every view is easy
    loss, terms, (index, anchor_labels, hard) = _msccl_and_reference(loss_fn, features, labels, labels)
    assert terms["hard_fraction"] == 0 and hard.sum() == 0
    assert loss.item() == pytest.approx(reference_loss(rows[index], anchor_labels, 0.1, 0.07), rel=1e-10)

    # one class: no negatives, so every log-probability is 0 and so is the loss
    one = torch.zeros_like(labels)
    loss, _, (index, anchor_labels, _) = _msccl_and_reference(loss_fn, features, one, predictions)
    assert set(anchor_labels.tolist()) == {0}
    assert abs(loss.item()) < 1e-12 and abs(reference_loss(rows[index], anchor_labels, 0.1, 0.07)) < 1e-12

    # a class with one pixel is never an anchor (an anchor class needs more than max_views pixels)
    lone = labels.clone()
    lone[lone == 3] = 2
    lone[0, 0, 0] = 3
    _, _, (_, anchor_labels, _) = _msccl_and_reference(loss_fn, features, lone, predictions)
    assert 3 not in anchor_labels.tolist()

    # all ignore: no anchor; the loss is a zero that still reaches the projection (the original raises)
    x = features.clone().requires_grad_()
    loss, terms = loss_fn([x], torch.full_like(labels, IGNORE), predictions)
    assert loss.item() == 0 and terms["anchors"] == 0
    loss.backward()
    assert x.grad is not None and torch.all(x.grad == 0)


def test_memory_enqueue_matches_the_loop_reference_and_round_trips_exactly():
    torch.manual_seed(0)
    for pool, skip in [("image_prefix", True), ("class", False)]:
        memory = PixelSegmentMemory(4, 6, size=5, pixel_update_freq=3, skip_class_zero=skip, pixel_pool=pool)
        memory.double()
        queues = {name: buffer.clone() for name, buffer in memory.named_buffers()}
        for step in range(4):  # enough writes to wrap both pointers
            features, labels, _ = _inputs(step, size=6)
            keys = F.normalize(features, dim=1).reshape(2, 6, -1)
            flat = labels.reshape(2, -1)
            memory.enqueue(keys, flat, generator=torch.Generator().manual_seed(step))
            candidates = sum(
                int((flat[b] == c).sum()) for b in range(2) for c in range(4) if not (skip and c == 0)
            )
            draws = torch.rand(candidates, generator=torch.Generator().manual_seed(step))
            reference_enqueue(memory, queues, keys, flat, draws, skip_class_zero=skip, pool=pool)
            for name, buffer in memory.named_buffers():
                assert torch.allclose(buffer, queues[name], rtol=0, atol=1e-12), (pool, step, name)
        restored = PixelSegmentMemory(
            4, 6, size=5, pixel_update_freq=3, skip_class_zero=skip, pixel_pool=pool
        )
        restored.double().load_state_dict(memory.state_dict())
        assert all(torch.equal(a, b) for a, b in zip(restored.buffers(), memory.buffers(), strict=True))


def test_contrast_set_and_loss_with_memory_equal_the_reference():
    features, labels, predictions = _inputs(1)
    loss_fn = PixelContrastLoss(
        4, IGNORE, max_samples=40, max_views=4, embedding_dim=6, memory_size=3, pixel_update_freq=2
    ).double()
    contrast, contrast_labels = loss_fn.memory.contrast_set()
    # the original's order: classes 1..3 (segment entries, then pixel entries), then zero rows labelled 0
    expected_labels = [c for c in (1, 2, 3) for _ in range(6)] + [0] * 6
    assert contrast_labels.tolist() == expected_labels and torch.all(contrast[-6:] == 0)
    assert torch.equal(contrast[:3], loss_fn.memory.segment_queue[1])
    loss, _, (index, anchor_labels, _) = _msccl_and_reference(loss_fn, features, labels, predictions)
    rows = F.normalize(features, dim=1).permute(0, 2, 3, 1).reshape(-1, 6)
    # the reference's rule j != i is the original's queue rule: column i is no positive of view row i
    expected = reference_loss(rows[index], anchor_labels, 0.1, 0.07, contrast, contrast_labels)
    assert loss.item() == pytest.approx(expected, rel=1e-10)
    # and the batch entered the queues after the loss read them
    assert not torch.equal(loss_fn.memory.contrast_set()[0], contrast)


def test_module_projects_the_concatenated_taps_and_passes_predictions():
    def net(num_classes):
        return FPN(num_classes, pyramid_channels=32, segmentation_channels=32)

    def pixel(num_classes, ignore_index):
        return PixelContrastLoss(
            num_classes, ignore_index, max_views=5, embedding_dim=8, memory_size=4, pixel_update_freq=2
        )

    torch.manual_seed(0)
    module = SegmentationModule(net, 4, contrastive=pixel, projection_dim=8, projection_layout="convmlp")
    assert len(module.projection_heads) == 1
    # ContrastiveSeg's convmlp head: conv with bias, BatchNorm, ReLU, conv
    kinds = [type(layer).__name__ for layer in module.projection_heads[0]]
    assert kinds == ["Conv2d", "BatchNorm2d", "ReLU", "Conv2d"]
    assert module.projection_heads[0][0].bias is not None
    assert module.projection_heads[0].in_channels == sum(tap.channels for tap in module.net.taps)
    images = torch.randn(2, 3, 32, 32)
    labels = torch.randint(0, 4, (2, 32, 32))
    losses = module.compute_losses(module.net(images, return_taps=True), labels)
    assert losses["contrastive"] > 0 and losses["contrastive/anchors"] > 0
    assert {"contrastive.memory.pixel_queue", "contrastive.memory.segment_queue_ptr"} <= {
        name.replace("contrastive_loss", "contrastive") for name in module.state_dict()
    }
    losses["loss"].backward()
    assert module.projection_heads[0][0].weight.grad.abs().sum() > 0


def test_a_killed_run_with_memory_resumes_to_the_same_queues_and_weights(in_tmp_dir):
    pixel = [
        "--model.init_args.contrastive=msccl.contrastive.PixelContrastLoss",
        "--model.init_args.contrastive.init_args.max_views=5",
        "--model.init_args.contrastive.init_args.memory_size=8",
        "--model.init_args.contrastive.init_args.pixel_update_freq=2",
        "--model.init_args.contrastive.init_args.embedding_dim=16",
        "--model.init_args.projection_dim=16",
        "--trainer.max_epochs=1",
        "--trainer.limit_train_batches=4",
        "--data.init_args.num_train=16",
        "--trainer.limit_val_batches=0",
    ]
    args = [*TINY_SYNTHETIC, _checkpoint_every_two_steps(in_tmp_dir), *pixel]
    build_cli(["fit", *args, "--run_dir=uninterrupted"])
    killed = [*args, "--trainer.callbacks+=tests.test_resume.CrashAtStep", "--trainer.callbacks.step=3"]
    with pytest.raises(SystemExit):
        build_cli(["fit", *killed])
    build_cli(["fit", *args, "--ckpt_path=last"])
    run = in_tmp_dir / "runs" / "synthetic" / "version_0"
    expected = torch.load(in_tmp_dir / "uninterrupted" / "checkpoints" / "last.ckpt", weights_only=False)
    actual = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert actual["global_step"] == expected["global_step"] == 4
    queue = "contrastive_loss.memory.pixel_queue_ptr"
    assert expected["state_dict"][queue].sum() > 0  # the queues moved
    for name, tensor in expected["state_dict"].items():
        assert torch.equal(actual["state_dict"][name], tensor), name


def _memory_loss() -> PixelContrastLoss:
    # every pixel of a class enters the pixel queue (pool "class", K >= any count) without overlap, so the
    # queues do not depend on the draw, only on which keys were enqueued
    torch.manual_seed(3)
    return PixelContrastLoss(
        4, IGNORE, max_views=2, embedding_dim=6, memory_size=120, pixel_update_freq=40,
        pixel_queue_pool="class", pixel_pointer_advance="count", memory_skips_class_zero=False,
    ).double()  # fmt: skip


def _ddp_worker(rank: int, port: int, out_dir: str) -> None:
    import os
    from datetime import timedelta

    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2, timeout=timedelta(seconds=60))
    try:
        features, labels, predictions = _inputs(5, size=6)
        loss_fn = _memory_loss()
        mine = slice(rank, rank + 1)
        loss_fn([features[mine]], labels[mine], predictions[mine])
        torch.save(dict(loss_fn.memory.named_buffers()), f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_under_ddp_every_rank_enqueues_the_keys_of_all_ranks(tmp_path):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_ddp_worker, args=(port, str(tmp_path)), nprocs=2, join=True)
    features, labels, predictions = _inputs(5, size=6)
    single = _memory_loss()
    single([features], labels, predictions)  # one process, both images
    expected = dict(single.memory.named_buffers())
    assert expected["pixel_queue_ptr"].sum() > 0
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        for name in ("segment_queue", "segment_queue_ptr", "pixel_queue_ptr"):
            torch.testing.assert_close(got[name], expected[name], rtol=0, atol=1e-12, msg=name)
        for c in range(4):  # the same keys per class; their order within an image follows the draw
            rows = [torch.tensor(sorted(map(tuple, q["pixel_queue"][c].tolist()))) for q in (got, expected)]
            torch.testing.assert_close(rows[0], rows[1], rtol=0, atol=1e-12)


def test_an_embedding_dim_other_than_the_projection_dim_stops_the_module_at_construction():
    def net(num_classes):
        return FPN(num_classes, pyramid_channels=32, segmentation_channels=32)

    def pixel(num_classes, ignore_index):
        return PixelContrastLoss(num_classes, ignore_index, embedding_dim=256)

    with pytest.raises(ValueError, match="contrastive.init_args.embedding_dim"):
        SegmentationModule(net, 4, contrastive=pixel, projection_dim=64)
