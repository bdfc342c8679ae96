"""The model repository contract: ``models/<name>/config.json`` + ``models/<name>/<version>/model.onnx``.

export/ writes this file through :meth:`ModelConfig.to_dict`; service/ reads it through
:func:`load_model_config`. Keys follow Triton's model-configuration vocabulary wherever one exists
(``max_batch_size``, ``input``/``output`` with ``data_type`` and ``dims`` without the batch axis,
``dynamic_batching``, ``instance_group``), so ``/v2/models/{m}/config`` can hand them back unchanged.
The typed form lives in :mod:`service.config_model` and its parser in :mod:`service.config_parse`; this module is
the one door to both for export/ and service/: the file layout, and the names they import.
This module imports neither torch nor onnxruntime.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from service.config_model import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    PLATFORM,
    TRITON_TO_V2_DATATYPE,
    ConfigError,
    DynamicBatching,
    InstanceGroup,
    ModelConfig,
    Preprocessing,
    QueuePolicy,
    TensorSpec,
    VersionInfo,
    VersionPolicy,
)
from service.config_parse import MAX_NAME_BYTES, NAME_RULE, is_model_name, model_config_from_dict

__all__ = [
    "CONFIG_FILENAME",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "MAX_NAME_BYTES",
    "MODEL_FILENAME",
    "NAME_RULE",
    "PLATFORM",
    "TRITON_TO_V2_DATATYPE",
    "ConfigError",
    "DynamicBatching",
    "InstanceGroup",
    "ModelConfig",
    "Preprocessing",
    "QueuePolicy",
    "TensorSpec",
    "VersionInfo",
    "VersionPolicy",
    "file_sha256",
    "is_model_name",
    "list_models",
    "load_model_config",
    "model_config_from_dict",
    "version_dirs",
]

CONFIG_FILENAME = "config.json"
MODEL_FILENAME = "model.onnx"


def load_model_config(model_dir: Path) -> ModelConfig:
    """Read ``model_dir/config.json``; the folder name must equal the config's ``name``."""
    path = model_dir / CONFIG_FILENAME
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError as err:
        raise ConfigError(f"{path}: no config.json in model folder") from err
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: not valid JSON ({err})") from err
    config = model_config_from_dict(raw, source=str(path))
    if config.name != model_dir.name:
        raise ConfigError(f"{path}: name is {config.name!r} but the folder is {model_dir.name!r}")
    return config


def version_dirs(model_dir: Path) -> dict[str, Path]:
    """Numbered version folders holding a model.onnx, keyed by version string, lowest first."""
    found = [p for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit() and (p / MODEL_FILENAME).is_file()]
    return {p.name: p / MODEL_FILENAME for p in sorted(found, key=lambda p: int(p.name))}


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks: what ``versions.<version>.sha256`` records for model.onnx."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(2**20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def list_models(repository: Path) -> list[str]:
    """Names of the model folders (those holding a config.json) in a repository, sorted."""
    return sorted(p.name for p in repository.iterdir() if (p / CONFIG_FILENAME).is_file())
