"""How REST request bodies become images: ``classify``'s raw body or multipart files, ``:predict``'s JSON instances.

Each image keeps the name an error message gives it (the multipart file name, ``instances[i]``); bad bodies are
refused here with the 4xx that names what was wrong, before anything is decoded.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import AsyncGenerator

import orjson
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request

from service.api.body import read_body
from service.api.request_info import header
from service.errors import BadRequest, UnsupportedMediaType

Images = list[tuple[str | None, bytes]]
#: Raw-body media types taken as one image. curl's ``--data-binary`` sends x-www-form-urlencoded by default.
_RAW_TYPES = ("application/octet-stream", "application/x-www-form-urlencoded", "")


async def _once(body: bytes) -> AsyncGenerator[bytes, None]:
    yield body


async def _multipart(request: Request, body: bytes, max_files: int) -> Images:
    parser = MultiPartParser(request.headers, _once(body), max_files=max_files, max_part_size=len(body) + 1)
    try:
        form = await parser.parse()
    except MultiPartException as err:
        raise BadRequest(f"malformed multipart/form-data body: {err.message}", code="bad_multipart") from err
    try:
        return [(f.filename, await f.read()) for _, f in form.multi_items() if isinstance(f, UploadFile)]
    finally:
        await form.close()


async def read_images(request: Request, limit: int, max_files: int) -> Images:
    """A ``classify`` body's images: the raw body as one, or each multipart file field (415 for other media)."""
    media_type = (header(request, b"content-type") or "").split(";")[0].strip().lower()
    if media_type != "multipart/form-data" and not media_type.startswith("image/") and media_type not in _RAW_TYPES:
        raise UnsupportedMediaType(
            f"Content-Type '{media_type}' is not accepted; send one image as the body (image/jpeg, image/png, "
            "image/webp, image/bmp, … or application/octet-stream) or images as multipart/form-data files"
            + ("; for JSON with base64 images use POST /v1/models/{model}:predict" if "json" in media_type else "")
        )
    body = await read_body(request, limit)
    if media_type == "multipart/form-data":
        return await _multipart(request, body, max_files)
    return [(None, body)]


def read_instances(body: bytes) -> tuple[Images, str | None]:
    """The images of a ``:predict`` body, and its ``top_k`` as JSON spells it (None when absent)."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as err:
        raise BadRequest(f"request body is not valid JSON: {err}") from err
    instances = document.get("instances") if isinstance(document, dict) else None
    if not isinstance(instances, list) or not instances:
        raise BadRequest('expected {"instances": [{"b64": "<base64 image>"}, …]} with at least one instance')
    # The JSON spelling, so a number is read as the query's digits are and anything else ("3", 3.0, true) refused.
    top = document.get("top_k")
    raw_k = None if top is None else orjson.dumps(top).decode()
    images: Images = []
    for i, instance in enumerate(instances):
        if isinstance(instance, dict) and len(instance) == 1 and "b64" not in instance:
            instance = next(iter(instance.values()))  # {"image_bytes": {"b64": …}}
        encoded = instance.get("b64") if isinstance(instance, dict) else None
        if not isinstance(encoded, str):
            raise BadRequest(f'instances[{i}] must be {{"b64": "<base64 image>"}}, got {str(instance)[:80]}')
        try:
            images.append((f"instances[{i}]", base64.b64decode(encoded, validate=True)))
        except (binascii.Error, ValueError) as err:
            raise BadRequest(f"instances[{i}].b64 is not valid base64 ({err})") from err
    return images, raw_k
