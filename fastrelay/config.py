"""Config file: reads the daemon's TOML into validated link specs, with errors at key and line.

The format (README "Daemon" has a full example)::

    [daemon]                     # optional
    metrics = "127.0.0.1:9750"   # HTTP listener: /metrics (Prometheus), /stats (JSON)
    control = "/run/fastrelay/control.sock"   # unix socket for `fastrelay stats`
    stop_timeout = 2.0           # seconds queued frames may take to drain on SIGTERM

    [defaults]                   # optional: options for every link and hub
    reconnect = true

    [link.NAME]                  # point to point: exactly two endpoints
    endpoints = ["127.0.0.1:5001", "6000:127.0.0.1:6001"]

    [hub.NAME]                   # a hub: any number of endpoints, plus an optional -l
    listen = "127.0.0.1:5000"
    endpoints = ["relay2.example:5000,trunk"]
    mode = "switch"              # a learning switch ("hub", the default, floods)

Endpoints use the command line's target syntax (targets.py), except `-` (stdio). A VXLAN
endpoint may also be an inline table, the same as its target string:

    endpoints = [{ vxlan = 42, port = 4789, peers = ["10.0.0.2:4789", "10.0.0.3:4789"] }]
    # = "vxlan:42:4789:10.0.0.2:4789,peer=10.0.0.3:4789" (its name in stats and logs)

Options
(in [defaults] or a link/hub): reconnect, reconnect_initial, reconnect_max,
reconnect_factor, reconnect_jitter, connect_timeout, queue, max_frame, max_clients,
max_clients_total, bind; for hubs only (in [defaults] or a hub): mode, mac_age,
mac_table_size, loop_threshold, loop_hold. Captures (capture.py): `pcap = "FILE"` in a
link or hub, and pcap_snaplen, pcap_size, pcap_count there or in [defaults]; they are no
part of a link's definition, so a reload that changes only them leaves its connections
alone. Every number has a range (defaults.py); inf and nan are refused.

tomllib reports syntax errors with a line but knows nothing of keys once parsed, so the
line of each key is found here by scanning the text (`KeyLines`); a problem is reported
as `FILE:LINE: dotted.key: what is wrong`, every problem of the file at once.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import math
import os
import re
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from . import defaults
from ._core import FRAME_MAX_LEN, FRAME_MIN_LEN, QUEUE_BUDGET_DEFAULT_BYTES, QUEUE_DEFAULT_BYTES
from .capture import CaptureOptions
from .errors import ConfigError, ConfigProblem, TargetError
from .relay import RelayOptions
from .targets import (VXLAN_PEERS_MAX, VXLAN_VNI_MAX, BridgeTarget,
                      StdioTarget, TapTarget, Target, TCPListenTarget, UDPTarget,
                      UnixDgramTarget, UnixListenTarget, VxlanTarget, parse_listen,
                      pair_problem, parse_target, vxlan_text)
from .tls import TLSFiles, TLSSetupError, parse_allow

__all__ = ["CaptureDefaults", "Config", "DaemonSettings", "KeyLines", "LinkOptions", "LinkSpec",
           "check_number", "load_config", "parse_config", "parse_hostport", "parse_size"]

_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}\Z")


def parse_size(text: str, maximum: int | None = None) -> int:
    """'4M', '512k', '65536', '1.5MiB' -> bytes; ValueError if not a size in 0..maximum."""
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    t = text.strip().lower().removesuffix("ib").removesuffix("b")
    scale = units.get(t[-1:], 1)
    number = t[:-1] if t[-1:] in units else t
    try:
        # int() first: a long integer stays exact; float() for "1.5M" (and "inf", "nan").
        value: float = int(number) if number.isdigit() else float(number)
    except ValueError:
        raise ValueError(f"not a size: {text!r} (e.g. 4M, 512k, 65536)") from None
    if not math.isfinite(value):
        raise ValueError(f"not a size: {text!r} (e.g. 4M, 512k, 65536)")
    if value < 0:
        raise ValueError("a size must be >= 0")
    size = int(value * scale)
    if maximum is not None and size > maximum:
        raise ValueError(f"{text!r} is too large (at most {_show_size(maximum)})")
    return size


def _show_size(n: int) -> str:
    for unit, shift in (("G", 30), ("M", 20), ("k", 10)):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return f"{n >> shift}{unit}"
    return str(n)


def check_number(value: object, low: float, high: float, *, integer: bool = False) -> str | None:
    """None when value is a finite number within low..high (an integer if integer is set);
    otherwise why not, as the end of an error line."""
    span = f"{int(low)}..{int(high)}" if integer else f"{low:g}..{high:g}"
    if integer:
        if isinstance(value, bool) or not isinstance(value, int):
            return f"must be an integer within {span}"
    elif isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"must be a number within {span}"
    if not (math.isfinite(value) and low <= value <= high):
        shown = f"{value:.6g}" if isinstance(value, float) else (
            str(value) if abs(value) < 10**12 else f"{value:.3g}")
        return f"{shown} is out of range ({span})"
    return None


def parse_hostport(text: str, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """'HOST:PORT', '[V6]:PORT' or 'PORT' (on default_host) -> (host, port); ValueError."""
    target = parse_listen(text)
    if not isinstance(target, TCPListenTarget):
        raise ValueError("expected HOST:PORT, [IPV6]:PORT or PORT")
    return (target.host if target.host is not None else default_host), target.port


@dataclass(frozen=True)
class LinkOptions:
    """Per-link options, defaults applied; equal options mean an unchanged link on reload."""

    reconnect: bool = True
    reconnect_initial: float = defaults.RECONNECT_INITIAL
    reconnect_max: float = defaults.RECONNECT_MAX
    reconnect_factor: float = defaults.RECONNECT_FACTOR
    reconnect_jitter: float = defaults.RECONNECT_JITTER
    connect_timeout: float = defaults.CONNECT_TIMEOUT
    queue: int = QUEUE_DEFAULT_BYTES
    queue_total: int = QUEUE_BUDGET_DEFAULT_BYTES
    max_frame: int = FRAME_MAX_LEN
    max_clients: int = defaults.MAX_CLIENTS
    max_clients_total: int = defaults.MAX_CLIENTS_TOTAL
    bind: str | None = None
    tls_cert: str | None = None      # paths as resolved (relative to the config file)
    tls_key: str | None = None
    tls_ca: str | None = None
    tls_name: str | None = None
    tls_timeout: float = defaults.TLS_HANDSHAKE_TIMEOUT
    allow: tuple[str, ...] = ()      # CIDR texts, checked by parse_allow
    # Hubs only (a link's are the defaults', and unused): see RelayOptions.
    mode: str = "hub"
    mac_age: float = defaults.MAC_AGE
    mac_table_size: int = defaults.MAC_TABLE_SIZE
    loop_threshold: int = defaults.LOOP_THRESHOLD
    loop_hold: float = defaults.LOOP_HOLD

    def relay_options(self, verbosity: int = 0) -> RelayOptions:
        """The RelayOptions a link with these options runs with."""
        return RelayOptions(
            tls=TLSFiles(self.tls_cert, self.tls_key, self.tls_ca), tls_name=self.tls_name,
            tls_timeout=self.tls_timeout, allow=parse_allow(self.allow),
            verbosity=verbosity, reconnect=self.reconnect, queue_bytes=self.queue,
            queue_total=self.queue_total,
            max_frame=self.max_frame, bind=self.bind, connect_timeout=self.connect_timeout,
            max_clients=self.max_clients, max_clients_total=self.max_clients_total,
            backoff={"initial": self.reconnect_initial, "maximum": self.reconnect_max,
                     "factor": self.reconnect_factor, "jitter": self.reconnect_jitter},
            switch=self.mode == "switch", mac_age=self.mac_age,
            mac_table_size=self.mac_table_size, loop_threshold=self.loop_threshold,
            loop_hold=self.loop_hold)


@dataclass(frozen=True)
class CaptureDefaults:
    """pcap_snaplen, pcap_size and pcap_count, as [defaults] or a link sets them."""

    snaplen: int = defaults.CAPTURE_SNAPLEN
    size: int | None = None
    count: int | None = None

    def options(self, path: str) -> CaptureOptions:
        return CaptureOptions(path, self.snaplen, self.size, self.count)


@dataclass(frozen=True)
class LinkSpec:
    """One named link (point to point) or hub, as the config file defines it."""

    name: str
    kind: str                       # "link" (point to point) or "hub"
    endpoints: tuple[str, ...]      # as written; a hub's `listen = "X"` first, as "listen:X"
    targets: tuple[Target, ...]     # the same, parsed
    options: LinkOptions
    line: int | None = field(default=None, compare=False)  # moving a link is no change
    # `pcap`: no part of the definition; a reload applies a change without a restart.
    capture: CaptureOptions | None = field(default=None, compare=False)

    @property
    def point_to_point(self) -> bool:
        return self.kind == "link"


@dataclass(frozen=True)
class DaemonSettings:
    """The [daemon] table: services of the process itself."""

    metrics: tuple[str, int] | None = None   # HTTP listener for /metrics and /stats
    control: str | None = None               # unix socket path for `fastrelay stats`
    stop_timeout: float = defaults.STOP_FLUSH_TIMEOUT


@dataclass(frozen=True)
class Config:
    """A validated config file."""

    path: str
    daemon: DaemonSettings
    links: dict[str, LinkSpec]

    @property
    def needs_net_admin(self) -> bool:
        """True when a link creates or attaches taps (the daemon then needs CAP_NET_ADMIN)."""
        return any(isinstance(t, (BridgeTarget, TapTarget))
                   for spec in self.links.values() for t in spec.targets)


# -- where keys are -------------------------------------------------------------------------

_BARE = r"[A-Za-z0-9_-]+"
_BASIC = r'"(?:[^"\\]|\\.)*"'
_LITERAL = r"'[^']*'"
_KEY = rf"(?:{_BARE}|{_BASIC}|{_LITERAL})"
_DOTTED = rf"{_KEY}(?:\s*\.\s*{_KEY})*"
_HEADER_RE = re.compile(rf"\s*\[\[?\s*({_DOTTED})\s*\]\]?\s*(?:#.*)?$")
_KEYLINE_RE = re.compile(rf"\s*({_DOTTED})\s*=")
_KEYPART_RE = re.compile(_KEY)


def _split_key(dotted: str) -> tuple[str, ...]:
    parts = []
    for m in _KEYPART_RE.finditer(dotted):
        part = m.group(0)
        if part[0] == '"':
            part = part[1:-1].encode().decode("unicode_escape")
        elif part[0] == "'":
            part = part[1:-1]
        parts.append(part)
    return tuple(parts)


class KeyLines:
    """The line (1-based) where each table header and key of a TOML text is written.

    A scan of the text, not a parser: it follows table headers and `key =` lines, and
    skips multi-line strings. Keys inside inline tables are found by their enclosing key.
    """

    def __init__(self, text: str) -> None:
        self.lines = text.splitlines()
        self.index: dict[tuple[str, ...], int] = {}
        table: tuple[str, ...] = ()
        in_multiline: str | None = None
        for number, line in enumerate(self.lines, 1):
            if in_multiline is not None:
                if line.count(in_multiline) % 2:
                    in_multiline = None
                continue
            header = _HEADER_RE.match(line)
            if header:
                table = _split_key(header.group(1))
                self.index.setdefault(table, number)
                continue
            keyline = _KEYLINE_RE.match(line)
            if keyline:
                self.index.setdefault(table + _split_key(keyline.group(1)), number)
            for quote in ('"""', "'''"):
                if line.count(quote) % 2:
                    in_multiline = quote
                    break

    def find(self, path: tuple[str, ...]) -> int | None:
        """The line of path, or of its longest prefix that is written in the text."""
        for end in range(len(path), 0, -1):
            if path[:end] in self.index:
                return self.index[path[:end]]
        return None

    def find_table(self, path: tuple[str, ...], index: int) -> int | None:
        """The line of the index-th (0-based) inline table `{` in the array at path."""
        start = self.find(path)
        if start is None:
            return None
        seen = 0
        for number in range(start, min(len(self.lines), start + 200) + 1):
            line = self.lines[number - 1]
            if number == start:
                line = line.partition("=")[2]
            seen += line.count("{")
            if seen > index:
                return number
        return start

    def find_item(self, path: tuple[str, ...], value: str) -> int | None:
        """The line of one string item of the array at path (it may span lines)."""
        start = self.find(path)
        if start is None:
            return None
        quoted = ('"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"', f"'{value}'")
        for number in range(start, min(len(self.lines), start + 200) + 1):
            if any(q in self.lines[number - 1] for q in quoted):
                return number
        return start


