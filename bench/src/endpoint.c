/* Opens the socket a bench program talks through, from a one-word endpoint spec. */
#define _GNU_SOURCE
#include "endpoint.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <unistd.h>

#include "util.h"

/* Big UDP buffers on our side, so loss is the relay's and not the sink's. */
#define EP_SOCKBUF	(4 << 20)

/**
 * parse_inet() - parse "HOST:PORT" (HOST numeric, IPv6 in brackets).
 * @s:    text to parse
 * @ss:   filled with the address
 * @len:  filled with its length
 */
static void parse_inet(const char *s, struct sockaddr_storage *ss, socklen_t *len)
{
	const char *colon = strrchr(s, ':');
	char host[INET6_ADDRSTRLEN + 2];
	size_t hl;
	long port;

	if (!colon)
		die("'%s': want HOST:PORT", s);
	port = parse_long(colon + 1, 1, 65535, "port");
	hl = (size_t)(colon - s);
	if (hl >= 2 && s[0] == '[' && s[hl - 1] == ']') {
		s++;
		hl -= 2;
	}
	if (hl >= sizeof(host))
		die("'%s': host too long", s);
	memcpy(host, s, hl);
	host[hl] = 0;

	memset(ss, 0, sizeof(*ss));
	if (inet_pton(AF_INET, host, &((struct sockaddr_in *)ss)->sin_addr) == 1) {
		struct sockaddr_in *sin = (struct sockaddr_in *)ss;

		sin->sin_family = AF_INET;
		sin->sin_port = htons((uint16_t)port);
		*len = sizeof(*sin);
	} else if (inet_pton(AF_INET6, host, &((struct sockaddr_in6 *)ss)->sin6_addr) == 1) {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;

		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons((uint16_t)port);
		*len = sizeof(*sin6);
	} else {
		die("'%s': not a numeric IPv4 or [IPv6] address", host);
	}
}

/** parse_unix() - fill a sockaddr_un for @path; die if it does not fit. */
static socklen_t parse_unix(const char *path, struct sockaddr_storage *ss)
{
	struct sockaddr_un *sun = (struct sockaddr_un *)ss;

	memset(ss, 0, sizeof(*ss));
	if (!*path || strlen(path) >= sizeof(sun->sun_path))
		die("unix path '%s' empty or too long", path);
	sun->sun_family = AF_UNIX;
	strcpy(sun->sun_path, path);
	return (socklen_t)sizeof(*sun);
}

/** set_bufs() - raise both socket buffers; root may exceed rmem_max. */
static void set_bufs(int fd)
{
	int v = EP_SOCKBUF;

	if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &v, sizeof(v)) < 0)
		setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &v, sizeof(v));
	if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &v, sizeof(v)) < 0)
		setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &v, sizeof(v));
}

/** set_nonblock() - every endpoint fd is non-blocking; callers poll. */
static void set_nonblock(int fd)
{
	int fl = fcntl(fd, F_GETFL);

	if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
		die_errno("fcntl");
}

