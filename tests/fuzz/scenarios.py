"""The fuzz cases as the worker runs them: build the rig, send the case, pump, report."""

from __future__ import annotations

import ctypes
import itertools
import os
import socket
import struct
import sys
from typing import Any

import fastrelay._core as core
from fastrelay._core import DatagramPort, StreamPort, TapPort
from fuzz.rig import Rig, grow
from fuzz.wire import DgramCase, StreamCase, TapCase, dgram_wire, stream_chunks, tap_wire

SOL_UDP = 17
UDP_SEGMENT = 103             # <linux/udp.h>: the GSO segment size of one sendmsg


_names = itertools.count()


def _unix_name(role: str) -> str:
    """An abstract unix socket name unique to this worker (no file to clean up)."""
    return f"\0fastrelay-fuzz-{os.getpid()}-{next(_names)}-{role}"


def _sinks(rig: Rig, max_frame: int) -> None:
    rig.stream_sink(max_frame)
    rig.udp_sink(max_frame)
    rig.tap_sink(max_frame)


def run_datagrams(case: DgramCase) -> dict[str, Any]:
    """Send every message to a DatagramPort, all before the relay reads (GRO fills up)."""
    rig = Rig()
    if case.transport == "unix":
        family, relay_addr, sender_addr = socket.AF_UNIX, _unix_name("relay"), _unix_name("tx")
    else:
        family = socket.AF_INET6 if case.transport == "udp6" else socket.AF_INET
        host = "::1" if family == socket.AF_INET6 else "127.0.0.1"
        relay_addr = sender_addr = (host, 0)
    relay_end = socket.socket(family, socket.SOCK_DGRAM)
    relay_end.bind(relay_addr)
    target = relay_end.getsockname()
    grow(relay_end, "RCV", "SND")
    sender = rig.keep(socket.socket(family, socket.SOCK_DGRAM))
    sender.bind(sender_addr)
    grow(sender, "RCV", "SND")
    if family != socket.AF_UNIX:
        rig.watched.append(rig.keep(relay_end.dup()))
    relay_end.setblocking(False)
    sender.setblocking(False)
    port = DatagramPort(relay_end.detach(), f"{case.transport} source", family=family,
                        peer=sender.getsockname(), max_frame=case.max_frame)
    rig.attach(port)
    _sinks(rig, case.max_frame)
    for data, segment in dgram_wire(case):
        ancillary = [(SOL_UDP, UDP_SEGMENT, struct.pack("=H", segment))] if segment else []
        while True:
            try:
                sender.sendmsg([data], ancillary, 0, target)
                break
            except BlockingIOError:
                rig.pump()  # a unix receiver's queue is full (net.unix.max_dgram_qlen)
    rig.pump()
    return rig.result()


def run_stream(case: StreamCase) -> dict[str, Any]:
    """Send the stream to a StreamPort chunk by chunk (the relay reading between, if asked)."""
    rig = Rig()
    if case.transport == "tcp":
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
            listener.bind(("127.0.0.1", 0))
            listener.listen(1)
            sender = rig.keep(socket.create_connection(listener.getsockname()))
            relay_end, _ = listener.accept()
    else:
        relay_end, sender = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        rig.keep(sender)
    relay_end.setblocking(False)
    sender.setblocking(False)
    rig.attach(StreamPort(relay_end.detach(), "stream source", max_frame=case.max_frame))
    _sinks(rig, case.max_frame)
    for chunk in stream_chunks(case):
        if not rig.send_all(sender, chunk):
            break
        if case.pump_each:
            rig.pump()
    rig.pump()
    return rig.result()


def run_tap(case: TapCase) -> dict[str, Any]:
    """Hand a TapPort one message per read() from a socketpair, as a tap would."""
    rig = Rig()
    kind = socket.SOCK_SEQPACKET if case.transport == "seqpacket" else socket.SOCK_DGRAM
    relay_end, sender = socket.socketpair(socket.AF_UNIX, kind)
    rig.keep(sender)
    grow(sender, "SND")
    relay_end.setblocking(False)
    sender.setblocking(False)
    rig.attach(TapPort(relay_end.detach(), "tap source", offload=case.offload,
                       max_frame=case.max_frame))
    rig.tap_sink(case.max_frame)
    if case.plain_peer:
        rig.stream_sink(case.max_frame)
    for msg in tap_wire(case):
        while True:
            try:
                sender.send(msg)
                break
            except BlockingIOError:
                rig.pump()
    rig.pump()
    return rig.result()


def build_info(_: object = None) -> dict[str, Any]:
    """Which data plane this worker runs, and under which allocator."""
    return {"core": core.__file__, "debug_build": bool(getattr(core, "DEBUG_BUILD", False)),
            "pythonmalloc": os.environ.get("PYTHONMALLOC", ""), "pid": os.getpid(),
            "executable": sys.executable}


def overrun_heap(nbytes: int) -> dict[str, Any]:
    """Write past the end of a raw-allocator block, then free it: what a data-plane overflow
    does. Under PYTHONMALLOC=debug the free aborts the worker; the test expects that."""
    pymem = ctypes.pythonapi
    pymem.PyMem_RawMalloc.restype = ctypes.c_void_p
    pymem.PyMem_RawMalloc.argtypes = [ctypes.c_size_t]
    pymem.PyMem_RawFree.argtypes = [ctypes.c_void_p]
    block = pymem.PyMem_RawMalloc(64)
    ctypes.memset(block, 0x5A, 64 + nbytes)
    pymem.PyMem_RawFree(block)
    return {"survived": True}


CASES = {"datagrams": run_datagrams, "stream": run_stream, "tap": run_tap,
         "build_info": build_info, "overrun_heap": overrun_heap}
