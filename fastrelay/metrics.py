"""Metrics: the daemon's counters as Prometheus text, served with JSON over a tiny HTTP listener.

The Prometheus text exposition format (version 0.0.4) is written by hand: it is a few
lines per metric family, and the `prometheus-client` package would add a dependency and
a registry of its own for numbers the links already keep. Counters are per link and
endpoint (the target as written in the config), summed over every port the endpoint
has had, so they never go down while the link runs; the open ports are in the JSON.

HTTP: `GET /metrics` (Prometheus), `GET /stats` (JSON, as `fastrelay stats`). HTTP/1.0,
one request per connection: scrapers need no more.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import Callable, Iterable
from typing import Any

from . import __version__, defaults
from .endpoints.base import resolve
from .errors import StartError
from .service import OneShotServer, RequestTooLong, read_until
from .stats import LinkStats, Snapshot
from .tls import FAILURE_KINDS

log = logging.getLogger("fastrelay")

__all__ = ["CONTENT_TYPE", "MetricsServer", "render_prometheus", "stats_document"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# name, type, help (the first entry of a family gives it), EndpointStats field, extra labels.
_ENDPOINT_METRICS: tuple[tuple[str, str, str, str, dict[str, str]], ...] = (
    ("fastrelay_received_frames_total", "counter",
     "Frames received from the endpoint's peers.", "rx_frames", {}),
    ("fastrelay_received_bytes_total", "counter",
     "Frame bytes received from the endpoint's peers.", "rx_bytes", {}),
    ("fastrelay_sent_frames_total", "counter",
     "Frames sent (or queued to send) to the endpoint's peers.", "tx_frames", {}),
    ("fastrelay_sent_bytes_total", "counter",
     "Frame bytes sent (or queued to send) to the endpoint's peers.", "tx_bytes", {}),
    ("fastrelay_dropped_frames_total", "counter",
     ("Frames dropped, by reason: queue_full (the peer is slower than the others), "
      "invalid (malformed frame received; for VXLAN also another VNI or a stranger's "
      "packet), send_error (refused by the kernel), loop_blocked (received while a "
      "suspected loop had the port blocked)."),
     "drop_queue", {"reason": "queue_full"}),
    ("fastrelay_dropped_frames_total", "counter", "", "drop_invalid", {"reason": "invalid"}),
    ("fastrelay_dropped_frames_total", "counter", "", "drop_send", {"reason": "send_error"}),
    ("fastrelay_dropped_frames_total", "counter", "", "drop_blocked",
     {"reason": "loop_blocked"}),
    ("fastrelay_unicast_frames_total", "counter",
     ("Frames received from the endpoint's peers that went to the one port their "
      "destination MAC was learned on (switch mode)."), "unicast", {}),
    ("fastrelay_flooded_frames_total", "counter",
     ("Frames received from the endpoint's peers that went to every other port: broadcast, "
      "multicast, an unknown destination, or any frame in hub mode."), "flooded", {}),
    ("fastrelay_filtered_frames_total", "counter",
     ("Frames received from the endpoint's peers that went nowhere: their destination is "
      "behind the same port, or both are trunks (split horizon)."), "filtered", {}),
    ("fastrelay_lost_on_close_bytes_total", "counter",
     "Bytes still queued for a peer when its connection closed (never sent).",
     "lost_bytes", {}),
    ("fastrelay_connections_total", "counter",
     "Connections opened by the endpoint: connects and accepts.", "connections", {}),
    ("fastrelay_disconnects_total", "counter",
     "Connections of the endpoint that closed, for any reason.", "disconnects", {}),
    ("fastrelay_reconnects_total", "counter",
     "Connections made again by the reconnect loop after a loss.", "reconnects", {}),
    ("fastrelay_refused_clients_total", "counter",
     ("Clients a listener accepted and closed at once: over max_clients (per listener) or "
      "max_clients_total (per link or hub)."), "refused", {}),
    ("fastrelay_refused_allowlist_total", "counter",
     "Clients a TCP listener closed at accept because their address is not in its allowlist.",
     "refused_allow", {}),
    ("fastrelay_peers_connected", "gauge",
     "Peers (ports) the endpoint has open now.", "connected", {}),
    ("fastrelay_queued_bytes", "gauge",
     "Bytes waiting in the endpoint's send queues now.", "queued_bytes", {}),
)


# Per VXLAN endpoint: (name, type, help, key of EndpointStats.vxlan, extra labels).
_VXLAN_METRICS: tuple[tuple[str, str, str, str, dict[str, str]], ...] = (
    ("fastrelay_vxlan_dropped_frames_total", "counter",
     ("VXLAN packets and frames dropped, by reason: vni (another VNI, or the I flag clear; "
      "also in invalid), foreign (from an address that is no remote endpoint; also in "
      "invalid), mtu (too big for the path, never fragmented; also in send_error)."),
     "drop_vni", {"reason": "vni"}),
    ("fastrelay_vxlan_dropped_frames_total", "counter", "", "drop_foreign",
     {"reason": "foreign"}),
    ("fastrelay_vxlan_dropped_frames_total", "counter", "", "drop_mtu", {"reason": "mtu"}),
    ("fastrelay_vxlan_replicated_frames_total", "counter",
     ("Extra copies a VXLAN endpoint sent by head-end replication: a flooded frame goes to "
      "every remote endpoint."), "replicated", {}),
)


# Per link: its backlog budget (config queue_total). name, type, help, LinkStats.budget key.
_BUDGET_METRICS: tuple[tuple[str, str, str, str], ...] = (
    ("fastrelay_queue_budget_bytes", "gauge",
     "Bytes all backlogs of the link or hub may hold together (queue_total).", "limit"),
    ("fastrelay_queue_budget_used_bytes", "gauge",
     "Bytes the link's backlogs hold now.", "used"),
    ("fastrelay_queue_budget_peak_bytes", "gauge",
     "Most bytes the link's backlogs held at once.", "peak"),
    ("fastrelay_queue_budget_refused_frames_total", "counter",
     "Frames dropped because the link's backlogs together were full (also in queue_full).",
     "refused_frames"),
)


# Per link: its switch (a hub learns too). name, type, help, SwitchStats.counters key.
_SWITCH_METRICS: tuple[tuple[str, str, str, str], ...] = (
    ("fastrelay_fdb_entries", "gauge",
     "MACs in the link's MAC table (forwarding database) now.", "entries"),
    ("fastrelay_fdb_capacity", "gauge",
     "Most MACs the link's table holds (mac_table_size); when full it stops learning.",
     "capacity"),
    ("fastrelay_fdb_refused_frames_total", "counter",
     "Frames whose source MAC was not learned because the MAC table was full.",
     "full_refused"),
    ("fastrelay_mac_moves_total", "counter",
     "Times a learned MAC was seen on another port than before.", "moves"),
    ("fastrelay_loops_total", "counter",
     "Suspected loops: a MAC moved between ports more than loop_threshold times in 1 s.",
     "loops"),
    ("fastrelay_duplicate_macs_total", "counter",
     "Duplicate MACs: one MAC seen on two non-trunk ports within 2 s.", "duplicates"),
    ("fastrelay_switch_events_lost_total", "counter",
     ("Loop and duplicate events not logged because too many came at once (still counted "
      "in fastrelay_loops_total and fastrelay_duplicate_macs_total)."), "events_lost"),
)


# Per link: its captures (`pcap` and `fastrelay capture`). name, type, help, key.
_CAPTURE_METRICS: tuple[tuple[str, str, str, str], ...] = (
    ("fastrelay_capture_frames_total", "counter",
     "Frames the link's captures (pcap file, fastrelay capture) copied.", "frames"),
    ("fastrelay_capture_dropped_frames_total", "counter",
     ("Frames the link's captures dropped: the file or reader was slower than the traffic "
      "(forwarding did not wait), or failed."), "dropped"),
    ("fastrelay_captures", "gauge",
     "Captures of the link running now.", "sessions"),
)


def _escape(value: str) -> str:
    """A label value as the text format wants it: backslash, quote and newline escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(labels: dict[str, str]) -> str:
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items()) + "}"


