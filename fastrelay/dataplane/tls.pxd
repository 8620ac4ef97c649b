# TLS: OpenSSL contexts, handshakes driven by the control plane, and the TLSPort that carries
# qemu's stream framing inside a TLS session.

cdef class TLSContext:
    cdef:
        SSL_CTX *ctx             # owned; shared (refcounted by OpenSSL) with its sessions
        readonly bint server     # accepts (requires a client certificate) or connects


cdef class TLSSession:
    cdef:
        SSL *ssl                 # owned until a TLSPort takes it (then NULL here)
        readonly int fd          # the socket (owned by the caller until the port takes it)
        readonly bint server

    cdef SSL *take(self)


cdef class TLSPort(StreamPort):
    cdef:
        SSL *ssl                 # owned; the session on fd, handshake done
        readonly str tls_version # "TLSv1.3", for reports
        readonly str tls_cipher

    cdef int read_tls(self) except -1
    cdef int forward_read(self, Py_ssize_t n) except -1
    cdef int blocked_write(self, FrameBatch *batch, Py_ssize_t k, Py_ssize_t done,
                           Py_ssize_t run_end) except -1
    cdef str error_text(self, int ret)
