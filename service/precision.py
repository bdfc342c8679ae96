"""What numeric precision a model really runs at on each provider, and the parity each precision is held to.

A model's ``precision`` in config.json (``fp32`` | ``tf32`` | ``fp16``) is what its operator asks for; what runs
depends on the provider that started. The CPU provider computes in fp32 whatever is asked. CUDA runs fp32 with
TensorFloat-32 off, or tf32 (ORT's own CUDA default, which the export's fp32 parity check never saw); it cannot run
an fp32 graph in fp16, so ``fp16`` falls to ``tf32`` there. TensorRT builds fp16 engines for ``fp16``; for the
other two it builds fp32 engines, in which TensorRT itself may pick TF32 kernels (ORT exposes no switch for that),
so TensorRT at ``fp32`` is held to the tf32 tolerance.

A graph stored in fp16 (``versions.<v>.graph_precision``, ``export build --precision fp16``) runs in fp16 on both
GPU providers. It is refused on the CPU provider: ORT's CPU provider widens the fp16 weights back to fp32 at load
and computes in fp32, so the model would carry the fp16 rounding without the fp16 speed, which no one means to serve.
"""

from __future__ import annotations

from service.config_model import ConfigError, ModelConfig

#: Largest difference allowed between a provider's outputs and PyTorch's fp32 outputs on the same inputs, relative
#: to the largest reference magnitude: the measure the export's parity check uses (``export/validate.py``), whose
#: default is the CPU's 1e-4. The GPU figures are what those arithmetics promise for classifier logits (TF32 keeps
#: 10 mantissa bits, fp16 too with a narrower range); the GPU check (``tests/gpu/``) measures each against its own.
TOLERANCES: dict[tuple[str, str], float] = {
    ("cpu", "fp32"): 1e-4,
    ("cuda", "fp32"): 1e-4,
    ("cuda", "tf32"): 2e-2,
    ("cuda", "fp16"): 5e-2,
    ("tensorrt", "tf32"): 2e-2,
    ("tensorrt", "fp16"): 5e-2,
}


def running_precision(provider: str, precision: str, graph: str = "fp32") -> str:
    """The precision a provider (``cpu`` | ``cuda`` | ``tensorrt``) runs when a model asks for ``precision``.

    ``graph`` is the precision the graph's weights are stored in: an fp16 graph runs in fp16 on either GPU provider.
    """
    if provider == "cpu":
        return "fp32"
    if graph == "fp16":
        return "fp16"
    if provider == "cuda":
        return "fp32" if precision == "fp32" else "tf32"
    return "fp16" if precision == "fp16" else "tf32"


def tolerance(provider: str, precision: str, graph: str = "fp32") -> float:
    """The parity a model asking for ``precision`` is held to on ``provider`` (see ``TOLERANCES``)."""
    return TOLERANCES[(provider, running_precision(provider, precision, graph))]


def refuse_fp16_graph_on_cpu(config: ModelConfig, version: str, provider: str) -> None:
    """Refuse to serve an fp16 graph when ``provider`` (``cpu`` | ``cuda`` | ``tensorrt``) would run it on the CPU.

    Called with the best provider of the chain before any session is made, and with the one that really started
    after (a GPU provider whose libraries or device are missing falls back to the CPU without an error).

    Raises:
        ConfigError: naming the model, the version, the graph precision and what to do instead.
    """
    if provider != "cpu" or config.versions[version].graph_precision != "fp16":
        return
    raise ConfigError(
        f"model '{config.name}' version {version}: the graph is stored in fp16 (config.json "
        f"versions.{version}.graph_precision) for GPU providers, but it would run on the CPU provider; serve it "
        "with a GPU provider (CNNSERVE_PROVIDERS=cuda or tensorrt, onnxruntime-gpu and a usable GPU), or serve an "
        "fp32 export of the model on CPU"
    )
