/*
 * zone.c - admit and release connections in the shared table.
 *
 * Clients live in buckets of CL_SLOTS slots; a lookup scans the key's
 * home bucket and the next one (overflow), never more, so freeing a slot
 * never breaks a probe chain.  Taking and returning a slot
 * on an existing client is one compare-and-swap on its state word.  Only
 * giving a new key a slot takes the bucket's lock, so that two processes
 * cannot insert the same key twice; close never takes a lock.
 */
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <string.h>

#include "cl.h"

static __thread int t_inserting __attribute__((tls_model("initial-exec")));

static void key_load(const struct cl_client *c, uint64_t w[2])
{
	const uint64_t *p = (const uint64_t *)(const void *)c->key;

	w[0] = __atomic_load_n(&p[0], __ATOMIC_RELAXED);
	w[1] = __atomic_load_n(&p[1], __ATOMIC_RELAXED);
}

static void key_store(struct cl_client *c, const struct cl_key *k)
{
	uint64_t *p = (uint64_t *)(void *)c->key;
	uint64_t w[2];

	memcpy(w, k->b, 16);
	__atomic_store_n(&p[0], w[0], __ATOMIC_RELAXED);
	__atomic_store_n(&p[1], w[1], __ATOMIC_RELAXED);
}

/*
 * Find the live slot holding @k.  The key is read between two loads of
 * the state word; an unchanged version proves the key was not rewritten
 * meanwhile (a seqlock without a writer-side counter: writers bump the
 * version before touching the key).
 */
static int client_find(struct cl_bucket *b, const struct cl_key *k,
		       uint64_t *state)
{
	uint64_t want[2], got[2], s;
	int i;

	memcpy(want, k->b, 16);
	for (i = 0; i < CL_SLOTS; i++) {
		s = LOAD(&b->slot[i].state);
		if (CL_CS_KIND(s) != CL_CS_LIVE)
			continue;
		key_load(&b->slot[i], got);
		if (got[0] != want[0] || got[1] != want[1])
			continue;
		if (LOAD(&b->slot[i].state) >> 32 != s >> 32)
			continue;
		*state = s;
		return i;
	}
	return -1;
}

/* 1: taken; 0: at the limit; -1: the slot changed hands, look again. */
static int client_take(struct cl_client *c, uint64_t s, uint32_t limit,
		       uint32_t *open)
{
	uint64_t ver = s >> 32;

	for (;;) {
		if (s >> 32 != ver)
			return -1;
		*open = CL_CS_COUNT(s);
		if (limit && *open >= limit)
			return 0;
		if (CAS(&c->state, &s, s + 1)) {
			*open += 1;
			return 1;
		}
	}
}

static int holder_dead(uint32_t pid)
{
	return pid && kill((pid_t)pid, 0) < 0 && errno == ESRCH;
}

/*
 * The bucket lock guards only the insertion of new keys.  Its word holds
 * the inserting pid so that a process killed inside the few instructions
 * it is held cannot wedge the bucket: a waiter takes over a dead holder's
 * lock.  A signal handler that re-enters while this thread inserts gets
 * -1 (the caller admits uncounted) instead of deadlocking.
 */
static int bucket_lock(struct cl_bucket *b)
{
	uint32_t me = (uint32_t)cl.pid, cur;
	int spins;

	if (t_inserting)
		return -1;
	for (spins = 0; spins < 200000; spins++) {
		cur = 0;
		if (CAS(&b->lock, &cur, me))
			break;
		if (spins % 64 == 63)
			sched_yield();
		if (spins % 4096 == 4095 && cur != me && holder_dead(cur))
			CAS(&b->lock, &cur, 0);
	}
	if (spins == 200000)
		return -1;
	t_inserting = 1;
	return 0;
}

static void bucket_unlock(struct cl_bucket *b)
{
	t_inserting = 0;
	STORE(&b->lock, 0);
}

/* Pick a free slot, else one whose key has no open connection. */
static int slot_pick(struct cl_bucket *b, uint64_t *state)
{
	int i, idle = -1;
	uint64_t s, idle_s = 0;

	for (i = 0; i < CL_SLOTS; i++) {
		s = LOAD(&b->slot[i].state);
		if (CL_CS_KIND(s) == CL_CS_FREE) {
			*state = s;
			return i;
		}
		if (idle < 0 && CL_CS_KIND(s) == CL_CS_LIVE &&
		    CL_CS_COUNT(s) == 0) {
			idle = i;
			idle_s = s;
		}
	}
	*state = idle_s;
	return idle;
}

