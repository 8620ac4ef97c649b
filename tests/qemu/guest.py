"""Build (and cache) the kernel + busybox initramfs that the qemu end-to-end tests boot.

Run ``python -m tests.qemu.guest build [--flavour cloud|amd64]`` to build ahead of time;
the pytest fixtures call :func:`ensure_image` which does the same on first use.

Why it is built this way (see shared/reference/QEMU-GUESTS.md):

- The kernel comes from Debian's own package, unpacked with ``dpkg -x`` into a temporary
  folder: it is never installed on the host, and needs nothing but the package registry.
- The ``cloud`` flavour boots fastest but has no ``e1000.ko``; the ``amd64`` flavour has
  it. Kernel and modules always come from the same package, or insmod refuses them.
- The package ships no ``modules.dep`` and the host has no depmod, so the builder writes
  the load order into ``/etc/fr-modules`` and checks it against each module's
  ``depends=`` field.
- Images are cached under a directory keyed by package versions and a hash of the
  ``/init`` script and this file, so a change to either rebuilds.
"""

from __future__ import annotations

import argparse
import dataclasses
import fcntl
import gzip
import hashlib
import io
import lzma
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
INIT_SCRIPT = HERE / "init.sh"

# Debian packages the tests need on the host.  busybox-static, not busybox: the
# initramfs has no libc for a dynamic busybox.
HOST_PACKAGES = {
    "qemu-system-x86": "/usr/bin/qemu-system-x86_64",
    "busybox-static": None,  # checked with dpkg: /bin/busybox may be the dynamic one
    "cpio": "/usr/bin/cpio",
    "iperf3": "/usr/bin/iperf3",
}

# Meta package per flavour; it depends on the versioned kernel package.
FLAVOURS = {
    "cloud": "linux-image-cloud-amd64",
    "amd64": "linux-image-amd64",
}

# Load order, dependencies first (QEMU-GUESTS.md).  e1000 only where the flavour has it.
VIRTIO_MODULES = [
    "virtio_ring",
    "virtio",
    "virtio_pci_modern_dev",
    "virtio_pci_legacy_dev",
    "virtio_pci",
    "failover",
    "net_failover",
    "virtio_net",
]
OPTIONAL_MODULES = ["e1000"]


class BuildError(RuntimeError):
    """The host cannot provide what a guest image needs."""


@dataclasses.dataclass(frozen=True)
class GuestImage:
    """A built guest: boot it with ``-kernel kernel -initrd initrd``."""

    flavour: str
    kernel: Path
    initrd: Path
    kernel_release: str
    modules: tuple[str, ...]
    has_iperf3: bool

    def supports(self, nic: str) -> bool:
        """Whether this image has the driver for a qemu NIC model."""
        if nic.startswith("virtio"):
            return "virtio_net" in self.modules
        return nic in self.modules


def cache_root() -> Path:
    """Where built images live; outside the repo by default so clones share it."""
    env = os.environ.get("FASTRELAY_QEMU_CACHE")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "fastrelay-qemu"


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, check=True, text=True, capture_output=True, **kw)


def _dpkg_installed(pkg: str) -> bool:
    r = subprocess.run(
        ["dpkg-query", "-W", "-f=${Status}", pkg], text=True, capture_output=True, check=False
    )
    return r.returncode == 0 and "install ok installed" in r.stdout


def _apt_update() -> None:
    try:
        _run(["apt-get", "update"])
    except subprocess.CalledProcessError as e:
        raise BuildError(f"apt-get update failed: {e.stderr.strip()[-500:]}") from e


def ensure_host_packages(log=print) -> None:
    """Install the host packages with apt-get when any is missing (CI runs as root)."""
    missing = []
    for pkg, path in HOST_PACKAGES.items():
        present = _dpkg_installed(pkg) if path is None else os.path.exists(path)
        if not present:
            missing.append(pkg)
    if not missing:
        return
    if os.geteuid() != 0:
        raise BuildError(f"missing host packages {missing} and not root to install them")
    log(f"installing {' '.join(missing)}")
    cmd = ["apt-get", "install", "-y", "--no-install-recommends", *missing]
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    r = subprocess.run(cmd, text=True, capture_output=True, env=env, check=False)
    if r.returncode != 0:
        # Usually an empty or stale package list on a fresh machine.
        _apt_update()
        r = subprocess.run(cmd, text=True, capture_output=True, env=env, check=False)
    if r.returncode != 0:
        raise BuildError(f"apt-get install {missing} failed: {r.stderr.strip()[-500:]}")


def _apt_depends(meta: str) -> str:
    """The versioned kernel package behind a meta package, e.g. linux-image-6.1.0-56-cloud-amd64."""
    for attempt in range(2):
        r = subprocess.run(
            ["apt-cache", "depends", meta], text=True, capture_output=True, check=False
        )
        m = re.search(r"Depends:\s*(linux-image-\S+)", r.stdout)
        if r.returncode == 0 and m:
            return m.group(1)
        if attempt == 0:
            _apt_update()
    raise BuildError(f"cannot resolve the kernel package behind {meta}: {r.stderr.strip()}")


