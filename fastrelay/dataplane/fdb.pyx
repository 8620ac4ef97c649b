# MacTable: the switch's forwarding database (MAC + VLAN -> port), bounded, in C memory.

cdef uint64_t FDB_USED = (<uint64_t>1) << FDB_USED_SHIFT


cdef inline uint64_t fdb_key(uint64_t mac, uint32_t vlan) noexcept nogil:
    """The table key of a 48-bit MAC (as an integer) on a 12-bit VLAN id (0: untagged)."""
    return (mac << FDB_VLAN_BITS) | (vlan & FDB_VLAN_MASK)


cdef inline uint64_t load_mac(const unsigned char *p) noexcept nogil:
    """The 6 bytes at p as a 48-bit integer (first byte most significant)."""
    return (<uint64_t>load_be32(<const char *>p) << 16) | (<uint64_t>p[4] << 8) | p[5]


def mac_text(uint64_t mac):
    """aa:bb:cc:dd:ee:ff of a 48-bit MAC integer."""
    return ":".join(f"{(mac >> (40 - 8 * i)) & 0xff:02x}" for i in range(6))


cdef uint32_t seconds_to_ms(double seconds, str what) except? 0:
    """A configured duration as table ms; ValueError (one line) when out of range."""
    if not 0 <= seconds * 1000 <= FDB_DURATION_MAX_MS:
        raise ValueError(f"{what} {seconds:g} s out of range: 0..{FDB_DURATION_MAX_MS // 1000} s")
    return <uint32_t>(seconds * 1000)


