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
#include <sys/stat.h>

#include "cl.h"
#include "diag.h"

/* Records checked per dump: bounded stack for a close called from a
 * signal handler on a small alternate stack.  A client with more records
 * is checked in batches, at most MAX_BATCHES per call. */
#define MAX_WANT 64
#define MAX_BATCHES 2
#define RECONCILE_MS 1000

/* A batch of one client's records, as sock_diag sees them. */
struct wants {
	struct cl_diag_conn *d;
	uint32_t *idx, *gen;
	int n, cap;
	const struct cl_kcheck_how *how;
	uint32_t trusted;	/* records taken as live by how->trust */
	uint64_t self_ino;	/* socket inode of how->self_fd, or 0 */
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

/* The socket inode of @fd, as sock_diag reports it; 0 if unknown. */
static uint64_t inode_of(int fd)
{
	struct stat st;

	return fd >= 0 && fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode) ?
		       (uint64_t)st.st_ino : 0;
}

static void want_add(struct wants *ws, const struct cl_conn *c,
		     uint32_t idx, uint32_t s)
{
	struct cl_diag_conn *d = &ws->d[ws->n];

	ws->idx[ws->n] = idx;
	ws->gen[ws->n] = CL_RS_GEN(s);
	ws->n++;
	d->born = c->born_ms;
	d->hits = 0;
	d->pport = c->peer_port;
	d->lport = c->local_port;
	d->family = c->family;
	memcpy(d->peer, c->peer, 16);
}

/*
 * A record this process admitted and still holds, unshared: its
 * descriptor's entry still names this record and generation, and no
 * fork, dup or sendmsg has happened to it since.  The record's fd is
 * stored before the entry, so a record being admitted is not trusted
 * yet (the entry does not match): the kernel is asked instead.
 */
static int held_here(const struct cl_conn *c, uint32_t idx, uint32_t s)
{
	struct cl_fdent *e;

	if (LOAD(&c->pid) != (uint32_t)cl.pid)
		return 0;
	e = cl_fd_peek(LOAD(&c->fd));
	return e && LOAD(&e->word) == cl_fd_conn_word(idx, CL_RS_GEN(s)) &&
	       !cl_entry_shared(e);
}

/*
 * Add the live records of @client in [*@from, @stop) (or only record
 * @only_idx of generation @only_gen) to @ws, up to ws->cap; *@from
 * moves past what was looked at.
 */
static void collect(struct cl_zone *z, uint32_t client, int only_idx,
		    uint32_t only_gen, uint32_t *from, uint32_t stop,
		    struct wants *ws)
{
	uint32_t i, s;

	if (only_idx >= 0) {
		*from = (uint32_t)only_idx;
		stop = *from + 1;
	}
	for (i = *from; i < stop && ws->n < ws->cap; i++) {
		const struct cl_conn *c = &z->conns[i];

		s = LOAD(&c->state);
		if (CL_RS_ST(s) != CL_RS_LIVE || LOAD(&c->client) != client)
			continue;
		if (only_idx >= 0 && CL_RS_GEN(s) != (only_gen & CL_GEN_MASK))
			continue;
		if (ws->how->trust && held_here(c, i, s)) {
			ws->trusted++;
			continue;
		}
		want_add(ws, c, i, s);
	}
	*from = i;
}

/*
 * The connection being refused is accepted, so live, and not yet anyone's
 * record.  Counted, it would hold a dead record with the same addresses
 * and ports (a client back on its fixed source port after its holder
 * was killed) for ever.  It is told apart by its inode, not its ports:
 * another socket may share those (another local address).
 */
static void match(void *arg, const struct inet_diag_msg *m)
{
	struct wants *ws = arg;

	if (!ws->self_ino || m->idiag_inode != ws->self_ino)
		cl_diag_count(m, ws->d, ws->n);
}

/*
 * Out of descriptors or memory, or interrupted: this check is skipped,
 * the next one will be made.  Anything else (EPERM from seccomp,
 * EPROTONOSUPPORT without INET_DIAG) will not change: stop asking.
 */
static int transient(int err)
{
	/* EBADF: the program closed our netlink socket under us (a double
	 * close in another thread); the next check gets a new one. */
	return err == EMFILE || err == ENFILE || err == ENOBUFS ||
	       err == ENOMEM || err == EINTR || err == EAGAIN ||
	       err == EBADF;
}

