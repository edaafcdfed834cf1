/*
 * core.c - start-up, fork handling, and the admit / release policy that
 * every wrapper in interpose.c shares.
 *
 * Start-up runs once, from the constructor or from whichever wrapper is
 * called first (sshd closes descriptors before constructors of preloaded
 * libraries have run).  While it runs, a re-entrant or concurrent call
 * passes straight to the kernel: nothing is tracked yet, so nothing can
 * be lost.
 */
#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "cl.h"
#include "policy.h"

/*
 * Kernel checks cost a netlink dump that walks the host's TCP table
 * (milliseconds on a busy host), so they are rationed.  Per client: at
 * most every KCHECK_EVERY_MS, doubling after each check that released
 * nothing, up to KCHECK_EVERY_MS << KCHECK_BACKOFF_MAX (160 ms): a client
 * flooding at its limit is checked about 6 times a second, a client whose
 * holders just died at once.  Per zone: at most KCHECKS_PER_S a second.
 *
 * Past the first KCHECK_BACKOFF_MAX steps the checks of a refusal go
 * round a cycle of KCHECK_FULL_EVERY: the first asks the kernel about
 * every record; the others trust the records this process admitted and
 * still holds unshared (every way it can close them is interposed) and
 * ask only about the rest, often nothing at all, and a check that asks
 * nothing costs none of the zone's budget.  A flood against one process
 * then costs a dump every 1.28 s instead of six a second; something this
 * process closed unseen (io_uring) is still found within that time.
 */
#define KCHECK_EVERY_MS 10
#define KCHECK_BACKOFF_MAX 4
#define KCHECK_FULL_EVERY 8
#define KCHECKS_PER_S 50
#define SWEEP_EVERY_MS 1000	/* per zone, a few clients from accept */
#define SWEEP_MAX_GAP_MS 32000
#define SWEEP_CLIENTS 2
#define SWEEP_RECORDS 4096	/* records looked at per sweep */
#define CHECK_WAIT_MS 20		/* longest wait for another's check */
#define CL_LOG_WINDOW_S 10	/* refusal lines: per client per window */
#define CL_LOG_BURST 5
#define CL_LOG_PER_S 20

struct cl_state cl;
static int init_state;		/* 0 not started, 1 running, 2 ready */

CL_HIDDEN void cl_resolve_reals(void);

static void fork_parent(void)
{
	ADD(&cl.forkgen, 1);
}

/*
 * Descriptors that existed before a fork may now have a holder in the
 * other process: bumping the generation marks all of them shared at
 * once, so the work done at fork is O(1).
 */
static void fork_child(void)
{
	cl.pid = (int)getpid();
	ADD(&cl.forkgen, 1);
}

/* One info line with every setting in force, "name=value" each. */
static void log_start(const struct cl_settings *s)
{
	char text[1024];
	struct cl_line l;
	size_t i, n;

	if (!cl_log_enabled(CL_LOG_INFO))
		return;
	n = cl_settings_format(s, 0, text, sizeof text);
	if (n >= sizeof text)
		n = sizeof text - 1;
	for (i = 0; i < n; i++)
		if (text[i] == '\n')
			text[i] = i + 1 < n ? ' ' : '\0';
	text[n] = '\0';
	cl_line_start(&l, "info event=start ");
	cl_line_str(&l, text);
	cl_line_emit(&l, CL_LOG_INFO);
}

/*
 * For connlimit-status: the settings of the last process to accept, when
 * they differ from what the header shows (a reload, another process).
 */
static void publish_settings(struct cl_zone_hdr *h,
			     const struct cl_settings *s)
{
	static const struct cl_settings *shown;

	if (!s) {	/* settings refused: connections pass through */
		STORE(&h->monitor, 2);
		return;
	}
	if (LOAD(&shown) == s && LOAD(&h->max_per_ip) == s->max_per_ip)
		return;
	STORE(&h->max_per_ip, s->max_per_ip);
	STORE(&h->max_total, s->max_total);
	STORE(&h->monitor, (uint8_t)(s->mode == CL_MODE_MONITOR));
	STORE(&h->action, s->action);
	STORE(&h->ipv4_prefix, s->ipv4_prefix);
	STORE(&h->ipv6_prefix, s->ipv6_prefix);
	STORE(&h->networks, s->ncidr);
	ADD(&h->settings_gen, 1);
	STORE(&shown, s);
}

