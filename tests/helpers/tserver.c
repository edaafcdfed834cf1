/*
 * tserver: a configurable test server for libconnlimit's tests.
 *
 * Usage: tserver [-f 4|6|dual] [-b ADDR] [-p PORT] [-m MODE]
 *                [-a accept|accept4] [-F cloexec,nonblock] [-N]
 *                [-u PATH] [-g TEXT] [-x N] [-l LEN] [-R]
 *
 * MODE is block (main thread blocks in accept, a poll thread serves the
 * connections), select (one thread, select() over a blocking listener),
 * epoll-lt, epoll-et (non-blocking listener; et drains accept until EAGAIN
 * and prints "wakeup accepted=K") or thread (a thread per connection).
 *
 * Prints "port=N" once listening, then one line per event: "accept fd=N
 * peer=ADDR", "addr-mismatch fd=N", "close fd=N", "accept-error
 * errno=NAME". In the epoll modes EAGAIN is how a drain ends, so it is not
 * reported. Each connection gets "TEXT cloexec=0|1 nonblock=0|1\n" and an
 * echo of what it sends. SIGTERM and SIGINT end the server with status 0.
 *
 * -l LEN hands accept an address buffer of only LEN bytes, prints "peer=-"
 * and "addrlen fd=N len=L", and "addr-overrun fd=N" if bytes past LEN
 * changed. -R closes connections with syscall(SYS_close), which no
 * preloaded library sees. -x N exits 0 once N connections were closed.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define MAXCONN 4096

struct opts {
	const char *family;
	const char *bind;
	int port;
	const char *mode;
	int use_accept4;
	int flags;
	int null_addr;
	socklen_t short_len;
	int raw_close;
	const char *unix_path;
	const char *greeting;
	long exit_after;
};

static struct opts opt = {
	.family = "4", .mode = "block", .greeting = "hello",
};
static atomic_long closed_total;

static _Noreturn void usage(void)
{
	fprintf(stderr, "usage: tserver [-f 4|6|dual] [-b ADDR] [-p PORT] "
		"[-m block|select|epoll-lt|epoll-et|thread] "
		"[-a accept|accept4] [-F cloexec,nonblock] [-N] [-u PATH] "
		"[-g TEXT] [-x N] [-l LEN] [-R]\n");
	exit(2);
}

static _Noreturn void die(const char *what)
{
	fprintf(stderr, "tserver: %s: %s\n", what, strerror(errno));
	exit(1);
}

static int parse_flags(char *list)
{
	int flags = 0;
	char *save = NULL;

	for (char *w = strtok_r(list, ",", &save); w;
	     w = strtok_r(NULL, ",", &save)) {
		if (!strcmp(w, "cloexec"))
			flags |= SOCK_CLOEXEC;
		else if (!strcmp(w, "nonblock"))
			flags |= SOCK_NONBLOCK;
		else
			usage();
	}
	return flags;
}

static void parse_opts(int argc, char **argv)
{
	int c;

	while ((c = getopt(argc, argv, "f:b:p:m:a:F:Nu:g:x:l:R")) != -1) {
		switch (c) {
		case 'f': opt.family = optarg; break;
		case 'b': opt.bind = optarg; break;
		case 'p': opt.port = atoi(optarg); break;
		case 'm': opt.mode = optarg; break;
		case 'a': opt.use_accept4 = !strcmp(optarg, "accept4"); break;
		case 'F': opt.flags = parse_flags(optarg); break;
		case 'N': opt.null_addr = 1; break;
		case 'u': opt.unix_path = optarg; break;
		case 'g': opt.greeting = optarg; break;
		case 'x': opt.exit_after = atol(optarg); break;
		case 'l': opt.short_len = atoi(optarg); break;
		case 'R': opt.raw_close = 1; break;
		default: usage();
		}
	}
	if (optind != argc)
		usage();
}

static const char *errno_name(int err)
{
	const char *name = strerrorname_np(err);

	return name ? name : "unknown";
}

static void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
		;
}

/* The wildcard, loopback or -b address for the chosen family. */
static socklen_t listen_addr(struct sockaddr_storage *ss)
{
	struct sockaddr_in *sin = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
	const char *addr = opt.bind;
	int v6 = strcmp(opt.family, "4") != 0;

	if (addr)
		v6 = strchr(addr, ':') != NULL;
	else
		addr = !v6 ? "127.0.0.1" : !strcmp(opt.family, "6") ?
			"::1" : "::";
	memset(ss, 0, sizeof(*ss));
	if (!v6) {
		sin->sin_family = AF_INET;
		sin->sin_port = htons(opt.port);
		if (inet_pton(AF_INET, addr, &sin->sin_addr) != 1)
			usage();
		return sizeof(*sin);
	}
	sin6->sin6_family = AF_INET6;
	sin6->sin6_port = htons(opt.port);
	if (inet_pton(AF_INET6, addr, &sin6->sin6_addr) != 1)
		usage();
	return sizeof(*sin6);
}

