# DatagramPort: qemu's datagram framing (one frame per datagram) over UDP or unix sockets.

cdef class DatagramPort(Port):
    cdef:
        char *slots              # owned; DGRAM_BATCH slots of DGRAM_SLOT bytes (header + frame)
        mmsghdr *rx_msgs         # owned; recvmmsg vector, one per slot
        iovec *rx_iov            # owned; one per slot, pointing past the slot's header
        sockaddr_storage *rx_from  # owned; the source of each received datagram
        mmsghdr *tx_msgs         # owned; sendmmsg vector
        iovec *tx_iov            # owned; one per message
        sockaddr_storage peer    # where frames are sent
        socklen_t peer_len       # 0 while no peer is known (learning mode, nothing heard yet)
        bint learn_peer          # send to whoever sent last (a listener without a fixed peer)
        uint32_t max_frame       # longest frame accepted and sent
        readonly uint64_t send_errors   # sendmmsg failures other than EAGAIN (peer absent...)
        readonly int last_send_errno    # errno of the latest of those

    cdef int send_frames(self, char **frames, uint32_t *lengths, Py_ssize_t n,
                         bint count_tx) except -1
