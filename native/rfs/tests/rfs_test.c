#include "rfs_test.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>


static char made[8][PATH_MAX];
static int nmade;

/* Also when a check fails: exit() runs this. */
static void rm_made(void)
{
	while (nmade)
		rmtree(made[--nmade]);
}

void tmpdir(char *out, const char *what)
{
	const char *tmp = getenv("TMPDIR");

	snprintf(out, PATH_MAX, "%s/hkrfs-%s-XXXXXX", tmp && *tmp ? tmp : "/tmp", what);
	CHECK(mkdtemp(out), "mkdtemp: %s", strerror(errno));
	CHECK(nmade < 8, "too many temporary directories");
	if (!nmade)
		atexit(rm_made);
	strcpy(made[nmade++], out);
}

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)ftw;
	if (flag == FTW_DP)
		chmod(p, 0700);
	return remove(p) && errno != ENOENT ? -1 : 0;
}

void rmtree(const char *path)
{
	nftw(path, rm_one, 64, FTW_DEPTH | FTW_PHYS);
}

int open_dir(const char *path)
{
	int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	CHECK(fd >= 0, "open %s: %s", path, strerror(errno));
	return fd;
}

static char bait_out[PATH_MAX], bait_victim[2 * PATH_MAX];
static struct stat victim_before;

void bait_plant(const char *out, const char *root)
{
	int fd;

	snprintf(bait_out, sizeof bait_out, "%s", out);
	snprintf(bait_victim, sizeof bait_victim, "%s/victim", out);
	chmod(out, 0755);
	fd = open(bait_victim, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
	CHECK(fd >= 0 && write(fd, "safe", 4) == 4, "victim: %s", strerror(errno));
	close(fd);
	lstat(bait_victim, &victim_before);
	bait_links(root);
}

void bait_links(const char *root)
{
	char p[2 * PATH_MAX];

	snprintf(p, sizeof p, "%s/evil", root);
	CHECK(!symlink(bait_victim, p), "symlink %s: %s", p, strerror(errno));
	snprintf(p, sizeof p, "%s/evdir", root);
	CHECK(!symlink(bait_out, p), "symlink %s: %s", p, strerror(errno));
}

/* The directory outside the root holds only the victim, unchanged. */
void bait_untouched(void)
{
	struct stat st;
	char buf[16] = "", xa[64];
	int fd = open(bait_victim, O_RDONLY | O_CLOEXEC), n = 0;

	CHECK(fd >= 0 && read(fd, buf, sizeof buf) == 4 && !memcmp(buf, "safe", 4), "victim content changed");
	close(fd);
	CHECK(!lstat(bait_victim, &st) && st.st_mode == victim_before.st_mode &&
	      st.st_uid == victim_before.st_uid && st.st_mtim.tv_sec == victim_before.st_mtim.tv_sec &&
	      st.st_mtim.tv_nsec == victim_before.st_mtim.tv_nsec, "victim attributes changed");
	CHECK(llistxattr(bait_victim, xa, sizeof xa) == 0, "victim got xattrs");
	CHECK(!lstat(bait_out, &st) && st.st_mode == (S_IFDIR | 0755) && st.st_nlink == 2, "outside dir changed");
	for (DIR *d = opendir(bait_out); d;) {
		struct dirent *e = readdir(d);

		if (!e) {
			closedir(d);
			break;
		}
		n += strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
	}
	CHECK(n == 1, "%d entries outside", n);
}

static void same_xattrs(const char *a, const char *b, const char *rel)
{
	char la[4096], lb[4096], va[4096], vb[4096];
	ssize_t na = llistxattr(a, la, sizeof la), nb = llistxattr(b, lb, sizeof lb);

	CHECK(na >= 0 && nb >= 0, "%s: listxattr", rel);
	CHECK(na == nb, "%s: xattr lists differ (%zd, %zd bytes)", rel, na, nb);
	for (char *n = la; n < la + na; n += strlen(n) + 1) {
		ssize_t sa = lgetxattr(a, n, va, sizeof va), sb = lgetxattr(b, n, vb, sizeof vb);

		CHECK(sa == sb && sa >= 0 && !memcmp(va, vb, (size_t)sa), "%s: xattr %s differs", rel, n);
	}
}

static void same_content(const char *a, const char *b, const char *rel, off_t size)
{
	int fa = open(a, O_RDONLY | O_CLOEXEC), fb = open(b, O_RDONLY | O_CLOEXEC);
	static char ba[1 << 16], bb[1 << 16];

	CHECK(fa >= 0 && fb >= 0, "%s: open", rel);
	for (off_t off = 0; off < size;) {
		ssize_t x = pread(fa, ba, sizeof ba, off), y = pread(fb, bb, sizeof bb, off);

		CHECK(x > 0 && x == y && !memcmp(ba, bb, (size_t)x), "%s: content differs near %lld", rel,
		      (long long)off);
		off += x;
	}
	close(fa);
	close(fb);
}

static void same_entry(const char *a, const char *b, const char *rel)
{
	struct stat sa, sb;

	CHECK(!lstat(a, &sa), "%s: missing on the primary side", rel);
	CHECK(!lstat(b, &sb), "%s: missing on the secondary side", rel);
	CHECK((sa.st_mode & S_IFMT) == (sb.st_mode & S_IFMT), "%s: types differ", rel);
	CHECK(sa.st_mode == sb.st_mode, "%s: modes differ (%o, %o)", rel, sa.st_mode, sb.st_mode);
	CHECK(sa.st_uid == sb.st_uid && sa.st_gid == sb.st_gid, "%s: owners differ (%u:%u, %u:%u)", rel,
	      sa.st_uid, sa.st_gid, sb.st_uid, sb.st_gid);
	if (!S_ISDIR(sa.st_mode))
		CHECK(sa.st_size == sb.st_size, "%s: sizes differ (%lld, %lld)", rel,
		      (long long)sa.st_size, (long long)sb.st_size);
	if (S_ISCHR(sa.st_mode) || S_ISBLK(sa.st_mode))
		CHECK(sa.st_rdev == sb.st_rdev, "%s: devices differ", rel);
	if (S_ISREG(sa.st_mode)) {
		same_content(a, b, rel, sa.st_size);
		/* Sparse stays sparse: a hole is not sent as zeroes. */
		CHECK(sb.st_blocks <= sa.st_blocks + 64, "%s: %lld blocks, primary %lld", rel,
		      (long long)sb.st_blocks, (long long)sa.st_blocks);
	}
	if (S_ISLNK(sa.st_mode)) {
		char ta[PATH_MAX], tb[PATH_MAX];
		ssize_t x = readlink(a, ta, sizeof ta), y = readlink(b, tb, sizeof tb);

		CHECK(x == y && x >= 0 && !memcmp(ta, tb, (size_t)x), "%s: symlink targets differ", rel);
	}
	if (!S_ISDIR(sa.st_mode) && sa.st_mtim.tv_sec == EXACT_SEC)
		CHECK(sa.st_mtim.tv_sec == sb.st_mtim.tv_sec && sa.st_mtim.tv_nsec == sb.st_mtim.tv_nsec,
		      "%s: mtimes differ", rel);
	same_xattrs(a, b, rel);
}

/* Every entry of a (relative rel) is in b and alike; b has nothing more. */
static void same_dir(const char *a, const char *b, const char *rel, int reverse)
{
	DIR *d = opendir(a);
	struct dirent *e;

	CHECK(d, "opendir %s: %s", a, strerror(errno));
	while ((e = readdir(d))) {
		char pa[2 * PATH_MAX], pb[2 * PATH_MAX], pr[2 * PATH_MAX];
		struct stat st;

		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		snprintf(pa, sizeof pa, "%s/%s", a, e->d_name);
		snprintf(pb, sizeof pb, "%s/%s", b, e->d_name);
		snprintf(pr, sizeof pr, "%s%s%s", rel, *rel ? "/" : "", e->d_name);
		if (reverse) {
			CHECK(!lstat(pb, &st), "%s: only on the secondary side", pr);
		} else {
			same_entry(pa, pb, pr);
		}
		if (!lstat(pa, &st) && S_ISDIR(st.st_mode))
			same_dir(pa, pb, pr, reverse);
	}
	closedir(d);
}

void tree_same(const char *a, const char *b)
{
	same_entry(a, b, ".");
	same_dir(a, b, "", 0);
	same_dir(b, a, "", 1);
}

int listen_local(int *port)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof sa;
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	CHECK(fd >= 0 && !bind(fd, (struct sockaddr *)&sa, sizeof sa) && !listen(fd, 64) &&
	      !getsockname(fd, (struct sockaddr *)&sa, &len), "listen: %s", strerror(errno));
	*port = ntohs(sa.sin_port);
	return fd;
}

