"""The thread side of loading a model: config, digest, ONNX Runtime sessions, graph validation, warm-up.

Everything here is slow and blocking, so ``ModelManager`` runs it in a worker thread; what comes back is a
``LoadedModel``, ready to be put in service on the event loop (``served_model.start_serving``).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnxruntime as ort

from service.compute_gate import cpu_gate
from service.config_model import MAX_SERVED_VERSIONS
from service.errors import BadRequest
from service.precision import refuse_fp16_graph_on_cpu, running_precision
from service.providers import ProviderSettings, choose_providers, short_name
from service.repository import (
    MODEL_FILENAME,
    ConfigError,
    ModelConfig,
    load_model_config,
    model_config_from_dict,
    version_dirs,
)
from service.runtime import ModelRunner, create_session, session_options, threads_per_session
from service.settings import Settings
from service.validation import validate_graph, verify_digest

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedModel:
    """A model whose sessions are created, validated against its config and warm."""

    config: ModelConfig  # with the settings' batching overrides applied: what /config reports
    version: str
    runner: ModelRunner


def requested_config(name: str, document: dict[str, Any]) -> ModelConfig:
    """The config a load request sends in ``parameters.config``; a wrong one is the client's fault (400).

    Raises:
        BadRequest: the document is not a valid config.json, or it names another model than the URL.
    """
    try:
        config = model_config_from_dict(document, source="load request parameters.config")
    except ConfigError as err:
        raise BadRequest(f"failed to load model '{name}': {err}", code="model_load_failed") from err
    if config.name != name:
        raise BadRequest(
            f"failed to load model '{name}': load request config names model '{config.name}', but the URL loads "
            f"'{name}'",
            code="model_load_failed",
        )
    return config


def selected_versions(model_dir: Path, config: ModelConfig) -> dict[str, Path]:
    """The version folders ``config.version_policy`` serves, lowest first.

    Raises:
        ConfigError: the policy selects no version folder, or more than ``MAX_SERVED_VERSIONS``.
    """
    available = version_dirs(model_dir)
    chosen = config.version_policy.select(list(available))
    policy = config.version_policy.to_json()
    if not chosen:
        raise ConfigError(
            f"model '{config.name}': version_policy {policy} selects none of the version folders holding "
            f"{MODEL_FILENAME} ({sorted(available, key=int)})"
        )
    if len(chosen) > MAX_SERVED_VERSIONS:
        raise ConfigError(
            f"model '{config.name}': version_policy {policy} selects {len(chosen)} versions, at most "
            f"{MAX_SERVED_VERSIONS} are served"
        )
    return {version: available[version] for version in chosen}


class ModelLoader:
    """Builds loaded models from the repository with the settings' providers, thread budget and batching overrides.

    Args:
        settings: Repository path, provider and thread settings, batching overrides, the inline-batch bound.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.repository: Path = settings.repository_path
        self.providers = ProviderSettings(
            preference=settings.providers,
            require_gpu=settings.require_gpu,
            device_id=settings.cuda_device_id,
            tensorrt_cache_path=settings.tensorrt_cache_path,
        )

    def load(self, name: str, config: ModelConfig | None, other_sessions: int) -> list[LoadedModel]:
        """Read (unless given), verify, create sessions, validate and warm up every version the policy selects.

        The versions load together: if one fails, the whole load fails and nothing of it is served.

        Args:
            name: Model folder in the repository.
            config: The config to use instead of the folder's config.json (a load request's override).
            other_sessions: Sessions of other models sharing the CPUs, for this model's thread budget.

        Returns:
            One loaded model per selected version, lowest version first.

        Raises:
            Exception: whatever made the model unservable (ConfigError, a digest or graph mismatch, ORT's error).
        """
        model_dir = self.repository / name
        config = self._effective_config(config or load_model_config(model_dir))
        paths = selected_versions(model_dir, config)
        count = config.instance_group.instances
        sessions = count * len(paths) + other_sessions
        threads = threads_per_session(sessions, self.settings.workers, self.settings.intra_op_threads)
        solo_threads = threads_per_session(sessions, 1, self.settings.intra_op_threads)
        return [self._load_version(config, version, path, threads, solo_threads) for version, path in paths.items()]

    def _load_version(
        self, config: ModelConfig, version: str, path: Path, threads: int, solo_threads: int
    ) -> LoadedModel:
        started = time.perf_counter()
        verify_digest(config, version, path)
        runner, runs = self._warm_runner(path, config, version, threads, solo_threads)
        provider = runner.sessions[0].get_providers()[0]
        logger.info(
            "model '%s' version %s ready: %d instance(s) on %s (%s at %s%s), %d ORT thread(s) each, "
            "%d warm-up runs (batch buckets %s), %.2f s",
            config.name, version, config.instance_group.instances, runner.device, provider,
            running_precision(short_name(provider), config.precision, config.versions[version].graph_precision),
            f", GPUs {runner.device_ids}" if runner.device == "cuda" else "", threads, runs, list(runner.buckets),
            time.perf_counter() - started,
        )  # fmt: skip
        return LoadedModel(config, version, runner)

    def _warm_runner(
        self, path: Path, config: ModelConfig, version: str, threads: int, solo_threads: int
    ) -> tuple[ModelRunner, int]:
        """The model's runner, validated against its config and warm; returns it and the warm-up runs made.

        An fp16 graph is refused before any session when the chain offers no GPU provider, and after when the GPU
        provider did not start (``service/precision.py``).

        A CPU model fast enough to run on the event loop also gets single-threaded sessions for those runs, where its
        sessions have several threads. A GPU model never does: its batches wait on the device, which must never hold
        up the event loop. In a multi-worker server a CPU model gets solo sessions with all ``solo_threads`` for lone
        requests, a fast model too: its lone request of 32 rows is not fast.
        """
        providers = choose_providers(config, self.providers)
        refuse_fp16_graph_on_cpu(config, version, short_name(providers[0]))
        devices = config.instance_group.devices(self.providers.device_id)
        sessions, device = self._sessions(path, config, providers, threads, devices)
        refuse_fp16_graph_on_cpu(config, version, device)
        validate_graph(config, sessions[0])
        runner = ModelRunner(sessions, config, device, device_ids=devices)
        runs = runner.warm_up(config)
        if device != "cpu":
            return runner, runs
        tiny = runner.batch_one_s(config) <= self.settings.inline_batch_us / 1e6
        if tiny and threads > 1:
            inline, _ = self._sessions(path, config, providers, 1, devices)
            runner = ModelRunner(sessions, config, device, device_ids=devices, inline_sessions=inline)
            runs += runner.warm_up_inline(config)
        elif solo_threads > threads and (gate := cpu_gate()) is not None:
            solo, _ = self._sessions(path, config, providers, solo_threads, devices)
            runner = ModelRunner(sessions, config, device, device_ids=devices, solo_sessions=solo, gate=gate)
            runs += runner.warm_up_solo(config)
        return runner, runs

    def _sessions(
        self, path: Path, config: ModelConfig, providers: list[str], threads: int, devices: list[int]
    ) -> tuple[list[ort.InferenceSession], str]:
        """One session per instance on its GPU ``devices[i]``, ``threads`` intra-op threads each, and the device
        they really run on."""
        options = session_options(threads, self.settings.ort_allow_spinning)
        created = [create_session(path, config, providers, self.providers, options, gpu) for gpu in devices]
        return [session for session, _ in created], created[0][1]

    def _effective_config(self, config: ModelConfig) -> ModelConfig:
        """config.json with the settings' batching overrides applied."""
        batching = config.dynamic_batching
        if self.settings.max_queue_delay_us is not None:
            batching = dataclasses.replace(batching, max_queue_delay_microseconds=self.settings.max_queue_delay_us)
        if self.settings.max_queue_size is not None:
            policy = dataclasses.replace(batching.default_queue_policy, max_queue_size=self.settings.max_queue_size)
            batching = dataclasses.replace(batching, default_queue_policy=policy)
        return dataclasses.replace(config, dynamic_batching=batching)
