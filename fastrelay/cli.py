"""Command line: parses netrelay-compatible arguments and hands them to the control plane."""

from __future__ import annotations

import argparse
import logging
import signal
import socket
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from . import __version__, defaults
from ._core import FRAME_MAX_LEN, FRAME_MIN_LEN
from .capture import CaptureOptions
from .config import check_number, load_config, parse_size
from .control import capture_stream, query
from .daemon import run_daemon, setup_daemon_logging
from .errors import ConfigError, RelayError
from .relay import RelayOptions, run
from .stats_table import add_arguments as add_stats_arguments
from .stats_table import misplaced_options as misplaced_stats_options
from .stats_table import run_stats
from .targets import (TARGET_HELP, Target, TCPListenTarget, pair_problem, parse_listen,
                      parse_target)
from .tls import Network, TLSFiles, parse_allow

__all__ = ["main", "build_parser"]

USAGE = """\
fastrelay [-v]... [options] SRC DEST          point to point (netrelay SRC DEST)
       fastrelay [-v]... [options] -l LISTEN [TARGET...]  hub (netrelay -l PORT TARGET...)
       fastrelay --switch [options] -l LISTEN [TARGET...]  a learning switch
       fastrelay                                    hub on 127.0.0.1:%d, no configuration
       fastrelay [-v]... --config FILE              daemon: every link and hub of FILE
       fastrelay --check FILE                       validate FILE, start nothing
       fastrelay stats [-v] [--json | --prometheus] [--watch [SECONDS] [--count N]]
                       [--control PATH | --config FILE]   counters of the running daemon
       fastrelay capture [--control PATH | --config FILE] LINK [PORT...]
                         [-w FILE|-]                a daemon link's frames, live, as pcapng
       fastrelay doctor [--max-frame N] [BRIDGE...]  check the host's bridges""" % (
    defaults.DEFAULT_HUB_PORT)

EPILOG = TARGET_HELP + """

-l LISTEN is PORT (dual-stack, every address, as netrelay), HOST:PORT, [V6]:PORT or unix:PATH.
In a hub every frame goes to every other port, never back to its sender; a slow port
loses its own frames (counted) and slows nobody. Point to point exits 0 when a side ends,
unless --reconnect is given.

--switch makes the hub a learning switch: it learns the port behind each source MAC
(per VLAN) and sends a frame to a known MAC to that one port; broadcast, multicast and
unknown destinations still go everywhere. MACs unseen for --mac-age seconds are
forgotten, those of a port that closes at once. Mark links to other relays ,trunk: a
frame from a trunk never goes out on another trunk, so relays linked in a triangle or a
full mesh never loop. A MAC that moves between ports more than --loop-threshold times a
second means a loop: one log line, and the port it moved to is blocked for --loop-hold
seconds. A MAC seen on two guests' ports within 2 s is logged as a duplicate (hubs too).

The daemon (--config) runs many links and hubs in one process: TCP clients reconnect,
listeners keep accepting, a failing link never stops the others; SIGHUP reloads FILE
(unchanged links keep their connections), SIGTERM drains queues and exits 0. See
examples/fastrelay.toml and the README's "Daemon" section.

--pcap FILE writes every frame of every port as pcapng (one interface per port, named as
in `fastrelay stats`; inbound and outbound directions; nanosecond timestamps); FILE may be
- (stdout) or a FIFO. SIGHUP reopens it. `fastrelay capture LINK` streams a running
daemon's link the same way, without touching its connections:
  fastrelay capture lab | wireshark -k -i -

VXLAN (vxlan:VNI:LPORT:HOST:RPORT): a switch joins an overlay of Linux vxlan devices,
Open vSwitch or other fastrelays as one tunnel endpoint, without root. Add more remote
endpoints with ,peer=HOST:PORT. Known MACs go to the endpoint they were learned behind,
the rest to every endpoint (head-end replication; in a hub or point to point, all of it).
Nothing is fragmented: inner MTU = path MTU - 50 (IPv4) or - 70 (IPv6).

examples:
  fastrelay --switch -l 5000 vxlan:42:4789:10.0.0.2:4789,peer=10.0.0.3:4789
      guests on port 5000 join VNI 42 with the VTEPs 10.0.0.2 and 10.0.0.3
  fastrelay -l 5000
      qemu ... -netdev socket,id=n0,connect=127.0.0.1:5000 -device virtio-net-pci,netdev=n0
  fastrelay --switch --reconnect -l 5000 hostB:5001,trunk     (on host A)
  fastrelay --switch -l 5000 listen:5001,trunk                 (on host B)
      a switch on each host, guests on port 5000, one trunk link between the two
      (one link per pair of relays, ,trunk at both ends)
  fastrelay 6000:127.0.0.1:6001 7000:127.0.0.1:7001
      qemu ... -netdev socket,id=n0,udp=127.0.0.1:6000,localaddr=127.0.0.1:6001
      qemu ... -netdev socket,id=n0,udp=127.0.0.1:7000,localaddr=127.0.0.1:7001
  fastrelay --reconnect 127.0.0.1:5001 127.0.0.1:5002
      qemu ... -netdev socket,id=n0,listen=127.0.0.1:5001   (and 5002 for the other guest)
"""


