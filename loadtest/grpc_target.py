"""The KServe v2 gRPC transport (Triton's ``inference.GRPCInferenceService``, as ``tritonclient.grpc`` speaks it):
where the gRPC endpoint is, and lanes to it (``loadtest.grpc_lanes``), each on a channel with its own connection.

N closed-loop users are N channels (``grpc-stream``: N streams, one per channel), each with one request in flight,
as N HTTP users are N keep-alive connections: the comparison between protocols is one of framing, not of
connection count. The same holds for the open loop's pool.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import grpc

from loadtest.grpc_lanes import Metadata, StreamLane, UnaryLane
from loadtest.transport import DoneCallback

#: Each channel its own TCP connection: by default channels to one address share one, and a lost connection
#: would take every user with it. No message size limit: ResNet batches of 32 rows are 19 MB.
CHANNEL_OPTIONS = (
    ("grpc.use_local_subchannel_pool", 1),
    ("grpc.max_receive_message_length", -1),
    ("grpc.max_send_message_length", -1),
)


@dataclass(frozen=True)
class GrpcTarget:
    """A KServe v2 gRPC endpoint, as a ``loadtest.transport.Transport``: unary calls, or ``streaming``."""

    host: str
    port: int
    streaming: bool = False
    token: str | None = None

    @classmethod
    def from_address(cls, address: str, streaming: bool = False, token: str | None = None) -> GrpcTarget:
        """Parse ``host:port`` (or ``grpc://host:port``).

        Raises:
            ValueError: no port, or not a number.
        """
        host, _, port = address.removeprefix("grpc://").rstrip("/").rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"gRPC address {address!r} is not host:port, e.g. 127.0.0.1:8001")
        return cls(host.strip("[]"), int(port), streaming, token)

    @property
    def url(self) -> str:
        return f"grpc://{self.host}:{self.port}" + (" (stream)" if self.streaming else "")

    @property
    def metadata(self) -> Metadata:
        """What every call carries: the bearer token, when there is one."""
        return (("authorization", f"Bearer {self.token}"),) if self.token else ()

    async def channel(self) -> grpc.aio.Channel:
        """A channel of its own, once connected.

        Raises:
            ConnectionError: the connection failed (refused, or closed before the HTTP/2 handshake ended).
        """
        channel = grpc.aio.insecure_channel(f"{self.host}:{self.port}", options=CHANNEL_OPTIONS)
        try:
            state = channel.get_state(try_to_connect=True)
            while state is not grpc.ChannelConnectivity.READY:
                if state in (grpc.ChannelConnectivity.TRANSIENT_FAILURE, grpc.ChannelConnectivity.SHUTDOWN):
                    raise ConnectionError(f"gRPC connection to {self.host}:{self.port} failed ({state.name})")
                await channel.wait_for_state_change(state)
                state = channel.get_state(try_to_connect=True)
        except BaseException:
            await channel.close()
            raise
        return channel

    async def connect(self, on_done: DoneCallback) -> UnaryLane | StreamLane:
        """A lane on a new channel (``ConnectionError``, an ``OSError``, when the server does not accept)."""
        channel = await self.channel()
        return (
            StreamLane(channel, self.metadata, on_done)
            if self.streaming
            else UnaryLane(channel, self.metadata, on_done)
        )

    async def probe(self, request: bytes, timeout_s: float) -> None:
        """Send ``request`` on a fresh lane; raises ``RuntimeError`` with the server's status and reason."""
        answer: asyncio.Future[tuple[int, str | None]] = asyncio.get_running_loop().create_future()

        def done(_: object, status: int, error: str | None) -> None:
            if not answer.done():
                answer.set_result((status, error))

        lane = await asyncio.wait_for(self.connect(done), timeout_s)
        try:
            lane.send(request, 0.0)
            status, error = await asyncio.wait_for(answer, timeout_s)
        finally:
            lane.close()
        if error is not None or not 200 <= status < 300:
            raise RuntimeError(f"probe request to {self.url} failed: {lane.reason or error or status}")
