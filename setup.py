"""Build the compiled data plane (fastrelay._core) from Cython at install time."""
import os

from Cython.Build import cythonize
from setuptools import Extension, setup

# FASTRELAY_DEBUG=1 keeps assertions and bounds checks in the data plane and builds with -O0 -g.
DEBUG = os.environ.get("FASTRELAY_DEBUG", "") not in ("", "0")

extension = Extension(
    "fastrelay._core",
    ["fastrelay/_core.pyx"],
    extra_compile_args=["-O0", "-g"] if DEBUG else ["-O2"],
    define_macros=[("FASTRELAY_DEBUG", "1" if DEBUG else "0")],
)

setup(
    ext_modules=cythonize(
        [extension],
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
