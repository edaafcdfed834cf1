/*
 * status.c - connlimit-status: print a zone's counts, for people and
 * for scripts.
 *
 * Usage: connlimit-status [--json | --prometheus] [--top N] [--no-verify]
 *                         PID|ZONE
 *
 * A PID names the zone a running protected process uses: its mapping
 * (the default zone's memfd, or a named zone's file) is found in
 * /proc/PID/maps and read through /proc/PID/mem (root, or the same user
 * where ptrace is allowed).  Any other word names a zone in /dev/shm
 * (CONNLIMIT_ZONE).  The snapshot is read without locks: every field is
 * a fixed-width integer, so the worst a reader sees is a count that
 * changed while it read.  Each client's counted connections are checked
 * against the kernel's socket table (sock_diag, as the library does), so
 * "open" is what the kernel still has open even where the library has
 * not yet noticed a holder die; "counted" is the table's own number.
 * --no-verify skips the check.
 */
#include <errno.h>
#include <sched.h>
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
	uint32_t plen;		/* the key is a network of this prefix */
};

/* One client's records, matched against a sock_diag dump. */
struct probe {
	struct cl_diag_conn *c;
	int n;
};
#define MEMFD_PATH "/memfd:connlimit-zone"
#define ZONE_PATH "/dev/shm/connlimit."

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

/*
 * The zone named by one line of /proc/PID/maps: 1 and @name "" for the
 * default zone's memfd, 1 and the name for a named zone's file, else 0.
 */
static int zone_of_line(const char *path, char *name, size_t len)
{
	size_t n;

	if (!strncmp(path, MEMFD_PATH, strlen(MEMFD_PATH))) {
		name[0] = 0;
		return 1;
	}
	if (strncmp(path, ZONE_PATH, strlen(ZONE_PATH)) ||
	    strstr(path, ".tmp."))
		return 0;
	path += strlen(ZONE_PATH);
	n = strcspn(path, " \n");
	snprintf(name, len, "%.*s", (int)n, path);
	return 1;
}

/*
 * Find the zone process @pid maps.  1: found; 0: the library is not
 * loaded; -1: it is loaded but made no zone (its settings were refused).
 */
static int find_mapping(const char *pid, uint64_t *start, uint64_t *end,
			char *name, size_t len)
{
	char path[64], line[512];
	const char *file;
	FILE *f;
	int found = 0, lib = 0;

	snprintf(path, sizeof path, "/proc/%s/maps", pid);
	f = fopen(path, "re");
	if (!f)
		die(1, errno == ENOENT ? "no such process" :
		    "cannot read its memory map (need root or its user)", pid);
	while (!found && fgets(line, sizeof line, f)) {
		file = strchr(line, '/');
		if (!file)
			continue;
		lib |= strstr(file, "/libconnlimit") != NULL;
		found = zone_of_line(file, name, len) &&
			sscanf(line, "%" SCNx64 "-%" SCNx64, start, end) == 2;
	}
	fclose(f);
	return found ? 1 : -lib;
}

static void *load_pid(const char *pid, size_t *size, char *name,
		      size_t len)
{
	char path[64];
	uint64_t start, end;
	void *buf;
	int fd, r = find_mapping(pid, &start, &end, name, len);

	if (r == 0)
		die(1, "process is not running under libconnlimit", pid);
	if (r < 0)
		die(1, "libconnlimit is loaded but has no zone (its settings "
		       "were refused: see the process's log)", pid);
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

	if (!*name || *name == '.' || strchr(name, '/') || strlen(name) > 64)
		die(2, "not a zone name", name);
	snprintf(path, sizeof path, "%s%s", ZONE_PATH, name);
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0 || fstat(fd, &st) < 0)
		die(1, errno == ENOENT ? "no such zone" : strerror(errno), name);
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

/* The client's address, with /N when clients are counted per subnet. */
static void client_name(const struct row *r, char *buf, size_t n)
{
	size_t len = cl_key_format(&r->key, buf, n);
	unsigned bits = cl_key_is_v4(&r->key) ? r->plen - 96 : r->plen;

	if (r->plen < 128)
		snprintf(buf + len, n - len, "/%u", bits);
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
		rows[n].plen = c->plen ? c->plen : 128;
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

	cl_diag_count(m, pr->c, pr->n);
}

/* The client's live records, for matching. */
static int probe_fill(const struct cl_zone_hdr *h, uint32_t client,
		      struct probe *pr)
{
	const struct cl_conn *conns = zone_conns(h);
	uint32_t i, end = h->conn_hwm < h->nconns ? h->conn_hwm : h->nconns;

	pr->n = 0;
	pr->c = calloc(end ? end : 1, sizeof *pr->c);
	if (!pr->c)
		return -1;
	for (i = 0; i < end; i++) {
		const struct cl_conn *c = &conns[i];
		struct cl_diag_conn *d = &pr->c[pr->n];

		if (CL_RS_ST(c->state) != CL_RS_LIVE || c->client != client)
			continue;
		d->born = c->born_ms;
		d->pport = c->peer_port;
		d->lport = c->local_port;
		d->family = c->family;
		memcpy(d->peer, c->peer, 16);
		pr->n++;
	}
	return 0;
}

