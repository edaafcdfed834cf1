/*
 * tforker: a fork-per-connection test server, in the classic Unix way:
 * the parent accepts, forks, and closes its copy of the connection at
 * once; the child serves it.
 *
 * Usage: tforker [-p PORT] [-c echo|hold|exit|exec] [-e SCRIPT] [-s MS]
 *                [-d] [-C]
 *
 * Listens on 127.0.0.1 (PORT, default any) and prints "port=N". What the
 * child does with its connection (-c):
 *   echo  sends "hello\n", echoes until the client closes, closes, exits;
 *   hold  sends "hello\n" and waits to be killed;
 *   exit  sends "hello\n", waits MS (-s, default 300) and calls _exit(0)
 *         without closing anything;
 *   exec  makes the connection its stdin and stdout (dup2 to 0 and 1,
 *         then close) and executes /bin/sh -c SCRIPT (-e, default
 *         "echo hello; exec cat"), like inetd or sshd.
 * -d turns the server into a daemon first: it forks, the child calls
 * setsid and forks again and exits, the first process exits 0 once the
 * child has, and the grandchild, which prints "daemon pid=P", serves. -C closes every descriptor from 3
 * up at start, with a close loop up to 1023 and then close_range.
 * Events: "child pid=P fd=N peer=ADDR:PORT" (from the parent),
 * "reaped pid=P". SIGTERM ends the server; children die with it.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
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

#define SAY_PROG "tforker"
#include "say.h"

static struct {
	int port;
	const char *child;
	const char *script;
	long sleep_ms;
	int daemon;
	int close_all;
} opt = { .child = "echo", .script = "echo hello; exec cat",
	  .sleep_ms = 300 };

static _Noreturn void usage(void)
{
	fprintf(stderr, "usage: tforker [-p PORT] [-c echo|hold|exit|exec] "
		"[-e SCRIPT] [-s MS] [-d] [-C]\n");
	exit(2);
}

static void parse_opts(int argc, char **argv)
{
	int c;

	while ((c = getopt(argc, argv, "p:c:e:s:dC")) != -1) {
		switch (c) {
		case 'p': opt.port = atoi(optarg); break;
		case 'c': opt.child = optarg; break;
		case 'e': opt.script = optarg; break;
		case 's': opt.sleep_ms = atol(optarg); break;
		case 'd': opt.daemon = 1; break;
		case 'C': opt.close_all = 1; break;
		default: usage();
		}
	}
	if (optind != argc)
		usage();
	if (strcmp(opt.child, "echo") && strcmp(opt.child, "hold") &&
	    strcmp(opt.child, "exit") && strcmp(opt.child, "exec"))
		usage();
}

static void daemonize(void)
{
	pid_t pid = fork();

	if (pid < 0)
		die("fork");
	if (pid > 0) {
		/* Reap the middle process, so that only the daemon is left
		 * for init. */
		while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
			;
		_exit(0);
	}
	if (setsid() < 0)
		die("setsid");
	pid = fork();
	if (pid < 0)
		die("fork");
	if (pid > 0)
		_exit(0);
	say("daemon pid=%d", (int)getpid());
}

/* What daemons do to shed inherited descriptors, both ways at once. */
static void close_everything(void)
{
	for (int fd = 3; fd < 1024; fd++)
		close(fd);
	if (close_range(3, ~0U, 0) < 0)
		die("close_range");
}

static int listen_on(void)
{
	return say_listen(htonl(INADDR_LOOPBACK), opt.port, SOCK_CLOEXEC, 0);
}

static void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static void greet(int fd)
{
	if (write(fd, "hello\n", 6) < 0)
		_exit(1);
}

static _Noreturn void child(int fd)
{
	char buf[4096];
	ssize_t n;

	if (!strcmp(opt.child, "exec")) {
		if (dup2(fd, 0) < 0 || dup2(fd, 1) < 0)
			_exit(1);
		close(fd);
		execl("/bin/sh", "sh", "-c", opt.script, (char *)NULL);
		_exit(127);
	}
	greet(fd);
	if (!strcmp(opt.child, "hold")) {
		for (;;)
			pause();
	}
	if (!strcmp(opt.child, "exit")) {
		sleep_ms(opt.sleep_ms);
		_exit(0);
	}
	while ((n = read(fd, buf, sizeof(buf))) > 0 || (n < 0 && errno == EINTR))
		if (n > 0 && write(fd, buf, (size_t)n) < 0)
			break;
	close(fd);
	exit(0);
}

static void reap(void)
{
	pid_t pid;

	while ((pid = waitpid(-1, NULL, WNOHANG)) > 0)
		say("reaped pid=%d", (int)pid);
}

static void on_chld(int sig)
{
	(void)sig;	/* only to interrupt accept */
}

static void serve(int lfd)
{
	struct sockaddr_in peer;
	char a[INET_ADDRSTRLEN];
	socklen_t len;
	pid_t parent = getpid(), pid;
	int fd;

	for (;;) {
		reap();
		len = sizeof(peer);
		fd = accept(lfd, (struct sockaddr *)&peer, &len);
		if (fd < 0) {
			if (errno != EINTR && errno != ECONNABORTED)
				die("accept");
			continue;
		}
		pid = fork();
		if (pid < 0)
			die("fork");
		if (pid == 0) {
			prctl(PR_SET_PDEATHSIG, SIGKILL);
			if (getppid() != parent)
				_exit(1);
			signal(SIGCHLD, SIG_DFL);
			close(lfd);
			child(fd);
		}
		inet_ntop(AF_INET, &peer.sin_addr, a, sizeof(a));
		say("child pid=%d fd=%d peer=%s:%d", (int)pid, fd, a,
		    ntohs(peer.sin_port));
		close(fd);
	}
}

int main(int argc, char **argv)
{
	struct sigaction sa = { .sa_handler = on_chld };

	parse_opts(argc, argv);
	signal(SIGPIPE, SIG_IGN);
	if (opt.daemon)
		daemonize();
	if (opt.close_all)
		close_everything();
	sigaction(SIGCHLD, &sa, NULL);
	serve(listen_on());
}
