/*
 * cl.h - declarations shared by the library's translation units.
 *
 * Everything here is hidden: the only exported symbols are the wrappers
 * in interpose.c.  Internal helpers return 0 / -errno or a bool and never
 * touch errno on purpose; the edge saves and restores it.
 */
#ifndef CL_H
#define CL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "zone.h"

#define CL_HIDDEN __attribute__((visibility("hidden")))
#define CL_LIKELY(x) __builtin_expect(!!(x), 1)
#define CL_UNLIKELY(x) __builtin_expect(!!(x), 0)

/* Relaxed/acquire/release shorthands over the GCC builtins. */
#define LOAD(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define STORE(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)
#define XCHG(p, v) __atomic_exchange_n((p), (v), __ATOMIC_ACQ_REL)
#define CAS(p, e, v) __atomic_compare_exchange_n((p), (e), (v), 0, \
		__ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)
#define ADD(p, v) __atomic_add_fetch((p), (v), __ATOMIC_ACQ_REL)

/*
 * libc's syscall(), bypassing the library's own export: the library
 * interposes syscall() for SYS_close (libuv closes that way).  Up to four
 * arguments, each passed as a long.
 */
CL_HIDDEN long cl_sys(long n, long a, long b, long c, long d);
#define CL_SYS_(n, a, b, c, d, ...) cl_sys((n), (long)(a), (long)(b), \
					   (long)(c), (long)(d))
#define CL_SYS(...) CL_SYS_(__VA_ARGS__, 0, 0, 0, 0)

/* ---- addr.c: client keys are 16 bytes, IPv4 as ::ffff:a.b.c.d ---- */
struct cl_key {
	uint8_t b[16];
};

struct cl_peer {
	struct cl_key key;	/* normalized, prefix applied */
	uint8_t raw[16];	/* full address, IPv4 as ::ffff:a.b.c.d */
	uint16_t port;		/* peer port, host order */
	uint8_t family;		/* socket family: AF_INET or AF_INET6 */
	uint8_t plen;		/* key is a network of this prefix (of 128) */
};

CL_HIDDEN int cl_peer_from(const struct sockaddr *sa, socklen_t len,
			   struct cl_peer *out);
CL_HIDDEN int cl_key_is_v4(const struct cl_key *k);
CL_HIDDEN size_t cl_key_format(const struct cl_key *k, char *buf, size_t n);
CL_HIDDEN void cl_key_apply_prefix128(struct cl_key *k, unsigned plen);
CL_HIDDEN uint64_t cl_key_hash(const struct cl_key *k, uint64_t seed);

/* ---- config.c: settings in force (struct cl_settings, policy.h) ---- */
struct cl_settings;

CL_HIDDEN const struct cl_settings *cl_config_init(void);
CL_HIDDEN const struct cl_settings *cl_rules(void);
CL_HIDDEN void cl_config_poll(void);
CL_HIDDEN void cl_config_started(void);
CL_HIDDEN void cl_config_failed(void);

/* ---- log.c ---- */
enum { CL_LOG_ERROR, CL_LOG_WARN, CL_LOG_INFO, CL_LOG_DEBUG };
enum { CL_DEST_STDERR, CL_DEST_SYSLOG, CL_DEST_FILE };

/* A line under construction; never allocates, async-signal-safe. */
struct cl_line {
	char buf[1024];
	size_t len;
};

CL_HIDDEN void cl_line_start(struct cl_line *l, const char *event);
CL_HIDDEN void cl_line_str(struct cl_line *l, const char *s);
CL_HIDDEN void cl_line_kv(struct cl_line *l, const char *k, const char *v);
CL_HIDDEN void cl_line_kq(struct cl_line *l, const char *k, const char *v);
CL_HIDDEN void cl_line_ku(struct cl_line *l, const char *k, uint64_t v);
CL_HIDDEN void cl_line_key(struct cl_line *l, const char *k,
			   const struct cl_key *key);
CL_HIDDEN void cl_line_client(struct cl_line *l, const struct cl_peer *p);
CL_HIDDEN void cl_line_emit(struct cl_line *l, int level);
CL_HIDDEN void cl_log_init(int level);
CL_HIDDEN void cl_log_set_level(int level);
CL_HIDDEN void cl_log_set_dest(int kind, const char *path);
CL_HIDDEN int cl_log_enabled(int level);
CL_HIDDEN uint32_t cl_now_ms(void);

/* ---- fdtab.c: per-process descriptor table ---- */
/*
 * An entry is one 64-bit word, so that close can claim it with a single
 * atomic exchange.  A connection entry carries the record index and the
 * generation it was admitted under; a listener entry caches the local
 * port so that accept needs no getsockname after the first call.
 */
