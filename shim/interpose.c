/*
 * interpose.c - the exported edge.
 *
 * Each exported function is a thin shell: anything that is not a counted
 * inet connection goes straight to libc through a pointer bound once at
 * start-up with dlsym(RTLD_NEXT) (so other preloads chain), or through
 * syscall() while start-up has not finished.  errno is saved on entry and
 * restored after bookkeeping; a failing real call's errno is returned.
 */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "cl.h"
#include "policy.h"

#define EXPORT __attribute__((visibility("default")))

#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

typedef int (*accept_fn)(int, struct sockaddr *, socklen_t *);
typedef int (*accept4_fn)(int, struct sockaddr *, socklen_t *, int);
typedef int (*fd_fn)(int);
typedef int (*dup2_fn)(int, int);
typedef int (*dup3_fn)(int, int, int);
typedef int (*fcntl_fn)(int, int, ...);
typedef int (*fclose_fn)(FILE *);
typedef int (*close_range_fn)(unsigned, unsigned, int);
typedef void (*closefrom_fn)(int);
typedef int (*execve_fn)(const char *, char *const[], char *const[]);
typedef int (*execv_fn)(const char *, char *const[]);
typedef int (*spawn_fn)(pid_t *, const char *,
			const posix_spawn_file_actions_t *,
			const posix_spawnattr_t *, char *const[],
			char *const[]);
typedef ssize_t (*sendmsg_fn)(int, const struct msghdr *, int);

static struct {
	accept_fn accept;
	accept4_fn accept4;
	fd_fn close, dup;
	dup2_fn dup2;
	dup3_fn dup3;
	fcntl_fn fcntl, fcntl64;
	fclose_fn fclose;
	close_range_fn close_range;
	closefrom_fn closefrom;
	execve_fn execve, execvpe;
	execv_fn execv, execvp;
	spawn_fn posix_spawn, posix_spawnp;
	sendmsg_fn sendmsg;
	FILE *(*popen)(const char *, const char *);
	int (*system)(const char *);
	int (*sendmmsg)(int, struct mmsghdr *, unsigned, int);
} real;

extern int _IO_fclose(FILE *);	/* glibc's own fclose, for before start-up */

static void *next(const char *name)
{
	return dlsym(RTLD_NEXT, name);
}

void cl_resolve_reals(void)
{
	real.accept = (accept_fn)next("accept");
	real.accept4 = (accept4_fn)next("accept4");
	real.close = (fd_fn)next("close");
	real.dup = (fd_fn)next("dup");
	real.dup2 = (dup2_fn)next("dup2");
	real.dup3 = (dup3_fn)next("dup3");
	real.fcntl = (fcntl_fn)next("fcntl");
	real.fcntl64 = (fcntl_fn)next("fcntl64");
	real.fclose = (fclose_fn)next("fclose");
	real.close_range = (close_range_fn)next("close_range");
	real.closefrom = (closefrom_fn)next("closefrom");
	real.execve = (execve_fn)next("execve");
	real.execvpe = (execve_fn)next("execvpe");
	real.execv = (execv_fn)next("execv");
	real.execvp = (execv_fn)next("execvp");
	real.posix_spawn = (spawn_fn)next("posix_spawn");
	real.posix_spawnp = (spawn_fn)next("posix_spawnp");
	real.sendmsg = (sendmsg_fn)next("sendmsg");
	real.popen = (FILE * (*)(const char *, const char *))next("popen");
	real.system = (int (*)(const char *))next("system");
	real.sendmmsg = (int (*)(int, struct mmsghdr *, unsigned, int))
		next("sendmmsg");
}

/* ---- calls into libc, or the kernel before start-up ---- */

typedef long (*syscall_fn)(long, ...);
static syscall_fn real_syscall;

/* Bound on first use: start-up itself needs it (dlsym does not call
 * syscall(), so this cannot recurse). */
long cl_sys(long n, long a, long b, long c, long d)
{
	syscall_fn fn = LOAD(&real_syscall);

	if (!fn) {
		fn = (syscall_fn)dlsym(RTLD_NEXT, "syscall");
		STORE(&real_syscall, fn);
	}
	return fn(n, a, b, c, d, 0L, 0L);
}

static int do_close(int fd)
{
	return real.close ? real.close(fd) : (int)CL_SYS(SYS_close, fd);
}

static int do_accept(int fd, struct sockaddr *sa, socklen_t *len,
		     int flags, int four)
{
	if (four && real.accept4)
		return real.accept4(fd, sa, len, flags);
	if (!four && real.accept)
		return real.accept(fd, sa, len);
	return (int)CL_SYS(SYS_accept4, fd, sa, len, flags);
}

