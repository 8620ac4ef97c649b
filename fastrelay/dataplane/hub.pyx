# Hub: the switchboard; every frame one port reads goes where its Switch says (hub: everywhere).

cdef enum:
    # Set in the epoll data of a port's separate write descriptor (stdio's stdout): tells
    # its events from those of the read side. Python objects are at least 8-byte aligned.
    WFD_TAG = 1

# Every hub of this process in one epoll set (their epoll descriptors, nested): a daemon
# serves every link's hub from one event loop, so while one hub waits for more frames
# (batch wait) another's wait in its sockets too. A hub about to wait looks here first
# and does not wait when another hub has something ready. -1 until the first hub.
cdef int hubs_epfd = -1
cdef int hubs_count = 0  # hubs in hubs_epfd: with one, none other can be ready

cdef enum:
    # What follows a round (Hub.next_round).
    ROUND_NONE = 0
    ROUND_NOW = 1
    ROUND_AFTER_WAIT = 2

cdef class Hub:
    """Fan-out of frames between ports, driven by one epoll set.

    The control plane watches `fileno()` with its event loop and calls `poll()` when it is
    readable: Python runs once per wake-up, everything per frame happens in C. A frame
    read from one port is offered to every other attached port, never back to its source.
    Each port either sends it at once or queues it in its bounded backlog; a full backlog
    (or a spent QueueBudget, shared by every port's backlog) drops whole frames for that
    port only. What the hub guarantees: a source is paused only while every other port is
    congested (its kernel buffer then pushes back on the sender). So point to point never
    drops a frame; in a hub, a port slower than the fastest of its peers loses its own
    frames (counted as drop_queue) and never slows the others.

    Where a frame goes is the Switch's decision (switch.pyx), made once per batch: with
    forwarding off (a hub, the default) every frame floods to every other port, and the
    switch only learns, to report duplicate MACs and loops; with forwarding on (a learning
    switch) known unicast goes to one port. Either way each destination port is handed its
    subset of the batch as views into the reader's buffer: the hub's flood is the switch
    with nothing learned to act on, not a second code path. Switch events (a loop, a
    duplicate MAC) go to on_event(events) once per poll(); tick() is the switch's
    once-a-second housekeeping.
    """

    def __cinit__(self, on_close=None, QueueBudget budget=None, Switch switch=None,
                  on_event=None):
        global hubs_epfd, hubs_count
        cdef epoll_event ev
        self.epfd = epoll_create1(EPOLL_CLOEXEC)
        if self.epfd < 0:
            PyErr_SetFromErrno(OSError)
        self.owns_epfd = True
        if hubs_epfd < 0:
            hubs_epfd = epoll_create1(EPOLL_CLOEXEC)
        ev.events = EPOLLIN
        ev.data.fd = self.epfd
        if hubs_epfd < 0 or epoll_ctl(hubs_epfd, EPOLL_CTL_ADD, self.epfd, &ev) < 0:
            PyErr_SetFromErrno(OSError)
        self.in_hubs = True
        hubs_count += 1
        self.live = []
        self.closing = []
        self.paused = []
        self.on_close = on_close
        self.budget = budget if budget is not None else QueueBudget()
        self.switch = switch if switch is not None else Switch(forwarding=False)
        self.slots = [None] * SWITCH_PORTS_MAX
        self.on_event = on_event
        self.captures = []
        self.batch_rec = <char **>PyMem_RawMalloc(BATCH_MAX * sizeof(char *))
        self.batch_len = <uint32_t *>PyMem_RawMalloc(BATCH_MAX * sizeof(uint32_t))
        self.events = <epoll_event *>PyMem_RawMalloc(EVENTS_MAX * sizeof(epoll_event))
        self.rxbuf = <char *>PyMem_RawMalloc(STREAM_BUF)
        if (self.batch_rec == NULL or self.batch_len == NULL or self.events == NULL
                or self.rxbuf == NULL):
            raise MemoryError()

    def __dealloc__(self):
        global hubs_count
        if self.in_hubs:
            hubs_count -= 1
        if self.owns_epfd:
            epoll_ctl(hubs_epfd, EPOLL_CTL_DEL, self.epfd, NULL)
            close(self.epfd)
        PyMem_RawFree(self.batch_rec)
        PyMem_RawFree(self.batch_len)
        PyMem_RawFree(self.events)
        PyMem_RawFree(self.rxbuf)

    def fileno(self):
        return self.epfd

    @property
    def ports(self):
        """The attached ports (a copy)."""
        return list(self.live)

    def add(self, Port port, bint trunk=False):
        """Attach a port: from now on it receives the frames the switch sends it.

        trunk: the port is a link to another relay (split horizon: what came in on one
        trunk never goes out on another). An overlay port (VXLAN) is a trunk whatever
        trunk says, and is handed each frame's remote endpoint (Switch.attach).
        """
        cdef epoll_event ev
        cdef int32_t sid
        if port.fd < 0:
            raise ValueError(f"{port.name}: port is closed")
        if port.hub is not None:
            raise ValueError(f"{port.name}: port is already attached")
        # An overlay port (VXLAN) is always a trunk: see Switch.attach.
        sid = self.switch.attach(trunk, port.overlay)
        ev.events = 0 if self.draining else EPOLLIN | EPOLLRDHUP
        ev.data.ptr = <void *>port
        if epoll_ctl(self.epfd, EPOLL_CTL_ADD, port.fd, &ev) < 0:
            self.switch.detach(sid)
            PyErr_SetFromErrno(OSError)
        port.wfd_watched = False
        if port.wfd != port.fd:
            ev.events = 0
            ev.data.u64 = <uint64_t><void *>port | WFD_TAG
            if epoll_ctl(self.epfd, EPOLL_CTL_ADD, port.wfd, &ev) == 0:
                port.wfd_watched = True
            elif errno != EPERM:
                epoll_ctl(self.epfd, EPOLL_CTL_DEL, port.fd, NULL)
                self.switch.detach(sid)
                PyErr_SetFromErrno(OSError)
            # EPERM: a regular file or /dev/null, always writable: nothing to watch.
        port.armed = 0 if self.draining else EPOLLIN | EPOLLRDHUP
        port.paused = port.parked = False
        port.switch_id = sid
        port.trunk = trunk or port.overlay
        self.slots[sid & SWITCH_SLOT_MASK] = port
        port.hub = self
        port.backlog.budget = self.budget
        self.live = self.live + [port]
        # A new peer may relieve congestion: let paused readers look again.
        self.resume_readers()

    def remove(self, Port port, reason=None, bint fault=True):
        """Detach and close a port; on_close(port, reason, fault) is called when reason is given."""
        if port.hub is not self:
            return
        if not port.parked:
            epoll_ctl(self.epfd, EPOLL_CTL_DEL, port.fd, NULL)
        if port.wfd_watched:
            epoll_ctl(self.epfd, EPOLL_CTL_DEL, port.wfd, NULL)
        self.live = [p for p in self.live if p is not port]
        self.slots[port.switch_id & SWITCH_SLOT_MASK] = None  # no frame goes to it now
        if port in self.paused:
            self.paused.remove(port)
        port.hub = None
        # epoll may still hold an event naming this port in the current poll(): keep the
        # object alive until poll() returns (events carry a borrowed pointer).
        self.closing.append(port)
        port.close_fds()
        self.resume_readers()
        try:
            if reason is not None and self.on_close is not None:
                self.on_close(port, reason, fault)
        finally:
            # on_close has read the figures (the port's and the switch's): what is still
            # queued was never sent, and the switch forgets the port and, at once, every
            # MAC learned on it.
            port.backlog.release()
            self.switch.detach(port.switch_id)

    def stop_reading(self):
        """Read no port again; backlogs keep flushing (a graceful stop drains them)."""
        cdef Port p
        self.draining = True
        self.paused = []
        for p in self.live:
            p.paused = True
            p.armed = 0
            self.update_events(p)

    def close(self):
        """Detach and close every port (no callbacks)."""
        for port in list(self.live):
            self.remove(port)
        if not self.polling:
            # Called from a callback inside poll(), the ports must stay alive until poll()
            # has gone through its events (each names its port by a borrowed pointer).
            self.closing = []

    @property
    def batch_wait(self):
        """Seconds a streaming hub waits for more frames before it looks again (see poll())."""
        return self.linger_ns / 1e9

    @batch_wait.setter
    def batch_wait(self, double seconds):
        if not 0 <= seconds * 1e9 <= LINGER_MAX_NS:
            raise ValueError(f"batch wait {seconds * 1e6:g} us out of range: "
                             f"0..{LINGER_MAX_NS // 1000} us")
        self.linger_ns = <int64_t>(seconds * 1e9)
        if self.linger_ns:
            # The calling thread's timer slack (50 us by default) would stretch every wait
            # by up to that much: ask for a tenth of the wait. poll() runs on this thread.
            prctl(PR_SET_TIMERSLACK, max(1000, self.linger_ns // 10), 0, 0, 0)

    def poll(self):
        """Handle every ready port; call when fileno() is readable. Returns events handled.

        Batch wait. A sender that writes one datagram (or one stream record) per frame, as
        qemu does, wakes a relay that keeps up with it once per frame, and the wake-up
        (epoll, the event loop, the call into the data plane) then costs more than the
        frame. So when a round has forwarded a burst (two or more frames) or a stream (one,
        from the port that forwarded in the round before) just after the round before, the
        hub waits `batch_wait` and looks again: the frames that came meanwhile are read,
        and sent, as one batch (next_round() decides). What was read is always forwarded
        before the wait, so a frame waits at most batch_wait; one frame in flight at a
        time (a ping, request and response) comes from alternating ports and never waits.
        Rounds go on for up to POLL_BUDGET_NS, then the control plane's loop runs; none
        follows while another hub of the process has work (others_ready).
        """
        cdef int n, total, rounds = 0, next_round
        cdef int64_t started, first
        if self.polling:
            # From a callback: a nested epoll_wait() would overwrite the events being handled.
            raise RuntimeError("Hub.poll() called from inside Hub.poll()")
        cdef timespec wait
        first = started = monotonic_ns() if self.linger_ns else 0
        total = n = self.poll_round()
        while True:
            next_round = self.next_round(started, rounds > 0)
            if (next_round == ROUND_NONE or self.others_ready()
                    or (rounds and monotonic_ns() - first >= POLL_BUDGET_NS)):
                break
            if next_round == ROUND_AFTER_WAIT:
                wait.tv_sec = 0
                wait.tv_nsec = self.linger_ns
                with nogil:
                    clock_nanosleep(CLOCK_MONOTONIC, 0, &wait, NULL)
                self.waits += 1
            rounds += 1
            started = monotonic_ns()
            n = self.poll_round()
            total += n
        return total

    cdef int next_round(self, int64_t started, bint again) noexcept:
        """What follows the round that began at `started` and just ended (`again`: it was
        not poll()'s first): ROUND_NONE (return to the event loop), ROUND_NOW or
        ROUND_AFTER_WAIT.

        A busy round (LINGER_FRAMES or more) is followed by another at once: the frames
        are coming faster than one round reads them, so more are waiting already, and the
        event loop would only call poll() again (with captures, it writes them out: then
        poll() returns). A wait follows a round that forwarded a
        few frames soon after the round before (LINGER_GAP_FACTOR waits), either several
        of them (a burst: more is likely on its way) or one from the same port as the
        round before (a stream). One frame after one frame from another port is a reply:
        it never waits. A wait that gathered fewer than two frames bought nothing (a
        sparse stream, or one frame in flight whose answer does not pass here): the next
        LINGER_BACKOFF rounds do not wait. Also closes the round: its reader becomes the
        previous round's."""
        cdef void *reader = NULL if self.round_mixed else self.round_reader
        cdef bint after_wait = again and self.last_waited
        cdef bint after_busy = again and self.last_busy
        cdef bint linger = (after_busy
                            or ((self.round_frames >= 2
                                 or (reader != NULL and reader == self.last_reader))
                                and (after_wait or started - self.last_round_end
                                     < LINGER_GAP_FACTOR * self.linger_ns)))
        self.last_reader = reader
        self.last_waited = False
        self.last_busy = False
        if not self.linger_ns:
            return ROUND_NONE
        self.last_round_end = monotonic_ns()
        if self.round_frames >= LINGER_FRAMES:
            if self.captures:
                # Only the control plane empties a capture, between polls: the next busy
                # round would add its frames to this one's and overflow a buffer whose
                # output keeps up.
                return ROUND_NONE
            self.last_busy = True
            return ROUND_NOW
        if after_wait and self.round_frames < 2:
            self.linger_skip = LINGER_BACKOFF
            return ROUND_NONE
        if self.linger_skip:
            self.linger_skip -= 1
            return ROUND_NONE
        if not linger:
            return ROUND_NONE
        self.last_waited = True
        return ROUND_AFTER_WAIT

    cdef bint others_ready(self) noexcept:
        """Has another hub of this process something ready? Then the event loop serving
        both waits for this poll() to return: waiting for more frames here would make
        that hub's frames wait as long."""
        cdef epoll_event ev[2]
        if hubs_count < 2:
            return False
        cdef int n = epoll_wait(hubs_epfd, ev, 2, 0)
        return n == 2 or (n == 1 and ev[0].data.fd != self.epfd)

    cdef int poll_round(self) except -1:
        """One epoll_wait() (not blocking) and its events; returns the events handled."""
        cdef int n, i
        cdef uint32_t ev
        cdef uint64_t data
        cdef Port port
        self.round_reader = NULL
        self.round_mixed = False
        self.round_frames = 0
        n = epoll_wait(self.epfd, self.events, EVENTS_MAX, 0)
        if n < 0:
            if errno == EINTR:
                return 0
            PyErr_SetFromErrno(OSError)
        self.polling = True
        try:
            for i in range(n):
                data = self.events[i].data.u64
                port = <Port><void *>(data & ~(<uint64_t>WFD_TAG))
                ev = self.events[i].events
                if port.fd < 0:
                    continue
                if data & WFD_TAG:
                    # The separate write side: writable, or its reader went away.
                    if ev & EPOLLOUT:
                        port.on_writable()
                    elif ev & (EPOLLERR | EPOLLHUP):
                        port.on_output_error()
                    continue
                if ev & EPOLLOUT:
                    port.on_writable()
                    if port.fd < 0:
                        continue
                if ev & (EPOLLERR | EPOLLHUP | EPOLLRDHUP):
                    # The peer left or failed (reported even while paused). A port that
                    # may be read meets the end or the error by reading; one that may not
                    # (paused, alone, draining) must not lose what reading would take.
                    if not self.draining and not port.paused and self.should_read(port):
                        port.on_readable()
                    else:
                        port.on_hangup(ev)
                elif ev & EPOLLIN and port.armed & EPOLLIN and self.should_read(port):
                    port.on_readable()
        finally:
            self.polling = False
            if self.closing:
                self.closing = []
                self.round_mixed = True  # a port left: never wait on its identity
            if self.switch.ev_count and self.on_event is not None:
                self.on_event(self.switch.drain_events())
        return n

    def tick(self):
        """Once a second or so: the switch's housekeeping (holds that ended, aging)."""
        self.switch.tick(monotonic_ns())
        if self.switch.ev_count and self.on_event is not None:
            self.on_event(self.switch.drain_events())

    def add_capture(self, Capture capture):
        """Start copying the frames of the ports `capture` selects (see Capture)."""
        if capture not in self.captures:
            self.captures = self.captures + [capture]

    def remove_capture(self, Capture capture):
        self.captures = [c for c in self.captures if c is not capture]

    def switch_ports(self):
        """{switch port id: Port} of the attached ports (for the control plane's reports)."""
        return {p.switch_id: p for p in self.live}

    cdef FrameBatch *new_batch(self):
        """The shared scratch batch, emptied (only one port reads at a time)."""
        self.batch.rec = self.batch_rec
        self.batch.length = self.batch_len
        self.batch.vnet = NULL
        self.batch.remote = NULL
        self.batch.count = 0
        self.batch.nbytes = 0
        return &self.batch

    cdef bint should_read(self, Port src):
        """False (and src paused) when no other port could take what src would read.

        That is when every other port is congested, or when there is no other port: a
        lone port's peer then waits in its kernel buffer until someone joins, instead of
        losing frames (a point-to-point link's first side is up before its second).
        A lone port still watches EPOLLRDHUP so that a peer leaving is noticed.
        """
        cdef Port p
        cdef bint alone = True
        for p in self.live:
            if p is not src:
                if not p.congested():
                    return True
                alone = False
        src.paused = True
        self.paused.append(src)
        src.armed = EPOLLRDHUP if alone else 0
        self.update_events(src)
        return False

    cdef int forward(self, Port src, FrameBatch *batch) except -1:
        """Hand each port the frames of batch the switch sends it (never src itself).

        The batch memory is src's until we return; a port keeps what it cannot send at
        once by copying it into its backlog.
        """
        cdef Switch sw = self.switch
        cdef Port p
        cdef Capture cap
        cdef FrameBatch *sub
        cdef int k, slot
        cdef int64_t when = 0
        src.rx_frames += batch.count
        src.rx_bytes += batch.nbytes
        if self.round_reader == NULL:
            self.round_reader = <void *>src
        elif self.round_reader != <void *>src:
            self.round_mixed = True
        self.round_frames += batch.count
        if self.captures:
            when = realtime_ns()
            for cap in self.captures:
                cap.add(src.switch_id, batch, CAPTURE_INBOUND, when)
        sw.plan(src.switch_id, batch, monotonic_ns())
        for k in range(sw.ndests):
            slot = sw.dest_slots[k]
            p = <Port>self.slots[slot]
            if p is not None and p.fd >= 0 and p is not src:
                sub = sw.sub_batch(slot, batch)
                if self.captures:
                    for cap in self.captures:
                        cap.add(p.switch_id, sub, CAPTURE_OUTBOUND, when)
                p.deliver(sub)
        return 0

    cdef int want_write(self, Port port, bint on) except -1:
        """Watch (or stop watching) a port for writability."""
        cdef epoll_event ev
        if port.fd < 0 or port.write_armed == on:
            return 0
        port.write_armed = on
        if port.wfd == port.fd:
            return self.update_events(port)
        if not port.wfd_watched:
            return 0
        ev.events = EPOLLOUT if on else 0
        ev.data.u64 = <uint64_t><void *>port | WFD_TAG
        if epoll_ctl(self.epfd, EPOLL_CTL_MOD, port.wfd, &ev) < 0:
            PyErr_SetFromErrno(OSError)
        return 0

    cdef int park(self, Port port) except -1:
        """Take a paused port whose peer hung up (EPOLLHUP) out of the epoll set.

        A hang-up is reported whatever the port asks for, so a paused port with unread
        frames would wake the hub forever. Its frames stay in the kernel; resume_readers()
        puts it back, and reading then meets them and the end. (Its peer can no longer read,
        so whatever it has queued to send is lost either way.)
        """
        if port.parked or port.fd < 0:
            return 0
        if epoll_ctl(self.epfd, EPOLL_CTL_DEL, port.fd, NULL) < 0:
            PyErr_SetFromErrno(OSError)
        port.parked = True
        if port not in self.paused:
            port.paused = True
            self.paused.append(port)
        return 0

    cdef int update_events(self, Port port) except -1:
        cdef epoll_event ev
        cdef int op = EPOLL_CTL_MOD
        if port.parked:
            if port.paused:
                return 0  # back in the set when it resumes
            op = EPOLL_CTL_ADD
            port.parked = False
        ev.events = port.armed
        if port.write_armed and port.wfd == port.fd:
            ev.events |= EPOLLOUT
        ev.data.ptr = <void *>port
        if epoll_ctl(self.epfd, op, port.fd, &ev) < 0:
            PyErr_SetFromErrno(OSError)
        return 0

    cdef int resume_readers(self) except -1:
        """Let back-pressured ports read again; they pause again if still pointless."""
        cdef Port p
        if not self.paused or self.draining:
            return 0
        paused = self.paused
        self.paused = []
        for p in paused:
            p.paused = False
            if p.fd >= 0:
                p.armed = EPOLLIN | EPOLLRDHUP
                self.update_events(p)
        return 0
