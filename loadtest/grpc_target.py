"""The KServe v2 gRPC transport (Triton's ``inference.GRPCInferenceService``, as ``tritonclient.grpc`` speaks it):
where the gRPC endpoint is, and lanes to it (``loadtest.grpc_lanes``), each on a channel with its own connection.

N closed-loop users are N channels (``grpc-stream``: N streams, one per channel), each with one request in flight,
as N HTTP users are N keep-alive connections: the comparison between protocols is one of framing, not of
connection count. The open loop's pool shares each channel among up to ``OPEN_LOOP_LANES_PER_CHANNEL`` lanes, as
HTTP/2 is made to: a channel per request in flight would grow with any stall, and opening connections costs both
sides more CPU than the calls (a pool of 512 channels at 1,000 req/s measured its own connects: p50 763 ms, against
2.8 ms over 8 channels).
"""

from __future__ import annotations

import asyncio
import weakref
from dataclasses import dataclass

import grpc

from loadtest.grpc_lanes import Metadata, SharedChannel, StreamLane, UnaryLane
from loadtest.transport import DoneCallback

#: Each channel its own TCP connection: by default channels to one address share one, and a lost connection
#: would take every user with it. No message size limit: ResNet batches of 32 rows are 19 MB.
CHANNEL_OPTIONS = (
    ("grpc.use_local_subchannel_pool", 1),
    ("grpc.max_receive_message_length", -1),
    ("grpc.max_send_message_length", -1),
)


#: Open loop: lanes (each one request in flight) sharing one channel.
OPEN_LOOP_LANES_PER_CHANNEL = 32
#: The channels of each target, per event loop (a channel belongs to the loop that made it).
_POOLS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[GrpcTarget, list[SharedChannel]]] = (
    weakref.WeakKeyDictionary()
)


@dataclass(frozen=True)
class GrpcTarget:
    """A KServe v2 gRPC endpoint, as a ``loadtest.transport.Transport``: unary calls, or ``streaming``."""

    host: str
    port: int
    streaming: bool = False
    token: str | None = None
    lanes_per_channel: int = 1  # lanes sharing a channel (OPEN_LOOP_LANES_PER_CHANNEL in the open loop)

    @classmethod
    def from_address(
        cls, address: str, streaming: bool = False, token: str | None = None, lanes_per_channel: int = 1
    ) -> GrpcTarget:
        """Parse ``host:port`` (or ``grpc://host:port``).

        Raises:
            ValueError: no port, or not a number.
        """
        host, _, port = address.removeprefix("grpc://").rstrip("/").rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"gRPC address {address!r} is not host:port, e.g. 127.0.0.1:8001")
        return cls(host.strip("[]"), int(port), streaming, token, lanes_per_channel)

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
        """A lane on a channel with room, or on a new one (``ConnectionError``, an ``OSError``, when the server does
        not accept)."""
        pool = _POOLS.setdefault(asyncio.get_running_loop(), {}).setdefault(self, [])
        pool[:] = [shared for shared in pool if not shared.closed]
        shared = next((c for c in pool if not c.broken and c.lanes < self.lanes_per_channel), None)
        if shared is None:
            shared = SharedChannel(asyncio.get_running_loop().create_task(self.channel()))
            pool.append(shared)
        channel = await shared.join()
        lane = StreamLane if self.streaming else UnaryLane
        return lane(shared, channel, self.metadata, on_done)

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
