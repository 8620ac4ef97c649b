"""Capture: a relay's frames as pcapng (for Wireshark) to a file, a FIFO, stdout or a client.

Theory of operation. The data plane copies the frames of the ports a `Capture` selects
into a bounded buffer of whole pcapng Enhanced Packet Blocks, once per batch
(fastrelay/dataplane/capture.pyx). Everything else happens here, on the event loop:

* A `CaptureSession` is one capture: its Capture buffer, the pcapng interfaces it has
  described (an Interface Description Block per port, named as in `fastrelay stats`) and
  an output. It follows the ports of the relay it is bound to (Relay.attach and
  Relay._port_closed tell it) and outlives that relay: a daemon link that restarts binds
  the same session to its next relay, so one file goes on across restarts.
* Every block of the stream goes through the buffer: the section header and interface
  descriptions are append()ed by the session, in order with the frames, and a port is
  selected only once its description is in. So the stream is a sequence of whole blocks,
  and a port that attaches while the buffer is full waits for the next take().
* The output takes the buffer's bytes with take() when it can: after a hub poll that
  filled a quarter of the buffer, every CAPTURE_FLUSH_INTERVAL, and when it can take more
  again. Pipes and sockets are written non-blocking from the loop; a write that takes part
  of a block keeps the rest and writes it first, and nothing more is taken meanwhile. A
  regular file, which no descriptor flag keeps from blocking, is written by a thread of
  its own, with a bounded queue of chunks. Whenever the output is behind, the buffer
  fills, and the data plane drops and counts the frames that find no room: forwarding
  never waits for a capture.
* Outputs: `FileOutput` (a regular file, rotated by size and count and reopened on
  SIGHUP; a FIFO, opened whenever it has a reader; stdout) and `SocketOutput` (a client
  of the control socket: `fastrelay capture`). An output that stops taking bytes (a full
  disk, a reader that left) ends the section; a FIFO starts a new one with its next
  reader, a file with the next SIGHUP, and a client's capture ends with the client.
* Interfaces are numbered per section. A port whose name an earlier, closed port had
  takes over its interface (a client that reconnects stays one interface in Wireshark).
  When closed ports make up most of the table, a new section starts in the stream with
  only the live ones, so a long capture of a busy listener stays bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import re
import select
import socket
import stat
import struct
from collections.abc import Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from . import __version__, defaults
from ._core import Capture, Port

if TYPE_CHECKING:
    from .relay import Relay

log = logging.getLogger("fastrelay")

__all__ = ["BlockSplitter", "CaptureOptions", "CaptureSession", "FileOutput", "SocketOutput",
           "interface_description", "section_header"]

# pcapng (IETF draft-ietf-opsawg-pcapng): block types, byte-order magic, link type, options.
# Blocks are written in host byte order, as the data plane writes its packet blocks;
# the byte-order magic tells readers which one that is.
_SHB = 0x0A0D0D0A
_IDB = 0x00000001
_EPB = 0x00000006
_BYTE_ORDER_MAGIC = 0x1A2B3C4D
_LINKTYPE_ETHERNET = 1
_OPT_END = 0
_SHB_USERAPPL = 4
_IF_NAME = 2
_IF_DESCRIPTION = 3
_IF_TSRESOL = 9
_TSRESOL_NS = 9            # timestamps in 10^-9 s: the data plane stamps in nanoseconds
_HEAD = struct.Struct("=II")   # block type, total length


def _options(options: list[tuple[int, bytes]]) -> bytes:
    out = bytearray()
    for code, value in options:
        value = value[:0xFFFF]
        out += struct.pack("=HH", code, len(value)) + value + bytes(-len(value) % 4)
    return bytes(out + struct.pack("=HH", _OPT_END, 0))


def _block(kind: int, body: bytes) -> bytes:
    """A whole block: type, total length, body (a multiple of 4 bytes), total length."""
    total = 12 + len(body)
    return _HEAD.pack(kind, total) + body + struct.pack("=I", total)


def section_header() -> bytes:
    """A Section Header Block (version 1.0, length unknown), naming fastrelay as the writer."""
    return _block(_SHB, struct.pack("=IHHq", _BYTE_ORDER_MAGIC, 1, 0, -1)
                  + _options([(_SHB_USERAPPL, f"fastrelay {__version__}".encode())]))


def interface_description(name: str, description: str, snaplen: int) -> bytes:
    """An Interface Description Block: Ethernet, if_name, if_description, if_tsresol 9."""
    return _block(_IDB, struct.pack("=HHI", _LINKTYPE_ETHERNET, 0, snaplen)
                  + _options([(_IF_NAME, name.encode()), (_IF_DESCRIPTION, description.encode()),
                              (_IF_TSRESOL, bytes([_TSRESOL_NS]))]))


def _block_end(data: memoryview, start: int) -> int:
    """Where the block that begins at start ends."""
    return start + int(_HEAD.unpack_from(data, start)[1])


def _blocks_within(data: memoryview, start: int, room: int) -> int:
    """The end of the longest run of whole blocks from start that fits in room bytes."""
    end = start
    while end < len(data):
        nxt = _block_end(data, end)
        if nxt - start > room:
            break
        end = nxt
    return end


def _packets(data: memoryview) -> int:
    """How many packet blocks data (whole blocks from a block boundary) holds."""
    count = pos = 0
    while pos + 8 <= len(data):
        kind, size = _HEAD.unpack_from(data, pos)
        count += kind == _EPB
        pos += max(int(size), 12)
    return count


class BlockSplitter:
    """Cuts a pcapng byte stream at block boundaries, so a reader keeps only whole blocks.

    feed_data(chunk) returns the bytes of every block completed so far; a block's start
    waits for its rest. So `fastrelay capture -w FILE` leaves a valid file however it is
    stopped. The byte order is each section header's own.
    """

    def __init__(self) -> None:
        self.pending = bytearray()
        self._order = "="

    def feed_data(self, data: bytes) -> bytes:
        self.pending += data
        buf = self.pending
        end = 0
        while len(buf) - end >= 12:
            if buf[end:end + 4] == b"\n\r\r\n":  # a section header: its byte-order magic
                magic = struct.unpack_from("<I", buf, end + 8)[0]
                self._order = "<" if magic == _BYTE_ORDER_MAGIC else ">"
            size = int(struct.unpack_from(self._order + "I", buf, end + 4)[0])
            if size < 12 or size % 4:
                raise ValueError(f"not a pcapng stream: block length {size}")
            if len(buf) - end < size:
                break
            end += size
        out = bytes(buf[:end])
        del buf[:end]
        return out


def _header_at(sections: list[tuple[int, list[tuple[int, bytes]]]], offset: int) -> bytes:
    """The header a file beginning at stream offset needs: the section header and the
    descriptions of its section (start, [(offset, block)]) written before offset."""
    found = None
    for start, blocks in sections:
        if start > offset:
            break
        found = (start, blocks)
    if found is None or found[0] == offset:
        return b""  # a section starts right there: the stream has its header
    return section_header() + b"".join(block for at, block in found[1] if at < offset)


@dataclass(frozen=True)
class CaptureOptions:
    """What `--pcap FILE` and the pcap keys of a link or hub ask for."""

    path: str                                # a file, a FIFO, or "-" (stdout)
    snaplen: int = defaults.CAPTURE_SNAPLEN  # bytes kept of each frame
    size: int | None = None                  # rotate before a file grows past this many bytes
    count: int | None = None                 # files kept: FILE and the newest FILE.N


# -- outputs ----------------------------------------------------------------------------------

class Output:
    """Where a session's bytes go: a non-blocking descriptor written whole blocks.

    send() writes what the descriptor takes now. When it takes part of a block, the rest is
    kept and `blocked` is true until resume() (called when the descriptor is writable, and
    by the session's tick where it cannot be watched) has written it; then on_ready() is
    called. open() is True when the output is open, False when it cannot be yet (a FIFO
    nobody reads) and raises OSError when it cannot be at all.
    """

    what = "capture"        # names the output in log lines and stats

    def __init__(self) -> None:
        self.fd = -1
        self.rest: memoryview | None = None
        self.on_ready: Callable[[], None] | None = None     # the rest is out
        self.on_error: Callable[[OSError], None] | None = None  # a write failed later
        self.lost_packets = 0  # of writes that failed after write() returned
        self._watched = -1  # the descriptor watched for writability, if any

    @property
    def blocked(self) -> bool:
        return self.rest is not None

    @property
    def drained(self) -> bool:
        """Everything handed to write() is out (in the kernel's hands)."""
        return self.rest is None

    @property
    def reopens(self) -> bool:
        """True when, after its reader left, the output is worth opening again (a FIFO)."""
        return False

    def open(self) -> bool:
        raise NotImplementedError

    def gone(self) -> bool:
        """True when the reader has left (asked on each tick: traffic may be idle)."""
        return False

    def write(self, data: bytes, offset: int, header_at: Callable[[int], bytes]) -> None:
        """Write data, the stream's bytes from offset on (a file may rotate in between and
        begin with header_at(position)); OSError when the output failed."""
        self.send(memoryview(data))

    def send(self, data: memoryview) -> None:
        if self.rest is not None:
            self.rest = memoryview(bytes(self.rest) + bytes(data))
            return
        written = self._write(data)
        if written < len(data):
            self.rest = data[written:]
            self._watch()

    def _write(self, data: memoryview) -> int:
        """Write what the descriptor takes now; the number of bytes written."""
        done = 0
        while done < len(data):
            try:
                n = os.write(self.fd, data[done:])
            except InterruptedError:
                continue
            except BlockingIOError:
                break
            if n <= 0:
                break
            done += n
        return done

    def resume(self) -> None:
        """Write the kept rest; on_ready() when it is all out."""
        if self.rest is None or self.fd < 0:
            return
        try:
            written = self._write(self.rest)
        except OSError as exc:
            self.rest = None
            self._unwatch()
            if self.on_error is not None:
                self.on_error(exc)
            return
        self.rest = self.rest[written:] if written < len(self.rest) else None
        if self.rest is None:
            self._unwatch()
            if self.on_ready is not None:
                self.on_ready()

    def _watch(self) -> None:
        if self._watched >= 0 or self.fd < 0:
            return
        try:
            asyncio.get_running_loop().add_writer(self.fd, self.resume)
            self._watched = self.fd
        except (OSError, ValueError, RuntimeError):
            pass  # not pollable: the session's tick calls resume()

    def _unwatch(self) -> None:
        if self._watched >= 0:
            with contextlib.suppress(RuntimeError):  # the loop is closed already
                asyncio.get_running_loop().remove_writer(self._watched)
            self._watched = -1

    def close(self) -> None:
        """Close the descriptor; a rest not written is dropped."""
        self._unwatch()
        self.rest = None
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)

    def shutdown(self) -> None:
        """close(), for good: the session has ended."""
        self.close()


class _File:
    """A regular capture file as its writer thread sees it (one per open: a reopened file
    is another _File, so a write still queued for the old one cannot touch the new one)."""

    __slots__ = ("failed", "fd", "header_len", "written")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.written = os.fstat(fd).st_size  # bytes in the file (appended to: all of them)
        self.header_len = 0                  # of those, the header a rotated file began with
        self.failed = False                  # a write failed: the chunks after it are not
                                             # written (the file ends with whole blocks)


class FileOutput(Output):
    """A pcapng file, a FIFO or stdout ("-").

    A regular file is started afresh (truncate) or appended to (a new section: the daemon
    never destroys an earlier capture); with `size` it is rotated before it would grow
    past size bytes: FILE is renamed FILE.N (N one more than the highest there is) and a
    new FILE begins with the section header and interface descriptions; with `count` the
    oldest FILE.N are removed so that count files remain.

    A regular file cannot be written without blocking (a slow disk, or fresh pages of
    tmpfs, may take milliseconds), so its writes, renames and removals run on a thread of
    its own, in order. The loop hands chunks over and goes on; up to CAPTURE_WRITE_QUEUE
    bytes may wait for the thread (which gets the GIL only between the loop's polls, so
    chunks must queue rather than fill the capture buffer meanwhile), and the output is
    `blocked` while that queue is full. A write that fails cuts the file back to whole
    blocks, and the chunks queued after it are not written (they are counted as lost).

    A FIFO is opened without blocking whenever it has a reader (until then, and after its
    reader leaves, nothing is copied). Neither a FIFO nor stdout is rotated.
    """

    def __init__(self, path: str, *, size: int | None = None, count: int | None = None,
                 truncate: bool = True) -> None:
        super().__init__()
        self.path = path
        self.size = size
        self.count = count
        self.truncate = truncate
        self.kind = "stdout" if path == "-" else "file"
        self.what = "capture to stdout" if path == "-" else f"capture file {path}"
        self._file: _File | None = None
        self._worker: ThreadPoolExecutor | None = None  # serialises a file's writes
        self._queued: dict[int, bytes] = {}  # chunks handed to the thread, not yet written
        self._queued_bytes = 0
        self._generation = 0      # bumped by close(): a late answer of the thread is stale
        self._rotated: list[int] | None = None  # numbers N of FILE.N, oldest first
        self._reopen_at: list[int] = []  # stream offsets where the file is to be reopened
        self._stdout_blocking: bool | None = None

    @property
    def blocked(self) -> bool:
        return self._queued_bytes >= defaults.CAPTURE_WRITE_QUEUE or self.rest is not None

    @property
    def drained(self) -> bool:
        return not self._queued and self.rest is None

    def reopen_at(self, offset: int) -> None:
        """Reopen the file (SIGHUP) where the stream reaches offset, a block boundary."""
        self._reopen_at.append(offset)

    def open(self) -> bool:
        self.close()
        if self.path == "-":
            fd = os.dup(1)
            self._stdout_blocking = os.get_blocking(fd)
            os.set_blocking(fd, False)
            self.fd = fd
            return True
        try:
            mode = os.stat(self.path).st_mode
        except FileNotFoundError:
            mode = stat.S_IFREG
        if stat.S_ISFIFO(mode):
            self.kind = "fifo"
            try:
                self.fd = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            except OSError as exc:
                if exc.errno == errno.ENXIO:
                    return False  # nobody reads it yet
                raise
            return True
        if not stat.S_ISREG(mode):
            # A character device (/dev/null) or the like: written as a stream.
            self.kind = "device"
            self.fd = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            return True
        self.kind = "file"
        # Opened here, not on the thread: a file that cannot be opened is an error now.
        self._file = _File(self._open_file(self.truncate))
        self.truncate = False  # a reopen (SIGHUP) appends: the file may not have moved
        if self.size is not None and self._rotated is None:
            self._rotated = self._find_rotated()
        if self._worker is None:
            self._worker = ThreadPoolExecutor(1, thread_name_prefix="fastrelay-capture")

        return True

    def _open_file(self, truncate: bool) -> int:
        flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | (os.O_TRUNC if truncate
                                                            else os.O_APPEND)
        return os.open(self.path, flags, 0o644)

    def _find_rotated(self) -> list[int]:
        """The numbers N of the FILE.N there are (an earlier run's too), oldest first."""
        folder, base = os.path.split(os.path.abspath(self.path))
        pattern = re.compile(re.escape(base) + r"\.([0-9]{1,9})\Z")
        try:
            names = os.listdir(folder)
        except OSError:
            return []
        return sorted(int(m.group(1)) for m in map(pattern.match, names) if m)

    def write(self, data: bytes, offset: int, header_at: Callable[[int], bytes]) -> None:
        if self._file is None or self._worker is None:
            self.send(memoryview(data))
            return
        end = offset + len(data)
        marks = [at for at in self._reopen_at if at < end]
        self._reopen_at = [at for at in self._reopen_at if at >= end]
        self._queued[offset] = data
        self._queued_bytes += len(data)
        generation = self._generation
        future = asyncio.get_running_loop().run_in_executor(
            self._worker, self._write_file, self._file, data, offset, header_at, marks)
        future.add_done_callback(lambda done: self._written(done, generation, offset))

    def _written(self, done: asyncio.Future[None], generation: int, offset: int) -> None:
        """On the loop: the thread has written a chunk, or failed to."""
        if generation != self._generation or done.cancelled():
            return  # closed meanwhile
        was_blocked = self.blocked
        data = self._queued.pop(offset)
        self._queued_bytes -= len(data)
        exc = done.exception()
        if exc is not None:
            # This chunk and those queued after it are not in the file (at most: part of
            # this one may be out).
            for chunk in (data, *self._queued.values()):
                self.lost_packets += _packets(memoryview(chunk))
            if self.on_error is not None:
                self.on_error(exc if isinstance(exc, OSError) else OSError(str(exc)))
        elif was_blocked and not self.blocked and self.on_ready is not None:
            self.on_ready()

    # -- on the writer thread -------------------------------------------------------------

    def _write_file(self, file: _File, data: bytes, offset: int,
                    header_at: Callable[[int], bytes], marks: list[int]) -> None:
        """Write data, the stream from offset on, to file; reopen the file at each of
        marks (stream offsets); rotate it at block boundaries if it has a size limit."""
        if file.failed:
            raise OSError(errno.EIO, "an earlier write failed")
        try:
            view = memoryview(data)
            start = 0
            for mark in marks:
                stop = max(start, mark - offset)
                self._write_part(file, view, start, stop, offset, header_at)
                start = stop
                os.close(file.fd)
                file.fd = -1
                file.fd = self._open_file(truncate=False)
                file.written, file.header_len = os.fstat(file.fd).st_size, 0
            self._write_part(file, view, start, len(view), offset, header_at)
        except BaseException:
            file.failed = True
            raise

    def _write_part(self, file: _File, view: memoryview, start: int, stop: int, offset: int,
                    header_at: Callable[[int], bytes]) -> None:
        while start < stop:
            end = stop
            if self.size is not None and stop - start > self.size - file.written:
                # Blocks are walked (in Python) only in the write that crosses the size.
                end = _blocks_within(view[:stop], start, self.size - file.written)
                if end == start:
                    if file.written > file.header_len:
                        self._rotate(file, header_at(offset + start))
                        continue
                    end = _block_end(view, start)  # one block larger than a file: alone
            self._write_all(file, view[start:end])
            start = end

    @staticmethod
    def _write_all(file: _File, data: memoryview) -> None:
        before = file.written
        try:
            while data:
                n = os.write(file.fd, data)
                file.written += n
                data = data[n:]
        except OSError:
            # A full disk may have taken part of a block: cut the file back to whole
            # blocks, so that it stays readable.
            with contextlib.suppress(OSError):
                os.ftruncate(file.fd, before)
            file.written = before
            raise

    def _rotate(self, file: _File, header: bytes) -> None:
        """Close FILE, rename it FILE.N, drop the oldest over count, start a new FILE."""
        assert self._rotated is not None
        os.close(file.fd)
        file.fd = -1
        number = (self._rotated[-1] if self._rotated else 0) + 1
        try:
            os.rename(self.path, f"{self.path}.{number}")
            self._rotated.append(number)
        except FileNotFoundError:
            pass  # someone removed it: nothing to keep
        keep = (self.count - 1) if self.count is not None else None
        while keep is not None and len(self._rotated) > keep:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"{self.path}.{self._rotated.pop(0)}")
        file.fd = self._open_file(truncate=True)
        file.written = 0
        self._write_all(file, memoryview(header))
        file.header_len = len(header)

    @staticmethod
    def _close_file(file: _File) -> None:
        if file.fd >= 0:
            os.close(file.fd)
            file.fd = -1

    # -- on the loop again ----------------------------------------------------------------

    @property
    def reopens(self) -> bool:
        return self.kind == "fifo"

    def gone(self) -> bool:
        # A FIFO whose reader left reports POLLERR: notice it before a new reader comes,
        # who must get a stream from its start, not from the middle of this one.
        if self.kind != "fifo" or self.fd < 0:
            return False
        poller = select.poll()
        poller.register(self.fd, select.POLLOUT)
        return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))

    def close(self) -> None:
        """Close the output. A regular file is closed by its thread, after the chunk it may
        still be writing; the thread ends with shutdown()."""
        self._generation += 1
        self._queued.clear()  # still written by the thread, unless one failed
        self._queued_bytes = 0
        self._reopen_at = []
        if self._file is not None:
            assert self._worker is not None
            self._worker.submit(self._close_file, self._file)
            self._file = None
        fd = self.fd
        super().close()
        if self._stdout_blocking is not None and fd >= 0:
            with contextlib.suppress(OSError):
                os.set_blocking(1, self._stdout_blocking)
            self._stdout_blocking = None

    def shutdown(self) -> None:
        """The output is not opened again: let its thread end once its work is done."""
        self.close()
        if self._worker is not None:
            self._worker.shutdown(wait=False)
            self._worker = None