static int inet_listener(void)
{
	struct sockaddr_storage ss;
	socklen_t len = listen_addr(&ss);
	int v6only = strcmp(opt.family, "dual") != 0;
	int one = 1;
	int fd = socket(ss.ss_family, SOCK_STREAM, 0);

	if (fd < 0)
		die("socket");
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (ss.ss_family == AF_INET6 &&
	    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only,
		       sizeof(v6only)) == -1)
		die("IPV6_V6ONLY");
	if (bind(fd, (struct sockaddr *)&ss, len) == -1)
		die("bind");
	len = sizeof(ss);
	if (getsockname(fd, (struct sockaddr *)&ss, &len) == -1)
		die("getsockname");
	opt.port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
	return fd;
}

static int unix_listener(void)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);

	if (fd < 0)
		die("socket");
	if (strlen(opt.unix_path) >= sizeof(sun.sun_path))
		usage();
	strcpy(sun.sun_path, opt.unix_path);
	unlink(opt.unix_path);
	if (bind(fd, (struct sockaddr *)&sun, sizeof(sun)) == -1)
		die("bind");
	opt.port = 0;
	return fd;
}

static int make_listener(void)
{
	int fd = opt.unix_path ? unix_listener() : inet_listener();

	if (listen(fd, SOMAXCONN) == -1)
		die("listen");
	printf("port=%d\n", opt.port);
	return fd;
}

static void set_nonblock(int fd)
{
	int fl = fcntl(fd, F_GETFL);

	if (fl == -1 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) == -1)
		die("fcntl");
}

static void fmt_addr(const struct sockaddr *sa, char *buf, size_t n)
{
	const struct sockaddr_in *sin = (const void *)sa;
	const struct sockaddr_in6 *sin6 = (const void *)sa;

	if (sa->sa_family == AF_INET)
		inet_ntop(AF_INET, &sin->sin_addr, buf, n);
	else if (sa->sa_family == AF_INET6)
		inet_ntop(AF_INET6, &sin6->sin6_addr, buf, n);
	else if (sa->sa_family == AF_UNIX)
		snprintf(buf, n, "unix");
	else
		snprintf(buf, n, "family-%d", sa->sa_family);
}

/* Whether two socket addresses name the same endpoint. */
static int same_addr(const struct sockaddr_storage *a, socklen_t alen,
		     const struct sockaddr_storage *b, socklen_t blen)
{
	const struct sockaddr_in *a4 = (const void *)a, *b4 = (const void *)b;
	const struct sockaddr_in6 *a6 = (const void *)a;
	const struct sockaddr_in6 *b6 = (const void *)b;

	if (alen != blen || a->ss_family != b->ss_family)
		return 0;
	if (a->ss_family == AF_INET)
		return a4->sin_port == b4->sin_port &&
		       a4->sin_addr.s_addr == b4->sin_addr.s_addr;
	if (a->ss_family == AF_INET6)
		return a6->sin6_port == b6->sin6_port &&
		       !memcmp(&a6->sin6_addr, &b6->sin6_addr, 16);
	return 1;
}

static void check_peer(int fd, const struct sockaddr_storage *ss,
		       socklen_t len)
{
	struct sockaddr_storage peer;
	socklen_t plen = sizeof(peer);

	if (getpeername(fd, (struct sockaddr *)&peer, &plen) == -1 ||
	    !same_addr(ss, len, &peer, plen))
		printf("addr-mismatch fd=%d\n", fd);
}

#define FILL 0xAA

/* -l: the kernel copies the first short_len bytes and nothing more. */
static void check_short(int fd, const struct sockaddr_storage *ss,
			socklen_t len)
{
	const unsigned char *p = (const unsigned char *)ss;
	struct sockaddr_storage peer;
	socklen_t plen = sizeof(peer), n = opt.short_len;

	printf("addrlen fd=%d len=%u\n", fd, len);
	if (getpeername(fd, (struct sockaddr *)&peer, &plen) == -1 ||
	    len != plen || memcmp(ss, &peer, n < plen ? n : plen) != 0)
		printf("addr-mismatch fd=%d\n", fd);
	for (size_t i = n; i < sizeof(*ss); i++) {
		if (p[i] != FILL) {
			printf("addr-overrun fd=%d\n", fd);
			return;
		}
	}
}

