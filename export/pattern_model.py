"""A parsed pattern made concrete: repeats unrolled, optional parts kept or skipped, VGG names, then a module.

An optional part (``X?``) is kept where every POOL in it tiles its input exactly and skipped, and listed, where
one does not (CONV, RELU and FC always fit), so ``[[CONV3-64 -> RELU]*2 -> POOL2?]*5`` serves any input size. A
non-optional POOL that does not tile is an error with the arithmetic.

Names follow the VGG (Caffe) release, so a summary reads like the paper's table: ``convS_I``/``reluS_I`` for the
I-th conv of stage S, ``poolS`` closing it, then ``fcN``/``reluN`` numbered on (VGG-16's fc6, fc7, fc8).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
from torch import nn

from export.arithmetic import compute
from export.errors import ExportError
from export.pattern import Group, Layer, PatternError, parse
from export.zoo._common import init_weights, scaled

#: 2**30 float32 parameters are 4 GiB (seven VGG-16s): more is usually an FC written before the pool that shrinks it.
MAX_PARAMETERS = 2**30
MAX_LAYERS = 10_000  # no network has more; [[RELU]*1000000]*1000000 would unroll 10**12 layers: a hang, not an error


@dataclass(frozen=True)
class PlannedLayer:
    """One concrete layer: ``output`` is (C, H, W) or (units,) at width 1.0; ``column`` where it is written."""

    name: str
    kind: str  # conv, relu, pool, flatten or fc
    size: int
    units: int
    output: tuple[int, ...]
    column: int


@dataclass(frozen=True)
class Skipped:
    """An optional part left out, where it was written, and why."""

    source: str
    column: int
    after: str  # the last layer kept before it ("input" at the start)
    reason: str


@dataclass(frozen=True)
class Plan:
    """The concrete network a pattern describes."""

    text: str
    input_size: tuple[int, int, int]
    layers: tuple[PlannedLayer, ...]
    skipped: tuple[Skipped, ...]

    @property
    def num_classes(self) -> int:
        """The last FC's units (resolution guarantees the last layer is an FC)."""
        return self.layers[-1].units

    def to_dict(self) -> dict[str, Any]:
        """JSON form, for ``summary --format json`` and the export report."""
        return {
            "text": self.text,
            "input": list(self.input_size),
            "layers": [layer.name for layer in self.layers],
            "skipped": [asdict(part) for part in self.skipped],
        }

    def skipped_lines(self) -> list[str]:
        """One line per skipped optional part, for the text summary."""
        return [f"skipped {s.source} (column {s.column}) after {s.after}: {s.reason}" for s in self.skipped]


class _NoTile(Exception):
    """A POOL that does not tile: caught by the nearest optional part, else turned into a PatternError."""

    def __init__(self, layer: Layer, name: str, reason: str) -> None:
        super().__init__(reason)
        self.layer, self.name, self.reason = layer, name, reason


@dataclass(frozen=True)
class _State:
    """Resolution so far; immutable, so skipping an optional part is returning the state from before it."""

    shape: tuple[int, ...]
    layers: tuple[PlannedLayer, ...] = ()
    skipped: tuple[Skipped, ...] = ()
    stage: int = 1
    convs: int = 0  # convs so far in the current stage

    def add(self, layer: PlannedLayer, stage: int, convs: int) -> _State:
        return replace(self, shape=layer.output, layers=(*self.layers, layer), stage=stage, convs=convs)


def plan_pattern(text: str) -> Plan:
    """Parse and resolve a pattern string.

    Raises:
        PatternError: for a grammar error, a CONV or POOL after the first FC, a non-optional POOL that does not
            tile its input, or a last layer that is not an FC; each points at the column at fault.
    """
    pattern = parse(text)
    written = 0
    for element in pattern.body:  # point at the element that passes the bound
        if (written := written + _unrolled((element,))) > MAX_LAYERS:
            raise PatternError(text, element.column, f"unrolls to over {MAX_LAYERS:,} layers by here: lower a repeat")
    try:
        state = _Resolver(text).sequence(pattern.body, _State(pattern.input_size))
    except _NoTile as miss:
        source = miss.layer.source
        hint = f"write {source}? to skip it where it does not tile, or change INPUT"
        raise PatternError(text, miss.layer.column, f"{miss.name} ({source}) {miss.reason}; {hint}") from None
    if not state.layers or state.layers[-1].kind != "fc":
        where = state.layers[-1].column if state.layers else pattern.body[-1].column
        found = state.layers[-1].name if state.layers else "no layer"
        raise PatternError(text, where, f"the last layer must be FCn, whose n is the class count; found {found}")
    return Plan(text, pattern.input_size, state.layers, state.skipped)


def _unrolled(elements: tuple[Layer | Group, ...]) -> int:
    """Layers written once every repeat is unrolled, optional parts counted as kept."""
    return sum(1 if isinstance(e, Layer) else e.repeat * _unrolled(e.items) for e in elements)


def _untiled(side: int, kernel: int) -> str | None:
    """Why a k×k/k pool does not tile one side, or None when it does."""
    if side < kernel:
        return f"the side {side} is smaller than the pool's {kernel}"
    arithmetic = compute(side, kernel, 0, kernel, strict=False)
    return None if arithmetic.integral else f"{arithmetic.formula()} is not an integer"


