/*
 * tclient: opens connections from one source address and reports which
 * ones the server kept.
 *
 * Usage: tclient [-s SRC] [-P SPORT] [-d DST] -p PORT [-n N] [-c] [-t MS]
 *                [-G MS] [-H stdin|MS] [-v]
 *
 * A connection is kept when a whole first line arrives within -t MS
 * (default 3000) or, with -G MS (servers that do not greet), when it is
 * still open MS after connecting. -c starts all N connects at once;
 * otherwise each waits for the previous one's verdict. Prints "conn I
 * kept" or "conn I refused reason=eof|reset|timeout|connect-error" for
 * each (with -v also "conn I line=TEXT"), then "kept=K refused=R". -H
 * holds the kept connections until stdin reaches EOF or for MS, then
 * closes them. -P binds every connection to source port SPORT (with
 * SO_REUSEADDR) and closes each with a reset, so the port is free again
 * at once (no TIME_WAIT): a client that always comes from one port.
 * Exit status 0, 2 on a usage error, 1 when setting up fails.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum state { CONNECTING, WAITING, KEPT, REFUSED };

struct conn {
	int fd;
	enum state state;
	const char *reason;
	long deadline;
	char line[256];
	size_t len;
};

static struct {
	const char *src;
	const char *dst;
	int port;
	int n;
	int concurrent;
	long timeout_ms;
	long greetless_ms;
	const char *hold;
	int verbose;
	int sport;
} opt = { .dst = "127.0.0.1", .n = 1, .timeout_ms = 3000,
	  .greetless_ms = -1 };

static struct sockaddr_storage src_addr, dst_addr;
static socklen_t src_len, dst_len;

static _Noreturn void usage(void)
{
	fprintf(stderr, "usage: tclient [-s SRC] [-P SPORT] [-d DST] -p PORT "
		"[-n N] [-c] [-t MS] [-G MS] [-H stdin|MS] [-v]\n");
	exit(2);
}

static _Noreturn void die(const char *what)
{
	fprintf(stderr, "tclient: %s: %s\n", what, strerror(errno));
	exit(1);
}

static long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

static socklen_t parse_addr(const char *s, int port,
			    struct sockaddr_storage *ss)
{
	struct sockaddr_in *sin = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;

	memset(ss, 0, sizeof(*ss));
	if (inet_pton(AF_INET, s, &sin->sin_addr) == 1) {
		sin->sin_family = AF_INET;
		sin->sin_port = htons(port);
		return sizeof(*sin);
	}
	if (inet_pton(AF_INET6, s, &sin6->sin6_addr) == 1) {
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(port);
		return sizeof(*sin6);
	}
	usage();
	return 0;
}

static void parse_opts(int argc, char **argv)
{
	int c;

	while ((c = getopt(argc, argv, "s:P:d:p:n:ct:G:H:v")) != -1) {
		switch (c) {
		case 's': opt.src = optarg; break;
		case 'P': opt.sport = atoi(optarg); break;
		case 'd': opt.dst = optarg; break;
		case 'p': opt.port = atoi(optarg); break;
		case 'n': opt.n = atoi(optarg); break;
		case 'c': opt.concurrent = 1; break;
		case 't': opt.timeout_ms = atol(optarg); break;
		case 'G': opt.greetless_ms = atol(optarg); break;
		case 'H': opt.hold = optarg; break;
		case 'v': opt.verbose = 1; break;
		default: usage();
		}
	}
	if (optind != argc || opt.port <= 0 || opt.n < 1 ||
	    opt.sport < 0 || opt.sport > 65535 || (opt.sport && !opt.src))
		usage();
	dst_len = parse_addr(opt.dst, opt.port, &dst_addr);
	if (opt.src)
		src_len = parse_addr(opt.src, opt.sport, &src_addr);
}

static void raise_nofile(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}

/* With -P, a reset: the fixed port must be free for the next one. */
static void end_conn(int fd)
{
	struct linger lg = { 1, 0 };

	if (opt.sport)
		setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
	close(fd);
}

static void refuse(struct conn *c, const char *reason)
{
	end_conn(c->fd);
	c->fd = -1;
	c->state = REFUSED;
	c->reason = reason;
}

static void connected(struct conn *c)
{
	c->state = WAITING;
	if (opt.greetless_ms >= 0)
		c->deadline = now_ms() + opt.greetless_ms;
}

static int new_socket(void)
{
	int one = 1;
	int fd = socket(dst_addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK, 0);

	if (fd < 0)
		die("socket");
	if (!opt.src)
		return fd;
	if (opt.sport)
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	else if (src_addr.ss_family == AF_INET)
		setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one,
			   sizeof(one));
	if (bind(fd, (struct sockaddr *)&src_addr, src_len) == -1)
		die("bind");
	return fd;
}

