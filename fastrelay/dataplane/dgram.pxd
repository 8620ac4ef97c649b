# DatagramPort: qemu's datagram framing (one frame per datagram) over UDP or unix sockets.

cdef class DatagramPort(Port):
    cdef:
        char *slots              # owned; DGRAM_BATCH slots of DGRAM_SLOT bytes (header + frame)
        mmsghdr *rx_msgs         # owned; recvmmsg vector, one per slot
        iovec *rx_iov            # owned; one per slot, pointing past the slot's header
        sockaddr_storage *rx_from  # owned; the source of each received datagram, filled only
                                   # when want_source
        bint want_source         # recvmmsg asks for sources: learn_peer, or a subclass whose
                                 # sender() checks them (VXLAN); else the kernel copies none
        char *rx_ctrl            # owned; one GSO_CTRL control buffer per slot (UDP_GRO size)
        char *spread             # owned, lazily; GRO_SPREAD bytes: records split out of
                                 # coalesced datagrams (reused once their batch is forwarded)
        readonly bint gro        # UDP_GRO on: coalesced runs arrive and are split here
        readonly uint64_t gro_messages  # coalesced datagrams received and split
        mmsghdr *tx_msgs         # owned; sendmmsg vector, one message per run of frames
        iovec *tx_iov            # owned; 2 * IOV_MAX: one per frame, or two with tx_hdr (a
                                 # GSO message spans several)
        char *tx_ctrl            # owned; one GSO_CTRL control buffer per message
        Py_ssize_t *tx_first     # owned; index of the first frame of each message
        readonly bint gso        # UDP_SEGMENT in use now (inet sockets)
        bint gso_capable         # the socket could use UDP_SEGMENT at all
        Py_ssize_t gso_resume_in # frames to send one by one before GSO is tried again
        readonly uint64_t gso_messages  # messages sent as a GSO run of several frames
        sockaddr_storage peer    # where frames are sent (a port with `peers`: the first)
        sockaddr_storage *peers  # owned, NULL unless given several fixed peers (VXLAN's remote
                                 # endpoints): each frame is sent to the one its caller names,
                                 # and a queued record carries that index (DEST_TAG_LEN bytes)
        socklen_t *peer_lens     # owned; the address length of each of peers
        readonly int npeers      # entries of peers (0: a port with one peer or none)
        char tx_hdr[TX_HDR_MAX]  # sent as its own iovec before every frame (an encapsulation
        Py_ssize_t tx_hdr_len    # header, VXLAN's); 0: frames go alone
        readonly uint64_t replicated  # copies made beyond the first of frames for every peer
                                      # (each then sent, queued or dropped as any frame)
        readonly uint64_t drop_mtu  # of drop_send: too big for the path (EMSGSIZE, never
                                    # fragmented when the socket says don't-fragment)
        socklen_t peer_len       # 0 while no peer is known (learning mode, nothing heard yet)
        bint learn_peer          # send to whoever sent last (a listener without a fixed peer)
        bint unix_fixed          # a unix socket with a fixed peer: kept connect()ed to it
        bint connected           # connect()ed to peer: sends name no address
        bint can_wait            # EPOLLOUT says when the peer has room again (so queue); not
                                 # so for an unconnected unix socket, whose frames then drop
        uint32_t max_frame       # longest frame accepted and sent
        readonly uint64_t send_errors   # sendmmsg failures other than EAGAIN (peer absent...)
        readonly int last_send_errno    # errno of the latest of those
        readonly uint64_t rx_errors     # errors reported on receive (ICMP for earlier sends...)
        readonly int last_rx_errno      # errno of the latest of those

    cdef FrameBatch *split_coalesced(self, FrameBatch *batch, char *data, Py_ssize_t length,
                                     Py_ssize_t segment, Py_ssize_t *spread_used,
                                     int tag) except NULL
    cdef FrameBatch *fresh_batch(self)
    cdef int sender(self, Py_ssize_t i, Py_ssize_t datagrams) noexcept
    cdef Py_ssize_t unwrap(self, const char *data, Py_ssize_t length) noexcept
    cdef int add_record(self, FrameBatch *batch, char *rec, uint32_t length, int tag) except -1
    cdef bint try_connect(self)
    cdef Py_ssize_t build_messages(self, char **frames, uint32_t *lengths, uint16_t *dests,
                                   Py_ssize_t n)
    cdef int send_frames(self, char **frames, uint32_t *lengths, uint16_t *dests,
                         Py_ssize_t n) except -1
    cdef int queue_to(self, char *frame, uint32_t length, uint16_t dest) except -1
    cdef int deliver_each(self, FrameBatch *batch) except -1
    cdef int send_or_queue(self, char **frames, uint32_t *lengths, uint16_t *dests,
                           Py_ssize_t n, bint sending) except -1
