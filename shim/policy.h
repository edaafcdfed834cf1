/*
 * policy.h - the configuration language and the compiled policy.
 *
 * Parsing and lookup never allocate, never lock and never call stdio, so
 * that a reload can run from inside accept and a lookup from anywhere,
 * signal handlers included.  Every structure is a fixed size and holds no
 * pointers: it can live in anonymous or shared mappings and be copied.
 *
 * A struct cl_settings is large (about 1.5 MB at the default caps), so it
 * belongs in a mapping, never on a stack.  Only the pages a configuration
 * uses are ever touched: init, parse, overlay and copy write the header
 * and the entries in use, nothing more.
 */
#ifndef CL_POLICY_H
#define CL_POLICY_H

#include <stddef.h>
#include <stdint.h>

#include "cl.h"

/*
 * Networks in exempt and limit together, per struct cl_settings.  The
 * trie needs at most two nodes per network, plus node 0, which stands
 * for "none".  Raise at build time with -DCL_MAX_CIDRS=N.
 */
#ifndef CL_MAX_CIDRS
#define CL_MAX_CIDRS 16384
#endif
#define CL_MAX_NODES (2 * CL_MAX_CIDRS + 1)
#define CL_MESSAGE_MAX 512	/* bytes, after escapes are decoded */
#define CL_LOG_PATH_MAX 1024	/* including the terminating NUL */
#define CL_ZONE_MAX 48		/* including the terminating NUL */
#define CL_UNLIMITED_MAX 4294967294u	/* largest max_per_ip, limit */

/* One bit per setting in cl_settings.set, in the order they print. */
enum cl_setting_id {
	CL_S_MAX_PER_IP, CL_S_EXEMPT, CL_S_LIMITS, CL_S_IPV4_PREFIX,
	CL_S_IPV6_PREFIX, CL_S_PORTS, CL_S_MAX_TOTAL, CL_S_ACTION,
	CL_S_MESSAGE, CL_S_MODE, CL_S_LOG, CL_S_LOG_LEVEL, CL_S_STRICT,
	CL_S_CAPACITY, CL_S_ZONE, CL_S_COUNT
};

enum { CL_ACTION_RESET, CL_ACTION_CLOSE, CL_ACTION_MESSAGE };
enum { CL_MODE_ENFORCE, CL_MODE_MONITOR };
enum { CL_LOGTO_STDERR, CL_LOGTO_SYSLOG, CL_LOGTO_FILE };
enum { CL_PORTS_ALL, CL_PORTS_ONLY, CL_PORTS_EXCEPT };

/* Local ports to limit: the listed ones, all but the listed, or all. */
struct cl_ports {
	uint32_t mode;			/* CL_PORTS_* */
	uint64_t bits[65536 / 64];	/* the listed ports */
};

/* An exempt or limit network as written, kept to rebuild the trie. */
struct cl_cidr {
	struct cl_key net;	/* zero past plen */
	uint32_t limit;		/* limit lines: N, 0 = unlimited */
	uint32_t line;		/* where it was set, for error messages */
	uint8_t plen;		/* over all 128 bits: IPv4 /n is 96 + n */
	uint8_t exempt;		/* 1 exempt entry, 0 limit entry */
};

/*
 * A node of the binary trie.  The prefix is kept as two host-order words
 * so that a step is two masked compares.  Children sit at the first bit
 * past plen; a node without flags is only a branching point.
 */
struct cl_pnode {
	uint64_t w[2];
	uint32_t child[2];	/* node indices, 0 = none */
	uint32_t limit;
	uint8_t plen;
	uint8_t flags;		/* CL_PN_* */
};

#define CL_PN_LIMIT 1
#define CL_PN_EXEMPT 2

/*
 * Longest-prefix match over the exempt and limit networks.  IPv4
 * networks (stored as ::ffff:a.b.c.d) and IPv6 networks have separate
 * roots, so an IPv6 network never matches an IPv4 client.
 */
struct cl_policy {
	uint32_t nnodes;	/* node[0] is unused */
	uint32_t root[2];	/* [0] IPv4, [1] IPv6 */
	struct cl_pnode node[CL_MAX_NODES];
};

