"""The manual page fastrelay(1), written from the argument parser and the target table.

The synopsis, every option and every target form come from the same objects as `--help`
(cli.build_parser, cli.USAGE, targets.TARGET_FORMS), so the two cannot drift; the prose
sections (configuration, signals, files, exit status, examples, compatibility) are kept
here as data. `python -m fastrelay.manpage > fastrelay.1` (or `make man`) writes the page
that `pip install .` installs under share/man/man1; a test checks that the committed page
is what this module writes, that it names every option of --help and every config key,
and that groff renders it without a warning.
"""

from __future__ import annotations

import argparse
import re
import sys

from . import __version__, defaults
from .cli import USAGE, build_parser
from .config import DaemonSettings, LinkOptions
from .targets import TARGET_FORMS, TARGET_NOTES, wrap_netdev

__all__ = ["CONFIG_KEYS", "render"]

NETDEV_WIDTH = 50   # a qemu -netdev value is cut after a comma past this many characters

# The config file's keys: (table, key, what it does). The defaults shown are read from
# config.DaemonSettings and config.LinkOptions.
CONFIG_KEYS: tuple[tuple[str, str, str], ...] = (
    ("daemon", "metrics",
     ("HOST:PORT of an HTTP listener: GET /metrics (Prometheus text), GET /stats (JSON). "
      "It has no authentication: keep it on loopback. Without it, no listener.")),
    ("daemon", "control",
     ("path of the unix socket that `fastrelay stats` asks (made mode 0660). Without it, "
      "no control socket.")),
    ("daemon", "stop_timeout",
     "on SIGTERM, seconds the queues may take to drain before the sockets close."),
    ("defaults", "reconnect",
     "TCP and unix clients reconnect; point-to-point listeners accept the next client."),
    ("defaults", "reconnect_initial",
     "first reconnect delay, seconds; multiplied by reconnect_factor after each failure."),
    ("defaults", "reconnect_max",
     "longest reconnect delay, jitter included."),
    ("defaults", "reconnect_factor",
     "growth of the delay after each failure."),
    ("defaults", "reconnect_jitter",
     "share of random spread of each delay, so that links do not retry in step."),
    ("defaults", "connect_timeout", "seconds a TCP or unix connect may take."),
    ("defaults", "queue",
     "backlog bound of each port; whole frames past it drop (counted as queue full)."),
    ("defaults", "queue_total",
     ("backlog bound of all ports of the link or hub together; a frame it cannot take drops "
      "(counted).")),
    ("defaults", "max_frame", "longest frame accepted (qemu's limit)."),
    ("defaults", "max_clients",
     "clients one listener serves at once; the next is accepted and closed at once (counted)."),
    ("defaults", "max_clients_total", "clients of all listeners of the link or hub together."),
    ("defaults", "bind",
     "local address of UDP targets and of a bare listen port; by default every address."),
    ("defaults", "tls_cert",
     ("this relay's certificate (PEM) for ,tls targets; a relative path is relative to the "
      "config file. Re-read on SIGHUP.")),
    ("defaults", "tls_key", "the private key of tls_cert (PEM)."),
    ("defaults", "tls_ca",
     "the CA, or the pinned peer certificates, every TLS peer's certificate must chain to."),
    ("defaults", "tls_name",
     "the name a TLS client requires in the listener's certificate instead of the target's "
     "host."),
    ("defaults", "tls_timeout",
     "seconds a TLS handshake may take; a client slower than that is dropped (counted)."),
    ("defaults", "allow",
     ("a list of CIDR networks: TCP listeners close clients from anywhere else at accept "
      "(counted, logged once per source and interval).")),
    ("defaults", "mode",
     ("hubs only (a link takes none of the next five keys): \"switch\" makes a hub a "
      "learning switch (see --switch), \"hub\" floods every frame.")),
    ("defaults", "mac_age", "hubs only: seconds a MAC not seen stays in the MAC table."),
    ("defaults", "mac_table_size",
     ("hubs only: MACs the table holds; when it is full, new ones are not learned "
      "(counted) and frames to them are flooded.")),
    ("defaults", "loop_threshold",
     ("hubs only: a MAC moving between ports more often than this in one second is a "
      "suspected loop, logged.")),
    ("defaults", "loop_hold",
     ("hubs only: seconds a switch stops forwarding to and from the port a looping MAC "
      "moved to.")),
    ("defaults", "pcap_snaplen",
     (f"bytes of each frame a capture file (pcap) keeps. Default: {defaults.CAPTURE_SNAPLEN} "
      "(all).")),
    ("defaults", "pcap_size",
     ("rotate a capture file before it grows past this size (\"100M\"): FILE becomes FILE.N, N "
      "counting up, and a new FILE begins. Without it, no rotation.")),
    ("defaults", "pcap_count",
     "with pcap_size: keep this many files in all (FILE and the newest FILE.N)."),
    ("link.NAME", "endpoints",
     "point to point: exactly two targets. Any key of [defaults] may be set here too."),
    ("hub.NAME", "listen",
     ("what -l takes: PORT, HOST:PORT, [V6]:PORT or unix:PATH (a hub needs listen, "
      "endpoints or both).")),
    ("hub.NAME", "endpoints",
     ("any number of targets. A VXLAN endpoint may also be written as a table: "
      "{ vxlan = VNI, port = LPORT, peers = [\"HOST:PORT\", ...] } is "
      "vxlan:VNI:LPORT:FIRST,peer=SECOND,... (its name in stats and logs). Any key of "
      "[defaults] may be set here too.")),
    ("hub.NAME", "pcap",
     ("a file (or FIFO) that gets every frame of the hub (or link) as pcapng, appended to "
      "across restarts; see CAPTURE. A reload that changes only the pcap keys leaves the "
      "connections alone.")),
)

