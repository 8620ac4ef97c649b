/* Reassembles 4-byte big-endian length-prefixed frames from a byte stream (qemu stream framing). */
#include "stream.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "frame.h"
#include "util.h"

/**
 * reasm_init() - allocate the buffer.
 * @r:    reassembler to set up
 * @bulk: bytes a single read may bring; the buffer adds room for two records
 *        so a partial record plus a whole one always fit
 * Return: 0, or -1 if out of memory.
 */
int reasm_init(struct reasm *r, size_t bulk)
{
	r->cap = bulk + 2 * STREAM_REC_MAX;
	r->buf = malloc(r->cap);
	r->head = r->tail = 0;
	return r->buf ? 0 : -1;
}

/**
 * reasm_read() - one read() from @fd into the free space.
 * Return: bytes read, 0 at end of stream, -1 with errno (EAGAIN when empty).
 */
ssize_t reasm_read(struct reasm *r, int fd)
{
	ssize_t n;

	if (r->head == r->tail) {
		r->head = r->tail = 0;
	} else if (r->cap - r->tail < STREAM_REC_MAX) {
		memmove(r->buf, r->buf + r->head, r->tail - r->head);
		r->tail -= r->head;
		r->head = 0;
	}
	n = read(fd, r->buf + r->tail, r->cap - r->tail);
	if (n > 0)
		r->tail += (size_t)n;
	return n;
}

/**
 * reasm_next() - take the next complete frame.
 * @frame: set to the frame inside the buffer (the prefix sits just before it)
 * @len:   set to its length
 * Return: 1 with a frame, 0 if more bytes are needed, -1 if the prefix is
 *         larger than qemu accepts: the stream is out of sync and must be dropped.
 */
int reasm_next(struct reasm *r, uint8_t **frame, uint32_t *len)
{
	size_t avail = r->tail - r->head;
	uint32_t l;

	if (avail < 4)
		return 0;
	l = get_be32(r->buf + r->head);
	if (l > STREAM_MAX_LEN)
		return -1;
	if (avail < 4 + (size_t)l)
		return 0;
	*frame = r->buf + r->head + 4;
	*len = l;
	r->head += 4 + (size_t)l;
	return 1;
}
