"""``LingeringTransport`` sends what one loop turn wrote in one go, and never loses or reorders it on close.

uvicorn writes a response's status line and headers, then its body, as two writes: two send calls (on loopback
each also does the receiver's TCP work) where one would do. The inner transport here records the calls it gets.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from service.http_transport import LingeringTransport


class _Recording(asyncio.Transport):
    """The socket's transport, as far as the wrapper uses it: records each call."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, Any]] = []
        self.closed = False
        self.on_write: Callable[[], None] = lambda: None  # as a full buffer calls the protocol's pause_writing

    def write(self, data: Any) -> None:
        self.calls.append(("write", bytes(data)))
        self.on_write()

    def writelines(self, list_of_data: Any) -> None:
        self.calls.append(("writelines", [bytes(d) for d in list_of_data]))
        self.on_write()

    def write_eof(self) -> None:
        self.calls.append(("write_eof", None))

    def can_write_eof(self) -> bool:
        return True

    def resume_reading(self) -> None:
        pass

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.calls.append(("abort", None))
        self.closed = True

    def get_write_buffer_size(self) -> int:
        return 0


async def _next_turn() -> None:
    await asyncio.sleep(0)


async def test_writes_of_one_loop_turn_leave_together_in_order() -> None:
    inner = _Recording()
    transport = LingeringTransport(inner, asyncio.get_running_loop(), linger_s=1.0)
    transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
    transport.write(b"ok")
    assert inner.calls == []  # held until the turn ends
    assert transport.get_write_buffer_size() == 40  # counted meanwhile, for the write timeout
    await _next_turn()
    assert inner.calls == [("writelines", [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n", b"ok"])]
    transport.write(b"next")
    await _next_turn()
    assert inner.calls[-1] == ("write", b"next")  # a lone write is passed on as it is


async def test_close_sends_what_was_written_before_the_half_close() -> None:
    inner = _Recording()
    transport = LingeringTransport(inner, asyncio.get_running_loop(), linger_s=1.0)
    transport.write(b"answer")
    transport.close()
    assert inner.calls == [("write", b"answer"), ("write_eof", None)]
    transport.write(b"late")  # after close: dropped, as uvicorn's writes to a closing transport are
    await _next_turn()
    assert inner.calls == [("write", b"answer"), ("write_eof", None)]
    transport.forget()


async def test_abort_drops_what_was_not_sent() -> None:
    inner = _Recording()
    transport = LingeringTransport(inner, asyncio.get_running_loop(), linger_s=1.0)
    transport.write(b"partial")
    transport.abort()
    await _next_turn()
    assert inner.calls == [("abort", None)]


async def test_what_was_written_before_the_connection_was_lost_is_dropped() -> None:
    inner = _Recording()
    transport = LingeringTransport(inner, asyncio.get_running_loop(), linger_s=1.0)
    transport.write(b"answer")
    inner.closed = True  # the peer went away before the turn ended
    await _next_turn()
    assert inner.calls == []  # a write to a closed socket's transport would raise in the loop's callback


async def test_bytes_handed_on_are_no_longer_counted_as_pending() -> None:
    inner = _Recording()
    transport = LingeringTransport(inner, asyncio.get_running_loop(), linger_s=1.0)
    seen: list[int] = []
    inner.on_write = lambda: seen.append(transport.get_write_buffer_size())  # what pause_writing would read
    transport.write(b"head")
    transport.write(b"body")
    await _next_turn()
    assert seen == [0]  # the socket's transport holds them now (this one reports 0): counted twice, the write
    # timeout's clock would see the buffer shrink when nothing was sent, and restart
