/* Helpers shared by the bench C programs: clocks, errors, argument parsing, run bounds. */
#define _GNU_SOURCE
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

const char *g_prog = "bench";
volatile sig_atomic_t g_stop;

/** now_ns() - monotonic clock in nanoseconds. */
uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/** sleep_ns() - sleep about @ns nanoseconds; a signal may cut it short. */
void sleep_ns(uint64_t ns)
{
	struct timespec ts = { .tv_sec = (time_t)(ns / 1000000000ull),
			       .tv_nsec = (long)(ns % 1000000000ull) };

	nanosleep(&ts, NULL);
}

/** vsay() - print "prog: message" and a newline to stderr. */
static void vsay(const char *fmt, va_list ap)
{
	fprintf(stderr, "%s: ", g_prog);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
}

/** die() - print "prog: message" to stderr and exit with status 2. */
void die(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsay(fmt, ap);
	va_end(ap);
	exit(2);
}

/** die_errno() - die() with @what and the current errno text. */
void die_errno(const char *what)
{
	die("%s: %s", what, strerror(errno));
}

/** warn() - print "prog: message" to stderr and go on. */
void warn(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsay(fmt, ap);
	va_end(ap);
}

/** parse_long() - parse decimal @s within [@lo, @hi] or die naming @what. */
long parse_long(const char *s, long lo, long hi, const char *what)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || end == s || *end || v < lo || v > hi)
		die("bad %s '%s' (want %ld..%ld)", what, s, lo, hi);
	return v;
}

/** parse_double() - parse a number @s within [@lo, @hi] or die naming @what. */
double parse_double(const char *s, double lo, double hi, const char *what)
{
	char *end;
	double v;

	errno = 0;
	v = strtod(s, &end);
	if (errno || end == s || *end || !(v >= lo && v <= hi))
		die("bad %s '%s' (want %g..%g)", what, s, lo, hi);
	return v;
}

/** on_alarm() - the hard limit: a stuck program must never outlive its run. */
static void on_alarm(int sig)
{
	static const char msg[] = "hard time limit reached, exiting\n";

	(void)sig;
	if (write(2, msg, sizeof(msg) - 1) < 0)
		_exit(124);
	_exit(124);
}

/** on_term() - ask the main loop to stop; it still prints its result. */
static void on_term(int sig)
{
	(void)sig;
	g_stop = 1;
}

/**
 * install_limits() - bound the whole process to @hard_seconds and make
 * SIGTERM/SIGINT interrupt blocking calls (no SA_RESTART) so loops notice.
 */
void install_limits(double hard_seconds)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_alarm;
	sigaction(SIGALRM, &sa, NULL);
	sa.sa_handler = on_term;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);	/* a vanished peer is an error code, not a death */
	alarm((unsigned)hard_seconds + 1);	/* round up: never cut a run short */
}

/** touch_ready() - create @path (if not NULL) to tell the runner we are set up. */
void touch_ready(const char *path)
{
	int fd;

	if (!path)
		return;
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		die_errno(path);
	close(fd);
}

/**
 * wait_go() - block until a line (any byte) arrives on stdin, at most @timeout_s.
 * Return: 0 on go, -1 on timeout, EOF or stop (the runner gave up on us).
 */
int wait_go(double timeout_s)
{
	uint64_t end = now_ns() + (uint64_t)(timeout_s * 1e9);
	char c;

	while (!g_stop) {
		uint64_t now = now_ns();
		int r;

		if (now >= end)
			return -1;
		r = wait_fd(0, POLLIN, (int)((end - now) / 1000000) + 1);
		if (r < 0)
			return -1;
		if (r == 0)
			continue;
		return read(0, &c, 1) == 1 ? 0 : -1;
	}
	return -1;
}

/**
 * wait_fd() - poll one fd for @events up to @timeout_ms.
 * Return: revents (>0), 0 on timeout or signal, -1 on error.
 */
int wait_fd(int fd, short events, int timeout_ms)
{
	struct pollfd p = { .fd = fd, .events = events };
	int r = poll(&p, 1, timeout_ms);

	if (r < 0)
		return errno == EINTR ? 0 : -1;
	return r ? p.revents : 0;
}

/**
 * write_all() - write @len bytes to non-blocking @fd, waiting for room as
 * needed, until @deadline_ns.
 * Return: 0 when all is written, -1 on error, timeout or stop.
 */
int write_all(int fd, const void *buf, size_t len, uint64_t deadline_ns)
{
	const uint8_t *p = buf;

	while (len) {
		ssize_t n = write(fd, p, len);

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
		if (wait_fd(fd, POLLOUT, 100) < 0)
			return -1;
	}
	return 0;
}

/** json_str() - print `"key": "val"` with the JSON escapes a path may need. */
void json_str(FILE *out, const char *key, const char *val)
{
	fprintf(out, "\"%s\": \"", key);
	for (; *val; val++) {
		unsigned char c = (unsigned char)*val;

		if (c == '"' || c == '\\')
			fprintf(out, "\\%c", c);
		else if (c < 0x20)
			fprintf(out, "\\u%04x", c);
		else
			fputc(c, out);
	}
	fputc('"', out);
}
