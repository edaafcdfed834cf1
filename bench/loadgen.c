/*
 * loadgen - the benchmark suite's clients, one epoll loop per process.
 *
 * Usage: loadgen MODE -p PORT [-a ADDR] [-s SRC] [-k NSRC] [-c CONC]
 *                [-S START] [-n MAX] [-d MS] [-i US] [-o MS] [-q]
 *
 *   churn    CONC connections at a time, each: connect, send a line,
 *            read the reply until the server closes, close.  Sources
 *            SRC, SRC+1, ... SRC+NSRC-1 are used in turn, beginning
 *            with SRC+START.  Ends after MAX connections or MS
 *            milliseconds, whichever comes first.
 *            -q sends nothing and waits for the server to close.
 *   latency  CONC clients, client i always from SRC+i, each starting one
 *            request every US microseconds; a request's latency runs
 *            from its scheduled start to the server's close.
 *   flood    CONC connections from SRC kept open; whenever the server
 *            resets or closes one, another is opened at once.
 *   hold     MAX connections spread over the NSRC sources, held until
 *            standard input closes or MS milliseconds pass.
 *
 * -a is the server (127.0.0.1), -o the time after which a connection
 * counts as timed out (2000 ms).  Closes send a reset, so no TIME_WAIT
 * piles up.  Prints one line of key=value results at the end (hold also
 * prints "held=N failed=F" once every connection is set up).
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common.h"

#define USAGE "loadgen churn|latency|flood|hold -p PORT [-a ADDR] " \
	"[-s SRC] [-k NSRC] [-c CONC] [-S START] [-n MAX] [-d MS] [-i US] " \
	"[-o MS] [-q]"
#define REQUEST "GET /\n"
#define MAX_SAMPLES (1 << 21)
#define HOLD_INFLIGHT 512

enum { CHURN, LATENCY, FLOOD, HOLD };
enum { S_IDLE, S_CONNECTING, S_WAITING, S_HELD };

struct slot {
	int fd;
	int state;
	int got;		/* reply bytes seen */
	uint32_t src;
	uint64_t start;		/* when this attempt began or was due */
};

static struct {
	int mode, quick;
	uint32_t server, src;
	int port;
	long nsrc, conc, max, ms, interval_us, timeout_ms;
} opt = {
	.server = 0x7f000001, .src = 0x7f000101, .nsrc = 1, .conc = 1,
	.max = 1000000000L, .ms = 10000, .interval_us = 10000,
	.timeout_ms = 2000,
};

static struct {
	long started, ok, refused, timeouts, unfinished, errors;
	uint64_t t0, t_end;
	uint32_t *lat_us;	/* latency samples, microseconds */
	long nlat;
} res;

static int ep;
static struct slot *slots;
static long next_src;		/* the next source, counted from SRC */

static int parse_mode(const char *s)
{
	static const char *names[] = { "churn", "latency", "flood", "hold" };
	int i;

	for (i = 0; i < 4; i++)
		if (!strcmp(s, names[i]))
			return i;
	usage_exit(USAGE);
}

static void parse_opts(int argc, char **argv)
{
	int c;

	if (argc < 2)
		usage_exit(USAGE);
	opt.mode = parse_mode(argv[1]);
	optind = 2;
	while ((c = getopt(argc, argv, "p:a:s:k:c:S:n:d:i:o:q")) != -1) {
		switch (c) {
		case 'p': opt.port = (int)parse_num(optarg, 1, 65535, USAGE);
			break;
		case 'a': opt.server = parse_loopback(optarg, USAGE); break;
		case 's': opt.src = parse_loopback(optarg, USAGE); break;
		case 'k': opt.nsrc = parse_num(optarg, 1, 1 << 23, USAGE);
			break;
		case 'c': opt.conc = parse_num(optarg, 1, 1 << 20, USAGE);
			break;
		case 'S': next_src = parse_num(optarg, 0, 1L << 40, USAGE);
			break;
		case 'n': opt.max = parse_num(optarg, 1, 1L << 40, USAGE);
			break;
		case 'd': opt.ms = parse_num(optarg, 1, 3600000, USAGE); break;
		case 'i': opt.interval_us = parse_num(optarg, 1, 10000000,
						      USAGE);
			break;
		case 'o': opt.timeout_ms = parse_num(optarg, 1, 600000,
						     USAGE);
			break;
		case 'q': opt.quick = 1; break;
		default: usage_exit(USAGE);
		}
	}
	if (optind != argc || !opt.port)
		usage_exit(USAGE);
}

/* ---- one connection ---- */

static void slot_close(struct slot *s)
{
	close_rst(s->fd);
	s->fd = -1;
	s->state = S_IDLE;
}

/* Start a connection from @src; on failure the slot stays idle. */
static void slot_connect(struct slot *s, uint32_t src, uint64_t start)
{
	struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT | EPOLLET };
	struct sockaddr_in from, to;
	int one = 1, fd;

	fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		die("loadgen", "socket");
	setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
	sin_of(&from, src, 0);
	sin_of(&to, opt.server, (uint16_t)opt.port);
	s->fd = fd;
	s->src = src;
	s->got = 0;
	s->start = start;
	s->state = S_CONNECTING;
	res.started++;
	ev.data.ptr = s;
	if (bind(fd, (struct sockaddr *)&from, sizeof from) < 0 ||
	    (connect(fd, (struct sockaddr *)&to, sizeof to) < 0 &&
	     errno != EINPROGRESS) ||
	    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
		res.errors++;
		slot_close(s);
	}
}

