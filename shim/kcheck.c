/*
 * kcheck.c - release counted connections that no process holds any more.
 *
 * The library cannot see every way a socket goes away: a holder killed
 * with SIGKILL, syscall(SYS_close), an exec'd child, a descriptor passed
 * to another process.  Like the kernel's nf_conncount, it therefore never
 * trusts its own records when they matter: before a client is refused,
 * when a descriptor that other processes may share is closed, and a few
 * clients at a time from the accept path, it asks NETLINK_SOCK_DIAG for
 * the client's TCP sockets.  A record whose socket is missing, or present
 * with inode 0 (orphaned: no descriptor anywhere), is released.
 */
#include <errno.h>
#include <string.h>
#include <sys/socket.h>

#include "cl.h"
#include "diag.h"

/* Records checked per call: bounded work, and bounded stack for a close
 * called from a signal handler on a small alternate stack. */
#define MAX_WANT 64
#define RECONCILE_MS 1000

struct want {
	uint32_t idx, gen;
	uint64_t born;
	uint32_t inode;		/* the live socket it matched, 0 if none */
	uint16_t pport, lport;
	uint8_t peer[16];
	uint8_t family;
};

struct wants {
	struct want *w;
	int n, cap;
};

static int kcheck_off;

int cl_kcheck_available(void)
{
	return !LOAD(&kcheck_off);
}

static void kcheck_disable(const char *why, int err)
{
	struct cl_line l;
	int zero = 0;

	if (!CAS(&kcheck_off, &zero, 1))
		return;
	cl_line_start(&l, "warn event=kernel-check-unavailable");
	cl_line_kq(&l, "reason", why);
	cl_line_ku(&l, "errno", (uint64_t)err);
	cl_line_kq(&l, "fallback", "a close releases its slot at once; "
		   "fork-per-connection servers are not limited");
	cl_line_emit(&l, CL_LOG_WARN);
}

static void want_add(struct wants *ws, const struct cl_conn *c,
		     uint32_t idx, uint32_t s)
{
	struct want *w = &ws->w[ws->n++];

	w->idx = idx;
	w->gen = CL_RS_GEN(s);
	w->born = c->born_ms;
	w->inode = 0;
	w->pport = c->peer_port;
	w->lport = c->local_port;
	w->family = c->family;
	memcpy(w->peer, c->peer, 16);
}

/* Gather the client's live records (or just one) into @ws. */
static void collect(struct cl_zone *z, uint32_t client, int only_idx,
		    uint32_t only_gen, struct wants *ws)
{
	uint32_t i, end = LOAD(&z->hdr->conn_hwm), s;

	ws->n = 0;
	if (only_idx >= 0)
		end = (uint32_t)only_idx + 1;
	for (i = only_idx >= 0 ? (uint32_t)only_idx : 0;
	     i < end && ws->n < ws->cap; i++) {
		const struct cl_conn *c = &z->conns[i];

		s = LOAD(&c->state);
		if (CL_RS_ST(s) != CL_RS_LIVE || LOAD(&c->client) != client)
			continue;
		if (only_idx >= 0 && CL_RS_GEN(s) != (only_gen & CL_GEN_MASK))
			continue;
		want_add(ws, c, i, s);
	}
}

static void match(void *arg, const struct inet_diag_msg *m)
{
	struct wants *ws = arg;
	int i;

	for (i = 0; i < ws->n; i++)
		if (cl_diag_holds(m, ws->w[i].family, ws->w[i].peer,
				  ws->w[i].pport, ws->w[i].lport))
			ws->w[i].inode = m->idiag_inode;
}

/* Two records on one live socket: the older one is stale (port reuse). */
static void drop_duplicates(struct wants *ws)
{
	int i, j;

	for (i = 0; i < ws->n; i++)
		for (j = 0; j < ws->n; j++)
			if (i != j && ws->w[i].inode &&
			    ws->w[i].inode == ws->w[j].inode &&
			    ws->w[i].born < ws->w[j].born)
				ws->w[i].inode = 0;
}

/*
 * Out of descriptors or memory, or interrupted: this check is skipped,
 * the next one will be made.  Anything else (EPERM from seccomp,
 * EPROTONOSUPPORT without INET_DIAG) will not change: stop asking.
 */
static int transient(int err)
{
	return err == EMFILE || err == ENFILE || err == ENOBUFS ||
	       err == ENOMEM || err == EINTR || err == EAGAIN;
}

