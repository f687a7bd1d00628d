/* The stream end to end: an in-process primary (rfs_repl) and receiver over localhost
 * TCP.  Every op is done on the primary's tree (rfs_apply) and submitted; the trees
 * must end identical, results must match, and the wait levels must hold. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/falloc.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "rfs_test.h"

#define OP(...) (&(struct rfs_op){__VA_ARGS__})
#define QUEUED RFS_WAIT_QUEUED
#define APPLIED RFS_WAIT_APPLIED
#define DURABLE RFS_WAIT_DURABLE

static char A[PATH_MAX], B[PATH_MAX];
static int afd;

static struct rfs_repl *repl(int nconn, size_t max_queued, int delay_ms)
{
	struct rfs_repl_config cfg = {.nbremconn = nconn, .send_timeout_ms = 5000, .compress = 1,
				      .max_queued_bytes = max_queued, .flush_delay_ms = delay_ms};
	struct rfs_repl *r = rfs_repl_new(&cfg);

	CHECK(r, "rfs_repl_new");
	return r;
}

static int b_stat(const char *rel, struct stat *st)
{
	char p[2 * PATH_MAX];

	snprintf(p, sizeof p, "%s/%s", B, rel);
	return lstat(p, st);
}

static void expect_content(const char *root, const char *rel, off_t off, const char *want)
{
	char p[2 * PATH_MAX], got[64] = "";
	int fd;

	snprintf(p, sizeof p, "%s/%s", root, rel);
	fd = open(p, O_RDONLY);
	CHECK(fd >= 0 && pread(fd, got, strlen(want), off) == (ssize_t)strlen(want) && !strcmp(got, want),
	      "%s at %lld: '%s', want '%s'", rel, (long long)off, got, want);
	close(fd);
}

static void expect_xattr(const char *root, const char *rel, const char *name, const char *want)
{
	char p[2 * PATH_MAX], got[64] = "";
	ssize_t n;

	snprintf(p, sizeof p, "%s/%s", root, rel);
	n = lgetxattr(p, name, got, sizeof got - 1);
	if (!want)
		CHECK(n < 0 && errno == ENODATA, "%s: xattr %s should be gone", rel, name);
	else
		CHECK(n >= 0 && !strcmp(got, want), "%s: xattr %s is '%s', want '%s'", rel, name, got, want);
}

static void expect_stat(const char *root, const char *rel, mode_t mode, uid_t uid, off_t size, long mtime_nsec)
{
	char p[2 * PATH_MAX];
	struct stat st;

	snprintf(p, sizeof p, "%s/%s", root, rel);
	if (!mode) {
		CHECK(lstat(p, &st) && errno == ENOENT, "%s should not exist", rel);
		return;
	}
	CHECK(!lstat(p, &st), "%s: %s", rel, strerror(errno));
	CHECK(st.st_mode == mode, "%s: mode %o, want %o", rel, st.st_mode, mode);
	CHECK(st.st_uid == uid, "%s: uid %u, want %u", rel, st.st_uid, uid);
	CHECK(size < 0 || st.st_size == size, "%s: size %lld, want %lld", rel, (long long)st.st_size,
	      (long long)size);
	CHECK(mtime_nsec < 0 || (st.st_mtim.tv_sec == EXACT_SEC && st.st_mtim.tv_nsec == mtime_nsec),
	      "%s: mtime %lld.%09ld", rel, (long long)st.st_mtim.tv_sec, st.st_mtim.tv_nsec);
}

/* What every_opcode leaves, spelled out: the tree comparison alone would accept a
 * mistake apply.c makes on both sides. */
