/*
 * zonefile.c - create or attach the shared table.
 *
 * The default zone is a memfd mapped MAP_SHARED in the constructor, so it
 * is mapped before the program can fork and every descendant shares it;
 * its descriptor is closed at once (the library keeps no descriptor in
 * the program).  A named zone (CONNLIMIT_ZONE) is a file in /dev/shm that
 * unrelated processes attach to; it is formatted under a temporary name
 * and linked into place, so nobody ever maps a half-written header.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "cl.h"

#define ZONE_DIR "/dev/shm/connlimit."

static void raw_close(int fd)
{
	CL_SYS(SYS_close, fd);
}

static uint64_t zone_size(uint32_t nconns, uint32_t *nbuckets)
{
	/* Two client slots per record keep buckets from overflowing. */
	uint32_t nb = nconns / 4 < 64 ? 64 : nconns / 4;

	*nbuckets = nb;
	return sizeof(struct cl_zone_hdr) +
	       (uint64_t)nb * sizeof(struct cl_bucket) +
	       (uint64_t)nconns * sizeof(struct cl_conn);
}

static void zone_bind(struct cl_zone *z, void *base)
{
	char *p = base;

	z->hdr = base;
	z->nbuckets = z->hdr->nbuckets;
	z->nconns = z->hdr->nconns;
	z->buckets = (void *)(p + sizeof(struct cl_zone_hdr));
	z->conns = (void *)(p + sizeof(struct cl_zone_hdr) +
			    (uint64_t)z->nbuckets *
				    sizeof(struct cl_bucket));
}

static uint64_t zone_seed(void)
{
	uint64_t seed = 0;
	struct timespec ts;

	if (CL_SYS(SYS_getrandom, &seed, sizeof seed, 1) == sizeof seed)
		return seed;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_nsec * 0x9e3779b97f4a7c15ULL ^
	       (uint64_t)getpid();
}

/* Fill a zeroed mapping's header; the magic is stored last. */
static void zone_format(void *base, uint64_t size, uint32_t nconns,
			uint32_t nb)
{
	struct cl_zone_hdr *h = base;

	h->version = CL_ZONE_VERSION;
	h->size = size;
	h->hdr_size = sizeof(struct cl_zone_hdr);
	h->bucket_size = sizeof(struct cl_bucket);
	h->conn_size = sizeof(struct cl_conn);
	h->slots = CL_SLOTS;
	h->nbuckets = nb;
	h->nconns = nconns;
	h->seed = zone_seed();
	h->creator_pid = (uint32_t)getpid();
	h->creator_uid = (uint32_t)geteuid();
	STORE(&h->magic, CL_ZONE_MAGIC);
}

static void *map_fd(int fd, uint64_t size)
{
	void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);

	return p == MAP_FAILED ? NULL : p;
}

static void zone_error(const char *name, const char *expected,
		       const char *reason)
{
	struct cl_line l;

	cl_line_start(&l, "error");
	cl_line_kv(&l, "setting", "CONNLIMIT_ZONE");
	cl_line_kq(&l, "value", name);
	cl_line_kq(&l, "expected", expected);
	cl_line_kq(&l, "reason", reason);
	cl_line_str(&l, "; passing all connections through");
	cl_line_emit(&l, CL_LOG_ERROR);
}

static void zone_error_default(uint32_t capacity)
{
	struct cl_line l;

	cl_line_start(&l, "error");
	cl_line_kv(&l, "setting", "CONNLIMIT_CAPACITY");
	cl_line_ku(&l, "value", capacity);
	cl_line_kq(&l, "expected", "a table that fits in memory");
	cl_line_kq(&l, "reason", "mmap of the default zone failed");
	cl_line_str(&l, "; passing all connections through");
	cl_line_emit(&l, CL_LOG_ERROR);
}

static int zone_default(uint32_t capacity, struct cl_zone *z)
{
	uint32_t nb;
	uint64_t size = zone_size(capacity, &nb);
	void *base = NULL;
	int fd;

	fd = (int)CL_SYS(SYS_memfd_create, "connlimit-zone", MFD_CLOEXEC);
	if (fd >= 0) {
		if (ftruncate(fd, (off_t)size) == 0)
			base = map_fd(fd, size);
		raw_close(fd);
	}
	if (!base) {
		base = mmap(NULL, size, PROT_READ | PROT_WRITE,
			    MAP_SHARED | MAP_ANONYMOUS, -1, 0);
		if (base == MAP_FAILED) {
			zone_error_default(capacity);
			return -ENOMEM;
		}
	}
	zone_format(base, size, capacity, nb);
	zone_bind(z, base);
	return 0;
}

