"""Command line: parses netrelay-compatible arguments and hands them to the control plane."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

from . import __version__, defaults
from .errors import RelayError
from .relay import RelayOptions, run
from .targets import TARGET_HELP, Target, TCPListenTarget, parse_listen, parse_target

__all__ = ["main", "build_parser"]

USAGE = """\
fastrelay [-v]... [options] SRC DEST          point to point (netrelay SRC DEST)
       fastrelay [-v]... [options] -l LISTEN [TARGET...]  hub (netrelay -l PORT TARGET...)
       fastrelay                                    hub on 127.0.0.1:%d, no configuration""" % (
    defaults.DEFAULT_HUB_PORT)

EPILOG = TARGET_HELP + """

-l LISTEN is PORT (dual-stack, every address, as netrelay), HOST:PORT, [V6]:PORT or unix:PATH.
In a hub every frame goes to every other port, never back to its sender; a slow port
loses its own frames (counted) and slows nobody. Point to point exits 0 when a side ends,
unless --reconnect is given.

examples:
  fastrelay -l 5000
      qemu ... -netdev socket,id=n0,connect=127.0.0.1:5000 -device virtio-net-pci,netdev=n0
  fastrelay 6000:127.0.0.1:6001 7000:127.0.0.1:7001
      qemu ... -netdev socket,id=n0,udp=127.0.0.1:6000,localaddr=127.0.0.1:6001
      qemu ... -netdev socket,id=n0,udp=127.0.0.1:7000,localaddr=127.0.0.1:7001
  fastrelay --reconnect 127.0.0.1:5001 127.0.0.1:5002
      qemu ... -netdev socket,id=n0,listen=127.0.0.1:5001   (and 5002 for the other guest)
"""


def _size(text: str) -> int:
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    text = text.strip().lower().removesuffix("ib").removesuffix("b")
    scale = units.get(text[-1:], 1)
    try:
        value = int(float(text[:-1] if text[-1:] in units else text) * scale)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError("size must be >= 0")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
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
                        help="backlog bound per port (default 4M); whole frames past it drop")
    parser.add_argument("--max-frame", type=int, default=None, metavar="N",
                        help="longest frame accepted (default 69632, qemu's limit)")
    parser.add_argument("--bind", metavar="ADDR",
                        help="local address for UDP targets and -l PORT (default: every address)")
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


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.verbosity)
    options = RelayOptions(verbosity=args.verbosity, reconnect=args.reconnect, bind=args.bind)
    if args.queue is not None:
        options.queue_bytes = args.queue
    if args.max_frame is not None:
        if not 14 <= args.max_frame <= 69632:
            parser.error("--max-frame must be within 14..69632")
        options.max_frame = args.max_frame
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
        else:
            parser.error(f"point to point needs exactly two targets, got {len(targets)} "
                         f"(use -l LISTEN for a hub)")
        return run(targets, options, point_to_point=point_to_point)
    except RelayError as exc:
        print(f"fastrelay: {exc}", file=sys.stderr)
        return exc.exit_status
    except KeyboardInterrupt:
        return 130