# -- validation ------------------------------------------------------------------------------

_OPTION_KEYS = ("reconnect", "reconnect_initial", "reconnect_max", "reconnect_factor",
                "reconnect_jitter", "connect_timeout", "queue", "queue_total", "max_frame",
                "max_clients", "max_clients_total", "bind", "tls_cert", "tls_key", "tls_ca",
                "tls_name", "tls_timeout", "allow")
# Options of hubs only: allowed in [defaults] (for every hub) and [hub.NAME].
_HUB_KEYS = ("mode", "mac_age", "mac_table_size", "loop_threshold", "loop_hold")
_MODES = ("hub", "switch")
# The numeric options: (low, high, integer).
_RANGES: dict[str, tuple[float, float, bool]] = {
    "reconnect_initial": (*defaults.DELAY_RANGE, False),
    "reconnect_max": (*defaults.DELAY_RANGE, False),
    "reconnect_factor": (*defaults.FACTOR_RANGE, False),
    "reconnect_jitter": (*defaults.JITTER_RANGE, False),
    "connect_timeout": (*defaults.CONNECT_TIMEOUT_RANGE, False),
    "max_frame": (FRAME_MIN_LEN, FRAME_MAX_LEN, True),
    "max_clients": (*defaults.CLIENTS_RANGE, True),
    "max_clients_total": (*defaults.CLIENTS_RANGE, True),
    "tls_timeout": (*defaults.TLS_TIMEOUT_RANGE, False),
    "mac_age": (*defaults.MAC_AGE_RANGE, False),
    "mac_table_size": (*defaults.MAC_TABLE_SIZE_RANGE, True),
    "loop_threshold": (*defaults.LOOP_THRESHOLD_RANGE, True),
    "loop_hold": (*defaults.LOOP_HOLD_RANGE, False),
}
_DAEMON_KEYS = ("metrics", "control", "stop_timeout")
_CAPTURE_KEYS = ("pcap_snaplen", "pcap_size", "pcap_count")


