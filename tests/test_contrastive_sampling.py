"""Label downsampling and the class-balanced sampler (docs/method.md A2, B1, B4, B7)."""

from __future__ import annotations

import itertools
from collections import Counter

import pytest
import torch

from msccl.contrastive import check_labels, downsample_labels, sample_class_balanced, views_per_pair

IGNORE = 255


def position_features(batch: int, h: int, w: int, channels: int = 3) -> torch.Tensor:
    """Features that encode their own position: channel 0 holds the flat index b*h*w + y*w + x."""
    flat = torch.arange(batch * h * w, dtype=torch.float64).view(batch, 1, h, w)
    return torch.cat([flat, torch.randn(batch, channels - 1, h, w, dtype=torch.float64)], dim=1)


def random_labels(batch: int, h: int, w: int, num_classes: int, seed: int, ignore_fraction: float = 0.2):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, num_classes, (batch, h, w), generator=g)
    labels[torch.rand(batch, h, w, generator=g) < ignore_fraction] = IGNORE
    return labels


def pair_counts(labels: torch.Tensor, num_classes: int) -> Counter:
    counts: Counter = Counter()
    for b in range(labels.shape[0]):
        for value in labels[b].flatten().tolist():
            if value != IGNORE:
                counts[b, value] += 1
    return counts


# ---------------------------------------------------------------- downsampling


