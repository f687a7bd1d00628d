/* The full sync's opcodes through the stream: the queries (LIST, STAT, SUMS, XATTRS)
 * answered by the receiver must equal what rfs_query() answers for the same tree here,
 * and PURGE removes whatever is at a path.  An in-process receiver over localhost TCP. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "query.h"
#include "rfs_test.h"

#define OP(...) (&(struct rfs_op){__VA_ARGS__})
#define NAMES 5000     /* with long names: a LIST in two pages at least */

static char A[PATH_MAX], B[PATH_MAX];
static int afd, bfd;
static char mine[RFS_REPLY_MAX], theirs[RFS_REPLY_MAX];

static void put(const char *root, const char *rel, const void *data, size_t len, off_t off)
{
	char p[2 * PATH_MAX];
	int fd;

	snprintf(p, sizeof p, "%s/%s", root, rel);
	fd = open(p, O_CREAT | O_WRONLY, 0644);
	CHECK(fd >= 0 && pwrite(fd, data, len, off) == (ssize_t)len, "write %s: %s", p, strerror(errno));
	close(fd);
}

/* Both sides' answer to op; the sizes are returned. */
static void ask(struct rfs_repl *r, const struct rfs_op *op, size_t *lm, size_t *lt)
{
	CHECK_RC(rfs_query(afd, op, mine, sizeof mine, lm), 0);
	CHECK_RC(rfs_repl_query(r, op, theirs, sizeof theirs, lt), 0);
}

static void lists(struct rfs_repl *r)
{
	static char name[201];
	struct rfs_op op = {.code = RFS_OP_LIST, .path = "many", .flags = RFS_LIST_XATTRS};
	struct rfs_reply_head h;
	size_t total = 0, pages = 0, lm, lt;

	memset(name, 'n', 200);
	for (int i = 0; i < NAMES; i++) {
		char rel[300];

		snprintf(rel, sizeof rel, "many/%s%05d", name + 5, i);
		put(B, rel, "x", 1, 0);
	}
	/* The secondary's listing, page by page: every name once. */
	do {
		size_t pos = sizeof h;

		CHECK_RC(rfs_repl_query(r, &op, theirs, sizeof theirs, &lt), 0);
		CHECK(!rfs_head_get(&h, theirs, lt), "short LIST answer");
		for (uint32_t i = 0; i < h.count; i++) {
			struct rfs_entry e;
			size_t used = rfs_entry_get(&e, theirs + pos, lt - pos);

			CHECK(used && e.name_len == 200 && S_ISREG(e.mode) && e.size == 1, "bad entry %u", i);
			pos += used;
		}
		CHECK(pos == lt, "LIST answer of %zu bytes, %zu used", lt, pos);
		total += h.count;
		pages++;
		op.off = (int64_t)h.next;
	} while (h.more);
	CHECK(total == NAMES && pages >= 2, "%zu entries in %zu pages", total, pages);
	/* The same directory here and there: the same entries (an empty one, to compare bytes). */
	ask(r, OP(.code = RFS_OP_LIST, .path = "empty"), &lm, &lt);
	CHECK(lm == lt && !memcmp(mine, theirs, lm), "LIST of an empty directory differs");
	/* An answer that does not fit fails that query only. */
	CHECK_RC(rfs_repl_query(r, OP(.code = RFS_OP_LIST, .path = "many"), theirs, 100, &lt), -EOVERFLOW);
	CHECK_RC(rfs_repl_query(r, OP(.code = RFS_OP_LIST, .path = "nowhere"), theirs, sizeof theirs, &lt), -ENOENT);
	CHECK_RC(rfs_repl_query(r, OP(.code = RFS_OP_LIST, .path = "../x"), theirs, sizeof theirs, &lt), -EINVAL);
}

