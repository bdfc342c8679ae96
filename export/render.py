"""The summary table, drawn the way CNN course notes draw VGG-16: one row per layer, totals at the bottom."""

from __future__ import annotations

from export.shapes import ShapeReport


def _human(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(int(n))


def format_summary(report: ShapeReport) -> str:
    """Render a :class:`ShapeReport` as a fixed-width text table."""
    c, h, w = (report.input + [1, 1, 1])[:3]
    header = f"{'layer':<34} {'type':<18} {'output W×H×D':>16} {'activations':>12} {'params':>12} {'MACs':>10}  check"
    rows = [header, "-" * len(header)]
    rows.append(f"{'input':<34} {'':<18} {f'{w}×{h}×{c}':>16} {_human(c * h * w):>12} {'0':>12} {'0':>10}")
    for layer in report.layers:
        check = "–" if layer.predicted is None else ("ok" if layer.integral else "ok (rounded)")
        rows.append(
            f"{layer.name[:34]:<34} {layer.kind[:18]:<18} {layer.volume:>16} {_human(layer.activations):>12} "
            f"{layer.params:>12,} {_human(layer.macs):>10}  {check}"
        )
    rows.append("-" * len(header))
    acts = report.total_activations
    rows.append(
        f"{'total':<34} {f'{len(report.layers)} layers':<18} {'':>16} {_human(acts):>12} "
        f"{report.total_params:>12,} {_human(report.total_macs):>10}"
    )
    rows.append(f"activation memory {acts * 4 / 2**20:.2f} MiB per image (float32, forward pass); "
                f"parameters {report.total_params * 4 / 2**20:.2f} MiB")  # fmt: skip
    return "\n".join(rows)
