"""The properties every fuzz case must keep, checked on a worker's result."""

from __future__ import annotations

from typing import Any

from fuzz.wire import UDP4_MAX, VNET_HDR_LEN

ZERO_HDR = bytes(VNET_HDR_LEN)


def describe(item: Any) -> str:
    """A short name for a frame (or (header, frame)) in a failure message: size and tag."""
    if isinstance(item, tuple):
        return f"hdr {item[0].hex()} + {describe(item[1])}"
    return f"{len(item)} B {item[:12].hex()}"


def rig_sane(result: dict[str, Any]) -> None:
    """The rig itself worked: nothing hung, no rig socket overflowed, sinks saw valid framing."""
    assert not result["problems"], result["problems"]
    assert not result["sink_errors"], result["sink_errors"]


def delivered_in_order(sink: str, got: list[Any], want: list[Any], stats: dict[str, int],
                       unsendable: int = 0) -> None:
    """got is want with some frames left out, each whole and in order, and every frame left
    out is counted by the sink's port (queue full, or refused by the kernel).

    unsendable: frames of want's source this sink cannot carry at all (counted as drop_send).
    """
    i = 0
    for n, item in enumerate(got):
        while i < len(want) and want[i] != item:
            i += 1
        if i == len(want):
            raise AssertionError(
                f"{sink}: frame {n} of {len(got)} ({describe(item)}) was never sent, or "
                f"arrived twice or out of order; sent {len(want)}")
        i += 1
    counted = stats["drop_queue"] + stats["drop_send"]
    assert len(got) + counted == len(want) + unsendable, (
        f"{sink}: {len(want) + unsendable - len(got)} frames missing but {counted} counted "
        f"as dropped ({stats})")


def sinks_got_plain(result: dict[str, Any], frames: list[bytes]) -> None:
    """Every sink of a plain source (stream, datagram) got frames, in order, or counted them."""
    sinks, stats = result["sinks"], result["stats"]
    delivered_in_order("stream sink", sinks["stream sink"], frames, stats["stream sink"])
    fits = [f for f in frames if len(f) <= UDP4_MAX]
    delivered_in_order("udp sink", sinks["udp sink"], fits, stats["udp sink"],
                       unsendable=len(frames) - len(fits))
    # A tap is sent a plain frame with an all-zero header: nothing to offload.
    delivered_in_order("tap sink", sinks["tap sink"], [(ZERO_HDR, f) for f in frames],
                       stats["tap sink"])
