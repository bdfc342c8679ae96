"""Operator settings, read once from ``CNNSERVE_*`` environment variables (or CLI flags, which win).

Model facts (shapes, labels, batching defaults) live in each model's config.json; these settings only say how
this deployment runs them, and the batching fields here override config.json when set.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from service.config_model import MAX_QUEUE_DELAY_MICROSECONDS, MAX_QUEUE_SIZE

#: The repository shipped with the code: ``<repo root>/models`` holding the default LeNet-5 digits model.
DEFAULT_REPOSITORY = Path(__file__).resolve().parent.parent / "models"

CommaList = Annotated[tuple[str, ...], NoDecode]


class Settings(BaseSettings):
    """Everything an operator can tune; each field is ``CNNSERVE_<FIELD NAME IN CAPITALS>`` in the environment."""

    model_config = SettingsConfigDict(env_prefix="CNNSERVE_", frozen=True, extra="forbid")

    repository_path: Path = Field(default=DEFAULT_REPOSITORY, description="Model repository folder to serve.")
    models: CommaList = Field(
        default=(),
        description="Comma-separated model names to load at startup; empty loads every model in the repository.",
    )
    model_control: Literal["none", "explicit", "poll"] = Field(
        default="none",
        description="Who may change the models served after startup, as Triton's model control modes: none (nobody: "
        "load and unload answer 403), explicit (the v2 repository load/unload API), poll (the repository folder is "
        "watched; the API answers 403).",
    )
    repository_poll_s: float = Field(
        default=15.0,
        gt=0,
        le=3600,
        description="Poll mode: seconds between scans of the repository folder (stat calls only; Triton's default).",
    )
    host: str = Field(default="127.0.0.1", description="Interface to listen on (0.0.0.0 in containers).")
    port: int = Field(default=8000, ge=0, le=65535, description="TCP port to listen on.")
    grpc_port: int = Field(
        default=8001,
        ge=0,
        le=65535,
        description="TCP port of the KServe v2 gRPC API (Triton's inference.GRPCInferenceService, what "
        "tritonclient.grpc speaks) and the grpc.health.v1 service, on the same host; 0 turns gRPC off.",
    )
    grpc_max_message_bytes: int = Field(
        default=64 * 2**20,
        ge=1024,
        le=2**31 - 1,
        description="Largest gRPC message received or sent; a larger one fails with RESOURCE_EXHAUSTED.",
    )
    workers: Literal["auto"] | Annotated[int, Field(ge=1)] = Field(
        default="auto",
        description="Server processes behind the one port, answering as one server; auto: one per CPU this process "
        "may use (affinity and cgroup quota). Each loads every model and gets cpus/workers ORT threads; a lone "
        "request to a slower model runs on every CPU, one at a time.",
    )
    log_format: Literal["text", "json"] = Field(
        default="text", description="Log lines as text, or one JSON object a line."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(default="INFO", description="Minimum level logged.")
    access_log: bool = Field(
        default=False, description="Log one line per HTTP request and per gRPC call (costs throughput)."
    )
    auth_token: SecretStr | None = Field(
        default=None,
        description="When set, every endpoint except health and /metrics needs 'Authorization: Bearer <token>'.",
    )
    default_timeout_ms: int = Field(
        default=0,
        ge=0,
        description="Queue deadline for requests that bring none; 0 uses config.json's default_timeout_microseconds.",
    )
    max_body_bytes: int = Field(
        default=64 * 2**20, ge=1024, description="Largest request body accepted (after decompression)."
    )
    max_image_pixels: int = Field(
        default=40_000_000, ge=1, description="Largest decoded image (width x height) accepted; guards against bombs."
    )
    max_queue_delay_us: int | None = Field(
        default=None,
        ge=0,
        le=MAX_QUEUE_DELAY_MICROSECONDS,
        description="Overrides every model's dynamic_batching.max_queue_delay_microseconds.",
    )
    max_queue_size: int | None = Field(
        default=None,
        ge=1,
        le=MAX_QUEUE_SIZE,
        description="Overrides every model's dynamic_batching.default_queue_policy.max_queue_size.",
    )
    max_inflight_requests: int = Field(
        default=256,
        ge=0,
        description="Requests (other than health and /metrics) served at once by a server process; more are "
        "refused at once with 429 overloaded, before their body is read; 0 admits all.",
    )
    idle_poll_us: int = Field(
        default=200,
        ge=0,
        le=100_000,
        description="After a server process answers its last request in flight, its event loop keeps polling for "
        "this long before it sleeps, so the next request is read without waking an idle CPU (lower latency at low "
        "load, at most this much CPU per idle period); 0 sleeps at once.",
    )
    inline_batch_us: int = Field(
        default=1000,
        ge=0,
        description="Batches predicted to take less model time than this run on the event loop, skipping the "
        "worker-thread hop that costs more than a tiny model does; 0 always uses the worker threads.",
    )
    providers: CommaList = Field(
        default=(),
        description="ONNX Runtime providers in preference order (TensorRT, CUDA, CPU); empty: config.json, else auto.",
    )
    require_gpu: bool = Field(
        default=False, description="Refuse to start when no GPU provider is usable instead of using CPU."
    )
    cuda_device_id: int = Field(
        default=0, ge=0, description="GPU used by the CUDA and TensorRT providers where instance_group.gpus lists none."
    )
    tensorrt_cache_path: Path | None = Field(
        default=None,
        description="Folder caching TensorRT engines and timing data across restarts, in a subfolder per GPU, ORT and "
        "TensorRT version; unset: $XDG_CACHE_HOME/cnnserve/tensorrt (~/.cache/cnnserve/tensorrt).",
    )
    intra_op_threads: int = Field(
        default=0,
        ge=0,
        description="ORT threads per session; 0 divides the CPUs this process may use among all sessions.",
    )
    ort_allow_spinning: bool = Field(
        default=False,
        description="Let idle ORT threads spin; faster alone, steals CPU from the HTTP loop on small machines.",
    )
    preprocess_threads: int = Field(
        default=0,
        ge=0,
        description="Threads decoding and resizing images in each worker; 0 = CPUs available / workers.",
    )
    graceful_shutdown_s: float = Field(
        default=30.0,
        gt=0,
        description="On SIGTERM, how long in-flight requests may take to finish before connections close.",
    )
    worker_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="With several workers: one whose event loop has not answered the supervisor's liveness check "
        "(GET /v2/health/live on its private socket) for this long is killed and replaced.",
    )
    drain_idle_s: float = Field(
        default=1.0,
        gt=0,
        description="On SIGTERM, how long an idle keep-alive connection stays open to answer 503 shutting_down to a "
        "request already on its way, before it closes; keep it well below graceful_shutdown_s.",
    )
    max_connections: int = Field(
        default=1000,
        ge=1,
        description="Open connections per server process; a connection beyond it is answered 503 "
        "too_many_connections and closed before its request is read.",
    )
    max_header_bytes: int = Field(
        default=64 * 2**10,
        ge=1024,
        description="Largest request line plus headers accepted; more is answered 431 headers_too_large and closed.",
    )
    header_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="Time from a request's first byte until its headers are complete; later: 408 request_timeout.",
    )
    body_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="Longest pause in a request body while the server reads it; longer: 408 request_timeout.",
    )
    write_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="Longest a response may wait, its send buffer full, for the client to read any of it; longer: "
        "the connection is dropped.",
    )
    keep_alive_timeout_s: float = Field(
        default=5.0,
        gt=0,
        description="How long a connection may stay open with no request under way (a new one too) before it closes.",
    )

    @field_validator("models", "providers", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        """Accept ``a,b`` from the environment as well as lists from code."""
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @model_validator(mode="after")
    def _poll_serves_the_whole_folder(self) -> Settings:
        """In poll mode the folder decides what is served, so a startup list would be undone by the first poll."""
        if self.model_control == "poll" and self.models:
            raise ValueError("CNNSERVE_MODELS must be empty when CNNSERVE_MODEL_CONTROL is 'poll': the folder decides")
        return self