CONFIG_EXAMPLE = """\
[daemon]
control = "/run/fastrelay/control.sock"
metrics = "127.0.0.1:9750"

[defaults]
reconnect_max = 2.0

[link.lab-a]            # two guests with socket,listen=
endpoints = ["127.0.0.1:5001", "127.0.0.1:5002"]

[hub.lab]               # guests connect to 5500
listen = "127.0.0.1:5500"
endpoints = ["unix-listen:/run/fastrelay/lab.sock",
             "7000::7001"]
queue = "8M\""""

# (what it shows, commands): the first command is fastrelay's, the rest the guests'.
EXAMPLES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("A hub on port 5000 that guests connect to:",
     ("fastrelay -l 5000",
      "qemu-system-x86_64 ... -netdev socket,id=n0,connect=127.0.0.1:5000 \\",
      "    -device virtio-net-pci,netdev=n0,mac=52:54:00:12:34:01")),
    ("Two UDP guests on this host, linked point to point:",
     ("fastrelay 6000::6001 7000::7001",
      "qemu-system-x86_64 ... -netdev socket,id=n0,udp=127.0.0.1:6000,\\",
      "    localaddr=127.0.0.1:6001",
      "qemu-system-x86_64 ... -netdev socket,id=n0,udp=127.0.0.1:7000,\\",
      "    localaddr=127.0.0.1:7001")),
    ("Two guests that listen; the relay connects and reconnects, so either may restart:",
     ("fastrelay --reconnect 127.0.0.1:5001 127.0.0.1:5002",
      "qemu-system-x86_64 ... -netdev socket,id=n0,listen=127.0.0.1:5001")),
    ("A hub joined to a host bridge (as root), and a link to another host's relay:",
     ("fastrelay -l 5000 br0 relay2.example:5000",)),
    (("A switch on each of two hosts, guests on port 5000, one trunk link between them "
      "(the first command on host A, the second on host B):"),
     ("fastrelay --switch --reconnect -l 5000 hostB:5001,trunk",
      "fastrelay --switch -l 5000 listen:5001,trunk")),
    (("A switch whose guests join VXLAN segment 42 with two remote tunnel endpoints (Linux "
      "vxlan devices with dstport 4789, Open vSwitch, other fastrelays):"),
     ("fastrelay --switch -l 5000 vxlan:42:4789:10.0.0.2:4789,peer=10.0.0.3:4789",)),
    ("The daemon, its file checked first; then its counters, redrawn every 2 seconds:",
     ("fastrelay --check /etc/fastrelay/fastrelay.toml",
      "fastrelay --config /etc/fastrelay/fastrelay.toml",
      "fastrelay stats -v --watch --config /etc/fastrelay/fastrelay.toml")),
    ("The frames of the daemon's hub lab, live in Wireshark; then one port's, to a file:",
     ("fastrelay capture lab | wireshark -k -i -",
      "fastrelay capture lab 'tcp client 127.0.0.1:40312' -w guest.pcapng")),
)