class _Resolver:
    """Walks the syntax tree in order, unrolling repeats and deciding optional parts."""

    def __init__(self, text: str) -> None:
        self.text = text  # for the errors' caret line

    def sequence(self, elements: tuple[Layer | Group, ...], state: _State) -> _State:
        for element in elements:
            state = self.element(element, state)
        return state

    def element(self, element: Layer | Group, state: _State) -> _State:
        if not element.optional:
            return self.required(element, state)
        try:
            return self.required(element, state)
        except _NoTile as miss:
            after = state.layers[-1].name if state.layers else "input"
            skipped = Skipped(element.source, element.column, after, f"{miss.name} {miss.reason}")
            return replace(state, skipped=(*state.skipped, skipped))

    def required(self, element: Layer | Group, state: _State) -> _State:
        if isinstance(element, Layer):
            return self.layer(element, state)
        for _ in range(element.repeat):
            state = self.sequence(element.items, state)
        return state

    def layer(self, layer: Layer, state: _State) -> _State:
        shape, stage = state.shape, state.stage
        if layer.kind in ("conv", "pool") and len(shape) == 1:
            raise PatternError(self.text, layer.column, f"{layer.kind.upper()} after an FC: the volume is already "
                               "flattened; convolutions and pools come before the first FC")  # fmt: skip
        if layer.kind == "conv":
            name = f"conv{stage}_{state.convs + 1}"
            planned = PlannedLayer(name, "conv", layer.size, layer.units, (layer.units, *shape[1:]), layer.column)
            return state.add(planned, stage, state.convs + 1)
        if layer.kind == "pool":
            return self.pool(layer, state)
        if layer.kind == "relu":
            previous = state.layers[-1] if state.layers else None
            if previous is not None and previous.kind in ("conv", "fc"):
                name = "relu" + previous.name.removeprefix(previous.kind)
            else:
                name = f"relu_{previous.name}" if previous else "relu"
            return state.add(PlannedLayer(name, "relu", 0, 0, shape, layer.column), stage, state.convs)
        if len(shape) == 3:  # the first FC: flatten, and close a stage that no pool closed
            flat = PlannedLayer("flatten", "flatten", 0, 0, (shape[0] * shape[1] * shape[2],), layer.column)
            stage += 1 if state.convs else 0
            state = state.add(flat, stage, 0)
        planned = PlannedLayer(f"fc{stage}", "fc", 0, layer.units, (layer.units,), layer.column)
        return state.add(planned, stage + 1, 0)

    def pool(self, layer: Layer, state: _State) -> _State:
        channels, height, width = state.shape
        name, k = f"pool{state.stage}", layer.size
        problems = {axis: _untiled(side, k) for axis, side in (("H", height), ("W", width))}
        if problems["H"] or problems["W"]:
            detail = problems["H"] if height == width else "; ".join(f"{a}: {p}" for a, p in problems.items() if p)
            raise _NoTile(layer, name, f"does not tile its {height}×{width} input: {detail}")
        planned = PlannedLayer(name, "pool", k, 0, (channels, height // k, width // k), layer.column)
        return state.add(planned, state.stage + 1, 0)


def build_pattern(plan: Plan, width_mult: float = 1.0) -> nn.Sequential:
    """The plan as an ``nn.Sequential`` with the plan's names, initialised as the zoo's models are.

    ``width_mult`` scales every conv's filters and every hidden FC (not the last: its units are the classes).

    Raises:
        ExportError: ``pattern`` when the network would hold more than ``MAX_PARAMETERS`` parameters; they are
            counted on torch's meta device first, which allocates nothing.
    """
    with torch.device("meta"):
        params = sum(p.numel() for p in _modules(plan, width_mult).parameters())
    if params > MAX_PARAMETERS:
        raise ExportError(
            "pattern",
            f"the network would have {params:,} parameters ({params * 4 / 2**30:,.1f} GiB as float32), more than "
            f"{MAX_PARAMETERS:,}; use fewer or smaller layers, or pool before the first FC",
        )
    model = _modules(plan, width_mult)
    init_weights(model)
    return model


def _modules(plan: Plan, width_mult: float) -> nn.Sequential:
    """The plan's layers, uninitialised, on torch's current default device."""
    modules: OrderedDict[str, nn.Module] = OrderedDict()
    channels, area, features = plan.input_size[0], plan.input_size[1] * plan.input_size[2], 0
    for layer in plan.layers:
        if layer.kind == "conv":
            filters = scaled(layer.units, width_mult)
            modules[layer.name] = nn.Conv2d(channels, filters, layer.size, padding=(layer.size - 1) // 2)
            channels = filters
        elif layer.kind == "relu":
            modules[layer.name] = nn.ReLU()
        elif layer.kind == "pool":
            modules[layer.name] = nn.MaxPool2d(layer.size, stride=layer.size)
            area = layer.output[1] * layer.output[2]
        elif layer.kind == "flatten":
            modules[layer.name] = nn.Flatten()
            features = channels * area
        else:
            units = layer.units if layer is plan.layers[-1] else scaled(layer.units, width_mult)
            modules[layer.name] = nn.Linear(features, units)
            features = units
    return nn.Sequential(modules)
