# MacTable: the switch's forwarding database (MAC + VLAN -> port), bounded, in C memory.
cimport cython
from libc.stdint cimport int32_t, int64_t, uint16_t, uint32_t, uint64_t

cdef enum:
    # Entries of one table unless configured otherwise (the Linux bridge has no default
    # bound; 64k covers any lab while keeping a table at ~3 MiB).
    FDB_CAPACITY_DEFAULT = 65536
    FDB_CAPACITY_MAX = 1 << 24
    # A stored key has this bit set, so an all-zero slot is empty (MAC 0, VLAN 0 is a key).
    FDB_USED_SHIFT = 63
    # Key layout: MAC (48 bits) above the 12-bit VLAN id.
    FDB_VLAN_BITS = 12
    FDB_VLAN_MASK = 0xfff
    # Slots swept by one MacTable.age() call when the caller gives no budget of its own.
    FDB_AGE_BUDGET = 64
    # Times are kept as uint32 milliseconds (wrap-safe differences), so no duration the
    # table compares may reach 2**31 ms (~24 days).
    FDB_DURATION_MAX_MS = 0x7fffffff

# What learn() did.
cdef enum:
    LEARN_NEW = 0        # the key was not known (or only as an expired entry): stored
    LEARN_REFRESHED = 1  # known on the same port: last-seen time updated
    LEARN_MOVED = 2      # known on another port: now on this one (old port in *old_port)
    LEARN_FULL = 3       # not known and the table is at capacity: not stored (counted)

ctypedef struct FdbEntry:
    uint64_t key          # FDB_USED | MAC << 12 | VLAN id; 0 = empty slot
    int32_t port          # port id the key was last seen on (the switch's id, with generation)
    int32_t remote        # VXLAN remote endpoint index behind that port, -1 if none
    uint32_t seen         # last frame from this key (ms, the caller's monotonic clock)
    uint32_t move_start   # start of the current one-second move-counting window (ms)
    uint32_t reported     # when the last duplicate-MAC event for this key was raised (ms)
    uint16_t moves        # moves between ports within the window that started at move_start
    uint16_t flags        # FDB_REPORTED: `reported` is meaningful

cdef enum:
    FDB_REPORTED = 1


cdef inline uint32_t ns_to_ms(int64_t now_ns) noexcept nogil:
    """A monotonic time in ns as the table's uint32 ms clock (wraps every ~49.7 days)."""
    return <uint32_t>(<uint64_t>now_ns // 1000000)


cdef inline uint32_t ms_since(uint32_t now, uint32_t then) noexcept nogil:
    """now - then in ms, correct across the uint32 wrap for any gap below 2**31 ms."""
    return <uint32_t>(now - then)


@cython.final
cdef class MacTable:
    cdef:
        FdbEntry *slots              # owned; nslots entries, linear probing, no tombstones
        uint32_t nslots              # capacity * 3 / 2 (load factor <= 2/3): short probes
        readonly uint32_t capacity   # most entries ever stored; learning stops there
        readonly uint32_t count      # entries stored (expired ones until the sweep meets them)
        readonly uint32_t max_age    # ms; an entry older than this is gone for lookup/learn
        uint32_t cursor              # where the next incremental age() sweep resumes
        uint64_t seed                # random per table: crafted MACs cannot pick our slots
        readonly uint64_t full_refused  # new keys not learned because the table was full

    cdef uint32_t home(self, uint64_t key) noexcept nogil
    cdef FdbEntry *find(self, uint64_t key, uint32_t now) noexcept nogil
    cdef int32_t lookup(self, uint64_t key, uint32_t now, int32_t *remote) noexcept nogil
    cdef int learn(self, uint64_t key, int32_t port, int32_t remote, uint32_t now,
                   FdbEntry **entry, int32_t *old_port, uint32_t *old_seen) noexcept nogil
    cdef void remove_at(self, uint32_t i) noexcept nogil
    cdef uint32_t age(self, uint32_t now, uint32_t budget) noexcept nogil
    cdef uint32_t flush_port(self, int32_t port) noexcept nogil