static void expect(const char *root)
{
	struct stat st;
	char p[2 * PATH_MAX];

	expect_stat(root, "", S_IFDIR | 0751, 0, -1, -1);
	expect_xattr(root, "", "user.root", "r");
	expect_stat(root, "dd/g", S_IFREG | 0640, 1234, -1, -1); /* chown dropped the setuid bit */
	expect_xattr(root, "dd/g", "user.hk", "v1");
	expect_xattr(root, "dd/g", "user.empty", "");
	expect_content(root, "dd/g", 3, "old");
	expect_content(root, "d/g", 0, "new");
	expect_stat(root, "dd/link", S_IFLNK | 0777, 42, 4, 42);
	expect_xattr(root, "dd/link", "trusted.hk", "l");
	expect_xattr(root, "dd", "user.gone", NULL);
	expect_stat(root, "dd/null", S_IFCHR | 0600, 0, 0, -1);
	snprintf(p, sizeof p, "%s/dd/null", root);
	CHECK(!lstat(p, &st) && st.st_rdev == makedev(1, 3), "device number");
	expect_stat(root, "fifo", S_IFIFO | 0600, 0, 0, -1);
	expect_stat(root, "dd/bad", 0, 0, 0, -1);
	expect_stat(root, "abs", 0, 0, 0, -1);
	expect_stat(root, "x", 0, 0, 0, -1);
	expect_stat(root, "big", S_IFREG | 0600, 0, 3, -1);
	expect_content(root, "big", 0, "xxx");
	expect_stat(root, "y", S_IFREG | 0600, 0, 7 << 20, -1);
	expect_content(root, "y", 1, "Y");
	expect_content(root, "y", 100, "sync");
	expect_stat(root, "y", S_IFREG | 0600, 0, 7 << 20, 777);
	expect_stat(root, "dd/h", S_IFREG | 0600, 0, 0, -1);
}

