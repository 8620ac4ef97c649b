/* Layout of the test frames every bench program sends and checks. */
#ifndef BENCH_FRAME_H
#define BENCH_FRAME_H

#include <stddef.h>
#include <stdint.h>

/*
 * A test frame is a real Ethernet frame so a relay that looks at headers still
 * passes it:
 *   0  dst MAC   ff:ff:ff:ff:ff:ff (broadcast: every hub port takes it), or the
 *                unicast 02:62:65:6e:63:DST of one receiver (frame_set_dst())
 *   6  src MAC   02:62:65:6e:63:ID (locally administered, "benc" + sender id)
 *   12 type      0x88b5 (IEEE local experimental ethertype)
 *   14 seq       64-bit big-endian sequence number, from 0
 *   22 magic     FRAME_MAGIC, 32-bit big-endian
 *   26 length    the frame's own length, 32-bit big-endian
 *   30 fill      byte i is (i * 7 + 1) & 0xff: position-dependent, so a shift shows
 *   len-8 tail   ~seq, 64-bit big-endian: a frame glued from two frames shows
 *
 * An announcement (frame_announce()) is FRAME_MIN bytes to broadcast with source
 * 02:62:65:6e:63:ID and ethertype FRAME_ANNOUNCE_ETHERTYPE, zeros after it: a receiver
 * sends one when it starts so that a switch learns its port, as a guest's first ARP
 * would. Receivers skip announcements (they are not test frames).
 */
#define FRAME_MIN	64
#define FRAME_MAX	65507	/* largest IPv4 UDP payload; stream allows more, qemu UDP not */
#define STREAM_MAX_LEN	69632	/* qemu's stream receive buffer: 4096 + 65536 */
#define FRAME_ETHERTYPE	0x88b5
#define FRAME_ANNOUNCE_ETHERTYPE	0x88b6	/* IEEE local experimental ethertype 2 */
#define FRAME_MAGIC	0xFA57BE7Cu

#define FRAME_OFF_SEQ	14
#define FRAME_OFF_MAGIC	22
#define FRAME_OFF_LEN	26
#define FRAME_OFF_FILL	30

/* Why a frame failed frame_check(); 0 is good. */
enum frame_status {
	FRAME_OK = 0,
	FRAME_BAD_LEN,
	FRAME_BAD_TYPE,
	FRAME_BAD_MAGIC,
	FRAME_BAD_TAIL,
	FRAME_BAD_FILL,
};

void frame_init(uint8_t *f, size_t size, uint8_t sender);
void frame_set_dst(uint8_t *f, uint8_t receiver);
void frame_mac(uint8_t mac[6], uint8_t id);
void frame_announce(uint8_t f[FRAME_MIN], uint8_t id);
int frame_is_announce(const uint8_t *f, size_t len);
void frame_set_seq(uint8_t *f, size_t size, uint64_t seq);
enum frame_status frame_check(const uint8_t *f, size_t len, const uint8_t *ref,
			      uint64_t *seq);

/* Counts what a receiver saw, in the order frames arrived. */
struct seq_stats {
	uint64_t frames;	/* good frames */
	uint64_t bytes;		/* their Ethernet bytes (no stream prefix) */
	uint64_t lost;		/* gaps in seq, less late arrivals that filled them */
	uint64_t out_of_order;	/* frames older than the newest seen */
	uint64_t corrupt;	/* frames that failed frame_check() */
	uint64_t first_seq;
	uint64_t next_seq;	/* newest seq seen + 1 */
	uint64_t t_first;	/* now_ns() at the first and last good frame */
	uint64_t t_last;
};

void seq_account(struct seq_stats *s, const uint8_t *f, size_t len, const uint8_t *ref,
		 uint64_t now);

#endif
