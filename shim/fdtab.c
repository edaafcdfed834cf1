/*
 * fdtab.c - descriptor number -> what the library knows about it.
 *
 * Private to each process (a forked child gets a copy, which is what it
 * should get: the same descriptors).  Two levels: a static array of page
 * pointers and pages of 4096 entries mapped on first use with mmap, never
 * malloc, so the table can grow from inside any wrapper.  A lookup is one
 * or two loads; the close path of a descriptor the library never tracked
 * stops there.
 */
#include <sys/mman.h>

#include "cl.h"

#define PAGE_SHIFT CL_FD_SHIFT
#define PAGE_FDS (1u << PAGE_SHIFT)
#define NPAGES (FD_MAX / PAGE_FDS)

struct cl_fdent *cl_fd_pages[NPAGES];
#define pages cl_fd_pages

/* Like cl_fd_peek, mapping the page if needed; NULL if out of memory. */
struct cl_fdent *cl_fd_get(int fd)
{
	struct cl_fdent *e = cl_fd_peek(fd), *p, *none = NULL;
	size_t len = PAGE_FDS * sizeof(struct cl_fdent);

	if (e || (unsigned)fd >= FD_MAX)
		return e;
	p = mmap(NULL, len, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return NULL;
	if (!CAS(&pages[(unsigned)fd >> PAGE_SHIFT], &none, p))
		munmap(p, len);	/* another thread installed one first */
	return cl_fd_peek(fd);
}

uint64_t cl_fd_conn_word(uint32_t idx, uint32_t gen)
{
	return FD_CONN | ((uint64_t)(gen & CL_GEN_MASK) << 32) | idx;
}

/* Call @fn for every descriptor in [lo, hi] that has an entry. */
void cl_fd_foreach(unsigned lo, unsigned hi,
		   void (*fn)(int fd, struct cl_fdent *e, void *), void *arg)
{
	unsigned pg, i, first, last;
	struct cl_fdent *p;

	if (hi >= FD_MAX)
		hi = FD_MAX - 1;
	for (pg = lo >> PAGE_SHIFT; lo <= hi && pg <= hi >> PAGE_SHIFT; pg++) {
		p = __atomic_load_n(&pages[pg], __ATOMIC_ACQUIRE);
		if (!p)
			continue;
		first = pg == lo >> PAGE_SHIFT ? lo & (PAGE_FDS - 1) : 0;
		last = pg == hi >> PAGE_SHIFT ? hi & (PAGE_FDS - 1)
					      : PAGE_FDS - 1;
		for (i = first; i <= last; i++)
			if (LOAD(&p[i].word))
				fn((int)(pg << PAGE_SHIFT | i), &p[i], arg);
	}
}
