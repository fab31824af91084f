"""MSCSContrastiveLoss (docs/method.md A4, B3, B5, B7) against the loop reference, plus its configuration."""

from __future__ import annotations

import re

import pytest
import torch
from contrastive_reference import EQUAL_CELLS, cell_labels, reference_infonce, reference_total

from msccl.contrastive import PAPER_SCALE_WEIGHTS, MSCSContrastiveLoss, ProjectionHeads

IGNORE = 255
PAPER_PAIRS = {2: [(0, 1, 1.0)], 3: [(0, 2, 1.0), (0, 1, 1.0)], 4: [(0, 3, 1.0), (0, 2, 1.0)]}


def random_features(batch: int, channels: int, sizes, seed: int = 0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, channels, s, s, generator=g, dtype=dtype).requires_grad_() for s in sizes]


def all_present_pixels(features: torch.Tensor, labels: torch.Tensor, num_classes: int, min_views: int = 5):
    """Independent of the sampler: every pixel of every present pair, at the top-left-pixel labels."""
    h = features.shape[-1]
    scaled = labels[:, :: labels.shape[1] // h, :: labels.shape[2] // h]
    vectors, classes, counts = [], [], set()
    for b in range(labels.shape[0]):
        for c in range(num_classes):
            mask = scaled[b] == c
            if mask.sum() >= min_views:
                counts.add(int(mask.sum()))
                vectors.append(features[b].permute(1, 2, 0)[mask])
                classes += [c] * int(mask.sum())
    assert len(counts) <= 1, "the regime must have one pixel count for all present pairs"
    if not vectors:
        return features.new_zeros(0, features.shape[1]), torch.zeros(0, dtype=torch.long)
    return torch.cat(vectors), torch.tensor(classes)


def reference_from_samples(loss_fn: MSCSContrastiveLoss, samples, pairs=None):
    vectors = [None if s is None else (s.features, s.labels) for s in samples]
    return reference_total(
        vectors,
        loss_fn.scale_weights_for(len(samples)),
        PAPER_PAIRS.get(len(samples), []) if pairs is None else pairs,
        loss_fn.temperature,
        loss_fn.cross_scale_temperature,
        loss_fn.multi_scale,
    )


def assert_terms_close(terms, ref_terms):
    assert {k for k in terms if not k.startswith(("samples/", "embedding/"))} == set(ref_terms)
    for key, value in ref_terms.items():
        torch.testing.assert_close(terms[key], value.detach(), rtol=1e-10, atol=1e-12, msg=key)


# ---------------------------------------------------------------- against the reference


@pytest.mark.parametrize("sizes", [(8, 4), (8, 4, 4), (8, 4, 4, 4)], ids=["2 scales", "3 scales", "4 scales"])
def test_equal_pixel_counts_whole_pipeline_matches_reference(sizes):
    labels = cell_labels(EQUAL_CELLS)
    features = random_features(2, 6, sizes)
    loss_fn = MSCSContrastiveLoss(num_classes=3)
    loss, terms = loss_fn(features, labels)  # no shared randomness with the reference

    vectors = [all_present_pixels(f, labels, 3) for f in features]
    ref, ref_terms = reference_total(
        vectors, list(PAPER_SCALE_WEIGHTS[: len(sizes)]), PAPER_PAIRS[len(sizes)], 0.1, 0.1
    )
    torch.testing.assert_close(loss, ref, rtol=1e-10, atol=1e-12)
    assert_terms_close(terms, ref_terms)
    assert [terms[f"samples/s{s}"].item() for s in range(len(sizes))] == [len(v[1]) for v in vectors]
    grads = torch.autograd.grad(loss, features)
    ref_grads = torch.autograd.grad(ref, features)
    for g, r in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(g, r, rtol=1e-9, atol=1e-12)


def test_random_inputs_match_reference_on_the_same_samples():
    g = torch.Generator().manual_seed(1)
    labels = torch.randint(0, 3, (2, 16, 16), generator=g)
    labels[torch.rand(2, 16, 16, generator=g) < 0.2] = IGNORE
    features = random_features(2, 5, (16, 8, 4, 4), seed=2)
    loss_fn = MSCSContrastiveLoss(num_classes=3, max_views_per_class=10, temperature=0.2)

    samples = loss_fn.draw_samples(features, labels, generator=torch.Generator().manual_seed(7))
    loss, terms = loss_fn(features, labels, generator=torch.Generator().manual_seed(7))
    ref, ref_terms = reference_from_samples(loss_fn, samples)
    assert samples[0].views_per_class == 10  # the cap binds at the finest scale
    torch.testing.assert_close(loss, ref, rtol=1e-10, atol=1e-12)
    assert_terms_close(terms, ref_terms)
    for g_loss, g_ref in zip(
        torch.autograd.grad(loss, features), torch.autograd.grad(ref, features), strict=True
    ):
        torch.testing.assert_close(g_loss, g_ref, rtol=1e-9, atol=1e-12)


def test_one_image_matches_reference():
    labels = cell_labels(EQUAL_CELLS[:1])
    features = random_features(1, 4, (8, 4, 4))
    loss, _ = MSCSContrastiveLoss(num_classes=3)(features, labels)
    vectors = [all_present_pixels(f, labels, 3) for f in features]
    ref, _ = reference_total(vectors, [1.0, 0.7, 0.4], PAPER_PAIRS[3], 0.1, 0.1)
    torch.testing.assert_close(loss, ref, rtol=1e-10, atol=1e-12)


def test_empty_lowest_resolution_scale_gives_zero_terms_and_the_rest_matches_reference():
    labels = cell_labels(EQUAL_CELLS)
    features = random_features(2, 4, (8, 4, 4, 2))  # 2x2: at most 4 pixels per pair, none present
    loss, terms = MSCSContrastiveLoss(num_classes=3)(features, labels)
    assert terms["samples/s3"].item() == 0
    assert terms["ms/s3"].item() == 0 and terms["cs/s0-s3"].item() == 0
    vectors = [all_present_pixels(f, labels, 3) for f in features]
    ref, _ = reference_total(vectors, list(PAPER_SCALE_WEIGHTS), PAPER_PAIRS[4], 0.1, 0.1)
    torch.testing.assert_close(loss, ref, rtol=1e-10, atol=1e-12)
    loss.backward()
    assert torch.all(features[3].grad == 0) and features[0].grad.abs().sum() > 0


def test_class_with_one_pixel_matches_reference():
    labels = cell_labels(EQUAL_CELLS)
    labels[0, 15, 15] = 2  # class 2 in image 0: one pixel, visible at 16x16 only
    features = random_features(2, 4, (16, 8))
    loss_fn = MSCSContrastiveLoss(num_classes=3, min_views_per_class=1)
    samples = loss_fn.draw_samples(features, labels, generator=torch.Generator().manual_seed(3))
    assert samples[0].views_per_class == 1 and 2 in samples[0].labels[samples[0].index < 256].tolist()
    loss, _ = loss_fn(features, labels, generator=torch.Generator().manual_seed(3))
    ref, _ = reference_from_samples(loss_fn, samples)
    torch.testing.assert_close(loss, ref, rtol=1e-10, atol=1e-12)


def test_cross_scale_temperature_is_honoured():
    labels = cell_labels(EQUAL_CELLS)
    features = random_features(2, 4, (8, 4, 4))
    _, default = MSCSContrastiveLoss(num_classes=3)(features, labels)
    _, warmer = MSCSContrastiveLoss(num_classes=3, cross_scale_temperature=0.5)(features, labels)
    for key in ("ms/s0", "ms/s1", "ms/s2"):
        torch.testing.assert_close(warmer[key], default[key], rtol=1e-12, atol=1e-12)
    vectors = [all_present_pixels(f, labels, 3) for f in features]
    for a, c in ((0, 2), (0, 1)):
        key = f"cs/s{a}-s{c}"
        assert abs(warmer[key] - default[key]) > 1e-3
        expected = reference_infonce(*vectors[a], *vectors[c], temperature=0.5)
        torch.testing.assert_close(warmer[key], expected.detach(), rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------- edge cases: zero terms, not crashes


def test_one_class_only_gives_zero_loss_with_zero_gradients():
    labels = torch.zeros(2, 16, 16, dtype=torch.long)
    features = random_features(2, 4, (8, 4, 2))
    loss, terms = MSCSContrastiveLoss(num_classes=3)(features, labels)
    loss.backward()
    assert loss.item() == 0 and terms["samples/s0"].item() == 128
    assert all(torch.all(f.grad == 0) for f in features)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_all_ignore_batch_gives_zero_loss_that_keeps_the_graph(dtype):
    labels = torch.full((2, 16, 16), IGNORE)
    features = random_features(2, 4, (8, 4, 2, 1), dtype=dtype)
    loss, terms = MSCSContrastiveLoss(num_classes=3)(features, labels)
    assert loss.item() == 0 and loss.requires_grad
    diagnostics = {k: v for k, v in terms.items() if k.startswith("embedding/")}
    assert diagnostics and all(v.isnan() for v in diagnostics.values())  # no samples, no pairs to average
    assert all(v.item() == 0 for k, v in terms.items() if k not in diagnostics)
    loss.backward()
    assert all(f.grad is not None and torch.all(f.grad == 0) for f in features)


def test_class_with_fewer_than_five_pixels_is_excluded():
    g = torch.Generator().manual_seed(4)
    labels = torch.randint(0, 2, (2, 16, 16), generator=g)
    small = labels.clone()
    small[0, 0:3:2, 0:3:2] = 2  # 4 pixels of class 2, visible at 16x16 and 8x8
    ignored = labels.clone()
    ignored[0, 0:3:2, 0:3:2] = IGNORE
    features = random_features(2, 4, (16, 8, 4))
    loss_fn = MSCSContrastiveLoss(num_classes=3)
    samples = loss_fn.draw_samples(features, small, generator=torch.Generator().manual_seed(0))
    assert all(2 not in s.labels.tolist() for s in samples)
    with_small, _ = loss_fn(features, small, generator=torch.Generator().manual_seed(0))
    with_ignore, _ = loss_fn(features, ignored, generator=torch.Generator().manual_seed(0))
    assert with_small.item() == with_ignore.item()


def test_invalid_label_values_raise_even_where_nearest_downsampling_would_skip_them():
    labels = torch.zeros(1, 16, 16, dtype=torch.long)
    labels[0, 1, 1] = 3  # not a top-left pixel of any block
    with pytest.raises(ValueError, match="num_classes"):
        MSCSContrastiveLoss(num_classes=3)(random_features(1, 4, (8, 4)), labels)


# ---------------------------------------------------------------- configuration


def test_paper_defaults_and_scale_weight_rule():
    loss_fn = MSCSContrastiveLoss(num_classes=19)
    assert (loss_fn.temperature, loss_fn.cross_scale_temperature, loss_fn.ignore_index) == (0.1, 0.1, 255)
    assert (loss_fn.min_views_per_class, loss_fn.max_views_per_class, loss_fn.max_features_total) == (
        5,
        2500,
        10000,
    )
    assert loss_fn.scale_weights_for(4) == [1.0, 0.7, 0.4, 0.1]
    assert loss_fn.scale_weights_for(3) == [1.0, 0.7, 0.4]
    assert loss_fn.scale_weights_for(2) == [1.0, 0.7]
    with pytest.raises(ValueError, match="scale_weights"):
        loss_fn.scale_weights_for(5)
    explicit = MSCSContrastiveLoss(num_classes=19, scale_weights=[1, 1, 1, 1, 1])
    assert explicit.scale_weights_for(5) == [1.0] * 5
    with pytest.raises(ValueError, match="one weight per tapped scale"):
        explicit.scale_weights_for(4)


def test_cross_scale_pairs_follow_a4_and_accept_extra_pairs():
    loss_fn = MSCSContrastiveLoss(num_classes=3, cross_scale_weights=[0.5, 0.25])
    assert loss_fn.cross_scale_pairs_for(4) == [(0, 3, 0.5), (0, 2, 0.25)]  # w_hl, w_hm
    assert loss_fn.cross_scale_pairs_for(3) == [(0, 2, 0.5), (0, 1, 0.25)]
    assert loss_fn.cross_scale_pairs_for(2) == [(0, 1, 0.5)]  # (0, S-2) does not exist
    assert loss_fn.cross_scale_pairs_for(1) == []
    extra = MSCSContrastiveLoss(
        num_classes=3, cross_scale_pairs=[(0, -1), (1, -1)], cross_scale_weights=[1, 2]
    )
    assert extra.cross_scale_pairs_for(4) == [(0, 3, 1.0), (1, 3, 2.0)]
    assert MSCSContrastiveLoss(num_classes=3, cross_scale=False).cross_scale_pairs_for(4) == []
    with pytest.raises(ValueError, match="listed twice"):
        MSCSContrastiveLoss(num_classes=3, cross_scale_pairs=[(0, -1), (0, 2)]).cross_scale_pairs_for(3)
    with pytest.raises(ValueError, match="out of range"):
        MSCSContrastiveLoss(
            num_classes=3, cross_scale_pairs=[(0, 5)], cross_scale_weights=[1]
        ).cross_scale_pairs_for(4)


def test_extra_pair_term_matches_reference():
    labels = cell_labels(EQUAL_CELLS)
    features = random_features(2, 4, (8, 4, 4))
    pairs = [(0, -1), (1, 2)]
    loss_fn = MSCSContrastiveLoss(num_classes=3, cross_scale_pairs=pairs, cross_scale_weights=[1.0, 0.3])
    loss, terms = loss_fn(features, labels)
    vectors = [all_present_pixels(f, labels, 3) for f in features]
    ref, ref_terms = reference_total(vectors, [1.0, 0.7, 0.4], [(0, 2, 1.0), (1, 2, 0.3)], 0.1, 0.1)
    assert_terms_close(terms, ref_terms)
    torch.testing.assert_close(loss, ref, rtol=1e-10, atol=1e-12)


def test_loss_is_the_weighted_sum_of_its_terms_without_the_training_weight():
    labels = cell_labels(EQUAL_CELLS)
    features = random_features(2, 4, (8, 4, 4, 4))
    loss, terms = MSCSContrastiveLoss(num_classes=3, scale_weights=[1.0, 0.5, 0.25, 2.0])(features, labels)
    expected = (
        (terms["ms/s0"] + 0.5 * terms["ms/s1"] + 0.25 * terms["ms/s2"] + 2.0 * terms["ms/s3"])
        + terms["cs/s0-s3"]
        + terms["cs/s0-s2"]
    )
    torch.testing.assert_close(loss.detach(), expected)
    assert set(terms) == {
        *(f"ms/s{s}" for s in range(4)),
        *(f"samples/s{s}" for s in range(4)),
        "cs/s0-s3",
        "cs/s0-s2",
        *(f"embedding/s{s}/{kind}" for s in range(4) for kind in ("same", "different", "gap")),
        "embedding/s0-s3/same",
        "embedding/s0-s2/same",
    }


def test_multi_scale_and_cross_scale_switches():
    labels = cell_labels(EQUAL_CELLS)
    features = random_features(2, 4, (8, 4, 4))
    _, only_ms = MSCSContrastiveLoss(num_classes=3, cross_scale=False)(features, labels)
    _, only_cs = MSCSContrastiveLoss(num_classes=3, multi_scale=False)(features, labels)
    assert (
        not any(k.startswith("cs/") for k in only_ms)
        and len([k for k in only_ms if k.startswith("ms/")]) == 3
    )
    assert not any(k.startswith("ms/") for k in only_cs) and {"cs/s0-s2", "cs/s0-s1"} <= set(only_cs)
    with pytest.raises(ValueError, match="multi_scale"):
        MSCSContrastiveLoss(num_classes=3, multi_scale=False, cross_scale=False)
    with pytest.raises(ValueError, match="no contrastive term"):
        MSCSContrastiveLoss(num_classes=3, multi_scale=False)(features[:1], labels)


@pytest.mark.parametrize("detach", [False, True])
def test_detach_low_res_stops_only_the_cross_scale_gradient(detach):
    labels = cell_labels(EQUAL_CELLS)
    features = random_features(2, 4, (8, 4))
    loss, _ = MSCSContrastiveLoss(num_classes=3, multi_scale=False, detach_low_res=detach)(features, labels)
    loss.backward()
    assert features[0].grad.abs().sum() > 0
    low_res_grad = features[1].grad
    assert (low_res_grad is None or torch.all(low_res_grad == 0)) == detach


def test_global_budget_without_distributed_is_per_device():
    labels = cell_labels(EQUAL_CELLS)
    features = random_features(2, 4, (8, 4, 4))
    per_device, _ = MSCSContrastiveLoss(num_classes=3)(features, labels, torch.Generator().manual_seed(0))
    global_budget, _ = MSCSContrastiveLoss(num_classes=3, budget="global")(
        features, labels, torch.Generator().manual_seed(0)
    )
    assert per_device.item() == global_budget.item()


def test_majority_label_downsampling_option():
    labels = cell_labels(EQUAL_CELLS)
    features = random_features(2, 4, (8, 4, 4))
    # labels constant on every block: majority and top-left agree
    nearest, _ = MSCSContrastiveLoss(num_classes=3)(features, labels)
    majority, _ = MSCSContrastiveLoss(num_classes=3, label_downsampling="majority")(features, labels)
    torch.testing.assert_close(nearest, majority)
    # class 0 on the right half, but the top-left pixel of each of its 4x4 blocks is ignore: only the
    # majority vote sees class 0 at the 4x4 scale
    labels = torch.ones(1, 16, 16, dtype=torch.long)
    labels[0, :, 8:] = 0
    labels[0, ::4, 8::4] = IGNORE
    features = random_features(1, 4, (8, 4))
    for mode, expected in (("nearest", {1}), ("majority", {0, 1})):
        samples = MSCSContrastiveLoss(num_classes=3, label_downsampling=mode).draw_samples(features, labels)
        assert set(samples[1].labels.tolist()) == expected, mode


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_classes": 0}, "num_classes must be at least 1, got 0"),
        ({"num_classes": 3, "temperature": 0.0}, "temperature and cross_scale_temperature must be positive"),
        (
            {"num_classes": 3, "cross_scale_temperature": -1.0},
            "temperature and cross_scale_temperature must be positive",
        ),
        ({"num_classes": 3, "cross_scale_weights": [1.0]}, "cross_scale_weights has 1 entries for 2 "),
        ({"num_classes": 3, "min_views_per_class": 0}, "min/max views, max_features_total and block_size"),
        (
            {"num_classes": 3, "label_downsampling": "bilinear"},
            "label_downsampling must be one of nearest, majority, got 'bilinear'",
        ),
        ({"num_classes": 3, "budget": "everything"}, "budget must be one of per_device, global, got"),
        # moved here from test_contrastive_triton.py, which skips without Triton
        (
            {"num_classes": 2, "matmul_precision": "half"},
            "matmul_precision must be one of auto, highest, tf32, bf16, got 'half'",
        ),
        ({"num_classes": 2, "kernel": "cuda"}, "kernel must be one of auto, blockwise, triton, got 'cuda'"),
    ],
)
def test_invalid_configuration_raises(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        MSCSContrastiveLoss(**kwargs)


def test_inputs_are_validated():
    loss_fn = MSCSContrastiveLoss(num_classes=3)
    with pytest.raises(ValueError, match="at least one"):
        loss_fn([], torch.zeros(1, 4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="B, H, W"):
        loss_fn([torch.randn(1, 2, 4, 4)], torch.zeros(1, 1, 4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="feature map 0"):
        loss_fn([torch.randn(2, 2, 4, 4)], torch.zeros(1, 4, 4, dtype=torch.long))


# ---------------------------------------------------------------- precision: float32 math for any input


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_heads_and_loss_under_autocast_match_float32(dtype):
    torch.manual_seed(0)
    labels = cell_labels(EQUAL_CELLS)
    taps = [torch.randn(2, c, s, s) for c, s in ((8, 8), (16, 4))]
    heads = ProjectionHeads([8, 16], dim=16).eval()
    loss_fn = MSCSContrastiveLoss(num_classes=3)
    exact, _ = loss_fn(heads(taps), labels)
    with torch.autocast("cpu", dtype=dtype):
        projected = heads(taps)
        assert projected[0].dtype == dtype
        approx, terms = loss_fn(projected, labels)
    assert approx.dtype == torch.float32 and all(torch.isfinite(v) for v in terms.values())
    torch.testing.assert_close(approx, exact, rtol=2e-2, atol=2e-2)
    approx.backward()
    assert all(torch.isfinite(p.grad).all() for p in heads.parameters())
