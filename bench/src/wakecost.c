/*
 * wakecost - what the kernel charges a process for the wake-ups a relay pays per round,
 * on this machine (bench/perframe.py prints it beside the one-datagram-per-frame figures).
 *
 * A relay behind a sender of one datagram per frame spends its CPU per round (a wake-up,
 * a few syscalls) and per frame; the batch wait trades rounds for a timer sleep. On bare
 * metal a sleep or a wake-up costs a microsecond or two; in a virtual machine each timer
 * arm, timer interrupt and cross-CPU wake-up may leave the guest, and then they decide the
 * per-frame figure. Three numbers, each the CPU time of the calling thread (what `relay
 * ns/frame` counts):
 *   syscall_ns    one getppid(): the floor under every syscall;
 *   sleep_us      one clock_nanosleep() of SLEEP_US with the timer slack the hub sets
 *                 (a tenth of the wait), as the batch wait sleeps; sleep_wall_us: how
 *                 long it really slept;
 *   wake_us       one eventfd write() that wakes a thread blocked on the other CPU, as a
 *                 relay's send wakes its receiver.
 * The caller pins it (taskset) to the relay's CPU; the woken thread runs on -o CPU.
 * Bounded: about a second in all.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define SLEEP_US 50
#define SYSCALLS 200000
#define SLEEPS 4000
#define WAKES 4000
#define WAKE_GAP_NS 100000	/* the woken thread is asleep again well before the next */

static int efd = -1;
static int other_cpu = 0;

static double now_ns(clockid_t clock)
{
	struct timespec t;

	clock_gettime(clock, &t);
	return (double)t.tv_sec * 1e9 + (double)t.tv_nsec;
}

static void die(const char *what)
{
	fprintf(stderr, "wakecost: %s: %s\n", what, strerror(errno));
	exit(1);
}

static void *sleeper(void *arg)
{
	cpu_set_t set;
	uint64_t v;

	(void)arg;
	CPU_ZERO(&set);
	CPU_SET(other_cpu, &set);
	if (sched_setaffinity(0, sizeof(set), &set) < 0)
		die("sched_setaffinity");
	while (read(efd, &v, sizeof(v)) == (ssize_t)sizeof(v) || errno == EINTR)
		;
	return NULL;
}

int main(int argc, char **argv)
{
	struct timespec wait = { 0, SLEEP_US * 1000 };
	double t0, t1, w0, w1, woke = 0;
	uint64_t one = 1;
	pthread_t thread;
	int opt, i;

	while ((opt = getopt(argc, argv, "o:")) != -1) {
		if (opt != 'o') {
			fprintf(stderr, "usage: wakecost [-o OTHER_CPU]\n");
			return 2;
		}
		other_cpu = atoi(optarg);
	}

	t0 = now_ns(CLOCK_THREAD_CPUTIME_ID);
	for (i = 0; i < SYSCALLS; i++)
		syscall(SYS_getppid);
	t1 = now_ns(CLOCK_THREAD_CPUTIME_ID);
	double syscall_ns = (t1 - t0) / SYSCALLS;

	if (prctl(PR_SET_TIMERSLACK, SLEEP_US * 1000 / 10, 0, 0, 0) < 0)
		die("prctl");
	w0 = now_ns(CLOCK_MONOTONIC);
	t0 = now_ns(CLOCK_THREAD_CPUTIME_ID);
	for (i = 0; i < SLEEPS; i++)
		clock_nanosleep(CLOCK_MONOTONIC, 0, &wait, NULL);
	t1 = now_ns(CLOCK_THREAD_CPUTIME_ID);
	w1 = now_ns(CLOCK_MONOTONIC);

	efd = eventfd(0, 0);
	if (efd < 0)
		die("eventfd");
	if (pthread_create(&thread, NULL, sleeper, NULL))
		die("pthread_create");
	for (i = 0; i < WAKES; i++) {
		/* Spin, not sleep, between writes: a sleep here would be counted below. */
		double until = now_ns(CLOCK_MONOTONIC) + WAKE_GAP_NS, c;

		while (now_ns(CLOCK_MONOTONIC) < until)
			;
		c = now_ns(CLOCK_THREAD_CPUTIME_ID);
		if (write(efd, &one, sizeof(one)) != (ssize_t)sizeof(one))
			die("write");
		woke += now_ns(CLOCK_THREAD_CPUTIME_ID) - c;
	}
	/* The clock reads around each write cost something too: take them out. */
	double clock_ns = 0;
	for (i = 0; i < WAKES; i++) {
		double c = now_ns(CLOCK_THREAD_CPUTIME_ID);

		clock_ns += now_ns(CLOCK_THREAD_CPUTIME_ID) - c;
	}
	printf("{\"syscall_ns\": %.0f, \"sleep_us\": %.2f, \"sleep_wall_us\": %.1f, "
	       "\"sleep_request_us\": %d, \"wake_us\": %.2f}\n",
	       syscall_ns, (t1 - t0) / SLEEPS / 1e3, (w1 - w0) / SLEEPS / 1e3, SLEEP_US,
	       (woke - clock_ns) / WAKES / 1e3);
	return 0;	/* the sleeper thread ends with the process */
}
