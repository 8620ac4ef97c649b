/* Tap bench tools: the plain C read/write relay between two taps (the baseline), and a
 * packet-socket frame generator that makes the kernel hand frames to a tap's reader.
 *
 *   tapcopy copy -t SECONDS TAP_IN TAP_OUT   read TAP_IN, write TAP_OUT, one frame each,
 *                                            blocking: the simplest relay there is
 *   tapcopy gen -t SECONDS -s SIZE [-g] IFNAME
 *                                            send SIZE-byte frames out of IFNAME (so the
 *                                            tap's reader gets them) as fast as it can
 *
 * The taps exist already (made by the bench in a throwaway namespace); copy attaches
 * with IFF_TAP|IFF_NO_PI, as netrelay does. Frames carry ethertype 0x88b5 (IEEE local
 * experimental) and a sequence number; the bench counts them with the receiving tap's
 * rx counter.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if_packet.h>
#include <linux/if_tun.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "util.h"

#define ETHERTYPE_BENCH 0x88b5
#define FRAME_MAX 65536
#define BURST 64

/** tap_attach() - open the existing tap @name as a plain tap (no vnet header). */
static int tap_attach(const char *name)
{
	struct ifreq ifr;
	int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);

	if (fd < 0)
		die_errno("/dev/net/tun");
	memset(&ifr, 0, sizeof(ifr));
	ifr.ifr_flags = IFF_TAP | IFF_NO_PI;
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", name);
	if (ioctl(fd, TUNSETIFF, &ifr) < 0)
		die_errno(name);
	return fd;
}

/** packet_socket() - an AF_PACKET socket bound to @ifname for our ethertype only. */
static int packet_socket(const char *ifname, struct sockaddr_ll *addr)
{
	int fd = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(ETHERTYPE_BENCH));
	int size = 8 << 20;

	if (fd < 0)
		die_errno("AF_PACKET socket");
	memset(addr, 0, sizeof(*addr));
	addr->sll_family = AF_PACKET;
	addr->sll_protocol = htons(ETHERTYPE_BENCH);
	addr->sll_ifindex = (int)if_nametoindex(ifname);
	if (!addr->sll_ifindex)
		die_errno(ifname);
	if (bind(fd, (struct sockaddr *)addr, sizeof(*addr)) < 0)
		die_errno("bind AF_PACKET");
	setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof(size));
	setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &size, sizeof(size));
	return fd;
}

/** run_copy() - the baseline: read one frame, write it, until stopped or @seconds pass. */
static int run_copy(double seconds, const char *in, const char *out)
{
	static uint8_t buf[FRAME_MAX];
	int rfd = tap_attach(in), wfd = tap_attach(out);
	uint64_t frames = 0;

	install_limits(seconds);
	while (!g_stop) {
		ssize_t n = read(rfd, buf, sizeof(buf));

		if (n < 0) {
			if (errno == EINTR)
				continue;
			die_errno("read");
		}
		if (write(wfd, buf, (size_t)n) == n)
			frames++;
	}
	printf("{\"frames\": %llu}\n", (unsigned long long)frames);
	return 0;
}

/** run_gen() - send numbered frames of @size out of @ifname until @seconds pass. */
static int run_gen(double seconds, int size, int go, const char *ifname)
{
	static uint8_t frames[BURST][FRAME_MAX];
	struct mmsghdr msgs[BURST];
	struct iovec iov[BURST];
	struct sockaddr_ll addr;
	int fd = packet_socket(ifname, &addr);
	uint64_t seq = 0, sent = 0, end;
	int i;

	install_limits(seconds + 30);
	memset(msgs, 0, sizeof(msgs));
	for (i = 0; i < BURST; i++) {
		uint8_t *f = frames[i];

		memset(f, 0x5a, (size_t)size);
		memcpy(f, "\x02\x00\x00\x00\x00\x02", 6);	/* to a MAC nobody has */
		memcpy(f + 6, "\x02\x00\x00\x00\x00\x01", 6);
		f[12] = ETHERTYPE_BENCH >> 8;
		f[13] = ETHERTYPE_BENCH & 0xff;
		iov[i].iov_base = f;
		iov[i].iov_len = (size_t)size;
		msgs[i].msg_hdr.msg_iov = &iov[i];
		msgs[i].msg_hdr.msg_iovlen = 1;
		msgs[i].msg_hdr.msg_name = &addr;
		msgs[i].msg_hdr.msg_namelen = sizeof(addr);
	}
	if (go && wait_go(60) < 0)
		die("no go");
	end = now_ns() + (uint64_t)(seconds * 1e9);
	while (!g_stop && now_ns() < end) {
		int r;

		for (i = 0; i < BURST; i++)
			put_be64(frames[i] + 14, seq + (uint64_t)i);
		r = sendmmsg(fd, msgs, BURST, 0);
		if (r < 0) {
			if (errno == EINTR || errno == ENOBUFS || errno == EAGAIN)
				continue;
			die_errno("sendmmsg");
		}
		seq += (uint64_t)r;
		sent += (uint64_t)r;
	}
	printf("{\"frames\": %llu, \"seconds\": %.3f}\n", (unsigned long long)sent, seconds);
	return 0;
}

int main(int argc, char **argv)
{
	double seconds = 3;
	const char *cmd;
	int size = 1500, go = 0, opt;

	g_prog = "tapcopy";
	if (argc < 2)
		die("usage: tapcopy copy|gen [options] IFNAME...");
	cmd = argv[1];
	optind = 2;
	while ((opt = getopt(argc, argv, "t:s:g")) != -1) {
		switch (opt) {
		case 't': seconds = parse_double(optarg, 0.05, 600, "-t"); break;
		case 's': size = (int)parse_long(optarg, 60, 9000, "-s"); break;
		case 'g': go = 1; break;
		default: die("bad option");
		}
	}
	if (!strcmp(cmd, "copy") && optind + 2 == argc)
		return run_copy(seconds, argv[optind], argv[optind + 1]);
	if (!strcmp(cmd, "gen") && optind + 1 == argc)
		return run_gen(seconds, size, go, argv[optind]);
	die("usage: tapcopy copy|gen [options] IFNAME...");
}
