"""Projection heads (docs/method.md A1)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from msccl.contrastive import ProjectionHead, ProjectionHeads


def test_head_is_conv_relu_bn_conv_with_the_paper_biases():
    head = ProjectionHead(48)
    assert [type(m) for m in head] == [nn.Conv2d, nn.ReLU, nn.BatchNorm2d, nn.Conv2d]
    first, _, norm, last = head
    assert (first.in_channels, first.out_channels, first.kernel_size, first.bias) == (48, 48, (1, 1), None)
    assert norm.num_features == 48
    assert (last.in_channels, last.out_channels, last.kernel_size) == (48, 256, (1, 1))
    assert last.bias is not None


def test_heads_project_every_scale_to_the_same_dimension():
    heads = ProjectionHeads([4, 8, 16], dim=32)
    taps = [torch.randn(2, c, s, s) for c, s in ((4, 16), (8, 8), (16, 4))]
    out = heads(taps)
    assert [tuple(x.shape) for x in out] == [(2, 32, 16, 16), (2, 32, 8, 8), (2, 32, 4, 4)]
    sum(x.sum() for x in out).backward()
    assert all(p.grad is not None for p in heads.parameters())


def test_heads_check_their_inputs():
    with pytest.raises(ValueError, match="at least one"):
        ProjectionHeads([])
    with pytest.raises(ValueError, match="2 feature maps for 3"):
        ProjectionHeads([4, 8, 16])([torch.randn(1, 4, 2, 2), torch.randn(1, 8, 2, 2)])
