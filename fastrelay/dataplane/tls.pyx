# TLS: OpenSSL contexts, handshakes driven by the control plane, and the TLSPort that carries
# qemu's stream framing inside a TLS session.
#
# Theory of operation. OpenSSL is called directly (libssl), on the socket itself (SSL_set_fd):
# a record is encrypted straight from the reader's buffer into OpenSSL's write buffer and sent
# from there, and decrypted straight into the hub's receive buffer, so a TLS link costs the
# cipher and one send per 16 KiB record, no copy of ours and no Python per frame or record.
# (The standard library's SSLObject with memory BIOs was measured against it: see
# bench/RESULTS.md, "TLS".)
#
# The handshake is the control plane's: it builds a TLSSession on the connected socket and
# calls handshake() each time the socket is ready (asyncio add_reader/add_writer), under its
# own timeout. Once done, the TLSPort takes the session over (take()) and the data plane
# owns it until the port closes.
#
# Reading: SSL_read() is asked only with room for a whole record (TLS_RECORD_MAX), and
# OpenSSL reads without read-ahead (exactly one record's bytes), so after a read OpenSSL
# never holds decrypted bytes or whole records that epoll cannot see: the socket stays the
# one source of readiness, and pausing a reader (back-pressure) loses nothing.
#
# Writing: SSL_MODE_ENABLE_PARTIAL_WRITE makes SSL_write() return after each record, so
# the port knows which frames left; SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER lets a blocked write
# be retried from the backlog, where the bytes OpenSSL has committed (TLS_COMMITTED_MAX) are
# queued first, whatever the bound, exactly like the unsent rest of a started frame.

class TLSError(Exception):
    """A TLS set-up or handshake failed: str() is the reason, `kind` the counter's label."""

    def __init__(self, reason, kind="protocol"):
        super().__init__(reason)
        self.kind = kind


cdef str _ssl_reason(unsigned long e):
    cdef const char *r
    if e == 0:
        return ""
    r = ERR_reason_error_string(e)
    return r.decode("utf-8", "replace") if r != NULL else f"OpenSSL error {e:#x}"


cdef str _last_error(str fallback):
    """The reason of the most recent OpenSSL error (the queue is emptied), or fallback."""
    cdef unsigned long e = ERR_peek_last_error()
    text = _ssl_reason(e)
    ERR_clear_error()
    return text or fallback


cdef class TLSContext:
    """One side of mutual TLS: our certificate and key, and the CA (or pinned certificates)
    a peer's certificate must chain to. TLS 1.2 at least (1.3 is negotiated between us),
    no renegotiation, no compression, no session tickets (links are long-lived).

    server: accept, and require a client certificate (SSL_VERIFY_FAIL_IF_NO_PEER_CERT);
    otherwise connect and verify the server's certificate (its name: TLSSession).
    Raises TLSError("what: why") when a file is unusable or the key does not match.
    """

    def __cinit__(self, str cert, str key, str ca, bint server):
        self.ctx = SSL_CTX_new(TLS_server_method() if server else TLS_client_method())
        if self.ctx == NULL:
            raise MemoryError()
        self.server = server
        ERR_clear_error()
        SSL_CTX_set_min_proto_version(self.ctx, TLS1_2_VERSION)
        SSL_CTX_set_options(self.ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION)
        SSL_CTX_set_mode(self.ctx, SSL_MODE_ENABLE_PARTIAL_WRITE
                         | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER)
        SSL_CTX_set_session_cache_mode(self.ctx, SSL_SESS_CACHE_OFF)
        SSL_CTX_set_num_tickets(self.ctx, 0)
        if SSL_CTX_use_certificate_chain_file(self.ctx, os.fsencode(cert)) != 1:
            raise TLSError(f"certificate {cert}: {_last_error('not a PEM certificate')}")
        if SSL_CTX_use_PrivateKey_file(self.ctx, os.fsencode(key), SSL_FILETYPE_PEM) != 1:
            why = _last_error('not a PEM private key')
            if "mismatch" in why:
                raise TLSError(f"key {key} does not match certificate {cert}")
            raise TLSError(f"key {key}: {why}")
        if SSL_CTX_check_private_key(self.ctx) != 1:
            raise TLSError(f"key {key} does not match certificate {cert}: "
                           f"{_last_error('key values mismatch')}")
        if SSL_CTX_load_verify_locations(self.ctx, os.fsencode(ca), NULL) != 1:
            raise TLSError(f"CA {ca}: {_last_error('no PEM certificate in it')}")
        SSL_CTX_set_verify(self.ctx, SSL_VERIFY_PEER | (SSL_VERIFY_FAIL_IF_NO_PEER_CERT
                                                        if server else 0), NULL)

    def __dealloc__(self):
        if self.ctx != NULL:
            SSL_CTX_free(self.ctx)


