"""Host synchronisations of one training step with the contrastive loss (issue 19 item 4).

On a GPU every read of a device value on the host (``.item()``, ``int(t)``, ``.tolist()``, ``.cpu()``...)
waits for all queued work. Counted here on the CPU by wrapping those Tensor methods during one
``training_step`` + backward of a tiny 4-scale model, with where each read comes from. Allowed: the
sampler's one read of the pair counts of all scales together (V fixes the output shapes, docs/method.md
B1) and, on the blockwise path, one read of the sorted labels per InfoNCE term (its block plan; the
Triton kernels need none). The label check and the embedding diagnostics read nothing: before, they read
once per step and once per scale, and the sampler once per scale (15 reads in this step, now 7).
Lightning's own conversion of logged values happens every ``log_every_n_steps``, outside the step.
"""

from __future__ import annotations

import traceback
from collections import Counter
from contextlib import contextmanager

import pytest
import torch

from tests.test_training_contrastive import _batch, _module

READS = ("item", "__int__", "__index__", "__float__", "__bool__", "tolist", "cpu", "numpy")


@contextmanager
def counted_reads():
    """Counter of (method, msccl function) of every host read of a tensor inside the block."""
    reads: Counter = Counter()
    originals = {name: getattr(torch.Tensor, name) for name in READS}

    def wrap(name):
        def read(self, *args, **kwargs):
            frames = [f for f in traceback.extract_stack()[:-1] if "/msccl/" in f.filename]
            reads[name, frames[-1].name if frames else "outside msccl"] += 1
            return originals[name](self, *args, **kwargs)

        return read

    try:
        for name in READS:
            setattr(torch.Tensor, name, wrap(name))
        yield reads
    finally:
        for name, method in originals.items():
            setattr(torch.Tensor, name, method)


@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")
def test_one_training_step_reads_the_device_once_plus_once_per_blockwise_term():
    torch.manual_seed(0)
    module = _module()
    batch = _batch(size=64, count=2)
    with counted_reads() as reads:
        loss = module.training_step(batch, 0)
        loss.backward()
    # _class_runs turns the labels already copied by `cpu` into Python ints: host work, no device read.
    device_reads = {key: n for key, n in reads.items() if key[1] != "_class_runs"}
    terms = 4 + 2  # 4 multi-scale terms and the cross-scale pairs (0, 3), (0, 2)
    assert device_reads == {("tolist", "sample_scales"): 1, ("cpu", "_loss_and_grads"): terms}, reads


def test_sampling_all_scales_at_once_draws_what_one_scale_at_a_time_draws():
    from msccl.contrastive import sample_class_balanced
    from msccl.contrastive.sampling import sample_scales

    g = torch.Generator().manual_seed(1)
    features = [torch.randn(2, 8, 16, 16, generator=g), torch.randn(2, 8, 8, 8, generator=g)]
    labels = [torch.randint(0, 4, (2, 16, 16), generator=g), torch.randint(0, 4, (2, 8, 8), generator=g)]
    labels[1][0, :4] = 255  # some ignore
    settings = {"min_views_per_class": 2, "max_features_total": 30}
    together = sample_scales(features, labels, 4, generator=torch.Generator().manual_seed(0), **settings)
    draw = torch.Generator().manual_seed(0)  # scales draw from it in order
    for x, y, sample in zip(features, labels, together, strict=True):
        alone = sample_class_balanced(x, y, 4, generator=draw, **settings)
        assert sample.views_per_class == alone.views_per_class > 0 and sample.num_pairs == alone.num_pairs
        assert torch.equal(sample.index, alone.index) and torch.equal(sample.features, alone.features)
    bad = labels[0].clone()
    bad[0, 0, 0] = 9
    with pytest.raises(ValueError, match=r"values \[9\] outside \[0, 4\)"):
        sample_scales(features, labels, 4, checked_labels=bad, **settings)
