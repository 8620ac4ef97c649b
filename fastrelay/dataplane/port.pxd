# Port: one attachment of the hub (a socket, a tap or stdio) with its counters and backlog.
from libc.stdint cimport int32_t, uint32_t, uint64_t

cdef class Hub

cdef class Port:
    cdef:
        readonly int fd          # read side, watched by the hub's epoll; -1 once closed
        readonly int wfd         # write side; == fd except for stdio
        readonly str name        # what and where, for log lines ("tcp 127.0.0.1:5000")
        Hub hub                  # the hub this port is attached to, or None
        Backlog backlog          # what could not be sent at once
        uint32_t armed           # epoll events currently registered for fd
        bint write_armed         # EPOLLOUT registered (on wfd)
        bint wfd_watched         # a separate wfd is in the epoll set (not a file or /dev/null)
        bint paused              # reading suspended: every other port is congested
        bint parked              # out of the epoll set: its peer hung up, frames still queued
        bint owns_fd             # close fd/wfd when the port closes
        readonly int32_t switch_id  # the hub's switch's id for this port while attached
        readonly bint trunk      # a link to another relay (split horizon), set by Hub.add
        readonly bint overlay    # a VXLAN port: always a trunk, sends each frame to the remote
                                 # endpoint the switch names (FrameBatch.remote); set at creation
        # Counters, read by the control plane once per second at most.
        readonly uint64_t rx_frames, rx_bytes, tx_frames, tx_bytes
        readonly uint64_t drop_queue    # frames refused because this port's backlog was full
        readonly uint64_t drop_invalid  # frames received malformed (runt, oversized, truncated)
        readonly uint64_t drop_send     # frames the kernel refused to send (EMSGSIZE, ...)
        readonly uint64_t drop_bounds   # frames a bounds check refused (a bug if ever > 0)

    cdef int on_readable(self) except -1
    cdef int on_hangup(self, uint32_t events) except -1
    cdef int on_output_error(self) except -1
    cdef void close_fds(self)
    cdef int on_writable(self) except -1
    cdef int deliver(self, FrameBatch *batch) except -1
    cdef int queue_from(self, FrameBatch *batch, Py_ssize_t i) except -1
    cdef int after_flush(self) except -1
    cdef int arm_if_queued(self) except -1
    cdef ssize_t write_some(self, const char *data, size_t n)
    cdef int flush_bytes(self, bint payloads) except -1
    cdef int sent_from_backlog(self, Py_ssize_t n) except -1
    cdef inline bint congested(self)
    cdef int fail(self, str reason, bint fault=*) except -1
