/*
 * diag.h - NETLINK_SOCK_DIAG look-ups, shared by the library and
 * connlimit-status.
 */
#ifndef CL_DIAG_H
#define CL_DIAG_H

#include <linux/inet_diag.h>
#include <stdint.h>

typedef void (*cl_diag_fn)(void *arg, const struct inet_diag_msg *m);

__attribute__((visibility("hidden")))
int cl_diag_dump(int family, const uint8_t *net, unsigned plen,
		 cl_diag_fn fn, void *arg);
__attribute__((visibility("hidden")))
int cl_diag_holds(const struct inet_diag_msg *m, int family,
		  const uint8_t *peer, uint16_t pport, uint16_t lport);

/*
 * One counted connection, to be matched against a dump.  A socket is
 * identified by peer address, peer port and local port only (the local
 * address would cost a getsockname per accept): when k live sockets and
 * m records share those, the newest min(k, m) records are the held ones.
 */
struct cl_diag_conn {
	uint64_t born;
	uint32_t hits;		/* live sockets with this record's tuple */
	uint16_t pport, lport;
	uint8_t peer[16];
	uint8_t family;
	uint8_t held;		/* result of cl_diag_settle */
};

__attribute__((visibility("hidden")))
void cl_diag_count(const struct inet_diag_msg *m, struct cl_diag_conn *c,
		   int n);
__attribute__((visibility("hidden")))
void cl_diag_settle(struct cl_diag_conn *c, int n);

#endif