def _show_key(path: tuple[str | int, ...]) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            # A quoted key is shown escaped (json's rules are TOML's), so it stays one line.
            text = part if re.fullmatch(_BARE, part) else json.dumps(part)
            out += ("." if out else "") + text
    return out


class _Checker:
    """Walks the parsed document, collecting problems with their lines."""

    def __init__(self, text: str, base_dir: str = "") -> None:
        self.where = KeyLines(text)
        self.problems: list[ConfigProblem] = []
        self.base_dir = base_dir  # relative certificate paths are relative to the file

    def problem(self, path: tuple[str | int, ...], message: str, item: str | None = None,
                table: int | None = None) -> None:
        """Record a problem at path; its line is that of the string `item` in the array at
        path, or of its `table`-th inline table, or of the key."""
        keys = tuple(p for p in path if isinstance(p, str))
        line = (self.where.find_item(keys, item) if item is not None
                else self.where.find_table(keys, table) if table is not None
                else self.where.find(keys))
        self.problems.append(ConfigProblem(line, _show_key(path), message))

    def table(self, doc: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any] | None:
        value = doc.get(path[-1])
        if value is None:
            return None
        if not isinstance(value, dict):
            self.problem(path, f"must be a table ([{_show_key(path)}]), "
                               f"not {_type_name(value)}")
            return None
        return value

    def unknown(self, table: dict[str, Any], path: tuple[str, ...], known: tuple[str, ...]) -> None:
        for key in table:
            if key not in known:
                close = difflib.get_close_matches(key, known, 1)
                listed = ", ".join(known)
                # A long list would make the one error line hard to read: point to the manual.
                hint = (f"did you mean {close[0]!r}?" if close else f"known: {listed}"
                        if len(listed) <= 120 else "the keys are listed in fastrelay(1)")
                self.problem(path + (key,), f"unknown key ({hint})")

    def number(self, table: dict[str, Any], path: tuple[str, ...], key: str, default: float,
               low: float, high: float, integer: bool = False) -> float:
        value = table.get(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            kind = "an integer" if integer else "a number"
            self.problem(path + (key,), f"must be {kind}, not {_type_name(value)}")
            return default
        why = check_number(value, low, high, integer=integer)
        if why is not None:
            self.problem(path + (key,), why)
            return default
        return value if integer else float(value)

    def size(self, value: object, path: tuple[str, ...], maximum: int) -> int | None:
        """A size in bytes (an integer or a string such as "4M") within 0..maximum."""
        if isinstance(value, str):
            try:
                return parse_size(value, maximum)
            except ValueError as exc:
                self.problem(path, str(exc))
                return None
        if isinstance(value, int) and not isinstance(value, bool):
            why = check_number(value, 0, maximum, integer=True)
            if why is None:
                return value
            self.problem(path, f"{why} bytes")
            return None
        self.problem(path, f"must be a size in bytes (65536, \"4M\"), not {_type_name(value)}")
        return None

    def options(self, table: dict[str, Any], path: tuple[str, ...],
                base: LinkOptions) -> LinkOptions:
        """The options set in table over base."""
        values: dict[str, Any] = {}
        if "reconnect" in table:
            if isinstance(table["reconnect"], bool):
                values["reconnect"] = table["reconnect"]
            else:
                self.problem(path + ("reconnect",), "must be true or false, not "
                                                    f"{_type_name(table['reconnect'])}")
        for key, (low, high, integer) in _RANGES.items():
            if key in table:
                values[key] = self.number(table, path, key, getattr(base, key), low, high,
                                          integer)
        for key, maximum in (("queue", defaults.QUEUE_MAX),
                             ("queue_total", defaults.QUEUE_TOTAL_MAX)):
            if key in table:
                size = self.size(table[key], path + (key,), maximum)
                if size is not None:
                    values[key] = size
        if "bind" in table:
            bind = table["bind"]
            try:
                if not isinstance(bind, str):
                    raise ValueError
                ipaddress.ip_address(bind)
                values["bind"] = bind
            except ValueError:
                self.problem(path + ("bind",), "must be an IP address as a string "
                                               "(\"0.0.0.0\", \"::1\")")
        for key in ("tls_cert", "tls_key", "tls_ca", "tls_name"):
            if key in table:
                value = table[key]
                if isinstance(value, str) and value:
                    values[key] = (value if key == "tls_name"
                                   else os.path.join(self.base_dir, value))
                else:
                    self.problem(path + (key,), "must be a non-empty string")
        if "allow" in table:
            allow = table["allow"]
            if isinstance(allow, list) and all(isinstance(a, str) for a in allow):
                try:
                    parse_allow(allow)
                    values["allow"] = tuple(allow)
                except ValueError as exc:
                    self.problem(path + ("allow",), str(exc))
            else:
                self.problem(path + ("allow",), "must be a list of CIDR strings "
                                                "([\"10.1.0.0/16\", \"::1\"])")
        if "mode" in table:
            mode = table["mode"]
            if mode in _MODES:
                values["mode"] = mode
            else:
                shown = repr(mode) if isinstance(mode, str) else _type_name(mode)
                self.problem(path + ("mode",), f"must be \"hub\" or \"switch\", not {shown}")
        merged = {**base.__dict__, **values}
        if merged["reconnect_max"] < merged["reconnect_initial"]:
            self.problem(path + ("reconnect_max",), "must be >= reconnect_initial "
                                                    f"({merged['reconnect_initial']})")
            merged["reconnect_max"] = merged["reconnect_initial"]
        return LinkOptions(**merged)

    def capture(self, table: dict[str, Any], path: tuple[str, ...],
                base: CaptureDefaults) -> CaptureDefaults:
        """The capture keys set in table over base."""
        values: dict[str, Any] = {}
        if "pcap_snaplen" in table:
            values["snaplen"] = self.number(table, path, "pcap_snaplen", base.snaplen,
                                            *defaults.CAPTURE_SNAPLEN_RANGE, integer=True)
        if "pcap_size" in table:
            size = self.size(table["pcap_size"], path + ("pcap_size",),
                             defaults.CAPTURE_SIZE_RANGE[1])
            if size is not None and size < defaults.CAPTURE_SIZE_RANGE[0]:
                self.problem(path + ("pcap_size",), f"{size} is too small (at least "
                                                    f"{_show_size(defaults.CAPTURE_SIZE_RANGE[0])})")
            elif size is not None:
                values["size"] = size
        if "pcap_count" in table:
            values["count"] = self.number(table, path, "pcap_count", base.count or 0,
                                          *defaults.CAPTURE_COUNT_RANGE, integer=True) or None
        merged = CaptureDefaults(**{**base.__dict__, **values})
        if "pcap_count" in table and merged.count is not None and merged.size is None \
                and "pcap_size" not in table:
            self.problem(path + ("pcap_count",), "needs pcap_size (files rotate by size)")
        return merged

    def pcap(self, table: dict[str, Any], path: tuple[str, ...],
             base: CaptureDefaults) -> CaptureOptions | None:
        """`pcap = "FILE"` of a link or hub, with its capture keys; None without pcap."""
        settings = self.capture(table, path, base)
        if "pcap" not in table:
            return None
        value = table["pcap"]
        if not isinstance(value, str) or not value:
            self.problem(path + ("pcap",), "must be a file path as a string")
            return None
        if value == "-":
            self.problem(path + ("pcap",), "'-' (stdout) is for the command line only")
            return None
        return settings.options(value)

    def targets(self, table: dict[str, Any], path: tuple[str, ...],
                hub: bool) -> list[tuple[str, Target]]:
        raw = table.get("endpoints", [])
        if not isinstance(raw, list):
            self.problem(path + ("endpoints",), "must be a list of targets, e.g. "
                                                "[\"127.0.0.1:5001\", \"6000:127.0.0.1:6001\"]")
            return []
        out: list[tuple[str, Target]] = []
        tables = 0
        for i, item in enumerate(raw):
            if isinstance(item, dict):
                text = self.vxlan_table(item, path + ("endpoints", i), tables)
                tables += 1
                if text is None:
                    continue
            elif isinstance(item, str):
                text = item
            else:
                self.problem(path + ("endpoints", i), f"must be a target string (or a vxlan "
                                                      f"table), not {_type_name(item)}")
                continue
            # Where the endpoint is written: a string's own line, or its table's.
            where: dict[str, Any] = ({"table": tables - 1} if isinstance(item, dict)
                                     else {"item": text})
            try:
                target = parse_target(text)
            except TargetError as exc:
                self.problem(path + ("endpoints", i), exc.reason, **where)
                continue
            if isinstance(target, StdioTarget):
                self.problem(path + ("endpoints", i), "'-' (stdio) is for the command line "
                                                      "only", item=text)
                continue
            if target.trunk and not hub:
                self.problem(path + ("endpoints", i), "',trunk' is for hubs: a link (point to "
                                                      "point) has no other port to keep a "
                                                      "trunk's frames from", item=text)
                continue
            out.append((text, target))
        return out

    def vxlan_table(self, table: dict[str, Any], path: tuple[str | int, ...],
                    index: int) -> str | None:
        """The target string of `{ vxlan = VNI, port = PORT, peers = ["HOST:PORT", ...] }`
        (the index-th inline table of its array), or None (problems recorded)."""
        keys = ("vxlan", "port", "peers")
        for key in table:
            if key not in keys:
                self.problem(path + (key,), "unknown key of a vxlan endpoint (known: "
                                            "vxlan, port, peers)", table=index)
        ok = True
        for key, low, high in (("vxlan", 0, VXLAN_VNI_MAX), ("port", 1, 65535)):
            if key not in table:
                self.problem(path, f"a vxlan endpoint table needs `{key}`", table=index)
                ok = False
                continue
            why = check_number(table[key], low, high, integer=True)
            if why is not None:
                self.problem(path + (key,), why, table=index)
                ok = False
        peers = table.get("peers")
        if (not isinstance(peers, list) or not peers
                or not all(isinstance(p, str) and p and "," not in p for p in peers)):
            self.problem(path + ("peers",), "must be a non-empty list of \"HOST:PORT\" "
                                            "strings (the remote endpoints)", table=index)
            return None
        if len(peers) > VXLAN_PEERS_MAX:
            self.problem(path + ("peers",), f"{len(peers)} remote endpoints: at most "
                                            f"{VXLAN_PEERS_MAX}", table=index)
            return None
        if not ok:
            return None
        first = peers[0]
        if first.startswith("[") and "]:" not in first or ":" not in first:
            self.problem(path + ("peers",), f"{first!r}: expected HOST:PORT or [IPV6]:PORT",
                         table=index)
            return None
        return vxlan_text(table["vxlan"], table["port"], peers)


def _type_name(value: object) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "a list", dict: "a table"}.get(type(value), type(value).__name__)


