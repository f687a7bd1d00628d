/* The secondary's half of replication: perform one operation under the replicated
 * directory's root.  Whatever a peer sends, nothing is touched outside the root:
 *
 * - paths are checked first (relative, no "", ".", ".." components, bounded);
 * - every path is resolved with openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
 *   RESOLVE_NO_MAGICLINKS): the FUSE layer builds paths from its inode tree, so a
 *   genuine path never crosses a symlink, and one planted in the tree fails (ELOOP);
 * - the last component is acted on through its parent's fd with *at() calls that do
 *   not follow it, or through an O_PATH fd of it (never reopened when it is not a
 *   regular file or a directory, so a device node in the tree is never written).
 *
 * Workers return 0 or -errno, the result the secondary acks.  Modes are applied as
 * given, under the process umask: the receiver sets it to 0 (rfs_receiver_serve), as
 * the primary creates with the application's mode already masked.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "core.h"
#include "proto.h"
#include "rfs_repl.h"

#define RESOLVE_FLAGS (RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)

/* One cached write fd.  The stream sends every op on one path through one connection,
 * so an entry is normally used by one thread at a time; refs makes sharing safe anyway. */
struct wfd {
	char *path;       /* NULL: free slot */
	uint64_t hash;
	int fd;
	int refs;         /* threads using fd now */
	int stale;        /* the path no longer names this file: closed at the last put */
	int64_t used_ns;
};

struct rfs_applier {
	int root;         /* the root opened O_RDONLY|O_DIRECTORY: fsync and syncfs need it */
	pthread_mutex_t mu; /* guards cache[]; a leaf lock, never held across a syscall that waits */
	int cache_max;
	struct wfd *cache;
};

/* The parent directory of a path and the last component, to act on with *at(). */
struct parent {
	int fd;           /* a->root, or owned */
	const char *base;
	char dir[RFS_PATH_MAX];
};

static uint64_t path_hash(const char *p)
{
	uint64_t h = 1469598103934665603ull; /* FNV-1a */

	while (*p)
		h = (h ^ (unsigned char)*p++) * 1099511628211ull;
	return h;
}

/* Relative, no empty, "." or ".." component; "" (the root) only where root_ok. */
static int check_path(const char *p, int root_ok)
{
	if (!p)
		return -EINVAL;
	if (!*p)
		return root_ok ? 0 : -EINVAL;
	if (strnlen(p, RFS_PATH_MAX) >= RFS_PATH_MAX)
		return -ENAMETOOLONG;
	for (const char *c = p;;) {
		size_t n = strcspn(c, "/");

		if (n == 0 || (n == 1 && c[0] == '.') || (n == 2 && c[0] == '.' && c[1] == '.'))
			return -EINVAL;
		if (!c[n])
			return 0;
		c += n + 1;
	}
}

/* With O_PATH, a final symlink is opened itself (O_NOFOLLOW); otherwise meeting one
 * anywhere fails with ELOOP. */
static int beneath(struct rfs_applier *a, const char *path, int flags)
{
	struct open_how how = {
		.flags = (uint64_t)(flags | O_CLOEXEC | (flags & O_PATH ? O_NOFOLLOW : 0)),
		.resolve = RESOLVE_FLAGS,
	};
	long fd = syscall(SYS_openat2, a->root, *path ? path : ".", &how, sizeof how);

	return fd < 0 ? -errno : (int)fd;
}

static int parent_open(struct rfs_applier *a, const char *path, struct parent *pt)
{
	const char *slash = strrchr(path, '/');
	size_t n;
	int fd;

	pt->fd = a->root;
	if (!*path) {
		pt->base = ".";
		return 0;
	}
	if (!slash) {
		pt->base = path;
		return 0;
	}
	n = (size_t)(slash - path);
	memcpy(pt->dir, path, n);
	pt->dir[n] = '\0';
	fd = beneath(a, pt->dir, O_RDONLY | O_DIRECTORY);
	if (fd < 0)
		return fd;
	pt->fd = fd;
	pt->base = slash + 1;
	return 0;
}

static void parent_close(struct rfs_applier *a, struct parent *pt)
{
	if (pt->fd != a->root)
		close(pt->fd);
}

/* "/proc/self/fd/N[/base]": how an O_PATH fd or a component under a dir fd is
 * reached by calls that have no *at() form (xattrs) or no no-follow one (chmod). */
static int proc_path(char *buf, size_t size, int fd, const char *base)
{
	int n = base ? snprintf(buf, size, "/proc/self/fd/%d/%s", fd, base)
		     : snprintf(buf, size, "/proc/self/fd/%d", fd);

	return n < 0 || (size_t)n >= size ? -ENAMETOOLONG : 0;
}