static void sums(struct rfs_repl *r)
{
	static char data[300 << 10];
	struct rfs_op op = {.code = RFS_OP_SUMS, .path = "data", .len = 1 << 30, .flags = 16};
	struct rfs_reply_head hm, ht;
	size_t lm, lt;

	fill(data, sizeof data, 5, 0);
	put(A, "data", data, sizeof data, 0);
	put(B, "data", data, sizeof data, 0);
	ask(r, &op, &lm, &lt);
	CHECK(!rfs_head_get(&hm, mine, lm) && hm.count == 5 && hm.next == sizeof data, "5 blocks, the last short");
	CHECK(lm == lt && !memcmp(mine, theirs, lm), "the same file, other sums");
	/* One byte in the third block: that sum only differs. */
	put(B, "data", "!", 1, (2 << 16) + 7);
	ask(r, &op, &lm, &lt);
	CHECK(!rfs_head_get(&ht, theirs, lt) && ht.count == 5, "sums after a change");
	for (uint32_t i = 0; i < 5; i++) {
		int same = !memcmp(mine + sizeof hm + i * RFS_SUM_LEN, theirs + sizeof ht + i * RFS_SUM_LEN,
				   RFS_SUM_LEN);

		CHECK(same == (i != 2), "block %u: %s", i, same ? "same" : "differs");
	}
	/* A hole sums as the zeroes it reads as. */
	memset(data, 0, 1 << 16);
	put(A, "holes", data, 1 << 16, 1 << 20);
	put(B, "holes", "", 0, 0);
	CHECK(!truncate(strcat(strcpy(data, B), "/holes"), (1 << 20) + (1 << 16)), "truncate");
	ask(r, OP(.code = RFS_OP_SUMS, .path = "holes", .len = 1 << 30, .flags = 16), &lm, &lt);
	CHECK(lm == lt && !memcmp(mine, theirs, lm), "a hole and written zeroes sum differently");
	/* A window: from the second block, two blocks. */
	ask(r, OP(.code = RFS_OP_SUMS, .path = "data", .off = 1 << 16, .len = 2 << 16, .flags = 16), &lm, &lt);
	CHECK(!rfs_head_get(&hm, mine, lm) && hm.count == 2, "a window of two blocks");
	CHECK_RC(rfs_repl_query(r, OP(.code = RFS_OP_SUMS, .path = "data", .off = 5, .flags = 16), theirs,
				sizeof theirs, &lt), -EINVAL); /* not on a block */
	CHECK_RC(rfs_repl_query(r, OP(.code = RFS_OP_SUMS, .path = "data", .flags = 40), theirs, sizeof theirs,
				&lt), -EINVAL);
	/* A shift no block size has, refused before it is made (found by fuzz_receiver). */
	CHECK_RC(rfs_repl_query(r, OP(.code = RFS_OP_SUMS, .path = "data", .flags = 0x46524b48), theirs,
				sizeof theirs, &lt), -EINVAL);
	CHECK_RC(rfs_repl_query(r, OP(.code = RFS_OP_SUMS, .path = "many", .flags = 16), theirs, sizeof theirs,
				&lt), -EISDIR);
}

static void xattrs_and_stat(struct rfs_repl *r)
{
	char pa[2 * PATH_MAX], pb[2 * PATH_MAX];
	struct rfs_entry em, et;
	size_t lm, lt;

	snprintf(pa, sizeof pa, "%s/data", A);
	snprintf(pb, sizeof pb, "%s/data", B);
	/* Set in other orders: the answers list them sorted, so they are equal. */
	CHECK(!setxattr(pa, "user.b", "2", 1, 0) && !setxattr(pa, "user.a", "1", 1, 0), "setxattr");
	CHECK(!setxattr(pb, "user.a", "1", 1, 0) && !setxattr(pb, "user.b", "2", 1, 0), "setxattr");
	ask(r, OP(.code = RFS_OP_XATTRS, .path = "data"), &lm, &lt);
	CHECK(lm == lt && !memcmp(mine, theirs, lm), "the same xattrs, other answers");
	CHECK(chown(pb, 4321, 99) == 0, "chown");
	ask(r, OP(.code = RFS_OP_STAT, .path = "data", .flags = RFS_LIST_XATTRS), &lm, &lt);
	CHECK(rfs_entry_get(&em, mine, lm) && rfs_entry_get(&et, theirs, lt), "STAT answers");
	CHECK(em.xattr_digest == et.xattr_digest && em.xattr_digest, "xattr digests");
	CHECK(et.uid == 4321 && et.gid == 99 && em.uid == 0, "owners");
	CHECK(et.name_len == 4 && !memcmp(et.name, "data", 4), "the name is the last component");
	CHECK(symlink("somewhere/far", strcat(strcpy(pb, B), "/lnk")) == 0, "symlink");
	CHECK_RC(rfs_repl_query(r, OP(.code = RFS_OP_STAT, .path = "lnk"), theirs, sizeof theirs, &lt), 0);
	CHECK(rfs_entry_get(&et, theirs, lt) && S_ISLNK(et.mode) && et.target_len == 13 &&
	      !memcmp(et.target, "somewhere/far", 13), "a symlink's target");
	CHECK_RC(rfs_repl_query(r, OP(.code = RFS_OP_STAT, .path = ""), theirs, sizeof theirs, &lt), 0);
}

