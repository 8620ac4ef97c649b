"""Build the compiled data plane (fastrelay._core) from Cython at install time."""
import os

from Cython.Build import cythonize
from setuptools import Extension, setup

# FASTRELAY_DEBUG=1 keeps assertions and bounds checks in the data plane and builds with -O0 -g.
DEBUG = os.environ.get("FASTRELAY_DEBUG", "") not in ("", "0")
MODE = "debug" if DEBUG else "release"

# A debug and a release build must never share generated code: each mode cythonizes into a
# folder of its own (the directives differ, but cythonize only compares timestamps), and a
# stamp naming the mode of the last build is rewritten when the mode changes, so that it is
# newer than the built module and forces a rebuild (build_ext also only compares timestamps).
BUILD_DIR = os.path.join("build", "cython", MODE)
MODE_STAMP = os.path.join("build", "fastrelay-build-mode")


def _stamp_mode() -> None:
    try:
        with open(MODE_STAMP) as f:
            if f.read() == MODE:
                return
    except OSError:
        pass
    os.makedirs(os.path.dirname(MODE_STAMP), exist_ok=True)
    with open(MODE_STAMP, "w") as f:
        f.write(MODE)


_stamp_mode()

extension = Extension(
    "fastrelay._core",
    ["fastrelay/_core.pyx"],
    extra_compile_args=["-O0", "-g"] if DEBUG else ["-O2"],
    define_macros=[("FASTRELAY_DEBUG", "1" if DEBUG else "0")],
    depends=[MODE_STAMP],
    # TLS links (dataplane/tls.pyx) call OpenSSL directly: Debian's libssl-dev.
    libraries=["ssl", "crypto"],
)

setup(
    # The manual page (written by `python -m fastrelay.manpage`, committed so that a clean
    # checkout builds without running fastrelay): `man fastrelay` once installed.
    data_files=[("share/man/man1", ["fastrelay.1"])],
    ext_modules=cythonize(
        [extension],
        build_dir=BUILD_DIR,
        compiler_directives={
            "language_level": "3",
            "boundscheck": DEBUG,
            "wraparound": False,
            "initializedcheck": DEBUG,
            "cdivision": True,
            "embedsignature": True,
        },
        compile_time_env={"FASTRELAY_DEBUG": DEBUG},
    ),
)
