/*
 * config.c - the settings in force, and reloading them.
 *
 * Layers, later ones winning setting by setting: built-in defaults, the
 * inline CONNLIMIT="..." variable, the CONNLIMIT_* variables, then the
 * file named by CONNLIMIT_CONFIG.  The environment is read once, in the
 * constructor.  The file is polled with stat() from the accept path at
 * most once a second: no thread, no inotify, no descriptor kept.  A
 * change is parsed into a fresh mapping and published with one pointer
 * store; a bad, missing or empty file keeps the last good settings.
 *
 * Settings live in mappings, not on the stack or the heap: a struct
 * cl_settings is large (only the pages a config uses are touched) and
 * the reload runs inside accept, where malloc may not be safe.
 */
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "cl.h"
#include "policy.h"

#define POLL_EVERY_MS 1000
#define FILE_MAX (4u << 20)	/* a larger config file is an error */
/* Old settings kept for readers in flight.  Polls come at most once a
 * second, so at most 10 reloads fall within RETIRE_AFTER_MS: 16 slots
 * are never all young, and nothing is ever leaked. */
#define RETIRED 16
#define RETIRE_AFTER_MS 10000
#define CL_THEN_PASS_ "passing all connections through"
#define CL_THEN_PASS then_pass()
#define FILE_EMPTY "empty (caught half-written?)"
#define CL_KEEP "keeping the last good settings"

static const char *const env_names[] = {
	"CONNLIMIT_MAX_PER_IP", "CONNLIMIT_EXEMPT", "CONNLIMIT_LIMITS",
	"CONNLIMIT_IPV4_PREFIX", "CONNLIMIT_IPV6_PREFIX", "CONNLIMIT_PORTS",
	"CONNLIMIT_MAX_TOTAL", "CONNLIMIT_ACTION", "CONNLIMIT_MESSAGE",
	"CONNLIMIT_MODE", "CONNLIMIT_LOG", "CONNLIMIT_LOG_LEVEL",
	"CONNLIMIT_STRICT", "CONNLIMIT_CAPACITY", "CONNLIMIT_ZONE",
};

struct file_sig {
	dev_t dev;
	ino_t ino;
	off_t size;
	struct timespec mtime, ctime;
};

static struct cl_settings *env_layer;	/* defaults + environment */
static struct cl_settings *current;	/* published; NULL = pass through */
static char file_path[1024];		/* "" when there is no file */
static struct file_sig file_seen;	/* last version read (good or not) */
static int file_state;			/* 0 good, 1 bad, 2 missing */
static uint32_t poll_ms;
static int started;			/* the table exists */
static int polling;			/* one thread polls at a time */
static struct {
	struct cl_settings *s;
	uint32_t since;
} retired[RETIRED];

const struct cl_settings *cl_rules(void)
{
	return LOAD(&current);
}

static struct cl_settings *settings_new(void)
{
	void *p = mmap(NULL, sizeof(struct cl_settings),
		       PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
		       -1, 0);

	if (p == MAP_FAILED)
		return NULL;
	cl_settings_init(p);
	return p;
}

static void settings_free(struct cl_settings *s)
{
	if (s)
		munmap(s, sizeof *s);
}

/* Readers may still hold the old pointer: free it only much later. */
static void retire(struct cl_settings *old)
{
	uint32_t now = cl_now_ms();
	int i, slot = -1;

	for (i = 0; i < RETIRED; i++) {
		if (retired[i].s && now - retired[i].since > RETIRE_AFTER_MS) {
			settings_free(retired[i].s);
			retired[i].s = NULL;
		}
		if (!retired[i].s && slot < 0)
			slot = i;
	}
	if (slot < 0)
		return;	/* all recent: keep @old mapped for good */
	retired[slot].s = old;
	retired[slot].since = now;
}

/* error [file=F line=N | source=CONNLIMIT item=N] setting= value= ... */
static int strict_wanted(void);