# (what, netrelay, fastrelay): where the two differ.
COMPATIBILITY: tuple[tuple[str, str, str], ...] = (
    ("Command lines", "[-v] SRC DEST, -l PORT TARGET...",
     "the same, with the same meaning, plus the forms and options above."),
    ("LPORT::SPORT", "a TODO of its manual", "UDP with 127.0.0.1; LPORT::LPORT is refused."),
    ("UDP target with one port omitted", "the port becomes 0",
     "it equals the other port, as netrelay's manual says."),
    ("IPv6 client targets", "fail", "work."),
    ("A bad target, a port in use, a refused connection", "start anyway, exit 0",
     "one line on standard error naming the argument and the reason; exit 2 or 1."),
    ("One slow client in a hub", "stalls the whole hub",
     "only that client loses frames (counted); the others go on at full speed."),
    ("Frames over 65536 bytes", "close the client", "accepted up to qemu's 69632."),
    ("Bridges", "ip(8) through system(); the tap stays at MTU 1500",
     "netlink; the tap takes the bridge's MTU; any interface name."),
    ("Reconnecting", "never", "--reconnect, or always in the daemon."),
    ("Forwarding", "a dumb hub; network loops are not considered (its manual)",
     ("a hub by default; --switch learns MACs and sends unicast to one port, ,trunk links "
      "never pass a frame from one relay to another (split horizon), loops are cut and "
      "duplicate MACs reported.")),
    ("VXLAN", "none", ("vxlan: targets, a tunnel endpoint of a standard overlay (RFC 7348), "
                       "without root.")),
)

SIGNALS: tuple[tuple[str, str], ...] = (
    ("SIGTERM, SIGINT",
     ("graceful stop: stop reading, let the queues drain (up to stop_timeout in the daemon, "
      f"{defaults.STOP_FLUSH_TIMEOUT:g} seconds otherwise), close every socket and remove "
      "the taps created; exit 0.")),
    ("SIGHUP",
     ("the daemon reads its file again. A link or hub whose definition did not change keeps "
      "its connections and loses no frame; removed and changed ones stop (drained), then "
      "changed and added ones start. A file that does not validate is refused, one log line "
      "per problem, and everything keeps running. Capture files (--pcap, pcap) are "
      "reopened.")),
)

FILES: tuple[tuple[str, str], ...] = (
    (defaults.CONTROL_SOCKET,
     "the control socket `fastrelay stats` asks when given neither --control nor --config."),
    ("/etc/fastrelay/fastrelay.toml",
     "the configuration file of the systemd unit shipped in contrib/systemd."),
    ("/dev/net/tun", "opened for tap and bridge targets."),
)

ENVIRONMENT: tuple[tuple[str, str], ...] = (
    ("NOTIFY_SOCKET",
     "set by systemd: the daemon reports READY=1, RELOADING=1, STOPPING=1 and STATUS= there."),
    ("JOURNAL_STREAM",
     ("set by systemd: log lines then carry syslog priorities (<4>...) instead of the "
      "\"fastrelay: \" prefix.")),
    ("FASTRELAY_DEBUG",
     ("read when building: FASTRELAY_DEBUG=1 pip install . builds the data plane with bounds "
      "checks and -O0 -g.")),
)

EXIT_STATUS: tuple[tuple[str, str], ...] = (
    ("0", ("stopped by SIGTERM or SIGINT; point to point, a side ended (without "
           "--reconnect); --check found the file valid; stats printed; doctor found no "
           "problem; a capture stopped by Ctrl-C, SIGTERM or its reader.")),
    ("1", ("could not start or went wrong: a port in use, a connection refused, no such "
           "bridge, a config file with problems, no daemon at the control socket; doctor "
           "found a problem; a capture refused (no such link or port) or ended by the "
           "daemon.")),
    ("2", "usage: an unknown option, a bad value, a target that does not parse."),
    ("130", "interrupted while starting."),
)


