"""The paper's recipes in conf/experiments/ (docs/method.md C3): each recipe, task file and CE-only twin
parses with the recipe's settings (the twin differing only in the loss and run directory), fails offline
with a clear message for its ImageNet weights, and builds its network at full size and trains one step on
the CPU on inputs where the sampler draws at every scale, so every contrastive term must be non-zero.

Only engineering settings (CPU, one device, no progress bar), the data root (a small tree in the dataset's
own layout; for CaDIS 4 of its training videos), the crop, the batch (2), the evaluation window and
`pretrained` are overridden: network, losses, optimiser, schedule, contrastive loss and evaluation
protocol come from the files.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch import Callback

from msccl.cli import build_cli
from msccl.contrastive import MSCSContrastiveLoss
from msccl.data.cadis import CADIS_VIDEO_SPLITS
from msccl.models import PretrainedWeightsNotFound
from tests.conftest import REPO
from tests.dataset_trees import ade20k_tree, cadis_tree, cityscapes_tree
from tests.test_model_weights import empty_caches  # noqa: F401  (fixture)

EXPERIMENTS = REPO / "conf" / "experiments"
CPU = [
    "--trainer.accelerator=cpu",
    "--trainer.devices=1",
    "--trainer.strategy=auto",
    "--trainer.sync_batchnorm=false",  # raises on CPU (docs/pitfalls.md); the configs turn it on for GPUs
    "--trainer.num_sanity_val_steps=0",
    "--trainer.limit_val_batches=1",
    "--trainer.limit_test_batches=1",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
    "--data.init_args.num_workers=0",
    "--model.init_args.net.init_args.pretrained=false",
]
# docs/method.md C3: the paper's augmentation, which the experiments take from the data modules' defaults
PAPER_AUGMENTATION = {
    "scale_range": (0.5, 2.0),
    "aspect_range": (0.9, 1.1),
    "max_class_ratio": 0.75,
    "crop_attempts": 10,
    "flip_probability": 0.5,
    "colour_jitter": (2 / 3, 1.5),
    "hue_shift": 0.05,
}
CITYSCAPES_CLASS_WEIGHTS = [
    0.8373, 0.918, 0.866, 1.0345, 1.0166, 0.9969, 0.9754, 1.0489, 0.8786, 1.0023,
    0.9539, 0.9843, 1.1116, 0.9037, 1.0865, 1.0955, 1.0865, 1.1529, 1.0507,
]  # fmt: skip


@dataclass(frozen=True)
class Recipe:
    """What docs/method.md C3 (or the config header, where the paper released nothing) says a run is."""

    file: str  # in conf/experiments/
    tree: Callable[[Path], object]  # writes a tiny dataset tree in the publisher's layout
    data_class: str
    num_classes: int
    global_batch: int
    crop: tuple[int, int]
    optimizer: type[torch.optim.Optimizer]
    optimizer_settings: dict
    iterations: int
    poly_power: float
    taps: list[tuple[int, int]]  # (channels, stride), highest resolution first
    min_parameters_m: float  # full size, not a small preset
    evaluation: dict
    warmup_steps: int = 0
    class_weights: list[float] | None = None
    extra: dict = field(default_factory=dict)  # further `data.init_args` / `net.init_args` expectations


HRNET_W48_TAPS = [(48, 4), (96, 8), (192, 16), (384, 32)]
CITYSCAPES_TEST = {
    "mode": "sliding",
    "crop": (512, 1024),
    "scales": (0.5, 0.75, 1.0, 1.25, 1.5, 1.75),
    "flip": True,
}
ADE20K_EVALUATION = {
    "mode": "sliding",
    "crop": (512, 512),
    "scales": (1.0,),
    "flip": False,
    "during_fit": True,
}


CITYSCAPES = dict(
    tree=cityscapes_tree, data_class="Cityscapes", num_classes=19, global_batch=12, crop=(512, 1024),
    optimizer=torch.optim.SGD, optimizer_settings={"lr": 0.01, "momentum": 0.9, "weight_decay": 5e-4},
    iterations=120_000, poly_power=0.9, evaluation=CITYSCAPES_TEST, class_weights=CITYSCAPES_CLASS_WEIGHTS,
)  # fmt: skip
OCRNET_SGD = dict(
    optimizer=torch.optim.SGD, optimizer_settings={"lr": 0.02, "momentum": 0.9, "weight_decay": 1e-4}
)
ADE20K = dict(tree=ade20k_tree, data_class="ADE20K", num_classes=150, global_batch=16, crop=(512, 512))


def _cadis(task: int) -> Recipe:
    return Recipe(
        file=f"cadis_ocrnet_hrnet_w48{f'_task{task}' if task > 1 else ''}.yaml",
        tree=cadis_tree, data_class="CaDIS",
        num_classes={1: 8, 2: 17, 3: 25}[task], global_batch=16, crop=(512, 512), **OCRNET_SGD,
        iterations=50_000, poly_power=0.9, taps=HRNET_W48_TAPS, min_parameters_m=60,
        evaluation={"mode": "whole", "scales": (1.0,), "flip": False},
        extra={"task": task, "repeat_factor_threshold": 0.15, "test_split": "test"},
    )  # fmt: skip


RECIPES: dict[str, Recipe] = {
    "cityscapes_hrnet_w48": Recipe(
        file="cityscapes_hrnet_w48.yaml", **CITYSCAPES, taps=HRNET_W48_TAPS, min_parameters_m=60,
        extra={"test_split": "val"},
    ),
    "cityscapes_deeplabv3_r101": Recipe(
        file="cityscapes_deeplabv3_r101.yaml", **CITYSCAPES, taps=[(256, 4), (1024, 8), (2048, 8)],
        min_parameters_m=55, extra={"output_stride": 8},
    ),
    "ade20k_ocrnet_hrnet_w48": Recipe(
        file="ade20k_ocrnet_hrnet_w48.yaml", **ADE20K, **OCRNET_SGD, iterations=150_000, poly_power=0.9,
        taps=HRNET_W48_TAPS, min_parameters_m=65, evaluation=ADE20K_EVALUATION,
    ),
    "ade20k_upernet_swin_t": Recipe(
        file="ade20k_upernet_swin_t.yaml", **ADE20K, optimizer=torch.optim.AdamW,
        optimizer_settings={"lr": 6e-5, "weight_decay": 0.01, "betas": (0.9, 0.999)}, iterations=160_000,
        poly_power=1.0, warmup_steps=1500, taps=[(512, s) for s in (4, 8, 16, 32)], min_parameters_m=55,
        evaluation=ADE20K_EVALUATION,
        extra={"encoder_kwargs": {"img_size": 512, "dynamic_img_size": True, "drop_path_rate": 0.3}},
    ),
    "cadis_ocrnet_hrnet_w48": _cadis(1),
    "cadis_ocrnet_hrnet_w48_task2": _cadis(2),
    "cadis_ocrnet_hrnet_w48_task3": _cadis(3),
}  # fmt: skip


def _config_args(name: str, ce_only: bool) -> list[str]:
    """A recipe (or its twin) is one file: it includes its bases itself (`config:` at its top)."""
    return [f"--config={EXPERIMENTS / ('ce_only/' if ce_only else '') / RECIPES[name].file}"]


def _tuples(value):
    return tuple(value) if isinstance(value, list) else value


def _parse(args: list[str], monkeypatch: pytest.MonkeyPatch) -> dict:
    """The composed config as LightningCLI resolves it, nothing instantiated."""
    from msccl.cli import MscclCLI

    monkeypatch.setattr(MscclCLI, "instantiate_classes", lambda self: None)
    config = build_cli(args, run=False).config.as_dict()
    config.pop("config", None)
    return config


def test_every_file_in_conf_experiments_is_tested():
    files = {str(p.relative_to(EXPERIMENTS)) for p in EXPERIMENTS.rglob("*.yaml")}
    tested = {recipe.file for recipe in RECIPES.values()} | {f"ce_only/{r.file}" for r in RECIPES.values()}
    tested |= {f"pixel_contrast/{RECIPES[name].file}" for name in PIXEL_CONTRAST_TWINS}
    assert files == tested | {"_base.yaml"}  # the shared base, in every recipe's chain


@pytest.mark.parametrize("name", ["cityscapes_hrnet_w48", "cadis_ocrnet_hrnet_w48_task2"])
def test_a_twin_or_task_file_given_after_its_recipe_composes_as_alone(name, in_tmp_dir, monkeypatch):
    """The older two-file commands (`--config recipe --config twin`) still give the same run."""
    chain = [f"--config={EXPERIMENTS / 'cadis_ocrnet_hrnet_w48.yaml'}"] if "task" in name else []
    chain += [*_config_args(name, ce_only=False), *_config_args(name, ce_only=True)]
    root = "--data.init_args.root=/nowhere"
    assert _parse([*chain, root], monkeypatch) == _parse(
        [*_config_args(name, ce_only=True), root], monkeypatch
    )


@pytest.mark.parametrize("name", RECIPES)
def test_config_holds_the_recipe_and_its_ce_twin_differs_only_in_the_loss(name, in_tmp_dir, monkeypatch):
    recipe = RECIPES[name]
    root = "--data.init_args.root=/nowhere"
    config = _parse([*_config_args(name, ce_only=False), root], monkeypatch)
    trainer, model, data = config["trainer"], config["model"]["init_args"], config["data"]["init_args"]
    # 4 GPUs, DDP, SyncBatchNorm (docs/method.md C3); the global batch is per-device batch x devices
    assert (trainer["accelerator"], trainer["devices"], trainer["strategy"]) == ("gpu", 4, "ddp")
    assert trainer["sync_batchnorm"] is True and trainer["max_steps"] == recipe.iterations
    assert data["batch_size"] * trainer["devices"] == recipe.global_batch
    assert tuple(data["crop_size"]) == recipe.crop
    assert config["data"]["class_path"] == f"msccl.data.{recipe.data_class}"
    assert model["net"]["init_args"]["pretrained"] is True  # ImageNet-pretrained backbones
    # the paper's contrastive loss: defaults, budget per device, weight 0.1, 256-d heads (docs/method.md A)
    contrastive = model["contrastive"]
    assert contrastive["class_path"] == "msccl.contrastive.MSCSContrastiveLoss"
    settings = contrastive["init_args"]
    assert (settings["temperature"], settings["budget"], settings["cross_scale_weights"]) == (
        0.1,
        "per_device",
        [1.0, 1.0],
    )
    # the default weights, cut to the taps (docs/method.md A4): no list that could miss the network's taps
    assert settings["scale_weights"] is None
    loss = MSCSContrastiveLoss(num_classes=2, scale_weights=settings["scale_weights"])
    assert loss.scale_weights_for(len(recipe.taps)) == [1.0, 0.7, 0.4, 0.1][: len(recipe.taps)]
    assert (settings["min_views_per_class"], settings["max_views_per_class"]) == (5, 2500)
    assert settings["max_features_total"] == 10000 and settings["multi_scale"] and settings["cross_scale"]
    assert (model["contrastive_weight"], model["projection_dim"]) == (0.1, 256)
    for key, value in recipe.extra.items():
        assert (data | model["net"]["init_args"])[key] == value, key
    for key, value in recipe.evaluation.items():
        assert _tuples(model["evaluation"][key]) == value, key
    # the CE-only twin: the same config but for the loss and the run directory
    twin = _parse([*_config_args(name, ce_only=True), root], monkeypatch)
    assert twin["model"]["init_args"].pop("contrastive") is None
    assert twin["trainer"].pop("default_root_dir") == trainer.pop("default_root_dir") + "_ce"
    model.pop("contrastive")
    assert twin == config


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("cityscapes_hrnet_w48", "hf download timm/hrnet_w48.ms_in1k model.safetensors"),
        ("cityscapes_deeplabv3_r101", "hf download smp-hub/resnet101.imagenet model.safetensors"),
        ("ade20k_upernet_swin_t", "hf download timm/swin_tiny_patch4_window7_224.ms_in1k model.safetensors"),
    ],
)
def test_pretrained_backbone_offline_fails_at_once_naming_the_weights(name, says, empty_caches, in_tmp_dir):  # noqa: F811
    tree = in_tmp_dir / "data"
    RECIPES[name].tree(tree)
    # through the CLI, jsonargparse re-raises PretrainedWeightsNotFound as a ValueError with its message
    with pytest.raises((PretrainedWeightsNotFound, ValueError), match="never downloads") as error:
        build_cli([*_config_args(name, ce_only=False), f"--data.init_args.root={tree}"], run=False)
    assert says in str(error.value)


class OneStep(Callback):
    """Ends `fit` after one optimiser step (validation then runs once), leaving `max_steps`, and with it the
    learning-rate schedule, as configured; records which trainable parameters got no gradient and the
    gradient norm of each tap's projection head."""

    without_gradient: list[str] | None = None
    head_gradients: list[float] | None = None

    def on_before_optimizer_step(self, trainer: L.Trainer, module: L.LightningModule, optimizer) -> None:
        self.without_gradient = [
            n for n, p in module.named_parameters() if p.requires_grad and p.grad is None
        ]
        self.head_gradients = [
            sum(float(p.grad.norm()) for p in head.parameters() if p.grad is not None)
            for head in module.projection_heads
        ]

    def on_train_batch_end(self, trainer: L.Trainer, *args) -> None:
        trainer.should_stop = True


