# StdioPort: netrelay's `-` target; raw frames on stdin/stdout, for tests and pipelines.

cdef class StdioPort(Port):
    """Reads one frame per read() from `fd` and writes frames unframed to `wfd`, as netrelay.

    There is no framing on stdio (netrelay has none either): it suits a pipe between two
    programs that each write whole frames. The backlog holds records like every other
    port's; only the frames are written, and a frame begun is always finished first. End
    of input closes the port (netrelay spun a core on it in hub mode); so does the reader
    of stdout going away (the write side's EPOLLERR), instead of waking the hub forever.
    """

    def __cinit__(self, int fd, str name, *args, int wfd=-1, uint32_t max_frame=FRAME_MAX,
                  **kwargs):
        if wfd >= 0:
            self.wfd = wfd
        self.max_frame = min(max_frame, DGRAM_MAX)
        self.slot = <char *>PyMem_RawMalloc(DGRAM_SLOT)
        if self.slot == NULL:
            raise MemoryError()

    def __dealloc__(self):
        PyMem_RawFree(self.slot)

    cdef int on_readable(self) except -1:
        cdef ssize_t n
        cdef FrameBatch *batch
        n = read(self.fd, self.slot + HDR_LEN, DGRAM_MAX)
        if n == 0:
            return self.fail("end of input", False)
        if n < 0:
            if errno == EAGAIN or errno == EINTR:
                return 0
            return self.fail(errno_text(errno))
        if n < FRAME_MIN or n > self.max_frame:
            self.drop_invalid += 1
            return 0
        store_be32(self.slot, n)
        batch = self.hub.new_batch()
        batch.rec[0] = self.slot
        batch.length[0] = n
        batch.count = 1
        batch.nbytes = n
        return self.hub.forward(self, batch)

    cdef int deliver(self, FrameBatch *batch) except -1:
        cdef Py_ssize_t i
        cdef ssize_t r
        cdef uint32_t length
        cdef char *frame
        for i in range(batch.count):
            frame = batch.rec[i] + HDR_LEN
            length = batch.length[i]
            if len(self.backlog):
                if not self.backlog.push(batch.rec[i], HDR_LEN + length, False):
                    self.drop_queue += 1
                continue
            r = write(self.wfd, frame, length)
            if r < 0:
                if errno != EAGAIN and errno != EINTR:
                    return self.fail(errno_text(errno))
                r = 0
            if r == length:
                self.tx_frames += 1
                self.tx_bytes += length
            elif r > 0:
                # The rest of a frame begun is always written, before anything else.
                self.backlog.push_rest(frame + r, length - r, length)
            elif not self.backlog.push(batch.rec[i], HDR_LEN + length, False):
                self.drop_queue += 1
        return self.arm_if_queued()

    cdef ssize_t write_some(self, const char *data, size_t n):
        # stdout is a pipe, a terminal or a file, not necessarily a socket.
        return write(self.wfd, data, n)

    cdef int on_writable(self) except -1:
        """Write the queued frames (their payloads only: stdio has no framing)."""
        return self.flush_bytes(True)
