/*
 * log.c - one greppable line per event on stderr.
 *
 * Lines read "connlimit[PID]: EVENT key=value ...".  They are built in a
 * stack buffer without stdio or malloc, so logging is async-signal-safe
 * like the accept it reports on.  Descriptor 2 belongs to the program: it
 * is written only while it is still the stderr seen at start-up, or is
 * not a socket (an inetd-style server may have put a client there).
 */
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cl.h"

static int log_level = CL_LOG_WARN;
static dev_t err_dev;
static ino_t err_ino;

void cl_log_init(int level)
{
	struct stat st;

	log_level = level;
	if (fstat(2, &st) == 0) {
		err_dev = st.st_dev;
		err_ino = st.st_ino;
	}
}

int cl_log_enabled(int level)
{
	return level <= log_level;
}

uint32_t cl_now_ms(void)
{
	struct timespec ts;

	/* The coarse clock is read from the vDSO: no system call. */
	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	return (uint32_t)((uint64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000);
}

void cl_line_str(struct cl_line *l, const char *s)
{
	size_t n = strlen(s), room = sizeof l->buf - 1 - l->len;

	if (n > room)
		n = room;
	memcpy(l->buf + l->len, s, n);
	l->len += n;
}

static void line_u64(struct cl_line *l, uint64_t v)
{
	char t[24];
	int n = 0;

	do {
		t[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	while (n && l->len < sizeof l->buf - 1)
		l->buf[l->len++] = t[--n];
}

void cl_line_start(struct cl_line *l, const char *event)
{
	l->len = 0;
	cl_line_str(l, "connlimit[");
	line_u64(l, (uint64_t)cl.pid);
	cl_line_str(l, "]: ");
	cl_line_str(l, event);
}

void cl_line_kv(struct cl_line *l, const char *k, const char *v)
{
	cl_line_str(l, " ");
	cl_line_str(l, k);
	cl_line_str(l, "=");
	cl_line_str(l, v);
}

/* A quoted value; quotes and control bytes are escaped. */
void cl_line_kq(struct cl_line *l, const char *k, const char *v)
{
	static const char hex[] = "0123456789abcdef";

	cl_line_kv(l, k, "\"");
	for (; *v && l->len < sizeof l->buf - 6; v++) {
		unsigned char ch = (unsigned char)*v;

		if (ch == '"' || ch == '\\') {
			l->buf[l->len++] = '\\';
			l->buf[l->len++] = (char)ch;
		} else if (ch < 0x20 || ch == 0x7f) {
			cl_line_str(l, "\\x");
			l->buf[l->len++] = hex[ch >> 4];
			l->buf[l->len++] = hex[ch & 15];
		} else {
			l->buf[l->len++] = (char)ch;
		}
	}
	cl_line_str(l, "\"");
}

void cl_line_ku(struct cl_line *l, const char *k, uint64_t v)
{
	cl_line_kv(l, k, "");
	line_u64(l, v);
}

void cl_line_key(struct cl_line *l, const char *k, const struct cl_key *key)
{
	char buf[48];

	cl_key_format(key, buf, sizeof buf);
	cl_line_kv(l, k, buf);
}

static int stderr_is_ours(void)
{
	struct stat st;

	if (fstat(2, &st) < 0)
		return 0;
	if (st.st_dev == err_dev && st.st_ino == err_ino)
		return 1;
	return !S_ISSOCK(st.st_mode);
}

void cl_line_emit(struct cl_line *l, int level)
{
	size_t off = 0;
	ssize_t r;

	if (!cl_log_enabled(level) || !stderr_is_ours())
		return;
	l->buf[l->len++] = '\n';
	while (off < l->len) {
		r = write(2, l->buf + off, l->len - off);
		if (r <= 0)
			break;
		off += (size_t)r;
	}
}
