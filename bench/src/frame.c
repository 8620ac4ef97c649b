/* Builds, stamps and checks the bench test frames (layout in frame.h). */
#include "frame.h"

#include <string.h>

#include "util.h"

/** fill_byte() - the fill pattern at offset @i; see frame.h. */
static inline uint8_t fill_byte(size_t i)
{
	return (uint8_t)(i * 7 + 1);
}

/**
 * frame_init() - write a complete test frame of @size bytes with seq 0.
 * @f:      buffer of at least @size bytes
 * @size:   FRAME_MIN..FRAME_MAX
 * @sender: last byte of the source MAC, tells senders apart
 */
void frame_init(uint8_t *f, size_t size, uint8_t sender)
{
	size_t i;

	memset(f, 0xff, 6);
	frame_mac(f + 6, sender);
	f[12] = FRAME_ETHERTYPE >> 8;
	f[13] = FRAME_ETHERTYPE & 0xff;
	put_be32(f + FRAME_OFF_MAGIC, FRAME_MAGIC);
	put_be32(f + FRAME_OFF_LEN, (uint32_t)size);
	for (i = FRAME_OFF_FILL; i < size - 8; i++)
		f[i] = fill_byte(i);
	frame_set_seq(f, size, 0);
}

/** frame_mac() - the bench MAC of end @id: 02:62:65:6e:63:ID ("benc" + id, locally administered). */
void frame_mac(uint8_t mac[6], uint8_t id)
{
	static const uint8_t base[5] = { 0x02, 0x62, 0x65, 0x6e, 0x63 };

	memcpy(mac, base, sizeof(base));
	mac[5] = id;
}

/** frame_set_dst() - address @f to the one receiver @receiver instead of broadcast. */
void frame_set_dst(uint8_t *f, uint8_t receiver)
{
	frame_mac(f, receiver);
}

/** frame_announce() - write the FRAME_MIN-byte announcement of end @id (see frame.h). */
void frame_announce(uint8_t f[FRAME_MIN], uint8_t id)
{
	memset(f, 0, FRAME_MIN);
	memset(f, 0xff, 6);
	frame_mac(f + 6, id);
	f[12] = FRAME_ANNOUNCE_ETHERTYPE >> 8;
	f[13] = FRAME_ANNOUNCE_ETHERTYPE & 0xff;
}

/** frame_is_announce() - whether the @len bytes at @f are an announcement, not a test frame. */
int frame_is_announce(const uint8_t *f, size_t len)
{
	return len >= 14 && f[12] == FRAME_ANNOUNCE_ETHERTYPE >> 8 &&
	       f[13] == (FRAME_ANNOUNCE_ETHERTYPE & 0xff);
}

/** frame_set_seq() - stamp @seq into the head and (inverted) the tail of @f. */
void frame_set_seq(uint8_t *f, size_t size, uint64_t seq)
{
	put_be64(f + FRAME_OFF_SEQ, seq);
	put_be64(f + size - 8, ~seq);
}

/**
 * frame_check() - validate a received frame.
 * @f:   frame bytes
 * @len: length as received (datagram size or stream length prefix)
 * @ref: a frame_init()ed FRAME_MAX reference to compare the fill against, or
 *       NULL to check only head and tail (cheap enough for line rate)
 * @seq: set to the frame's sequence number when good
 * Return: FRAME_OK or the first problem found.
 */
enum frame_status frame_check(const uint8_t *f, size_t len, const uint8_t *ref,
			      uint64_t *seq)
{
	uint64_t s;

	if (len < FRAME_MIN || len > STREAM_MAX_LEN)
		return FRAME_BAD_LEN;
	if (f[12] != FRAME_ETHERTYPE >> 8 || f[13] != (FRAME_ETHERTYPE & 0xff))
		return FRAME_BAD_TYPE;
	if (get_be32(f + FRAME_OFF_MAGIC) != FRAME_MAGIC)
		return FRAME_BAD_MAGIC;
	if (get_be32(f + FRAME_OFF_LEN) != len)
		return FRAME_BAD_LEN;
	s = get_be64(f + FRAME_OFF_SEQ);
	if (get_be64(f + len - 8) != ~s)
		return FRAME_BAD_TAIL;
	if (ref && len <= FRAME_MAX &&
	    memcmp(f + FRAME_OFF_FILL, ref + FRAME_OFF_FILL, len - 8 - FRAME_OFF_FILL))
		return FRAME_BAD_FILL;
	*seq = s;
	return FRAME_OK;
}

/**
 * seq_account() - check one received frame and update @s.
 * @s:   receiver statistics
 * @f:   frame bytes, @len their length
 * @ref: see frame_check()
 * @now: arrival time, now_ns()
 */
void seq_account(struct seq_stats *s, const uint8_t *f, size_t len, const uint8_t *ref,
		 uint64_t now)
{
	uint64_t seq;

	if (frame_check(f, len, ref, &seq) != FRAME_OK) {
		s->corrupt++;
		return;
	}
	if (!s->frames) {
		s->first_seq = seq;
		s->next_seq = seq + 1;
		s->t_first = now;
	} else if (seq == s->next_seq) {
		s->next_seq++;
	} else if (seq > s->next_seq) {
		s->lost += seq - s->next_seq;
		s->next_seq = seq + 1;
	} else {
		/* Late: it fills a gap counted as lost before (or it is a duplicate). */
		s->out_of_order++;
		if (s->lost)
			s->lost--;
	}
	s->frames++;
	s->bytes += len;
	s->t_last = now;
}
