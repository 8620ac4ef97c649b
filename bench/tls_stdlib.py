"""What the standard library's TLS (SSLObject + MemoryBIO, driven once per batch) costs.

The alternative to calling OpenSSL from Cython (bench/tls.py measures that one end to end):
a client and a server SSLObject joined by memory BIOs in one process, no sockets at all, move
256 KiB batches of 1500-byte records through encryption and decryption, as a data plane
using them would once per batch (write the batch; read the ciphertext out as bytes; feed it
to the peer; read the plaintext back into a buffer, one record per call). Reported: CPU
seconds per GB of plaintext (encrypt + decrypt, so comparable to the CPU of the two relays
of a TLS link per GB), without any of the socket I/O, framing and forwarding that a relay
adds. `python -m bench.tls_stdlib [--gb 1]`.
"""

from __future__ import annotations

import argparse
import os
import ssl
import subprocess
import sys
import tempfile
import time

BATCH = 256 * 1024


def pair(where: str) -> tuple[ssl.SSLObject, ssl.MemoryBIO, ssl.MemoryBIO, ssl.SSLObject,
                              ssl.MemoryBIO, ssl.MemoryBIO]:
    """A handshaken client/server pair on memory BIOs (a self-signed certificate)."""
    cert, key = os.path.join(where, "c.pem"), os.path.join(where, "k.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost", "-keyout", key, "-out", cert],
                   check=True, capture_output=True)
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    sctx.load_cert_chain(cert, key)
    cctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    cctx.load_verify_locations(cert)
    cin, cout, sin, sout = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    client = cctx.wrap_bio(cin, cout, server_hostname="localhost")
    server = sctx.wrap_bio(sin, sout, server_side=True)
    for _ in range(10):
        for side in (client, server):
            try:
                side.do_handshake()
            except ssl.SSLWantReadError:
                pass
        sin.write(cout.read())
        cin.write(sout.read())
    return client, cin, cout, server, sin, sout


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.tls_stdlib")
    ap.add_argument("--gb", type=float, default=1.0, help="plaintext to move (GB)")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        client, _, cout, server, sin, _ = pair(tmp)
    record = (1500).to_bytes(4, "big") + os.urandom(1500)
    batch = memoryview(record * (BATCH // len(record)))
    into = bytearray(BATCH + 16384)
    view = memoryview(into)
    total = 0
    want = int(args.gb * 1e9)
    cpu0, wall0 = time.process_time(), time.monotonic()
    while total < want:
        client.write(batch)               # encrypt the whole batch (many records)
        sin.write(cout.read())            # the ciphertext as bytes, fed to the peer
        got = 0
        while True:                       # decrypt, one record per call, into a buffer
            try:
                n = server.read(16384, view[got:])
            except ssl.SSLWantReadError:
                break
            got += n
        assert got == len(batch)
        total += got
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    print(f"stdlib SSLObject+MemoryBIO ({client.version()}, {client.cipher()[0]}): "
          f"{cpu / (total / 1e9):.2f} CPU s per GB, {total * 8 / wall / 1e9:.2f} Gbit/s "
          f"on one core, crypto and copies only")
    return 0


if __name__ == "__main__":
    sys.exit(main())