def _endpoint_value(stats: Any, field: str) -> int:
    value = stats.counters.get(field)
    return int(value if value is not None else getattr(stats, field))


def render_prometheus(links: Iterable[LinkStats]) -> str:
    """The Prometheus text exposition of the links' counters (one family block per name)."""
    links = list(links)
    families: dict[str, tuple[str, str, list[str]]] = {}

    def sample(name: str, kind: str, text: str, labels: dict[str, str], value: float) -> None:
        family = families.setdefault(name, (kind, text, []))
        shown = repr(value) if isinstance(value, float) else str(value)
        family[2].append(f"{name}{_labels(labels)} {shown}")

    sample("fastrelay_build_info", "gauge", "Version of the running fastrelay.",
           {"version": __version__}, 1)
    for link in links:
        base = {"link": link.name}
        sample("fastrelay_link_up", "gauge",
               "1 when the link or hub is running, 0 while it is being restarted or failed.",
               {**base, "kind": link.kind}, 1 if link.state == "up" else 0)
        sample("fastrelay_link_restarts_total", "counter",
               "Times the link or hub was started again after failing or ending.",
               base, link.restarts)
        sample("fastrelay_link_batch_waits_total", "counter",
               "Times the link's hub waited batch_wait_us to read a stream's frames as one "
               "batch.", base, link.batch_waits)
    for name, kind, text, key in _BUDGET_METRICS:
        for link in links:
            if link.budget is not None:
                sample(name, kind, text, {"link": link.name}, link.budget[key])
    for name, kind, text, key in _SWITCH_METRICS:
        for link in links:
            if link.switch is not None and key in link.switch.counters:
                sample(name, kind, text, {"link": link.name}, link.switch.counters[key])
        families.setdefault(name, (kind, text, []))
    for link in links:
        if link.unforwarded is not None:
            sample("fastrelay_link_unforwarded_frames_total", "counter",
                   "Point-to-point links: frames read from one side that the other side "
                   "never took because its connection failed at that instant.",
                   {"link": link.name}, link.unforwarded)
    for name, kind, text, key in _CAPTURE_METRICS:
        for link in links:
            if link.capture is not None:
                value = (len(link.capture["sessions"]) if key == "sessions"
                         else link.capture[key])
                sample(name, kind, text, {"link": link.name}, value)
    for name, kind, text, field, extra in _ENDPOINT_METRICS:
        for link in links:
            for endpoint in link.endpoints:
                labels = {"link": link.name, "endpoint": endpoint.label, **extra}
                sample(name, kind, text, labels, _endpoint_value(endpoint, field))
        families.setdefault(name, (kind, text, []))  # declared even with no link
    for name, kind, text, key, extra in _VXLAN_METRICS:
        for link in links:
            for endpoint in link.endpoints:
                if endpoint.vxlan is not None:
                    sample(name, kind, text, {"link": link.name, "endpoint": endpoint.label,
                                              **extra}, endpoint.vxlan.get(key, 0))
    for link in links:
        for endpoint in link.endpoints:
            if not endpoint.tls:
                continue
            labels = {"link": link.name, "endpoint": endpoint.label}
            sample("fastrelay_tls_handshakes_total", "counter",
                   "TLS handshakes the endpoint completed.", labels, endpoint.handshakes)
            for reason in FAILURE_KINDS:
                sample("fastrelay_tls_handshake_failures_total", "counter",
                       "TLS handshakes that failed, by reason: no_certificate, bad_certificate "
                       "(other CA, wrong name, expired), refused_by_peer (it refused ours), "
                       "protocol (not TLS, e.g. a plaintext client), closed, timeout.",
                       {**labels, "reason": reason},
                       endpoint.handshake_failures.get(reason, 0))
    out = []
    for name, (kind, text, samples) in families.items():
        out.append(f"# HELP {name} {text}")
        out.append(f"# TYPE {name} {kind}")
        out.extend(samples)
    return "\n".join(out) + "\n"