# -- roff --------------------------------------------------------------------------------------

def _escape(text: str) -> str:
    """Text as roff reads it literally: backslashes and hyphens escaped (`\\-` is the
    ASCII hyphen-minus that can be copied into a shell)."""
    return text.replace("\\", "\\e").replace("-", "\\-")


def _line(text: str) -> str:
    """An input line: a leading '.' or "'" would start a request; `\\&` keeps it text."""
    return "\\&" + text if text[:1] in (".", "'") else text


def _inline(text: str) -> str:
    """Prose with `code` spans: escaped, code in bold."""
    parts = text.split("`")
    return "".join(f"\\fB{_escape(p)}\\fR" if i % 2 else _escape(p) for i, p in enumerate(parts))


def _literal(lines: list[str]) -> list[str]:
    """Lines shown as they are, in no-fill mode and indented."""
    # An empty input line would be a blank-line warning; `\&` is an empty line of text.
    return [".RS 4", ".nf", *(_line(_escape(line)) or "\\&" for line in lines), ".fi", ".RE"]


def _tagged(tag: str, body: str) -> list[str]:
    """A tagged paragraph: tag (already roff) on its own line, the body indented."""
    return [".TP", tag, _line(_inline(body[:1].upper() + body[1:]))]


def _option_tag(action: argparse.Action) -> str:
    """'\\fB\\-l\\fR \\fILISTEN\\fR', '\\fB\\-\\-watch\\fR [\\fISECONDS\\fR]', '\\fB\\-h\\fR, ...'."""
    names = ", ".join(f"\\fB{_escape(name)}\\fR" for name in action.option_strings)
    if action.nargs == 0:
        return names
    metavar = action.metavar or action.dest.upper()
    assert isinstance(metavar, str)
    value = f"\\fI{_escape(metavar)}\\fR"
    return f"{names} [{value}]" if action.nargs == "?" else f"{names} {value}"


def _options(parser: argparse.ArgumentParser) -> list[str]:
    """Every option of the parser, with its help text as --help shows it (defaults filled)."""
    out = []
    formatter = parser._get_formatter()
    for action in parser._actions:
        if not action.option_strings or action.help == argparse.SUPPRESS:
            continue
        text = formatter._expand_help(action) if action.help else ""
        out += _tagged(_option_tag(action), text if text.endswith(".") else text + ".")
    return out


def _targets() -> list[str]:
    out = [_inline("A target is one side of a point-to-point link or an endpoint of a hub. "
                   "Under each form, the qemu -netdev values that pair with it.")]
    for form in TARGET_FORMS:
        out += _tagged(f"\\fB{_escape(form.syntax)}\\fR", form.meaning)
        for netdev in form.qemu:
            lines = wrap_netdev(netdev, NETDEV_WIDTH)
            # Indented under the paragraph's text (a .TP body is 7 in from the margin).
            out += [".RS 9", ".nf", _escape("qemu -netdev " + lines[0]),
                    *(_escape(" " * 13 + rest) for rest in lines[1:]), ".fi", ".RE"]
    for note in TARGET_NOTES:
        out += [".PP", _line(_inline(note))]
    return out


def _table(rows: tuple[tuple[str, str], ...], bold: bool = True) -> list[str]:
    """(tag, text) rows as tagged paragraphs."""
    out = []
    for tag, text in rows:
        out += _tagged(f"\\fB{_escape(tag)}\\fR" if bold else _escape(tag), text)
    return out


def _synopsis() -> list[str]:
    """The command forms of cli.USAGE (what --help prints), without their comments.

    USAGE has one form a line, `fastrelay ...` then two or more spaces and a comment; a
    line that does not start with `fastrelay` continues the form above it.
    """
    forms: list[str] = []
    for line in USAGE.splitlines():
        command = re.split(r"\s{2,}", line.strip())[0]
        if command.startswith("fastrelay") or not forms:
            forms.append(command)
        else:
            forms[-1] += " " + command
    out = [".PD 0"]  # one form a line, a long one wrapped with a hanging indent
    for form in forms:
        name, _, rest = form.partition(" ")
        out += [".HP 10", f"\\fB{_escape(name)}\\fR {_escape(rest)}".rstrip()]
    return [*out, ".PD"]


