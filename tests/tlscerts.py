"""Certificates for the TLS tests: a CA, hosts signed by it, a stranger CA, made per test run.

With the `cryptography` package when it is installed, else with the `openssl` command.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import subprocess
from dataclasses import dataclass

try:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    HAVE_CRYPTOGRAPHY = True
except ImportError:  # pragma: no cover (depends on the machine)
    HAVE_CRYPTOGRAPHY = False


@dataclass
class Identity:
    """A certificate and its key on disk."""

    cert: str
    key: str


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _write(path: str, data: bytes) -> str:
    with open(path, "wb") as f:
        f.write(data)
    return path


def LocalCA(where: str, name: str = "test-ca") -> CryptographyCA | OpensslCA:  # noqa: N802
    """A small CA in directory `where` (its certificate at .path); .issue() makes hosts."""
    return CryptographyCA(where, name) if HAVE_CRYPTOGRAPHY else OpensslCA(where, name)


class OpensslCA:
    """The same CA made with the openssl command (as the README's two-host set-up does)."""

    def __init__(self, where: str, name: str) -> None:
        self.where = where
        self.name = name
        self.key_path = os.path.join(where, f"{name}.key")
        self.path = os.path.join(where, f"{name}.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:P-256", "-nodes", "-days", "30", "-subj",
                        f"/CN={name}", "-keyout", self.key_path, "-out", self.path],
                       check=True, capture_output=True)

    def issue(self, name: str, dns: tuple[str, ...] = ("localhost",),
              ips: tuple[str, ...] = ("127.0.0.1", "::1")) -> Identity:
        base = os.path.join(self.where, f"{self.name}-{name}")
        sans = ",".join([f"DNS:{d}" for d in dns] + [f"IP:{a}" for a in ips])
        subprocess.run(["openssl", "req", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:P-256", "-nodes", "-subj", f"/CN={name}",
                        "-keyout", base + ".key", "-out", base + ".csr"],
                       check=True, capture_output=True)
        ext = base + ".ext"
        with open(ext, "w") as f:
            f.write(f"subjectAltName={sans}\n")
        subprocess.run(["openssl", "x509", "-req", "-in", base + ".csr", "-CA", self.path,
                        "-CAkey", self.key_path, "-CAcreateserial", "-days", "30",
                        "-extfile", ext, "-out", base + ".crt"], check=True, capture_output=True)
        return Identity(base + ".crt", base + ".key")


class CryptographyCA:
    """A small CA (EC P-256) in directory `where`: issue() makes host certificates."""

    def __init__(self, where: str, name: str) -> None:
        self.where = where
        self.name = name
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (x509.CertificateBuilder().subject_name(_name(name)).issuer_name(_name(name))
                     .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(now - datetime.timedelta(days=1))
                     .not_valid_after(now + datetime.timedelta(days=30))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
                     .sign(self.key, hashes.SHA256()))
        self.path = _write(os.path.join(where, f"{name}.pem"),
                           self.cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, name: str, dns: tuple[str, ...] = ("localhost",),
              ips: tuple[str, ...] = ("127.0.0.1", "::1")) -> Identity:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
        sans += [x509.IPAddress(ipaddress.ip_address(a)) for a in ips]
        cert = (x509.CertificateBuilder().subject_name(_name(name))
                .issuer_name(self.cert.subject).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(days=1))
                .not_valid_after(now + datetime.timedelta(days=30))
                .add_extension(x509.SubjectAlternativeName(sans), False)
                .sign(self.key, hashes.SHA256()))
        base = os.path.join(self.where, f"{self.name}-{name}")
        return Identity(
            _write(base + ".crt", cert.public_bytes(serialization.Encoding.PEM)),
            _write(base + ".key", key.private_bytes(serialization.Encoding.PEM,
                                                    serialization.PrivateFormat.PKCS8,
                                                    serialization.NoEncryption())))