static void init_once(void)
{
	static struct cl_zone zone;
	const struct cl_settings *s;

	cl.pid = (int)getpid();
	cl_resolve_reals();
	cl_log_init(CL_LOG_WARN);
	s = cl_config_init();
	if (s && cl_zone_open(s->capacity, s->zone, s->max_per_ip,
			      &zone) == 0)
		cl.zone = &zone;
	else if (s)
		cl_config_failed();	/* logged; exits with strict = 1 */
	cl_config_started();
	if (cl.zone)
		publish_settings(zone.hdr, cl_rules());
	pthread_atfork(NULL, fork_parent, fork_child);
	if (cl.zone && cl_rules())
		log_start(cl_rules());
}

int cl_ready(void)
{
	int s = LOAD(&init_state), saved;

	if (CL_LIKELY(s == 2))
		return 1;
	if (s != 0 || !CAS(&init_state, &s, 1))
		return 0;
	saved = errno;
	init_once();
	STORE(&init_state, 2);
	errno = saved;
	return 1;
}

__attribute__((constructor)) static void cl_constructor(void)
{
	cl_ready();
}

/* A vfork child shares our memory: it must not touch our tables. */
int cl_in_vfork_child(void)
{
	return (int)getpid() != cl.pid;
}

/* ---- descriptors that go away ---- */

/* Another descriptor or process may hold @e's socket (dup, fork...). */
int cl_entry_shared(const struct cl_fdent *e)
{
	return e->shared || e->forkgen != LOAD(&cl.forkgen);
}

int cl_take(struct cl_fdent *e, struct cl_taken *t)
{
	t->w = XCHG(&e->word, 0);
	t->shared = cl_entry_shared(e);
	return (t->w & FD_CONN) != 0;
}

/*
 * After the real close: an exclusively held connection is over; one that
 * another descriptor or process may still hold is over only if the
 * kernel says nobody holds its socket.
 */
void cl_release_taken(const struct cl_taken *t)
{
	struct cl_zone *z = cl.zone;
	uint32_t idx = FD_IDX(t->w), gen = FD_GEN(t->w);

	if (!(t->w & FD_CONN) || !z || idx >= z->nconns)
		return;
	/* -2: no check possible right now; the sweep will make it later. */
	if (t->shared && cl_kcheck_record(z, idx, gen, CLC_REL_CLOSE) != -1)
		return;
	cl_zone_release(z, idx, gen, CLC_REL_CLOSE);
}

void cl_mark_shared(int fd)
{
	struct cl_fdent *e = cl_fd_peek(fd);

	if (e && (LOAD(&e->word) & FD_CONN))
		e->shared = 1;
}

/* @to now refers to @from's socket (dup and friends). */
void cl_copy_entry(int from, int to)
{
	struct cl_fdent *ef = cl_fd_peek(from), *et;
	struct cl_taken old;
	uint64_t w;

	if (!ef || !((w = LOAD(&ef->word)) & FD_CONN))
		return;
	et = cl_fd_get(to);
	if (!et)
		return;
	ef->shared = 1;
	et->shared = 1;
	et->forkgen = LOAD(&cl.forkgen);
	old.w = XCHG(&et->word, w & ~FD_CLOSING);
	old.shared = 1;
	cl_release_taken(&old);
}

/* ---- admission ---- */