/* Every opcode, with the awkward cases the FUSE layer will send. */
static void every_opcode(struct rfs_repl *r)
{
	static char buf[3 << 20];
	struct rfs_repl_stats st;
	struct stat sb;

	both(r, afd, OP(.code = RFS_OP_MKDIR, .path = "d", .mode = 0755), APPLIED);
	both(r, afd, OP(.code = RFS_OP_MKDIR, .path = "d/e", .mode = 0700), APPLIED);
	both(r, afd, OP(.code = RFS_OP_CREATE, .path = "f", .mode = 0644), APPLIED);
	/* Compressible buffered data, then incompressible data the caller waits for (sent
	 * from its own buffer), far out: a sparse file. */
	fill(buf, 200 << 10, 1, 1);
	both(r, afd, OP(.code = RFS_OP_WRITE, .path = "f", .data = buf, .data_len = 200 << 10), QUEUED);
	fill(buf, 100 << 10, 2, 0);
	both(r, afd, OP(.code = RFS_OP_WRITE, .path = "f", .off = 8 << 20, .data = buf,
			.data_len = 100 << 10), APPLIED);
	CHECK(!b_stat("f", &sb) && sb.st_size == (8 << 20) + (100 << 10), "applied write not there");
	/* Longer than one frame: split on the file's connection. */
	both(r, afd, OP(.code = RFS_OP_CREATE, .path = "big", .mode = 0600), APPLIED);
	fill(buf, sizeof buf, 3, 0);
	both(r, afd, OP(.code = RFS_OP_WRITE, .path = "big", .off = 7, .data = buf, .data_len = sizeof buf),
	     QUEUED);
	both(r, afd, OP(.code = RFS_OP_TRUNCATE, .path = "big", .off = 1 << 20), QUEUED);
	both(r, afd, OP(.code = RFS_OP_TRUNCATE, .path = "big", .off = 5 << 20), QUEUED);
	both(r, afd, OP(.code = RFS_OP_FALLOCATE, .path = "big", .off = 6 << 20, .len = 1 << 20), QUEUED);
	both(r, afd, OP(.code = RFS_OP_FALLOCATE, .path = "big", .flags = FALLOC_FL_PUNCH_HOLE |
			FALLOC_FL_KEEP_SIZE, .off = 4096, .len = 65536), QUEUED);
	/* Durable: everything queued before on the file is there when it returns. */
	both(r, afd, OP(.code = RFS_OP_FSYNC, .path = "big", .flags = 1), DURABLE);
	CHECK(!b_stat("big", &sb) && sb.st_size == 7 << 20, "fsync returned before the writes landed");
	both(r, afd, OP(.code = RFS_OP_WRITE, .path = "big", .off = 100, .data = "sync", .data_len = 4),
	     DURABLE);
	both(r, afd, OP(.code = RFS_OP_MKNOD, .path = "fifo", .mode = S_IFIFO | 0600), APPLIED);
	both(r, afd, OP(.code = RFS_OP_MKNOD, .path = "d/null", .mode = S_IFCHR | 0600,
			.rdev = makedev(1, 3)), APPLIED);
	both(r, afd, OP(.code = RFS_OP_MKNOD, .path = "d/bad", .mode = S_IFDIR | 0600), APPLIED);
	both(r, afd, OP(.code = RFS_OP_SYMLINK, .path = "d/link", .path2 = "../f"), APPLIED);
	both(r, afd, OP(.code = RFS_OP_SYMLINK, .path = "abs", .path2 = "/etc/passwd"), APPLIED);
	both(r, afd, OP(.code = RFS_OP_CHMOD, .path = "f", .mode = 04751), APPLIED);
	both(r, afd, OP(.code = RFS_OP_CHMOD, .path = "", .mode = 0751), APPLIED);
	both(r, afd, OP(.code = RFS_OP_CHMOD, .path = "d/link", .mode = 0600), APPLIED);
	both(r, afd, OP(.code = RFS_OP_CHOWN, .path = "f", .uid = 1234, .gid = 5678), APPLIED);
	both(r, afd, OP(.code = RFS_OP_CHOWN, .path = "d/link", .uid = 42, .gid = (uint32_t)-1), APPLIED);
	both(r, afd, OP(.code = RFS_OP_UTIMENS, .path = "f", .atime_sec = 5, .atime_nsec = 6,
			.mtime_sec = EXACT_SEC, .mtime_nsec = 123456789), APPLIED);
	both(r, afd, OP(.code = RFS_OP_UTIMENS, .path = "d/link", .atime_sec = 5, .atime_nsec = UTIME_OMIT,
			.mtime_sec = EXACT_SEC, .mtime_nsec = 42), APPLIED);
	both(r, afd, OP(.code = RFS_OP_UTIMENS, .path = "", .atime_sec = 1, .mtime_sec = EXACT_SEC), APPLIED);
	both(r, afd, OP(.code = RFS_OP_SETXATTR, .path = "f", .name = "user.hk", .data = "v1", .data_len = 2),
	     APPLIED);
	both(r, afd, OP(.code = RFS_OP_SETXATTR, .path = "f", .name = "user.hk", .data = "v2", .data_len = 2,
			.flags = XATTR_CREATE), APPLIED);
	both(r, afd, OP(.code = RFS_OP_SETXATTR, .path = "f", .name = "user.empty"), APPLIED);
	both(r, afd, OP(.code = RFS_OP_SETXATTR, .path = "d", .name = "user.gone", .data = "x", .data_len = 1),
	     APPLIED);
	both(r, afd, OP(.code = RFS_OP_SETXATTR, .path = "", .name = "user.root", .data = "r", .data_len = 1),
	     APPLIED);
	both(r, afd, OP(.code = RFS_OP_SETXATTR, .path = "d/link", .name = "trusted.hk", .data = "l",
			.data_len = 1), APPLIED);
	both(r, afd, OP(.code = RFS_OP_REMOVEXATTR, .path = "d", .name = "user.gone"), APPLIED);
	both(r, afd, OP(.code = RFS_OP_REMOVEXATTR, .path = "d", .name = "user.gone"), APPLIED);
	/* Renames: into a directory, over an existing file, refused, exchanged. */
	both(r, afd, OP(.code = RFS_OP_RENAME, .path = "f", .path2 = "d/g"), APPLIED);
	both(r, afd, OP(.code = RFS_OP_CREATE, .path = "x", .mode = 0600), APPLIED);
	both(r, afd, OP(.code = RFS_OP_WRITE, .path = "x", .data = "xxx", .data_len = 3), QUEUED);
	both(r, afd, OP(.code = RFS_OP_CREATE, .path = "y", .mode = 0640), APPLIED);
	both(r, afd, OP(.code = RFS_OP_WRITE, .path = "y", .data = "yy", .data_len = 2), QUEUED);
	CHECK(both(r, afd, OP(.code = RFS_OP_RENAME, .path = "x", .path2 = "y", .flags = RENAME_NOREPLACE),
		   APPLIED) == -EEXIST, "noreplace");
	both(r, afd, OP(.code = RFS_OP_RENAME, .path = "x", .path2 = "big", .flags = RENAME_EXCHANGE), APPLIED);
	both(r, afd, OP(.code = RFS_OP_RENAME, .path = "x", .path2 = "y"), APPLIED);
	/* The old "y" fd must not be reused for a new "y": the cache was invalidated. */
	both(r, afd, OP(.code = RFS_OP_WRITE, .path = "y", .off = 1, .data = "Y", .data_len = 1), QUEUED);
	both(r, afd, OP(.code = RFS_OP_RENAME, .path = "d", .path2 = "dd"), APPLIED);
	both(r, afd, OP(.code = RFS_OP_MKDIR, .path = "d", .mode = 0700), APPLIED);
	both(r, afd, OP(.code = RFS_OP_CREATE, .path = "d/g", .mode = 0600), APPLIED);
	both(r, afd, OP(.code = RFS_OP_WRITE, .path = "d/g", .data = "new", .data_len = 3), QUEUED);
	both(r, afd, OP(.code = RFS_OP_WRITE, .path = "dd/g", .off = 3, .data = "old", .data_len = 3), QUEUED);
	/* Hard links: a write through the new name reaches the first; replacing (the full
	 * sync's flag) leaves a name that is the inode already, and replaces another. */
	both(r, afd, OP(.code = RFS_OP_LINK, .path = "dd/g", .path2 = "hl"), APPLIED);
	both(r, afd, OP(.code = RFS_OP_WRITE, .path = "hl", .off = 6, .data = "via", .data_len = 3), QUEUED);
	both(r, afd, OP(.code = RFS_OP_CREATE, .path = "z", .mode = 0600), APPLIED);
	CHECK(both(r, afd, OP(.code = RFS_OP_LINK, .path = "dd/g", .path2 = "z"), APPLIED) == -EEXIST, "link over");
	both(r, afd, OP(.code = RFS_OP_LINK, .path = "dd/g", .path2 = "z", .flags = RFS_LINK_REPLACE), APPLIED);
	both(r, afd, OP(.code = RFS_OP_LINK, .path = "dd/g", .path2 = "hl", .flags = RFS_LINK_REPLACE), APPLIED);
	CHECK(!b_stat("z", &sb) && sb.st_nlink == 3, "z is not a third name of dd/g there");
	both(r, afd, OP(.code = RFS_OP_UNLINK, .path = "abs"), APPLIED);
	CHECK(both(r, afd, OP(.code = RFS_OP_UNLINK, .path = "nothing"), APPLIED) == -ENOENT, "enoent");
	CHECK(both(r, afd, OP(.code = RFS_OP_RMDIR, .path = "dd"), APPLIED) == -ENOTEMPTY, "notempty");
	both(r, afd, OP(.code = RFS_OP_RMDIR, .path = "dd/e"), APPLIED);
	both(r, afd, OP(.code = RFS_OP_FSYNC, .path = "dd"), DURABLE);
	both(r, afd, OP(.code = RFS_OP_FSYNC, .path = "fifo"), DURABLE);
	both(r, afd, OP(.code = RFS_OP_CHMOD, .path = "dd/g", .mode = 0640), DURABLE);
	both(r, afd, OP(.code = RFS_OP_CREATE, .path = "dd/h", .mode = 0600), DURABLE);
	both(r, afd, OP(.code = RFS_OP_UTIMENS, .path = "y", .atime_sec = 1, .mtime_sec = EXACT_SEC,
			.mtime_nsec = 777), QUEUED);
	both(r, afd, OP(.code = RFS_OP_SYNCFS), DURABLE);
	tree_same(A, B);
	expect(A);
	expect(B);
	rfs_repl_stats(r, &st);
	CHECK(st.attached && st.ops_sent == st.acks && st.queued_bytes == 0, "stats: %llu ops, %llu acks, %llu queued",
	      (unsigned long long)st.ops_sent, (unsigned long long)st.acks, (unsigned long long)st.queued_bytes);
	CHECK(st.bytes_on_wire + (100 << 10) < st.bytes_sent, "compression: %llu on the wire for %llu",
	      (unsigned long long)st.bytes_on_wire, (unsigned long long)st.bytes_sent);
}

