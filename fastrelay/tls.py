"""TLS of relay links: the certificate files, their OpenSSL contexts, the handshake on asyncio.

Policy (README "Secure links between hosts"): mutual authentication with one CA file. A
listener requires a client certificate that chains to the CA file; a client requires the
listener's certificate to chain to it and to name the host it connected to (a DNS name,
or an IP address in the certificate's IP SANs), or the name given with `,tls-name=NAME`
(`tls_name` in the config). The CA file may be a real CA or a bundle of the peers'
self-signed certificates (pinning). Listeners do not check client names: every holder of
a certificate the CA file vouches for may join; restrict addresses with `--allow`.

The handshake runs here, in the control plane, under a timeout; the finished session is
handed to the data plane's TLSPort, which does all the record work in C.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field

from ._core import TLSContext, TLSError, TLSSession
from .errors import RelayError

__all__ = ["TLSFiles", "TLSSetupError", "TLSError", "FAILURE_KINDS", "handshake",
           "parse_allow", "allowed"]

# Why handshakes fail, as counted (fastrelay_tls_handshake_failures_total{reason}).
FAILURE_KINDS = ("no_certificate", "bad_certificate", "refused_by_peer", "protocol", "closed",
                 "timeout")


class TLSSetupError(RelayError):
    """A certificate, key or CA file that cannot be used: one line, exit status 1."""


@dataclass
class TLSFiles:
    """The files of one link's TLS, and the contexts made from them (re-read by reload())."""

    cert: str | None = None
    key: str | None = None
    ca: str | None = None
    server: TLSContext | None = field(default=None, compare=False, repr=False)
    client: TLSContext | None = field(default=None, compare=False, repr=False)

    @property
    def given(self) -> bool:
        return bool(self.cert or self.key or self.ca)

    def missing(self) -> list[str]:
        """The options that are not set (a TLS target needs all three)."""
        return [name for name, value in (("tls_cert", self.cert), ("tls_key", self.key),
                                         ("tls_ca", self.ca)) if not value]

    def load(self) -> None:
        """Read the files into fresh contexts (both sides); TLSSetupError with one line.

        The old contexts stay in use until the new ones are complete: a reload that fails
        changes nothing.
        """
        missing = self.missing()
        if missing:
            raise TLSSetupError(f"TLS needs {', '.join(missing)} (--tls-cert, --tls-key, "
                                f"--tls-ca)")
        assert self.cert and self.key and self.ca
        for what, path in (("certificate", self.cert), ("key", self.key), ("CA", self.ca)):
            try:
                with open(path, "rb"):
                    pass
            except OSError as exc:
                raise TLSSetupError(f"{what} {path}: cannot read: {exc.strerror or exc}") \
                    from None
        try:
            server = TLSContext(self.cert, self.key, self.ca, True)
            client = TLSContext(self.cert, self.key, self.ca, False)
        except TLSError as exc:
            raise TLSSetupError(str(exc)) from None
        self.server, self.client = server, client

    def context(self, server: bool) -> TLSContext:
        if self.server is None or self.client is None:
            self.load()
        context = self.server if server else self.client
        assert context is not None
        return context


async def handshake(session: TLSSession, timeout: float) -> None:
    """Drive session's handshake on the event loop; TLSError (kind "timeout" included)."""
    loop = asyncio.get_running_loop()
    fd = session.fd

    async def steps() -> None:
        while True:
            state = session.handshake()
            if state == 0:
                return
            ready: asyncio.Future[None] = loop.create_future()

            def wake(ready: asyncio.Future[None] = ready) -> None:
                if not ready.done():
                    ready.set_result(None)
            if state == 1:
                loop.add_reader(fd, wake)
            else:
                loop.add_writer(fd, wake)
            try:
                await ready
            finally:
                if state == 1:
                    loop.remove_reader(fd)
                else:
                    loop.remove_writer(fd)

    try:
        await asyncio.wait_for(steps(), timeout)
    except TimeoutError:
        raise TLSError(f"handshake failed: not done within {timeout:g}s", "timeout") from None


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_allow(values: Sequence[str]) -> tuple[Network, ...]:
    """CIDR texts ("10.1.0.0/16", "::1", "192.0.2.7") -> networks; ValueError naming one."""
    out = []
    for text in values:
        if "%" in text:
            # allowed() sees a client's address, not the link it came in on: a scoped
            # entry would admit that address from every link.
            raise ValueError(f"{text!r}: a link (%...) cannot be allowed, only addresses "
                             f"(\"fe80::/64\" is fe80:: from any link)")
        try:
            out.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            raise ValueError(f"{text!r} is not an address or CIDR network "
                             f"(\"10.1.0.0/16\", \"::1\")") from None
    return tuple(out)


def allowed(networks: Sequence[Network], host: str) -> bool:
    """Whether host (an accepted peer's address) is in one of networks; IPv4 clients of a
    dual-stack socket (::ffff:a.b.c.d) count as IPv4."""
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in net for net in networks)
