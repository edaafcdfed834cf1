/*
 * tcloser: a test server that keeps each connection under one or more
 * descriptors and ends them, one copy at a time, in a chosen way.
 *
 * Usage: tcloser [-p PORT] [-k KEEP] [-w WAY] [-L FD] [-s HOW]
 *
 * Listens on 127.0.0.1 (PORT, default any) and prints "port=N". Each
 * accepted connection C is kept as (-k):
 *   plain  C;
 *   dup    D = dup(C), then close(C): D only;
 *   inetd  dup2(C, 0), dup2(C, 1), close(C): descriptors 0 and 1;
 *   dupfd  C and fcntl(C, F_DUPFD_CLOEXEC, 100);
 *   dup3   C and dup3(C, 50 + I, O_CLOEXEC), I the connection's slot.
 * and gets "hello\n" on its last copy; printed "accept fd=C
 * peer=ADDR:PORT copies=A[,B]". Nothing is read from the connections.
 * With -s, a child process is started right after each new connection
 * is kept, printed "started how=HOW":
 *   vfork   vfork, close() every copy in the child, execute /bin/true,
 *           wait for it: the connection is hidden from a helper program
 *           the old-fashioned way;
 *   popen   popen("sleep 2", "r"), never closed: the shell and sleep
 *           inherit the connection and hold it for two seconds;
 *   system  system("sleep 2 &"): likewise, through system().
 *
 * SIGUSR1 drops the first remaining copy of every connection, printed
 * "dropped fd=N left=K", in one way (-w):
 *   close        close(N);
 *   fclose       fclose(fdopen(N, "r+"));
 *   close_range  close_range(N, N, 0);
 *   closefrom    closefrom(N) (closes everything above N too);
 *   dup2null     dup2(/dev/null, N): N stays open on /dev/null;
 *   dup3null     dup3(/dev/null, N, O_CLOEXEC), likewise;
 *   syscall      syscall(SYS_close, N), behind libc's back;
 *   rawsys       the close system call made by an instruction of this
 *                program's own (x86-64 and arm64): no library sees it,
 *                as with io_uring; then /dev/null is opened, which takes
 *                the freed number, so no accept reuses it;
 *   pass         sendmsg N to a helper process (printed "helper pid=P"
 *                at start, "helper got fd=M" per descriptor), then
 *                close(N); SIGUSR1 to the helper makes it close all it
 *                got ("helper closed n=K");
 *   exec         close_range(N, N, CLOSE_RANGE_CLOEXEC), then execute
 *                this program again with -L and the listener; the new
 *                image prints "resumed pid=P" instead of "port=N".
 * SIGUSR2 closes, with close(), the descriptors that dup2null/dup3null
 * left on /dev/null: "closed leftover fd=N". SIGTERM ends the server.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define SAY_PROG "tcloser"
#include "say.h"

#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

#define MAXCONN 16

struct conn {
	int copy[2];
	int n;
};

static struct {
	int port;
	const char *keep;
	const char *way;
	int lfd;
	const char *share;
} opt = { .keep = "plain", .way = "close", .lfd = -1 };

static struct conn conns[MAXCONN];
static int leftover[MAXCONN * 2], nleftover;
static int devnull = -1, wake[2] = { -1, -1 }, passfd = -1;
static char **args;

static _Noreturn void usage(void)
{
	fprintf(stderr, "usage: tcloser [-p PORT] "
		"[-k plain|dup|inetd|dupfd|dup3] "
		"[-w close|fclose|close_range|closefrom|dup2null|dup3null|"
		"syscall|rawsys|pass|exec] [-L FD] [-s vfork|popen|system]\n");
	exit(2);
}

static int one_of(const char *s, const char *const *list)
{
	for (; *list; list++)
		if (!strcmp(s, *list))
			return 1;
	return 0;
}

static void parse_opts(int argc, char **argv)
{
	static const char *const keeps[] = { "plain", "dup", "inetd",
		"dupfd", "dup3", NULL };
	static const char *const ways[] = { "close", "fclose",
		"close_range", "closefrom", "dup2null", "dup3null", "syscall",
		"rawsys", "pass", "exec", NULL };
	static const char *const shares[] = { "vfork", "popen", "system",
		NULL };
	int c;

	while ((c = getopt(argc, argv, "p:k:w:L:s:")) != -1) {
		switch (c) {
		case 'p': opt.port = atoi(optarg); break;
		case 'k': opt.keep = optarg; break;
		case 'w': opt.way = optarg; break;
		case 'L': opt.lfd = atoi(optarg); break;
		case 's': opt.share = optarg; break;
		default: usage();
		}
	}
	if (optind != argc || !one_of(opt.keep, keeps) ||
	    !one_of(opt.way, ways) || (opt.share && !one_of(opt.share, shares)))
		usage();
}

static void on_signal(int sig)
{
	char c = sig == SIGUSR1 ? '1' : '2';
	int saved = errno;

	if (write(wake[1], &c, 1) < 0)
		errno = saved;
	errno = saved;
}

static void catch_signals(void)
{
	struct sigaction sa = { .sa_handler = on_signal };

	if (pipe2(wake, O_CLOEXEC | O_NONBLOCK) < 0)
		die("pipe2");
	sigaction(SIGUSR1, &sa, NULL);
	sigaction(SIGUSR2, &sa, NULL);
}

static int listen_on(void)
{
	/* Kept across exec: the -w exec image resumes on it. */
	return say_listen(htonl(INADDR_LOOPBACK), opt.port, 0, 0);
}

