/* hakit-rfs, the FUSE layer: see fs.h.
 *
 * Why the high-level libfuse API (fuse.h) and not the low-level one of passthrough_hp:
 * the stream needs, for every operation, the file's path relative to the root as it is
 * when the operation happens.  The high-level API keeps exactly that tree (node ->
 * parent, name) and, while an operation runs on a path, read-locks every node of it: a
 * rename or unlink of the file or of any parent directory waits until the operation,
 * and so its rfs_repl_submit(), is done.  Operations therefore enter the stream in an
 * order in which every path is right.  Over the low-level API we would rebuild the same
 * tree and the same locks; what they cost (a mutex and a path string per request) is
 * small beside the kernel round trip, and is paid alike with and without replication.
 * The data paths, which set the throughput, are the same in both APIs: WRITE requests
 * of up to 1 MiB, reads answered by splicing from the real file.
 *
 * Ordering within one file comes from the kernel: a write(2) through the page cache or
 * with O_DIRECT holds the inode lock for its WRITE request, and written-back mmap pages
 * never overlap a WRITE in flight; so for any one file, pwrite() and submit happen in
 * the same order on every thread.
 *
 * Cache and write modes, weighed against the durability contract (docs/replication.md):
 *  - write-through, not the writeback cache.  With writeback, write(2) returns before
 *    we see the data: strict mode could not hold, buffered data would reach the
 *    secondary only when the kernel writes dirty pages back (dirty_expire_centisecs,
 *    30 s by default) instead of within the stream's flush delay, and every close would
 *    add a SETATTR of the times.  Write-through sends each write(2) as one request.
 *  - kept pages and long timeouts on the primary: the mount is the only writer of the
 *    directory and the kernel updates its caches on every change passing through it
 *    (but a file with several names has a page cache per name: cache_mode).
 *    On the secondary the receiver changes files underneath the mount, so the caches
 *    are short and a file's pages are dropped when it changed (auto_cache).
 *
 * Handlers follow the high-level API's own convention, which is the passthrough_hp
 * style already: each does its work on the real directory and returns 0 / a count or
 * -errno; modifying ones then hand a struct rfs_op to submit_unless_excluded().  They
 * are wired in one table, rfs_ops, at the end.
 *
 * Locks: libfuse's path locks described above order the application's operations;
 * fs.c's own (struct rfs_fs: ns, stripes) order them against a full sync (sync.c),
 * which reads the real directory beside the mount.  Counters are atomics, per-open
 * state lives in the open file.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/fsuid.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/statvfs.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include <fuse.h>
#include <fuse_lowlevel.h>
#include <linux/fuse.h>

#include "fs.h"
#include "fuse_io.h"
#include "io.h"
#include "log.h"

#define MAX_WRITE (1u << 20)          /* one write(2) of up to 1 MiB is one request */
#define PRIMARY_CACHE_S 60.0          /* attributes, entries, negative entries */
#define SECONDARY_CACHE_S 1.0         /* how stale a reader on the secondary may see the tree */
#define MAX_THREADS 64                /* requests waiting on the secondary each hold one */
#define IDLE_THREADS 8
#define DIVERGED_LOG_MAX 100          /* then divergences are only counted */
#define STRIPES 256                   /* path locks for the full sync, by hash */
#define MOVES_MAX 65536               /* renames remembered during a full sync; beyond, it walks again */

_Static_assert(sizeof(uint64_t) >= sizeof(void *), "fuse_file_info.fh holds a pointer");
_Static_assert(sizeof(off_t) == 8, "64-bit file offsets (_FILE_OFFSET_BITS=64 from fuse3)");
_Static_assert((O_SYNC & O_DSYNC) == O_DSYNC, "O_SYNC implies O_DSYNC: one test covers both");

struct rfs_fs {
	struct fuse *fuse;
	struct rfs_repl *repl;
	struct rfs_dirty *dirty;
	int rootfd;
	int mntfd;          /* O_PATH on the mount's root: unmounting through it hits only this mount */
	int watchdog_fd;    /* write end of the watchdog's pipe */
	pid_t watchdog_pid;
	bool strict, xattr;
	const struct rfs_exclude *exclude;
	/* The full sync (sync.c) against live operations.  A live modifying operation holds
	 * its path's stripe shared from doing it here to submitting it; a rename holds ns
	 * exclusively; a sync step holds ns shared and its path's stripe exclusively from
	 * reading here to submitting.  So for any path the stream receives the sync's and
	 * the application's operations in the order they happened here, and no rename moves
	 * a path under a step.  Lock order: libfuse's path locks > ns > a stripe > the
	 * stream's locks.  Both prefer writers: a stream of writes cannot starve a step, nor
	 * a stream of steps a rename. */
	pthread_rwlock_t ns;
	pthread_rwlock_t stripes[STRIPES];
	/* A file with several names is changed through any of them, each its own stripe: a
	 * live modifying operation on such a file also holds `links` shared, a step on one
	 * exclusively (after its stripe: ns > a stripe > links). */
	pthread_rwlock_t links;
	/* While the sync tracks them, the paths renames moved from and to, to look at again. */
	pthread_mutex_t moves_mu;
	bool tracking, moves_overflow;
	char **moves;
	size_t nmoves, moves_cap;
	pthread_t loop_thread;
	atomic_bool running, stopping, unmounted;
	struct {
		atomic_uint_fast64_t writes, write_bytes, namespace_ops, syncs, closes, getxattrs, diverged;
	} n;
};

/* One open regular file: the open's reference, and one per request that borrowed it
 * (borrow_file). */
struct rfs_file {
	atomic_int refs;
	int fd;
	bool sync;            /* O_SYNC / O_DSYNC: each write durable on the secondary before it returns */
	atomic_bool written;  /* changed since the last sync: its close waits for the secondary */
	atomic_bool sxid;     /* set-user/group-ID: the first unprivileged write clears the bits */
	struct rfs_open_mode *mode; /* passthrough, cached or direct (fuse_io.h) */
};

/* One open directory (telldir offsets, as the kernel resumes a listing). */
struct rfs_dir {
	DIR *dp;
	struct dirent *entry; /* read but not yet given to the kernel */
	off_t offset;
};

static struct rfs_fs *ctx_fs(void)
{
	return fuse_get_context()->private_data;
}

static struct rfs_file *file_of(const struct fuse_file_info *fi)
{
	return (struct rfs_file *)(uintptr_t)fi->fh;
}

static struct rfs_dir *dir_of(const struct fuse_file_info *fi)
{
	return (struct rfs_dir *)(uintptr_t)fi->fh;
}

/* libfuse's paths start with "/".  The real directory's *at() calls want "a/b" and "."
 * for the root; the stream wants "a/b" and "" for the root (op.h: no "." part). */
static const char *fuse_at_path(const char *path)
{
	return path[1] ? path + 1 : ".";
}

static const char *stream_path(const char *path)
{
	return path + 1;
}

static pthread_rwlock_t *stripe_of(struct rfs_fs *fs, const char *spath)
{
	uint64_t h = 1469598103934665603ull; /* FNV-1a */

	while (*spath)
		h = (h ^ (unsigned char)*spath++) * 1099511628211ull;
	return &fs->stripes[h % STRIPES];
}

/* A live modifying operation's hold on its path (see struct rfs_fs), released when the
 * handler returns: LIVE(fs, path) first in the handler.  No path (a file unlinked while
 * open): nothing to order, nothing held. */
struct live {
	pthread_rwlock_t *lock;
};

static struct live live_begin(struct rfs_fs *fs, const char *path)
{
	struct live l = { .lock = path ? stripe_of(fs, stream_path(path)) : NULL };

	if (l.lock)
		pthread_rwlock_rdlock(l.lock);
	return l;
}

static void live_end(struct live *l)
{
	if (l->lock)
		pthread_rwlock_unlock(l->lock);
}

#define LIVE(fs, path) struct live live_ __attribute__((cleanup(live_end))) = live_begin(fs, path)

/* ---- Open files by node (fuse_io.h) ----
 * A request the kernel sends on an open file without naming it (fstat, fchmod, fchown,
 * futimens), on a node whose name was removed, comes with fh 0: the handlers take the
 * node's open file (target_begin), with a reference of their own. */
static void file_hold(void *f)
{
	atomic_fetch_add(&((struct rfs_file *)f)->refs, 1);
}

static void file_put(struct rfs_file *f)
{
	if (atomic_fetch_sub(&f->refs, 1) == 1) {
		close(f->fd);
		free(f);
	}
}

/* ---- Files unlinked while open ----
 * A file whose name was removed while open has no path (libfuse passes NULL).  With no
 * name left (st_nlink 0) nothing of it is replicated: no name on either copy holds what
 * it does.  With another name left (a hard link), what it does must reach the
 * secondary through that name: found by a walk of the real directory (costly, and
 * rare: a write through a descriptor of a removed name of a file that has others),
 * then held as a sync step holds its path (rfs_fs_step_begin: no rename anywhere, no
 * live operation on that name) while the operation is done and submitted. */
static int find_name(int dfd, char *path, size_t len, size_t size, ino_t ino)
{
	DIR *d;
	struct dirent *e;
	int r = 0, fd = openat(dfd, len ? path : ".", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);

	if (fd < 0 || (d = fdopendir(fd)) == NULL) {
		if (fd >= 0)
			close(fd);
		return 0; /* gone meanwhile: looked for elsewhere */
	}
	while (r == 0 && (e = readdir(d))) {
		size_t n = strlen(e->d_name), at = len ? len + 1 : 0;

		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..") || at + n + 1 > size)
			continue;
		if (len)
			path[len] = '/';
		memcpy(path + at, e->d_name, n + 1);
		if (e->d_type == DT_DIR)
			r = find_name(dfd, path, at + n, size, ino);
		else if (e->d_ino == ino)
			r = 1;
	}
	if (r == 0)
		path[len] = '\0';
	closedir(d);
	return r;
}

