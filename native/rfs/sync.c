/* The full synchronisation, primary side: see sync.h and docs/replication.md.
 *
 * The walk.  Depth first from the root, each directory's entries in name order, the
 * secondary's listing (LIST, through the stream) merged with the primary's (the same
 * query answered here by rfs_query(), so both sides are described by the same code).
 * For each name, one step under fs.c's locks (rfs_fs_step_begin: no rename anywhere, no
 * live change of that path) looks at the primary's entry as it is now and sends what
 * makes the secondary's the same:
 * - gone here: PURGE there;
 * - of another type there, or missing (the listing may be stale: PURGE first anyway):
 *   create it (MKDIR, CREATE and the data, SYMLINK, MKNOD);
 * - owner, mode, mtime, xattr digest different: CHOWN, CHMOD, UTIMENS, (REMOVE|SET)XATTR;
 * - a regular file on both sides: block by block, below.
 * Everything is queued (the stream's backpressure bounds it), except MKDIR, a barrier.
 *
 * Data.  Blocks of 64 KiB, compared by XXH3-128 (query.h) in windows of 64 blocks:
 * the secondary's sums (SUMS, answered after every operation submitted before it on
 * that file), then the primary's, read without a lock but after that request.  Equal
 * sums need nothing: whatever the application wrote in between reaches the secondary
 * after the request and overwrites the same bytes on both sides.  A block that differs
 * is read again and sent in a step of its own, so the stream carries it either before or
 * after a live write of that file, in the order the two happened here: data extents as
 * WRITE, holes as a punched hole.  The file ends with TRUNCATE to its size and UTIMENS.
 * A new file gets CREATE, its data extents (holes stay holes) and the same end.
 *
 * Hard links.  The first name the run meets of a file with several is synchronised as
 * any file (unless the secondary's has more names than the primary's: then a copy of
 * its own first); each other name is made a link to it there (LINK, replacing what is
 * there) unless the secondary's is that inode already.  A link made, or a file with
 * several names renamed, while the secondary was away marks the whole tree (dirty.c):
 * only a walk finds the other names.
 *
 * Renames.  Between steps the application may rename anything, including the directory
 * being walked.  Every step checks that the path still names the file it read (by its
 * inode) and leaves it otherwise; fs.c records both paths of every rename while a sync
 * runs, and after the walk each recorded path is synchronised again (a directory with
 * all it holds), until a pass records none.  From the third pass on, renames wait until
 * the pass is over, so it ends.  Everything else the application does during the walk
 * reaches the secondary by the stream: in a part already walked it applies there as
 * here; in a part not yet walked it may fail there, and the walk repairs it when it gets
 * there.  The run ends with SYNCFS: the secondary's copy is durable.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/falloc.h>
#include <pthread.h>
#include <search.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "apply.h"
#include "io.h"
#include "log.h"
#include "query.h"
#include "sync.h"

#define BLOCK_SHIFT 16                       /* 64 KiB: a 4 KiB change costs 64 KiB on the wire */
#define BLOCK ((off_t)1 << BLOCK_SHIFT)
#define WINDOW (64 * BLOCK)                  /* per SUMS request: 1 KiB of sums, 4 MiB of reading */
#define CHUNK ((off_t)RFS_DATA_MAX)          /* a new file's data per step */
#define PROGRESS_NS 500000000LL              /* progress events at most twice a second */
#define HOLD_FROM_PASS 3                     /* renames wait for the passes from this one on */
#define APP_IDLE_NS 1000000000LL             /* the application no longer writes: the cap lifts */
#define PACE_BURST (4.0 * 1024 * 1024)       /* what a cap lets through at once, at most */
#define PACE_SLEEP_NS 5000000L

enum state { IDLE, RUNNING, DONE, FAILED };

static const char *const state_names[] = { "idle", "running", "done", "failed" };

struct rfs_sync {
	struct rfs_sync_config cfg;
	/* Guards state, result, thread, started, ended; the counters are atomics. */
	pthread_mutex_t mu;
	enum state state;
	char result[320];
	pthread_t thread;
	bool joinable;
	int64_t started_ns, ended_ns; /* CLOCK_MONOTONIC */
	int64_t started_wall;         /* seconds since the epoch */
	atomic_int cancel;
	atomic_uint_fast64_t files_scanned, files_total, bytes_scanned, bytes_total, bytes_sent;
	atomic_int_fast64_t progress_ns; /* the last progress event */

	/* The run's own: set before its threads start, or touched by the walk's thread only
	 * (ns_held changes between passes, while no worker has a job). */
	uint64_t session;             /* the secondary's attachment this run talks to */
	bool ns_held;                 /* renames are held off for the whole pass */
	uint64_t empty_xattrs;        /* the digest of no attributes */
	int passes;                   /* over the tree, then over the paths renames touched */
	uint64_t again;               /* paths visited again */
	/* This run's kind, and the lineage the journal takes when it succeeds. */
	enum rfs_sync_mode mode;
	uint64_t tag;
	bool tagged;
	struct rfs_dirty_snapshot snap; /* what the journal held when the run began */
	atomic_uint_fast64_t changes; /* an estimate: paths a sync would change */
	/* Files with several names: (dev, ino) -> the first met (struct first_name); walk only. */
	void *links;

	/* Entries that could not be synchronised, from any thread of the run. */
	pthread_mutex_t err_mu;
	int errors;
	char first_error[200];

	/* The workers (cfg.nbrei > 1), started for a run: the walk hands them regular files,
	 * by groups (a directory's files, a resync's), each waited for before what must
	 * follow it.  Lock order: pool_mu is taken alone. */
	pthread_mutex_t pool_mu;
	pthread_cond_t pool_work, pool_room; /* a job queued; a job taken or a group done */
	struct job *queue[RFS_NBREI_MAX];
	size_t queued, qhead;
	bool pool_quit;
	int nworkers;
	pthread_t workers[RFS_NBREI_MAX];

	/* The bandwidth cap (rfs_sync_set_bw, from any thread), and its accounts (pace_mu). */
	atomic_int bw_percent;
	atomic_uint_fast64_t bw_allowed; /* bytes per second, 0: none */
	pthread_mutex_t pace_mu;
	int64_t pace_ns;              /* the accounts' last update */
	int64_t app_ns;               /* the application last seen writing (a run starts as if it just had) */
	uint64_t app_bytes;           /* its write_bytes (fs.h) then */
	double share_credit;          /* bytes the sync may send by the share */
	double rate_credit;           /* and by the absolute cap */
};

/* What each thread of a run works with; the walk's thread and each worker have theirs. */
struct bufs {
	char *theirs, *ours;          /* answers: the secondary's, the primary's */
	char *data;                   /* CHUNK bytes read here */
	char changed[RFS_PATH_MAX];   /* an estimate: the last path counted */
	bool worker;                  /* a worker does what it meets itself, hands nothing on */
};

static _Thread_local struct bufs *tb;

/* A regular file to synchronise, handed to a worker. */
struct job {
	const struct rfs_entry *theirs;      /* the walk's: the listing's entry there (NULL: none) */
	const struct rfs_dirty_entry *marks; /* a resync's: the journal's marks of the file */
	bool parent_xattrs;
	struct group *group;
	char path[RFS_PATH_MAX];
};

/* Jobs handed over and not finished yet, and the first fatal error of one (pool_mu). */
struct group {
	unsigned pending;
	int rc;
};

static const char *const mode_names[] = { "full", "incremental", "estimate" };

/* One side's entries of a directory, sorted by name; strings in the arena. */
struct listing {
	struct rfs_entry *e;
	size_t n, cap;
	char *arena;
	size_t used, size;
};

static int64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* ---- talking to both sides ---- */

/* Fatal for the run: cancelled, or the secondary is no longer the one we started with. */
static int check_run(struct rfs_sync *s)
{
	struct rfs_repl_stats st;

	if (atomic_load(&s->cancel))
		return -ECANCELED;
	rfs_repl_stats(s->cfg.repl, &st);
	return st.attached && st.attaches == s->session ? 0 : -ENOTCONN;
}