@pytest.mark.parametrize("size", [(4, 4), (2, 4), (8, 2), (1, 1)])
def test_nearest_downsampling_is_the_top_left_pixel_of_each_block(size):
    labels = torch.randint(0, 200, (2, 8, 8))
    h, w = size
    expected = labels[:, :: 8 // h, :: 8 // w]
    assert torch.equal(downsample_labels(labels, size), expected)


def test_downsampling_to_the_same_size_is_the_identity():
    labels = torch.randint(0, 5, (2, 6, 6))
    assert downsample_labels(labels, (6, 6)) is labels
    assert downsample_labels(labels, (6, 6), "majority", num_classes=5) is labels


def test_majority_downsampling_rules():
    # One 2x2 block per case (class ids 0..3, ignore 255):
    blocks = {
        "all ignore -> ignore": ([IGNORE] * 4, IGNORE),
        "mostly ignore -> ignore": ([IGNORE, IGNORE, IGNORE, 2], IGNORE),
        "ignore ties a class -> the class": ([IGNORE, 3, IGNORE, 3], 3),
        "ignore is most frequent among three values -> ignore": ([IGNORE, IGNORE, 1, 2], IGNORE),
        "two classes tie -> the smaller id": ([3, 1, 1, 3], 1),
        "plain majority": ([2, 0, 2, 2], 2),
        "majority beats ignore": ([0, 0, 0, IGNORE], 0),
    }
    labels = torch.zeros(1, 2, 2 * len(blocks), dtype=torch.long)
    for i, (values, _) in enumerate(blocks.values()):
        labels[0, :, 2 * i : 2 * i + 2] = torch.tensor(values).view(2, 2)
    out = downsample_labels(labels, (1, len(blocks)), "majority", num_classes=4, ignore_index=IGNORE)
    got = dict(zip(blocks, out[0, 0].tolist(), strict=True))
    assert got == {name: expected for name, (_, expected) in blocks.items()}


def test_majority_downsampling_matches_a_brute_force_vote():
    labels = random_labels(3, 12, 8, num_classes=4, seed=0, ignore_fraction=0.3)
    out = downsample_labels(labels, (3, 2), "majority", num_classes=4)
    for b, i, j in itertools.product(range(3), range(3), range(2)):
        block = labels[b, 4 * i : 4 * i + 4, 4 * j : 4 * j + 4].flatten().tolist()
        counts = Counter(block)
        best = max(counts.values())
        # ties: the smallest real class, ignore only when no class reaches the top count
        winners = sorted(v for v, n in counts.items() if n == best and v != IGNORE)
        assert out[b, i, j].item() == (winners[0] if winners else IGNORE)


def test_majority_downsampling_needs_divisible_sizes():
    with pytest.raises(ValueError, match="multiple"):
        downsample_labels(torch.zeros(1, 10, 10, dtype=torch.long), (3, 3), "majority", num_classes=2)


def test_downsampling_refuses_an_unknown_mode():
    with pytest.raises(ValueError, match="label_downsampling must be one of nearest, majority, got 'bilin"):
        downsample_labels(torch.zeros(1, 8, 8, dtype=torch.long), (4, 4), "bilinear")


# ---------------------------------------------------------------- the V rule (docs/method.md A2.4)


def test_views_per_pair_rule_branches():
    assert views_per_pair(0, 10**9) == 0  # no present pair
    assert views_per_pair(3, 7) == 7  # the smallest present pair
    assert views_per_pair(2, 4000) == 2500  # capped per class
    assert views_per_pair(4, 4000) == 2500  # 4 * 2500 = 10000: not over the total
    assert views_per_pair(5, 4000) == 2000  # total budget: 10000 // 5
    assert views_per_pair(3, 4000, max_views_per_class=100, max_features_total=250) == 83
    assert views_per_pair(20000, 50) == 0  # more pairs than the total budget


def test_sampler_takes_the_smallest_present_pair_count():
    labels = torch.full((2, 8, 8), IGNORE)
    labels[0, :2, :] = 0  # 16 pixels
    labels[0, 2:3, :7] = 1  # 7 pixels
    labels[1, :, :] = 2  # 64 pixels
    labels[1, 0, :4] = 3  # 4 pixels: not present (< 5), so not the minimum either
    sample = sample_class_balanced(position_features(2, 8, 8), labels, num_classes=4)
    assert sample.views_per_class == 7
    assert sample.num_pairs == 3
    assert sorted(Counter(sample.labels.tolist()).values()) == [7, 7, 7]
    assert 3 not in sample.labels.tolist()


def test_sampler_caps_views_per_class_at_the_default_2500():
    labels = torch.zeros(2, 64, 100, dtype=torch.long)
    labels[:, :, 50:] = 1  # four pairs of 3200 pixels
    sample = sample_class_balanced(torch.zeros(2, 1, 64, 100), labels, num_classes=2)
    assert (sample.views_per_class, sample.num_pairs, sample.labels.numel()) == (2500, 4, 10000)


def test_sampler_respects_the_default_total_budget():
    labels = torch.zeros(5, 40, 60, dtype=torch.long)  # five pairs of 2400 pixels: 5 * 2400 > 10000
    sample = sample_class_balanced(torch.zeros(5, 1, 40, 60), labels, num_classes=1)
    assert (sample.views_per_class, sample.labels.numel()) == (2000, 10000)


# ---------------------------------------------------------------- sampler properties


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_sample_is_a_distinct_pixel_of_its_label_and_every_present_pair_gives_v(seed):
    num_classes, min_views = 5, 5
    labels = random_labels(3, 10, 12, num_classes, seed)
    labels[1, :, 6:] = IGNORE
    features = position_features(3, 10, 12)
    g = torch.Generator().manual_seed(seed)
    sample = sample_class_balanced(features, labels, num_classes, min_views_per_class=min_views, generator=g)

    # the sampled feature is the feature of the pixel at sample.index, which carries sample.labels
    assert torch.equal(sample.features[:, 0].long(), sample.index)
    assert torch.equal(labels.flatten()[sample.index], sample.labels)
    assert torch.equal(sample.features, features.flatten(2)[sample.index // 120, :, sample.index % 120])
    assert IGNORE not in labels.flatten()[sample.index].tolist()
    # without replacement
    assert sample.index.unique().numel() == sample.index.numel()
    # exactly V samples from every present pair, none from any other
    counts = pair_counts(labels, num_classes)
    present = {pair: n for pair, n in counts.items() if n >= min_views}
    assert sample.views_per_class == views_per_pair(len(present), min(present.values()))
    drawn = Counter(zip((sample.index // 120).tolist(), sample.labels.tolist(), strict=True))
    assert drawn == {pair: sample.views_per_class for pair in present}


def test_the_last_class_id_is_sampled():
    # docs/method.md B4: the original drops the last class id; every real class must be sampled here.
    labels = torch.full((1, 4, 4), 7)
    labels[0, :2] = 0
    sample = sample_class_balanced(torch.randn(1, 2, 4, 4), labels, num_classes=8)
    assert set(sample.labels.tolist()) == {0, 7}


def test_sampling_is_uniform_over_subsets():
    # 2000 images, each with a pair of 7 pixels and a pair of 5: V = 5, so every image draws one of the
    # C(7, 5) = 21 subsets of the larger pair; all subsets must be equally likely.
    images = 2000
    labels = torch.full((images, 3, 4), IGNORE)
    labels.view(images, -1)[:, :7] = 0
    labels.view(images, -1)[:, 7:] = 1
    g = torch.Generator().manual_seed(1234)
    sample = sample_class_balanced(
        torch.zeros(images, 1, 3, 4), labels, num_classes=2, max_features_total=10**6, generator=g
    )
    assert sample.views_per_class == 5
    chosen = sample.index[sample.labels == 0].view(images, 5) % 12
    subsets = Counter(tuple(sorted(row)) for row in chosen.tolist())
    assert set(subsets) == set(itertools.combinations(range(7), 5))
    expected = images / 21
    chi2 = sum((n - expected) ** 2 / expected for n in subsets.values())
    assert chi2 < 45.3  # 99.9% quantile of chi-square with 20 degrees of freedom


def test_generator_makes_draws_reproducible():
    labels = random_labels(2, 16, 16, 3, seed=3)
    features = torch.randn(2, 4, 16, 16)
    draw = [
        sample_class_balanced(features, labels, 3, generator=torch.Generator().manual_seed(s)).index
        for s in (5, 5, 6)
    ]
    assert torch.equal(draw[0], draw[1])
    assert not torch.equal(draw[0], draw[2])


def test_gradient_flows_through_one_gather_to_the_sampled_pixels_only():
    labels = random_labels(2, 6, 6, 3, seed=4)
    features = torch.randn(2, 4, 6, 6, requires_grad=True)
    sample = sample_class_balanced(features, labels, 3)
    assert type(sample.features.grad_fn).__name__ == "IndexBackward0"
    sample.features.sum().backward()
    hit = torch.zeros(2 * 36, dtype=torch.bool)
    hit[sample.index] = True
    grad = features.grad.permute(0, 2, 3, 1).reshape(-1, 4)
    assert torch.all(grad[hit] == 1) and torch.all(grad[~hit] == 0)


def test_no_present_pair_gives_an_empty_sample_that_keeps_the_graph():
    labels = torch.full((2, 4, 4), IGNORE)
    labels[0, 0, :4] = 1  # 4 pixels: below min_views_per_class
    features = torch.randn(2, 3, 4, 4, requires_grad=True)
    sample = sample_class_balanced(features, labels, 2)
    assert sample.features.shape == (0, 3) and sample.labels.numel() == 0
    assert sample.features.requires_grad


@pytest.mark.parametrize("bad", [2, -1, 254])
def test_labels_outside_the_classes_raise(bad):
    labels = torch.zeros(1, 4, 4, dtype=torch.long)
    labels[0, 0, 0] = bad
    with pytest.raises(ValueError, match="ignore_index=255"):
        sample_class_balanced(torch.randn(1, 2, 4, 4), labels, num_classes=2)
    with pytest.raises(ValueError, match="outside"):
        check_labels(labels, num_classes=2)


def test_custom_ignore_index():
    labels = torch.full((1, 4, 4), -1)
    labels[0, :2] = 0
    sample = sample_class_balanced(torch.randn(1, 2, 4, 4), labels, num_classes=1, ignore_index=-1)
    assert sample.labels.tolist() == [0] * 8
    check_labels(labels, num_classes=1, ignore_index=-1)


def test_labels_must_match_the_feature_map():
    with pytest.raises(ValueError, match="do not match"):
        sample_class_balanced(torch.randn(1, 2, 4, 4), torch.zeros(1, 8, 8, dtype=torch.long), 2)