static int do_fcntl(fcntl_fn fn, int fd, int cmd, void *arg)
{
	return fn ? fn(fd, cmd, arg) : (int)CL_SYS(SYS_fcntl, fd, cmd, arg);
}

/* ---- vfork ---- */

/*
 * A vfork child runs on its parent's memory until it execs or exits: if
 * it closed a counted descriptor through our close, it would release the
 * parent's slot and clear the parent's entry.  Telling the child apart
 * costs a system call (getpid), so it is paid only by programs that have
 * ever called vfork: this flag, set on the way into vfork, turns the
 * check on for the rest of the process's life.
 *
 * vfork cannot be wrapped by a C function (the child would return
 * through, and clobber, the frame the parent later returns through).  The
 * trampoline below calls cl_vfork_prepare, whose frame is gone again when
 * it returns, then jumps to the real vfork: both processes return straight
 * to the program, as from libc's own.
 */
static int vforked;

CL_HIDDEN void *cl_vfork_prepare(void);

void *cl_vfork_prepare(void)
{
	static void *real_vfork;
	void *fn;

	STORE(&vforked, 1);
	ADD(&cl.forkgen, 1);	/* the exec'd child may keep descriptors */
	fn = LOAD(&real_vfork);
	if (!fn) {
		fn = dlsym(RTLD_NEXT, "vfork");
		/* POSIX allows fork wherever vfork is called. */
		STORE(&real_vfork, fn ? fn : (void *)fork);
		fn = LOAD(&real_vfork);
	}
	return fn;
}

#if defined(__x86_64__)
__asm__(".text\n"
	".globl vfork\n"
	".type vfork, @function\n"
	"vfork:\n"
	"	subq $8, %rsp\n"
	"	call cl_vfork_prepare\n"
	"	addq $8, %rsp\n"
	"	jmp *%rax\n"
	".size vfork, .-vfork\n");
#elif defined(__aarch64__)
__asm__(".text\n"
	".globl vfork\n"
	".type vfork, %function\n"
	"vfork:\n"
	"	stp x29, x30, [sp, #-16]!\n"
	"	bl cl_vfork_prepare\n"
	"	ldp x29, x30, [sp], #16\n"
	"	br x0\n"
	".size vfork, .-vfork\n");
#endif

/* In a vfork child: leave the parent's tables alone. */
static int vfork_child(void)
{
	return CL_UNLIKELY(LOAD(&vforked)) && cl_in_vfork_child();
}

/* ---- accept ---- */

/*
 * accept writes the peer into a buffer of ours, never the caller's: the
 * admission must not read memory the program can change meanwhile (a
 * buffer shared by accepting threads).  The caller's gets a copy, with
 * the kernel's truncation rule.  (An invalid caller pointer therefore
 * faults here where the kernel would return EFAULT: see Limitations.)
 */
static void copy_out(struct sockaddr *sa, socklen_t *len,
		     const struct sockaddr_storage *ss, socklen_t got)
{
	if (!sa)
		return;
	memcpy(sa, ss, got < *len ? got : *len);
	*len = got;
}

/*
 * Close a refused connection: by default with a reset (no TIME_WAIT on
 * our side under a flood); or a plain close; or after a message sent
 * without blocking, so a client that never reads cannot stall accept.
 */
static void refuse(int c, int how, const struct cl_settings *s)
{
	struct linger lg = { .l_onoff = 1, .l_linger = 0 };

	if (how == CL_ACTION_RESET + 1)
		setsockopt(c, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
	if (how == CL_ACTION_MESSAGE + 1) {
		send(c, s->message, s->message_len,
		     MSG_DONTWAIT | MSG_NOSIGNAL);
		shutdown(c, SHUT_WR);
	}
	do_close(c);
}

/*
 * After a refusal, may we accept again without blocking a program that
 * only asked for one connection?  A non-blocking listener: yes, the real
 * accept will say EAGAIN.  A blocking one: only if another is pending.
 */
static int may_accept_again(int lfd)
{
	struct pollfd p = { .fd = lfd, .events = POLLIN };
	int fl = do_fcntl(real.fcntl, lfd, F_GETFL, NULL);

	if (fl >= 0 && (fl & O_NONBLOCK))
		return 1;
	return poll(&p, 1, 0) == 1 && (p.revents & POLLIN);
}

static int limited_accept(int lfd, struct sockaddr *sa, socklen_t *len,
			  int flags, int four)
{
	const struct cl_settings *s = NULL;
	struct sockaddr_storage ss;
	socklen_t got;
	int c, saved = errno, cs, how;

	for (;;) {
		got = sizeof ss;
		c = do_accept(lfd, (struct sockaddr *)&ss, &got, flags, four);
		if (c < 0)
			return c;
		pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &cs);
		how = cl_track(c, lfd, (struct sockaddr *)&ss, got, &s);
		if (!how) {
			pthread_setcancelstate(cs, NULL);
			copy_out(sa, len, &ss, got);
			errno = saved;
			return c;
		}
		refuse(c, how, s);
		c = may_accept_again(lfd);
		pthread_setcancelstate(cs, NULL);
		if (!c) {
			errno = ECONNABORTED;
			return -1;
		}
	}
}

