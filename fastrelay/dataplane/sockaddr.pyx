# Conversion of socket-module addresses (tuples, paths) into kernel sockaddr structs.

cdef socklen_t sockaddr_from_py(int family, addr, sockaddr_storage *ss) except 0:
    """Fill ss from a socket-module address of family; return its length."""
    cdef sockaddr_in *sin
    cdef sockaddr_in6 *sin6
    cdef sockaddr_un *sun
    cdef bytes raw
    memset(ss, 0, sizeof(sockaddr_storage))
    if family == AF_INET:
        sin = <sockaddr_in *>ss
        sin.sin_family = AF_INET
        sin.sin_port = htons(addr[1])
        raw = addr[0].encode("ascii")
        if inet_pton(AF_INET, raw, &sin.sin_addr) != 1:
            raise ValueError(f"not an IPv4 address: {addr[0]!r}")
        return sizeof(sockaddr_in)
    if family == AF_INET6:
        sin6 = <sockaddr_in6 *>ss
        sin6.sin6_family = AF_INET6
        sin6.sin6_port = htons(addr[1])
        if len(addr) > 2:
            sin6.sin6_flowinfo = htonl(addr[2])
        if len(addr) > 3:
            sin6.sin6_scope_id = addr[3]
        raw = addr[0].split("%")[0].encode("ascii")
        if inet_pton(AF_INET6, raw, &sin6.sin6_addr) != 1:
            raise ValueError(f"not an IPv6 address: {addr[0]!r}")
        return sizeof(sockaddr_in6)
    if family == AF_UNIX:
        sun = <sockaddr_un *>ss
        sun.sun_family = AF_UNIX
        raw = os.fsencode(addr)
        # Abstract names start with NUL and are not NUL-terminated; paths are.
        if len(raw) + (0 if raw[:1] == b"\0" else 1) > sizeof(sun.sun_path):
            raise ValueError(f"unix socket path too long: {addr!r}")
        memcpy(sun.sun_path, <char *>raw, len(raw))
        return sizeof(sa_family_t) + len(raw) + (0 if raw[:1] == b"\0" else 1)
    raise ValueError(f"unsupported address family {family}")
