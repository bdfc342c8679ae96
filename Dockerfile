# cnnserve: the serving image (service/ + the default model repository), without torch or export/.
#   CPU (default):  docker build -t cnnserve:0.1.0 .
#   CUDA:           docker build --build-arg VARIANT=cuda -t cnnserve:0.1.0-cuda .
#   load generator: docker build --target loadtest -t cnnserve-loadtest:0.1.0 .
# Variants: VARIANT=cpu installs `onnxruntime` of the version pyproject.toml pins for `onnxruntime-gpu` (same CPU
# kernels; a 24 MB wheel, 69 MB installed, against 256 MB and 340 MB); VARIANT=cuda keeps `onnxruntime-gpu` with its
# `cuda,cudnn` extras, which bring NVIDIA's CUDA 13 and cuDNN 9 libraries as pip wheels, so the host needs only the
# driver (>= 580) and the NVIDIA container toolkit, not a CUDA base image, and adds TensorRT 10's libraries for the
# TensorRT provider (tensorrt-cu13-libs<11, pinned in deploy/requirements.py; its PyPI stub fetches the ~2.5 GB wheel
# from pypi.nvidia.com, so a cuda build must reach that host). BASE_IMAGE may name any image with
# Python 3.11/3.12 and `python3 -m venv`; every stage uses the same one because the venv is copied between them.
# Classic Dockerfile syntax only (no BuildKit mounts): it builds with podman/buildah and with docker alike.
ARG BASE_IMAGE=python:3.11-slim

# ---- builder: a venv holding exactly the pinned service dependencies, then the service itself ----
FROM ${BASE_IMAGE} AS builder
ARG VARIANT=cpu
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python3 -m venv /opt/cnnserve
ENV PATH=/opt/cnnserve/bin:$PATH
# Dependencies first, from pyproject.toml alone, so a code change rebuilds only the last layer.
COPY pyproject.toml README.md ./
COPY deploy/requirements.py deploy/
RUN python deploy/requirements.py --variant "${VARIANT}" > requirements.txt \
    && pip install --no-cache-dir -r requirements.txt
COPY service/ service/
# --no-deps: the requirements above are the variant's; pyproject's onnxruntime-gpu pin must not come back.
RUN pip install --no-cache-dir --no-deps . \
    && python -c "import service.main" \
    && ! python -c "import torch" 2>/dev/null

# ---- loadtest: the load generator (`python -m loadtest`), for the compose `loadtest` profile ----
FROM builder AS loadtest
LABEL org.opencontainers.image.title="cnnserve-loadtest" \
      org.opencontainers.image.description="Load generator for cnnserve deployments (open and closed loop)" \
      org.opencontainers.image.version="0.1.0" \
      io.cnnserve.variant="cpu"
RUN python deploy/requirements.py --variant cpu --extra loadtest > requirements-loadtest.txt \
    && pip install --no-cache-dir -r requirements-loadtest.txt
COPY loadtest/ loadtest/
RUN pip install --no-cache-dir --no-deps .
USER 10001:10001
ENTRYPOINT ["python", "-m", "loadtest"]
CMD ["--help"]

# ---- venv: the builder's venv without the installer (pip, setuptools), which the runtime never runs ----
FROM ${BASE_IMAGE} AS venv
COPY --from=builder /opt/cnnserve /opt/cnnserve
RUN /opt/cnnserve/bin/python -m pip uninstall --yes pip setuptools

# ---- runtime: the slim image that serves ----
FROM ${BASE_IMAGE} AS runtime
ARG VARIANT=cpu
LABEL org.opencontainers.image.title="cnnserve" \
      org.opencontainers.image.description="Inference serving for CNN image classifiers (ONNX Runtime, KServe v2)" \
      org.opencontainers.image.version="0.1.0" \
      io.cnnserve.variant="${VARIANT}"
# A fixed numeric UID/GID: Kubernetes' runAsNonRoot can verify a number, not a name.
# The TensorRT engine cache (CNNSERVE_TENSORRT_CACHE_PATH below) is the one folder the service writes: owned by that
# user, so a named volume mounted there starts with the same owner. Under a read-only root filesystem mount a volume
# there (compose and k8s/overlays/gpu do); without one the service warns and rebuilds engines at every start.
RUN groupadd --system --gid 10001 cnnserve \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin cnnserve \
    && mkdir -p /var/cache/cnnserve/tensorrt \
    && chown -R 10001:10001 /var/cache/cnnserve
COPY --from=venv /opt/cnnserve /opt/cnnserve
# CUDA variant: let the dynamic loader find the libraries of NVIDIA's pip wheels (site-packages/nvidia/*/lib),
# which onnxruntime's CUDA provider dlopens, and TensorRT's, which its wheel puts elsewhere (site-packages/
# tensorrt_libs/: found by file name, not by that path). The cpu variant has none, so the file stays empty. A cuda
# build then proves the TensorRT provider's own links (libnvinfer, libnvonnxparser .so.10) resolve, or stops here.
RUN find /opt/cnnserve -type d -path '*/site-packages/nvidia/*/lib' > /etc/ld.so.conf.d/cnnserve-nvidia.conf \
    && find /opt/cnnserve -name 'libnvinfer.so.10' -printf '%h\n' >> /etc/ld.so.conf.d/cnnserve-nvidia.conf \
    && ldconfig \
    && if [ "${VARIANT}" = cuda ]; then \
         /opt/cnnserve/bin/python -c "import ctypes, sys; [ctypes.CDLL(n) for n in sys.argv[1:]]" \
           libnvinfer.so.10 libnvonnxparser.so.10; \
       fi
# The default model repository is baked in, owned by root and read-only to the service; mount a volume over
# /models to serve another one.
COPY models/ /models/
# ORT_DISABLE_TELEMETRY: onnxruntime 1.31 otherwise tries to persist a telemetry device ID under $HOME (there is
# none: it warns at every start) and a server has no business reporting home.
ENV PATH=/opt/cnnserve/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    ORT_DISABLE_TELEMETRY=1 \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    CNNSERVE_REPOSITORY_PATH=/models \
    CNNSERVE_TENSORRT_CACHE_PATH=/var/cache/cnnserve/tensorrt \
    CNNSERVE_LOG_FORMAT=json
USER 10001:10001
WORKDIR /tmp
# HTTP (REST, KServe v2, /metrics) and KServe v2 over gRPC (tritonclient.grpc, grpc.health.v1).
EXPOSE 8000 8001
STOPSIGNAL SIGTERM
# Python's own urllib: the image carries no curl. urlopen raises on 503 (not ready) or no answer, and an uncaught
# exception exits with status 1, which is what "unhealthy" means to the engine.
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/v2/health/ready', timeout=2)"]
CMD ["python", "-m", "service", "--host", "0.0.0.0", "--port", "8000", "--grpc-port", "8001"]
