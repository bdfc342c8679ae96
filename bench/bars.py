"""Issue 4's bars, evaluated as ratios of figures measured in the same run, and lookups into the results dict.

Every figure is read from the results the run just measured; nothing is typed in by hand.
"""

from __future__ import annotations

from typing import Any

SERVER_NAMES = {"baseline": "plain FastAPI", "service_default": "service (default)", "service_tuned": "service (tuned)"}
PATH_NAMES = {"tensor": "v2 binary tensor", "image": "REST image", "tensor_batch32": "v2 binary, 32 rows/request"}


def steps_of(results: dict[str, Any], model: str, server: str, path: str) -> list[dict[str, Any]]:
    """The steps of one sweep that completed requests (empty when the sweep did not run)."""
    report = results["models"].get(model, {}).get("servers", {}).get(server, {}).get(path)
    return [s for s in report["steps"] if s["ok"]] if report else []


def peak(results: dict[str, Any], model: str, server: str, path: str) -> dict[str, Any] | None:
    """The step of a sweep with the most images/s."""
    steps = steps_of(results, model, server, path)
    return max(steps, key=lambda s: s["images_per_s"]) if steps else None


def _at(results: dict[str, Any], model: str, server: str, path: str, concurrency: int) -> dict[str, Any] | None:
    return next((s for s in steps_of(results, model, server, path) if s["load"]["concurrency"] == concurrency), None)


def _best_service(
    results: dict[str, Any], model: str, path: str, pick: Any = None
) -> tuple[str, dict[str, Any]] | None:
    """The better of the default and tuned service for ``path`` (by peak images/s, or by ``pick(step)``)."""
    candidates = []
    for server in ("service_default", "service_tuned"):
        step = pick(server) if pick else peak(results, model, server, path)
        if step is not None:
            candidates.append((SERVER_NAMES[server], step))
    return max(candidates, key=lambda c: c[1]["images_per_s"]) if candidates else None


def _bar(
    name: str, measured: str, target: str, ratio: float | None, threshold: float, higher: bool = True
) -> dict[str, Any]:
    met = None if ratio is None else (ratio >= threshold if higher else ratio <= threshold)
    return {"bar": name, "measured": measured, "target": target, "ratio": ratio, "met": met}


def summarise_bars(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 4's bars, each with the measured figures, the ratio and whether it holds (None: not measured)."""
    bars = []
    models = results["models"]
    if "resnet18" in models:
        raw = models["resnet18"]["raw"]
        for path, threshold in (("tensor", 0.95), ("image", 0.9)):
            best = _best_service(results, "resnet18", path)
            ratio = best[1]["images_per_s"] / raw["best_images_per_s"] if best else None
            measured = (
                f"{best[1]['images_per_s']:,.1f} img/s ({best[0]}) vs raw {raw['best_images_per_s']:,.1f}"
                if best
                else "-"
            )
            bars.append(
                _bar(
                    f"ResNet-18 {PATH_NAMES[path]}: service peak / raw ORT best",
                    measured,
                    f">= {threshold}",
                    ratio,
                    threshold,
                )
            )
        c1 = _best_service(results, "resnet18", "tensor", lambda s: _at(results, "resnet18", s, "tensor", 1))
        if c1:
            p50 = c1[1]["latency_ms"]["p50"]
            bars.append(
                _bar(
                    "ResNet-18 c=1: service p50 - raw batch-1 p50 (ms)",
                    f"{p50:.2f} vs {raw['batch1_p50_ms']:.2f} ms",
                    "<= 1 ms",
                    p50 - raw["batch1_p50_ms"],
                    1.0,
                    higher=False,
                )
            )
    if "tiny_cnn" in models:
        raw = models["tiny_cnn"]["raw"]
        base64_ = _at(results, "tiny_cnn", "baseline", "tensor", 64)
        best = _best_service(results, "tiny_cnn", "tensor")
        ratio = best[1]["images_per_s"] / base64_["images_per_s"] if best and base64_ else None
        ceiling = raw["best_images_per_s"] / base64_["images_per_s"] if base64_ else None
        measured = (
            f"{best[1]['images_per_s']:,.0f} ({best[0]}) vs {base64_['images_per_s']:,.0f} img/s; raw best / baseline "
            f"= {ceiling:.2f}"
            if best and base64_ and ceiling
            else "-"
        )
        bars.append(_bar("small CNN tensor: service peak / plain FastAPI at c=64", measured, ">= 2.5", ratio, 2.5))
        base1 = _at(results, "tiny_cnn", "baseline", "tensor", 1)
        c1 = _best_service(results, "tiny_cnn", "tensor", lambda s: _at(results, "tiny_cnn", s, "tensor", 1))
        ratio = c1[1]["latency_ms"]["p50"] / base1["latency_ms"]["p50"] if c1 and base1 else None
        measured = f"{c1[1]['latency_ms']['p50']:.2f} vs {base1['latency_ms']['p50']:.2f} ms" if c1 and base1 else "-"
        bars.append(
            _bar("small CNN c=1: service p50 / plain FastAPI p50", measured, "<= 1.0", ratio, 1.0, higher=False)
        )
        best = _best_service(results, "tiny_cnn", "tensor_batch32")
        ratio = best[1]["images_per_s"] / raw["batch32_images_per_s"] if best else None
        measured = (
            f"{best[1]['images_per_s']:,.0f} vs raw b32 {raw['batch32_images_per_s']:,.0f} img/s" if best else "-"
        )
        bars.append(_bar("small CNN, 32 rows/request: service / raw ORT batch 32", measured, ">= 0.8", ratio, 0.8))
    pre = results.get("preprocess")
    if pre:
        rate = pre["images_per_cpu_s"]
        bars.append(
            _bar("preprocess alone, 224x224 JPEG: images per CPU-second", f"{rate:,.0f}", ">= 1,500", rate / 1500, 1.0)
        )
    return bars