static void greet(int fd)
{
	char buf[512];
	int cloexec = (fcntl(fd, F_GETFD) & FD_CLOEXEC) != 0;
	int nonblock = (fcntl(fd, F_GETFL) & O_NONBLOCK) != 0;
	int n = snprintf(buf, sizeof(buf), "%s cloexec=%d nonblock=%d\n",
			 opt.greeting, cloexec, nonblock);

	if (n > (int)sizeof(buf) - 1)
		n = sizeof(buf) - 1;
	if (send(fd, buf, n, MSG_NOSIGNAL) == -1)
		printf("greet-error fd=%d errno=%s\n", fd, errno_name(errno));
}

static void on_accepted(int fd, const struct sockaddr_storage *ss,
			socklen_t len)
{
	char peer[INET6_ADDRSTRLEN + 16] = "-";

	if (!opt.null_addr && !opt.short_len)
		fmt_addr((const struct sockaddr *)ss, peer, sizeof(peer));
	printf("accept fd=%d peer=%s\n", fd, peer);
	if (opt.short_len)
		check_short(fd, ss, len);
	else if (!opt.null_addr)
		check_peer(fd, ss, len);
	greet(fd);
}

/*
 * One accept call as the options ask. Returns the new fd, or -1 with
 * errno set; errors other than EAGAIN in the epoll modes are reported.
 */
static int try_accept(int lfd, int quiet_eagain)
{
	struct sockaddr_storage ss;
	socklen_t len = opt.short_len ? opt.short_len : sizeof(ss);
	struct sockaddr *sa = opt.null_addr ? NULL : (struct sockaddr *)&ss;
	socklen_t *lp = opt.null_addr ? NULL : &len;
	int fd;

	memset(&ss, opt.short_len ? FILL : 0, sizeof(ss));
	if (opt.use_accept4)
		fd = accept4(lfd, sa, lp, opt.flags);
	else
		fd = accept(lfd, sa, lp);
	if (fd >= 0) {
		on_accepted(fd, &ss, len);
		return fd;
	}
	int err = errno;

	if (!(quiet_eagain && (err == EAGAIN || err == EWOULDBLOCK)))
		printf("accept-error errno=%s\n", errno_name(err));
	if (err == EMFILE || err == ENFILE)
		sleep_ms(50);
	errno = err;
	return -1;
}

static void conn_close(int fd)
{
	if (opt.raw_close)
		syscall(SYS_close, fd);
	else
		close(fd);
	printf("close fd=%d\n", fd);
	if (opt.exit_after > 0 && ++closed_total >= opt.exit_after)
		exit(0);
}

/* Echo what is readable; returns -1 once the connection was closed. */
static int serve(int fd)
{
	char buf[4096];
	ssize_t n = read(fd, buf, sizeof(buf));

	if (n > 0) {
		send(fd, buf, n, MSG_NOSIGNAL);
		return 0;
	}
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return 0;
	conn_close(fd);
	return -1;
}

/* thread mode: one thread per connection. */
static void *conn_thread(void *arg)
{
	struct pollfd p = { .fd = (int)(long)arg, .events = POLLIN };

	for (;;) {
		if (poll(&p, 1, -1) > 0 && serve(p.fd) < 0)
			return NULL;
	}
}

static void spawn_detached(void *(*fn)(void *), void *arg)
{
	pthread_t t;
	pthread_attr_t attr;

	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	pthread_attr_setstacksize(&attr, 64 * 1024);
	errno = pthread_create(&t, &attr, fn, arg);
	if (errno)
		die("pthread_create");
	pthread_attr_destroy(&attr);
}

static void run_thread(int lfd)
{
	for (;;) {
		int fd = try_accept(lfd, 0);

		if (fd >= 0)
			spawn_detached(conn_thread, (void *)(long)fd);
	}
}

/* block mode: the main thread accepts, one poll thread serves. */
static pthread_mutex_t blk_lock = PTHREAD_MUTEX_INITIALIZER;
static int blk_fds[MAXCONN];
static int blk_n;
static int blk_wake[2];

static void blk_add(int fd)
{
	pthread_mutex_lock(&blk_lock);
	if (blk_n < MAXCONN)
		blk_fds[blk_n++] = fd;
	else
		conn_close(fd);
	pthread_mutex_unlock(&blk_lock);
	if (write(blk_wake[1], "x", 1) == -1)
		die("wake");
}

static void blk_remove(int fd)
{
	pthread_mutex_lock(&blk_lock);
	for (int i = 0; i < blk_n; i++) {
		if (blk_fds[i] == fd) {
			blk_fds[i] = blk_fds[--blk_n];
			break;
		}
	}
	pthread_mutex_unlock(&blk_lock);
}

static int blk_snapshot(struct pollfd *p)
{
	int n;

	pthread_mutex_lock(&blk_lock);
	for (n = 0; n < blk_n; n++)
		p[n + 1].fd = blk_fds[n];
	pthread_mutex_unlock(&blk_lock);
	p[0].fd = blk_wake[0];
	for (int i = 0; i <= n; i++)
		p[i].events = POLLIN;
	return n + 1;
}

