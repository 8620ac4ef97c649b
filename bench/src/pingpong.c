/* Latency probe: a client that sends one frame and waits for its echo, and the reflector that echoes. */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "endpoint.h"
#include "frame.h"
#include "stream.h"
#include "util.h"

/*
 * Through a two-port relay the client sits at A and the reflector at B: the
 * relay forwards A->B, the reflector sends the frame back unchanged, the relay
 * forwards B->A. Only one frame is in flight, so the RTT is the sum of the
 * per-frame latencies of both directions with no queueing. The first WARMUP
 * echoes are not counted: they include page faults and lazy set-up.
 */

#define WARMUP		10
#define MAX_SAMPLES	1000000
#define DGRAM_BUF	65536
#define STREAM_BULK	(256 * 1024)

/* Options shared by both roles. */
struct opts {
	size_t size;
	uint64_t count;
	double seconds;
	double idle;
	int timeout_ms;		/* client: how long one echo may take */
	int go;
	const char *ready;
	double connect_timeout;
};

/** usage() - print the synopsis and exit 2. */
static void usage(void)
{
	fprintf(stderr,
		"usage: pingpong client [-s SIZE] [-n COUNT] [-t SECONDS] [-W TIMEOUT_MS] [-g]\n"
		"                       [-R READYFILE] [-T CONNECT_TIMEOUT] ENDPOINT\n"
		"       pingpong reflect [-t MAXSECONDS] [-I IDLESECONDS] [-R READYFILE]\n"
		"                        [-T CONNECT_TIMEOUT] ENDPOINT\n");
	exit(2);
}

/** cmp_u64() - qsort() order for the RTT samples. */
static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/** pct_us() - nearest-rank percentile @p (0..1) of sorted @v, in microseconds. */
static double pct_us(const uint64_t *v, size_t n, double p)
{
	return n ? (double)v[(size_t)(p * (double)(n - 1) + 0.5)] / 1e3 : 0;
}

/**
 * wait_echo() - wait for the frame carrying @seq to come back.
 * @ep:    endpoint; @r its reassembler (stream only); @buf a DGRAM_BUF buffer
 * @until: now_ns() deadline for this echo
 * @bad:   counts frames that fail frame_check()
 * Return: 1 when the echo came, 0 on timeout, -1 if the stream ended.
 */
static int wait_echo(const struct endpoint *ep, struct reasm *r, uint8_t *buf,
		     uint64_t seq, uint64_t until, uint64_t *bad)
{
	for (;;) {
		uint64_t got, now;
		uint8_t *frame;
		uint32_t len;
		ssize_t n;

		if (ep->kind == EP_DGRAM) {
			n = recv(ep->fd, buf, DGRAM_BUF, MSG_DONTWAIT | MSG_TRUNC);
			if (n > 0) {
				if (frame_check(buf, (size_t)n, NULL, &got) != FRAME_OK)
					(*bad)++;
				else if (got == seq)
					return 1;
				continue;	/* a late echo of an earlier ping */
			}
		} else {
			int k;

			while ((k = reasm_next(r, &frame, &len)) == 1) {
				if (frame_check(frame, len, NULL, &got) != FRAME_OK)
					(*bad)++;
				else if (got == seq)
					return 1;
			}
			if (k < 0)
				return -1;
			n = reasm_read(r, ep->fd);
			if (n == 0)
				return -1;
			if (n > 0)
				continue;
		}
		if (n < 0 && errno != EAGAIN && errno != EINTR)
			return -1;
		now = now_ns();
		if (g_stop || now >= until)
			return 0;
		wait_fd(ep->fd, POLLIN, (int)((until - now) / 1000000) + 1);
	}
}

/** run_client() - ping until -n or -t, then print the RTT percentiles. */
static int run_client(const struct opts *o, const struct endpoint *ep)
{
	uint64_t cap = o->count < MAX_SAMPLES ? o->count : MAX_SAMPLES;
	uint64_t *rtt = malloc(cap * sizeof(*rtt));
	uint8_t *rec = malloc(4 + o->size), *buf = malloc(DGRAM_BUF);
	uint64_t seq, n = 0, sent = 0, lost = 0, bad = 0, t0, t_end, sum = 0;
	struct reasm r;

	if (!rtt || !rec || !buf || reasm_init(&r, STREAM_BULK) < 0)
		die("out of memory");
	put_be32(rec, (uint32_t)o->size);
	frame_init(rec + 4, o->size, 1);
	t0 = now_ns();
	t_end = t0 + (uint64_t)(o->seconds * 1e9);

	for (seq = 0; !g_stop && n < cap && now_ns() < t_end; seq++) {
		uint64_t t = now_ns();
		int got;

		frame_set_seq(rec + 4, o->size, seq);
		if (ep->kind == EP_DGRAM) {
			while (sendto(ep->fd, rec + 4, o->size, 0, (const struct sockaddr *)&ep->peer,
				      ep->peer_len) < 0) {
				if (errno != EAGAIN && errno != ENOBUFS && errno != EINTR)
					die("%s: sendto: %s", ep->spec, strerror(errno));
				wait_fd(ep->fd, POLLOUT, 10);
			}
		} else if (write_all(ep->fd, rec, 4 + o->size, t + 1000000000ull) < 0) {
			warn("%s: write: %s", ep->spec, strerror(errno));
			break;
		}
		sent++;
		got = wait_echo(ep, &r, buf, seq, t + (uint64_t)o->timeout_ms * 1000000, &bad);
		if (got < 0) {
			warn("%s: stream ended", ep->spec);
			break;
		}
		if (!got) {
			lost++;
			if (ep->kind == EP_STREAM)
				break;	/* a stream does not lose: the path is stuck */
			continue;
		}
		if (seq >= WARMUP) {
			rtt[n] = now_ns() - t;
			sum += rtt[n++];
		}
	}
	qsort(rtt, n, sizeof(*rtt), cmp_u64);
	printf("{\"role\": \"ping\", ");
	json_str(stdout, "endpoint", ep->spec);
	printf(", \"size\": %zu, \"sent\": %llu, \"samples\": %llu, \"lost\": %llu, "
	       "\"corrupt\": %llu, \"seconds\": %.6f, \"min_us\": %.2f, \"p50_us\": %.2f, "
	       "\"p90_us\": %.2f, \"p99_us\": %.2f, \"max_us\": %.2f, \"mean_us\": %.2f}\n",
	       o->size, (unsigned long long)sent, (unsigned long long)n,
	       (unsigned long long)lost, (unsigned long long)bad,
	       (double)(now_ns() - t0) / 1e9, n ? (double)rtt[0] / 1e3 : 0,
	       pct_us(rtt, n, 0.50), pct_us(rtt, n, 0.90), pct_us(rtt, n, 0.99),
	       n ? (double)rtt[n - 1] / 1e3 : 0, n ? (double)sum / (double)n / 1e3 : 0);
	free(rtt);
	free(rec);
	free(buf);
	free(r.buf);
	return n ? 0 : 1;
}

