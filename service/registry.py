"""The models being served: load (read, verify, create sessions, validate, warm up), look up, reload, unload.

Each model is swapped in as a whole: a reload keeps the old version answering until the new one is warm, and
loading or unloading one model never touches another's batcher. Slow work runs in a thread, off the event loop.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.batching.batcher import Batcher
from service.batching.policy import BatchPolicy
from service.errors import BadRequest, NotFound, ServiceUnavailable
from service.metrics import Metrics, ModelMetrics
from service.preprocess import Pipeline
from service.providers import ProviderSettings, choose_providers
from service.repository import ModelConfig, list_models, load_model_config, model_config_from_dict, version_dirs
from service.runtime import ModelRunner, create_session, session_options, threads_per_session
from service.settings import Settings
from service.signature import Signature
from service.validation import validate_graph, verify_digest

logger = logging.getLogger(__name__)


class ModelLoadError(BadRequest):
    """A model could not be loaded; the message carries the validation or runtime error."""

    code = "model_load_failed"


@dataclass(frozen=True)
class ServedModel:
    """Everything one loaded model needs at request time."""

    config: ModelConfig  # with the settings' batching overrides applied: what /config reports
    version: str
    signature: Signature
    pipeline: Pipeline | None
    runner: ModelRunner
    batcher: Batcher
    metrics: ModelMetrics


@dataclass(frozen=True)
class _Built:
    config: ModelConfig
    version: str
    runner: ModelRunner


class ModelRegistry:
    """Loaded models by name, plus the state of every model the repository holds (for the index).

    Args:
        settings: Repository path, provider and thread settings, batching overrides.
        metrics: Where each served model gets its instruments.
    """

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.repository: Path = settings.repository_path
        self._metrics = metrics
        self._served: dict[str, ServedModel] = {}
        self._state: dict[str, tuple[str, str]] = {}  # name -> (Triton state, reason)
        self._locks: dict[str, asyncio.Lock] = {}
        self._providers = ProviderSettings(
            preference=settings.providers,
            require_gpu=settings.require_gpu,
            device_id=settings.cuda_device_id,
            tensorrt_fp16=settings.tensorrt_fp16,
            tensorrt_cache_path=settings.tensorrt_cache_path or settings.repository_path / ".trt_cache",
        )

    # ---- lookup -------------------------------------------------------------------------------------------
    def served(self) -> list[ServedModel]:
        """The models answering requests now."""
        return list(self._served.values())

    def get(self, name: str, version: str | None = None) -> ServedModel:
        """The served model for a request.

        Raises:
            NotFound: the repository has no such model, or not that version.
            ServiceUnavailable: the model exists but is loading, unloaded or failed to load.
        """
        model = self._served.get(name)
        if model is None:
            state = self._state.get(name)
            if state is None and not (self.repository / name).is_dir():
                raise NotFound(f"unknown model '{name}'; the repository holds {self.known()}", code="model_not_found")
            reason = f" ({state[1]})" if state and state[1] else ""
            raise ServiceUnavailable(
                f"model '{name}' is not ready: {state[0] if state else 'UNAVAILABLE'}{reason}",
                headers={"Retry-After": "1"},
            )
        if version is not None and version != model.version:
            raise NotFound(
                f"model '{name}' has no version '{version}' being served; served: ['{model.version}'] "
                "(the version policy serves the latest)",
                code="version_not_found",
            )
        return model

    def known(self) -> list[str]:
        """Every model name the repository holds or the registry has seen."""
        on_disk = list_models(self.repository) if self.repository.is_dir() else []
        return sorted(set(on_disk) | set(self._state))

    def index(self, ready_only: bool = False) -> list[dict[str, str]]:
        """Triton's repository index: name, version, state, reason for every known model."""
        rows = []
        for name in self.known():
            state, reason = self._state.get(name, ("UNAVAILABLE", "not loaded"))
            if ready_only and state != "READY":
                continue
            row = {"name": name, "state": state, "reason": reason}
            if name in self._served:
                row["version"] = self._served[name].version
            rows.append(row)
        return rows

    # ---- load / unload ------------------------------------------------------------------------------------
    async def load_startup(self) -> None:
        """Load the models named in settings (default: all), with one thread budget shared by all of them.

        Raises:
            ModelLoadError: the first model that cannot be served, naming the reason.
        """
        names = list(self.settings.models) or list_models(self.repository)
        missing = [n for n in names if not (self.repository / n / "config.json").is_file()]
        if missing:
            raise NotFound(f"models {missing} are not in repository {self.repository}; it holds {self.known()}")
        configs = {name: load_model_config(self.repository / name) for name in names}
        total = sum(c.instance_group.count for c in configs.values())
        for name in self.known():
            self._state.setdefault(name, ("UNAVAILABLE", "not loaded"))
        for name in names:
            await self.load(name, sessions_total=total)
        if not names:
            logger.warning("repository %s holds no models; serving none", self.repository)

    async def load(self, name: str, override: dict[str, Any] | None = None, sessions_total: int = 0) -> ServedModel:
        """Load or reload one model; the previous version keeps serving until this one is warm.

        Args:
            name: Model folder in the repository.
            override: A config.json document to use instead of the file (the v2 load request's ``config``).
            sessions_total: Sessions sharing the CPUs; 0 counts those loaded now plus this model's.
        """
        lock = self._locks.setdefault(name, asyncio.Lock())
        async with lock:
            if not (self.repository / name).is_dir():
                raise NotFound(f"unknown model '{name}'; the repository holds {self.known()}", code="model_not_found")
            if name not in self._served:
                self._state[name] = ("LOADING", "")
            try:
                built = await asyncio.to_thread(self._build, name, override, sessions_total)
            except Exception as err:
                reason = str(err)
                if name not in self._served:
                    self._state[name] = ("UNAVAILABLE", reason)
                logger.error("model '%s' failed to load: %s", name, reason)
                raise ModelLoadError(f"failed to load model '{name}': {reason}") from err
            new = self._serve(built)
            old = self._served.get(name)
            self._served[name] = new
            self._state[name] = ("READY", "")
            if old is not None:
                await old.batcher.stop()
            return new

    async def unload(self, name: str) -> None:
        """Stop serving a model: new requests get 503, queued ones still run, then the sessions are released."""
        lock = self._locks.setdefault(name, asyncio.Lock())
        async with lock:
            model = self._served.pop(name, None)
            if model is None:
                if name not in self.known():
                    raise NotFound(f"unknown model '{name}'; the repository holds {self.known()}")
                return
            self._state[name] = ("UNLOADING", "")
            await model.batcher.stop()
            self._metrics.remove_model(name, model.metrics)
            self._state[name] = ("UNAVAILABLE", "unloaded")
            logger.info("model '%s' unloaded", name)

    async def close(self) -> None:
        """Drain every batcher (shutdown): queued work runs, nothing new is accepted."""
        models = list(self._served.values())
        await asyncio.gather(*(m.batcher.stop() for m in models))

    # ---- building -----------------------------------------------------------------------------------------
    def _effective_config(self, config: ModelConfig) -> ModelConfig:
        """config.json with the settings' batching overrides applied."""
        batching = config.dynamic_batching
        if self.settings.max_queue_delay_us is not None:
            batching = dataclasses.replace(batching, max_queue_delay_microseconds=self.settings.max_queue_delay_us)
        if self.settings.max_queue_size is not None:
            policy = dataclasses.replace(batching.default_queue_policy, max_queue_size=self.settings.max_queue_size)
            batching = dataclasses.replace(batching, default_queue_policy=policy)
        return dataclasses.replace(config, dynamic_batching=batching)

    def _build(self, name: str, override: dict[str, Any] | None, sessions_total: int) -> _Built:
        """Thread part of a load: config, digest, sessions, graph validation, warm-up."""
        started = time.perf_counter()
        model_dir = self.repository / name
        if override is not None:
            config = model_config_from_dict(override, source="load request parameters.config")
            if config.name != name:
                raise BadRequest(f"load request config names model '{config.name}', but the URL loads '{name}'")
        else:
            config = load_model_config(model_dir)
        config = self._effective_config(config)
        versions = version_dirs(model_dir)
        if not versions:
            raise FileNotFoundError(f"{model_dir}: no numbered version folder holding model.onnx")
        version, path = list(versions.items())[-1]
        verify_digest(config, version, path)
        count = config.instance_group.count
        if sessions_total <= 0:
            sessions_total = count + sum(
                m.config.instance_group.count for m in self._served.values() if m.config.name != name
            )
        threads = threads_per_session(sessions_total, self.settings.workers, self.settings.intra_op_threads)
        options = session_options(threads, self.settings.ort_allow_spinning)
        providers = choose_providers(config, self._providers)
        sessions, devices = zip(
            *(create_session(path, config, providers, self._providers, options) for _ in range(count)), strict=True
        )
        validate_graph(config, sessions[0])
        runner = ModelRunner(list(sessions), config, devices[0], device_id=self._providers.device_id)
        runs = runner.warm_up(config)
        if devices[0] == "cpu" and threads > 1 and runner.batch_one_s(config) <= self.settings.inline_batch_us / 1e6:
            # A model fast enough to run on the event loop gets single-threaded sessions for those runs.
            one = session_options(1, self.settings.ort_allow_spinning)
            runner.inline_sessions = [
                create_session(path, config, providers, self._providers, one)[0] for _ in range(count)
            ]
            runs += runner.warm_up_inline(config)
        logger.info(
            "model '%s' version %s ready: %d instance(s) on %s (%s), %d ORT thread(s) each, "
            "%d warm-up runs, %.2f s",
            name, version, count, devices[0], sessions[0].get_providers()[0], threads, runs,
            time.perf_counter() - started,
        )  # fmt: skip
        return _Built(config, version, runner)

    def _serve(self, built: _Built) -> ServedModel:
        """Event-loop part of a load: metrics, batcher, start."""
        config = built.config
        batching = config.dynamic_batching
        policy = BatchPolicy(
            max_batch_size=config.max_batch_size,
            max_queue_delay_s=batching.max_queue_delay_microseconds / 1e6,
            max_queue_size=batching.default_queue_policy.max_queue_size,
            preferred_batch_size=max(batching.preferred_batch_size, default=0),
            instances=config.instance_group.count,
            inline_max_s=self.settings.inline_batch_us / 1e6,
        )
        batcher: Batcher  # bound below; the gauge reads it only at scrape time
        metrics = self._metrics.add_model(config.name, built.version, lambda: batcher.queued)
        batcher = Batcher(built.runner, policy, metrics, name=config.name, run_inline=built.runner.run_inline)
        batcher.start()
        pipeline = Pipeline.from_config(config.preprocessing) if config.preprocessing else None
        return ServedModel(
            config, built.version, Signature.from_config(config), pipeline, built.runner, batcher, metrics
        )
