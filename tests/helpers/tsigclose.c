/*
 * tsigclose: proves that close() called from a signal handler cannot
 * deadlock against accept() or close() in progress.
 *
 * Usage: tsigclose [-n N] [-T SECONDS]
 *
 * Listens on 127.0.0.1 (prints "port=N"). The main thread blocks in
 * accept and queues each new fd; a SIGALRM handler, fired every
 * millisecond and only ever on the main thread, closes the oldest queued
 * fd. A second thread accepts on the same listener and closes its fds at
 * once. Every connection is sent "hi\n". After N connections (default
 * 2000) have been accepted and closed it prints "done accepted=N" and exits
 * 0; after -T seconds (default 20) it prints "timeout ..." and exits 1.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define RING 64

/* Written by the main thread, read by the handler that interrupts it. */
static int ring[RING];
static atomic_uint head, tail;
static atomic_long accepted, closed;
static long target = 2000;
static long limit_s = 20;

static _Noreturn void die(const char *what)
{
	fprintf(stderr, "tsigclose: %s: %s\n", what, strerror(errno));
	exit(1);
}

static void on_alarm(int sig)
{
	int saved = errno;
	unsigned t = atomic_load(&tail);

	(void)sig;
	if (t != atomic_load(&head)) {
		int fd = ring[t % RING];

		atomic_store(&tail, t + 1);
		close(fd);
		atomic_fetch_add(&closed, 1);
	}
	errno = saved;
}

static void greet(int fd)
{
	send(fd, "hi\n", 3, MSG_NOSIGNAL);
}

static void push(int fd)
{
	unsigned h = atomic_load(&head);

	if (h - atomic_load(&tail) >= RING) {
		close(fd);
		atomic_fetch_add(&closed, 1);
		return;
	}
	ring[h % RING] = fd;
	atomic_store(&head, h + 1);
}

static void *second_acceptor(void *arg)
{
	int lfd = (int)(long)arg;

	for (;;) {
		int fd = accept(lfd, NULL, NULL);

		if (fd < 0)
			continue;
		greet(fd);
		close(fd);
		atomic_fetch_add(&closed, 1);
		atomic_fetch_add(&accepted, 1);
	}
	return NULL;
}

static int make_listener(void)
{
	struct sockaddr_in sin = { .sin_family = AF_INET };
	socklen_t len = sizeof(sin);
	int one = 1;
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	if (fd < 0)
		die("socket");
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&sin, sizeof(sin)) == -1 ||
	    listen(fd, SOMAXCONN) == -1 ||
	    getsockname(fd, (struct sockaddr *)&sin, &len) == -1)
		die("listen");
	printf("port=%d\n", ntohs(sin.sin_port));
	return fd;
}

/* The second thread starts with SIGALRM blocked, so only main gets it. */
static void start_second(int lfd)
{
	sigset_t set, old;
	pthread_t t;

	sigemptyset(&set);
	sigaddset(&set, SIGALRM);
	pthread_sigmask(SIG_BLOCK, &set, &old);
	errno = pthread_create(&t, NULL, second_acceptor, (void *)(long)lfd);
	if (errno)
		die("pthread_create");
	pthread_sigmask(SIG_SETMASK, &old, NULL);
}

static void start_timer(void)
{
	struct sigaction sa = { .sa_handler = on_alarm };
	struct itimerval it = { { 0, 1000 }, { 0, 1000 } };

	/* No SA_RESTART: accept returns EINTR and the loop looks around. */
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGALRM, &sa, NULL) == -1 ||
	    setitimer(ITIMER_REAL, &it, NULL) == -1)
		die("timer");
}

static long now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec;
}

static void check_time(long end)
{
	if (now_s() < end)
		return;
	printf("timeout accepted=%ld closed=%ld\n", atomic_load(&accepted),
	       atomic_load(&closed));
	exit(1);
}

static void parse_opts(int argc, char **argv)
{
	int c;

	while ((c = getopt(argc, argv, "n:T:")) != -1) {
		if (c == 'n')
			target = atol(optarg);
		else if (c == 'T')
			limit_s = atol(optarg);
		else
			exit(2);
	}
}

int main(int argc, char **argv)
{
	long end;
	int lfd;

	setvbuf(stdout, NULL, _IOLBF, 0);
	parse_opts(argc, argv);
	lfd = make_listener();
	end = now_s() + limit_s;
	start_second(lfd);
	start_timer();
	while (atomic_load(&accepted) < target) {
		int fd = accept(lfd, NULL, NULL);

		check_time(end);
		if (fd < 0)
			continue;
		greet(fd);
		atomic_fetch_add(&accepted, 1);
		push(fd);
	}
	while (atomic_load(&closed) < atomic_load(&accepted)) {
		pause();
		check_time(end);
	}
	printf("done accepted=%ld\n", atomic_load(&accepted));
	return 0;
}