cdef class TLSSession:
    """A TLS session on a connected, non-blocking socket, until its handshake is done.

    server_name (clients only): the name the server's certificate must carry (a DNS name, or
    an IP address matched against its IP SANs); None checks only the chain. The caller keeps
    owning fd; a TLSPort built from the session takes the session (and the fd it is given).
    """

    def __cinit__(self, TLSContext context, int fd, str server_name=None):
        self.fd = fd
        self.server = context.server
        self.ssl = SSL_new(context.ctx)
        if self.ssl == NULL:
            raise MemoryError()
        ERR_clear_error()
        if SSL_set_fd(self.ssl, fd) != 1:
            raise TLSError(f"cannot use the socket: {_last_error('SSL_set_fd failed')}")
        if context.server:
            SSL_set_accept_state(self.ssl)
        else:
            SSL_set_connect_state(self.ssl)
            if server_name:
                name = server_name.encode()
                if SSL_set1_host(self.ssl, name) != 1:
                    raise TLSError(f"cannot check the name {server_name!r}: "
                                   f"{_last_error('bad name')}")
                if not _is_ip(server_name):
                    SSL_set_tlsext_host_name(self.ssl, name)

    def __dealloc__(self):
        if self.ssl != NULL:
            SSL_free(self.ssl)

    cdef SSL *take(self):
        cdef SSL *ssl = self.ssl
        self.ssl = NULL
        return ssl

    def handshake(self):
        """One step: 0 when done, 1 when it needs the socket readable, 2 writable.

        Raises TLSError with the reason and its kind: no_certificate (the client sent
        none), bad_certificate (the peer's did not verify: other CA, wrong name, expired),
        refused_by_peer (the peer sent an alert: it did not accept ours), closed (the peer
        left), protocol (not TLS: a plaintext client, a version we refuse).
        """
        cdef int ret, err, saved
        cdef long verify
        cdef unsigned long e
        if self.ssl == NULL:
            raise ValueError("the session was handed to a port")
        ERR_clear_error()
        ret = SSL_do_handshake(self.ssl)
        if ret == 1:
            return 0
        saved = errno
        err = SSL_get_error(self.ssl, ret)
        if err == SSL_ERROR_WANT_READ:
            return 1
        if err == SSL_ERROR_WANT_WRITE:
            return 2
        verify = SSL_get_verify_result(self.ssl)
        e = ERR_peek_last_error()
        reason = _ssl_reason(e)
        ERR_clear_error()
        if err == SSL_ERROR_ZERO_RETURN or (err == SSL_ERROR_SYSCALL and not e):
            why = errno_text(saved) if saved else "closed by peer"
            raise TLSError(f"handshake failed: {why}", "closed")
        if verify != X509_V_OK:
            raise TLSError("handshake failed: certificate refused: "
                           + X509_verify_cert_error_string(verify).decode(), "bad_certificate")
        if "did not return a certificate" in reason:
            raise TLSError("handshake failed: no client certificate", "no_certificate")
        if "alert" in reason:
            raise TLSError(f"handshake failed: the peer refused us ({reason})",
                           "refused_by_peer")
        if "unexpected eof" in reason:
            raise TLSError("handshake failed: closed by peer", "closed")
        raise TLSError(f"handshake failed: not TLS or not acceptable ({reason or 'error'})",
                       "protocol")

    @property
    def version(self):
        return SSL_get_version(self.ssl).decode() if self.ssl != NULL else None


