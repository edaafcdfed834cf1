/*
 * fuzz_policy.c - libFuzzer target for the configuration parser.
 *
 * Each input is parsed as a file, as a CONNLIMIT= string and as the value
 * of several CONNLIMIT_* variables.  Whatever parses must print and parse
 * back to the same text, and every lookup in its trie must agree with a
 * linear longest-prefix scan of its network list.  Layers are overlaid
 * and checked the same way.  Since text rarely yields many overlapping
 * networks in varied orders, the input is also read as binary records
 * inserted straight into a trie.  Build and run: make fuzz (fuzz.mk).
 */
#include "../../shim/policy.c"
#include "../../shim/addr.c"

#include <stdlib.h>

#define FMT_MAX (4u << 20)

static struct cl_settings one, two, merged;
static char fmt_a[FMT_MAX], fmt_b[FMT_MAX];
static char value[8192];

static void check(int ok)
{
	if (!ok)
		abort();
}

/* Every field of an error is a NUL-terminated string within bounds. */
static void check_err(const struct cl_perr *e)
{
	check(memchr(e->setting, 0, sizeof e->setting) != NULL);
	check(memchr(e->value, 0, sizeof e->value) != NULL);
	check(memchr(e->expected, 0, sizeof e->expected) != NULL);
	check(e->expected[0] != '\0');
}

/* Printing and parsing the result again gives the same text. */
static void check_roundtrip(const struct cl_settings *s)
{
	struct cl_perr e;
	size_t n = cl_settings_format(s, 1, fmt_a, sizeof fmt_a);

	check(n < sizeof fmt_a && strlen(fmt_a) == n);
	/* A log path from the environment may hold '#': no file can. */
	if ((s->set & BIT(CL_S_LOG)) && strchr(s->log_path, '#'))
		return;
	check(cl_settings_parse(&two, fmt_a, n, 0, &e) == 0);
	check(cl_settings_format(&two, 1, fmt_b, sizeof fmt_b) == n);
	check(memcmp(fmt_a, fmt_b, n) == 0);
}

static int covers(const struct cl_cidr *c, const struct cl_key *k)
{
	struct cl_key m = *k;

	if (cl_key_is_v4(&c->net) != cl_key_is_v4(k))
		return 0;
	key_mask(&m, c->plen);
	return memcmp(&m, &c->net, sizeof m) == 0;
}

/* The answer a linear scan gives: longest prefix, exempt on a tie. */
static uint32_t oracle(const struct cl_settings *s, const struct cl_key *k,
		       uint32_t dflt, int *exempt)
{
	const struct cl_cidr *best = NULL;
	uint32_t i, limit = dflt;
	int ex = 0;

	for (i = 0; i < s->ncidr; i++) {
		const struct cl_cidr *c = &s->cidr[i];

		if (!covers(c, k))
			continue;
		if (!best || c->plen > best->plen) {
			best = c;
			ex = 0;
		}
		if (c->plen == best->plen) {
			if (c->exempt)
				ex = 1;
			else
				limit = c->limit;
		}
	}
	*exempt = ex;
	return ex ? 0 : limit;
}

static void check_key(const struct cl_settings *s, const struct cl_key *k)
{
	int ex1, ex2;
	uint32_t a = cl_policy_lookup(&s->policy, k, 77, &ex1);
	uint32_t b = oracle(s, k, 77, &ex2);
	struct cl_key p = *k, q;

	check(a == b && ex1 == ex2);
	cl_key_apply_prefix(&p, s->ipv4_prefix, s->ipv6_prefix);
	q = p;
	cl_key_apply_prefix(&q, s->ipv4_prefix, s->ipv6_prefix);
	check(memcmp(&p, &q, sizeof p) == 0);
	check(cl_key_is_v4(&p) == cl_key_is_v4(k));
}

