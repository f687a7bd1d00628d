/* The seed corpus of fuzz_receiver: streams a primary could send (a hello, then op
 * frames), one file each, written into the directory named by argv[1].  Encoded with
 * proto.h's own encoders, so the seeds follow the wire when it changes; every opcode,
 * lz4 and durable frames, queries, and paths through the bait's symlinks appear, so that
 * coverage reaches the apply workers at once instead of after hours of guessing. */
#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <lz4.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "proto.h"
#include "query.h"

#define OP(...) (&(struct rfs_op){__VA_ARGS__})

struct stream {
	char buf[1 << 16];
	size_t len;
	uint64_t seq;
};

static const char *dir;
static int nseeds;

static void start(struct stream *s, uint64_t session)
{
	struct rfs_wire_hdr h = {.magic = RFS_MAGIC, .version = RFS_VERSION, .type = RFS_T_HELLO,
				 .body_len = sizeof(struct rfs_wire_hello)};

	rfs_hdr_put(s->buf, &h);
	rfs_hello_put(s->buf + sizeof h, &(struct rfs_wire_hello){.session = session, .nconn = 1});
	s->len = sizeof h + sizeof(struct rfs_wire_hello);
	s->seq = 0;
}

static void put(struct stream *s, const void *p, size_t n)
{
	if (!n)
		return;
	if (s->len + n > sizeof s->buf) {
		fprintf(stderr, "rfs_seeds: a seed outgrew its buffer\n");
		exit(1);
	}
	memcpy(s->buf + s->len, p, n);
	s->len += n;
}

/* One op frame, as repl_send.c's enqueue lays it out. */
static void frame(struct stream *s, const struct rfs_op *op, uint16_t flags)
{
	size_t plen = op->path ? strlen(op->path) + 1 : 0, p2len = op->path2 ? strlen(op->path2) + 1 : 0;
	size_t nlen = op->name ? strlen(op->name) + 1 : 0, wire = op->data_len;
	char head[sizeof(struct rfs_wire_hdr) + sizeof(struct rfs_wire_op)], lz[8192];
	const void *data = op->data;
	struct rfs_wire_hdr h = {.magic = RFS_MAGIC, .version = RFS_VERSION, .type = (uint8_t)op->code,
				 .flags = flags, .seq = ++s->seq, .path_len = (uint16_t)plen,
				 .path2_len = (uint16_t)p2len, .name_len = (uint16_t)nlen};

	if (flags & RFS_F_LZ4) {
		wire = (size_t)LZ4_compress_default(op->data, lz, (int)op->data_len, sizeof lz);
		data = lz;
	}
	h.body_len = (uint32_t)(sizeof(struct rfs_wire_op) + plen + p2len + nlen + wire);
	rfs_hdr_put(head, &h);
	rfs_wop_put(head + sizeof h, op, (uint32_t)op->data_len);
	put(s, head, sizeof head);
	put(s, op->path, plen);
	put(s, op->path2, p2len);
	put(s, op->name, nlen);
	put(s, data, wire);
}

static void save(const struct stream *s)
{
	char path[4096];
	FILE *f;

	snprintf(path, sizeof path, "%s/seed-%02d", dir, nseeds++);
	f = fopen(path, "wb");
	if (!f || fwrite(s->buf, 1, s->len, f) != s->len || fclose(f)) {
		fprintf(stderr, "rfs_seeds: %s: %s\n", path, strerror(errno));
		exit(1);
	}
}