def _claims(spec: LinkSpec) -> Iterator[tuple[str, str, Any]]:
    """The local resources spec binds: (kind, host or path, port), for clash checks."""
    for text, target in zip(spec.endpoints, spec.targets):
        if isinstance(target, TCPListenTarget):
            yield text, "tcp", (target.host or spec.options.bind, target.port)
        elif isinstance(target, (UDPTarget, VxlanTarget)):
            yield text, "udp", (spec.options.bind, target.lport)
        elif isinstance(target, UnixListenTarget):
            yield text, "unix", target.path
        elif isinstance(target, UnixDgramTarget):
            yield text, "unix", target.local


def _clash(kind: str, a: Any, b: Any) -> bool:
    if kind == "unix":
        return bool(a == b)
    (host_a, port_a), (host_b, port_b) = a, b
    return bool(port_a == port_b and (host_a is None or host_b is None or host_a == host_b))


def _link(check: _Checker, kind: str, name: str, table: Any, base: LinkOptions,
          links: dict[str, LinkSpec], capture: CaptureDefaults) -> LinkSpec | None:
    """The spec of [kind.name], or None (problems recorded) when it cannot be built."""
    path = (kind, name)
    if not _NAME.match(name):
        check.problem(path, "a name is 1-64 letters, digits, '_', '.' or '-'")
        return None
    if not isinstance(table, dict):
        check.problem(path, f"must be a table ([{kind}.{name}]), not {_type_name(table)}")
        return None
    if name in links:
        other = links[name]
        here = check.where.find(path)
        # Blame whichever of the two comes later in the file.
        later, first = ((path, (other.kind, name)) if (here or 0) >= (other.line or 0)
                        else ((other.kind, name), path))
        check.problem(later, f"the name is already used by [{first[0]}.{name}] "
                             "(links and hubs share one set of names)")
        return None
    check.unknown(table, path, ("endpoints",) + _OPTION_KEYS + _HUB_KEYS + ("pcap",)
                  + _CAPTURE_KEYS + (("listen",) if kind == "hub" else ()))
    if kind == "link":
        for hub_key in _HUB_KEYS:
            if hub_key in table:
                what = "mode" if hub_key == "mode" else "switch option"
                check.problem(path + (hub_key,),
                              f"a link (point to point) takes no {what}: it forwards "
                              f"everything between its two endpoints (a switch is a "
                              f"[hub.{name}] with mode = \"switch\")")
    pairs = check.targets(table, path, hub=kind == "hub")
    if kind == "hub" and "listen" in table:
        listen = table["listen"]
        try:
            if not isinstance(listen, str):
                raise TargetError(repr(listen), f"must be a string, not {_type_name(listen)}")
            target = parse_listen(listen)
            # Written as the equivalent target, so every endpoint text is a valid target.
            text = ("listen:" + listen if isinstance(target, TCPListenTarget)
                    else "unix-listen:" + listen.removeprefix("unix:"))
            pairs.insert(0, (text, target))
        except TargetError as exc:
            check.problem(path + ("listen",), exc.reason)
    raw = table.get("endpoints", [])
    count = len(raw) if isinstance(raw, list) else None
    if kind == "link" and count is not None and count != 2:
        check.problem(path + ("endpoints",) if "endpoints" in table else path,
                      f"a link has exactly two endpoints, not {count} (use [hub.{name}] "
                      f"for more)")
    if kind == "hub" and count == 0 and "listen" not in table:
        check.problem(path, "a hub needs `listen` or at least one endpoint")
    problem = pair_problem([t for _, t in pairs]) if kind == "link" else None
    if problem is not None:
        check.problem(path + ("endpoints",), problem)
    # A link's hub-only keys are reported above, once: not parsed as options too.
    options = check.options(table if kind == "hub" else
                            {k: v for k, v in table.items() if k not in _HUB_KEYS}, path, base)
    if any(getattr(t, "tls", False) for _, t in pairs):
        # Read the files now: a bad one is reported by --check and at start, not at the
        # first connection.
        try:
            TLSFiles(options.tls_cert, options.tls_key, options.tls_ca).load()
        except TLSSetupError as exc:
            key = next((k for k in ("tls_cert", "tls_key", "tls_ca") if k in table), None)
            check.problem(path + (key,) if key else path, str(exc))
    return LinkSpec(name, kind, tuple(t for t, _ in pairs), tuple(t for _, t in pairs),
                    options, line=check.where.find(path),
                    capture=check.pcap(table, path, capture))


