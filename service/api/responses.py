"""JSON responses for every handler, rendered by orjson (numpy arrays included). Errors render in service.errors."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response


def json_response(content: Any, status_code: int = 200) -> Response:
    """A JSON response rendered by orjson (numpy arrays allowed)."""
    return Response(
        orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY),
        status_code=status_code,
        media_type="application/json",
    )
