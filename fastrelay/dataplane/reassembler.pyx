# FrameReassembler: turns a qemu length-prefixed byte stream back into frames.

cdef class FrameReassembler:
    """Reassembly of the qemu stream framing (4-byte big-endian length, then the frame).

    A port reads into the hub's receive buffer, shared by every port (one reads at a time):
    `begin()` lends it and puts back the incomplete record kept from the last read, the
    port reads straight into `write_ptr()`, `scan()` validates every complete record and
    describes them in a FrameBatch as pointers into that buffer (no copy), and after the
    hub has forwarded them `consume()` forgets them. A record cut anywhere, even inside its
    header, stays at the end and is completed by the next read (moved to the front when too
    little room is left behind it). `finish()` keeps only that incomplete record, in `carry`,
    sized to it: an idle connection holds no receive buffer, only what it has half sent.

    A length above max_frame means the stream cannot be trusted past it (scan() stops);
    a length below FRAME_MIN (a runt, 0..13) still says where the next record starts, so
    the runt is skipped and counted (`runts`) and the stream goes on.
    """

    def __cinit__(self, uint32_t max_frame=FRAME_MAX):
        if max_frame < FRAME_MIN or max_frame > FRAME_MAX:
            raise ValueError(f"max_frame must be within {FRAME_MIN}..{FRAME_MAX}")
        self.buf = self.own = self.carry = NULL
        self.start = self.end = self.scanned = 0
        self.max_frame = max_frame
        self.bad_length = 0

    def __dealloc__(self):
        PyMem_RawFree(self.own)
        self.drop_carry()

    cdef void begin(self, char *buf, QueueBudget budget):
        """Lend buf (STREAM_BUF bytes) for a read; it starts with the carried-over record."""
        self.buf = buf
        self.budget = budget
        if self.carry_len:
            memcpy(buf, self.carry, self.carry_len)
        self.start = self.scanned = 0
        self.end = self.carry_len
        self.carry_len = 0

    cdef int finish(self) except -1:
        """Give the buffer back, keeping the incomplete record (if any) in carry.

        Returns 1, or 0 when the budget could not grant the carry: the incomplete record is
        then forgotten, the stream cannot be followed past it, and the owner must close it.
        What lies before `scanned` was handed out already (even if forwarding was cut
        short by an exception): it is forgotten, never offered twice.
        """
        cdef Py_ssize_t rest = self.end - self.scanned, want
        cdef char *bigger
        cdef int kept = 1
        if rest > self.carry_cap:
            want = (rest + 4095) & ~4095
            if self.budget is not None and not self.budget.take(want - self.carry_cap, False):
                self.budget.refused += 1
                kept = 0
                rest = 0
            else:
                bigger = <char *>PyMem_RawRealloc(self.carry, want)
                if bigger == NULL:
                    if self.budget is not None:
                        self.budget.give(want - self.carry_cap)
                    raise MemoryError()
                self.carry = bigger
                self.carry_cap = want
        if overflows(rest, self.carry_cap, "stream carry"):
            raise MemoryError()
        if rest:
            memcpy(self.carry, self.buf + self.scanned, rest)
        elif self.carry_cap:
            self.drop_carry()
        self.carry_len = rest
        self.buf = NULL
        self.start = self.end = self.scanned = 0
        return kept

    cdef void drop_carry(self):
        if self.carry != NULL:
            PyMem_RawFree(self.carry)
            self.carry = NULL
            if self.budget is not None:
                self.budget.give(self.carry_cap)
        self.carry_cap = self.carry_len = 0

    cdef inline char *write_ptr(self):
        return self.buf + self.end

    cdef inline Py_ssize_t write_room(self):
        return STREAM_BUF - self.end

    cdef int scan(self, FrameBatch *batch) except -2:
        """Append complete records to batch until it is full.

        Returns 1 when the batch filled up before the data ran out (call again after
        forwarding), 0 when every complete record was taken, -1 on a length above
        max_frame (the stream cannot be trusted past it; see bad_length). Complete runts
        are skipped and counted.
        """
        cdef Py_ssize_t pos = self.scanned
        cdef uint32_t length
        while self.end - pos >= HDR_LEN:
            if batch.count == BATCH_MAX:
                self.scanned = pos
                return 1
            length = load_be32(self.buf + pos)
            if length > self.max_frame:
                self.scanned = pos
                self.bad_length = length
                return -1
            if self.end - pos - HDR_LEN < length:
                break
            if length < FRAME_MIN:
                self.runts += 1
                pos += HDR_LEN + length
                continue
            batch.rec[batch.count] = self.buf + pos
            batch.length[batch.count] = length
            batch.count += 1
            batch.nbytes += length
            pos += HDR_LEN + length
        self.scanned = pos
        return 0

    cdef void consume(self):
        """Forget the records scan() handed out; keep a partial one, moving it if needed."""
        cdef Py_ssize_t rest
        self.start = self.scanned
        if self.start == self.end:
            self.start = self.end = self.scanned = 0
        elif STREAM_BUF - self.end < STREAM_READ // 4:
            rest = self.end - self.start
            memmove(self.buf, self.buf + self.start, rest)
            self.start = self.scanned = 0
            self.end = rest

    @property
    def pending(self):
        """Bytes of an incomplete record held back."""
        return self.carry_len if self.buf == NULL else self.end - self.start

    def feed_data(self, data):
        """Feed stream bytes (any buffer); return the frames completed by them as bytes.

        For tests and tools: the relay itself reads into the buffer without this copy.
        Runts are skipped (counted in `runts`). Raises FrameError on a length above
        max_frame; the reassembler is unusable afterwards.
        """
        frames = []
        self.feed(data, frames)
        return frames

    def feed_count(self, data):
        """Like feed_data() but only count the frames completed (no object per frame).

        Validates a stream at C speed: for benchmarks and stream checks.
        """
        return self.feed(data, None)

    cdef Py_ssize_t feed(self, data, list frames) except -1:
        """Copy data in, scan it, append completed frames to frames (if given); count them."""
        cdef const unsigned char[::1] view = memoryview(data).cast("B")
        if self.own == NULL:
            self.own = <char *>PyMem_RawMalloc(STREAM_BUF)
            if self.own == NULL:
                raise MemoryError()
        self.begin(self.own, None)
        try:
            return self.feed_loop(view, frames)
        finally:
            self.finish()

    cdef Py_ssize_t feed_loop(self, const unsigned char[::1] view, list frames) except -1:
        cdef Py_ssize_t off = 0, n, total = view.shape[0], count = 0, i
        cdef FrameBatch batch
        cdef char *recs[BATCH_MAX]
        cdef uint32_t lens[BATCH_MAX]
        cdef int status
        while True:
            n = min(total - off, self.write_room())
            if n > 0:
                memcpy(self.write_ptr(), &view[off], n)
                self.end += n
                off += n
            status = 1
            while status == 1:
                batch.rec = recs
                batch.length = lens
                batch.count = 0
                batch.nbytes = 0
                status = self.scan(&batch)
                count += batch.count
                if frames is not None:
                    for i in range(batch.count):
                        frames.append(PyBytes_FromStringAndSize(recs[i] + HDR_LEN, lens[i]))
                if status < 0:
                    raise FrameError(f"bad frame length {self.bad_length} "
                                     f"(longest allowed {self.max_frame})")
            self.consume()
            if off == total:
                return count
