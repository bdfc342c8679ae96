"""The data plane on a tiny real model: deadline precedence, refusals mapped to statuses, image errors."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from prometheus_client import CollectorRegistry

from service.batching.errors import QueueFull
from service.dataplane import DataPlane
from service.errors import BadRequest, PayloadTooLarge, ServiceUnavailable, TooManyRequests
from service.metrics import Metrics
from service.model_manager import ModelManager
from service.settings import Settings


async def make_plane(repository: Path, default_timeout_ms: int = 0, **settings: object) -> DataPlane:
    metrics = Metrics(CollectorRegistry())
    models = ModelManager(Settings(repository_path=repository, **settings), metrics)  # type: ignore[arg-type]
    await models.load_startup()
    return DataPlane(
        models, metrics, max_image_pixels=10_000, default_timeout_ms=default_timeout_ms, preprocess_threads=1
    )


@pytest.fixture
async def plane(tiny_repository: Callable[..., Path]) -> AsyncIterator[DataPlane]:
    repository = tiny_repository(dynamic_batching={"default_queue_policy": {"default_timeout_microseconds": 7000}})
    plane = await make_plane(repository)
    yield plane
    await plane.models.close()
    plane.close()


async def test_deadline_precedence_request_then_setting_then_config(plane: DataPlane) -> None:
    model = plane.model("tiny")
    assert plane.deadline(model, 100.0, 2500) == pytest.approx(100.0025)  # the request's own timeout
    assert plane.deadline(model, 100.0, None) == pytest.approx(100.007)  # config.json's default
    plane.default_timeout_ms = 40
    assert plane.deadline(model, 100.0, None) == pytest.approx(100.04)  # the setting beats config.json


async def test_images_are_decoded_checked_and_classified(plane: DataPlane) -> None:
    buffer = BytesIO()
    Image.fromarray(np.full((20, 30, 3), 90, np.uint8)).save(buffer, format="PNG")
    good = buffer.getvalue()
    model = plane.model("tiny")
    scores = await plane.classify_scores(model, [("a", good), ("b", good)], deadline=None, is_gone=None)
    assert scores.shape == (2, 4)
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, rtol=1e-6)
    with pytest.raises(BadRequest, match=r"image 2 of 2 \('bad'\): cannot identify an image"):
        await plane.classify_scores(model, [("a", good), ("bad", b"nope")], deadline=None, is_gone=None)
    buffer = BytesIO()
    Image.fromarray(np.zeros((200, 200, 3), np.uint8)).save(buffer, format="PNG")
    with pytest.raises(PayloadTooLarge, match="40000 pixels, the limit is 10000"):
        await plane.classify_scores(model, [(None, buffer.getvalue())], deadline=None, is_gone=None)
    with pytest.raises(BadRequest, match="carries 9 images but model 'tiny' batches at most 8"):
        await plane.classify_scores(model, [(None, good)] * 9, deadline=None, is_gone=None)


async def test_batcher_refusals_become_service_errors(
    tiny_repository: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    plane = await make_plane(tiny_repository(), max_queue_size=1)
    model = plane.model("tiny")
    x = {"input": np.zeros((1, 3, 8, 8), np.float32)}

    async def full(*args: object, **kwargs: object) -> None:
        raise QueueFull(1, 1, 3)

    with monkeypatch.context() as patch:
        patch.setattr(model.batcher, "infer", full)  # the batcher's own refusal is tested in test_batcher.py
        with pytest.raises(TooManyRequests, match="overloaded: queue holds 1 requests, the limit is 1") as caught:
            await plane.infer(model, x, 1, deadline=None, is_gone=None)
    assert caught.value.headers["Retry-After"] == "3"
    await plane.models.unload("tiny")
    with pytest.raises(ServiceUnavailable, match="shutting down"):
        await plane.infer(model, x, 1, deadline=None, is_gone=None)
    plane.close()


class _NoPool:
    """Stands in for the preprocessing pool and fails the test if a job reaches it."""

    def submit(self, *args: object, **kwargs: object) -> None:
        raise AssertionError("a tiny lone image went to the preprocessing pool")

    def shutdown(self, wait: bool = True) -> None:
        return None


def _png(width: int, height: int) -> bytes:
    buffer = BytesIO()
    Image.fromarray(np.full((height, width, 3), 90, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


async def test_a_tiny_lone_image_is_preprocessed_on_the_loop_with_the_same_result(plane: DataPlane) -> None:
    model = plane.model("tiny")
    tiny = _png(8, 8)
    pooled = await plane.classify_scores(model, [(None, tiny), (None, tiny)], deadline=None, is_gone=None)
    plane.pool, real_pool = _NoPool(), plane.pool  # type: ignore[assignment]
    try:
        inline = await plane.classify_scores(model, [(None, tiny)], deadline=None, is_gone=None)
        broken = tiny[:41] + b"\xff" * (len(tiny) - 53) + tiny[-12:]  # its header intact, its pixel data not
        with pytest.raises(BadRequest, match="corrupt or truncated"):  # the same errors, inline too
            await plane.classify_scores(model, [(None, broken)], deadline=None, is_gone=None)
    finally:
        plane.pool = real_pool
    np.testing.assert_array_equal(inline[0], pooled[0])


@pytest.mark.parametrize(
    ("image", "inline"),
    [
        (_png(8, 8), True),
        (_png(64, 64), True),
        (_png(65, 64), False),  # more pixels than the loop may take on
        (_png(2000, 2000), False),  # a small body declaring many pixels: the pool
        (b"not an image", False),  # no header to trust: the pool, which explains the error
    ],
)
def test_only_small_declared_images_for_small_inputs_are_inline(image: bytes, inline: bool) -> None:
    from service.dataplane import INLINE_IMAGE_BYTES, _cheap
    from service.preprocess import ImageTransform
    from service.repository import Preprocessing

    small_input = ImageTransform.from_config(Preprocessing(resize=32, crop=(32, 32)))
    large_input = ImageTransform.from_config(Preprocessing(resize=256, crop=(224, 224)))
    assert _cheap(image, small_input) is (inline and len(image) <= INLINE_IMAGE_BYTES)
    assert not _cheap(image, large_input)
