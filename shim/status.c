/*
 * status.c - connlimit-status: print a zone's counts, for people and
 * for scripts.
 *
 * Usage: connlimit-status [--json | --prometheus] [--top N] [--no-verify]
 *                         PID|ZONE
 *
 * A PID names the default zone of a running protected process: its
 * memfd mapping is found in /proc/PID/maps and read through
 * /proc/PID/mem (root, or the same user where ptrace is allowed).  Any
 * other word names a zone in /dev/shm (CONNLIMIT_ZONE).  The snapshot is
 * read without locks: every field is a fixed-width integer, so the worst
 * a reader sees is a count that changed while it read.  Each client's
 * counted connections are checked against the kernel's socket table
 * (sock_diag, as the library does), so "open" is what the kernel still
 * has open even where the library has not yet noticed a holder die;
 * "counted" is the table's own number.  --no-verify skips the check.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cl.h"
#include "diag.h"

enum { FMT_TEXT, FMT_JSON, FMT_PROM };

struct row {
	struct cl_key key;
	uint32_t open;		/* held, as far as the kernel check knows */
	uint32_t counted;	/* what the table counts */
	uint32_t refused;
	uint32_t client;	/* slot index in the zone */
};

/* One client's records, matched against a sock_diag dump. */
struct probe {
	const struct cl_zone_hdr *h;
	const struct cl_conn *conns;
	uint32_t client;
	uint32_t held;
	int family;
};

static const char *counter_names[] = {
	"admitted", "refused", "monitor_would_refuse", "released_close",
	"released_kernel", "table_full", "kernel_checks"
};

static void die(int code, const char *what, const char *arg)
{
	fprintf(stderr, "connlimit-status: %s: %s\n", what, arg);
	exit(code);
}

static void *read_all(int fd, off_t off, size_t size)
{
	char *buf = malloc(size);
	size_t got = 0;
	ssize_t r;

	if (!buf)
		die(1, "out of memory", "zone");
	while (got < size) {
		r = pread(fd, buf + got, size - got, off + (off_t)got);
		if (r <= 0) {
			free(buf);
			return NULL;
		}
		got += (size_t)r;
	}
	return buf;
}

/* Find "START-END ... /memfd:connlimit-zone" in /proc/PID/maps. */
static int find_mapping(const char *pid, uint64_t *start, uint64_t *end)
{
	char path[64], line[512];
	FILE *f;
	int found = 0;

	snprintf(path, sizeof path, "/proc/%s/maps", pid);
	f = fopen(path, "re");
	if (!f)
		die(1, "no such process", pid);
	while (!found && fgets(line, sizeof line, f))
		found = strstr(line, "/memfd:connlimit-zone") &&
			sscanf(line, "%" SCNx64 "-%" SCNx64, start, end) == 2;
	fclose(f);
	return found;
}

static void *load_pid(const char *pid, size_t *size)
{
	char path[64];
	uint64_t start, end;
	void *buf;
	int fd;

	if (!find_mapping(pid, &start, &end))
		die(1, "process has no connlimit zone (not running under "
		       "libconnlimit, or it uses CONNLIMIT_ZONE)", pid);
	snprintf(path, sizeof path, "/proc/%s/mem", pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		die(1, "cannot read process memory (need root or ptrace "
		       "rights)", pid);
	*size = (size_t)(end - start);
	buf = read_all(fd, (off_t)start, *size);
	close(fd);
	if (!buf)
		die(1, "cannot read zone from process", pid);
	return buf;
}

static void *load_named(const char *name, size_t *size)
{
	char path[128];
	struct stat st;
	void *buf;
	int fd;

	snprintf(path, sizeof path, "/dev/shm/connlimit.%s", name);
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0 || fstat(fd, &st) < 0)
		die(1, "no such zone", name);
	*size = (size_t)st.st_size;
	buf = read_all(fd, 0, *size);
	close(fd);
	if (!buf)
		die(1, "cannot read zone", name);
	return buf;
}

