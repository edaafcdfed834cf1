/*
 * settings.c - read the environment once, in the constructor.
 *
 * nginx and others clear the environment before starting workers, so it
 * is read exactly once and never written.  A bad value is reported with
 * the variable, the value and what was expected; the library then passes
 * every connection through rather than guess what the operator meant.
 */
#include <stdlib.h>
#include <string.h>

#include "cl.h"

#define DEFAULT_MAX_PER_IP 100
#define DEFAULT_CAPACITY 65536
#define MAX_CAPACITY (1u << 24)

/* Decimal digits only: no sign, no spaces, no exponent, no overflow. */
int cl_parse_u32(const char *s, uint32_t lo, uint32_t hi, uint32_t *out)
{
	uint64_t v = 0;

	if (!*s)
		return -1;
	for (; *s; s++) {
		if (*s < '0' || *s > '9')
			return -1;
		v = v * 10 + (uint64_t)(*s - '0');
		if (v > hi)
			return -1;
	}
	if (v < lo)
		return -1;
	*out = (uint32_t)v;
	return 0;
}

static void bad_setting(const char *name, const char *value,
			const char *expected)
{
	struct cl_line l;

	cl_line_start(&l, "error");
	cl_line_kv(&l, "setting", name);
	cl_line_kq(&l, "value", value);
	cl_line_kq(&l, "expected", expected);
	cl_line_str(&l, "; passing all connections through");
	cl_line_emit(&l, CL_LOG_ERROR);
}

static void env_u32(struct cl_conf *c, const char *name, uint32_t lo,
		    uint32_t hi, const char *expected, uint32_t *out)
{
	const char *v = getenv(name);

	if (v && cl_parse_u32(v, lo, hi, out) < 0) {
		bad_setting(name, v, expected);
		c->passthrough = 1;
	}
}

static int zone_name_ok(const char *s)
{
	size_t n = strlen(s), i;

	if (n == 0 || n >= 48 || s[0] == '.')
		return 0;
	for (i = 0; i < n; i++) {
		char ch = s[i];

		if (!(ch >= 'a' && ch <= 'z') && !(ch >= 'A' && ch <= 'Z') &&
		    !(ch >= '0' && ch <= '9') && ch != '-' && ch != '_' &&
		    ch != '.')
			return 0;
	}
	return 1;
}

static void env_zone(struct cl_conf *c)
{
	const char *v = getenv("CONNLIMIT_ZONE");

	if (!v)
		return;
	if (!zone_name_ok(v)) {
		bad_setting("CONNLIMIT_ZONE", v,
			    "1 to 47 of [A-Za-z0-9._-], not starting with '.'");
		c->passthrough = 1;
		return;
	}
	strcpy(c->zone, v);
}

static void env_log_level(struct cl_conf *c)
{
	static const char *names[] = { "error", "warn", "info", "debug" };
	const char *v = getenv("CONNLIMIT_LOG_LEVEL");
	int i;

	if (!v)
		return;
	for (i = 0; i < 4; i++) {
		if (strcmp(v, names[i]) == 0) {
			c->log_level = i;
			return;
		}
	}
	bad_setting("CONNLIMIT_LOG_LEVEL", v, "error, warn, info or debug");
	c->passthrough = 1;
}

void cl_conf_load(struct cl_conf *c)
{
	memset(c, 0, sizeof *c);
	c->max_per_ip = DEFAULT_MAX_PER_IP;
	c->capacity = DEFAULT_CAPACITY;
	c->log_level = CL_LOG_WARN;
	env_log_level(c);
	cl_log_init(c->log_level);
	env_u32(c, "CONNLIMIT_MAX_PER_IP", 0, UINT32_MAX - 1,
		"an integer from 0 (unlimited) to 4294967294",
		&c->max_per_ip);
	env_u32(c, "CONNLIMIT_CAPACITY", 64, MAX_CAPACITY,
		"an integer from 64 to 16777216", &c->capacity);
	env_zone(c);
}
