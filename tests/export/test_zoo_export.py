"""Every zoo architecture exports and validates at its standard input size (big ones at reduced width)."""

from __future__ import annotations

from pathlib import Path

import pytest

from export.pipeline import ExportSpec, build
from export.zoo import ZOO
from service.repository import load_model_config

pytestmark = pytest.mark.slow

#: Reduced width keeps CI fast; spatial arithmetic, layer count and graph structure are unchanged by width.
SMALL = {"lenet5": 1.0, "small_cnn": 1.0, "tiny_cnn": 1.0}
REDUCED_WIDTH = 0.0625


@pytest.mark.parametrize("name", sorted(ZOO))
def test_exports_and_validates(name: str, tmp_path: Path) -> None:
    entry = ZOO[name]
    model = entry.factory(num_classes=entry.num_classes, width_mult=SMALL.get(name, REDUCED_WIDTH))
    spec = ExportSpec(
        name=name,
        input_size=entry.input_size,
        labels=tuple(str(i) for i in range(entry.num_classes)),
        rounding=entry.rounding,
    )
    result = build(model, spec, tmp_path, architecture=name)
    report = result.report
    parity = report["parity"]
    assert parity["max_abs_error"] / parity["max_output_magnitude"] <= parity["tolerance"] == 1e-4
    assert report["shape_check"]["layers"][-1]["output"] == [entry.num_classes]
    rounded = [layer for layer in report["shape_check"]["layers"] if not layer["integral"]]
    assert bool(rounded) == (entry.rounding == "floor"), [layer["name"] for layer in rounded]
    assert load_model_config(tmp_path / name).input[0].dims == entry.input_size
