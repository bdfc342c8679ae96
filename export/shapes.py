"""Per-layer shape analysis: run the module once, predict every layer's output from the arithmetic, compare.

This is what ``python -m export summary`` prints and what every export records in its report: for each leaf
layer the output volume, activations, parameters (also as they would be without weight sharing) and
multiply-accumulates, with the prediction from :mod:`export.layer_predict` checked against the shape PyTorch
actually produced; and a row for each module whose output is a new volume (Inception modules, residual blocks).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from export.arithmetic import ShapeError
from export.forward import Call, run
from export.layer_predict import pair, predict


@dataclass
class LayerReport:
    """One row of the summary: a leaf layer, or a module whose output is a new volume (``module`` true).

    A module row's params, MACs and unshared params are its subtree's sums; the totals count leaf rows only, so
    nothing is counted twice. ``depth`` is 1 plus the number of module rows enclosing the row.
    """

    name: str
    kind: str
    output: list[int]  # without the batch axis: [C, H, W] or [features]
    activations: int
    params: int
    macs: int
    predicted: list[int] | None  # None for layer types the arithmetic does not model
    integral: bool = True  # False where the arithmetic rounded (floor/ceil) instead of tiling exactly
    formula: str = ""
    unshared_params: int = 0  # params without weight sharing: a Conv2d as a locally connected layer; else params
    depth: int = 1
    module: bool = False

    @property
    def volume(self) -> str:
        """W×H×D as the CNN literature draws it (features alone for flat layers)."""
        if len(self.output) == 3:
            c, h, w = self.output
            return f"{w}×{h}×{c}"
        return "×".join(str(d) for d in self.output)


@dataclass
class ShapeReport:
    """The whole network: input, every row in forward order, totals over the leaf layers.

    ``biases`` says which view the parameter counts are in (False: biases left out, as course tables count
    weights); ``max_depth`` folds the rows shown (None: every level), never the totals.
    """

    input: list[int]
    layers: list[LayerReport] = field(default_factory=list)
    biases: bool = True
    max_depth: int | None = None

    @property
    def leaves(self) -> list[LayerReport]:
        """The layer rows, without module rows: what the totals add up."""
        return [layer for layer in self.layers if not layer.module]

    @property
    def rows(self) -> list[LayerReport]:
        """The rows shown at ``max_depth``: deeper rows are folded into their module row's sums."""
        return [layer for layer in self.layers if self.max_depth is None or layer.depth <= self.max_depth]

    @property
    def total_params(self) -> int:
        """Parameters of all leaf layers (each module counted once)."""
        return sum(layer.params for layer in self.leaves)

    @property
    def total_unshared_params(self) -> int:
        """Parameters if every convolution were locally connected (no weight sharing), every other layer as is."""
        return sum(layer.unshared_params for layer in self.leaves)

    @property
    def total_macs(self) -> int:
        """Multiply-accumulates of one forward pass at batch 1."""
        return sum(layer.macs for layer in self.leaves)

    @property
    def total_activations(self) -> int:
        """Values held by the input and every layer output at batch 1 (forward pass, no reuse)."""
        return math.prod(self.input) + sum(layer.activations for layer in self.leaves)

    def rounded_layers(self) -> list[LayerReport]:
        """Layers whose arithmetic did not tile their input exactly."""
        return [layer for layer in self.leaves if not layer.integral]

    def to_dict(self) -> dict[str, Any]:
        """JSON form: the view, the rows shown and the totals (bytes assume float32)."""
        return {
            "input": self.input,
            "counts_biases": self.biases,
            "max_depth": self.max_depth,
            "layers": [asdict(layer) | {"volume": layer.volume} for layer in self.rows],
            "totals": {
                "params": self.total_params,
                "unshared_params": self.total_unshared_params,
                "macs": self.total_macs,
                "activations": self.total_activations,
                "activation_bytes": 4 * self.total_activations,
                "layers": len(self.leaves),
            },
        }


def _own_params(module: nn.Module, biases: bool, recurse: bool = False) -> int:
    """Parameters of ``module`` (its own only unless ``recurse``), leaving out those named ``bias`` if asked."""
    named = module.named_parameters(recurse=recurse)
    return sum(p.numel() for n, p in named if biases or n.rpartition(".")[2] != "bias")