static uint32_t take_src(void)
{
	return opt.src + (uint32_t)(next_src++ % opt.nsrc);
}

static void record_latency(uint64_t ns)
{
	if (res.nlat < MAX_SAMPLES)
		res.lat_us[res.nlat++] = (uint32_t)(ns / 1000);
}

/* The connection in @s is over: count it by how it ended. */
static void finish(struct slot *s, int ok)
{
	if (ok) {
		res.ok++;
		if (opt.mode == LATENCY)
			record_latency(now_ns() - s->start);
	} else {
		res.refused++;
	}
	slot_close(s);
}

static void on_writable(struct slot *s)
{
	int err = 0;
	socklen_t len = sizeof err;

	if (s->state != S_CONNECTING)
		return;
	getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &len);
	if (err == ECONNREFUSED || err == ECONNRESET) {
		finish(s, 0);	/* turned away in or after the handshake */
		return;
	}
	if (err) {
		res.errors++;
		slot_close(s);
		return;
	}
	s->state = opt.mode == FLOOD || opt.mode == HOLD ? S_HELD : S_WAITING;
	if (opt.quick || s->state == S_HELD)
		return;
	if (write(s->fd, REQUEST, sizeof REQUEST - 1) < 0)
		finish(s, 0);
}

/* Reply bytes, then the server's close (EOF) ends a good connection; a
 * reset, or a close before any reply, is a refusal. */
static void on_readable(struct slot *s)
{
	char buf[256];
	ssize_t n;

	for (;;) {
		n = read(s->fd, buf, sizeof buf);
		if (n > 0) {
			s->got += (int)n;
			continue;
		}
		if (n < 0 && errno == EAGAIN)
			return;
		if (opt.mode == HOLD) {
			res.errors++;
			slot_close(s);
			return;
		}
		finish(s, n == 0 && (s->got > 0 || opt.quick));
		return;
	}
}

static void on_event(struct epoll_event *ev)
{
	struct slot *s = ev->data.ptr;

	if (s->state == S_IDLE)
		return;
	if (ev->events & (EPOLLOUT | EPOLLERR | EPOLLHUP))
		on_writable(s);
	if (s->state != S_IDLE && (ev->events & (EPOLLIN | EPOLLHUP |
						 EPOLLERR)))
		on_readable(s);
}

/* ---- keeping the slots busy ---- */

static int budget_left(uint64_t now)
{
	return res.started < opt.max && now < res.t_end;
}

static void expire(struct slot *s, uint64_t now)
{
	uint64_t limit = (uint64_t)opt.timeout_ms * 1000000u;

	if (s->state == S_IDLE || s->state == S_HELD || now - s->start < limit)
		return;
	res.timeouts++;
	if (opt.mode == LATENCY)
		record_latency(now - s->start);
	slot_close(s);
}

/*
 * Latency clients start on a fixed schedule, late or not, so a slow
 * server cannot hide its delays by slowing the clients down.  A client
 * more than a timeout behind skips what it missed.
 */
static void refill_latency(struct slot *s, uint64_t now)
{
	uint64_t step = (uint64_t)opt.interval_us * 1000u;
	uint64_t due = s->start + step;

	if (s->state != S_IDLE || now < due)
		return;
	if (now - due > (uint64_t)opt.timeout_ms * 1000000u)
		due = now;
	slot_connect(s, s->src, due);
}

static void refill(uint64_t now)
{
	long i;

	for (i = 0; i < opt.conc; i++) {
		expire(&slots[i], now);
		if (!budget_left(now))
			continue;
		if (opt.mode == LATENCY)
			refill_latency(&slots[i], now);
		else if (slots[i].state == S_IDLE)
			slot_connect(&slots[i], take_src(), now);
	}
}

static long count_state(long nslots, int state)
{
	long i, n = 0;

	for (i = 0; i < nslots; i++)
		n += slots[i].state == state;
	return n;
}

static int all_idle(void)
{
	long i;

	for (i = 0; i < opt.conc; i++)
		if (slots[i].state != S_IDLE && slots[i].state != S_HELD)
			return 0;
	return 1;
}

/* How long the loop may sleep: until the next scheduled start of a
 * latency client, else 10 ms (timeouts are checked that often). */
static struct timespec sleep_for(uint64_t now)
{
	uint64_t step = (uint64_t)opt.interval_us * 1000u, due, wait = 10000000;
	struct timespec ts;
	long i;

	for (i = 0; opt.mode == LATENCY && i < opt.conc; i++) {
		if (slots[i].state != S_IDLE)
			continue;
		due = slots[i].start + step;
		if (due <= now)
			wait = 0;
		else if (due - now < wait)
			wait = due - now;
	}
	ts.tv_sec = 0;
	ts.tv_nsec = (long)wait;
	return ts;
}