/** open_udp() - "LPORT:HOST:PORT": bind loopback:LPORT, remember HOST:PORT. */
static void open_udp(struct endpoint *ep, const char *rest)
{
	const char *colon = strchr(rest, ':');
	struct sockaddr_storage local;
	socklen_t local_len;
	long lport;
	char buf[16];

	if (!colon || (size_t)(colon - rest) >= sizeof(buf))
		die("'%s': want udp:LPORT:HOST:PORT", ep->spec);
	memcpy(buf, rest, (size_t)(colon - rest));
	buf[colon - rest] = 0;
	lport = parse_long(buf, 1, 65535, "local port");
	parse_inet(colon + 1, &ep->peer, &ep->peer_len);

	/* Bind the loopback of the peer's family: bench traffic stays local. */
	memset(&local, 0, sizeof(local));
	if (ep->peer.ss_family == AF_INET) {
		struct sockaddr_in *sin = (struct sockaddr_in *)&local;

		sin->sin_family = AF_INET;
		sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		sin->sin_port = htons((uint16_t)lport);
		local_len = sizeof(*sin);
	} else {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&local;

		sin6->sin6_family = AF_INET6;
		sin6->sin6_addr = in6addr_loopback;
		sin6->sin6_port = htons((uint16_t)lport);
		local_len = sizeof(*sin6);
	}
	ep->fd = socket(ep->peer.ss_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (ep->fd < 0)
		die_errno("socket");
	set_bufs(ep->fd);
	if (bind(ep->fd, (struct sockaddr *)&local, local_len) < 0)
		die("%s: bind: %s", ep->spec, strerror(errno));
	ep->kind = EP_DGRAM;
}

/**
 * connect_retry() - connect a stream socket to @sa, retrying while the
 * listener is not there yet (the runner starts processes in any order).
 * Return: the connected fd; dies at @deadline.
 */
static int connect_retry(const struct endpoint *ep, const struct sockaddr_storage *sa,
			 socklen_t len, uint64_t deadline)
{
	for (;;) {
		int fd = socket(sa->ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);

		if (fd < 0)
			die_errno("socket");
		if (connect(fd, (const struct sockaddr *)sa, len) == 0)
			return fd;
		if (errno != ECONNREFUSED && errno != ENOENT && errno != EINTR)
			die("%s: connect: %s", ep->spec, strerror(errno));
		close(fd);
		if (g_stop || now_ns() >= deadline)
			die("%s: connect: nobody listening in time", ep->spec);
		sleep_ns(10 * 1000000ull);
	}
}

/** accept_one() - listen on @sa and accept exactly one client by @deadline. */
static int accept_one(const struct endpoint *ep, const struct sockaddr_storage *sa,
		      socklen_t len, uint64_t deadline)
{
	int one = 1, lfd, fd;

	lfd = socket(sa->ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (lfd < 0)
		die_errno("socket");
	if (sa->ss_family != AF_UNIX)
		setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	else
		unlink(((const struct sockaddr_un *)sa)->sun_path);
	if (bind(lfd, (const struct sockaddr *)sa, len) < 0)
		die("%s: bind: %s", ep->spec, strerror(errno));
	if (listen(lfd, 1) < 0)
		die_errno("listen");
	for (;;) {
		uint64_t now = now_ns();
		int r;

		if (g_stop || now >= deadline)
			die("%s: nobody connected in time", ep->spec);
		r = wait_fd(lfd, POLLIN, (int)((deadline - now) / 1000000) + 1);
		if (r < 0)
			die_errno("poll");
		if (r == 0)
			continue;
		fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
		if (fd >= 0)
			break;
		if (errno != EINTR && errno != EAGAIN && errno != ECONNABORTED)
			die_errno("accept");
	}
	/* One client, like qemu's listen=: the listener goes away at once. */
	close(lfd);
	if (sa->ss_family == AF_UNIX)
		unlink(((const struct sockaddr_un *)sa)->sun_path);
	return fd;
}

/**
 * ep_open() - open the endpoint described by @spec or die.
 * @ep:        filled in; ep->fd is non-blocking
 * @spec:      see endpoint.h; must outlive @ep
 * @timeout_s: how long to wait for the other side to listen or connect
 */
void ep_open(struct endpoint *ep, const char *spec, double timeout_s)
{
	uint64_t deadline = now_ns() + (uint64_t)(timeout_s * 1e9);
	struct sockaddr_storage sa;
	socklen_t len;

	memset(ep, 0, sizeof(*ep));
	ep->spec = spec;
	ep->kind = EP_STREAM;
	if (!strncmp(spec, "udp:", 4)) {
		open_udp(ep, spec + 4);
	} else if (!strncmp(spec, "tcp:", 4)) {
		parse_inet(spec + 4, &sa, &len);
		ep->fd = connect_retry(ep, &sa, len, deadline);
	} else if (!strncmp(spec, "tcp-listen:", 11)) {
		parse_inet(spec + 11, &sa, &len);
		ep->fd = accept_one(ep, &sa, len, deadline);
	} else if (!strncmp(spec, "unix:", 5)) {
		len = parse_unix(spec + 5, &sa);
		ep->fd = connect_retry(ep, &sa, len, deadline);
	} else if (!strncmp(spec, "unix-listen:", 12)) {
		len = parse_unix(spec + 12, &sa);
		ep->fd = accept_one(ep, &sa, len, deadline);
	} else {
		die("unknown endpoint '%s' (udp:, tcp:, tcp-listen:, unix:, unix-listen:)", spec);
	}
	/* Stream sockets keep the kernel's autotuned buffers, as qemu's do. */
	set_nonblock(ep->fd);
}

/** ep_is_listener() - true if @spec waits for a peer to connect to it. */
int ep_is_listener(const char *spec)
{
	return !strncmp(spec, "tcp-listen:", 11) || !strncmp(spec, "unix-listen:", 12);
}
