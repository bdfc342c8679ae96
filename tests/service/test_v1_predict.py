"""KServe v1 ``:predict`` answers as ``classify``: the labelled top-k per instance, ``top_k`` read and refused alike."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Callable
from io import BytesIO
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.app_client import serving


@pytest.fixture
async def client(tiny_repository: Callable[..., Path]) -> AsyncIterator[httpx.AsyncClient]:
    async with serving(tiny_repository()) as c:
        yield c


def _pngs() -> list[bytes]:
    rng = np.random.default_rng(5)
    images = []
    for _ in range(2):
        buffer = BytesIO()
        Image.fromarray(rng.integers(0, 256, (12, 10, 3), np.uint8)).save(buffer, format="PNG")
        images.append(buffer.getvalue())
    return images


def _instances(pngs: list[bytes], **extra: Any) -> dict[str, Any]:
    return {"instances": [{"b64": base64.b64encode(png).decode()} for png in pngs], **extra}


async def test_predict_answers_classify_s_labelled_top_k_per_instance(client: httpx.AsyncClient) -> None:
    pngs = _pngs()
    predicted = await client.post("/v1/models/tiny:predict", json=_instances(pngs))
    files = [("images", (f"{i}.png", png, "image/png")) for i, png in enumerate(pngs)]
    classified = await client.post("/v1/models/tiny/classify", files=files)
    assert predicted.status_code == classified.status_code == 200
    body = predicted.json()
    assert (body["model"], body["version"]) == ("tiny", "1")
    assert body["predictions"] == [result["predictions"] for result in classified.json()["results"]]
    first = body["predictions"][0]
    assert len(first) == 4  # the default top_k, 5, capped at the model's 4 classes
    assert {p["label"] for p in first} == {"a", "b", "c", "d"}
    assert [p["score"] for p in first] == sorted((p["score"] for p in first), reverse=True)
    assert body["predictions"] != [first, first]  # two different images, two answers


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/models/tiny:predict", {"top_k": 2}),  # in the body
        ("/v1/models/tiny:predict?top_k=2", {}),  # in the query, as classify takes it
        ("/v1/models/tiny/versions/1:predict?top_k=2", {"top_k": 2}),  # both, agreeing
    ],
)
async def test_top_k_is_honoured_from_the_body_or_the_query(
    client: httpx.AsyncClient, path: str, body: dict[str, Any]
) -> None:
    response = await client.post(path, json=_instances(_pngs(), **body))
    assert response.status_code == 200, response.text
    assert [len(p) for p in response.json()["predictions"]] == [2, 2]


@pytest.mark.parametrize("query", ["0", "5", "-1", "two", "²"])
async def test_a_bad_query_top_k_gets_classify_s_own_400(client: httpx.AsyncClient, query: str) -> None:
    png = _pngs()[0]
    predicted = await client.post("/v1/models/tiny:predict", params={"top_k": query}, json=_instances([png]))
    classified = await client.post("/v1/models/tiny/classify", params={"top_k": query}, content=png)
    assert predicted.status_code == classified.status_code == 400
    assert predicted.json() == classified.json()
    assert predicted.json()["code"] == "bad_top_k"


@pytest.mark.parametrize(
    ("top_k", "shown"),
    [(0, "'0'"), (5, "'5'"), ("2", "'\"2\"'"), (2.0, "'2.0'"), (True, "'true'"), ([2], "'[2]'"), (-1, "'-1'")],
)
async def test_a_bad_body_top_k_is_refused_as_json_spells_it(
    client: httpx.AsyncClient, top_k: object, shown: str
) -> None:
    response = await client.post("/v1/models/tiny:predict", json=_instances(_pngs(), top_k=top_k))
    assert response.status_code == 400
    assert response.json() == {
        "error": f"top_k is {shown}, expected a whole number 1..4 (the model's classes) in ASCII digits",
        "code": "bad_top_k",
    }


async def test_a_body_and_query_top_k_that_disagree_are_refused(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/models/tiny:predict?top_k=3", json=_instances(_pngs(), top_k=2))
    assert response.status_code == 400
    assert response.json() == {"error": "top_k is 3 in the query but 2 in the body; give one", "code": "bad_top_k"}


async def test_openapi_documents_the_new_answer_and_top_k(client: httpx.AsyncClient) -> None:
    operation = (await client.get("/openapi.json")).json()["paths"]["/v1/models/{model}:predict"]["post"]
    assert "top_k" in [p["name"] for p in operation["parameters"] if p["in"] == "query"]
    assert '"predictions": [[{"label", "index", "score"}' in operation["requestBody"]["description"]