/* What happens after an error at start-up. */
static const char *then_pass(void)
{
	return strict_wanted() ? "strict = 1: the program exits"
			       : CL_THEN_PASS_;
}

static void perr_log(const char *key, const char *src, const char *unit,
		     const struct cl_perr *e, const char *then)
{
	struct cl_line l;

	cl_line_start(&l, "error");
	if (key)
		cl_line_kv(&l, key, src);
	if (key && e->line)
		cl_line_ku(&l, unit, e->line);
	cl_line_kv(&l, "setting", e->setting);
	cl_line_kq(&l, "value", e->value);
	cl_line_kq(&l, "expected", e->expected);
	cl_line_str(&l, "; ");
	cl_line_str(&l, then);
	cl_line_emit(&l, CL_LOG_ERROR);
}

static void file_log(int level, const char *event, const char *why,
		     const char *then)
{
	struct cl_line l;

	cl_line_start(&l, event);
	cl_line_kv(&l, "file", file_path);
	if (why)
		cl_line_kq(&l, "reason", why);
	if (then) {
		cl_line_str(&l, "; ");
		cl_line_str(&l, then);
	}
	cl_line_emit(&l, level);
}

/* Settings naming files are ignored in secure-execution mode. */
static int secure_mode(void)
{
	return getauxval(AT_SECURE) != 0;
}

static const char *env_file(const char *name)
{
	const char *v = getenv(name);

	if (v && secure_mode()) {
		struct cl_line l;

		cl_line_start(&l, "warn event=ignored");
		cl_line_kv(&l, "setting", name);
		cl_line_kq(&l, "reason", "secure-execution mode (setuid or "
			   "file capabilities): files are not opened");
		cl_line_emit(&l, CL_LOG_WARN);
		return NULL;
	}
	return v;
}

/* A CONNLIMIT_* variable this library does not know: a typo, probably. */
static void warn_unknown_env(void)
{
	struct cl_line l;
	size_t i, n;
	char **e;

	for (e = environ; e && *e; e++) {
		if (strncmp(*e, "CONNLIMIT_", 10))
			continue;
		n = strcspn(*e, "=");
		for (i = 0; i < sizeof env_names / sizeof *env_names; i++)
			if (strlen(env_names[i]) == n &&
			    !strncmp(*e, env_names[i], n))
				break;
		if (i < sizeof env_names / sizeof *env_names ||
		    (n == 16 && !strncmp(*e, "CONNLIMIT_CONFIG", 16)))
			continue;
		cl_line_start(&l, "warn event=unknown-setting");
		cl_line_kq(&l, "variable", *e);
		cl_line_str(&l, "; ignored");
		cl_line_emit(&l, CL_LOG_WARN);
	}
}

/* Defaults, then CONNLIMIT="...", then each CONNLIMIT_* variable. */
static int env_layer_load(struct cl_settings *s)
{
	const char *v = getenv("CONNLIMIT");
	struct cl_perr e;
	size_t i;

	warn_unknown_env();
	if (v && cl_settings_parse(s, v, strlen(v), 1, &e) < 0) {
		perr_log("source", "CONNLIMIT", "item", &e, CL_THEN_PASS);
		return -1;
	}
	for (i = 0; i < sizeof env_names / sizeof *env_names; i++) {
		/* Settings that name files: not in secure-execution mode. */
		v = strcmp(env_names[i], "CONNLIMIT_LOG") &&
		    strcmp(env_names[i], "CONNLIMIT_ZONE") ?
			    getenv(env_names[i]) : env_file(env_names[i]);
		if (v && cl_settings_env_one(s, env_names[i], v, &e) < 0) {
			perr_log(NULL, NULL, NULL, &e, CL_THEN_PASS);
			return -1;
		}
	}
	if (secure_mode() && s->log_to == CL_LOGTO_FILE)
		s->log_to = CL_LOGTO_STDERR;
	return 0;	/* checked once merged with the file: layered() */
}

