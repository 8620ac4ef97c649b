/* Load generator: sends numbered test frames the way a qemu endpoint does, over UDP or stream framing. */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <linux/sockios.h>
#include <unistd.h>

#include "endpoint.h"
#include "frame.h"
#include "util.h"

/*
 * Pacing:
 *   bulk  saturate: UDP frames go out in sendmmsg() batches, several frames per
 *         message with UDP GSO (UDP_SEGMENT) so the generator is never the
 *         bottleneck (the receiver still gets one datagram per frame); stream
 *         frames as back-to-back records in one large write();
 *   qemu  one send syscall per frame, as qemu does (sendto() per datagram;
 *         one write of length prefix + frame per stream frame).
 * The run always ends by itself: after -n frames or -t seconds, whichever is
 * first, and a hard alarm backs that up.
 *
 * Frames go to broadcast, or with -d to the one receiver 02:62:65:6e:63:DST (a
 * switch then sends them to that port only). A stream sender also reads and discards
 * what arrives while it sends: in a hub it is sent every other end's frames, as a
 * guest on a hub is, and a sender that stopped reading would see the hub drop them
 * rather than pay for them.
 */

#define GRACE_NS	(2 * 1000000000ull)	/* to finish a batch begun in time */
#define SPIN_NS		(200 * 1000ull)		/* the end of every paced wait is spun: see pace() */
#define FLUSH_NS	(5 * 1000000000ull)	/* at the end, for the peer to take what we sent */
#define DRAIN_BUF	(1 << 16)

/* What to send and how; filled from the command line. */
struct gen {
	size_t size;		/* frame length */
	uint64_t count;		/* frames to send, UINT64_MAX for no limit */
	double seconds;		/* sending time limit */
	int qemu;		/* one syscall per frame */
	unsigned batch;		/* messages per syscall in bulk pacing */
	int gso;		/* bulk UDP: several frames per message (UDP_SEGMENT) */
	double rate;		/* frames/s cap, 0 for none */
	uint8_t id;		/* sender id in the source MAC */
	int dst;		/* receiver id in the destination MAC, -1: broadcast */
	/* results */
	uint64_t frames, stalls, errors;
	uint64_t bunched;	/* paced sends that left less than a quarter interval after
				   the one before (the sender fell behind and caught up) */
	uint64_t last_send;	/* now_ns() of the latest paced send, 0 before the first */
	uint64_t rx_bytes;	/* read and discarded (stream): what the peer sent us */
	uint8_t *junk;		/* DRAIN_BUF bytes to read that into (stream) */
	uint64_t t0, t_end;
};

/** usage() - print the synopsis and exit 2. */
static void usage(void)
{
	fprintf(stderr,
		"usage: loadgen [-s SIZE] [-n COUNT] [-t SECONDS] [-p bulk|qemu] [-b BATCH]\n"
		"               [-r FPS] [-i ID] [-d DST] [-g] [-G 0|1] [-R READYFILE]\n"
		"               [-T CONNECT_TIMEOUT] ENDPOINT\n"
		"  ENDPOINT: udp:LPORT:HOST:PORT | tcp:HOST:PORT | tcp-listen:HOST:PORT\n"
		"            | unix:PATH | unix-listen:PATH\n"
		"  -i ID source MAC 02:62:65:6e:63:ID; -d DST unicast to 02:62:65:6e:63:DST\n"
		"     (default: broadcast)\n"
		"  -g waits for a line on stdin before sending (the runner's start signal)\n"
		"  -G 0 turns off UDP GSO in bulk pacing (on by default)\n");
	exit(2);
}

/**
 * pace() - wait until sending @g->frames more would not exceed -r.
 *
 * A sleep ends late by the timer's wake-up latency, 20-35 us in some VMs: at 100k
 * frames/s the sender then woke every 30 us and sent the 3 frames it was behind
 * back to back, and a relay behind it saw bursts, not one frame per wake-up. So only
 * what lies beyond SPIN_NS is slept; the rest is spun on the clock, and frames leave
 * on time. `bunched` counts the sends that still left right after the one before.
 */
