# DatagramPort: qemu's datagram framing (one frame per datagram) over UDP or unix sockets.

cdef inline Py_ssize_t gro_segment(msghdr *hdr):
    """The UDP_GRO segment size attached to a received message, or 0."""
    cdef cmsghdr *cmsg = CMSG_FIRSTHDR(hdr)
    cdef int size
    while cmsg != NULL:
        if cmsg.cmsg_level == IPPROTO_UDP and cmsg.cmsg_type == UDP_GRO:
            memcpy(&size, CMSG_DATA(cmsg), sizeof(int))
            return size
        cmsg = CMSG_NXTHDR(hdr, cmsg)
    return 0


cdef class DatagramPort(Port):
    """A datagram socket bound by the control plane: qemu `socket,udp=`, `dgram`, netrelay UDP.

    Receives from any source (as qemu does) with recvmmsg, DGRAM_BATCH datagrams per call,
    each straight into a slot behind a 4-byte gap where the stream length header is written,
    so the batch is handed on without a copy. Sends with sendmmsg to one peer address, given
    at construction (`peer=`, a socket-module address for `family`), or learned from the last
    datagram received when `learn_peer` is set. On UDP sockets, a run of equal-sized frames
    (the last may be shorter) goes out as one message with UDP_SEGMENT: the kernel splits
    it into the same datagrams qemu would see, at a fraction of the per-datagram cost
    (measured here: relay CPU per frame ~2.7x lower). If the kernel refuses GSO for this
    peer (a route MTU below the frame size), the port falls back to one message per frame.
    Receiving, UDP_GRO is on: a peer that sends GSO runs (another fastrelay, a tool)
    hands over up to 64 KiB of datagrams in one buffer, in any number of segments; they
    are split into records in `spread` (the one copy on this path: the records need their
    length header in front), and the batch is forwarded early whenever `spread` or the
    batch is full. With GRO on every slot takes a whole 64 KiB message whatever max_frame
    is: the bound applies to each datagram, not to a coalesced run.
    A datagram that is too short, too long or
    truncated is dropped and counted; the port stays open, since one bad datagram says
    nothing about the next. A missing peer (ECONNREFUSED, ENOENT) drops frames, counted.
    A full peer: a UDP socket refuses only when its own buffer is full, and EPOLLOUT tells
    when it has room, so the rest waits in the backlog. A unix datagram socket refuses when
    the peer's queue is full, and only a connect()ed one is told when the peer has room
    again: so a unix port with a fixed peer keeps its socket connected to it (connecting
    again, once per batch, while the peer is absent or after it went away), and waits in
    the backlog like UDP. One that replies to the last sender cannot connect; waiting
    would wake the hub forever, so what the full peer refuses drops (counted as
    drop_queue), as a datagram network may.
    """

    def __cinit__(self, int fd, str name, *args, int family=AF_INET, peer=None,
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
        self.rx_ctrl = <char *>PyMem_RawCalloc(DGRAM_BATCH, GSO_CTRL)
        self.spread = NULL
        self.tx_msgs = <mmsghdr *>PyMem_RawCalloc(IOV_MAX, sizeof(mmsghdr))
        self.tx_iov = <iovec *>PyMem_RawCalloc(IOV_MAX, sizeof(iovec))
        self.tx_ctrl = <char *>PyMem_RawCalloc(IOV_MAX, GSO_CTRL)
        self.tx_first = <Py_ssize_t *>PyMem_RawCalloc(IOV_MAX + 1, sizeof(Py_ssize_t))
        if (self.slots == NULL or self.rx_msgs == NULL or self.rx_iov == NULL
                or self.rx_from == NULL or self.tx_msgs == NULL or self.tx_iov == NULL
                or self.tx_ctrl == NULL or self.tx_first == NULL or self.rx_ctrl == NULL):
            raise MemoryError()
        self.gso_capable = self.gso = family == AF_INET or family == AF_INET6
        self.can_wait = self.gso_capable
        self.unix_fixed = family == AF_UNIX and self.peer_len != 0
        if self.unix_fixed:
            self.try_connect()
        cdef int on = 1
        self.gro = self.gso and setsockopt(fd, IPPROTO_UDP, UDP_GRO, &on, sizeof(on)) == 0
        for i in range(DGRAM_BATCH):
            self.rx_iov[i].iov_base = self.slots + i * DGRAM_SLOT + HDR_LEN
            # With GRO a message is a run of datagrams of up to 64 KiB, whatever max_frame;
            # without, one byte more than we accept shows an oversized one as MSG_TRUNC.
            self.rx_iov[i].iov_len = (DGRAM_MAX if self.gro or self.max_frame >= DGRAM_MAX
                                      else self.max_frame + 1)
            self.rx_msgs[i].msg_hdr.msg_iov = &self.rx_iov[i]
            self.rx_msgs[i].msg_hdr.msg_iovlen = 1

    def __dealloc__(self):
        PyMem_RawFree(self.slots)
        PyMem_RawFree(self.rx_msgs)
        PyMem_RawFree(self.rx_iov)
        PyMem_RawFree(self.rx_from)
        PyMem_RawFree(self.rx_ctrl)
        PyMem_RawFree(self.spread)
        PyMem_RawFree(self.tx_msgs)
        PyMem_RawFree(self.tx_iov)
        PyMem_RawFree(self.tx_ctrl)
        PyMem_RawFree(self.tx_first)

    @property
    def has_peer(self):
        return self.peer_len != 0

    def stats(self):
        """The common counters plus the datagram socket's own."""
        d = Port.stats(self)
        d.update(rx_errors=self.rx_errors, send_errors=self.send_errors,
                 gso_messages=self.gso_messages, gro_messages=self.gro_messages)
        return d

    cdef int on_readable(self) except -1:
        cdef int n, i, reads
        cdef unsigned int length
        cdef Py_ssize_t segment, spread_used
        cdef FrameBatch *batch
        cdef char *slot
        for reads in range(READS_PER_EVENT):
            if reads and not self.hub.should_read(self):
                return 0
            for i in range(DGRAM_BATCH):
                self.rx_msgs[i].msg_hdr.msg_name = &self.rx_from[i]
                self.rx_msgs[i].msg_hdr.msg_namelen = sizeof(sockaddr_storage)
                self.rx_msgs[i].msg_hdr.msg_flags = 0
                if self.gro:
                    self.rx_msgs[i].msg_hdr.msg_control = self.rx_ctrl + i * GSO_CTRL
                    self.rx_msgs[i].msg_hdr.msg_controllen = GSO_CTRL
            n = recvmmsg(self.fd, self.rx_msgs, DGRAM_BATCH, MSG_DONTWAIT, NULL)
            if n < 0:
                if errno == EAGAIN or errno == EINTR:
                    return 0
                # Errors queued by ICMP (a peer not listening yet) are not fatal here;
                # reading them clears them.
                self.rx_errors += 1
                self.last_rx_errno = errno
                return 0
            batch = self.hub.new_batch()
            spread_used = 0
            for i in range(n):
                length = self.rx_msgs[i].msg_len
                slot = self.slots + i * DGRAM_SLOT
                if self.gro and not self.rx_msgs[i].msg_hdr.msg_flags & MSG_TRUNC:
                    segment = gro_segment(&self.rx_msgs[i].msg_hdr)
                    if 0 < segment < length:
                        batch = self.split_coalesced(batch, slot + HDR_LEN, length, segment,
                                                     &spread_used)
                        if self.fd < 0:
                            return 0
                        continue
                if (self.rx_msgs[i].msg_hdr.msg_flags & MSG_TRUNC or length > self.max_frame
                        or length < FRAME_MIN):
                    self.drop_invalid += 1
                    continue
                if overflows(batch.count + 1, BATCH_MAX, "datagram batch"):
                    self.drop_bounds += 1
                    continue
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
                if self.fd < 0:
                    return 0  # closed meanwhile (by an on_close callback): hub is None
            if n < DGRAM_BATCH:
                break
        return 0

    cdef bint try_connect(self):
        """Connect a unix socket to its fixed peer (so that EPOLLOUT means the peer has room)."""
        self.connected = connect(self.fd, <sockaddr *>&self.peer, self.peer_len) == 0
        self.can_wait = self.connected
        return self.connected

    cdef int deliver(self, FrameBatch *batch) except -1:
        cdef Py_ssize_t i, done = 0, sent
        cdef char *frames[IOV_MAX]
        cdef uint32_t lengths[IOV_MAX]
        cdef Py_ssize_t n
        if self.peer_len == 0:
            self.drop_send += batch.count
            return 0
        if self.unix_fixed and not self.connected:
            self.try_connect()
        if len(self.backlog):
            return self.queue_from(batch, 0)
        while done < batch.count:
            n = min(batch.count - done, IOV_MAX)
            for i in range(n):
                frames[i] = batch.rec[done + i] + HDR_LEN
                lengths[i] = batch.length[done + i]
            sent = self.send_frames(frames, lengths, n)
            done += sent
            if sent < n:
                if not self.can_wait:
                    self.drop_queue += batch.count - done
                    return 0
                return self.queue_from(batch, done)
        return 0

    cdef FrameBatch *split_coalesced(self, FrameBatch *batch, char *data, Py_ssize_t length,
                                     Py_ssize_t segment, Py_ssize_t *spread_used) except NULL:
        """Split a UDP_GRO buffer of `length` bytes into records of `segment` bytes.

        Records go to `spread`; when the next one would not fit there, or the batch is full,
        the batch so far is forwarded and both start over (the ports have copied what they
        keep by then). Returns the batch to go on with.
        """
        cdef Py_ssize_t off = 0, size
        cdef char *rec
        if self.spread == NULL:
            self.spread = <char *>PyMem_RawMalloc(GRO_SPREAD)
            if self.spread == NULL:
                raise MemoryError()
        self.gro_messages += 1
        while off < length:
            size = min(segment, length - off)
            off += size
            if size < FRAME_MIN or size > self.max_frame:
                self.drop_invalid += 1
                continue
            if spread_used[0] + HDR_LEN + size > GRO_SPREAD or batch.count == BATCH_MAX:
                if batch.count:
                    self.hub.forward(self, batch)
                    if self.fd < 0:
                        return batch
                batch = self.hub.new_batch()
                spread_used[0] = 0
            if (overflows(spread_used[0] + HDR_LEN + size, GRO_SPREAD, "GRO spread buffer")
                    or overflows(batch.count + 1, BATCH_MAX, "datagram batch")):
                self.drop_bounds += 1
                continue
            rec = self.spread + spread_used[0]
            store_be32(rec, size)
            memcpy(rec + HDR_LEN, data + off - size, size)
            spread_used[0] += HDR_LEN + size
            batch.rec[batch.count] = rec
            batch.length[batch.count] = size
            batch.count += 1
            batch.nbytes += size
        return batch

    cdef Py_ssize_t build_messages(self, char **frames, uint32_t *lengths, Py_ssize_t n):
        """Fill tx_msgs for frames 0..n-1, one message per GSO run; return the count."""
        cdef Py_ssize_t i = 0, j, m = 0, total
        cdef uint32_t size
        cdef msghdr *hdr
        cdef cmsghdr *cmsg
        cdef uint16_t segment
        for i in range(n):
            self.tx_iov[i].iov_base = frames[i]
            self.tx_iov[i].iov_len = lengths[i]
        i = 0
        while i < n:
            size = lengths[i]
            j = i + 1
            total = size
            if self.gso:
                while (j < n and j - i < GSO_SEGMENTS_MAX and lengths[j] == size
                       and total + size <= GSO_BYTES_MAX):
                    total += size
                    j += 1
                # One shorter frame may close the run: GSO's last segment can be short.
                if (j < n and j - i < GSO_SEGMENTS_MAX and lengths[j] < size
                        and total + lengths[j] <= GSO_BYTES_MAX):
                    j += 1
            hdr = &self.tx_msgs[m].msg_hdr
            hdr.msg_name = NULL if self.connected else &self.peer
            hdr.msg_namelen = 0 if self.connected else self.peer_len
            hdr.msg_iov = &self.tx_iov[i]
            hdr.msg_iovlen = j - i
            hdr.msg_flags = 0
            if j - i > 1:
                hdr.msg_control = self.tx_ctrl + m * GSO_CTRL
                hdr.msg_controllen = CMSG_SPACE(sizeof(uint16_t))
                cmsg = CMSG_FIRSTHDR(hdr)
                cmsg.cmsg_level = IPPROTO_UDP
                cmsg.cmsg_type = UDP_SEGMENT
                cmsg.cmsg_len = CMSG_LEN(sizeof(uint16_t))
                segment = size
                memcpy(CMSG_DATA(cmsg), &segment, sizeof(uint16_t))
            else:
                hdr.msg_control = NULL
                hdr.msg_controllen = 0
            self.tx_first[m] = i
            m += 1
            i = j
        self.tx_first[m] = n
        return m

    cdef int send_frames(self, char **frames, uint32_t *lengths, Py_ssize_t n) except -1:
        """Send frames to the peer; returns how many were consumed (sent or dropped).

        Stops early only when the socket buffer is full (EAGAIN): the caller queues the
        rest. A frame the kernel refuses for itself (too big, peer gone) is dropped and
        counted (drop_send); the frames sent are counted (tx).
        """
        cdef Py_ssize_t i, done = 0, m, sent_msgs, sent_frames
        cdef int r, err
        while done < n:
            m = self.build_messages(frames + done, lengths + done, n - done)
            r = sendmmsg(self.fd, self.tx_msgs, m, MSG_DONTWAIT)
            if r > 0:
                sent_frames = self.tx_first[r]
                for i in range(r):
                    if self.tx_first[i + 1] - self.tx_first[i] > 1:
                        self.gso_messages += 1
                for i in range(done, done + sent_frames):
                    self.tx_bytes += lengths[i]
                self.tx_frames += sent_frames
                done += sent_frames
                if not self.gso and self.gso_capable:
                    self.gso_resume_in -= sent_frames
                    self.gso = self.gso_resume_in <= 0
                continue
            err = errno
            if r < 0 and err == EINTR:
                continue
            if r < 0 and err == EAGAIN:
                break
            # ENOBUFS falls through to a counted drop: the kernel lost the datagram (a full
            # device queue), and waiting for EPOLLOUT would wake at once and fail again.
            if (self.tx_first[1] - self.tx_first[0] > 1
                    and (err == EINVAL or err == EIO or err == EMSGSIZE)):
                # The kernel will not segment for this peer (a route whose MTU is below the
                # frame size, a device without checksum offload): one datagram per frame
                # for a while, then GSO again. Other errors are the peer's, not GSO's.
                self.gso = False
                self.gso_resume_in = GSO_RETRY_FRAMES
                continue
            if self.connected and (err == ECONNREFUSED or err == ENOTCONN or err == ENOENT):
                # The peer went away (a restarted guest binds a new socket): connect again
                # with the next batch; this frame is lost, as it would be on the wire.
                self.connected = self.can_wait = False
            # The first frame failed for a reason of its own: drop it, go on.
            self.send_errors += 1
            self.last_send_errno = err
            self.drop_send += 1
            done += 1
        return done

    cdef int on_hangup(self, uint32_t events) except -1:
        """EPOLLERR on a datagram socket is an ICMP error for an earlier send: clear and count
        it, without reading frames nobody could take now. The port stays."""
        cdef int err = 0
        cdef socklen_t size = sizeof(err)
        if getsockopt(self.fd, SOL_SOCKET, SO_ERROR, &err, &size) == 0 and err:
            self.rx_errors += 1
            self.last_rx_errno = err
        return 0

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
            sent = self.send_frames(frames, lengths, n)
            pos = 0
            for i in range(sent):
                pos += HDR_LEN + lengths[i]
            q.advance(pos, NULL)  # counted by send_frames, as sent or as dropped
            if sent < n:
                if not self.can_wait and not (self.unix_fixed and self.try_connect()):
                    # The peer went away meanwhile (a new socket at its path, say) and no
                    # connection tells when it has room: an unconnected unix socket is
                    # always writable, so waiting would wake the hub for ever. What waits
                    # drops, as deliver() drops for such a peer.
                    self.drop_queue += q.frames
                    q.advance(q.tail - q.head, NULL)
                break
        return self.after_flush()
