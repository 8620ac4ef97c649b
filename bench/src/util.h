/* Helpers shared by the bench C programs: clocks, errors, argument parsing, run bounds. */
#ifndef BENCH_UTIL_H
#define BENCH_UTIL_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Program name used in messages; each main() sets it first. */
extern const char *g_prog;
/* Set by SIGTERM/SIGINT: loops finish cleanly and still print their result line. */
extern volatile sig_atomic_t g_stop;

uint64_t now_ns(void);
void sleep_ns(uint64_t ns);
void die(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
void die_errno(const char *what) __attribute__((noreturn));
void warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
long parse_long(const char *s, long lo, long hi, const char *what);
double parse_double(const char *s, double lo, double hi, const char *what);
void install_limits(double hard_seconds);
void touch_ready(const char *path);
int wait_go(double timeout_s);
int wait_fd(int fd, short events, int timeout_ms);
int write_all(int fd, const void *buf, size_t len, uint64_t deadline_ns);
void json_str(FILE *out, const char *key, const char *val);

/* Big-endian stores and loads: the wire is big-endian, the host usually is not. */

/** put_be32() - store @v big-endian at @p. */
static inline void put_be32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24); p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);  p[3] = (uint8_t)v;
}

/** get_be32() - load a big-endian 32-bit value from @p. */
static inline uint32_t get_be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/** put_be64() - store @v big-endian at @p. */
static inline void put_be64(uint8_t *p, uint64_t v)
{
	put_be32(p, (uint32_t)(v >> 32));
	put_be32(p + 4, (uint32_t)v);
}

/** get_be64() - load a big-endian 64-bit value from @p. */
static inline uint64_t get_be64(const uint8_t *p)
{
	return (uint64_t)get_be32(p) << 32 | get_be32(p + 4);
}

#endif