static void sig_of(const struct stat *st, struct file_sig *g)
{
	g->dev = st->st_dev;
	g->ino = st->st_ino;
	g->size = st->st_size;
	g->mtime = st->st_mtim;
	g->ctime = st->st_ctim;
}

static int sig_same(const struct file_sig *a, const struct file_sig *b)
{
	return a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
	       a->mtime.tv_sec == b->mtime.tv_sec &&
	       a->mtime.tv_nsec == b->mtime.tv_nsec &&
	       a->ctime.tv_sec == b->ctime.tv_sec &&
	       a->ctime.tv_nsec == b->ctime.tv_nsec;
}

/*
 * Read the whole file into a fresh mapping.  Returns its length, or -1
 * with @why set.  *@sig is the file as it was before the read; a file
 * that changed while being read is reported as such and read again at
 * the next poll.
 */
static ssize_t file_read(char **text, struct file_sig *sig,
			 const char **why)
{
	struct stat st, after;
	ssize_t r, got = 0;
	char *buf;
	/* O_NONBLOCK: a FIFO or a tty named here must not hang accept. */
	int fd = open(file_path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);

	*why = NULL;
	memset(sig, 0, sizeof *sig);
	if (fd < 0 || fstat(fd, &st) < 0) {
		*why = fd < 0 && errno == ENOENT ? "missing" : "unreadable";
		if (fd >= 0)
			CL_SYS(SYS_close, fd);
		return -1;
	}
	sig_of(&st, sig);
	if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size > FILE_MAX)
		*why = "not a regular file of at most 4 MiB";
	else if (st.st_size == 0)
		*why = FILE_EMPTY;
	buf = *why ? MAP_FAILED
		   : mmap(NULL, (size_t)st.st_size + 1, PROT_READ | PROT_WRITE,
			  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	while (buf != MAP_FAILED && got < st.st_size) {
		r = read(fd, buf + got, (size_t)(st.st_size - got));
		if (r <= 0)
			break;
		got += r;
	}
	if (!*why && (buf == MAP_FAILED || got != st.st_size ||
		      fstat(fd, &after) < 0 || after.st_size != st.st_size ||
		      after.st_mtim.tv_nsec != st.st_mtim.tv_nsec))
		*why = "changed while being read";
	CL_SYS(SYS_close, fd);
	if (*why) {
		if (buf != MAP_FAILED)
			munmap(buf, (size_t)st.st_size + 1);
		return -1;
	}
	*text = buf;
	return got;
}

/* The environment, then @file (may be NULL), over the defaults. */
static struct cl_settings *layered(const struct cl_settings *file,
				   struct cl_perr *e)
{
	struct cl_settings *eff = settings_new();

	if (!eff) {
		memset(e, 0, sizeof *e);
		strcpy(e->setting, "(all)");
		strcpy(e->expected, "memory to hold the settings");
		return NULL;
	}
	if (cl_settings_overlay(eff, env_layer, e) < 0 ||
	    (file && cl_settings_overlay(eff, file, e) < 0) ||
	    cl_settings_check(eff, e) < 0) {
		settings_free(eff);
		return NULL;
	}
	if (secure_mode() && eff->log_to == CL_LOGTO_FILE)
		eff->log_to = CL_LOGTO_STDERR;
	return eff;
}

/* Parse the file's text; the new settings in force, or NULL. */
static struct cl_settings *file_parse(const char *text, size_t len)
{
	struct cl_settings *f = settings_new(), *eff = NULL;
	struct cl_perr e;

	if (!f) {
		memset(&e, 0, sizeof e);
		strcpy(e.setting, "(all)");
		strcpy(e.expected, "memory to hold the settings");
	} else if (cl_settings_parse(f, text, len, 0, &e) == 0) {
		eff = layered(f, &e);
	}
	if (!eff)
		perr_log("file", file_path, "line", &e,
			 current ? CL_KEEP : CL_THEN_PASS);
	settings_free(f);
	return eff;
}