/* Many threads at once: each works on its own files with writes, renames over them,
 * truncates, unlinks and a directory rename; the final trees must be identical. */
#define THREADS 8
#define ROUNDS 40

static struct rfs_repl *shared;

static void *worker(void *arg)
{
	int t = (int)(intptr_t)arg;
	char d[32], d2[32], f[64], g[64], buf[8192];

	snprintf(d, sizeof d, "t%d", t);
	snprintf(d2, sizeof d2, "u%d", t);
	both(shared, afd, OP(.code = RFS_OP_MKDIR, .path = d, .mode = 0755), APPLIED);
	for (int j = 0; j < ROUNDS; j++) {
		snprintf(f, sizeof f, "%s/f%d", d, j % 7);
		snprintf(g, sizeof g, "%s/g%d", d, j % 5);
		if (rfs_apply(afd, OP(.code = RFS_OP_CREATE, .path = f, .mode = 0644)) == -EEXIST)
			continue;
		rfs_repl_submit(shared, OP(.code = RFS_OP_CREATE, .path = f, .mode = 0644), APPLIED);
		for (int k = 0; k < 6; k++) {
			fill(buf, sizeof buf, (unsigned)(t * 1000 + j * 10 + k), k & 1);
			both(shared, afd, OP(.code = RFS_OP_WRITE, .path = f, .off = k * 5000, .data = buf,
					     .data_len = sizeof buf), QUEUED);
		}
		both(shared, afd, OP(.code = RFS_OP_RENAME, .path = f, .path2 = g), APPLIED);
		both(shared, afd, OP(.code = RFS_OP_WRITE, .path = g, .off = 3, .data = "after", .data_len = 5),
		     QUEUED);
		if (j % 3 == 0)
			both(shared, afd, OP(.code = RFS_OP_TRUNCATE, .path = g, .off = 7000 + j), QUEUED);
		if (j % 4 == 1)
			both(shared, afd, OP(.code = RFS_OP_UNLINK, .path = g), APPLIED);
	}
	both(shared, afd, OP(.code = RFS_OP_RENAME, .path = d, .path2 = d2), APPLIED);
	snprintf(f, sizeof f, "%s/g1", d2);
	both(shared, afd, OP(.code = RFS_OP_WRITE, .path = f, .off = 1, .data = "moved", .data_len = 5), QUEUED);
	return NULL;
}

