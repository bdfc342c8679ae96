"""The connection's transport as the HTTP front door uses it: writes coalesced per loop turn, closes staged.

``service/http_protocol.py`` wraps every accepted connection's transport in ``LingeringTransport``.
"""

from __future__ import annotations

import asyncio
from typing import Any

#: After the last response on a connection, how long the server keeps reading (and dropping) what the client still
#: sends before it closes: closing with unread bytes makes the kernel answer with a reset, which can destroy the
#: response the client has not read yet (RFC 9112 section 9.6). A client that hangs up ends it sooner.
LINGER_S = 2.0


class LingeringTransport(asyncio.Transport):
    """The connection's transport, closed in stages: write side first, then reading (and dropping) for a while.

    uvicorn and its request cycles call ``close()`` on whatever transport they were given; this one turns that into
    a half close (FIN after the buffered response), keeps reading so that bytes the client sent meanwhile do not
    make the kernel reset the connection, and closes for good when the client hangs up or after ``linger_s``.

    Writes made in one event-loop turn leave together at its end, or as soon as the protocol flushes a completed
    response: uvicorn writes a response's head and its body separately, and each send on loopback also pays for the
    receiver's TCP work (one of them cost about 7 % of a LeNet-5 request's CPU). A close sends what is pending first;
    an abort drops it.
    """

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop, linger_s: float) -> None:
        super().__init__()
        self._transport = transport
        self._loop = loop
        self._linger_s = linger_s
        self.closing = False
        self._timer: asyncio.TimerHandle | None = None
        self._pending: list[bytes | bytearray | memoryview] = []  # written this loop turn, sent together at its end

    def close(self) -> None:
        if self.closing:
            return
        self.flush()
        self.closing = True
        transport = self._transport
        if transport.is_closing():
            return
        if not transport.can_write_eof():
            transport.close()
            return
        transport.write_eof()
        transport.resume_reading()
        self._timer = self._loop.call_later(self._linger_s, transport.close)

    def forget(self) -> None:
        """The connection is gone: drop the linger timer."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def abort(self) -> None:
        self._pending.clear()
        self.closing = True
        self.forget()
        self._transport.abort()

    def is_closing(self) -> bool:
        return self.closing or self._transport.is_closing()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self.closing:
            return
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(data)

    def write_whole(self, data: bytes) -> None:
        """Write a complete answer: sent at once when nothing is pending, as coalescing would have nothing to join."""
        if self._pending or self.closing:
            self.write(data)
        else:
            self._transport.write(data)

    def flush(self) -> None:
        """Send what was written since the last flush (at the end of the loop turn, or before a close)."""
        # Taken out first: the write may call the protocol's pause_writing, which reads get_write_buffer_size().
        pending, self._pending = self._pending, []
        if not pending or self.closing or self._transport.is_closing():  # closed meanwhile: nobody to send it to
            return
        if len(pending) == 1:
            self._transport.write(pending[0])
        else:
            self._transport.writelines(pending)

    def pause_reading(self) -> None:
        if not self.closing:  # while lingering, reading goes on: that is the point
            self._transport.pause_reading()

    def resume_reading(self) -> None:
        if not self.closing:
            self._transport.resume_reading()

    def is_reading(self) -> bool:
        return self._transport.is_reading()

    def can_write_eof(self) -> bool:
        return self._transport.can_write_eof()

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(len(data) for data in self._pending)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._transport.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._transport.get_protocol()