/* ---- the helper that receives passed descriptors ---- */

static int recv_fd(int sock)
{
	char data, ctl[CMSG_SPACE(sizeof(int))];
	struct iovec iov = { &data, 1 };
	struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1,
			    .msg_control = ctl, .msg_controllen = sizeof(ctl) };
	struct cmsghdr *c;
	int fd;

	if (recvmsg(sock, &m, MSG_CMSG_CLOEXEC) <= 0)
		return -1;
	c = CMSG_FIRSTHDR(&m);
	if (!c || c->cmsg_type != SCM_RIGHTS)
		return -1;
	memcpy(&fd, CMSG_DATA(c), sizeof(fd));
	return fd;
}

static _Noreturn void helper(int sock)
{
	struct pollfd p[2] = { { .fd = sock, .events = POLLIN },
			       { .events = POLLIN } };
	int got[MAXCONN * 4], n = 0;
	char c;

	prctl(PR_SET_PDEATHSIG, SIGKILL);
	close(wake[0]);
	close(wake[1]);
	catch_signals();
	p[1].fd = wake[0];
	say("helper pid=%d", (int)getpid());
	for (;;) {
		if (poll(p, 2, -1) < 0 && errno != EINTR)
			die("poll");
		if ((p[0].revents & POLLIN) && n < MAXCONN * 4) {
			got[n] = recv_fd(sock);
			if (got[n] < 0)
				_exit(0);
			say("helper got fd=%d", got[n++]);
		} else if (p[0].revents & (POLLHUP | POLLERR)) {
			_exit(0);
		}
		if ((p[1].revents & POLLIN) && read(wake[0], &c, 1) == 1) {
			for (int i = 0; i < n; i++)
				close(got[i]);
			say("helper closed n=%d", n);
			n = 0;
		}
	}
}

static void start_helper(void)
{
	int sv[2];
	pid_t pid;

	if (socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, sv) < 0)
		die("socketpair");
	pid = fork();
	if (pid < 0)
		die("fork");
	if (pid == 0) {
		close(sv[0]);
		helper(sv[1]);
	}
	close(sv[1]);
	passfd = sv[0];
}