static void check_zone(const struct cl_zone_hdr *h, size_t size,
		       const char *what)
{
	uint64_t need;

	if (size < sizeof *h || h->magic != CL_ZONE_MAGIC)
		die(1, "not a connlimit zone", what);
	if (h->version != CL_ZONE_VERSION || h->slots != CL_SLOTS ||
	    h->hdr_size != sizeof *h ||
	    h->bucket_size != sizeof(struct cl_bucket) ||
	    h->conn_size != sizeof(struct cl_conn))
		die(1, "zone has another layout version", what);
	need = sizeof *h + (uint64_t)h->nbuckets * sizeof(struct cl_bucket) +
	       (uint64_t)h->nconns * sizeof(struct cl_conn);
	if (need > size)
		die(1, "zone is truncated", what);
}

static int by_open(const void *a, const void *b)
{
	const struct row *x = a, *y = b;

	if (x->open != y->open)
		return x->open < y->open ? 1 : -1;
	return memcmp(x->key.b, y->key.b, 16);
}

static size_t collect(const struct cl_zone_hdr *h, struct row **out)
{
	const struct cl_bucket *b = (const void *)(h + 1);
	size_t n = 0, i, cap = (size_t)h->nbuckets * CL_SLOTS;
	struct row *rows = calloc(cap ? cap : 1, sizeof *rows);

	if (!rows)
		die(1, "out of memory", "rows");
	for (i = 0; i < cap; i++) {
		const struct cl_client *c = &b[i / CL_SLOTS].slot[i % CL_SLOTS];

		if (CL_CS_KIND(c->state) != CL_CS_LIVE ||
		    CL_CS_COUNT(c->state) == 0)
			continue;
		memcpy(rows[n].key.b, c->key, 16);
		rows[n].open = CL_CS_COUNT(c->state);
		rows[n].counted = rows[n].open;
		rows[n].client = (uint32_t)i;
		rows[n].refused = c->refused;
		n++;
	}
	*out = rows;
	return n;
}

static const struct cl_conn *zone_conns(const struct cl_zone_hdr *h)
{
	const char *p = (const char *)(h + 1);

	return (const void *)(p + (size_t)h->nbuckets *
			      sizeof(struct cl_bucket));
}

static void probe_msg(void *arg, const struct inet_diag_msg *m)
{
	struct probe *pr = arg;
	uint32_t i;

	for (i = 0; i < pr->h->conn_hwm && i < pr->h->nconns; i++) {
		const struct cl_conn *c = &pr->conns[i];

		if (CL_RS_ST(c->state) == CL_RS_LIVE &&
		    c->client == pr->client && c->family == pr->family &&
		    cl_diag_holds(m, c->family, c->peer, c->peer_port,
				  c->local_port))
			pr->held++;
	}
}

/*
 * How many of a client's counted connections still have a holder, by
 * the kernel's socket table.  When sock_diag cannot be asked, the
 * table's count stands.
 */
static void verify_row(const struct cl_zone_hdr *h, struct row *r)
{
	struct probe pr = { .h = h, .conns = zone_conns(h),
			    .client = r->client };
	int ok = 0;

	if (cl_key_is_v4(&r->key)) {
		pr.family = AF_INET;
		ok |= cl_diag_dump(AF_INET, r->key.b, probe_msg, &pr) == 0;
	}
	pr.family = AF_INET6;
	ok |= cl_diag_dump(AF_INET6, r->key.b, probe_msg, &pr) == 0;
	if (ok && pr.held < r->counted)
		r->open = pr.held;
}

static void print_text(const struct cl_zone_hdr *h, const char *zone,
		       const struct row *r, size_t n)
{
	char a[48];
	size_t i;

	printf("zone=%s capacity=%u max_per_ip=%u counted=%u clients=%zu\n",
	       zone, h->nconns, h->max_per_ip, h->open_total, n);
	printf("counters");
	for (i = 0; i < sizeof counter_names / sizeof *counter_names; i++)
		printf(" %s=%" PRIu64, counter_names[i], h->counter[i]);
	printf("\n");
	for (i = 0; i < n; i++) {
		cl_key_format(&r[i].key, a, sizeof a);
		printf("client=%s open=%u counted=%u refused=%u\n", a,
		       r[i].open, r[i].counted, r[i].refused);
	}
}