def _apt_version(pkg: str) -> str:
    r = _run(["apt-cache", "show", "--no-all-versions", pkg])
    m = re.search(r"^Version:\s*(\S+)", r.stdout, re.MULTILINE)
    if not m:
        raise BuildError(f"no version for {pkg}")
    return m.group(1)


def _installed_version(pkg: str) -> str:
    return _run(["dpkg-query", "-W", "-f=${Version}", pkg]).stdout.strip()


def _module_depends(data: bytes) -> list[str]:
    """The ``depends=`` field of a module's .modinfo section (no modinfo on the host)."""
    m = re.search(rb"depends=([A-Za-z0-9_,-]*)\0", data)
    if not m or not m.group(1):
        return []
    return [d.replace("-", "_") for d in m.group(1).decode().split(",")]


def _read_module(path: Path) -> bytes:
    """Module bytes, decompressed: busybox insmod wants a plain .ko."""
    raw = path.read_bytes()
    name = path.name
    if name.endswith(".xz"):
        return lzma.decompress(raw)
    if name.endswith(".gz"):
        return gzip.decompress(raw)
    if name.endswith(".zst"):
        return _run_bytes(["zstd", "-d", "-c"], raw)
    return raw


def _run_bytes(cmd: list[str], data: bytes) -> bytes:
    try:
        return subprocess.run(cmd, input=data, capture_output=True, check=True).stdout
    except FileNotFoundError as e:
        raise BuildError(f"{cmd[0]} is needed to decompress kernel modules") from e


def _find_modules(moddir: Path) -> dict[str, Path]:
    """Map module name (dashes as underscores) to its file for everything the package ships."""
    found: dict[str, Path] = {}
    for p in moddir.rglob("*.ko*"):
        name = re.sub(r"\.ko(\.(xz|gz|zst))?$", "", p.name).replace("-", "_")
        found[name] = p
    return found


def _iperf3_files() -> list[Path]:
    """iperf3 and every shared library it links, found with ldd."""
    exe = Path(shutil.which("iperf3") or "/usr/bin/iperf3")
    if not exe.exists():
        return []
    out = _run(["ldd", str(exe)]).stdout
    files = [exe]
    for line in out.splitlines():
        m = re.search(r"(/\S+)\s+\(0x", line)
        if m:
            files.append(Path(m.group(1)))
    return files


def _cpio_newc(entries: list[tuple[str, int, bytes]]) -> bytes:
    """A gzip'd newc cpio archive: the format the kernel unpacks as initramfs.

    Written here rather than with the cpio tool so that the archive does not depend on
    the staging directory's owners and times (builds are reproducible).
    """
    buf = io.BytesIO()

    def put(name: str, mode: int, data: bytes, ino: int) -> None:
        nb = name.encode() + b"\0"
        hdr = "070701" + "".join(
            f"{v:08X}" for v in (ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(nb), 0)
        )
        buf.write(hdr.encode() + nb)
        buf.write(b"\0" * (-(110 + len(nb)) % 4))
        buf.write(data)
        buf.write(b"\0" * (-len(data) % 4))

    for ino, (name, mode, data) in enumerate(entries, start=1):
        put(name, mode, data, ino)
    put("TRAILER!!!", 0, b"", 0)
    return gzip.compress(buf.getvalue(), compresslevel=6, mtime=0)


def _initramfs_entries(
    modules: list[tuple[str, bytes]], with_iperf3: bool
) -> list[tuple[str, int, bytes]]:
    DIR, REG, LNK = stat.S_IFDIR | 0o755, stat.S_IFREG, stat.S_IFLNK | 0o777
    entries: list[tuple[str, int, bytes]] = []
    dirs: set[str] = set()

    def mkdirs(path: str) -> None:
        parts = path.split("/")
        for i in range(1, len(parts)):
            d = "/".join(parts[:i])
            if d and d not in dirs:
                dirs.add(d)
                entries.append((d, DIR, b""))

    def add(path: str, mode: int, data: bytes) -> None:
        mkdirs(path)
        entries.append((path, mode, data))

    for d in ("bin", "sbin", "usr/bin", "usr/sbin", "proc", "sys", "dev", "tmp", "etc"):
        mkdirs(d + "/")
    add("init", REG | 0o755, INIT_SCRIPT.read_bytes())
    add("bin/busybox", REG | 0o755, Path("/bin/busybox").read_bytes())
    add("bin/sh", LNK, b"busybox")
    for name, data in modules:
        add(f"lib/modules/{name}.ko", REG | 0o644, data)
    add("etc/fr-modules", REG | 0o644, "".join(f"{n}\n" for n, _ in modules).encode())
    if with_iperf3:
        for f in _iperf3_files():
            real = f.resolve()
            add(str(f).lstrip("/"), REG | 0o755, real.read_bytes())
    return entries


