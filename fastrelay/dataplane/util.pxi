# Small inline helpers of the data plane: big-endian loads and stores, errno text.

cdef inline uint32_t load_be32(const char *p) noexcept nogil:
    cdef uint32_t v
    memcpy(&v, p, 4)
    return ntohl(v)


cdef inline void store_be32(char *p, uint32_t v) noexcept nogil:
    v = htonl(v)
    memcpy(p, &v, 4)


cdef inline str errno_text(int err):
    return strerror(err).decode("utf-8", "replace")