static void print_json(const struct cl_zone_hdr *h, const char *zone,
		       const struct row *r, size_t n)
{
	char a[48];
	size_t i;

	printf("{\"zone\":\"%s\",\"capacity\":%u,\"max_per_ip\":%u,"
	       "\"open\":%u,\"counters\":{", zone, h->nconns, h->max_per_ip,
	       h->open_total);
	for (i = 0; i < sizeof counter_names / sizeof *counter_names; i++)
		printf("%s\"%s\":%" PRIu64, i ? "," : "", counter_names[i],
		       h->counter[i]);
	printf("},\"clients\":[");
	for (i = 0; i < n; i++) {
		cl_key_format(&r[i].key, a, sizeof a);
		printf("%s{\"client\":\"%s\",\"open\":%u,\"counted\":%u,"
		       "\"refused\":%u}", i ? "," : "", a, r[i].open,
		       r[i].counted, r[i].refused);
	}
	printf("]}\n");
}

static void print_prom(const struct cl_zone_hdr *h, const char *zone,
		       const struct row *r, size_t n)
{
	char a[48];
	size_t i;

	printf("# TYPE connlimit_open gauge\n");
	printf("connlimit_open{zone=\"%s\"} %u\n", zone, h->open_total);
	printf("# TYPE connlimit_events_total counter\n");
	for (i = 0; i < sizeof counter_names / sizeof *counter_names; i++)
		printf("connlimit_events_total{zone=\"%s\",event=\"%s\"} %"
		       PRIu64 "\n", zone, counter_names[i], h->counter[i]);
	printf("# TYPE connlimit_client_open gauge\n");
	for (i = 0; i < n; i++) {
		cl_key_format(&r[i].key, a, sizeof a);
		printf("connlimit_client_open{zone=\"%s\",client=\"%s\"} %u\n",
		       zone, a, r[i].open);
	}
}

static int all_digits(const char *s)
{
	if (!*s)
		return 0;
	for (; *s; s++)
		if (*s < '0' || *s > '9')
			return 0;
	return 1;
}

static void usage(void)
{
	fprintf(stderr, "usage: connlimit-status [--json | --prometheus] "
			"[--top N] [--no-verify] PID|ZONE\n");
	exit(2);
}

int main(int argc, char **argv)
{
	int fmt = FMT_TEXT, i, verify = 1;
	uint32_t top = UINT32_MAX;
	const char *target = NULL;
	char zone[80];
	struct row *rows;
	size_t size, n;
	void *buf;

	for (i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--json"))
			fmt = FMT_JSON;
		else if (!strcmp(argv[i], "--prometheus"))
			fmt = FMT_PROM;
		else if (!strcmp(argv[i], "--no-verify"))
			verify = 0;
		else if (!strcmp(argv[i], "--top") && i + 1 < argc) {
			if (!all_digits(argv[++i]) ||
			    (top = (uint32_t)strtoul(argv[i], NULL, 10)) == 0)
				die(2, "--top expects a positive integer",
				    argv[i]);
		} else if (argv[i][0] == '-' || target)
			usage();
		else
			target = argv[i];
	}
	if (!target)
		usage();
	if (all_digits(target)) {
		buf = load_pid(target, &size);
		snprintf(zone, sizeof zone, "pid:%s", target);
	} else {
		buf = load_named(target, &size);
		snprintf(zone, sizeof zone, "%s", target);
	}
	check_zone(buf, size, target);
	n = collect(buf, &rows);
	for (i = 0; verify && i < (int)n; i++)
		verify_row(buf, &rows[i]);
	qsort(rows, n, sizeof *rows, by_open);
	if (n > top)
		n = top;
	if (fmt == FMT_JSON)
		print_json(buf, zone, rows, n);
	else if (fmt == FMT_PROM)
		print_prom(buf, zone, rows, n);
	else
		print_text(buf, zone, rows, n);
	return 0;
}
