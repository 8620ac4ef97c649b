/* Baseline relay written the way netrelay works: one frame per syscall, a blocking thread per port, one hub mutex. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "util.h"

/*
 * Theory of operation (deliberately naive; this is what fastrelay is measured
 * against):
 *   - every port (TCP client, UDP target, unix stream) has one thread doing
 *     blocking reads: for a stream, recv() the 4-byte length, then recv() the
 *     frame; for UDP, one recvfrom() per datagram;
 *   - a frame is sent to every other port while holding the hub mutex, with
 *     two send()s per stream port (length, then frame) or one sendto();
 *   - so one slow port stalls the whole hub, exactly like netrelay.
 * TCP sockets get TCP_NODELAY: with Nagle on, the second of the two small
 * sends waits for the peer's delayed ACK (40 ms) whenever only one frame is in
 * flight, and the ping-pong numbers would measure that timer instead of the
 * per-frame cost this baseline stands for.
 * Command line as netrelay: `naive SRC DEST` (point to point, exits when a side
 * ends) or `naive -l PORT [TARGET...]` (hub on [::]:PORT, dual-stack).
 * Targets: LPORT:IP:SPORT (UDP; an empty port copies the other), IP:PORT or
 * [IPV6]:PORT (TCP client), unix:PATH (unix stream client).
 */

#define NAIVE_MAX	65536	/* netrelay's buffer: a longer frame closes the client */

struct hub;

/* One relay port; lives on the hub list, owned by its reader thread. */
struct port {
	struct hub *hub;
	int fd;				/* blocking */
	int dgram;			/* UDP: frames are whole datagrams */
	struct sockaddr_storage peer;	/* UDP: fixed destination */
	socklen_t peer_len;
	int dead;			/* a write failed; the reader will remove it */
	char name[128];
	struct port *next;
};

/* All ports; @lock serialises every send, as netrelay's single mutex does. */
struct hub {
	pthread_mutex_t lock;
	struct port *ports;
	int p2p;			/* point to point: exit when a side ends */
	int verbose;
};

/** usage() - print the synopsis and exit 2. */
static void usage(void)
{
	fprintf(stderr,
		"usage: naive [-v] [-t SECONDS] [udp] SRC DEST\n"
		"       naive [-v] [-t SECONDS] -l [HOST:]PORT [TARGET...]\n"
		"  TARGET: LPORT:IP:SPORT (UDP) | IP:PORT | [IPV6]:PORT (TCP) | unix:PATH\n"
		"  -t ends the process after SECONDS (default 3600): bench runs are bounded\n");
	exit(2);
}

/** set_nodelay() - TCP_NODELAY on a TCP socket (see the theory of operation). */
static void set_nodelay(int fd)
{
	int one = 1;
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);

	if (getsockname(fd, (struct sockaddr *)&ss, &len) == 0 && ss.ss_family != AF_UNIX)
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

