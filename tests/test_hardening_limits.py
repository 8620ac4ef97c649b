"""Resource caps of listeners: clients per listener and per relay, refused at once and counted."""

from __future__ import annotations

import json
import socket
import time

from conftest import wait_bound, wait_until
from peers import LOOP4, StreamPeer, free_port, make_frame, track

from fastrelay.control import query


def _connect(port: int) -> StreamPeer:
    return StreamPeer(track(socket.create_connection((LOOP4, port), timeout=10)))


def _refused(port: int) -> bool:
    """Connect, and tell whether the relay closed the connection at once (its reset may
    even arrive before connect() returns)."""
    try:
        peer = _connect(port)
    except ConnectionResetError:
        return True
    return _closed_by_relay(peer.sock)


def _closed_by_relay(sock: socket.socket, timeout: float = 5.0) -> bool:
    sock.settimeout(timeout)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def _listener_stats(ctl: str) -> dict:  # type: ignore[type-arg]
    doc = json.loads(query(ctl))
    return doc["links"][0]["endpoints"][0]  # type: ignore[no-any-return]


def test_hub_with_max_clients_refuses_the_101st(daemon_process, tmp_path) -> None:  # type: ignore[no-untyped-def]
    hub, ctl = free_port(), str(tmp_path / "ctl.sock")
    proc = daemon_process(f"""
[daemon]
control = "{ctl}"

[hub.h]
listen = "{LOOP4}:{hub}"
max_clients = 100
""")
    wait_bound(hub, socket.SOCK_STREAM)
    clients = [_connect(hub) for _ in range(100)]
    wait_until(lambda: _listener_stats(ctl)["connected"] == 100, 10, "100 clients")
    extra = _connect(hub)
    assert _closed_by_relay(extra.sock), "the 101st client was kept waiting"
    line = proc.wait_log("refused")
    assert "max_clients" in line and "100" in line
    stats = _listener_stats(ctl)
    assert stats["refused_clients"] == 1 and stats["connected"] == 100
    text = query(ctl, "metrics")
    assert 'fastrelay_refused_clients_total{link="h",endpoint="listen:' in text
    assert any(s.startswith("fastrelay_refused_clients_total{") and s.endswith(" 1")
               for s in text.splitlines())
    # The hundred keep working, and a place that frees up is taken again.
    frame = make_frame(300, 7)
    clients[0].send([frame])
    assert clients[99].recv(1) == [frame]
    clients[0].close()
    wait_until(lambda: _listener_stats(ctl)["connected"] == 99, 10, "a client leaving")
    late = _connect(hub)
    wait_until(lambda: _listener_stats(ctl)["connected"] == 100, 10, "a client joining")
    late.send([frame])
    assert clients[1].recv(1) == [frame]


def test_max_clients_total_counts_every_listener_of_the_relay(inprocess_relay) -> None:  # type: ignore[no-untyped-def]
    a, b = free_port(), free_port()
    relay = inprocess_relay(f"listen:{LOOP4}:{b}", listen=f"{LOOP4}:{a}", max_clients=4,
                            max_clients_total=6)
    kept = [_connect(a) for _ in range(4)]
    assert _refused(a)                           # over this listener's own limit
    kept += [_connect(b) for _ in range(2)]
    assert _refused(b)                           # b has room, the relay has not
    time.sleep(0.2)
    stats = relay.call(relay.relay.endpoint_stats)
    assert [s.refused for s in stats] == [1, 1]
    assert [s.connected for s in stats] == [4, 2]
    assert len(kept) == 6


def test_listener_survives_a_client_it_cannot_take(monkeypatch, caplog) -> None:  # type: ignore[no-untyped-def]
    """Any failure while taking a client is one line and a short pause, never a dead or
    spinning listener (an exception in a reader callback used to leave it readable)."""
    import asyncio
    import logging

    from fastrelay.endpoints import stream
    from fastrelay.relay import Relay, RelayOptions
    from fastrelay.targets import parse_target

    port = free_port()
    real_port = stream.StreamPort
    faults = [MemoryError(), OSError(24, "Too many open files")]

    def failing_port(*args: object, **kwargs: object) -> object:
        if faults:
            raise faults.pop(0)
        return real_port(*args, **kwargs)
    monkeypatch.setattr(stream, "StreamPort", failing_port)
    relay = Relay([parse_target(f"listen:{LOOP4}:{port}")], RelayOptions(),
                  point_to_point=False)

    async def main() -> int:
        loop = asyncio.get_running_loop()
        await relay.start()
        try:
            socks = []
            for _ in range(3):
                sock = track(socket.socket())
                sock.setblocking(False)
                await loop.sock_connect(sock, (LOOP4, port))
                socks.append(sock)
            for _ in range(300):
                if relay.endpoints[0].clients == 1:
                    break
                await asyncio.sleep(0.01)
            return relay.endpoints[0].clients  # type: ignore[attr-defined, no-any-return]
        finally:
            relay.close()

    with caplog.at_level(logging.INFO, logger="fastrelay"):
        assert asyncio.run(main()) == 1
    lines = [r.getMessage() for r in caplog.records]
    assert not faults
    # One line per failure (each its own episode: the listener accepted in between) ...
    taken = [line for line in lines if "cannot take a client" in line]
    assert len(taken) == 2 and "MemoryError" in taken[0] and "Too many" in taken[1], lines
    # ... and one when it accepts again.
    assert any("accepting again" in line for line in lines), lines
    assert not any(r.exc_info for r in caplog.records)