/* What a file handler acts on, set up by TARGET: fi NULL (by path) or a real open file,
 * path NULL (nothing replicated) or the name to replicate under, held. */
struct target {
	struct rfs_fs *fs;
	struct fuse_file_info *fi; /* given the borrowed file's fh, 0 again at the end */
	struct rfs_file *borrowed;
	pthread_rwlock_t *lock;   /* a live op's stripe, shared */
	bool links;               /* and `links`, shared: a file with several names */
	char *alias;              /* libfuse-style ("/a/b"); its step held */
};

static void target_end(struct target *t)
{
	if (t->links)
		pthread_rwlock_unlock(&t->fs->links);
	if (t->lock)
		pthread_rwlock_unlock(t->lock);
	if (t->alias) {
		rfs_fs_step_end(t->fs, stream_path(t->alias), false);
		free(t->alias);
	}
	if (t->borrowed) {
		t->fi->fh = 0;
		file_put(t->borrowed);
	}
}

/* Another name of f's file, held (see above); NULL when it has none. */
static char *alias_of(struct rfs_fs *fs, const struct rfs_file *f)
{
	struct stat st, now;
	char *p = malloc(PATH_MAX + 1);

	if (p == NULL)
		return NULL;
	p[0] = '/';
	for (;;) {
		p[1] = '\0';
		/* Renames are held off while looking; a name found may go before its step. */
		pthread_rwlock_rdlock(&fs->ns);
		bool found = fstat(f->fd, &st) == 0 && st.st_nlink > 0 &&
			     find_name(fs->rootfd, p + 1, 0, PATH_MAX, st.st_ino) == 1;
		pthread_rwlock_unlock(&fs->ns);
		if (!found) {
			free(p);
			return NULL;
		}
		rfs_fs_step_begin(fs, p + 1, false);
		if (fstatat(fs->rootfd, p + 1, &now, AT_SYMLINK_NOFOLLOW) == 0 && now.st_ino == st.st_ino &&
		    now.st_dev == st.st_dev)
			return p;
		rfs_fs_step_end(fs, p + 1, false);
	}
}

static struct target target_begin(struct rfs_fs *fs, const char **path, struct fuse_file_info **fi,
				  bool modifying)
{
	struct target t = { .fs = fs };

	if (*fi && (*fi)->fh == 0) {
		/* Given fh 0 (fuse_io.c): by path while the node has one. */
		if (*path || (t.borrowed = rfs_node_file(file_hold)) == NULL) {
			*fi = NULL;
		} else {
			t.fi = *fi;
			t.fi->fh = (uintptr_t)t.borrowed;
		}
	}
	if (!modifying)
		return t;
	if (*path) {
		struct stat st;

		t.lock = stripe_of(fs, stream_path(*path));
		pthread_rwlock_rdlock(t.lock);
		t.links = (*fi ? fstat(file_of(*fi)->fd, &st) : fstatat(fs->rootfd, fuse_at_path(*path), &st,
									AT_SYMLINK_NOFOLLOW)) == 0 &&
			  !S_ISDIR(st.st_mode) && st.st_nlink > 1;
		if (t.links)
			pthread_rwlock_rdlock(&fs->links);
	} else if (*fi && fs->repl && (t.alias = alias_of(fs, file_of(*fi)))) {
		*path = t.alias;
	}
	return t;
}

/* First in a handler on a file, in place of LIVE; may change path and fi. */
#define TARGET(fs, path, fi, modifying) \
	struct target target_ __attribute__((cleanup(target_end))) = target_begin(fs, &path, &fi, modifying)

/* A modifying operation from before it changes the real directory to after its submit:
 * while the secondary is away its marks are durable first (dirty.h).  code 0: none. */
struct intent {
	struct rfs_dirty *dirty;
	struct rfs_dirty_ticket t;
};

static struct intent intent_begin(struct rfs_fs *fs, uint16_t code, const char *path, const char *path2,
				  off_t off, uint64_t len, uint32_t flags)
{
	struct intent i = { .dirty = code && path ? fs->dirty : NULL };
	struct rfs_op op = { .code = code, .path = path ? stream_path(path) : NULL,
			     .path2 = path2 ? stream_path(path2) : NULL, .off = off, .len = len, .flags = flags };

	if (i.dirty)
		rfs_dirty_begin(i.dirty, &op, &i.t);
	return i;
}

static void intent_end(struct intent *i)
{
	if (i->dirty)
		rfs_dirty_end(i->dirty, &i->t);
}

#define INTENT(fs, code, path, path2, off, len, flags) \
	struct intent intent_ __attribute__((cleanup(intent_end))) = \
		intent_begin(fs, code, path, path2, off, len, flags)

/* The real file by a path the path-only calls (the *xattr family) accept: through the
 * magic link of rootfd, which leads to the real directory beneath the mount. */
static int real_path(const struct rfs_fs *fs, const char *path, char *out, size_t size)
{
	int n = snprintf(out, size, "/proc/self/fd/%d/%s", fs->rootfd, fuse_at_path(path));

	return n < (int)size ? 0 : -ENAMETOOLONG;
}

/* The primary has already done the operation, so a failure on the secondary does not
 * fail the application: it is logged and counted (repl_send.h). */
static void note_divergence(struct rfs_fs *fs, const struct rfs_op *op, int err)
{
	uint_fast64_t n = atomic_fetch_add(&fs->n.diverged, 1);

	if (n < DIVERGED_LOG_MAX)
		rfs_log("the secondary failed to %s %s: %s%s", rfs_opcode_name(op->code), op->path,
		       strerror(-err), n + 1 == DIVERGED_LOG_MAX ? " (further failures are only counted)" : "");
	rfs_repl_diverged(fs->repl, op, err);
}

/* Does op reach the secondary?  Not when it acts on an entry left out of replication
 * (exclude.h): the primary does it alone.  Whether the entry is a directory matters to
 * the include-only rule alone, and is asked of the real directory only for the
 * operations that may act on either kind (attributes, fsync).  fs_rename judges its
 * own, as it knows both sides. */
static bool op_is_replicated(const struct rfs_fs *fs, const struct rfs_op *op)
{
	enum rfs_verdict v;
	struct stat st;

	if (!fs->exclude || !op->path || op->code == RFS_OP_RENAME)
		return true;
	v = rfs_exclude_verdict(fs->exclude, op->path);
	if (v != RFS_REPLICATED_IF_DIR)
		return v == RFS_REPLICATED;
	switch (op->code) {
	case RFS_OP_MKDIR:
	case RFS_OP_RMDIR:
		return true;
	case RFS_OP_CHMOD:
	case RFS_OP_CHOWN:
	case RFS_OP_UTIMENS:
	case RFS_OP_SETXATTR:
	case RFS_OP_REMOVEXATTR:
	case RFS_OP_FSYNC:
		return fstatat(fs->rootfd, *op->path ? op->path : ".", &st, AT_SYMLINK_NOFOLLOW) == 0 &&
		       S_ISDIR(st.st_mode);
	default:
		return false;
	}
}

/* op, known to be replicated. */
static void submit(struct rfs_fs *fs, const struct rfs_op *op, enum rfs_wait wait)
{
	int err = rfs_repl_submit(fs->repl, op, wait);

	if (err)
		note_divergence(fs, op, err);
}

static void submit_unless_excluded(struct rfs_fs *fs, const struct rfs_op *op, enum rfs_wait wait)
{
	if (op_is_replicated(fs, op))
		submit(fs, op, wait);
}

/* Namespace operations return only once the secondary applied them. */
static int replicate_applied(struct rfs_fs *fs, const struct rfs_op *op)
{
	atomic_fetch_add_explicit(&fs->n.namespace_ops, 1, memory_order_relaxed);
	submit_unless_excluded(fs, op, RFS_WAIT_APPLIED);
	return 0;
}

/* A file with several names is written through each of them, and the stream orders
 * only one path's ops (repl_send.c): its writes are applied before they return, so
 * that the secondary applies them in the order they returned here. */
static bool is_linked(int fd)
{
	struct stat st;

	return fstat(fd, &st) == 0 && !S_ISDIR(st.st_mode) && st.st_nlink > 1;
}

static enum rfs_wait data_wait(const struct rfs_fs *fs, const struct rfs_file *f)
{
	if (f->sync)
		return RFS_WAIT_DURABLE;
	return fs->strict || is_linked(f->fd) ? RFS_WAIT_APPLIED : RFS_WAIT_QUEUED;
}

/* The primary's times, for the secondary's copy: the secondary's own writes stamped its
 * clock on it. */
static void replicate_times(struct rfs_fs *fs, const char *spath, const struct stat *st, enum rfs_wait wait)
{
	struct rfs_op op = {
		.code = RFS_OP_UTIMENS, .path = spath,
		.atime_sec = st->st_atim.tv_sec, .atime_nsec = st->st_atim.tv_nsec,
		.mtime_sec = st->st_mtim.tv_sec, .mtime_nsec = st->st_mtim.tv_nsec,
	};

	submit_unless_excluded(fs, &op, wait);
}

