/*
 * policy.c - parse the configuration language, build the lookup trie.
 *
 * The text is never copied or NUL-terminated: everything works on
 * slices of it, which is why the number parser here takes a length
 * instead of reusing cl_parse_u32.  Nothing allocates, locks or calls
 * stdio; the only library calls are mem* and strlen.
 *
 * Exempt and limit networks are kept twice: as the list they were
 * written in (so that layers can be overlaid and printed) and as a
 * path-compressed binary trie (so that a lookup costs at most one step
 * per prefix length whatever the number of networks).
 */
#include <string.h>

#include "policy.h"

#define STR_(x) #x
#define STR(x) STR_(x)
#define BIT(id) (1u << (id))

static const uint8_t v4_mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0,
				       0, 0, 0xff, 0xff };

/* ---- slices ---- */

struct sl {
	const char *p;
	size_t n;
};

static struct sl mksl(const char *p, size_t n)
{
	struct sl s = { p, n };

	return s;
}

static int is_blank(char ch)
{
	return ch == ' ' || ch == '\t' || ch == '\r' || ch == '\v' ||
	       ch == '\f';
}

static struct sl trim(struct sl s)
{
	while (s.n && is_blank(s.p[0])) {
		s.p++;
		s.n--;
	}
	while (s.n && is_blank(s.p[s.n - 1]))
		s.n--;
	return s;
}

static int sl_is(struct sl s, const char *word)
{
	size_t n = strlen(word);

	return s.n == n && memcmp(s.p, word, n) == 0;
}

/* Decimal digits only: no sign, no spaces, no exponent, no overflow. */
static int sl_u32(struct sl s, uint32_t lo, uint32_t hi, uint32_t *out)
{
	uint64_t v = 0;
	size_t i;

	if (s.n == 0)
		return -1;
	for (i = 0; i < s.n; i++) {
		if (s.p[i] < '0' || s.p[i] > '9')
			return -1;
		v = v * 10 + (uint64_t)(s.p[i] - '0');
		if (v > hi)
			return -1;
	}
	if (v < lo)
		return -1;
	*out = (uint32_t)v;
	return 0;
}

/* ---- a bounded writer, for error texts and cl_settings_format ---- */

struct wb {
	char *p;
	size_t cap;
	size_t len;	/* what the whole text needs, may exceed cap */
};

static void w_mem(struct wb *w, const char *s, size_t n)
{
	size_t room = w->len + 1 < w->cap ? w->cap - 1 - w->len : 0;

	if (room)
		memcpy(w->p + w->len, s, n < room ? n : room);
	w->len += n;
}

static void w_str(struct wb *w, const char *s)
{
	w_mem(w, s, strlen(s));
}