static uint16_t listener_port(int lfd)
{
	struct cl_fdent *e = cl_fd_get(lfd);
	struct sockaddr_storage ss;
	socklen_t len = sizeof ss;
	struct cl_peer p;
	uint64_t w;

	if (!e)
		return 0;
	w = LOAD(&e->word);
	if (w & FD_LISTENER)
		return FD_PORT(w);
	if (getsockname(lfd, (struct sockaddr *)&ss, &len) < 0 ||
	    cl_peer_from((struct sockaddr *)&ss, len, &p) < 0)
		return 0;
	STORE(&e->word, FD_LISTENER | p.port);
	return p.port;
}

static void log_table_full(void)
{
	static int logged;
	struct cl_line l;
	int zero = 0;

	if (!CAS(&logged, &zero, 1))
		return;
	cl_line_start(&l, "warn event=table-full");
	cl_line_ku(&l, "capacity", cl.zone->nconns);
	cl_line_kq(&l, "action", "admitting uncounted connections; raise "
		   "CONNLIMIT_CAPACITY");
	cl_line_emit(&l, CL_LOG_WARN);
}

/*
 * A flood from many addresses must not flood the log either: at most
 * CL_LOG_PER_S reject lines per second per process, whatever the client.
 * What is held back is still counted per client and reported by the
 * client's next "reject-suppressed" line.
 */
static int log_budget(void)
{
	static uint32_t sec, used;
	uint32_t now = cl_now_ms() / 1000, s = LOAD(&sec);

	if (s != now && CAS(&sec, &s, now))
		STORE(&used, 0);
	return ADD(&used, 1) <= CL_LOG_PER_S;
}

/* The first few refusals per client per window, then a count. */
static void log_refusal(struct cl_client *cc, const struct cl_peer *p,
			const struct cl_admit *a, uint32_t limit,
			uint16_t lport)
{
	uint32_t now = cl_now_ms() / 1000, start = LOAD(&cc->log_sec);
	uint32_t dropped;
	struct cl_line l;

	if (now - start >= CL_LOG_WINDOW_S && CAS(&cc->log_sec, &start, now)) {
		dropped = XCHG(&cc->log_dropped, 0);
		STORE(&cc->log_n, 0);
		if (dropped) {
			cl_line_start(&l, "reject-suppressed");
			cl_line_client(&l, p);
			cl_line_ku(&l, "count", dropped);
			cl_line_ku(&l, "interval_s", CL_LOG_WINDOW_S);
			cl_line_emit(&l, CL_LOG_WARN);
		}
	}
	if (ADD(&cc->log_n, 1) > CL_LOG_BURST || !log_budget()) {
		ADD(&cc->log_dropped, 1);
		return;
	}
	cl_line_start(&l, "reject");
	cl_line_client(&l, p);
	cl_line_ku(&l, "limit", limit);
	cl_line_ku(&l, "open", a->open);
	cl_line_ku(&l, "port", lport);
	cl_line_emit(&l, CL_LOG_WARN);
}

/* One more kernel check this second for the zone, if the budget allows. */
int cl_check_budget(struct cl_zone_hdr *h, uint32_t now)
{
	uint32_t sec = now / 1000, cur = LOAD(&h->check_sec);

	if (cur != sec && CAS(&h->check_sec, &cur, sec))
		STORE(&h->check_n, 0);
	return ADD(&h->check_n, 1) <= KCHECKS_PER_S;
}

/* Not checked for @min_age ms, nor within the client's backoff. */
static int due(struct cl_client *cc, uint32_t now, uint32_t min_age)
{
	uint32_t b = LOAD(&cc->backoff), wait;

	wait = (uint32_t)KCHECK_EVERY_MS << (b < KCHECK_BACKOFF_MAX ?
					     b : KCHECK_BACKOFF_MAX);
	return now - LOAD(&cc->verify_ms) >= (wait > min_age ? wait : min_age);
}

/*
 * Only one process checks a client at a time: the others wait for its
 * result instead of refusing on the count it is about to correct.  The
 * claim is the client's `checking` word (a pid); a claim left by a
 * process that died is taken over.
 */