/* Makes the secondary's copy of an open file (fd: its times travel along) or of a
 * directory (fd < 0) durable: sent, to be waited for with rfs_repl_wait().  NULL when
 * nothing waits: the sync is done already, or not replicated (none attached: the
 * journal has what it needs). */
static struct rfs_repl_pending *sync_to_secondary(struct rfs_fs *fs, const char *path, int fd, bool datasync)
{
	struct rfs_op op = { .code = RFS_OP_FSYNC, .path = stream_path(path), .flags = datasync };
	struct rfs_repl_pending *p;
	struct stat st;

	if (!op_is_replicated(fs, &op))
		return NULL;
	/* Queued: the FSYNC that follows on the same path is waited for. */
	if (fd >= 0 && fstat(fd, &st) == 0)
		replicate_times(fs, op.path, &st, RFS_WAIT_QUEUED);
	atomic_fetch_add_explicit(&fs->n.syncs, 1, memory_order_relaxed);
	/* Not sent (none attached): submitted all the same, for the journal. */
	if ((p = rfs_repl_send(fs->repl, &op, RFS_WAIT_DURABLE)) == NULL)
		submit(fs, &op, RFS_WAIT_DURABLE);
	return p;
}

static void sync_wait(struct rfs_fs *fs, const char *path, struct rfs_repl_pending *p)
{
	int err = rfs_repl_wait(p);

	if (err) {
		struct rfs_op op = { .code = RFS_OP_FSYNC, .path = stream_path(path) };

		note_divergence(fs, &op, err);
	}
}

static bool is_sxid(mode_t mode)
{
	return S_ISREG(mode) && ((mode & S_ISUID) || (mode & (S_ISGID | S_IXGRP)) == (S_ISGID | S_IXGRP));
}

/* With FUSE_HANDLE_KILLPRIV_V2 (fuse_io.c) clearing set-user/group-ID bits
 * on write, truncate and open(O_TRUNC) is ours, as the kernel does for a writer without
 * CAP_FSETID.  libfuse 3.14 does not pass the kernel's flag for it on, so an
 * unprivileged caller (uid != 0) stands for it; the callers test that. */
static int kill_sxid(struct rfs_fs *fs, const char *path, int fd)
{
	struct stat st;
	mode_t mode;
	INTENT(fs, RFS_OP_CHMOD, path, NULL, 0, 0, 0);

	if (fstat(fd, &st) < 0)
		return -errno;
	if (!is_sxid(st.st_mode))
		return 0;
	mode = st.st_mode & 07777 & ~(mode_t)S_ISUID;
	if (mode & S_IXGRP)
		mode &= ~(mode_t)S_ISGID;
	if (fchmod(fd, mode) < 0)
		return -errno;
	if (path) {
		struct rfs_op op = { .code = RFS_OP_CHMOD, .path = stream_path(path), .mode = mode };
		return replicate_applied(fs, &op);
	}
	return 0;
}

static bool unprivileged_caller(void)
{
	return fuse_get_context()->uid != 0;
}

/* New entries are created with the caller's group as file-system gid (so that a
 * set-group-ID parent still imposes its own group, as the real file system decides) and
 * the caller's umask (the kernel leaves it to us, FUSE_CAP_DONT_MASK, so that a parent's
 * default ACL can take its place), then given to the caller (owner_to_caller).  Only
 * the gid is switched: a non-zero fsuid would drop CAP_DAC_OVERRIDE and the real file
 * system would check again, against our groups, what the kernel already checked on the
 * mount against the caller's.  umask is per fs_struct: each worker thread gets its own
 * (unshare(CLONE_FS)) before changing it. */
struct creator {
	uid_t uid;
	gid_t saved_fsgid;
};

static struct creator creator_begin(void)
{
	static __thread bool own_fs_struct;
	const struct fuse_context *ctx = fuse_get_context();

	if (!own_fs_struct && unshare(CLONE_FS) == 0)
		own_fs_struct = true;
	if (own_fs_struct)
		umask(ctx->umask);
	return (struct creator){ .uid = ctx->uid, .saved_fsgid = (gid_t)setfsgid(ctx->gid) };
}

static void creator_end(const struct creator *c)
{
	umask(0);
	setfsgid(c->saved_fsgid);
}

/* Gives a new entry (by fd, or by path when fd < 0) to its creator; *st is then the
 * entry's final state. */
static int owner_to_caller(struct rfs_fs *fs, const char *sp, int fd, const struct creator *c,
			   struct stat *st)
{
	int r = fd >= 0 ? fstat(fd, st) : fstatat(fs->rootfd, sp, st, AT_SYMLINK_NOFOLLOW);

	if (r < 0)
		return -errno;
	if (c->uid == st->st_uid)
		return 0;
	r = fd >= 0 ? fchown(fd, c->uid, (gid_t)-1)
		    : fchownat(fs->rootfd, sp, c->uid, (gid_t)-1, AT_SYMLINK_NOFOLLOW);
	if (r < 0)
		return -errno;
	st->st_uid = c->uid;
	/* chown drops the set-ID bits of a non-directory: a file created with them keeps them. */
	if (!S_ISDIR(st->st_mode) && !S_ISLNK(st->st_mode) && (st->st_mode & (S_ISUID | S_ISGID))) {
		r = fd >= 0 ? fchmod(fd, st->st_mode & 07777) : fchmodat(fs->rootfd, sp, st->st_mode & 07777, 0);
		if (r < 0)
			return -errno;
	}
	return 0;
}

/* An entry created here that could not be given to its caller is removed again: it
 * must not stay behind root's, unreplicated. */
static int undo_create(struct rfs_fs *fs, const char *sp, bool dir, int err)
{
	unlinkat(fs->rootfd, sp, dir ? AT_REMOVEDIR : 0);
	return err;
}

/* Replicates a creation (op: code, path, path2, rdev) so that the secondary's entry
 * ends with the primary's mode and owner.  The receiver creates as root
 * (op.h: a creation carries its mode only): another owner follows as a CHOWN,
 * then a CHMOD for set-ID bits, which chown drops.  They act on the same path, so the
 * stream keeps them in order, and the application waits for the last one only.
 * early: the creation already sent (rfs_repl_send) with op->mode, before the primary
 * knew the final mode: a CHMOD follows if that was not it. */
static int replicate_created(struct rfs_fs *fs, struct rfs_op *op, const struct stat *st,
			     struct rfs_repl_pending *early)
{
	bool special = S_ISCHR(st->st_mode) || S_ISBLK(st->st_mode) || S_ISFIFO(st->st_mode) ||
		       S_ISSOCK(st->st_mode);
	bool chown = st->st_uid != 0 || st->st_gid != 0;
	bool chmod = (chown && !S_ISDIR(st->st_mode) && !S_ISLNK(st->st_mode) &&
		      (st->st_mode & (S_ISUID | S_ISGID))) ||
		     (early && op->mode != (st->st_mode & 07777));
	int err;

	atomic_fetch_add_explicit(&fs->n.namespace_ops, 1, memory_order_relaxed);
	if (!early) {
		op->mode = special ? st->st_mode : st->st_mode & 07777;
		submit_unless_excluded(fs, op, chown || chmod ? RFS_WAIT_QUEUED : RFS_WAIT_APPLIED);
	}
	if (chown) {
		struct rfs_op own = { .code = RFS_OP_CHOWN, .path = op->path, .uid = (uint32_t)st->st_uid,
				      .gid = (uint32_t)st->st_gid };
		submit_unless_excluded(fs, &own, chmod ? RFS_WAIT_QUEUED : RFS_WAIT_APPLIED);
	}
	if (chmod) {
		struct rfs_op mode = { .code = RFS_OP_CHMOD, .path = op->path, .mode = st->st_mode & 07777 };
		submit_unless_excluded(fs, &mode, RFS_WAIT_APPLIED);
	}
	/* Acked by now if anything followed it: the stream keeps one path's ops in order. */
	if ((err = rfs_repl_wait(early)))
		note_divergence(fs, op, err);
	return 0;
}

static int fs_getattr(const char *path, struct stat *st, struct fuse_file_info *fi)
{
	struct rfs_fs *fs = ctx_fs();
	TARGET(fs, path, fi, false);
	int r;

	if (!fi && !path)
		return -ESTALE; /* closed meanwhile */
	r = fi ? fstat(file_of(fi)->fd, st) : fstatat(fs->rootfd, fuse_at_path(path), st, AT_SYMLINK_NOFOLLOW);
	return r < 0 ? -errno : 0;
}

static int fs_readlink(const char *path, char *buf, size_t size)
{
	ssize_t n = readlinkat(ctx_fs()->rootfd, fuse_at_path(path), buf, size - 1);

	if (n < 0)
		return -errno;
	buf[n] = '\0';
	return 0;
}

