"""The bench model repository: the committed LeNet-5 plus ``tiny_cnn`` and ``resnet18`` exported from the zoo.

Exports run once (``python -m export build``, about 40 s for both) into ``reports/bench/models`` and are reused;
untrained weights cost the same to run as trained ones.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from service.repository import load_model_config

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = "lenet5_digits"
ZOO_MODELS = ("tiny_cnn", "resnet18")


def ensure_repository(folder: Path, models: tuple[str, ...], log: Path) -> Path:
    """Make ``folder`` a model repository holding ``models`` (exporting what is missing); returns it.

    Raises:
        RuntimeError: an export failed (the tail of its log is quoted).
    """
    folder.mkdir(parents=True, exist_ok=True)
    for model in models:
        if model == DEFAULT_MODEL:  # always the committed one (re-copied when it changed)
            committed, cached = REPO_ROOT / "models" / DEFAULT_MODEL, folder / DEFAULT_MODEL
            config_file = cached / "config.json"
            if not config_file.exists() or config_file.read_bytes() != (committed / "config.json").read_bytes():
                shutil.rmtree(cached, ignore_errors=True)
                shutil.copytree(committed, cached)
            continue
        if (folder / model / "config.json").exists():
            continue
        if model not in ZOO_MODELS:
            raise ValueError(f"model {model!r} is not benchmarked; choose from {(DEFAULT_MODEL, *ZOO_MODELS)}")
        command = [sys.executable, "-m", "export", "build", model, "--out", str(folder), "--version", "1"]
        with log.open("ab") as out:
            done = subprocess.run(
                command, cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT, timeout=600, check=False
            )
        if done.returncode != 0:
            shutil.rmtree(folder / model, ignore_errors=True)
            raise RuntimeError(f"exporting {model} failed ({done.returncode}); see {log}:\n{log.read_text()[-2000:]}")
    return folder


def config(folder: Path, model: str) -> dict[str, Any]:
    """A model's config.json."""
    return dict(json.loads((folder / model / "config.json").read_text()))


def model_file(folder: Path, model: str) -> Path:
    """The ONNX file of version 1."""
    return folder / model / "1" / "model.onnx"


def input_dims(folder: Path, model: str) -> tuple[int, ...]:
    """The input's dims without the batch axis, e.g. (3, 224, 224)."""
    return tuple(config(folder, model)["input"][0]["dims"])


def v2_metadata(folder: Path, model: str) -> dict[str, Any]:
    """The model's inputs and outputs as KServe v2 metadata (batch axis -1), as the load harness's payloads read it."""
    return load_model_config(folder / model).tensor_metadata()