static void client_reset(struct cl_client *c)
{
	STORE(&c->excess_ms, 0);
	STORE(&c->excess, 0);
	STORE(&c->backoff, 0);
	STORE(&c->verify_ms, 0);
	STORE(&c->log_sec, 0);
	STORE(&c->log_n, 0);
	STORE(&c->log_dropped, 0);
	STORE(&c->refused, 0);
}

/* bucket_lock held.  Returns the slot now holding @k (count 0) or -1. */
static int client_insert_locked(struct cl_bucket *b, const struct cl_key *k,
				unsigned plen)
{
	uint64_t s;
	int i;

	for (;;) {
		i = slot_pick(b, &s);
		if (i < 0)
			return -1;
		uint64_t busy = CL_CS_MAKE(CL_CS_BUSY, CL_CS_VER(s) + 1, 0);

		if (!CAS(&b->slot[i].state, &s, busy))
			continue;	/* an idle slot was taken meanwhile */
		key_store(&b->slot[i], k);
		client_reset(&b->slot[i]);
		STORE(&b->slot[i].plen, plen);
		STORE(&b->slot[i].state,
		      CL_CS_MAKE(CL_CS_LIVE, CL_CS_VER(busy), 0));
		return i;
	}
}

/*
 * Insert @k, whose home is bucket @b, into @b or, when all its slots hold
 * clients with connections, into the next bucket @b2.  The home bucket's
 * lock alone serialises inserts of @k; a slot of @b2 is claimed by CAS,
 * so @b2's own inserters cannot take the same slot.  Returns the slot
 * index (0..2*CL_SLOTS-1, the second half in @b2), or < 0.
 */
static int client_insert(struct cl_bucket *b, struct cl_bucket *b2,
			 const struct cl_key *k, unsigned plen)
{
	uint64_t s;
	int i;

	if (bucket_lock(b) < 0)
		return -2;
	i = client_find(b, k, &s);
	if (i < 0 && (i = client_find(b2, k, &s)) >= 0)
		i += CL_SLOTS;
	if (i < 0)
		i = client_insert_locked(b, k, plen);
	if (i < 0 && (i = client_insert_locked(b2, k, plen)) >= 0)
		i += CL_SLOTS;
	bucket_unlock(b);
	return i;
}

static void hint_lower(struct cl_zone_hdr *h, uint32_t idx)
{
	uint32_t cur = LOAD(&h->conn_hint);

	while (idx < cur && !CAS(&h->conn_hint, &cur, idx))
		;
}

static void hwm_raise(struct cl_zone_hdr *h, uint32_t end)
{
	uint32_t cur = LOAD(&h->conn_hwm);

	while (end > cur && !CAS(&h->conn_hwm, &cur, end))
		;
}

/*
 * Claim a free record, scanning up from the lowest index freed lately
 * so the used part of the table stays compact (kernel checks scan it).
 */
static int conn_alloc(struct cl_zone *z, uint32_t *gen)
{
	struct cl_zone_hdr *h = z->hdr;
	uint32_t n = z->nconns, start = LOAD(&h->conn_hint), i, k, s;

	for (k = 0; k < n; k++) {
		i = (start + k) % n;
		s = LOAD(&z->conns[i].state);
		if (CL_RS_ST(s) != CL_RS_FREE)
			continue;
		if (!CAS(&z->conns[i].state, &s,
			 CL_RS_MAKE(CL_RS_GEN(s), CL_RS_CLAIMED)))
			continue;
		STORE(&h->conn_hint, i + 1);
		hwm_raise(h, i + 1);
		*gen = CL_RS_GEN(s);
		return (int)i;
	}
	return -1;
}

static void conn_fill(struct cl_zone *z, uint32_t idx, uint32_t gen,
		      uint32_t client, const struct cl_peer *p,
		      uint16_t lport)
{
	struct cl_conn *c = &z->conns[idx];

	c->client = client;
	memcpy(c->peer, p->raw, 16);
	c->peer_port = p->port;
	c->local_port = lport;
	c->family = p->family;
	c->pid = (uint32_t)cl.pid;
	c->born_ms = cl_now_ms();
	STORE(&c->state, CL_RS_MAKE(gen, CL_RS_LIVE));
}

