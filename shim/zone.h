/*
 * zone.h - the counting table shared by every process of a server.
 *
 * Layout contract: fixed-width integers only, no pointers, no pthread
 * objects, identical for 32- and 64-bit processes (checked by the
 * _Static_asserts below and by tests/layout.bats).  Every field that more
 * than one process writes is updated with atomics.  A zone is:
 *
 *   struct cl_zone_hdr | nbuckets x struct cl_bucket | nconns x cl_conn
 */
#ifndef CL_ZONE_H
#define CL_ZONE_H

#include <stdint.h>

#define CL_ZONE_MAGIC 0x5a4c4e43u	/* "CNLZ" little-endian */
#define CL_ZONE_VERSION 2u
#define CL_SLOTS 8			/* clients per bucket */
#define CL_GEN_MASK 0x3fffffffu		/* 30-bit record generation */

/* Counters a status reader shows; indices into hdr.counter[]. */
enum {
	CLC_ADMITTED,		/* connections admitted and counted */
	CLC_REFUSED,		/* connections turned away */
	CLC_MONITOR,		/* would have been refused (monitor mode) */
	CLC_REL_CLOSE,		/* released by a close the library saw */
	CLC_REL_KERNEL,		/* released because the kernel had no holder */
	CLC_TABLE_FULL,		/* admitted uncounted: no room in the table */
	CLC_KCHECKS,		/* kernel look-ups made */
	CLC_COUNT = 16
};

struct cl_zone_hdr {
	uint32_t magic;
	uint32_t version;
	uint64_t size;		/* bytes of the whole mapping */
	uint32_t hdr_size;
	uint32_t bucket_size;
	uint32_t conn_size;
	uint32_t slots;		/* CL_SLOTS */
	uint32_t nbuckets;
	uint32_t nconns;
	uint64_t seed;		/* hash seed, random per zone */
	uint32_t creator_pid;
	uint32_t creator_uid;
	uint32_t conn_hwm;	/* records [0, hwm) have ever been used */
	uint32_t conn_hint;	/* where the next allocation starts looking */
	uint32_t max_per_ip;	/* limit of the process that last loaded */
	uint32_t open_total;	/* counted connections right now */
	uint64_t counter[CLC_COUNT];
	uint32_t sweep_ms;	/* last background kernel check */
	uint32_t sweep_next;	/* client slot where the next one starts */
	/* The settings of the process that accepted last, for status. */
	uint32_t max_total;
	uint8_t monitor;	/* 1 monitor mode, 2 passing everything */
	uint8_t action;		/* 0 reset, 1 close, 2 message */
	uint8_t ipv4_prefix;
	uint8_t ipv6_prefix;
	uint32_t networks;	/* exempt and limit networks */
	uint32_t settings_gen;	/* bumped when other settings apply: a
				 * reload, or another process's */
	uint32_t check_sec;	/* kernel-check budget: this second, */
	uint32_t check_n;	/* and the checks made in it */
	uint32_t sweep_gap;	/* ms between sweeps, grows when idle */
	uint8_t reserved[20];
};

/* Client state word: kind (2 bits) | version (30 bits) | count (32 bits). */
#define CL_CS_FREE 0ULL
#define CL_CS_BUSY 1ULL
#define CL_CS_LIVE 2ULL
#define CL_CS_KIND(s) ((s) >> 62)
#define CL_CS_VER(s) (((s) >> 32) & CL_GEN_MASK)
#define CL_CS_COUNT(s) ((uint32_t)(s))
#define CL_CS_MAKE(k, v, c) (((uint64_t)(k) << 62) | \
		((uint64_t)((v) & CL_GEN_MASK) << 32) | (uint32_t)(c))

struct cl_client {
	uint64_t state;
	uint8_t key[16];
	uint32_t verify_ms;	/* last kernel check of this client */
	uint32_t log_sec;	/* start of the current log window */
	uint32_t log_n;		/* lines written in this window */
	uint32_t log_dropped;	/* lines suppressed in this window */
	uint32_t refused;	/* refusals since the key took this slot */
	uint32_t plen;		/* prefix length of key, of 128 bits */
	uint32_t excess_ms;	/* when count > live records was first seen */
	uint32_t excess;	/* by how much */
	uint32_t checking;	/* pid making a kernel check of it, or 0 */
	uint32_t backoff;	/* checks that found nothing to release */
};

struct cl_bucket {
	uint32_t lock;		/* pid of the inserting process, 0 = free */
	uint32_t pad;
	struct cl_client slot[CL_SLOTS];
};

/* Record state word: generation (30 bits) << 2 | state (2 bits). */
#define CL_RS_FREE 0u
#define CL_RS_CLAIMED 1u
#define CL_RS_LIVE 2u
#define CL_RS_ST(s) ((s) & 3u)
#define CL_RS_GEN(s) ((s) >> 2)
#define CL_RS_MAKE(g, st) ((((g) & CL_GEN_MASK) << 2) | (st))

struct cl_conn {
	uint32_t state;
	uint32_t client;	/* index: bucket * CL_SLOTS + slot */
	uint8_t peer[16];	/* peer address, IPv4 as ::ffff:a.b.c.d */
	uint16_t peer_port;	/* host order */
	uint16_t local_port;	/* host order */
	uint8_t family;		/* AF_INET or AF_INET6 (socket family) */
	uint8_t pad[3];
	uint32_t pid;		/* process that admitted it */
	int32_t fd;		/* its descriptor in process pid */
	uint64_t born_ms;
};

_Static_assert(sizeof(struct cl_zone_hdr) == 256, "header layout");
_Static_assert(sizeof(struct cl_client) == 64, "client layout");
_Static_assert(sizeof(struct cl_bucket) == 8 + 8 * 64, "bucket layout");
_Static_assert(sizeof(struct cl_conn) == 48, "conn layout");

/*
 * A mapped zone as this process sees it.  The sizes are copied at attach
 * and never read from the shared header again: a header scribbled on by
 * another program must not steer indexing.
 */
struct cl_zone {
	struct cl_zone_hdr *hdr;
	struct cl_bucket *buckets;
	struct cl_conn *conns;
	uint32_t nbuckets;
	uint32_t nconns;
};

/* Client slot @i; an index out of range (a corrupted record) maps to
 * slot 0 rather than outside the table. */
static inline struct cl_client *cl_zone_client(struct cl_zone *z,
					       uint32_t i)
{
	if (i >= z->nbuckets * CL_SLOTS)
		i = 0;
	return &z->buckets[i / CL_SLOTS].slot[i % CL_SLOTS];
}

#endif
