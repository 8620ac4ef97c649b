"""One datagram per frame, as qemu sends: what the relay pays per wake-up for a lone frame.

A sender does one `sendto` per frame into the UDP port of an in-process relay (the
control plane's own `Relay` on uvloop, so the path from epoll to the data plane is the
one `fastrelay` runs), which forwards to a UDP sink. The sender sends the next frame only
once the sink has the previous one: every wake-up of the relay brings exactly one
datagram, so batching cannot hide the per-wake-up cost. Everything runs on one thread;
the sender's and the sink's Python costs are the same for every build compared.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Iterator

import pytest
import uvloop

from bench.procs import PortPool
from fastrelay.relay import Relay, RelayOptions
from fastrelay.targets import parse_target

# A round is short (about 2 ms here) and there are many: on a shared machine the best
# round is one no other process got in the way of, and short rounds find such gaps.
FRAMES = 100
ROUNDS = 200
SHORT_ROUNDS = 50   # --bench-short
TIMEOUT = 10.0      # per round: a lost frame would otherwise stall the lock step
HEADER = b"\xff" * 6 + b"\x02" * 6 + b"\x88\xb5"  # broadcast, local source, test ethertype
SEQ = struct.Struct("!I")  # frame number, right after the Ethernet header


class LockStep:
    """sender -> relay (UDP in, UDP out) -> sink on one uvloop loop, one frame in flight."""

    def __init__(self, size: int) -> None:
        self.loop = uvloop.new_event_loop()
        self.frame = bytearray(HEADER + bytes(size - len(HEADER)))
        self.sender = self._udp()
        self.sink = self._udp()
        self.sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self.sink.setblocking(False)
        pool = PortPool()
        self.relay_in, relay_out = pool.take(), pool.take()
        sender_port = self.sender.getsockname()[1]
        sink_port = self.sink.getsockname()[1]
        targets = [parse_target(f"{self.relay_in}:127.0.0.1:{sender_port}"),
                   parse_target(f"{relay_out}:127.0.0.1:{sink_port}")]
        self.relay = Relay(targets, RelayOptions(bind="127.0.0.1"), point_to_point=True)
        self.received = 0
        self.bad = 0       # frames of the wrong size or out of order
        self._expect = 0
        self._arrived: asyncio.Future[None] | None = None
        self._buf = bytearray(65536)
        self.loop.run_until_complete(self.relay.start())
        self.loop.add_reader(self.sink.fileno(), self._on_sink)

    @staticmethod
    def _udp() -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        return s

    def _on_sink(self) -> None:
        while True:
            try:
                n = self.sink.recv_into(self._buf)
            except BlockingIOError:
                break
            if n != len(self.frame) or SEQ.unpack_from(self._buf, len(HEADER))[0] != self._expect:
                self.bad += 1
            self._expect += 1
            self.received += 1
        if self._arrived is not None and not self._arrived.done():
            self._arrived.set_result(None)

    async def _send(self, frames: int) -> None:
        target = ("127.0.0.1", self.relay_in)
        for i in range(frames):
            self._arrived = self.loop.create_future()
            SEQ.pack_into(self.frame, len(HEADER), self._expect)
            self.sender.sendto(self.frame, target)
            await self._arrived
            assert self.received == self._expect, f"frame {i}: nothing or too much arrived"

    def run(self, frames: int) -> None:
        """Send @frames frames, one at a time, through the relay."""
        self.loop.run_until_complete(asyncio.wait_for(self._send(frames), TIMEOUT))

    def close(self) -> None:
        async def stop() -> None:
            self.relay.close()  # needs the running loop: it stops watching the hub

        self.loop.remove_reader(self.sink.fileno())
        self.loop.run_until_complete(stop())
        self.loop.close()
        self.sender.close()
        self.sink.close()


@pytest.fixture
def lockstep(request: pytest.FixtureRequest) -> Iterator[LockStep]:
    ls = LockStep(request.param)
    try:
        yield ls
    finally:
        ls.close()


@pytest.mark.parametrize("lockstep", [64, 1500], indirect=True, ids=["64", "1500"])
def test_udp_one_datagram_per_frame(  # type: ignore[no-untyped-def]
        benchmark, lockstep: LockStep, short: bool) -> None:
    """100 lone datagrams of 64 or 1500 bytes through the relay (us/frame in extra_info)."""
    rounds = SHORT_ROUNDS if short else ROUNDS
    benchmark.pedantic(lockstep.run, args=(FRAMES,), rounds=rounds, warmup_rounds=5)
    assert lockstep.bad == 0
    assert lockstep.received == FRAMES * (rounds + 5)
    benchmark.extra_info["us_per_frame"] = benchmark.stats.stats.min / FRAMES * 1e6