/* Take one unit on the client for @k; see cl_zone_admit for results. */
static int client_admit(struct cl_zone *z, const struct cl_key *k,
			unsigned plen, uint32_t limit, struct cl_admit *a)
{
	uint32_t nb = z->nbuckets;
	uint32_t bi = (uint32_t)(cl_key_hash(k, z->hdr->seed) % nb);
	struct cl_bucket *b[2] = { &z->buckets[bi],
				   &z->buckets[(bi + 1) % nb] };
	uint64_t s;
	int i, tries, r, which;

	for (tries = 0; tries < 16; tries++) {
		which = 0;
		i = client_find(b[0], k, &s);
		if (i < 0 && (i = client_find(b[1], k, &s)) >= 0)
			which = 1;
		if (i < 0) {
			if (client_insert(b[0], b[1], k, plen) < 0)
				return CL_UNTRACKED;
			continue;
		}
		a->client = ((bi + (uint32_t)which) % nb) * CL_SLOTS +
			    (uint32_t)i;
		r = client_take(&b[which]->slot[i], s, limit, &a->open);
		if (r >= 0)
			return r ? CL_ADMIT : CL_REFUSE;
	}
	return CL_UNTRACKED;
}

/* Give back @n units of the client's count, never below zero. */
void cl_client_put(struct cl_client *c, uint32_t n)
{
	uint64_t s = LOAD(&c->state);

	do {
		if (CL_CS_COUNT(s) < n)
			n = CL_CS_COUNT(s);
	} while (n && !CAS(&c->state, &s, s - n));
}

/* Reserve one of @max_total connections (0: no cap); 0 if none is left. */
static int total_take(struct cl_zone_hdr *h, uint32_t max_total)
{
	uint32_t cur = LOAD(&h->open_total);

	do {
		if (max_total && cur >= max_total)
			return 0;
	} while (!CAS(&h->open_total, &cur, cur + 1));
	return 1;
}

/* Give back @n units of the total, never below zero. */
void cl_total_put(struct cl_zone_hdr *h, uint32_t n)
{
	uint32_t cur = LOAD(&h->open_total);

	do {
		if (cur < n)
			n = cur;
	} while (n && !CAS(&h->open_total, &cur, cur - n));
}

/*
 * Admit a connection from @p to local port @lport: a unit of the total
 * (at most @max_total, 0 = no cap), a unit of the client's count (at most
 * @limit, 0 = no limit) and a record.  CL_REFUSE_TOTAL and CL_REFUSE say
 * which limit was reached; CL_UNTRACKED that the table had no room.
 */
int cl_zone_admit(struct cl_zone *z, const struct cl_peer *p,
		  uint16_t lport, uint32_t limit, uint32_t max_total,
		  struct cl_admit *a)
{
	int r, idx;

	a->open = LOAD(&z->hdr->open_total);
	if (!total_take(z->hdr, max_total))
		return CL_REFUSE_TOTAL;
	r = client_admit(z, &p->key, p->plen, limit, a);
	if (r != CL_ADMIT) {
		cl_total_put(z->hdr, 1);
		return r;
	}
	idx = conn_alloc(z, &a->gen);
	if (idx < 0) {
		cl_client_put(cl_zone_client(z, a->client), 1);
		cl_total_put(z->hdr, 1);
		return CL_UNTRACKED;
	}
	a->idx = (uint32_t)idx;
	conn_fill(z, a->idx, a->gen, a->client, p, lport);
	return CL_ADMIT;
}

/*
 * Move record @idx from live (generation @gen) to free.  Exactly one
 * caller wins the exchange, and only the winner returns the client's
 * unit, so racing closes, kernel checks and processes release once.
 */
int cl_zone_release(struct cl_zone *z, uint32_t idx, uint32_t gen, int why)
{
	struct cl_conn *c;
	uint32_t client, s;

	if (idx >= z->nconns)
		return 0;
	c = &z->conns[idx];
	client = LOAD(&c->client);
	s = CL_RS_MAKE(gen, CL_RS_LIVE);
	if (!CAS(&c->state, &s, CL_RS_MAKE(gen + 1, CL_RS_FREE)))
		return 0;
	cl_client_put(cl_zone_client(z, client), 1);
	cl_total_put(z->hdr, 1);
	cl_zone_count(z, why);
	hint_lower(z->hdr, idx);
	return 1;
}

void cl_zone_count(struct cl_zone *z, int which)
{
	__atomic_add_fetch(&z->hdr->counter[which], 1, __ATOMIC_RELAXED);
}