static int accept_common(int fd, struct sockaddr *sa, socklen_t *len,
			 int flags, int four)
{
	/* accept(fd, addr, NULL) and a negative length must fail in the
	 * kernel as they would. */
	if (!cl_ready() || !cl.zone || (sa && (!len || (int)*len < 0)))
		return do_accept(fd, sa, len, flags, four);
	return limited_accept(fd, sa, len, flags, four);
}

EXPORT int accept(int fd, struct sockaddr *sa, socklen_t *len)
{
	return accept_common(fd, sa, len, 0, 0);
}

EXPORT int accept4(int fd, struct sockaddr *sa, socklen_t *len, int flags)
{
	return accept_common(fd, sa, len, flags, 1);
}

/* ---- close and its relatives ---- */

/*
 * Close a counted descriptor: the entry is taken before the real call
 * (a number the kernel frees may be handed out again at once) and the
 * slot released after it.  The real call's result and errno are
 * returned; on success errno is the caller's.
 */
static int close_counted(struct cl_fdent *e, int (*op)(void *), void *arg)
{
	struct cl_taken t;
	int saved = errno, r, err;

	cl_take(e, &t);
	r = op(arg);
	err = errno;
	cl_release_taken(&t);
	errno = r < 0 ? err : saved;
	return r;
}

static int op_close(void *fd)
{
	return do_close(*(int *)fd);
}

static int op_fclose(void *fp)
{
	return real.fclose(fp);
}

EXPORT int close(int fd)
{
	struct cl_fdent *e = cl_fd_peek(fd);

	if (CL_LIKELY(!e || !LOAD(&e->word)) || vfork_child())
		return do_close(fd);
	return close_counted(e, op_close, &fd);
}

EXPORT int fclose(FILE *fp)
{
	struct cl_fdent *e;

	if (!cl_ready() || !real.fclose)
		return real.fclose ? real.fclose(fp) : _IO_fclose(fp);
	e = cl_fd_peek(fileno(fp));
	if (!e || !LOAD(&e->word) || vfork_child())
		return real.fclose(fp);
	return close_counted(e, op_fclose, fp);
}

static void mark_closing(int fd, struct cl_fdent *e, void *arg)
{
	uint64_t w = LOAD(&e->word);

	(void)fd;
	(void)arg;
	while (w && !(w & FD_CLOSING) &&
	       !CAS(&e->word, &w, w | FD_CLOSING))
		;
}

static void unmark_closing(int fd, struct cl_fdent *e, void *arg)
{
	uint64_t w = LOAD(&e->word);

	(void)fd;
	(void)arg;
	while ((w & FD_CLOSING) && !CAS(&e->word, &w, w & ~FD_CLOSING))
		;
}

/* The real call closed every descriptor we marked: release them. */
static void finish_closing(int fd, struct cl_fdent *e, void *arg)
{
	struct cl_taken t;
	uint64_t w = LOAD(&e->word);

	(void)fd;
	(void)arg;
	if (!(w & FD_CLOSING))
		return;
	t.shared = cl_entry_shared(e);
	if (!CAS(&e->word, &w, 0))
		return;	/* accept reused the number and handled it */
	t.w = w;
	cl_release_taken(&t);
}

/*
 * Bookkeeping around a call that closes a range of descriptors: mark the
 * tracked ones, let the kernel close them, then release what was marked.
 * Only tracked descriptors are visited, never every number up to the
 * descriptor limit.  Returns 0 when the caller should pass the call
 * through untouched (a vfork child shares our memory; see LESSONS 13).
 */
static int range_begin(unsigned lo, unsigned hi)
{
	if (!cl_ready() || !cl.zone || lo > hi || cl_in_vfork_child())
		return 0;
	cl_fd_foreach(lo, hi, mark_closing, NULL);
	return 1;
}

