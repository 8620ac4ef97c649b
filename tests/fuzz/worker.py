"""The fuzz worker: a child process that runs cases against the data plane, one at a time.

Run by tests/fuzz/sandbox.py as `python worker.py` with PYTHONMALLOC=debug. Requests and
replies are pickles, each behind an 8-byte length, on stdin and stdout; anything printed goes
to stderr. A case that corrupts memory kills this process, not the test session: the test
sees the death and the allocator's message, and hypothesis shrinks the case like any other.
"""

from __future__ import annotations

import os
import pickle
import struct
import sys
import traceback


def read_exact(fd: int, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        chunk = os.read(fd, n - len(out))
        if not chunk:
            raise EOFError
        out += chunk
    return bytes(out)


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def main() -> None:
    # Keep fd 1 for replies only: print() and warnings go to stderr.
    reply_fd = os.dup(1)
    os.dup2(2, 1)
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from fuzz.scenarios import CASES

    while True:
        try:
            (size,) = struct.unpack(">Q", read_exact(0, 8))
        except EOFError:
            return
        name, case = pickle.loads(read_exact(0, size))
        try:
            reply = ("ok", CASES[name](case))
        except Exception:  # noqa: BLE001 (any error is the case's failure, told to the test)
            reply = ("error", traceback.format_exc())
        data = pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL)
        write_all(reply_fd, struct.pack(">Q", len(data)) + data)


if __name__ == "__main__":
    main()
