"""The models being served and the lifecycle state of every model in the repository: look up, load, unload.

Each model is swapped in as a whole: a reload keeps the old version answering until the new one is warm, and
loading or unloading one model never touches another's batcher. The slow part of a load (``ModelLoader``) runs in
a thread, off the event loop; putting the result in service (``start_serving``) runs on it.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from service.errors import ModelLoadError, NotFound, ServiceUnavailable
from service.metrics import Metrics
from service.model_loader import ModelLoader, requested_config
from service.repository import ModelConfig, list_models, load_model_config
from service.served_model import ServedModel, start_serving
from service.settings import Settings

logger = logging.getLogger(__name__)


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
        metrics: Where each served model gets its instruments.
    """

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.repository = settings.repository_path
        self._metrics = metrics
        self._loader = ModelLoader(settings)
        self._served: dict[str, ServedModel] = {}
        self._status: dict[str, ModelStatus] = {}
        self._locks: dict[str, asyncio.Lock] = {}

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
            status = self._status.get(name)
            if status is None and not (self.repository / name).is_dir():
                raise self._unknown(name)
            status = status or ModelStatus(ModelState.UNAVAILABLE)
            reason = f" ({status.reason})" if status.reason else ""
            raise ServiceUnavailable(
                f"model '{name}' is not ready: {status.state}{reason}", headers={"Retry-After": "1"}
            )
        if version is not None and version != model.version:
            raise NotFound(
                f"model '{name}' has no version '{version}' being served; served: ['{model.version}'] "
                "(the version policy serves the latest)",
                code="version_not_found",
            )
        return model

    def known(self) -> list[str]:
        """Every model name the repository holds or this manager has seen."""
        on_disk = list_models(self.repository) if self.repository.is_dir() else []
        return sorted(set(on_disk) | set(self._status))

    def index(self, ready_only: bool = False) -> list[dict[str, str]]:
        """Triton's repository index: name, version, state, reason for every known model."""
        rows = []
        for name in self.known():
            status = self._status.get(name, _NOT_LOADED)
            if ready_only and status.state != ModelState.READY:
                continue
            row = {"name": name, "state": status.state, "reason": status.reason}
            if name in self._served:
                row["version"] = self._served[name].version
            rows.append(row)
        return rows

    async def load_startup(self) -> None:
        """Load the models named in settings (default: all), with one thread budget shared by all of them.

        Raises:
            NotFound: a named model is not in the repository.
            ModelLoadError: the first model that cannot be served, naming the reason.
        """
        names = list(self.settings.models) or list_models(self.repository)
        missing = [n for n in names if not (self.repository / n / "config.json").is_file()]
        if missing:
            raise NotFound(f"models {missing} are not in repository {self.repository}; it holds {self.known()}")
        counts = {name: load_model_config(self.repository / name).instance_group.count for name in names}
        for name in self.known():
            self._status.setdefault(name, _NOT_LOADED)
        for name in names:
            await self._load(name, None, sum(counts.values()) - counts[name])
        if not names:
            logger.warning("repository %s holds no models; serving none", self.repository)

    async def load(self, name: str, override: dict[str, Any] | None = None) -> ServedModel:
        """Load or reload one model; the previous version keeps serving until this one is warm.

        Args:
            name: Model folder in the repository.
            override: A config.json document to use instead of the file (the v2 load request's ``config``).

        Raises:
            BadRequest: ``override`` is not a valid config for this model (nothing changes).
            NotFound: the repository has no such model.
            ModelLoadError: the model could not be loaded; the previous version, if any, still serves.
        """
        config = requested_config(name, override) if override is not None else None
        others = sum(m.config.instance_group.count for m in self._served.values() if m.config.name != name)
        return await self._load(name, config, others)

    async def _load(self, name: str, config: ModelConfig | None, other_sessions: int) -> ServedModel:
        async with self._locks.setdefault(name, asyncio.Lock()):
            if not (self.repository / name).is_dir():
                raise self._unknown(name)
            if name not in self._served:
                self._status[name] = ModelStatus(ModelState.LOADING)
            try:
                loaded = await asyncio.to_thread(self._loader.load, name, config, other_sessions)
            except Exception as err:
                reason = str(err)
                if name not in self._served:
                    self._status[name] = ModelStatus(ModelState.UNAVAILABLE, reason)
                logger.error("model '%s' failed to load: %s", name, reason)
                raise ModelLoadError(f"failed to load model '{name}': {reason}") from err
            new = start_serving(loaded, self._metrics, self.settings.inline_batch_us)
            old = self._served.get(name)
            self._served[name] = new
            self._status[name] = ModelStatus(ModelState.READY)
            if old is not None:
                await old.batcher.stop()
            return new

    async def unload(self, name: str) -> None:
        """Stop serving a model: new requests get 503, queued ones still run, then the sessions are released."""
        async with self._locks.setdefault(name, asyncio.Lock()):
            model = self._served.pop(name, None)
            if model is None:
                if name not in self.known():
                    raise self._unknown(name)
                return
            self._status[name] = ModelStatus(ModelState.UNLOADING)
            await model.batcher.stop()
            self._metrics.remove_model(name, model.metrics)
            self._status[name] = ModelStatus(ModelState.UNAVAILABLE, "unloaded")
            logger.info("model '%s' unloaded", name)

    async def close(self) -> None:
        """Drain every batcher (shutdown): queued work runs, nothing new is accepted."""
        await asyncio.gather(*(m.batcher.stop() for m in self._served.values()))

    def _unknown(self, name: str) -> NotFound:
        return NotFound(f"unknown model '{name}'; the repository holds {self.known()}", code="model_not_found")