static void *blk_poller(void *arg)
{
	static struct pollfd p[MAXCONN + 1];
	char drain[64];

	(void)arg;
	for (;;) {
		int n = blk_snapshot(p);

		if (poll(p, n, -1) <= 0)
			continue;
		if (p[0].revents && read(blk_wake[0], drain, sizeof(drain)) < 0)
			die("wake");
		for (int i = 1; i < n; i++) {
			if (p[i].revents && serve(p[i].fd) < 0)
				blk_remove(p[i].fd);
		}
	}
	return NULL;
}

static void run_block(int lfd)
{
	if (pipe(blk_wake) == -1)
		die("pipe");
	set_nonblock(blk_wake[0]);
	spawn_detached(blk_poller, NULL);
	for (;;) {
		int fd = try_accept(lfd, 0);

		if (fd >= 0)
			blk_add(fd);
	}
}

/* select mode: one thread, blocking listener. */
static int sel_fill(fd_set *rd, int lfd, const int *fds, int n)
{
	int max = lfd;

	FD_ZERO(rd);
	FD_SET(lfd, rd);
	for (int i = 0; i < n; i++) {
		FD_SET(fds[i], rd);
		if (fds[i] > max)
			max = fds[i];
	}
	return max;
}

static int sel_accept(int lfd, int *fds, int n)
{
	int fd = try_accept(lfd, 0);

	if (fd < 0)
		return n;
	if (fd >= FD_SETSIZE || n == MAXCONN) {
		printf("too-many fd=%d\n", fd);
		conn_close(fd);
		return n;
	}
	fds[n] = fd;
	return n + 1;
}

static void run_select(int lfd)
{
	static int fds[MAXCONN];
	int n = 0;
	fd_set rd;

	for (;;) {
		int max = sel_fill(&rd, lfd, fds, n);

		if (select(max + 1, &rd, NULL, NULL, NULL) <= 0)
			continue;
		for (int i = n - 1; i >= 0; i--) {
			if (FD_ISSET(fds[i], &rd) && serve(fds[i]) < 0)
				fds[i] = fds[--n];
		}
		if (FD_ISSET(lfd, &rd))
			n = sel_accept(lfd, fds, n);
	}
}

/* epoll modes: the listener is non-blocking, connections level-triggered. */
static void ep_add(int ep, int fd, unsigned events)
{
	struct epoll_event ev = { .events = events, .data.fd = fd };

	if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) == -1)
		die("epoll_ctl");
}

static void ep_listener_ready(int ep, int lfd, int et)
{
	int fd, count = 0;

	for (;;) {
		fd = try_accept(lfd, 1);
		if (fd >= 0) {
			ep_add(ep, fd, EPOLLIN);
			count++;
		}
		if (!et)
			return;
		if (fd < 0 && errno != ECONNABORTED && errno != EINTR)
			break;
	}
	printf("wakeup accepted=%d\n", count);
}

static void run_epoll(int lfd, int et)
{
	struct epoll_event evs[64];
	int ep = epoll_create1(EPOLL_CLOEXEC);

	if (ep == -1)
		die("epoll_create1");
	set_nonblock(lfd);
	ep_add(ep, lfd, EPOLLIN | (et ? EPOLLET : 0));
	for (;;) {
		int n = epoll_wait(ep, evs, 64, -1);

		for (int i = 0; i < n; i++) {
			if (evs[i].data.fd == lfd)
				ep_listener_ready(ep, lfd, et);
			else
				serve(evs[i].data.fd);
		}
	}
}

static void on_term(int sig)
{
	(void)sig;
	_exit(0);
}

static void setup_signals(void)
{
	struct sigaction sa = { .sa_handler = on_term };

	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
}

static void run_epoll_lt(int lfd)
{
	run_epoll(lfd, 0);
}

static void run_epoll_et(int lfd)
{
	run_epoll(lfd, 1);
}

static void (*pick_mode(const char *mode))(int)
{
	static const struct {
		const char *name;
		void (*run)(int);
	} modes[] = {
		{ "block", run_block }, { "select", run_select },
		{ "epoll-lt", run_epoll_lt }, { "epoll-et", run_epoll_et },
		{ "thread", run_thread },
	};

	for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++) {
		if (!strcmp(mode, modes[i].name))
			return modes[i].run;
	}
	usage();
	return NULL;
}

int main(int argc, char **argv)
{
	void (*run)(int);

	setvbuf(stdout, NULL, _IOLBF, 0);
	parse_opts(argc, argv);
	run = pick_mode(opt.mode);
	setup_signals();
	run(make_listener());
	return 0;
}
