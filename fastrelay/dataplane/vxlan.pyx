# VxlanPort: a VXLAN tunnel endpoint (RFC 7348) as a datagram port of the hub's switch.


cdef inline bint same_host(const sockaddr_storage *a, const sockaddr_storage *b) noexcept nogil:
    """Whether two inet addresses name the same host (ports not compared). An IPv6 address
    names a host together with its scope: the kernel gives a link-local source the index of
    the link it came in on (0 for any other), and a link-local endpoint is resolved with
    its link's, so the same fe80:: address on another link is another host."""
    if a.ss_family != b.ss_family:
        return False
    if a.ss_family == AF_INET:
        return (<const sockaddr_in *>a).sin_addr.s_addr == (<const sockaddr_in *>b).sin_addr.s_addr
    if a.ss_family == AF_INET6:
        return ((<const sockaddr_in6 *>a).sin6_scope_id == (<const sockaddr_in6 *>b).sin6_scope_id
                and memcmp(&(<const sockaddr_in6 *>a).sin6_addr,
                           &(<const sockaddr_in6 *>b).sin6_addr, sizeof(in6_addr)) == 0)
    return False


cdef inline uint16_t port_of(const sockaddr_storage *a) noexcept nogil:
    """The port of an inet address (network order; the same place for IPv4 and IPv6)."""
    return (<const sockaddr_in *>a).sin_port