def _cache_key(flavour: str, kpkg: str, kver: str) -> str:
    h = hashlib.sha256()
    h.update(INIT_SCRIPT.read_bytes())
    h.update(Path(__file__).read_bytes())
    for pkg in ("busybox-static", "iperf3"):
        h.update(f"{pkg}={_installed_version(pkg)};".encode())
    return f"{flavour}-{kpkg.removeprefix('linux-image-')}-{kver}-{h.hexdigest()[:12]}"


def _build(flavour: str, kpkg: str, dest: Path, log) -> None:
    with tempfile.TemporaryDirectory(prefix="fastrelay-kernel-") as tmp:
        tmpd = Path(tmp)
        log(f"downloading {kpkg}")
        try:
            _run(["apt-get", "download", kpkg], cwd=tmpd)
        except subprocess.CalledProcessError as e:
            raise BuildError(f"apt-get download {kpkg} failed: {e.stderr.strip()[-500:]}") from e
        (deb,) = tmpd.glob("*.deb")
        root = tmpd / "root"
        _run(["dpkg-deb", "-x", str(deb), str(root)])
        (vmlinuz,) = (root / "boot").glob("vmlinuz-*")
        release = vmlinuz.name.removeprefix("vmlinuz-")
        moddir = root / "lib" / "modules" / release
        available = _find_modules(moddir)
        builtin = set()
        bfile = moddir / "modules.builtin"
        if bfile.exists():
            builtin = {
                Path(line.strip()).name.removesuffix(".ko").replace("-", "_")
                for line in bfile.read_text().splitlines()
            }

        modules: list[tuple[str, bytes]] = []
        loaded = set(builtin)
        for name in VIRTIO_MODULES + OPTIONAL_MODULES:
            if name in builtin:
                continue
            if name not in available:
                if name in OPTIONAL_MODULES:
                    continue
                raise BuildError(f"{kpkg} has no module {name}")
            data = _read_module(available[name])
            unmet = [d for d in _module_depends(data) if d not in loaded]
            if unmet:
                raise BuildError(f"module {name} needs {unmet} loaded first")
            modules.append((name, data))
            loaded.add(name)

        with_iperf3 = bool(_iperf3_files())
        initrd = _cpio_newc(_initramfs_entries(modules, with_iperf3))
        dest.mkdir(parents=True)
        shutil.copyfile(vmlinuz, dest / "vmlinuz")
        (dest / "initramfs.gz").write_bytes(initrd)
        (dest / "info").write_text(
            f"flavour={flavour}\nrelease={release}\n"
            f"modules={','.join(n for n, _ in modules)}\niperf3={int(with_iperf3)}\n"
        )


def _load(flavour: str, d: Path) -> GuestImage:
    info = dict(line.split("=", 1) for line in (d / "info").read_text().splitlines() if "=" in line)
    return GuestImage(
        flavour=flavour,
        kernel=d / "vmlinuz",
        initrd=d / "initramfs.gz",
        kernel_release=info["release"],
        modules=tuple(m for m in info["modules"].split(",") if m),
        has_iperf3=info.get("iperf3") == "1",
    )


def ensure_image(flavour: str = "cloud", log=print) -> GuestImage:
    """Return a built guest image for a kernel flavour, building it on first use."""
    if flavour not in FLAVOURS:
        raise ValueError(f"unknown flavour {flavour!r}; choose from {sorted(FLAVOURS)}")
    ensure_host_packages(log)
    kpkg = _apt_depends(FLAVOURS[flavour])
    kver = _apt_version(kpkg)
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    dest = root / _cache_key(flavour, kpkg, kver)
    # Two pytest runs may build at once: one builds, the other waits and reuses.
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (dest / "info").exists():
            tmp_dest = root / f".build-{os.getpid()}"
            shutil.rmtree(tmp_dest, ignore_errors=True)
            _build(flavour, kpkg, tmp_dest, log)
            shutil.rmtree(dest, ignore_errors=True)
            tmp_dest.rename(dest)
            log(f"built {dest}")
            # Older builds of this flavour (other versions or init scripts) are dead weight.
            for old in root.glob(f"{flavour}-*"):
                if old != dest:
                    shutil.rmtree(old, ignore_errors=True)
    return _load(flavour, dest)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m tests.qemu.guest", description=__doc__.split("\n")[0]
    )
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build (or find in the cache) a guest image")
    b.add_argument("--flavour", choices=sorted(FLAVOURS), action="append")
    sub.add_parser("where", help="print the cache directory")
    args = ap.parse_args(argv)
    if args.cmd == "where":
        print(cache_root())
        return 0
    for flavour in args.flavour or ["cloud"]:
        try:
            img = ensure_image(flavour, log=lambda m: print(m, file=sys.stderr))
        except BuildError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        print(f"{flavour}: kernel={img.kernel} initrd={img.initrd} modules={','.join(img.modules)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
