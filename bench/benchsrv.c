/*
 * benchsrv - the server the benchmark suite runs bare and under
 * libconnlimit.
 *
 * Usage: benchsrv [-p PORT] [-b ADDR] [-m epoll|block|pool] [-w PROCS]
 *                 [-t THREADS] [-q] [-T]
 *
 *   -m epoll  one thread per process, level-triggered epoll, the
 *             non-blocking listener drained until EAGAIN (default)
 *   -m block  one connection at a time with blocking calls, so that a
 *             traced run makes the same calls for every connection
 *   -m pool   THREADS threads (default 64) blocking in accept on one
 *             listener, each serving one connection at a time
 *   -w PROCS  epoll mode: fork PROCS workers after listening (prefork);
 *             they share the listener, each with EPOLLEXCLUSIVE
 *   -q        close each connection as soon as it is accepted
 *   -T        time every accept and close call
 *   -l LIMIT  pool mode: the server itself caps each source at LIMIT
 *             open connections, resetting the rest at once (the least
 *             any limiter in the program can do: the flood's floor)
 *
 * A client sends a line; the server answers "ok\n" and closes.  A client
 * that sends nothing is held until it goes away (pool threads give up
 * after 30 s).  Prints "port=N" once every worker is ready.  SIGUSR1
 * makes each process print "stats pid=P conns=N accept_ns=A close_ns=C"
 * (totals since start); SIGTERM ends all of them.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common.h"

#define USAGE "benchsrv [-p PORT] [-b ADDR] [-m epoll|block|pool] " \
	"[-w PROCS] [-t THREADS] [-q] [-T] [-l LIMIT]"
#define MAX_PROCS 64
#define MAX_EVENTS 256
#define REPLY "ok\n"

enum { M_EPOLL, M_BLOCK, M_POOL };

static struct {
	uint32_t addr;
	int port, mode, procs, threads, quick, timed, limit;
} opt = { .addr = 0x7f000001, .mode = M_EPOLL, .threads = 64 };

static struct {
	atomic_ulong conns;
	uint64_t accept_ns, close_ns;
} st;

static volatile sig_atomic_t want_stats, want_exit;
static pid_t kids[MAX_PROCS];

static void on_signal(int sig)
{
	if (sig == SIGUSR1)
		want_stats = 1;
	else
		want_exit = 1;
}

static void print_stats(void)
{
	char line[160];
	int n;

	n = snprintf(line, sizeof line,
		     "stats pid=%d conns=%lu accept_ns=%llu close_ns=%llu\n",
		     (int)getpid(), atomic_load(&st.conns),
		     (unsigned long long)st.accept_ns,
		     (unsigned long long)st.close_ns);
	if (write(1, line, (size_t)n) < 0)
		exit(1);
}

static int parse_mode(const char *s)
{
	if (!strcmp(s, "epoll"))
		return M_EPOLL;
	if (!strcmp(s, "block"))
		return M_BLOCK;
	if (!strcmp(s, "pool"))
		return M_POOL;
	usage_exit(USAGE);
}

static void parse_opts(int argc, char **argv)
{
	int c;

	while ((c = getopt(argc, argv, "p:b:m:w:t:qTl:")) != -1) {
		switch (c) {
		case 'p': opt.port = (int)parse_num(optarg, 0, 65535, USAGE);
			break;
		case 'b': opt.addr = parse_loopback(optarg, USAGE); break;
		case 'm': opt.mode = parse_mode(optarg); break;
		case 'w': opt.procs = (int)parse_num(optarg, 1, MAX_PROCS,
						     USAGE);
			break;
		case 't': opt.threads = (int)parse_num(optarg, 1, 1024,
						       USAGE);
			break;
		case 'q': opt.quick = 1; break;
		case 'T': opt.timed = 1; break;
		case 'l': opt.limit = (int)parse_num(optarg, 1, 1 << 20,
						     USAGE);
			break;
		default: usage_exit(USAGE);
		}
	}
	if (optind != argc || (opt.procs && opt.mode != M_EPOLL) ||
	    (opt.limit && opt.mode != M_POOL))
		usage_exit(USAGE);
}

static int listener(int nonblock)
{
	struct sockaddr_in sin;
	socklen_t len = sizeof sin;
	int one = 1, fd;

	fd = socket(AF_INET, SOCK_STREAM | (nonblock ? SOCK_NONBLOCK : 0), 0);
	if (fd < 0)
		die("benchsrv", "socket");
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	sin_of(&sin, opt.addr, (uint16_t)opt.port);
	if (bind(fd, (struct sockaddr *)&sin, sizeof sin) < 0)
		die("benchsrv", "bind");
	if (listen(fd, 4096) < 0)
		die("benchsrv", "listen");
	if (getsockname(fd, (struct sockaddr *)&sin, &len) < 0)
		die("benchsrv", "getsockname");
	opt.port = ntohs(sin.sin_port);
	return fd;
}

/* ---- the calls whose cost the library may change ---- */

