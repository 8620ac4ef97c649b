"""Guest-to-guest iperf3 throughput over direct qemu links and through fastrelay (a script, not a test).

    python -m tests.qemu.iperf_run [--time 10] [--mtu 1500] [--modes direct-udp,relay-tcp-hub] [--json out.json]

Under TCG the two guests use both cores, so Gbit/s mostly measures qemu; the number
that tells relays apart is the relay's own CPU time per GB carried (utime + stime from
/proc/PID/stat, sampled when the client guest starts iperf3 and again after it ends).
Set FASTRELAY_QEMU_RELAY to measure another relay with the same CLI (e.g. netrelay).
"""

from __future__ import annotations

import argparse
import json
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


def run_mode(mode: str, seconds: int, mtu: int, workdir: Path) -> dict[str, object]:
    """One iperf3 run between two fresh guests; returns the measurements as a dict."""
    image = ensure_image("cloud", log=lambda m: print(m, file=sys.stderr))
    server_env = {"fr_action": "iperf-server", "fr_mtu": mtu, "fr_timeout": seconds + 90}
    # A quiet relay: -vv's once-a-second counters would count in its CPU time.
    with Lab(image, workdir, relay_verbose=False) as lab:
        relay = None
        if mode == "direct-udp":
            pa, pb = free_port("udp"), free_port("udp")
            nd_a, nd_b = nd_socket_udp(pb, pa), nd_socket_udp(pa, pb)
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
        elif mode == "relay-udp-p2p":
            ra, ga, rb, gb = (free_port("udp") for _ in range(4))
            relay = lab.relay(f"{ra}:127.0.0.1:{ga}", f"{rb}:127.0.0.1:{gb}")
            relay.wait_listening(ra, "udp")
            relay.wait_listening(rb, "udp")
            nd_a, nd_b = nd_socket_udp(ra, ga), nd_socket_udp(rb, gb)
        else:
            raise ValueError(f"unknown mode {mode!r}; choose from {MODES}")

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
        a.wait_for(r"^FR-(RESULT iperf|ERROR iperf)", seconds + 60)
        cpu1 = relay.cpu_seconds() if relay else 0.0
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
    ap.add_argument("--modes", default=",".join(MODES), help=f"comma list from {','.join(MODES)}")
    ap.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = ap.parse_args(argv)
    modes = [m for m in args.modes.split(",") if m]
    for m in modes:
        if m not in MODES:
            ap.error(f"unknown mode {m}")

    results = []
    print(f"{'mode':<15} {'Gbit/s':>7} {'retr':>6} {'relay cpu-s':>11} {'cpu-s/GB':>9}")
    # Same host-wide lock as the tests: one guest pair at a time.
    with guest_lock(), tempfile.TemporaryDirectory(prefix="fastrelay-iperf-") as tmp:
        for mode in modes:
            wd = Path(tmp) / mode
            wd.mkdir()
            try:
                r = run_mode(mode, args.time, args.mtu, wd)
            except (BuildError, RuntimeError, AssertionError) as e:
                print(f"{mode:<15} failed: {e}", file=sys.stderr)
                results.append({"mode": mode, "error": str(e).splitlines()[0]})
                continue
            results.append(r)
            cpu = r.get("relay_cpu_s", "-")
            per = r.get("relay_cpu_s_per_gb", "-")
            print(
                f"{mode:<15} {r['gbit_per_s']:>7.3f} {r['retransmits']:>6} {cpu!s:>11} {per!s:>9}",
                flush=True,
            )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0 if all("error" not in r for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