def _config_default(section: str, key: str) -> str:
    """A key's default as written in TOML ('' when it has none)."""
    holder = {"daemon": DaemonSettings(), "defaults": LinkOptions()}.get(section)
    value = getattr(holder, key, None)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'

    if key.startswith("queue") and isinstance(value, int) and value % (1 << 20) == 0:
        return f'"{value >> 20}M"'
    return "" if value is None else str(value)


def _config() -> list[str]:
    out = [_inline("`fastrelay --config FILE` runs every link and hub of a TOML file in one "
                   "process and keeps them up: clients reconnect with capped exponential "
                   "backoff and jitter, listeners keep accepting, a link that fails or ends "
                   "is started again, and a failing link never stops the others. "
                   "`fastrelay --check FILE` validates it and starts nothing; both report "
                   "every problem at once, each as FILE:LINE: key: what is wrong."),
           ".PP",
           _inline("Endpoints use the target syntax above, except `-` (stdio). Links and hubs "
                   "share one set of names: letters, digits, `_`, `.` and `-`. The keys, "
                   "with their defaults:")]
    table = ""
    for section, key, text in CONFIG_KEYS:
        if section != table:
            table = section
            out += [".PP", f"\\fB[{_escape(section)}]\\fR"]
        default = _config_default(section, key)
        shown = f" Default: {default}." if default else ""
        out += _tagged(f"\\fB{_escape(key)}\\fR", text + shown)
    out += [".PP", "For example:", *_literal(CONFIG_EXAMPLE.splitlines())]
    return out


def _stats() -> list[str]:
    return [_inline(
        "`fastrelay stats` asks the running daemon through its control socket and prints a "
        "table: one line per link and endpoint with its state, peers, rates (frames and "
        "bytes per second in and out, drops per second), totals, drops by reason (FULL: "
        "queue full, a peer slower than the others; INVAL: malformed frames received; SEND: "
        "refused by the kernel) and the bytes queued. Rates come from two samples a second "
        "apart, over the daemon's own clock. With -v, a line per connection shows which "
        "client loses frames. --watch redraws the table as top(1) does, until interrupted "
        "or --count redraws; --json prints the daemon's JSON document instead, --prometheus "
        "its metrics.")]


def _capture() -> list[str]:
    return [_inline(
        "`fastrelay capture LINK [PORT...]` asks the running daemon through its control "
        "socket for the frames of its link or hub LINK, of every port or of the PORTs named "
        "(a port's name as stats shows it, quoted, or an endpoint as written in the config: "
        "all its clients), and writes them as pcapng to standard output (never a terminal) "
        "or to -w FILE, until interrupted or until the reader goes away; the links keep "
        "their connections. --pcap FILE (pcap in the config) writes every frame of every "
        "port to FILE: - is standard output, a FIFO is opened whenever it has a reader; "
        "--pcap-snaplen, --pcap-size and --pcap-count keep part of each frame and rotate "
        "the file as tcpdump's -s, -C and -W do. Each port is an interface named as in "
        "stats; each frame is there once as read (inbound) and once per port it is handed "
        "to (outbound), with nanosecond timestamps. A capture copies frames into a bounded "
        "buffer once per batch and writes it out without ever making forwarding wait: what "
        "a slow disk or reader cannot take is dropped and counted (capture_dropped in "
        "stats, fastrelay_capture_dropped_frames_total), and files hold whole blocks only.")]


def _doctor() -> list[str]:
    return [_inline(
        "`fastrelay doctor [BRIDGE...]` checks the host settings that keep frames from "
        "crossing a bridge, for the bridges named or every bridge of the network namespace, "
        "and prints one line per finding with its fix, or BRIDGE: OK: the "
        "net.bridge.bridge-nf-call-iptables, -ip6tables and -arptables sysctls (bridged "
        "frames then pass the host firewall); a forward chain whose policy or rule drops "
        "the bridge's frames (read with nft, else iptables-save); the bridge missing or "
        "down; no port of it up; a port's MTU unlike the bridge's; --max-frame below the "
        "MTU plus 14 (plus 4 on a VLAN-filtering bridge). A check it cannot make (the "
        "firewall needs root) is a line saying why. The same checks run when a bridge or "
        "tap target starts, each problem logged as a warning.")]


