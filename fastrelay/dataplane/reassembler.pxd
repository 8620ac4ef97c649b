# FrameReassembler: turns a qemu length-prefixed byte stream back into frames.
from libc.stdint cimport uint32_t

cdef class FrameReassembler:
    cdef:
        char *buf            # STREAM_BUF bytes being scanned: the hub's shared receive buffer
                             # between begin() and finish(), else `own` (feed_data) or NULL
        char *own            # owned, lazily; STREAM_BUF bytes for feed_data()
        char *carry          # owned, on demand; the incomplete record kept between reads
        Py_ssize_t carry_len # bytes in carry
        Py_ssize_t carry_cap # bytes allocated at carry (charged to `budget`)
        QueueBudget budget   # charged for carry, or None
        Py_ssize_t start     # first byte not yet handed on (a record header, or a partial one)
        Py_ssize_t end       # end of received bytes
        Py_ssize_t scanned   # end of the complete records already put in a batch
        uint32_t max_frame   # longest frame accepted (<= FRAME_MAX)
        readonly uint32_t bad_length  # the offending length after scan() returned -1
        readonly uint64_t runts  # records shorter than FRAME_MIN skipped (framing intact)

    cdef inline char *write_ptr(self)
    cdef inline Py_ssize_t write_room(self)
    cdef int scan(self, FrameBatch *batch) except -2
    cdef void consume(self)
    cdef void begin(self, char *buf, QueueBudget budget)
    cdef int finish(self) except -1
    cdef void drop_carry(self)
    cdef Py_ssize_t feed_loop(self, const unsigned char[::1] view, list frames) except -1
    cdef Py_ssize_t feed(self, data, list frames) except -1
