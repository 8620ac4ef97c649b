/* Sink: receives test frames over UDP or stream framing, checks them and prints one JSON result line. */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <sys/socket.h>
#include <unistd.h>

#include "endpoint.h"
#include "frame.h"
#include "stream.h"
#include "util.h"

/*
 * The rate is frames over the time from the first to the last good frame, so
 * neither the wait for the sender nor the idle timeout at the end dilutes it.
 * The sink stops at end of stream, after -n frames, after -I seconds without
 * data once data has flowed, or after -t seconds in all.
 *
 * As one end of a switch scenario it has a MAC, 02:62:65:6e:63:ID (-i ID): with -A it
 * announces it when it starts (one frame, so a switch learns its port before the run),
 * and with -F it counts only frames addressed to it or to broadcast; the others are
 * counted apart ("foreign": a hub's copies meant for other ports). Announcements of
 * other ends are skipped and never start the idle clock.
 */

#define DGRAM_BATCH	64
#define DGRAM_BUF	65536	/* more than FRAME_MAX: an oversized datagram shows as MSG_TRUNC */
#define STREAM_BULK	(1 << 20)

/* Stop conditions and what ended the run. */
struct limits {
	uint64_t count;		/* stop after this many good frames */
	uint64_t t_stop;	/* absolute end, now_ns() */
	uint64_t idle_ns;	/* quiet time that ends the run once data flowed */
	uint64_t t_activity;	/* last time bytes arrived, 0 before any */
	int eof;		/* the stream ended */
	int desync;		/* a bad length prefix: the rest is unreadable */
};

/* What is counted, and how: the frames of this run. */
struct rx {
	struct seq_stats s;	/* the frames counted */
	const uint8_t *ref;	/* see frame_check() */
	int filter;		/* count only frames to @mac or broadcast */
	uint8_t mac[6];		/* this end's MAC (-i) */
	uint64_t foreign;	/* with @filter: frames addressed to another end */
	uint64_t announces;	/* announcements of other ends, skipped */
};

/** take() - one received frame: skip an announcement, set aside another end's, count the rest. */
static void take(struct rx *rx, const uint8_t *f, size_t len, uint64_t now)
{
	static const uint8_t bcast[6] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff };

	if (frame_is_announce(f, len)) {
		rx->announces++;
		return;
	}
	if (rx->filter && len >= 6 && memcmp(f, rx->mac, 6) && memcmp(f, bcast, 6)) {
		rx->foreign++;
		return;
	}
	seq_account(&rx->s, f, len, rx->ref, now);
}

/** seen() - frames counted or set aside so far: what makes a read data, not an announcement. */
static uint64_t seen(const struct rx *rx)
{
	return rx->s.frames + rx->s.corrupt + rx->foreign;
}

/** usage() - print the synopsis and exit 2. */
static void usage(void)
{
	fprintf(stderr,
		"usage: sink [-t MAXSECONDS] [-I IDLESECONDS] [-n COUNT] [-V] [-i ID [-A] [-F]]\n"
		"            [-R READYFILE] [-T CONNECT_TIMEOUT] ENDPOINT\n"
		"  -V checks every byte of every frame (costs sink CPU at large sizes)\n"
		"  -i ID this end's MAC is 02:62:65:6e:63:ID; -A announces it at the start,\n"
		"     -F counts only frames addressed to it (or broadcast)\n");
	exit(2);
}

/** keep_going() - false once any stop condition holds. */
static int keep_going(const struct limits *l, const struct rx *rx)
{
	uint64_t now = now_ns();

	if (g_stop || l->eof || l->desync || rx->s.frames >= l->count || now >= l->t_stop)
		return 0;
	return !(l->t_activity && now - l->t_activity >= l->idle_ns);
}

/* Control buffer of one received message: the UDP_GRO segment size, an int. */
union gro_ctrl {
	char buf[CMSG_SPACE(sizeof(int))];
	struct cmsghdr align;
};

/** gro_size() - the segment size of a coalesced (UDP_GRO) datagram, or 0. */
static size_t gro_size(struct msghdr *m)
{
	struct cmsghdr *cm;
	int size;

	for (cm = CMSG_FIRSTHDR(m); cm; cm = CMSG_NXTHDR(m, cm))
		if (cm->cmsg_level == IPPROTO_UDP && cm->cmsg_type == UDP_GRO) {
			memcpy(&size, CMSG_DATA(cm), sizeof(size));
			return size > 0 ? (size_t)size : 0;
		}
	return 0;
}

