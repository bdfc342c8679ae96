#!/usr/bin/env bash
# Stage the wheels a GPU machine without a package registry needs to run tests/gpu/run_on_gpu.sh.
#
# Run HERE (a machine that reaches PyPI), from the repository root:
#     tests/gpu/stage.sh                 # onnxruntime-gpu + the service's, load harness's and exporter's wheels
#     tests/gpu/stage.sh --cuda13        # also CUDA 13 + cuDNN 9 runtime wheels (a target whose torch brought CUDA 12)
#     tests/gpu/stage.sh --extra 'tensorrt-cu13-libs==10.*'   # any further wheel, without its dependencies
# Options: --dest DIR (default .gpu-stage), --python-version 3.11, --part-mib 60.
#
# Writes DIR/wheels/, DIR/bundle.tar split into DIR/part-00, part-01, … of at most --part-mib MiB, and
# DIR/manifest.txt (sha256 of the whole tar and of every part). Torch is never staged: the target brings it.
# docs/gpu.md says how to carry the parts and run the check.
set -euo pipefail

dest=.gpu-stage
python_version=3.11
part_mib=60
cuda13=0
extras=()
while (($#)); do
    case "$1" in
        --dest) dest=$2; shift 2 ;;
        --python-version) python_version=$2; shift 2 ;;
        --part-mib) part_mib=$2; shift 2 ;;
        --cuda13) cuda13=1; shift ;;
        --extra) extras+=("$2"); shift 2 ;;
        -h | --help) sed -n '2,12p' "$0"; exit 0 ;;
        *) echo "stage.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
if [[ ! -f pyproject.toml || ! -d tests/gpu ]]; then
    echo "stage.sh: run from the repository root" >&2
    exit 2
fi
if ((part_mib < 1 || part_mib > 63)); then
    echo "stage.sh: --part-mib must be 1..63 (a call carries at most 64 MiB, the manifest included)" >&2
    exit 2
fi
python=${PYTHON:-.venv/bin/python}
[[ -x $python ]] || python=python3
abi="cp${python_version//./}"

# The CUDA 13 + cuDNN 9 libraries onnxruntime-gpu 1.31's CUDA provider loads (the versions torch 2.14.1+cu130
# brought into the dev venv). Only for a target whose torch brought CUDA 12: hundreds of MB.
cuda13_wheels=(
    nvidia-cuda-runtime==13.0.96
    nvidia-cublas==13.1.1.3
    nvidia-cufft==12.0.0.61
    nvidia-curand==10.4.0.35
    nvidia-cuda-nvrtc==13.0.88
    nvidia-nvjitlink==13.5.37
    nvidia-cudnn-cu13==9.24.0.43
)

rm -rf "$dest"
mkdir -p "$dest/wheels"

# What the target needs besides torch, read from pyproject.toml so the pins never drift: the service's
# dependencies, the load harness (minus tritonclient, which it does not import), and onnx + onnxscript for the
# exporter (torch.onnx's dynamo exporter needs both; torchvision, scikit-learn and tqdm are for training only).
"$python" - "$dest/requirements.txt" <<'EOF'
import re
import sys
import tomllib

project = tomllib.load(open("pyproject.toml", "rb"))["project"]
extras = project["optional-dependencies"]
wanted = list(project["dependencies"])
wanted += [r for r in extras["loadtest"] if not r.startswith("tritonclient")]
wanted += [r for r in extras["export"] if re.match(r"onnx(script)?\b", r)]
open(sys.argv[1], "w").write("\n".join(wanted) + "\n")
EOF
echo "== requirements (from pyproject.toml) =="
cat "$dest/requirements.txt"

# pip does not widen --platform to older glibc tags itself: list every manylinux tag up to glibc 2.28.
platforms=()
for glibc in 28 27 26 25 24 23 22 21 20 19 18 17 16 15 14 13 12 11 10 9 8 7 6 5; do
    platforms+=(--platform "manylinux_2_${glibc}_x86_64")
done
platforms+=(--platform manylinux2014_x86_64 --platform manylinux2010_x86_64 --platform manylinux1_x86_64)
pip_download=("$python" -m pip download --quiet --disable-pip-version-check --dest "$dest/wheels"
    --only-binary=:all: "${platforms[@]}" --implementation cp
    --python-version "$python_version" --abi "$abi" --abi abi3 --abi none)
"${pip_download[@]}" -r "$dest/requirements.txt"
if ((cuda13)); then
    "${pip_download[@]}" --no-deps "${cuda13_wheels[@]}"
fi
if ((${#extras[@]})); then
    "${pip_download[@]}" --no-deps "${extras[@]}"
fi
# Torch and its CUDA wheels are the target's own; a dependency that drags them in would be a mistake here.
if compgen -G "$dest/wheels/torch-*" >/dev/null || compgen -G "$dest/wheels/triton-*" >/dev/null; then
    echo "stage.sh: torch or triton was pulled in as a dependency; the target brings its own" >&2
    exit 1
fi

echo "== wheels =="
(cd "$dest/wheels" && printf '%s\n' *.whl | tee ../wheels.txt)
tar -C "$dest" -cf "$dest/bundle.tar" wheels requirements.txt wheels.txt
split --bytes="${part_mib}M" --numeric-suffixes --suffix-length=2 "$dest/bundle.tar" "$dest/part-"
parts=("$dest"/part-*)
{
    echo "# tests/gpu/stage.sh $(date -u +%Y-%m-%dT%H:%M:%SZ): python $python_version, ${#parts[@]} part(s)"
    echo "python $python_version"
    echo "parts ${#parts[@]}"
    echo "bundle $(sha256sum "$dest/bundle.tar" | cut -d' ' -f1) $(stat -c %s "$dest/bundle.tar") bundle.tar"
    for part in "${parts[@]}"; do
        echo "part $(sha256sum "$part" | cut -d' ' -f1) $(stat -c %s "$part") $(basename "$part")"
    done
} >"$dest/manifest.txt"
rm -rf "$dest/wheels" "$dest/bundle.tar"

echo "== staged: $(du -sh "$dest" | cut -f1) in ${#parts[@]} part(s) of at most ${part_mib} MiB =="
cat "$dest/manifest.txt"
echo "== carry one part per call (each call carries at most 64 MiB), then run the check =="
last=$((${#parts[@]} - 1))
for i in "${!parts[@]}"; do
    command="bash tests/gpu/run_on_gpu.sh --check-parts"
    ((i < last)) || command="bash tests/gpu/run_on_gpu.sh"
    [[ $dest == .gpu-stage ]] || command="GPU_STAGE=$dest $command"
    echo "call $((i + 1)): carry [\"${parts[$i]}\", \"$dest/manifest.txt\"]  command: $command"
done
echo "(the parts stay on the machine while it is warm; run_on_gpu.sh names any part that is missing)"