cdef class VxlanPort(DatagramPort):
    """A VXLAN tunnel endpoint (VTEP): Ethernet frames in UDP, to and from remote VTEPs.

    Theory of operation. A DatagramPort with several fixed peers (`peers=`, the remote
    VTEPs, at most VXLAN_PEERS_MAX) and an 8-byte header: on the wire each datagram is
    [flags 0x08, 3 zero bytes, VNI (24 bits), 1 zero byte][Ethernet frame].

    Receiving, a datagram is taken only from a peer: its source is matched on address and
    port first, else on the address alone (the Linux kernel sends from a source port hashed
    from the inner frame, so only the address is known in advance); anything else is
    dropped and counted (drop_foreign): remote endpoints are configured, never learned, so
    no stranger can inject frames. Then the I flag must be set and the VNI be ours (the
    reserved bits are ignored, RFC 7348 section 5), or it is dropped (drop_vni). The
    frame's length header is written over the last 4 bytes of the VXLAN header, so the
    record needs no copy; each record's remote endpoint index goes to the batch's `remote`
    side array, which the switch learns MACs with. UDP_GRO stays on: another fastrelay's
    GSO runs arrive coalesced and are split per datagram (each has its own header), as
    for plain UDP.

    Sending, the header goes as its own iovec before each frame, frames the switch
    assigned to one remote go to that VTEP only, and the rest (broadcast, multicast,
    unknown unicast, and everything in a hub) to every VTEP (DatagramPort.deliver_each:
    head-end replication, counted in `replicated`). GSO runs work as for UDP, with
    segments of header plus frame. The socket never fragments (IPv4 DF, IPv6 DONTFRAG):
    the inner MTU is the path MTU minus 50 bytes (IPv4: 20 IP + 8 UDP + 8 VXLAN + 14
    Ethernet) or 70 (IPv6); a larger frame is refused by the kernel with EMSGSIZE and
    dropped (drop_mtu, also in drop_send). drop_vni and drop_foreign are also counted in
    drop_invalid, so the totals of every report include them.

    The port is an overlay port: the hub attaches it as a trunk (split horizon: a frame
    that came in through VXLAN never goes out through VXLAN or another trunk).
    """

    def __cinit__(self, int fd, str name, *args, int family=AF_INET, peers=None,
                  uint32_t vni=0, **kwargs):
        cdef int on = 1, mode
        cdef Py_ssize_t i
        if family != AF_INET and family != AF_INET6:
            raise ValueError(f"{name}: VXLAN runs over UDP (AF_INET or AF_INET6)")
        if not peers or self.npeers == 0:
            raise ValueError(f"{name}: VXLAN needs at least one remote endpoint (peers=)")
        if self.npeers > VXLAN_PEERS_MAX:
            raise ValueError(f"{name}: {self.npeers} remote endpoints: at most "
                             f"{VXLAN_PEERS_MAX}")
        if vni > VXLAN_VNI_MAX:
            raise ValueError(f"{name}: VNI {vni} out of range: 0..{VXLAN_VNI_MAX}")
        self.vni = vni
        self.overlay = True
        self.want_source = True  # sender() matches each datagram's source to a peer
        self.rx_remote = <int16_t *>PyMem_RawMalloc(BATCH_MAX * sizeof(int16_t))
        if self.rx_remote == NULL:
            raise MemoryError()
        memset(self.tx_hdr, 0, VXLAN_HDR_LEN)
        self.tx_hdr[0] = VXLAN_FLAG_VNI
        store_be32(self.tx_hdr + 4, vni << 8)
        self.tx_hdr_len = VXLAN_HDR_LEN
        # Never fragment: a fragmented overlay loses whole frames to one lost fragment and
        # costs every VTEP reassembly; the kernel refuses (EMSGSIZE) what does not fit.
        if family == AF_INET:
            mode = IP_PMTUDISC_DO
            if setsockopt(fd, IPPROTO_IP, IP_MTU_DISCOVER, &mode, sizeof(mode)) < 0:
                PyErr_SetFromErrno(OSError)
        else:
            mode = IPV6_PMTUDISC_DO
            if (setsockopt(fd, IPPROTO_IPV6, IPV6_MTU_DISCOVER, &mode, sizeof(mode)) < 0
                    or setsockopt(fd, IPPROTO_IPV6, IPV6_DONTFRAG, &on, sizeof(on)) < 0):
                PyErr_SetFromErrno(OSError)
        if not self.gro:
            # Without GRO a slot is sized to the longest datagram accepted plus one byte,
            # so that a longer one shows as MSG_TRUNC: make room for the header too.
            for i in range(DGRAM_BATCH):
                if self.rx_iov[i].iov_len < DGRAM_MAX:
                    self.rx_iov[i].iov_len = min(self.rx_iov[i].iov_len + VXLAN_HDR_LEN,
                                                 DGRAM_MAX)

    def __dealloc__(self):
        PyMem_RawFree(self.rx_remote)

    def stats(self):
        """The datagram counters plus VXLAN's (drop_vni and drop_foreign are part of
        drop_invalid, drop_mtu of drop_send)."""
        d = DatagramPort.stats(self)
        d.update(vni=self.vni, peers=self.npeers, drop_vni=self.drop_vni,
                 drop_foreign=self.drop_foreign, drop_mtu=self.drop_mtu,
                 replicated=self.replicated)
        return d

    cdef FrameBatch *fresh_batch(self):
        cdef FrameBatch *batch = self.hub.new_batch()
        batch.remote = self.rx_remote
        return batch

    cdef int sender(self, Py_ssize_t i, Py_ssize_t datagrams) noexcept:
        """The peer message i came from: address and port, else address alone; -1 (counted)
        for any other source."""
        cdef const sockaddr_storage *src = &self.rx_from[i]
        cdef int k, by_host = -1
        if (same_host(src, &self.peers[self.last_peer])
                and port_of(src) == port_of(&self.peers[self.last_peer])):
            return self.last_peer
        for k in range(self.npeers):
            if same_host(src, &self.peers[k]):
                if port_of(src) == port_of(&self.peers[k]):
                    self.last_peer = k
                    return k
                if by_host < 0:
                    by_host = k
        if by_host < 0:
            self.drop_foreign += datagrams
            self.drop_invalid += datagrams
        return by_host

    cdef Py_ssize_t unwrap(self, const char *data, Py_ssize_t length) noexcept:
        """VXLAN_HDR_LEN if the datagram carries our VNI with the I flag set; else -1
        (counted: drop_vni, or drop_invalid alone when it is too short for a header)."""
        if length < VXLAN_HDR_LEN:
            self.drop_invalid += 1
            return -1
        if not (<const unsigned char *>data)[0] & VXLAN_FLAG_VNI or (
                load_be32(data + 4) >> 8) != self.vni:
            self.drop_vni += 1
            self.drop_invalid += 1
            return -1
        return VXLAN_HDR_LEN
