/*
 * common.h - small helpers shared by the benchmark programs.
 *
 * The programs never talk to anything but loopback addresses (or the
 * loopback of a network namespace the runner made), and every loop they
 * run is bounded by a count and a deadline.
 */
#ifndef BENCH_COMMON_H
#define BENCH_COMMON_H

#include <netinet/in.h>
#include <stdint.h>

/* Monotonic nanoseconds (vDSO, no system call). */
uint64_t now_ns(void);

/* Nanoseconds this thread has spent on a CPU. */
uint64_t thread_cpu_ns(void);

_Noreturn void die(const char *prog, const char *what);
_Noreturn void usage_exit(const char *usage);

/* Parse a non-negative decimal within [lo, hi] or exit with usage. */
long parse_num(const char *s, long lo, long hi, const char *usage);

/* An IPv4 loopback address, host order; exits unless in 127.0.0.0/8. */
uint32_t parse_loopback(const char *s, const char *usage);

void sin_of(struct sockaddr_in *sin, uint32_t addr, uint16_t port);

/* Raise RLIMIT_NOFILE's soft limit to its hard limit; returns it. */
long raise_nofile(void);

/* Close with a reset: no TIME_WAIT left behind by a benchmark loop. */
void close_rst(int fd);

#endif
