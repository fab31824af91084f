"""Issue 22 item 2: msccl installed from its wheel works outside the checkout: the packaged configs by name,
`msccl fit`, `msccl predict` and the Python API, in a fresh virtual environment, offline."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from msccl.configs import packaged_configs
from tests.conftest import REPO, TINY_SYNTHETIC

# what a wheel is built from (the rest of the checkout is not needed, and nothing is written into it)
SOURCES = ("pyproject.toml", "README.md", "LICENSE", "msccl", "conf")

TINY = [a for a in TINY_SYNTHETIC if not a.startswith("--config")]


def _run(command: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{command}:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel of this checkout, built offline from a copy of its sources (no build/ in the checkout)."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"
    source.mkdir()
    for name in SOURCES:
        if (REPO / name).is_dir():
            ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
            shutil.copytree(REPO / name, source / name, symlinks=True, ignore=ignore)
        else:
            shutil.copy2(REPO / name, source / name)
    env = os.environ | {"PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    pip_wheel = ["pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(root / "dist")]
    _run([sys.executable, "-m", *pip_wheel, str(source)], root, env)
    (built,) = (root / "dist").glob("msccl-*.whl")
    return built


def test_the_wheel_holds_every_config_of_conf_and_the_type_marker(wheel: Path):
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {n.removeprefix("msccl/conf/") for n in names if n.startswith("msccl/conf/")}
    assert shipped == {f"{name}.yaml" for name in packaged_configs()}
    assert {"msccl/py.typed", "msccl/configs.py", "msccl/commands/config.py"} <= names
    metadata = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("METADATA"))).decode()
    assert "Project-URL: Repository, https://github.com/msccl/msccl" in metadata
    assert "Project-URL: Documentation, https://msccl.github.io/msccl/" in metadata
    assert "Author: the msccl authors" in metadata and "Classifier: Typing :: Typed" in metadata


@pytest.mark.slow  # three processes that import torch and Lightning: about 45 s of CPU
def test_installed_wheel_fits_predicts_and_segments_outside_the_checkout(wheel: Path, tmp_path: Path):
    """A fresh venv with only the wheel installed (its dependencies seen through a .pth onto this
    environment's site-packages, as a plain path: the checkout's editable install stays out of it); every
    command runs in a folder outside the checkout, with no PYTHONPATH."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                     tmp_path, dict(os.environ)).stdout.strip())  # fmt: skip
    (site / "dependencies.pth").write_text(
        "\n".join(dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])) + "\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"PIP_NO_INDEX": "1"}
    install = ["--python", str(python), "install", "--no-deps", "-q", "--disable-pip-version-check"]
    _run([sys.executable, "-m", "pip", *install, str(wheel)], tmp_path, env)
    work = tmp_path / "work"
    work.mkdir()
    msccl = str(venv / "bin" / "msccl")

    listing = _run([msccl, "config", "list"], work, env).stdout
    assert "synthetic " in listing and "experiments/cityscapes_hrnet_w48 " in listing
    # a packaged name, as the README's `conf/synthetic.yaml` does outside a checkout
    _run([msccl, "fit", "--config", "synthetic", *TINY, "--run_dir=run"], work, env)
    checkpoint = work / "run" / "checkpoints" / "last.ckpt"
    assert checkpoint.is_file() and (work / "run" / "summary.json").is_file()
    images = work / "images"
    images.mkdir()
    pixels = np.random.default_rng(0).integers(0, 256, (40, 56, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(images / "a.png")
    predict = ["predict", "--config=conf/synthetic.yaml", *TINY, f"--ckpt_path={checkpoint}"]
    _run([msccl, *predict, f"--data.init_args.predict_dir={images}", "--output=predictions"], work, env)
    written = np.array(Image.open(work / "predictions" / "labels" / "a.png"))
    code = (
        "import sys, numpy as np, msccl\n"
        f"assert msccl.__file__.startswith({str(venv)!r}), msccl.__file__\n"
        f"assert msccl.config_path('synthetic').is_relative_to({str(venv)!r})\n"
        f"label = msccl.Segmenter.from_checkpoint({str(checkpoint)!r})('images/a.png')\n"
        f"np.save('label.npy', label)\n"
    )
    _run([str(python), "-c", code], work, env)
    label = np.load(work / "label.npy")
    assert label.shape == (40, 56) and np.array_equal(label, written)  # the API gives what predict wrote
    assert not (REPO / "run").exists() and sorted(p.name for p in work.iterdir()) == [
        "images",
        "label.npy",
        "predictions",
        "run",
    ]
