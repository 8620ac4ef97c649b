# Small inline helpers of the data plane: big-endian loads and stores, errno text, bounds.

cdef inline uint32_t load_be32(const char *p) noexcept nogil:
    cdef uint32_t v
    memcpy(&v, p, 4)
    return ntohl(v)


cdef inline void store_be32(char *p, uint32_t v) noexcept nogil:
    v = htonl(v)
    memcpy(p, &v, 4)


cdef inline str errno_text(int err):
    return strerror(err).decode("utf-8", "replace")


cdef str socket_error_text(int fd):
    """Why a descriptor reported EPOLLERR: its pending socket error (which this clears)."""
    cdef int err = 0
    cdef socklen_t size = sizeof(err)
    if getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &size) == 0 and err:
        return errno_text(err)
    return "hung up with an error"


cdef inline bint overflows(Py_ssize_t need, Py_ssize_t cap, const char *what) noexcept nogil:
    """True if writing up to `need` bytes (or items) would pass `cap`, the buffer's real size.

    Every write whose size the kernel or a peer decides goes through this check: the
    release build drops what does not fit (the caller counts it), the debug build aborts
    with the place, so that a sizing mistake is found by tests instead of corrupting memory.
    """
    if need <= cap:
        return False
    if FASTRELAY_DEBUG:
        fr_bounds_abort(what, need, cap)
    return True


cdef inline int64_t monotonic_ns() noexcept nogil:
    """The monotonic clock in ns (a vDSO call: read once per batch, never per frame)."""
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <int64_t>ts.tv_sec * 1000000000 + ts.tv_nsec


cdef inline int64_t realtime_ns() noexcept nogil:
    """Wall-clock time in ns since the epoch (capture timestamps; once per batch)."""
    cdef timespec ts
    clock_gettime(CLOCK_REALTIME, &ts)
    return <int64_t>ts.tv_sec * 1000000000 + ts.tv_nsec
