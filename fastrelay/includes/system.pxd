# C declarations of the kernel interfaces the data plane uses (sockets, epoll, batching).
from libc.stdint cimport uint16_t, uint32_t, uint64_t


cdef extern from "<sys/uio.h>" nogil:
    struct iovec:
        void *iov_base
        size_t iov_len

    ssize_t writev(int fd, const iovec *iov, int iovcnt)


cdef extern from "<sys/socket.h>" nogil:
    ctypedef unsigned int socklen_t
    ctypedef unsigned short sa_family_t

    struct sockaddr:
        sa_family_t sa_family

    struct sockaddr_storage:
        sa_family_t ss_family

    struct msghdr:
        void *msg_name
        socklen_t msg_namelen
        iovec *msg_iov
        size_t msg_iovlen
        void *msg_control
        size_t msg_controllen
        int msg_flags

    struct mmsghdr:
        msghdr msg_hdr
        unsigned int msg_len

    struct cmsghdr:
        size_t cmsg_len
        int cmsg_level
        int cmsg_type

    cmsghdr *CMSG_FIRSTHDR(msghdr *msg)
    cmsghdr *CMSG_NXTHDR(msghdr *msg, cmsghdr *cmsg)
    unsigned char *CMSG_DATA(cmsghdr *cmsg)
    size_t CMSG_SPACE(size_t length)
    size_t CMSG_LEN(size_t length)

    int recvmmsg(int fd, mmsghdr *msgvec, unsigned int vlen, int flags, void *timeout)
    int sendmmsg(int fd, mmsghdr *msgvec, unsigned int vlen, int flags)
    ssize_t sendmsg(int fd, const msghdr *msg, int flags)
    ssize_t recv(int fd, void *buf, size_t n, int flags)
    ssize_t send(int fd, const void *buf, size_t n, int flags)
    int setsockopt(int fd, int level, int optname, const void *optval, socklen_t optlen)
    int getsockopt(int fd, int level, int optname, void *optval, socklen_t *optlen)
    int getpeername(int fd, sockaddr *addr, socklen_t *addrlen)
    int connect(int fd, const sockaddr *addr, socklen_t addrlen)

    enum:
        AF_UNIX
        AF_INET
        AF_INET6
        SOL_SOCKET
        SO_ERROR
        MSG_DONTWAIT
        MSG_NOSIGNAL
        MSG_TRUNC


cdef extern from "<netinet/in.h>" nogil:
    struct in_addr:
        uint32_t s_addr

    struct in6_addr:
        unsigned char s6_addr[16]

    struct sockaddr_in:
        sa_family_t sin_family
        uint16_t sin_port
        in_addr sin_addr

    struct sockaddr_in6:
        sa_family_t sin6_family
        uint16_t sin6_port
        uint32_t sin6_flowinfo
        in6_addr sin6_addr
        uint32_t sin6_scope_id

    enum:
        IPPROTO_UDP
        IPPROTO_IP
        IPPROTO_IPV6
        # Never fragment (VXLAN): IPv4's DF bit, IPv6's "fail instead of fragmenting here".
        IP_MTU_DISCOVER
        IP_PMTUDISC_DO
        IPV6_MTU_DISCOVER
        IPV6_PMTUDISC_DO
        IPV6_DONTFRAG

    uint32_t htonl(uint32_t)
    uint32_t ntohl(uint32_t)
    uint16_t htons(uint16_t)


cdef extern from "<netinet/udp.h>" nogil:
    # UDP GSO: one sendmsg carries a run of equal-sized datagrams (Linux >= 4.18).
    enum:
        UDP_SEGMENT
        # UDP GRO: a run of datagrams from one GSO send arrives as one buffer.
        UDP_GRO


cdef extern from "<arpa/inet.h>" nogil:
    int inet_pton(int af, const char *src, void *dst)


cdef extern from "<sys/un.h>" nogil:
    struct sockaddr_un:
        sa_family_t sun_family
        char sun_path[108]


cdef extern from "<sys/epoll.h>" nogil:
    ctypedef union epoll_data_t:
        void *ptr
        int fd
        uint32_t u32
        uint64_t u64

    struct epoll_event:
        uint32_t events
        epoll_data_t data

    int epoll_create1(int flags)
    int epoll_ctl(int epfd, int op, int fd, epoll_event *event)
    int epoll_wait(int epfd, epoll_event *events, int maxevents, int timeout)

    enum:
        EPOLLIN
        EPOLLOUT
        EPOLLERR
        EPOLLHUP
        EPOLLRDHUP
        EPOLL_CTL_ADD
        EPOLL_CTL_MOD
        EPOLL_CTL_DEL
        EPOLL_CLOEXEC


cdef extern from "<unistd.h>" nogil:
    ssize_t read(int fd, void *buf, size_t n)
    ssize_t write(int fd, const void *buf, size_t n)
    int close(int fd)


cdef extern from "<errno.h>" nogil:
    int errno
    enum:
        EAGAIN
        EWOULDBLOCK
        EINTR
        EMSGSIZE
        ENOBUFS
        EPERM
        ECONNREFUSED
        ENOTCONN
        ENOENT


cdef extern from "<string.h>" nogil:
    char *strerror(int errnum)


cdef extern from "<sys/ioctl.h>" nogil:
    int ioctl(int fd, unsigned long request, ...)
    enum:
        # Bytes waiting to be read (sockets and pipes): tells a peer that left with frames
        # still queued from one that left with nothing.
        FIONREAD


cdef extern from *:
    """
    #include <stdio.h>
    #include <stdlib.h>
    /* A write past a buffer's capacity was about to happen: in the debug build, stop at
       once with the place, so fuzzing and PYTHONMALLOC=debug runs point at the bug. */
    static void fr_bounds_abort(const char *what, long need, long cap) {
        fprintf(stderr, "fastrelay: bounds check failed: %s needs %ld bytes, capacity %ld\\n",
                what, need, cap);
        abort();
    }
    """
    # 1 in the debug build (FASTRELAY_DEBUG=1 at build time, setup.py), else 0.
    const int FASTRELAY_DEBUG
    void fr_bounds_abort(const char *what, long need, long cap) nogil


cdef extern from "<time.h>" nogil:
    struct timespec:
        long tv_sec
        long tv_nsec

    int clock_gettime(int clk_id, timespec *tp)
    enum:
        CLOCK_MONOTONIC
        CLOCK_REALTIME