static int claim_check(struct cl_client *cc)
{
	uint32_t me = (uint32_t)cl.pid, cur = 0;

	if (CAS(&cc->checking, &cur, me))
		return 1;
	return cur != me && kill((pid_t)cur, 0) < 0 && errno == ESRCH &&
	       CAS(&cc->checking, &cur, me);
}

/* Wake the processes and threads waiting for this client's check. */
static void end_check(struct cl_client *cc)
{
	STORE(&cc->checking, 0);
	/* Shared, not private: waiters may be in other processes. */
	CL_SYS(SYS_futex, &cc->checking, FUTEX_WAKE, INT_MAX);
}

/* A client's next backoff step: up the ladder, then round the cycle. */
static uint32_t next_step(uint32_t b)
{
	return b + 1 < KCHECK_BACKOFF_MAX + KCHECK_FULL_EVERY ?
		       b + 1 : KCHECK_BACKOFF_MAX;
}

/*
 * A kernel check of one client if it is due: how many records were
 * released, or -1 while another check of it is under way.  Due is read
 * before the claim, so a flood of refusals between checks does not
 * contend for the claim word.  @self_fd: the connection being refused
 * (see struct cl_kcheck_how), or -1 for the background sweep, which
 * never trusts.
 */
static int check_client(struct cl_zone *z, uint32_t client, uint32_t now,
			uint32_t min_age, int self_fd)
{
	struct cl_client *cc = cl_zone_client(z, client);
	struct cl_kcheck_how how = { 0, self_fd };
	uint32_t b;
	int r = 0;

	if (!due(cc, now, min_age))
		return LOAD(&cc->checking) ? -1 : 0;
	if (!claim_check(cc))
		return -1;
	b = LOAD(&cc->backoff);
	how.trust = self_fd >= 0 && b > KCHECK_BACKOFF_MAX;
	/* A trusted check takes from the budget only if it dumps. */
	if (due(cc, now, min_age) &&
	    (how.trust || cl_check_budget(z->hdr, now))) {
		STORE(&cc->verify_ms, now);
		r = cl_kcheck_client(z, client, CLC_REL_KERNEL, &how);
		STORE(&cc->backoff, r > 0 ? 0 : next_step(b));
	}
	end_check(cc);
	return r > 0 ? r : 0;
}

/*
 * Checks up to @max_clients clients due a check.  Returns how many
 * records were released, or -1 when no client was checked at all.
 */
static int sweep_run(struct cl_zone *z, uint32_t now, uint32_t min_age,
		     int max_clients)
{
	struct cl_zone_hdr *h = z->hdr;
	uint32_t hwm = LOAD(&h->conn_hwm), i, k, c;
	int done = 0, released = 0, r;

	if (hwm > z->nconns)
		hwm = z->nconns;
	i = hwm ? LOAD(&h->sweep_next) % hwm : 0;
	for (k = 0; k < SWEEP_RECORDS && k < hwm && done < max_clients; k++) {
		if (CL_RS_ST(LOAD(&z->conns[i].state)) == CL_RS_LIVE) {
			c = LOAD(&z->conns[i].client);
			if (due(cl_zone_client(z, c), now, min_age)) {
				r = check_client(z, c, now, min_age, -1);
				released += r > 0 ? r : 0;
				done++;
			}
		}
		i = (i + 1) % hwm;
	}
	STORE(&h->sweep_next, i);
	return done ? released : -1;
}

/*
 * The background walk costs kernel dumps over the host's TCP table: a
 * server holding 100k healthy connections must not pay them every
 * second.  The gap between walks doubles after each that checked
 * clients and released nothing, up to SWEEP_MAX_GAP_MS, and drops back
 * to SWEEP_EVERY_MS after one that released something.
 */
