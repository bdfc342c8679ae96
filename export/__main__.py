"""``python -m export``: inspect architectures, check convolution arithmetic, export models, train the default.

Examples:
    python -m export summary vgg_d
    python -m export shape 10 3 --padding 0 --stride 2
    python -m export build resnet18 --out models/ --rounding floor
    python -m export build --module mypkg.nets:make_net --input-size 3,64,64 --labels labels.txt --out models/
    python -m export train-digits --out models/
    python -m export quantize lenet5_digits --repository models/ --calibration digits
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
from pathlib import Path

from export.arithmetic import ShapeError, compute
from export.errors import ExportError
from export.pattern import HELP as PATTERN_HELP
from service.config_model import MAX_BATCH_SIZE, MAX_TENSOR_ELEMENTS


def _size(text: str) -> tuple[int, int, int]:
    """``--input-size C,H,W``: three whole numbers whose product the service can take as one row."""
    parts = [p for p in text.replace("x", ",").split(",") if p]
    if len(parts) != 3 or not all(p.isascii() and p.isdigit() and int(p) >= 1 for p in parts):
        raise argparse.ArgumentTypeError(f"{text!r}: expected C,H,W such as 3,224,224")
    c, h, w = (int(p) for p in parts)
    if c * h * w > MAX_TENSOR_ELEMENTS:
        raise argparse.ArgumentTypeError(
            f"{text!r}: {c * h * w:,} values per image; the service takes at most {MAX_TENSOR_ELEMENTS:,} per row"
        )
    return c, h, w


def _count(text: str) -> int:
    """A count that must be a whole number of at least 1 (classes, batch size, depth, samples, epochs)."""
    if not text.isascii() or not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a whole number of 1 or more")
    return int(text)


def _batch_size(text: str) -> int:
    """``--max-batch-size``, refused here rather than after the export when the service's bound forbids it."""
    size = _count(text)
    if size > MAX_BATCH_SIZE:
        raise argparse.ArgumentTypeError(f"{text!r}: the service serves batches of at most {MAX_BATCH_SIZE}")
    return size


