"""``python -m export``: inspect architectures, check convolution arithmetic, export models, train the default.

Examples:
    python -m export summary vgg_d
    python -m export shape 10 3 --padding 0 --stride 2
    python -m export build resnet18 --out models/ --rounding floor
    python -m export build --module mypkg.nets:make_net --input-size 3,64,64 --labels labels.txt --out models/
    python -m export train-digits --out models/
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from export.arithmetic import ShapeError, compute
from export.errors import ExportError
from export.render import format_summary


def _size(text: str) -> tuple[int, int, int]:
    parts = [int(p) for p in text.replace("x", ",").split(",") if p]
    if len(parts) != 3 or min(parts) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected C,H,W such as 3,224,224")
    return parts[0], parts[1], parts[2]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    sub = parser.add_subparsers(dest="command", required=True)

    s = sub.add_parser("summary", help="per-layer output volume, memory, parameters and MACs of an architecture")
    s.add_argument("arch", help="zoo architecture name (see `python -m export list`)")
    s.add_argument("--format", choices=["table", "json"], default="table")
    s.add_argument("--num-classes", type=int)
    s.add_argument("--input-size", type=_size, help="C,H,W (default: the architecture's standard size)")
    s.add_argument("--width-mult", type=float, default=1.0, help="scale every layer's width (1.0 = as published)")

    sub.add_parser("list", help="the architectures in the zoo")

    h = sub.add_parser("shape", help="output size of a conv/pool layer: (W - F + 2P)/S + 1")
    h.add_argument("width", type=int, help="input size W")
    h.add_argument("filter", type=int, help="filter size F")
    h.add_argument("--padding", "-p", type=int, default=0)
    h.add_argument("--stride", "-s", type=int, default=1)
    h.add_argument("--dilation", "-d", type=int, default=1)
    h.add_argument("--floor", action="store_true", help="round down as PyTorch does instead of rejecting")
    h.add_argument("--ceil", action="store_true", help="round up as PyTorch pooling with ceil_mode=True does")

    b = sub.add_parser("build", help="export a zoo architecture or your own module into a model repository")
    src = b.add_mutually_exclusive_group(required=True)
    src.add_argument("arch", nargs="?", help="zoo architecture name")
    src.add_argument("--module", help="package.module:factory returning a torch.nn.Module")
    b.add_argument("--out", type=Path, required=True, help="model repository folder (e.g. models/)")
    b.add_argument("--weights", type=Path, help="checkpoint (state_dict) to load; default: untrained weights")
    b.add_argument("--name", help="model name in the repository (default: the architecture name)")
    b.add_argument("--version", help="version folder (default: next free number)")
    b.add_argument("--num-classes", type=int)
    b.add_argument("--input-size", type=_size, help="C,H,W (required with --module)")
    b.add_argument("--labels", type=Path, help="text file, one label per line (default: class_0 …)")
    b.add_argument("--width-mult", type=float, default=1.0)
    b.add_argument("--rounding", choices=["strict", "floor"],
                   help="strict: fail on a layer that does not tile its input (default unless the zoo entry's "
                        "published design relies on floor rounding)")  # fmt: skip
    b.add_argument("--max-batch-size", type=int, default=32)
    b.add_argument("--tolerance", type=float, help="max abs ORT-vs-PyTorch difference allowed (default 1e-4)")

    t = sub.add_parser("train-digits", help="train LeNet-5 on scikit-learn's digits and export it (the default model)")
    t.add_argument("--out", type=Path, default=Path("models"))
    t.add_argument("--name", default="lenet5_digits")
    t.add_argument("--epochs", type=int, default=30)
    t.add_argument("--version")
    return parser


def _shape(args: argparse.Namespace) -> int:
    strict = not (args.floor or args.ceil)
    result = compute(args.width, args.filter, args.padding, args.stride, args.dilation, strict=strict,
                     ceil_mode=args.ceil)  # fmt: skip
    note = "" if result.integral else f" → {result.output} ({'ceil' if args.ceil else 'floor'})"
    print(f"{result.formula()}{note}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code (2 for a failed check or bad arguments)."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "shape":
            return _shape(args)
        # Everything below needs torch; import it only now so `shape` stays instant.
        from export import commands

        if args.command == "list":
            print(commands.list_architectures())
        elif args.command == "summary":
            report = commands.summary(args.arch, args.num_classes, args.input_size, args.width_mult)
            print(json.dumps(report.to_dict(), indent=2) if args.format == "json" else format_summary(report))
        elif args.command == "build":
            print(commands.build_from_args(args))
        elif args.command == "train-digits":
            print(commands.train_digits(args.out, args.name, args.epochs, args.version))
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