/*
 * How many of a client's counted connections still have a holder, by
 * the kernel's socket table.  When sock_diag cannot be asked, the
 * table's count stands.
 */
static void verify_row(const struct cl_zone_hdr *h, struct row *r)
{
	struct probe pr;
	uint32_t held = 0;
	int ok = 0, i;

	if (probe_fill(h, r->client, &pr) < 0)
		return;
	if (cl_key_is_v4(&r->key))
		ok |= cl_diag_dump(AF_INET, r->key.b, r->plen, probe_msg,
				   &pr) == 0;
	ok |= cl_diag_dump(AF_INET6, r->key.b, r->plen, probe_msg, &pr) == 0;
	cl_diag_settle(pr.c, pr.n);
	for (i = 0; i < pr.n; i++)
		held += pr.c[i].held;
	if (ok && held < r->counted)
		r->open = held;
	free(pr.c);
}


/* A JSON string or a Prometheus label value, without the quotes. */
static void put_escaped(const char *s, int json)
{
	for (; *s; s++) {
		if (*s == '"' || *s == '\\')
			printf("\\%c", *s);
		else if (*s == '\n')
			fputs("\\n", stdout);
		else if (json && (unsigned char)*s < 0x20)
			printf("\\u%04x", *s);
		else
			putchar(*s);
	}
}

static const char *mode_name(unsigned m)
{
	return m == 1 ? "monitor" : m == 2 ? "pass-through" : "enforce";
}

static const char *action_name(unsigned a)
{
	return a == 1 ? "close" : a == 2 ? "message" : "reset";
}

static void print_text(const struct cl_zone_hdr *h, const char *zone,
		       const struct row *r, size_t n, size_t total)
{
	char a[56];
	size_t i;

	printf("zone=%s capacity=%u max_per_ip=%u counted=%u clients=%zu\n",
	       zone, h->nconns, h->max_per_ip, h->open_total, total);
	printf("settings mode=%s max_total=%u action=%s ipv4_prefix=%u "
	       "ipv6_prefix=%u networks=%u generation=%u\n",
	       mode_name(h->monitor), h->max_total,
	       action_name(h->action), h->ipv4_prefix, h->ipv6_prefix,
	       h->networks, h->settings_gen);
	printf("counters");
	for (i = 0; i < sizeof counter_names / sizeof *counter_names; i++)
		printf(" %s=%" PRIu64, counter_names[i], h->counter[i]);
	printf("\n");
	for (i = 0; i < n; i++) {
		client_name(&r[i], a, sizeof a);
		printf("client=%s open=%u counted=%u refused=%u\n", a,
		       r[i].open, r[i].counted, r[i].refused);
	}
}

static void print_json(const struct cl_zone_hdr *h, const char *zone,
		       const struct row *r, size_t n, size_t total)
{
	char a[56];
	size_t i;

	printf("{\"zone\":\"");
	put_escaped(zone, 1);
	printf("\",\"capacity\":%u,\"max_per_ip\":%u,\"counted\":%u,"
	       "\"client_count\":%zu,", h->nconns, h->max_per_ip,
	       h->open_total, total);
	printf("\"settings\":{\"mode\":\"%s\",\"max_total\":%u,"
	       "\"action\":\"%s\",\"ipv4_prefix\":%u,\"ipv6_prefix\":%u,"
	       "\"networks\":%u,\"generation\":%u},\"counters\":{",
	       mode_name(h->monitor), h->max_total,
	       action_name(h->action), h->ipv4_prefix, h->ipv6_prefix,
	       h->networks, h->settings_gen);
	for (i = 0; i < sizeof counter_names / sizeof *counter_names; i++)
		printf("%s\"%s\":%" PRIu64, i ? "," : "", counter_names[i],
		       h->counter[i]);
	printf("},\"clients\":[");
	for (i = 0; i < n; i++) {
		client_name(&r[i], a, sizeof a);
		printf("%s{\"client\":\"%s\",\"open\":%u,\"counted\":%u,"
		       "\"refused\":%u}", i ? "," : "", a, r[i].open,
		       r[i].counted, r[i].refused);
	}
	printf("]}\n");
}