def _positive(text: str) -> float:
    """A finite number above 0 (a width multiplier, a tolerance)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a number above 0")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    sub = parser.add_subparsers(dest="command", required=True)

    s = sub.add_parser("summary", help="per-layer output volume, memory, parameters and MACs of an architecture",
                       epilog=PATTERN_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    what = s.add_mutually_exclusive_group(required=True)
    what.add_argument("arch", nargs="?", help="zoo architecture name (see `python -m export list`)")
    what.add_argument("--pattern", help="the network as a layer pattern (grammar below)")
    s.add_argument("--format", choices=["table", "json"], default="table")
    s.add_argument("--num-classes", type=_count)
    s.add_argument("--input-size", type=_size, help="C,H,W (default: the architecture's standard size)")
    s.add_argument("--width-mult", type=_positive, default=1.0, help="scale every layer's width (1.0 = as published)")
    s.add_argument("--depth", type=_count, metavar="N",
                   help="fold the rows to N levels of modules (1: the stem, Inception modules, ResNet stages); "
                        "a folded module's row sums its layers, the totals never change")  # fmt: skip
    s.add_argument(
        "--no-biases",
        action="store_true",
        help="count weights only, leaving out every parameter named bias (as course tables of VGG do)",
    )

    sub.add_parser("list", help="the architectures in the zoo")

    h = sub.add_parser("shape", help="output size of a conv/pool layer: (W - F + 2P)/S + 1")
    h.add_argument("width", type=int, help="input size W")
    h.add_argument("filter", type=int, help="filter size F")
    h.add_argument("--padding", "-p", type=int, default=0)
    h.add_argument("--stride", "-s", type=int, default=1)
    h.add_argument("--dilation", "-d", type=int, default=1)
    rounding = h.add_mutually_exclusive_group()
    rounding.add_argument("--floor", action="store_true", help="round down as PyTorch does instead of rejecting")
    rounding.add_argument("--ceil", action="store_true", help="round up as PyTorch pooling with ceil_mode=True does")

    b = sub.add_parser("build", help="export a zoo architecture or your own module into a model repository",
                       epilog=PATTERN_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    src = b.add_mutually_exclusive_group(required=True)
    src.add_argument("arch", nargs="?", help="zoo architecture name")
    src.add_argument("--module", help="package.module:factory returning a torch.nn.Module")
    src.add_argument("--pattern", help="the network as a layer pattern (grammar below; needs --name)")
    b.add_argument("--out", type=Path, required=True, help="model repository folder (e.g. models/)")
    b.add_argument("--weights", type=Path, help="checkpoint (state_dict) to load; default: untrained weights")
    b.add_argument("--name", help="model name in the repository (default: the architecture name)")
    b.add_argument("--version", help="version folder (default: next free number)")
    b.add_argument("--num-classes", type=_count)
    b.add_argument("--input-size", type=_size, help="C,H,W (required with --module)")
    b.add_argument("--labels", type=Path, help="text file, one label per line (default: class_0 …)")
    b.add_argument("--width-mult", type=_positive, default=1.0)
    b.add_argument("--rounding", choices=["strict", "floor"],
                   help="strict: fail on a layer that does not tile its input (default unless the zoo entry's "
                        "published design relies on floor rounding)")  # fmt: skip
    b.add_argument("--max-batch-size", type=_batch_size, default=32, help=f"1 to {MAX_BATCH_SIZE} (default 32)")
    b.add_argument("--tolerance", type=_positive,
                   help="max ORT-vs-PyTorch difference allowed, relative to the largest output (default 1e-4, "
                        "5e-2 with --precision fp16)")  # fmt: skip
    b.add_argument("--precision", choices=["fp32", "fp16"], default="fp32",
                   help="fp16: store the graph in half precision (half the size) for GPU providers; config.json "
                        "marks it so the service never runs it on CPU (default fp32)")  # fmt: skip
    b.add_argument("--input-dtype", choices=["float32", "uint8"], default="float32",
                   help="uint8: the graph takes 0-255 pixels and does the /255 and mean/std itself, so "
                        "clients send 4x fewer bytes (default float32)")  # fmt: skip

    t = sub.add_parser("train-digits", help="train LeNet-5 on scikit-learn's digits and export it (the default model)")
    t.add_argument("--out", type=Path, default=Path("models"))
    t.add_argument("--name", default="lenet5_digits")
    t.add_argument("--epochs", type=_count, default=30)
    t.add_argument("--version")

    q = sub.add_parser("quantize", help="write a model's newest version as static INT8, if it keeps its accuracy")
    q.add_argument("name", help="model name in the repository")
    q.add_argument("--repository", type=Path, required=True, help="model repository folder (e.g. models/)")
    q.add_argument("--calibration", required=True, metavar="digits|FOLDER",
                   help="scikit-learn's digits, or a folder of images (every 5th held out, to check)")  # fmt: skip
    q.add_argument("--samples", type=_count, help="at most this many calibration images (default: all)")
    q.add_argument("--max-accuracy-drop", type=float, default=0.01,
                   help="refuse when held-out accuracy falls more than this (absolute); without labels, when "
                        "top-1 agreement with FP32 is below 1 minus this (default 0.01)")  # fmt: skip
    q.add_argument("--version", help="version folder (default: next free number)")
    return parser


def _shape(args: argparse.Namespace) -> int:
    strict = not (args.floor or args.ceil)
    result = compute(args.width, args.filter, args.padding, args.stride, args.dilation, strict=strict,
                     ceil_mode=args.ceil)  # fmt: skip
    note = "" if result.integral else f" → {result.output} ({'ceil' if args.ceil else 'floor'})"
    print(f"{result.formula()}{note}")
    return 0


def _check_out(out: Path) -> None:
    """Refuse an ``--out`` that cannot become a folder before any work: it, or the nearest part of it that exists,
    is a file, or that folder is not writable (training or exporting first would waste minutes).

    Raises:
        ExportError: ``out``, naming the path at fault.
    """
    existing = next(p for p in (out, *out.absolute().parents) if p.exists())
    if not existing.is_dir():
        what = f"--out {out} is a file" if existing == out else f"--out {out}: {existing} is a file"
        raise ExportError("out", f"{what}; --out must name a folder (the model repository)")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ExportError("out", f"--out {out}: cannot write in {existing} (permissions)")


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code (2 for a failed check or bad arguments)."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exit_:  # argparse has printed its usage error (2) or the help (0): return, not raise
        return int(exit_.code or 0)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "shape":
            return _shape(args)
        if args.command in ("build", "train-digits"):
            _check_out(args.out)
        # Everything below needs torch; import it only now so `shape` stays instant.
        from export import commands
        from export.render import format_summary

        if args.command == "list":
            print(commands.list_architectures())
        elif args.command == "summary":
            from export.pattern_model import plan_pattern

            plan = plan_pattern(args.pattern) if args.pattern else None
            report = commands.summary(plan or args.arch, args.num_classes, args.input_size, args.width_mult,
                                      biases=not args.no_biases, max_depth=args.depth)  # fmt: skip
            if args.format == "json":
                print(json.dumps(report.to_dict() | ({"pattern": plan.to_dict()} if plan else {}), indent=2))
            else:
                print("\n".join([format_summary(report), *(plan.skipped_lines() if plan else [])]))
        elif args.command == "build":
            print(commands.build_from_args(args))
        elif args.command == "train-digits":
            print(commands.train_digits(args.out, args.name, args.epochs, args.version))
        elif args.command == "quantize":
            from export.quantize import describe, quantize

            print(describe(*quantize(args.name, args.repository, args.calibration, samples=args.samples,
                                     max_drop=args.max_accuracy_drop, version=args.version)))  # fmt: skip
    except (ShapeError, ExportError, KeyError) as err:
        print(f"error: {err.args[0] if isinstance(err, KeyError) else err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:  # the reader went away (`python -m export summary vgg16 | head`): not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when stdout is flushed
        sys.exit(0)
