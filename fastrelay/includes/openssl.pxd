# C declarations of the OpenSSL (libssl 3) calls the TLS port and its contexts use.


cdef extern from "<openssl/ssl.h>" nogil:
    ctypedef struct SSL_CTX
    ctypedef struct SSL
    ctypedef struct SSL_METHOD
    ctypedef struct X509
    ctypedef struct X509_STORE_CTX

    const SSL_METHOD *TLS_server_method()
    const SSL_METHOD *TLS_client_method()
    SSL_CTX *SSL_CTX_new(const SSL_METHOD *method)
    void SSL_CTX_free(SSL_CTX *ctx)
    int SSL_CTX_up_ref(SSL_CTX *ctx)
    int SSL_CTX_set_min_proto_version(SSL_CTX *ctx, int version)
    long SSL_CTX_set_options(SSL_CTX *ctx, long options)
    long SSL_CTX_set_mode(SSL_CTX *ctx, long mode)
    long SSL_CTX_set_session_cache_mode(SSL_CTX *ctx, long mode)
    int SSL_CTX_set_num_tickets(SSL_CTX *ctx, size_t num_tickets)
    int SSL_CTX_use_certificate_chain_file(SSL_CTX *ctx, const char *file)
    int SSL_CTX_use_PrivateKey_file(SSL_CTX *ctx, const char *file, int type)
    int SSL_CTX_check_private_key(const SSL_CTX *ctx)
    int SSL_CTX_load_verify_locations(SSL_CTX *ctx, const char *CAfile, const char *CApath)
    void SSL_CTX_set_verify(SSL_CTX *ctx, int mode, void *callback)

    SSL *SSL_new(SSL_CTX *ctx)
    void SSL_free(SSL *ssl)
    int SSL_set_fd(SSL *ssl, int fd)
    void SSL_set_connect_state(SSL *ssl)
    void SSL_set_accept_state(SSL *ssl)
    int SSL_set1_host(SSL *ssl, const char *hostname)
    long SSL_set_tlsext_host_name(SSL *ssl, const char *name)
    int SSL_do_handshake(SSL *ssl)
    int SSL_read(SSL *ssl, void *buf, int num)
    int SSL_write(SSL *ssl, const void *buf, int num)
    int SSL_pending(const SSL *ssl)
    int SSL_shutdown(SSL *ssl)
    int SSL_get_error(const SSL *ssl, int ret)
    long SSL_get_verify_result(const SSL *ssl)
    const char *SSL_get_version(const SSL *ssl)
    const char *SSL_get_cipher_name(const SSL *ssl)
    X509 *SSL_get0_peer_certificate(const SSL *ssl)

    const char *X509_verify_cert_error_string(long n)

    enum:
        TLS1_2_VERSION
        SSL_FILETYPE_PEM
        SSL_VERIFY_PEER
        SSL_VERIFY_FAIL_IF_NO_PEER_CERT
        SSL_MODE_ENABLE_PARTIAL_WRITE
        SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER
        SSL_MODE_RELEASE_BUFFERS
        SSL_OP_NO_RENEGOTIATION
        SSL_OP_NO_COMPRESSION
        SSL_SESS_CACHE_OFF
        SSL_ERROR_NONE
        SSL_ERROR_SSL
        SSL_ERROR_WANT_READ
        SSL_ERROR_WANT_WRITE
        SSL_ERROR_SYSCALL
        SSL_ERROR_ZERO_RETURN
        X509_V_OK


cdef extern from "<openssl/err.h>" nogil:
    unsigned long ERR_get_error()
    unsigned long ERR_peek_last_error()
    void ERR_clear_error()
    const char *ERR_reason_error_string(unsigned long e)
    int ERR_GET_REASON(unsigned long e)