/** run_reflect() - echo every frame back unchanged until EOF, idle or -t. */
static int run_reflect(const struct opts *o, const struct endpoint *ep)
{
	uint64_t t_stop = now_ns() + (uint64_t)(o->seconds * 1e9), t_act = 0;
	uint64_t idle = (uint64_t)(o->idle * 1e9), frames = 0, bytes = 0;
	uint8_t *buf = malloc(DGRAM_BUF);
	struct reasm r;

	if (!buf || reasm_init(&r, STREAM_BULK) < 0)
		die("out of memory");
	while (!g_stop) {
		uint64_t now = now_ns();
		ssize_t n;

		if (now >= t_stop || (t_act && now - t_act >= idle))
			break;
		if (ep->kind == EP_DGRAM) {
			n = recv(ep->fd, buf, DGRAM_BUF, MSG_DONTWAIT);
			if (n > 0) {
				t_act = now;
				/* To the fixed peer, as qemu's udp= does, not to the source. */
				sendto(ep->fd, buf, (size_t)n, MSG_DONTWAIT,
				       (const struct sockaddr *)&ep->peer, ep->peer_len);
				frames++;
				bytes += (uint64_t)n;
				continue;
			}
		} else {
			size_t start;
			uint8_t *frame;
			uint32_t len;
			int k;

			n = reasm_read(&r, ep->fd);
			if (n == 0)
				break;
			if (n > 0) {
				t_act = now;
				/* Complete records lie back to back: echo them in one write. */
				start = r.head;
				while ((k = reasm_next(&r, &frame, &len)) == 1) {
					frames++;
					bytes += len;
				}
				if (k < 0) {
					warn("%s: bad length prefix", ep->spec);
					break;
				}
				if (r.head > start &&
				    write_all(ep->fd, r.buf + start, r.head - start, now + 1000000000ull) < 0)
					break;
				continue;
			}
		}
		if (n < 0 && errno != EAGAIN && errno != EINTR)
			break;
		wait_fd(ep->fd, POLLIN, 20);
	}
	printf("{\"role\": \"reflect\", ");
	json_str(stdout, "endpoint", ep->spec);
	printf(", \"frames\": %llu, \"bytes\": %llu}\n", (unsigned long long)frames,
	       (unsigned long long)bytes);
	free(buf);
	free(r.buf);
	return 0;
}

/** main() - pingpong client|reflect [options] ENDPOINT. */
int main(int argc, char **argv)
{
	struct opts o = { .size = 64, .count = 100000, .seconds = 0, .idle = 1,
			  .timeout_ms = 200, .connect_timeout = 10 };
	struct endpoint ep;
	int opt, client;

	g_prog = "pingpong";
	if (argc < 2 || (strcmp(argv[1], "client") && strcmp(argv[1], "reflect")))
		usage();
	client = !strcmp(argv[1], "client");
	optind = 2;
	while ((opt = getopt(argc, argv, "s:n:t:W:I:gR:T:h")) != -1) {
		switch (opt) {
		case 's': o.size = (size_t)parse_long(optarg, FRAME_MIN, FRAME_MAX, "size"); break;
		case 'n': o.count = (uint64_t)parse_long(optarg, 1, 1L << 40, "count"); break;
		case 't': o.seconds = parse_double(optarg, 0.001, 3600, "seconds"); break;
		case 'W': o.timeout_ms = (int)parse_long(optarg, 1, 60000, "timeout ms"); break;
		case 'I': o.idle = parse_double(optarg, 0.01, 600, "idle seconds"); break;
		case 'g': o.go = 1; break;
		case 'R': o.ready = optarg; break;
		case 'T': o.connect_timeout = parse_double(optarg, 0.1, 600, "timeout"); break;
		default: usage();
		}
	}
	if (optind != argc - 1)
		usage();
	if (o.seconds == 0)
		o.seconds = client ? 1 : 30;
	install_limits(o.connect_timeout + (o.go ? 30 : 0) + o.seconds + 10);

	ep_open(&ep, argv[optind], o.connect_timeout);
	touch_ready(o.ready);
	if (o.go && wait_go(30) < 0)
		die("no start signal on stdin");
	return client ? run_client(&o, &ep) : run_reflect(&o, &ep);
}
