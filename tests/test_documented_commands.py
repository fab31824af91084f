"""Every `msccl ...` command of README.md, of the documentation pages (docs/*.md) and of the `conf/`
header comments runs as written, at a tiny size, so the documentation cannot rot.

The commands are extracted from the files (code blocks, inline code and comment lines; backslash
continuations joined), then, in document order and in one shared working directory (so `runs/...` of one
command is there for the next): dataset roots become small trees in each publisher's layout, an image
folder stands for `path/to/images`, and tiny sizes are appended (one training batch, one validation batch,
32-pixel images or crops, batch 2, narrow demo network). What cannot run here is still parsed (with
`--print_config`), for the reason listed in PARSE_ONLY; templates with placeholders are listed in TEMPLATES.
"""

from __future__ import annotations

import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from msccl.cli import main
from tests.conftest import REPO
from tests.dataset_trees import ade20k_tree, cadis_tree, cityscapes_tree, pascal_context_tree, write_image

DOCUMENTS = [
    REPO / "README.md",
    *sorted((REPO / "docs").glob("*.md")),
    *sorted((REPO / "conf").rglob("*.yaml")),
]

# Placeholders that mark a command as a template, not something to run as written.
TEMPLATES = (
    "/X.yaml",
    "conf/....",
    "runs/X/",
    "fit|validate",
    "<best>",
    "=...",
    "<cwd>",
    "RUN_DIR [",
    "NAME DIR",
)

# Commands that need what this machine lacks: parsed with --print_config instead of run.
PARSE_ONLY = {
    "conf/experiments/": "a paper recipe on 4 GPUs (tests/test_experiments.py trains each one step on a CPU)",
    "--trainer.accelerator=gpu": "needs a GPU",
    "WANDB_MODE=online": "needs a W&B server and account",
}

# Substitutions for the paths the documentation uses.
DATA_ROOTS = {
    "/data/cityscapes": "cityscapes",
    "/data/CaDIS": "cadis",
    "/data/ADEChallengeData2016": "ade20k/ADEChallengeData2016",
    "/data/VOCdevkit": "pascal_context/VOCdevkit",
    "path/to/images": "images",
}

# Appended to every fit / validate / test / predict that runs: the smallest run of each kind
# (`limit_*_batches=1` would parse as 1.0, i.e. every batch: hence limits of 2).
TINY_TRAINER = [
    "--trainer.max_epochs=1",
    "--trainer.limit_train_batches=2",
    "--trainer.limit_val_batches=2",
    "--trainer.limit_test_batches=2",
    "--trainer.limit_predict_batches=2",
    "--trainer.num_sanity_val_steps=0",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
    "--data.init_args.num_workers=0",
    "--data.init_args.batch_size=2",
]
TINY_SYNTHETIC_DATA = [
    "--data.init_args.image_size=32",
    "--data.init_args.num_train=4",
    "--data.init_args.num_val=2",
    "--data.init_args.num_test=2",
]
TINY_FILE_DATA = ["--data.init_args.crop_size=[32, 32]"]
# The paper's networks are trained at full size by tests/test_experiments.py; here what is tested is that a
# model config composes with the rest, so the big backbones are swapped for small ones of the same family
# (same taps, so the same scale weights; Swin stays Swin-T, with narrow heads).
NARROW_NETWORKS = {
    "conf/models/hrnet_w48.yaml": ["--model.init_args.net.init_args.backbone=hrnet_w18_small"],
    "conf/models/ocrnet_hrnet_w48.yaml": [
        "--model.init_args.net.init_args.backbone=hrnet_w18_small",
        "--model.init_args.net.init_args.mid_channels=64",
        "--model.init_args.net.init_args.key_channels=32",
    ],
    "conf/models/deeplabv3_r101.yaml": ["--model.init_args.net.init_args.encoder=resnet18"],
    "--model.init_args.net.class_path=msccl.models.DeepLabV3": [
        "--model.init_args.net.init_args.encoder=resnet18"
    ],
    "conf/models/upernet_swin_t.yaml": [
        "--model.init_args.net.init_args.decoder_channels=32",
        "--model.init_args.net.init_args.aux_channels=32",
    ],
}
NARROW_DEMO_NETWORK = [
    "--model.init_args.net.init_args.pyramid_channels=32",
    "--model.init_args.net.init_args.segmentation_channels=32",
]


@dataclass
class Command:
    text: str  # as documented (continuations joined)
    source: str  # the file it comes from

    @property
    def words(self) -> list[str]:
        words = shlex.split(self.text.split(" > ")[0])  # `--print_config > my_run.yaml`: the redirect
        while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):
            words.pop(0)  # environment assignments (WANDB_MODE=online ...)
        return words[1:]  # without `msccl`

    @property
    def parse_only_reason(self) -> str | None:
        return next((reason for marker, reason in PARSE_ONLY.items() if marker in self.text), None)


def _logical_lines(text: str, comment: bool) -> list[str]:
    """Lines with backslash continuations joined; comment files: only the text of `#` lines."""
    lines = (
        [line[1:] if line.startswith("#") else "" for line in text.splitlines()]
        if comment
        else text.splitlines()
    )
    joined, pending = [], ""
    for line in lines:
        pending = f"{pending} {line.strip()}" if pending else line
        if pending.rstrip().endswith("\\"):
            pending = pending.rstrip()[:-1]
            continue
        joined.append(pending)
        pending = ""
    return joined


