# Backlog: the bounded queue of frames a port could not send at once; QueueBudget: the
# memory all backlogs of a relay may hold together.

cdef class QueueBudget:
    """The bytes every backlog of a relay (or a whole daemon) may allocate together.

    A port's own bound (`queue_bytes`) keeps one slow peer from holding more than its share;
    this budget keeps many of them (hundreds of clients that never read) from holding more
    than the host can spare. A backlog asks for every byte it allocates and gives it back
    when it frees it, so `used` is the backlogs' real heap footprint. A push that would need
    more is refused (the frame is dropped and counted here and in the port's drop_queue),
    except the unsent rest of a frame a stream socket took in part: that one must be
    completed to keep the peer's framing, so it may overdraw by at most one record per port.
    """

    def __cinit__(self, Py_ssize_t limit=QUEUE_BUDGET_DEFAULT):
        if limit < 0:
            raise ValueError("a queue budget must be >= 0 bytes")
        self.limit = limit

    def __repr__(self):
        return f"<QueueBudget used={self.used} limit={self.limit} refused={self.refused}>"

    cdef bint take(self, Py_ssize_t n, bint force):
        if not force and self.used + n > self.limit:
            return False
        self.used += n
        if self.used > self.peak:
            self.peak = self.used
        return True

    cdef void give(self, Py_ssize_t n):
        self.used -= n


cdef class Backlog:
    """Bytes waiting for a port's socket (or tap, or pipe) to become writable again.

    Everything queued is a record: a 4-byte big-endian length, then that many bytes (the
    stream layout), so a stream port sends the bytes as they are and the others walk them
    record by record. Records are appended whole, so refusing one never corrupts a stream's
    framing; the one exception is `push_rest`, the unsent rest of a record a stream socket
    took in part, which must be completed before anything else is written. `frames` counts
    records until their last byte is sent, so a port counts a frame as sent when it really
    left. Memory is allocated as the queue grows (doubling, charged to the budget) and freed
    as soon as it is empty: an idle or drained port holds none.
    """

    def __cinit__(self, Py_ssize_t limit, QueueBudget budget=None):
        self.data = NULL
        self.limit = limit
        self.budget = budget

    def __dealloc__(self):
        self.release()

    def __len__(self):
        return self.tail - self.head

    cdef int reserve(self, Py_ssize_t n, bint force) except -1:
        """Make room for n more bytes at the tail; 1 when there is room, 0 when refused."""
        cdef Py_ssize_t used = self.tail - self.head, want, grow
        cdef char *bigger
        if self.tail + n <= self.cap:
            return 1
        if self.head and used + n <= self.cap:
            # Compact: only queued bytes move, and only when the end is reached.
            memmove(self.data, self.data + self.head, used)
            self.rec_end -= self.head
            self.head = 0
            self.tail = used
            return 1
        if self.cap:
            want = self.cap
        elif force:
            # The rest of a record, which the budget cannot refuse: take no more than it
            # needs (rounded to a page), so that many ports overdraw by little.
            want = (n + 4095) & ~4095
        else:
            want = BACKLOG_CHUNK
        while want < used + n:
            want *= 2
        grow = want - self.cap
        if self.budget is not None and not self.budget.take(grow, force):
            self.budget.refused += 1
            return 0
        if self.head:
            memmove(self.data, self.data + self.head, used)
            self.rec_end -= self.head
            self.head = 0
            self.tail = used
        bigger = <char *>PyMem_RawRealloc(self.data, want)
        if bigger == NULL:
            if self.budget is not None:
                self.budget.give(grow)
            raise MemoryError()
        self.data = bigger
        self.cap = want
        return 1

    cdef int push(self, const char *src, Py_ssize_t n, bint force) except -1:
        """Append one whole record of n bytes (header included); 1 queued, 0 refused."""
        cdef uint32_t length
        if n < HDR_LEN or (not force and self.tail - self.head + n > self.limit):
            return 0
        if not self.reserve(n, force):
            return 0
        if overflows(self.tail + n, self.cap, "backlog record"):
            return 0
        memcpy(self.data + self.tail, src, n)
        if self.frames == 0:
            self.rec_end = self.tail + n
            self.rec_len = <uint32_t>(n - HDR_LEN)
        self.tail += n
        self.frames += 1
        return 1

    cdef int push_record(self, const char *head, Py_ssize_t head_len, const char *payload,
                         uint32_t n, bint force) except -1:
        """Append the record [be32 head_len + n][head][payload]; 1 queued, 0 refused."""
        cdef Py_ssize_t size = HDR_LEN + head_len + n
        if not force and self.tail - self.head + size > self.limit:
            return 0
        if not self.reserve(size, force):
            return 0
        if overflows(self.tail + size, self.cap, "backlog record"):
            return 0
        store_be32(self.data + self.tail, <uint32_t>(head_len + n))
        if head_len:
            memcpy(self.data + self.tail + HDR_LEN, head, head_len)
        memcpy(self.data + self.tail + HDR_LEN + head_len, payload, n)
        if self.frames == 0:
            self.rec_end = self.tail + size
            self.rec_len = <uint32_t>(head_len + n)
        self.tail += size
        self.frames += 1
        return 1

    cdef int push_rest(self, const char *src, Py_ssize_t n, uint32_t record_len) except -1:
        """Queue the unsent last n bytes of a record whose payload is record_len bytes.

        Only into an empty backlog (the rest of a started record goes before all else);
        never refused, whatever the bounds: the peer's framing depends on it.
        """
        if self.frames or self.tail != self.head:
            raise AssertionError("push_rest into a backlog that is not empty")
        self.reserve(n, True)
        if overflows(self.tail + n, self.cap, "backlog rest of a record"):
            raise MemoryError()
        memcpy(self.data + self.tail, src, n)
        self.rec_end = self.tail + n
        self.rec_len = record_len
        self.tail += n
        self.frames = 1
        return 0

    cdef Py_ssize_t advance(self, Py_ssize_t n, uint64_t *payload_bytes) except -1:
        """Forget n bytes that were sent; return the records that were completed by them.

        payload_bytes, if not NULL, grows by the payload length of each completed record.
        """
        cdef Py_ssize_t done = 0
        self.head += n
        while self.frames and self.head >= self.rec_end:
            done += 1
            self.frames -= 1
            if payload_bytes != NULL:
                payload_bytes[0] += self.rec_len
            if self.frames:
                self.rec_len = load_be32(self.data + self.rec_end)
                self.rec_end += HDR_LEN + self.rec_len
        if self.head >= self.tail:
            self.head = self.tail = self.rec_end = 0
            self.frames = 0
            self.release()
        return done

    cdef void skip_header(self):
        """Move the head past the header of the record it is at (ports that send payloads)."""
        cdef Py_ssize_t start = self.rec_end - self.rec_len
        if self.frames and self.head < start:
            self.head = start

    cdef void release(self):
        """Free the memory (the queue must be empty or forgotten) and give it back."""
        if self.data != NULL:
            PyMem_RawFree(self.data)
            self.data = NULL
            if self.budget is not None:
                self.budget.give(self.cap)
        self.cap = 0
        self.head = self.tail = self.rec_end = 0
        self.frames = 0