# Real classes of each dataset (raw ids mapping to four different train ids in every task), one per image:
# every crop then holds one class, so each image is a present (image, class) pair at every scale and the
# two images of a batch contrast two classes (docs/method.md A2.3).
CLASS_IDS = {"Cityscapes": [7, 8, 11, 12], "ADE20K": [1, 2, 3, 4], "CaDIS": [0, 1, 2, 3]}


def _layout(recipe: Recipe) -> tuple[dict, tuple[int, int]]:
    """The tree's layout and the crop: the crop has >= 5 pixels (min_views_per_class) at stride 32 even
    at the smallest rescale (0.5), so the sampler draws at every scale; the images are twice the crop so
    the rescaled image always fills it (no ignore padding)."""
    crop = (128, 128) if recipe.crop[0] == recipe.crop[1] else (64, 128)
    shape = (2 * crop[0], 2 * crop[1])
    return {"shape": shape, "block": shape, "label_ids": CLASS_IDS[recipe.data_class]}, crop


def _small(name: str, tree: Path) -> list[str]:
    """Root, crop, batch 2 and an evaluation window of the whole (small) image: one pass per scale."""
    recipe = RECIPES[name]
    layout, crop = _layout(recipe)
    args = [
        f"--data.init_args.root={tree}",
        f"--data.init_args.crop_size=[{crop[0]}, {crop[1]}]",
        "--data.init_args.batch_size=2",
    ]
    if recipe.data_class == "CaDIS":  # 4 training frames of 4 classes: any batch of 2 holds 2 classes
        args.append(f"--data.init_args.train_videos={list(CADIS_VIDEO_SPLITS['train'][:4])}")
    if recipe.evaluation["mode"] == "sliding":
        height, width = layout["shape"]
        args.append(f"--model.init_args.evaluation.crop=[{height}, {width}]")
    return args


