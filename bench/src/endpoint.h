/* Opens the socket a bench program talks through, from a one-word endpoint spec. */
#ifndef BENCH_ENDPOINT_H
#define BENCH_ENDPOINT_H

#include <sys/socket.h>

/*
 * Specs (hosts are numeric; IPv6 in brackets):
 *   udp:LPORT:HOST:PORT     bind the loopback of HOST's family on LPORT, send to
 *                           HOST:PORT, accept any source (qemu -netdev socket,udp=)
 *   tcp:HOST:PORT           connect, retrying while refused (qemu connect=)
 *   tcp-listen:HOST:PORT    listen, accept exactly one client (qemu listen=)
 *   unix:PATH               connect to a unix stream socket
 *   unix-listen:PATH        listen on PATH, accept one client
 * Stream endpoints carry the 4-byte big-endian length framing.
 */
enum ep_kind { EP_DGRAM, EP_STREAM };

struct endpoint {
	enum ep_kind kind;
	int fd;				/* non-blocking */
	struct sockaddr_storage peer;	/* EP_DGRAM: where frames are sent */
	socklen_t peer_len;
	const char *spec;		/* as given, for messages and JSON */
};

void ep_open(struct endpoint *ep, const char *spec, double timeout_s);
int ep_is_listener(const char *spec);

#endif