static int send_op(struct rfs_sync *s, const struct rfs_op *op, enum rfs_wait wait)
{
	int rc;

	if (s->mode == RFS_SYNC_ESTIMATE) {
		/* Nothing travels: count the paths (ops of one path come one after another),
		 * but not for the size and times every synchronised file ends with. */
		bool always = op->code == RFS_OP_TRUNCATE || op->code == RFS_OP_UTIMENS || op->code == RFS_OP_SYNCFS;

		if (!always && strcmp(op->path, tb->changed)) {
			atomic_fetch_add(&s->changes, 1);
			snprintf(tb->changed, sizeof tb->changed, "%s", op->path);
		}
		return check_run(s);
	}
	rc = rfs_repl_submit(s->cfg.repl, op, wait);

	/* A detach makes submit return 0 without sending: ask. */
	return check_run(s) ?: rc;
}

static int ask_theirs(struct rfs_sync *s, const struct rfs_op *op, size_t *len)
{
	int rc = rfs_repl_query(s->cfg.repl, op, tb->theirs, RFS_REPLY_MAX, len);

	return check_run(s) ?: rc;
}

static int ask_ours(struct rfs_sync *s, const struct rfs_op *op, size_t *len)
{
	return rfs_query(s->cfg.rootfd, op, tb->ours, RFS_REPLY_MAX, len);
}

static bool fatal(int rc)
{
	return rc == -ECANCELED || rc == -ENOTCONN || rc == -ENOMEM;
}

static void entry_error(struct rfs_sync *s, const char *path, const char *what, int rc)
{
	pthread_mutex_lock(&s->err_mu);
	if (!s->errors++)
		snprintf(s->first_error, sizeof s->first_error, "%s %.120s: %.40s", what, *path ? path : ".",
			 strerror(-rc));
	pthread_mutex_unlock(&s->err_mu);
	rfs_log("full sync: cannot %s %s: %s", what, *path ? path : ".", strerror(-rc));
}

/* An entry's result as the run takes it: its own failure logged and counted, a move
 * (1) left to the next pass; only a fatal -errno goes on. */
static int settle(struct rfs_sync *s, const char *path, int rc)
{
	if (rc < 0 && !fatal(rc))
		entry_error(s, path, "synchronise", rc);
	return fatal(rc) ? rc : 0;
}

static void keys(struct rfs_sync *s, enum state state, int64_t started_ns, int64_t ended_ns,
		 int64_t started_wall, char *out, size_t size)
{
	uint64_t scanned = atomic_load(&s->bytes_scanned), total = atomic_load(&s->bytes_total);
	uint64_t files = atomic_load(&s->files_scanned), files_total = atomic_load(&s->files_total);
	int64_t elapsed = started_ns ? ((ended_ns ? ended_ns : mono_ns()) - started_ns) / 1000000 : 0;

	/* The totals come from a walk before the sync: the application may have added since. */
	snprintf(out, size,
		 " sync_state=%s sync_mode=%s sync_files_scanned=%" PRIu64 " sync_files_total=%" PRIu64
		 " sync_bytes_scanned=%" PRIu64 " sync_bytes_total=%" PRIu64 " sync_bytes_sent=%" PRIu64
		 " sync_started=%" PRId64 " sync_elapsed_ms=%" PRId64,
		 state_names[state], mode_names[s->mode], files, files > files_total ? files : files_total, scanned,
		 scanned > total ? scanned : total, (uint64_t)atomic_load(&s->bytes_sent), started_wall, elapsed);
}

/* Between steps: the progress event when due; a fatal condition ends the run. */
static int tick(struct rfs_sync *s)
{
	int64_t now = mono_ns(), last = atomic_load(&s->progress_ns);

	/* Whichever thread of the run comes first sends it. */
	if (now - last >= PROGRESS_NS && s->cfg.progress && atomic_compare_exchange_strong(&s->progress_ns, &last, now)) {
		char line[512];
		int n = snprintf(line, sizeof line, "progress");

		keys(s, RUNNING, s->started_ns, 0, s->started_wall, line + n, sizeof line - (size_t)n);
		s->cfg.progress(s->cfg.arg, line);
	}
	return check_run(s);
}

/* ---- listings ---- */

static void listing_free(struct listing *l)
{
	free(l->e);
	free(l->arena);
	*l = (struct listing){0};
}

static char *arena_copy(struct listing *l, const char *p, size_t n)
{
	if (l->used + n + 1 > l->size) {
		/* Entries point into the arena: a larger one means rebasing them. */
		size_t size = l->size ? l->size * 2 : 1 << 16;
		char *a;

		while (size < l->used + n + 1)
			size *= 2;
		a = realloc(l->arena, size);
		if (!a)
			return NULL;
		for (size_t i = 0; i < l->n; i++) {
			l->e[i].name = a + (l->e[i].name - l->arena);
			l->e[i].target = a + (l->e[i].target - l->arena);
		}
		l->arena = a;
		l->size = size;
	}
	memcpy(l->arena + l->used, p, n);
	l->arena[l->used + n] = '\0';
	l->used += n + 1;
	return l->arena + l->used - n - 1;
}

static int cmp_entry_names(const void *a, const void *b)
{
	return strcmp(((const struct rfs_entry *)a)->name, ((const struct rfs_entry *)b)->name);
}

/* Entries left out of replication (exclude.h) are neither sent nor purged there: the
 * listings drop them, and a step finds them out if one changed its type meanwhile.  The
 * walk never enters an excluded directory, so the entry alone is tested. */
static bool left_out(struct rfs_sync *s, const char *path, uint32_t mode)
{
	return rfs_is_excluded_entry(s->cfg.exclude, path, S_ISDIR(mode));
}

static bool listed_out(struct rfs_sync *s, const char *dir, const struct rfs_entry *e)
{
	char path[RFS_PATH_MAX];

	snprintf(path, sizeof path, "%s%s%.*s", dir, *dir ? "/" : "", (int)e->name_len, e->name);
	return left_out(s, path, e->mode);
}

/* The directory's entries on one side (theirs: the secondary's), page by page; with
 * xattr digests when they are replicated and digests is set. */
static int list_dir(struct rfs_sync *s, const char *dir, bool theirs, bool digests, struct listing *l)
{
	struct rfs_op op = { .code = RFS_OP_LIST, .path = dir,
			     .flags = s->cfg.xattr && digests ? RFS_LIST_XATTRS : 0 };
	struct rfs_reply_head h;
	int rc;

	*l = (struct listing){0};
	do {
		const char *buf = theirs ? tb->theirs : tb->ours;
		size_t len, pos = sizeof h;

		rc = theirs ? ask_theirs(s, &op, &len) : ask_ours(s, &op, &len);
		if (!rc && rfs_head_get(&h, buf, len))
			rc = -EPROTO;
		for (uint32_t i = 0; !rc && i < h.count; i++) {
			struct rfs_entry e;
			size_t used = rfs_entry_get(&e, buf + pos, len - pos);

			if (!used) {
				rc = -EPROTO;
				break;
			}
			pos += used;
			if (s->cfg.exclude && listed_out(s, dir, &e))
				continue;
			if ((rc = rfs_grow(&l->e, &l->cap, l->n + 1, sizeof *l->e)))
				break;
			/* Name and target side by side in the arena: one copy, two strings. */
			char *name = arena_copy(l, e.name, e.name_len + 1 + e.target_len);

			if (!name) {
				rc = -ENOMEM;
				break;
			}
			/* On the wire the target follows the name with no NUL between. */
			memcpy(name + e.name_len + 1, e.target, e.target_len);
			name[e.name_len] = '\0';
			e.name = name;
			e.target = name + e.name_len + 1;
			l->e[l->n++] = e;
		}
		op.off = (int64_t)h.next;
	} while (!rc && h.more);
	if (rc)
		listing_free(l);
	else if (l->n)
		qsort(l->e, l->n, sizeof *l->e, cmp_entry_names);
	return rc;
}

