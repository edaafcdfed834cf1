/*
 * tprefork: a pre-forking test server: one listener, several worker
 * processes blocking in accept on it.
 *
 * Usage: tprefork [-b ADDR] [-p PORT] [-w WORKERS] [-t THREADS] [-r] [-R]
 *                 [-g TEXT]
 *
 * Listens on ADDR (default 127.0.0.1), port PORT (default: any) and prints
 * "port=N". -r sets SO_REUSEPORT, so that independent instances can share
 * the port. The master forks WORKERS workers (default 4; 0: the master
 * serves by itself) and prints "worker pid=P" for each; with -R it forks
 * a new one, printed "respawn pid=P", whenever a worker dies. In every
 * worker THREADS threads (default 1) block in accept; each connection is
 * served by a thread of its own: it gets "TEXT\n" (default "hello") and
 * an echo of what it sends, and is closed when the client closes. Events:
 * "accept pid=P fd=N peer=ADDR:PORT", "close pid=P fd=N". SIGTERM ends
 * the master and its workers with status 0; a worker whose master dies is
 * killed.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define SAY_PROG "tprefork"
#include "say.h"

#define MAX_WORKERS 64

static struct {
	const char *bind;
	int port;
	int workers;
	int threads;
	int reuseport;
	int respawn;
	const char *greeting;
} opt = { .bind = "127.0.0.1", .workers = 4, .threads = 1,
	  .greeting = "hello" };

static int lfd = -1;
static pid_t worker[MAX_WORKERS];
static volatile sig_atomic_t stopping;

static _Noreturn void usage(void)
{
	fprintf(stderr, "usage: tprefork [-b ADDR] [-p PORT] [-w WORKERS] "
		"[-t THREADS] [-r] [-R] [-g TEXT]\n");
	exit(2);
}

static void parse_opts(int argc, char **argv)
{
	int c;

	while ((c = getopt(argc, argv, "b:p:w:t:rRg:")) != -1) {
		switch (c) {
		case 'b': opt.bind = optarg; break;
		case 'p': opt.port = atoi(optarg); break;
		case 'w': opt.workers = atoi(optarg); break;
		case 't': opt.threads = atoi(optarg); break;
		case 'r': opt.reuseport = 1; break;
		case 'R': opt.respawn = 1; break;
		case 'g': opt.greeting = optarg; break;
		default: usage();
		}
	}
	if (optind != argc || opt.workers < 0 || opt.workers > MAX_WORKERS ||
	    opt.threads < 1 || opt.threads > 64)
		usage();
}

static void listen_on(void)
{
	struct in_addr a;

	if (inet_pton(AF_INET, opt.bind, &a) != 1)
		usage();
	lfd = say_listen(a.s_addr, opt.port, 0, opt.reuseport);
}

static void *serve(void *arg)
{
	int fd = (int)(long)arg;
	char buf[4096];
	ssize_t n;

	dprintf(fd, "%s\n", opt.greeting);
	while ((n = read(fd, buf, sizeof(buf))) > 0 || (n < 0 && errno == EINTR))
		if (n > 0 && write(fd, buf, (size_t)n) < 0)
			break;
	say("close pid=%d fd=%d", (int)getpid(), fd);
	close(fd);
	return NULL;
}

static void start_thread(void *(*fn)(void *), void *arg)
{
	pthread_attr_t a;
	pthread_t t;

	pthread_attr_init(&a);
	pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
	pthread_attr_setstacksize(&a, 64 * 1024);
	if (pthread_create(&t, &a, fn, arg) != 0)
		die("pthread_create");
	pthread_attr_destroy(&a);
}

static void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static void *acceptor(void *arg)
{
	struct sockaddr_in peer;
	socklen_t len;
	char a[INET_ADDRSTRLEN];
	int fd;

	(void)arg;
	for (;;) {
		len = sizeof(peer);
		fd = accept(lfd, (struct sockaddr *)&peer, &len);
		if (fd < 0) {
			if (errno == EMFILE || errno == ENFILE)
				sleep_ms(10);
			else if (errno != EINTR && errno != ECONNABORTED)
				die("accept");
			continue;
		}
		inet_ntop(AF_INET, &peer.sin_addr, a, sizeof(a));
		say("accept pid=%d fd=%d peer=%s:%d", (int)getpid(), fd, a,
		    ntohs(peer.sin_port));
		start_thread(serve, (void *)(long)fd);
	}
	return NULL;
}

static _Noreturn void work(void)
{
	for (int i = 1; i < opt.threads; i++)
		start_thread(acceptor, NULL);
	acceptor(NULL);
	exit(1);
}

static pid_t spawn_worker(void)
{
	pid_t master = getpid(), pid = fork();

	if (pid < 0)
		die("fork");
	if (pid > 0)
		return pid;
	signal(SIGTERM, SIG_DFL);
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != master)
		_exit(1);
	work();
}

static void on_term(int sig)
{
	(void)sig;
	stopping = 1;
}

static _Noreturn void stop_workers(void)
{
	for (int i = 0; i < opt.workers; i++)
		if (worker[i] > 0)
			kill(worker[i], SIGTERM);
	while (wait(NULL) > 0 || errno == EINTR)
		;
	exit(0);
}

/* Reap workers; with -R replace each one that died. */
static _Noreturn void supervise(void)
{
	struct sigaction sa = { .sa_handler = on_term };
	pid_t pid;
	int i;

	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	for (i = 0; i < opt.workers; i++) {
		worker[i] = spawn_worker();
		say("worker pid=%d", (int)worker[i]);
	}
	while (!stopping) {
		pid = wait(NULL);
		if (pid < 0 && errno != EINTR)
			die("wait");
		for (i = 0; pid > 0 && i < opt.workers; i++) {
			if (worker[i] != pid)
				continue;
			worker[i] = opt.respawn && !stopping ? spawn_worker() : 0;
			if (worker[i] > 0)
				say("respawn pid=%d", (int)worker[i]);
		}
	}
	stop_workers();
}

int main(int argc, char **argv)
{
	parse_opts(argc, argv);
	signal(SIGPIPE, SIG_IGN);
	listen_on();
	if (opt.workers == 0)
		work();
	supervise();
}