static void pace(struct gen *g)
{
	uint64_t due, now, interval;

	if (g->rate <= 0)
		return;
	interval = (uint64_t)(1e9 / g->rate);
	due = g->t0 + (uint64_t)((double)g->frames * 1e9 / g->rate);
	now = now_ns();
	if (due > now + SPIN_NS)
		sleep_ns(due - now - SPIN_NS);
	while ((now = now_ns()) < due)
		;
	if (g->last_send && now - g->last_send < interval / 4)
		g->bunched++;
	g->last_send = now;
}

/** batch_size() - frames for the next syscall, or 0 when the run is over. */
static unsigned batch_size(const struct gen *g, unsigned max)
{
	uint64_t left = g->count - g->frames;

	if (g_stop || !left || now_ns() >= g->t_end)
		return 0;
	return left < max ? (unsigned)left : max;
}

/* Control buffer of one GSO message: one cmsg carrying a uint16_t segment size. */
union gso_ctrl {
	char buf[CMSG_SPACE(sizeof(uint16_t))];
	struct cmsghdr align;
};

/** gso_segments() - frames per UDP GSO message for this run (1: no GSO). */
static unsigned gso_segments(const struct gen *g, const struct endpoint *ep)
{
	unsigned segs;

	if (g->qemu || !g->gso || ep->peer.ss_family == AF_UNIX)
		return 1;
	segs = (unsigned)(65507 / g->size);
	return segs > 64 ? 64 : segs ? segs : 1;
}

/** send_dgram() - the UDP loop: sendto() per frame, or sendmmsg() batches (GSO runs). */
static void send_dgram(struct gen *g, const struct endpoint *ep)
{
	unsigned segs = gso_segments(g, ep);
	unsigned max = g->qemu ? 1 : g->batch * segs, nmsg = (max + segs - 1) / segs, i, n;
	/* max entries, not nmsg: a short tail falls back to one frame per message. */
	struct mmsghdr *msgs = calloc(max, sizeof(*msgs));
	struct iovec *iov = calloc(max, sizeof(*iov));
	union gso_ctrl *ctrl = calloc(nmsg, sizeof(*ctrl));
	uint8_t *bufs = malloc((size_t)max * g->size);

	if (!msgs || !iov || !ctrl || !bufs)
		die("out of memory");
	for (i = 0; i < max; i++) {
		frame_init(bufs + (size_t)i * g->size, g->size, g->id);
		if (g->dst >= 0)
			frame_set_dst(bufs + (size_t)i * g->size, (uint8_t)g->dst);
		iov[i].iov_base = bufs + (size_t)i * g->size;
		iov[i].iov_len = g->size;
	}
	for (i = 0; i < nmsg; i++) {
		msgs[i].msg_hdr.msg_name = (void *)&ep->peer;
		msgs[i].msg_hdr.msg_namelen = ep->peer_len;
		msgs[i].msg_hdr.msg_iov = &iov[i * segs];
		msgs[i].msg_hdr.msg_iovlen = segs;
		if (segs > 1) {
			struct cmsghdr *cm;
			uint16_t seg = (uint16_t)g->size;

			msgs[i].msg_hdr.msg_control = ctrl[i].buf;
			msgs[i].msg_hdr.msg_controllen = sizeof(ctrl[i].buf);
			cm = CMSG_FIRSTHDR(&msgs[i].msg_hdr);
			cm->cmsg_level = IPPROTO_UDP;
			cm->cmsg_type = UDP_SEGMENT;
			cm->cmsg_len = CMSG_LEN(sizeof(uint16_t));
			memcpy(CMSG_DATA(cm), &seg, sizeof(seg));
		}
	}

	while ((n = batch_size(g, max))) {
		unsigned sent = 0, msgs_n;

		/* Whole GSO messages only, so the last one never carries stale frames. */
		if (n >= segs)
			n -= n % segs;
		else
			segs = 1, n = 1;
		msgs_n = n / segs;
		if (segs == 1 && max > 1)
			for (i = 0; i < n; i++) {
				msgs[i].msg_hdr.msg_iov = &iov[i];
				msgs[i].msg_hdr.msg_iovlen = 1;
				msgs[i].msg_hdr.msg_control = NULL;
				msgs[i].msg_hdr.msg_controllen = 0;
			}
		pace(g);
		for (i = 0; i < n; i++)
			frame_set_seq(bufs + (size_t)i * g->size, g->size, g->frames + i);
		while (sent < msgs_n) {
			int r;

			if (max == 1)
				r = sendto(ep->fd, bufs, g->size, 0,
					   (const struct sockaddr *)&ep->peer, ep->peer_len) < 0 ? -1 : 1;
			else
				r = sendmmsg(ep->fd, msgs + sent, msgs_n - sent, 0);
			if (r > 0) {
				sent += (unsigned)r;
				continue;
			}
			if (errno != EAGAIN && errno != ENOBUFS && errno != EINTR)
				die("%s: send: %s", ep->spec, strerror(errno));
			/* Socket buffer full: wait for room, but never past the grace. */
			g->stalls++;
			if (g_stop || now_ns() >= g->t_end + GRACE_NS) {
				g->errors++;
				break;
			}
			wait_fd(ep->fd, POLLOUT, 10);
		}
		g->frames += (uint64_t)sent * segs;
		if (sent < msgs_n)
			break;
	}
	free(msgs);
	free(iov);
	free(ctrl);
	free(bufs);
}