static void range_end(unsigned lo, unsigned hi, int ok)
{
	int saved = errno;

	cl_fd_foreach(lo, hi, ok ? finish_closing : unmark_closing, NULL);
	errno = saved;
}

static int do_close_range(unsigned lo, unsigned hi, int flags)
{
	if (real.close_range)
		return real.close_range(lo, hi, flags);
	return (int)CL_SYS(SYS_close_range, lo, hi, flags);
}

EXPORT int close_range(unsigned lo, unsigned hi, int flags)
{
	int r, track;

	/* CLOSE_RANGE_CLOEXEC closes nothing now: the descriptors die at
	 * exec, and the kernel check releases their slots after that. */
	track = !(flags & CLOSE_RANGE_CLOEXEC) && range_begin(lo, hi);
	r = do_close_range(lo, hi, flags);
	if (track)
		range_end(lo, hi, r == 0);
	return r;
}

EXPORT void closefrom(int lo)
{
	int track = lo >= 0 && range_begin((unsigned)lo, ~0u);

	if (real.closefrom)
		real.closefrom(lo);
	else
		CL_SYS(SYS_close_range, (unsigned)lo, ~0u, 0);
	if (track)
		range_end((unsigned)lo, ~0u, 1);
}

/* ---- duplication ---- */

EXPORT int dup(int fd)
{
	int r = real.dup ? real.dup(fd) : (int)CL_SYS(SYS_dup, fd);

	if (r >= 0 && cl_ready() && !vfork_child())
		cl_copy_entry(fd, r);
	return r;
}

static int raw_dup2(int ofd, int nfd)
{
#ifdef SYS_dup2
	return (int)CL_SYS(SYS_dup2, ofd, nfd);
#else
	if (ofd == nfd)
		return do_fcntl(NULL, ofd, F_GETFD, NULL) < 0 ? -1 : nfd;
	return (int)CL_SYS(SYS_dup3, ofd, nfd, 0);
#endif
}

/* dup2 and dup3 close @nfd implicitly when it was open. */
static int dup_onto(int ofd, int nfd, int flags, int three)
{
	int r, track;

	struct cl_fdent *e = cl_fd_peek(nfd);

	track = ofd != nfd && e && LOAD(&e->word) &&
		range_begin((unsigned)nfd, (unsigned)nfd);
	if (three)
		r = real.dup3 ? real.dup3(ofd, nfd, flags)
			      : (int)CL_SYS(SYS_dup3, ofd, nfd, flags);
	else
		r = real.dup2 ? real.dup2(ofd, nfd) : raw_dup2(ofd, nfd);
	if (track)
		range_end((unsigned)nfd, (unsigned)nfd, r >= 0);
	if (r >= 0 && ofd != nfd && cl_ready() && !vfork_child())
		cl_copy_entry(ofd, nfd);
	return r;
}

EXPORT int dup2(int ofd, int nfd)
{
	return dup_onto(ofd, nfd, 0, 0);
}

EXPORT int dup3(int ofd, int nfd, int flags)
{
	return dup_onto(ofd, nfd, flags, 1);
}

static int fcntl_common(fcntl_fn fn, int fd, int cmd, void *arg)
{
	int r = do_fcntl(fn, fd, cmd, arg);

	if (r >= 0 && (cmd == F_DUPFD || cmd == F_DUPFD_CLOEXEC) &&
	    cl_ready() && !vfork_child())
		cl_copy_entry(fd, r);
	return r;
}

/* The argument is an int or a pointer; both travel as one word. */
EXPORT int fcntl(int fd, int cmd, ...)
{
	va_list ap;
	void *arg;

	va_start(ap, cmd);
	arg = va_arg(ap, void *);
	va_end(ap);
	return fcntl_common(real.fcntl, fd, cmd, arg);
}

EXPORT int fcntl64(int fd, int cmd, ...)
{
	va_list ap;
	void *arg;

	va_start(ap, cmd);
	arg = va_arg(ap, void *);
	va_end(ap);
	return fcntl_common(real.fcntl64 ? real.fcntl64 : real.fcntl, fd, cmd,
			    arg);
}

/* ---- other processes: exec, spawn, descriptor passing ---- */

/*
 * A child started without fork handlers (vfork, posix_spawn) may carry
 * our descriptors into a new program.  Bumping the fork generation marks
 * every tracked descriptor shared, so our closes ask the kernel.  In a
 * vfork child this write lands in the parent's memory, as intended.
 */
static void others_may_hold(void)
{
	if (cl_ready())
		ADD(&cl.forkgen, 1);
}

