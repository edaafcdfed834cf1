/*
 * say.h - what the forking test servers (tcloser, tforker, tprefork)
 * share: their two output helpers and their listener.  Included, not
 * linked: each helper stays one program built from one .c file.  Define
 * SAY_PROG before including.
 */
#ifndef SAY_H
#define SAY_H

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int say_fd = 1;	/* where say() writes */

static _Noreturn void die(const char *what)
{
	fprintf(stderr, SAY_PROG ": %s: %s\n", what, strerror(errno));
	exit(1);
}

/* One write per line, so that lines of several processes never mix. */
static void say(const char *fmt, ...)
{
	char buf[256];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof(buf) - 1, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if (n > (int)sizeof(buf) - 2)
		n = (int)sizeof(buf) - 2;
	buf[n++] = '\n';
	if (write(say_fd, buf, (size_t)n) < 0)
		return;
}

/*
 * A TCP listener on @addr (network order) and @port (0: a free one),
 * with SO_REUSEADDR, and SO_REUSEPORT if @reuseport; @type_flags go to
 * socket(2) (0 keeps it across exec).  Prints "port=N".
 */
static int say_listen(uint32_t addr, int port, int type_flags, int reuseport)
{
	struct sockaddr_in sin = { .sin_family = AF_INET };
	socklen_t len = sizeof(sin);
	int one = 1, fd;

	sin.sin_port = htons((uint16_t)port);
	sin.sin_addr.s_addr = addr;
	fd = socket(AF_INET, SOCK_STREAM | type_flags, 0);
	if (fd < 0)
		die("socket");
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (reuseport &&
	    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0)
		die("SO_REUSEPORT");
	if (bind(fd, (struct sockaddr *)&sin, sizeof(sin)) < 0)
		die("bind");
	if (listen(fd, 128) < 0)
		die("listen");
	if (getsockname(fd, (struct sockaddr *)&sin, &len) < 0)
		die("getsockname");
	say("port=%d", ntohs(sin.sin_port));
	return fd;
}

#endif
