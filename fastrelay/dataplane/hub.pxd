# Hub: the switchboard; every frame one port reads goes to every other port.

cdef class Hub:
    cdef:
        int epfd                 # owned epoll fd; the control plane's loop watches it
        bint owns_epfd           # epfd was opened (still 0, not a descriptor of ours, when
                                 # __cinit__'s arguments were refused)
        list live                # attached ports, replaced (never mutated) on change
        list closing             # ports closed during the current poll(), kept alive to its end
        list paused              # ports whose reading is suspended for back-pressure
        bint draining            # stop_reading() was called: no port is read again
        bint polling             # inside poll(): `closing` must outlive its events
        readonly QueueBudget budget  # memory every port's backlog draws from
        readonly Switch switch   # where each frame goes (a hub: forwarding off, flood all)
        list slots               # the attached Port of each switch slot, or None
        object on_event          # control plane callback(events) for the switch's events
        list captures            # Capture objects copying frames (empty: no capture at all)
        object on_close          # control plane callback(port, reason, fault)
        FrameBatch batch         # scratch batch shared by all readers (one at a time)
        char **batch_rec         # owned storage behind batch
        uint32_t *batch_len      # owned storage behind batch
        epoll_event *events      # owned storage for epoll_wait
        char *rxbuf              # owned; STREAM_BUF bytes every stream port reads into (one
                                 # at a time; frames in it are valid until forward() returns)
        int64_t linger_ns        # batch wait (see poll()); 0: never wait
        void *round_reader       # identity only (never dereferenced): the port that forwarded
                                 # in this round, NULL if none
        bint round_mixed         # more than one port forwarded in this round
        Py_ssize_t round_frames  # frames forwarded in this round
        void *last_reader        # round_reader of the previous round (NULL if none or mixed)
        int64_t last_round_end   # monotonic ns when the previous round ended
        readonly uint64_t waits  # batch waits taken (counted for stats)
        bint last_busy           # the round before was busy (LINGER_FRAMES or more)
        bint last_waited         # the round that just ended followed a wait
        bint in_hubs             # counted in hubs_count (hub.pyx)
        int linger_skip          # rounds left that may not wait (after a wait gathered little)

    cdef int poll_round(self) except -1
    cdef int next_round(self, int64_t started, bint again) noexcept
    cdef bint others_ready(self) noexcept
    cdef FrameBatch *new_batch(self)
    cdef int forward(self, Port src, FrameBatch *batch) except -1
    cdef bint should_read(self, Port src)
    cdef int want_write(self, Port port, bint on) except -1
    cdef int resume_readers(self) except -1
    cdef int update_events(self, Port port) except -1
    cdef int park(self, Port port) except -1
