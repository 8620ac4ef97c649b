# VxlanPort: a VXLAN tunnel endpoint (RFC 7348) as a datagram port of the hub's switch.

cdef enum:
    # The VXLAN header: flags (0x08: the VNI is valid), 3 reserved bytes, the 24-bit VNI,
    # 1 reserved byte.
    VXLAN_HDR_LEN = 8
    VXLAN_FLAG_VNI = 0x08
    VXLAN_VNI_MAX = 0xffffff
    # Remote endpoints one port may have (head-end replication sends a flooded frame to
    # each: past a few hundred, multicast underlays are the tool, not a relay).
    VXLAN_PEERS_MAX = 256


cdef class VxlanPort(DatagramPort):
    cdef:
        readonly uint32_t vni        # the VXLAN network identifier sent and accepted
        int16_t *rx_remote           # owned; BATCH_MAX: the remote endpoint of each record
        int last_peer                # index of the peer matched last (tried first)
        readonly uint64_t drop_vni      # datagrams of another VNI or without the I flag
        readonly uint64_t drop_foreign  # datagrams from an address that is not a peer
