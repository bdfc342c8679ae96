"""Which CUDA, cuDNN and TensorRT libraries this Python can give ONNX Runtime, and what its providers still lack.

Standard library only, so run_on_gpu.sh can ask before any venv exists:
    python3 tests/gpu/cuda_libs.py --ld-path    # the nvidia/*/lib folders, joined for LD_LIBRARY_PATH
    python3 tests/gpu/cuda_libs.py              # what is found and missing, in words (exit 0 either way)
    python3 tests/gpu/cuda_libs.py --json       # the same as JSON (gpu_check.py puts it in its report)
Torch's CUDA wheels put their libraries in site-packages/nvidia/<package>/lib (CUDA 12: nvidia/cublas/lib, …;
CUDA 13: nvidia/cu13/lib); TensorRT's wheels in site-packages/tensorrt_libs.
"""

from __future__ import annotations

import argparse
import json
import re
import site
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

#: onnxruntime-gpu 1.31.1's CUDA provider ("Require cuDNN 9.* and CUDA 13.*"): soname -> what it is.
CUDA_PROVIDER_NEEDS = {
    "libcudart.so.13": "CUDA 13 runtime (nvidia-cuda-runtime 13.x)",
    "libcublas.so.13": "cuBLAS 13 (nvidia-cublas 13.x)",
    "libcublasLt.so.13": "cuBLASLt 13 (nvidia-cublas 13.x)",
    "libcufft.so.12": "cuFFT of CUDA 13 (nvidia-cufft 12.x)",
    "libcurand.so.10": "cuRAND (nvidia-curand 10.x)",
    "libcudnn.so.9": "cuDNN 9 (nvidia-cudnn-cu13 9.x)",
}
#: Its TensorRT provider: TensorRT 10 on top of the CUDA provider's libraries.
TENSORRT_PROVIDER_NEEDS = {
    "libnvinfer.so.10": "TensorRT 10 (tensorrt-cu13-libs)",
    "libnvinfer_plugin.so.10": "TensorRT 10 plugins (tensorrt-cu13-libs)",
    "libnvonnxparser.so.10": "TensorRT 10 ONNX parser (tensorrt-cu13-libs)",
}
_SONAME = re.compile(r"^(lib[\w+.-]+?\.so)\.(\d+)")


@dataclass(frozen=True)
class CudaLibs:
    """What was found: library folders, sonames, the CUDA major of cuBLAS, and what each provider misses."""

    lib_dirs: list[str]
    sonames: dict[str, str]  # soname -> the folder (or "system") it was found in
    cublas_majors: list[int]
    cuda_missing: list[str] = field(default_factory=list)
    tensorrt_missing: list[str] = field(default_factory=list)

    def explain(self) -> str:
        """The finding in a few lines, with what to stage when something is missing."""
        lines = [f"library folders: {', '.join(self.lib_dirs) or 'none under site-packages/nvidia'}"]
        majors = ", ".join(f"CUDA {m}" for m in self.cublas_majors) or "none"
        lines.append(f"cuBLAS found for: {majors}")
        if not self.cuda_missing:
            lines.append("CUDA provider: every library onnxruntime-gpu 1.31.1 needs is present (CUDA 13, cuDNN 9)")
        else:
            lines.append("CUDA provider CANNOT start, missing: " + "; ".join(self._named(self.cuda_missing)))
            if 12 in self.cublas_majors and 13 not in self.cublas_majors:
                lines.append(
                    "  torch here brought CUDA 12, onnxruntime-gpu 1.31.1 needs CUDA 13: stage with "
                    "`tests/gpu/stage.sh --cuda13` and carry its extra parts"
                )
        if not self.tensorrt_missing:
            lines.append("TensorRT provider: TensorRT 10 libraries present")
        else:
            lines.append(
                "TensorRT provider cannot start (expected unless staged with --extra tensorrt-cu13-libs), missing: "
                + ", ".join(self.tensorrt_missing)
            )
        return "\n".join(lines)

    @staticmethod
    def _named(sonames: list[str]) -> list[str]:
        return [f"{s} ({CUDA_PROVIDER_NEEDS.get(s, TENSORRT_PROVIDER_NEEDS.get(s, '?'))})" for s in sonames]


def site_dirs() -> list[Path]:
    """Every site-packages folder of this interpreter (venv and, with --system-site-packages, the system's)."""
    found = [*site.getsitepackages(), site.getusersitepackages(), *sys.path]
    return list(dict.fromkeys(Path(p) for p in found if p and Path(p).is_dir() and Path(p).name.endswith("-packages")))


def library_dirs(sites: list[Path]) -> list[Path]:
    """nvidia/*/lib (torch's CUDA wheels) and tensorrt_libs folders, in site order."""
    dirs: list[Path] = []
    for site_dir in sites:
        dirs += sorted(p for p in site_dir.glob("nvidia/*/lib") if p.is_dir())
        dirs += [p for p in (site_dir / "tensorrt_libs",) if p.is_dir()]
    return list(dict.fromkeys(dirs))


def _system_sonames() -> dict[str, str]:
    """Libraries the dynamic loader finds without LD_LIBRARY_PATH (``ldconfig -p``), e.g. a system CUDA."""
    try:
        listing = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True, timeout=10, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return {}
    return {line.split()[0]: "system" for line in listing.splitlines()[1:] if line.strip()}


def find(sites: list[Path] | None = None, *, system: bool = True) -> CudaLibs:
    """Scan the library folders (and, with ``system``, the loader's cache) for the sonames the providers load."""
    dirs = library_dirs(site_dirs() if sites is None else sites)
    sonames: dict[str, str] = _system_sonames() if system else {}
    for folder in dirs:
        for lib in folder.iterdir():
            match = _SONAME.match(lib.name)
            if match:
                sonames.setdefault(f"{match.group(1)}.{match.group(2)}", str(folder))
    majors = sorted({int(s.rsplit(".", 1)[1]) for s in sonames if s.startswith("libcublas.so.")})
    return CudaLibs(
        lib_dirs=[str(d) for d in dirs],
        sonames={s: where for s, where in sorted(sonames.items()) if s.startswith(("libcu", "libnv"))},
        cublas_majors=majors,
        cuda_missing=[s for s in CUDA_PROVIDER_NEEDS if s not in sonames],
        tensorrt_missing=[s for s in TENSORRT_PROVIDER_NEEDS if s not in sonames],
    )


def main(argv: list[str] | None = None) -> int:
    """Print the LD_LIBRARY_PATH value, the JSON finding, or the finding in words."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ld-path", action="store_true", help="print the library folders joined by ':'")
    parser.add_argument("--json", action="store_true", help="print the finding as JSON")
    args = parser.parse_args(argv)
    libs = find()
    if args.ld_path:
        print(":".join(libs.lib_dirs))
    elif args.json:
        print(json.dumps(asdict(libs), indent=2))
    else:
        print(libs.explain())
    return 0


if __name__ == "__main__":
    sys.exit(main())