static void run_loop(void)
{
	struct epoll_event evs[256];
	struct timespec ts;
	uint64_t now = now_ns();
	int n, i;

	for (;;) {
		refill(now);
		if (!budget_left(now) && (all_idle() || now >= res.t_end))
			break;
		ts = sleep_for(now);
		n = epoll_pwait2(ep, evs, 256, &ts, NULL);
		for (i = 0; i < n; i++)
			on_event(&evs[i]);
		now = now_ns();
	}
}

/* ---- modes ---- */

static void setup(long nslots)
{
	long i;

	ep = epoll_create1(EPOLL_CLOEXEC);
	slots = calloc((size_t)nslots, sizeof *slots);
	if (ep < 0 || !slots)
		die("loadgen", "setup");
	for (i = 0; i < nslots; i++)
		slots[i].fd = -1;
}

static void report(void)
{
	double s = (double)(now_ns() - res.t0) / 1e9;

	printf("conns=%ld ok=%ld refused=%ld timeouts=%ld errors=%ld "
	       "secs=%.4f rate=%.1f\n", res.started, res.ok, res.refused,
	       res.timeouts, res.errors, s, (double)res.ok / s);
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

static uint32_t pct(double p)
{
	long i = (long)(p * (double)(res.nlat - 1) + 0.5);

	return res.nlat ? res.lat_us[i] : 0;
}

/* Requests still waiting at the end took at least this long: a starved
 * server must not look fast because nothing finished. */
static void count_unfinished(void)
{
	uint64_t now = now_ns();
	long i;

	for (i = 0; i < opt.conc; i++) {
		if (slots[i].state == S_IDLE)
			continue;
		res.unfinished++;
		record_latency(now - slots[i].start);
	}
}

static void report_latency(void)
{
	qsort(res.lat_us, (size_t)res.nlat, sizeof *res.lat_us, cmp_u32);
	printf("reqs=%ld ok=%ld refused=%ld timeouts=%ld unfinished=%ld "
	       "errors=%ld p50_us=%u p90_us=%u p99_us=%u max_us=%u\n",
	       res.started, res.ok, res.refused, res.timeouts,
	       res.unfinished, res.errors, pct(0.50), pct(0.90), pct(0.99),
	       pct(1.0));
}

static void run_traffic(void)
{
	uint64_t now = now_ns();
	long i;

	setup(opt.conc);
	res.t0 = now;
	res.t_end = now + (uint64_t)opt.ms * 1000000u;
	if (opt.mode == LATENCY) {
		/* Wake up on time: the schedule is part of the measurement. */
		prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);
		res.lat_us = malloc(MAX_SAMPLES * sizeof *res.lat_us);
		if (!res.lat_us)
			die("loadgen", "malloc");
		/* Spread the clients' first requests over one interval. */
		for (i = 0; i < opt.conc; i++) {
			slots[i].src = opt.src + (uint32_t)(i % opt.nsrc);
			slots[i].start = now - (uint64_t)opt.interval_us *
				1000u * (uint64_t)(opt.conc - i) / opt.conc;
		}
	}
	run_loop();
	if (opt.mode == LATENCY) {
		count_unfinished();
		report_latency();
	} else {
		report();
	}
	if (opt.mode == FLOOD)
		printf("held=%ld\n", count_state(opt.conc, S_HELD));
}

/* ---- hold ---- */

/* Open every connection, at most HOLD_INFLIGHT handshakes at a time. */
static void hold_open(void)
{
	struct epoll_event evs[256];
	long i, opened = 0;
	int n;

	while (now_ns() < res.t_end) {
		long busy = count_state(opt.max, S_CONNECTING);

		for (; opened < opt.max && busy < HOLD_INFLIGHT; busy++)
			slot_connect(&slots[opened++], take_src(), now_ns());
		if (opened == opt.max && busy == 0)
			break;
		n = epoll_wait(ep, evs, 256, 10);
		for (i = 0; i < n; i++)
			on_event(&evs[i]);
	}
}

static void run_hold(void)
{
	struct pollfd p = { .fd = 0, .events = POLLIN };
	char buf[64];
	long i, left;

	raise_nofile();
	setup(opt.max);
	res.t0 = now_ns();
	res.t_end = res.t0 + (uint64_t)opt.ms * 1000000u;
	hold_open();
	printf("held=%ld failed=%ld\n", count_state(opt.max, S_HELD),
	       opt.max - count_state(opt.max, S_HELD));
	fflush(stdout);
	for (;;) {
		left = (long)((res.t_end - now_ns()) / 1000000u);
		if (now_ns() >= res.t_end || poll(&p, 1, (int)left) != 1 ||
		    read(0, buf, sizeof buf) <= 0)
			break;
	}
	for (i = 0; i < opt.max; i++)
		if (slots[i].state != S_IDLE)
			slot_close(&slots[i]);
}

int main(int argc, char **argv)
{
	parse_opts(argc, argv);
	if (opt.mode == HOLD)
		run_hold();
	else
		run_traffic();
	return 0;
}