/* Check a mapped header against what this build understands. */
static const char *zone_check(const struct cl_zone_hdr *h, uint64_t len)
{
	uint32_t nb;

	if (LOAD(&h->magic) != CL_ZONE_MAGIC)
		return "not a connlimit zone (bad magic)";
	if (h->version != CL_ZONE_VERSION ||
	    h->hdr_size != sizeof(struct cl_zone_hdr) ||
	    h->bucket_size != sizeof(struct cl_bucket) ||
	    h->conn_size != sizeof(struct cl_conn) || h->slots != CL_SLOTS)
		return "zone has another layout version";
	if (h->size != len || zone_size(h->nconns, &nb) != len ||
	    nb != h->nbuckets)
		return "zone size does not match its header";
	return NULL;
}

static int zone_attach(const char *name, const char *path, struct cl_zone *z)
{
	struct stat st;
	const char *why;
	void *base;
	int fd = open(path, O_RDWR | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);

	if (fd < 0) {
		int err = errno;

		if (err != ENOENT)
			zone_error(name, "a zone file owned by this user, mode "
				   "0600", strerror(err));
		return -err;
	}
	if (fstat(fd, &st) < 0 || st.st_uid != geteuid() ||
	    (st.st_mode & 077) || (uint64_t)st.st_size <
	    sizeof(struct cl_zone_hdr)) {
		raw_close(fd);
		zone_error(name, "a zone owned by this user, mode 0600",
			   "owned by another user, open to others, or empty");
		return -EPERM;
	}
	base = S_ISREG(st.st_mode) ? map_fd(fd, (uint64_t)st.st_size) : NULL;
	raw_close(fd);
	if (!base) {
		zone_error(name, "a regular zone file that can be mapped",
			   S_ISREG(st.st_mode) ? "mmap failed" : "not a file");
		return -ENOMEM;
	}
	why = zone_check(base, (uint64_t)st.st_size);
	if (why) {
		munmap(base, (size_t)st.st_size);
		zone_error(name, "a zone of this library's layout version",
			   why);
		return -EPROTO;
	}
	zone_bind(z, base);
	return 0;
}

/* Format a zone under a private name, then link it into place. */
static int zone_create(uint32_t capacity, const char *path)
{
	char tmp[160];
	uint32_t nb;
	uint64_t size = zone_size(capacity, &nb);
	void *base;
	int fd, r = 0;

	snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid());
	fd = open(tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW,
		  0600);
	if (fd < 0)
		return -errno;
	base = ftruncate(fd, (off_t)size) == 0 ? map_fd(fd, size) : NULL;
	raw_close(fd);
	if (base) {
		zone_format(base, size, capacity, nb);
		munmap(base, size);
		if (link(tmp, path) < 0 && errno != EEXIST)
			r = -errno;
	} else {
		r = -ENOMEM;
	}
	unlink(tmp);
	return r;
}

static int zone_named(uint32_t capacity, const char *name, struct cl_zone *z)
{
	char path[128];
	int r;

	snprintf(path, sizeof path, "%s%s", ZONE_DIR, name);
	r = zone_attach(name, path, z);
	if (r != -ENOENT)
		return r;
	r = zone_create(capacity, path);
	if (r < 0) {
		zone_error(name, "a creatable zone in /dev/shm", strerror(-r));
		return r;
	}
	return zone_attach(name, path, z);
}

/* A named zone keeps the capacity its creator gave it. */
static void capacity_note(const char *name, uint32_t asked, uint32_t got)
{
	struct cl_line l;

	cl_line_start(&l, "warn event=zone-capacity");
	cl_line_kv(&l, "zone", name);
	cl_line_ku(&l, "asked", asked);
	cl_line_ku(&l, "capacity", got);
	cl_line_kq(&l, "reason", "the zone existed with another capacity");
	cl_line_emit(&l, CL_LOG_WARN);
}

int cl_zone_open(uint32_t capacity, const char *name, uint32_t max_per_ip,
		 struct cl_zone *z)
{
	int r = name[0] ? zone_named(capacity, name, z)
			: zone_default(capacity, z);

	if (r == 0)
		STORE(&z->hdr->max_per_ip, max_per_ip);
	if (r == 0 && z->nconns != capacity)
		capacity_note(name, capacity, z->nconns);
	return r;
}
