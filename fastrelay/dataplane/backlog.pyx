# Backlog: the bounded queue of frames a port could not send at once.

cdef class Backlog:
    """Bytes waiting for a port's socket to become writable again.

    Records keep the stream layout (length header + frame), so a stream port sends the bytes
    as they are and a datagram port walks them record by record. A port appends only whole
    records, so dropping (refusing) a record never corrupts a stream's framing; the single
    exception is `force`, used for the unsent rest of a frame a stream socket took in part,
    which must be completed before anything else is written.
    """

    def __cinit__(self, Py_ssize_t limit):
        self.data = NULL
        self.head = 0
        self.tail = 0
        self.limit = limit
        self.cap = limit + HDR_LEN + FRAME_MAX

    def __dealloc__(self):
        PyMem_RawFree(self.data)
        self.data = NULL

    def __len__(self):
        return self.tail - self.head

    cdef int push(self, const char *src, Py_ssize_t n, bint force) except -1:
        """Append n bytes; return 1 when queued, 0 when refused (queue full, not forced)."""
        cdef Py_ssize_t used = self.tail - self.head
        if not force and used + n > self.limit:
            return 0
        if self.data == NULL:
            self.data = <char *>PyMem_RawMalloc(self.cap)
            if self.data == NULL:
                raise MemoryError()
        if self.tail + n > self.cap:
            # Compact: only queued bytes move, and only when the end is reached.
            memmove(self.data, self.data + self.head, used)
            self.head = 0
            self.tail = used
        memcpy(self.data + self.tail, src, n)
        self.tail += n
        return 1

    cdef void advance(self, Py_ssize_t n):
        """Forget n bytes that were sent."""
        self.head += n
        if self.head == self.tail:
            self.head = 0
            self.tail = 0