def parse_config(text: str, path: str = "<config>") -> Config:
    """Validate a config text; ConfigError with every problem found."""
    try:
        doc = tomllib.loads(text)
    except RecursionError:
        # tomllib recurses once per level of nested arrays or inline tables.
        raise ConfigError(path, [ConfigProblem(None, "", "TOML syntax: arrays or tables "
                                                         "nested too deeply")]) from None
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"\(at line (\d+), column (\d+)\)", str(exc))
        message = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(exc))
        if m:
            raise ConfigError(path, [ConfigProblem(int(m.group(1)), "",
                                                   f"TOML syntax: {message} "
                                                   f"(column {m.group(2)})")]) from None
        raise ConfigError(path, [ConfigProblem(None, "", f"TOML syntax: {message}")]) from None
    check = _Checker(text, os.path.dirname(path) if not path.startswith("<") else "")
    check.unknown(doc, (), ("daemon", "defaults", "link", "hub"))

    daemon = DaemonSettings()
    dtable = check.table(doc, ("daemon",))
    if dtable is not None:
        check.unknown(dtable, ("daemon",), _DAEMON_KEYS)
        metrics = None
        if "metrics" in dtable:
            value = dtable["metrics"]
            try:
                if not isinstance(value, str):
                    raise ValueError("expected a string")
                metrics = parse_hostport(value)
            except (ValueError, TargetError) as exc:
                reason = exc.reason if isinstance(exc, TargetError) else str(exc)
                check.problem(("daemon", "metrics"), f"{reason} (e.g. \"127.0.0.1:9750\")")
        control = dtable.get("control")
        if control is not None and (not isinstance(control, str) or not control):
            check.problem(("daemon", "control"), "must be a socket path as a string")
            control = None
        stop = check.number(dtable, ("daemon",), "stop_timeout", defaults.STOP_FLUSH_TIMEOUT,
                            *defaults.STOP_TIMEOUT_RANGE)
        daemon = DaemonSettings(metrics=metrics, control=control, stop_timeout=stop)

    base = LinkOptions()
    capture = CaptureDefaults()
    deftable = check.table(doc, ("defaults",))
    if deftable is not None:
        check.unknown(deftable, ("defaults",), _OPTION_KEYS + _HUB_KEYS + _CAPTURE_KEYS)
        base = check.options(deftable, ("defaults",), base)
        capture = check.capture(deftable, ("defaults",), capture)

    links: dict[str, LinkSpec] = {}
    keys: dict[str, tuple[str, ...]] = {}  # link name -> key of each endpoint, for errors
    for kind in ("link", "hub"):
        group = check.table(doc, (kind,))
        if group is None:
            continue
        for name, table in group.items():
            spec = _link(check, kind, name, table, base, links, capture)
            if spec is not None:
                links[name] = spec
                keys[name] = (("listen",) if kind == "hub" and "listen" in table else ()) + \
                    ("endpoints",) * len(spec.endpoints)

    if not any(isinstance(doc.get(kind), dict) and doc[kind] for kind in ("link", "hub")):
        # A daemon with nothing to run is a mistake (a file emptied by accident, a typo).
        check.problems.append(ConfigProblem(None, "", "no [link.NAME] or [hub.NAME] defined: "
                                                      "nothing to run"))
    seen: list[tuple[str, str, str, Any]] = []
    for spec in links.values():
        for (written, kind, key), where in zip(_claims(spec), keys[spec.name]):
            for other_name, other_text, other_kind, other_key in seen:
                if other_kind == kind and _clash(kind, key, other_key):
                    check.problem((spec.kind, spec.name, where),
                                  f"{written!r} binds the same {kind} address as "
                                  f"{other_text!r} in {other_name!r}", item=written)
            seen.append((spec.name, written, kind, key))
    pcaps: dict[str, str] = {}
    for spec in links.values():
        if spec.capture is not None:
            where = os.path.abspath(spec.capture.path)
            if where in pcaps:
                check.problem((spec.kind, spec.name, "pcap"),
                              f"{spec.capture.path!r} is the capture file of "
                              f"{pcaps[where]!r} already")
            pcaps.setdefault(where, spec.name)
    if check.problems:
        check.problems.sort(key=lambda p: p.line if p.line is not None else 1 << 30)
        raise ConfigError(path, check.problems)
    return Config(path, daemon, links)


def load_config(path: str) -> Config:
    """Read and validate the config file at path; ConfigError if unreadable or invalid."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise ConfigError(path, [ConfigProblem(None, "", f"cannot read: "
                                                         f"{exc.strerror or exc}")]) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(path, [ConfigProblem(None, "", f"not UTF-8: {exc}")]) from None
    return parse_config(text, path)