/** recv_full() - blocking recv() of exactly @len bytes. Return: 0, or -1 on EOF/error. */
static int recv_full(int fd, uint8_t *buf, size_t len)
{
	while (len) {
		ssize_t n = recv(fd, buf, len, 0);

		if (n <= 0) {
			if (n < 0 && errno == EINTR)
				continue;
			return -1;
		}
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

/** send_full() - blocking send() of exactly @len bytes. Return: 0, or -1 on error. */
static int send_full(int fd, const uint8_t *buf, size_t len)
{
	while (len) {
		ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

/** read_frame() - read one frame from @p into @buf. Return: its length, -1 to close. */
static ssize_t read_frame(struct port *p, uint8_t *buf)
{
	uint8_t hdr[4];
	uint32_t len;

	if (p->dgram) {
		ssize_t n;

		do
			n = recvfrom(p->fd, buf, NAIVE_MAX, 0, NULL, NULL);
		while (n < 0 && errno == EINTR);
		return n;
	}
	if (recv_full(p->fd, hdr, 4) < 0)
		return -1;
	len = get_be32(hdr);
	if (len > NAIVE_MAX) {
		fprintf(stderr, "naive: %s: frame of %u bytes, closing\n", p->name, len);
		return -1;
	}
	if (recv_full(p->fd, buf, len) < 0)
		return -1;
	return len;
}

/** write_frame() - send one frame to @q. Return: 0, or -1 if @q is broken. */
static int write_frame(struct port *q, const uint8_t *buf, size_t len)
{
	uint8_t hdr[4];

	if (q->dgram) {
		/* UDP has no peer state: a failed datagram is just lost. */
		sendto(q->fd, buf, len, 0, (const struct sockaddr *)&q->peer, q->peer_len);
		return 0;
	}
	put_be32(hdr, (uint32_t)len);
	if (send_full(q->fd, hdr, 4) < 0 || send_full(q->fd, buf, len) < 0)
		return -1;
	return 0;
}

/** port_thread() - read frames from one port and broadcast each to the others. */
static void *port_thread(void *arg)
{
	struct port *p = arg, **pp;
	struct hub *h = p->hub;
	uint8_t *buf = malloc(NAIVE_MAX);
	ssize_t n;

	if (!buf)
		die("out of memory");
	while ((n = read_frame(p, buf)) >= 0) {
		struct port *q;

		pthread_mutex_lock(&h->lock);
		for (q = h->ports; q; q = q->next) {
			if (q == p || q->dead || write_frame(q, buf, (size_t)n) == 0)
				continue;
			/* Wake its reader so that thread removes it. */
			q->dead = 1;
			shutdown(q->fd, SHUT_RDWR);
		}
		pthread_mutex_unlock(&h->lock);
	}
	if (h->verbose)
		fprintf(stderr, "naive: %s closed\n", p->name);
	if (h->p2p)
		exit(0);
	pthread_mutex_lock(&h->lock);
	for (pp = &h->ports; *pp; pp = &(*pp)->next) {
		if (*pp == p) {
			*pp = p->next;
			break;
		}
	}
	pthread_mutex_unlock(&h->lock);
	close(p->fd);
	free(p);
	free(buf);
	return NULL;
}

/** hub_add() - put @p on the hub and start its reader thread. */
static void hub_add(struct hub *h, struct port *p)
{
	pthread_t t;

	p->hub = h;
	if (!p->dgram)
		set_nodelay(p->fd);
	pthread_mutex_lock(&h->lock);
	p->next = h->ports;
	h->ports = p;
	pthread_mutex_unlock(&h->lock);
	if (pthread_create(&t, NULL, port_thread, p))
		die("pthread_create failed");
	pthread_detach(t);
	if (h->verbose)
		fprintf(stderr, "naive: %s joined\n", p->name);
}

/** parse_ip() - numeric IPv4 or IPv6 (brackets stripped) and @port into @ss. */
static socklen_t parse_ip(const char *host, long port, struct sockaddr_storage *ss)
{
	struct sockaddr_in *sin = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
	char buf[INET6_ADDRSTRLEN];
	size_t n = strlen(host);

	if (n >= 2 && host[0] == '[' && host[n - 1] == ']') {
		host++;
		n -= 2;
	}
	if (n >= sizeof(buf))
		die("bad address '%s'", host);
	memcpy(buf, host, n);
	buf[n] = 0;
	memset(ss, 0, sizeof(*ss));
	if (inet_pton(AF_INET, buf, &sin->sin_addr) == 1) {
		sin->sin_family = AF_INET;
		sin->sin_port = htons((uint16_t)port);
		return sizeof(*sin);
	}
	if (inet_pton(AF_INET6, buf, &sin6->sin6_addr) == 1) {
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons((uint16_t)port);
		return sizeof(*sin6);
	}
	die("bad address '%s'", host);
}

/** split_target() - split at ':' outside brackets. Return: number of fields (max 3). */
static int split_target(char *s, char *f[3])
{
	int n = 0, depth = 0;

	f[n++] = s;
	for (; *s; s++) {
		if (*s == '[')
			depth++;
		else if (*s == ']')
			depth--;
		else if (*s == ':' && !depth) {
			if (n == 3)
				return 4;
			*s = 0;
			f[n++] = s + 1;
		}
	}
	return n;
}

/** open_target() - open one command-line target as a port, or die. */
static struct port *open_target(const char *arg)
{
	struct port *p = calloc(1, sizeof(*p));
	char *copy = strdup(arg), *f[3];
	struct sockaddr_storage ss;
	socklen_t len;
	int n;

	if (!p || !copy)
		die("out of memory");
	snprintf(p->name, sizeof(p->name), "%s", arg);
	if (!strncmp(arg, "unix:", 5)) {
		struct sockaddr_un *sun = (struct sockaddr_un *)&ss;

		memset(&ss, 0, sizeof(ss));
		if (strlen(arg + 5) >= sizeof(sun->sun_path))
			die("%s: path too long", arg);
		sun->sun_family = AF_UNIX;
		strcpy(sun->sun_path, arg + 5);
		p->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (p->fd < 0 || connect(p->fd, (struct sockaddr *)&ss, sizeof(*sun)) < 0)
			die("%s: connect: %s", arg, strerror(errno));
		free(copy);
		return p;
	}
	n = split_target(copy, f);
	if (n == 2) {
		/* TCP client, tried once at start-up like netrelay. */
		len = parse_ip(f[0], parse_long(f[1], 1, 65535, "port"), &ss);
		p->fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (p->fd < 0 || connect(p->fd, (struct sockaddr *)&ss, len) < 0)
			die("%s: connect: %s", arg, strerror(errno));
	} else if (n == 3) {
		const char *lp = *f[0] ? f[0] : f[2], *sp = *f[2] ? f[2] : f[0];
		struct sockaddr_storage local;

		if (!*lp)
			die("%s: need at least one port", arg);
		p->dgram = 1;
		p->peer_len = parse_ip(f[1], parse_long(sp, 1, 65535, "port"), &p->peer);
		/* Bind the any-address of the peer's family, as netrelay does. */
		memset(&local, 0, sizeof(local));
		if (p->peer.ss_family == AF_INET6) {
			struct sockaddr_in6 *l6 = (struct sockaddr_in6 *)&local;

			l6->sin6_family = AF_INET6;
			l6->sin6_port = htons((uint16_t)parse_long(lp, 1, 65535, "port"));
		} else {
			struct sockaddr_in *l4 = (struct sockaddr_in *)&local;

			l4->sin_family = AF_INET;
			l4->sin_port = htons((uint16_t)parse_long(lp, 1, 65535, "port"));
		}
		p->fd = socket(p->peer.ss_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
		if (p->fd < 0 || bind(p->fd, (struct sockaddr *)&local, p->peer_len) < 0)
			die("%s: bind: %s", arg, strerror(errno));
	} else {
		die("bad target '%s'", arg);
	}
	free(copy);
	return p;
}

/** open_listener() - TCP listener on "[HOST:]PORT"; no HOST means [::] dual-stack. */
static int open_listener(const char *arg)
{
	struct sockaddr_storage ss;
	const char *colon = strrchr(arg, ':');
	int fd, one = 1, zero = 0;
	socklen_t len;

	if (colon) {
		char host[64];

		if ((size_t)(colon - arg) >= sizeof(host))
			die("bad listen address '%s'", arg);
		memcpy(host, arg, (size_t)(colon - arg));
		host[colon - arg] = 0;
		len = parse_ip(host, parse_long(colon + 1, 1, 65535, "port"), &ss);
	} else {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;

		memset(&ss, 0, sizeof(ss));
		sin6->sin6_family = AF_INET6;
		sin6->sin6_addr = in6addr_any;
		sin6->sin6_port = htons((uint16_t)parse_long(arg, 1, 65535, "port"));
		len = sizeof(*sin6);
	}
	fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		die_errno("socket");
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (ss.ss_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero));
	if (bind(fd, (struct sockaddr *)&ss, len) < 0 || listen(fd, 16) < 0)
		die("listen %s: %s", arg, strerror(errno));
	return fd;
}

/** on_alarm() - the -t lifetime is over: leave at once, a bench run has ended. */
static void on_alarm(int sig)
{
	(void)sig;
	_exit(0);
}

/** main() - parse a netrelay-style command line and relay until killed or -t. */
int main(int argc, char **argv)
{
	struct hub h = { .lock = PTHREAD_MUTEX_INITIALIZER };
	const char *listen_arg = NULL;
	double lifetime = 3600;
	struct port *opened[64];
	int opt, i, n, lfd;

	g_prog = "naive";
	while ((opt = getopt(argc, argv, "vt:l:h")) != -1) {
		switch (opt) {
		case 'v': h.verbose = 1; break;
		case 't': lifetime = parse_double(optarg, 0.1, 86400, "seconds"); break;
		case 'l': listen_arg = optarg; break;
		default: usage();
		}
	}
	/* `naive udp A B`: an optional mode word, accepted and ignored (targets say it). */
	if (optind < argc && !strcmp(argv[optind], "udp"))
		optind++;
	n = argc - optind;
	if ((!listen_arg && n != 2) || n > 64)
		usage();
	signal(SIGPIPE, SIG_IGN);
	signal(SIGALRM, on_alarm);
	alarm((unsigned)lifetime + 1);

	h.p2p = !listen_arg;
	lfd = listen_arg ? open_listener(listen_arg) : -1;
	/* Open every target first: a bad one must fail before any traffic flows. */
	for (i = 0; i < n; i++)
		opened[i] = open_target(argv[optind + i]);
	for (i = 0; i < n; i++)
		hub_add(&h, opened[i]);
	if (lfd < 0) {
		for (;;)
			pause();	/* a port thread exits the process */
	}
	for (;;) {
		struct port *p;
		int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);

		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			die_errno("accept");
		}
		p = calloc(1, sizeof(*p));
		if (!p)
			die("out of memory");
		p->fd = fd;
		snprintf(p->name, sizeof(p->name), "client fd %d", fd);
		hub_add(&h, p);
	}
}
