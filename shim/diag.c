/*
 * diag.c - ask NETLINK_SOCK_DIAG for the TCP sockets of one peer address.
 *
 * Shared by the library's kernel check and by connlimit-status.  A dump
 * with a bytecode filter on the remote address returns only that peer's
 * sockets; the netlink socket lives only for the duration of one dump,
 * so the library leaves no descriptor behind in the program.
 */
#include <errno.h>
#include <stddef.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <unistd.h>

#include "diag.h"

struct diag_req {
	struct nlmsghdr nlh;
	struct inet_diag_req_v2 r;
	struct nlattr attr;
	uint8_t bc[4 + 8 + 16];	/* one op, its hostcond, the address */
};

static const uint8_t mapped[12] = { [10] = 0xff, [11] = 0xff };

/* A dump of @family TCP sockets whose remote address is in @net/@plen
 * (16 bytes, IPv4 as ::ffff:a.b.c.d with plen 96 + n). */
static size_t build_req(struct diag_req *q, int family, const uint8_t *net,
			unsigned plen)
{
	int v4 = !memcmp(net, mapped, 12) && plen >= 96;
	size_t alen = v4 ? 4 : 16;
	struct inet_diag_hostcond cond = { .port = -1 };
	struct inet_diag_bc_op op;
	size_t bclen = sizeof op + sizeof cond + alen;

	memset(q, 0, sizeof *q);
	q->nlh.nlmsg_type = SOCK_DIAG_BY_FAMILY;
	q->nlh.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
	q->r.sdiag_family = (uint8_t)family;
	q->r.sdiag_protocol = IPPROTO_TCP;
	/* SYN_RECV: a TCP Fast Open socket is accepted before its
	 * handshake completes. */
	q->r.idiag_states = 1u << TCP_ESTABLISHED | 1u << TCP_SYN_RECV |
			    1u << TCP_FIN_WAIT1 |
			    1u << TCP_FIN_WAIT2 | 1u << TCP_CLOSE_WAIT |
			    1u << TCP_LAST_ACK | 1u << TCP_CLOSING;
	q->attr.nla_type = INET_DIAG_REQ_BYTECODE;
	q->attr.nla_len = (uint16_t)(sizeof q->attr + bclen);
	/* Match: go to the end (accept); no match: jump past it (reject).
	 * An IPv4 condition also matches IPv4-mapped peers of IPv6
	 * sockets: the kernel compares those as IPv4. */
	op.code = INET_DIAG_BC_D_COND;
	op.yes = (uint8_t)bclen;
	op.no = (uint16_t)(bclen + 4);
	cond.family = (uint8_t)(v4 ? AF_INET : AF_INET6);
	cond.prefix_len = (uint8_t)(v4 ? plen - 96 : plen);
	memcpy(q->bc, &op, sizeof op);
	memcpy(q->bc + sizeof op, &cond, sizeof cond);
	memcpy(q->bc + sizeof op + sizeof cond, v4 ? net + 12 : net, alen);
	q->nlh.nlmsg_len = (uint32_t)(offsetof(struct diag_req, bc) + bclen);
	return q->nlh.nlmsg_len;
}

/* Read a dump's replies; 0 when done, -errno on failure. */
static int read_dump(int fd, cl_diag_fn fn, void *arg)
{
	uint32_t buf[1024];
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
				fn(arg, NLMSG_DATA(h));
		}
	}
}

int cl_diag_dump(int family, const uint8_t *net, unsigned plen,
		 cl_diag_fn fn, void *arg)
{
	struct sockaddr_nl nl = { .nl_family = AF_NETLINK };
	struct timeval tv = { .tv_sec = 2 };
	struct diag_req q;
	size_t len = build_req(&q, family, net, plen);
	int fd, r;

	fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
	if (fd < 0)
		return -errno;
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	if (sendto(fd, &q, len, 0, (struct sockaddr *)&nl, sizeof nl) < 0)
		r = -errno;
	else
		r = read_dump(fd, fn, arg);
	close(fd);	/* never a counted descriptor: passes straight through */
	return r;
}

/* Does diag message @m describe the socket of this connection, held by
 * some process?  @peer as in cl_diag_dump, ports in host order. */
int cl_diag_holds(const struct inet_diag_msg *m, int family,
		  const uint8_t *peer, uint16_t pport, uint16_t lport)
{
	const uint8_t *dst = (const uint8_t *)m->id.idiag_dst;

	if (m->idiag_inode == 0 || m->idiag_family != family ||
	    pport != ntohs(m->id.idiag_dport) ||
	    lport != ntohs(m->id.idiag_sport))
		return 0;	/* inode 0: orphaned, nobody holds it */
	if (family == AF_INET)
		return !memcmp(dst, peer + 12, 4);
	return !memcmp(dst, peer, 16);
}

void cl_diag_count(const struct inet_diag_msg *m, struct cl_diag_conn *c,
		   int n)
{
	int i;

	for (i = 0; i < n; i++)
		if (cl_diag_holds(m, c[i].family, c[i].peer, c[i].pport,
				  c[i].lport))
			c[i].hits++;
}

static int same_tuple(const struct cl_diag_conn *a,
		      const struct cl_diag_conn *b)
{
	return a->family == b->family && a->pport == b->pport &&
	       a->lport == b->lport && !memcmp(a->peer, b->peer, 16);
}

void cl_diag_settle(struct cl_diag_conn *c, int n)
{
	uint32_t newer;
	int i, j;

	for (i = 0; i < n; i++) {
		newer = 0;
		for (j = 0; j < n; j++)
			if (j != i && same_tuple(&c[i], &c[j]) &&
			    (c[j].born > c[i].born ||
			     (c[j].born == c[i].born && j > i)))
				newer++;
		c[i].held = newer < c[i].hits;
	}
}
