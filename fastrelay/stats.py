"""Counters: totals over ports, and the one-line text of -v."""

from __future__ import annotations

from typing import Any

__all__ = ["Totals", "format_totals", "COUNTERS"]

COUNTERS = ("rx_frames", "rx_bytes", "tx_frames", "tx_bytes",
            "drop_queue", "drop_invalid", "drop_send")


class Totals:
    """Sums of port counters (frames, bytes, drops by reason) and the number of ports."""

    def __init__(self, base: Totals | None = None) -> None:
        self.values = dict(base.values) if base else dict.fromkeys(COUNTERS, 0)
        self.ports = 0

    def add(self, port: Any) -> None:
        for name in COUNTERS:
            self.values[name] += getattr(port, name)

    def as_tuple(self) -> tuple[int, ...]:
        return (self.ports, *self.values.values())

    def __getitem__(self, name: str) -> int:
        return self.values[name]


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