static int fs_mknod(const char *path, mode_t mode, dev_t rdev)
{
	struct rfs_fs *fs = ctx_fs();
	LIVE(fs, path);
	INTENT(fs, RFS_OP_MKNOD, path, NULL, 0, 0, 0);
	const char *sp = fuse_at_path(path);
	struct rfs_op op = { .path = stream_path(path), .rdev = rdev };
	struct creator c = creator_begin();
	struct stat st;
	int r;

	/* mknod(S_IFREG) is a creation like open(O_CREAT) and travels as one. */
	if (S_ISREG(mode)) {
		op.code = RFS_OP_CREATE;
		r = openat(fs->rootfd, sp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
		if (r >= 0)
			close(r);
	} else {
		op.code = RFS_OP_MKNOD;
		r = mknodat(fs->rootfd, sp, mode, rdev);
	}
	r = r < 0 ? -errno : 0;
	creator_end(&c);
	if (r)
		return r;
	r = owner_to_caller(fs, sp, -1, &c, &st);
	if (r)
		return undo_create(fs, sp, false, r);
	return replicate_created(fs, &op, &st, NULL);
}

static int fs_mkdir(const char *path, mode_t mode)
{
	struct rfs_fs *fs = ctx_fs();
	LIVE(fs, path);
	INTENT(fs, RFS_OP_MKDIR, path, NULL, 0, 0, 0);
	const char *sp = fuse_at_path(path);
	struct rfs_op op = { .code = RFS_OP_MKDIR, .path = stream_path(path) };
	struct creator c = creator_begin();
	struct stat st;
	int r = mkdirat(fs->rootfd, sp, mode) < 0 ? -errno : 0;

	creator_end(&c);
	if (r)
		return r;
	r = owner_to_caller(fs, sp, -1, &c, &st);
	if (r)
		return undo_create(fs, sp, true, r);
	return replicate_created(fs, &op, &st, NULL);
}

static int fs_unlink(const char *path)
{
	struct rfs_fs *fs = ctx_fs();
	LIVE(fs, path);
	INTENT(fs, RFS_OP_UNLINK, path, NULL, 0, 0, 0);
	struct rfs_op op = { .code = RFS_OP_UNLINK, .path = stream_path(path) };

	if (unlinkat(fs->rootfd, fuse_at_path(path), 0) < 0)
		return -errno;
	return replicate_applied(fs, &op);
}

static int fs_rmdir(const char *path)
{
	struct rfs_fs *fs = ctx_fs();
	LIVE(fs, path);
	INTENT(fs, RFS_OP_RMDIR, path, NULL, 0, 0, 0);
	struct rfs_op op = { .code = RFS_OP_RMDIR, .path = stream_path(path) };

	if (unlinkat(fs->rootfd, fuse_at_path(path), AT_REMOVEDIR) < 0)
		return -errno;
	return replicate_applied(fs, &op);
}

static int fs_symlink(const char *target, const char *path)
{
	struct rfs_fs *fs = ctx_fs();
	LIVE(fs, path);
	INTENT(fs, RFS_OP_SYMLINK, path, NULL, 0, 0, 0);
	const char *sp = fuse_at_path(path);
	struct rfs_op op = { .code = RFS_OP_SYMLINK, .path = stream_path(path), .path2 = target };
	struct creator c = creator_begin();
	struct stat st;
	int r = symlinkat(target, fs->rootfd, sp) < 0 ? -errno : 0;

	creator_end(&c);
	if (r)
		return r;
	r = owner_to_caller(fs, sp, -1, &c, &st);
	if (r)
		return undo_create(fs, sp, false, r);
	return replicate_created(fs, &op, &st, NULL);
}

/* Both paths of a rename, remembered while the full sync tracks them. */
static void note_move(struct rfs_fs *fs, const char *from, const char *to)
{
	pthread_mutex_lock(&fs->moves_mu);
	if (fs->tracking && !fs->moves_overflow) {
		if (fs->nmoves + 2 > MOVES_MAX) {
			fs->moves_overflow = true;
		} else if (rfs_grow(&fs->moves, &fs->moves_cap, fs->nmoves + 2, sizeof *fs->moves)) {
			fs->moves_overflow = true;
		}
		if (!fs->moves_overflow) {
			fs->moves[fs->nmoves] = strdup(from);
			fs->moves[fs->nmoves + 1] = strdup(to);
			fs->moves_overflow = !fs->moves[fs->nmoves] || !fs->moves[fs->nmoves + 1];
			fs->nmoves += 2;
		}
	}
	pthread_mutex_unlock(&fs->moves_mu);
}

/* A rename may not carry an entry across the boundary of what is replicated
 * (exclude.h): EXDEV, as between two file systems, so that applications (mv) copy and
 * delete instead, which replicates right.  Only the entries named are judged, not what
 * a directory holds.  *send: replicated on both sides; on neither, the primary's alone. */
static int rename_across(struct rfs_fs *fs, const char *from, const char *to, unsigned int flags, bool *send)
{
	struct stat a, b;
	bool in;

	*send = true;
	if (!fs->exclude)
		return 0;
	if (fstatat(fs->rootfd, fuse_at_path(from), &a, AT_SYMLINK_NOFOLLOW) < 0)
		return -errno;
	in = !rfs_is_excluded(fs->exclude, stream_path(from), S_ISDIR(a.st_mode));
	if (rfs_is_excluded(fs->exclude, stream_path(to), S_ISDIR(a.st_mode)) == in)
		return -EXDEV;
	/* An exchange moves the target the other way: it must stay on the same side too. */
	if (flags & RENAME_EXCHANGE) {
		if (fstatat(fs->rootfd, fuse_at_path(to), &b, AT_SYMLINK_NOFOLLOW) < 0)
			return -errno;
		if (rfs_is_excluded(fs->exclude, stream_path(from), S_ISDIR(b.st_mode)) == in ||
		    rfs_is_excluded(fs->exclude, stream_path(to), S_ISDIR(b.st_mode)) == in)
			return -EXDEV;
	}
	*send = in;
	return 0;
}

static int fs_rename(const char *from, const char *to, unsigned int flags)
{
	struct rfs_fs *fs = ctx_fs();
	struct rfs_op op = { .code = RFS_OP_RENAME, .path = stream_path(from), .path2 = stream_path(to),
			     .flags = flags };
	struct live ns __attribute__((cleanup(live_end))) = { .lock = &fs->ns };
	INTENT(fs, RFS_OP_RENAME, from, to, 0, 0, flags);

	bool send;
	int r;

	pthread_rwlock_wrlock(&fs->ns);
	if ((r = rename_across(fs, from, to, flags, &send)))
		return r;
	/* A name of a file with several: its other names are found by a walk (dirty.c). */
	struct stat st;
	struct intent walk __attribute__((cleanup(intent_end))) = intent_begin(
		fs, fstatat(fs->rootfd, fuse_at_path(from), &st, AT_SYMLINK_NOFOLLOW) == 0 && !S_ISDIR(st.st_mode) &&
		st.st_nlink > 1 ? RFS_OP_LINK : 0, from, to, 0, 0, 0);
	if (renameat2(fs->rootfd, fuse_at_path(from), fs->rootfd, fuse_at_path(to), flags) < 0)
		return -errno;
	if (!send)
		return 0;
	replicate_applied(fs, &op);
	note_move(fs, op.path, op.path2);
	return 0;
}

/* Holds the stripes of two paths, a's shared and b's exclusively (one stripe for both:
 * exclusively), in the stripes' order so that two links never wait on each other;
 * released by stripes_end. */
static void stripes_begin(struct rfs_fs *fs, const char *a, const char *b, pthread_rwlock_t *held[2])
{
	pthread_rwlock_t *sa = stripe_of(fs, stream_path(a)), *sb = stripe_of(fs, stream_path(b));

	held[0] = sa < sb ? sa : sb;
	held[1] = sa == sb ? NULL : sa < sb ? sb : sa;
	for (int i = 0; i < 2 && held[i]; i++) {
		if (held[i] == sb)
			pthread_rwlock_wrlock(held[i]);
		else
			pthread_rwlock_rdlock(held[i]);
	}
}

static void stripes_end(pthread_rwlock_t *held[2])
{
	for (int i = 1; i >= 0; i--)
		if (held[i])
			pthread_rwlock_unlock(held[i]);
}

/* A hard link: a barrier in the stream (op.c), so what was queued on `from` is applied
 * on the secondary first.  `from`'s stripe is held exclusively: a write on it is either
 * queued before the barrier or, after the link, sees two names and waits until applied
 * (data_wait).  The kernel keeps one inode per name (libfuse's nodes), so the cached
 * attributes and pages of `from` are dropped: its st_nlink changed. */
static int fs_link(const char *from, const char *to)
{
	struct rfs_fs *fs = ctx_fs();
	pthread_rwlock_t *held[2];
	INTENT(fs, RFS_OP_LINK, from, to, 0, 0, 0);
	struct rfs_op op = { .code = RFS_OP_LINK, .path = stream_path(from), .path2 = stream_path(to) };
	int r = 0;

	/* Across the boundary of what is replicated, as a rename (rename_across). */
	if (fs->exclude && rfs_is_excluded(fs->exclude, op.path, false) != rfs_is_excluded(fs->exclude, op.path2, false))
		return -EXDEV;
	stripes_begin(fs, to, from, held);
	if (linkat(fs->rootfd, fuse_at_path(from), fs->rootfd, fuse_at_path(to), 0) < 0)
		r = -errno;
	else
		replicate_applied(fs, &op);
	stripes_end(held);
	if (r == 0)
		fuse_invalidate_path(fs->fuse, from);
	return r;
}

static int fs_chmod(const char *path, mode_t mode, struct fuse_file_info *fi)
{
	struct rfs_fs *fs = ctx_fs();
	TARGET(fs, path, fi, true);
	INTENT(fs, RFS_OP_CHMOD, path, NULL, 0, 0, 0);
	if (!fi && !path)
		return -ESTALE; /* closed meanwhile */
	struct rfs_op op = { .code = RFS_OP_CHMOD, .path = path ? stream_path(path) : NULL, .mode = mode & 07777 };
	int r = fi ? fchmod(file_of(fi)->fd, mode) : fchmodat(fs->rootfd, fuse_at_path(path), mode, 0);

	if (r < 0)
		return -errno;
	return path ? replicate_applied(fs, &op) : 0;
}

static int fs_chown(const char *path, uid_t uid, gid_t gid, struct fuse_file_info *fi)
{
	struct rfs_fs *fs = ctx_fs();
	TARGET(fs, path, fi, true);
	INTENT(fs, RFS_OP_CHOWN, path, NULL, 0, 0, 0);
	if (!fi && !path)
		return -ESTALE; /* closed meanwhile */
	struct rfs_op op = { .code = RFS_OP_CHOWN, .path = path ? stream_path(path) : NULL,
			     .uid = (uint32_t)uid, .gid = (uint32_t)gid };
	int r = fi ? fchown(file_of(fi)->fd, uid, gid)
		   : fchownat(fs->rootfd, fuse_at_path(path), uid, gid, AT_SYMLINK_NOFOLLOW);

	if (r < 0)
		return -errno;
	return path ? replicate_applied(fs, &op) : 0;
}

static int fs_truncate(const char *path, off_t size, struct fuse_file_info *fi)
{
	struct rfs_fs *fs = ctx_fs();
	TARGET(fs, path, fi, true);
	INTENT(fs, RFS_OP_TRUNCATE, path, NULL, size, 0, 0);
	if (!fi && !path)
		return -ESTALE; /* closed meanwhile */
	int fd = fi ? file_of(fi)->fd : openat(fs->rootfd, fuse_at_path(path), O_WRONLY | O_CLOEXEC);
	struct stat st;
	int r;

	if (fd < 0)
		return -errno;
	r = ftruncate(fd, size) < 0 ? -errno : 0;
	if (r == 0 && unprivileged_caller())
		r = kill_sxid(fs, path, fd);
	if (r == 0 && path && fstat(fd, &st) < 0)
		r = -errno;
	if (!fi)
		close(fd);
	if (r || !path)
		return r;
	if (fi)
		atomic_store(&file_of(fi)->written, true);
	/* truncate(2) by path has no close to carry the new times: they follow at once. */
	struct rfs_op op = { .code = RFS_OP_TRUNCATE, .path = stream_path(path), .off = size };
	atomic_fetch_add_explicit(&fs->n.namespace_ops, 1, memory_order_relaxed);
	submit_unless_excluded(fs, &op, RFS_WAIT_QUEUED);
	replicate_times(fs, op.path, &st, RFS_WAIT_APPLIED);
	return 0;
}

/* UTIME_NOW / UTIME_OMIT are resolved by reading the times back: the secondary gets
 * the primary's absolute values (op.h). */
static int fs_utimens(const char *path, const struct timespec tv[2], struct fuse_file_info *fi)
{
	struct rfs_fs *fs = ctx_fs();
	TARGET(fs, path, fi, true);
	INTENT(fs, RFS_OP_UTIMENS, path, NULL, 0, 0, 0);
	if (!fi && !path)
		return -ESTALE; /* closed meanwhile */
	struct stat st;
	int r;

	if (fi)
		r = futimens(file_of(fi)->fd, tv) < 0 || fstat(file_of(fi)->fd, &st) < 0;
	else
		r = utimensat(fs->rootfd, fuse_at_path(path), tv, AT_SYMLINK_NOFOLLOW) < 0 ||
		    fstatat(fs->rootfd, fuse_at_path(path), &st, AT_SYMLINK_NOFOLLOW) < 0;
	if (r)
		return -errno;
	if (path) {
		atomic_fetch_add_explicit(&fs->n.namespace_ops, 1, memory_order_relaxed);
		replicate_times(fs, stream_path(path), &st, RFS_WAIT_APPLIED);
	}
	return 0;
}

/* Open flags the real file is opened without.  O_APPEND: the kernel computes the
 * append offset from its file size, exact since every write passes through it, and
 * sends it; with O_APPEND pwrite() would ignore that offset and the stream could not
 * tell where the data went.  O_DIRECT: the request buffers are not aligned, and the
 * application's direct I/O has already bypassed the mount's page cache. */
#define REAL_OPEN_DROP (O_APPEND | O_DIRECT | O_CREAT | O_EXCL | O_NOCTTY)

static int attach_file(struct fuse_file_info *fi, int fd, mode_t mode)
{
	struct rfs_file *f = calloc(1, sizeof *f);

	if (f == NULL)
		return -ENOMEM;
	atomic_init(&f->refs, 1);
	f->fd = fd;
	f->sync = (fi->flags & O_DSYNC) != 0;
	atomic_init(&f->written, false);
	atomic_init(&f->sxid, is_sxid(mode));
	fi->fh = (uintptr_t)f;
	return 0;
}

/* The primary keeps a file's pages between opens (the mount is the only writer) unless
 * it has several names: the kernel has an inode, so a page cache, per name (libfuse's
 * nodes), and a write through one name would leave the other's pages stale.  Such a
 * file is read and written past the page cache. */
static void cache_mode(const struct rfs_fs *fs, struct fuse_file_info *fi, const struct stat *st)
{
	if (!fs->repl)
		return;
	if (st->st_nlink > 1)
		fi->direct_io = 1;
	else
		fi->keep_cache = 1;
}

/* A creation the secondary made ahead of the primary, which then failed: undone there. */
static int undo_early(struct rfs_fs *fs, struct rfs_repl_pending *early, const char *path, int err)
{
	struct rfs_op op = { .code = RFS_OP_UNLINK, .path = path };

	if (early && rfs_repl_wait(early) == 0)
		submit_unless_excluded(fs, &op, RFS_WAIT_APPLIED);
	return err;
}

static int fs_create(const char *path, mode_t mode, struct fuse_file_info *fi)
{
	struct rfs_fs *fs = ctx_fs();
	LIVE(fs, path);
	INTENT(fs, RFS_OP_CREATE, path, NULL, 0, 0, 0);
	const char *sp = fuse_at_path(path);
	struct creator c = creator_begin();
	/* The secondary creates the file beside the primary (a creation costs more than a
	 * round trip), with the mode the primary's should get; if the set-group-ID rule
	 * changes it, a CHMOD follows.  With --xattr a parent's default ACL decides the
	 * mode: the creation goes after, as the other ones.  The kernel holds the parent
	 * locked, so nothing else creates this name meanwhile. */
	struct rfs_op op = { .code = RFS_OP_CREATE, .path = stream_path(path),
			     .mode = mode & 07777 & ~fuse_get_context()->umask };
	struct rfs_repl_pending *early = fs->xattr || !op_is_replicated(fs, &op) ? NULL : rfs_repl_send(fs->repl, &op, RFS_WAIT_APPLIED);
	int fd = openat(fs->rootfd, sp, (fi->flags & ~REAL_OPEN_DROP) | O_CREAT | O_CLOEXEC, mode);
	struct stat st;
	int r = fd < 0 ? -errno : 0;

	creator_end(&c);
	if (r)
		return undo_early(fs, early, op.path, r);
	r = owner_to_caller(fs, sp, fd, &c, &st);
	if (r == 0)
		r = attach_file(fi, fd, st.st_mode);
	if (r == 0 && (r = rfs_open_mode(fd, &st, false, &file_of(fi)->mode)))
		free(file_of(fi));
	if (r) {
		close(fd);
		return undo_early(fs, early, op.path, undo_create(fs, sp, false, r));
	}
	cache_mode(fs, fi, &st);
	rfs_node_open(file_of(fi));
	/* Its close waits for the secondary and gives it the primary's times, even unwritten. */
	atomic_store(&file_of(fi)->written, true);
	return replicate_created(fs, &op, &st, early);
}

static int fs_open(const char *path, struct fuse_file_info *fi)
{
	struct rfs_fs *fs = ctx_fs();
	LIVE(fs, fi->flags & O_TRUNC ? path : NULL);
	INTENT(fs, fi->flags & O_TRUNC ? RFS_OP_TRUNCATE : 0, path, NULL, 0, 0, 0);
	int fd = openat(fs->rootfd, fuse_at_path(path), (fi->flags & ~REAL_OPEN_DROP) | O_CLOEXEC);
	struct stat st = { 0 };
	int r = 0;

	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0)
		r = -errno;
	if (r == 0 && (fi->flags & O_TRUNC) && is_sxid(st.st_mode) && unprivileged_caller()) {
		r = kill_sxid(fs, path, fd);
		st.st_mode &= ~(mode_t)(S_ISUID | S_ISGID);
	}
	if (r == 0)
		r = attach_file(fi, fd, st.st_mode);
	if (r) {
		close(fd);
		return r;
	}
	r = rfs_open_mode(fd, &st, (fi->flags & (O_ACCMODE | O_TRUNC)) == O_RDONLY, &file_of(fi)->mode);
	if (r) {
		free(file_of(fi));
		close(fd);
		return r;
	}
	cache_mode(fs, fi, &st);
	rfs_node_open(file_of(fi));
	/* The kernel leaves O_TRUNC to us (atomic_o_trunc): the truncation travels as one. */
	if (fi->flags & O_TRUNC) {
		struct rfs_op op = { .code = RFS_OP_TRUNCATE, .path = stream_path(path), .off = 0 };

		atomic_store(&file_of(fi)->written, true);
		return replicate_applied(fs, &op);
	}
	return 0;
}