static void send_fd(int fd)
{
	char data = 'f', ctl[CMSG_SPACE(sizeof(int))];
	struct iovec iov = { &data, 1 };
	struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1,
			    .msg_control = ctl, .msg_controllen = sizeof(ctl) };
	struct cmsghdr *c = CMSG_FIRSTHDR(&m);

	memset(ctl, 0, sizeof(ctl));
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(c), &fd, sizeof(fd));
	if (sendmsg(passfd, &m, 0) < 0)
		die("sendmsg");
}

/* ---- keeping and ending connections ---- */

static void keep(int slot, int c)
{
	struct conn *k = &conns[slot];

	k->n = 0;
	if (!strcmp(opt.keep, "dup")) {
		k->copy[k->n++] = dup(c);
		close(c);
	} else if (!strcmp(opt.keep, "inetd")) {
		if (dup2(c, 0) < 0 || dup2(c, 1) < 0)
			die("dup2");
		close(c);
		k->copy[k->n++] = 0;
		k->copy[k->n++] = 1;
	} else {
		k->copy[k->n++] = c;
		if (!strcmp(opt.keep, "dupfd"))
			k->copy[k->n++] = fcntl(c, F_DUPFD_CLOEXEC, 100);
		else if (!strcmp(opt.keep, "dup3"))
			k->copy[k->n++] = dup3(c, 50 + slot, O_CLOEXEC);
	}
	for (int i = 0; i < k->n; i++)
		if (k->copy[i] < 0)
			die("keep");
	if (write(k->copy[k->n - 1], "hello\n", 6) < 0)
		die("greeting");
}

/* A child that shares our memory closes the connection, then execs. */
static void vfork_closer(const struct conn *k)
{
	int status = -1;
	pid_t pid = vfork();

	if (pid == 0) {
		for (int i = 0; i < k->n; i++)
			close(k->copy[i]);
		execl("/bin/true", "true", (char *)NULL);
		_exit(127);
	}
	if (pid < 0)
		die("vfork");
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	if (status != 0)
		die("vfork child");
}

static void start_child(const struct conn *k)
{
	if (!strcmp(opt.share, "vfork"))
		vfork_closer(k);
	else if (!strcmp(opt.share, "popen") && !popen("sleep 2", "r"))
		die("popen");
	else if (!strcmp(opt.share, "system") && system("sleep 2 &") != 0)
		die("system");
	say("started how=%s", opt.share);
}

static void on_accept(int lfd)
{
	struct sockaddr_in peer;
	socklen_t len = sizeof(peer);
	char a[INET_ADDRSTRLEN];
	int c = accept(lfd, (struct sockaddr *)&peer, &len), slot;

	if (c < 0) {
		if (errno != EINTR && errno != ECONNABORTED &&
		    errno != EAGAIN)
			die("accept");
		return;
	}
	for (slot = 0; slot < MAXCONN && conns[slot].n; slot++)
		;
	if (slot == MAXCONN) {
		close(c);
		return;
	}
	keep(slot, c);
	inet_ntop(AF_INET, &peer.sin_addr, a, sizeof(a));
	if (conns[slot].n == 2)
		say("accept fd=%d peer=%s:%d copies=%d,%d", c, a,
		    ntohs(peer.sin_port), conns[slot].copy[0],
		    conns[slot].copy[1]);
	else
		say("accept fd=%d peer=%s:%d copies=%d", c, a,
		    ntohs(peer.sin_port), conns[slot].copy[0]);
	if (opt.share)
		start_child(&conns[slot]);
}

static _Noreturn void reexec(void)
{
	char lbuf[16], *argv[64];
	int n = 0;

	snprintf(lbuf, sizeof(lbuf), "%d", opt.lfd);
	for (char **a = args; *a && n < 60; a++) {
		if (!strcmp(*a, "-L")) {
			if (a[1])
				a++;
			continue;
		}
		argv[n++] = *a;
	}
	argv[n++] = "-L";
	argv[n++] = lbuf;
	argv[n] = NULL;
	execv("/proc/self/exe", argv);
	die("execv");
}

