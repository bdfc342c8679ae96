"""Print the pinned requirements of one cnnserve image variant, read from pyproject.toml (the single source).

The Dockerfile's builder stage runs it so the image installs exactly the versions pyproject.toml pins, with one
swap per variant: ``cpu`` replaces ``onnxruntime-gpu`` by ``onnxruntime`` of the same version (a 5x smaller wheel
with the same CPU kernels); ``cuda`` keeps ``onnxruntime-gpu`` and adds its ``cuda``/``cudnn`` extras, which bring
NVIDIA's CUDA and cuDNN libraries as pip wheels, so the image needs only the host's driver, not a CUDA base image,
plus TensorRT 10's libraries (``TENSORRT_LIBS``, pinned here: pyproject.toml has no place for a variant's extras).
Usage: ``python deploy/requirements.py --variant cpu [--extra loadtest] [--pyproject PATH]``.
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from pathlib import Path

VARIANTS = ("cpu", "cuda")
GPU_PACKAGE = "onnxruntime-gpu"
# Extras of onnxruntime-gpu that pull NVIDIA's runtime libraries (cudart, cuBLAS, cuFFT, cuRAND, NVRTC, cuDNN).
CUDA_EXTRAS = "cuda,cudnn"
# onnxruntime-gpu 1.31's TensorRT provider links libnvinfer.so.10 and libnvonnxparser.so.10, which this wheel brings
# (into site-packages/tensorrt_libs/). TensorRT 11 renames them (.so.11): below 11, or the provider cannot load.
# From 10.13, the first with CUDA 13 builds. On PyPI it is a small stub whose build fetches the real wheel (~2.5 GB)
# from pypi.nvidia.com; pip picks the newest 10.x, and the engine cache's folder name carries that version, so a
# newer 10.x never loads engines an older one built (service/trt_cache.py).
TENSORRT_LIBS = "tensorrt-cu13-libs>=10.13,<11"
_NAME_RE = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*(.*)$")


def _swap_runtime(requirement: str, variant: str) -> str:
    """Rewrite the onnxruntime-gpu requirement for ``variant``; leave every other requirement untouched."""
    match = _NAME_RE.match(requirement)
    if match is None or match.group(1).lower() != GPU_PACKAGE:
        return requirement
    if match.group(2):
        raise ValueError(f"{requirement!r}: extras on {GPU_PACKAGE} are set per variant here; drop them in pyproject")
    spec = match.group(3)
    return f"onnxruntime{spec}" if variant == "cpu" else f"{GPU_PACKAGE}[{CUDA_EXTRAS}]{spec}"


def requirements(pyproject: Path, variant: str, extras: list[str]) -> list[str]:
    """Return the base dependencies plus ``extras`` of pyproject.toml, rewritten for ``variant``.

    Raises:
        ValueError: the variant is unknown, an extra is not declared, or the base dependencies lack onnxruntime-gpu
            (then the swap would silently do nothing and the image would run without the pinned runtime).
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant {variant!r} is unknown; expected one of {', '.join(VARIANTS)}")
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    base: list[str] = project["dependencies"]
    if not any((m := _NAME_RE.match(r)) and m.group(1).lower() == GPU_PACKAGE for r in base):
        raise ValueError(f"{pyproject}: [project].dependencies has no {GPU_PACKAGE} pin to swap; got {base}")
    declared: dict[str, list[str]] = project.get("optional-dependencies", {})
    chosen = list(base)
    pending, seen = list(extras), set[str]()
    while pending:  # an extra may name others through a self-reference, as `dev = ["cnnserve[export]"]` does
        extra = pending.pop()
        if extra in seen:
            continue
        if extra not in declared:
            raise ValueError(f"extra {extra!r} is not declared in {pyproject}; declared: {sorted(declared)}")
        seen.add(extra)
        for req in declared[extra]:
            match = _NAME_RE.match(req)
            if match and match.group(1).lower() == project["name"].lower():
                pending.extend(e.strip() for e in (match.group(2) or "[]")[1:-1].split(",") if e.strip())
            else:
                chosen.append(req)
    if variant == "cuda":
        chosen.append(TENSORRT_LIBS)
    return [_swap_runtime(r, variant) for r in dict.fromkeys(chosen)]


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and print one requirement per line (the format of ``pip install -r``)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", choices=VARIANTS, required=True, help="image variant")
    parser.add_argument("--extra", action="append", default=[], help="optional-dependency group to add")
    parser.add_argument("--pyproject", type=Path, default=Path("pyproject.toml"), help="path of pyproject.toml")
    args = parser.parse_args(argv)
    try:
        lines = requirements(args.pyproject, args.variant, args.extra)
    except ValueError as err:
        print(f"requirements.py: {err}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
