"""The test's side of the fuzz worker: send a case, get its result, or learn how it died."""

from __future__ import annotations

import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import tempfile
import time
from typing import Any

import fastrelay

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "worker.py")
# The package this test session imports: the worker must run the very same build.
PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(fastrelay.__file__)))


class WorkerDied(AssertionError):
    """The data plane killed its process (abort, segfault): memory was corrupted."""


class Sandbox:
    """One worker process at a time, started on demand and again after it died."""

    def __init__(self, case_timeout: float = 60.0) -> None:
        self.case_timeout = case_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self.stderr: Any = None

    def _start(self) -> subprocess.Popen[bytes]:
        env = dict(os.environ)
        # The debug allocator pads every block and checks the pads when it is freed, so a
        # write past a buffer aborts at once with "bad trailing pad byte", whatever the build.
        env["PYTHONMALLOC"] = "debug"
        env["PYTHONFAULTHANDLER"] = "1"
        env["PYTHONPATH"] = os.pathsep.join(
            [PACKAGE_ROOT] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
        self.stderr = tempfile.TemporaryFile()  # noqa: SIM115 (lives as long as the worker)
        self.proc = subprocess.Popen([sys.executable, WORKER], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.stderr, env=env)
        return self.proc

    def run(self, name: str, case: Any) -> dict[str, Any]:
        """The worker's result for case; WorkerDied or AssertionError if it did not give one."""
        proc = self.proc if self.proc is not None and self.proc.poll() is None else self._start()
        assert proc.stdin is not None and proc.stdout is not None
        data = pickle.dumps((name, case), protocol=pickle.HIGHEST_PROTOCOL)
        try:
            proc.stdin.write(struct.pack(">Q", len(data)) + data)
            proc.stdin.flush()
            (size,) = struct.unpack(">Q", self._read(8))
            status, result = pickle.loads(self._read(size))
        except (EOFError, BrokenPipeError):
            raise self._died(name) from None
        except BaseException:
            # Interrupted (a pytest timeout, ^C): the reply may still come, and would be
            # taken for the next case's. A new worker starts clean.
            self.close()
            raise
        if status != "ok":
            raise AssertionError(f"the worker raised running {name}:\n{result}")
        return result  # type: ignore[no-any-return]

    def _read(self, n: int) -> bytes:
        assert self.proc is not None and self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        out = bytearray()
        deadline = time.monotonic() + self.case_timeout
        while len(out) < n:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([fd], [], [], max(0.0, left))
            if not ready:
                self.close()
                raise AssertionError(f"the worker gave no result within {self.case_timeout:.0f}s "
                                     f"(killed): the relay hangs on this case")
            chunk = os.read(fd, n - len(out))
            if not chunk:
                raise EOFError
            out += chunk
        return bytes(out)

    def _died(self, name: str) -> WorkerDied:
        proc = self.proc
        assert proc is not None
        try:
            status = proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            status = proc.wait(5)
        how = (f"killed by {signal.Signals(-status).name}" if status < 0
               else f"exit status {status}")
        self.stderr.seek(0)
        lines = self.stderr.read().decode(errors="replace").splitlines()
        self.close()
        # The allocator's verdict and the first stack lines are what matter; keep it short.
        tail = "\n".join(lines[:25])
        return WorkerDied(f"the fuzz worker died running {name} ({how}):\n{tail}")

    def close(self) -> None:
        """Stop the worker (by its PID), if one runs."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            assert proc.stdin is not None
            proc.stdin.close()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None and not pipe.closed:
                pipe.close()
        if self.stderr is not None and not self.stderr.closed:
            self.stderr.close()