EXPORT int execve(const char *path, char *const argv[], char *const envp[])
{
	others_may_hold();
	if (!real.execve)
		return (int)CL_SYS(SYS_execve, path, argv, envp);
	return real.execve(path, argv, envp);
}

EXPORT int execv(const char *path, char *const argv[])
{
	others_may_hold();
	if (!real.execv)
		return (int)CL_SYS(SYS_execve, path, argv, environ);
	return real.execv(path, argv);
}

EXPORT int execvp(const char *file, char *const argv[])
{
	others_may_hold();
	if (!real.execvp) {
		errno = ENOSYS;
		return -1;
	}
	return real.execvp(file, argv);
}

EXPORT int execvpe(const char *file, char *const argv[], char *const envp[])
{
	others_may_hold();
	if (!real.execvpe) {
		errno = ENOSYS;
		return -1;
	}
	return real.execvpe(file, argv, envp);
}

EXPORT int posix_spawn(pid_t *pid, const char *path,
		       const posix_spawn_file_actions_t *fa,
		       const posix_spawnattr_t *attr, char *const argv[],
		       char *const envp[])
{
	others_may_hold();
	if (!real.posix_spawn)
		return ENOSYS;
	return real.posix_spawn(pid, path, fa, attr, argv, envp);
}

EXPORT int posix_spawnp(pid_t *pid, const char *file,
			const posix_spawn_file_actions_t *fa,
			const posix_spawnattr_t *attr, char *const argv[],
			char *const envp[])
{
	others_may_hold();
	if (!real.posix_spawnp)
		return ENOSYS;
	return real.posix_spawnp(pid, file, fa, attr, argv, envp);
}

/* popen and system start their child without fork handlers (glibc uses
 * its internal posix_spawn): the child may keep our descriptors. */
EXPORT FILE *popen(const char *cmd, const char *type)
{
	others_may_hold();
	if (!real.popen) {
		errno = ENOSYS;
		return NULL;
	}
	return real.popen(cmd, type);
}

EXPORT int system(const char *cmd)
{
	others_may_hold();
	if (!real.system)
		return -1;
	return real.system(cmd);
}

/*
 * libuv (Node.js) and others close descriptors with syscall(SYS_close):
 * route that, and SYS_close_range, through the same bookkeeping.  Every
 * other number is passed on with six word-sized arguments, as libc's
 * syscall() reads them.
 */
EXPORT long syscall(long n, ...)
{
	long a[6];
	va_list ap;
	int i;

	va_start(ap, n);
	for (i = 0; i < 6; i++)
		a[i] = va_arg(ap, long);
	va_end(ap);
	if (n == SYS_close)
		return close((int)a[0]);
	if (n == SYS_close_range)
		return close_range((unsigned)a[0], (unsigned)a[1], (int)a[2]);
	if (!LOAD(&real_syscall))
		cl_sys(SYS_getpid, 0, 0, 0, 0);	/* binds real_syscall */
	return real_syscall(n, a[0], a[1], a[2], a[3], a[4], a[5]);
}

/* A descriptor sent with SCM_RIGHTS gains a holder in another process. */
static void mark_passed(const struct msghdr *m)
{
	struct cmsghdr *c;
	size_t i, n;
	int fd;

	for (c = CMSG_FIRSTHDR(m); c; c = CMSG_NXTHDR((struct msghdr *)m, c)) {
		/* A header the kernel would refuse (EINVAL): leave it to it. */
		if (c->cmsg_len < CMSG_LEN(0) ||
		    c->cmsg_len > m->msg_controllen -
				  (size_t)((char *)c - (char *)m->msg_control))
			return;
		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
			continue;
		n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (i = 0; i < n; i++) {
			memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
			cl_mark_shared(fd);
		}
	}
}

EXPORT int sendmmsg(int fd, struct mmsghdr *v, unsigned n, int flags)
{
	unsigned i;

	if (v && cl_ready())
		for (i = 0; i < n; i++)
			if (v[i].msg_hdr.msg_controllen)
				mark_passed(&v[i].msg_hdr);
	if (!real.sendmmsg)
		return (int)CL_SYS(SYS_sendmmsg, fd, v, n, flags);
	return real.sendmmsg(fd, v, n, flags);
}

EXPORT ssize_t sendmsg(int fd, const struct msghdr *m, int flags)
{
	if (m && m->msg_controllen && cl_ready())
		mark_passed(m);
	if (!real.sendmsg)
		return CL_SYS(SYS_sendmsg, fd, m, flags);
	return real.sendmsg(fd, m, flags);
}
