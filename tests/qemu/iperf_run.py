"""Guest-to-guest iperf3 throughput over direct qemu links and through fastrelay (a script, not a test).

    python -m tests.qemu.iperf_run [--time 10] [--mtu 1500] [--modes direct-udp,relay-tcp-hub]
                                   [--rounds N] [--json out.json]

Under TCG, Gbit/s mostly measures qemu (the TCP loop through two emulated guests); the number
that tells relays apart is the relay's own CPU time per GB carried (utime + stime from
/proc/PID/stat, sampled when the client guest starts iperf3 and again after it ends).
Set FASTRELAY_QEMU_RELAY to measure another relay with the same CLI (e.g. netrelay).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

from .guest import BuildError, ensure_image
from .harness import (
    Lab,
    free_port,
    guest_lock,
    nd_socket_connect,
    nd_socket_listen,
    nd_socket_udp,
    port_listening,
    wait_until,
)

MODES = ["direct-udp", "direct-tcp", "relay-tcp-hub", "relay-tcp-p2p", "relay-udp-p2p"]
# The C relay fastrelay replaces, over the same UDP point to point: what one relay hop
# costs the guests whatever the relay (bench/README.md). Run by default when on PATH.
NETRELAY_MODE = "netrelay-udp-p2p"


def default_modes() -> list[str]:
    return MODES + ([NETRELAY_MODE] if shutil.which("netrelay") else [])


def udp_drops() -> dict[int, int]:
    """{local UDP port: datagrams its socket dropped} (the kernel's count of what arrived
    to a full receive buffer), from /proc/net/udp; sockets bound to 127.0.0.1 or to every
    address (the relay's, without --bind)."""
    out: dict[int, int] = {}
    with open("/proc/net/udp") as f:
        next(f)
        for line in f:
            fields = line.split()
            addr, port = fields[1].split(":")
            if addr in ("0100007F", "00000000"):
                out[int(port, 16)] = int(fields[12])
    return out


def run_mode(mode: str, seconds: int, mtu: int, workdir: Path) -> dict[str, object]:
    """One iperf3 run between two fresh guests; returns the measurements as a dict."""
    image = ensure_image("cloud", log=lambda m: print(m, file=sys.stderr))
    server_env = {"fr_action": "iperf-server", "fr_mtu": mtu, "fr_timeout": seconds + 90}
    # A quiet relay: -vv's once-a-second counters would count in its CPU time.
    with Lab(image, workdir, relay_verbose=False) as lab:
        relay = None
        watch: dict[str, int] = {}  # who owns a UDP socket -> its local port
        if mode == "direct-udp":
            pa, pb = free_port("udp"), free_port("udp")
            nd_a, nd_b = nd_socket_udp(pb, pa), nd_socket_udp(pa, pb)
            watch = {"client": pa, "server": pb}
        elif mode == "direct-tcp":
            port = free_port()
            nd_a, nd_b = nd_socket_connect(port), nd_socket_listen(port)
        elif mode == "relay-tcp-hub":
            port = free_port()
            relay = lab.relay("-l", port)
            relay.wait_listening(port)
            nd_a = nd_b = nd_socket_connect(port)
        elif mode == "relay-tcp-p2p":
            # Both guests listen; the relay connects out to them once they do.
            pa, pb = free_port(), free_port()
            nd_a, nd_b = nd_socket_listen(pa), nd_socket_listen(pb)
        elif mode in ("relay-udp-p2p", NETRELAY_MODE):
            ra, ga, rb, gb = (free_port("udp") for _ in range(4))
            netrelay = shutil.which("netrelay") if mode == NETRELAY_MODE else None
            if mode == NETRELAY_MODE and netrelay is None:
                raise RuntimeError(f"{mode}: netrelay is not on PATH")
            relay = lab.relay(f"{ra}:127.0.0.1:{ga}", f"{rb}:127.0.0.1:{gb}",
                              command=[netrelay] if netrelay else None)
            relay.wait_listening(ra, "udp")
            relay.wait_listening(rb, "udp")
            nd_a, nd_b = nd_socket_udp(ra, ga), nd_socket_udp(rb, gb)
            watch = {"client": ga, "server": gb, "relay": ra, "relay ": rb}
        else:
            raise ValueError(f"unknown mode {mode!r}; choose from {MODES + [NETRELAY_MODE]}")

        b = lab.guest("server", nd_b, env=server_env)
        if mode == "direct-tcp":
            wait_until(lambda: port_listening(port, "tcp"), 15, "qemu listen=", b.tail)
        client_env = {
            "fr_action": "iperf-client",
            "fr_peer": b.ip,
            "fr_time": seconds,
            "fr_mtu": mtu,
            "fr_timeout": seconds + 90,
        }
        a = lab.guest("client", nd_a, env=client_env)
        if mode == "relay-tcp-p2p":
            for p_ in (pa, pb):
                wait_until(lambda p_=p_: port_listening(p_, "tcp"), 15, "qemu listen=", b.tail)
            relay = lab.relay(f"127.0.0.1:{pa}", f"127.0.0.1:{pb}")
        a.wait_for(r"^FR-RESULT reach .*ok=1", 60)
        cpu0 = relay.cpu_seconds() if relay else 0.0
        drops0 = udp_drops()
        a.wait_for(r"^FR-(RESULT iperf|ERROR iperf)", seconds + 60)
        cpu1 = relay.cpu_seconds() if relay else 0.0
        drops1 = udp_drops()
        res = a.results("iperf")
        if not res:
            raise RuntimeError(f"{mode}: iperf3 failed\n{a.tail()}")
        mbps = float(res[0]["mbps"])
        gbytes = mbps * 1e6 * seconds / 8 / 1e9
        out: dict[str, object] = {
            "mode": mode,
            "mtu": mtu,
            "seconds": seconds,
            "gbit_per_s": round(mbps / 1000, 3),
            "retransmits": int(res[0].get("retransmits") or 0),
            "gbytes": round(gbytes, 3),
        }
        if watch:
            # Datagrams lost to full receive buffers during the run, per socket owner
            # ("relay" sums the relay's two sockets).
            drops: dict[str, int] = {}
            for who, port in watch.items():
                lost = drops1.get(port, 0) - drops0.get(port, 0)
                drops[who.strip()] = drops.get(who.strip(), 0) + lost
            out["udp_drops"] = drops
        if relay:
            cpu = cpu1 - cpu0
            out["relay_cpu_s"] = round(cpu, 3)
            out["relay_cpu_s_per_gb"] = round(cpu / gbytes, 3) if gbytes else None
        return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m tests.qemu.iperf_run", description=__doc__.split("\n")[0]
    )
    ap.add_argument("--time", type=int, default=10, help="iperf3 seconds per mode (default 10)")
    ap.add_argument("--mtu", type=int, default=1500, help="guest MTU (default 1500)")
    ap.add_argument("--modes", default=",".join(default_modes()),
                    help=f"comma list from {','.join(MODES + [NETRELAY_MODE])} (default: "
                         f"all, {NETRELAY_MODE} when netrelay is on PATH)")
    ap.add_argument("--json", type=Path, help="also write the results as JSON here")
    ap.add_argument("--rounds", type=int, default=1,
                    help="run the modes this many times, in reverse order every other round "
                         "(default 1); every run is reported, with its round")
    args = ap.parse_args(argv)
    modes = [m for m in args.modes.split(",") if m]
    for m in modes:
        if m not in MODES + [NETRELAY_MODE]:
            ap.error(f"unknown mode {m}")
    if NETRELAY_MODE in modes and not shutil.which("netrelay"):
        ap.error(f"{NETRELAY_MODE}: netrelay is not on PATH")

    results = []
    print(f"{'mode':<17} {'Gbit/s':>7} {'retr':>6} {'relay cpu-s':>11} {'cpu-s/GB':>9}")
    # Same host-wide lock as the tests: one guest pair at a time.
    # Alternating the order spreads whatever the machine does meanwhile over every mode.
    runs = [(rnd, mode) for rnd in range(args.rounds)
            for mode in (modes if rnd % 2 == 0 else modes[::-1])]
    with guest_lock(), tempfile.TemporaryDirectory(prefix="fastrelay-iperf-") as tmp:
        for i, (rnd, mode) in enumerate(runs):
            wd = Path(tmp) / f"{i}-{mode}"
            wd.mkdir()
            try:
                r = run_mode(mode, args.time, args.mtu, wd)
            except (BuildError, RuntimeError, AssertionError) as e:
                print(f"{mode:<17} failed: {e}", file=sys.stderr)
                results.append({"mode": mode, "round": rnd, "error": str(e).splitlines()[0]})
                continue
            r["round"] = rnd
            results.append(r)
            cpu = r.get("relay_cpu_s", "-")
            per = r.get("relay_cpu_s_per_gb", "-")
            drops: dict[str, int] = r.get("udp_drops") or {}  # type: ignore[assignment]
            print(
                f"{mode:<17} {r['gbit_per_s']:>7.3f} {r['retransmits']:>6} {cpu!s:>11} {per!s:>9}"
                + "".join(f" {who}-drops={n}" for who, n in drops.items()),
                flush=True,
            )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0 if all("error" not in r for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
