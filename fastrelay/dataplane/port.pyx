# Port: one attachment of the hub (a socket, a tap or stdio) with its counters and backlog.

cdef class Port:
    """Base of every endpoint the data plane drives.

    Lifecycle, the same for every subclass: built by the control plane around a
    non-blocking fd it hands over (the port closes it), attached with Hub.add(), driven by
    the hub's epoll (on_readable/on_writable), and closed by Hub.remove() or by fail(),
    which also tells the control plane why through the hub's on_close callback. A closed
    port has fd == -1 and never becomes usable again; the control plane makes a new one.

    Subclasses implement on_readable() (read a batch, then hub.forward()), deliver()
    (send a batch now, queue the rest in the backlog within its bound) and on_writable()
    (send from the backlog).
    """

    def __cinit__(self, int fd, str name, *args, Py_ssize_t queue_bytes=QUEUE_DEFAULT,
                  bint owns_fd=True, **kwargs):
        if fd < 0:
            raise ValueError("fd must be an open descriptor")
        if not 0 <= queue_bytes <= QUEUE_MAX:
            raise ValueError(f"queue_bytes must be within 0..{QUEUE_MAX}")
        self.fd = fd
        self.wfd = fd
        self.name = name
        self.hub = None
        self.backlog = Backlog(queue_bytes)
        self.owns_fd = owns_fd

    def __dealloc__(self):
        self.close_fds()

    def __repr__(self):
        state = "closed" if self.fd < 0 else f"fd={self.fd}"
        return f"<{type(self).__name__} {self.name} {state}>"

    @property
    def closed(self):
        return self.fd < 0

    @property
    def queued_bytes(self):
        return len(self.backlog)

    @property
    def queued_frames(self):
        """Frames waiting in the backlog (a frame partly sent included): not yet sent."""
        return self.backlog.frames

    def close(self):
        """Close the port now: detach it from its hub (no callback) and close every descriptor."""
        if self.hub is not None:
            self.hub.remove(self)
        self.close_fds()

    def stats(self):
        """The counters as a dict (for the control plane's reports)."""
        return {
            "rx_frames": self.rx_frames, "rx_bytes": self.rx_bytes,
            "tx_frames": self.tx_frames, "tx_bytes": self.tx_bytes,
            "drop_queue": self.drop_queue, "drop_invalid": self.drop_invalid,
            "drop_send": self.drop_send, "drop_bounds": self.drop_bounds,
            "queued_bytes": len(self.backlog), "queued_frames": self.backlog.frames,
        }

    cdef int on_readable(self) except -1:
        raise NotImplementedError

    cdef int on_writable(self) except -1:
        raise NotImplementedError

    cdef int on_hangup(self, uint32_t events) except -1:
        """The peer hung up (or failed) while this port is not being read.

        That is while it is paused (no other port could take its frames, or it is alone) or
        while the hub drains for a graceful stop. Reading now would lose what is read, so:
        a peer that left nothing unread is closed at once (nothing is lost); one that left
        frames behind keeps them in the kernel until a peer can take them (then they are
        read to the end); while draining, input is not wanted.
        """
        cdef int pending = 0
        if events & EPOLLERR:
            return self.fail(socket_error_text(self.fd))
        if ioctl(self.fd, FIONREAD, &pending) < 0 or pending <= 0:
            # Nothing unread (or no way to tell): reading meets the end (or the error),
            # and the port closes with its own words for it.
            return self.on_readable()
        if self.hub.draining:
            return self.fail(f"closed by peer ({pending} bytes unread while stopping)", False)
        if events & EPOLLHUP:
            return self.hub.park(self)
        # Only its write side is shut (EPOLLRDHUP): stop asking until it may read again.
        self.armed &= ~EPOLLRDHUP
        return self.hub.update_events(self)

    cdef int on_output_error(self) except -1:
        """The separate write descriptor failed (e.g. stdout's reader went away)."""
        return self.fail("output closed by its reader")

    cdef void close_fds(self):
        """Close the descriptors this port owns (once); fd and wfd become -1."""
        if self.owns_fd:
            if self.wfd >= 0 and self.wfd != self.fd:
                close(self.wfd)
            if self.fd >= 0:
                close(self.fd)
        self.fd = self.wfd = -1

    cdef int deliver(self, FrameBatch *batch) except -1:
        raise NotImplementedError

    cdef int queue_from(self, FrameBatch *batch, Py_ssize_t i) except -1:
        """Queue whole records i.. of batch; refuse (count) those past the bound.

        A queued frame counts as sent (tx) only when its last byte leaves (on_writable).
        """
        while i < batch.count:
            if not self.backlog.push(batch.rec[i], HDR_LEN + batch.length[i], False):
                self.drop_queue += batch.count - i
                break
            i += 1
        return self.arm_if_queued()

    cdef int arm_if_queued(self) except -1:
        """Watch for writability while the backlog holds anything."""
        if len(self.backlog) and not self.write_armed and self.hub is not None:
            self.hub.want_write(self, True)
        return 0

    cdef ssize_t write_some(self, const char *data, size_t n):
        """One non-blocking write of a byte stream; -1 with errno set on failure."""
        return send(self.wfd, data, n, MSG_DONTWAIT | MSG_NOSIGNAL)

    cdef int flush_bytes(self, bint payloads) except -1:
        """on_writable() of a byte-stream port: send the backlog, then after_flush().

        The records go as they are (qemu's stream framing), or, for a port without
        framing (stdio), each record's payload only.
        """
        cdef Backlog q = self.backlog
        cdef ssize_t r
        while q.frames:
            if payloads:
                q.skip_header()
            r = self.write_some(q.data + q.head, (q.rec_end if payloads else q.tail) - q.head)
            if r < 0:
                if errno == EINTR:
                    continue
                if errno == EAGAIN:
                    break
                return self.fail(errno_text(errno))
            self.sent_from_backlog(r)
        return self.after_flush()

    cdef int sent_from_backlog(self, Py_ssize_t n) except -1:
        """n bytes of the backlog were sent: count the frames they completed."""
        cdef uint64_t nbytes = 0
        self.tx_frames += self.backlog.advance(n, &nbytes)
        self.tx_bytes += nbytes
        return 0

    cdef int after_flush(self) except -1:
        """Called when on_writable() made progress: once empty, stop watching, let paused
        peers read again."""
        if not len(self.backlog) and self.hub is not None:
            if self.write_armed:
                self.hub.want_write(self, False)
            self.hub.resume_readers()
        return 0

    cdef inline bint congested(self):
        """Frames are waiting: the socket is full, so reading more for it only queues.

        A source whose every peer is congested pauses (Hub.should_read) until one of
        them empties its backlog (after_flush). Waiting for an empty backlog rather than
        filling it to the bound keeps the data path in the reader's cache-warm buffer
        and the backlog small (measured: ~20% more frames/s at 1500 B, TCP); the kernel
        socket buffers on both sides keep the pipeline full meanwhile. So a point-to-point
        link or a hub of equally fast peers never drops, while one slow peer of a hub
        still fills its own backlog up to the bound and then loses its own frames.
        """
        return self.backlog.tail > self.backlog.head

    cdef int fail(self, str reason, bint fault=True) except -1:
        """Close this port because of reason (one line: why) and report it.

        fault is False for an orderly end (the peer closed, input ended).
        """
        if self.hub is not None:
            self.hub.remove(self, reason, fault)
        return 0