def _examples() -> list[str]:
    out = []
    for text, commands in EXAMPLES:
        out += [".PP", _line(_inline(text)), *_literal(list(commands))]
    return out


def _compatibility() -> list[str]:
    out = [_inline("fastrelay is a drop-in replacement for netrelay: every netrelay command "
                   "line works unchanged, with the same meaning, including its "
                   "point-to-point rule (exit when a side ends). Where the two differ:")]
    for what, theirs, ours in COMPATIBILITY:
        out += [".TP", f"\\fB{_escape(what)}\\fR", _line(_inline(f"netrelay: {theirs}")), ".br",
                _line(_inline(f"fastrelay: {ours}"))]
    return out


def render(parser: argparse.ArgumentParser | None = None) -> str:
    """The whole page, roff source (man macros)."""
    parser = parser or build_parser()
    description = parser.description or ""
    lines = [
        '.\\" fastrelay(1): written by `python -m fastrelay.manpage`; edit that, not this.',
        f'.TH FASTRELAY 1 "" "fastrelay {__version__}" "User Commands"',
        ".nh", ".ad l",   # no hyphenation or justification: options and paths stay whole
        ".SH NAME", "fastrelay \\- relay qemu VM Ethernet traffic",
        ".SH SYNOPSIS", *_synopsis(),
        ".SH DESCRIPTION", _line(_inline(description)),
        ".PP", _inline(
            "With two targets, fastrelay links them point to point, like a cable; it ends "
            "when a side ends, unless --reconnect is given. With -l LISTEN it is a hub: "
            "every frame goes to every other port, never back to its sender, and a slow "
            "port loses its own frames (counted) without slowing the others. Without "
            f"arguments it is a hub on {defaults.DEFAULT_HUB_HOST}:"
            f"{defaults.DEFAULT_HUB_PORT}. With --config it is a daemon running many links "
            "and hubs (see CONFIGURATION)."),
        ".PP", _inline(
            "-l LISTEN takes PORT (a dual-stack listener on every address, as netrelay's), "
            "HOST:PORT, [V6]:PORT or unix:PATH."),
        ".PP", _inline(
            "With --switch (mode = \"switch\" in the config) the hub is a learning switch: "
            "it learns the port behind each source MAC, per VLAN, and sends a frame to a "
            "known MAC to that port only; broadcast, multicast and unknown destinations go "
            "to every other port. Mark links to other relays ,trunk: what comes in on a trunk "
            "never goes out on another trunk, so relays in a triangle or a full mesh never "
            "loop. A MAC moving between ports faster than --loop-threshold times a second "
            "is a loop: one log line, and the port it moved to is blocked for --loop-hold "
            "seconds. A MAC seen on two guests' ports is reported as a duplicate, by hubs "
            "too. fastrelay stats --json shows each switch's MAC table."),
        ".SH OPTIONS", *_options(parser),
        ".SH TARGETS", *_targets(),
        ".SH CONFIGURATION", *_config(),
        ".SH COUNTERS", *_stats(),
        ".SH CAPTURE", *_capture(),
        ".SH BRIDGE CHECKS", *_doctor(),
        ".SH SIGNALS", *_table(SIGNALS),
        ".SH FILES", *_table(FILES, bold=False),
        ".SH ENVIRONMENT", *_table(ENVIRONMENT),
        ".SH EXIT STATUS", *_table(EXIT_STATUS),
        ".SH EXAMPLES", *_examples(),
        ".SH COMPATIBILITY", *_compatibility(),
        ".SH SEE ALSO",
        ("\\fBqemu\\-system\\-x86_64\\fR(1), \\fBnetrelay\\fR(1), \\fBip\\-tuntap\\fR(8), "
         "\\fBsystemd.service\\fR(5)"),
    ]
    assert all(line.strip() for line in lines), "a blank line is a warning in roff"
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
