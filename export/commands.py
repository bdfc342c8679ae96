"""What the CLI's subcommands do once arguments are parsed; kept apart so __main__ stays argument handling."""

from __future__ import annotations

import argparse
from pathlib import Path

from torch import nn

from export import forward
from export.errors import ExportError
from export.fp16 import fp16_sizes
from export.loading import import_factory_module, load_weights
from export.pattern_model import Plan, build_pattern, plan_pattern
from export.pipeline import ExportSpec, build
from export.shapes import ShapeReport, analyse
from export.train import train_digits as _train_digits
from export.zoo import ZOO, get


def list_architectures() -> str:
    """One line per zoo entry: name, input size, published parameters, description."""
    lines = []
    for entry in ZOO.values():
        params = f"{entry.published_params:,}" if entry.published_params else "?"
        size = "×".join(str(d) for d in entry.input_size)
        lines.append(f"{entry.name:<14} {size:<11} {params:>13} params  {entry.description}")
    return "\n".join(lines)


def summary(
    arch: str | Plan,
    num_classes: int | None,
    input_size: tuple[int, int, int] | None,
    width: float,
    *,
    biases: bool = True,
    max_depth: int | None = None,
) -> ShapeReport:
    """Analyse a zoo architecture at its standard (or the given) input size, or a resolved ``--pattern``.

    ``biases`` and ``max_depth`` choose the view (see :func:`export.shapes.analyse`).
    """
    if isinstance(arch, Plan):
        model, size = _pattern_net(arch, num_classes, input_size, width), arch.input_size
    else:
        entry = get(arch)
        model = entry.factory(num_classes=num_classes or entry.num_classes, width_mult=width)
        size = input_size or entry.input_size
    return analyse(model, size, biases=biases, max_depth=max_depth)


def _pattern_net(
    plan: Plan, num_classes: int | None, input_size: tuple[int, int, int] | None, width: float
) -> nn.Module:
    """The pattern's module; its INPUT and last FC already state what --input-size and --num-classes would."""
    if input_size is not None and input_size != plan.input_size:
        raise ExportError("input-size", f"--input-size {input_size} but the pattern's INPUT is {plan.input_size}")
    if num_classes is not None and num_classes != plan.num_classes:
        raise ExportError("num-classes", f"--num-classes {num_classes} but the pattern ends in FC{plan.num_classes}")
    return build_pattern(plan, width)


def _labels(path: Path | None, num_classes: int) -> tuple[str, ...]:
    if path is None:
        return tuple(f"class_{i}" for i in range(num_classes))
    try:
        labels = tuple(line.strip() for line in path.read_text().splitlines() if line.strip())
    except OSError as err:
        raise ExportError("labels", f"cannot read labels file {path}: {err}") from err
    if len(labels) != num_classes:
        raise ExportError("labels", f"{path} has {len(labels)} labels, the model has {num_classes} classes")
    return labels


def build_from_args(args: argparse.Namespace) -> str:
    """``python -m export build``: assemble the module, load weights, run the pipeline; returns a one-line result."""
    if args.module:
        if args.input_size is None:
            raise ExportError("input-size", "--input-size C,H,W is required with --module")
        model = import_factory_module(args.module, args.num_classes)
        input_size, rounding, name, arch = args.input_size, args.rounding or "strict", args.name, args.module
        if name is None:
            name = args.module.rpartition(":")[2]
    elif args.pattern:
        plan = plan_pattern(args.pattern)
        if args.name is None:
            raise ExportError("name", "--name is required with --pattern: a pattern has no name to serve it under")
        model = _pattern_net(plan, args.num_classes, args.input_size, args.width_mult)
        input_size, rounding, name, arch = plan.input_size, args.rounding or "strict", args.name, args.pattern
    else:
        entry = get(args.arch)
        model = entry.factory(num_classes=args.num_classes or entry.num_classes, width_mult=args.width_mult)
        input_size = args.input_size or entry.input_size
        rounding, name, arch = args.rounding or entry.rounding, args.name or entry.name, entry.name
    if args.weights:
        load_weights(model, args.weights)
    num_classes = _count_outputs(model, input_size)
    if args.num_classes is not None and num_classes != args.num_classes:
        raise ExportError("num-classes", f"--num-classes {args.num_classes} but the model outputs {num_classes}")
    spec = ExportSpec(
        name=name,
        input_size=input_size,
        labels=_labels(args.labels, num_classes),
        version=args.version,
        rounding=rounding,
        max_batch_size=args.max_batch_size,
        input_dtype=args.input_dtype,
        precision=args.precision,
        **({"tolerance": args.tolerance} if args.tolerance is not None else {}),
    )
    result = build(model, spec, args.out, architecture=arch)
    parity = result.report["parity"]["max_abs_error"]
    return f"wrote {result.model_path} (max abs ORT-vs-PyTorch error {parity:.2e}){fp16_sizes(result.report)}"


def _count_outputs(model: nn.Module, input_size: tuple[int, int, int]) -> int:
    """Classes the model really outputs, from a batch-1 forward pass (the shape check will re-verify).

    Raises:
        ShapeError: the pass failed at this input size, naming the layer, its input and what it expects.
    """
    return int(forward.run(model, input_size).shape[-1])


def train_digits(out: Path, name: str, epochs: int, version: str | None) -> str:
    """``python -m export train-digits``: returns a one-line result with the held-out accuracy."""
    result = _train_digits(out, name=name, epochs=epochs, version=version)
    return f"wrote {result.model_path}; held-out accuracy {result.report['holdout_accuracy']:.2%}"
