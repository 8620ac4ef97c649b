"""Tap device set-up: open taps the way qemu does for vhost-net, create and enslave via pyroute2.

Everything here runs once per target at start-up; the data plane (TapPort) only reads and
writes the descriptors returned. Interface changes go through netlink (pyroute2), never
through `ip` or `brctl`; the tun driver itself is driven with its ioctls.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import random
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from ._core import TUN_CONSTANTS as T
from .errors import StartError

log = logging.getLogger("fastrelay")

__all__ = ["OFFLOAD_FULL", "TUN_PATH", "TapDevice", "create_bridge_tap", "open_tap"]

TUN_PATH = "/dev/net/tun"
# struct ifreq: 16 bytes of name, then a union whose first member we use is ifr_flags.
_IFREQ = struct.Struct("16sH22x")
_TAP_FLAGS = T["IFF_TAP"] | T["IFF_NO_PI"] | T["IFF_VNET_HDR"]
# What we ask the kernel to hand us with offloads on, best first: everything qemu asks
# for with vhost-net, then without UFO (gone from tap since Linux 4.14 on some builds),
# then checksum offload alone. The kernel refuses unknown bits with EINVAL.
OFFLOAD_FULL = (T["TUN_F_CSUM"] | T["TUN_F_TSO4"] | T["TUN_F_TSO6"] | T["TUN_F_TSO_ECN"]
                | T["TUN_F_UFO"])
_OFFLOAD_STEPS = (OFFLOAD_FULL, OFFLOAD_FULL & ~T["TUN_F_UFO"],
                  T["TUN_F_CSUM"] | T["TUN_F_TSO4"] | T["TUN_F_TSO6"], T["TUN_F_CSUM"])
# IFLA_TUN_TYPE of a tap (IFF_TAP); a tun device would carry IFF_TUN.
_TYPE_TAP = T["IFF_TAP"]
# The first MAC byte of taps we create: locally administered and high, so a bridge that
# takes the lowest port address as its own never takes ours (libvirt does the same).
_MAC_PREFIX = 0xFE


@dataclass
class TapDevice:
    """An opened tap: its name, one descriptor per queue, the offloads in force."""

    name: str
    fds: list[int]
    offload: int          # TUN_F_* bits accepted from the kernel (0: plain frames only)
    created: bool         # we made it (non-persistent: it goes away with the descriptors)

    def close(self) -> None:
        """Close every descriptor (a tap we created disappears with the last one)."""
        for fd in self.fds:
            try:
                os.close(fd)
            except OSError as exc:
                log.debug("closing tap %s descriptor %d: %s", self.name, fd, exc)
        self.fds = []


def _check_name(what: str, name: str) -> None:
    """StartError unless name can be an interface name: 1..15 bytes of UTF-8 (IFNAMSIZ).

    A command line may carry bytes that are no text at all (they arrive as surrogates);
    netlink and TUNSETIFF need the name encoded.
    """
    try:
        size = len(name.encode())
    except UnicodeEncodeError:
        raise StartError(what, "not a valid interface name (not UTF-8 text)") from None
    if not 1 <= size <= 15:
        raise StartError(what, f"not a valid interface name ({size} bytes; 1..15 allowed)")


def _ipr() -> Any:
    """A netlink socket in the current network namespace (pyroute2 is imported lazily)."""
    from pyroute2 import IPRoute

    return IPRoute()


def _link_info(ipr: Any, name: str) -> tuple[Any, str | None, dict[str, Any]] | None:
    """(link message, kind, IFLA_INFO_DATA attributes) of interface name, or None."""
    from pyroute2.netlink.exceptions import NetlinkError

    try:
        links = ipr.link("get", ifname=name)
    except NetlinkError as exc:
        if exc.code in (errno.ENODEV, errno.ENOENT):
            return None
        raise
    if not links:
        return None
    link = links[0]
    info = link.get("IFLA_LINKINFO")
    kind = info.get("IFLA_INFO_KIND") if info else None
    data = info.get("IFLA_INFO_DATA") if info else None
    attrs = dict(data["attrs"]) if data and "attrs" in data else {}
    return link, kind, attrs


def _open_queue(what: str, name: str, flags: int) -> tuple[int, str]:
    """One /dev/net/tun descriptor attached with TUNSETIFF; returns (fd, device name)."""
    try:
        fd = os.open(TUN_PATH, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise StartError(what, f"{TUN_PATH} does not exist (no tun support: load the tun "
                               f"module, or give the container the device)") from None
    except OSError as exc:
        raise StartError(what, f"cannot open {TUN_PATH}: {exc.strerror} (it must be "
                               f"readable and writable by this user; usually mode 0666)"
                         ) from None
    try:
        ifr = bytearray(_IFREQ.pack(name.encode(), flags))
        fcntl.ioctl(fd, T["TUNSETIFF"], ifr)
        # The kernel writes back the name it used ("tap%d" becomes "tap0").
        real = bytes(ifr[:16]).split(b"\0", 1)[0].decode()
        fcntl.ioctl(fd, T["TUNSETVNETHDRSZ"], struct.pack("i", T["VNET_HDR_LEN"]))
    except OSError:
        os.close(fd)
        raise
    return fd, real


def _set_offload(fd: int, want: bool) -> int:
    """TUNSETOFFLOAD: the richest set the kernel accepts when want, else none. Returns it."""
    steps = _OFFLOAD_STEPS if want else (0,)
    for bits in steps:
        try:
            fcntl.ioctl(fd, T["TUNSETOFFLOAD"], bits)
            return bits
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
    fcntl.ioctl(fd, T["TUNSETOFFLOAD"], 0)
    return 0


def _open_queues(what: str, name: str, queues: int, offload: bool) -> TapDevice:
    """Open queues descriptors of tap name (created if absent and permitted)."""
    flags = _TAP_FLAGS | (T["IFF_MULTI_QUEUE"] if queues > 1 else 0)
    fds: list[int] = []
    try:
        fd, real = _open_queue(what, name, flags)
        fds.append(fd)
        for _ in range(queues - 1):
            fds.append(_open_queue(what, real, flags)[0])
        bits = _set_offload(fds[0], offload)
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    return TapDevice(real, fds, bits, created=False)


def _tap_error(what: str, exc: OSError, creating: bool) -> StartError:
    """The one line for a failed TUNSETIFF / netlink change."""
    if exc.errno == errno.EPERM:
        if creating:
            return StartError(what, "creating a tap needs CAP_NET_ADMIN (run as root; or "
                                    "have root create a persistent tap owned by you, "
                                    "`ip tuntap add NAME mode tap user YOU`, and use "
                                    "tap:NAME)")
        return StartError(what, "not permitted: the tap belongs to another user "
                                "(run as its owner, or as root)")
    if exc.errno == errno.EINVAL:
        return StartError(what, f"the kernel refused the tap set-up ({exc.strerror}): "
                                f"a multi-queue tap needs queues=N (N > 1), a "
                                f"single-queue one queues=1")
    if exc.errno == errno.EBUSY:
        return StartError(what, "the tap is in use by another program")
    return StartError(what, exc.strerror or str(exc))


def open_tap(what: str, name: str, *, queues: int = 1, offload: bool = False) -> TapDevice:
    """Attach to the existing tap name (e.g. persistent, made for this user); no root needed.

    Tries to bring it up when it is down (allowed only with CAP_NET_ADMIN; a user's tap
    is normally brought up by whoever made it). Raises StartError with the reason.
    """
    from pyroute2.netlink.exceptions import NetlinkError

    _check_name(what, name)
    with _netlink(what) as ipr:
        found = _link_info(ipr, name)
        if found is None:
            raise StartError(what, f"no interface named {name!r} (create it first, e.g. "
                                   f"`ip tuntap add {name} mode tap user YOU`)")
        link, kind, attrs = found
        if kind != "tun" or attrs.get("IFLA_TUN_TYPE", _TYPE_TAP) != _TYPE_TAP:
            raise StartError(what, f"{name!r} is not a tap device "
                                   f"(it is a {'tun' if kind == 'tun' else kind or 'device'})")
        multi = bool(attrs.get("IFLA_TUN_MULTI_QUEUE", 0))
        if multi != (queues > 1):
            raise StartError(what, f"{name!r} is a {'multi' if multi else 'single'}-queue tap: "
                                   f"use {'queues=N with N > 1' if multi else 'queues=1'}")
        try:
            dev = _open_queues(what, name, queues, offload)
        except OSError as exc:
            raise _tap_error(what, exc, creating=False) from None
        if not link["flags"] & 1:  # IFF_UP
            try:
                ipr.link("set", index=link["index"], state="up")
            except NetlinkError as exc:
                dev.close()
                raise StartError(what, f"tap {name!r} is down and cannot be brought up "
                                       f"here ({os.strerror(exc.code)}): bring it up "
                                       f"first") from None
    return dev


def create_bridge_tap(what: str, bridge: str, *, queues: int = 1,
                      offload: bool = False) -> TapDevice:
    """A new non-persistent tap with the bridge's MTU, up and enslaved to bridge.

    On any failure everything made so far is undone (the tap is closed, so it vanishes;
    the bridge is never changed) and StartError says why.
    """
    from pyroute2.netlink.exceptions import NetlinkError

    _check_name(what, bridge)
    with _netlink(what) as ipr:
        found = _link_info(ipr, bridge)
        if found is None:
            raise StartError(what, f"no interface named {bridge!r}")
        link, kind, _ = found
        if kind != "bridge":
            raise StartError(what, f"{bridge!r} is not a bridge (it is a "
                                   f"{kind or 'plain device'}); use tap:NAME for a tap")
        mtu = int(link.get("IFLA_MTU") or 1500)
        try:
            dev = _open_queues(what, "tap%d", queues, offload)
        except OSError as exc:
            raise _tap_error(what, exc, creating=True) from None
        dev.created = True
        try:
            index = ipr.link_lookup(ifname=dev.name)[0]
            mac = ":".join(f"{b:02x}" for b in
                           [_MAC_PREFIX, *random.Random().randbytes(5)])
            # MTU before joining: a tap at 1500 would pin a jumbo bridge to 1500.
            ipr.link("set", index=index, mtu=mtu, address=mac)
            ipr.link("set", index=index, master=link["index"])
            ipr.link("set", index=index, state="up")
        except NetlinkError as exc:
            dev.close()
            raise StartError(what, f"cannot join {dev.name} to {bridge} "
                                   f"({os.strerror(exc.code)})") from None
        except BaseException:
            dev.close()
            raise
    log.info("%s: %s created (mtu %d, offloads %#x)", what, dev.name, mtu, dev.offload)
    return dev


@contextmanager
def _netlink(what: str) -> Iterator[Any]:
    """An IPRoute socket for the duration of a set-up step; StartError if none can be had."""
    try:
        ipr = _ipr()
    except OSError as exc:
        raise StartError(what, f"no netlink socket: {exc.strerror or exc}") from None
    try:
        yield ipr
    finally:
        ipr.close()
