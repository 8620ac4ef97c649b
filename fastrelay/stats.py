"""Counters: totals over ports, per-endpoint and per-link snapshots, and the text of -v."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = ["Totals", "format_totals", "COUNTERS", "SWITCH_COUNTERS", "SWITCH_TOTALS",
           "EndpointStats", "LinkStats", "Snapshot", "SwitchStats"]

COUNTERS = ("rx_frames", "rx_bytes", "tx_frames", "tx_bytes",
            "drop_queue", "drop_invalid", "drop_send")
# What the switch decided for the frames a port received (Switch.port_stats): sent to
# the one port their destination was learned on, flooded (group or unknown destination),
# dropped as filtered (destination behind the same port, or trunk to trunk), or dropped
# because a loop had the port blocked.
SWITCH_COUNTERS = ("unicast", "flooded", "filtered", "drop_blocked")
# The switch's own counters that only grow (Switch.stats()); the rest of it are gauges.
SWITCH_TOTALS = ("full_refused", "moves", "loops", "duplicates", "events_lost")


class Totals:
    """Sums of port counters (frames, bytes, drops by reason) and the number of ports."""

    def __init__(self, base: Totals | None = None) -> None:
        self.values: dict[str, int] = (dict(base.values) if base
                                       else dict.fromkeys(COUNTERS, 0))
        self.ports = 0

    def add(self, port: Any) -> None:
        for name in COUNTERS:
            self.values[name] += getattr(port, name)

    def as_tuple(self) -> tuple[int, ...]:
        return (self.ports, *self.values.values())

    def __getitem__(self, name: str) -> int:
        return self.values[name]


@dataclass
class EndpointStats:
    """One endpoint's counters: its ports, open and closed, plus supervision events.

    Counters only grow for the life of the endpoint (and of the daemon's link, which
    folds in the endpoints of earlier runs with `absorb`), as Prometheus counters must.
    """

    label: str                   # the target as written in the config or on the command line
    name: str                    # what the logs call it ("tcp 127.0.0.1:5001")
    counters: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(COUNTERS + SWITCH_COUNTERS, 0))
    connected: int = 0           # ports open now (a listener may have many)
    connections: int = 0         # ports opened so far: connects and accepts
    disconnects: int = 0         # ports closed so far, for any reason
    reconnects: int = 0          # connections made again by the reconnect loop
    refused: int = 0             # clients accepted and closed at once: over max_clients
    lost_bytes: int = 0          # bytes still queued for a port when it closed (never sent)
    queued_bytes: int = 0        # bytes queued now
    refused_allow: int = 0       # clients closed at accept: not in the allowlist
    tls: bool = False            # a TLS endpoint (its handshake counters are reported)
    handshakes: int = 0          # TLS handshakes completed
    handshake_failures: dict[str, int] = field(default_factory=dict)  # by kind (tls.py)
    ports: list[dict[str, Any]] = field(default_factory=list)  # open ports: name + counters
    # A VXLAN endpoint's own counters (endpoints/vxlan.py VXLAN_COUNTERS); None for others.
    vxlan: dict[str, int] | None = None

    def absorb(self, earlier: EndpointStats) -> None:
        """Add the cumulative counters of an earlier run of the same endpoint."""
        for name in COUNTERS + SWITCH_COUNTERS:
            self.counters[name] += earlier.counters[name]
        self.connections += earlier.connections
        self.disconnects += earlier.disconnects
        self.reconnects += earlier.reconnects
        self.refused += earlier.refused
        self.lost_bytes += earlier.lost_bytes
        self.refused_allow += earlier.refused_allow
        self.tls = self.tls or earlier.tls
        self.handshakes += earlier.handshakes
        for kind, n in earlier.handshake_failures.items():
            self.handshake_failures[kind] = self.handshake_failures.get(kind, 0) + n
        if earlier.vxlan is not None:
            mine = self.vxlan if self.vxlan is not None else {}
            self.vxlan = {name: mine.get(name, 0) + n for name, n in earlier.vxlan.items()}

    def as_dict(self) -> dict[str, Any]:
        return {"endpoint": self.label, "name": self.name, **self.counters,
                "connected": self.connected, "connections": self.connections,
                "disconnects": self.disconnects, "reconnects": self.reconnects,
                "refused_clients": self.refused, "refused_allowlist": self.refused_allow,
                **({"tls_handshakes": self.handshakes,
                    "tls_handshake_failures": dict(self.handshake_failures)} if self.tls else {}),
                **({"vxlan": dict(self.vxlan)} if self.vxlan is not None else {}),
                "lost_bytes": self.lost_bytes, "queued_bytes": self.queued_bytes,
                "ports": self.ports}


@dataclass
class SwitchStats:
    """The switch of one link or hub: its mode, counters and (when asked for) MAC table.

    A point-to-point link's relay is a hub of two ports: it learns too, so that loops and
    duplicate MACs are reported there as well.
    """

    mode: str                    # "hub" (floods, learns only to report) or "switch"
    mac_age: float               # seconds an unseen MAC stays in the table
    # Switch.stats(): entries, capacity (gauges); SWITCH_TOTALS (counters)
    counters: dict[str, int] = field(default_factory=dict)
    # The MAC table: {"mac", "vlan", "port" (its name), "endpoint" (its label), "age"}, and
    # "remote" (HOST:PORT) for a MAC behind a remote endpoint of a VXLAN port
    table: list[dict[str, Any]] | None = None
    omitted: int = 0             # table rows left out of `table` (see STATS_MAC_TABLE_ROWS)

    def absorb(self, earlier: SwitchStats) -> None:
        """Add the counters of an earlier run of the same link (the gauges are this run's)."""
        for name in SWITCH_TOTALS:
            self.counters[name] = self.counters.get(name, 0) + earlier.counters.get(name, 0)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mode": self.mode, "mac_age": self.mac_age, **self.counters}
        if self.table is not None:
            out["mac_table"] = self.table
            out["mac_table_omitted"] = self.omitted
        return out


@dataclass
class LinkStats:
    """One link or hub of the daemon: its state and its endpoints' counters."""

    name: str
    kind: str                    # "link" or "hub"
    state: str                   # "starting", "up", "restarting", "failed", "stopped"
    restarts: int                # times its relay was started again after failing or ending
    error: str | None            # why it last failed, if it did
    endpoints: list[EndpointStats]
    budget: dict[str, int] | None = None  # its QueueBudget: limit, used, peak, refused_frames
    switch: SwitchStats | None = None     # its switch (hub or switch mode): counters, table
    capture: dict[str, Any] | None = None  # its captures: frames, dropped, sessions (each's stats)
    batch_waits: int = 0         # batch waits its hub took (--batch-wait-us), over every run

    @property
    def mode(self) -> str | None:
        """"hub" or "switch" for a hub; None for a link (point to point has no mode)."""
        return self.switch.mode if self.kind == "hub" and self.switch is not None else None

    @property
    def unforwarded(self) -> int | None:
        """Point to point only: frames read from one side that the other never took.

        Each frame read from a side is sent, queued or dropped (counted) by the other,
        unless the other side's connection failed at that instant: what is missing from
        the sums is what the relay lost with it. None for hubs (fan-out varies).
        """
        if self.kind != "link" or len(self.endpoints) != 2:
            return None
        lost = 0
        for src, dst in ((0, 1), (1, 0)):
            a, b = self.endpoints[src].counters, self.endpoints[dst].counters
            lost += max(0, a["rx_frames"] - b["tx_frames"] - b["drop_queue"] - b["drop_send"])
        return lost

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "mode": self.mode, "state": self.state,
                "restarts": self.restarts, "error": self.error,
                "unforwarded_frames": self.unforwarded, "queue_budget": self.budget,
                "switch": self.switch.as_dict() if self.switch is not None else None,
                "capture_frames": self.capture["frames"] if self.capture else 0,
                "capture_dropped": self.capture["dropped"] if self.capture else 0,
                "captures": self.capture["sessions"] if self.capture else [],
                "batch_waits": self.batch_waits,
                "endpoints": [e.as_dict() for e in self.endpoints]}


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} PB"


def format_totals(now: Totals, before: Totals | None, interval: float) -> str:
    """'ports 3 | in 1200 fr/s 1.2 MB/s (total ...) | out ... | dropped q/inv/send'."""
    def rate(name: str) -> float:
        return (now[name] - (before[name] if before else 0)) / interval if before else 0.0

    drops = now["drop_queue"] + now["drop_invalid"] + now["drop_send"]
    return (f"ports {now.ports} | in {rate('rx_frames'):.0f} fr/s {_size(rate('rx_bytes'))}/s "
            f"(total {now['rx_frames']} fr, {_size(now['rx_bytes'])}) | "
            f"out {rate('tx_frames'):.0f} fr/s {_size(rate('tx_bytes'))}/s "
            f"(total {now['tx_frames']} fr) | dropped {drops} "
            f"(queue full {now['drop_queue']}, invalid {now['drop_invalid']}, "
            f"send {now['drop_send']})")


class Snapshot(Protocol):
    """What the daemon's services read: every link's LinkStats (MAC tables when asked)."""

    def __call__(self, tables: bool = False) -> list[LinkStats]: ...