/** drain() - read and discard what has arrived on stream @fd; add it to @g->rx_bytes. */
static void drain(struct gen *g, int fd)
{
	ssize_t n;
	int i;

	/* Bounded: a peer that sends faster than we read must not stall the sending. */
	for (i = 0; i < 64 && (n = recv(fd, g->junk, DRAIN_BUF, MSG_DONTWAIT)) > 0; i++)
		g->rx_bytes += (uint64_t)n;
}

/**
 * write_draining() - write @len bytes to non-blocking stream @fd, draining input
 * while waiting for room, until @deadline_ns.
 * Return: 0 when all is written, -1 on error, timeout or stop.
 */
static int write_draining(struct gen *g, int fd, const uint8_t *p, size_t len,
			  uint64_t deadline_ns)
{
	while (len) {
		ssize_t n = write(fd, p, len);
		int ev;

		if (n > 0) {
			p += n;
			len -= (size_t)n;
			continue;
		}
		if (n < 0 && errno != EAGAIN && errno != EINTR)
			return -1;
		if (g_stop || now_ns() >= deadline_ns) {
			errno = ETIMEDOUT;
			return -1;
		}
		ev = wait_fd(fd, POLLOUT | POLLIN, 100);
		if (ev < 0)
			return -1;
		if (ev & POLLIN)
			drain(g, fd);
	}
	return 0;
}

/**
 * finish_stream() - end our direction and wait, reading, until the peer has taken
 * (acknowledged) everything we sent: closing with unread input would send a reset
 * instead of FIN, and the kernel would throw away what was still unsent.
 */
static void finish_stream(struct gen *g, int fd)
{
	uint64_t end = now_ns() + FLUSH_NS;
	int outq = 0;

	drain(g, fd);
	shutdown(fd, SHUT_WR);
	while (!g_stop && now_ns() < end) {
		drain(g, fd);
		if (ioctl(fd, SIOCOUTQ, &outq) < 0 || outq == 0)
			break;
		wait_fd(fd, POLLIN, 10);
	}
	drain(g, fd);
}

/** send_stream() - the stream loop: whole length-prefixed records per write(). */
static void send_stream(struct gen *g, const struct endpoint *ep)
{
	size_t rec = 4 + g->size;
	unsigned max, i, n;
	uint8_t *buf;

	/* Bulk: about 256 KiB per write(), like a relay flushing a busy queue. */
	max = g->qemu ? 1 : g->batch ? g->batch : (unsigned)(256 * 1024 / rec);
	if (max < 1)
		max = 1;
	g->batch = max;
	buf = malloc((size_t)max * rec);
	g->junk = malloc(DRAIN_BUF);
	if (!buf || !g->junk)
		die("out of memory");
	for (i = 0; i < max; i++) {
		put_be32(buf + (size_t)i * rec, (uint32_t)g->size);
		frame_init(buf + (size_t)i * rec + 4, g->size, g->id);
		if (g->dst >= 0)
			frame_set_dst(buf + (size_t)i * rec + 4, (uint8_t)g->dst);
	}

	while ((n = batch_size(g, max))) {
		pace(g);
		for (i = 0; i < n; i++)
			frame_set_seq(buf + (size_t)i * rec + 4, g->size, g->frames + i);
		if (write_draining(g, ep->fd, buf, (size_t)n * rec, g->t_end + GRACE_NS) < 0) {
			warn("%s: write: %s", ep->spec, strerror(errno));
			g->errors++;
			break;
		}
		g->frames += n;
		drain(g, ep->fd);
	}
	finish_stream(g, ep->fd);
	free(buf);
	free(g->junk);
}