# The task files differ from CaDIS task 1 only in the task and run directory (checked above): trained once.
TRAINED = [name for name in RECIPES if "_task" not in name]


@pytest.mark.parametrize("name", TRAINED)
def test_full_size_network_trains_one_step_with_every_contrastive_term_and_evaluates(
    name, in_tmp_dir, monkeypatch
):
    recipe = RECIPES[name]
    saved: list[str] = []
    monkeypatch.setattr(
        L.Trainer, "save_checkpoint", lambda self, path, *a, **k: saved.append(Path(path).name)
    )
    tree = in_tmp_dir / "data"
    recipe.tree(tree, **_layout(recipe)[0])
    stop = f"--trainer.callbacks+={__name__}.OneStep"
    torch.manual_seed(0)
    cli = build_cli(["fit", *_config_args(name, ce_only=False), *CPU, *_small(name, tree), stop])
    trainer, module, data = cli.trainer, cli.model, cli.datamodule

    assert trainer.global_step == 1 and "last.ckpt" in saved
    metrics = trainer.callback_metrics
    assert torch.isfinite(metrics["train/loss"]) and "val/mIoU" in metrics
    # samples at every scale, every multi-scale and cross-scale term non-zero and finite (docs/method.md A4)
    num_scales = len(recipe.taps)
    logged = {k.removeprefix("train/contrastive/"): v for k, v in metrics.items() if "contrastive/" in k}
    terms = {k: v for k, v in logged.items() if not k.startswith("embedding/")}
    # the embedding diagnostics come from the same samples: one gap per scale, measured (finite)
    assert all(torch.isfinite(logged[f"embedding/s{s}/gap"]) for s in range(len(recipe.taps)))
    expected = {f"{kind}/s{s}" for s in range(num_scales) for kind in ("samples", "ms")}
    expected |= {f"cs/s0-s{num_scales - 1}", f"cs/s0-s{num_scales - 2}"}
    assert set(terms) == expected
    for term, value in terms.items():
        assert torch.isfinite(value) and value > 0, term
    # gradients reach every tap's projection head; every trainable parameter got one (DDP needs no
    # find_unused_parameters)
    (one_step,) = [c for c in trainer.callbacks if isinstance(c, OneStep)]
    assert len(one_step.head_gradients) == num_scales and min(one_step.head_gradients) > 0
    assert one_step.without_gradient == []
    # the network at full size, its taps as docs/method.md A1 says
    assert [(t.channels, t.stride) for t in module.net.taps] == recipe.taps
    assert sum(p.numel() for p in module.net.parameters()) / 1e6 > recipe.min_parameters_m
    # data: the dataset's classes and the paper's augmentation
    assert type(data).__name__ == recipe.data_class and module.num_classes == recipe.num_classes
    assert asdict(data.augmentation) == PAPER_AUGMENTATION
    # loss weights, optimiser and per-iteration schedule over the configured iterations (docs/method.md C3)
    if recipe.class_weights is None:
        assert module.class_weights is None
    else:
        assert module.class_weights.tolist() == pytest.approx(recipe.class_weights)
    optimizer = trainer.optimizers[0]
    assert type(optimizer) is recipe.optimizer
    for key, value in recipe.optimizer_settings.items():
        assert optimizer.defaults[key] == pytest.approx(value), key
    if recipe.optimizer is torch.optim.AdamW:  # no decay on LayerNorms and position tables
        decayed, exempt = optimizer.param_groups
        # the official rule (the recipe's no_decay_rule): exactly the LayerNorms and position tables
        layer_norms = [m for m in module.modules() if isinstance(m, torch.nn.LayerNorm)]
        tables = [p for n, p in module.named_parameters() if n.endswith("relative_position_bias_table")]
        expected = {id(p) for m in layer_norms for p in m.parameters(recurse=False)} | {id(p) for p in tables}
        assert exempt["weight_decay"] == 0.0 and {id(p) for p in exempt["params"]} == expected
        names = {id(p): n for n, p in module.named_parameters()}
        assert any("relative_position_bias_table" in names[id(p)] for p in exempt["params"])
    factor = trainer.lr_scheduler_configs[0].scheduler.lr_lambdas[0]
    total, warmup = recipe.iterations, recipe.warmup_steps
    assert factor(total) == 0.0 and factor(total // 2) == pytest.approx(0.5**recipe.poly_power)
    assert factor(0) == pytest.approx(1.0 if warmup == 0 else 1e-6)
    if warmup:
        assert factor(warmup // 2) == pytest.approx(0.5, abs=1e-3)
    # evaluation: the recipe's protocol runs on the test split, except Cityscapes' 6 scales x flip of a
    # full-size network (12 passes; tests/test_evaluation.py runs that protocol on a small network)
    evaluation = module.evaluation
    for key, value in recipe.evaluation.items():
        if key != "crop":
            assert getattr(evaluation, key) == value, key
    if len(recipe.evaluation["scales"]) == 1:
        trainer.test(module, datamodule=data)
        assert 0.0 <= float(trainer.callback_metrics["test/mIoU"]) <= 1.0


# Recipes with a pixel-contrast twin (ContrastiveSeg's loss in place of MS + CS, docs/method.md P).
PIXEL_CONTRAST_TWINS = ["cityscapes_hrnet_w48"]


@pytest.mark.parametrize("name", PIXEL_CONTRAST_TWINS)
def test_pixel_contrast_twin_differs_only_in_the_loss_head_and_warm_up(name, in_tmp_dir, monkeypatch):
    root = "--data.init_args.root=/nowhere"
    twin_file = f"--config={EXPERIMENTS / 'pixel_contrast' / RECIPES[name].file}"
    twin = _parse([twin_file, root], monkeypatch)
    config = _parse([*_config_args(name, ce_only=False), root], monkeypatch)
    model = twin["model"]["init_args"]
    # the original's Cityscapes settings (configs/cityscapes/H_48_D_4.json)
    assert model["contrastive"]["class_path"] == "msccl.contrastive.PixelContrastLoss"
    settings = model["contrastive"]["init_args"]
    assert (settings["temperature"], settings["base_temperature"]) == (0.1, 0.07)
    assert (settings["max_samples"], settings["max_views"], settings["memory_size"]) == (1024, 100, 0)
    assert (model["contrastive_weight"], model["projection_dim"], model["projection_layout"]) == (
        0.1,
        256,
        "convmlp",
    )
    # warm-up: the contrastive weight is 0 for the first 5000 iterations, then constant
    schedule = twin["trainer"]["callbacks"].pop()
    assert schedule == {
        "class_path": "msccl.training.ContrastiveWeightSchedule",
        "init_args": {"start_step": 5000, "ramp_steps": 0},
    }
    assert (
        twin["trainer"].pop("default_root_dir")
        == config["trainer"].pop("default_root_dir") + "_pixel_contrast"
    )
    for key in ("contrastive", "projection_layout"):
        model.pop(key), config["model"]["init_args"].pop(key)
    assert twin == config


def test_pixel_contrast_twin_trains_one_step_at_full_size(in_tmp_dir, monkeypatch):
    recipe = RECIPES["cityscapes_hrnet_w48"]
    monkeypatch.setattr(L.Trainer, "save_checkpoint", lambda self, path, *a, **k: None)
    tree = in_tmp_dir / "data"
    recipe.tree(tree, **_layout(recipe)[0])
    twin = f"--config={EXPERIMENTS / 'pixel_contrast' / recipe.file}"
    warm = "--trainer.callbacks.start_step=0"  # the schedule's warm-up would make the gradient 0 here
    stop = f"--trainer.callbacks+={__name__}.OneStep"
    torch.manual_seed(0)
    cli = build_cli(["fit", twin, *CPU, *_small("cityscapes_hrnet_w48", tree), warm, stop])
    metrics = cli.trainer.callback_metrics
    assert cli.trainer.global_step == 1
    # one head over the four branches concatenated (48 + 96 + 192 + 384 = 720 channels)
    (head,) = cli.model.projection_heads
    assert head.in_channels == 720 and head.dim == 256
    assert metrics["train/contrastive/anchors"] > 0 and metrics["train/contrastive"] > 0
    assert torch.isfinite(metrics["train/loss"])
    (one_step,) = [c for c in cli.trainer.callbacks if isinstance(c, OneStep)]
    assert one_step.head_gradients[0] > 0 and one_step.without_gradient == []


def test_swin_with_dynamic_img_size_gives_the_fixed_grid_network_outputs_at_its_size():
    """The Swin recipe's `dynamic_img_size` changes nothing at img_size (so training at the paper's crop is
    the paper's network) and lets the same weights run at other sizes."""
    from msccl.models import UPerNet

    kwargs = {"encoder": "tu-swin_tiny_patch4_window7_224", "decoder_channels": 32, "aux_stage": None}
    torch.manual_seed(0)
    fixed = UPerNet(3, encoder_kwargs={"img_size": 224}, **kwargs).eval()
    dynamic = UPerNet(3, encoder_kwargs={"img_size": 224, "dynamic_img_size": True}, **kwargs).eval()
    dynamic.load_state_dict(fixed.state_dict())
    image = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.allclose(fixed(image).logits, dynamic(image).logits, atol=1e-5)
        assert dynamic(torch.randn(1, 3, 160, 96)).logits.shape == (1, 3, 160, 96)


def test_the_official_cityscapes_test_protocol_part_composes_after_the_recipe(in_tmp_dir, monkeypatch):
    """conf/evaluation/official_cityscapes.yaml given after the Cityscapes recipe selects the official
    code's protocol (tests/test_evaluation.py shows that protocol equal to the official wrapper)."""
    from msccl.training.evaluation import Evaluation

    part = REPO / "conf" / "evaluation" / "official_cityscapes.yaml"
    args = [
        *_config_args("cityscapes_hrnet_w48", ce_only=False),
        f"--config={part}",
        "--data.init_args.root=/x",
    ]
    evaluation = Evaluation(**_parse(args, monkeypatch)["model"]["init_args"]["evaluation"])
    assert evaluation == Evaluation(
        mode="sliding",
        crop=(512, 1024),
        stride=(512, 1024),  # windows without overlap
        scales=(0.75, 1.0, 1.25, 1.5, 1.75, 2.0),
        flip=True,
        fusion="sum_exp",
        whole_below_scale=1.0,
        align_corners=True,
    )