/* Answered by splicing from the real file when the kernel allows it. */
static int fs_read_buf(const char *path, struct fuse_bufvec **bufp, size_t size, off_t off,
		       struct fuse_file_info *fi)
{
	struct fuse_bufvec *b = malloc(sizeof *b);

	(void)path;
	if (b == NULL)
		return -ENOMEM;
	*b = (struct fuse_bufvec)FUSE_BUFVEC_INIT(size);
	b->buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK;
	b->buf[0].fd = file_of(fi)->fd;
	b->buf[0].pos = off;
	*bufp = b;
	return 0;
}

static int fs_write(const char *path, const char *buf, size_t size, off_t off, struct fuse_file_info *fi)
{
	struct rfs_fs *fs = ctx_fs();
	TARGET(fs, path, fi, true);
	INTENT(fs, RFS_OP_WRITE, path, NULL, off, size, 0);
	struct rfs_file *f = file_of(fi);
	ssize_t n;

	/* Written-back mmap pages (writepage) carry no caller: their writer was checked when
	 * it dirtied them. */
	if (!fi->writepage && atomic_load_explicit(&f->sxid, memory_order_relaxed) && unprivileged_caller() &&
	    atomic_exchange(&f->sxid, false)) {
		int r = kill_sxid(fs, path, f->fd);
		if (r)
			return r;
	}
	n = pwrite(f->fd, buf, size, off);
	if (n < 0) {
		int err = -errno;

		/* A write refused (a full disk) may have touched the file's times all the same:
		 * its close gives the secondary the primary's. */
		atomic_store(&f->written, true);
		return err;
	}
	/* No path: the file was unlinked while open, and is gone on the secondary too. */
	if (path && n > 0) {
		struct rfs_op op = { .code = RFS_OP_WRITE, .path = stream_path(path), .off = off,
				     .len = (uint64_t)n, .data = buf, .data_len = (size_t)n };
		enum rfs_wait wait = data_wait(fs, f);

		atomic_store(&f->written, true);
		atomic_fetch_add_explicit(&fs->n.writes, 1, memory_order_relaxed);
		atomic_fetch_add_explicit(&fs->n.write_bytes, (uint64_t)n, memory_order_relaxed);
		if (wait == RFS_WAIT_DURABLE)
			atomic_fetch_add_explicit(&fs->n.syncs, 1, memory_order_relaxed);
		submit_unless_excluded(fs, &op, wait);
	}
	return (int)n;
}

