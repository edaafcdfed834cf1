/*
 * log.c - one greppable line per event on stderr.
 *
 * Lines read "connlimit[PID]: EVENT key=value ...".  They are built in a
 * stack buffer without stdio or malloc, so logging is async-signal-safe
 * like the accept it reports on.  Descriptor 2 belongs to the program: it
 * is written only while it is still the stderr seen at start-up, or is
 * not a socket (an inetd-style server may have put a client there).
 */
#include <fcntl.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "cl.h"

static int log_level = CL_LOG_WARN;
static dev_t err_dev;
static ino_t err_ino;

/*
 * Where lines go.  Two slots, switched by an index, so that a reload can
 * change the destination while another thread is writing a line.
 */
static struct {
	int kind;		/* CL_DEST_* */
	char path[1024];	/* CL_LOG_PATH_MAX */
} dests[2];
static int dest_cur;

void cl_log_set_dest(int kind, const char *path)
{
	int next = !LOAD(&dest_cur);

	dests[next].kind = kind;
	dests[next].path[0] = '\0';
	if (path)
		strncat(dests[next].path, path, sizeof dests[next].path - 1);
	STORE(&dest_cur, next);
}

void cl_log_set_level(int level)
{
	STORE(&log_level, level);
}

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
	return level <= LOAD(&log_level);
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

/* client=ADDR, or client=NET/N when clients are counted per subnet. */
void cl_line_client(struct cl_line *l, const struct cl_peer *p)
{
	unsigned n = cl_key_is_v4(&p->key) ? p->plen - 96u : p->plen;

	cl_line_key(l, "client", &p->key);
	if (p->plen && p->plen < 128) {
		cl_line_str(l, "/");
		line_u64(l, n);
	}
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

static void write_all(int fd, const char *p, size_t len)
{
	ssize_t r;

	while (len) {
		r = write(fd, p, len);
		if (r <= 0)
			return;
		p += r;
		len -= (size_t)r;
	}
}

/*
 * A log file is opened for each line, append-only and close-on-exec, and
 * closed again: the library never keeps a descriptor in the program, so
 * it can never write through a number the program closed and reused.
 */
static void emit_file(const char *path, const struct cl_line *l)
{
	/* O_NONBLOCK: a FIFO without a reader must not hang accept. */
	int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC |
			    O_NOCTTY | O_NONBLOCK, 0640);

	if (fd < 0) {
		/* Better a line on stderr than none at all. */
		if (stderr_is_ours())
			write_all(2, l->buf, l->len);
		return;
	}
	write_all(fd, l->buf, l->len);
	CL_SYS(SYS_close, fd);
}

/* One datagram to /dev/log per line, through a socket of our own. */
static void emit_syslog(const struct cl_line *l, int level)
{
	static const char pri[][6] = { "<27>", "<28>", "<30>", "<31>" };
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	char buf[sizeof l->buf + 8];
	size_t n = strlen(pri[level]);
	int fd;

	memcpy(buf, pri[level], n);
	memcpy(buf + n, l->buf, l->len - 1);	/* no trailing newline */
	strcpy(sun.sun_path, "/dev/log");
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return;
	sendto(fd, buf, n + l->len - 1, MSG_DONTWAIT | MSG_NOSIGNAL,
	       (struct sockaddr *)&sun, sizeof sun);
	CL_SYS(SYS_close, fd);
}

void cl_line_emit(struct cl_line *l, int level)
{
	int d = LOAD(&dest_cur);

	if (!cl_log_enabled(level))
		return;
	l->buf[l->len++] = '\n';
	if (dests[d].kind == CL_DEST_FILE)
		emit_file(dests[d].path, l);
	else if (dests[d].kind == CL_DEST_SYSLOG)
		emit_syslog(l, level);
	else if (stderr_is_ours())
		write_all(2, l->buf, l->len);
}
