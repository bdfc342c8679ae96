"""``--wait-s``: the generator waits (bounded) for a server still starting, as compose starts both at once."""

from __future__ import annotations

import asyncio

import pytest

from loadtest.http import Endpoint, wait_ready


async def _health_server(not_ready_answers: int | None) -> tuple[asyncio.Server, list[int]]:
    """Answers 503 to the first ``not_ready_answers`` requests (None: to every one), then 200; records each status."""
    sent: list[int] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        status = 503 if not_ready_answers is None or len(sent) < not_ready_answers else 200
        sent.append(status)
        writer.write(f"HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".encode())
        await writer.drain()
        writer.close()

    return await asyncio.start_server(answer, "127.0.0.1", 0), sent


async def test_waits_through_not_ready_answers_until_ready() -> None:
    server, sent = await _health_server(not_ready_answers=2)
    async with server:
        endpoint = Endpoint("127.0.0.1", server.sockets[0].getsockname()[1], False, None)
        await wait_ready(endpoint, timeout_s=60.0)
    assert sent == [503, 503, 200]


async def test_a_server_never_ready_is_a_timeout_naming_it() -> None:
    server, sent = await _health_server(not_ready_answers=None)
    async with server:
        port = server.sockets[0].getsockname()[1]
        with pytest.raises(TimeoutError, match=f"127.0.0.1:{port}/v2/health/ready not ready after 1 s"):
            await wait_ready(Endpoint("127.0.0.1", port, False, None), timeout_s=1.0)
    assert sent
    assert set(sent) == {503}