static int reopen(int pfd, int flags)
{
	char p[64];
	int fd;

	proc_path(p, sizeof p, pfd, NULL);
	fd = open(p, flags | O_CLOEXEC | O_NOCTTY);
	return fd < 0 ? -errno : fd;
}

/* The file at path opened for writing: regular files only. */
static int open_regular(struct rfs_applier *a, const char *path)
{
	struct stat st;
	int pfd = beneath(a, path, O_PATH), rc;

	if (pfd < 0)
		return pfd;
	if (fstat(pfd, &st))
		rc = -errno;
	else if (S_ISDIR(st.st_mode))
		rc = -EISDIR;
	else if (S_ISLNK(st.st_mode))
		rc = -ELOOP;
	else if (!S_ISREG(st.st_mode))
		rc = -EINVAL;
	else
		rc = reopen(pfd, O_WRONLY);
	close(pfd);
	return rc;
}

/* ---- the write-fd cache ---- */

static void wfd_drop(struct wfd *w)
{
	close(w->fd);
	free(w->path);
	w->path = NULL;
}

/* Takes fd (opened for path) into the cache, or leaves *out NULL: the caller closes it. */
static void wfd_insert(struct rfs_applier *a, const char *path, int fd, struct wfd **out)
{
	struct wfd *slot = NULL;
	char *copy;

	*out = NULL;
	if (!a->cache_max || !(copy = strdup(path)))
		return;
	pthread_mutex_lock(&a->mu);
	for (int i = 0; i < a->cache_max; i++) {
		struct wfd *w = &a->cache[i];

		if (!w->path) {
			slot = w;
			break;
		}
		if (!w->refs && (!slot || w->used_ns < slot->used_ns))
			slot = w;
	}
	if (slot) {
		if (slot->path)
			wfd_drop(slot);
		*slot = (struct wfd){.path = copy, .hash = path_hash(path), .fd = fd, .refs = 1,
				     .used_ns = rfs_now_ns()};
		*out = slot;
	}
	pthread_mutex_unlock(&a->mu);
	if (!slot)
		free(copy);
}

/* An fd to write the regular file at path: *out is its cache entry (NULL: close it). */
static int wfd_get(struct rfs_applier *a, const char *path, struct wfd **out)
{
	uint64_t h = path_hash(path);
	int fd;

	*out = NULL;
	pthread_mutex_lock(&a->mu);
	for (int i = 0; i < a->cache_max; i++) {
		struct wfd *w = &a->cache[i];

		if (w->path && !w->stale && w->hash == h && !strcmp(w->path, path)) {
			w->refs++;
			w->used_ns = rfs_now_ns();
			*out = w;
			pthread_mutex_unlock(&a->mu);
			return w->fd;
		}
	}
	pthread_mutex_unlock(&a->mu);
	fd = open_regular(a, path);
	if (fd >= 0)
		wfd_insert(a, path, fd, out);
	return fd;
}

static void wfd_put(struct rfs_applier *a, struct wfd *w, int fd)
{
	if (!w) {
		close(fd);
		return;
	}
	pthread_mutex_lock(&a->mu);
	if (!--w->refs && w->stale)
		wfd_drop(w);
	pthread_mutex_unlock(&a->mu);
}

/* Entries for path (and, with subtree, everything under it) stop naming their file:
 * called before unlink, rmdir and rename so a later create at that path is not
 * written through the old file's fd. */
static void wfd_invalidate(struct rfs_applier *a, const char *path, int subtree)
{
	size_t n = strlen(path);

	pthread_mutex_lock(&a->mu);
	for (int i = 0; i < a->cache_max; i++) {
		struct wfd *w = &a->cache[i];

		if (!w->path || (strcmp(w->path, path) &&
				 !(subtree && (!n || (!strncmp(w->path, path, n) && w->path[n] == '/')))))
			continue;
		if (w->refs)
			w->stale = 1;
		else
			wfd_drop(w);
	}
	pthread_mutex_unlock(&a->mu);
}

void rfs_applier_expire(struct rfs_applier *a, int64_t idle_ns)
{
	int64_t now = rfs_now_ns();

	pthread_mutex_lock(&a->mu);
	for (int i = 0; i < a->cache_max; i++) {
		struct wfd *w = &a->cache[i];

		if (!w->path || (idle_ns && now - w->used_ns < idle_ns))
			continue;
		if (w->refs)
			w->stale = 1;
		else
			wfd_drop(w);
	}
	pthread_mutex_unlock(&a->mu);
}

/* ---- durability ---- */