/* Each network, its last address, the address past it, and the input. */
static void check_lookups(const struct cl_settings *s, const uint8_t *d,
			  size_t n)
{
	uint32_t i, j, nodes = 0;
	struct cl_key k;

	for (i = 0; i < s->ncidr && i < 256; i++) {
		k = s->cidr[i].net;
		check_key(s, &k);
		for (j = s->cidr[i].plen; j < 128; j++)
			k.b[j / 8] |= (uint8_t)(0x80 >> (j % 8));
		check_key(s, &k);
		if (s->cidr[i].plen) {
			j = s->cidr[i].plen - 1u;
			k.b[j / 8] ^= (uint8_t)(0x80 >> (j % 8));
			check_key(s, &k);
		}
	}
	for (i = 0; i + 16 <= n && i < 256; i += 16) {
		memcpy(k.b, d + i, 16);
		check_key(s, &k);
		memcpy(k.b, v4_mapped, 12);
		check_key(s, &k);
	}
	for (i = 1; i < s->policy.nnodes; i++)
		nodes += s->policy.node[i].flags != 0;
	check(s->policy.nnodes <= 2 * s->ncidr + 1 && nodes <= s->ncidr);
	for (i = 0; i < n && i < 32; i += 2)
		cl_ports_match(&s->ports, (uint16_t)(d[i] << 8 | d[i + 1 < n ?
								i + 1 : i]));
}

static void accepted(const struct cl_settings *s, const uint8_t *d,
		     size_t n)
{
	struct cl_perr e;

	check(s->ncidr <= CL_MAX_CIDRS && s->message_len <= CL_MESSAGE_MAX);
	check_roundtrip(s);
	check_lookups(s, d, n);
	cl_settings_check(s, &e);
}

/* Layering: the merged trie still agrees with the merged list. */
static void overlay_both(const uint8_t *d, size_t n)
{
	struct cl_perr e;

	cl_settings_init(&merged);
	if (cl_settings_overlay(&merged, &one, &e) < 0 ||
	    cl_settings_overlay(&merged, &two, &e) < 0) {
		check_err(&e);
		return;
	}
	check_lookups(&merged, d, n);
}

static const char *const env_names[] = {
	"CONNLIMIT_LIMITS", "CONNLIMIT_EXEMPT", "CONNLIMIT_PORTS",
	"CONNLIMIT_MESSAGE", "CONNLIMIT_MAX_PER_IP", "CONNLIMIT_LOG",
	"CONNLIMIT_ZONE", "CONNLIMIT_BOGUS",
};

static void env_forms(const uint8_t *d, size_t n)
{
	struct cl_perr e;
	size_t i, len = n < sizeof value - 1 ? n : sizeof value - 1;

	memcpy(value, d, len);
	value[len] = '\0';
	for (i = 0; i < sizeof env_names / sizeof *env_names; i++) {
		cl_settings_init(&one);
		if (cl_settings_env_one(&one, env_names[i], value, &e) < 0) {
			check_err(&e);
			continue;
		}
		accepted(&one, d, n);
		/* Set again: the earlier networks must all be replaced. */
		check(cl_settings_env_one(&one, env_names[i], value, &e) == 0);
		accepted(&one, d, n);
	}
}

/*
 * Records of 6 bytes: flags, prefix length, then the first 4 bytes of an
 * IPv6 network or a whole IPv4 one.  Few distinct bits make networks
 * nest and collide, in whatever order the input gives them.
 */
static void records(const uint8_t *d, size_t n)
{
	struct cl_perr e;
	struct pctx c = { &one, &e, 1, 0, 0, { "fuzz", 4 } };
	struct cl_key k;
	unsigned plen;
	size_t i;

	cl_settings_init(&one);
	for (i = 0; i + 6 <= n; i += 6) {
		memset(&k, 0, sizeof k);
		if (d[i] & 1) {
			memcpy(k.b, v4_mapped, 12);
			memcpy(k.b + 12, d + i + 2, 4);
			plen = 96 + d[i + 1] % 33;
		} else {
			memcpy(k.b, d + i + 2, 4);
			plen = d[i + 1] % 129;
		}
		key_mask(&k, plen);
		if (add_cidr(&c, mksl("x", 1), &k, plen, d[i] >> 1 & 1,
			     d[i] >> 2) < 0)
			check(find_cidr(&one, &k, plen, d[i] >> 1 & 1) != NULL);
	}
	check_lookups(&one, d, n);
}

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n)
{
	struct cl_perr e;
	int form;

	for (form = 0; form < 2; form++) {
		if (cl_settings_parse(&one, (const char *)d, n, form, &e) < 0) {
			check_err(&e);
			continue;
		}
		accepted(&one, d, n);
		if (cl_settings_parse(&two, (const char *)d, n, !form, &e) == 0)
			overlay_both(d, n);
	}
	env_forms(d, n);
	records(d, n);
	return 0;
}