/** main() - parse options, open the endpoint, wait for go, send, print JSON. */
int main(int argc, char **argv)
{
	struct gen g = { .size = 64, .count = UINT64_MAX, .seconds = 0, .batch = 0, .gso = 1,
			 .dst = -1 };
	const char *ready = NULL, *pacing = "bulk";
	double connect_timeout = 10, secs;
	struct endpoint ep;
	int opt, go = 0;

	g_prog = "loadgen";
	while ((opt = getopt(argc, argv, "s:n:t:p:b:r:i:d:gG:R:T:h")) != -1) {
		switch (opt) {
		case 's': g.size = (size_t)parse_long(optarg, FRAME_MIN, FRAME_MAX, "size"); break;
		case 'n': g.count = (uint64_t)parse_long(optarg, 1, 1L << 40, "count"); break;
		case 't': g.seconds = parse_double(optarg, 0.001, 3600, "seconds"); break;
		case 'p':
			if (strcmp(optarg, "bulk") && strcmp(optarg, "qemu"))
				usage();
			pacing = optarg;
			g.qemu = !strcmp(optarg, "qemu");
			break;
		case 'b': g.batch = (unsigned)parse_long(optarg, 1, 1024, "batch"); break;
		case 'r': g.rate = parse_double(optarg, 1, 1e9, "rate"); break;
		case 'i': g.id = (uint8_t)parse_long(optarg, 0, 255, "id"); break;
		case 'd': g.dst = (int)parse_long(optarg, 0, 255, "destination id"); break;
		case 'g': go = 1; break;
		case 'G': g.gso = (int)parse_long(optarg, 0, 1, "gso"); break;
		case 'R': ready = optarg; break;
		case 'T': connect_timeout = parse_double(optarg, 0.1, 600, "timeout"); break;
		default: usage();
		}
	}
	if (optind != argc - 1)
		usage();
	/* Always bounded: no -t means 1 s, or at most 60 s to send -n frames. */
	if (g.seconds == 0)
		g.seconds = g.count == UINT64_MAX ? 1 : 60;
	install_limits(connect_timeout + (go ? 30 : 0) + g.seconds + 10);

	/*
	 * A paced sender sleeps between frames (up to SPIN_NS before each is due, see
	 * pace()); the default timer slack (50 us) would stretch those sleeps too.
	 */
	if (g.rate > 0)
		prctl(PR_SET_TIMERSLACK, 1000UL, 0UL, 0UL, 0UL);
	ep_open(&ep, argv[optind], connect_timeout);
	if (!g.batch && ep.kind == EP_DGRAM)
		g.batch = 64;
	touch_ready(ready);
	if (go && wait_go(30) < 0)
		die("no start signal on stdin");

	g.t0 = now_ns();
	g.t_end = g.t0 + (uint64_t)(g.seconds * 1e9);
	if (ep.kind == EP_DGRAM)
		send_dgram(&g, &ep);
	else
		send_stream(&g, &ep);
	secs = (double)(now_ns() - g.t0) / 1e9;

	printf("{\"role\": \"loadgen\", ");
	json_str(stdout, "endpoint", ep.spec);
	printf(", \"pacing\": \"%s\", \"size\": %zu, \"batch\": %u, \"frames\": %llu, "
	       "\"bytes\": %llu, \"seconds\": %.6f, \"frames_per_s\": %.1f, "
	       "\"gbit_per_s\": %.4f, \"stalls\": %llu, \"errors\": %llu, \"rx_bytes\": %llu, "
	       "\"bunched\": %llu}\n",
	       pacing, g.size, g.qemu ? 1 : g.batch, (unsigned long long)g.frames,
	       (unsigned long long)(g.frames * g.size), secs,
	       secs > 0 ? (double)g.frames / secs : 0.0,
	       secs > 0 ? (double)g.frames * (double)g.size * 8 / secs / 1e9 : 0.0,
	       (unsigned long long)g.stalls, (unsigned long long)g.errors,
	       (unsigned long long)g.rx_bytes, (unsigned long long)g.bunched);
	close(ep.fd);
	return g.errors ? 1 : 0;
}
