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
 * Bounded: about a second in all, and a 30 s alarm behind that.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "util.h"

#define SLEEP_US 50
#define SYSCALLS 200000
#define SLEEPS 4000
#define WAKES 4000
#define WAKE_GAP_NS 100000	/* the woken thread is asleep again well before the next */

static int efd = -1;
static int other_cpu = 0;

/** cpu_ns() - CPU time of the calling thread, in ns: what each figure is measured in. */
static uint64_t cpu_ns(void)
{
	struct timespec t;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
	return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

static void *sleeper(void *arg)
{
	cpu_set_t set;
	uint64_t v;

	(void)arg;
	CPU_ZERO(&set);
	CPU_SET(other_cpu, &set);
	if (sched_setaffinity(0, sizeof(set), &set) < 0)
		die_errno("sched_setaffinity");
	while (read(efd, &v, sizeof(v)) == (ssize_t)sizeof(v) || errno == EINTR)
		;
	return NULL;
}

int main(int argc, char **argv)
{
	struct timespec wait = { 0, SLEEP_US * 1000 };
	uint64_t t0, t1, w0, w1, woke = 0, clocks = 0;
	uint64_t one = 1;
	pthread_t thread;
	int opt, i;

	g_prog = "wakecost";
	while ((opt = getopt(argc, argv, "o:")) != -1) {
		if (opt != 'o') {
			fprintf(stderr, "usage: wakecost [-o OTHER_CPU]\n");
			return 2;
		}
		other_cpu = (int)parse_long(optarg, 0, CPU_SETSIZE - 1, "CPU");
	}
	install_limits(30);

	t0 = cpu_ns();
	for (i = 0; i < SYSCALLS; i++)
		syscall(SYS_getppid);
	t1 = cpu_ns();
	double syscall_ns = (double)(t1 - t0) / SYSCALLS;

	if (prctl(PR_SET_TIMERSLACK, SLEEP_US * 1000 / 10, 0, 0, 0) < 0)
		die_errno("prctl");
	w0 = now_ns();
	t0 = cpu_ns();
	for (i = 0; i < SLEEPS; i++)
		clock_nanosleep(CLOCK_MONOTONIC, 0, &wait, NULL);
	t1 = cpu_ns();
	w1 = now_ns();

	efd = eventfd(0, 0);
	if (efd < 0)
		die_errno("eventfd");
	if (pthread_create(&thread, NULL, sleeper, NULL))
		die("pthread_create failed");
	for (i = 0; i < WAKES; i++) {
		/* Spin, not sleep, between writes: a sleep here would be counted below. */
		uint64_t until = now_ns() + WAKE_GAP_NS, c;

		while (now_ns() < until)
			;
		c = cpu_ns();
		if (write(efd, &one, sizeof(one)) != (ssize_t)sizeof(one))
			die_errno("write");
		woke += cpu_ns() - c;
	}
	/* The clock reads around each write cost something too: take them out. */
	for (i = 0; i < WAKES; i++) {
		uint64_t c = cpu_ns();

		clocks += cpu_ns() - c;
	}
	printf("{\"syscall_ns\": %.0f, \"sleep_us\": %.2f, \"sleep_wall_us\": %.1f, "
	       "\"sleep_request_us\": %d, \"wake_us\": %.2f}\n",
	       syscall_ns, (double)(t1 - t0) / SLEEPS / 1e3, (double)(w1 - w0) / SLEEPS / 1e3,
	       SLEEP_US, ((double)woke - (double)clocks) / WAKES / 1e3);
	return 0;	/* the sleeper thread ends with the process */
}