/* One entry of either side; *e points into the answer's buffer. */
static int stat_one(struct rfs_sync *s, const char *path, bool theirs, struct rfs_entry *e)
{
	struct rfs_op op = { .code = RFS_OP_STAT, .path = path, .flags = s->cfg.xattr ? RFS_LIST_XATTRS : 0 };
	size_t len;
	int rc = theirs ? ask_theirs(s, &op, &len) : ask_ours(s, &op, &len);

	if (!rc && !rfs_entry_get(e, theirs ? tb->theirs : tb->ours, len))
		rc = -EPROTO;
	return rc;
}

/* ---- steps ---- */

static void path_join(char *out, const char *dir, const char *name)
{
	snprintf(out, RFS_PATH_MAX, "%s%s%s", dir, *dir ? "/" : "", name);
}

/* A stream path as the *at() calls on rootfd want it: "." for the root. */
static const char *stream_at_path(const char *path)
{
	return *path ? path : ".";
}

/* Does path still name the file open as fd? */
static bool still(struct rfs_sync *s, const char *path, int fd)
{
	struct stat a, b;

	return fstatat(s->cfg.rootfd, stream_at_path(path), &a, AT_SYMLINK_NOFOLLOW) == 0 && fstat(fd, &b) == 0 &&
	       a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

static void step_in(struct rfs_sync *s, const char *path)
{
	rfs_fs_step_begin(s->cfg.fs, path, s->ns_held);
}

static void step_out(struct rfs_sync *s, const char *path)
{
	rfs_fs_step_end(s->cfg.fs, path, s->ns_held);
}

/* The attributes of both sides, from sorted XATTRS answers: what differs is set there. */
static int sync_xattrs(struct rfs_sync *s, const char *path)
{
	struct rfs_op op = { .code = RFS_OP_XATTRS, .path = path };
	struct rfs_reply_head ht, ho;
	size_t lt, lo, pt = sizeof ht, po = sizeof ho;
	uint32_t it = 0, io = 0;
	int rc = ask_theirs(s, &op, &lt) ?: ask_ours(s, &op, &lo);

	if (rc)
		return rc;
	if (rfs_head_get(&ht, tb->theirs, lt) || rfs_head_get(&ho, tb->ours, lo))
		return -EPROTO;
	while (!rc && (it < ht.count || io < ho.count)) {
		struct rfs_wire_xattr xt = {0}, xo = {0};
		char nt[RFS_NAME_MAX] = "", no[RFS_NAME_MAX] = "";
		int cmp;

		if (it < ht.count) {
			memcpy(&xt, tb->theirs + pt, sizeof xt);
			if (pt + sizeof xt + xt.name_len + xt.value_len > lt || xt.name_len >= RFS_NAME_MAX)
				return -EPROTO;
			memcpy(nt, tb->theirs + pt + sizeof xt, xt.name_len);
		}
		if (io < ho.count) {
			memcpy(&xo, tb->ours + po, sizeof xo);
			if (po + sizeof xo + xo.name_len + xo.value_len > lo || xo.name_len >= RFS_NAME_MAX)
				return -EPROTO;
			memcpy(no, tb->ours + po + sizeof xo, xo.name_len);
		}
		cmp = it == ht.count ? 1 : io == ho.count ? -1 : strcmp(nt, no);
		if (cmp < 0) {
			struct rfs_op rm = { .code = RFS_OP_REMOVEXATTR, .path = path, .name = nt };

			rc = send_op(s, &rm, RFS_WAIT_QUEUED);
		} else {
			const char *vo = tb->ours + po + sizeof xo + xo.name_len;
			bool same = !cmp && xt.value_len == xo.value_len &&
				    !memcmp(tb->theirs + pt + sizeof xt + xt.name_len, vo, xo.value_len);
			struct rfs_op set = { .code = RFS_OP_SETXATTR, .path = path, .name = no,
					      .data = vo, .data_len = xo.value_len };

			if (!same)
				rc = send_op(s, &set, RFS_WAIT_QUEUED);
		}
		if (cmp <= 0)
			pt += sizeof xt + xt.name_len + xt.value_len, it++;
		if (cmp >= 0)
			po += sizeof xo + xo.name_len + xo.value_len, io++;
	}
	return rc;
}

/* Owner, mode, xattrs and (with times) the times of path, from ours (fresh) and theirs
 * (NULL: just created there). */
static int sync_attrs(struct rfs_sync *s, const char *path, const struct rfs_entry *ours,
		      const struct rfs_entry *theirs, bool times, bool parent_xattrs)
{
	struct stat st;
	bool link = S_ISLNK(ours->mode), own = !theirs || theirs->uid != ours->uid || theirs->gid != ours->gid;
	int rc = 0;

	if (own) {
		struct rfs_op op = { .code = RFS_OP_CHOWN, .path = path, .uid = ours->uid, .gid = ours->gid };

		rc = send_op(s, &op, RFS_WAIT_QUEUED);
	}
	/* A creation carries the mode, but chown drops set-ID bits and mkdir ignores them. */
	if (!rc && !link &&
	    (theirs ? (theirs->mode & 07777) != (ours->mode & 07777) || (own && (ours->mode & 07000))
		    : (ours->mode & 07000))) {
		struct rfs_op op = { .code = RFS_OP_CHMOD, .path = path, .mode = ours->mode & 07777 };

		rc = send_op(s, &op, RFS_WAIT_QUEUED);
	}
	/* A new entry may have inherited a default ACL there: look when its parent has any. */
	if (!rc && s->cfg.xattr &&
	    (theirs ? theirs->xattr_digest != ours->xattr_digest
		    : ours->xattr_digest != s->empty_xattrs || parent_xattrs))
		rc = sync_xattrs(s, path);
	if (!rc && times && fstatat(s->cfg.rootfd, stream_at_path(path), &st, AT_SYMLINK_NOFOLLOW) == 0) {
		struct rfs_op op = { .code = RFS_OP_UTIMENS, .path = path,
				     .atime_sec = st.st_atim.tv_sec, .atime_nsec = st.st_atim.tv_nsec,
				     .mtime_sec = st.st_mtim.tv_sec, .mtime_nsec = st.st_mtim.tv_nsec };

		rc = send_op(s, &op, RFS_WAIT_QUEUED);
	}
	return rc;
}

/* ---- the bandwidth cap ---- */

/* A run starts with full credits. */
static void pace_reset(struct rfs_sync *s)
{
	struct rfs_fs_counters app;

	rfs_fs_counters(s->cfg.fs, &app);
	pthread_mutex_lock(&s->pace_mu);
	s->pace_ns = mono_ns();
	/* As if the application had just written: until a second shows it idle, the share
	 * holds.  Otherwise the sync would run uncapped until the application's next write
	 * is seen, several MiB on a busy host. */
	s->app_ns = s->pace_ns;
	s->app_bytes = app.write_bytes;
	s->share_credit = PACE_BURST;
	s->rate_credit = 0;
	pthread_mutex_unlock(&s->pace_mu);
}

/* Waits until the cap lets the sync send n more bytes of data (docs/replication.md,
 * "Tuning"): while the application writes (it wrote within APP_IDLE_NS), the sync sends
 * at most percent / (100 - percent) bytes per byte it writes, so at most percent of the
 * data sent; and never more than bw_allowed bytes per second.  Credits go negative by
 * one request at most, so the rates hold on average whatever the requests' sizes.  Not
 * in a step: a file's live writes are not held while the sync waits.  0, or a fatal
 * -errno of the run. */
static int pace(struct rfs_sync *s, uint64_t n)
{
	int rc = 0;

	if (s->mode == RFS_SYNC_ESTIMATE)
		return 0;
	pthread_mutex_lock(&s->pace_mu);
	for (;;) {
		int percent = atomic_load(&s->bw_percent);
		uint64_t allowed = atomic_load(&s->bw_allowed);
		struct rfs_fs_counters app;
		int64_t now = mono_ns();
		bool shared;

		rfs_fs_counters(s->cfg.fs, &app);
		if (app.write_bytes != s->app_bytes) {
			if (percent < 100)
				s->share_credit += (double)(app.write_bytes - s->app_bytes) * percent / (100 - percent);
			s->app_bytes = app.write_bytes;
			s->app_ns = now;
		}
		shared = percent < 100 && now - s->app_ns < APP_IDLE_NS;
		if (!shared || s->share_credit > PACE_BURST)
			s->share_credit = PACE_BURST;
		s->rate_credit += (double)(now - s->pace_ns) * (double)allowed / 1e9;
		if (!allowed || s->rate_credit > (double)allowed / 10)
			s->rate_credit = (double)allowed / 10;
		s->pace_ns = now;
		if ((!shared || s->share_credit >= 0) && (!allowed || s->rate_credit >= 0)) {
			s->share_credit -= shared ? (double)n : 0;
			s->rate_credit -= allowed ? (double)n : 0;
			break;
		}
		pthread_mutex_unlock(&s->pace_mu);
		nanosleep(&(struct timespec){ .tv_nsec = PACE_SLEEP_NS }, NULL);
		rc = check_run(s);
		pthread_mutex_lock(&s->pace_mu);
		if (rc)
			break;
	}
	pthread_mutex_unlock(&s->pace_mu);
	return rc;
}

/* The primary's [off, off+len) of fd as it is now, in a step: data extents as WRITE,
 * holes as punched holes (punch: false for a new file, which has none of its own).
 * 1: the path no longer names fd (a rename moved it; it is visited again). */
static int send_range(struct rfs_sync *s, const char *path, int fd, off_t off, off_t len, bool punch)
{
	struct stat st;
	off_t pos = off, stop;
	int rc = pace(s, (uint64_t)len);

	if (rc)
		return rc;
	step_in(s, path);
	if (!still(s, path, fd) || fstat(fd, &st)) {
		step_out(s, path);
		return 1;
	}
	stop = off + len < st.st_size ? off + len : st.st_size;
	while (!rc && pos < stop) {
		off_t data = lseek(fd, pos, SEEK_DATA), hole;
		ssize_t n;

		if (data < 0 || data > stop)
			data = stop;
		if (data > pos && punch) {
			struct rfs_op op = { .code = RFS_OP_FALLOCATE, .path = path, .off = pos, .len = (uint64_t)(data - pos),
					     .flags = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE };

			rc = send_op(s, &op, RFS_WAIT_QUEUED);
		}
		if (rc || data >= stop)
			break;
		hole = lseek(fd, data, SEEK_HOLE);
		if (hole < 0 || hole > stop)
			hole = stop;
		if (hole - data > CHUNK)
			hole = data + CHUNK;
		n = pread(fd, tb->data, (size_t)(hole - data), data);
		if (n <= 0) {
			rc = n < 0 ? -errno : 0;
			break;
		}
		struct rfs_op op = { .code = RFS_OP_WRITE, .path = path, .off = data, .len = (uint64_t)n,
				     .data = tb->data, .data_len = (size_t)n };
		rc = send_op(s, &op, RFS_WAIT_QUEUED);
		if (!rc)
			atomic_fetch_add(&s->bytes_sent, (uint64_t)n);
		pos = data + n;
	}
	step_out(s, path);
	return rc;
}

/* The end of a regular file's sync, in a step: its size, owner, mode, xattrs, times.
 * theirs: NULL for a file just created there. */
static int finish_file(struct rfs_sync *s, const char *path, int fd, const struct rfs_entry *theirs,
		       bool parent_xattrs)
{
	struct rfs_entry ours;
	struct stat st;
	int rc;

	step_in(s, path);
	if (!still(s, path, fd) || fstat(fd, &st)) {
		step_out(s, path);
		return 1;
	}
	struct rfs_op op = { .code = RFS_OP_TRUNCATE, .path = path, .off = st.st_size };
	rc = send_op(s, &op, RFS_WAIT_QUEUED) ?: stat_one(s, path, false, &ours);
	if (!rc)
		rc = sync_attrs(s, path, &ours, theirs, true, parent_xattrs);
	step_out(s, path);
	return rc;
}

/* A regular file the secondary does not have (or has as something else): sent whole.
 * Called in a step, which it ends. */
static int send_file(struct rfs_sync *s, const char *path, int fd, const struct rfs_entry *ours,
		     bool parent_xattrs)
{
	struct rfs_op purge = { .code = RFS_OP_PURGE, .path = path };
	struct rfs_op create = { .code = RFS_OP_CREATE, .path = path, .mode = ours->mode & 07777 };
	off_t size = (off_t)ours->size;
	int rc = send_op(s, &purge, RFS_WAIT_QUEUED) ?: send_op(s, &create, RFS_WAIT_QUEUED);

	step_out(s, path);
	for (off_t off = 0; !rc && off < size; off += CHUNK) {
		rc = tick(s) ?: send_range(s, path, fd, off, CHUNK, false);
		atomic_fetch_add(&s->bytes_scanned, (uint64_t)(size - off < CHUNK ? size - off : CHUNK));
	}
	return rc ? rc : finish_file(s, path, fd, NULL, parent_xattrs);
}

/* A regular file on both sides, its blocks in [from, to) (to: -1 for the end of the
 * longer copy): only those that differ travel.  1: moved or replaced meanwhile. */
static int compare_blocks(struct rfs_sync *s, const char *path, int fd, const struct rfs_entry *theirs,
			  off_t from, off_t to)
{
	off_t bound = (off_t)theirs->size;
	struct stat st;
	int rc = fstat(fd, &st) ? -errno : 0;

	if (st.st_size > bound)
		bound = st.st_size;
	if (to >= 0 && to < bound)
		bound = to;
	for (off_t off = from & ~(BLOCK - 1); !rc && off < bound; off += WINDOW) {
		struct rfs_op op = { .code = RFS_OP_SUMS, .path = path, .off = off, .len = WINDOW,
				     .flags = BLOCK_SHIFT };
		struct rfs_reply_head ht, ho;
		size_t lt, lo;

		rc = tick(s) ?: ask_theirs(s, &op, &lt);
		if (rc && !fatal(rc)) {
			/* No longer a regular file there (raced with a replicated change): send it whole. */
			struct rfs_entry ours;

			step_in(s, path);
			if (!still(s, path, fd) || stat_one(s, path, false, &ours)) {
				step_out(s, path);
				return 1;
			}
			return send_file(s, path, fd, &ours, false);
		}
		if (!rc)
			rc = ask_ours(s, &op, &lo);
		if (rc == -ENOENT || rc == -ELOOP || rc == -EISDIR || rc == -EINVAL)
			return 1; /* moved away here: a rename records it */
		if (rc)
			break;
		if (rfs_head_get(&ht, tb->theirs, lt) || rfs_head_get(&ho, tb->ours, lo) ||
		    lt < sizeof ht + (size_t)ht.count * RFS_SUM_LEN)
			return -EPROTO;
		if ((off_t)ht.next > bound)
			bound = (off_t)ht.next;
		for (uint32_t i = 0; !rc && i < ho.count; i++) {
			const char *a = tb->theirs + sizeof ht + (size_t)i * RFS_SUM_LEN;
			const char *b = tb->ours + sizeof ho + (size_t)i * RFS_SUM_LEN;

			if (i < ht.count && !memcmp(a, b, RFS_SUM_LEN))
				continue;
			rc = send_range(s, path, fd, off + (off_t)i * BLOCK, BLOCK, true);
		}
		atomic_fetch_add(&s->bytes_scanned, (uint64_t)(bound - off < WINDOW ? bound - off : WINDOW));
	}
	return rc;
}

/* A regular file on both sides: only the blocks that differ travel.  Called in a step,
 * which it ends. */
static int compare_file(struct rfs_sync *s, const char *path, int fd, const struct rfs_entry *theirs)
{
	int rc;

	step_out(s, path);
	rc = compare_blocks(s, path, fd, theirs, 0, -1);
	return rc ? rc : finish_file(s, path, fd, theirs, false);
}

static int sync_children(struct rfs_sync *s, const char *dir, uint64_t dir_digest, bool shallow);

struct first_name {
	dev_t dev;
	ino_t ino;
	char path[];
};

static int by_inode(const void *a, const void *b)
{
	const struct first_name *x = a, *y = b;

	if (x->dev != y->dev)
		return x->dev < y->dev ? -1 : 1;
	return x->ino < y->ino ? -1 : x->ino > y->ino;
}

static void forget_links(struct rfs_sync *s)
{
	if (s->links)
		tdestroy(s->links, free);
	s->links = NULL;
}

/* In a step on path, a regular file open as fd: when it has several names and one was
 * met before, makes the secondary's path a link to that one (see Hard links) and
 * returns 0 (or -errno); otherwise 2: to be synchronised as any file.  The walk's
 * thread only: a file with several names is not handed to a worker (sync_children), so
 * its first name is done before the others are linked to it; one that got them after
 * the listing, in a worker's hands, is synchronised as any file. */
static int link_names(struct rfs_sync *s, const char *path, int fd, const struct rfs_entry *ours,
		      const struct rfs_entry *theirs)
{
	struct first_name key, *mine, **found;
	struct rfs_entry first;
	struct stat st, at;
	int rc;

	if (ours->nlink < 2 || tb->worker || fstat(fd, &st))
		return 2;
	key = (struct first_name){ .dev = st.st_dev, .ino = st.st_ino };
	found = tfind(&key, &s->links, by_inode);
	if (found && fstatat(s->cfg.rootfd, (*found)->path, &at, AT_SYMLINK_NOFOLLOW) == 0 &&
	    at.st_dev == st.st_dev && at.st_ino == st.st_ino) {
		struct rfs_op link = { .code = RFS_OP_LINK, .path = (*found)->path, .path2 = path,
				       .flags = RFS_LINK_REPLACE };
		struct rfs_op purge = { .code = RFS_OP_PURGE, .path = path };

		if (theirs && S_ISREG(theirs->mode) && stat_one(s, link.path, true, &first) == 0 &&
		    first.ino == theirs->ino)
			return 0;
		rc = theirs && S_ISDIR(theirs->mode) ? send_op(s, &purge, RFS_WAIT_QUEUED) : 0;
		return rc ?: send_op(s, &link, RFS_WAIT_APPLIED);
	}
	/* The first met, or the first is not a name of it any more: this one is now. */
	if (!(mine = malloc(sizeof *mine + strlen(path) + 1)))
		return -ENOMEM;
	*mine = key;
	strcpy(mine->path, path);
	if (found) {
		free(*found);
		*found = mine;
	} else if (!tsearch(mine, &s->links, by_inode)) {
		free(mine);
		return -ENOMEM;
	}
	return 2;
}

/* Makes the secondary's path what the primary's is; theirs: its entry there by the
 * listing (NULL: none), possibly stale.  0, 1 (left: moved meanwhile), or -errno. */
static int sync_entry(struct rfs_sync *s, const char *path, const struct rfs_entry *theirs, bool parent_xattrs)
{
	struct rfs_op purge = { .code = RFS_OP_PURGE, .path = path };
	struct rfs_entry ours;
	int fd, rc;

	step_in(s, path);
	rc = stat_one(s, path, false, &ours);
	if (rc == -ENOENT) {
		rc = theirs && !left_out(s, path, theirs->mode) ? send_op(s, &purge, RFS_WAIT_QUEUED) : 0;
		step_out(s, path);
		return rc;
	}
	if (rc || left_out(s, path, ours.mode)) {
		step_out(s, path);
		return rc;
	}
	atomic_fetch_add(&s->files_scanned, 1);
	bool same = theirs && (theirs->mode & S_IFMT) == (ours.mode & S_IFMT);
	char target[RFS_PATH_MAX];

	switch (ours.mode & S_IFMT) {
	case S_IFDIR: {
		uint64_t digest = ours.xattr_digest;

		if (!same) {
			struct rfs_op mkdir = { .code = RFS_OP_MKDIR, .path = path, .mode = ours.mode & 07777 };

			rc = (*path ? send_op(s, &purge, RFS_WAIT_QUEUED) : 0) ?: send_op(s, &mkdir, RFS_WAIT_APPLIED);
		}
		if (!rc)
			rc = sync_attrs(s, path, &ours, same ? theirs : NULL, false, parent_xattrs);
		step_out(s, path);
		if (!rc)
			rc = sync_children(s, path, digest, false);
		if (rc)
			return rc;
		/* Its entries changed its times there: set them last (against itself, nothing
		 * else differs). */
		step_in(s, path);
		rc = stat_one(s, path, false, &ours);
		if (!rc)
			rc = sync_attrs(s, path, &ours, &ours, true, false);
		step_out(s, path);
		return rc == -ENOENT ? 1 : rc;
	}
	case S_IFREG:
		/* Reading to compare is no access: the atime sent is the application's. */
		fd = openat(s->cfg.rootfd, path, O_RDONLY | O_NOFOLLOW | O_NOATIME | O_CLOEXEC);
		if (fd < 0 || !still(s, path, fd)) {
			rc = fd < 0 ? -errno : 1;
			step_out(s, path);
		} else if ((rc = link_names(s, path, fd, &ours, theirs)) != 2) {
			step_out(s, path);
		} else {
			/* Linked there to names that are not this file's here: a copy of its own. */
			same = same && theirs->nlink <= ours.nlink;
			rc = same ? compare_file(s, path, fd, theirs) : send_file(s, path, fd, &ours, parent_xattrs);
		}
		if (fd >= 0)
			close(fd);
		return rc;
	case S_IFLNK:
		memcpy(target, ours.target, ours.target_len);
		target[ours.target_len] = '\0';
		if (!same || theirs->target_len != ours.target_len || memcmp(theirs->target, target, ours.target_len)) {
			struct rfs_op link = { .code = RFS_OP_SYMLINK, .path = path, .path2 = target };

			rc = send_op(s, &purge, RFS_WAIT_QUEUED) ?: send_op(s, &link, RFS_WAIT_QUEUED);
			same = false;
		}
		break;
	default:
		if (!same || theirs->rdev != ours.rdev) {
			struct rfs_op node = { .code = RFS_OP_MKNOD, .path = path, .mode = ours.mode, .rdev = ours.rdev };

			rc = send_op(s, &purge, RFS_WAIT_QUEUED) ?: send_op(s, &node, RFS_WAIT_QUEUED);
			same = false;
		}
	}
	if (!rc)
		rc = sync_attrs(s, path, &ours, same ? theirs : NULL,
				!same || theirs->mtime_sec != ours.mtime_sec || theirs->mtime_nsec != ours.mtime_nsec,
				parent_xattrs);
	step_out(s, path);
	return rc;
}

/* ---- the workers ---- */

static int resync_entry(struct rfs_sync *s, const struct rfs_dirty_entry *e);

static int run_job(struct rfs_sync *s, const struct job *j)
{
	int rc = tick(s);

	if (!rc)
		rc = j->marks ? resync_entry(s, j->marks) : sync_entry(s, j->path, j->theirs, j->parent_xattrs);
	return settle(s, j->path, rc);
}

/* A regular file of group g: queued for a worker, or done here when the run has none
 * or this is a worker (a file that became a directory meanwhile is walked by the
 * worker itself: a worker never waits for another).  0, or a fatal -errno (of this
 * file, or of one of the group's done by a worker). */
static int hand_over(struct rfs_sync *s, struct group *g, const struct job *proto)
{
	struct job *j;
	int rc;

	if (!s->nworkers || tb->worker)
		return run_job(s, proto);
	if (!(j = malloc(sizeof *j)))
		return -ENOMEM;
	*j = *proto;
	j->group = g;
	pthread_mutex_lock(&s->pool_mu);
	while (s->queued == (size_t)s->nworkers && !g->rc)
		pthread_cond_wait(&s->pool_room, &s->pool_mu);
	rc = g->rc;
	if (!rc) {
		s->queue[(s->qhead + s->queued++) % (size_t)s->nworkers] = j;
		g->pending++;
		pthread_cond_signal(&s->pool_work);
	}
	pthread_mutex_unlock(&s->pool_mu);
	if (rc)
		free(j);
	return rc;
}

/* Waits until every file handed over in g is done: 0, or the first fatal -errno. */
static int group_wait(struct rfs_sync *s, struct group *g)
{
	int rc;

	pthread_mutex_lock(&s->pool_mu);
	while (g->pending)
		pthread_cond_wait(&s->pool_room, &s->pool_mu);
	rc = g->rc;
	pthread_mutex_unlock(&s->pool_mu);
	return rc;
}

static struct bufs *bufs_new(bool worker)
{
	struct bufs *b = calloc(1, sizeof *b);

	if (b && (!(b->theirs = malloc(RFS_REPLY_MAX)) || !(b->ours = malloc(RFS_REPLY_MAX)) ||
		  !(b->data = malloc(CHUNK)))) {
		free(b->theirs);
		free(b->ours);
		free(b);
		return NULL;
	}
	if (b) {
		b->worker = worker;
		snprintf(b->changed, sizeof b->changed, "/"); /* no path of the stream */
	}
	return b;
}

static void bufs_free(struct bufs *b)
{
	if (b) {
		free(b->theirs);
		free(b->ours);
		free(b->data);
		free(b);
	}
}

static void *worker_main(void *arg)
{
	struct rfs_sync *s = arg;

	tb = bufs_new(true);
	pthread_mutex_lock(&s->pool_mu);
	for (;;) {
		struct job *j;
		int rc;

		while (!s->queued && !s->pool_quit)
			pthread_cond_wait(&s->pool_work, &s->pool_mu);
		if (!s->queued)
			break;
		j = s->queue[s->qhead];
		s->qhead = (s->qhead + 1) % (size_t)s->nworkers;
		s->queued--;
		pthread_cond_broadcast(&s->pool_room);
		pthread_mutex_unlock(&s->pool_mu);
		rc = tb ? run_job(s, j) : -ENOMEM;
		pthread_mutex_lock(&s->pool_mu);
		if (rc && !j->group->rc)
			j->group->rc = rc;
		if (!--j->group->pending || rc)
			pthread_cond_broadcast(&s->pool_room);
		free(j);
	}
	pthread_mutex_unlock(&s->pool_mu);
	bufs_free(tb);
	return NULL;
}

static void workers_stop(struct rfs_sync *s);

/* The run's workers: 0, or -errno (none is left running then). */
static int workers_start(struct rfs_sync *s)
{
	int n = s->cfg.nbrei > RFS_NBREI_MAX ? RFS_NBREI_MAX : s->cfg.nbrei;

	s->queued = s->qhead = 0;
	s->pool_quit = false;
	s->nworkers = 0;
	for (int i = 0; n > 1 && i < n; i++) {
		int rc = -pthread_create(&s->workers[i], NULL, worker_main, s);

		if (rc) {
			workers_stop(s);
			return rc;
		}
		s->nworkers = i + 1;
	}
	return 0;
}

/* After the last group was waited for: the workers end. */
static void workers_stop(struct rfs_sync *s)
{
	pthread_mutex_lock(&s->pool_mu);
	s->pool_quit = true;
	pthread_cond_broadcast(&s->pool_work);
	pthread_mutex_unlock(&s->pool_mu);
	for (int i = 0; i < s->nworkers; i++)
		pthread_join(s->workers[i], NULL);
	s->nworkers = 0;
}

/* Every name of dir on either side, in order.  shallow: only the names; a directory or
 * a regular file on both sides is left alone (the journal marks what changed in it). */
static int sync_children(struct rfs_sync *s, const char *dir, uint64_t dir_digest, bool shallow)
{
	struct listing theirs, ours;
	struct group g = {0};
	bool parent_xattrs = s->cfg.xattr && dir_digest != s->empty_xattrs;
	size_t i = 0, j = 0;
	int rc = list_dir(s, dir, true, true, &theirs), done;

	/* An estimate counts what a directory missing there would bring. */
	if (s->mode == RFS_SYNC_ESTIMATE && (rc == -ENOENT || rc == -ENOTDIR))
		rc = 0;

	if (rc == -ENOENT || rc == -ENOTDIR || rc == -ELOOP)
		return 1; /* replaced there meanwhile, by a rename that will be visited again */
	if (rc)
		return rc;
	rc = list_dir(s, dir, false, true, &ours);
	if (rc == -ENOENT || rc == -ENOTDIR || rc == -ELOOP) {
		listing_free(&theirs);
		return 1;
	}
	while (!rc && (i < theirs.n || j < ours.n)) {
		int cmp = i == theirs.n ? 1 : j == ours.n ? -1 : strcmp(theirs.e[i].name, ours.e[j].name);
		const char *name = cmp < 0 ? theirs.e[i].name : ours.e[j].name;
		char path[RFS_PATH_MAX];

		path_join(path, dir, name);
		rc = tick(s);
		if (!rc && shallow && cmp == 0 && (theirs.e[i].mode & S_IFMT) == (ours.e[j].mode & S_IFMT) &&
		    (S_ISDIR(ours.e[j].mode) || S_ISREG(ours.e[j].mode))) {
			/* left to its own marks */
		} else if (!rc && cmp >= 0 && S_ISREG(ours.e[j].mode) && ours.e[j].nlink < 2) {
			struct job job = { .theirs = cmp == 0 ? &theirs.e[i] : NULL, .parent_xattrs = parent_xattrs };

			snprintf(job.path, sizeof job.path, "%s", path);
			rc = hand_over(s, &g, &job);
		} else if (!rc) {
			/* moved meanwhile (1): visited again after the walk */
			rc = settle(s, path, sync_entry(s, path, cmp <= 0 ? &theirs.e[i] : NULL, parent_xattrs));
		}
		if (cmp <= 0)
			i++;
		if (cmp >= 0)
			j++;
	}
	/* The workers read the listings; the directory's times come after its files. */
	done = group_wait(s, &g);
	listing_free(&theirs);
	listing_free(&ours);
	return rc < 0 ? rc : done;
}

/* The secondary's entry asked fresh, its strings kept in *keep (the answer's buffer is
 * reused by the next query; the caller frees *keep).  -ENOENT: none there. */
static int theirs_kept(struct rfs_sync *s, const char *path, struct rfs_entry *e, char **keep)
{
	int rc = stat_one(s, path, true, e);

	*keep = NULL;
	if (rc == -ENOTDIR || rc == -ELOOP)
		rc = -ENOENT;
	if (rc)
		return rc;
	if (!(*keep = malloc(e->name_len + e->target_len + 2)))
		return -ENOMEM;
	memcpy(*keep, e->name, e->name_len);
	(*keep)[e->name_len] = '\0';
	memcpy(*keep + e->name_len + 1, e->target, e->target_len);
	e->name = *keep;
	e->target = *keep + e->name_len + 1;
	return 0;
}

/* One path again, as the walk would have done it: the secondary's entry asked fresh. */
static int sync_again(struct rfs_sync *s, const char *path)
{
	struct rfs_entry theirs;
	char *keep;
	int rc;

	/* Not from the walk: its parents are tested here, its own type in sync_entry. */
	if (rfs_is_excluded(s->cfg.exclude, path, true))
		return 0;
	rc = theirs_kept(s, path, &theirs, &keep);

	if (rc == -ENOENT)
		return sync_entry(s, path, NULL, s->cfg.xattr);
	if (!rc)
		rc = sync_entry(s, path, &theirs, s->cfg.xattr);
	free(keep);
	return rc;
}

/* ---- the run ---- */

/* Is p dir itself or beneath it ("" holds everything)? */
static bool is_within(const char *p, const char *dir)
{
	size_t k = strlen(dir);

	return !k || (!strncmp(p, dir, k) && (p[k] == '/' || !p[k]));
}

static int by_path(const void *a, const void *b)
{
	const char *x = *(char *const *)a, *y = *(char *const *)b;

	return !x || !y ? (!x) - (!y) : strcmp(x, y);
}

/* The paths renames touched since the last call, each once and none below another
 * (a directory is visited with all it holds).  2: too many were lost, walk it all. */
static int sync_moves(struct rfs_sync *s, bool *none)
{
	size_t n;
	bool overflow;
	char **moves = rfs_fs_take_moves(s->cfg.fs, &n, &overflow);
	const char *kept = NULL;
	int rc = 0;

	*none = !n && !overflow;
	if (overflow) {
		for (size_t i = 0; i < n; i++)
			free(moves[i]);
		free(moves);
		return 2;
	}
	qsort(moves, n, sizeof *moves, by_path); /* a directory before what it holds */
	for (size_t i = 0; i < n; i++) {
		const char *p = moves[i];

		if (!rc && p && !(kept && is_within(p, kept))) {
			s->again++;
			/* moved again (1): the next pass has it */
			rc = tick(s) ?: settle(s, p, sync_again(s, p));
			kept = p;
		}
	}
	for (size_t i = 0; i < n; i++)
		free(moves[i]);
	free(moves);
	return rc < 0 ? rc : 0;
}

static int sync_root(struct rfs_sync *s)
{
	return sync_again(s, "");
}

/* ---- the incremental run: the journal's marks only (dirty.h) ---- */

/* A regular file with data or attribute marks: its marked blocks as they are now (data
 * marks, exact: sent without comparing), compared (suspects, after a crash), then its
 * size, owner, mode, xattrs and times. */
static int resync_file(struct rfs_sync *s, const struct rfs_dirty_entry *e, int fd)
{
	struct rfs_entry theirs, ours;
	char *keep;
	int rc = theirs_kept(s, e->path, &theirs, &keep);

	if (rc == -ENOENT || (!rc && !S_ISREG(theirs.mode))) {
		free(keep);
		step_in(s, e->path);
		if (!still(s, e->path, fd) || stat_one(s, e->path, false, &ours)) {
			step_out(s, e->path);
			return 1;
		}
		return send_file(s, e->path, fd, &ours, s->cfg.xattr);
	}
	for (size_t i = 0; !rc && i < e->ndata; i++) {
		for (uint64_t off = e->data[i].off, end = off + e->data[i].len; !rc && off < end; off += CHUNK) {
			off_t len = end - off < (uint64_t)CHUNK ? (off_t)(end - off) : CHUNK;
			struct stat st;

			if (fstat(fd, &st) || (off_t)off >= st.st_size)
				break; /* what lies beyond the end: the truncation below */
			rc = tick(s) ?: send_range(s, e->path, fd, (off_t)off, len, true);
			atomic_fetch_add(&s->bytes_scanned, (uint64_t)len);
		}
	}
	for (size_t i = 0; !rc && i < e->nsuspect; i++) {
		uint64_t end = e->suspect[i].off + e->suspect[i].len;

		rc = compare_blocks(s, e->path, fd, &theirs, (off_t)e->suspect[i].off,
				    end > (uint64_t)INT64_MAX ? -1 : (off_t)end);
	}
	if (!rc)
		rc = finish_file(s, e->path, fd, &theirs, s->cfg.xattr);
	free(keep);
	return rc;
}

/* A directory whose names changed: the names on both sides, then its own attributes
 * and times (its entries changed them there). */
static int resync_dir(struct rfs_sync *s, const struct rfs_dirty_entry *e, const struct rfs_entry *ours)
{
	struct rfs_entry theirs, now;
	char *keep;
	int rc = theirs_kept(s, e->path, &theirs, &keep);

	if (rc == -ENOENT || (!rc && !S_ISDIR(theirs.mode))) {
		free(keep);
		return sync_again(s, e->path);
	}
	if (!rc && e->marks & RFS_MARK_CHILDREN)
		rc = sync_children(s, e->path, ours->xattr_digest, true);
	if (rc >= 0) {
		step_in(s, e->path);
		rc = stat_one(s, e->path, false, &now);
		if (!rc)
			rc = sync_attrs(s, e->path, &now, &theirs, true, s->cfg.xattr);
		step_out(s, e->path);
	}
	free(keep);
	return rc;
}

static int resync_entry(struct rfs_sync *s, const struct rfs_dirty_entry *e)
{
	struct rfs_entry ours;
	struct stat st;
	int fd, rc;

	/* Operations on entries left out of replication are journaled too: skipped here. */
	if (s->cfg.exclude && rfs_is_excluded(s->cfg.exclude, e->path,
					   !fstatat(s->cfg.rootfd, stream_at_path(e->path), &st, AT_SYMLINK_NOFOLLOW) &&
					   S_ISDIR(st.st_mode)))
		return 0;
	if (e->marks & RFS_MARK_ENTRY)
		return sync_again(s, e->path);
	rc = stat_one(s, e->path, false, &ours);
	if (rc == -ENOENT || rc == -ENOTDIR)
		return 0; /* gone: its parent's names say so */
	if (rc)
		return rc;
	atomic_fetch_add(&s->files_scanned, 1);
	if (S_ISDIR(ours.mode))
		return resync_dir(s, e, &ours);
	if (!S_ISREG(ours.mode))
		return sync_again(s, e->path);
	fd = openat(s->cfg.rootfd, e->path, O_RDONLY | O_NOFOLLOW | O_NOATIME | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT ? 0 : -errno;
	rc = resync_file(s, e, fd);
	close(fd);
	return rc;
}

/* Every path of the snapshot, parents first; what a whole entry covers is skipped.  Files
 * with data marks go to the workers: what follows a file in this order is never its
 * parent, so nothing done meanwhile changes what a worker's file is under. */
static int resync(struct rfs_sync *s)
{
	struct group g = {0};
	const char *whole = NULL;
	int rc = 0, done;

	atomic_store(&s->files_total, s->snap.n);
	atomic_store(&s->bytes_total, s->snap.data_bytes + s->snap.suspect_bytes);
	for (size_t i = 0; !rc && i < s->snap.n; i++) {
		const struct rfs_dirty_entry *e = &s->snap.e[i];

		if (whole && is_within(e->path, whole))
			continue;
		if (e->marks & RFS_MARK_ENTRY)
			whole = e->path;
		rc = tick(s);
		if (!rc && !(e->marks & RFS_MARK_ENTRY) && e->marks & (RFS_MARK_DATA | RFS_MARK_SUSPECT)) {
			struct job job = { .marks = e };

			snprintf(job.path, sizeof job.path, "%s", e->path);
			rc = hand_over(s, &g, &job);
		} else if (!rc) {
			rc = settle(s, e->path, resync_entry(s, e)); /* moved meanwhile: visited again after */
		}
	}
	done = group_wait(s, &g);
	return rc ? rc : done;
}

/* Counts the primary's entries and bytes, for the progress totals. */
static int count_tree(struct rfs_sync *s, const char *dir)
{
	struct listing l;
	int rc = list_dir(s, dir, false, false, &l);

	for (size_t i = 0; !rc && i < l.n; i++) {
		char path[RFS_PATH_MAX];

		atomic_fetch_add(&s->files_total, 1);
		if (S_ISREG(l.e[i].mode))
			atomic_fetch_add(&s->bytes_total, l.e[i].size);
		if (S_ISDIR(l.e[i].mode)) {
			path_join(path, dir, l.e[i].name);
			rc = count_tree(s, path);
			if (rc == -ENOENT || rc == -ENOTDIR)
				rc = 0;
		}
		if (!rc)
			rc = check_run(s);
	}
	listing_free(&l);
	return rc;
}

static int run(struct rfs_sync *s)
{
	struct rfs_op sync = { .code = RFS_OP_SYNCFS };
	bool none = false;
	int rc = s->mode == RFS_SYNC_INCREMENTAL ? resync(s) : count_tree(s, "") ?: sync_root(s);

	for (s->passes = 2; rc >= 0 && !fatal(rc); s->passes++) {
		if (s->passes == HOLD_FROM_PASS) {
			rfs_fs_hold_renames(s->cfg.fs, true);
			s->ns_held = true;
		}
		rc = sync_moves(s, &none);
		if (rc == 2)
			rc = sync_root(s);
		if (rc < 0 || none)
			break;
	}
	if (s->ns_held) {
		rfs_fs_hold_renames(s->cfg.fs, false);
		s->ns_held = false;
	}
	forget_links(s);
	if (rc < 0)
		return rc;
	rc = send_op(s, &sync, RFS_WAIT_DURABLE);
	if (rc && !fatal(rc))
		entry_error(s, "", "make durable", rc);
	if (fatal(rc))
		return rc;
	/* The secondary is identical now (unless entries failed): the journal starts afresh. */
	if (s->mode != RFS_SYNC_ESTIMATE && !s->errors && s->tagged && s->cfg.dirty &&
	    rfs_dirty_synced(s->cfg.dirty, s->tag, &s->snap) == -ESTALE)
		return -ENOTCONN;
	return 0;
}

static void *sync_main(void *arg)
{
	struct rfs_sync *s = arg;
	char result[sizeof s->result];
	int rc = -ENOMEM;

	tb = bufs_new(false);
	if (tb && !(rc = workers_start(s))) {
		char none[sizeof(struct rfs_reply_head)];

		rfs_head_put(none, 0, 0, 0);
		s->empty_xattrs = rfs_xattr_digest(none, sizeof none);
		rfs_fs_track_moves(s->cfg.fs, true);
		rc = run(s);
		rfs_fs_track_moves(s->cfg.fs, false);
		workers_stop(s);
	}
	rfs_dirty_snapshot_free(&s->snap);
	bufs_free(tb);
	tb = NULL;
	pthread_mutex_lock(&s->mu);
	s->ended_ns = mono_ns();
	if (rc == -ENOTCONN)
		snprintf(result, sizeof result, "error the secondary was detached during the %s sync",
			 mode_names[s->mode]);
	else if (rc == -ECANCELED)
		snprintf(result, sizeof result, "error the %s sync was cancelled", mode_names[s->mode]);
	else if (rc)
		snprintf(result, sizeof result, "error %s sync: %s", mode_names[s->mode], strerror(-rc));
	else if (s->mode == RFS_SYNC_ESTIMATE)
		snprintf(result, sizeof result, "ok mode=compare paths=%" PRIu64 " bytes=%" PRIu64
			 " bytes_scanned=%" PRIu64 " elapsed_ms=%" PRId64, (uint64_t)atomic_load(&s->changes),
			 (uint64_t)atomic_load(&s->bytes_sent), (uint64_t)atomic_load(&s->bytes_scanned),
			 (s->ended_ns - s->started_ns) / 1000000);
	else if (s->errors)
		snprintf(result, sizeof result, "error %d entries could not be synchronised, first: %s", s->errors,
			 s->first_error);
	else
		snprintf(result, sizeof result, "ok files=%" PRIu64 " bytes_scanned=%" PRIu64 " bytes_sent=%" PRIu64
			 " elapsed_ms=%" PRId64, (uint64_t)atomic_load(&s->files_scanned),
			 (uint64_t)atomic_load(&s->bytes_scanned), (uint64_t)atomic_load(&s->bytes_sent),
			 (s->ended_ns - s->started_ns) / 1000000);
	memcpy(s->result, result, sizeof result);
	s->state = strncmp(result, "ok", 2) ? FAILED : DONE;
	pthread_mutex_unlock(&s->mu);
	rfs_log("%s sync: %s (%" PRIu64 " paths visited again, in %d passes)", mode_names[s->mode], result,
	       s->again, s->passes > 2 ? s->passes - 2 : 0);
	if (s->cfg.done)
		s->cfg.done(s->cfg.arg);
	return NULL;
}

struct rfs_sync *rfs_sync_new(const struct rfs_sync_config *cfg)
{
	struct rfs_sync *s = calloc(1, sizeof *s);

	if (!s)
		return NULL;
	s->cfg = *cfg;
	pthread_mutex_init(&s->mu, NULL);
	pthread_mutex_init(&s->err_mu, NULL);
	pthread_mutex_init(&s->pool_mu, NULL);
	pthread_cond_init(&s->pool_work, NULL);
	pthread_cond_init(&s->pool_room, NULL);
	pthread_mutex_init(&s->pace_mu, NULL);
	rfs_sync_set_bw(s, cfg->bw_percent, cfg->bw_allowed);
	return s;
}

static void reap(struct rfs_sync *s)
{
	pthread_t t;
	bool join;

	pthread_mutex_lock(&s->mu);
	join = s->joinable && s->state != RUNNING;
	t = s->thread;
	if (join)
		s->joinable = false;
	pthread_mutex_unlock(&s->mu);
	if (join)
		pthread_join(t, NULL);
}

int rfs_sync_start(struct rfs_sync *s, enum rfs_sync_mode mode, const uint64_t *tag)
{
	struct rfs_repl_stats st;
	struct timespec now;
	uint64_t had;
	int rc;

	reap(s);
	rfs_repl_stats(s->cfg.repl, &st);
	pthread_mutex_lock(&s->mu);
	if (s->state == RUNNING) {
		pthread_mutex_unlock(&s->mu);
		return -EBUSY;
	}
	if (!st.attached) {
		pthread_mutex_unlock(&s->mu);
		return -ENOTCONN;
	}
	if (mode == RFS_SYNC_INCREMENTAL &&
	    (!s->cfg.dirty || rfs_dirty_state(s->cfg.dirty, &had) != RFS_DIRTY_RECORDING)) {
		pthread_mutex_unlock(&s->mu);
		return -ENODATA;
	}
	s->snap = (struct rfs_dirty_snapshot){0};
	if (s->cfg.dirty && (rc = rfs_dirty_snapshot(s->cfg.dirty, &s->snap))) {
		pthread_mutex_unlock(&s->mu);
		return rc;
	}
	s->mode = mode;
	s->tagged = tag != NULL;
	s->tag = tag ? *tag : 0;
	atomic_store(&s->changes, 0);
	clock_gettime(CLOCK_REALTIME, &now);
	s->session = st.attaches;
	s->started_ns = mono_ns();
	atomic_store(&s->progress_ns, s->started_ns - PROGRESS_NS); /* the first event at once */
	pace_reset(s);
	s->ended_ns = 0;
	s->started_wall = now.tv_sec;
	s->errors = s->passes = 0;
	s->again = 0;
	s->ns_held = false;
	atomic_store(&s->cancel, 0);
	atomic_store(&s->files_scanned, 0);
	atomic_store(&s->files_total, 0);
	atomic_store(&s->bytes_scanned, 0);
	atomic_store(&s->bytes_total, 0);
	atomic_store(&s->bytes_sent, 0);
	s->state = RUNNING;
	rc = -pthread_create(&s->thread, NULL, sync_main, s);
	if (rc) {
		s->state = IDLE;
		rfs_dirty_snapshot_free(&s->snap);
	}
	s->joinable = !rc;
	pthread_mutex_unlock(&s->mu);
	return rc;
}

void rfs_sync_set_bw(struct rfs_sync *s, int percent, uint64_t allowed)
{
	atomic_store(&s->bw_percent, percent < 1 || percent > 100 ? 100 : percent);
	atomic_store(&s->bw_allowed, allowed);
}

void rfs_sync_get_bw(struct rfs_sync *s, int *percent, uint64_t *allowed)
{
	*percent = atomic_load(&s->bw_percent);
	*allowed = atomic_load(&s->bw_allowed);
}

void rfs_sync_result(struct rfs_sync *s, char *out, size_t size)
{
	pthread_mutex_lock(&s->mu);
	snprintf(out, size, "%s", s->result);
	pthread_mutex_unlock(&s->mu);
}

void rfs_sync_keys(struct rfs_sync *s, char *out, size_t size)
{
	pthread_mutex_lock(&s->mu);
	keys(s, s->state, s->started_ns, s->ended_ns, s->started_wall, out, size);
	pthread_mutex_unlock(&s->mu);
}

void rfs_sync_free(struct rfs_sync *s)
{
	bool join;

	if (!s)
		return;
	atomic_store(&s->cancel, 1);
	pthread_mutex_lock(&s->mu);
	join = s->joinable;
	s->joinable = false;
	pthread_mutex_unlock(&s->mu);
	if (join)
		pthread_join(s->thread, NULL);
	pthread_mutex_destroy(&s->mu);
	pthread_mutex_destroy(&s->err_mu);
	pthread_mutex_destroy(&s->pool_mu);
	pthread_cond_destroy(&s->pool_work);
	pthread_cond_destroy(&s->pool_room);
	pthread_mutex_destroy(&s->pace_mu);
	free(s);
}
