"""Running one HTTP request through the app in process, its body already in hand, and capturing the answer.

The cluster middleware answers a whole-server request for its own worker this way before adding the siblings'
answers, and the gRPC control plane puts each of its calls to the HTTP routes this way, so that both protocols
share one implementation of every route.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Scope


async def call_app(app: ASGIApp, scope: Scope, body: bytes) -> tuple[int, bytes]:
    """Run the request ``scope`` with ``body`` through ``app``; returns the status and the whole response body."""
    status = 500
    parts: list[bytes] = []
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def capture(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            parts.append(message.get("body", b""))

    await app(scope, receive, capture)
    return status, b"".join(parts)
