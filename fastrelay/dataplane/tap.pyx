# TapPort: a Linux tap (IFF_TAP|IFF_NO_PI|IFF_VNET_HDR), one or several queue descriptors.

# Theory of operation
# -------------------
# Our taps are set up the way qemu sets one up for vhost-net (tapdev.py): every read
# returns a 12-byte virtio_net_hdr and one frame, every write takes the same. The header
# is read together with its frame (one read()), copied into a side array
# (FrameBatch.vnet), and its last 4 bytes then hold the record's length: the frame is a
# qemu stream record like any other, so a stream peer sends `rec` and a datagram peer
# `rec + HDR_LEN`, as for any other source (records are 6 bytes apart, not contiguous).
#
# GSO / offload decision (measured, see bench/RESULTS.md): the kernel hands us 64 KiB
# TCP super-frames only when the tap's offloads are on (TUNSETOFFLOAD), and only a tap
# can take such a frame back (with its header). The control plane turns offloads on only
# when every port the relay can ever have is a tap: point to point between two taps or
# bridges. There a super-frame crosses the relay in one read and one write: one tap to
# tap TCP stream moves tens of Gbit/s instead of the ~300k frames/s (~3.5 Gbit/s at 1500
# bytes) one read per MTU-sized frame allows. With any plain peer possible (a hub, a
# socket target) offloads stay off and the kernel segments and checksums in C before we
# read, cheaper than any segmentation we could do here. As a guard, should a super-frame
# still meet a plain port (offloads forced on), it is dropped and counted (drop_gso), and
# a frame with its checksum left to fill has it filled here first (csum_filled): plain
# peers never see a vnet header, a super-frame or a partial checksum.
#
# Writes: a tap write never blocks in practice (the frame is handed to the stack in the
# writer's context), so frames are written at once, one writev (header + frame) each;
# EAGAIN still queues into the bounded backlog, records there carrying their header. A tap
# that is down refuses writes (EIO): those frames are dropped and counted, the port stays.
# Multi-queue taps: every queue is read (the kernel spreads flows over them), in turn;
# all writes go to queue 0, which keeps each flow in order.

cdef inline uint16_t csum_add(const unsigned char *p, Py_ssize_t n) noexcept nogil:
    """Internet checksum (RFC 1071) over n bytes, folded, not inverted."""
    cdef uint64_t s = 0
    cdef Py_ssize_t i = 0
    while i + 1 < n:
        s += (<uint64_t>p[i] << 8) | p[i + 1]
        i += 2
    if i < n:
        s += <uint64_t>p[i] << 8
    while s >> 16:
        s = (s & 0xffff) + (s >> 16)
    return <uint16_t>s