int main(int argc, char **argv)
{
	static struct stream s;
	static char text[4096];
	static const struct rfs_op singles[] = {
		{.code = RFS_OP_MKDIR, .path = "d", .mode = 0755},
		{.code = RFS_OP_CREATE, .path = "f", .mode = 0644},
		{.code = RFS_OP_MKNOD, .path = "p", .mode = S_IFIFO | 0600},
		{.code = RFS_OP_SYMLINK, .path = "l", .path2 = "../target"},
		{.code = RFS_OP_CHMOD, .path = "", .mode = 0700},
		{.code = RFS_OP_UTIMENS, .path = "", .atime_sec = 1, .mtime_sec = 2, .mtime_nsec = 3},
		{.code = RFS_OP_SETXATTR, .path = "", .name = "user.a", .data = "v", .data_len = 1},
		{.code = RFS_OP_SYNCFS},
		{.code = RFS_OP_LIST, .path = "", .flags = RFS_LIST_XATTRS},
		{.code = RFS_OP_STAT, .path = "evil", .flags = RFS_LIST_XATTRS},
		{.code = RFS_OP_XATTRS, .path = ""},
		{.code = RFS_OP_PURGE, .path = "evdir"},
		{.code = RFS_OP_WRITE, .path = "evil", .data = "x", .data_len = 1},
		{.code = RFS_OP_RENAME, .path = "evdir", .path2 = "moved"},
		{.code = RFS_OP_LINK, .path = "f", .path2 = "evdir/h", .flags = RFS_LINK_REPLACE},
	};

	if (argc != 2) {
		fprintf(stderr, "usage: rfs_seeds DIR\n");
		return 2;
	}
	dir = argv[1];
	if (mkdir(dir, 0755) && errno != EEXIST) {
		fprintf(stderr, "rfs_seeds: %s: %s\n", dir, strerror(errno));
		return 1;
	}
	for (size_t i = 0; i < sizeof text; i++)
		text[i] = "hakit replication "[i % 18];

	/* One op each: short inputs the mutator changes field by field. */
	for (size_t i = 0; i < sizeof singles / sizeof *singles; i++) {
		start(&s, 100 + i);
		frame(&s, &singles[i], 0);
		save(&s);
	}

	/* A tree built and changed with every modifying opcode. */
	start(&s, 1);
	frame(&s, OP(.code = RFS_OP_MKDIR, .path = "d", .mode = 0755), 0);
	frame(&s, OP(.code = RFS_OP_MKDIR, .path = "d/e", .mode = 0700), 0);
	frame(&s, OP(.code = RFS_OP_CREATE, .path = "d/f", .mode = 0644), 0);
	frame(&s, OP(.code = RFS_OP_WRITE, .path = "d/f", .data = "hello", .data_len = 5), 0);
	frame(&s, OP(.code = RFS_OP_WRITE, .path = "d/f", .off = 1 << 20, .data = text, .data_len = sizeof text),
	      RFS_F_LZ4);
	frame(&s, OP(.code = RFS_OP_TRUNCATE, .path = "d/f", .off = 100), 0);
	frame(&s, OP(.code = RFS_OP_FALLOCATE, .path = "d/f", .off = 0, .len = 8192), 0);
	frame(&s, OP(.code = RFS_OP_FALLOCATE, .path = "d/f", .flags = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
		     .off = 0, .len = 4096), 0);
	frame(&s, OP(.code = RFS_OP_CHMOD, .path = "d/f", .mode = 04755), 0);
	frame(&s, OP(.code = RFS_OP_CHOWN, .path = "d/f", .uid = 1000, .gid = (uint32_t)-1), 0);
	frame(&s, OP(.code = RFS_OP_UTIMENS, .path = "d/f", .atime_sec = 5, .atime_nsec = 6, .mtime_sec = 7,
		     .mtime_nsec = 8), 0);
	frame(&s, OP(.code = RFS_OP_SETXATTR, .path = "d/f", .name = "user.hk", .data = "v1", .data_len = 2), 0);
	frame(&s, OP(.code = RFS_OP_SETXATTR, .path = "d", .name = "trusted.hk", .data = "v2", .data_len = 2,
		     .flags = XATTR_CREATE), 0);
	frame(&s, OP(.code = RFS_OP_REMOVEXATTR, .path = "d/f", .name = "user.hk"), 0);
	frame(&s, OP(.code = RFS_OP_SYMLINK, .path = "d/link", .path2 = "f"), 0);
	frame(&s, OP(.code = RFS_OP_MKNOD, .path = "d/null", .mode = S_IFCHR | 0600, .rdev = makedev(1, 3)), 0);
	frame(&s, OP(.code = RFS_OP_LINK, .path = "d/f", .path2 = "hard"), 0);
	frame(&s, OP(.code = RFS_OP_RENAME, .path = "d/f", .path2 = "g"), 0);
	frame(&s, OP(.code = RFS_OP_RENAME, .path = "g", .path2 = "d/link", .flags = RENAME_EXCHANGE), 0);
	frame(&s, OP(.code = RFS_OP_FSYNC, .path = "g", .flags = 1), RFS_F_DURABLE);
	frame(&s, OP(.code = RFS_OP_UNLINK, .path = "d/null"), 0);
	frame(&s, OP(.code = RFS_OP_RMDIR, .path = "d/e"), 0);
	frame(&s, OP(.code = RFS_OP_WRITE, .path = "d/link", .off = 3, .data = "durable", .data_len = 7),
	      RFS_F_DURABLE);
	frame(&s, OP(.code = RFS_OP_PURGE, .path = "d"), 0);
	frame(&s, OP(.code = RFS_OP_SYNCFS), RFS_F_DURABLE);
	save(&s);

	/* What a full sync asks: the queries, on a tree it first makes. */
	start(&s, 2);
	frame(&s, OP(.code = RFS_OP_MKDIR, .path = "q", .mode = 0755), 0);
	frame(&s, OP(.code = RFS_OP_CREATE, .path = "q/a", .mode = 0600), 0);
	frame(&s, OP(.code = RFS_OP_WRITE, .path = "q/a", .data = text, .data_len = sizeof text), 0);
	frame(&s, OP(.code = RFS_OP_SETXATTR, .path = "q/a", .name = "user.x", .data = "1", .data_len = 1), 0);
	frame(&s, OP(.code = RFS_OP_SYMLINK, .path = "q/s", .path2 = "a"), 0);
	frame(&s, OP(.code = RFS_OP_LIST, .path = "q", .flags = RFS_LIST_XATTRS), 0);
	frame(&s, OP(.code = RFS_OP_LIST, .path = "q", .off = 1), 0);
	frame(&s, OP(.code = RFS_OP_STAT, .path = "q/s"), 0);
	frame(&s, OP(.code = RFS_OP_SUMS, .path = "q/a", .off = 0, .len = 1 << 20, .flags = RFS_BLOCK_SHIFT_MIN), 0);
	frame(&s, OP(.code = RFS_OP_XATTRS, .path = "q/a"), 0);
	save(&s);

	/* Escapes the receiver must refuse, and the valid op after them. */
	start(&s, 3);
	frame(&s, OP(.code = RFS_OP_MKDIR, .path = "evdir/x", .mode = 0755), 0);
	frame(&s, OP(.code = RFS_OP_RENAME, .path = "evil", .path2 = "evdir/victim"), 0);
	frame(&s, OP(.code = RFS_OP_SYMLINK, .path = "evdir/l", .path2 = "/"), 0);
	frame(&s, OP(.code = RFS_OP_SETXATTR, .path = "evdir/victim", .name = "user.x", .data = "1", .data_len = 1), 0);
	frame(&s, OP(.code = RFS_OP_CHMOD, .path = "evil", .mode = 0777), 0);
	frame(&s, OP(.code = RFS_OP_TRUNCATE, .path = "evil", .off = 0), 0);
	frame(&s, OP(.code = RFS_OP_MKDIR, .path = "ok", .mode = 0755), 0);
	save(&s);
	return 0;
}
