"""The models being served and the lifecycle state of every model in the repository: look up, load, unload.

Each model is swapped in as a whole, with every version its ``version_policy`` selects: a reload keeps the old
versions answering until the new ones are warm, and loading or unloading one model never touches another's
batchers. The slow part of a load (``ModelLoader``) runs in a thread, off the event loop; putting the result in
service (``start_serving``) runs on it. Every model name a request carries is checked (``is_model_name``) before
any file is touched.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from service.errors import ModelLoadError, NotFound, ServiceUnavailable
from service.metrics import Metrics
from service.model_loader import ModelLoader, requested_config, selected_versions
from service.repository import NAME_RULE, ConfigError, ModelConfig, is_model_name, list_models, load_model_config
from service.served_model import ServedModel, ServedVersions, start_serving
from service.settings import Settings

logger = logging.getLogger(__name__)
_SHOWN_NAME_CHARS = 64  # an over-long name is cut short in messages


class ModelState(StrEnum):
    """A model's lifecycle state, spelt as Triton's repository index spells it."""

    READY = "READY"
    LOADING = "LOADING"
    UNLOADING = "UNLOADING"
    UNAVAILABLE = "UNAVAILABLE"


@dataclass(frozen=True)
class ModelStatus:
    """A state and why (the load error, ``unloaded``, ``not loaded``; empty when there is nothing to say)."""

    state: ModelState
    reason: str = ""


_NOT_LOADED = ModelStatus(ModelState.UNAVAILABLE, "not loaded")


class ModelManager:
    """Loaded models by name, plus the status of every model the repository holds (for the index).

    Args:
        settings: Which models to load at startup, and everything ``ModelLoader`` and the batchers need.
        metrics: Where each served model version gets its instruments.
    """

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.repository = settings.repository_path
        self._metrics = metrics
        self._loader = ModelLoader(settings)
        self._served: dict[str, ServedVersions] = {}
        self._status: dict[str, ModelStatus] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def served(self) -> list[ServedModel]:
        """Every model version answering requests now."""
        return [model for versions in self._served.values() for model in versions.models]

    def versions(self, name: str) -> list[str]:
        """The versions of ``name`` being served, lowest first (none when it is not served)."""
        served = self._served.get(name)
        return served.versions() if served else []

    def get(self, name: str, version: str | None = None) -> ServedModel:
        """The served model for a request: the version asked for, or the newest served one.

        Raises:
            NotFound: the name cannot be a model's, the repository has no such model, or not that version served.
            ServiceUnavailable: the model exists but is loading, unloaded or failed to load.
        """
        served = self._served.get(name)
        if served is None:
            self._check_name(name)  # a served name is a valid one: only a miss may touch the filesystem
            status = self._status.get(name)
            if status is None and not (self.repository / name).is_dir():
                raise self._unknown(name)
            status = status or ModelStatus(ModelState.UNAVAILABLE)
            reason = f" ({status.reason})" if status.reason else ""
            raise ServiceUnavailable(
                f"model '{name}' is not ready: {status.state}{reason}", headers={"Retry-After": "1"}
            )
        if version is None:
            return served.newest
        model = served.get(version)
        if model is None:
            raise NotFound(
                f"model '{name}' has no version '{version[:_SHOWN_NAME_CHARS]}' being served; served: "
                f"{served.versions()} (version_policy {served.newest.config.version_policy.to_json()})",
                code="version_not_found",
            )
        return model

    def known(self) -> list[str]:
        """Every model name the repository holds or this manager has seen."""
        on_disk = list_models(self.repository) if self.repository.is_dir() else []
        return sorted(set(on_disk) | set(self._status))

    def index(self, ready_only: bool = False) -> list[dict[str, str]]:
        """Triton's repository index: one row per served version, one per model not served; name, state, reason."""
        rows = []
        for name in self.known():
            status = self._status.get(name, _NOT_LOADED)
            if ready_only and status.state != ModelState.READY:
                continue
            row = {"name": name, "state": status.state, "reason": status.reason}
            served = self._served.get(name)
            rows += [row | {"version": version} for version in served.versions()] if served else [row]
        return rows

    async def load_startup(self) -> None:
        """Load the models named in settings (default: all), with one thread budget shared by all of them.

        Raises:
            NotFound: a named model is not in the repository.
            ModelLoadError: the first model that cannot be served, naming the reason.
        """
        names = list(self.settings.models) or list_models(self.repository)
        missing = [n for n in names if not is_model_name(n) or not (self.repository / n / "config.json").is_file()]
        if missing:
            raise NotFound(f"models {missing} are not in repository {self.repository}; it holds {self.known()}")
        counts = {name: self._planned_sessions(name) for name in names}
        for name in self.known():
            self._status.setdefault(name, _NOT_LOADED)
        for name in names:
            await self._load(name, None, sum(counts.values()) - counts[name])
        if not names:
            logger.warning("repository %s holds no models; serving none", self.repository)

    def _planned_sessions(self, name: str) -> int:
        """Sessions a startup load of ``name`` creates (instances x selected versions), for the shared thread budget.

        A config that cannot be served counts none: its load fails and says why.
        """
        try:
            config = load_model_config(self.repository / name)
            return config.instance_group.instances * len(selected_versions(self.repository / name, config))
        except ConfigError:
            return 0

    async def load(self, name: str, override: dict[str, Any] | None = None) -> ServedVersions:
        """Load or reload one model; the versions it serves keep serving until the new ones are warm.

        Args:
            name: Model folder in the repository.
            override: A config.json document to use instead of the file (the v2 load request's ``config``).

        Raises:
            BadRequest: ``override`` is not a valid config for this model (nothing changes).
            NotFound: the name cannot be a model's, or the repository has no such model.
            ModelLoadError: the model could not be loaded; what it served, if anything, still serves.
        """
        self._check_name(name)
        config = requested_config(name, override) if override is not None else None
        others = sum(m.config.instance_group.instances for m in self.served() if m.config.name != name)
        return await self._load(name, config, others)

    async def _load(self, name: str, config: ModelConfig | None, other_sessions: int) -> ServedVersions:
        async with self._locks.setdefault(name, asyncio.Lock()):
            if not (self.repository / name).is_dir():
                raise self._unknown(name)
            old = self._served.get(name)
            if old is None:
                self._status[name] = ModelStatus(ModelState.LOADING)
            try:
                loaded = await asyncio.to_thread(self._loader.load, name, config, other_sessions)
            except Exception as err:
                logger.error("model '%s' failed to load: %s", name, err)
                # Clients (the error, the open index) learn what failed, not where the operator keeps the repository.
                reason = str(err)
                for where in sorted({str(self.repository.resolve()), str(self.repository.absolute())}, key=len)[::-1]:
                    reason = reason.replace(where, "<repository>")
                if old is None:
                    self._status[name] = ModelStatus(ModelState.UNAVAILABLE, reason)
                else:  # the versions already served keep serving; the index says why the reload did not happen
                    self._status[name] = ModelStatus(ModelState.READY, f"reload failed, still serving: {reason}")
                raise ModelLoadError(f"failed to load model '{name}': {reason}") from err
            inline_us = self.settings.inline_batch_us
            new = ServedVersions(tuple(start_serving(model, self._metrics, inline_us) for model in loaded))
            self._served[name] = new
            self._status[name] = ModelStatus(ModelState.READY)
            if old is not None:
                await self._stop(name, old)
            return new

    async def unload(self, name: str, forget: bool = False) -> None:
        """Stop serving a model: new requests get 503, queued ones still run, then the sessions are released.

        Args:
            name: The model.
            forget: Drop it from the index too (poll mode, once its folder is gone): it becomes unknown (404).
        """
        self._check_name(name)
        async with self._locks.setdefault(name, asyncio.Lock()):
            served = self._served.pop(name, None)
            if served is None and name not in self.known():
                raise self._unknown(name)
            if served is not None:
                self._status[name] = ModelStatus(ModelState.UNLOADING)
                await self._stop(name, served)
                self._status[name] = ModelStatus(ModelState.UNAVAILABLE, "unloaded")
                logger.info("model '%s' unloaded", name)
            if forget:
                self._status.pop(name, None)

    async def _stop(self, name: str, served: ServedVersions) -> None:
        """Drain the batchers of ``served`` and drop their metrics (those a reload has replaced stay)."""
        await asyncio.gather(*(model.batcher.stop() for model in served.models))
        for model in served.models:
            self._metrics.remove_model(name, model.metrics)

    async def close(self) -> None:
        """Drain every batcher (shutdown): queued work runs, nothing new is accepted."""
        await asyncio.gather(*(m.batcher.stop() for m in self.served()))

    def _check_name(self, name: str) -> None:
        """Refuse, before any file is touched, a name no model folder can have ('..', '/x', 300 bytes)."""
        if not is_model_name(name):
            shown = name[:_SHOWN_NAME_CHARS] + ("..." if len(name) > _SHOWN_NAME_CHARS else "")
            raise NotFound(f"unknown model {shown!r}: a model name is {NAME_RULE}", code="model_not_found")

    def _unknown(self, name: str) -> NotFound:
        return NotFound(f"unknown model '{name}'; the repository holds {self.known()}", code="model_not_found")
