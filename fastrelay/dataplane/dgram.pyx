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

    Several fixed peers (`peers=`, a list of addresses; a VXLAN port's remote endpoints):
    each frame goes to the peer its caller names (send_frames' `dests`), a GSO run only
    ever to one peer, and a frame queued for later keeps its peer's index in front of it
    (DEST_TAG_LEN bytes). Subclasses change what a datagram carries through four hooks:
    sender() (may this source send here, and the tag its records carry), unwrap() (bytes of
    an encapsulation header before the frame), fresh_batch() (a batch with their side
    arrays) and tx_hdr (a header sent before every frame); see vxlan.pyx.
    """

    def __cinit__(self, int fd, str name, *args, int family=AF_INET, peer=None,
                  bint learn_peer=False, peers=None, uint32_t max_frame=DGRAM_MAX, **kwargs):
        cdef Py_ssize_t i
        self.max_frame = min(max_frame, DGRAM_MAX)
        self.learn_peer = learn_peer
        # A fixed-peer port takes any source and never looks at it: asking the kernel for
        # none saves it a copy-out per datagram (move_addr_to_user, ~1.4% of the relay's
        # profile behind a one-sendto sender; the gain is within run-to-run noise).
        self.want_source = learn_peer
        self.peer_len = 0
        if peers:
            if peer is not None or learn_peer:
                raise ValueError(f"{name}: peers= excludes peer= and learn_peer=")
            if family != AF_INET and family != AF_INET6:
                raise ValueError(f"{name}: several peers need an inet socket (sent to by name)")
            if len(peers) > 0x7fff:
                # FrameBatch.remote names a peer in an int16.
                raise ValueError(f"{name}: {len(peers)} peers: at most {0x7fff}")
            self.peers = <sockaddr_storage *>PyMem_RawCalloc(len(peers), sizeof(sockaddr_storage))
            self.peer_lens = <socklen_t *>PyMem_RawCalloc(len(peers), sizeof(socklen_t))
            if self.peers == NULL or self.peer_lens == NULL:
                raise MemoryError()
            for i, address in enumerate(peers):
                self.peer_lens[i] = sockaddr_from_py(family, address, &self.peers[i])
            self.npeers = len(peers)
            self.peer_len = self.peer_lens[0]
            memcpy(&self.peer, &self.peers[0], self.peer_len)
        elif peer is not None:
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
        self.tx_iov = <iovec *>PyMem_RawCalloc(2 * IOV_MAX, sizeof(iovec))
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
        PyMem_RawFree(self.peers)
        PyMem_RawFree(self.peer_lens)

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
        cdef int n, i, reads, tag
        cdef unsigned int length
        cdef Py_ssize_t segment, spread_used, skip
        cdef FrameBatch *batch
        cdef char *slot
        for reads in range(READS_PER_EVENT):
            if reads and not self.hub.should_read(self):
                return 0
            for i in range(DGRAM_BATCH):
                if self.want_source:
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
            batch = self.fresh_batch()
            spread_used = 0
            for i in range(n):
                length = self.rx_msgs[i].msg_len
                slot = self.slots + i * DGRAM_SLOT
                segment = 0
                if self.gro and not self.rx_msgs[i].msg_hdr.msg_flags & MSG_TRUNC:
                    segment = gro_segment(&self.rx_msgs[i].msg_hdr)
                    if segment >= length:
                        segment = 0
                tag = self.sender(i, (length + segment - 1) // segment if segment > 0 else 1)
                if tag < 0:
                    continue  # refused (and counted) by sender()
                if segment > 0:
                    batch = self.split_coalesced(batch, slot + HDR_LEN, length, segment,
                                                 &spread_used, tag)
                    if self.fd < 0:
                        return 0
                    continue
                if self.rx_msgs[i].msg_hdr.msg_flags & MSG_TRUNC:
                    self.drop_invalid += 1
                    continue
                skip = self.unwrap(slot + HDR_LEN, length)
                if skip < 0:
                    continue  # refused (and counted) by unwrap()
                length -= skip
                if length > self.max_frame or length < FRAME_MIN:
                    self.drop_invalid += 1
                    continue
                # The record's length header goes in the 4 bytes before the frame: the gap in
                # front of the slot, or the end of the encapsulation header.
                self.add_record(batch, slot + skip, length, tag)
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

    cdef FrameBatch *fresh_batch(self):
        """An empty batch from the hub, with this port's side arrays (none here)."""
        return self.hub.new_batch()

    cdef int sender(self, Py_ssize_t i, Py_ssize_t datagrams) noexcept:
        """May received message i (of `datagrams` datagrams) be taken? Its records' tag
        (>= 0: kept in fresh_batch()'s side array), or -1: refused and counted here.
        A plain datagram port takes any source."""
        return 0

    cdef Py_ssize_t unwrap(self, const char *data, Py_ssize_t length) noexcept:
        """Bytes of encapsulation before the frame in a datagram of `length` bytes at data
        (at least HDR_LEN, or 0), or -1: dropped and counted here. Plain: none."""
        return 0

    cdef int add_record(self, FrameBatch *batch, char *rec, uint32_t length, int tag) except -1:
        """Append the frame at rec + HDR_LEN to batch, writing its length header at rec."""
        if overflows(batch.count + 1, BATCH_MAX, "datagram batch"):
            self.drop_bounds += 1
            return 0
        store_be32(rec, length)
        batch.rec[batch.count] = rec
        batch.length[batch.count] = length
        if batch.remote != NULL:
            batch.remote[batch.count] = <int16_t>tag
        batch.count += 1
        batch.nbytes += length
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
        if self.npeers:
            return self.deliver_each(batch)
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
            sent = self.send_frames(frames, lengths, NULL, n)
            done += sent
            if sent < n:
                if not self.can_wait:
                    self.drop_queue += batch.count - done
                    return 0
                return self.queue_from(batch, done)
        return 0

    cdef int deliver_each(self, FrameBatch *batch) except -1:
        """deliver() of a port with several peers: a frame with a remote
        (batch.remote[i] >= 0, set by the switch) goes to that one peer; any other goes to
        every peer (head-end replication; `replicated` counts the copies beyond the first).

        Consecutive frames for one peer stay together, so that GSO runs survive: a run of
        frames that flood goes to peer 0, then the same run to peer 1, and so on.
        """
        cdef char *frames[IOV_MAX]
        cdef uint32_t lengths[IOV_MAX]
        cdef uint16_t dests[IOV_MAX]
        cdef Py_ssize_t i = 0, j, k, n = 0
        cdef int r, p, first, last
        cdef bint sending = not len(self.backlog)
        while i < batch.count:
            r = -1
            j = batch.count
            if batch.remote != NULL:
                r = batch.remote[i]
                j = i + 1
                while j < batch.count and batch.remote[j] == r:
                    j += 1
            if overflows(r + 1, self.npeers, "remote endpoint index"):
                self.drop_bounds += j - i
                i = j
                continue
            first = r if r >= 0 else 0
            last = r + 1 if r >= 0 else self.npeers
            if r < 0:
                self.replicated += (self.npeers - 1) * (j - i)
            for p in range(first, last):
                for k in range(i, j):
                    frames[n] = batch.rec[k] + HDR_LEN
                    lengths[n] = batch.length[k]
                    dests[n] = <uint16_t>p
                    n += 1
                    if n == IOV_MAX:
                        sending = self.send_or_queue(frames, lengths, dests, n, sending)
                        n = 0
            i = j
        if n:
            self.send_or_queue(frames, lengths, dests, n, sending)
        return self.arm_if_queued()

    cdef int send_or_queue(self, char **frames, uint32_t *lengths, uint16_t *dests,
                           Py_ssize_t n, bint sending) except -1:
        """Send what the socket takes (nothing unless sending), queue the rest in order.
        Returns whether the next frames may still be sent at once (1) or must queue (0)."""
        cdef Py_ssize_t k, sent = self.send_frames(frames, lengths, dests, n) if sending else 0
        for k in range(sent, n):
            self.queue_to(frames[k], lengths[k], dests[k])
        return sent == n

    cdef FrameBatch *split_coalesced(self, FrameBatch *batch, char *data, Py_ssize_t length,
                                     Py_ssize_t segment, Py_ssize_t *spread_used,
                                     int tag) except NULL:
        """Split a UDP_GRO buffer of `length` bytes into records of `segment` bytes.

        Each datagram is unwrap()ped on its own (an encapsulation header starts each one);
        its records carry `tag`. Records go to `spread`; when the next one would not fit
        there, or the batch is full, the batch so far is forwarded and both start over (the
        ports have copied what they keep by then). Returns the batch to go on with.
        """
        cdef Py_ssize_t off = 0, size, skip
        cdef char *rec
        if self.spread == NULL:
            self.spread = <char *>PyMem_RawMalloc(GRO_SPREAD)
            if self.spread == NULL:
                raise MemoryError()
        self.gro_messages += 1
        while off < length:
            size = min(segment, length - off)
            off += size
            skip = self.unwrap(data + off - size, size)
            if skip < 0:
                continue  # refused (and counted) by unwrap()
            size -= skip
            if size < FRAME_MIN or size > self.max_frame:
                self.drop_invalid += 1
                continue
            if spread_used[0] + HDR_LEN + size > GRO_SPREAD or batch.count == BATCH_MAX:
                if batch.count:
                    self.hub.forward(self, batch)
                    if self.fd < 0:
                        return batch
                batch = self.fresh_batch()
                spread_used[0] = 0
            if overflows(spread_used[0] + HDR_LEN + size, GRO_SPREAD, "GRO spread buffer"):
                self.drop_bounds += 1
                continue
            rec = self.spread + spread_used[0]
            memcpy(rec + HDR_LEN, data + off - size, size)
            spread_used[0] += HDR_LEN + size
            self.add_record(batch, rec, <uint32_t>size, tag)
        return batch

    cdef Py_ssize_t build_messages(self, char **frames, uint32_t *lengths, uint16_t *dests,
                                   Py_ssize_t n):
        """Fill tx_msgs for frames 0..n-1 (n <= IOV_MAX), one message per GSO run; return
        the count. dests: the peer of each frame (an index into peers), or NULL: the peer.

        With a tx_hdr, each frame takes two iovecs, [tx_hdr][frame], and a GSO run's
        segment size is the header plus the frame: the kernel cuts the run into datagrams
        that each start with their own header.
        """
        cdef Py_ssize_t i = 0, j, m = 0, total, per = 2 if self.tx_hdr_len else 1
        cdef Py_ssize_t extra = self.tx_hdr_len
        cdef uint32_t size
        cdef uint16_t dest = 0
        cdef msghdr *hdr
        cdef cmsghdr *cmsg
        cdef uint16_t segment
        for i in range(n):
            if per == 2:
                self.tx_iov[2 * i].iov_base = self.tx_hdr
                self.tx_iov[2 * i].iov_len = self.tx_hdr_len
            self.tx_iov[per * i + per - 1].iov_base = frames[i]
            self.tx_iov[per * i + per - 1].iov_len = lengths[i]
        i = 0
        while i < n:
            size = lengths[i]
            j = i + 1
            total = size + extra
            if dests != NULL:
                dest = dests[i]
            if self.gso:
                while (j < n and j - i < GSO_SEGMENTS_MAX and lengths[j] == size
                       and total + extra + size <= GSO_BYTES_MAX
                       and (dests == NULL or dests[j] == dest)):
                    total += extra + size
                    j += 1
                # One shorter frame may close the run: GSO's last segment can be short.
                if (j < n and j - i < GSO_SEGMENTS_MAX and lengths[j] < size
                        and total + extra + lengths[j] <= GSO_BYTES_MAX
                        and (dests == NULL or dests[j] == dest)):
                    j += 1
            hdr = &self.tx_msgs[m].msg_hdr
            if dests != NULL:
                hdr.msg_name = &self.peers[dest]
                hdr.msg_namelen = self.peer_lens[dest]
            else:
                hdr.msg_name = NULL if self.connected else &self.peer
                hdr.msg_namelen = 0 if self.connected else self.peer_len
            hdr.msg_iov = &self.tx_iov[per * i]
            hdr.msg_iovlen = per * (j - i)
            hdr.msg_flags = 0
            if j - i > 1:
                hdr.msg_control = self.tx_ctrl + m * GSO_CTRL
                hdr.msg_controllen = CMSG_SPACE(sizeof(uint16_t))
                cmsg = CMSG_FIRSTHDR(hdr)
                cmsg.cmsg_level = IPPROTO_UDP
                cmsg.cmsg_type = UDP_SEGMENT
                cmsg.cmsg_len = CMSG_LEN(sizeof(uint16_t))
                segment = <uint16_t>(extra + size)
                memcpy(CMSG_DATA(cmsg), &segment, sizeof(uint16_t))
            else:
                hdr.msg_control = NULL
                hdr.msg_controllen = 0
            self.tx_first[m] = i
            m += 1
            i = j
        self.tx_first[m] = n
        return m

    cdef int send_frames(self, char **frames, uint32_t *lengths, uint16_t *dests,
                         Py_ssize_t n) except -1:
        """Send frames (n <= IOV_MAX) to the peer, or each to its peer of dests (see
        build_messages); returns how many were consumed (sent or dropped).

        Stops early only when the socket buffer is full (EAGAIN): the caller queues the
        rest. A frame the kernel refuses for itself (too big, peer gone) is dropped and
        counted (drop_send; drop_mtu too when it is too big for the path); the frames
        sent are counted (tx, frame bytes without tx_hdr).
        """
        cdef Py_ssize_t i, done = 0, m, sent_msgs, sent_frames
        cdef int r, err
        while done < n:
            m = self.build_messages(frames + done, lengths + done,
                                    dests + done if dests != NULL else NULL, n - done)
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
            if err == EMSGSIZE:
                self.drop_mtu += 1
            done += 1
        return done

    cdef int queue_to(self, char *frame, uint32_t length, uint16_t dest) except -1:
        """Queue one frame for peer `dest` of peers (a port with several peers); a frame
        past the bound is dropped and counted. The caller arms for writability."""
        if not self.backlog.push_record(<char *>&dest, DEST_TAG_LEN, frame, length, False):
            self.drop_queue += 1
        return 0

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
        cdef uint16_t dests[IOV_MAX]
        cdef Py_ssize_t n, pos, sent, i, tag = DEST_TAG_LEN if self.npeers else 0
        cdef Backlog q = self.backlog
        while q.tail > q.head:
            n = 0
            pos = q.head
            while pos < q.tail and n < IOV_MAX:
                # A port with several peers queued [be32 n][peer index][frame]: see queue_to.
                lengths[n] = load_be32(q.data + pos) - tag
                if tag:
                    memcpy(&dests[n], q.data + pos + HDR_LEN, DEST_TAG_LEN)
                frames[n] = q.data + pos + HDR_LEN + tag
                pos += HDR_LEN + tag + lengths[n]
                n += 1
            sent = self.send_frames(frames, lengths, dests if tag else NULL, n)
            pos = 0
            for i in range(sent):
                pos += HDR_LEN + tag + lengths[i]
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
