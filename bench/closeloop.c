/*
 * closeloop - what close() costs on descriptors that are not sockets.
 *
 * Usage: closeloop [-n CLOSES] [-b BATCH] [-w]
 *
 * Opens BATCH eventfds, closes them in a tight loop, and repeats until
 * CLOSES descriptors are closed; only the closes are timed, in CPU time
 * of the thread (so that time other programs take the CPU away does
 * not count) and in wall time.  With -w it first accepts one loopback
 * connection and keeps it, so that a loaded library has its descriptor
 * table mapped, as in a server that has served.  Prints "closes=N
 * ns_per_close=CPU wall_ns_per_close=WALL".
 */
#include <stdio.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common.h"

#define USAGE "closeloop [-n CLOSES] [-b BATCH] [-w]"
#define MAX_BATCH 4096

/* One accepted loopback connection, never closed. */
static void warm_up(void)
{
	struct sockaddr_in sin;
	socklen_t len = sizeof sin;
	int l = socket(AF_INET, SOCK_STREAM, 0), c = socket(AF_INET,
							   SOCK_STREAM, 0);

	sin_of(&sin, 0x7f000001, 0);
	if (l < 0 || c < 0 || bind(l, (struct sockaddr *)&sin, sizeof sin) ||
	    listen(l, 1) || getsockname(l, (struct sockaddr *)&sin, &len) ||
	    connect(c, (struct sockaddr *)&sin, sizeof sin) ||
	    accept(l, NULL, NULL) < 0)
		die("closeloop", "warm-up connection");
}

int main(int argc, char **argv)
{
	static int fds[MAX_BATCH];
	long closes = 2000000, batch = 256, done = 0, i;
	uint64_t cpu = 0, wall = 0, c0, w0;
	int c;

	while ((c = getopt(argc, argv, "n:b:w")) != -1) {
		switch (c) {
		case 'n': closes = parse_num(optarg, 1, 1L << 40, USAGE); break;
		case 'b': batch = parse_num(optarg, 1, MAX_BATCH, USAGE); break;
		case 'w': warm_up(); break;
		default: usage_exit(USAGE);
		}
	}
	while (done < closes) {
		for (i = 0; i < batch; i++)
			if ((fds[i] = eventfd(0, EFD_CLOEXEC)) < 0)
				die("closeloop", "eventfd");
		w0 = now_ns();
		c0 = thread_cpu_ns();
		for (i = 0; i < batch; i++)
			close(fds[i]);
		cpu += thread_cpu_ns() - c0;
		wall += now_ns() - w0;
		done += batch;
	}
	printf("closes=%ld ns_per_close=%.2f wall_ns_per_close=%.2f\n", done,
	       (double)cpu / (double)done, (double)wall / (double)done);
	return 0;
}