static void many_threads(struct rfs_repl *r)
{
	pthread_t th[THREADS];

	shared = r;
	for (int t = 0; t < THREADS; t++)
		CHECK(!pthread_create(&th[t], NULL, worker, (void *)(intptr_t)t), "pthread_create");
	for (int t = 0; t < THREADS; t++)
		pthread_join(th[t], NULL);
	both(r, afd, OP(.code = RFS_OP_SYNCFS), APPLIED); /* a barrier: everything is applied */
	tree_same(A, B);
}

/* A small queue limit blocks writers instead of dropping anything. */
static void *stats_watch(void *arg)
{
	struct rfs_repl_stats st;
	atomic_int *done = arg;
	uint64_t peak = 0;

	while (!atomic_load(done)) {
		rfs_repl_stats(shared, &st);
		if (st.queued_bytes > peak)
			peak = st.queued_bytes;
		usleep(200);
	}
	CHECK(peak <= (256 << 10) + (70 << 10), "queued %llu bytes over the limit", (unsigned long long)peak);
	return NULL;
}

static void backpressure(void)
{
	static char buf[64 << 10];
	struct rfs_repl *r = repl(1, 256 << 10, 50);
	atomic_int done = 0;
	pthread_t w;
	struct rx rx;

	rx_start(&rx, B);
	CHECK_RC(rfs_repl_attach(r, "127.0.0.1", rx.port), 0);
	shared = r;
	pthread_create(&w, NULL, stats_watch, &done);
	both(r, afd, OP(.code = RFS_OP_CREATE, .path = "bp", .mode = 0600), APPLIED);
	for (int i = 0; i < 128; i++) {
		fill(buf, sizeof buf, (unsigned)i, 0);
		both(r, afd, OP(.code = RFS_OP_WRITE, .path = "bp", .off = (int64_t)i * sizeof buf, .data = buf,
				.data_len = sizeof buf), QUEUED);
	}
	both(r, afd, OP(.code = RFS_OP_FSYNC, .path = "bp"), DURABLE);
	atomic_store(&done, 1);
	pthread_join(w, NULL);
	rfs_repl_free(r);
	rx_stop(&rx);
	tree_same(A, B);
}

