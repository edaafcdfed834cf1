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

#endif
