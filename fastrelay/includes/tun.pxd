# C declarations of the tun/tap driver and virtio-net header the tap data plane relies on.
from libc.stdint cimport uint8_t, uint16_t


cdef extern from "<linux/ioctl.h>":
    # if_tun.h uses _IOW()/_IOR() without including their definition.
    pass


cdef extern from "<linux/if_tun.h>" nogil:
    # ioctls on a /dev/net/tun descriptor (exported to the control plane, which opens taps).
    const unsigned long TUNSETIFF
    const unsigned long TUNGETIFF
    const unsigned long TUNSETPERSIST
    const unsigned long TUNSETOWNER
    const unsigned long TUNGETFEATURES
    const unsigned long TUNSETOFFLOAD
    const unsigned long TUNSETVNETHDRSZ
    # TUNSETIFF flags.
    enum:
        IFF_TUN
        IFF_TAP
        IFF_NO_PI
        IFF_VNET_HDR
        IFF_MULTI_QUEUE
        IFF_TUN_EXCL
    # TUNSETOFFLOAD bits: what the reader of the tap accepts from the kernel.
    enum:
        TUN_F_CSUM
        TUN_F_TSO4
        TUN_F_TSO6
        TUN_F_TSO_ECN
        TUN_F_UFO


cdef extern from "<linux/virtio_net.h>" nogil:
    # The header in front of every frame on an IFF_VNET_HDR tap (qemu and vhost-net use it).
    struct virtio_net_hdr:
        uint8_t flags         # VIRTIO_NET_HDR_F_*: checksum still to be filled in, or valid
        uint8_t gso_type      # VIRTIO_NET_HDR_GSO_*: a super-frame to segment, or NONE
        uint16_t hdr_len      # (legacy endianness = host order on x86) L2-L4 header length
        uint16_t gso_size     # segment payload size (MSS) of a super-frame
        uint16_t csum_start   # where the checksummed part starts
        uint16_t csum_offset  # where, after csum_start, the checksum goes

    enum:
        VIRTIO_NET_HDR_F_NEEDS_CSUM
        VIRTIO_NET_HDR_F_DATA_VALID
        VIRTIO_NET_HDR_GSO_NONE
        VIRTIO_NET_HDR_GSO_TCPV4
        VIRTIO_NET_HDR_GSO_UDP
        VIRTIO_NET_HDR_GSO_TCPV6
        VIRTIO_NET_HDR_GSO_ECN


cdef extern from "<errno.h>" nogil:
    # Read/write errors a tap can return besides those in system.pxd.
    enum:
        EBADFD    # the device was removed under us
        EFAULT    # one frame could not be copied (dropped by the kernel)
        EINVAL    # a frame or header the kernel refuses
        EIO       # the tap is down
