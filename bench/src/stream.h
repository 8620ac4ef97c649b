/* Reassembles 4-byte big-endian length-prefixed frames from a byte stream (qemu stream framing). */
#ifndef BENCH_STREAM_H
#define BENCH_STREAM_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/*
 * One buffer per connection; reads land at @tail, frames are handed out as
 * pointers into the buffer (valid until the next reasm_read()), and a partial
 * frame is moved to the front only when the space behind it is too short for
 * a whole record. So a read costs one copy only for the rare frame that
 * straddles the end of the buffer.
 */
struct reasm {
	uint8_t *buf;	/* owned, malloc()ed by reasm_init() */
	size_t cap;	/* size of @buf */
	size_t head;	/* first byte not yet handed out */
	size_t tail;	/* end of the bytes read so far */
};

#define STREAM_REC_MAX	(4 + 69632)	/* prefix + qemu's largest frame */

int reasm_init(struct reasm *r, size_t bulk);
ssize_t reasm_read(struct reasm *r, int fd);
int reasm_next(struct reasm *r, uint8_t **frame, uint32_t *len);

/** reasm_pending() - bytes read but not yet handed out (a partial record). */
static inline size_t reasm_pending(const struct reasm *r)
{
	return r->tail - r->head;
}

#endif
