/*
 * say.h - the two output helpers of the forking test servers (tcloser,
 * tforker, tprefork).  Included, not linked: each helper stays one
 * program built from one .c file.  Define SAY_PROG before including.
 */
#ifndef SAY_H
#define SAY_H

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

#endif