static int sync_fd(int fd, int data_only)
{
	return (data_only ? fdatasync(fd) : fsync(fd)) ? -errno : 0;
}

/* fsync the file or directory at path; for anything else its directory entry. */
static int sync_path(struct rfs_applier *a, const char *path, int data_only)
{
	struct stat st;
	struct wfd *w;
	struct parent pt;
	int pfd = beneath(a, path, O_PATH), fd, rc;

	if (pfd < 0)
		return pfd;
	rc = fstat(pfd, &st) ? -errno : 0;
	close(pfd);
	if (rc)
		return rc;
	if (S_ISREG(st.st_mode)) {
		fd = wfd_get(a, path, &w);
		if (fd < 0)
			return fd;
		rc = sync_fd(fd, data_only);
		wfd_put(a, w, fd);
		return rc;
	}
	if (S_ISDIR(st.st_mode)) {
		fd = beneath(a, path, O_RDONLY | O_DIRECTORY);
		if (fd < 0)
			return fd;
		rc = sync_fd(fd, data_only);
		close(fd);
		return rc;
	}
	rc = parent_open(a, path, &pt);
	if (rc)
		return rc;
	rc = sync_fd(pt.fd, 0);
	parent_close(a, &pt);
	return rc;
}

/* ---- workers: one per opcode ---- */

typedef int apply_fn(struct rfs_applier *a, const struct rfs_op *op, int durable);

/* Data ops share this: get the write fd, do it, fdatasync when durable. */
static int on_regular(struct rfs_applier *a, const struct rfs_op *op, int durable,
		      int (*act)(int fd, const struct rfs_op *op))
{
	struct wfd *w;
	int fd = wfd_get(a, op->path, &w), rc;

	if (fd < 0)
		return fd;
	rc = act(fd, op);
	if (!rc && durable)
		rc = sync_fd(fd, 1);
	wfd_put(a, w, fd);
	return rc;
}

