"""Optimiser parameter groups and the per-iteration poly schedule with linear warm-up (docs/method.md C3)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from torch import nn

__all__ = ["parameter_groups", "poly_with_warmup", "NO_DECAY_KEYWORDS"]

NO_DECAY_KEYWORDS = ("pos_embed", "absolute_pos_embed", "relative_position_bias_table", "cls_token")
"""Parameter-name fragments of position tables, which the Swin recipe keeps out of weight decay."""


def parameter_groups(modules: Iterable[nn.Module], decay_norms_and_biases: bool = True) -> list[dict]:
    """One group, or two where norms, biases and position tables get `weight_decay = 0`.

    The decayed group carries no `weight_decay` key, so it takes the optimiser's configured value.
    """
    params = [(name, p) for module in modules for name, p in module.named_parameters() if p.requires_grad]
    if decay_norms_and_biases:
        return [{"params": [p for _, p in params]}]
    no_decay = [p for name, p in params if p.ndim <= 1 or any(k in name for k in NO_DECAY_KEYWORDS)]
    no_decay_ids = {id(p) for p in no_decay}
    decay = [p for _, p in params if id(p) not in no_decay_ids]
    return [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]


def poly_with_warmup(
    total_steps: int, power: float = 0.9, warmup_steps: int = 0, warmup_start_factor: float = 1e-6
) -> Callable[[int], float]:
    """LR factor per optimiser step: linear warm-up from `warmup_start_factor`, then (1 - t)^power."""
    if total_steps <= 0:
        raise ValueError(f"the poly schedule needs a positive number of steps, got {total_steps}")

    def factor(step: int) -> float:
        if step < warmup_steps:
            return warmup_start_factor + (1 - warmup_start_factor) * step / warmup_steps
        progress = min(step, total_steps) / total_steps
        return (1 - progress) ** power

    return factor
