# Capture: copies the frames a hub reads and sends into a bounded buffer of pcapng blocks.

cdef enum:
    # Enhanced Packet Block: type, total length, interface, ts high, ts low, captured
    # length, original length (7 x 4 bytes), the data padded to 4, the epb_flags option
    # (2 + 2 + 4), opt_endofopt (4) and the trailing total length (4).
    EPB_TYPE = 6
    EPB_FIXED = 28
    EPB_TRAILER = 16


cdef class Capture:
    """Whole pcapng Enhanced Packet Blocks of the selected ports' frames, ready to write.

    The hub calls add() once per batch and direction for every capture it has (no capture:
    one branch per batch, nothing else), so frames are copied per batch, never per Python
    call. The control plane writes everything else of the file (the section header, an
    interface description per port, with nanosecond timestamps: if_tsresol 9) through
    append(), so the blocks stay in order, and takes the bytes with take() when its file or
    pipe can accept them. The buffer is bounded: when the reader is slower than the
    traffic, frames that do not fit are dropped and counted (`dropped`) and forwarding
    never waits; only whole blocks are ever added, so the stream stays valid.
    """

    def __cinit__(self, Py_ssize_t limit=4194304, uint32_t snaplen=262144):
        cdef int s
        if not 4096 <= limit <= 1073741824:
            raise ValueError(f"capture buffer {limit} out of range: 4096..1073741824 bytes")
        if snaplen < 1:
            raise ValueError("snap length must be >= 1")
        self.cap = limit
        self.snaplen = snaplen
        self.data = <char *>PyMem_RawMalloc(limit)
        self.sel_id = <int32_t *>PyMem_RawMalloc(SWITCH_PORTS_MAX * sizeof(int32_t))
        self.sel_if = <uint32_t *>PyMem_RawMalloc(SWITCH_PORTS_MAX * sizeof(uint32_t))
        if self.data == NULL or self.sel_id == NULL or self.sel_if == NULL:
            raise MemoryError()
        for s in range(SWITCH_PORTS_MAX):
            self.sel_id[s] = -1

    def __dealloc__(self):
        PyMem_RawFree(self.data)
        PyMem_RawFree(self.sel_id)
        PyMem_RawFree(self.sel_if)

    def select(self, int32_t port, uint32_t interface):
        """Capture the frames of the port with switch id `port` as pcapng interface `interface`
        (its interface description block must already have been append()ed)."""
        if port < 0:
            raise ValueError(f"not a port id: {port}")
        self.sel_id[port & SWITCH_SLOT_MASK] = port
        self.sel_if[port & SWITCH_SLOT_MASK] = interface

    def unselect(self, int32_t port):
        """Stop capturing the port with switch id `port`."""
        if port >= 0 and self.sel_id[port & SWITCH_SLOT_MASK] == port:
            self.sel_id[port & SWITCH_SLOT_MASK] = -1

    def append(self, data):
        """Append whole blocks the control plane made (section header, interface
        descriptions); False, and nothing appended, when they do not fit now."""
        cdef const unsigned char[::1] view = memoryview(data).cast("B")
        cdef Py_ssize_t n = view.shape[0]
        if n % 4:
            raise ValueError("pcapng blocks are a multiple of 4 bytes long")
        if self.used + n > self.cap:
            return False
        if n:
            memcpy(self.data + self.used, &view[0], n)
        self.used += n
        return True

    def take(self):
        """Every byte added since the last take() (whole blocks), as bytes."""
        out = PyBytes_FromStringAndSize(self.data, self.used)
        self.used = 0
        return out

    @property
    def pending(self):
        """Bytes waiting to be taken."""
        return self.used

    cdef int add(self, int32_t port, FrameBatch *batch, uint32_t direction,
                 int64_t when) except -1:
        """Append a block for each frame of batch if `port` is selected; `when` in ns."""
        cdef int slot = port & SWITCH_SLOT_MASK
        cdef Py_ssize_t i, size, caplen
        cdef uint32_t *w
        cdef char *block
        if port < 0 or self.sel_id[slot] != port:
            return 0
        for i in range(batch.count):
            caplen = min(<Py_ssize_t>batch.length[i], <Py_ssize_t>self.snaplen)
            size = EPB_FIXED + ((caplen + 3) & ~3) + EPB_TRAILER
            if self.used + size > self.cap:
                self.dropped += batch.count - i
                return 0
            block = self.data + self.used
            w = <uint32_t *>block
            w[0] = EPB_TYPE
            w[1] = <uint32_t>size
            w[2] = self.sel_if[slot]
            w[3] = <uint32_t>(<uint64_t>when >> 32)
            w[4] = <uint32_t>(<uint64_t>when & 0xffffffff)
            w[5] = <uint32_t>caplen
            w[6] = batch.length[i]
            memcpy(block + EPB_FIXED, batch.rec[i] + HDR_LEN, caplen)
            memset(block + EPB_FIXED + caplen, 0, ((caplen + 3) & ~3) - caplen)
            w = <uint32_t *>(block + EPB_FIXED + ((caplen + 3) & ~3))
            w[0] = 2 | (4 << 16)      # epb_flags, 4 bytes (code and length, host order)
            w[1] = direction
            w[2] = 0                  # opt_endofopt
            w[3] = <uint32_t>size
            self.used += size
            self.captured += 1
        return 0