/*
 * recv_dgram() - the UDP loop: recvmmsg() batches. With UDP_GRO on, the kernel may
 * hand over a run of same-sized datagrams from one GSO send as one buffer; it is split
 * back at the segment size here, so the sink still counts one frame per datagram sent
 * and is not the bottleneck of the runs it measures.
 */
static void recv_dgram(const struct endpoint *ep, struct limits *l, struct rx *rx)
{
	struct mmsghdr msgs[DGRAM_BATCH];
	struct iovec iov[DGRAM_BATCH];
	union gro_ctrl ctrl[DGRAM_BATCH];
	uint8_t *bufs = malloc((size_t)DGRAM_BATCH * DGRAM_BUF);
	int i, on = 1;

	if (!bufs)
		die("out of memory");
	if (ep->peer.ss_family != AF_UNIX)
		(void)setsockopt(ep->fd, IPPROTO_UDP, UDP_GRO, &on, sizeof(on));
	memset(msgs, 0, sizeof(msgs));
	for (i = 0; i < DGRAM_BATCH; i++) {
		iov[i].iov_base = bufs + (size_t)i * DGRAM_BUF;
		iov[i].iov_len = DGRAM_BUF;
		msgs[i].msg_hdr.msg_iov = &iov[i];
		msgs[i].msg_hdr.msg_iovlen = 1;
	}
	while (keep_going(l, rx)) {
		uint64_t before = seen(rx);
		int n;

		for (i = 0; i < DGRAM_BATCH; i++) {
			msgs[i].msg_hdr.msg_control = ctrl[i].buf;
			msgs[i].msg_hdr.msg_controllen = sizeof(ctrl[i].buf);
		}
		n = recvmmsg(ep->fd, msgs, DGRAM_BATCH, MSG_DONTWAIT, NULL);
		uint64_t now;

		if (n <= 0) {
			if (n < 0 && errno != EAGAIN && errno != EINTR)
				die("%s: recvmmsg: %s", ep->spec, strerror(errno));
			wait_fd(ep->fd, POLLIN, 20);
			continue;
		}
		now = now_ns();
		for (i = 0; i < n; i++) {
			size_t len = msgs[i].msg_len, seg = gro_size(&msgs[i].msg_hdr), off;
			const uint8_t *p = iov[i].iov_base;

			if (msgs[i].msg_hdr.msg_flags & MSG_TRUNC) {
				rx->s.corrupt++;
				continue;
			}
			if (!seg || seg >= len) {
				take(rx, p, len, now);
				continue;
			}
			for (off = 0; off < len; off += seg)
				take(rx, p + off, len - off < seg ? len - off : seg, now);
		}
		if (seen(rx) != before)
			l->t_activity = now;
	}
	free(bufs);
}

/** recv_stream() - the stream loop: large reads, then split at length prefixes. */
static void recv_stream(const struct endpoint *ep, struct limits *l, struct rx *rx)
{
	struct reasm r;
	uint8_t *frame;
	uint32_t len;

	if (reasm_init(&r, STREAM_BULK) < 0)
		die("out of memory");
	while (keep_going(l, rx)) {
		ssize_t n = reasm_read(&r, ep->fd);
		uint64_t now, before = seen(rx);
		int got;

		if (n == 0) {
			l->eof = 1;
			break;
		}
		if (n < 0) {
			if (errno == ECONNRESET) {
				l->eof = 1;
				break;
			}
			if (errno != EAGAIN && errno != EINTR)
				die("%s: read: %s", ep->spec, strerror(errno));
			wait_fd(ep->fd, POLLIN, 20);
			continue;
		}
		now = now_ns();
		while ((got = reasm_next(&r, &frame, &len)) == 1)
			take(rx, frame, len, now);
		if (got < 0) {
			/* A length qemu would refuse: nothing after it can be trusted. */
			rx->s.corrupt++;
			l->desync = 1;
		}
		/* Part of a frame is data too: only an announcement alone is not. */
		if (seen(rx) != before || reasm_pending(&r))
			l->t_activity = now;
	}
	/* A partial record at the end is a frame cut short by the path. */
	if (reasm_pending(&r) && !l->desync)
		rx->s.corrupt++;
	free(r.buf);
}