#define FD_CONN (1ULL << 63)
#define FD_CLOSING (1ULL << 62)
#define FD_LISTENER (1ULL << 61)
#define FD_IDX(e) ((uint32_t)(e))
#define FD_GEN(e) ((uint32_t)(((e) >> 32) & CL_GEN_MASK))
#define FD_PORT(e) ((uint16_t)(e))
#define FD_MAX (1 << 24)

struct cl_fdent {
	uint64_t word;
	uint32_t forkgen;	/* fork generation when admitted or copied */
	uint32_t shared;	/* 1 once dup'ed or sent to another process */
};

#define CL_FD_SHIFT 12		/* 4096 entries a page */
extern CL_HIDDEN struct cl_fdent *cl_fd_pages[FD_MAX >> CL_FD_SHIFT];

/* The entry of @fd, or NULL: inline, since every close starts here. */
static inline struct cl_fdent *cl_fd_peek(int fd)
{
	struct cl_fdent *p;

	if ((unsigned)fd >= FD_MAX)
		return NULL;
	p = __atomic_load_n(&cl_fd_pages[(unsigned)fd >> CL_FD_SHIFT],
			    __ATOMIC_ACQUIRE);
	return p ? &p[(unsigned)fd & ((1u << CL_FD_SHIFT) - 1)] : NULL;
}
CL_HIDDEN struct cl_fdent *cl_fd_get(int fd);
CL_HIDDEN uint64_t cl_fd_conn_word(uint32_t idx, uint32_t gen);
CL_HIDDEN void cl_fd_foreach(unsigned lo, unsigned hi,
			     void (*fn)(int fd, struct cl_fdent *e, void *),
			     void *arg);

/* ---- zone.c, zonefile.c: the shared table ---- */
enum { CL_ADMIT, CL_REFUSE, CL_REFUSE_TOTAL, CL_UNTRACKED };

struct cl_admit {
	uint32_t client;	/* client index, valid unless CL_UNTRACKED */
	uint32_t idx;		/* record index, valid with CL_ADMIT */
	uint32_t gen;
	uint32_t open;		/* the client's count (after admission), or
				 * the total with CL_REFUSE_TOTAL */
};

CL_HIDDEN int cl_zone_admit(struct cl_zone *z, const struct cl_peer *p,
			    uint16_t lport, uint32_t limit,
			    uint32_t max_total, struct cl_admit *a);
CL_HIDDEN int cl_zone_release(struct cl_zone *z, uint32_t idx, uint32_t gen,
			      int why);
CL_HIDDEN void cl_zone_count(struct cl_zone *z, int which);
CL_HIDDEN void cl_client_put(struct cl_client *c, uint32_t n);
CL_HIDDEN void cl_total_put(struct cl_zone_hdr *h, uint32_t n);
CL_HIDDEN int cl_zone_open(uint32_t capacity, const char *name,
			   uint32_t max_per_ip, struct cl_zone *z);

/* ---- kcheck.c: ask the kernel which counted sockets still exist ---- */
/* What a kernel check of one client may take for granted. */
struct cl_kcheck_how {
	int trust;		/* records held_here() (kcheck.c) are live */
	int self_fd;		/* a connection being refused: held by us,
				   no record's; or -1 */
};

CL_HIDDEN int cl_kcheck_client(struct cl_zone *z, uint32_t client, int why,
			       const struct cl_kcheck_how *how);
CL_HIDDEN int cl_check_budget(struct cl_zone_hdr *h, uint32_t now);
CL_HIDDEN int cl_kcheck_record(struct cl_zone *z, uint32_t idx, uint32_t gen,
			       int why);
CL_HIDDEN int cl_kcheck_available(void);

/* ---- core.c: policy shared by the wrappers ---- */
struct cl_state {
	struct cl_zone *zone;
	int pid;
	uint32_t forkgen;
};

extern CL_HIDDEN struct cl_state cl;

CL_HIDDEN int cl_ready(void);
CL_HIDDEN int cl_in_vfork_child(void);
CL_HIDDEN int cl_track(int c, int lfd, const struct sockaddr *sa,
		       socklen_t len, const struct cl_settings **s);

/* An entry claimed from the table, to be released after the real close. */
struct cl_taken {
	uint64_t w;
	int shared;
};

CL_HIDDEN int cl_entry_shared(const struct cl_fdent *e);
CL_HIDDEN int cl_take(struct cl_fdent *e, struct cl_taken *t);
CL_HIDDEN void cl_release_taken(const struct cl_taken *t);
CL_HIDDEN void cl_mark_shared(int fd);
CL_HIDDEN void cl_copy_entry(int from, int to);

#endif