static void sweep(struct cl_zone *z)
{
	struct cl_zone_hdr *h = z->hdr;
	uint32_t now = cl_now_ms(), last = LOAD(&h->sweep_ms);
	uint32_t gap = LOAD(&h->sweep_gap);
	int r;

	if (gap < SWEEP_EVERY_MS || gap > SWEEP_MAX_GAP_MS)
		gap = SWEEP_EVERY_MS;
	if (now - last < gap || !CAS(&h->sweep_ms, &last, now))
		return;
	r = sweep_run(z, now, SWEEP_EVERY_MS, SWEEP_CLIENTS);
	if (r > 0)
		STORE(&h->sweep_gap, SWEEP_EVERY_MS);
	else if (r == 0 && gap < SWEEP_MAX_GAP_MS)
		STORE(&h->sweep_gap, gap * 2);
}

/*
 * Another thread or process is checking this client: sleep on the claim
 * word until it ends (end_check wakes us), bounded in all by
 * CHECK_WAIT_MS in case the checker dies.  Sleeping, not spinning: a
 * flood wakes many threads at once, and spinners would starve the
 * checker and the server's own work of the CPU.
 */
static void wait_check(struct cl_client *cc)
{
	struct timespec ts = { 0, CHECK_WAIT_MS * 1000000L / 4 };
	uint32_t cur;
	int i;

	for (i = 0; i < 4 && (cur = LOAD(&cc->checking)) != 0; i++)
		CL_SYS(SYS_futex, &cc->checking, FUTEX_WAIT, cur, &ts);
}

/*
 * Refused: first drop records of sockets the kernel no longer has (see
 * the rationing above).  While another process checks this client, wait
 * for that check (a few milliseconds at most): a burst of reconnects
 * must not be refused on the count it is about to correct.  Only while
 * the client's checks have not yet come back empty (backoff 0): a
 * client whose checks keep finding every record live is flooding at its
 * limit, and waiting would tie up a server thread per refused
 * connection for the length of a dump.  Either way the caller then
 * tries to admit again.
 */
static void recheck(struct cl_zone *z, const struct cl_admit *a, int fd)
{
	struct cl_client *cc = cl_zone_client(z, a->client);

	if (check_client(z, a->client, cl_now_ms(), 0, fd) < 0 &&
	    LOAD(&cc->backoff) == 0)
		wait_check(cc);
}

static void log_over_total(const struct cl_peer *p, const struct cl_admit *a,
			   uint32_t max_total, uint16_t lport)
{
	struct cl_line l;

	if (!log_budget())
		return;
	cl_line_start(&l, "reject");
	cl_line_client(&l, p);
	cl_line_kv(&l, "reason", "max_total");
	cl_line_ku(&l, "limit", max_total);
	cl_line_ku(&l, "open", a->open);
	cl_line_ku(&l, "port", lport);
	cl_line_emit(&l, CL_LOG_WARN);
}

/* Monitor mode: admitted and counted, logged as it would have gone. */
static void log_monitor(const struct cl_peer *p, uint32_t limit,
			uint32_t open, uint16_t lport)
{
	struct cl_line l;

	if (!log_budget())
		return;
	cl_line_start(&l, "monitor would-reject");
	cl_line_client(&l, p);
	cl_line_ku(&l, "limit", limit);
	cl_line_ku(&l, "open", open);
	cl_line_ku(&l, "port", lport);
	cl_line_emit(&l, CL_LOG_WARN);
}

static int count_outcome(struct cl_zone *z, const struct cl_peer *p,
			 const struct cl_admit *a, uint32_t limit,
			 uint32_t max_total, uint16_t lport, int r)
{
	if (r == CL_ADMIT) {
		cl_zone_count(z, CLC_ADMITTED);
	} else if (r == CL_UNTRACKED) {
		cl_zone_count(z, CLC_TABLE_FULL);
		log_table_full();
	} else if (r == CL_REFUSE_TOTAL) {
		cl_zone_count(z, CLC_REFUSED);
		log_over_total(p, a, max_total, lport);
	} else {
		cl_zone_count(z, CLC_REFUSED);
		ADD(&cl_zone_client(z, a->client)->refused, 1);
		log_refusal(cl_zone_client(z, a->client), p, a, limit, lport);
	}
	return r;
}