static void prom_head(const char *name, const char *type, const char *help)
{
	printf("# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* NAME{zone="ZONE"} V, or NAME{zone="ZONE",LABEL="VALUE"} V */
static void prom_sample(const char *name, const char *zone,
			const char *label, const char *value, uint64_t v)
{
	printf("%s{zone=\"", name);
	put_escaped(zone, 0);
	if (label) {
		printf("\",%s=\"", label);
		put_escaped(value, 0);
	}
	printf("\"} %" PRIu64 "\n", v);
}

/* Text exposition format, as node_exporter's textfile collector reads. */
static void print_prom(const struct cl_zone_hdr *h, const char *zone,
		       const struct row *r, size_t n, size_t total)
{
	char a[56];
	size_t i;

	prom_head("connlimit_max_per_ip", "gauge",
		  "Connections one client may hold open at once (0: no limit).");
	prom_sample("connlimit_max_per_ip", zone, NULL, NULL, h->max_per_ip);
	prom_head("connlimit_capacity", "gauge",
		  "Connection records in the table.");
	prom_sample("connlimit_capacity", zone, NULL, NULL, h->nconns);
	prom_head("connlimit_counted", "gauge",
		  "Connections the table counts as open.");
	prom_sample("connlimit_counted", zone, NULL, NULL, h->open_total);
	prom_head("connlimit_clients", "gauge",
		  "Clients with connections open.");
	prom_sample("connlimit_clients", zone, NULL, NULL, total);
	prom_head("connlimit_events_total", "counter",
		  "Connection events since the table was made, by event.");
	for (i = 0; i < sizeof counter_names / sizeof *counter_names; i++)
		prom_sample("connlimit_events_total", zone, "event",
			    counter_names[i], h->counter[i]);
	if (n == 0)
		return;
	prom_head("connlimit_client_open", "gauge",
		  "Open connections of one client (the clients with most).");
	for (i = 0; i < n; i++) {
		client_name(&r[i], a, sizeof a);
		prom_sample("connlimit_client_open", zone, "client", a,
			    r[i].open);
	}
	prom_head("connlimit_client_refused_total", "counter",
		  "Refusals of one client since it took its table slot.");
	for (i = 0; i < n; i++) {
		client_name(&r[i], a, sizeof a);
		prom_sample("connlimit_client_refused_total", zone, "client", a,
			    r[i].refused);
	}
}

/*
 * The kernel check must run in the server's network namespace: a
 * container's sockets are invisible from the host's.  Enter it (root
 * can), or skip the check and say so.
 */
static int same_netns(const char *pid)
{
	char path[64];
	struct stat a, b;
	int fd;

	snprintf(path, sizeof path, "/proc/%s/ns/net", pid);
	if (stat(path, &a) < 0 || stat("/proc/self/ns/net", &b) < 0 ||
	    (a.st_dev == b.st_dev && a.st_ino == b.st_ino))
		return 1;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd >= 0 && setns(fd, CLONE_NEWNET) == 0) {
		close(fd);
		return 1;
	}
	if (fd >= 0)
		close(fd);
	fprintf(stderr, "connlimit-status: %s is in another network "
		"namespace that cannot be entered: open is shown as counted, "
		"unchecked\n", pid);
	return 0;
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

static void usage(const char *why, const char *arg)
{
	if (why)
		fprintf(stderr, "connlimit-status: %s%s\n", why, arg ? arg : "");
	fprintf(stderr, "usage: connlimit-status [--json | --prometheus] "
			"[--top N] [--no-verify] PID|ZONE\n");
	exit(2);
}

static uint32_t parse_top(const char *s)
{
	unsigned long long v = 0;

	if (all_digits(s) && strlen(s) <= 10)
		v = strtoull(s, NULL, 10);
	if (v == 0 || v > UINT32_MAX)
		die(2, "--top expects an integer from 1 to 4294967295", s);
	return (uint32_t)v;
}

int main(int argc, char **argv)
{
	int fmt = FMT_TEXT, i, verify = 1;
	uint32_t top = UINT32_MAX;
	const char *target = NULL;
	char zone[80], name[64];
	struct row *rows;
	size_t size, n, total;
	void *buf;

	for (i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--json"))
			fmt = FMT_JSON;
		else if (!strcmp(argv[i], "--prometheus"))
			fmt = FMT_PROM;
		else if (!strcmp(argv[i], "--no-verify"))
			verify = 0;
		else if (!strcmp(argv[i], "--top") && i + 1 < argc)
			top = parse_top(argv[++i]);
		else if (argv[i][0] == '-')
			usage("unknown option or missing value: ", argv[i]);
		else if (target)
			usage("name one PID or zone, not also ", argv[i]);
		else
			target = argv[i];
	}
	if (!target)
		usage("name a PID or a zone", NULL);
	if (all_digits(target)) {
		buf = load_pid(target, &size, name, sizeof name);
		if (verify && !same_netns(target))
			verify = 0;
		if (name[0])
			snprintf(zone, sizeof zone, "%s", name);
		else
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
	total = n;
	if (n > top)
		n = top;
	if (fmt == FMT_JSON)
		print_json(buf, zone, rows, n, total);
	else if (fmt == FMT_PROM)
		print_prom(buf, zone, rows, n, total);
	else
		print_text(buf, zone, rows, n, total);
	free(rows);
	free(buf);
	return 0;
}
