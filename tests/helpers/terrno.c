/*
 * terrno: checks that the interposed calls leave errno as libc would.
 *
 * Usage: terrno
 *
 * Runs a fixed list of checks in one process (meant to run under the
 * library with CONNLIMIT_MAX_PER_IP=1) and prints "ok NAME" or
 * "FAIL NAME: detail" for each; exits 1 if any failed.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int failed;

static void check(const char *name, int cond, const char *detail, int err)
{
	if (cond) {
		printf("ok %s\n", name);
		return;
	}
	printf("FAIL %s: %s (errno=%d %s)\n", name, detail, err,
	       strerror(err));
	failed = 1;
}

static int listener(struct sockaddr_in *sa)
{
	socklen_t len = sizeof *sa;
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	memset(sa, 0, sizeof *sa);
	sa->sin_family = AF_INET;
	sa->sin_addr.s_addr = htonl(0x7f000001);
	if (fd < 0 || bind(fd, (struct sockaddr *)sa, sizeof *sa) < 0 ||
	    listen(fd, 8) < 0 ||
	    getsockname(fd, (struct sockaddr *)sa, &len) < 0) {
		perror("terrno: listener");
		return -1;
	}
	return fd;
}

static int client(const struct sockaddr_in *to)
{
	struct sockaddr_in src = { .sin_family = AF_INET };
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	src.sin_addr.s_addr = htonl(0x7f000002);
	if (fd < 0 || bind(fd, (struct sockaddr *)&src, sizeof src) < 0 ||
	    connect(fd, (const struct sockaddr *)to, sizeof *to) < 0) {
		perror("terrno: client");
		return -1;
	}
	return fd;
}

static void accept_checks(int lfd, const struct sockaddr_in *sa)
{
	int c1, c2, c, e;

	c1 = client(sa);
	errno = 4242;
	c = accept(lfd, NULL, NULL);
	e = errno;
	check("accept-success-keeps-errno", c >= 0 && e == 4242,
	      "errno changed by a successful accept", e);
	c2 = client(sa);
	usleep(100000);
	errno = 0;
	e = accept(lfd, NULL, NULL) < 0 ? errno : 0;
	check("refusal-on-blocking-listener-is-econnaborted",
	      e == ECONNABORTED, "expected ECONNABORTED", e);
	errno = 4242;
	e = close(c);
	check("close-tracked-keeps-errno", e == 0 && errno == 4242,
	      "errno changed by a successful close", errno);
	errno = 0;
	e = close(c) < 0 ? errno : 0;
	check("close-twice-is-ebadf", e == EBADF, "expected EBADF", e);
	close(c1);
	close(c2);
}

static void error_checks(void)
{
	int e, fd = open("/dev/null", O_RDONLY);

	errno = 0;
	e = close(-1) < 0 ? errno : 0;
	check("close-bad-fd-is-ebadf", e == EBADF, "expected EBADF", e);
	errno = 0;
	e = accept(fd, NULL, NULL) < 0 ? errno : 0;
	check("accept-on-file-is-enotsock", e == ENOTSOCK,
	      "expected ENOTSOCK", e);
	errno = 0;
	e = accept4(12345, NULL, NULL, 0) < 0 ? errno : 0;
	check("accept4-bad-fd-is-ebadf", e == EBADF, "expected EBADF", e);
	errno = 0;
	e = dup2(12345, 5) < 0 ? errno : 0;
	check("dup2-bad-fd-is-ebadf", e == EBADF, "expected EBADF", e);
	errno = 0;
	e = fcntl(12345, F_DUPFD, 0) < 0 ? errno : 0;
	check("fcntl-dupfd-bad-fd-is-ebadf", e == EBADF, "expected EBADF", e);
	errno = 4242;
	e = close(fd);
	check("close-file-keeps-errno", e == 0 && errno == 4242,
	      "errno changed by closing a file", errno);
}

int main(void)
{
	struct sockaddr_in sa;
	int lfd = listener(&sa);

	if (lfd < 0)
		return 2;
	setvbuf(stdout, NULL, _IOLBF, 0);
	accept_checks(lfd, &sa);
	error_checks();
	return failed;
}
