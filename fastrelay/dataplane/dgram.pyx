# DatagramPort: qemu's datagram framing (one frame per datagram) over UDP or unix sockets.

cdef class DatagramPort(Port):
    """A datagram socket bound by the control plane: qemu `socket,udp=`, `dgram`, netrelay UDP.

    Receives from any source (as qemu does) with recvmmsg, DGRAM_BATCH datagrams per call,
    each straight into a slot behind a 4-byte gap where the stream length header is written,
    so the batch is handed on without a copy. Sends with sendmmsg to one peer address, given
    at construction (`peer=`, a socket-module address for `family`), or learned from the last
    datagram received when `learn_peer` is set. A datagram that is too short, too long or
    truncated is dropped and counted; the port stays open, since one bad datagram says
    nothing about the next. A missing peer (ECONNREFUSED, ENOENT) drops frames, counted.
    """

    def __cinit__(self, int fd, str name, *args, family=AF_INET, peer=None,
                  bint learn_peer=False, uint32_t max_frame=DGRAM_MAX, **kwargs):
        cdef Py_ssize_t i
        self.max_frame = min(max_frame, DGRAM_MAX)
        self.learn_peer = learn_peer
        self.peer_len = 0
        if peer is not None:
            self.peer_len = sockaddr_from_py(family, peer, &self.peer)
        elif not learn_peer:
            raise ValueError(f"{name}: a datagram port needs a peer or learn_peer=True")
        self.slots = <char *>PyMem_RawMalloc(DGRAM_BATCH * DGRAM_SLOT)
        self.rx_msgs = <mmsghdr *>PyMem_RawCalloc(DGRAM_BATCH, sizeof(mmsghdr))
        self.rx_iov = <iovec *>PyMem_RawCalloc(DGRAM_BATCH, sizeof(iovec))
        self.rx_from = <sockaddr_storage *>PyMem_RawCalloc(DGRAM_BATCH, sizeof(sockaddr_storage))
        self.tx_msgs = <mmsghdr *>PyMem_RawCalloc(IOV_MAX, sizeof(mmsghdr))
        self.tx_iov = <iovec *>PyMem_RawCalloc(IOV_MAX, sizeof(iovec))
        if (self.slots == NULL or self.rx_msgs == NULL or self.rx_iov == NULL
                or self.rx_from == NULL or self.tx_msgs == NULL or self.tx_iov == NULL):
            raise MemoryError()
        for i in range(DGRAM_BATCH):
            self.rx_iov[i].iov_base = self.slots + i * DGRAM_SLOT + HDR_LEN
            # One byte more than we accept, so an oversized datagram shows as MSG_TRUNC.
            self.rx_iov[i].iov_len = self.max_frame + 1 if self.max_frame < DGRAM_MAX else DGRAM_MAX
            self.rx_msgs[i].msg_hdr.msg_iov = &self.rx_iov[i]
            self.rx_msgs[i].msg_hdr.msg_iovlen = 1
        for i in range(IOV_MAX):
            self.tx_msgs[i].msg_hdr.msg_iov = &self.tx_iov[i]
            self.tx_msgs[i].msg_hdr.msg_iovlen = 1

    def __dealloc__(self):
        PyMem_RawFree(self.slots)
        PyMem_RawFree(self.rx_msgs)
        PyMem_RawFree(self.rx_iov)
        PyMem_RawFree(self.rx_from)
        PyMem_RawFree(self.tx_msgs)
        PyMem_RawFree(self.tx_iov)

    @property
    def has_peer(self):
        return self.peer_len != 0

    cdef int on_readable(self) except -1:
        cdef int n, i, reads
        cdef unsigned int length
        cdef FrameBatch *batch
        cdef char *slot
        for reads in range(READS_PER_EVENT):
            if reads and not self.hub.should_read(self):
                return 0
            for i in range(DGRAM_BATCH):
                self.rx_msgs[i].msg_hdr.msg_name = &self.rx_from[i]
                self.rx_msgs[i].msg_hdr.msg_namelen = sizeof(sockaddr_storage)
                self.rx_msgs[i].msg_hdr.msg_flags = 0
            n = recvmmsg(self.fd, self.rx_msgs, DGRAM_BATCH, MSG_DONTWAIT, NULL)
            if n < 0:
                if errno == EAGAIN or errno == EINTR:
                    return 0
                # Errors queued by ICMP (a peer not listening yet) are not fatal here.
                self.send_errors += 1
                self.last_send_errno = errno
                return 0
            batch = self.hub.new_batch()
            for i in range(n):
                length = self.rx_msgs[i].msg_len
                if (self.rx_msgs[i].msg_hdr.msg_flags & MSG_TRUNC or length > self.max_frame
                        or length < FRAME_MIN):
                    self.drop_invalid += 1
                    continue
                slot = self.slots + i * DGRAM_SLOT
                store_be32(slot, length)
                batch.rec[batch.count] = slot
                batch.length[batch.count] = length
                batch.count += 1
                batch.nbytes += length
            if self.learn_peer and n > 0:
                memcpy(&self.peer, &self.rx_from[n - 1], self.rx_msgs[n - 1].msg_hdr.msg_namelen)
                self.peer_len = self.rx_msgs[n - 1].msg_hdr.msg_namelen
            if batch.count:
                self.hub.forward(self, batch)
            if n < DGRAM_BATCH:
                break
        return 0

    cdef int deliver(self, FrameBatch *batch) except -1:
        cdef Py_ssize_t i, done = 0, sent
        cdef char *frames[IOV_MAX]
        cdef uint32_t lengths[IOV_MAX]
        cdef Py_ssize_t n
        if self.peer_len == 0:
            self.drop_send += batch.count
            return 0
        if len(self.backlog):
            return self.queue_from(batch, 0)
        while done < batch.count:
            n = min(batch.count - done, IOV_MAX)
            for i in range(n):
                frames[i] = batch.rec[done + i] + HDR_LEN
                lengths[i] = batch.length[done + i]
            sent = self.send_frames(frames, lengths, n, True)
            done += sent
            if sent < n:
                return self.queue_from(batch, done)
        return 0

    cdef int send_frames(self, char **frames, uint32_t *lengths, Py_ssize_t n,
                         bint count_tx) except -1:
        """sendmmsg frames to the peer; returns how many were consumed (sent or dropped).

        Stops early only when the socket buffer is full (EAGAIN): the caller queues the
        rest. A frame the kernel refuses for itself (too big, peer gone) is dropped.
        count_tx is False for frames from the backlog: they were counted when queued.
        """
        cdef Py_ssize_t i, done = 0
        cdef int r
        for i in range(n):
            self.tx_iov[i].iov_base = frames[i]
            self.tx_iov[i].iov_len = lengths[i]
            self.tx_msgs[i].msg_hdr.msg_name = &self.peer
            self.tx_msgs[i].msg_hdr.msg_namelen = self.peer_len
        while done < n:
            r = sendmmsg(self.fd, self.tx_msgs + done, n - done, MSG_DONTWAIT)
            if r > 0:
                if count_tx:
                    for i in range(done, done + r):
                        self.tx_bytes += lengths[i]
                    self.tx_frames += r
                done += r
            elif r < 0 and errno == EINTR:
                continue
            elif r < 0 and (errno == EAGAIN or errno == ENOBUFS):
                break
            else:
                # The first message failed for a reason of its own: drop it, go on.
                self.send_errors += 1
                self.last_send_errno = errno
                self.drop_send += 1
                done += 1
        return done

    cdef int on_writable(self) except -1:
        cdef char *frames[IOV_MAX]
        cdef uint32_t lengths[IOV_MAX]
        cdef Py_ssize_t n, pos, sent, i
        cdef Backlog q = self.backlog
        while q.tail > q.head:
            n = 0
            pos = q.head
            while pos < q.tail and n < IOV_MAX:
                lengths[n] = load_be32(q.data + pos)
                frames[n] = q.data + pos + HDR_LEN
                pos += HDR_LEN + lengths[n]
                n += 1
            sent = self.send_frames(frames, lengths, n, False)
            pos = 0
            for i in range(sent):
                pos += HDR_LEN + lengths[i]
            q.advance(pos)
            if sent < n:
                break
        return self.after_flush()