static void *rx_main(void *arg)
{
	struct rx *rx = arg;

	rx->result = rfs_receiver_serve(rx->rootfd, rx->listen_fd, &rx->stop, rx->creds, NULL);
	return NULL;
}

void rx_start(struct rx *rx, const char *root)
{
	rx_start_creds(rx, root, NULL);
}

void rx_start_creds(struct rx *rx, const char *root, const struct rfs_creds *creds)
{
	*rx = (struct rx){.rootfd = open_dir(root), .creds = creds};
	rx->listen_fd = listen_local(&rx->port);
	CHECK(!pthread_create(&rx->th, NULL, rx_main, rx), "pthread_create");
}

void rx_stop(struct rx *rx)
{
	__atomic_store_n(&rx->stop, 1, __ATOMIC_RELAXED);
	pthread_join(rx->th, NULL);
	CHECK(rx->result == 0, "the receiver returned %d", rx->result);
	close(rx->listen_fd);
	close(rx->rootfd);
}

int both(struct rfs_repl *r, int rootfd, const struct rfs_op *op, enum rfs_wait wait)
{
	int here = rfs_apply(rootfd, op), there = rfs_repl_submit(r, op, wait);

	if (wait != RFS_WAIT_QUEUED)
		CHECK(here == there, "%s %s: primary %d, secondary %d", rfs_opcode_name(op->code),
		      op->path ? op->path : "", here, there);
	return here;
}

void fill(void *buf, size_t n, unsigned seed, int compressible)
{
	unsigned char *p = buf;
	uint32_t x = seed * 2654435761u + 1;

	for (size_t i = 0; i < n; i++) {
		x = x * 1103515245u + 12345u;
		p[i] = compressible ? (unsigned char)("hakit replication "[i % 18] + (i / 4096) % 3)
				    : (unsigned char)(x >> 24);
	}
}

int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