/** announce() - send the announcement of end @id (frame.h) through @ep, as its first frame. */
static void announce(const struct endpoint *ep, uint8_t id)
{
	uint8_t rec[4 + FRAME_MIN];

	frame_announce(rec + 4, id);
	if (ep->kind == EP_DGRAM) {
		if (sendto(ep->fd, rec + 4, FRAME_MIN, 0, (const struct sockaddr *)&ep->peer,
			   ep->peer_len) != FRAME_MIN)
			die("%s: announce: %s", ep->spec, strerror(errno));
		return;
	}
	put_be32(rec, FRAME_MIN);
	if (write_all(ep->fd, rec, sizeof(rec), now_ns() + 5000000000ull) < 0)
		die("%s: announce: %s", ep->spec, strerror(errno));
}

/** main() - parse options, open the endpoint, receive, print one JSON line. */
int main(int argc, char **argv)
{
	struct limits l = { .count = UINT64_MAX };
	struct rx rx;
	const struct seq_stats *s = &rx.s;
	const char *ready = NULL;
	double max_s = 30, idle_s = 0.5, connect_timeout = 10, secs;
	uint8_t *ref = NULL;
	struct endpoint ep;
	int opt, full = 0, id = -1, announcing = 0;

	g_prog = "sink";
	memset(&rx, 0, sizeof(rx));
	while ((opt = getopt(argc, argv, "t:I:n:Vi:AFR:T:h")) != -1) {
		switch (opt) {
		case 't': max_s = parse_double(optarg, 0.01, 3600, "seconds"); break;
		case 'I': idle_s = parse_double(optarg, 0.01, 600, "idle seconds"); break;
		case 'n': l.count = (uint64_t)parse_long(optarg, 1, 1L << 40, "count"); break;
		case 'V': full = 1; break;
		case 'i': id = (int)parse_long(optarg, 0, 255, "id"); break;
		case 'A': announcing = 1; break;
		case 'F': rx.filter = 1; break;
		case 'R': ready = optarg; break;
		case 'T': connect_timeout = parse_double(optarg, 0.1, 600, "timeout"); break;
		default: usage();
		}
	}
	if (optind != argc - 1 || ((announcing || rx.filter) && id < 0))
		usage();
	install_limits(connect_timeout + max_s + 5);
	if (full) {
		ref = malloc(FRAME_MAX);
		if (!ref)
			die("out of memory");
		frame_init(ref, FRAME_MAX, 0);
	}
	rx.ref = ref;
	if (id >= 0)
		frame_mac(rx.mac, (uint8_t)id);

	ep_open(&ep, argv[optind], connect_timeout);
	/* Before the ready file: the runner starts the senders once every end is ready. */
	if (announcing)
		announce(&ep, (uint8_t)id);
	touch_ready(ready);
	l.t_stop = now_ns() + (uint64_t)(max_s * 1e9);
	l.idle_ns = (uint64_t)(idle_s * 1e9);
	if (ep.kind == EP_DGRAM)
		recv_dgram(&ep, &l, &rx);
	else
		recv_stream(&ep, &l, &rx);

	secs = s->frames > 1 ? (double)(s->t_last - s->t_first) / 1e9 : 0;
	printf("{\"role\": \"sink\", ");
	json_str(stdout, "endpoint", ep.spec);
	printf(", \"frames\": %llu, \"bytes\": %llu, \"seconds\": %.6f, "
	       "\"frames_per_s\": %.1f, \"gbit_per_s\": %.4f, \"lost\": %llu, "
	       "\"out_of_order\": %llu, \"corrupt\": %llu, \"first_seq\": %llu, "
	       "\"last_seq\": %lld, \"eof\": %s, \"desync\": %s, \"foreign\": %llu, "
	       "\"announces\": %llu}\n",
	       (unsigned long long)s->frames, (unsigned long long)s->bytes, secs,
	       secs > 0 ? (double)s->frames / secs : 0.0,
	       secs > 0 ? (double)s->bytes * 8 / secs / 1e9 : 0.0,
	       (unsigned long long)s->lost, (unsigned long long)s->out_of_order,
	       (unsigned long long)s->corrupt, (unsigned long long)s->first_seq,
	       s->frames ? (long long)(s->next_seq - 1) : -1LL,
	       l.eof ? "true" : "false", l.desync ? "true" : "false",
	       (unsigned long long)rx.foreign, (unsigned long long)rx.announces);
	close(ep.fd);
	free(ref);
	return 0;
}