static void apply_logging(const struct cl_settings *s)
{
	cl_log_set_level(s->log_level);
	cl_log_set_dest(s->log_to == CL_LOGTO_FILE ? CL_DEST_FILE :
			s->log_to == CL_LOGTO_SYSLOG ? CL_DEST_SYSLOG :
			CL_DEST_STDERR, s->log_path);
}

/* Capacity and zone are fixed once the table exists. */
/*
 * Capacity and zone size and name the table; the prefixes are part of
 * every client's key, so a new prefix would start every count at zero.
 * All four are fixed once the library has started.
 */
static void keep_startup_only(struct cl_settings *next,
			      const struct cl_settings *cur)
{
	struct cl_line l;

	if (next->capacity == cur->capacity &&
	    !strcmp(next->zone, cur->zone) &&
	    next->ipv4_prefix == cur->ipv4_prefix &&
	    next->ipv6_prefix == cur->ipv6_prefix)
		return;
	cl_line_start(&l, "warn event=reload-ignored");
	cl_line_kv(&l, "file", file_path);
	cl_line_kq(&l, "reason", "capacity, zone, ipv4_prefix and "
		   "ipv6_prefix take effect only at start-up");
	cl_line_emit(&l, CL_LOG_WARN);
	next->capacity = cur->capacity;
	strcpy(next->zone, cur->zone);
	next->ipv4_prefix = cur->ipv4_prefix;
	next->ipv6_prefix = cur->ipv6_prefix;
}

/* Same settings as @b?  Compares what was parsed; the trie follows. */
static int settings_same(const struct cl_settings *a,
			 const struct cl_settings *b)
{
	return !memcmp(a, b, offsetof(struct cl_settings, cidr)) &&
	       !memcmp(a->cidr, b->cidr, a->ncidr * sizeof *a->cidr);
}

static void publish(struct cl_settings *next)
{
	struct cl_settings *old = LOAD(&current);

	/* A file bad at start-up and fixed later: the table was made from
	 * the environment's settings. */
	if (old || started)
		keep_startup_only(next, old ? old : env_layer);
	if (old && settings_same(next, old)) {
		settings_free(next);	/* touched, not changed */
		return;
	}
	apply_logging(next);
	STORE(&current, next);
	if (old) {
		retire(old);
		file_log(CL_LOG_INFO, "info event=reload", NULL, NULL);
	}
}

/* Read the file now; 0 when its settings are in force. */
static int file_load(void)
{
	struct cl_settings *next;
	struct file_sig sig;
	const char *why;
	char *text = NULL;
	ssize_t len = file_read(&text, &sig, &why);

	/* At start-up there is nothing to keep: an empty file is a file
	 * without settings, and the environment's apply. */
	if (len < 0 && !LOAD(&current) && !strcmp(why, FILE_EMPTY))
		len = 0;
	if (len < 0) {
		if (file_state == 0 || strcmp(why, "missing"))
			file_log(CL_LOG_ERROR, "error event=config-unusable",
				 why, LOAD(&current) ? CL_KEEP : then_pass());
		if (strcmp(why, "changed while being read"))
			file_seen = sig;
		file_state = !strcmp(why, "missing") ? 2 : 1;
		return -1;
	}
	file_seen = sig;
	next = file_parse(text ? text : "", (size_t)len);
	if (text)
		munmap(text, (size_t)len + 1);
	if (!next) {
		file_state = 1;
		return -1;
	}
	if (file_state != 0)
		file_log(CL_LOG_WARN, "warn event=config-fixed", NULL, NULL);
	file_state = 0;
	publish(next);
	return 0;
}

/*
 * From the accept path: has the file changed?  At most once a second and
 * by one thread at a time; one stat() when nothing changed.
 */