cdef bint _is_ip(str text):
    return ":" in text or text.replace(".", "").isdigit()


cdef class TLSPort(StreamPort):
    """A StreamPort whose bytes travel inside a TLS session (see the theory above).

    Built by the control plane around a socket and the TLSSession whose handshake is done
    on it; it owns both. Frames are framed, counted, queued and dropped exactly as on a
    plain stream port; only the bytes on the wire differ. A peer that sends anything that
    is not a valid record of the session (garbage, a tampered byte) is closed, with
    OpenSSL's reason, and only that peer.
    """

    def __cinit__(self, int fd, str name, *args, TLSSession session=None, **kwargs):
        if session is None or session.ssl == NULL:
            raise ValueError("a TLSPort needs a TLSSession whose handshake is done")
        if session.fd != fd:
            raise ValueError("the session is on another socket")
        self.tls_version = SSL_get_version(session.ssl).decode()
        self.tls_cipher = SSL_get_cipher_name(session.ssl).decode()
        self.ssl = session.take()

    def __dealloc__(self):
        if self.ssl != NULL:
            SSL_free(self.ssl)
            self.ssl = NULL

    cdef void close_fds(self):
        """Say goodbye (close_notify, best effort: never waits), free the session, close."""
        if self.ssl != NULL:
            if self.fd >= 0:
                ERR_clear_error()
                SSL_shutdown(self.ssl)
                ERR_clear_error()
            SSL_free(self.ssl)
            self.ssl = NULL
        Port.close_fds(self)

    cdef str error_text(self, int ret):
        """Why an SSL_read/SSL_write that returned ret failed for good (errno intact)."""
        cdef int saved = errno
        cdef int err = SSL_get_error(self.ssl, ret)
        cdef unsigned long e = ERR_peek_last_error()
        reason = _ssl_reason(e)
        ERR_clear_error()
        if err == SSL_ERROR_SYSCALL and not e:
            return errno_text(saved) if saved else "closed by peer without close_notify"
        return f"TLS: {reason or 'error'}"

    cdef int on_readable(self) except -1:
        self.rx.begin(self.hub.rxbuf, self.hub.budget)
        try:
            return self.read_tls()
        finally:
            self.rx.finish()

    cdef int read_tls(self) except -1:
        """Decrypt up to READS_PER_EVENT buffers' worth into the receive buffer, forwarding
        each; a record is only asked for with room for the largest one."""
        cdef Py_ssize_t got, room
        cdef int reads, r, err
        cdef bint ended = False, blocked = False
        ERR_clear_error()
        for reads in range(READS_PER_EVENT):
            if reads and not self.hub.should_read(self):
                return 0
            got = 0
            room = self.rx.write_room()
            while got < STREAM_READ and room - got >= TLS_RECORD_MAX:
                r = SSL_read(self.ssl, self.rx.write_ptr() + got, TLS_RECORD_MAX)
                if r > 0:
                    got += r
                    continue
                err = SSL_get_error(self.ssl, r)
                if err == SSL_ERROR_WANT_READ or err == SSL_ERROR_WANT_WRITE:
                    blocked = True
                elif err == SSL_ERROR_ZERO_RETURN:
                    ended = True
                elif err == SSL_ERROR_SYSCALL and not ERR_peek_last_error() and errno == 0:
                    ended = True  # EOF without close_notify: the same end for framing
                else:
                    if got:
                        self.forward_read(got)  # what was valid before the fault
                    if self.fd >= 0:
                        self.fail(self.error_text(r))
                    return 0
                break
            if got:
                self.forward_read(got)
                if self.fd < 0:
                    return 0
            if ended:
                if self.rx.end > self.rx.start:
                    return self.fail(f"peer closed in the middle of a frame "
                                     f"({self.rx.end - self.rx.start} bytes held back)")
                return self.fail("closed by peer", False)
            if blocked:
                return 0
        return 0

    cdef int forward_read(self, Py_ssize_t n) except -1:
        """n decrypted bytes were appended: hand the complete records on (as StreamPort)."""
        cdef int status = 1
        cdef FrameBatch *batch
        self.rx.end += n
        while status == 1:
            batch = self.hub.new_batch()
            status = self.rx.scan(batch)
            if batch.count:
                self.hub.forward(self, batch)
        self.rx.consume()
        if self.rx.runts:
            self.drop_invalid += self.rx.runts
            self.rx.runts = 0
        if status < 0:
            self.drop_invalid += 1
            return self.fail(f"bad frame length {self.rx.bad_length} "
                             f"(longest allowed {self.rx.max_frame})")
        return 0

    cdef int deliver(self, FrameBatch *batch) except -1:
        """Encrypt runs of contiguous records (one record per SSL_write, up to 16 KiB of
        frames each); what the socket cannot take goes to the backlog."""
        cdef Py_ssize_t i = 0, j, k, run, off, err
        cdef char *start
        cdef int r, want
        if len(self.backlog):
            return self.queue_from(batch, 0)
        ERR_clear_error()
        while i < batch.count:
            start = batch.rec[i]
            run = HDR_LEN + batch.length[i]
            j = i + 1
            while j < batch.count and start + run == batch.rec[j]:
                run += HDR_LEN + batch.length[j]
                j += 1
            off = 0
            while off < run:
                want = <int>min(run - off, 1 << 30)
                r = SSL_write(self.ssl, start + off, want)
                if r > 0:
                    off += r
                    continue
                err = SSL_get_error(self.ssl, r)
                if err != SSL_ERROR_WANT_WRITE and err != SSL_ERROR_WANT_READ:
                    return self.fail(self.error_text(r))
                break
            # Count the records sent whole; k is the first that is not.
            k = i
            while k < j and off >= HDR_LEN + <Py_ssize_t>batch.length[k]:
                off -= HDR_LEN + batch.length[k]
                self.tx_frames += 1
                self.tx_bytes += batch.length[k]
                k += 1
            if k < j:
                return self.blocked_write(batch, k, off, j)
            i = j
        return 0

    cdef int blocked_write(self, FrameBatch *batch, Py_ssize_t k, Py_ssize_t done,
                           Py_ssize_t run_end) except -1:
        """SSL_write would block inside record k, done bytes into it: queue the rest.

        The records OpenSSL may already hold encrypted (up to TLS_COMMITTED_MAX bytes past
        the last byte it reported sent, all within the run k..run_end) are queued whatever
        the bound: the retry must offer them again. Whole records after them are queued
        within the bound, as on any port.
        """
        cdef Py_ssize_t upto = done + TLS_COMMITTED_MAX
        while k < run_end and upto > 0:
            if done:
                self.backlog.push_rest(batch.rec[k] + done, HDR_LEN + batch.length[k] - done,
                                       batch.length[k])
                done = 0
            elif not self.backlog.push(batch.rec[k], HDR_LEN + batch.length[k], True):
                return self.fail("out of memory for bytes TLS must send again")
            upto -= HDR_LEN + batch.length[k]
            k += 1
        return self.queue_from(batch, k)

    cdef int on_writable(self) except -1:
        """Encrypt from the backlog (its head is where the blocked write stopped)."""
        cdef Backlog q = self.backlog
        cdef int r, err
        ERR_clear_error()
        while q.tail > q.head:
            r = SSL_write(self.ssl, q.data + q.head, <int>min(q.tail - q.head, 1 << 30))
            if r <= 0:
                err = SSL_get_error(self.ssl, r)
                if err == SSL_ERROR_WANT_WRITE or err == SSL_ERROR_WANT_READ:
                    break
                return self.fail(self.error_text(r))
            self.sent_from_backlog(r)
        return self.after_flush()