static int timed_accept(int lfd, int flags)
{
	struct sockaddr_in peer;
	socklen_t len = sizeof peer;
	uint64_t t0 = opt.timed ? now_ns() : 0;
	int c = flags ? accept4(lfd, (struct sockaddr *)&peer, &len, flags)
		      : accept(lfd, (struct sockaddr *)&peer, &len);

	if (opt.timed)
		st.accept_ns += now_ns() - t0;
	if (c >= 0)
		atomic_fetch_add(&st.conns, 1);
	return c;
}

static void timed_close(int fd)
{
	uint64_t t0 = opt.timed ? now_ns() : 0;

	close(fd);
	if (opt.timed)
		st.close_ns += now_ns() - t0;
}

/* Read once; 1 if a whole request line has arrived, 0 if not yet,
 * -1 if the client went away. */
static int got_request(int fd)
{
	char buf[512];
	ssize_t n = read(fd, buf, sizeof buf);

	if (n > 0)
		return memchr(buf, '\n', (size_t)n) != NULL;
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return 0;
	return -1;
}

static void answer(int fd)
{
	if (write(fd, REPLY, sizeof REPLY - 1) < 0)
		return;	/* the client went away: nothing to do */
}

/* ---- epoll ---- */

static void epoll_accept(int ep, int lfd)
{
	struct epoll_event ev = { .events = EPOLLIN };
	int c;

	for (;;) {
		c = timed_accept(lfd, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (c < 0)
			break;
		if (opt.quick) {
			timed_close(c);
			continue;
		}
		ev.data.fd = c;
		if (epoll_ctl(ep, EPOLL_CTL_ADD, c, &ev) < 0)
			timed_close(c);
	}
	/* Out of descriptors: leave the rest to the other workers. */
	if (errno == EMFILE || errno == ENFILE)
		epoll_ctl(ep, EPOLL_CTL_DEL, lfd, NULL);
}

static void epoll_serve(int fd)
{
	int r = got_request(fd);

	if (r == 0)
		return;
	if (r > 0)
		answer(fd);
	timed_close(fd);
}

static void epoll_loop(int lfd)
{
	struct epoll_event evs[MAX_EVENTS];
	struct epoll_event ev = { .events = EPOLLIN, .data.fd = lfd };
	int ep = epoll_create1(EPOLL_CLOEXEC), n, i;

	if (opt.procs)
		ev.events |= EPOLLEXCLUSIVE;
	if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev) < 0)
		die("benchsrv", "epoll");
	while (!want_exit) {
		n = epoll_wait(ep, evs, MAX_EVENTS, 1000);
		if (want_stats) {
			want_stats = 0;
			print_stats();
		}
		for (i = 0; i < n; i++) {
			if (evs[i].data.fd == lfd)
				epoll_accept(ep, lfd);
			else
				epoll_serve(evs[i].data.fd);
		}
	}
}

/* ---- blocking: one connection at a time ---- */

static void block_loop(int lfd)
{
	int c, r;

	while (!want_exit) {
		if (want_stats) {
			want_stats = 0;
			print_stats();
		}
		c = timed_accept(lfd, 0);
		if (c < 0)
			continue;	/* EINTR, or ECONNABORTED (refused) */
		r = opt.quick;
		while (!r && !want_exit)
			r = got_request(c);
		if (r > 0 && !opt.quick)
			answer(c);
		timed_close(c);
	}
}

/* ---- a pool of threads ---- */