class SocketOutput(Output):
    """A client of the control socket that asked for `capture`: the stream is its answer.

    The client sends nothing more; the socket becoming readable means it left (or broke
    the protocol): on_hangup() is called, and the session ends.
    """

    def __init__(self, sock: socket.socket, what: str = "capture client") -> None:
        super().__init__()
        self.sock = sock
        self.what = what
        self.on_hangup: Callable[[], None] | None = None
        self._reading = False

    def open(self) -> bool:
        if self.sock.fileno() < 0:
            raise OSError(errno.EBADF, "the client is gone")
        self.sock.setblocking(False)
        self.fd = self.sock.fileno()
        asyncio.get_running_loop().add_reader(self.fd, self._readable)
        self._reading = True
        return True

    def _readable(self) -> None:
        try:
            data = self.sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data and self.on_hangup is not None:
            self.on_hangup()

    def close(self) -> None:
        if self._reading:
            with contextlib.suppress(RuntimeError):
                asyncio.get_running_loop().remove_reader(self.fd)
            self._reading = False
        self._unwatch()
        self.rest = None
        self.fd = -1
        self.sock.close()


# -- sessions ---------------------------------------------------------------------------------

class _Interface:
    """One pcapng interface of the current section and the port it stands for (None: free,
    for the next port of the same name)."""

    __slots__ = ("block", "description", "name", "number", "port")

    def __init__(self, number: int, name: str, description: str, block: bytes) -> None:
        self.number = number
        self.name = name
        self.description = description
        self.block = block
        self.port: Port | None = None

    @property
    def free(self) -> bool:
        return self.port is None or self.port.closed


