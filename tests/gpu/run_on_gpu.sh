#!/usr/bin/env bash
# The GPU check in one command, run THERE (the GPU machine, no package registry) from the repository root:
#     tests/gpu/run_on_gpu.sh                 # verify + unpack the staged wheels, venv, providers, gpu_check.py
#     tests/gpu/run_on_gpu.sh --check-parts   # only say which staged parts are here (exit 3 if any is missing)
#     tests/gpu/run_on_gpu.sh -- --skip-http  # arguments after -- go to tests/gpu/gpu_check.py
# Everything it writes for people goes to $OUT (else ./reports/gpu/): run_on_gpu.log, gpu_report.json/.md, logs.
# The venv and the unpacked wheels stay in $GPU_STAGE (default .gpu-stage, git-ignored), so a rerun on a warm
# machine skips the install. Exit codes: 3 parts missing, 4 checksum mismatch, 5 install failed, else gpu_check's.
# Bounded: the install takes about a minute, gpu_check.py GPU_CHECK_TIMEOUT_S (default 380 s) at most.
set -euo pipefail

stage=${GPU_STAGE:-.gpu-stage}
out=${OUT:-reports/gpu}
check_only=0
check_args=()
while (($#)); do
    case "$1" in
        --check-parts) check_only=1; shift ;;
        --) shift; check_args=("$@"); break ;;
        -h | --help) sed -n '2,9p' "$0"; exit 0 ;;
        *) echo "run_on_gpu.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
mkdir -p "$out"
# Everything also goes to $out/run_on_gpu.log; on exit the log is flushed before the shell returns.
exec {console}>&1
exec > >(tee -a "$out/run_on_gpu.log" >&"$console") 2>&1
tee_pid=$!
trap 'exec >&"$console" 2>&1; wait "$tee_pid" || true' EXIT
echo "== run_on_gpu.sh $(date -u +%Y-%m-%dT%H:%M:%SZ) on ${HOSTNAME:-this machine} in $PWD =="

manifest=$stage/manifest.txt
if [[ ! -f $manifest ]]; then
    echo "MISSING: $manifest (carry it with the first part; tests/gpu/stage.sh wrote it)"
    exit 3
fi
expected_parts=$(awk '$1 == "parts" {print $2}' "$manifest")
missing=()
corrupt=()
while read -r _ sha size name; do
    part=$stage/$name
    if [[ ! -f $part ]]; then
        missing+=("$part")
    elif [[ $(stat -c %s "$part") != "$size" ]]; then
        missing+=("$part (has $(stat -c %s "$part") of $size bytes: carry it again)")
    elif [[ $(sha256sum "$part" | cut -d' ' -f1) != "$sha" ]]; then
        corrupt+=("$part")
    fi
done < <(awk '$1 == "part"' "$manifest")
echo "staged parts: $((expected_parts - ${#missing[@]} - ${#corrupt[@]})) of $expected_parts present and verified"
if ((${#missing[@]})); then
    printf 'MISSING: %s\n' "${missing[@]}"
    exit 3
fi
if ((${#corrupt[@]})); then
    printf 'CHECKSUM MISMATCH (carry again): %s\n' "${corrupt[@]}"
    exit 4
fi
((check_only)) && exit 0

bundle_sha=$(awk '$1 == "bundle" {print $2}' "$manifest")
venv=$stage/venv
stamp=$venv/.installed-$bundle_sha
if [[ ! -f $stamp ]]; then
    echo "== unpacking =="
    rm -rf "$stage/unpacked" "$venv"
    mkdir -p "$stage/unpacked"
    cat "$stage"/part-* >"$stage/bundle.tar"
    if [[ $(sha256sum "$stage/bundle.tar" | cut -d' ' -f1) != "$bundle_sha" ]]; then
        echo "CHECKSUM MISMATCH: the joined parts do not hash to the manifest's bundle sha256 $bundle_sha"
        exit 4
    fi
    tar -C "$stage/unpacked" -xf "$stage/bundle.tar"
    rm -f "$stage/bundle.tar"

    staged_python=$(awk '$1 == "python" {print $2}' "$manifest")
    have_python=$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
    if [[ $staged_python != "$have_python" ]]; then
        echo "INSTALL FAILED: the wheels are for Python $staged_python, python3 here is $have_python;"
        echo "  re-stage with: tests/gpu/stage.sh --python-version $have_python"
        exit 5
    fi
    echo "== venv (--system-site-packages: torch and its nvidia wheels are reused) =="
    if python3 -m venv --system-site-packages "$venv" 2>/dev/null; then
        pip=("$venv/bin/python" -m pip)
    elif python3 -m venv --system-site-packages --without-pip "$venv" && python3 -m pip --version >/dev/null; then
        pip=(python3 -m pip --python "$venv/bin/python")  # no ensurepip here: drive the venv with the system pip
    else
        echo "INSTALL FAILED: python3 can make no venv with pip (no ensurepip, no system pip)"
        exit 5
    fi
    if ! "${pip[@]}" install --quiet --disable-pip-version-check --no-deps --no-index \
        "$stage"/unpacked/wheels/*.whl; then
        echo "INSTALL FAILED: pip install --no-deps --no-index of the staged wheels (see above)"
        exit 5
    fi
    rm -rf "$stage/unpacked"
    touch "$stamp"
else
    echo "== venv already installed from this bundle ($venv) =="
fi
python=$venv/bin/python

echo "== CUDA libraries =="
"$python" tests/gpu/cuda_libs.py
lib_path=$("$python" tests/gpu/cuda_libs.py --ld-path)
export LD_LIBRARY_PATH=$lib_path${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}

echo "== onnxruntime =="
"$python" - <<'EOF'
import onnxruntime, sys
print("python", sys.version.split()[0], "| onnxruntime", onnxruntime.__version__, "from", onnxruntime.__file__)
print("available providers:", onnxruntime.get_available_providers())
if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
    print("NOTE: this onnxruntime has no CUDA provider: is a CPU onnxruntime shadowing the staged onnxruntime-gpu?")
EOF
echo "== nvidia-smi =="
nvidia-smi || echo "nvidia-smi: not available here"
nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used --format=csv || true

echo "== gpu_check.py (at most ${GPU_CHECK_TIMEOUT_S:-380} s) =="
status=0
timeout --kill-after=20 "${GPU_CHECK_TIMEOUT_S:-380}" \
    "$python" tests/gpu/gpu_check.py --out "$out" --work "$stage/work" "${check_args[@]}" || status=$?
if ((status == 124 || status == 137)); then
    echo "gpu_check.py ran past ${GPU_CHECK_TIMEOUT_S:-380} s and was stopped; its partial report is in $out"
fi
[[ -f $out/gpu_report.md ]] && cat "$out/gpu_report.md"
echo "== done: exit $status; reports in $out =="
exit "$status"
