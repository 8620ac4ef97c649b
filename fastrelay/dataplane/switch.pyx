# Switch: turns one port's batch plus the MAC table's answers into a per-port plan of frames.

EVENT_NAMES = ("loop", "duplicate", "unblocked")

# The 802.1Q tag protocol id; a tagged frame's VLAN id is the low 12 bits of the TCI after it.
cdef enum:
    ETH_ALEN = 6
    ETH_TYPE_OFF = 12
    VLAN_TAGGED_MIN = 18


cdef inline bint may_send(const SwitchPort *src, const SwitchPort *dst) noexcept nogil:
    """May a frame that came in on src go out on dst? (the one forwarding predicate)

    Never back where it came from, never to a blocked port, and never from a trunk to a
    trunk (split horizon: a full mesh of relays is loop-free without a spanning tree).
    """
    return dst != src and not dst.blocked and not (src.trunk and dst.trunk)


cdef class Switch:
    """The forwarding decision of one hub: per batch, which port gets which frames.

    Theory of operation. The hub reads a batch from one port and calls plan() once with
    the ingress port id and `now` (monotonic ns, one clock read per batch). For each
    frame plan() parses the destination, source and 802.1Q VLAN id, learns the source
    (unicast, non-zero sources only) on the ingress port, then decides: group addresses
    (broadcast, multicast, the 01:80:C2:00:00:0X link-local range alike) and unknown
    unicast go to every port may_send() allows; a learned unicast destination goes to its
    one port, or nowhere (`filtered`) if may_send() refuses that port. The plan is, per
    destination port, the ascending list of batch indices it gets; sub_batch() turns one
    port's list into a FrameBatch of views into the same source buffer (no frame is
    copied), valid until the next sub_batch() or plan(). Per frame that is at most one
    table probe for the source and one for the destination, and none for a frame with
    the same source (or destination) as the frame before it.

    In hub mode (forwarding False) every frame floods; the table still learns, so loops
    and duplicate MACs are still reported, but no port is ever blocked. A hub's batch is
    then planned without writing one index (every port's list is the whole batch).

    Loop symptoms: a MAC moving between ports more than move_threshold times within one
    second raises EVENT_LOOP and, in switch mode, blocks the port it moved to for `hold`
    (frames neither in nor out, its entries flushed): blocking only one direction lets a
    broadcast keep circling one way round a loop of two plain links. A MAC seen on two
    non-trunk ports within dup_window raises EVENT_DUPLICATE (at most once a minute per
    MAC). Events wait in a small ring that the control plane drains once per poll.

    Port ids come from attach(): the slot (low bits) indexes per-port arrays, and the
    generation (high bits) makes a stale id of a detached port differ from every later id.

    Overlay ports (VXLAN, attach(overlay=True)) reach several remote endpoints. A batch
    read from one names each frame's remote (FrameBatch.remote); the table learns (MAC,
    port, remote), and a MAC seen behind another remote of the same port is updated as
    such, not counted as a move between ports (no loop or duplicate event). A frame
    unicast to an overlay port carries the remote its destination was learned behind
    (sub_batch() hands it over as the sub-batch's `remote`); one that floods carries -1,
    and the port sends it to every remote. An overlay port is always a trunk.
    """

    def __cinit__(self, bint forwarding=True, Py_ssize_t capacity=FDB_CAPACITY_DEFAULT,
                  double mac_age=300.0, int move_threshold=5, double hold=10.0,
                  double dup_window=2.0):
        cdef int s
        if BATCH_MAX > 0xffff:
            raise ValueError(f"BATCH_MAX {BATCH_MAX} does not fit the uint16 plan indices")
        if not 1 <= move_threshold <= 10000:
            raise ValueError(f"move threshold {move_threshold} out of range: 1..10000 per second")
        self.fdb = MacTable(capacity, mac_age)
        self.forwarding = forwarding
        self.move_threshold = <uint16_t>move_threshold
        self.hold = seconds_to_ms(hold, "hold time")
        self.dup_window = seconds_to_ms(dup_window, "duplicate window")
        self.ports = <SwitchPort *>PyMem_RawCalloc(SWITCH_PORTS_MAX, sizeof(SwitchPort))
        self.active = <uint16_t *>PyMem_RawMalloc(SWITCH_PORTS_MAX * sizeof(uint16_t))
        self.flood = <uint16_t *>PyMem_RawMalloc(SWITCH_PORTS_MAX * sizeof(uint16_t))
        self.dest_slots = <uint16_t *>PyMem_RawMalloc(SWITCH_PORTS_MAX * sizeof(uint16_t))
        self.sub_rec = <char **>PyMem_RawMalloc(BATCH_MAX * sizeof(char *))
        self.sub_len = <uint32_t *>PyMem_RawMalloc(BATCH_MAX * sizeof(uint32_t))
        self.sub_vnet = <virtio_net_hdr *>PyMem_RawMalloc(BATCH_MAX * sizeof(virtio_net_hdr))
        self.events = <SwitchEvent *>PyMem_RawMalloc(SWITCH_EVENTS_MAX * sizeof(SwitchEvent))
        if (self.ports == NULL or self.active == NULL or self.flood == NULL
                or self.dest_slots == NULL or self.sub_rec == NULL or self.sub_len == NULL
                or self.sub_vnet == NULL or self.events == NULL):
            raise MemoryError()
        for s in range(SWITCH_PORTS_MAX):
            self.ports[s].id = -1

    def __dealloc__(self):
        cdef int s
        if self.ports != NULL:
            for s in range(SWITCH_PORTS_MAX):
                PyMem_RawFree(self.ports[s].out)
                PyMem_RawFree(self.ports[s].rout)
        PyMem_RawFree(self.ports)
        PyMem_RawFree(self.active)
        PyMem_RawFree(self.flood)
        PyMem_RawFree(self.dest_slots)
        PyMem_RawFree(self.sub_rec)
        PyMem_RawFree(self.sub_len)
        PyMem_RawFree(self.sub_vnet)
        PyMem_RawFree(self.events)

    # Ports (control plane, once per attach/detach).

    def attach(self, bint trunk=False, bint overlay=False):
        """A new port id for a port that joins; trunk: a link to another relay; overlay: a
        VXLAN port (frames name their remote endpoint), always a trunk: what came in
        through the overlay never goes back into it, nor to another trunk."""
        cdef int s
        cdef SwitchPort *p
        for s in range(SWITCH_PORTS_MAX):
            if self.ports[s].id < 0:
                break
        else:
            raise ValueError(f"switch is full: {SWITCH_PORTS_MAX} ports attached")
        p = &self.ports[s]
        if p.out == NULL:
            p.out = <uint16_t *>PyMem_RawMalloc(BATCH_MAX * sizeof(uint16_t))
            if p.out == NULL:
                raise MemoryError()
        if overlay and p.rout == NULL:
            p.rout = <int16_t *>PyMem_RawMalloc(BATCH_MAX * sizeof(int16_t))
            if p.rout == NULL:
                raise MemoryError()
        p.generation = p.generation + 1 if p.generation < SWITCH_GEN_MAX else 1
        p.id = <int32_t>((p.generation << SWITCH_SLOT_BITS) | <uint32_t>s)
        p.trunk = trunk or overlay
        p.overlay = overlay
        p.blocked = False
        p.nout = 0
        p.unicast = p.flooded = p.filtered = p.drop_blocked = 0
        self.active[self.nactive] = <uint16_t>s
        self.nactive += 1
        return p.id

    def detach(self, int32_t port):
        """Forget a port that left, and at once every MAC learned on it. Returns those."""
        cdef int s = self.slot_of(port), k
        self.ports[s].id = -1
        self.ports[s].blocked = False
        for k in range(self.nactive):
            if self.active[k] == s:
                self.nactive -= 1
                memmove(&self.active[k], &self.active[k + 1],
                        (self.nactive - k) * sizeof(uint16_t))
                break
        return self.fdb.flush_port(port)

    @property
    def port_ids(self):
        """Ids of the attached ports, in attach order."""
        return [self.ports[self.active[k]].id for k in range(self.nactive)]

    @property
    def mode(self):
        return "switch" if self.forwarding else "hub"

    def is_trunk(self, int32_t port):
        return bool(self.ports[self.slot_of(port)].trunk)

    def is_blocked(self, int32_t port):
        return bool(self.ports[self.slot_of(port)].blocked)

    def port_stats(self, int32_t port):
        """Frames received on port, by decision."""
        cdef SwitchPort *p = &self.ports[self.slot_of(port)]
        return {"unicast": p.unicast, "flooded": p.flooded, "filtered": p.filtered,
                "drop_blocked": p.drop_blocked}

    def stats(self):
        """Counters of the switch and its table."""
        return {"entries": self.fdb.count, "capacity": self.fdb.capacity,
                "full_refused": self.fdb.full_refused, "moves": self.moves,
                "loops": self.loops, "duplicates": self.duplicates,
                "events_lost": self.events_lost}

    def entries(self, int64_t now, bint with_remote=False):
        """The MAC table: [(MAC text, VLAN id, port id, age in seconds)]; now in ns.
        with_remote: each with the remote endpoint (VXLAN) it is behind, -1 if none."""
        return self.fdb.entries(now, with_remote)

    def drain_events(self):
        """Events since the last drain, oldest first: [(kind, MAC text or None, VLAN id,
        from port id, to port id)]; kind is "loop", "duplicate" or "unblocked"."""
        cdef SwitchEvent *ev
        out = []
        while self.ev_count:
            ev = &self.events[self.ev_head]
            mac = (mac_text(ev.key >> FDB_VLAN_BITS)
                   if ev.kind != EVENT_UNBLOCKED else None)
            out.append((EVENT_NAMES[ev.kind], mac, <int>(ev.key & FDB_VLAN_MASK),
                        ev.from_port, ev.to_port))
            self.ev_head = (self.ev_head + 1) % SWITCH_EVENTS_MAX
            self.ev_count -= 1
        return out

    def tick(self, int64_t now):
        """Housekeeping about once a second: unblock ports whose hold ended, free a part of
        the expired entries (all within SWITCH_TICK_SWEEPS calls). Returns entries freed."""
        cdef uint32_t t = ns_to_ms(now)
        self.begin(-1, t)
        return self.fdb.age(t, self.fdb.nslots // SWITCH_TICK_SWEEPS + 1)

    cdef int slot_of(self, int32_t port) except -1:
        """The slot of an attached port's id; ValueError for any other id."""
        cdef int s = port & SWITCH_SLOT_MASK
        if port < 0 or self.ports[s].id != port:
            raise ValueError(f"port id {port} is not attached to this switch")
        return s

    # The data path: once per batch, nothing here allocates or calls Python.

    cdef int plan(self, int32_t ingress, FrameBatch *batch, int64_t now) except -1:
        """Decide where each frame of batch (read from port `ingress`) goes.

        Afterwards dest_slots[0:ndests] are the slots that get frames, and for each such
        slot s, ports[s].out[0:nout] the batch indices it gets (or all, see SwitchPort).
        """
        cdef uint32_t t = ns_to_ms(now)
        cdef int in_slot = self.slot_of(ingress), k
        cdef SwitchPort *src = &self.ports[in_slot]
        cdef SwitchPort *p
        cdef const unsigned char *f
        cdef Py_ssize_t i, spread_upto = 0
        cdef bint spreading = False
        cdef uint32_t vlan
        cdef uint64_t mac, key
        # Keys are below 2**60, so all ones never matches: "no previous frame".
        cdef uint64_t last_src = <uint64_t>-1, last_dst = <uint64_t>-1
        cdef int last_to = TO_FLOOD, to
        # The remote endpoint each frame came from (an overlay ingress), the one the last
        # source was learned behind, and the one behind the last destination.
        cdef int32_t remote = -1, last_src_remote = -1, last_to_remote = -1
        if batch.count > BATCH_MAX:
            raise ValueError(f"batch of {batch.count} frames: at most {BATCH_MAX} can be planned")
        self.begin(in_slot, t)
        self.fdb.age(t, FDB_AGE_BUDGET)
        i = 0
        while i < batch.count and not src.blocked:
            f = <const unsigned char *>batch.rec[i] + HDR_LEN
            vlan = 0
            if (batch.length[i] >= VLAN_TAGGED_MIN and f[ETH_TYPE_OFF] == 0x81
                    and f[ETH_TYPE_OFF + 1] == 0x00):
                vlan = ((f[ETH_TYPE_OFF + 2] & 0x0f) << 8) | f[ETH_TYPE_OFF + 3]
            mac = load_mac(f + ETH_ALEN)
            if not (f[ETH_ALEN] & 1) and mac != 0:
                key = fdb_key(mac, vlan)
                if batch.remote != NULL:
                    remote = batch.remote[i]
                if key != last_src or remote != last_src_remote:
                    if key == last_dst:
                        last_dst = <uint64_t>-1  # its port may change now
                    if self.learn_source(src, key, remote, t) != LEARN_FULL:
                        last_src = key
                        last_src_remote = remote
                    if src.blocked:
                        break
            if f[0] & 1 or not self.forwarding:
                to = TO_FLOOD
            else:
                key = fdb_key(load_mac(f), vlan)
                if key != last_dst:
                    last_dst = key
                    last_to = self.unicast_to(in_slot, key, t, &last_to_remote)
                to = last_to
            if to == TO_FLOOD:
                src.flooded += 1
                if spreading:
                    for k in range(self.nflood):
                        p = &self.ports[self.flood[k]]
                        p.out[p.nout] = <uint16_t>i
                        if p.overlay:
                            p.rout[p.nout] = -1
                        p.nout += 1
                else:
                    spread_upto = i + 1  # every frame so far floods: write no index yet
            else:
                if not spreading:
                    self.spread(spread_upto)
                    spreading = True
                if to == TO_FILTER:
                    src.filtered += 1
                else:
                    src.unicast += 1
                    p = &self.ports[to]
                    p.out[p.nout] = <uint16_t>i
                    if p.overlay:
                        p.rout[p.nout] = <int16_t>last_to_remote
                    p.nout += 1
            i += 1
        if src.blocked:
            src.drop_blocked += batch.count - i
        if not spreading:
            if spread_upto == batch.count:
                for k in range(self.nflood):
                    self.ports[self.flood[k]].nout = spread_upto
            else:
                self.spread(spread_upto)
        self.ndests = 0
        for k in range(self.nactive):
            if self.ports[self.active[k]].nout:
                self.dest_slots[self.ndests] = self.active[k]
                self.ndests += 1
        return 0

    cdef void begin(self, int in_slot, uint32_t now) noexcept:
        """Start a plan from in_slot (-1: none): end holds that expired, empty every
        port's list, and note where a flood from in_slot may go."""
        cdef SwitchPort *src = &self.ports[in_slot] if in_slot >= 0 else NULL
        cdef SwitchPort *p
        cdef int k
        self.nflood = 0
        self.ndests = 0
        self.indexed = False
        for k in range(self.nactive):
            p = &self.ports[self.active[k]]
            p.nout = 0
            if p.blocked and <int32_t>(now - p.blocked_until) >= 0:
                p.blocked = False
                self.push_event(EVENT_UNBLOCKED, 0, -1, p.id)
            if src != NULL and may_send(src, p):
                self.flood[self.nflood] = self.active[k]
                self.nflood += 1

    cdef void spread(self, Py_ssize_t upto) noexcept:
        """Write the flood targets' indices for frames 0..upto-1, all of which flooded."""
        cdef SwitchPort *p
        cdef Py_ssize_t i
        cdef int k
        self.indexed = True
        for k in range(self.nflood):
            p = &self.ports[self.flood[k]]
            for i in range(upto):
                p.out[i] = <uint16_t>i
            if p.overlay:
                for i in range(upto):
                    p.rout[i] = -1
            p.nout = upto

    cdef int learn_source(self, SwitchPort *src, uint64_t key, int32_t remote,
                          uint32_t now) noexcept:
        """Learn key on src (behind remote: -1 but for overlay ports); detect moves, loops
        and duplicates. Returns the LEARN_* code."""
        cdef FdbEntry *e
        cdef int32_t old = -1
        cdef uint32_t old_seen = 0
        cdef SwitchPort *was
        cdef int r = self.fdb.learn(key, src.id, remote, now, &e, &old, &old_seen)
        if r != LEARN_MOVED:
            return r
        if old == src.id:
            # Behind another remote endpoint of the same overlay port: the entry names the
            # new one now, and that is all (a host moved between VTEPs, not between ports).
            return LEARN_REFRESHED
        was = &self.ports[old & SWITCH_SLOT_MASK]
        if was.id != old:
            # The old port left (never after a flush; a stale id cannot alias a new port).
            e.move_start = now
            e.moves = 0
            return LEARN_NEW
        self.moves += 1
        if (not src.trunk and not was.trunk and ms_since(now, old_seen) <= self.dup_window
                and not (e.flags & FDB_REPORTED and ms_since(now, e.reported) < SWITCH_REPORT_MS)):
            e.flags |= FDB_REPORTED
            e.reported = now
            self.duplicates += 1
            self.push_event(EVENT_DUPLICATE, key, old, src.id)
        if ms_since(now, e.move_start) >= SWITCH_MOVE_WINDOW_MS:
            e.move_start = now
            e.moves = 0
        e.moves += 1
        if e.moves == self.move_threshold + 1:
            self.loops += 1
            self.push_event(EVENT_LOOP, key, old, src.id)
            if self.forwarding:
                self.block(src, now)
        elif e.moves > self.move_threshold + 1:
            e.moves = self.move_threshold + 1  # stays flagged for the rest of the window
        return r

    cdef int unicast_to(self, int in_slot, uint64_t key, uint32_t now,
                        int32_t *remote) noexcept:
        """Where a frame to a unicast key goes: a slot, TO_FLOOD or TO_FILTER; *remote is
        the remote endpoint behind the slot's port it was learned with (-1: none)."""
        cdef int32_t port = self.fdb.lookup(key, now, remote)
        cdef SwitchPort *dst
        if port < 0:
            return TO_FLOOD
        dst = &self.ports[port & SWITCH_SLOT_MASK]
        if dst.id != port:
            return TO_FLOOD  # learned on a port that has left
        if not may_send(&self.ports[in_slot], dst):
            return TO_FILTER
        return port & SWITCH_SLOT_MASK

    cdef void block(self, SwitchPort *p, uint32_t now) noexcept:
        """Stop forwarding to and from p for the hold time; forget what it taught us."""
        p.blocked = True
        p.blocked_until = now + self.hold
        self.fdb.flush_port(p.id)

    cdef void push_event(self, int kind, uint64_t key, int32_t from_port,
                         int32_t to_port) noexcept:
        cdef SwitchEvent *ev
        if self.ev_count == SWITCH_EVENTS_MAX:
            self.events_lost += 1
            return
        ev = &self.events[(self.ev_head + self.ev_count) % SWITCH_EVENTS_MAX]
        ev.kind = kind
        ev.key = key
        ev.from_port = from_port
        ev.to_port = to_port
        self.ev_count += 1

    cdef FrameBatch *sub_batch(self, int slot, FrameBatch *batch) noexcept:
        """Port `slot`'s frames of the planned batch, as views into batch's buffer.

        The whole batch itself when the port gets every frame (and, for an overlay port,
        every frame floods); otherwise the switch's scratch batch (records, lengths and
        vnet headers gathered by index), valid until the next sub_batch() or plan(). An
        overlay port's sub-batch carries the remote endpoint of each frame (`remote`, the
        port's rout; NULL when all flood). `remote` means nothing to other ports (the
        whole batch keeps its source's). The records stay in the reading port's memory.
        """
        cdef SwitchPort *p = &self.ports[slot]
        cdef Py_ssize_t j, i
        if p.nout == batch.count and (not p.overlay or (not self.indexed
                                                        and batch.remote == NULL)):
            return batch
        self.sub.rec = self.sub_rec
        self.sub.length = self.sub_len
        self.sub.vnet = self.sub_vnet if batch.vnet != NULL else NULL
        self.sub.remote = p.rout if p.overlay and self.indexed else NULL
        self.sub.count = p.nout
        self.sub.nbytes = 0
        for j in range(p.nout):
            i = p.out[j] if self.indexed else j
            self.sub_rec[j] = batch.rec[i]
            self.sub_len[j] = batch.length[i]
            self.sub.nbytes += batch.length[i]
            if batch.vnet != NULL:
                self.sub_vnet[j] = batch.vnet[i]
        return &self.sub

    # Test and tool API: a batch from Python bytes (never used by the relay itself).

    def decide(self, int32_t ingress, frames, int64_t now, bint with_vnet=False,
               remotes=None):
        """Plan `frames` (a list of bytes, one batch) read from port `ingress` at `now` (ns).

        Returns, per frame, the set of port ids it goes to. The sets are read back through
        sub_batch(), the hub's own path: each view is checked to point into the batch's
        buffer at its frame (and to carry its vnet header, with_vnet). remotes: the remote
        endpoint each frame came from (an overlay ingress), or None.
        """
        return [set(d) for d in self.decide_remotes(ingress, frames, now, with_vnet, remotes)]

    def decide_remotes(self, int32_t ingress, frames, int64_t now, bint with_vnet=False,
                       remotes=None):
        """decide(), with where each frame goes as {port id: remote endpoint}: the remote
        an overlay port's sub-batch names for it (-1: every remote, and for other ports)."""
        cdef Py_ssize_t n = len(frames), i, j, off = 0
        cdef FrameBatch batch
        cdef FrameBatch *sb
        cdef char *base
        cdef int k, slot
        if n > BATCH_MAX:
            raise ValueError(f"{n} frames: a batch holds at most {BATCH_MAX}")
        for fr in frames:
            if not FRAME_MIN <= len(fr) <= FRAME_MAX:
                raise ValueError(f"frame of {len(fr)} bytes: allowed {FRAME_MIN}..{FRAME_MAX}")
        buf = bytearray(sum(HDR_LEN + len(fr) for fr in frames) + 1)
        base = buf
        starts = {}
        batch.rec = <char **>PyMem_RawMalloc((n + 1) * sizeof(char *))
        batch.length = <uint32_t *>PyMem_RawMalloc((n + 1) * sizeof(uint32_t))
        batch.vnet = (<virtio_net_hdr *>PyMem_RawCalloc(n + 1, sizeof(virtio_net_hdr))
                      if with_vnet else NULL)
        batch.remote = (<int16_t *>PyMem_RawCalloc(n + 1, sizeof(int16_t))
                        if remotes is not None else NULL)
        try:
            if batch.rec == NULL or batch.length == NULL or (with_vnet and batch.vnet == NULL):
                raise MemoryError()
            if remotes is not None:
                if batch.remote == NULL:
                    raise MemoryError()
                if len(remotes) != n:
                    raise ValueError(f"{len(remotes)} remotes for {n} frames")
                for i, r in enumerate(remotes):
                    batch.remote[i] = r
            batch.count = n
            batch.nbytes = 0
            for i, fr in enumerate(frames):
                store_be32(base + off, len(fr))
                buf[off + HDR_LEN:off + HDR_LEN + len(fr)] = fr
                batch.rec[i] = base + off
                batch.length[i] = len(fr)
                batch.nbytes += len(fr)
                if with_vnet:
                    batch.vnet[i].csum_start = <uint16_t>i  # a tag to follow through the gather
                starts[off] = i
                off += HDR_LEN + len(fr)
            self.plan(ingress, &batch, now)
            out = [{} for _ in range(n)]
            for k in range(self.ndests):
                slot = self.dest_slots[k]
                sb = self.sub_batch(slot, &batch)
                for j in range(sb.count):
                    i = starts[sb.rec[j] - base]
                    if sb.length[j] != batch.length[i] or (
                            with_vnet and sb.vnet[j].csum_start != <uint16_t>i):
                        raise AssertionError(f"sub-batch view {j} of slot {slot} is not frame {i}")
                    out[i][self.ports[slot].id] = (sb.remote[j] if sb.remote != NULL
                                                   and self.ports[slot].overlay else -1)
            return out
        finally:
            PyMem_RawFree(batch.rec)
            PyMem_RawFree(batch.length)
            PyMem_RawFree(batch.vnet)
            PyMem_RawFree(batch.remote)