cdef class TapPort(Port):
    """A tap device opened by the control plane (tapdev.py), one fd per queue.

    `fd` is queue 0's descriptor; for a multi-queue tap the other queues are given in
    `queues` and the port watches them all through a private epoll descriptor (which
    becomes `fd`; queue 0 stays `wfd`). `offload` says the tap's offloads are on, so
    frames read may be GSO super-frames or carry a partial checksum. The port owns every
    queue descriptor; close_queues() releases the extra ones when the hub has closed it,
    so a non-persistent tap vanishes at once.
    """

    def __cinit__(self, int fd, str name, *args, queues=(), bint offload=False,
                  uint32_t max_frame=FRAME_MAX, **kwargs):
        cdef int i, ep
        cdef epoll_event ev
        extra = [int(q) for q in queues]
        if 1 + len(extra) > TAP_QUEUES_MAX:
            raise ValueError(f"{name}: at most {TAP_QUEUES_MAX} queues")
        self.offload = offload
        self.max_frame = max_frame
        self.nqueues = 1 + len(extra)
        self.queues = <int *>PyMem_RawMalloc(self.nqueues * sizeof(int))
        self.buf = <char *>PyMem_RawMalloc(TAP_BUF)
        self.rx_vnet = <virtio_net_hdr *>PyMem_RawCalloc(
            TAP_BATCH, sizeof(virtio_net_hdr))
        if self.queues == NULL or self.buf == NULL or self.rx_vnet == NULL:
            raise MemoryError()
        memset(&self.plain_hdr, 0, sizeof(virtio_net_hdr))
        self.queues[0] = fd
        for i in range(1, self.nqueues):
            self.queues[i] = extra[i - 1]
        if self.nqueues > 1:
            # One descriptor for the hub to watch: readable when any queue is.
            ep = epoll_create1(EPOLL_CLOEXEC)
            if ep < 0:
                PyErr_SetFromErrno(OSError)
            for i in range(self.nqueues):
                ev.events = EPOLLIN
                ev.data.u64 = <uint64_t>i
                if epoll_ctl(ep, EPOLL_CTL_ADD, self.queues[i], &ev) < 0:
                    close(ep)
                    PyErr_SetFromErrno(OSError)
            self.fd = ep
            self.wfd = fd

    def __dealloc__(self):
        self.close_fds()
        PyMem_RawFree(self.queues)
        # Port.__dealloc__ runs next and calls close_fds() again (through this class's
        # vtable): it must find no queue array.
        self.queues = NULL
        PyMem_RawFree(self.buf)
        PyMem_RawFree(self.rx_vnet)

    cdef void close_fds(self):
        """Close every queue descriptor and the private epoll set, with the base ones.

        All at once when the port closes (not at garbage collection): a tap created for a
        bridge vanishes only when its last queue is closed.
        """
        cdef int i
        if self.queues != NULL and self.owns_fd:
            # queues[0] is wfd, closed by Port.close_fds() (fd is the private epoll set).
            for i in range(1, self.nqueues):
                if self.queues[i] >= 0:
                    close(self.queues[i])
                    self.queues[i] = -1
        Port.close_fds(self)

    def close_queues(self):
        """Close every descriptor of the tap now (detaching the port if it is attached)."""
        self.close()

    cdef int on_hangup(self, uint32_t events) except -1:
        """A tap reports EPOLLERR/EPOLLHUP only when its device is gone."""
        return self.fail("tap device removed")

    def stats(self):
        """The common counters plus the tap's own."""
        d = Port.stats(self)
        d.update(drop_gso=self.drop_gso, csum_filled=self.csum_filled,
                 write_errors=self.write_errors)
        return d

    cdef bint plain_peers(self):
        """True if a port that cannot take a vnet header (not a tap) is attached."""
        cdef Port p
        for p in self.hub.live:
            if p is not self and not isinstance(p, TapPort):
                return True
        return False

    cdef int fix_for_plain(self, FrameBatch *batch) except -1:
        """Make batch safe for plain ports: fill partial checksums, drop super-frames."""
        cdef Py_ssize_t i, kept = 0
        cdef virtio_net_hdr *h
        cdef unsigned char *frame
        cdef uint32_t start, where
        cdef uint16_t s
        for i in range(batch.count):
            h = &batch.vnet[i]
            frame = <unsigned char *>batch.rec[i] + HDR_LEN
            if h.gso_type != VIRTIO_NET_HDR_GSO_NONE:
                self.drop_gso += 1
                batch.nbytes -= batch.length[i]
                continue
            if h.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM:
                start = h.csum_start
                where = start + h.csum_offset
                if where + 2 > batch.length[i]:
                    self.drop_invalid += 1
                    batch.nbytes -= batch.length[i]
                    continue
                # The field holds the pseudo-header sum: summing over it completes it.
                s = ~csum_add(frame + start, batch.length[i] - start)
                frame[where] = s >> 8
                frame[where + 1] = s & 0xff
                h.flags = VIRTIO_NET_HDR_F_DATA_VALID
                self.csum_filled += 1
            if kept != i:
                batch.rec[kept] = batch.rec[i]
                batch.length[kept] = batch.length[i]
                batch.vnet[kept] = batch.vnet[i]
            kept += 1
        batch.count = kept
        return 0

    cdef int on_readable(self) except -1:
        cdef int reads, q, idle, err = 0
        cdef Py_ssize_t pos
        cdef ssize_t n
        cdef FrameBatch *batch
        cdef char *slot
        for reads in range(READS_PER_EVENT):
            if reads and not self.hub.should_read(self):
                return 0
            batch = self.hub.new_batch()
            pos = 0
            idle = 0          # queues found empty one after the other
            q = self.next_queue
            # Read until every queue is empty, the batch is full or STREAM_READ bytes are in.
            while idle < self.nqueues and batch.count < TAP_BATCH and pos < STREAM_READ:
                # One plain read() of [header|frame] (readv's iovec import costs more):
                # the header is copied aside, then the record's length goes over its tail.
                slot = self.buf + pos
                if overflows(pos + VNET_HDR_LEN + TAP_FRAME_MAX, TAP_BUF, "tap read buffer"):
                    break
                n = read(self.queues[q], slot, VNET_HDR_LEN + TAP_FRAME_MAX)
                if n <= 0:
                    if n < 0 and errno == EINTR:
                        continue
                    if n == 0 or errno == EAGAIN:
                        idle += 1
                        q = q + 1 if q + 1 < self.nqueues else 0
                        continue
                    if errno == EFAULT or errno == EINVAL or errno == EMSGSIZE:
                        # One frame the kernel could not hand over (it is gone): not fatal.
                        self.drop_invalid += 1
                        continue
                    err = errno
                    break
                idle = 0
                n -= VNET_HDR_LEN
                memcpy(&self.rx_vnet[batch.count], slot, VNET_HDR_LEN)
                if n < FRAME_MIN or (n > self.max_frame and
                                     self.rx_vnet[batch.count].gso_type ==
                                     VIRTIO_NET_HDR_GSO_NONE):
                    self.drop_invalid += 1
                    continue
                slot += VNET_HDR_LEN - HDR_LEN
                store_be32(slot, <uint32_t>n)
                batch.rec[batch.count] = slot
                batch.length[batch.count] = <uint32_t>n
                batch.count += 1
                batch.nbytes += n
                pos += VNET_HDR_LEN + n
            # Start the next batch at the next queue, so one busy queue cannot starve the rest.
            self.next_queue = q + 1 if q + 1 < self.nqueues else 0
            if batch.count:
                batch.vnet = self.rx_vnet
                if self.offload and self.plain_peers():
                    self.fix_for_plain(batch)
                if batch.count:
                    self.hub.forward(self, batch)
            if err:
                if err == EBADFD:
                    return self.fail("tap device removed")
                return self.fail(errno_text(err))
            if self.fd < 0 or idle >= self.nqueues:
                return 0
        return 0

    cdef int write_frame(self, const virtio_net_hdr *hdr, char *frame,
                         uint32_t length) except -2:
        """writev one header + frame to queue 0.

        Returns 1 written, 2 refused by the tap (dropped, counted), 0 would block, -1 the
        port failed (it is closed).
        """
        cdef iovec iov[2]
        cdef ssize_t r
        iov[0].iov_base = <void *>hdr
        iov[0].iov_len = VNET_HDR_LEN
        iov[1].iov_base = frame
        iov[1].iov_len = length
        r = writev(self.wfd, iov, 2)
        while r < 0 and errno == EINTR:
            r = writev(self.wfd, iov, 2)
        if r >= 0:
            return 1
        if errno == EAGAIN:
            return 0
        if errno == EBADFD:
            self.fail("tap device removed")
            return -1
        # Down (EIO), a frame it will not take (EINVAL), no memory: drop this frame only.
        self.write_errors += 1
        self.last_write_errno = errno
        self.drop_send += 1
        return 2

    cdef int deliver(self, FrameBatch *batch) except -1:
        cdef Py_ssize_t i
        cdef int r
        cdef const virtio_net_hdr *hdr = &self.plain_hdr
        if len(self.backlog):
            return self.queue_from(batch, 0)
        for i in range(batch.count):
            if batch.vnet != NULL:
                hdr = &batch.vnet[i]
            r = self.write_frame(hdr, batch.rec[i] + HDR_LEN, batch.length[i])
            if r < 0:
                return 0
            if r == 0:
                return self.queue_from(batch, i)
            if r == 1:
                self.tx_frames += 1
                self.tx_bytes += batch.length[i]
        return 0

    cdef int queue_from(self, FrameBatch *batch, Py_ssize_t i) except -1:
        """Queue records i.. with their vnet header: [be32 VNET_HDR_LEN + n][header][frame]."""
        cdef const char *hdr
        while i < batch.count:
            hdr = (<const char *>&batch.vnet[i] if batch.vnet != NULL
                   else <const char *>&self.plain_hdr)
            if not self.backlog.push_record(hdr, VNET_HDR_LEN, batch.rec[i] + HDR_LEN,
                                            batch.length[i], False):
                self.drop_queue += batch.count - i
                break
            i += 1
        return self.arm_if_queued()

    cdef int on_writable(self) except -1:
        cdef Backlog q = self.backlog
        cdef uint32_t n
        cdef ssize_t r
        while q.tail > q.head:
            n = load_be32(q.data + q.head)
            # Header and frame are contiguous here: one write.
            r = write(self.wfd, q.data + q.head + HDR_LEN, n)
            if r < 0:
                if errno == EINTR:
                    continue
                if errno == EAGAIN:
                    break
                if errno == EBADFD:
                    return self.fail("tap device removed")
                self.write_errors += 1
                self.last_write_errno = errno
                self.drop_send += 1
            else:
                self.tx_frames += 1
                self.tx_bytes += n - VNET_HDR_LEN
            q.advance(HDR_LEN + n, NULL)
        return self.after_flush()


