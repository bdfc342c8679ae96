"""Poll mode (``CNNSERVE_MODEL_CONTROL=poll``): the server follows its repository folder, as Triton's
``--model-control-mode=poll`` does.

Every ``CNNSERVE_REPOSITORY_POLL_S`` seconds a scan stats each model's config.json and each numbered version
folder's model.onnx (size, modification time, inode; nothing is read). A model folder that appears is loaded, one
that disappears is unloaded and forgotten, one whose fingerprint changed (config.json edited, a version added or
removed or replaced) is reloaded with every version its policy selects. Loads go through the model manager, so
they take the model's lock and never race another load of it; a load that fails is logged and shown by the index
(UNAVAILABLE with the reason for a new model; READY with the reason for a served one, which keeps serving), and is
retried only when the folder changes again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from pathlib import Path

from service.errors import ServiceError
from service.model_manager import ModelManager
from service.repository import CONFIG_FILENAME, MODEL_FILENAME, is_model_name

logger = logging.getLogger(__name__)

#: One entry per file that matters: (config.json or the version folder's name, size, mtime in ns, inode).
Fingerprint = tuple[tuple[str, int, int, int], ...]


def fingerprint(model_dir: Path) -> Fingerprint | None:
    """What a change to a model folder changes, from stat calls alone; None when it holds no config.json."""
    entries = []
    try:
        with os.scandir(model_dir) as scan:
            for entry in scan:
                if entry.name == CONFIG_FILENAME:
                    path = entry.path
                elif entry.name.isdigit() and entry.is_dir():
                    path = os.path.join(entry.path, MODEL_FILENAME)
                else:
                    continue
                with contextlib.suppress(FileNotFoundError):  # a version folder without its model yet
                    st = os.stat(path)
                    entries.append((entry.name, st.st_size, st.st_mtime_ns, st.st_ino))
    except (FileNotFoundError, NotADirectoryError):
        return None
    if not any(name == CONFIG_FILENAME for name, *_ in entries):
        return None
    return tuple(sorted(entries))


def scan(repository: Path) -> dict[str, Fingerprint]:
    """Every model folder of the repository with its fingerprint (folders that cannot be model names skipped)."""
    try:
        names = sorted(entry.name for entry in os.scandir(repository) if entry.is_dir() and is_model_name(entry.name))
    except FileNotFoundError:
        logger.warning("model repository %s is gone; serving what is loaded", repository)
        return {}
    prints = {name: fingerprint(repository / name) for name in names}
    return {name: p for name, p in prints.items() if p is not None}


class RepositoryPoller:
    """Watches the repository folder and brings the served models in line with it.

    Args:
        models: Loads, reloads and unloads.
        interval_s: Seconds between scans.
    """

    def __init__(self, models: ModelManager, interval_s: float) -> None:
        self.models = models
        self.interval_s = interval_s
        self._seen: dict[str, Fingerprint] = {}
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def snapshot(self) -> None:
        """Record the folder as it is now: the next poll acts only on what differs from it."""
        self._seen = scan(self.models.repository)

    def start(self) -> None:
        """Take the first snapshot now (before the startup load: a change made meanwhile is seen) and start polling."""
        self.snapshot()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="repository-poll")

    async def stop(self) -> None:
        """Stop polling; a load in progress finishes first."""
        self._stopping.set()
        if self._task is not None:
            await self._task

    async def _run(self) -> None:
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.interval_s)
                return
            try:
                await self.poll()
            except Exception:  # the next poll tries again; serving models are untouched
                logger.exception("repository poll of %s failed", self.models.repository)

    async def poll(self) -> None:
        """One scan: load new models, reload changed ones, unload removed ones."""
        current = await asyncio.to_thread(scan, self.models.repository)
        for name in sorted(self._seen.keys() - current.keys()):
            if self._stopping.is_set():
                return
            del self._seen[name]
            logger.info("model '%s' left the repository: unloading it", name)
            await self.models.unload(name, forget=True)
        for name, found in current.items():
            if self._stopping.is_set():
                return
            if self._seen.get(name) == found:
                continue
            verb = "changed" if name in self._seen else "appeared"
            self._seen[name] = found  # a failed load is retried when the folder changes again, not every poll
            logger.info("model '%s' %s in the repository: loading it", name, verb)
            with contextlib.suppress(ServiceError):  # logged by the manager and shown by the index
                await self.models.load(name)
