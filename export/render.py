"""The summary table, drawn the way CNN course notes draw VGG-16: one row per layer, totals at the bottom.

Module rows (an Inception module, a residual block, a stage) are indented by depth, as torchinfo draws them,
and sit after their layers, where their output volume comes into being. The ``no sharing`` column is the
parameter count each layer would need as a locally connected layer (every output value its own filter): the
number behind the argument for convolution. The table fits in 128 columns.
"""

from __future__ import annotations

from export.shapes import LayerReport, ShapeReport

_NAME = 30


def _human(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(int(n))


def _line(name: str, kind: str, volume: str, acts: str, params: str, unshared: str, macs: str, check: str) -> str:
    counts = f"{acts:>11} {params:>12} {unshared:>15} {macs:>9}"
    return f"{name[:_NAME]:<{_NAME}} {kind[:17]:<17} {volume:>14} {counts}  {check}"


def _check(layer: LayerReport) -> str:
    if layer.module:
        return ""
    return "–" if layer.predicted is None else ("ok" if layer.integral else "ok (rounded)")


def format_summary(report: ShapeReport) -> str:
    """Render a :class:`ShapeReport` as a fixed-width text table, folded to its ``max_depth``."""
    c, h, w = (report.input + [1, 1, 1])[:3]
    params_title = "params" if report.biases else "weights"
    header = _line("layer", "type", "output W×H×D", "activations", params_title, "no sharing", "MACs", "check")
    rule = "-" * len(header)
    rows = [header, rule, _line("input", "", f"{w}×{h}×{c}", _human(c * h * w), "0", "0", "0", "")]
    for layer in report.rows:
        name = "  " * (layer.depth - 1) + layer.name
        rows.append(
            _line(name, layer.kind, layer.volume, _human(layer.activations), f"{layer.params:,}",
                  f"{layer.unshared_params:,}", _human(layer.macs), _check(layer))
        )  # fmt: skip
    acts, params, unshared = report.total_activations, report.total_params, report.total_unshared_params
    rows += [rule, _line("total", f"{len(report.leaves)} layers", "", _human(acts), f"{params:,}", f"{unshared:,}",
                         _human(report.total_macs), "")]  # fmt: skip
    what = "parameters" if report.biases else "weights (biases not counted)"
    rows.append(f"activation memory {acts * 4 / 2**20:.2f} MiB per image (float32, forward pass); "
                f"{what} {params * 4 / 2**20:.2f} MiB")  # fmt: skip
    rows.append(f"without weight sharing (every conv locally connected): {unshared:,}, "
                f"{unshared / max(params, 1):.1f}× as many")  # fmt: skip
    return "\n".join(row.rstrip() for row in rows)
