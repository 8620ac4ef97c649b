# Backlog: the bounded queue of frames a port could not send at once.

cdef class Backlog:
    cdef:
        char *data          # owned; allocated on first use, records in stream layout
        Py_ssize_t head     # first unsent byte (may sit inside a record, for stream ports)
        Py_ssize_t tail     # end of queued bytes
        Py_ssize_t limit    # queue depth: whole frames past it are dropped, never queued
        Py_ssize_t cap      # allocation: limit + one maximal record (a partial frame's rest)

    cdef int push(self, const char *src, Py_ssize_t n, bint force) except -1
    cdef void advance(self, Py_ssize_t n)