/* Buffered ops reach the secondary within flush_delay_ms with nobody waiting. */
static void flush_delay(struct rfs_repl *r)
{
	struct stat sb;
	int64_t t0 = now_ms();

	both(r, afd, OP(.code = RFS_OP_CREATE, .path = "late", .mode = 0600), APPLIED);
	both(r, afd, OP(.code = RFS_OP_WRITE, .path = "late", .off = 99, .data = "x", .data_len = 1), QUEUED);
	while (b_stat("late", &sb) || sb.st_size != 100)
		CHECK(now_ms() - t0 < 2000, "a buffered write is not there after 2 s");
}

int main(void)
{
	struct rfs_repl *r;
	struct rx rx, rx2;

	umask(0);
	tmpdir(A, "primary");
	tmpdir(B, "secondary");
	afd = open_dir(A);
	rx_start(&rx, B);

	r = repl(4, 0, 20);
	/* Not attached: nothing is sent, nothing blocks. */
	CHECK_RC(rfs_repl_submit(r, OP(.code = RFS_OP_MKDIR, .path = "nowhere", .mode = 0700), DURABLE), 0);
	CHECK_RC(rfs_repl_submit(r, OP(.code = 0, .path = "x"), QUEUED), -EINVAL);
	CHECK_RC(rfs_repl_attach(r, "127.0.0.1", rx.port), 0);
	every_opcode(r);
	/* A new session on the same receiver replaces the old one's connections. */
	CHECK_RC(rfs_repl_attach(r, "localhost", rx.port), 0);
	flush_delay(r);
	many_threads(r);
	rfs_repl_detach(r);
	CHECK_RC(rfs_repl_submit(r, OP(.code = RFS_OP_MKDIR, .path = "gone", .mode = 0700), DURABLE), 0);
	rfs_repl_free(r);
	rx_stop(&rx);
	/* The receiver restarted: a fresh process' cache, same tree. */
	rx_start(&rx2, B);
	rx_stop(&rx2);

	backpressure();
	close(afd);
	printf("ok\n");
	return 0;
}