static void w_u32(struct wb *w, uint32_t v)
{
	char t[10];
	size_t n = sizeof t;

	do {
		t[--n] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	w_mem(w, t + n, sizeof t - n);
}

static void w_end(struct wb *w)
{
	if (w->cap)
		w->p[w->len < w->cap ? w->len : w->cap - 1] = '\0';
}

/* IPv4 networks print as a.b.c.d/n, IPv6 ones compressed. */
static void w_cidr(struct wb *w, const struct cl_key *net, unsigned plen)
{
	char buf[48];
	int v4 = cl_key_is_v4(net);

	cl_key_format(net, buf, sizeof buf);
	w_str(w, buf);
	w_str(w, "/");
	w_u32(w, v4 ? plen - 96 : plen);
}

/* ---- parse context and errors ---- */

struct pctx {
	struct cl_settings *s;
	struct cl_perr *err;
	uint32_t line;
	int inline_form;
	int env;		/* one CONNLIMIT_* variable, not a file */
	struct sl name;		/* the setting, for error messages */
};

static void copy_cut(char *dst, size_t cap, struct sl v)
{
	size_t n = v.n < cap ? v.n : cap - 1;

	memcpy(dst, v.p, n);
	dst[n] = '\0';
	if (n < v.n && cap > 4)
		memcpy(dst + cap - 4, "...", 4);
}

static int fail(struct pctx *c, struct sl value, const char *expected)
{
	struct cl_perr *e = c->err;

	e->line = c->line;
	copy_cut(e->setting, sizeof e->setting, c->name);
	copy_cut(e->value, sizeof e->value, value);
	copy_cut(e->expected, sizeof e->expected,
		 mksl(expected, strlen(expected)));
	return -1;
}

/* "first at line 3", or "first as item 3" in the inline form. */
static void w_first(struct wb *w, const struct pctx *c, uint32_t line)
{
	if (!line)
		return;
	w_str(w, c->inline_form ? " (first as item " : " (first at line ");
	w_u32(w, line);
	w_str(w, ")");
}

/* ---- addresses ---- */

static int hex_digit(char ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	if (ch >= 'a' && ch <= 'f')
		return ch - 'a' + 10;
	if (ch >= 'A' && ch <= 'F')
		return ch - 'A' + 10;
	return -1;
}

/* Exactly a.b.c.d, each 0..255 without leading zeros (not octal). */
static int parse_v4(struct sl s, uint8_t out[4])
{
	size_t i = 0, start;
	unsigned v;
	int part;

	for (part = 0; part < 4; part++) {
		if (part && (i >= s.n || s.p[i++] != '.'))
			return -1;
		start = i;
		for (v = 0; i < s.n && i - start < 3 && s.p[i] >= '0' &&
		     s.p[i] <= '9'; i++)
			v = v * 10 + (unsigned)(s.p[i] - '0');
		if (i == start || v > 255 ||
		    (s.p[start] == '0' && i - start > 1))
			return -1;
		out[part] = (uint8_t)v;
	}
	return i == s.n ? 0 : -1;
}

/* An IPv6 group of 1 to 4 hex digits, or a trailing dotted IPv4. */
static int v6_part(struct sl part, int last, uint8_t *dst, size_t *n)
{
	unsigned v = 0;
	size_t i;
	int d;

	if (last && memchr(part.p, '.', part.n)) {
		if (*n > 12 || parse_v4(part, dst + *n) < 0)
			return -1;
		*n += 4;
		return 0;
	}
	if (part.n == 0 || part.n > 4 || *n > 14)
		return -1;
	for (i = 0; i < part.n; i++) {
		if ((d = hex_digit(part.p[i])) < 0)
			return -1;
		v = v << 4 | (unsigned)d;
	}
	dst[(*n)++] = (uint8_t)(v >> 8);
	dst[(*n)++] = (uint8_t)v;
	return 0;
}

/*
 * RFC 4291 text form.  "::" stands for at least one group of zeros, so
 * that 1:2:3:4:5:6:7::8 is refused like inet_pton refuses it.  Zone
 * indexes (%eth0) and brackets are not addresses and are refused.
 */
static int parse_v6(struct sl s, uint8_t out[16])
{
	uint8_t head[16], tail[16];
	size_t nh = 0, nt = 0, i = 0, j;
	int dbl = 0;

	if (s.n >= 2 && s.p[0] == ':' && s.p[1] == ':') {
		dbl = 1;
		i = 2;
	}
	while (i < s.n) {
		for (j = i; j < s.n && s.p[j] != ':'; j++)
			;
		if (v6_part(mksl(s.p + i, j - i), j == s.n,
			    dbl ? tail : head, dbl ? &nt : &nh) < 0)
			return -1;
		if (j == s.n)
			break;
		i = j + 1;
		if (i < s.n && s.p[i] == ':') {
			if (dbl)
				return -1;
			dbl = 1;
			i++;
		} else if (i == s.n) {
			return -1;
		}
	}
	if (dbl ? nh + nt > 14 : nh != 16)
		return -1;
	memset(out, 0, 16);
	memcpy(out, head, nh);
	memcpy(out + 16 - nt, tail, nt);
	return 0;
}

static void key_mask(struct cl_key *k, unsigned plen)
{
	unsigned i;

	for (i = 0; i < 16; i++) {
		if (plen >= 8) {
			plen -= 8;
		} else {
			k->b[i] &= (uint8_t)(0xff00u >> plen);
			plen = 0;
		}
	}
}

int cl_cidr_parse(const char *s, size_t n, struct cl_key *k,
		  unsigned *plen)
{
	const char *slash = memchr(s, '/', n);
	struct sl addr = mksl(s, slash ? (size_t)(slash - s) : n);
	struct cl_key masked;
	uint32_t len, base = 0, max = 128;

	if (memchr(addr.p, ':', addr.n)) {
		if (parse_v6(addr, k->b) < 0)
			return -1;
	} else {
		memcpy(k->b, v4_mapped, 12);
		if (parse_v4(addr, k->b + 12) < 0)
			return -1;
		base = 96;
		max = 32;
	}
	len = max;
	if (slash && sl_u32(mksl(slash + 1, n - addr.n - 1), 0, max, &len))
		return -1;
	*plen = base + len;
	masked = *k;
	key_mask(&masked, *plen);
	return memcmp(&masked, k, sizeof masked) ? -2 : 0;
}

void cl_key_apply_prefix(struct cl_key *k, unsigned v4_bits,
			 unsigned v6_bits)
{
	if (cl_key_is_v4(k))
		key_mask(k, 96 + (v4_bits < 32 ? v4_bits : 32));
	else
		key_mask(k, v6_bits < 128 ? v6_bits : 128);
}

/* ---- the trie ---- */

static uint64_t be64(const uint8_t *b)
{
	uint64_t v = 0;
	int i;

	for (i = 0; i < 8; i++)
		v = v << 8 | b[i];
	return v;
}

static void key_words(const struct cl_key *k, uint64_t w[2])
{
	w[0] = be64(k->b);
	w[1] = be64(k->b + 8);
}

static int words_v4(const uint64_t w[2])
{
	return w[0] == 0 && w[1] >> 32 == 0xffff;
}

/* Bit @i counted from the most significant, @i < 128. */
static unsigned bit_at(const uint64_t w[2], unsigned i)
{
	return (unsigned)(i < 64 ? w[0] >> (63 - i) : w[1] >> (127 - i)) & 1;
}

/* How many leading bits @a and @b share. */
static unsigned common_len(const uint64_t a[2], const uint64_t b[2])
{
	uint64_t x = a[0] ^ b[0];

	if (x)
		return (unsigned)__builtin_clzll(x);
	x = a[1] ^ b[1];
	return x ? 64 + (unsigned)__builtin_clzll(x) : 128;
}

/*
 * Node indices never run out: each insertion adds at most two nodes and
 * the list feeding the trie holds at most CL_MAX_CIDRS networks.
 */
static uint32_t new_node(struct cl_policy *p, const uint64_t w[2],
			 unsigned plen, unsigned flags, uint32_t limit)
{
	uint32_t i = p->nnodes++;
	struct cl_pnode *n = &p->node[i];

	n->w[0] = w[0];
	n->w[1] = w[1];
	n->child[0] = n->child[1] = 0;
	n->limit = limit;
	n->plen = (uint8_t)plen;
	n->flags = (uint8_t)flags;
	return i;
}

/* Put a node for @w/@plen above *link, which diverges at bit @at. */
static void trie_split(struct cl_policy *p, uint32_t *link,
		       const uint64_t w[2], unsigned plen, unsigned at,
		       unsigned flag, uint32_t limit)
{
	uint32_t old = *link, fresh = new_node(p, w, plen, flag, limit);
	uint64_t g[2] = { w[0], w[1] };
	uint32_t glue;

	if (at == plen) {
		p->node[fresh].child[bit_at(p->node[old].w, at)] = old;
		*link = fresh;
		return;
	}
	g[0] &= at >= 64 ? ~0ULL : at ? ~0ULL << (64 - at) : 0;
	g[1] &= at > 64 ? ~0ULL << (128 - at) : 0;
	glue = new_node(p, g, at, 0, 0);
	p->node[glue].child[bit_at(w, at)] = fresh;
	p->node[glue].child[bit_at(p->node[old].w, at)] = old;
	*link = glue;
}

/* 0, or -1 when @w/@plen already carries @flag. */
static int trie_insert(struct cl_policy *p, const uint64_t w[2],
		       unsigned plen, unsigned flag, uint32_t limit)
{
	uint32_t *link = &p->root[words_v4(w) ? 0 : 1];

	while (*link) {
		struct cl_pnode *n = &p->node[*link];
		unsigned at = common_len(n->w, w);

		at = at < plen ? at : plen;
		at = at < n->plen ? at : n->plen;
		if (at < n->plen) {
			trie_split(p, link, w, plen, at, flag, limit);
			return 0;
		}
		if (at == plen) {
			if (n->flags & flag)
				return -1;
			n->flags |= (uint8_t)flag;
			if (flag == CL_PN_LIMIT)
				n->limit = limit;
			return 0;
		}
		link = &n->child[bit_at(w, n->plen)];
	}
	*link = new_node(p, w, plen, flag, limit);
	return 0;
}

static void trie_reset(struct cl_policy *p)
{
	p->nnodes = 1;
	p->root[0] = p->root[1] = 0;
}

/* Duplicates cannot occur: each kind comes from one checked layer. */
static void trie_rebuild(struct cl_settings *s)
{
	uint32_t i;
	uint64_t w[2];

	trie_reset(&s->policy);
	for (i = 0; i < s->ncidr; i++) {
		const struct cl_cidr *e = &s->cidr[i];

		key_words(&e->net, w);
		trie_insert(&s->policy, w, e->plen,
			    e->exempt ? CL_PN_EXEMPT : CL_PN_LIMIT, e->limit);
	}
}

uint32_t cl_policy_lookup(const struct cl_policy *p, const struct cl_key *k,
			  uint32_t default_limit, int *exempt)
{
	const struct cl_pnode *n, *best = NULL;
	uint64_t w[2];
	uint32_t i;

	key_words(k, w);
	i = p->root[words_v4(w) ? 0 : 1];
	while (i) {
		n = &p->node[i];
		if (common_len(n->w, w) < n->plen)
			break;
		if (n->flags)
			best = n;
		if (n->plen >= 128)
			break;
		i = n->child[bit_at(w, n->plen)];
	}
	*exempt = best && (best->flags & CL_PN_EXEMPT);
	if (!best)
		return default_limit;
	return *exempt ? 0 : best->limit;
}

int cl_ports_match(const struct cl_ports *p, uint16_t port)
{
	int listed;

	if (p->mode == CL_PORTS_ALL)
		return 1;
	listed = (int)(p->bits[port / 64] >> (port % 64) & 1);
	return p->mode == CL_PORTS_ONLY ? listed : !listed;
}

/* ---- the network list ---- */

static const struct cl_cidr *find_cidr(const struct cl_settings *s,
				       const struct cl_key *net,
				       unsigned plen, int exempt)
{
	uint32_t i;

	for (i = 0; i < s->ncidr; i++) {
		const struct cl_cidr *e = &s->cidr[i];

		if (e->plen == plen && e->exempt == exempt &&
		    memcmp(&e->net, net, sizeof *net) == 0)
			return e;
	}
	return NULL;
}

/* Only on the error path: a linear search for where it came first. */
static int fail_dup(struct pctx *c, struct sl text, const struct cl_key *net,
		    unsigned plen, int exempt)
{
	const struct cl_cidr *e = find_cidr(c->s, net, plen, exempt);
	char buf[128];
	struct wb w = { buf, sizeof buf, 0 };

	w_str(&w, "each network once");
	w_first(&w, c, e ? e->line : 0);
	w_end(&w);
	return fail(c, text, buf);
}

static int add_cidr(struct pctx *c, struct sl text, const struct cl_key *net,
		    unsigned plen, int exempt, uint32_t limit)
{
	struct cl_settings *s = c->s;
	struct cl_cidr *e;
	uint64_t w[2];

	if (s->ncidr >= CL_MAX_CIDRS)
		return fail(c, text, "at most " STR(CL_MAX_CIDRS)
			    " networks in exempt and limit together");
	key_words(net, w);
	if (trie_insert(&s->policy, w, plen,
			exempt ? CL_PN_EXEMPT : CL_PN_LIMIT, limit) < 0)
		return fail_dup(c, text, net, plen, exempt);
	e = &s->cidr[s->ncidr++];
	e->net = *net;
	e->limit = limit;
	e->line = c->line;
	e->plen = (uint8_t)plen;
	e->exempt = (uint8_t)exempt;
	return 0;
}

/* Keep the entries for which keep[exempt] is set; the trie is stale. */
static void keep_kinds(struct cl_settings *s, const int keep[2])
{
	uint32_t i, j = 0;

	for (i = 0; i < s->ncidr; i++)
		if (keep[s->cidr[i].exempt])
			s->cidr[j++] = s->cidr[i];
	s->ncidr = j;
}

/* A network as an exempt item, a limit line or a CONNLIMIT_LIMITS item. */
static int cidr_item(struct pctx *c, struct sl text, int exempt,
		     uint32_t limit)
{
	struct cl_key net;
	unsigned plen;
	char buf[128];
	struct wb w = { buf, sizeof buf, 0 };
	int r = cl_cidr_parse(text.p, text.n, &net, &plen);

	if (r == -1)
		return fail(c, text, "an IPv4 or IPv6 address or network, "
			    "such as 10.0.0.0/8, 192.0.2.7 or 2001:db8::/32");
	if (r == -2) {
		key_mask(&net, plen);
		w_str(&w, "a network address with no bits set past the "
		      "prefix: ");
		w_cidr(&w, &net, plen);
		w_end(&w);
		return fail(c, text, buf);
	}
	return add_cidr(c, text, &net, plen, exempt, limit);
}

/* ---- setting values ---- */

#define LIMIT_EXPECTED "an integer from 0 (unlimited) to 4294967294"

/* Call @fn on each comma-separated item, trimmed; "" has no items. */
static int each_item(struct pctx *c, struct sl v,
		     int (*fn)(struct pctx *, struct sl))
{
	size_t i = 0, start;
	struct sl item;

	if (v.n == 0)
		return 0;
	for (;;) {
		for (start = i; i < v.n && v.p[i] != ','; i++)
			;
		item = trim(mksl(v.p + start, i - start));
		if (item.n == 0)
			return fail(c, v, "a comma-separated list without "
				    "empty items");
		if (fn(c, item) < 0)
			return -1;
		if (i == v.n)
			return 0;
		i++;
	}
}

static int u32_value(struct pctx *c, struct sl v, uint32_t lo, uint32_t hi,
		     const char *expected, uint32_t *out)
{
	return sl_u32(v, lo, hi, out) < 0 ? fail(c, v, expected) : 0;
}

static int set_max_per_ip(struct pctx *c, struct sl v)
{
	return u32_value(c, v, 0, CL_UNLIMITED_MAX, LIMIT_EXPECTED,
			 &c->s->max_per_ip);
}

static int set_max_total(struct pctx *c, struct sl v)
{
	return u32_value(c, v, 0, CL_UNLIMITED_MAX,
			 "an integer from 0 (no cap) to 4294967294",
			 &c->s->max_total);
}

static int set_capacity(struct pctx *c, struct sl v)
{
	return u32_value(c, v, 64, 1u << 24,
			 "an integer from 64 to 16777216", &c->s->capacity);
}

static int set_ipv4_prefix(struct pctx *c, struct sl v)
{
	uint32_t n = 0;

	if (u32_value(c, v, 0, 32, "an integer from 0 to 32", &n) < 0)
		return -1;
	c->s->ipv4_prefix = (uint8_t)n;
	return 0;
}

static int set_ipv6_prefix(struct pctx *c, struct sl v)
{
	uint32_t n = 0;

	if (u32_value(c, v, 0, 128, "an integer from 0 to 128", &n) < 0)
		return -1;
	c->s->ipv6_prefix = (uint8_t)n;
	return 0;
}

static int set_strict(struct pctx *c, struct sl v)
{
	uint32_t n = 0;

	if (u32_value(c, v, 0, 1, "0 or 1", &n) < 0)
		return -1;
	c->s->strict = (uint8_t)n;
	return 0;
}

static const char *const action_names[] = { "reset", "close", "message" };
static const char *const mode_names[] = { "enforce", "monitor" };
static const char *const level_names[] = { "error", "warn", "info",
					   "debug" };

static int pick(struct pctx *c, struct sl v, const char *const *names,
		int count, const char *expected, uint8_t *out)
{
	int i;

	for (i = 0; i < count; i++) {
		if (sl_is(v, names[i])) {
			*out = (uint8_t)i;
			return 0;
		}
	}
	return fail(c, v, expected);
}

static int set_action(struct pctx *c, struct sl v)
{
	return pick(c, v, action_names, 3, "reset, close or message",
		    &c->s->action);
}

static int set_mode(struct pctx *c, struct sl v)
{
	return pick(c, v, mode_names, 2, "enforce or monitor", &c->s->mode);
}

static int set_log_level(struct pctx *c, struct sl v)
{
	return pick(c, v, level_names, 4, "error, warn, info or debug",
		    &c->s->log_level);
}

/* Quotes and control bytes are refused so that the path prints as-is. */
static int set_log(struct pctx *c, struct sl v)
{
	struct cl_settings *s = c->s;
	size_t i;

	if (sl_is(v, "stderr")) {
		s->log_to = CL_LOGTO_STDERR;
		return 0;
	}
	if (sl_is(v, "syslog")) {
		s->log_to = CL_LOGTO_SYSLOG;
		return 0;
	}
	for (i = 0; i < v.n; i++)
		if ((unsigned char)v.p[i] < 0x20 || v.p[i] == 0x7f ||
		    v.p[i] == '"')
			break;
	if (v.n == 0 || v.p[0] != '/' || v.n >= CL_LOG_PATH_MAX || i < v.n)
		return fail(c, v, "stderr, syslog or an absolute path of at "
			    "most 1023 bytes without quotes or control "
			    "characters");
	memcpy(s->log_path, v.p, v.n);
	s->log_path[v.n] = '\0';
	s->log_to = CL_LOGTO_FILE;
	return 0;
}

static int set_zone(struct pctx *c, struct sl v)
{
	size_t i;

	for (i = 0; i < v.n; i++) {
		char ch = v.p[i];

		if (!(ch >= 'a' && ch <= 'z') && !(ch >= 'A' && ch <= 'Z') &&
		    !(ch >= '0' && ch <= '9') && ch != '-' && ch != '_' &&
		    ch != '.')
			break;
	}
	if (v.n == 0 || v.n >= CL_ZONE_MAX || v.p[0] == '.' || i < v.n)
		return fail(c, v, "1 to 47 of [A-Za-z0-9._-], not starting "
			    "with '.'");
	memcpy(c->s->zone, v.p, v.n);
	c->s->zone[v.n] = '\0';
	return 0;
}

static int port_item(struct pctx *c, struct sl item)
{
	struct cl_ports *p = &c->s->ports;
	int except = item.p[0] == '!';
	uint32_t port;

	if (p->mode != CL_PORTS_ALL &&
	    p->mode != (except ? CL_PORTS_EXCEPT : CL_PORTS_ONLY))
		return fail(c, item, "either ports to limit (80, 443) or "
			    "ports to leave alone (!8080, !8443), not both");
	p->mode = except ? CL_PORTS_EXCEPT : CL_PORTS_ONLY;
	if (sl_u32(mksl(item.p + except, item.n - (size_t)except), 1, 65535,
		   &port) < 0)
		return fail(c, item, "a port from 1 to 65535, or !port to "
			    "leave that port alone");
	if (p->bits[port / 64] >> (port % 64) & 1)
		return fail(c, item, "each port once");
	p->bits[port / 64] |= 1ULL << (port % 64);
	return 0;
}

static int set_ports(struct pctx *c, struct sl v)
{
	memset(c->s->ports.bits, 0, sizeof c->s->ports.bits);
	c->s->ports.mode = CL_PORTS_ALL;
	return each_item(c, v, port_item);
}

static int exempt_item(struct pctx *c, struct sl item)
{
	return cidr_item(c, item, 1, 0);
}

static int set_exempt(struct pctx *c, struct sl v)
{
	return each_item(c, v, exempt_item);
}

/* CONNLIMIT_LIMITS="10.1.0.0/16=50, 2001:db8::/32=5" */
static int limit_item(struct pctx *c, struct sl item)
{
	const char *eq = memchr(item.p, '=', item.n);
	uint32_t limit = 0;
	struct sl n;

	if (!eq)
		return fail(c, item, "network=N, such as 10.1.0.0/16=50");
	n = trim(mksl(eq + 1, item.n - (size_t)(eq - item.p) - 1));
	if (u32_value(c, n, 0, CL_UNLIMITED_MAX, LIMIT_EXPECTED, &limit) < 0)
		return -1;
	return cidr_item(c, trim(mksl(item.p, (size_t)(eq - item.p))), 0,
			 limit);
}

static int set_limits(struct pctx *c, struct sl v)
{
	return each_item(c, v, limit_item);
}

/* ---- the message ---- */

static int escape(struct pctx *c, struct sl v, struct sl body, size_t *i,
		  char *out)
{
	static const char from[] = "rnt\\\"", to[] = "\r\n\t\\\"";
	const char *hit;
	int hi, lo;

	if (++*i < body.n &&
	    (hit = memchr(from, body.p[*i], sizeof from - 1))) {
		*out = to[hit - from];
		return 0;
	}
	if (*i + 2 < body.n && body.p[*i] == 'x' &&
	    (hi = hex_digit(body.p[*i + 1])) >= 0 &&
	    (lo = hex_digit(body.p[*i + 2])) >= 0) {
		*i += 2;
		*out = (char)(hi << 4 | lo);
		return 0;
	}
	return fail(c, v, "text whose only escapes are \\r \\n \\t \\\\ \\\" "
		    "and \\xHH");
}

static int decode(struct pctx *c, struct sl v, struct sl body)
{
	struct cl_settings *s = c->s;
	size_t i, n = 0;
	char ch;

	for (i = 0; i < body.n; i++) {
		ch = body.p[i];
		if (ch == '\\' && escape(c, v, body, &i, &ch) < 0)
			return -1;
		if (n == CL_MESSAGE_MAX)
			return fail(c, v, "at most " STR(CL_MESSAGE_MAX)
				    " bytes once escapes are decoded");
		s->message[n++] = ch;
	}
	s->message_len = (uint32_t)n;
	return 0;
}

/*
 * A file or inline message is double-quoted; a CONNLIMIT_MESSAGE need
 * not be, since unit files and shells strip one level of quotes.
 */
static int set_message(struct pctx *c, struct sl v)
{
	size_t i;

	if (c->env && (v.n == 0 || v.p[0] != '"'))
		return decode(c, v, v);
	if (v.n == 0 || v.p[0] != '"')
		return fail(c, v, "a double-quoted string such as \"Too many "
			    "connections\\r\\n\"");
	for (i = 1; i < v.n && v.p[i] != '"'; i++)
		if (v.p[i] == '\\')
			i++;
	if (i >= v.n)
		return fail(c, v, "a closing double quote on the same line");
	if (i != v.n - 1)
		return fail(c, v, "nothing but a # comment after the closing "
			    "double quote");
	return decode(c, v, mksl(v.p + 1, i - 1));
}

/* ---- statements ---- */

struct setting {
	const char *name;	/* env: CONNLIMIT_ and this in upper case */
	int (*parse)(struct pctx *c, struct sl v);
};

/* Indexed by CL_S_*.  "limits" is only an environment name. */
static const struct setting table[CL_S_COUNT] = {
	[CL_S_MAX_PER_IP] = { "max_per_ip", set_max_per_ip },
	[CL_S_EXEMPT] = { "exempt", set_exempt },
	[CL_S_LIMITS] = { "limits", set_limits },
	[CL_S_IPV4_PREFIX] = { "ipv4_prefix", set_ipv4_prefix },
	[CL_S_IPV6_PREFIX] = { "ipv6_prefix", set_ipv6_prefix },
	[CL_S_PORTS] = { "ports", set_ports },
	[CL_S_MAX_TOTAL] = { "max_total", set_max_total },
	[CL_S_ACTION] = { "action", set_action },
	[CL_S_MESSAGE] = { "message", set_message },
	[CL_S_MODE] = { "mode", set_mode },
	[CL_S_LOG] = { "log", set_log },
	[CL_S_LOG_LEVEL] = { "log_level", set_log_level },
	[CL_S_STRICT] = { "strict", set_strict },
	[CL_S_CAPACITY] = { "capacity", set_capacity },
	[CL_S_ZONE] = { "zone", set_zone },
};

static void mark_set(struct cl_settings *s, int id, uint32_t line)
{
	if (!(s->set & BIT(id)))
		s->line[id] = line;
	s->set |= BIT(id);
}

/* limit CIDR = N */
static int limit_line(struct pctx *c, struct sl cidr, struct sl v)
{
	uint32_t limit = 0;

	c->name = mksl("limit", 5);
	if (u32_value(c, v, 0, CL_UNLIMITED_MAX, LIMIT_EXPECTED, &limit) < 0)
		return -1;
	if (cidr_item(c, cidr, 0, limit) < 0)
		return -1;
	mark_set(c->s, CL_S_LIMITS, c->line);
	return 0;
}

static int file_setting(struct sl name)
{
	int id;

	for (id = 0; id < CL_S_COUNT; id++)
		if (id != CL_S_LIMITS && sl_is(name, table[id].name))
			return id;
	return -1;
}

static int repeated(struct pctx *c, int id, struct sl v)
{
	char buf[128];
	struct wb w = { buf, sizeof buf, 0 };

	w_str(&w, "each setting once");
	w_first(&w, c, c->s->line[id]);
	w_end(&w);
	return fail(c, v, buf);
}

static int statement(struct pctx *c, struct sl st)
{
	const char *eq = memchr(st.p, '=', st.n);
	struct sl name, v;
	size_t i;
	int id;

	if (!eq) {
		for (i = 0; i < st.n && !is_blank(st.p[i]); i++)
			;
		c->name = mksl(st.p, i);
		return fail(c, st, "a line of the form name = value");
	}
	name = trim(mksl(st.p, (size_t)(eq - st.p)));
	v = trim(mksl(eq + 1, st.n - (size_t)(eq - st.p) - 1));
	if (name.n > 5 && memcmp(name.p, "limit", 5) == 0 &&
	    is_blank(name.p[5]))
		return limit_line(c, trim(mksl(name.p + 5, name.n - 5)), v);
	c->name = name;
	if (sl_is(name, "limit"))
		return fail(c, v, "limit CIDR = N, such as "
			    "limit 10.1.0.0/16 = 50");
	if ((id = file_setting(name)) < 0)
		return fail(c, v, "a known setting: max_per_ip, exempt, limit "
			    "CIDR, ipv4_prefix, ipv6_prefix, ports, max_total, "
			    "action, message, mode, log, log_level, strict, "
			    "capacity or zone");
	if (c->s->set & BIT(id))
		return repeated(c, id, v);
	if (table[id].parse(c, v) < 0)
		return -1;
	mark_set(c->s, id, c->line);
	return 0;
}

/*
 * The next statement from *pos: it ends at a newline, or at ';' in the
 * inline form, except inside double quotes, where a backslash also
 * protects the next byte.  '#' outside quotes starts a comment that runs
 * to the same end.  Returns the statement without its comment.
 */
static struct sl next_statement(const char *t, size_t len, size_t *pos,
				int inline_form)
{
	enum { TEXT, QUOTED, COMMENT } st = TEXT;
	size_t i, start = *pos, end = 0;

	for (i = start; i < len; i++) {
		char ch = t[i];

		if (ch == '\n' || (ch == ';' && inline_form && st != QUOTED))
			break;
		if (st == QUOTED) {
			if (ch == '\\' && i + 1 < len && t[i + 1] != '\n')
				i++;
			else if (ch == '"')
				st = TEXT;
		} else if (st == TEXT && ch == '"') {
			st = QUOTED;
		} else if (st == TEXT && ch == '#') {
			st = COMMENT;
			end = i;
		}
	}
	*pos = i + 1;
	return mksl(t + start, (st == COMMENT ? end : i) - start);
}

int cl_settings_parse(struct cl_settings *out, const char *text,
		      size_t len, int inline_form, struct cl_perr *err)
{
	struct pctx c = { out, err, 0, inline_form, 0, { "", 0 } };
	size_t pos = 0;
	struct sl st;

	cl_settings_init(out);
	while (pos < len) {
		st = trim(next_statement(text, len, &pos, inline_form));
		c.line++;
		if (st.n && statement(&c, st) < 0)
			return -1;
	}
	return 0;
}

/* ---- the environment ---- */

/* CONNLIMIT_MAX_PER_IP -> CL_S_MAX_PER_IP; -1 for anything else. */
static int env_setting(const char *env_name)
{
	const char *rest = env_name + 10;
	size_t i;
	int id;

	if (strncmp(env_name, "CONNLIMIT_", 10) != 0)
		return -1;
	for (id = 0; id < CL_S_COUNT; id++) {
		const char *n = table[id].name;

		for (i = 0; n[i] && rest[i] == n[i] - (n[i] >= 'a' ? 32 : 0);
		     i++)
			;
		if (!n[i] && !rest[i])
			return id;
	}
	return -1;
}

int cl_settings_env_one(struct cl_settings *out, const char *env_name,
			const char *value, struct cl_perr *err)
{
	struct pctx c = { out, err, 0, 0, 1, { env_name, strlen(env_name) } };
	struct sl v = trim(mksl(value, strlen(value)));
	int id = env_setting(env_name);
	int keep[2] = { id != CL_S_LIMITS, id != CL_S_EXEMPT };

	if (id < 0)
		return fail(&c, v, "CONNLIMIT_ and a setting name in upper "
			    "case, such as CONNLIMIT_MAX_PER_IP or "
			    "CONNLIMIT_LIMITS");
	if ((id == CL_S_EXEMPT || id == CL_S_LIMITS) && (out->set & BIT(id))) {
		keep_kinds(out, keep);
		trie_rebuild(out);
	}
	if (table[id].parse(&c, v) < 0)
		return -1;
	out->set |= BIT(id);
	out->line[id] = 0;
	return 0;
}

/* ---- layers ---- */

void cl_settings_init(struct cl_settings *s)
{
	s->set = 0;
	memset(s->line, 0, sizeof s->line);
	s->max_per_ip = 100;
	s->max_total = 0;
	s->capacity = 65536;
	s->ipv4_prefix = 32;
	s->ipv6_prefix = 128;
	s->action = CL_ACTION_RESET;
	s->mode = CL_MODE_ENFORCE;
	s->log_to = CL_LOGTO_STDERR;
	s->log_level = CL_LOG_WARN;
	s->strict = 0;
	s->zone[0] = '\0';
	s->log_path[0] = '\0';
	s->message_len = 0;
	s->ports.mode = CL_PORTS_ALL;	/* bits are read only otherwise */
	s->ncidr = 0;
	trie_reset(&s->policy);
}

static void copy_scalar(struct cl_settings *d, const struct cl_settings *s,
			int id)
{
	switch (id) {
	case CL_S_MAX_PER_IP: d->max_per_ip = s->max_per_ip; break;
	case CL_S_IPV4_PREFIX: d->ipv4_prefix = s->ipv4_prefix; break;
	case CL_S_IPV6_PREFIX: d->ipv6_prefix = s->ipv6_prefix; break;
	case CL_S_PORTS: d->ports = s->ports; break;
	case CL_S_MAX_TOTAL: d->max_total = s->max_total; break;
	case CL_S_ACTION: d->action = s->action; break;
	case CL_S_MODE: d->mode = s->mode; break;
	case CL_S_LOG_LEVEL: d->log_level = s->log_level; break;
	case CL_S_STRICT: d->strict = s->strict; break;
	case CL_S_CAPACITY: d->capacity = s->capacity; break;
	case CL_S_ZONE: memcpy(d->zone, s->zone, sizeof d->zone); break;
	case CL_S_LOG:
		d->log_to = s->log_to;
		memcpy(d->log_path, s->log_path, strlen(s->log_path) + 1);
		break;
	case CL_S_MESSAGE:
		d->message_len = s->message_len;
		memcpy(d->message, s->message, s->message_len);
		break;
	}
}

/* The networks of the kinds @src sets replace those of @dst. */
static int overlay_cidrs(struct cl_settings *dst,
			 const struct cl_settings *src, struct cl_perr *err)
{
	int keep[2] = { !(src->set & BIT(CL_S_LIMITS)),
			!(src->set & BIT(CL_S_EXEMPT)) };
	uint32_t i, kept = 0;

	for (i = 0; i < dst->ncidr; i++)
		kept += (uint32_t)keep[dst->cidr[i].exempt];
	if ((uint64_t)kept + src->ncidr > CL_MAX_CIDRS) {
		struct pctx c = { dst, err, 0, 0, 0, { "limit", 5 } };

		return fail(&c, mksl("", 0), "at most " STR(CL_MAX_CIDRS)
			    " networks in exempt and limit together, over "
			    "all layers");
	}
	keep_kinds(dst, keep);
	memcpy(dst->cidr + dst->ncidr, src->cidr,
	       src->ncidr * sizeof *src->cidr);
	dst->ncidr += src->ncidr;
	trie_rebuild(dst);
	return 0;
}

int cl_settings_overlay(struct cl_settings *dst,
			const struct cl_settings *src, struct cl_perr *err)
{
	int id;

	if ((src->set & (BIT(CL_S_EXEMPT) | BIT(CL_S_LIMITS))) &&
	    overlay_cidrs(dst, src, err) < 0)
		return -1;
	for (id = 0; id < CL_S_COUNT; id++) {
		if (!(src->set & BIT(id)))
			continue;
		copy_scalar(dst, src, id);
		dst->line[id] = src->line[id];
	}
	dst->set |= src->set;
	return 0;
}

int cl_settings_check(const struct cl_settings *s, struct cl_perr *err)
{
	struct pctx c = { NULL, err, s->line[CL_S_ACTION], 0, 0,
			  { "action", 6 } };

	if (s->action == CL_ACTION_MESSAGE && s->message_len == 0)
		return fail(&c, mksl("message", 7), "a non-empty message "
			    "setting when action = message");
	return 0;
}

/* ---- printing ---- */

static void w_message(struct wb *w, const struct cl_settings *s)
{
	static const char hex[] = "0123456789abcdef";
	uint32_t i;
	char e[4] = { '\\', 'x', 0, 0 };

	w_str(w, "\"");
	for (i = 0; i < s->message_len; i++) {
		unsigned char ch = (unsigned char)s->message[i];

		if (ch == '"' || ch == '\\') {
			e[1] = (char)ch;
			w_mem(w, e, 2);
		} else if (ch == '\r' || ch == '\n' || ch == '\t') {
			e[1] = ch == '\r' ? 'r' : ch == '\n' ? 'n' : 't';
			w_mem(w, e, 2);
		} else if (ch < 0x20 || ch == 0x7f) {
			e[1] = 'x';
			e[2] = hex[ch >> 4];
			e[3] = hex[ch & 15];
			w_mem(w, e, 4);
		} else {
			w_mem(w, (const char *)&ch, 1);
		}
	}
	w_str(w, "\"");
}

static void w_ports(struct wb *w, const struct cl_ports *p)
{
	const char *sep = "";
	uint32_t port;

	if (p->mode == CL_PORTS_ALL)
		return;
	for (port = 1; port < 65536; port++) {
		if (!(p->bits[port / 64] >> (port % 64) & 1))
			continue;
		w_str(w, sep);
		w_str(w, p->mode == CL_PORTS_EXCEPT ? "!" : "");
		w_u32(w, port);
		sep = ", ";
	}
}

static void w_cidrs(struct wb *w, const struct cl_settings *s, int exempt)
{
	const char *sep = "";
	uint32_t i;

	for (i = 0; i < s->ncidr; i++) {
		const struct cl_cidr *e = &s->cidr[i];

		if (e->exempt != exempt)
			continue;
		w_str(w, exempt ? sep : "limit ");
		w_cidr(w, &e->net, e->plen);
		if (!exempt) {
			w_str(w, "=");
			w_u32(w, e->limit);
			w_str(w, "\n");
		}
		sep = ", ";
	}
}

static void w_value(struct wb *w, const struct cl_settings *s, int id)
{
	switch (id) {
	case CL_S_MAX_PER_IP: w_u32(w, s->max_per_ip); break;
	case CL_S_EXEMPT: w_cidrs(w, s, 1); break;
	case CL_S_IPV4_PREFIX: w_u32(w, s->ipv4_prefix); break;
	case CL_S_IPV6_PREFIX: w_u32(w, s->ipv6_prefix); break;
	case CL_S_PORTS: w_ports(w, &s->ports); break;
	case CL_S_MAX_TOTAL: w_u32(w, s->max_total); break;
	case CL_S_ACTION: w_str(w, action_names[s->action]); break;
	case CL_S_MESSAGE: w_message(w, s); break;
	case CL_S_MODE: w_str(w, mode_names[s->mode]); break;
	case CL_S_LOG_LEVEL: w_str(w, level_names[s->log_level]); break;
	case CL_S_STRICT: w_u32(w, s->strict); break;
	case CL_S_CAPACITY: w_u32(w, s->capacity); break;
	case CL_S_ZONE: w_str(w, s->zone); break;
	case CL_S_LOG:
		w_str(w, s->log_to == CL_LOGTO_FILE ? s->log_path :
			 s->log_to == CL_LOGTO_SYSLOG ? "syslog" : "stderr");
		break;
	}
}

/* The default zone has no name to print, so it is left out. */
size_t cl_settings_format(const struct cl_settings *s, int only_set,
			  char *buf, size_t n)
{
	struct wb w = { buf, n, 0 };
	int id;

	for (id = 0; id < CL_S_COUNT; id++) {
		if (only_set && !(s->set & BIT(id)))
			continue;
		if (id == CL_S_LIMITS) {
			w_cidrs(&w, s, 0);
			continue;
		}
		if (id == CL_S_ZONE && !s->zone[0])
			continue;
		w_str(&w, table[id].name);
		w_str(&w, "=");
		w_value(&w, s, id);
		w_str(&w, "\n");
	}
	w_end(&w);
	return w.len;
}
