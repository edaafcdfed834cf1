/*
 * tpolicy - parse a libconnlimit configuration and answer lookups.
 *
 * Usage: tpolicy [-s] [-n] [-r] [-i INLINE] [-e NAME=VALUE]... [FILE|-]
 *                [-q ADDR]... [-p PORT]...
 *
 * Layers as the library does: defaults, then the inline CONNLIMIT string
 * (-i), then CONNLIMIT_* variables (-e, in order), then the file.  Prints
 * the effective settings, one name=value per line (-s: only those given,
 * -n: none), then for each -q "limit=N exempt=0|1 key=K" (K: the client
 * key after ipv4_prefix / ipv6_prefix) and for each -p "port=P match=0|1".
 * -r checks that the printed settings parse back to the same text (exit
 * 3 when they do not), as the fuzzer does.
 * A bad configuration prints one "error ..." line, as the library would
 * log it, and exits 1.
 *
 * Built from one file, so it includes the library sources it tests.
 */
#include "../../shim/policy.c"
#include "../../shim/addr.c"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static struct cl_settings merged, layer;
static char **envs;	/* the -e arguments, in order */
static int nenv;

static void die(const char *msg)
{
	fprintf(stderr, "tpolicy: %s\n", msg);
	exit(2);
}

static void print_quoted(const char *key, const char *v)
{
	printf(" %s=\"", key);
	for (; *v; v++) {
		unsigned char ch = (unsigned char)*v;

		if (ch == '"' || ch == '\\')
			printf("\\%c", ch);
		else if (ch < 0x20 || ch == 0x7f)
			printf("\\x%02x", ch);
		else
			putchar(ch);
	}
	putchar('"');
}

/* The line the library would log, on stdout so that it stays ordered. */
static void report(const char *source, const struct cl_perr *e)
{
	int inl = strncmp(source, "inline", 6) == 0;

	fflush(stdout);
	printf("error %s", source);
	if (e->line)
		printf(" %s=%u", inl ? "item" : "line", (unsigned)e->line);
	printf(" setting=%s", e->setting);
	print_quoted("value", e->value);
	print_quoted("expected", e->expected);
	putchar('\n');
	exit(1);
}

static char *read_all(const char *path, size_t *len)
{
	int fd = strcmp(path, "-") ? open(path, O_RDONLY) : 0;
	size_t cap = 1 << 16;
	char *buf = malloc(cap);
	ssize_t r;

	if (fd < 0 || !buf)
		die("cannot open the file");
	*len = 0;
	while ((r = read(fd, buf + *len, cap - *len)) > 0) {
		*len += (size_t)r;
		if (*len == cap && !(buf = realloc(buf, cap *= 2)))
			die("out of memory");
	}
	if (r < 0)
		die("cannot read the file");
	return buf;
}

static void apply(const char *source)
{
	struct cl_perr e;

	if (cl_settings_overlay(&merged, &layer, &e) < 0)
		report(source, &e);
}

static void env_layer(void)
{
	struct cl_perr e;
	char name[256];
	int i;

	cl_settings_init(&layer);
	for (i = 0; i < nenv; i++) {
		const char *eq = strchr(envs[i], '=');

		if (!eq || (size_t)(eq - envs[i]) >= sizeof name)
			die("-e wants NAME=VALUE");
		memcpy(name, envs[i], (size_t)(eq - envs[i]));
		name[eq - envs[i]] = '\0';
		if (cl_settings_env_one(&layer, name, eq + 1, &e) < 0)
			report("env", &e);
	}
	apply("env");
}

static void print_settings(int only_set)
{
	size_t n = cl_settings_format(&merged, only_set, NULL, 0) + 1;
	char *buf = malloc(n);

	if (!buf)
		die("out of memory");
	cl_settings_format(&merged, only_set, buf, n);
	fputs(buf, stdout);
	free(buf);
}

/* What the file form prints must read back as the same settings. */
static void roundtrip(void)
{
	size_t n = cl_settings_format(&merged, 1, NULL, 0) + 1;
	char *a = malloc(n), *b = malloc(n);
	struct cl_perr e;

	if (!a || !b)
		die("out of memory");
	cl_settings_format(&merged, 1, a, n);
	if (cl_settings_parse(&layer, a, n - 1, 0, &e) < 0)
		report("roundtrip", &e);
	if (cl_settings_format(&layer, 1, b, n) != n - 1 || strcmp(a, b)) {
		printf("roundtrip differs:\n%s---\n%s", a, b);
		exit(3);
	}
	free(a);
	free(b);
}

static void query(const char *addr)
{
	struct cl_key k, shown;
	unsigned plen;
	char buf[48];
	uint32_t limit;
	int exempt;

	if (cl_cidr_parse(addr, strlen(addr), &k, &plen) < 0 ||
	    plen != 128 || strchr(addr, '/'))
		die("-q wants an IPv4 or IPv6 address");
	limit = cl_policy_lookup(&merged.policy, &k, merged.max_per_ip,
				 &exempt);
	shown = k;
	cl_key_apply_prefix(&shown, merged.ipv4_prefix, merged.ipv6_prefix);
	cl_key_format(&shown, buf, sizeof buf);
	printf("limit=%u exempt=%d key=%s\n", (unsigned)limit, exempt, buf);
}

static void port(const char *arg)
{
	uint32_t p;

	if (sl_u32(mksl(arg, strlen(arg)), 0, 65535, &p) < 0)
		die("-p wants a port from 0 to 65535");
	printf("port=%u match=%d\n", (unsigned)p,
	       cl_ports_match(&merged.ports, (uint16_t)p));
}

int main(int argc, char **argv)
{
	const char *inl = NULL, *file = NULL, *source = "file";
	int opt, only_set = 0, quiet = 0, check_rt = 0;
	struct cl_perr e;

	envs = calloc((size_t)argc, sizeof *envs);
	while ((opt = getopt(argc, argv, "snri:e:q:p:")) != -1) {
		if (opt == 'e')
			envs[nenv++] = optarg;
		else if (opt == 's')
			only_set = 1;
		else if (opt == 'n')
			quiet = 1;
		else if (opt == 'r')
			check_rt = 1;
		else if (opt == 'i')
			inl = optarg;
		else if (opt == '?')
			return 2;
	}
	if (optind < argc)
		file = argv[optind];
	cl_settings_init(&merged);
	if (inl) {
		if (cl_settings_parse(&layer, inl, strlen(inl), 1, &e) < 0)
			report("inline=CONNLIMIT", &e);
		apply("inline=CONNLIMIT");
	}
	env_layer();
	if (file) {
		size_t len;
		char *text = read_all(file, &len);
		static char src[1100];

		snprintf(src, sizeof src, "file=%s", file);
		source = src;
		if (cl_settings_parse(&layer, text, len, 0, &e) < 0)
			report(source, &e);
		apply(source);
		free(text);
	}
	if (cl_settings_check(&merged, &e) < 0)
		report(source, &e);
	if (check_rt)
		roundtrip();
	if (!quiet)
		print_settings(only_set);
	optind = 0;	/* glibc: start a fresh scan */
	while ((opt = getopt(argc, argv, "snri:e:q:p:")) != -1) {
		if (opt == 'q')
			query(optarg);
		else if (opt == 'p')
			port(optarg);
	}
	return 0;
}
