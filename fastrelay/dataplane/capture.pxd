# Capture: copies the frames a hub reads and sends into a bounded buffer of pcapng blocks.
from libc.stdint cimport int32_t, int64_t, uint32_t, uint64_t

cdef enum:
    # pcapng epb_flags direction bits (pcapng spec, "Enhanced Packet Block" flags).
    CAPTURE_INBOUND = 1      # read from the port (sent by its peer)
    CAPTURE_OUTBOUND = 2     # sent to the port (towards its peer)


cdef class Capture:
    cdef:
        char *data               # owned; `cap` bytes of whole pcapng blocks not yet taken
        Py_ssize_t used          # bytes in data
        readonly Py_ssize_t cap  # the bound: a block that does not fit is dropped, counted
        readonly uint32_t snaplen  # bytes kept of each frame (the rest is only counted)
        int32_t *sel_id          # owned; per switch slot: the port id selected, or -1
        uint32_t *sel_if         # owned; per switch slot: its pcapng interface id
        readonly uint64_t captured   # frames written as blocks
        readonly uint64_t dropped    # frames that found no room (the reader was too slow)

    cdef int add(self, int32_t port, FrameBatch *batch, uint32_t direction,
                 int64_t when) except -1
