"""The event-loop side of loading a model: its metrics and a started batcher; ``ServedModel``, what requests see, and
``ServedVersions``, the versions of one model served side by side.

``start_serving`` takes a ``LoadedModel`` (built in a thread by ``model_loader``) and must run on the event loop,
which the batcher's collector task needs.
"""

from __future__ import annotations

from dataclasses import dataclass

from service.batching.batcher import Batcher
from service.batching.policy import BatchPolicy
from service.metrics import Metrics, ModelMetrics
from service.model_loader import LoadedModel
from service.preprocess import ImageTransform
from service.repository import ModelConfig
from service.runtime import ModelRunner
from service.signature import Signature
from service.worker_activity import worker_activity


@dataclass(frozen=True)
class ServedModel:
    """Everything one loaded model needs at request time."""

    config: ModelConfig  # with the settings' batching overrides applied: what /config reports
    version: str
    signature: Signature
    transform: ImageTransform | None  # None: the model takes tensors only
    runner: ModelRunner
    batcher: Batcher
    metrics: ModelMetrics


@dataclass(frozen=True)
class ServedVersions:
    """The versions of one model being served (those its version policy selects), lowest first.

    Each version has its own sessions, batcher and metrics; a request that names no version gets the newest.
    """

    models: tuple[ServedModel, ...]

    @property
    def newest(self) -> ServedModel:
        """The highest version: where requests without a version go."""
        return self.models[-1]

    def versions(self) -> list[str]:
        """The served version numbers, lowest first."""
        return [m.version for m in self.models]

    def get(self, version: str) -> ServedModel | None:
        """The served model of ``version``, or None when that version is not served."""
        return next((m for m in self.models if m.version == version), None)


def batch_policy(config: ModelConfig, device: str, inline_batch_us: int) -> BatchPolicy:
    """The batcher's policy for a model: config.json's ``dynamic_batching`` and instances, and the inline bound.

    A GPU batch waits on the device, so it never runs on the event loop, however fast it looked: the inline bound
    applies to CPU models only.
    """
    batching = config.dynamic_batching
    return BatchPolicy(
        max_batch_size=config.max_batch_size,
        max_queue_delay_s=batching.max_queue_delay_microseconds / 1e6,
        max_queue_size=batching.default_queue_policy.max_queue_size,
        preferred_batch_size=max(batching.preferred_batch_size, default=0),
        instances=config.instance_group.instances,
        inline_max_s=inline_batch_us / 1e6 if device == "cpu" else 0.0,
    )


def start_serving(loaded: LoadedModel, metrics: Metrics, inline_batch_us: int) -> ServedModel:
    """Give a loaded model its metrics and a started batcher.

    Args:
        loaded: The model, warm.
        metrics: Where the model gets its instruments.
        inline_batch_us: Batches predicted faster than this run on the event loop (the setting of that name).
    """
    config = loaded.config
    policy = batch_policy(config, loaded.runner.device, inline_batch_us)
    activity = worker_activity()  # a lone request runs on every core only while the whole server is quiet
    alone = activity.alone if activity is not None and loaded.runner.solo_sessions is not None else None
    batcher: Batcher  # bound below; the gauge reads it only at scrape time
    model_metrics = metrics.add_model(config.name, loaded.version, lambda: batcher.queued)
    batcher = Batcher(
        loaded.runner,
        policy,
        model_metrics,
        name=config.name,
        run_inline=loaded.runner.run_inline,
        staging=loaded.runner.staging,
        run_lone=loaded.runner.run_lone if alone is not None else None,
        may_spread=alone,
    )
    batcher.start()
    transform = ImageTransform.from_config(config.preprocessing) if config.preprocessing else None
    return ServedModel(
        config, loaded.version, Signature.from_config(config), transform, loaded.runner, batcher, model_metrics
    )