static void purge(struct rfs_repl *r)
{
	struct stat st;

	CHECK(!mkdirat(bfd, "tree", 0700) && !mkdirat(bfd, "tree/a", 0) && !mkdirat(bfd, "tree/a/b", 0500),
	      "mkdir");
	put(B, "tree/a/b/../f", "x", 1, 0);
	CHECK(!symlinkat("/etc", bfd, "tree/a/b/out"), "symlink");
	CHECK_RC(rfs_repl_submit(r, OP(.code = RFS_OP_PURGE, .path = "tree"), RFS_WAIT_APPLIED), 0);
	CHECK(fstatat(bfd, "tree", &st, AT_SYMLINK_NOFOLLOW) && errno == ENOENT, "the tree is still there");
	CHECK(!stat("/etc/passwd", &st), "a symlink inside was followed");
	CHECK_RC(rfs_repl_submit(r, OP(.code = RFS_OP_PURGE, .path = "tree"), RFS_WAIT_APPLIED), 0);
	CHECK_RC(rfs_repl_submit(r, OP(.code = RFS_OP_PURGE, .path = "lnk"), RFS_WAIT_DURABLE), 0);
	CHECK(fstatat(bfd, "lnk", &st, AT_SYMLINK_NOFOLLOW) && errno == ENOENT, "the symlink is still there");
	CHECK_RC(rfs_repl_submit(r, OP(.code = RFS_OP_PURGE, .path = "../x"), RFS_WAIT_APPLIED), -EINVAL);
}

int main(void)
{
	struct rfs_repl_config cfg = {.nbremconn = 2, .send_timeout_ms = 5000, .flush_delay_ms = 5};
	struct rfs_repl *r = rfs_repl_new(&cfg);
	size_t len;
	struct rx rx;

	CHECK(r, "rfs_repl_new");
	umask(0);
	tmpdir(A, "primary");
	tmpdir(B, "secondary");
	afd = open_dir(A);
	bfd = open_dir(B);
	CHECK(!mkdirat(afd, "empty", 0755) && !mkdirat(bfd, "empty", 0755) && !mkdirat(bfd, "many", 0755), "mkdir");
	/* Nobody attached: no answer. */
	CHECK_RC(rfs_repl_query(r, OP(.code = RFS_OP_LIST, .path = ""), theirs, sizeof theirs, &len), -ENOTCONN);
	rx_start(&rx, B);
	CHECK_RC(rfs_repl_attach(r, "127.0.0.1", rx.port), 0);
	/* Queries go through rfs_repl_query only, and only queries do. */
	CHECK_RC(rfs_repl_submit(r, OP(.code = RFS_OP_LIST, .path = ""), RFS_WAIT_APPLIED), -EINVAL);
	CHECK_RC(rfs_repl_query(r, OP(.code = RFS_OP_UNLINK, .path = "x"), theirs, sizeof theirs, &len), -EINVAL);
	lists(r);
	sums(r);
	xattrs_and_stat(r);
	purge(r);
	rfs_repl_detach(r);
	CHECK_RC(rfs_repl_query(r, OP(.code = RFS_OP_LIST, .path = ""), theirs, sizeof theirs, &len), -ENOTCONN);
	rfs_repl_free(r);
	rx_stop(&rx);
	close(afd);
	close(bfd);
	printf("ok\n");
	return 0;
}
