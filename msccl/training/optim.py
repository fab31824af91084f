"""Optimiser parameter groups and the per-iteration poly schedule with linear warm-up (docs/method.md C3)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from torch import nn

__all__ = [
    "parameter_groups",
    "poly_with_warmup",
    "NO_DECAY_KEYWORDS",
    "OFFICIAL_NO_DECAY_NAMES",
    "NO_DECAY_RULES",
]

NO_DECAY_KEYWORDS = ("pos_embed", "absolute_pos_embed", "relative_position_bias_table", "cls_token")
"""Parameter-name fragments of position tables, which the Swin recipe keeps out of weight decay."""

OFFICIAL_NO_DECAY_NAMES = ("absolute_pos_embed", "norm", "relative_position_bias_table")
"""The authors' Swin recipe (`opt_keys` in configs/ADE20K/upnswin_contrastive_ADE20K.json): a parameter whose
name contains one of these gets no weight decay; every other one, BatchNorms and biases included, does."""


def _by_shape(name: str, owner: nn.Module, param: nn.Parameter) -> bool:
    return param.ndim <= 1 or any(k in name for k in NO_DECAY_KEYWORDS)


def _by_official_names(name: str, owner: nn.Module, param: nn.Parameter) -> bool:
    # In the authors' Swin-UPerNet "norm" names exactly the LayerNorms (Swin's and its output norms); msccl's
    # modules are named otherwise (smp's `conv_norm_relu` convolutions contain "norm", its BatchNorms are
    # numbered), so the name list is applied to what it selects there: LayerNorms and the position tables.
    return isinstance(owner, nn.LayerNorm) or any(k in name for k in OFFICIAL_NO_DECAY_NAMES if k != "norm")


NO_DECAY_RULES: dict[str, Callable[[str, nn.Module, nn.Parameter], bool]] = {
    "shape": _by_shape,
    "official": _by_official_names,
}
"""Which parameters skip weight decay, by rule name, given (parameter name, owning module, parameter):
"shape" = every parameter with at most one dimension (norm weights, biases) and position tables;
"official" = what the authors' name list selects in their Swin-UPerNet: LayerNorms and position tables
(BatchNorms and biases are decayed)."""


def parameter_groups(
    modules: Iterable[nn.Module], decay_norms_and_biases: bool = True, no_decay_rule: str = "shape"
) -> list[dict]:
    """One group, or two where the parameters `NO_DECAY_RULES[no_decay_rule]` picks get `weight_decay = 0`.

    The decayed group carries no `weight_decay` key, so it takes the optimiser's configured value.
    """
    if no_decay_rule not in NO_DECAY_RULES:
        raise ValueError(f"no_decay_rule={no_decay_rule!r}: choose one of {sorted(NO_DECAY_RULES)}")
    params = [
        (f"{owner_name}.{name}".lstrip("."), owner, p)
        for module in modules
        for owner_name, owner in module.named_modules()
        for name, p in owner.named_parameters(recurse=False)
        if p.requires_grad
    ]
    if decay_norms_and_biases:
        return [{"params": [p for _, _, p in params]}]
    exempt = NO_DECAY_RULES[no_decay_rule]
    decay = [p for name, owner, p in params if not exempt(name, owner, p)]
    no_decay = [p for name, owner, p in params if exempt(name, owner, p)]
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