static int fs_statfs(const char *path, struct statvfs *st)
{
	(void)path;
	return fstatvfs(ctx_fs()->rootfd, st) < 0 ? -errno : 0;
}

/* close(2): what the application wrote through this descriptor is applied on the
 * secondary before close returns (the kernel waits for FLUSH, not for RELEASE): the
 * file's times go last on its path, so their ack covers every write queued before.
 * Applied, not durable: a mirror covers the loss of one node, and the secondary's page
 * cache survives the primary's.  A file opened O_SYNC / O_DSYNC, and one whose times
 * cannot be read, are made durable there, as an fsync would. */
static void close_to_secondary(struct rfs_fs *fs, const char *path, struct rfs_file *f)
{
	struct stat st;

	if (f->sync || fstat(f->fd, &st) < 0) {
		sync_wait(fs, path, sync_to_secondary(fs, path, f->fd, true));
		return;
	}
	atomic_fetch_add_explicit(&fs->n.closes, 1, memory_order_relaxed);
	replicate_times(fs, stream_path(path), &st, RFS_WAIT_APPLIED);
}

static int fs_flush(const char *path, struct fuse_file_info *fi)
{
	struct rfs_file *f = file_of(fi);
	TARGET(ctx_fs(), path, fi, atomic_load(&f->written));

	if (path && atomic_exchange(&f->written, false))
		close_to_secondary(ctx_fs(), path, f);
	return 0;
}

/* The last reference went away.  Pages of a shared mapping may have been written back
 * after the last close: they reach the secondary here, as at a close. */
static int fs_release(const char *path, struct fuse_file_info *fi)
{
	struct rfs_file *f = file_of(fi);
	TARGET(ctx_fs(), path, fi, atomic_load(&f->written));

	if (path && atomic_exchange(&f->written, false))
		close_to_secondary(ctx_fs(), path, f);
	rfs_open_release(f->mode);
	rfs_node_close(f);
	file_put(f);
	return 0;
}

/* fd: the open file or directory; times_fd: the file whose times travel along, or -1.
 * The secondary's sync is sent first and runs while the primary's own does: fsync(2)
 * costs the longer of the two, which is usually the remote one, not their sum. */
static int sync_both(struct rfs_fs *fs, const char *path, int fd, int times_fd, bool datasync)
{
	struct rfs_repl_pending *remote = path ? sync_to_secondary(fs, path, times_fd, datasync) : NULL;
	int r = (datasync ? fdatasync(fd) : fsync(fd)) < 0 ? -errno : 0;

	sync_wait(fs, path, remote);
	return r;
}

static int fs_fsync(const char *path, int datasync, struct fuse_file_info *fi)
{
	struct rfs_file *f = file_of(fi);
	TARGET(ctx_fs(), path, fi, true);

	if (path)
		atomic_store(&f->written, false);
	return sync_both(ctx_fs(), path, f->fd, f->fd, datasync);
}

static int fs_opendir(const char *path, struct fuse_file_info *fi)
{
	struct rfs_dir *d = calloc(1, sizeof *d);
	int fd, r;

	if (d == NULL)
		return -ENOMEM;
	fd = openat(ctx_fs()->rootfd, fuse_at_path(path), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0 || (d->dp = fdopendir(fd)) == NULL) {
		r = -errno;
		if (fd >= 0)
			close(fd);
		free(d);
		return r;
	}
	fi->fh = (uintptr_t)d;
	return 0;
}

static int fs_readdir(const char *path, void *buf, fuse_fill_dir_t fill, off_t offset,
		      struct fuse_file_info *fi, enum fuse_readdir_flags flags)
{
	struct rfs_dir *d = dir_of(fi);

	(void)path;
	if (offset != d->offset) {
		seekdir(d->dp, offset);
		d->entry = NULL;
		d->offset = offset;
	}
	for (;;) {
		if (d->entry == NULL) {
			errno = 0;
			d->entry = readdir(d->dp);
			if (d->entry == NULL)
				return errno ? -errno : 0;
		}
		const char *name = d->entry->d_name;
		struct stat st = { .st_ino = d->entry->d_ino, .st_mode = DTTOIF(d->entry->d_type) };
		enum fuse_fill_dir_flags plus = 0;
		/* READDIRPLUS: attributes with the names save `ls -l` a LOOKUP per entry. */
		if ((flags & FUSE_READDIR_PLUS) && strcmp(name, ".") != 0 && strcmp(name, "..") != 0 &&
		    fstatat(dirfd(d->dp), name, &st, AT_SYMLINK_NOFOLLOW) == 0)
			plus = FUSE_FILL_DIR_PLUS;
		off_t next = telldir(d->dp);
		if (fill(buf, name, &st, next, plus))
			return 0;
		d->entry = NULL;
		d->offset = next;
	}
}

static int fs_releasedir(const char *path, struct fuse_file_info *fi)
{
	struct rfs_dir *d = dir_of(fi);

	(void)path;
	closedir(d->dp);
	free(d);
	return 0;
}

/* fsync on a directory makes the entries created in it durable: on the secondary too. */
static int fs_fsyncdir(const char *path, int datasync, struct fuse_file_info *fi)
{
	return sync_both(ctx_fs(), path, dirfd(dir_of(fi)->dp), -1, datasync);
}

/* Extended attributes (and so POSIX ACLs) exist on the mount only when they are
 * replicated (--xattr, the module's acl="on"): served but not replicated, they would
 * silently differ after a failover.  Otherwise ENOSYS, which the kernel remembers and
 * turns into EOPNOTSUPP without asking again, as on a file system without xattrs. */
static int xattr_target(struct rfs_fs *fs, const char *path, char *real, size_t size)
{
	return fs->xattr ? real_path(fs, path, real, size) : -ENOSYS;
}

static int fs_setxattr(const char *path, const char *name, const char *value, size_t size, int flags)
{
	struct rfs_fs *fs = ctx_fs();
	struct fuse_file_info *fi = NULL;
	TARGET(fs, path, fi, true);
	INTENT(fs, RFS_OP_SETXATTR, path, NULL, 0, 0, 0);
	char real[PATH_MAX + 32];
	int r;

	r = xattr_target(fs, path, real, sizeof real);
	if (r)
		return r;
	if (lsetxattr(real, name, value, size, flags) < 0)
		return -errno;
	struct rfs_op op = { .code = RFS_OP_SETXATTR, .path = stream_path(path), .name = name,
			     .data = value, .data_len = size, .flags = (uint32_t)flags };
	return replicate_applied(fs, &op);
}

static int fs_getxattr(const char *path, const char *name, char *value, size_t size)
{
	struct rfs_fs *fs = ctx_fs();
	char real[PATH_MAX + 32];
	ssize_t n;
	int r;

	atomic_fetch_add_explicit(&fs->n.getxattrs, 1, memory_order_relaxed);
	r = xattr_target(fs, path, real, sizeof real);
	if (r)
		return r;
	n = lgetxattr(real, name, value, size);
	return n < 0 ? -errno : (int)n;
}

static int fs_listxattr(const char *path, char *list, size_t size)
{
	struct rfs_fs *fs = ctx_fs();
	char real[PATH_MAX + 32];
	ssize_t n;
	int r;

	r = xattr_target(fs, path, real, sizeof real);
	if (r)
		return r;
	n = llistxattr(real, list, size);
	return n < 0 ? -errno : (int)n;
}

