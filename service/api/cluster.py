"""Answers for the whole server from any one of its worker processes: metrics, statistics, the repository.

Every worker counts only the requests it served and loads models only when asked, so a client (or Prometheus)
that reaches one worker through the shared port would see a part of the server. For the routes below, the worker
that takes a client's request answers it itself and puts the same request to every sibling over its private
socket (``service/peers.py``); it then answers with the sum of the counts, or, for load and unload, only once every
worker has done it. A request that came from a sibling (over its Unix socket: ``from_sibling``) is
answered locally, so nothing is asked twice.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import orjson
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from service.api.asgi_call import call_app
from service.api.body import read_raw_body
from service.cluster_merge import merge_model_stats, merge_prometheus, merge_repository_index
from service.errors import ServiceError, error_response, render
from service.peers import PEER_LOAD_TIMEOUT_S, PEER_TIMEOUT_S, PeerAnswer, Peers, from_sibling

_NAME = r"[^/]+"
_VERSION = rf"(/versions/{_NAME})?"


def _metrics(answers: Sequence[PeerAnswer], body: bytes) -> Response:
    return Response(merge_prometheus([a.body.decode() for a in answers]), media_type=CONTENT_TYPE_LATEST)


def _stats(answers: Sequence[PeerAnswer], body: bytes) -> Response:
    merged = merge_model_stats([orjson.loads(a.body) for a in answers])
    return Response(orjson.dumps(merged), media_type="application/json")


def _index(answers: Sequence[PeerAnswer], body: bytes) -> Response:
    ready_only = bool(body.strip()) and orjson.loads(body).get("ready") is True  # the local worker parsed it already
    merged = merge_repository_index([orjson.loads(a.body) for a in answers], ready_only)
    return Response(orjson.dumps(merged), media_type="application/json")


@dataclass(frozen=True)
class _WholeServerRoute:
    """A route that speaks for the whole server: how long siblings get, how answers combine (all 200)."""

    method: str
    pattern: re.Pattern[str]
    timeout_s: float
    combine: Callable[[Sequence[PeerAnswer], bytes], Response] | None  # given the answers and the request body


_ROUTES = (
    _WholeServerRoute("GET", re.compile(r"/metrics"), PEER_TIMEOUT_S, _metrics),
    _WholeServerRoute("GET", re.compile(rf"/v2/models(/{_NAME}{_VERSION})?/stats"), PEER_TIMEOUT_S, _stats),
    _WholeServerRoute("POST", re.compile(r"/v2/repository/index"), PEER_TIMEOUT_S, _index),
    # Load and unload: once every worker has done it, this worker's answer stands.
    _WholeServerRoute("POST", re.compile(rf"/v2/repository/models/{_NAME}/(load|unload)"), PEER_LOAD_TIMEOUT_S, None),
)


class ClusterMiddleware:
    """Fan a client's whole-server request out to the sibling workers and combine the answers.

    Args:
        app: The inner application, which answers for this worker.
        peers: The sibling workers.
        max_body_bytes: The largest request body forwarded (a load request's config override).
    """

    def __init__(self, app: ASGIApp, peers: Peers, max_body_bytes: int) -> None:
        self.app = app
        self.peers = peers
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = _route(scope) if scope["type"] == "http" and not from_sibling(scope.get("server")) else None
        if route is None:
            await self.app(scope, receive, send)
            return
        try:  # forwarded as it came: each worker decodes it as it would a client's
            body = await read_raw_body(Request(scope, receive), self.max_body_bytes)
        except ServiceError as err:
            await render(err)(scope, receive, send)
            return
        local = PeerAnswer("local", *await call_app(self.app, scope, body))
        answers = [local, *await self.peers.ask_all(_forwarded(scope, body), route.timeout_s)]
        failed = next((a for a in answers if a.status != 200), None)
        if failed is not None:
            response = _failure(failed, local)
        elif route.combine is None:
            response = Response(local.body, media_type="application/json")
        else:
            response = route.combine(answers, body)
        await response(scope, receive, send)


def _route(scope: Scope) -> _WholeServerRoute | None:
    """The whole-server route this request takes, if any."""
    for route in _ROUTES:
        if scope["method"] == route.method and route.pattern.fullmatch(scope["path"]):
            return route
    return None


def _failure(failed: PeerAnswer, local: PeerAnswer) -> Response:
    """The first failure, as this worker answered it, or a 503 naming a sibling that failed."""
    if failed is local:
        return Response(local.body, status_code=local.status, media_type="application/json")
    reason = f"answered {failed.status}" if failed.status else "did not answer"
    message = f"worker {failed.worker} of this server {reason}; the answer would cover only part of the server"
    return error_response(503, "worker_unavailable", message)


def _forwarded(scope: Scope, body: bytes) -> bytes:
    """The client's request as a sibling gets it: same method, target, headers and body, on a closing connection."""
    target = scope["raw_path"] + (b"?" + scope["query_string"] if scope["query_string"] else b"")
    skip = {b"connection", b"content-length", b"transfer-encoding", b"expect"}  # the body goes as it came
    lines = [scope["method"].encode() + b" " + target + b" HTTP/1.1"]
    lines += [name + b": " + value for name, value in scope["headers"] if name not in skip]
    lines += [b"connection: close", b"content-length: " + str(len(body)).encode()]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body
