/*
 * kcheck.c - release counted connections that no process holds any more.
 *
 * The library cannot see every way a socket goes away: a holder killed
 * with SIGKILL, syscall(SYS_close), an exec'd child, a descriptor passed
 * to another process.  Like the kernel's nf_conncount, it therefore never
 * trusts its own records when they matter: before a client is refused,
 * and when a descriptor that other processes may share is closed, it asks
 * NETLINK_SOCK_DIAG for the client's TCP sockets.  A record whose socket
 * is missing, or present with inode 0 (orphaned: no descriptor anywhere),
 * is released.  The netlink socket lives only for the duration of a check.
 */
#include <errno.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <unistd.h>

#include "cl.h"

#define MAX_WANT 128		/* records checked per call: bounded work */

struct want {
	uint32_t idx, gen;
	uint64_t born;
	uint32_t inode;		/* the live socket it matched, 0 if none */
	uint16_t pport, lport;
	uint8_t peer[16];
	uint8_t family;
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

/* Gather the client's live records (or just one) into @w. */
static int collect(struct cl_zone *z, uint32_t client, int only_idx,
		   uint32_t only_gen, struct want *w)
{
	uint32_t i, end = LOAD(&z->hdr->conn_hwm), s;
	int n = 0;

	if (only_idx >= 0)
		end = (uint32_t)only_idx + 1;
	for (i = only_idx >= 0 ? (uint32_t)only_idx : 0;
	     i < end && n < MAX_WANT; i++) {
		struct cl_conn *c = &z->conns[i];

		s = LOAD(&c->state);
		if (CL_RS_ST(s) != CL_RS_LIVE || c->client != client)
			continue;
		if (only_idx >= 0 && CL_RS_GEN(s) != (only_gen & CL_GEN_MASK))
			continue;
		w[n] = (struct want){ .idx = i, .gen = CL_RS_GEN(s),
				      .born = c->born_ms,
				      .pport = c->peer_port,
				      .lport = c->local_port,
				      .family = c->family };
		memcpy(w[n].peer, c->peer, 16);
		n++;
	}
	return n;
}

struct diag_req {
	struct nlmsghdr nlh;
	struct inet_diag_req_v2 r;
	struct nlattr attr;
	uint8_t bc[4 + 8 + 16];	/* one op, its hostcond, the address */
};

/* A dump of @family TCP sockets whose remote address is @w's peer. */
static size_t build_req(struct diag_req *q, int family, const struct want *w)
{
	static const uint8_t mapped[12] = { [10] = 0xff, [11] = 0xff };
	int v4 = w->family == AF_INET || !memcmp(w->peer, mapped, 12);
	size_t alen = v4 ? 4 : 16;
	struct inet_diag_hostcond cond = { .port = -1 };
	struct inet_diag_bc_op op;
	size_t bclen = sizeof op + sizeof cond + alen;

	memset(q, 0, sizeof *q);
	q->nlh.nlmsg_type = SOCK_DIAG_BY_FAMILY;
	q->nlh.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
	q->r.sdiag_family = (uint8_t)family;
	q->r.sdiag_protocol = IPPROTO_TCP;
	q->r.idiag_states = 1u << TCP_ESTABLISHED | 1u << TCP_FIN_WAIT1 |
			    1u << TCP_FIN_WAIT2 | 1u << TCP_CLOSE_WAIT |
			    1u << TCP_LAST_ACK | 1u << TCP_CLOSING;
	q->attr.nla_type = INET_DIAG_REQ_BYTECODE;
	q->attr.nla_len = (uint16_t)(sizeof q->attr + bclen);
	/* Match: go to the end (accept); no match: jump past it (reject). */
	op.code = INET_DIAG_BC_D_COND;
	op.yes = (uint8_t)bclen;
	op.no = (uint16_t)(bclen + 4);
	cond.family = (uint8_t)(v4 ? AF_INET : AF_INET6);
	cond.prefix_len = (uint8_t)(v4 ? 32 : 128);
	memcpy(q->bc, &op, sizeof op);
	memcpy(q->bc + sizeof op, &cond, sizeof cond);
	memcpy(q->bc + sizeof op + sizeof cond,
	       v4 && w->family == AF_INET6 ? w->peer + 12 : w->peer, alen);
	q->nlh.nlmsg_len = (uint32_t)(offsetof(struct diag_req, bc) + bclen);
	return q->nlh.nlmsg_len;
}

static void match(const struct inet_diag_msg *m, struct want *w, int n)
{
	size_t alen = m->idiag_family == AF_INET ? 4 : 16;
	int i;

	if (m->idiag_inode == 0)
		return;		/* orphaned: no process holds it */
	for (i = 0; i < n; i++) {
		if (w[i].family != m->idiag_family ||
		    w[i].pport != ntohs(m->id.idiag_dport) ||
		    w[i].lport != ntohs(m->id.idiag_sport) ||
		    memcmp(w[i].peer, m->id.idiag_dst, alen) != 0)
			continue;
		w[i].inode = m->idiag_inode;
	}
}

/* Read a dump's replies; 0 when done, -errno on failure. */
static int read_dump(int fd, struct want *w, int n)
{
	uint32_t buf[2048];
	struct nlmsghdr *h;
	ssize_t len;

	for (;;) {
		len = recv(fd, buf, sizeof buf, 0);
		if (len < 0 && errno == EINTR)
			continue;
		if (len <= 0)
			return len < 0 ? -errno : -EIO;
		for (h = (void *)buf; NLMSG_OK(h, (size_t)len);
		     h = NLMSG_NEXT(h, len)) {
			if (h->nlmsg_type == NLMSG_DONE)
				return 0;
			if (h->nlmsg_type == NLMSG_ERROR) {
				struct nlmsgerr *e = NLMSG_DATA(h);

				return e->error ? e->error : -EIO;
			}
			if (h->nlmsg_type == SOCK_DIAG_BY_FAMILY)
				match(NLMSG_DATA(h), w, n);
		}
	}
}

static int dump_family(int family, struct want *w, int n)
{
	struct sockaddr_nl nl = { .nl_family = AF_NETLINK };
	struct timeval tv = { .tv_sec = 2 };
	struct diag_req q;
	size_t len = build_req(&q, family, &w[0]);
	int fd, r;

	fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
	if (fd < 0)
		return -errno;
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	if (sendto(fd, &q, len, 0, (struct sockaddr *)&nl, sizeof nl) < 0)
		r = -errno;
	else
		r = read_dump(fd, w, n);
	syscall(SYS_close, fd);
	return r;
}

/* Two records on one live socket: the older one is stale (port reuse). */
static void drop_duplicates(struct want *w, int n)
{
	int i, j;

	for (i = 0; i < n; i++)
		for (j = 0; j < n; j++)
			if (i != j && w[i].inode && w[i].inode == w[j].inode &&
			    w[i].born < w[j].born)
				w[i].inode = 0;
}

/*
 * Check client @client's live records (only record @only_idx of
 * generation @only_gen when it is >= 0) against the kernel and release
 * those no process holds, counting them under @why.  Returns how many were released, or -1 if the
 * kernel cannot be asked (then logged once, and never asked again).
 */
int cl_kcheck_client(struct cl_zone *z, uint32_t client, int only_idx,
		     uint32_t only_gen, int why)
{
	struct want w[MAX_WANT];
	int n, i, r, released = 0, fam, done4 = 0, done6 = 0;

	if (!cl_kcheck_available())
		return -1;
	n = collect(z, client, only_idx, only_gen, w);
	for (i = 0; i < n; i++) {
		fam = w[i].family;
		if (fam == AF_INET ? done4 : done6)
			continue;
		cl_zone_count(z, CLC_KCHECKS);
		r = dump_family(fam, w, n);
		if (r < 0) {
			kcheck_disable("sock_diag dump failed", -r);
			return -1;
		}
		*(fam == AF_INET ? &done4 : &done6) = 1;
	}
	drop_duplicates(w, n);
	for (i = 0; i < n; i++)
		if (!w[i].inode)
			released += cl_zone_release(z, w[i].idx, w[i].gen,
						    why);
	return released;
}