static int fs_removexattr(const char *path, const char *name)
{
	struct rfs_fs *fs = ctx_fs();
	struct fuse_file_info *fi = NULL;
	TARGET(fs, path, fi, true);
	INTENT(fs, RFS_OP_REMOVEXATTR, path, NULL, 0, 0, 0);
	char real[PATH_MAX + 32];
	int r;

	r = xattr_target(fs, path, real, sizeof real);
	if (r)
		return r;
	if (lremovexattr(real, name) < 0)
		return -errno;
	struct rfs_op op = { .code = RFS_OP_REMOVEXATTR, .path = stream_path(path), .name = name };
	return replicate_applied(fs, &op);
}

/* Preallocation, hole punching, zeroing: data operations, waited on as writes are. */
static int fs_fallocate(const char *path, int mode, off_t off, off_t len, struct fuse_file_info *fi)
{
	struct rfs_fs *fs = ctx_fs();
	TARGET(fs, path, fi, true);
	INTENT(fs, RFS_OP_FALLOCATE, path, NULL, off, (uint64_t)len, (uint32_t)mode);
	struct rfs_file *f = file_of(fi);

	if (fallocate(f->fd, mode, off, len) < 0)
		return -errno;
	if (path) {
		struct rfs_op op = { .code = RFS_OP_FALLOCATE, .path = stream_path(path), .flags = (uint32_t)mode,
				     .off = off, .len = (uint64_t)len };
		atomic_store(&f->written, true);
		submit_unless_excluded(fs, &op, data_wait(fs, f));
	}
	return 0;
}

/* SEEK_DATA / SEEK_HOLE (the kernel answers the other whences itself). */
static off_t fs_lseek(const char *path, off_t off, int whence, struct fuse_file_info *fi)
{
	off_t r = lseek(file_of(fi)->fd, off, whence);

	(void)path;
	return r < 0 ? -errno : r;
}

static void *fs_init(struct fuse_conn_info *conn, struct fuse_config *cfg)
{
	struct rfs_fs *fs = ctx_fs();

	/* Write data must arrive in memory (it goes to the file and to the stream); reads
	 * may leave by splice.  No writeback cache: see the top of this file. */
	conn->want &= ~(unsigned)(FUSE_CAP_SPLICE_READ | FUSE_CAP_WRITEBACK_CACHE);
	conn->want |= conn->capable & FUSE_CAP_SPLICE_WRITE;
	/* The caller's umask is applied by the real file system (creator_begin), which lets a
	 * parent's default ACL replace it, as on a local file system. */
	conn->want |= conn->capable & FUSE_CAP_DONT_MASK;
	if (fs->xattr)
		conn->want |= conn->capable & FUSE_CAP_POSIX_ACL;
	/* On the primary every change passes through the mount, so the kernel's page cache
	 * of a file is never stale.  libfuse's default (auto_inval_data) would drop a file's
	 * whole cache whenever a GETATTR brings an mtime other than the kernel's own guess,
	 * that is after nearly every write: a database then reads back through requests what
	 * it just wrote.  Explicit: nor when the size differs. */
	if (fs->repl) {
		conn->want &= ~(unsigned)FUSE_CAP_AUTO_INVAL_DATA;
		conn->want |= conn->capable & FUSE_CAP_EXPLICIT_INVAL_DATA;
	}
	conn->max_write = MAX_WRITE;

	cfg->use_ino = 1;
	cfg->hard_remove = 1; /* no .fuse_hidden files, which would be replicated */
	cfg->nullpath_ok = 0; /* every operation needs its path, for the stream */
	if (fs->repl) {
		/* Pages are kept between opens by cache_mode(), file by file. */
		cfg->entry_timeout = cfg->attr_timeout = cfg->negative_timeout = PRIMARY_CACHE_S;
	} else {
		cfg->auto_cache = 1;
		cfg->entry_timeout = cfg->attr_timeout = SECONDARY_CACHE_S;
		cfg->negative_timeout = 0;
	}
	return fs;
}

/* copy_file_range, ioctl, locks are left out on purpose: the kernel then copies through read and write (replicated as writes) and
 * keeps locks on the mount itself. */
static const struct fuse_operations rfs_ops = {
	.init = fs_init,
	.getattr = fs_getattr,
	.readlink = fs_readlink,
	.mknod = fs_mknod,
	.mkdir = fs_mkdir,
	.unlink = fs_unlink,
	.rmdir = fs_rmdir,
	.symlink = fs_symlink,
	.rename = fs_rename,
	.link = fs_link,
	.chmod = fs_chmod,
	.chown = fs_chown,
	.truncate = fs_truncate,
	.utimens = fs_utimens,
	.create = fs_create,
	.open = fs_open,
	.read_buf = fs_read_buf,
	.write = fs_write,
	.statfs = fs_statfs,
	.flush = fs_flush,
	.release = fs_release,
	.fsync = fs_fsync,
	.opendir = fs_opendir,
	.readdir = fs_readdir,
	.releasedir = fs_releasedir,
	.fsyncdir = fs_fsyncdir,
	.setxattr = fs_setxattr,
	.getxattr = fs_getxattr,
	.listxattr = fs_listxattr,
	.removexattr = fs_removexattr,
	.fallocate = fs_fallocate,
	.lseek = fs_lseek,
};

static void log_libfuse(enum fuse_log_level level, const char *fmt, va_list ap)
{
	char msg[768];
	size_t n;

	if (level > FUSE_LOG_NOTICE)
		return;
	vsnprintf(msg, sizeof msg, fmt, ap);
	n = strlen(msg);
	while (n > 0 && msg[n - 1] == '\n')
		msg[--n] = '\0';
	rfs_log("libfuse: %s", msg);
}

/* The process that unmounts when hakit-rfs dies without doing it (crash, SIGKILL): a
 * dead FUSE server leaves a mount answering every access with ENOTCONN.  It holds only
 * the read end of a pipe whose write end dies with the server, and the mount's root by
 * an O_PATH descriptor: unmounting through that descriptor can only remove this very
 * mount, never the directory beneath nor a mount made later on the same path.  Forked
 * from a threaded process: system calls only from here on. */
static _Noreturn void watchdog(int wake_fd, int mnt_fd, const char *msg, size_t msg_len)
{
	static const int ignored[] = { SIGTERM, SIGINT, SIGHUP, SIGUSR1 };
	struct sigaction ign = { .sa_handler = SIG_IGN };
	char c;

	/* It ends when the server does, not with a signal meant for the server's group. */
	for (size_t i = 0; i < sizeof ignored / sizeof ignored[0]; i++)
		sigaction(ignored[i], &ign, NULL);
	if (dup2(wake_fd, 0) < 0 || dup2(mnt_fd, 1) < 0)
		_exit(1);
	close_range(3, ~0u, 0);
	prctl(PR_SET_NAME, "hakit-rfs-wd");
	while (read(0, &c, 1) < 0 && errno == EINTR)
		;
	if (umount2("/proc/self/fd/1", MNT_DETACH) == 0 && write(2, msg, msg_len) < 0)
		_exit(1);
	_exit(0);
}

static int start_watchdog(struct rfs_fs *fs, const char *dir)
{
	char msg[PATH_MAX + 96];
	int p[2];
	int n = snprintf(msg, sizeof msg, "hakit-rfs: the server died; its mount of %s was removed\n", dir);

	if (pipe2(p, O_CLOEXEC) < 0)
		return -errno;
	fs->watchdog_pid = fork();
	if (fs->watchdog_pid < 0) {
		close(p[0]);
		close(p[1]);
		return -errno;
	}
	if (fs->watchdog_pid == 0)
		watchdog(p[0], fs->mntfd, msg, (size_t)(n < (int)sizeof msg ? n : (int)sizeof msg - 1));
	close(p[0]);
	fs->watchdog_fd = p[1];
	return 0;
}

static void unmount_exact(struct rfs_fs *fs)
{
	char path[64];

	if (fs->mntfd < 0 || atomic_exchange(&fs->unmounted, true))
		return;
	snprintf(path, sizeof path, "/proc/self/fd/%d", fs->mntfd);
	/* Lazy: files still open keep the detached mount until /dev/fuse closes (fuse_destroy). */
	if (umount2(path, MNT_DETACH) < 0 && errno != EINVAL)
		rfs_log("unmount: %s", strerror(errno));
}

static int mount_options(const struct rfs_fs_config *cfg, struct fuse_args *args)
{
	char *opts = NULL, *fsname = NULL;
	int r = -ENOMEM;

	/* default_permissions: the kernel checks permissions (we run as root);
	 * allow_other: every user sees the directory; suid,dev: as on the directory beneath. */
	if (fuse_opt_add_opt(&opts, "default_permissions,allow_other,suid,dev,subtype=hakit-rfs") < 0 ||
	    (cfg->repl == NULL && fuse_opt_add_opt(&opts, "ro") < 0) ||
	    asprintf(&fsname, "fsname=%s", cfg->dir) < 0 || fuse_opt_add_opt_escaped(&opts, fsname) < 0)
		goto out;
	if (fuse_opt_add_arg(args, "hakit-rfs") < 0 || fuse_opt_add_arg(args, "-o") < 0 ||
	    fuse_opt_add_arg(args, opts) < 0)
		goto out;
	r = 0;
out:
	free(opts);
	free(fsname);
	return r;
}

