# Limits and batch sizes of the data plane: every number the hot path depends on lives here.

cdef enum:
    # qemu's stream framing: a 4-byte big-endian length before every frame.
    HDR_LEN = 4
    # Shorter than an Ethernet header is never a frame.
    FRAME_MIN = 14
    # qemu's receive buffer (NET_BUFSIZE = 4096 + 65536): a longer length makes qemu drop
    # the connection, so no stream peer of ours may send or be sent more.
    FRAME_MAX = 69632
    # Largest payload one datagram (UDP or unix) or one tap read can carry here.
    DGRAM_MAX = 65536
    # One datagram slot: the length header we write ourselves, then the frame.
    DGRAM_SLOT = HDR_LEN + DGRAM_MAX
    # Datagrams per recvmmsg()/sendmmsg() call.
    DGRAM_BATCH = 64
    # Bytes asked of one stream recv(); at 64-byte frames that is ~3,800 frames per wake-up.
    STREAM_READ = 262144
    # The stream receive buffer: room for one read after a partial frame is carried over.
    STREAM_BUF = STREAM_READ + HDR_LEN + FRAME_MAX
    # Reads of one port per readiness event, so one busy port cannot starve the others.
    READS_PER_EVENT = 4
    # Frames one hand-over to the hub can describe (a full STREAM_READ of minimum frames).
    BATCH_MAX = STREAM_READ // (HDR_LEN + FRAME_MIN) + 1
    # iovecs per sendmsg()/writev() (the kernel's UIO_MAXIOV).
    IOV_MAX = 1024
    # Ready events handled per Hub.poll() round.
    EVENTS_MAX = 64
    # Batch wait (Hub.batch_wait, see Hub.poll and Hub.next_round): a round that forwarded
    # LINGER_FRAMES or more is followed by another at once (unless the hub captures: the
    # control plane writes captures out between polls); one that forwarded fewer, as a
    # stream or a burst, less than LINGER_GAP_FACTOR waits after the round before (or
    # right after a wait), by a wait. One poll() goes on for up to POLL_BUDGET_NS, then the
    # control plane's loop (accepts, timers, the control socket) runs.
    LINGER_GAP_FACTOR = 2
    POLL_BUDGET_NS = 1000000
    LINGER_FRAMES = 16
    # Rounds without a wait after a wait that gathered fewer than two frames (one frame in
    # flight whose answer takes another path then waits once in LINGER_BACKOFF + 1).
    LINGER_BACKOFF = 64
    # The largest wait allowed (ns): a wait is latency added to the frames that arrive
    # during it. The default is the control plane's (defaults.BATCH_WAIT_US).
    LINGER_MAX_NS = 1000000
    # UDP GSO (UDP_SEGMENT) on send: segments per message (the kernel's UDP_MAX_SEGMENTS:
    # 64 before Linux 6.x raised it to 128; we send at most the lower figure) and bytes per
    # message (an IPv4 datagram's payload limit). Receiving, UDP_GRO may hand over any
    # number of segments (128 from a local GSO sender, 64 from the GRO engine): the split
    # in dgram.pyx depends on no segment count, only on the bytes it has room for.
    GSO_SEGMENTS_MAX = 64
    GSO_BYTES_MAX = 65507
    # After the kernel refused a GSO run for a peer (EINVAL/EIO/EMSGSIZE: a route whose
    # MTU is below the frame size, a device without checksum offload), this many frames go
    # out one datagram each before GSO is tried again (routes change; one error is no verdict).
    GSO_RETRY_FRAMES = 65536
    # Records split out of coalesced (UDP_GRO) datagrams are written here, per port; when
    # the next record would not fit, the batch so far is forwarded and the buffer reused.
    GRO_SPREAD = STREAM_READ
    # Largest header a datagram port sends before each frame (VXLAN's is 8 bytes).
    TX_HDR_MAX = 16
    # A queued record of a port with several peers starts with the index of the peer it
    # goes to (uint16, native order), then the frame.
    DEST_TAG_LEN = 2
    # Control buffer of one message: CMSG_SPACE(sizeof(uint16_t)), rounded up.
    GSO_CTRL = 32
    # Default bound of one port's backlog (queue depth) in bytes.
    QUEUE_DEFAULT = 4194304
    # Largest backlog bound one port may be given (1 GiB): sizes past it are a typo.
    QUEUE_MAX = 1073741824
    # Default memory all backlogs of one relay may allocate together (QueueBudget).
    QUEUE_BUDGET_DEFAULT = 67108864
    # First allocation of a backlog; it doubles from there as the queue grows.
    BACKLOG_CHUNK = 65536
    # TLS: the most plaintext one record carries (2^14, fixed by TLS 1.2 and 1.3). A TLS port
    # asks for a record only with at least this much room, so OpenSSL never holds decrypted
    # bytes that epoll cannot see (it reads records without read-ahead).
    TLS_RECORD_MAX = 16384
    # After SSL_write() would block, OpenSSL holds an encrypted record made of bytes we have
    # not been told are sent (at most one record, plus one it finished on the same retry):
    # those bytes must be offered again first, unchanged, so they are queued whatever the bound.
    TLS_COMMITTED_MAX = 2 * TLS_RECORD_MAX
