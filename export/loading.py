"""Getting the user's network: a zoo architecture, or ``package.module:factory``, plus optional weights.

Every failure is an :class:`~export.errors.ExportError` that says what was asked for and what was found.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import torch
from torch import nn

from export.errors import ExportError


def import_factory_module(spec: str, num_classes: int | None) -> nn.Module:
    """Build a module from ``package.module:factory`` (an importable callable returning an nn.Module).

    ``num_classes`` is passed as a keyword when given, so factories that take it get it.

    Raises:
        ExportError: ``module`` when the spec is malformed, the import fails, the attribute is missing,
            or the callable does not return an nn.Module.
    """
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ExportError("module", f"--module {spec!r} must look like 'package.module:factory'")
    try:
        mod = importlib.import_module(module_name)
    except ImportError as err:
        raise ExportError("module", f"cannot import {module_name!r} (from --module {spec!r}): {err}") from err
    factory = getattr(mod, attr, None)
    if not callable(factory):
        raise ExportError("module", f"{module_name!r} has no callable {attr!r} (from --module {spec!r})")
    try:
        model = factory(num_classes=num_classes) if num_classes is not None else factory()
    except TypeError as err:
        raise ExportError("module", f"calling {spec} failed: {err}") from err
    if not isinstance(model, nn.Module):
        raise ExportError("module", f"{spec} returned {type(model).__name__}, expected a torch.nn.Module")
    return model


def _state_dict_from(checkpoint: Any, path: Path) -> dict[str, torch.Tensor]:
    """Accept a bare state_dict or the usual wrappers (``state_dict``, ``model_state_dict``, ``model``)."""
    if isinstance(checkpoint, dict):
        for key in ("state_dict", "model_state_dict", "model"):
            if isinstance(checkpoint.get(key), dict):
                checkpoint = checkpoint[key]
                break
        if checkpoint and all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
            return checkpoint
    raise ExportError("weights", f"{path} holds no state_dict (found {type(checkpoint).__name__})")


def load_weights(model: nn.Module, path: Path) -> None:
    """Load a checkpoint into ``model`` strictly, explaining any mismatch key by key.

    Raises:
        ExportError: ``weights`` for an unreadable file, missing/unexpected keys, or tensors whose shapes
            differ (typically a --num-classes that disagrees with the checkpoint).
    """
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as err:
        raise ExportError("weights", f"weights file {path} does not exist") from err
    except Exception as err:  # torch.load raises UnpicklingError, RuntimeError, … for a non-checkpoint
        raise ExportError("weights", f"{path} is not a readable PyTorch checkpoint: {err}") from err
    state = _state_dict_from(checkpoint, path)
    own = model.state_dict()
    problems = [
        f"{k}: checkpoint has {list(v.shape)}, model has {list(own[k].shape)}"
        for k, v in state.items()
        if k in own and own[k].shape != v.shape
    ]
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing:
        problems.append(f"missing from checkpoint: {', '.join(missing[:5])}{' …' if len(missing) > 5 else ''}")
    if unexpected:
        problems.append(f"not in model: {', '.join(unexpected[:5])}{' …' if len(unexpected) > 5 else ''}")
    if problems:
        hint = " (does --num-classes match the checkpoint?)" if any("checkpoint has" in p for p in problems) else ""
        raise ExportError("weights", f"{path} does not fit the model{hint}: " + "; ".join(problems))
    model.load_state_dict(state)