static void conn_start(struct conn *c)
{
	c->fd = new_socket();
	c->state = CONNECTING;
	c->deadline = now_ms() + opt.timeout_ms;
	if (connect(c->fd, (struct sockaddr *)&dst_addr, dst_len) == 0)
		connected(c);
	else if (errno != EINPROGRESS)
		refuse(c, "connect-error");
}

static void on_writable(struct conn *c)
{
	int err = 0;
	socklen_t len = sizeof(err);

	/* A reset can beat us to the connect's completion. */
	getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
	if (err)
		refuse(c, err == ECONNRESET ? "reset" : "connect-error");
	else
		connected(c);
}

static void on_readable(struct conn *c)
{
	char buf[256];
	ssize_t n = read(c->fd, buf, sizeof(buf));
	size_t room = sizeof(c->line) - 1 - c->len;

	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n <= 0) {
		refuse(c, n == 0 ? "eof" : "reset");
		return;
	}
	if (opt.greetless_ms >= 0)
		return;
	memcpy(c->line + c->len, buf, (size_t)n < room ? (size_t)n : room);
	c->len += (size_t)n < room ? (size_t)n : room;
	c->line[c->len] = '\0';
	if (memchr(buf, '\n', n))
		c->state = KEPT;
}

static void on_event(struct conn *c, short revents)
{
	short done = POLLOUT | POLLERR | POLLHUP;

	if (c->state == CONNECTING && (revents & done))
		on_writable(c);
	else if (c->state == WAITING && revents)
		on_readable(c);
}

static void on_deadline(struct conn *c, long now)
{
	if (c->state > WAITING || now < c->deadline)
		return;
	if (c->state == WAITING && opt.greetless_ms >= 0)
		c->state = KEPT;
	else
		refuse(c, "timeout");
}

/* Poll conns[from..to) until each is kept or refused. */
static void run_batch(struct conn *conns, struct pollfd *p, int from, int to)
{
	for (;;) {
		long now = now_ms(), wait = -1;
		int n = 0;

		for (int i = from; i < to; i++) {
			on_deadline(&conns[i], now);
			if (conns[i].state > WAITING)
				continue;
			p[n].fd = conns[i].fd;
			p[n++].events = conns[i].state == CONNECTING ?
					POLLOUT : POLLIN;
			if (wait < 0 || conns[i].deadline - now < wait)
				wait = conns[i].deadline - now;
		}
		if (n == 0)
			return;
		if (poll(p, n, wait) < 0 && errno != EINTR)
			die("poll");
		for (int i = from, k = 0; i < to && k < n; i++) {
			if (conns[i].state <= WAITING && conns[i].fd == p[k].fd)
				on_event(&conns[i], p[k++].revents);
		}
	}
}

static void report(const struct conn *conns)
{
	int kept = 0;

	for (int i = 0; i < opt.n; i++) {
		const struct conn *c = &conns[i];

		if (c->state == KEPT && opt.verbose && opt.greetless_ms < 0)
			printf("conn %d line=%.*s\n", i + 1,
			       (int)strcspn(c->line, "\r\n"), c->line);
		if (c->state == KEPT)
			printf("conn %d kept\n", i + 1);
		else
			printf("conn %d refused reason=%s\n", i + 1, c->reason);
		kept += c->state == KEPT;
	}
	printf("kept=%d refused=%d\n", kept, opt.n - kept);
	fflush(stdout);
}

static void hold(void)
{
	char buf[256];
	long ms;

	if (!opt.hold)
		return;
	if (strcmp(opt.hold, "stdin") != 0) {
		ms = atol(opt.hold);
		for (long end = now_ms() + ms; now_ms() < end;)
			poll(NULL, 0, (int)(end - now_ms()));
		return;
	}
	for (;;) {
		ssize_t n = read(0, buf, sizeof(buf));

		if (n == 0 || (n < 0 && errno != EINTR))
			return;
	}
}

int main(int argc, char **argv)
{
	struct conn *conns;
	struct pollfd *p;

	parse_opts(argc, argv);
	raise_nofile();
	conns = calloc(opt.n, sizeof(*conns));
	p = calloc(opt.n, sizeof(*p));
	if (!conns || !p)
		die("calloc");
	for (int i = 0; i < opt.n; i++) {
		conn_start(&conns[i]);
		if (!opt.concurrent)
			run_batch(conns, p, i, i + 1);
	}
	if (opt.concurrent)
		run_batch(conns, p, 0, opt.n);
	report(conns);
	hold();
	for (int i = 0; i < opt.n; i++)
		if (conns[i].fd >= 0)
			end_conn(conns[i].fd);
	return 0;
}