void cl_config_poll(void)
{
	uint32_t now = cl_now_ms(), last = LOAD(&poll_ms);
	struct file_sig sig;
	struct stat st;
	int zero = 0;

	if (!file_path[0] || now - last < POLL_EVERY_MS ||
	    !CAS(&poll_ms, &last, now))
		return;
	if (!CAS(&polling, &zero, 1))
		return;
	if (stat(file_path, &st) < 0) {
		if (file_state != 2)
			file_log(CL_LOG_ERROR, "error event=config-unusable",
				 "missing", LOAD(&current) ? CL_KEEP
							   : then_pass());
		file_state = 2;
		memset(&file_seen, 0, sizeof file_seen);
	} else {
		sig_of(&st, &sig);
		if (!sig_same(&sig, &file_seen))
			file_load();
	}
	STORE(&polling, 0);
}

/*
 * The program may change directory later: a relative path is made
 * absolute now, without resolving symlinks (a ConfigMap swap replaces
 * the target of a link, and the link is what must be polled).
 */
static void absolute_path(const char *path)
{
	size_t n;

	file_path[0] = '\0';
	if (path[0] != '/' && getcwd(file_path, sizeof file_path)) {
		n = strlen(file_path);
		if (n + 1 + strlen(path) >= sizeof file_path)
			n = 0;	/* too long: poll it as given */
		else if (n && file_path[n - 1] != '/')
			file_path[n++] = '/';
		file_path[n] = '\0';
	}
	strncat(file_path, path, sizeof file_path - 1 - strlen(file_path));
}

/*
 * strict = 1 from the environment, read directly: the environment may be
 * the very thing that failed to parse.  strict in a file counts only when
 * that file parsed.
 */
static int strict_wanted(void)
{
	const char *v = getenv("CONNLIMIT_STRICT");

	return (v && !strcmp(v, "1")) || env_layer->strict;
}

static void strict_exit(void)
{
	struct cl_line l;

	cl_line_start(&l, "error event=strict-exit");
	cl_line_kq(&l, "reason", "invalid configuration and strict = 1; "
		   "exiting with status 1 instead of running unprotected");
	cl_line_emit(&l, CL_LOG_ERROR);
	_exit(1);
}

/* The table is made: from now on its shaping settings are fixed. */
void cl_config_started(void)
{
	started = 1;
}

/* Start-up failed past the settings (the table): strict = 1 exits. */
void cl_config_failed(void)
{
	if (strict_wanted())
		strict_exit();
}

/* The settings that size the table: in force, else the environment's. */
const struct cl_settings *cl_config_startup(void)
{
	const struct cl_settings *s = LOAD(&current);

	return s ? s : env_layer;
}

/*
 * At start-up: the settings in force, or NULL to pass everything through
 * (logged).  With strict set, an invalid configuration ends the program.
 */
const struct cl_settings *cl_config_init(void)
{
	const char *path = env_file("CONNLIMIT_CONFIG");
	struct cl_perr e;
	int ok;

	env_layer = settings_new();
	if (!env_layer)
		return NULL;
	ok = env_layer_load(env_layer) == 0;
	if (ok)
		apply_logging(env_layer);
	if (ok && path && strlen(path) >= sizeof file_path) {
		struct cl_line l;

		cl_line_start(&l, "error");
		cl_line_kv(&l, "setting", "CONNLIMIT_CONFIG");
		cl_line_kq(&l, "expected", "a path shorter than 1024 bytes");
		cl_line_str(&l, "; ");
		cl_line_str(&l, CL_THEN_PASS);
		cl_line_emit(&l, CL_LOG_ERROR);
		ok = 0;
	} else if (ok && path && path[0]) {
		absolute_path(path);
		ok = file_load() == 0;
	} else if (ok) {
		struct cl_settings *eff = layered(NULL, &e);

		if (eff)
			publish(eff);
		else
			perr_log(NULL, NULL, NULL, &e, CL_THEN_PASS);
		ok = eff != NULL;
	}
	if (!ok && strict_wanted())
		strict_exit();
	if (!ok && !file_path[0])
		return NULL;	/* the environment is wrong: never enforce */
	return cl_config_startup();
}