def _network(text: str) -> Network:
    """--allow CIDR: one network (or address)."""
    try:
        return parse_allow([text])[0]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _size(text: str, maximum: int = defaults.QUEUE_MAX) -> int:
    try:
        return parse_size(text, maximum)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _total_size(text: str) -> int:
    return _size(text, defaults.QUEUE_TOTAL_MAX)


def _pcap_size(text: str) -> int:
    size = _size(text, defaults.CAPTURE_SIZE_RANGE[1])
    if size < defaults.CAPTURE_SIZE_RANGE[0]:
        raise argparse.ArgumentTypeError(f"{text!r} is too small (at least 64k)")
    return size


def _number(low: float, high: float, integer: bool = False) -> Callable[[str], float]:
    """An argparse type: a number (an integer if integer) within low..high, inf/nan refused."""
    def convert(text: str) -> float:
        try:
            value: float = int(text) if integer else float(text)
        except ValueError:
            kind = "an integer" if integer else "a number"
            raise argparse.ArgumentTypeError(f"{text!r} is not {kind}") from None
        why = check_number(value, low, high, integer=integer)
        if why is not None:
            raise argparse.ArgumentTypeError(why)
        return value
    return convert


def _span(limits: tuple[float, float]) -> str:
    low, high = limits
    return f"{low}..{high}" if isinstance(low, int) else f"{low:g}..{high:g}"


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (the usage text is for --help)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"fastrelay: {message} (see fastrelay --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="fastrelay", usage=USAGE, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Relay qemu VM Ethernet traffic between VMs, relays and bridges "
                    "(drop-in replacement for netrelay).")
    parser.add_argument("targets", nargs="*", metavar="TARGET", help=argparse.SUPPRESS)
    parser.add_argument("-l", dest="listen", metavar="LISTEN",
                        help="hub mode: accept stream clients on LISTEN")
    parser.add_argument("-v", dest="verbosity", action="count", default=0,
                        help="-v: live counters once a second; -vv: connection events too")
    parser.add_argument("--reconnect", action="store_true",
                        help="client targets reconnect with backoff instead of ending; "
                             "point-to-point listeners accept the next client")
    parser.add_argument("--queue", type=_size, default=None, metavar="BYTES",
                        help="backlog bound per port (default 4M, at most 1G); whole frames "
                             "past it drop")
    parser.add_argument("--queue-total", type=_total_size, default=None, metavar="BYTES",
                        help="backlog bound of all ports together (default 64M)")
    parser.add_argument("--max-frame", type=_number(FRAME_MIN_LEN, FRAME_MAX_LEN, True),
                        default=None, metavar="N",
                        help="longest frame accepted (default 69632, qemu's limit)")
    parser.add_argument("--max-clients", type=_number(*defaults.CLIENTS_RANGE, True),
                        default=None, metavar="N",
                        help=f"clients one listener serves at once (default "
                             f"{defaults.MAX_CLIENTS}); the next is accepted and closed")
    parser.add_argument("--max-clients-total", type=_number(*defaults.CLIENTS_RANGE, True),
                        default=None, metavar="N",
                        help=f"clients of all listeners together (default "
                             f"{defaults.MAX_CLIENTS_TOTAL})")
    parser.add_argument("--bind", metavar="ADDR",
                        help="local address for UDP and vxlan: targets and -l PORT (default: "
                             "every address)")
    parser.add_argument("--reconnect-initial", type=_number(*defaults.DELAY_RANGE),
                        metavar="SECONDS",
                        help="first reconnect delay (default %s); doubles after each failure"
                             % defaults.RECONNECT_INITIAL)
    parser.add_argument("--reconnect-max", type=_number(*defaults.DELAY_RANGE),
                        metavar="SECONDS",
                        help="longest reconnect delay, jitter included (default %s)"
                             % defaults.RECONNECT_MAX)
    parser.add_argument("--tls-cert", metavar="FILE",
                        help="this relay's certificate (PEM, chain allowed) for ,tls targets")
    parser.add_argument("--tls-key", metavar="FILE", help="the private key of --tls-cert (PEM)")
    parser.add_argument("--tls-ca", metavar="FILE",
                        help="the CA (or the pinned peer certificates, PEM) that every TLS "
                             "peer's certificate must chain to")
    parser.add_argument("--allow", metavar="CIDR", action="append", type=_network,
                        help="TCP listeners accept clients only from CIDR (repeatable; "
                             "others are closed at once, counted and logged)")
    parser.add_argument("--switch", action="store_true",
                        help="hub form: a learning switch, which sends a frame to a known "
                             "MAC to that one port only (not in point to point)")
    parser.add_argument("--mac-age", type=_number(*defaults.MAC_AGE_RANGE), metavar="SECONDS",
                        help=f"forget a MAC unseen this long (default {defaults.MAC_AGE:g}, "
                             f"range {_span(defaults.MAC_AGE_RANGE)})")
    parser.add_argument("--mac-table-size", type=_number(*defaults.MAC_TABLE_SIZE_RANGE, True),
                        metavar="N",
                        help=f"MAC table entries; when full, new MACs are flooded to, not "
                             f"learned (default {defaults.MAC_TABLE_SIZE}, range "
                             f"{_span(defaults.MAC_TABLE_SIZE_RANGE)})")
    parser.add_argument("--loop-threshold", type=_number(*defaults.LOOP_THRESHOLD_RANGE, True),
                        metavar="N",
                        help=f"a MAC moving between ports more than N times a second is a "
                             f"loop (default {defaults.LOOP_THRESHOLD})")
    parser.add_argument("--loop-hold", type=_number(*defaults.LOOP_HOLD_RANGE),
                        metavar="SECONDS",
                        help=f"how long a switch blocks the port a looping MAC moved to "
                             f"(default {defaults.LOOP_HOLD:g}, range "
                             f"{_span(defaults.LOOP_HOLD_RANGE)})")
    parser.add_argument("--pcap", metavar="FILE",
                        help="write every frame of every port to FILE as pcapng (- is stdout; "
                             "a FIFO streams it); SIGHUP reopens FILE")
    parser.add_argument("--pcap-snaplen", type=_number(*defaults.CAPTURE_SNAPLEN_RANGE, True),
                        metavar="N",
                        help=f"with --pcap: bytes kept of each frame (default "
                             f"{defaults.CAPTURE_SNAPLEN}: all)")
    parser.add_argument("--pcap-size", type=_pcap_size, metavar="SIZE",
                        help="with --pcap: before FILE grows past SIZE (100M, 1G), rename it "
                             "FILE.N (N counts up) and start a new FILE (tcpdump's -C)")
    parser.add_argument("--pcap-count", type=_number(*defaults.CAPTURE_COUNT_RANGE, True),
                        metavar="N",
                        help="with --pcap-size: keep N files in all (FILE and the newest "
                             "FILE.N), removing the oldest (tcpdump's -W)")
    parser.add_argument("-w", dest="write", metavar="FILE",
                        help="with `capture`: write the pcapng stream to FILE (default -, "
                             "stdout)")
    parser.add_argument("--config", metavar="FILE",
                        help="run every link and hub of the TOML file FILE (daemon)")
    parser.add_argument("--check", metavar="FILE",
                        help="validate the config file FILE and exit (0 if valid)")
    parser.add_argument("--control", metavar="PATH",
                        help="with `stats` and `capture`: the daemon's control socket "
                             f"(default: from --config, else {defaults.CONTROL_SOCKET})")
    parser.add_argument("--prometheus", action="store_true",
                        help="with `stats`: Prometheus text instead of the table")
    add_stats_arguments(parser)
    parser.add_argument("--version", action="version", version=f"fastrelay {__version__}")
    return parser