/* One dump per socket family among the records of client @client. */
static int ask_kernel(struct cl_zone *z, uint32_t client, struct wants *ws)
{
	struct cl_client *c = cl_zone_client(z, client);
	unsigned plen = LOAD(&c->plen);
	int i, r, fam, done4 = 0, done6 = 0;
	struct cl_key net;

	if (!plen || plen > 128)
		plen = 128;
	for (i = 0; i < ws->n; i++) {
		fam = ws->d[i].family;
		if (fam == AF_INET ? done4 : done6)
			continue;
		cl_zone_count(z, CLC_KCHECKS);
		/* The client's network covers prefixed keys too. */
		memcpy(net.b, ws->d[i].peer, 16);
		cl_key_apply_prefix128(&net, plen);
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
 * A count above zero with no live record, seen twice at least
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

	/* Only for a client none of whose records is live: a busy client's
	 * count moves while its records are scanned (admissions the scan
	 * missed), so any difference there would be noise.  A leaked unit
	 * of a busy client is repaired once its connections have ended. */
	n = live == 0 ? count : 0;
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
	cl_diag_settle(ws->d, ws->n);
	for (i = 0; i < ws->n; i++)
		if (!ws->d[i].held)
			released += cl_zone_release(z, ws->idx[i], ws->gen[i],
						    why);
	return released;
}

/*
 * Check client @client's live records against the kernel and release
 * those no process holds, counting them under @why.  Each batch of
 * MAX_WANT records costs a dump over the host's TCP table, so one call
 * makes at most MAX_BATCHES, starting at a different place each time: a
 * client with more records is covered over several calls.  @how may
 * trust records held_here() as live (then a dump for the others takes
 * from the zone's budget here, and a check that needs none is free) and
 * name a connection being refused.  Returns how
 * many were released; -1 if the kernel cannot be asked (then logged
 * once, and never asked again); -2 if this one check could not be made
 * (no descriptor or memory to spare right now).
 */
int cl_kcheck_client(struct cl_zone *z, uint32_t client, int why,
		     const struct cl_kcheck_how *how)
{
	struct cl_diag_conn d[MAX_WANT];
	uint32_t idx[MAX_WANT], gen[MAX_WANT], live = 0, start, from, stop;
	struct wants ws = { .d = d, .idx = idx, .gen = gen, .cap = MAX_WANT,
			    .how = how };
	uint32_t end = LOAD(&z->hdr->conn_hwm);
	int r, released = 0, batch, wrapped, charged = !ws.how->trust;

	if (!cl_kcheck_available())
		return -1;
	if (end > z->nconns)
		end = z->nconns;
	start = end ? (cl_now_ms() * 2654435761u) % end : 0;
	from = start;
	stop = end;
	wrapped = start == 0;	/* nothing lies before start */
	for (batch = 0; batch < MAX_BATCHES; batch++) {
		ws.n = 0;
		collect(z, client, -1, 0, &from, stop, &ws);
		/* Room left: the part before start joins the same dump. */
		if (from >= stop && !wrapped) {
			from = 0;
			stop = start;
			wrapped = 1;
			collect(z, client, -1, 0, &from, stop, &ws);
		}
		if (ws.n && !charged) {
			if (!cl_check_budget(z->hdr, cl_now_ms()))
				return -2;
			charged = 1;
		}
		if (ws.n && !ws.self_ino)
			ws.self_ino = inode_of(ws.how->self_fd);
		if (ws.n) {
			r = kcheck_run(z, client, &ws, why);
			if (r < 0)
				return r;
			released += r;
			live += (uint32_t)(ws.n - r);
		}
		if (from >= stop && wrapped) {
			/* every record seen */
			reconcile(z, client, live + ws.trusted);
			break;
		}
	}
	return released;
}

/* The same for the one record @idx of generation @gen. */
int cl_kcheck_record(struct cl_zone *z, uint32_t idx, uint32_t gen, int why)
{
	struct cl_diag_conn d[1];
	uint32_t i[1], g[1], from;
	static const struct cl_kcheck_how plain = { 0, -1 };
	struct wants ws = { .d = d, .idx = i, .gen = g, .cap = 1,
			    .how = &plain };
	uint32_t client;

	if (!cl_kcheck_available() || idx >= z->nconns)
		return -1;
	client = LOAD(&z->conns[idx].client);
	collect(z, client, (int)idx, gen, &from, idx + 1, &ws);
	return kcheck_run(z, client, &ws, why);
}
