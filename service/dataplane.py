"""The protocol-agnostic request path: deadline → (decode + preprocess) → batcher → outputs, with accounting.

Both the REST and the KServe v2 handlers call this; it turns the batcher's refusals into ``ServiceError``s and
records every request's outcome in the model's metrics and statistics.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import Any

import numpy as np
import numpy.typing as npt

from service.batching import errors as b
from service.batching.batcher import Arrival
from service.batching.merge import Tensors
from service.errors import (
    BadRequest,
    ClientClosedRequest,
    DeadlineExceeded,
    InternalError,
    PayloadTooLarge,
    ServiceError,
    ServiceUnavailable,
    TooManyRequests,
)
from service.image_decode import ImageError, ImageTooLarge, declared_pixels
from service.metrics import Metrics, ModelMetrics
from service.model_manager import ModelManager
from service.preprocess import ImageTransform, ModelInput, preprocess, softmax
from service.served_model import ServedModel


class _Tracked:
    """Counts a request in flight and records its outcome and end-to-end time when the block exits."""

    __slots__ = ("_metrics", "_started")

    def __init__(self, metrics: ModelMetrics) -> None:
        self._metrics = metrics
        self._started = 0.0

    def __enter__(self) -> None:
        self._metrics.inflight += 1
        self._started = time.perf_counter()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        metrics = self._metrics
        metrics.inflight -= 1
        elapsed = time.perf_counter() - self._started
        if exc is None:
            metrics.succeeded(elapsed)
        elif isinstance(exc, ServiceError):
            metrics.failed(elapsed, exc.status_code, exc.code)
        elif isinstance(exc, asyncio.CancelledError):
            metrics.failed(elapsed, 499, "client_disconnected")
        else:
            metrics.failed(elapsed, 500, "internal")


class DataPlane:
    """Runs inference requests against the served models.

    Args:
        models: The served models.
        metrics: For requests that name no servable model.
        max_image_pixels: Decompression-bomb guard handed to the decoder.
        default_timeout_ms: Queue deadline for requests without one (0: the model's config default).
        preprocess_threads: Size of the decode/preprocess pool.
    """

    def __init__(
        self,
        models: ModelManager,
        metrics: Metrics,
        *,
        max_image_pixels: int,
        default_timeout_ms: int,
        preprocess_threads: int,
    ) -> None:
        self.models = models
        self.metrics = metrics
        self.max_image_pixels = max_image_pixels
        self.default_timeout_ms = default_timeout_ms
        self.pool = ThreadPoolExecutor(preprocess_threads, thread_name_prefix="preprocess")

    def model(self, name: str, version: str | None = None) -> ServedModel:
        """Resolve a model for a request, counting refusals (unknown model, not ready) in the metrics."""
        try:
            return self.models.get(name, version)
        except ServiceError as err:
            served = next((m for m in self.models.served() if m.config.name == name), None)
            if served is not None:
                served.metrics.failed(0.0, err.status_code, err.code)
            else:
                self.metrics.unknown_model_request(err.status_code, err.code)
            raise

    def track(self, model: ServedModel) -> _Tracked:
        """``with plane.track(model): …`` around a request's whole handling."""
        return _Tracked(model.metrics)

    def deadline(self, model: ServedModel, arrived: float, timeout_us: int | None) -> float | None:
        """The ``time.monotonic()`` by which a request must have started, or None for no deadline.

        ``arrived`` is the handler's own fresh ``time.monotonic()``, not the event loop's cached clock.

        The request's own timeout wins; then the ``default_timeout_ms`` setting; then config.json's
        ``default_timeout_microseconds``. Zero means "none given" at every level, as in Triton.
        """
        if timeout_us:
            return arrived + timeout_us / 1e6
        if self.default_timeout_ms:
            return arrived + self.default_timeout_ms / 1e3
        configured = model.config.dynamic_batching.default_queue_policy.default_timeout_microseconds
        return arrived + configured / 1e6 if configured else None

    async def infer(
        self,
        model: ServedModel,
        inputs: Tensors,
        rows: int,
        *,
        deadline: float | None,
        is_gone: Callable[[], bool] | None,
        arrival: Arrival | None = None,
    ) -> Tensors:
        """Queue inputs on the model's batcher and return this request's outputs.

        Raises:
            ServiceError: 400 too many rows, 429 queue full, 499 client gone, 503 stopping, 504 deadline,
                500 when the model failed on the batch.
        """
        try:
            return await model.batcher.infer(inputs, rows, deadline=deadline, is_gone=is_gone, arrival=arrival)
        except b.QueueFull as err:
            raise TooManyRequests(
                f"model '{model.config.name}' is overloaded: {err}", headers={"Retry-After": str(err.retry_after_s)}
            ) from err
        except b.BatchTooLarge as err:
            raise BadRequest(str(err), code="batch_too_large") from err
        except b.DeadlineExpired as err:
            raise DeadlineExceeded(f"model '{model.config.name}': {err}") from err
        except b.ClientGone as err:
            raise ClientClosedRequest(str(err)) from err
        except b.BatcherStopped as err:
            raise ServiceUnavailable(str(err), code="shutting_down", headers={"Retry-After": "1"}) from err
        except Exception as err:  # the batcher logged the traceback once for the whole batch
            raise InternalError(
                f"model '{model.config.name}' failed while running this request's batch; see the server log"
            ) from err

    def _preprocess(self, data: bytes, transform: ImageTransform, metrics: ModelMetrics) -> ModelInput:
        started = time.perf_counter()
        tensor = preprocess(data, transform, self.max_image_pixels)
        metrics.preprocessed(time.perf_counter() - started)
        return tensor

    async def _prepare(self, model: ServedModel, images: Sequence[tuple[str | None, bytes]]) -> npt.NDArray[Any]:
        transform = model.transform
        if transform is None:
            raise BadRequest(
                f"model '{model.config.name}' has no preprocessing section in config.json, so it cannot take "
                "images; send tensors to /v2/models/{model}/infer instead",
                code="no_preprocessing",
            )
        if len(images) == 1 and _cheap(images[0][1], transform):  # a hop to the pool would cost more than the work
            results: list[Any] = [_outcome(self._preprocess, images[0][1], transform, model.metrics)]
        else:
            loop = asyncio.get_running_loop()
            jobs = [loop.run_in_executor(self.pool, self._preprocess, d, transform, model.metrics) for _, d in images]
            results = await asyncio.gather(*jobs, return_exceptions=True)
        for i, ((name, _), result) in enumerate(zip(images, results, strict=True)):
            if isinstance(result, BaseException):
                which = f"image {i + 1} of {len(images)}" + (f" ('{name}')" if name else "")
                if isinstance(result, ImageTooLarge):
                    raise PayloadTooLarge(f"{which}: {result}", code="image_too_large") from result
                if isinstance(result, ImageError):
                    raise BadRequest(f"{which}: {result}", code="invalid_image") from result
                raise result
        arrays = [r for r in results if not isinstance(r, BaseException)]
        batch = arrays[0][None] if len(arrays) == 1 else np.stack(arrays)
        # float32 or uint8 pixels as the config says; cast for an FP16 or FP64 input (a no-op otherwise).
        return batch.astype(model.signature.inputs[model.config.input[0].name].dtype, copy=False)

    async def classify_scores(
        self,
        model: ServedModel,
        images: Sequence[tuple[str | None, bytes]],
        *,
        deadline: float | None,
        is_gone: Callable[[], bool] | None,
    ) -> npt.NDArray[np.float32]:
        """Decode and preprocess images off the event loop, run them as one request, return softmax scores (N, K)."""
        config = model.config
        if not images:
            raise BadRequest("no image in the request; send one as the body or as multipart file fields")
        if len(images) > config.max_batch_size:
            raise BadRequest(
                f"request carries {len(images)} images but model '{config.name}' batches at most "
                f"{config.max_batch_size}; split it into smaller requests",
                code="batch_too_large",
            )
        with model.batcher.announce() as arrival:
            batch = await self._prepare(model, images)
            outputs = await self.infer(
                model, {config.input[0].name: batch}, len(images), deadline=deadline, is_gone=is_gone, arrival=arrival
            )
        logits = outputs[config.output[0].name].astype(np.float32, copy=False)
        return softmax(logits.reshape(len(images), -1))

    def close(self) -> None:
        """Release the preprocessing threads (after the models drained)."""
        self.pool.shutdown(wait=True)


#: A lone image is preprocessed on the event loop when its body and its declared pixels, and the model's input, are
#: at most these: the work (a 124-byte 8x8 digit PNG to a 32x32 input: ~40 us) then costs less than the hop to the
#: preprocessing pool and back. Anything larger, or undeclared, goes to the pool, so the loop is never held long.
INLINE_IMAGE_BYTES = 4096
INLINE_IMAGE_PIXELS = 64 * 64


def _cheap(data: bytes, transform: ImageTransform) -> bool:
    if len(data) > INLINE_IMAGE_BYTES or transform.crop[0] * transform.crop[1] > INLINE_IMAGE_PIXELS:
        return False
    pixels = declared_pixels(data)
    return pixels is not None and pixels <= INLINE_IMAGE_PIXELS


def _outcome(function: Callable[..., Any], *args: Any) -> Any:
    """``function(*args)``, or the exception it raised, as ``asyncio.gather(..., return_exceptions=True)`` gives it."""
    try:
        return function(*args)
    except Exception as err:
        return err
