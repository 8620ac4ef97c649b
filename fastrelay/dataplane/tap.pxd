# TapPort: a Linux tap (IFF_TAP|IFF_NO_PI|IFF_VNET_HDR), one or several queue descriptors.

cdef enum:
    # The vnet header on our taps: struct virtio_net_hdr, 10 bytes (TUNSETVNETHDRSZ 10, as
    # qemu without mergeable buffers). The 12-byte form only adds num_buffers, which a tap
    # ignores, and costs the kernel an extra zeroing copy on every read.
    VNET_HDR_LEN = 10
    # Longest frame one tap read returns: a 64 KiB GSO super-frame plus its L2 header,
    # with room to spare (still below FRAME_MAX, so any record fits a stream peer).
    TAP_FRAME_MAX = 65536 + 1024
    # Frames per batch handed to the hub (each is one readv; the bytes are bounded too).
    TAP_BATCH = 256
    # Receive buffer: a batch stops once STREAM_READ bytes are in, so a batch is never
    # larger than a stream batch and the hub's back-pressure bound holds for it too.
    TAP_BUF = STREAM_READ + VNET_HDR_LEN + TAP_FRAME_MAX
    # Queue descriptors of one multi-queue tap (the kernel's limit is 256).
    TAP_QUEUES_MAX = 256


cdef class TapPort(Port):
    cdef:
        char *buf                        # owned; TAP_BUF bytes: [header|frame] per read, the
                                         # record's length written over the header's tail
        virtio_net_hdr *rx_vnet          # owned; TAP_BATCH headers, one per record read
        virtio_net_hdr plain_hdr         # all zero: the header sent with a plain frame
        int *queues                      # owned; the queue fds (queues[0] is also wfd)
        readonly int nqueues             # descriptors in queues
        int next_queue                   # where the next read pass starts (fairness)
        readonly bint offload            # the kernel may hand us GSO / partial-checksum frames
        uint32_t max_frame               # longest frame accepted from a peer or the tap
        readonly uint64_t drop_gso       # super-frames dropped: a plain port was attached
        readonly uint64_t csum_filled    # checksums completed for plain ports
        readonly uint64_t write_errors   # writes the tap refused (down: EIO; bad frame)
        readonly int last_write_errno    # errno of the latest of those

    cdef int fix_for_plain(self, FrameBatch *batch) except -1
    cdef bint plain_peers(self)
    cdef int write_frame(self, const virtio_net_hdr *hdr, char *frame,
                         uint32_t length) except -2