# ioctl numbers and flags from <linux/if_tun.h>, for the control plane (tapdev.py), so
# that no number is written down twice.
TUN_CONSTANTS = {
    "TUNSETIFF": TUNSETIFF, "TUNGETIFF": TUNGETIFF, "TUNSETPERSIST": TUNSETPERSIST,
    "TUNSETOWNER": TUNSETOWNER, "TUNGETFEATURES": TUNGETFEATURES,
    "TUNSETOFFLOAD": TUNSETOFFLOAD, "TUNSETVNETHDRSZ": TUNSETVNETHDRSZ,
    "IFF_TUN": IFF_TUN, "IFF_TAP": IFF_TAP, "IFF_NO_PI": IFF_NO_PI,
    "IFF_VNET_HDR": IFF_VNET_HDR, "IFF_MULTI_QUEUE": IFF_MULTI_QUEUE,
    "IFF_TUN_EXCL": IFF_TUN_EXCL,
    "TUN_F_CSUM": TUN_F_CSUM, "TUN_F_TSO4": TUN_F_TSO4, "TUN_F_TSO6": TUN_F_TSO6,
    "TUN_F_TSO_ECN": TUN_F_TSO_ECN, "TUN_F_UFO": TUN_F_UFO,
    "VNET_HDR_LEN": VNET_HDR_LEN,
}
