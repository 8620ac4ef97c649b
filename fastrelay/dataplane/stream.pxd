# StreamPort: qemu's stream framing (4-byte big-endian length per frame) over TCP or unix.

cdef class StreamPort(Port):
    cdef:
        FrameReassembler rx      # receive buffer and framing state
        iovec *iov               # owned; IOV_MAX entries for sendmsg
        msghdr msg               # reused sendmsg header

    cdef int read_stream(self) except -1