class _Section:
    """Where a section begins in the stream, and where each of its descriptions is."""

    __slots__ = ("blocks", "start")

    def __init__(self, start: int) -> None:
        self.start = start
        self.blocks: list[tuple[int, bytes]] = []  # (stream offset, block), in stream order


class CaptureSession:
    """One capture of one relay's (link's) ports into one output; see the module docstring.

    ports: names of ports or endpoint labels (as in `fastrelay stats`) to capture, None
    for all. on_end(session) is called once, when the session has ended: close(), its
    client left, or stdout's reader did.
    """

    def __init__(self, output: Output, *, link: str = "", ports: Collection[str] | None = None,
                 snaplen: int = defaults.CAPTURE_SNAPLEN, buffer: int = defaults.CAPTURE_BUFFER,
                 on_end: Callable[[CaptureSession], None] | None = None) -> None:
        self.output = output
        self.link = link
        self.ports = frozenset(ports) if ports else None
        self.capture = Capture(buffer, snaplen)
        self.flush_at = buffer // 4
        self.on_end = on_end
        self.relay: Relay | None = None
        self.state = "starting"
        self.active = False        # a section is open: the capture is in the hub
        self.closed = False
        self.offset = 0            # stream bytes taken from the buffer since the output opened
        self.lost = 0              # frames taken but never written (the output failed)
        self._interfaces: list[_Interface] = []   # of the current section, by number
        self._by_port: dict[Port, _Interface] = {}
        self._waiting: dict[Port, str] = {}       # port -> description, when there is room
        self._sections: list[_Section] = []       # the stream's, from the oldest still needed
        self._tick: asyncio.TimerHandle | None = None
        self._reopen_pending = False  # SIGHUP came while the buffer had no room
        self._drops_logged = 0
        self._open_again_at = 0.0   # a FIFO without a reader: when to try again
        self._drops_logged_at = -defaults.LOG_INTERVAL
        output.on_ready = self.flush
        output.on_error = self._failed
        if isinstance(output, SocketOutput):
            output.on_hangup = self.close

    # -- counters -------------------------------------------------------------------------

    @property
    def frames(self) -> int:
        """Frames written to the output, or on their way."""
        return int(self.capture.captured) - self.lost

    @property
    def dropped(self) -> int:
        """Frames lost: no room in the buffer (a slow output), or the output failed."""
        return int(self.capture.dropped) + self.lost

    def stats(self) -> dict[str, Any]:
        return {"output": self.output.what, "ports": sorted(self.ports) if self.ports else "all",
                "state": self.state, "frames": self.frames, "dropped": self.dropped,
                "interfaces": len(self._interfaces), "snaplen": int(self.capture.snaplen)}

    # -- lifecycle ------------------------------------------------------------------------

    def start(self, *, strict: bool = False) -> None:
        """Open the output and start the tick. If the output cannot be opened: OSError when
        strict (the command line), else one log line, and reopen() tries again."""
        try:
            self._open()
        except OSError as exc:
            if strict:
                raise
            self._failed(exc)
        if not self.closed:
            self._tick = asyncio.get_running_loop().call_later(
                defaults.CAPTURE_FLUSH_INTERVAL, self._on_tick)

    def reopen(self) -> None:
        """SIGHUP: open the output again, so that what is captured from now on goes to its
        path anew (logrotate moved the file away) in a new section.

        A regular file being written is reopened in stream order: a new section is
        appended to the buffer now, and the file's thread reopens the file just before
        it, so that every frame captured before the signal is in the old file and none is
        lost. Any other output is closed and opened again at once; a failed one is retried.
        """
        if self.closed:
            return
        if self.active and isinstance(self.output, FileOutput) and self.output.kind == "file":
            self._reopen_pending = True
            self._mark_reopen()
            return
        self.flush()
        self._end_section()
        self.output.close()
        try:
            self._open()
        except OSError as exc:
            self._failed(exc)

    def _mark_reopen(self) -> None:
        """Start the section a reopened file begins with, and tell the file where it is
        (if the buffer has no room now: after the next take())."""
        assert isinstance(self.output, FileOutput)
        at = self.offset + self.capture.pending
        if self._append_section():
            self.output.reopen_at(at)
            self._reopen_pending = False

    async def finish(self, timeout: float = defaults.CAPTURE_FINISH_TIMEOUT) -> None:
        """Before close(): let the output write out what is pending, for up to timeout
        seconds (a reader that stopped reading costs no more than that)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (self.active and (self.capture.pending or not self.output.drained)
               and loop.time() < deadline):
            if self.output.blocked:
                self.output.resume()
            self.flush()
            await asyncio.sleep(0.005)

    def close(self) -> None:
        """End the session: write what is pending (if the output takes it), release all."""
        if self.closed:
            return
        self.closed = True
        if self._tick is not None:
            self._tick.cancel()
            self._tick = None
        self.flush()
        self._end_section()
        self.unbind()
        self.output.shutdown()
        self.state = "ended"
        if self.dropped:
            log.warning("%s: %d frames captured, %d dropped (the output was slower than the "
                        "traffic)", self.output.what, self.frames, self.dropped)
        if self.on_end is not None:
            self.on_end(self)

    def _open(self) -> None:
        if self.output.open():
            self._begin_section()
        else:
            self.state = "waiting for a reader"

    def _failed(self, exc: OSError) -> None:
        """The output cannot take more: end the section; a FIFO waits for its next reader,
        a client's or stdout's session ends, a file waits for reopen()."""
        self._end_section()
        self.output.close()
        self.lost += self.output.lost_packets
        self.output.lost_packets = 0
        gone = exc.errno in (errno.EPIPE, errno.ECONNRESET)
        if gone and self.output.reopens:
            self.state = "waiting for a reader"
            log.info("%s: the reader left; waiting for the next one", self.output.what)
        elif gone or isinstance(self.output, SocketOutput):
            if not isinstance(self.output, SocketOutput):
                log.warning("%s: the reader left; capture stopped", self.output.what)
            self.close()
        else:
            state = f"failed: {exc.strerror or exc}"
            if state != self.state:
                log.error("%s: %s; nothing is captured until it is reopened (SIGHUP)",
                          self.output.what, exc.strerror or exc)
            self.state = state

    # -- the relay's ports ----------------------------------------------------------------

    def bind(self, relay: Relay) -> None:
        """Capture relay's ports (those that match) from now on."""
        self.relay = relay
        for port in relay.hub.ports:
            self.port_attached(port, relay.label_of(port))
        if self.active:
            relay.hub.add_capture(self.capture)

    def unbind(self) -> None:
        """The relay is closing (or the session ends): stop capturing its ports."""
        relay, self.relay = self.relay, None
        if relay is None:
            return
        relay.hub.remove_capture(self.capture)
        for port in list(self._by_port):
            self.port_closed(port)
        self._waiting.clear()

    def matches(self, port: Port, label: str | None) -> bool:
        return self.ports is None or port.name in self.ports or label in self.ports

    def port_attached(self, port: Port, label: str | None) -> None:
        """A port joined the relay: describe it (now or once there is room), then select it."""
        if self.closed or not self.matches(port, label):
            return
        self._waiting[port] = f"{self.link} {label}".strip() if label else self.link
        if self.active:
            self._describe_waiting()

    def port_closed(self, port: Port) -> None:
        self._waiting.pop(port, None)
        interface = self._by_port.pop(port, None)
        if interface is not None:
            interface.port = None
            self.capture.unselect(port.switch_id)

    def _use(self, interface: _Interface, port: Port) -> None:
        interface.port = port
        self._by_port[port] = interface
        self.capture.select(port.switch_id, interface.number)

    def _describe_waiting(self) -> None:
        """Give each waiting port an interface: a free one of its name, or a new one whose
        description is appended to the stream (while it fits); then select the port."""
        for port, description in list(self._waiting.items()):
            if port.closed:
                del self._waiting[port]
                continue
            free = next((i for i in self._interfaces if i.free and i.name == port.name), None)
            if free is not None:
                self._use(free, port)
                del self._waiting[port]
                continue
            stale = sum(1 for i in self._interfaces if i.free)
            if stale > max(defaults.CAPTURE_STALE_INTERFACES, len(self._interfaces) - stale):
                # Mostly closed ports: a new section with the live and waiting ones.
                self._append_section()
                return
            block = interface_description(port.name, description, int(self.capture.snaplen))
            at = self.offset + self.capture.pending
            if not self.capture.append(block):
                return  # no room now: after the next take()
            self._sections[-1].blocks.append((at, block))
            interface = _Interface(len(self._interfaces), port.name, description, block)
            self._interfaces.append(interface)
            self._use(interface, port)
            del self._waiting[port]

    # -- sections -------------------------------------------------------------------------

    def _begin_section(self) -> None:
        """The output has just opened: a new stream, beginning with a section of the live
        ports; then copying starts."""
        self.capture.take()  # nothing was copied while no section was open
        self.offset = 0
        self._sections = []
        if not self._append_section():
            raise OSError(errno.ENOBUFS, "the interface descriptions do not fit the "
                                         "capture buffer")
        self.active = True
        self.state = "writing"
        if self.relay is not None:
            self.relay.hub.add_capture(self.capture)
        self.flush()

    def _append_section(self) -> bool:
        """Append a section header with the descriptions of the live and waiting ports,
        numbered afresh, and select them under those numbers; False if it does not fit."""
        ports = [(i.port, i.description) for i in self._interfaces if i.port is not None
                 and not i.port.closed]
        ports += [(port, description) for port, description in self._waiting.items()
                  if not port.closed]
        snaplen = int(self.capture.snaplen)
        fresh = [_Interface(number, port.name, description,
                            interface_description(port.name, description, snaplen))
                 for number, (port, description) in enumerate(ports)]
        shb = section_header()
        start = self.offset + self.capture.pending
        if not self.capture.append(shb + b"".join(i.block for i in fresh)):
            return False
        section = _Section(start)
        at = start + len(shb)
        for interface in fresh:
            section.blocks.append((at, interface.block))
            at += len(interface.block)
        self._sections.append(section)
        for port in self._by_port:
            self.capture.unselect(port.switch_id)
        self._by_port.clear()
        self._waiting.clear()
        self._interfaces = fresh
        for interface, (port, _) in zip(fresh, ports):
            self._use(interface, port)
        return True

    def _end_section(self) -> None:
        """Stop copying; what is still in the buffer is lost (counted)."""
        if not self.active:
            return
        self.active = False
        if self.relay is not None:
            self.relay.hub.remove_capture(self.capture)
        self.lost += _packets(memoryview(self.capture.take()))
        # The next section describes the ports afresh.
        for port, interface in self._by_port.items():
            self.capture.unselect(port.switch_id)
            self._waiting.setdefault(port, interface.description)
        self._by_port.clear()
        self._interfaces = []

    def header_at(self, offset: int) -> bytes:
        """What a new file must begin with to continue the stream at offset: the section
        header and the interface descriptions before offset (nothing at a section start)."""
        return _header_at([(s.start, s.blocks) for s in self._sections], offset)

    def _headers_for(self, start: int, end: int) -> Callable[[int], bytes]:
        """header_at() for offsets from start to end, from a copy of what it needs: a file's
        writer thread calls it while the loop goes on changing the sections."""
        sections = [(s.start, list(s.blocks)) for s in self._sections if s.start < end]
        while len(sections) > 1 and sections[1][0] <= start:
            sections.pop(0)
        return partial(_header_at, sections)

    # -- moving bytes ---------------------------------------------------------------------

    def flush(self) -> None:
        """Take what the buffer holds and write it (unless the output is still blocked)."""
        if not self.active or self.output.blocked or not self.capture.pending:
            return
        data = self.capture.take()
        offset = self.offset
        self.offset += len(data)
        try:
            self.output.write(data, offset, self._headers_for(offset, self.offset))
        except OSError as exc:
            self.lost += _packets(memoryview(data))  # at most: part of it may be out
            self._failed(exc)
            return
        # A section that precedes the one being written is no longer needed for headers.
        while len(self._sections) > 1 and self._sections[1].start <= self.offset:
            self._sections.pop(0)
        if self._reopen_pending:
            self._mark_reopen()
        if self._waiting:
            self._describe_waiting()

    def after_poll(self) -> None:
        """After each hub poll while capturing: write once a quarter of the buffer is full."""
        if self.capture.pending >= self.flush_at:
            self.flush()

    def _on_tick(self) -> None:
        loop = asyncio.get_running_loop()
        self._tick = loop.call_later(defaults.CAPTURE_FLUSH_INTERVAL, self._on_tick)
        if self.active:
            if self.output.gone():
                self._failed(OSError(errno.EPIPE, "the reader left"))
                return
            if self.output.blocked:
                self.output.resume()  # for outputs the loop cannot watch
            self.flush()
        elif (self.output.reopens and self.state == "waiting for a reader"
              and loop.time() >= self._open_again_at):
            self._open_again_at = loop.time() + defaults.CAPTURE_REOPEN_INTERVAL
            try:
                self._open()
            except OSError as exc:
                self._failed(exc)
        dropped = int(self.capture.dropped)
        if dropped > self._drops_logged and loop.time() - self._drops_logged_at >= \
                defaults.LOG_INTERVAL:
            self._drops_logged, self._drops_logged_at = dropped, loop.time()
            log.warning("%s: %d frames dropped so far (the output is slower than the traffic)",
                        self.output.what, dropped)