/*
 * Admit @p, accepted as @fd, under the settings @s: CL_ADMIT (tracked),
 * CL_UNTRACKED (admitted, not counted) or a refusal.  A would-be refusal
 * in monitor mode is admitted and counted with no limit, so counts stay
 * true.
 */
static int admit(const struct cl_settings *s, const struct cl_peer *p,
		 uint16_t lport, int fd, struct cl_admit *a)
{
	struct cl_zone *z = cl.zone;
	int exempt, r;
	uint32_t limit = s->max_per_ip;
	struct cl_peer k = *p;

	exempt = 0;
	if (s->ncidr)
		limit = cl_policy_lookup(&s->policy, &p->key, s->max_per_ip,
					 &exempt);
	/* An exempt host counts under its own address, not its subnet's:
	 * a health checker must not use up its neighbours' budget. */
	if (!exempt && (s->ipv4_prefix < 32 || s->ipv6_prefix < 128)) {
		cl_key_apply_prefix(&k.key, s->ipv4_prefix, s->ipv6_prefix);
		k.plen = (uint8_t)(cl_key_is_v4(&k.key) ? 96 + s->ipv4_prefix
							: s->ipv6_prefix);
	}
	r = cl_zone_admit(z, &k, lport, limit, s->max_total, a);
	if (r == CL_REFUSE) {
		recheck(z, a, fd);
		r = cl_zone_admit(z, &k, lport, limit, s->max_total, a);
	} else if (r == CL_REFUSE_TOTAL) {
		/* The total is full: stale records of any client may fill
		 * it; check a few clients not checked lately. */
		(void)sweep_run(z, cl_now_ms(), KCHECK_EVERY_MS,
				SWEEP_CLIENTS);
		r = cl_zone_admit(z, &k, lport, limit, s->max_total, a);
	}
	if (s->mode == CL_MODE_MONITOR &&
	    (r == CL_REFUSE || r == CL_REFUSE_TOTAL)) {
		cl_zone_count(z, CLC_MONITOR);
		log_monitor(&k, r == CL_REFUSE ? limit : s->max_total,
			    a->open, lport);
		r = cl_zone_admit(z, &k, lport, 0, 0, a);
	}
	return count_outcome(z, &k, a, limit, s->max_total, lport, r);
}

/*
 * Account for descriptor @c, just returned by accept on @lfd with peer
 * @sa.  Returns 0 to hand it to the program, or the action to refuse it
 * with (CL_ACTION_* + 1); *@s is set to the settings that decided.
 */
int cl_track(int c, int lfd, const struct sockaddr *sa, socklen_t len,
	     const struct cl_settings **s)
{
	struct cl_fdent *e = cl_fd_get(c);
	struct cl_taken stale;
	struct cl_admit a;
	struct cl_peer p;
	uint16_t lport;
	int r;

	if (!e)
		return 0;
	/* The kernel reused @c: whatever we recorded for it closed unseen. */
	if (LOAD(&e->word)) {
		cl_take(e, &stale);
		cl_release_taken(&stale);
	}
	cl_config_poll();
	*s = cl_rules();
	if (!*s || cl_peer_from(sa, len, &p) < 0)
		return 0;
	lport = listener_port(lfd);
	if (!cl_ports_match(&(*s)->ports, lport))
		return 0;
	publish_settings(cl.zone->hdr, *s);
	sweep(cl.zone);
	r = admit(*s, &p, lport, c, &a);
	if (r == CL_REFUSE || r == CL_REFUSE_TOTAL)
		return (*s)->action + 1;
	if (r != CL_ADMIT)
		return 0;
	e->shared = 0;
	e->forkgen = LOAD(&cl.forkgen);
	STORE(&cl.zone->conns[a.idx].fd, c);	/* before the entry: see
						   held_here in kcheck.c */
	STORE(&e->word, cl_fd_conn_word(a.idx, a.gen));
	return 0;
}