struct cl_settings {
	uint32_t set;			/* 1u << CL_S_* for each one given */
	uint32_t line[CL_S_COUNT];	/* where each was given, 0 = env */
	uint32_t max_per_ip;		/* 0 = unlimited, still counted */
	uint32_t max_total;		/* 0 = no cap */
	uint32_t capacity;
	uint8_t ipv4_prefix;
	uint8_t ipv6_prefix;
	uint8_t action;			/* CL_ACTION_* */
	uint8_t mode;			/* CL_MODE_* */
	uint8_t log_to;			/* CL_LOGTO_* */
	uint8_t log_level;		/* CL_LOG_* from cl.h */
	uint8_t strict;
	char zone[CL_ZONE_MAX];		/* "" = the default zone */
	char log_path[CL_LOG_PATH_MAX];	/* with CL_LOGTO_FILE */
	uint32_t message_len;
	char message[CL_MESSAGE_MAX];	/* decoded; may hold NUL bytes */
	struct cl_ports ports;
	uint32_t ncidr;
	struct cl_cidr cidr[CL_MAX_CIDRS];
	struct cl_policy policy;	/* built from cidr[] */
};

/*
 * What went wrong, enough for one log line:
 *   error file=F line=3 setting=max_per_ip value="ten" expected="..."
 * line is 0 for an environment variable; in the inline form it counts
 * settings (separated by ';' or newlines) rather than lines.
 */
struct cl_perr {
	uint32_t line;
	char setting[48];
	char value[80];		/* truncated to fit */
	char expected[192];
};

/* Defaults everywhere, nothing marked set.  Touches only the header. */
CL_HIDDEN void cl_settings_init(struct cl_settings *s);

/*
 * Parse a whole file (inline_form 0) or a CONNLIMIT= string (1) into
 * @out, which is initialised first.  0, or -1 with @err filled; on error
 * @out holds a partial result that must not be used.
 */
CL_HIDDEN int cl_settings_parse(struct cl_settings *out, const char *text,
				size_t len, int inline_form,
				struct cl_perr *err);

/*
 * One CONNLIMIT_* variable (CONNLIMIT_MAX_PER_IP, CONNLIMIT_EXEMPT,
 * CONNLIMIT_LIMITS, ...), replacing that setting in @out.  Not for
 * CONNLIMIT (use cl_settings_parse with inline_form 1) nor for the
 * variable naming the file.  0, or -1 with @err filled.
 */
CL_HIDDEN int cl_settings_env_one(struct cl_settings *out,
				  const char *env_name, const char *value,
				  struct cl_perr *err);

/*
 * Every setting marked set in @src replaces the one in @dst.  exempt
 * and the limit lines are two settings, each replaced as a whole.  -1
 * with @err filled when the networks of both no longer fit.
 */
CL_HIDDEN int cl_settings_overlay(struct cl_settings *dst,
				  const struct cl_settings *src,
				  struct cl_perr *err);

/* Checks that span settings (action = message needs a message). */
CL_HIDDEN int cl_settings_check(const struct cl_settings *s,
				struct cl_perr *err);

/*
 * Write the settings as a file would give them, one "name=value" line
 * each (all of them, or only those marked set).  Returns the length the
 * whole text needs, like snprintf; @buf holds what fits, NUL-terminated.
 */
CL_HIDDEN size_t cl_settings_format(const struct cl_settings *s,
				    int only_set, char *buf, size_t n);

/*
 * The limit for the client at @k: that of the longest exempt or limit
 * network containing it, else @default_limit.  *exempt is set to 1, and
 * 0 (unlimited) returned, when that network is exempt.  At most 33 or
 * 129 steps whatever the number of networks.
 */
CL_HIDDEN uint32_t cl_policy_lookup(const struct cl_policy *p,
				    const struct cl_key *k,
				    uint32_t default_limit, int *exempt);

/* Zero the host bits: IPv4 keys keep v4_bits bits, others v6_bits. */
CL_HIDDEN void cl_key_apply_prefix(struct cl_key *k, unsigned v4_bits,
				   unsigned v6_bits);

/* Whether connections to local @port are limited. */
CL_HIDDEN int cl_ports_match(const struct cl_ports *p, uint16_t port);

/*
 * An address or network in the configuration's syntax: a.b.c.d[/n] or
 * an IPv6 address[/n].  IPv4 comes back as ::ffff:a.b.c.d with *plen
 * 96 + n.  0, or -1 when malformed, -2 when bits are set past the prefix.
 */
CL_HIDDEN int cl_cidr_parse(const char *s, size_t n, struct cl_key *k,
			    unsigned *plen);

#endif