def documented_commands() -> list[Command]:
    """Every `msccl` command of the documents, once each, in document order."""
    found: dict[str, Command] = {}
    for document in DOCUMENTS:
        source = str(document.relative_to(REPO))
        for line in _logical_lines(document.read_text(), comment=document.suffix == ".yaml"):
            texts = re.findall(r"`((?:[A-Z_]+=\S+ )*msccl [^`]+)`", line)
            bare = re.match(r"^\s*(?:\w+:\s+)?((?:[A-Z_]+=\S+ )*msccl \S.*)$", line)
            if bare and "`" not in line:
                texts.append(bare.group(1))
            for text in texts:
                text = re.split(r"\s+#", text)[0]  # a trailing shell comment
                text = re.sub(r"\s+", " ", text).strip()
                # a mention of a subcommand alone is prose; `msccl config list|copy` take no flags
                runnable = " --" in text or re.match(r"msccl config (list|copy \S+ \S+)$", text)
                if runnable and text not in found:
                    found[text] = Command(text, source)
    return list(found.values())


def _tiny(words: list[str]) -> list[str]:
    """The tiny sizes for a fit / validate / test / predict command."""
    configs = [w for i, w in enumerate(words) if words[i - 1] == "--config" or w.startswith("--config=")]
    file_data = any("conf/data/" in c for c in configs)
    demo_network = not any("conf/models/" in c for c in configs) and not any(
        w.startswith("--model.init_args.net.class_path") for w in words
    )
    narrow = [
        a for marker, args in NARROW_NETWORKS.items() if marker in words or marker in configs for a in args
    ]
    return [
        *TINY_TRAINER,
        *(TINY_FILE_DATA if file_data else TINY_SYNTHETIC_DATA),
        *(NARROW_DEMO_NETWORK if demo_network else narrow),
    ]


def _prepared(command: Command, data: Path) -> list[str]:
    """The arguments to run: data paths substituted, tiny sizes or --print_config appended."""
    words = command.words
    for documented, tiny in DATA_ROOTS.items():  # a whole path only: not conf/data/cityscapes.yaml
        words = [re.sub(rf"(?<![\w.]){re.escape(documented)}", str(data / tiny), w) for w in words]
    if command.parse_only_reason:
        return [*words, "--print_config"]
    if words[0] in ("fit", "validate", "test", "predict") and "--print_config" not in words:
        return [*words, *_tiny(words)]
    if words[0] == "sweep" and not {"--dry_run", "--dry-run"} & set(words):
        # each trial is a subprocess fit: tests/test_sweep.py runs real trials; here the trials are listed
        return [*words, "--dry_run"]
    if words[0] == "data" and words[1] in ("check", "browse"):
        return [*words, "--workers=0"]  # decode in this process: the trees are tiny
    if words[0] == "export":
        return [*words, "--height=64", "--width=64"]
    return words


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny trees and image folder that stand for the documented paths."""
    root = tmp_path_factory.mktemp("data")
    cityscapes_tree(root / "cityscapes")
    cadis_tree(root / "cadis")
    ade20k_tree(root / "ade20k")
    pascal_context_tree(root / "pascal_context")
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.jpg"):
        write_image(root / "images" / name, rng.integers(0, 256, (40, 56, 3), dtype=np.uint8))
    return root


def test_the_documents_yield_every_kind_of_command():
    commands = documented_commands()
    kinds = {c.words[0] for c in commands}
    assert kinds >= {"fit", "validate", "test", "predict", "data", "export", "sweep", "--help", "--version"}
    sources = {c.source for c in commands}
    assert {"README.md", "conf/models/upernet_swin_t.yaml", "conf/data/ade20k.yaml"} <= sources
    assert any(s.startswith("conf/sweeps/") for s in sources) and len(commands) >= 40


def test_every_documented_command_runs_at_a_tiny_size(data, in_tmp_dir, capsys, monkeypatch):
    (in_tmp_dir / "conf").symlink_to(REPO / "conf")  # the commands run from the repository's root
    monkeypatch.setenv("WANDB_MODE", "disabled")  # W&B runs are tests/test_wandb.py's (~10 s each)
    failures, ran = [], 0
    for command in documented_commands():
        if any(marker in command.text for marker in TEMPLATES):
            continue
        arguments = _prepared(command, data)
        if "last" in arguments and "--ckpt_path" in arguments:
            # "resume the newest run under runs/synthetic": from a folder where only the demo has run
            # (here the model-zoo commands' runs share that root)
            resume_dir = in_tmp_dir / f"resume_{ran}"
            resume_dir.mkdir()
            (resume_dir / "conf").symlink_to(REPO / "conf")
            monkeypatch.chdir(resume_dir)
            main(_prepared(Command("msccl fit --config conf/synthetic.yaml", "README.md"), data))
        try:
            main(arguments)
            code = 0
        except SystemExit as exit_:
            code = exit_.code or 0
        except Exception as error:  # noqa: BLE001  (every failing command is reported together)
            code = f"{type(error).__name__}: {error}"
        if "wandb" in sys.modules:  # W&B keeps its settings (the mode) from one run to the next
            sys.modules["wandb"].teardown()
        monkeypatch.chdir(in_tmp_dir)
        output = capsys.readouterr()
        if code != 0:
            failures.append(
                f"{command.source}: {command.text}\n  ran: {shlex.join(arguments)}\n  "
                f"-> {code}\n{output.err[-600:]}"
            )
        ran += 1
    assert not failures, "\n\n".join(failures)
    assert ran >= 40