/* One dump per socket family among the records of client @client. */
static int ask_kernel(struct cl_zone *z, uint32_t client, struct wants *ws)
{
	struct cl_client *c = cl_zone_client(z, client);
	unsigned plen = LOAD(&c->plen);
	int i, r, fam, done4 = 0, done6 = 0;
	struct cl_key net;

	for (i = 0; i < ws->n; i++) {
		fam = ws->w[i].family;
		if (fam == AF_INET ? done4 : done6)
			continue;
		cl_zone_count(z, CLC_KCHECKS);
		/* The key is the client's network; a single peer would do
		 * for /128 keys, the network covers prefixed ones too. */
		memcpy(net.b, ws->w[i].peer, 16);
		if (plen && plen < 128)
			cl_key_apply_prefix128(&net, plen);
		else
			plen = 128;
		r = cl_diag_dump(fam, net.b, plen, match, ws);
		if (r < 0 && transient(-r))
			return -2;
		if (r < 0) {
			kcheck_disable("sock_diag dump failed", -r);
			return -1;
		}
		*(fam == AF_INET ? &done4 : &done6) = 1;
	}
	return 0;
}

/*
 * A count higher than the client's live records, seen twice at least
 * RECONCILE_MS apart: a process died inside an admission, after taking
 * the client's unit and before its record went live.  No record can
 * ever release that unit, so give it back here.  (A live admission is in
 * that window for a microsecond; the same excess twice a second apart
 * is a leak.)  Only when the check saw every record of the client.
 */
static void reconcile(struct cl_zone *z, uint32_t client, uint32_t live)
{
	struct cl_client *c = cl_zone_client(z, client);
	uint32_t count = CL_CS_COUNT(LOAD(&c->state)), now = cl_now_ms() | 1;
	uint32_t since = LOAD(&c->excess_ms), prev = LOAD(&c->excess), n;
	struct cl_line l;

	n = count > live ? count - live : 0;
	if (!n || !since || !prev) {
		STORE(&c->excess, n);
		STORE(&c->excess_ms, n ? now : 0);
		return;
	}
	if (now - since < RECONCILE_MS)
		return;
	n = n < prev ? n : prev;
	cl_client_put(c, n);
	cl_total_put(z->hdr, n);	/* taken in the same admission */
	STORE(&c->excess_ms, 0);
	STORE(&c->excess, 0);
	cl_line_start(&l, "warn event=count-repaired");
	cl_line_key(&l, "client", (const struct cl_key *)(const void *)c->key);
	cl_line_ku(&l, "units", n);
	cl_line_emit(&l, CL_LOG_WARN);
}

/* Ask the kernel about @ws and release the records nobody holds. */
static int kcheck_run(struct cl_zone *z, uint32_t client, struct wants *ws,
		      int why)
{
	int i, released = 0, r = ask_kernel(z, client, ws);

	if (r < 0)
		return r;
	drop_duplicates(ws);
	for (i = 0; i < ws->n; i++)
		if (!ws->w[i].inode)
			released += cl_zone_release(z, ws->w[i].idx,
						    ws->w[i].gen, why);
	return released;
}

/*
 * Check client @client's live records against the kernel and release
 * those no process holds, counting them under @why.  Returns how many
 * were released; -1 if the kernel cannot be asked (then logged once, and
 * never asked again); -2 if this one check could not be made (no
 * descriptor or memory to spare right now).
 */
int cl_kcheck_client(struct cl_zone *z, uint32_t client, int why)
{
	struct want w[MAX_WANT];
	struct wants ws = { .w = w, .cap = MAX_WANT };

	if (!cl_kcheck_available())
		return -1;
	int r;

	collect(z, client, -1, 0, &ws);
	r = kcheck_run(z, client, &ws, why);
	if (r >= 0 && ws.n < MAX_WANT)
		reconcile(z, client, (uint32_t)(ws.n - r));
	return r;
}

/* The same for the one record @idx of generation @gen. */
int cl_kcheck_record(struct cl_zone *z, uint32_t idx, uint32_t gen, int why)
{
	struct want w[1];
	struct wants ws = { .w = w, .cap = 1 };
	uint32_t client;

	if (!cl_kcheck_available())
		return -1;
	client = LOAD(&z->conns[idx].client);

	collect(z, client, (int)idx, gen, &ws);
	return kcheck_run(z, client, &ws, why);
}
