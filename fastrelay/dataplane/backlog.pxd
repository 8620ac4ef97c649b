# Backlog: the bounded queue of frames a port could not send at once; QueueBudget: the
# memory all backlogs of a relay may hold together.

cdef class QueueBudget:
    cdef:
        readonly Py_ssize_t limit    # bytes the backlogs charged to it may allocate together
        readonly Py_ssize_t used     # bytes they hold allocated now
        readonly Py_ssize_t peak     # the most they ever held
        readonly uint64_t refused    # frames refused because the budget was spent

    cdef bint take(self, Py_ssize_t n, bint force)
    cdef void give(self, Py_ssize_t n)


cdef class Backlog:
    cdef:
        char *data          # owned, grown on demand, freed when empty; records [be32 n][n bytes]
        Py_ssize_t head     # first unsent byte (may sit inside a record, for byte-stream ports)
        Py_ssize_t tail     # end of queued bytes
        Py_ssize_t limit    # queue depth: whole records past it are refused, never queued
        Py_ssize_t cap      # bytes allocated at data (0 while nothing is queued)
        Py_ssize_t frames   # records queued, the one the head is inside included
        Py_ssize_t rec_end  # end of the record the head is inside (valid while frames > 0)
        uint32_t rec_len    # payload length of that record (what its header says)
        QueueBudget budget  # charged for every byte allocated, or None

    cdef int push(self, const char *src, Py_ssize_t n, bint force) except -1
    cdef int push_record(self, const char *head, Py_ssize_t head_len, const char *payload,
                         uint32_t n, bint force) except -1
    cdef int push_rest(self, const char *src, Py_ssize_t n, uint32_t record_len) except -1
    cdef Py_ssize_t advance(self, Py_ssize_t n, uint64_t *payload_bytes) except -1
    cdef void skip_header(self)
    cdef int reserve(self, Py_ssize_t n, bint force) except -1
    cdef void release(self)
