# StreamPort: qemu's stream framing (4-byte big-endian length per frame) over TCP or unix.

cdef class StreamPort(Port):
    """A connected stream socket: qemu `socket,listen=/connect=`, `stream`, netrelay TCP, passt.

    Reads STREAM_READ bytes at a time into its FrameReassembler and hands the validated
    records on as one batch. A length above max_frame means the stream cannot be trusted
    past it: the complete frames before it are delivered, then the port is closed with the
    peer and the length in the reason. A runt (length 0..13) is dropped and counted
    (drop_invalid) and the stream goes on: its framing is intact. Sends coalesce contiguous records
    into one iovec (a batch from another stream port is usually a single one) and use one
    sendmsg per IOV_MAX records; when the socket takes a frame in part, the rest of that
    frame goes to the backlog first, so the peer's framing is never broken.
    """

    def __cinit__(self, int fd, str name, *args, uint32_t max_frame=FRAME_MAX, **kwargs):
        self.rx = FrameReassembler(max_frame)
        self.iov = <iovec *>PyMem_RawMalloc(IOV_MAX * sizeof(iovec))
        if self.iov == NULL:
            raise MemoryError()
        memset(&self.msg, 0, sizeof(msghdr))
        self.msg.msg_iov = self.iov

    def __dealloc__(self):
        PyMem_RawFree(self.iov)

    cdef int on_readable(self) except -1:
        """Read up to READS_PER_EVENT times into the hub's receive buffer, forwarding as we go."""
        cdef int kept = 1
        cdef Py_ssize_t partial = 0
        self.rx.begin(self.hub.rxbuf, self.hub.budget)
        try:
            self.read_stream()
        finally:
            partial = self.rx.end - self.rx.scanned
            kept = self.rx.finish()
            if self.fd < 0:
                self.rx.drop_carry()  # closed while reading: nothing will complete it
        if not kept and self.fd >= 0:
            # The budget is spent (many ports hold queues or half frames): this peer's
            # half-sent frame cannot be kept, so the stream cannot be followed: close it.
            return self.fail(f"memory budget spent: cannot keep the {partial} bytes of an "
                             f"incomplete frame")
        return 0

    cdef int read_stream(self) except -1:
        cdef Py_ssize_t room, n
        cdef int reads, status
        cdef FrameBatch *batch
        for reads in range(READS_PER_EVENT):
            if reads and not self.hub.should_read(self):
                return 0
            room = min(self.rx.write_room(), STREAM_READ)
            n = recv(self.fd, self.rx.write_ptr(), room, MSG_DONTWAIT)
            if n == 0:
                if self.rx.end > self.rx.start:
                    return self.fail(f"peer closed in the middle of a frame "
                                     f"({self.rx.end - self.rx.start} bytes held back)")
                return self.fail("closed by peer", False)
            if n < 0:
                if errno == EAGAIN or errno == EINTR:
                    return 0
                return self.fail(errno_text(errno))
            self.rx.end += n
            status = 1
            while status == 1:
                batch = self.hub.new_batch()
                status = self.rx.scan(batch)
                if batch.count:
                    self.hub.forward(self, batch)
                    if self.fd < 0:
                        # Closed meanwhile (an on_close callback may close any port):
                        # hub is None now and the rest is nobody's.
                        return 0
            self.rx.consume()
            if self.rx.runts:
                self.drop_invalid += self.rx.runts
                self.rx.runts = 0
            if status < 0:
                self.drop_invalid += 1
                return self.fail(f"bad frame length {self.rx.bad_length} "
                                 f"(longest allowed {self.rx.max_frame})")
            if n < room:
                return 0
        return 0

    cdef int deliver(self, FrameBatch *batch) except -1:
        cdef Py_ssize_t i = 0, j, k, niov, record
        cdef ssize_t r
        cdef char *rec
        if len(self.backlog):
            return self.queue_from(batch, 0)
        while i < batch.count:
            # Coalesce contiguous records: a batch read from a stream is one run.
            niov = 0
            j = i
            while j < batch.count:
                rec = batch.rec[j]
                record = HDR_LEN + batch.length[j]
                if niov and <char *>self.iov[niov - 1].iov_base + self.iov[niov - 1].iov_len == rec:
                    self.iov[niov - 1].iov_len += record
                elif niov == IOV_MAX:
                    break
                else:
                    self.iov[niov].iov_base = rec
                    self.iov[niov].iov_len = record
                    niov += 1
                j += 1
            self.msg.msg_iovlen = niov
            r = sendmsg(self.wfd, &self.msg, MSG_DONTWAIT | MSG_NOSIGNAL)
            while r < 0 and errno == EINTR:
                r = sendmsg(self.wfd, &self.msg, MSG_DONTWAIT | MSG_NOSIGNAL)
            if r < 0:
                if errno != EAGAIN:
                    return self.fail(errno_text(errno))
                r = 0
            # Account whole records sent; k is the first not sent completely.
            k = i
            while k < j and r >= HDR_LEN + <ssize_t>batch.length[k]:
                r -= HDR_LEN + batch.length[k]
                self.tx_frames += 1
                self.tx_bytes += batch.length[k]
                k += 1
            if k < j:
                if r > 0:
                    # Started frames are finished before anything else, whatever the bound;
                    # counted as sent when their last byte leaves.
                    self.backlog.push_rest(batch.rec[k] + r, HDR_LEN + batch.length[k] - r,
                                           batch.length[k])
                    k += 1
                return self.queue_from(batch, k)
            i = j
        return 0

    cdef int on_writable(self) except -1:
        return self.flush_bytes(False)
