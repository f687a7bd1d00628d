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
#include <dirent.h>
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

#include "apply.h"
#include "io.h"
#include "query.h"

/* Header-only: the checksums need no library at run time. */
#define XXH_INLINE_ALL
#include <xxhash.h>

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
static int open_beneath(struct rfs_applier *a, const char *path, int flags)
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
	fd = open_beneath(a, pt->dir, O_RDONLY | O_DIRECTORY);
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

/* The file at path opened with flags (O_WRONLY, O_RDONLY): regular files only. */
static int open_regular(struct rfs_applier *a, const char *path, int flags)
{
	struct stat st;
	int pfd = open_beneath(a, path, O_PATH), rc;

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
	else if ((rc = reopen(pfd, flags | (flags == O_RDONLY ? O_NOATIME : 0))) == -EPERM)
		rc = reopen(pfd, flags); /* O_NOATIME: reading to compare is no access; owner or root only */
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
	fd = open_regular(a, path, O_WRONLY);
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
	int pfd = open_beneath(a, path, O_PATH), fd, rc;

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
		fd = open_beneath(a, path, O_RDONLY | O_DIRECTORY);
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

/* Data ops (write, truncate, fallocate): on the cached write fd, fdatasynced when
 * durable. */
static int on_regular(struct rfs_applier *a, const struct rfs_op *op, int durable)
{
	struct wfd *w;
	int fd = wfd_get(a, op->path, &w), rc;

	if (fd < 0)
		return fd;
	switch (op->code) {
	case RFS_OP_WRITE:
		rc = rfs_pwrite_all(fd, op->data, op->data_len, op->off);
		break;
	case RFS_OP_TRUNCATE:
		rc = ftruncate(fd, op->off) ? -errno : 0;
		break;
	default: /* RFS_OP_FALLOCATE */
		rc = fallocate(fd, (int)op->flags, op->off, (off_t)op->len) ? -errno : 0;
		break;
	}
	if (!rc && durable)
		rc = sync_fd(fd, 1);
	wfd_put(a, w, fd);
	return rc;
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

/* Ops that add or remove one entry of a directory (create, mkdir, mknod, symlink,
 * unlink, rmdir): done through the parent's fd, made durable by fsyncing that
 * directory. */
static int on_entry(struct rfs_applier *a, const struct rfs_op *op, int durable)
{
	struct parent pt;
	mode_t perm = op->mode & 07777;
	struct wfd *w;
	int rc, fd;

	if (op->code == RFS_OP_UNLINK || op->code == RFS_OP_RMDIR)
		wfd_invalidate(a, op->path, op->code == RFS_OP_RMDIR);
	if (op->code == RFS_OP_MKNOD && !S_ISFIFO(op->mode) && !S_ISSOCK(op->mode) && !S_ISCHR(op->mode) &&
	    !S_ISBLK(op->mode))
		return -EINVAL;
	rc = parent_open(a, op->path, &pt);
	if (rc)
		return rc;
	switch (op->code) {
	case RFS_OP_CREATE:
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
	case RFS_OP_MKDIR:
		rc = mkdirat(pt.fd, pt.base, perm) ? -errno : 0;
		break;
	case RFS_OP_MKNOD:
		rc = mknodat(pt.fd, pt.base, (op->mode & S_IFMT) | perm, (dev_t)op->rdev) ? -errno : 0;
		break;
	case RFS_OP_SYMLINK:
		rc = symlinkat(op->path2, pt.fd, pt.base) ? -errno : 0;
		break;
	case RFS_OP_UNLINK:
		rc = unlinkat(pt.fd, pt.base, 0) ? -errno : 0;
		break;
	default: /* RFS_OP_RMDIR */
		rc = unlinkat(pt.fd, pt.base, AT_REMOVEDIR) ? -errno : 0;
		break;
	}
	if (!rc && durable)
		rc = sync_fd(pt.fd, 0);
	parent_close(a, &pt);
	return rc;
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

/* A hard link.  With RFS_LINK_REPLACE (the full sync) path2 may exist: left alone when
 * it is path's inode already, replaced otherwise (a directory there is purged first by
 * the sync, and fails here). */
static int do_link(struct rfs_applier *a, const struct rfs_op *op, int durable)
{
	struct parent from, to;
	struct stat x, y;
	int rc = check_path(op->path2, 0);

	if (rc)
		return rc;
	wfd_invalidate(a, op->path2, 0);
	rc = parent_open(a, op->path, &from);
	if (rc)
		return rc;
	rc = parent_open(a, op->path2, &to);
	if (!rc) {
		if (op->flags & RFS_LINK_REPLACE && !fstatat(to.fd, to.base, &y, AT_SYMLINK_NOFOLLOW)) {
			if (fstatat(from.fd, from.base, &x, AT_SYMLINK_NOFOLLOW))
				rc = -errno;
			else if (x.st_dev != y.st_dev || x.st_ino != y.st_ino)
				rc = unlinkat(to.fd, to.base, 0) ? -errno : 1;
			else
				rc = 0; /* linked already */
		} else {
			rc = 1;
		}
		if (rc == 1)
			rc = linkat(from.fd, from.base, to.fd, to.base, 0) ? -errno : 0;
		if (!rc && durable)
			rc = sync_fd(to.fd, 0);
		parent_close(a, &to);
	}
	parent_close(a, &from);
	return rc;
}

/* Attribute ops (chown, utimens, setxattr, removexattr): on the entry itself, never
 * through a symlink it is. */
static int on_attr(struct rfs_applier *a, const struct rfs_op *op, int durable)
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
	switch (op->code) {
	case RFS_OP_CHOWN:
		rc = fchownat(pt.fd, pt.base, op->uid, op->gid, AT_SYMLINK_NOFOLLOW) ? -errno : 0;
		break;
	case RFS_OP_UTIMENS:
		rc = utimensat(pt.fd, pt.base, ts, AT_SYMLINK_NOFOLLOW) ? -errno : 0;
		break;
	default: /* RFS_OP_SETXATTR, RFS_OP_REMOVEXATTR */
		/* No *at() form for xattrs: the l-variant on the parent's /proc path acts on the
		 * entry itself, resolved under the parent fd we already hold. */
		rc = proc_path(p, sizeof p, pt.fd, pt.base);
		if (rc)
			break;
		if (op->code == RFS_OP_SETXATTR)
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

/* chmod follows symlinks and has no no-follow form before fchmodat2: act on an O_PATH
 * fd of the entry through /proc (a symlink's mode cannot be changed anyway). */
static int do_chmod(struct rfs_applier *a, const struct rfs_op *op, int durable)
{
	struct stat st;
	char p[64];
	int pfd = open_beneath(a, op->path, O_PATH), rc;

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

/* Everything under the directory dfd (closed here); 0 or the first error. */
static int remove_below(int dfd)
{
	DIR *d = fdopendir(dfd);
	struct dirent *e;
	int rc = 0;

	if (!d) {
		close(dfd);
		return -errno;
	}
	while ((e = readdir(d))) {
		int sub, r;

		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		r = unlinkat(dirfd(d), e->d_name, 0) ? -errno : 0;
		if (r == -EISDIR) {
			sub = openat(dirfd(d), e->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			r = sub < 0 ? -errno : remove_below(sub);
			if (!r)
				r = unlinkat(dirfd(d), e->d_name, AT_REMOVEDIR) ? -errno : 0;
		}
		if (r && r != -ENOENT && !rc)
			rc = r;
	}
	closedir(d);
	return rc;
}

/* Whatever is at path goes, a directory with everything in it; nothing there is fine. */
static int do_purge(struct rfs_applier *a, const struct rfs_op *op, int durable)
{
	struct parent pt;
	int rc, sub;

	wfd_invalidate(a, op->path, 1);
	rc = parent_open(a, op->path, &pt);
	if (rc)
		return rc == -ENOENT ? 0 : rc;
	rc = unlinkat(pt.fd, pt.base, 0) ? -errno : 0;
	if (rc == -EISDIR) {
		sub = openat(pt.fd, pt.base, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		rc = sub < 0 ? -errno : remove_below(sub);
		if (!rc)
			rc = unlinkat(pt.fd, pt.base, AT_REMOVEDIR) ? -errno : 0;
	}
	if (rc == -ENOENT)
		rc = 0;
	if (!rc && durable)
		rc = sync_fd(pt.fd, 0);
	parent_close(a, &pt);
	return rc;
}

static apply_fn *const workers[RFS_OP_MAX] = {
	[RFS_OP_WRITE] = on_regular,
	[RFS_OP_TRUNCATE] = on_regular,
	[RFS_OP_CREATE] = on_entry,
	[RFS_OP_MKDIR] = on_entry,
	[RFS_OP_MKNOD] = on_entry,
	[RFS_OP_SYMLINK] = on_entry,
	[RFS_OP_UNLINK] = on_entry,
	[RFS_OP_RMDIR] = on_entry,
	[RFS_OP_RENAME] = do_rename,
	[RFS_OP_CHMOD] = do_chmod,
	[RFS_OP_CHOWN] = on_attr,
	[RFS_OP_UTIMENS] = on_attr,
	[RFS_OP_SETXATTR] = on_attr,
	[RFS_OP_REMOVEXATTR] = on_attr,
	[RFS_OP_FALLOCATE] = on_regular,
	[RFS_OP_FSYNC] = do_fsync,
	[RFS_OP_SYNCFS] = do_syncfs,
	[RFS_OP_PURGE] = do_purge,
	[RFS_OP_LINK] = do_link,
};

/* ---- queries: the tree as the full sync compares it (query.h) ---- */

struct reply {
	char *buf;
	size_t cap, len;
};

static int cmp_strings(const void *x, const void *y)
{
	return strcmp(*(char *const *)x, *(char *const *)y);
}

/* The XATTRS answer for the entry base under dfd, into out (cap bytes). */
static int xattrs_of(int dfd, const char *base, char *out, size_t cap, size_t *len)
{
	char p[RFS_PATH_MAX + 64], *names = NULL, **sorted = NULL;
	ssize_t n;
	size_t count = 0, pos = sizeof(struct rfs_reply_head);
	int rc = proc_path(p, sizeof p, dfd, base);

	if (rc)
		return rc;
	for (;;) { /* the list may grow between the two calls */
		n = llistxattr(p, NULL, 0);
		if (n < 0 && (errno == ENOTSUP || errno == EOPNOTSUPP))
			n = 0;
		if (n < 0)
			return -errno;
		free(names);
		names = malloc((size_t)n + 1);
		if (!names)
			return -ENOMEM;
		n = n ? llistxattr(p, names, (size_t)n) : 0;
		if (n >= 0 || errno != ERANGE)
			break;
	}
	if (n < 0) {
		rc = -errno;
		goto out;
	}
	for (ssize_t i = 0; i < n; i += (ssize_t)strlen(names + i) + 1)
		count++;
	sorted = calloc(count + 1, sizeof *sorted);
	if (!sorted) {
		rc = -ENOMEM;
		goto out;
	}
	count = 0;
	for (ssize_t i = 0; i < n; i += (ssize_t)strlen(names + i) + 1)
		sorted[count++] = names + i;
	qsort(sorted, count, sizeof *sorted, cmp_strings);
	n = 0; /* now: attributes written */
	for (size_t i = 0; i < count; i++) {
		struct rfs_wire_xattr x = {.name_len = htole16((uint16_t)strlen(sorted[i]))};
		size_t nlen = strlen(sorted[i]);
		char *at = out + pos + sizeof x + nlen;
		ssize_t v = cap > pos + sizeof x + nlen ? lgetxattr(p, sorted[i], at, cap - pos - sizeof x - nlen) : -1;

		if (v < 0 && cap > pos + sizeof x + nlen && errno == ENODATA)
			continue; /* removed meanwhile */
		if (v < 0) {
			rc = cap > pos + sizeof x + nlen && errno != ERANGE ? -errno : -E2BIG;
			goto out;
		}
		x.value_len = htole32((uint32_t)v);
		memcpy(out + pos, &x, sizeof x);
		memcpy(out + pos + sizeof x, sorted[i], nlen);
		pos += sizeof x + nlen + (size_t)v;
		n++;
	}
	rfs_head_put(out, 0, (uint32_t)n, 0);
	*len = pos;
out:
	free(sorted);
	free(names);
	return rc;
}

uint64_t rfs_xattr_digest(const void *answer, size_t len)
{
	return XXH3_64bits(answer, len);
}

/* The entry base under dfd.  target: RFS_PATH_MAX bytes; scratch: RFS_REPLY_MAX bytes,
 * only with RFS_LIST_XATTRS. */
static int entry_of(int dfd, const char *base, unsigned flags, char *target, char *scratch,
		    struct rfs_entry *e)
{
	struct stat st;
	ssize_t n = 0;
	size_t xlen;
	int rc;

	if (fstatat(dfd, base, &st, AT_SYMLINK_NOFOLLOW))
		return -errno;
	if (S_ISLNK(st.st_mode) && (n = readlinkat(dfd, base, target, RFS_PATH_MAX)) < 0)
		return -errno;
	*e = (struct rfs_entry){
		.mode = st.st_mode, .uid = st.st_uid, .gid = st.st_gid, .size = (uint64_t)st.st_size,
		.rdev = st.st_rdev, .mtime_sec = st.st_mtim.tv_sec, .mtime_nsec = (uint32_t)st.st_mtim.tv_nsec,
		.nlink = (uint32_t)st.st_nlink, .ino = st.st_ino, .name = base, .name_len = strlen(base), .target = target, .target_len = (size_t)n,
	};
	if (flags & RFS_LIST_XATTRS) {
		rc = xattrs_of(dfd, base, scratch, RFS_REPLY_MAX, &xlen);
		if (rc)
			return rc;
		e->xattr_digest = rfs_xattr_digest(scratch, xlen);
	}
	return 0;
}

static int q_list(struct rfs_applier *a, const struct rfs_op *op, struct reply *out)
{
	char target[RFS_PATH_MAX], *scratch = NULL;
	struct rfs_entry e;
	struct dirent *de;
	uint32_t count = 0, more = 0;
	long next = 0, pos;
	int rc = 0, dfd = open_beneath(a, op->path, O_RDONLY | O_DIRECTORY);
	DIR *d;

	if (dfd < 0)
		return dfd;
	d = fdopendir(dfd);
	if (!d || (op->flags & RFS_LIST_XATTRS && !(scratch = malloc(RFS_REPLY_MAX)))) {
		rc = d ? -ENOMEM : -errno;
		goto out;
	}
	if (op->off)
		seekdir(d, (long)op->off);
	out->len = sizeof(struct rfs_reply_head);
	for (;;) {
		pos = telldir(d);
		errno = 0;
		de = readdir(d);
		if (!de) {
			rc = -errno;
			break;
		}
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		rc = entry_of(dirfd(d), de->d_name, op->flags, target, scratch, &e);
		if (rc == -ENOENT) { /* removed meanwhile */
			rc = 0;
			continue;
		}
		if (rc)
			break;
		if (out->len + rfs_entry_size(&e) > out->cap) {
			if (!count)
				rc = -E2BIG;
			more = 1;
			next = pos;
			break;
		}
		rfs_entry_put(out->buf + out->len, &e);
		out->len += rfs_entry_size(&e);
		count++;
	}
	rfs_head_put(out->buf, (uint64_t)next, count, more);
out:
	free(scratch);
	if (d)
		closedir(d);
	else
		close(dfd);
	return rc;
}

static int q_stat(struct rfs_applier *a, const struct rfs_op *op, struct reply *out)
{
	char target[RFS_PATH_MAX], *scratch = NULL;
	struct rfs_entry e;
	struct parent pt;
	int rc = parent_open(a, op->path, &pt);

	if (rc)
		return rc;
	if (op->flags & RFS_LIST_XATTRS && !(scratch = malloc(RFS_REPLY_MAX)))
		rc = -ENOMEM;
	if (!rc)
		rc = entry_of(pt.fd, pt.base, op->flags, target, scratch, &e);
	if (!rc && rfs_entry_size(&e) > out->cap)
		rc = -E2BIG;
	if (!rc) {
		rfs_entry_put(out->buf, &e);
		out->len = rfs_entry_size(&e);
	}
	free(scratch);
	parent_close(a, &pt);
	return rc;
}

/* XXH3-128 of the len bytes at off, into out.  A block that SEEK_DATA shows to be all
 * hole is not read: its zeroes are hashed as they are. */
static int block_sum(int fd, off_t off, size_t len, char *buf, unsigned char *out)
{
	off_t data = lseek(fd, off, SEEK_DATA);
	ssize_t got = 0;

	if (data < 0 && errno != ENXIO)
		return -errno;
	/* A file shrunk meanwhile reads short: the rest hashes as zeroes. */
	if (data >= 0 && data < off + (off_t)len && (got = rfs_pread_full(fd, buf, len, off)) < 0)
		return (int)got;
	memset(buf + got, 0, len - (size_t)got);
	XXH128_canonicalFromHash((XXH128_canonical_t *)(void *)out, XXH3_128bits(buf, len));
	return 0;
}

static int q_sums(struct rfs_applier *a, const struct rfs_op *op, struct reply *out)
{
	size_t bs, max;
	uint32_t count = 0;
	struct stat st;
	char *buf;
	int fd, rc = 0;

	/* The shift is the peer's: checked before it is made. */
	if (op->flags < RFS_BLOCK_SHIFT_MIN || op->flags > RFS_BLOCK_SHIFT_MAX || op->off < 0 ||
	    out->cap < sizeof(struct rfs_reply_head))
		return -EINVAL;
	bs = (size_t)1 << op->flags;
	max = (out->cap - sizeof(struct rfs_reply_head)) / RFS_SUM_LEN;
	if (op->off & (off_t)(bs - 1))
		return -EINVAL;
	fd = open_regular(a, op->path, O_RDONLY);
	if (fd < 0)
		return fd;
	buf = malloc(bs);
	if (!buf || fstat(fd, &st)) {
		rc = buf ? -errno : -ENOMEM;
		goto out;
	}
	for (off_t b = op->off; count < max && b < st.st_size && (uint64_t)(b - op->off) < op->len; b += (off_t)bs) {
		size_t len = st.st_size - b < (off_t)bs ? (size_t)(st.st_size - b) : bs;

		rc = block_sum(fd, b, len, buf,
			       (unsigned char *)out->buf + sizeof(struct rfs_reply_head) + count * RFS_SUM_LEN);
		if (rc)
			goto out;
		count++;
	}
	rfs_head_put(out->buf, (uint64_t)st.st_size, count, 0);
	out->len = sizeof(struct rfs_reply_head) + count * RFS_SUM_LEN;
out:
	free(buf);
	close(fd);
	return rc;
}

static int q_xattrs(struct rfs_applier *a, const struct rfs_op *op, struct reply *out)
{
	struct parent pt;
	int rc = parent_open(a, op->path, &pt);

	if (rc)
		return rc;
	rc = xattrs_of(pt.fd, pt.base, out->buf, out->cap, &out->len);
	parent_close(a, &pt);
	return rc;
}

typedef int query_fn(struct rfs_applier *a, const struct rfs_op *op, struct reply *out);

static query_fn *const queries[RFS_OP_MAX] = {
	[RFS_OP_LIST] = q_list,
	[RFS_OP_STAT] = q_stat,
	[RFS_OP_SUMS] = q_sums,
	[RFS_OP_XATTRS] = q_xattrs,
};

int rfs_applier_query(struct rfs_applier *a, const struct rfs_op *op, void *reply, size_t cap, size_t *len)
{
	unsigned shape = rfs_op_shape(op->code);
	struct reply out = {.buf = reply, .cap = cap};
	int rc;

	*len = 0;
	if (!(shape & RFS_SHAPE_QUERY) || !queries[op->code] || cap < sizeof(struct rfs_reply_head))
		return -EINVAL;
	if ((rc = check_path(op->path, shape & RFS_SHAPE_ROOT)))
		return rc;
	rc = queries[op->code](a, op, &out);
	if (!rc)
		*len = out.len;
	return rc;
}

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

int rfs_query(int rootfd, const struct rfs_op *op, void *reply, size_t cap, size_t *len)
{
	struct rfs_applier a;
	int rc = applier_init(&a, rootfd, 0);

	if (rc)
		return rc;
	rc = rfs_applier_query(&a, op, reply, cap, len);
	applier_fini(&a);
	return rc;
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