static int act_write(int fd, const struct rfs_op *op)
{
	const char *p = op->data;
	size_t left = op->data_len;
	off_t off = op->off;

	while (left) {
		ssize_t n = pwrite(fd, p, left, off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -EIO;
		p += n;
		off += n;
		left -= (size_t)n;
	}
	return 0;
}

static int act_truncate(int fd, const struct rfs_op *op)
{
	return ftruncate(fd, op->off) ? -errno : 0;
}

static int act_fallocate(int fd, const struct rfs_op *op)
{
	return fallocate(fd, (int)op->flags, op->off, (off_t)op->len) ? -errno : 0;
}

static int do_write(struct rfs_applier *a, const struct rfs_op *op, int durable)
{
	return on_regular(a, op, durable, act_write);
}

static int do_truncate(struct rfs_applier *a, const struct rfs_op *op, int durable)
{
	return on_regular(a, op, durable, act_truncate);
}

static int do_fallocate(struct rfs_applier *a, const struct rfs_op *op, int durable)
{
	return on_regular(a, op, durable, act_fallocate);
}

static int do_fsync(struct rfs_applier *a, const struct rfs_op *op, int durable)
{
	(void)durable;
	return sync_path(a, op->path, op->flags & 1);
}

static int do_syncfs(struct rfs_applier *a, const struct rfs_op *op, int durable)
{
	(void)op;
	(void)durable;
	return syncfs(a->root) ? -errno : 0;
}

/* Ops that add or remove one entry of a directory: done through the parent's fd,
 * made durable by fsyncing that directory. */
enum entry_act { MAKE_FILE, MAKE_DIR, MAKE_NODE, MAKE_SYMLINK, REMOVE_FILE, REMOVE_DIR };

static int on_entry(struct rfs_applier *a, const struct rfs_op *op, int durable, enum entry_act act)
{
	struct parent pt;
	mode_t perm = op->mode & 07777;
	struct wfd *w;
	int rc, fd;

	if (act == REMOVE_FILE || act == REMOVE_DIR)
		wfd_invalidate(a, op->path, act == REMOVE_DIR);
	if (act == MAKE_NODE && !S_ISFIFO(op->mode) && !S_ISSOCK(op->mode) && !S_ISCHR(op->mode) &&
	    !S_ISBLK(op->mode))
		return -EINVAL;
	rc = parent_open(a, op->path, &pt);
	if (rc)
		return rc;
	switch (act) {
	case MAKE_FILE:
		/* A new file is usually written next: its fd goes into the cache. */
		fd = openat(pt.fd, pt.base, O_CREAT | O_EXCL | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, perm);
		if (fd < 0) {
			rc = -errno;
			break;
		}
		wfd_invalidate(a, op->path, 0);
		wfd_insert(a, op->path, fd, &w);
		wfd_put(a, w, fd);
		break;
	case MAKE_DIR:
		rc = mkdirat(pt.fd, pt.base, perm) ? -errno : 0;
		break;
	case MAKE_NODE:
		rc = mknodat(pt.fd, pt.base, (op->mode & S_IFMT) | perm, (dev_t)op->rdev) ? -errno : 0;
		break;
	case MAKE_SYMLINK:
		rc = symlinkat(op->path2, pt.fd, pt.base) ? -errno : 0;
		break;
	case REMOVE_FILE:
		rc = unlinkat(pt.fd, pt.base, 0) ? -errno : 0;
		break;
	case REMOVE_DIR:
		rc = unlinkat(pt.fd, pt.base, AT_REMOVEDIR) ? -errno : 0;
		break;
	}
	if (!rc && durable)
		rc = sync_fd(pt.fd, 0);
	parent_close(a, &pt);
	return rc;
}

static int do_create(struct rfs_applier *a, const struct rfs_op *op, int durable)
{
	return on_entry(a, op, durable, MAKE_FILE);
}

static int do_mkdir(struct rfs_applier *a, const struct rfs_op *op, int durable)
{
	return on_entry(a, op, durable, MAKE_DIR);
}

static int do_mknod(struct rfs_applier *a, const struct rfs_op *op, int durable)
{
	return on_entry(a, op, durable, MAKE_NODE);
}

static int do_symlink(struct rfs_applier *a, const struct rfs_op *op, int durable)
{
	return on_entry(a, op, durable, MAKE_SYMLINK);
}

static int do_unlink(struct rfs_applier *a, const struct rfs_op *op, int durable)
{
	return on_entry(a, op, durable, REMOVE_FILE);
}

static int do_rmdir(struct rfs_applier *a, const struct rfs_op *op, int durable)
{
	return on_entry(a, op, durable, REMOVE_DIR);
}

static int do_rename(struct rfs_applier *a, const struct rfs_op *op, int durable)
{
	struct parent from, to;
	int rc = check_path(op->path2, 0);

	if (rc)
		return rc;
	/* Both names stop naming what the cache holds for them (a replaced target, a moved
	 * source, and with directories everything below). */
	wfd_invalidate(a, op->path, 1);
	wfd_invalidate(a, op->path2, 1);
	rc = parent_open(a, op->path, &from);
	if (rc)
		return rc;
	rc = parent_open(a, op->path2, &to);
	if (!rc) {
		rc = renameat2(from.fd, from.base, to.fd, to.base, op->flags) ? -errno : 0;
		if (!rc && durable)
			rc = sync_fd(from.fd, 0) ?: sync_fd(to.fd, 0);
		parent_close(a, &to);
	}
	parent_close(a, &from);
	return rc;
}

/* Attribute ops: on the entry itself, never through a symlink it is. */
enum attr_act { SET_OWNER, SET_TIMES, SET_XATTR, REMOVE_XATTR };

static int on_attr(struct rfs_applier *a, const struct rfs_op *op, int durable, enum attr_act act)
{
	struct timespec ts[2] = {
		{.tv_sec = op->atime_sec, .tv_nsec = op->atime_nsec},
		{.tv_sec = op->mtime_sec, .tv_nsec = op->mtime_nsec},
	};
	struct parent pt;
	char p[RFS_PATH_MAX + 64];
	int rc = parent_open(a, op->path, &pt);

	if (rc)
		return rc;
	switch (act) {
	case SET_OWNER:
		rc = fchownat(pt.fd, pt.base, op->uid, op->gid, AT_SYMLINK_NOFOLLOW) ? -errno : 0;
		break;
	case SET_TIMES:
		rc = utimensat(pt.fd, pt.base, ts, AT_SYMLINK_NOFOLLOW) ? -errno : 0;
		break;
	case SET_XATTR:
	case REMOVE_XATTR:
		/* No *at() form for xattrs: the l-variant on the parent's /proc path acts on the
		 * entry itself, resolved under the parent fd we already hold. */
		rc = proc_path(p, sizeof p, pt.fd, pt.base);
		if (rc)
			break;
		if (act == SET_XATTR)
			rc = lsetxattr(p, op->name, op->data, op->data_len, (int)op->flags) ? -errno : 0;
		else
			rc = lremovexattr(p, op->name) ? -errno : 0;
		break;
	}
	parent_close(a, &pt);
	if (!rc && durable)
		rc = sync_path(a, op->path, 0);
	return rc;
}

static int do_chown(struct rfs_applier *a, const struct rfs_op *op, int durable)
{
	return on_attr(a, op, durable, SET_OWNER);
}

static int do_utimens(struct rfs_applier *a, const struct rfs_op *op, int durable)
{
	return on_attr(a, op, durable, SET_TIMES);
}

static int do_setxattr(struct rfs_applier *a, const struct rfs_op *op, int durable)
{
	return on_attr(a, op, durable, SET_XATTR);
}

static int do_removexattr(struct rfs_applier *a, const struct rfs_op *op, int durable)
{
	return on_attr(a, op, durable, REMOVE_XATTR);
}

/* chmod follows symlinks and has no no-follow form before fchmodat2: act on an O_PATH
 * fd of the entry through /proc (a symlink's mode cannot be changed anyway). */
static int do_chmod(struct rfs_applier *a, const struct rfs_op *op, int durable)
{
	struct stat st;
	char p[64];
	int pfd = beneath(a, op->path, O_PATH), rc;

	if (pfd < 0)
		return pfd;
	if (fstat(pfd, &st))
		rc = -errno;
	else if (S_ISLNK(st.st_mode))
		rc = -EOPNOTSUPP;
	else if (!(rc = proc_path(p, sizeof p, pfd, NULL)))
		rc = fchmodat(AT_FDCWD, p, op->mode & 07777, 0) ? -errno : 0;
	close(pfd);
	if (!rc && durable)
		rc = sync_path(a, op->path, 0);
	return rc;
}

static apply_fn *const workers[RFS_OP_MAX] = {
	[RFS_OP_WRITE] = do_write,
	[RFS_OP_TRUNCATE] = do_truncate,
	[RFS_OP_CREATE] = do_create,
	[RFS_OP_MKDIR] = do_mkdir,
	[RFS_OP_MKNOD] = do_mknod,
	[RFS_OP_SYMLINK] = do_symlink,
	[RFS_OP_UNLINK] = do_unlink,
	[RFS_OP_RMDIR] = do_rmdir,
	[RFS_OP_RENAME] = do_rename,
	[RFS_OP_CHMOD] = do_chmod,
	[RFS_OP_CHOWN] = do_chown,
	[RFS_OP_UTIMENS] = do_utimens,
	[RFS_OP_SETXATTR] = do_setxattr,
	[RFS_OP_REMOVEXATTR] = do_removexattr,
	[RFS_OP_FALLOCATE] = do_fallocate,
	[RFS_OP_FSYNC] = do_fsync,
	[RFS_OP_SYNCFS] = do_syncfs,
};

int rfs_applier_apply(struct rfs_applier *a, const struct rfs_op *op, int durable)
{
	unsigned shape = rfs_op_shape(op->code);
	int rc;

	if (!shape || !workers[op->code])
		return -EINVAL;
	if (shape & RFS_SHAPE_PATH && (rc = check_path(op->path, shape & RFS_SHAPE_ROOT)))
		return rc;
	if ((shape & RFS_SHAPE_PATH2 && !op->path2) || (shape & RFS_SHAPE_NAME && !op->name) ||
	    (op->data_len && !op->data))
		return -EINVAL;
	return workers[op->code](a, op, durable);
}

static int applier_init(struct rfs_applier *a, int rootfd, int cache_max)
{
	*a = (struct rfs_applier){.cache_max = cache_max};
	a->root = openat(rootfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (a->root < 0)
		return -errno;
	if (cache_max && !(a->cache = calloc((size_t)cache_max, sizeof *a->cache))) {
		close(a->root);
		return -ENOMEM;
	}
	pthread_mutex_init(&a->mu, NULL);
	return 0;
}

static void applier_fini(struct rfs_applier *a)
{
	rfs_applier_expire(a, 0);
	pthread_mutex_destroy(&a->mu);
	free(a->cache);
	close(a->root);
}

struct rfs_applier *rfs_applier_new(int rootfd, int cache_max)
{
	struct rfs_applier *a = malloc(sizeof *a);
	int rc;

	if (!a) {
		errno = ENOMEM;
		return NULL;
	}
	rc = applier_init(a, rootfd, cache_max);
	if (rc) {
		free(a);
		errno = -rc;
		return NULL;
	}
	return a;
}

void rfs_applier_free(struct rfs_applier *a)
{
	if (a) {
		applier_fini(a);
		free(a);
	}
}

int rfs_apply(int rootfd, const struct rfs_op *op)
{
	struct rfs_applier a;
	int rc = applier_init(&a, rootfd, 0);

	if (rc)
		return rc;
	rc = rfs_applier_apply(&a, op, 0);
	applier_fini(&a);
	return rc;
}
