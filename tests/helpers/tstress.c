/*
 * tstress: many short connections from a range of loopback sources.
 *
 * Usage: tstress -S FIRST[-LAST] [-d DST] -p PORT [-n TOTAL] [-c CONC]
 *                [-t MS] [-w MS] [-T SECONDS]
 *
 * Keeps up to CONC (default 10) connections in flight, each from the next
 * IPv4 source in FIRST..LAST in turn, until TOTAL (default 1000) have
 * finished. A connection connects, waits up to -t MS (default 2000) for a
 * first line, keeps the connection open -w MS more (default 0) and closes:
 * "ok" when the line arrived, "refused" on EOF or reset, "errors"
 * otherwise. Prints "done ok=K refused=R errors=E" and
 * exits 0; after -T SECONDS (default 10) it stops, adds "unfinished=U" and
 * exits 1.
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
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum state { IDLE, CONNECTING, WAITING, HOLDING };
enum verdict { OK, REFUSED, ERROR };

struct slot {
	int fd;
	enum state state;
	long deadline;
};

static struct {
	uint32_t first, last, next;
	struct sockaddr_in dst;
	long total, conc, timeout_ms, hold_ms, limit_s;
} opt = { .total = 1000, .conc = 10, .timeout_ms = 2000, .limit_s = 10 };

static long started, finished, counts[3];

static _Noreturn void usage(void)
{
	fprintf(stderr, "usage: tstress -S FIRST[-LAST] [-d DST] -p PORT "
		"[-n TOTAL] [-c CONC] [-t MS] [-w MS] [-T SECONDS]\n");
	exit(2);
}

static long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

static uint32_t parse_ip(const char *s)
{
	struct in_addr a;

	if (inet_pton(AF_INET, s, &a) != 1)
		usage();
	return ntohl(a.s_addr);
}

static void parse_range(char *s)
{
	char *dash = strchr(s, '-');

	if (dash)
		*dash = '\0';
	opt.first = parse_ip(s);
	opt.last = dash ? parse_ip(dash + 1) : opt.first;
	if (opt.last < opt.first)
		usage();
	opt.next = opt.first;
}

static void parse_opts(int argc, char **argv)
{
	int c;

	opt.dst.sin_family = AF_INET;
	opt.dst.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	while ((c = getopt(argc, argv, "S:d:p:n:c:t:w:T:")) != -1) {
		switch (c) {
		case 'S': parse_range(optarg); break;
		case 'd': opt.dst.sin_addr.s_addr = htonl(parse_ip(optarg));
			  break;
		case 'p': opt.dst.sin_port = htons(atoi(optarg)); break;
		case 'n': opt.total = atol(optarg); break;
		case 'c': opt.conc = atol(optarg); break;
		case 't': opt.timeout_ms = atol(optarg); break;
		case 'w': opt.hold_ms = atol(optarg); break;
		case 'T': opt.limit_s = atol(optarg); break;
		default: usage();
		}
	}
	if (optind != argc || !opt.first || !opt.dst.sin_port ||
	    opt.total < 1 || opt.conc < 1)
		usage();
}

static void finish(struct slot *s, enum verdict v)
{
	if (s->fd >= 0)
		close(s->fd);
	s->fd = -1;
	s->state = IDLE;
	counts[v]++;
	finished++;
}

static int bind_next_source(int fd)
{
	struct sockaddr_in src = { .sin_family = AF_INET };
	int one = 1;

	src.sin_addr.s_addr = htonl(opt.next);
	opt.next = opt.next == opt.last ? opt.first : opt.next + 1;
	setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one,
		   sizeof(one));
	return bind(fd, (struct sockaddr *)&src, sizeof(src));
}

static void start(struct slot *s)
{
	started++;
	s->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
	s->state = CONNECTING;
	s->deadline = now_ms() + opt.timeout_ms;
	if (s->fd < 0 || bind_next_source(s->fd) == -1) {
		finish(s, ERROR);
		return;
	}
	if (connect(s->fd, (struct sockaddr *)&opt.dst, sizeof(opt.dst)) == 0)
		s->state = WAITING;
	else if (errno != EINPROGRESS)
		finish(s, ERROR);
}

static void on_event(struct slot *s)
{
	char buf[256];
	int err = 0;
	socklen_t len = sizeof(err);
	ssize_t n;

	if (s->state == CONNECTING) {
		getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &len);
		if (err)
			finish(s, err == ECONNRESET ? REFUSED : ERROR);
		else
			s->state = WAITING;
		return;
	}
	n = read(s->fd, buf, sizeof(buf));
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n > 0 && !memchr(buf, '\n', n))
		return;
	if (n > 0 && opt.hold_ms > 0) {
		s->state = HOLDING;
		s->deadline = now_ms() + opt.hold_ms;
		return;
	}
	finish(s, n > 0 ? OK : REFUSED);
}

/* Fill idle slots, collect the ones past their deadline; poll the rest. */
static int prepare(struct slot *slots, struct pollfd *p, long now)
{
	for (long i = 0; i < opt.conc; i++) {
		struct slot *s = &slots[i];

		if (s->state == IDLE && started < opt.total)
			start(s);
		if (s->state != IDLE && now >= s->deadline)
			finish(s, s->state == HOLDING ? OK : ERROR);
		p[i].fd = s->state == IDLE || s->state == HOLDING ? -1 : s->fd;
		p[i].events = s->state == CONNECTING ? POLLOUT : POLLIN;
		p[i].revents = 0;
	}
	return (int)opt.conc;
}

int main(int argc, char **argv)
{
	struct slot *slots;
	struct pollfd *p;
	long end;

	setvbuf(stdout, NULL, _IOLBF, 0);
	parse_opts(argc, argv);
	slots = calloc(opt.conc, sizeof(*slots));
	p = calloc(opt.conc, sizeof(*p));
	if (!slots || !p)
		return 1;
	for (long i = 0; i < opt.conc; i++)
		slots[i].fd = -1;
	end = now_ms() + opt.limit_s * 1000;
	while (finished < opt.total && now_ms() < end) {
		int n = prepare(slots, p, now_ms());

		if (poll(p, n, 5) <= 0)
			continue;
		for (int i = 0; i < n; i++)
			if (p[i].revents && slots[i].state != IDLE)
				on_event(&slots[i]);
	}
	printf("done ok=%ld refused=%ld errors=%ld", counts[OK],
	       counts[REFUSED], counts[ERROR]);
	if (finished < opt.total) {
		printf(" unfinished=%ld\n", opt.total - finished);
		return 1;
	}
	printf("\n");
	return 0;
}
