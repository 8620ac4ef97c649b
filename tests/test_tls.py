"""TLS links and listener allowlists over real loopback sockets, with certificates made here."""

from __future__ import annotations

import logging
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import InProcessRelay, wait_bound, wait_until
from peers import (LOOP4, StreamListener, StreamPeer, free_port, make_frame, random_frames,
                   track)
from reference import frame_stream
from tlscerts import CryptographyCA, Identity, LocalCA, OpensslCA

from fastrelay.relay import RelayOptions
from fastrelay.tls import TLSFiles, parse_allow

MARKER = b"FASTRELAY-PLAINTEXT-MARKER-7d1f"


@pytest.fixture
def pki(tmp_path):  # type: ignore[no-untyped-def]
    """A CA with certificates for two relays and a client, and a stranger CA with one."""
    ca = LocalCA(str(tmp_path), "ca")
    other = LocalCA(str(tmp_path), "other")
    return {"ca": ca, "a": ca.issue("a"), "b": ca.issue("b"), "client": ca.issue("client"),
            "other": other, "stranger": other.issue("stranger")}


def test_openssl_made_certificates_work(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The fallback without `cryptography` (and the README's recipe) makes usable files."""
    ca = OpensslCA(str(tmp_path), "cli-ca")
    host = ca.issue("host")
    TLSFiles(host.cert, host.key, ca.path).load()


def tls_options(who: Identity, ca: CryptographyCA | OpensslCA, **kw: object) -> RelayOptions:
    return RelayOptions(tls=TLSFiles(who.cert, who.key, ca.path), **kw)  # type: ignore[arg-type]


def start(args: list[str], options: RelayOptions, listen: str | None = None) -> InProcessRelay:
    relay = InProcessRelay(args, listen, options)
    STARTED.append(relay)
    return relay


STARTED: list[InProcessRelay] = []


@pytest.fixture(autouse=True)
def _stop_relays():  # type: ignore[no-untyped-def]
    yield
    while STARTED:
        STARTED.pop().stop()


def send_and_check(src: StreamPeer, dst: StreamPeer, frames: list[bytes]) -> None:
    sender = threading.Thread(target=src.send, args=(frames,))
    sender.start()
    try:
        assert dst.recv(len(frames), timeout=30) == frames
    finally:
        sender.join(30)


def client_context(ca: CryptographyCA | OpensslCA, who: Identity | None) -> ssl.SSLContext:
    """The standard library's TLS client: an implementation of its own to test against."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(ca.path)
    if who is not None:
        ctx.load_cert_chain(who.cert, who.key)
    return ctx


def tls_connect(port: int, ca: CryptographyCA | OpensslCA, who: Identity | None) -> ssl.SSLSocket:
    raw = socket.create_connection((LOOP4, port), timeout=5)
    return track(client_context(ca, who).wrap_socket(raw, server_hostname=LOOP4))


def tls_link(pki, a_guest: StreamListener, b_guest: StreamListener,  # type: ignore[no-untyped-def]
             via: int | None = None) -> tuple[InProcessRelay, InProcessRelay, int]:
    """Relay A (guest a, TLS listener) and relay B (TLS client, guest b), point to point.
    B connects to port `via` when given (a sniffer in the middle), else to A."""
    port = free_port()
    ra = start([f"{LOOP4}:{a_guest.port}", f"listen:{LOOP4}:{port},tls"],
               tls_options(pki["a"], pki["ca"], reconnect=True))
    wait_bound(port, socket.SOCK_STREAM)
    rb = start([f"{LOOP4}:{via or port},tls", f"{LOOP4}:{b_guest.port}"],
               tls_options(pki["b"], pki["ca"], reconnect=True))
    return ra, rb, port


def test_point_to_point_frames_byte_exact_both_ways(pki) -> None:  # type: ignore[no-untyped-def]
    ga, gb = StreamListener(), StreamListener()
    ra, rb, _ = tls_link(pki, ga, gb)
    a, b = ga.accept(), gb.accept()
    frames = random_frames(3000, 14, 9000, seed=11)
    frames += [make_frame(69632, 1), make_frame(14, 2)] + random_frames(3000, 60, 128, seed=12)
    send_and_check(a, b, frames)
    back = random_frames(2000, 14, 65535, seed=13)
    send_and_check(b, a, back)
    port = next(p for p in ra.relay.hub.ports if type(p).__name__ == "TLSPort")
    assert port.tls_version in ("TLSv1.3", "TLSv1.2")
    assert ra.relay.endpoints[1].handshakes == 1 and rb.relay.endpoints[0].handshakes == 1


def test_two_hubs_over_tls(pki) -> None:  # type: ignore[no-untyped-def]
    """Two hubs, each with its guests, joined by one TLS link: every guest hears the others."""
    port = free_port()
    ha = start([], tls_options(pki["a"], pki["ca"]), listen=f"{LOOP4}:{port},tls")
    wait_bound(port, socket.SOCK_STREAM)
    guests_b = free_port()
    hb = start([f"{LOOP4}:{port},tls"], tls_options(pki["b"], pki["ca"], reconnect=True),
               listen=f"{LOOP4}:{guests_b}")
    wait_bound(guests_b, socket.SOCK_STREAM)
    wait_until(lambda: len(ha.relay.hub.ports) == 1, what="the hubs to link")
    b1, b2 = StreamPeer.connect((LOOP4, guests_b)), StreamPeer.connect((LOOP4, guests_b))
    wait_until(lambda: len(hb.relay.hub.ports) == 3, what="guests on hub B")
    # A guest of hub A is a TLS client of its own (the stdlib's TLS), with a certificate.
    a1 = tls_connect(port, pki["ca"], pki["client"])
    wait_until(lambda: len(ha.relay.hub.ports) == 2, what="the TLS guest on hub A")
    frames = random_frames(200, 60, 1500, seed=21)
    a1.sendall(frame_stream(frames))
    assert b1.recv(200) == frames and b2.recv(200) == frames
    back = random_frames(300, 60, 9000, seed=22)
    b1.send(back)
    assert b2.recv(300) == back
    peer = StreamPeer(a1)
    assert peer.recv(300) == back


def test_refused_clients_one_line_each_and_counted(pki, caplog) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.INFO, "fastrelay")
    port = free_port()
    hub = start([], tls_options(pki["a"], pki["ca"], tls_timeout=0.5),
                listen=f"{LOOP4}:{port},tls")
    wait_bound(port, socket.SOCK_STREAM)
    listener = hub.relay.endpoints[0]
    # No client certificate: the server must refuse it (TLS 1.3: seen at the first read).
    with pytest.raises((ssl.SSLError, ConnectionError)):
        s = tls_connect(port, pki["ca"], None)
        s.sendall(b"x" * 100)
        s.recv(10)
    # A certificate from another CA.
    with pytest.raises((ssl.SSLError, ConnectionError)):
        s = tls_connect(port, pki["ca"], pki["stranger"])
        s.recv(10)
    # A plaintext (qemu-style) client.
    plain = StreamPeer.connect((LOOP4, port))
    plain.send([make_frame(100)])
    plain.expect_closed()
    # A client that connects and says nothing: dropped after tls_timeout.
    stalled = StreamPeer.connect((LOOP4, port))
    began = time.monotonic()
    stalled.expect_closed(timeout=5)
    assert time.monotonic() - began < 3
    wait_until(lambda: sum(listener.handshake_failures.values()) == 4, what="4 failures")
    assert listener.handshake_failures == {"no_certificate": 1, "bad_certificate": 1,
                                           "protocol": 1, "timeout": 1}
    assert listener.handshakes == 0 and hub.relay.hub.ports == []
    lines = [r.getMessage() for r in caplog.records if "handshake failed" in r.getMessage()]
    assert len(lines) == 4, lines
    assert all(line.startswith("tcp client 127.0.0.1:") for line in lines), lines
    assert any("no client certificate" in line for line in lines)
    assert any("certificate refused" in line for line in lines)
    assert any("not TLS" in line for line in lines)
    assert any("not done within 0.5s" in line for line in lines)
    # And a good client still gets in.
    good = tls_connect(port, pki["ca"], pki["client"])
    wait_until(lambda: len(hub.relay.hub.ports) == 1, what="the good client")
    assert good.version() == "TLSv1.3"


def test_client_checks_the_listener_name(pki) -> None:  # type: ignore[no-untyped-def]
    """The listener's certificate names 127.0.0.1 and localhost, not 'relay9.example'."""
    port = free_port()
    start([], tls_options(pki["a"], pki["ca"]), listen=f"{LOOP4}:{port},tls")
    wait_bound(port, socket.SOCK_STREAM)
    hub = start([f"{LOOP4}:{port},tls,tls-name=relay9.example"],
                tls_options(pki["b"], pki["ca"], reconnect=True,
                            backoff={"initial": 0.05, "maximum": 0.2}),
                listen=f"{LOOP4}:{free_port()}")
    client = hub.relay.endpoints[1]
    # Retried with the reconnect back-off, each one counted.
    wait_until(lambda: client.handshake_failures.get("bad_certificate", 0) >= 3, timeout=10,
               what="retries of the refused handshake")
    assert client.handshakes == 0
    ok = start([f"{LOOP4}:{port},tls,tls-name=localhost"],
               tls_options(pki["b"], pki["ca"]), listen=f"{LOOP4}:{free_port()}")
    assert ok.relay.endpoints[1].handshakes == 1


def test_allowlist_refuses_127_0_0_1_accepts_127_0_0_2(pki, caplog) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.INFO, "fastrelay")
    port = free_port()
    hub = start([], RelayOptions(allow=parse_allow(["127.0.0.2/32", "::1"])),
                listen=f"0.0.0.0:{port}")
    wait_bound(port, socket.SOCK_STREAM)
    for _ in range(3):
        refused = StreamPeer.connect((LOOP4, port))
        refused.expect_closed()
    sock = track(socket.socket())
    sock.bind(("127.0.0.2", 0))
    sock.connect((LOOP4, port))
    welcome = StreamPeer(sock)
    wait_until(lambda: len(hub.relay.hub.ports) == 1, what="the allowed client")
    assert hub.relay.hub.ports[0].name.startswith("tcp client 127.0.0.2:")
    listener = hub.relay.endpoints[0]
    assert listener.refused_allow == 3
    lines = [r.getMessage() for r in caplog.records if "allowlist" in r.getMessage()]
    assert len(lines) == 1 and "refused 127.0.0.1:" in lines[0], lines  # one per source
    stats = hub.relay.endpoint_stats()[0].as_dict()
    assert stats["refused_allowlist"] == 3
    welcome.send([make_frame(60)])  # it is a working port
    assert welcome.sock.fileno() >= 0


def test_allowlist_refuses_an_entry_with_a_link() -> None:
    # A client is checked by its address alone: fe80::%eth0/64 would admit fe80:: clients
    # from every link, so it is refused, on the command line with one line and status 2.
    with pytest.raises(ValueError, match="cannot be allowed"):
        parse_allow(["fe80::%eth0/64"])
    assert [str(n) for n in parse_allow(["fe80::/64"])] == ["fe80::/64"]
    result = subprocess.run([sys.executable, "-m", "fastrelay", "--allow", "fe80::%lo/64",
                             "-l", f"127.0.0.1:{free_port()}"], capture_output=True, text=True,
                            timeout=20, stdin=subprocess.DEVNULL, check=False)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "'fe80::%lo/64': a link (%...) cannot be allowed" in lines[0], lines


def test_garbage_after_handshake_drops_that_peer_only(pki) -> None:  # type: ignore[no-untyped-def]
    """Hub A has three TLS clients: hub B (a relay), `bad` and `witness` (the stdlib's TLS).
    A forged record from `bad` closes `bad` alone; B and the witness keep talking through A."""
    port = free_port()
    guests = free_port()
    hub = start([], tls_options(pki["a"], pki["ca"]), listen=f"{LOOP4}:{port},tls")
    wait_bound(port, socket.SOCK_STREAM)
    start([f"{LOOP4}:{port},tls"], tls_options(pki["b"], pki["ca"]), listen=f"{LOOP4}:{guests}")
    wait_bound(guests, socket.SOCK_STREAM)
    guest = StreamPeer.connect((LOOP4, guests))
    bad = tls_connect(port, pki["ca"], pki["client"])
    witness = StreamPeer(tls_connect(port, pki["ca"], pki["client"]))
    wait_until(lambda: len(hub.relay.hub.ports) == 3, what="three TLS clients")
    first = make_frame(80, 1)
    bad.sendall(frame_stream([first]))
    assert guest.recv(1) == [first] and witness.recv(1) == [first]
    # Raw bytes under the session: a forged application-data record.
    raw = socket.socket(fileno=socket.dup(bad.fileno()))
    raw.sendall(b"\x17\x03\x03\x00\x40" + b"\x55" * 64)
    raw.close()
    wait_until(lambda: len(hub.relay.hub.ports) == 2, what="the bad client to be dropped")
    frames = random_frames(500, 60, 1500, seed=31)
    guest.send(frames)
    assert witness.recv(500) == frames
    back = random_frames(100, 60, 1500, seed=32)
    witness.sock.sendall(frame_stream(back))
    assert guest.recv(100) == back
    assert hub.relay.endpoints[0].handshakes == 3


class Sniffer:
    """A TCP forwarder in the middle of a link that keeps every byte it passes."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.server = track(socket.socket())
        self.server.bind((LOOP4, 0))
        self.server.listen(4)
        self.port = self.server.getsockname()[1]
        self.seen = bytearray()
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        try:
            conn, _ = self.server.accept()
        except OSError:
            return
        track(conn)
        up = track(socket.create_connection((LOOP4, self.target)))
        for src, dst in ((conn, up), (up, conn)):
            threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(1 << 16):
                with self.lock:
                    self.seen += data
                dst.sendall(data)
        except OSError:
            pass


@pytest.mark.parametrize("tls", [True, False])
def test_no_plaintext_on_the_wire(pki, tls: bool) -> None:  # type: ignore[no-untyped-def]
    """Between two relays the sniffer sees no payload byte of the frames; the plain link
    shows the test would see one."""
    ga, gb = StreamListener(), StreamListener()
    port = free_port()
    suffix = ",tls" if tls else ""
    start([f"{LOOP4}:{ga.port}", f"listen:{LOOP4}:{port}{suffix}"],
          tls_options(pki["a"], pki["ca"], reconnect=True))
    wait_bound(port, socket.SOCK_STREAM)
    sniffer = Sniffer(port)
    start([f"{LOOP4}:{sniffer.port}{suffix}", f"{LOOP4}:{gb.port}"],
          tls_options(pki["b"], pki["ca"], reconnect=True))
    a, b = ga.accept(), gb.accept()
    frames = [make_frame(64, i)[:22] + MARKER + bytes(range(256)) * 4 for i in range(300)]
    send_and_check(a, b, frames)
    send_and_check(b, a, frames[:50])
    with sniffer.lock:
        wire = bytes(sniffer.seen)
    assert len(wire) > 300 * len(MARKER)
    assert (MARKER in wire) is not tls
    assert (bytes(range(64, 128)) in wire) is not tls


def test_sustained_burst_with_slow_reader_loses_nothing(pki) -> None:  # type: ignore[no-untyped-def]
    """Back-pressure through TLS: the receiver reads late, the writer's records are retried
    from the backlog (never torn), and every frame arrives in order."""
    ga, gb = StreamListener(), StreamListener()
    tls_link(pki, ga, gb)
    a, b = ga.accept(), gb.accept()
    frames = random_frames(20000, 60, 1500, seed=41)
    a.send(frames)
    time.sleep(1.0)  # let the buffers fill up on the way
    assert b.recv(len(frames), timeout=60) == frames


def _run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fastrelay", *args], capture_output=True,
                          text=True, timeout=30)


def test_bad_files_are_one_line_at_start(pki, tmp_path) -> None:  # type: ignore[no-untyped-def]
    a, b, ca = pki["a"], pki["b"], pki["ca"]
    port = str(free_port())
    cases = [
        ((a.cert, b.key, ca.path), "does not match"),
        ((a.cert, str(tmp_path / "missing.key"), ca.path), "cannot read"),
        ((ca.path + ".nope", a.key, ca.path), "cannot read"),
        ((a.key, a.key, ca.path), "certificate"),
        ((a.cert, a.key, a.key), "CA"),
    ]
    for (cert, key, cafile), words in cases:
        out = _run_cli("--tls-cert", cert, "--tls-key", key, "--tls-ca", cafile,
                       "-l", f"127.0.0.1:{port},tls")
        assert out.returncode == 1, out
        assert out.stderr.count("\n") == 1 and words in out.stderr, out.stderr
    out = _run_cli("-l", f"127.0.0.1:{port},tls")
    assert out.returncode == 1 and "tls_cert, tls_key, tls_ca" in out.stderr
    config = tmp_path / "bad.toml"
    config.write_text(f'[hub.x]\nlisten = "127.0.0.1:{port},tls"\ntls_cert = "{a.cert}"\n'
                      f'tls_key = "{b.key}"\ntls_ca = "{ca.path}"\n')
    out = _run_cli("--check", str(config))
    assert out.returncode != 0 and "hub.x.tls_cert" in out.stderr and "does not match" \
        in out.stderr, out.stderr


def test_daemon_reload_reads_new_certificates(pki, tmp_path, daemon_process) -> None:  # type: ignore[no-untyped-def]
    """SIGHUP with the same paths but new files: new clients see the new certificate, the
    established session keeps flowing."""
    import shutil
    import signal

    cert, key, cafile = tmp_path / "relay.crt", tmp_path / "relay.key", tmp_path / "peers.pem"
    shutil.copy(pki["a"].cert, cert)
    shutil.copy(pki["a"].key, key)
    shutil.copy(pki["ca"].path, cafile)
    port = free_port()
    daemon = daemon_process(f'[hub.h]\nlisten = "127.0.0.1:{port},tls"\n'
                            f'tls_cert = "relay.crt"\ntls_key = "relay.key"\n'
                            f'tls_ca = "peers.pem"\n')
    wait_bound(port, socket.SOCK_STREAM)
    old = tls_connect(port, pki["ca"], pki["client"])
    assert old.getpeercert()["subject"] == ((("commonName", "a"),),)
    # Rotate to a certificate of the other CA, and trust both CAs for clients.
    shutil.copy(pki["stranger"].cert, cert)
    shutil.copy(pki["stranger"].key, key)
    cafile.write_bytes(Path(pki["ca"].path).read_bytes() + Path(pki["other"].path).read_bytes())
    daemon.signal(signal.SIGHUP)
    daemon.expect_notify("READY=1")
    daemon.wait_log("certificates read again")
    new = tls_connect(port, pki["other"], pki["client"])
    assert new.getpeercert()["subject"] == ((("commonName", "stranger"),),)
    frames = random_frames(20, 60, 1500, seed=51)
    old.sendall(frame_stream(frames))
    assert StreamPeer(new).recv(20) == frames


def test_readme_two_host_recipe(tmp_path, relay_process) -> None:  # type: ignore[no-untyped-def]
    """The README's openssl commands, run as written, make files that two relays accept; the
    relays run with the README's options (loopback standing in for the two hosts)."""
    import re

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    section = readme.split("## Secure links between hosts", 1)[1]
    script = re.search(r"```sh\n(openssl req -x509.*?)```", section, re.S)
    assert script is not None
    subprocess.run(["sh", "-e", "-c", script.group(1)], cwd=tmp_path, check=True,
                   capture_output=True, timeout=60)
    assert (tmp_path / "host1.example.crt").exists() and (tmp_path / "ca.pem").exists()
    link, guests1, guests2 = free_port(), free_port(), free_port()

    def files(host: str) -> list[str]:
        return ["--tls-cert", str(tmp_path / f"{host}.crt"), "--tls-key",
                str(tmp_path / f"{host}.key"), "--tls-ca", str(tmp_path / "ca.pem")]
    relay_process(*files("host1.example"), "--allow", "127.0.0.1/32", "-l",
                  f"127.0.0.1:{guests1}", f"listen:127.0.0.1:{link},tls")
    wait_bound(link, socket.SOCK_STREAM)
    relay_process(*files("host2.example"), "--reconnect", "-l", f"127.0.0.1:{guests2}",
                  f"127.0.0.1:{link},tls,tls-name=host1.example")
    wait_bound(guests2, socket.SOCK_STREAM)
    g1 = StreamPeer.connect((LOOP4, guests1))
    g2 = StreamPeer.connect((LOOP4, guests2))
    frames = random_frames(50, 60, 1500, seed=61)
    probe = make_frame(60, 999)
    deadline = time.monotonic() + 10
    while True:  # until the TLS link is up (a lone guest's probes wait, and come later)
        g1.send([probe])
        try:
            assert g2.recv(1, timeout=0.5) == [probe]
            break
        except AssertionError:
            assert time.monotonic() < deadline, "the README's link did not come up"
    g1.send(frames)
    got: list[bytes] = []
    while len(got) < 50:
        got += [f for f in g2.recv(1, timeout=10) if f != probe]
    assert got == frames
