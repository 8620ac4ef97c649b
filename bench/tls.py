"""TLS links between two relays: fastrelay's own TLS against the plain link and against stunnel.

Wiring of every variant (all on loopback, two relays point to point, as between two hosts):

    loadgen (tcp-listen:G) <- relay A -> [link] -> relay B -> sink (tcp-listen:S)

- `plain`:   relay A `127.0.0.1:G 127.0.0.1:L`, relay B `listen:127.0.0.1:L 127.0.0.1:S`.
- `tls`:     the same with `,tls` on both ends of the link (mutual TLS, fastrelay's own).
- `stunnel`: the plain link carried through a pair of stunnel4 tunnels (mutual TLS too):
             relay A -> stunnel client (127.0.0.1:C) -> stunnel server (127.0.0.1:T) -> relay B.

Certificates are made per run with the `openssl` command (a CA, one certificate per side).
Frames/s are the sink's; CPU is that of both relays (and both stunnels, for `stunnel`),
read from /proc over the run, and reported per GB of frame bytes delivered.
`python -m bench.tls [--seconds S] [--sizes 1500,64] [--markdown]`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .build import build
from .procs import BenchError, PortPool, Proc, tcp_listening, wait_until
from .scenarios import LOOP, REPO

VARIANTS = ("plain", "tls", "stunnel")
CONNECT_TIMEOUT = 10.0


@dataclass
class TLSRow:
    """One measured point: a variant at a frame size."""

    variant: str
    size: int
    fps: float | None = None
    gbit: float | None = None
    sent: int = 0
    delivered: int = 0
    cpu_s: float | None = None          # relays (+ tunnels) over the run
    cpu_s_per_gb: float | None = None   # the same per GB of frame bytes delivered
    ratios: dict[str, float] = field(default_factory=dict)
    error: str | None = None


def make_certificates(where: Path) -> dict[str, Path]:
    """A CA and one certificate per relay (EC P-256, IP SAN 127.0.0.1), as in the README."""
    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=where)

    run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-days", "2", "-subj", "/CN=bench-ca", "-keyout", "ca.key", "-out", "ca.pem")
    (where / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name in ("a", "b"):
        run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-subj", f"/CN={name}", "-keyout", f"{name}.key", "-out", f"{name}.csr")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-extfile", "san.ext", "-out", f"{name}.crt")
    return {"ca": where / "ca.pem", "a.crt": where / "a.crt", "a.key": where / "a.key",
            "b.crt": where / "b.crt", "b.key": where / "b.key"}


def _stunnel_conf(path: Path, name: str, client: bool, accept: int, connect: int,
                  certs: dict[str, Path], who: str) -> Path:
    path.write_text("\n".join([
        "foreground = yes", "pid =", "debug = 3", f"[{name}]",
        f"client = {'yes' if client else 'no'}", f"accept = {LOOP}:{accept}",
        f"connect = {LOOP}:{connect}", f"cert = {certs[who + '.crt']}",
        f"key = {certs[who + '.key']}", f"CAfile = {certs['ca']}", "verifyChain = yes",
        "requireCert = yes", "sslVersionMin = TLSv1.2", ""]))
    return path


def measure(variant: str, size: int, seconds: float, bins: dict[str, Path],
            certs: dict[str, Path], ports: PortPool, work: Path) -> TLSRow:
    """One point: start sink, relay B (and tunnels), relay A, loadgen; send; collect."""
    row = TLSRow(variant, size)
    procs: list[Proc] = []
    cpu_watch: list[Proc] = []

    def start(name: str, argv: list[str], cwd: str | None = None, cpu: bool = False) -> Proc:
        p = Proc(name, argv, work, cwd=cwd)
        procs.append(p)
        if cpu:
            cpu_watch.append(p)
        return p

    g, s, link = ports.take(), ports.take(), ports.take()
    fast = [sys.executable, "-m", "fastrelay"]
    tls_b = ["--tls-cert", str(certs["b.crt"]), "--tls-key", str(certs["b.key"]),
             "--tls-ca", str(certs["ca"])]
    tls_a = ["--tls-cert", str(certs["a.crt"]), "--tls-key", str(certs["a.key"]),
             "--tls-ca", str(certs["ca"])]
    suffix = ",tls" if variant == "tls" else ""
    try:
        sink_flag, gen_flag = work / "sink.ready", work / "gen.ready"
        sink = start("sink", [str(bins["sink"]), "-t", f"{seconds + 60:g}", "-I", "0.5",
                              "-R", str(sink_flag), "-T", f"{CONNECT_TIMEOUT:g}",
                              f"tcp-listen:{LOOP}:{s}"])
        gen = start("gen", [str(bins["loadgen"]), "-g", "-t", f"{seconds:g}", "-s", str(size),
                            "-p", "bulk", "-R", str(gen_flag), "-T", f"{CONNECT_TIMEOUT:g}",
                            f"tcp-listen:{LOOP}:{g}"])
        wait_until("sink and loadgen to listen",
                   lambda: tcp_listening(s) and tcp_listening(g), CONNECT_TIMEOUT, procs)
        start("relay-b", [*fast, *tls_b, f"listen:{LOOP}:{link}{suffix}", f"{LOOP}:{s}"],
              cwd=str(REPO), cpu=True)
        wait_until("relay B to listen", lambda: tcp_listening(link), CONNECT_TIMEOUT, procs)
        target = link
        if variant == "stunnel":
            exe = shutil.which("stunnel4") or shutil.which("stunnel")
            if exe is None:
                raise BenchError("stunnel4 is not installed (apt-get install stunnel4)")
            tunnel, entry = ports.take(), ports.take()
            start("stunnel-server", [exe, str(_stunnel_conf(work / "server.conf", "s", False,
                                                              tunnel, link, certs, "b"))],
                  cpu=True)
            start("stunnel-client", [exe, str(_stunnel_conf(work / "client.conf", "c", True,
                                                              entry, tunnel, certs, "a"))],
                  cpu=True)
            wait_until("the tunnels to listen",
                       lambda: tcp_listening(tunnel) and tcp_listening(entry),
                       CONNECT_TIMEOUT, procs)
            target = entry
        start("relay-a", [*fast, *tls_a, f"{LOOP}:{g}", f"{LOOP}:{target}{suffix}"],
              cwd=str(REPO), cpu=True)
        wait_until("both ends to connect", lambda: sink_flag.exists() and gen_flag.exists(),
                   CONNECT_TIMEOUT, procs)
        time.sleep(0.3)  # the link itself (and its handshakes) comes up after the ends
        cpu0 = [p.cpu_seconds() or 0.0 for p in cpu_watch]
        gen.go()
        if not gen.wait(seconds + 30):
            raise BenchError(f"sender did not finish: {gen.stderr_tail()}")
        sent = gen.result()
        sink.wait(seconds + 10)
        cpu1 = [p.cpu_seconds() or 0.0 for p in cpu_watch]
        sink.stop()
        got = sink.result()
        row.sent = int(sent.get("frames", 0))
        row.delivered = int(got["frames"])
        row.fps = float(got["frames_per_s"])
        row.gbit = float(got["gbit_per_s"])
        row.cpu_s = sum(b - a for a, b in zip(cpu0, cpu1))
        gbytes = row.delivered * size / 1e9
        row.cpu_s_per_gb = row.cpu_s / gbytes if gbytes else None
        if int(got.get("corrupt", 0)):
            row.error = f"{got['corrupt']} corrupt frames"
        elif not row.delivered:
            row.error = "nothing delivered"
    except (BenchError, OSError, subprocess.CalledProcessError) as exc:
        row.error = str(exc)
    finally:
        for p in reversed(procs):
            p.stop()
    return row


def run(seconds: float, sizes: list[int], rounds: int = 1) -> list[TLSRow]:
    """Every variant at every size, `rounds` times interleaved; the best round is kept."""
    bins = build()
    ports = PortPool()
    best: dict[tuple[str, int], TLSRow] = {}
    with tempfile.TemporaryDirectory(prefix="fastrelay-tls-bench-") as tmp:
        certs = make_certificates(Path(tmp))
        for _ in range(rounds):
            for size in sizes:
                for variant in VARIANTS:
                    with tempfile.TemporaryDirectory(dir=tmp) as work:
                        row = measure(variant, size, seconds, bins, certs, ports, Path(work))
                    key = (variant, size)
                    old = best.get(key)
                    if old is None or old.error or (row.error is None and
                                                    (row.fps or 0) > (old.fps or 0)):
                        best[key] = row
    rows = [best[(v, s)] for s in sizes for v in VARIANTS]
    for row in rows:
        plain, stunnel = best[("plain", row.size)], best[("stunnel", row.size)]
        if row.fps and plain.fps and not plain.error:
            row.ratios["x_plain"] = row.fps / plain.fps
        if row.fps and stunnel.fps and not stunnel.error:
            row.ratios["x_stunnel"] = row.fps / stunnel.fps
    return rows


def markdown(rows: list[TLSRow]) -> str:
    out = ["| link | size | frames/s | Gbit/s | x plain | x stunnel | CPU s per GB | note |",
           "|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        def num(v: float | None, fmt: str) -> str:
            return format(v, fmt) if v is not None else "-"
        out.append(f"| {r.variant} | {r.size} | {num(r.fps, ',.0f')} | {num(r.gbit, '.2f')} | "
                   f"{num(r.ratios.get('x_plain'), '.2f')} | "
                   f"{num(r.ratios.get('x_stunnel'), '.2f')} | "
                   f"{num(r.cpu_s_per_gb, '.2f')} | {r.error or ''} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.tls", description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--sizes", default="1500,64")
    ap.add_argument("--rounds", type=int, default=1, help="repeat, keep each point's best")
    ap.add_argument("--markdown", action="store_true", help="print a markdown table")
    ap.add_argument("--json", type=Path, help="write the rows as JSON here")
    args = ap.parse_args(argv)
    rows = run(args.seconds, [int(s) for s in args.sizes.split(",")], args.rounds)
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=1))
    print(markdown(rows) if args.markdown else json.dumps([asdict(r) for r in rows], indent=1))
    return 1 if any(r.error for r in rows) else 0


def results_section(rows: list[dict[str, Any]] | list[TLSRow]) -> str:
    """The RESULTS.md section for rows (see bench/results.py)."""
    objs = [r if isinstance(r, TLSRow) else TLSRow(**r) for r in rows]
    return markdown(objs)


if __name__ == "__main__":
    sys.exit(main())