static void locks_init(struct rfs_fs *fs)
{
	pthread_rwlockattr_t ra;

	pthread_rwlockattr_init(&ra);
	pthread_rwlockattr_setkind_np(&ra, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
	pthread_rwlock_init(&fs->ns, &ra);
	pthread_rwlock_init(&fs->links, &ra);
	for (int i = 0; i < STRIPES; i++)
		pthread_rwlock_init(&fs->stripes[i], &ra);
	pthread_rwlockattr_destroy(&ra);
	pthread_mutex_init(&fs->moves_mu, NULL);
}

/* How far the real directory's disk reads ahead (8 MiB on this kind of VM), 0 when it is
 * not a block device's: the mount's 128 KiB would make a cold sequential read through
 * it a fraction of the disk's speed. */
static unsigned disk_readahead_kb(int rootfd)
{
	struct stat st;
	char path[96], value[16] = "";
	unsigned kb = 0;
	FILE *f;

	if (fstat(rootfd, &st) < 0 || major(st.st_dev) == 0)
		return 0;
	/* A partition's bdi is its disk's. */
	snprintf(path, sizeof path, "/sys/dev/block/%u:%u/bdi/read_ahead_kb", major(st.st_dev), minor(st.st_dev));
	f = fopen(path, "re");
	if (f == NULL) {
		snprintf(path, sizeof path, "/sys/dev/block/%u:%u/../bdi/read_ahead_kb", major(st.st_dev),
			 minor(st.st_dev));
		f = fopen(path, "re");
	}
	if (f && fgets(value, sizeof value, f))
		kb = (unsigned)strtoul(value, NULL, 10);
	if (f)
		fclose(f);
	return kb;
}

static int install_io(struct rfs_fs *fs, const struct rfs_fs_config *cfg, struct fuse_session *se)
{
	struct statx mnt;
	unsigned kb = disk_readahead_kb(fs->rootfd);

	/* The mount's device number is its super block's: no request (DONT_SYNC). */
	if (kb && statx(fs->mntfd, "", AT_EMPTY_PATH | AT_STATX_DONT_SYNC, 0, &mnt) < 0)
		kb = 0;
	return rfs_fuse_io_install(se, cfg->passthrough && cfg->repl == NULL, kb,
				   kb ? makedev(mnt.stx_dev_major, mnt.stx_dev_minor) : 0);
}

int rfs_fs_mount(const struct rfs_fs_config *cfg, struct rfs_fs **out)
{
	struct fuse_args args = FUSE_ARGS_INIT(0, NULL);
	struct rfs_fs *fs = calloc(1, sizeof *fs);
	struct fuse_session *se;
	int r;

	if (fs == NULL)
		return -ENOMEM;
	fs->repl = cfg->repl;
	fs->dirty = cfg->dirty;
	fs->rootfd = cfg->rootfd;
	fs->mntfd = fs->watchdog_fd = -1;
	fs->strict = cfg->strict;
	fs->xattr = cfg->xattr;
	fs->exclude = cfg->exclude;
	locks_init(fs);
	fuse_set_log_func(log_libfuse);
	r = mount_options(cfg, &args);
	if (r == 0) {
		fs->fuse = fuse_new(&args, &rfs_ops, sizeof rfs_ops, fs);
		if (fs->fuse == NULL)
			r = -EINVAL;
	}
	fuse_opt_free_args(&args);
	if (r) {
		rfs_log("cannot set up FUSE: %s", strerror(-r));
		free(fs);
		return r;
	}
	if (fuse_mount(fs->fuse, cfg->mountpoint ? cfg->mountpoint : cfg->dir) != 0) {
		rfs_log("cannot mount over %s (libfuse said why above)", cfg->dir);
		fuse_destroy(fs->fuse);
		free(fs);
		return -EIO;
	}
	se = fuse_get_session(fs->fuse);
	/* The mount's root, taken before the loop runs: an O_PATH open sends no request. */
	fs->mntfd = open(cfg->dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
	r = fs->mntfd < 0 ? -errno : install_io(fs, cfg, se);
	if (r == 0 && !cfg->keep_dead_mount)
		r = start_watchdog(fs, cfg->dir);
	if (r) {
		rfs_log("cannot set up the mount of %s: %s", cfg->dir, strerror(-r));
		if (fs->mntfd >= 0)
			rfs_fs_free(fs);
		else {
			fuse_unmount(fs->fuse);
			fuse_destroy(fs->fuse);
			free(fs);
		}
		return r;
	}
	*out = fs;
	return 0;
}

/* Interrupts the loop's sem_wait (installed without SA_RESTART). */
static void wake_loop(int sig)
{
	(void)sig;
}

int rfs_fs_run(struct rfs_fs *fs)
{
	struct sigaction sa = { .sa_handler = wake_loop };
	struct fuse_loop_config *lc;
	int r = 0;

	sigemptyset(&sa.sa_mask);
	sigaction(SIGUSR1, &sa, NULL);
	fs->loop_thread = pthread_self();
	atomic_store(&fs->running, true);
	/* With rfs_fs_stop's order (stopping, then running), one of the two sees the other. */
	if (!atomic_load(&fs->stopping)) {
		lc = fuse_loop_cfg_create();
		fuse_loop_cfg_set_max_threads(lc, MAX_THREADS);
		fuse_loop_cfg_set_idle_threads(lc, IDLE_THREADS);
		r = fuse_loop_mt(fs->fuse, lc);
		fuse_loop_cfg_destroy(lc);
	}
	atomic_store(&fs->running, false);
	if (atomic_load(&fs->stopping))
		return 0;
	return r < 0 ? r : -ENOTCONN;
}

void rfs_fs_stop(struct rfs_fs *fs)
{
	static const struct timespec kick = { .tv_nsec = 5 * 1000 * 1000 };

	atomic_store(&fs->stopping, true);
	fuse_exit(fs->fuse);
	/* The loop notices the exit only when woken; a signal sent just before it sleeps is
	 * lost, hence the repeat. */
	while (atomic_load(&fs->running)) {
		pthread_kill(fs->loop_thread, SIGUSR1);
		nanosleep(&kick, NULL);
	}
	unmount_exact(fs);
}

void rfs_fs_counters(struct rfs_fs *fs, struct rfs_fs_counters *out)
{
	out->writes = atomic_load(&fs->n.writes);
	out->write_bytes = atomic_load(&fs->n.write_bytes);
	out->namespace_ops = atomic_load(&fs->n.namespace_ops);
	out->syncs = atomic_load(&fs->n.syncs);
	out->closes = atomic_load(&fs->n.closes);
	out->getxattrs = atomic_load(&fs->n.getxattrs);
	out->diverged = atomic_load(&fs->n.diverged);
	out->passthrough_opens = rfs_passthrough_opens();
}

/* Whether this thread's step holds `links` (steps do not nest). */
static __thread bool step_links;

void rfs_fs_step_begin(struct rfs_fs *fs, const char *spath, bool ns_held)
{
	struct stat st;

	if (!ns_held)
		pthread_rwlock_rdlock(&fs->ns);
	pthread_rwlock_wrlock(stripe_of(fs, spath));
	step_links = fstatat(fs->rootfd, *spath ? spath : ".", &st, AT_SYMLINK_NOFOLLOW) == 0 &&
		     !S_ISDIR(st.st_mode) && st.st_nlink > 1;
	if (step_links)
		pthread_rwlock_wrlock(&fs->links);
}

void rfs_fs_step_end(struct rfs_fs *fs, const char *spath, bool ns_held)
{
	if (step_links)
		pthread_rwlock_unlock(&fs->links);
	step_links = false;
	pthread_rwlock_unlock(stripe_of(fs, spath));
	if (!ns_held)
		pthread_rwlock_unlock(&fs->ns);
}

void rfs_fs_hold_renames(struct rfs_fs *fs, bool hold)
{
	if (hold)
		pthread_rwlock_rdlock(&fs->ns);
	else
		pthread_rwlock_unlock(&fs->ns);
}

static void moves_forget(struct rfs_fs *fs)
{
	for (size_t i = 0; i < fs->nmoves; i++)
		free(fs->moves[i]);
	free(fs->moves);
	fs->moves = NULL;
	fs->nmoves = fs->moves_cap = 0;
	fs->moves_overflow = false;
}

void rfs_fs_track_moves(struct rfs_fs *fs, bool on)
{
	pthread_mutex_lock(&fs->moves_mu);
	fs->tracking = on;
	moves_forget(fs);
	pthread_mutex_unlock(&fs->moves_mu);
}

char **rfs_fs_take_moves(struct rfs_fs *fs, size_t *n, bool *overflow)
{
	char **moves;

	pthread_mutex_lock(&fs->moves_mu);
	moves = fs->moves;
	*n = fs->nmoves;
	*overflow = fs->moves_overflow;
	fs->moves = NULL;
	fs->nmoves = fs->moves_cap = 0;
	fs->moves_overflow = false;
	pthread_mutex_unlock(&fs->moves_mu);
	return moves;
}

void rfs_fs_free(struct rfs_fs *fs)
{
	unmount_exact(fs);
	fuse_destroy(fs->fuse);
	close(fs->mntfd);
	if (fs->watchdog_fd >= 0) {
		/* It wakes, finds the mount gone, and ends: reap it rather than leave a zombie. */
		close(fs->watchdog_fd);
		waitpid(fs->watchdog_pid, NULL, 0);
	}
	moves_forget(fs);
	pthread_rwlock_destroy(&fs->ns);
	pthread_rwlock_destroy(&fs->links);
	for (int i = 0; i < STRIPES; i++)
		pthread_rwlock_destroy(&fs->stripes[i]);
	pthread_mutex_destroy(&fs->moves_mu);
	free(fs);
}