/*
 * -l: open connections per source, in a table indexed by the low 16 bits
 * of the address (every source in a run differs there).  A plain array
 * of atomics: no lock, no hashing, nothing a real limiter could skip.
 */
static atomic_int held[1 << 16];

static atomic_int *held_by(const struct sockaddr_in *p)
{
	return &held[ntohl(p->sin_addr.s_addr) & 0xffff];
}

/* 1 if the in-program limit lets this connection in (and counts it). */
static int own_admit(int c, atomic_int *h)
{
	struct linger lg = { .l_onoff = 1, .l_linger = 0 };

	if (atomic_fetch_add(h, 1) < opt.limit)
		return 1;
	atomic_fetch_sub(h, 1);
	setsockopt(c, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
	close(c);
	return 0;
}

static void *pool_worker(void *arg)
{
	struct timeval tv = { .tv_sec = 30 };
	struct sockaddr_in peer;
	socklen_t len;
	int lfd = (int)(intptr_t)arg, c, r;
	atomic_int *h;

	for (;;) {
		len = sizeof peer;
		c = accept(lfd, (struct sockaddr *)&peer, &len);
		if (c < 0)
			continue;	/* a refused connection, or EINTR */
		h = held_by(&peer);
		if (opt.limit && !own_admit(c, h))
			continue;
		atomic_fetch_add(&st.conns, 1);
		setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
		r = opt.quick;
		while (!r)
			r = got_request(c);
		if (r > 0 && !opt.quick)
			answer(c);
		close(c);
		if (opt.limit)
			atomic_fetch_sub(h, 1);
	}
	return NULL;
}

/* Block the signals benchsrv handles; the old mask goes to @old. */
static void block_signals(sigset_t *old)
{
	sigset_t mask;

	sigemptyset(&mask);
	sigaddset(&mask, SIGUSR1);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	pthread_sigmask(SIG_BLOCK, &mask, old);
}

static void pool_run(int lfd)
{
	pthread_attr_t attr;
	pthread_t t;
	sigset_t old;
	int i;

	/* Signals go to the main thread, which only waits for them. */
	block_signals(&old);
	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, 128 * 1024);
	for (i = 0; i < opt.threads; i++)
		if (pthread_create(&t, &attr, pool_worker,
				   (void *)(intptr_t)lfd) != 0)
			die("benchsrv", "pthread_create");
	pthread_sigmask(SIG_SETMASK, &old, NULL);
}

/* ---- processes ---- */

static void install_signals(void)
{
	struct sigaction sa = { .sa_handler = on_signal };

	sigemptyset(&sa.sa_mask);
	sigaction(SIGUSR1, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
}

static void announce(void)
{
	printf("port=%d\n", opt.port);
	fflush(stdout);
}

/* The parent of a prefork server only relays signals to its workers. */
static void supervise(void)
{
	sigset_t none;
	int i;

	sigemptyset(&none);
	announce();
	while (!want_exit) {
		sigsuspend(&none);
		for (i = 0; want_stats && i < opt.procs; i++)
			kill(kids[i], SIGUSR1);
		want_stats = 0;
	}
	for (i = 0; i < opt.procs; i++)
		kill(kids[i], SIGTERM);
	while (wait(NULL) > 0)
		;
}

static void prefork(int lfd)
{
	sigset_t old;
	int i;

	block_signals(&old);
	for (i = 0; i < opt.procs; i++) {
		kids[i] = fork();
		if (kids[i] < 0)
			die("benchsrv", "fork");
		if (kids[i] == 0) {
			sigprocmask(SIG_SETMASK, &old, NULL);
			epoll_loop(lfd);
			_exit(0);
		}
	}
	supervise();
}

int main(int argc, char **argv)
{
	int lfd;

	parse_opts(argc, argv);
	raise_nofile();
	install_signals();
	lfd = listener(opt.mode == M_EPOLL);
	if (opt.procs) {
		prefork(lfd);
		return 0;
	}
	if (opt.mode == M_POOL) {
		pool_run(lfd);
		announce();
		while (!want_exit) {
			pause();
			if (want_stats) {
				want_stats = 0;
				print_stats();
			}
		}
		return 0;
	}
	announce();
	if (opt.mode == M_EPOLL)
		epoll_loop(lfd);
	else
		block_loop(lfd);
	print_stats();
	return 0;
}