/* close(2) without libc: no interposed symbol is on this path. */
static long raw_close(int fd)
{
	long r = (long)fd;

#if defined(__x86_64__)
	long nr = SYS_close;

	__asm__ volatile("syscall" : "=a"(r) : "a"(nr), "D"(r)
			 : "rcx", "r11", "memory");
#elif defined(__aarch64__)
	register long x0 __asm__("x0") = r;
	register long x8 __asm__("x8") = SYS_close;

	__asm__ volatile("svc 0" : "+r"(x0) : "r"(x8) : "memory");
	r = x0;
#else
	errno = ENOSYS;
	die("rawsys: no raw system call on this architecture");
#endif
	return r;
}

static void end_one(int fd)
{
	const char *w = opt.way;
	FILE *f;

	if (!strcmp(w, "close")) {
		close(fd);
	} else if (!strcmp(w, "fclose")) {
		f = fdopen(fd, "r+");
		if (!f)
			die("fdopen");
		fclose(f);
	} else if (!strcmp(w, "close_range")) {
		if (close_range((unsigned)fd, (unsigned)fd, 0) < 0)
			die("close_range");
	} else if (!strcmp(w, "closefrom")) {
		closefrom(fd);
	} else if (!strcmp(w, "dup2null") || !strcmp(w, "dup3null")) {
		if ((w[3] == '2' ? dup2(devnull, fd)
				 : dup3(devnull, fd, O_CLOEXEC)) < 0)
			die("dup onto");
		leftover[nleftover++] = fd;
	} else if (!strcmp(w, "syscall")) {
		syscall(SYS_close, fd);
	} else if (!strcmp(w, "rawsys")) {
		if (raw_close(fd) != 0)
			die("raw close");
		leftover[nleftover++] = open("/dev/null", O_RDONLY);
	} else if (!strcmp(w, "pass")) {
		send_fd(fd);
		close(fd);
	} else if (close_range((unsigned)fd, (unsigned)fd,
			       CLOSE_RANGE_CLOEXEC) < 0) {
		die("close_range cloexec");
	}
}

/* inetd mode: keep 0 and 1 open on /dev/null once the socket is gone. */
static void refill(int fd)
{
	if (fd <= 1 && fcntl(fd, F_GETFD) < 0 && dup2(devnull, fd) < 0)
		die("dup2 devnull");
}

static void drop_copies(void)
{
	int fd, exec_after = 0;

	for (int i = 0; i < MAXCONN; i++) {
		struct conn *k = &conns[i];

		if (!k->n)
			continue;
		fd = k->copy[0];
		k->copy[0] = k->copy[1];
		k->n--;
		end_one(fd);
		refill(fd);
		say("dropped fd=%d left=%d", fd, k->n);
		exec_after = 1;
	}
	if (exec_after && !strcmp(opt.way, "exec"))
		reexec();
}

static void close_leftovers(void)
{
	for (int i = 0; i < nleftover; i++) {
		close(leftover[i]);
		say("closed leftover fd=%d", leftover[i]);
	}
	nleftover = 0;
}

int main(int argc, char **argv)
{
	struct pollfd p[2];
	char c;

	args = argv;
	parse_opts(argc, argv);
	signal(SIGPIPE, SIG_IGN);
	say_fd = fcntl(1, F_DUPFD_CLOEXEC, 3);
	devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
	if (say_fd < 0 || devnull < 0)
		die("setup");
	catch_signals();
	if (!strcmp(opt.way, "pass"))
		start_helper();
	if (opt.lfd >= 0)
		say("resumed pid=%d", (int)getpid());
	else
		opt.lfd = listen_on();
	p[0] = (struct pollfd){ .fd = opt.lfd, .events = POLLIN };
	p[1] = (struct pollfd){ .fd = wake[0], .events = POLLIN };
	for (;;) {
		if (poll(p, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			die("poll");
		}
		if (p[0].revents & POLLIN)
			on_accept(opt.lfd);
		if ((p[1].revents & POLLIN) && read(wake[0], &c, 1) == 1)
			c == '1' ? drop_copies() : close_leftovers();
	}
}