def _unshared(module: nn.Module, out_shape: list[int], params: int, biases: bool) -> int:
    """A Conv2d's parameters as a locally connected layer: one filter (and bias) per output value, none shared.

    out_H·out_W·out_C × (in_C/groups·kH·kW + 1 with a counted bias); other layers share nothing, so: ``params``.
    """
    if not isinstance(module, nn.Conv2d) or not params:  # params 0: a reused module, counted at its first call
        return params
    kh, kw = pair(module.kernel_size)
    bias = int(module.bias is not None and biases)
    return math.prod(out_shape) * ((module.in_channels // module.groups) * kh * kw + bias)


def analyse(
    model: nn.Module, input_size: tuple[int, ...], *, biases: bool = True, max_depth: int | None = None
) -> ShapeReport:
    """Run ``model`` once at batch 1 and report every layer and module row, checking layers against the arithmetic.

    A container below the root becomes a *module row* when its output is a new volume: its children do not form
    a plain chain (an Inception module concatenates branches, a residual block adds its shortcut), or it holds
    such a row (a ResNet stage of blocks). A plain ``nn.Sequential`` wrapper adds no row: its output is already
    its last layer's row. Module rows come after their children, where the forward pass produces their output,
    so each row's volume is the next row's input, as a paper's table reads.

    Args:
        model: the network; it is put in eval mode.
        input_size: (C, H, W) without the batch axis.
        biases: False to count weights only (parameters named ``bias`` left out), in every column and total.
        max_depth: fold the rows shown to this depth; the totals always cover every layer.

    Raises:
        ShapeError: when a layer's actual output differs from the arithmetic's prediction, or the forward pass
            fails (naming the layer, its input and what it expects, and any earlier layer that rounded).
    """
    report = ShapeReport(input=list(input_size), biases=biases, max_depth=max_depth)
    placed: list[tuple[LayerReport, Call]] = []
    counted: set[int] = set()
    mismatches: list[str] = []

    def on_return(call: Call) -> None:
        if call.parent is not None and call.row_below:
            call.parent.row_below = True
        if isinstance(call.output, torch.Tensor) and isinstance(call.input, torch.Tensor):
            out_shape = list(call.output.shape[1:])
            if call.leaf:
                row = _layer_row(call, list(call.input.shape[1:]), out_shape)
                call.params, call.macs, call.unshared_params = row.params, row.macs, row.unshared_params
                placed.append((row, call))
                if row.predicted is not None and row.predicted != out_shape:
                    mismatches.append(f"{row.name} ({row.kind}): arithmetic predicts {row.predicted}, got {out_shape}")
            elif call.parent is not None and (call.row_below or not call.plain_chain):
                call.row = call.parent.row_below = True
                kind, volume = type(call.module).__name__, math.prod(out_shape)
                row = LayerReport(
                    call.name,
                    kind,
                    out_shape,
                    volume,
                    call.params,
                    call.macs,
                    None,
                    unshared_params=call.unshared_params,
                    module=True,
                )
                placed.append((row, call))
        if call.parent is not None:
            call.parent.params += call.params
            call.parent.macs += call.macs
            call.parent.unshared_params += call.unshared_params

    def _layer_row(call: Call, in_shape: list[int], out_shape: list[int]) -> LayerReport:
        predicted, integral, formula, macs = predict(call.module, in_shape)
        params = 0 if id(call.module) in counted else _own_params(call.module, biases)
        counted.add(id(call.module))
        unshared = _unshared(call.module, out_shape, params, biases)
        kind = type(call.module).__name__
        return LayerReport(
            call.name, kind, out_shape, math.prod(out_shape), params, macs, predicted, integral, formula, unshared
        )

    try:
        run(model, input_size, on_return)
    except ShapeError as err:
        rounded = [row for row, _ in placed if not row.integral]
        first = rounded[0] if rounded else None
        note = f"; earlier, {first.name} rounded {first.formula}: is the input size right?" if first else ""
        raise ShapeError(f"{err}{note}") from err
    for row, call in placed:
        row.depth = call.depth()
    report.layers = [row for row, _ in placed]
    if mismatches:
        raise ShapeError("output shapes disagree with the convolution arithmetic: " + "; ".join(mismatches))
    # Parameters outside leaf layers (rare: a bare nn.Parameter on a container) still count.
    stray = _own_params(model, biases, recurse=True) - report.total_params
    if stray:
        other = LayerReport("(other parameters)", "Parameter", [], 0, stray, 0, None, unshared_params=stray)
        report.layers.append(other)
    return report


def enforce_strict(report: ShapeReport) -> None:
    """Strict mode: fail on any layer that does not tile its input exactly.

    Raises:
        ShapeError: listing every non-integral layer with its formula.
    """
    rounded = report.rounded_layers()
    if rounded:
        lines = "; ".join(f"{layer.name} ({layer.kind}): {layer.formula}" for layer in rounded)
        raise ShapeError(
            f"{len(rounded)} layer(s) do not tile their input (strict mode): {lines}. Fix the padding/stride, "
            "or pass --rounding floor to accept PyTorch's rounding"
        )