cdef class MacTable:
    """The forwarding database of one switch: which port each (MAC, VLAN) was last seen on.

    Theory of operation. One flat array of slots allocated at creation, open addressing
    with linear probing, load factor at most 2/3, deletion by backward shift (no
    tombstones, so probe lengths never degrade). The key is the MAC and the VLAN id packed
    into 60 bits, hashed with a per-table random seed (murmur3's finalizer), so a guest
    cannot choose MACs that collide by construction. Learning stops at `capacity`
    entries (counted in `full_refused`): a flood of random source MACs costs no memory.

    Time is the caller's monotonic clock, given once per batch and kept in uint32 ms; an
    entry not refreshed for more than `max_age` ms no longer exists for lookup() and
    learn() at once, and age() frees its slot later in small incremental steps. Port ids
    are opaque int32 values >= 0 chosen by the switch; the table never interprets them.
    """

    def __cinit__(self, Py_ssize_t capacity=FDB_CAPACITY_DEFAULT, double max_age=300.0):
        if not 1 <= capacity <= FDB_CAPACITY_MAX:
            raise ValueError(f"MAC table capacity {capacity} out of range: 1..{FDB_CAPACITY_MAX}")
        self.max_age = seconds_to_ms(max_age, "MAC age")
        self.capacity = <uint32_t>capacity
        self.nslots = self.capacity + self.capacity // 2 + 1
        self.seed = int.from_bytes(os.urandom(8), "little")
        self.slots = <FdbEntry *>PyMem_RawCalloc(self.nslots, sizeof(FdbEntry))
        if self.slots == NULL:
            raise MemoryError()

    def __dealloc__(self):
        PyMem_RawFree(self.slots)

    cdef uint32_t home(self, uint64_t key) noexcept nogil:
        """The slot where the probe for a stored key starts."""
        cdef uint64_t h = key ^ self.seed
        h ^= h >> 33
        h *= <uint64_t>0xff51afd7ed558ccdULL
        h ^= h >> 33
        h *= <uint64_t>0xc4ceb9fe1a85ec53ULL
        h ^= h >> 33
        # Lemire's range reduction: the high 32 bits scaled to nslots, no division.
        return <uint32_t>(((h >> 32) * self.nslots) >> 32)

    cdef FdbEntry *find(self, uint64_t key, uint32_t now) noexcept nogil:
        """The live entry of key, or NULL (absent or expired)."""
        cdef uint64_t stored = key | FDB_USED
        cdef uint32_t i = self.home(stored)
        cdef FdbEntry *e
        while True:
            e = &self.slots[i]
            if e.key == stored:
                return NULL if ms_since(now, e.seen) > self.max_age else e
            if e.key == 0:
                return NULL
            i += 1
            if i == self.nslots:
                i = 0

    cdef int32_t lookup(self, uint64_t key, uint32_t now, int32_t *remote) noexcept nogil:
        """The port key was last seen on, or -1 if unknown (or expired); *remote (when
        not NULL) becomes the remote endpoint behind that port (-1: none, or unknown)."""
        cdef FdbEntry *e = self.find(key, now)
        if remote != NULL:
            remote[0] = -1 if e == NULL else e.remote
        return -1 if e == NULL else e.port

    cdef int learn(self, uint64_t key, int32_t port, int32_t remote, uint32_t now,
                   FdbEntry **entry, int32_t *old_port, uint32_t *old_seen) noexcept nogil:
        """Record that key was seen on port (behind remote) at now; returns a LEARN_* code.

        *entry is the key's entry afterwards (NULL for LEARN_FULL). For LEARN_MOVED,
        *old_port and *old_seen tell where and when the key was seen before, for the
        caller's move and duplicate detection; the entry's move fields are the caller's.
        """
        cdef uint64_t stored = key | FDB_USED
        cdef uint32_t i = self.home(stored)
        cdef FdbEntry *e
        cdef bint fresh = False
        while True:
            e = &self.slots[i]
            if e.key == stored:
                break
            if e.key == 0:
                if self.count >= self.capacity:
                    self.full_refused += 1
                    entry[0] = NULL
                    return LEARN_FULL
                self.count += 1
                e.key = stored
                fresh = True
                break
            i += 1
            if i == self.nslots:
                i = 0
        entry[0] = e
        if fresh or ms_since(now, e.seen) > self.max_age:
            # An expired entry the sweep has not freed yet is reused as a new one: its
            # old port and move history mean nothing any more.
            e.port = port
            e.remote = remote
            e.seen = now
            e.move_start = now
            e.moves = 0
            e.reported = 0
            e.flags = 0
            return LEARN_NEW
        if e.port == port and e.remote == remote:
            e.seen = now
            return LEARN_REFRESHED
        old_port[0] = e.port
        old_seen[0] = e.seen
        e.port = port
        e.remote = remote
        e.seen = now
        return LEARN_MOVED

    cdef void remove_at(self, uint32_t i) noexcept nogil:
        """Free slot i, shifting the rest of its probe run back so no lookup breaks.

        Entries after i move only into slots from i on (cyclically): a scan that looks at
        slot i again after a removal still meets every entry once.
        """
        cdef uint32_t j = i, h, n = self.nslots
        while True:
            j += 1
            if j == n:
                j = 0
            if self.slots[j].key == 0:
                break
            h = self.home(self.slots[j].key)
            # The entry at j may fill the hole at i if i lies on its probe path, that is
            # between its home h and j (cyclically): it is then no farther from home.
            if (j - h if j >= h else j + n - h) >= (j - i if j >= i else j + n - i):
                self.slots[i] = self.slots[j]
                i = j
        memset(&self.slots[i], 0, sizeof(FdbEntry))
        self.count -= 1

    cdef uint32_t age(self, uint32_t now, uint32_t budget) noexcept nogil:
        """Look at `budget` slots of the sweep; free those expired. Returns freed.

        A slot just freed is looked at again (it holds a shifted entry now) and counts again.
        """
        cdef uint32_t freed = 0
        cdef FdbEntry *e
        while budget:
            budget -= 1
            e = &self.slots[self.cursor]
            if e.key != 0 and ms_since(now, e.seen) > self.max_age:
                self.remove_at(self.cursor)  # the slot now holds a shifted entry: look again
                freed += 1
            else:
                self.cursor += 1
                if self.cursor == self.nslots:
                    self.cursor = 0
        return freed

    cdef uint32_t flush_port(self, int32_t port) noexcept nogil:
        """Forget every entry on port at once (it closed or was blocked). Returns freed.

        A full pass over the slots: it runs when a port goes away, never per frame.
        """
        cdef uint32_t i = 0, freed = 0
        while i < self.nslots:
            if self.slots[i].key != 0 and self.slots[i].port == port:
                self.remove_at(i)
                freed += 1
            else:
                i += 1
        return freed

    # Python view, for stats and tests (never on the data path).

    def entries(self, int64_t now, bint with_remote=False):
        """[(MAC text, VLAN id, port, age in seconds)] of the live entries; now in ns.
        with_remote: each with the remote endpoint behind the port too (-1: none)."""
        cdef uint32_t t = ns_to_ms(now), i
        cdef FdbEntry *e
        out = []
        for i in range(self.nslots):
            e = &self.slots[i]
            if e.key != 0 and ms_since(t, e.seen) <= self.max_age:
                row = (mac_text((e.key & ~FDB_USED) >> FDB_VLAN_BITS),
                       <int>(e.key & FDB_VLAN_MASK), e.port, ms_since(t, e.seen) / 1000.0)
                out.append(row + (e.remote,) if with_remote else row)
        return out

    def dump(self):
        """[(MAC as int, VLAN id, port, last seen ms)] of every stored entry, expired ones
        included, in slot order (for tests and debugging)."""
        cdef uint32_t i
        cdef FdbEntry *e
        out = []
        for i in range(self.nslots):
            e = &self.slots[i]
            if e.key != 0:
                out.append((<uint64_t>((e.key & ~FDB_USED) >> FDB_VLAN_BITS),
                            <int>(e.key & FDB_VLAN_MASK), e.port, e.seen))
        return out

    def learn_mac(self, mac, int vlan, int32_t port, int64_t now, int32_t remote=-1):
        """learn() for tests: (result name, old port or -1); mac as 6 bytes or text."""
        cdef FdbEntry *e
        cdef int32_t old_port = -1
        cdef uint32_t old_seen = 0
        if port < 0:
            raise ValueError(f"port id {port} is negative")
        r = self.learn(fdb_key(mac_int(mac), vlan), port, remote, ns_to_ms(now), &e,
                       &old_port, &old_seen)
        return LEARN_NAMES[r], old_port

    def lookup_mac(self, mac, int vlan, int64_t now, bint with_remote=False):
        """lookup() for tests: the port, or -1; with_remote: (port, remote endpoint)."""
        cdef int32_t remote = -1
        cdef int32_t port = self.lookup(fdb_key(mac_int(mac), vlan), ns_to_ms(now), &remote)
        if with_remote:
            return port, remote
        return port

    def sweep(self, int64_t now, uint32_t budget=FDB_AGE_BUDGET):
        """age(): one incremental step of `budget` slots; returns entries freed."""
        return self.age(ns_to_ms(now), budget)

    def sweep_all(self, int64_t now):
        """age() over every slot once (a freed slot is looked at twice: it took a neighbour)."""
        return self.age(ns_to_ms(now), self.nslots + self.count)

    def flush(self, int32_t port):
        """flush_port(): returns entries freed."""
        return self.flush_port(port)

    @property
    def slot_count(self):
        """Slots allocated (memory is slot_count * the entry size, fixed at creation)."""
        return self.nslots


LEARN_NAMES = ("new", "refreshed", "moved", "full")


def mac_int(mac):
    """A MAC given as 6 bytes or as aa:bb:cc:dd:ee:ff text, as a 48-bit integer."""
    if isinstance(mac, str):
        raw = bytes.fromhex(mac.replace(":", ""))
    else:
        raw = bytes(mac)
    if len(raw) != 6:
        raise ValueError(f"MAC {mac!r} is not 6 bytes")
    return int.from_bytes(raw, "big")