def _setup_logging(verbosity: int) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("fastrelay: %(message)s"))
    logger = logging.getLogger("fastrelay")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG if verbosity >= 3 else
                    logging.INFO if verbosity >= 2 else logging.WARNING)


# Options that set link behaviour: the daemon takes them from its config file instead.
_LINK_OPTIONS = ("listen", "reconnect", "queue", "queue_total", "max_frame",
                 "max_clients", "max_clients_total", "bind", "reconnect_initial", "reconnect_max",
                 "tls_cert", "tls_key", "tls_ca", "allow",
                 "switch", "mac_age", "mac_table_size", "loop_threshold", "loop_hold",
                 "pcap", "pcap_snaplen", "pcap_size", "pcap_count")
# Options of the hub form only: point to point forwards everything between its two sides.
_HUB_OPTIONS = ("switch", "mac_age", "mac_table_size", "loop_threshold", "loop_hold")


def _link_options_given(args: argparse.Namespace,
                        names: Sequence[str] = _LINK_OPTIONS) -> list[str]:
    return ["--" + name.replace("_", "-") if name != "listen" else "-l"
            for name in names if getattr(args, name) not in (None, False)]


def _check(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """--check FILE: validate, print a summary or every problem; 0 when valid."""
    if args.targets or args.config or _link_options_given(args):
        parser.error("--check FILE takes no other arguments")
    try:
        config = load_config(args.check)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return exc.exit_status
    names = ", ".join(f"{s.kind} {s.name}" for s in config.links.values()) or "none"
    print(f"{config.path}: OK: {len(config.links)} links and hubs ({names})")
    if config.needs_net_admin:
        print(f"{config.path}: taps or bridges are configured: the daemon needs CAP_NET_ADMIN")
    return 0


def _control_path(args: argparse.Namespace) -> str:
    """The daemon's control socket: --control, else the one of --config, else the default."""
    path: str | None = args.control
    if path is None and args.config is not None:
        config = load_config(args.config)
        if config.daemon.control is None:
            raise RelayError(f"{args.config}: no [daemon] control socket configured")
        path = config.daemon.control
    return path or defaults.CONTROL_SOCKET


def _stats(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """`fastrelay stats`: ask the running daemon for its counters, print them."""
    if args.json and args.prometheus:
        parser.error("stats: --json and --prometheus: choose one")
    if args.count is not None and args.watch is None:
        parser.error("stats: --count N goes with --watch")
    socket_path = _control_path(args)
    return run_stats(lambda command: query(socket_path, command),
                     raw="metrics" if args.prometheus else "stats" if args.json else None,
                     watch=args.watch, count=args.count, verbose=args.verbosity >= 1)


def _is_command(args: argparse.Namespace, word: str) -> bool:
    """Whether the command line is `fastrelay WORD ...` (doctor, capture).

    `fastrelay WORD BR` is also netrelay's form for relaying bridge "WORD" to bridge BR:
    that meaning wins when an interface named WORD exists.
    """
    if args.listen is not None or args.targets[:1] != [word]:
        return False
    if len(args.targets) != 2:
        return True
    try:
        socket.if_nametoindex(word)
    except OSError:
        return True
    return False


def _doctor(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """`fastrelay doctor [BRIDGE...]`: each finding on a line; 1 when one is a problem."""
    from .doctor import check_bridges

    given = [o for o in _link_options_given(args) if o != "--max-frame"]
    if given or args.config or misplaced_stats_options(args):
        parser.error("doctor takes bridge names and --max-frame only")
    report = check_bridges(args.targets[1:], max_frame=args.max_frame or FRAME_MAX_LEN)
    if not report:
        raise RelayError("doctor: no bridge in this network namespace (name one: "
                         "fastrelay doctor BRIDGE)")
    status = 0
    for bridge, findings in report.items():
        for finding in findings:
            print(finding)
        problems = sum(f.problem for f in findings)
        if problems:
            status = 1
        elif findings:
            print(f"{bridge}: no problem found, but {len(findings)} check(s) could not be made")
        else:
            print(f"{bridge}: OK")
    return status


def _capture(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """`fastrelay capture LINK [PORT...]`: a daemon link's frames as pcapng, until stopped."""
    if len(args.targets) < 2:
        parser.error("capture: which link? (fastrelay capture LINK [PORT...] [-w FILE])")
    given = _link_options_given(args) + [o for o in misplaced_stats_options(args)
                                         if o != "--control"]
    if given:
        parser.error(f"{', '.join(given)}: not with `fastrelay capture`")
    out = args.write or "-"
    if out == "-" and sys.stdout.isatty():
        parser.error("capture: stdout is a terminal; pipe it (fastrelay capture LINK | "
                     "wireshark -k -i -) or write a file with -w FILE")
    # SIGTERM ends the capture as Ctrl-C does: the client closes, the daemon stops copying.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        return capture_stream(_control_path(args), args.targets[1], args.targets[2:], out)
    except KeyboardInterrupt:
        return 0


def _daemon(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """--config FILE: validate, then run every link and hub of FILE until stopped."""
    if args.targets:
        parser.error("--config FILE takes no targets (the links are in FILE)")
    given = _link_options_given(args)
    if given:
        parser.error(f"{', '.join(given)}: with --config, set link options in the file")
    config = load_config(args.config)
    setup_daemon_logging(args.verbosity)
    return run_daemon(config, args.verbosity)


def _capture_options(parser: argparse.ArgumentParser,
                     args: argparse.Namespace) -> CaptureOptions | None:
    """--pcap and its companions, checked against each other and the targets."""
    if args.pcap is None:
        extra = [f"--pcap-{name}" for name in ("snaplen", "size", "count")
                 if getattr(args, f"pcap_{name}") is not None]
        if extra:
            parser.error(f"{', '.join(extra)}: goes with --pcap FILE")
        return None
    if args.pcap_count is not None and args.pcap_size is None:
        parser.error("--pcap-count: goes with --pcap-size (files rotate by size)")
    if args.pcap == "-":
        if "-" in args.targets:
            parser.error("--pcap -: stdout is taken by the stdio target '-'")
        if sys.stdout.isatty():
            parser.error("--pcap -: stdout is a terminal; pipe it (| wireshark -k -i -) "
                         "or give a file")
    elif not args.pcap:
        parser.error("--pcap: empty file name")
    return CaptureOptions(args.pcap, args.pcap_snaplen or defaults.CAPTURE_SNAPLEN,
                          args.pcap_size, args.pcap_count)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    # Intermixed: `capture --control PATH LINK` and `doctor --max-frame N BRIDGE...` have
    # options between their positional words.
    args, extra = parser.parse_known_intermixed_args(argv)
    if extra and args.targets[:1] == ["doctor"] and not any(a.startswith("-") for a in extra):
        # `doctor --max-frame N BRIDGE...`: argparse ends the positionals at the option.
        args.targets += extra
    elif extra:
        for arg in extra:
            if arg.startswith("-,"):
                # Stdio with options, which argparse takes for an option: say what is wrong.
                try:
                    parse_target(arg)
                except RelayError as exc:
                    parser.error(str(exc))
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        if args.check is not None:
            return _check(parser, args)
        # `fastrelay stats` alone is no netrelay form (one target, no -l), so the word
        # can name the command without changing what any netrelay command line means.
        if args.targets == ["stats"] and args.listen is None:
            return _stats(parser, args)
        if _is_command(args, "doctor"):
            return _doctor(parser, args)
        if _is_command(args, "capture"):
            return _capture(parser, args)
        misplaced = misplaced_stats_options(args)
        if misplaced:
            also = " or `fastrelay capture`" if misplaced == ["--control"] else ""
            parser.error(f"{', '.join(misplaced)}: only with `fastrelay stats`{also}")
        if args.write is not None:
            parser.error("-w FILE goes with `fastrelay capture` (use --pcap FILE to capture "
                         "this relay's frames)")
        if args.config is not None:
            return _daemon(parser, args)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return exc.exit_status
    except RelayError as exc:
        print(f"fastrelay: {exc}", file=sys.stderr)
        return exc.exit_status
    except KeyboardInterrupt:
        return 130
    _setup_logging(args.verbosity)
    options = RelayOptions(verbosity=args.verbosity, reconnect=args.reconnect, bind=args.bind,
                           switch=args.switch)
    # Options given on the command line override RelayOptions' defaults (argument name ->
    # option name; they differ only for --queue).
    for arg, option in (("queue", "queue_bytes"), ("queue_total", "queue_total"),
                        ("max_frame", "max_frame"), ("max_clients", "max_clients"),
                        ("max_clients_total", "max_clients_total"), ("mac_age", "mac_age"),
                        ("mac_table_size", "mac_table_size"),
                        ("loop_threshold", "loop_threshold"), ("loop_hold", "loop_hold")):
        if getattr(args, arg) is not None:
            setattr(options, option, getattr(args, arg))
    if args.reconnect_initial is not None:
        options.backoff["initial"] = args.reconnect_initial
    if args.reconnect_max is not None:
        options.backoff["maximum"] = args.reconnect_max
        options.backoff.setdefault("initial", min(defaults.RECONNECT_INITIAL,
                                                  args.reconnect_max))
    if options.backoff.get("maximum", defaults.RECONNECT_MAX) < options.backoff.get(
            "initial", defaults.RECONNECT_INITIAL):
        parser.error("argument --reconnect-max: must be >= --reconnect-initial")
    options.capture = _capture_options(parser, args)
    try:
        targets: list[Target] = [parse_target(t) for t in args.targets]
        if args.listen is not None:
            point_to_point = False
            targets.insert(0, parse_listen(args.listen))
        elif not targets:
            point_to_point = False
            targets = [TCPListenTarget(defaults.DEFAULT_HUB_HOST, defaults.DEFAULT_HUB_PORT)]
            print(f"fastrelay: hub on {defaults.DEFAULT_HUB_HOST}:{defaults.DEFAULT_HUB_PORT}; "
                  f"attach guests with -netdev socket,id=n0,connect="
                  f"{defaults.DEFAULT_HUB_HOST}:{defaults.DEFAULT_HUB_PORT}",
                  file=sys.stderr, flush=True)
        elif len(targets) == 2:
            point_to_point = True
            given = _link_options_given(args, _HUB_OPTIONS)
            if given:
                parser.error(f"{', '.join(given)}: point to point forwards everything between "
                             f"its two sides; a switch is the hub form (-l LISTEN [TARGET...])")
            trunks = [arg for arg, t in zip(args.targets, targets) if getattr(t, "trunk", False)]
            if trunks:
                parser.error(f"{trunks[0]!r}: ',trunk' is for the hub form (-l LISTEN "
                             f"[TARGET...]); point to point has no other port to keep a "
                             f"trunk's frames from")
            problem = pair_problem(targets)
            if problem is not None:
                parser.error(problem)
        else:
            parser.error(f"point to point needs exactly two targets, got {len(targets)} "
                         f"(use -l LISTEN for a hub)")
        options.tls = TLSFiles(args.tls_cert, args.tls_key, args.tls_ca)
        options.allow = tuple(args.allow or ())
        if any(getattr(t, "tls", False) for t in targets):
            options.tls.load()  # a bad file is a start-up error: one line, exit 1
        return run(targets, options, point_to_point=point_to_point)
    except RelayError as exc:
        print(f"fastrelay: {exc}", file=sys.stderr)
        return exc.exit_status
    except KeyboardInterrupt:
        return 130