def stats_document(links: Iterable[LinkStats], uptime: float) -> dict[str, Any]:
    """The JSON document of `fastrelay stats` and `GET /stats`."""
    return {"version": __version__, "uptime": round(uptime, 3),
            "links": [link.as_dict() for link in links]}


class MetricsServer:
    """The optional HTTP listener: /metrics and /stats, read from snapshot() on each request.

    Served by a OneShotServer, so it still answers when the daemon is out of descriptors.
    """

    def __init__(self, address: tuple[str, int], snapshot: Snapshot,
                 uptime: Callable[[], float]) -> None:
        self.address = address
        self.snapshot = snapshot
        self.uptime = uptime
        self.server: OneShotServer | None = None

    async def start(self) -> None:
        host, port = self.address
        where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        socks: list[socket.socket] = []
        # Resolved as every endpoint resolves its host (a link-local one keeps its %link).
        addresses = await resolve(f"metrics listener {where}", host, port, socket.SOCK_STREAM)
        try:
            for family, addr in dict.fromkeys(addresses):
                sock = socket.socket(family, socket.SOCK_STREAM)
                socks.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    # One socket per address family, as asyncio.start_server does.
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind(addr)
                sock.listen(defaults.LISTEN_BACKLOG)
                sock.setblocking(False)
        except OSError as exc:
            for sock in socks:
                sock.close()
            raise StartError(f"metrics listener {host}:{port}",
                             f"cannot listen: {exc.strerror or exc}") from None
        self.server = OneShotServer(socks, self._serve, f"metrics listener {where}")
        self.server.start()
        log.info("metrics on http://%s/metrics and /stats", where)

    async def close(self) -> None:
        if self.server is not None:
            await self.server.close()
            self.server = None

    async def _serve(self, conn: socket.socket) -> None:
        try:
            head = await read_until(conn, (b"\r\n\r\n", b"\n\n"), defaults.HTTP_HEAD_MAX)
        except RequestTooLong:
            status, ctype, body, is_head = ("400 Bad Request", "text/plain",
                                            "request too long\n", False)
        else:
            if head is None:
                return  # the client left before its request was complete
            status, ctype, body, is_head = self._answer(head)
        data = body.encode()
        answer = (f"HTTP/1.0 {status}\r\nContent-Type: {ctype}\r\n"
                  f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n").encode()
        await asyncio.get_running_loop().sock_sendall(conn, answer if is_head else answer + data)

    def _answer(self, head: bytes) -> tuple[str, str, str, bool]:
        """The answer to one request head: (status, content type, body, is HEAD)."""
        request = head.split(b"\n", 1)[0].decode("latin-1").split()
        if len(request) < 2:
            return "400 Bad Request", "text/plain", "bad request\n", False
        method, target = request[0], request[1].split("?", 1)[0]
        if method not in ("GET", "HEAD"):
            return "405 Method Not Allowed", "text/plain", "GET or HEAD only\n", False
        is_head = method == "HEAD"
        if target == "/metrics":
            return "200 OK", CONTENT_TYPE, render_prometheus(self.snapshot()), is_head
        if target in ("/stats", "/stats.json"):
            document = stats_document(self.snapshot(tables=True), self.uptime())
            body = json.dumps(document, indent=1)
            return "200 OK", "application/json", body + "\n", is_head
        return "404 Not Found", "text/plain", "try /metrics or /stats\n", is_head
