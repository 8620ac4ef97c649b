# Switch: turns one port's batch plus the MAC table's answers into a per-port plan of frames.
cimport cython
from libc.stdint cimport int16_t, int32_t, int64_t, uint16_t, uint32_t, uint64_t

cdef enum:
    # Ports one switch can have attached at once; a port id's low bits are its slot.
    SWITCH_SLOT_BITS = 12
    SWITCH_PORTS_MAX = 1 << SWITCH_SLOT_BITS
    SWITCH_SLOT_MASK = SWITCH_PORTS_MAX - 1
    # A slot's generation fills the rest of a positive int32 port id: an id is reused only
    # after a slot has been attached 2**21 times, and never while the table still holds it
    # (detach flushes the port's entries).
    SWITCH_GEN_MAX = (1 << (31 - SWITCH_SLOT_BITS)) - 1
    # Events kept between two drains by the control plane; more are counted, not kept.
    SWITCH_EVENTS_MAX = 64
    # The window over which a MAC's moves are counted for loop detection (ms).
    SWITCH_MOVE_WINDOW_MS = 1000
    # A duplicate MAC is reported again at most this often (ms): one line, not a flood.
    SWITCH_REPORT_MS = 60000
    # tick() (about once a second) sweeps this fraction of the MAC table's slots: every
    # expired entry is freed within that many ticks, whatever the table's size.
    SWITCH_TICK_SWEEPS = 16

# Decisions for one frame other than "to this slot".
cdef enum:
    TO_FLOOD = -1    # every port the ingress may send to
    TO_FILTER = -2   # nowhere: the destination is behind the ingress port, or split horizon

# Event kinds (SwitchEvent.kind); names in EVENT_NAMES.
cdef enum:
    EVENT_LOOP = 0        # a MAC moved between ports more than move_threshold times in 1 s
    EVENT_DUPLICATE = 1   # a MAC was seen on two non-trunk ports within dup_window
    EVENT_UNBLOCKED = 2   # a port blocked after a loop event forwards again

ctypedef struct SwitchPort:
    int32_t id             # port id (generation << SWITCH_SLOT_BITS | slot); -1: slot free
    uint32_t generation    # of the slot's latest id; kept across detach so ids never repeat
    bint trunk             # a link to another relay: split horizon applies
    bint overlay           # a VXLAN port (a trunk): its frames name their remote endpoint
    bint blocked           # a loop was seen arriving here: nothing in or out until unblocked
    uint32_t blocked_until  # ms; when a blocked port forwards again
    uint16_t *out          # owned; BATCH_MAX entries: batch indices this port gets, ascending
    Py_ssize_t nout        # entries of out for the current plan; == batch count: every
                           # frame, and then out[] is NOT written (the whole batch is the plan)
                           # unless Switch.indexed
    int16_t *rout          # owned, NULL until the slot has an overlay port; BATCH_MAX: for an
                           # overlay port, the remote endpoint of each out[] entry (-1: all)
    # Counters of frames received on this port, by decision (read by the control plane).
    uint64_t unicast       # sent to exactly one port (its destination was learned)
    uint64_t flooded       # sent to every other port (group or unknown destination)
    uint64_t filtered      # dropped: destination behind this port, or trunk to trunk
    uint64_t drop_blocked  # dropped: this port was blocked

ctypedef struct SwitchEvent:
    int kind               # EVENT_*
    uint64_t key           # the MAC table key (MAC << 12 | VLAN id); 0 for EVENT_UNBLOCKED
    int32_t from_port      # the port the MAC was on before (-1 for EVENT_UNBLOCKED)
    int32_t to_port        # the port it moved to (the one blocked), or the port unblocked


@cython.final
cdef class Switch:
    cdef:
        readonly MacTable fdb        # the forwarding database
        readonly bint forwarding     # switch mode; False: hub mode (flood all, only detect)
        SwitchPort *ports            # owned; SWITCH_PORTS_MAX, indexed by slot
        uint16_t *active             # owned; slots of attached ports, in attach order
        int nactive                  # entries of active
        uint16_t *flood              # owned; slots the current ingress may flood to
        int nflood                   # entries of flood
        uint16_t *dest_slots         # owned; slots with frames in the current plan
        readonly int ndests          # entries of dest_slots
        bint indexed                 # the current plan wrote out[] (and rout[]) indices
        FrameBatch sub               # scratch: one port's subset, filled by sub_batch()
        char **sub_rec               # owned storage behind sub (BATCH_MAX)
        uint32_t *sub_len            # owned storage behind sub (BATCH_MAX)
        virtio_net_hdr *sub_vnet     # owned storage behind sub (BATCH_MAX)
        uint16_t move_threshold      # moves per SWITCH_MOVE_WINDOW_MS tolerated per MAC
        uint32_t hold                # ms a port stays blocked after a loop event
        uint32_t dup_window          # ms: seen on two non-trunk ports this close = duplicate
        SwitchEvent *events          # owned; ring of SWITCH_EVENTS_MAX
        int ev_head                  # oldest event in the ring
        int ev_count                 # events in the ring
        # Counters of the whole switch (read by the control plane).
        readonly uint64_t moves       # learned MACs seen on a new port
        readonly uint64_t loops       # EVENT_LOOP raised
        readonly uint64_t duplicates  # EVENT_DUPLICATE raised
        readonly uint64_t events_lost # events not kept: the ring was full

    cdef int plan(self, int32_t ingress, FrameBatch *batch, int64_t now) except -1
    cdef FrameBatch *sub_batch(self, int slot, FrameBatch *batch) noexcept
    cdef int slot_of(self, int32_t port) except -1
    cdef void begin(self, int in_slot, uint32_t now) noexcept
    cdef int learn_source(self, SwitchPort *src, uint64_t key, int32_t remote,
                          uint32_t now) noexcept
    cdef int unicast_to(self, int in_slot, uint64_t key, uint32_t now,
                        int32_t *remote) noexcept
    cdef void spread(self, Py_ssize_t upto) noexcept
    cdef void block(self, SwitchPort *p, uint32_t now) noexcept
    cdef void push_event(self, int kind, uint64_t key, int32_t from_port,
                         int32_t to_port) noexcept
