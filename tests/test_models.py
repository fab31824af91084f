from __future__ import annotations

import pytest
import torch

from msccl import models


@pytest.mark.parametrize("name", models.available())
def test_every_registered_architecture_honours_the_interface(name):
    net = models.build(name, num_classes=3)
    x = torch.randn(2, 3, 64, 64)
    out = net(x, return_taps=True)
    assert out.logits.shape == (2, 3, 64, 64)
    assert len(out.taps) == len(net.taps) > 0
    for tap, feature in zip(net.taps, out.taps, strict=True):
        assert feature.shape == (2, tap.channels, 64 // tap.stride, 64 // tap.stride)
    assert net(x).taps == []


def test_registry_lookup_is_case_insensitive_and_names_alternatives():
    assert models.get("fpn") is models.FPN
    with pytest.raises(KeyError, match="available"):
        models.get("nonexistent")
