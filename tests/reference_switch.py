"""Pure-Python model of the compiled Switch: the oracle its forwarding plans must match."""

from __future__ import annotations

from dataclasses import dataclass, field

MASK32 = 0xFFFFFFFF
MOVE_WINDOW_MS = 1000
REPORT_MS = 60000


def ms(now_ns: int) -> int:
    """The switch's clock: monotonic ns as uint32 milliseconds."""
    return (now_ns // 1_000_000) & MASK32


def since(now: int, then: int) -> int:
    """now - then in ms across the uint32 wrap."""
    return (now - then) & MASK32


def mac_str(mac: bytes) -> str:
    return ":".join(f"{b:02x}" for b in mac)


@dataclass
class Entry:
    port: int
    seen: int
    move_start: int
    moves: int = 0
    reported: int | None = None


@dataclass
class RefPort:
    trunk: bool
    blocked: bool = False
    blocked_until: int = 0
    counters: dict[str, int] = field(default_factory=lambda: dict.fromkeys(
        ("unicast", "flooded", "filtered", "drop_blocked"), 0))


class ReferenceSwitch:
    """Frame by frame, with dicts: learn the source, then flood, send to one port or drop.

    Ports are identified by whatever ids the caller gives attach(); events and counters
    have the compiled Switch's names. Expired entries stay in the dict (the compiled table
    frees them lazily too) but count as absent.
    """

    def __init__(self, forwarding: bool = True, capacity: int = 65536, mac_age: float = 300.0,
                 move_threshold: int = 5, hold: float = 10.0, dup_window: float = 2.0) -> None:
        self.forwarding = forwarding
        self.capacity = capacity
        self.max_age = int(mac_age * 1000)
        self.move_threshold = move_threshold
        self.hold = int(hold * 1000)
        self.dup_window = int(dup_window * 1000)
        self.ports: dict[int, RefPort] = {}  # in attach order
        self.table: dict[tuple[bytes, int], Entry] = {}
        self.events: list[tuple[str, str | None, int, int, int]] = []
        self.stats = dict.fromkeys(("full_refused", "moves", "loops", "duplicates"), 0)

    def attach(self, port: int, trunk: bool = False) -> None:
        self.ports[port] = RefPort(trunk)

    def detach(self, port: int) -> int:
        del self.ports[port]
        return self.flush(port)

    def flush(self, port: int) -> int:
        gone = [k for k, e in self.table.items() if e.port == port]
        for k in gone:
            del self.table[k]
        return len(gone)

    def live(self, key: tuple[bytes, int], now: int) -> Entry | None:
        e = self.table.get(key)
        return e if e is not None and since(now, e.seen) <= self.max_age else None

    def entries(self, now_ns: int) -> list[tuple[str, int, int, float]]:
        now = ms(now_ns)
        return [(mac_str(mac), vlan, e.port, since(now, e.seen) / 1000)
                for (mac, vlan), e in self.table.items() if since(now, e.seen) <= self.max_age]

    def may_send(self, src: int, dst: int) -> bool:
        s, d = self.ports[src], self.ports[dst]
        return dst != src and not d.blocked and not (s.trunk and d.trunk)

    def tick(self, now_ns: int) -> None:
        self.unblock(ms(now_ns))

    def unblock(self, now: int) -> None:
        for pid, p in self.ports.items():
            if p.blocked and since(now, p.blocked_until) < 1 << 31:
                p.blocked = False
                self.events.append(("unblocked", None, 0, -1, pid))

    def learn(self, src: int, mac: bytes, vlan: int, now: int) -> None:
        key = (mac, vlan)
        e = self.live(key, now)
        if e is None:
            if key not in self.table and len(self.table) >= self.capacity:
                self.stats["full_refused"] += 1
                return
            self.table[key] = Entry(src, now, now)
            return
        if e.port == src:
            e.seen = now
            return
        old, old_seen = e.port, e.seen
        e.port, e.seen = src, now
        if old not in self.ports:  # learned on a port that left: as good as new
            e.move_start, e.moves = now, 0
            return
        self.stats["moves"] += 1
        here, was = self.ports[src], self.ports[old]
        if (not here.trunk and not was.trunk and since(now, old_seen) <= self.dup_window
                and (e.reported is None or since(now, e.reported) >= REPORT_MS)):
            e.reported = now
            self.stats["duplicates"] += 1
            self.events.append(("duplicate", mac_str(mac), vlan, old, src))
        if since(now, e.move_start) >= MOVE_WINDOW_MS:
            e.move_start, e.moves = now, 0
        if e.moves <= self.move_threshold:  # past the threshold it stays flagged, silent
            e.moves += 1
            if e.moves == self.move_threshold + 1:
                self.stats["loops"] += 1
                self.events.append(("loop", mac_str(mac), vlan, old, src))
                if self.forwarding:
                    here.blocked, here.blocked_until = True, (now + self.hold) & MASK32
                    self.flush(src)

    def destination(self, src: int, mac: bytes, vlan: int, now: int) -> int | None:
        """The one port a unicast frame goes to; None: flood; -1: filtered."""
        e = self.live((mac, vlan), now)
        if e is None or e.port not in self.ports:
            return None
        return e.port if self.may_send(src, e.port) else -1

    def decide(self, src: int, frames: list[bytes], now_ns: int) -> list[set[int]]:
        """Per frame of one batch read from port src, the set of ports it goes to."""
        now = ms(now_ns)
        self.unblock(now)
        here = self.ports[src]
        flood = {p for p in self.ports if self.may_send(src, p)}
        out: list[set[int]] = []
        for frame in frames:
            dst, source = frame[:6], frame[6:12]
            tagged = len(frame) >= 18 and frame[12:14] == b"\x81\x00"
            vlan = int.from_bytes(frame[14:16], "big") & 0xFFF if tagged else 0
            if not here.blocked and not source[0] & 1 and source != bytes(6):
                self.learn(src, source, vlan, now)  # may block `here`: a loop shows
            if here.blocked:
                here.counters["drop_blocked"] += 1
                out.append(set())
                continue
            to = None if dst[0] & 1 or not self.forwarding else \
                self.destination(src, dst, vlan, now)
            if to is None:
                here.counters["flooded"] += 1
                out.append(set(flood))
            elif to < 0:
                here.counters["filtered"] += 1
                out.append(set())
            else:
                here.counters["unicast"] += 1
                out.append({to})
        return out

    def drain_events(self) -> list[tuple[str, str | None, int, int, int]]:
        events, self.events = self.events, []
        return events
