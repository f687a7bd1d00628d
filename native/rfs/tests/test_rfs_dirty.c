/* The primary's dirty marks (dirty.c): what each opcode marks, the block bitmaps'
 * ranges, and the journal: what a crash leaves (a child process that records and dies
 * without rfs_dirty_free), a clean stop's exact rewrite, a torn tail, the detach epoch
 * that delays the journal's V, and the state changes (adopt, synced, INVALID). */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "dirty.h"
#include "rfs_test.h"

#define OP(...) (&(struct rfs_op){__VA_ARGS__})
#define MiB (1ull << 20)
#define EXT RFS_DIRTY_EXTENT
#define THREADS 8
#define PER_THREAD 40

static char root[PATH_MAX], copy[PATH_MAX];

/* A directory under root, empty: its path in out. */
static const char *dir(char *out, const char *name)
{
	CHECK(snprintf(out, PATH_MAX, "%s/%s", root, name) < PATH_MAX, "path too long");
	rmtree(out);
	CHECK(!mkdir(out, 0700), "mkdir %s: %s", out, strerror(errno));
	return out;
}

static struct rfs_dirty *open_at(const char *path)
{
	struct rfs_dirty *d = NULL;

	CHECK_RC(rfs_dirty_open(path, &d), 0);
	return d;
}

static void run(struct rfs_dirty *d, const struct rfs_op *op)
{
	struct rfs_dirty_ticket t;

	rfs_dirty_begin(d, op, &t);
	rfs_dirty_end(d, &t);
}

static void range(char **p, char *end, char kind, const struct rfs_range *r)
{
	if (r->len == UINT64_MAX - r->off)
		*p += snprintf(*p, (size_t)(end - *p), " %c[%lluK,)", kind, (unsigned long long)(r->off >> 10));
	else
		*p += snprintf(*p, (size_t)(end - *p), " %c[%lluK,%lluK)", kind, (unsigned long long)(r->off >> 10),
			       (unsigned long long)((r->off + r->len) >> 10));
}

/* The marks as text: "path=ECA D[from,to) S[from,)" per entry ("." the root, KiB),
 * separated by "; ".  Also checks what the snapshot promises of its ranges. */
static const char *show(struct rfs_dirty *d)
{
	static char out[1 << 16];
	char *p = out, *end = out + sizeof out;
	struct rfs_dirty_snapshot s;

	CHECK_RC(rfs_dirty_snapshot(d, &s), 0);
	*p = 0;
	for (size_t i = 0; i < s.n; i++) {
		const struct rfs_dirty_entry *e = &s.e[i];

		if (i)
			CHECK(strcmp(s.e[i - 1].path, e->path) < 0, "not sorted: %s, %s", s.e[i - 1].path, e->path);
		CHECK(!(e->marks & RFS_MARK_DATA) == !e->ndata && !(e->marks & RFS_MARK_SUSPECT) == !e->nsuspect,
		      "%s: marks %#x disagree with its ranges", e->path, e->marks);
		p += snprintf(p, (size_t)(end - p), "%s%s=%s%s%s", i ? "; " : "", *e->path ? e->path : ".",
			      e->marks & RFS_MARK_ENTRY ? "E" : "", e->marks & RFS_MARK_CHILDREN ? "C" : "",
			      e->marks & RFS_MARK_ATTRS ? "A" : "");
		for (size_t k = 0; k < e->ndata; k++) {
			CHECK(e->data[k].off % RFS_DIRTY_BLOCK == 0, "%s: unaligned", e->path);
			CHECK(!k || e->data[k].off > e->data[k - 1].off + e->data[k - 1].len, "%s: not merged", e->path);
			range(&p, end, 'D', &e->data[k]);
		}
		for (size_t k = 0; k < e->nsuspect; k++) {
			CHECK(!k || e->suspect[k].off > e->suspect[k - 1].off + e->suspect[k - 1].len, "%s: not merged",
			      e->path);
			range(&p, end, 'S', &e->suspect[k]);
		}
	}
	rfs_dirty_snapshot_free(&s);
	return out;
}

#define SAME(d, want)                                                                 \
	do {                                                                          \
		const char *got_ = show(d);                                           \
		CHECK(!strcmp(got_, want), "marks\n  got  %s\n  want %s", got_, want); \
	} while (0)

static bool has_journal(const char *path)
{
	char p[PATH_MAX + 16];

	snprintf(p, sizeof p, "%s/journal", path);
	return !access(p, F_OK);
}

static off_t journal_size(const char *path)
{
	char p[PATH_MAX + 16];
	struct stat st;

	snprintf(p, sizeof p, "%s/journal", path);
	CHECK(!stat(p, &st), "stat %s: %s", p, strerror(errno));
	return st.st_size;
}

/* What a crash right now would leave on disk: the journal copied into a fresh
 * directory, its last cut bytes torn off. */
static const char *crash_copy(const char *from, off_t cut)
{
	const char *to = dir(copy, "crash");
	char a[PATH_MAX + 16], b[PATH_MAX + 16], buf[1 << 16];
	int in, out;
	ssize_t n;

	snprintf(a, sizeof a, "%s/journal", from);
	snprintf(b, sizeof b, "%s/journal", to);
	in = open(a, O_RDONLY);
	out = open(b, O_WRONLY | O_CREAT, 0600);
	CHECK(in >= 0 && out >= 0, "copy %s: %s", a, strerror(errno));
	while ((n = read(in, buf, sizeof buf)) > 0)
		CHECK(write(out, buf, (size_t)n) == n, "write %s", b);
	CHECK(!ftruncate(out, lseek(out, 0, SEEK_END) - cut), "ftruncate");
	close(in);
	close(out);
	return to;
}

/* RECORDING again after a case: forget, then lose the secondary. */
static void restart(struct rfs_dirty *d)
{
	struct rfs_dirty_snapshot s;

	CHECK_RC(rfs_dirty_snapshot(d, &s), 0);
	CHECK_RC(rfs_dirty_synced(d, 5, &s), 0);
	rfs_dirty_snapshot_free(&s);
	SAME(d, "");
	rfs_dirty_detached(d);
	CHECK(rfs_dirty_state(d, NULL) == RFS_DIRTY_RECORDING, "detached: not recording");
}

static void op_marks(void)
{
	static const struct {
		struct rfs_op op;
		const char *want;
	} cases[] = {
		{{.code = RFS_OP_WRITE, .path = "f", .off = 5000, .data_len = 100}, "f= D[4K,8K)"},
		{{.code = RFS_OP_WRITE, .path = "f", .off = 5000, .data_len = 0}, ""},
		{{.code = RFS_OP_FALLOCATE, .path = "g", .off = 0, .len = 10000}, "g=A D[0K,12K)"},
		{{.code = RFS_OP_TRUNCATE, .path = "h", .off = 5000}, "h=A D[4K,)"},
		{{.code = RFS_OP_TRUNCATE, .path = "h", .off = 0}, "h=A D[0K,)"},
		{{.code = RFS_OP_CREATE, .path = "d/c"}, "d=C; d/c=E"},
		{{.code = RFS_OP_MKNOD, .path = "d/n"}, "d=C; d/n=E"},
		{{.code = RFS_OP_SYMLINK, .path = "d/s", .path2 = "../x"}, "d=C; d/s=E"},
		{{.code = RFS_OP_MKDIR, .path = "top"}, ".=C; top=E"},
		{{.code = RFS_OP_UNLINK, .path = "u/v/x"}, "u/v=C"},
		{{.code = RFS_OP_RMDIR, .path = "r"}, ".=C"},
		{{.code = RFS_OP_RENAME, .path = "a/1", .path2 = "b/2"}, "a=C; b=C; b/2=E"},
		{{.code = RFS_OP_RENAME, .path = "a/1", .path2 = "a/2"}, "a=C; a/2=E"},
		{{.code = RFS_OP_RENAME, .path = "x", .path2 = "y/z", .flags = RENAME_EXCHANGE}, ".=C; x=E; y=C; y/z=E"},
		{{.code = RFS_OP_CHMOD, .path = "k"}, "k=A"},
		{{.code = RFS_OP_CHOWN, .path = "k"}, "k=A"},
		{{.code = RFS_OP_UTIMENS, .path = ""}, ".=A"},
		{{.code = RFS_OP_SETXATTR, .path = "k", .name = "user.a", .data = "v", .data_len = 1}, "k=A"},
		{{.code = RFS_OP_REMOVEXATTR, .path = "k", .name = "user.a"}, "k=A"},
		{{.code = RFS_OP_FSYNC, .path = "f"}, ""},
		{{.code = RFS_OP_SYNCFS}, ""},
		{{.code = RFS_OP_PURGE, .path = "f"}, ""},
		{{.code = RFS_OP_LIST, .path = ""}, ""},
		{{.code = RFS_OP_STAT, .path = "f"}, ""},
		{{.code = RFS_OP_SUMS, .path = "f", .len = 1 << 20}, ""},
		{{.code = RFS_OP_XATTRS, .path = "f"}, ""},
		/* A file's other names are found only by walking the whole tree. */
		{{.code = RFS_OP_LINK, .path = "a/1", .path2 = "b/2"}, ".=E"},
	};
	struct rfs_dirty *d = open_at(dir(copy, "ops"));

	CHECK_RC(rfs_dirty_adopt(d, 5), 0);
	for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
		const char *got;

		/* The same through begin/end and through mark. */
		run(d, &cases[i].op);
		got = show(d);
		CHECK(!strcmp(got, cases[i].want), "%s %s: got \"%s\", want \"%s\"", rfs_opcode_name(cases[i].op.code),
		      cases[i].op.path ? cases[i].op.path : "", got, cases[i].want);
		restart(d);
		rfs_dirty_mark(d, &cases[i].op);
		SAME(d, cases[i].want);
		restart(d);
	}
	rfs_dirty_free(d);
}

static void bitmaps(void)
{
	struct rfs_dirty *d = open_at(dir(copy, "bitmaps"));
	struct rfs_dirty_snapshot s;
	char keys[256];

	CHECK_RC(rfs_dirty_adopt(d, 5), 0);
	run(d, OP(.code = RFS_OP_WRITE, .path = "f", .off = 0, .data_len = 1));
	run(d, OP(.code = RFS_OP_WRITE, .path = "f", .off = 4095, .data_len = 1));
	SAME(d, "f= D[0K,4K)");
	run(d, OP(.code = RFS_OP_WRITE, .path = "f", .off = 8192, .data_len = 1));
	SAME(d, "f= D[0K,4K) D[8K,12K)");
	run(d, OP(.code = RFS_OP_WRITE, .path = "f", .off = 4096, .data_len = 4096));
	SAME(d, "f= D[0K,12K)");
	/* Across a bitmap page (128 MiB) and a word. */
	run(d, OP(.code = RFS_OP_WRITE, .path = "f", .off = 128 * MiB - 4096 - 1, .data_len = 8194));
	run(d, OP(.code = RFS_OP_WRITE, .path = "f", .off = 300 * MiB + 64 * 4096 - 1, .data_len = 2));
	SAME(d, "f= D[0K,12K) D[131064K,131080K) D[307452K,307460K)");
	/* A whole bitmap page and more. */
	run(d, OP(.code = RFS_OP_FALLOCATE, .path = "g", .off = 100 * MiB, .len = 200 * MiB));
	SAME(d, "f= D[0K,12K) D[131064K,131080K) D[307452K,307460K); g=A D[102400K,307200K)");
	CHECK_RC(rfs_dirty_snapshot(d, &s), 0);
	CHECK(s.data_bytes == (12 + 16 + 8) * 1024 + 200 * MiB && !s.suspect_bytes, "%llu bytes",
	      (unsigned long long)s.data_bytes);
	rfs_dirty_snapshot_free(&s);
	/* Open-ended: what lies beyond is part of it, what comes before stays. */
	run(d, OP(.code = RFS_OP_TRUNCATE, .path = "f", .off = 200 * MiB + 1));
	run(d, OP(.code = RFS_OP_WRITE, .path = "f", .off = 400 * MiB, .data_len = 1));
	SAME(d, "f=A D[0K,12K) D[131064K,131080K) D[204800K,); g=A D[102400K,307200K)");
	run(d, OP(.code = RFS_OP_TRUNCATE, .path = "f", .off = 128 * MiB - 1));
	SAME(d, "f=A D[0K,12K) D[131064K,); g=A D[102400K,307200K)");
	/* An absurd length is taken as open-ended rather than as a giant bitmap. */
	run(d, OP(.code = RFS_OP_FALLOCATE, .path = "big", .off = 4096, .len = 1ull << 50));
	run(d, OP(.code = RFS_OP_WRITE, .path = "neg", .off = -1, .data_len = 10));
	/* strcmp order: a directory before what it holds. */
	run(d, OP(.code = RFS_OP_CHMOD, .path = "b"));
	run(d, OP(.code = RFS_OP_CHMOD, .path = "a/b"));
	run(d, OP(.code = RFS_OP_CHMOD, .path = "a b"));
	run(d, OP(.code = RFS_OP_CHMOD, .path = "a"));
	SAME(d, "a=A; a b=A; a/b=A; b=A; big=A D[4K,); f=A D[0K,12K) D[131064K,); g=A D[102400K,307200K)");
	CHECK_RC(rfs_dirty_snapshot(d, &s), 0);
	CHECK(s.data_bytes == 12 * 1024 + 200 * MiB, "%llu bytes", (unsigned long long)s.data_bytes);
	rfs_dirty_snapshot_free(&s);
	rfs_dirty_keys(d, keys, sizeof keys);
	CHECK(!strcmp(keys, " journal=recording journal_tag=5 dirty_paths=7 dirty_bytes=209727488"), "keys: %s", keys);
	rfs_dirty_free(d);
}

/* The journal a process leaves when it dies without rfs_dirty_free: what began is there,
 * data as whole extents to compare. */
static void crash(void)
{
	char s[PATH_MAX];
	struct rfs_dirty *d;
	uint64_t tag;
	pid_t pid;
	int status;
	off_t size;

	dir(s, "crash-src");
	pid = fork();
	CHECK(pid >= 0, "fork");
	if (!pid) {
		d = open_at(s);
		CHECK_RC(rfs_dirty_adopt(d, 7), 0);
		run(d, OP(.code = RFS_OP_MKDIR, .path = "dir"));
		run(d, OP(.code = RFS_OP_CREATE, .path = "dir/f"));
		run(d, OP(.code = RFS_OP_WRITE, .path = "dir/f", .off = 0, .data_len = 100));
		run(d, OP(.code = RFS_OP_WRITE, .path = "dir/f", .off = 20 * MiB, .data_len = 4096));
		run(d, OP(.code = RFS_OP_WRITE, .path = "dir/f", .off = 64 * MiB - 10, .data_len = 20));
		run(d, OP(.code = RFS_OP_WRITE, .path = "dir/f", .off = 100 * MiB, .data_len = 1));
		run(d, OP(.code = RFS_OP_RENAME, .path = "dir/f", .path2 = "dir/h"));
		run(d, OP(.code = RFS_OP_CHMOD, .path = "g"));
		run(d, OP(.code = RFS_OP_TRUNCATE, .path = "t", .off = MiB + 5));
		run(d, OP(.code = RFS_OP_WRITE, .path = "t", .off = 50 * MiB, .data_len = 1));
		_exit(0);
	}
	CHECK(waitpid(pid, &status, 0) == pid && WIFEXITED(status) && !WEXITSTATUS(status), "child: %#x", status);
	d = open_at(s);
	CHECK(rfs_dirty_state(d, &tag) == RFS_DIRTY_RECORDING && tag == 7, "state after a crash");
	SAME(d, ".=C; dir=EC; dir/f=E S[0K,32768K) S[49152K,81920K) S[98304K,114688K); dir/h=E; g=A; t=A S[1024K,)");
	/* Marks the journal holds are not written again; new ones are. */
	size = journal_size(s);
	run(d, OP(.code = RFS_OP_WRITE, .path = "dir/f", .off = 30 * MiB, .data_len = 1 * MiB));
	run(d, OP(.code = RFS_OP_CREATE, .path = "dir/h"));
	run(d, OP(.code = RFS_OP_TRUNCATE, .path = "t", .off = 2 * MiB));
	run(d, OP(.code = RFS_OP_WRITE, .path = "t", .off = 90 * MiB, .data_len = 1));
	CHECK(journal_size(s) == size, "the journal grew from %lld to %lld", (long long)size,
	      (long long)journal_size(s));
	run(d, OP(.code = RFS_OP_WRITE, .path = "dir/f", .off = 300 * MiB, .data_len = 1));
	CHECK(journal_size(s) > size, "a new extent is not in the journal");
	/* The clean stop: what was exact stays exact, suspects stay suspects. */
	rfs_dirty_free(d);
	d = open_at(s);
	CHECK(rfs_dirty_state(d, &tag) == RFS_DIRTY_RECORDING && tag == 7, "state after a clean stop");
	SAME(d, ".=C; dir=EC; dir/f=E D[30720K,31744K) D[307200K,307204K) S[0K,32768K) S[49152K,81920K) "
		"S[98304K,114688K); dir/h=E; g=A; t=A D[2048K,) S[1024K,)");
	rfs_dirty_free(d);
}

/* A clean stop keeps exact marks; a journal.tmp a stop left half-written is ignored. */
static void clean_stop(void)
{
	char s[PATH_MAX];
	struct rfs_dirty *d = open_at(dir(s, "clean")), *c;
	char tmp[PATH_MAX + 16];
	uint64_t tag;
	int fd;

	CHECK_RC(rfs_dirty_adopt(d, 11), 0);
	CHECK_RC(rfs_dirty_adopt(d, 12), -EALREADY);
	run(d, OP(.code = RFS_OP_CREATE, .path = "a"));
	run(d, OP(.code = RFS_OP_WRITE, .path = "a", .off = 8192, .data_len = 5000));
	run(d, OP(.code = RFS_OP_WRITE, .path = "a", .off = 256 * MiB, .data_len = 1));
	run(d, OP(.code = RFS_OP_TRUNCATE, .path = "b", .off = 12345));
	rfs_dirty_free(d);
	snprintf(tmp, sizeof tmp, "%s/journal.tmp", s);
	fd = open(tmp, O_WRONLY | O_CREAT, 0600);
	CHECK(fd >= 0 && write(fd, "junk", 4) == 4, "junk");
	close(fd);
	d = open_at(s);
	CHECK(rfs_dirty_state(d, &tag) == RFS_DIRTY_RECORDING && tag == 11, "state after a clean stop");
	CHECK(access(tmp, F_OK) && errno == ENOENT, "journal.tmp is still there");
	SAME(d, ".=C; a=E D[8K,16K) D[262144K,262148K); b=A D[12K,)");
	/* A crash after: the exact marks and the new suspects. */
	run(d, OP(.code = RFS_OP_WRITE, .path = "a", .off = 8192, .data_len = 1));
	run(d, OP(.code = RFS_OP_WRITE, .path = "a", .off = 16 * MiB, .data_len = 1));
	c = open_at(crash_copy(s, 0));
	SAME(c, ".=C; a=E D[8K,16K) D[262144K,262148K) S[0K,32768K); b=A D[12K,)");
	rfs_dirty_free(c);
	rfs_dirty_free(d);
	d = open_at(s);
	SAME(d, ".=C; a=E D[8K,16K) D[16384K,16388K) D[262144K,262148K); b=A D[12K,)");
	rfs_dirty_free(d);
}

/* A record torn by the crash ends the journal; what follows after a restart is kept. */
static void torn_tail(void)
{
	char s[PATH_MAX];
	const char *c;
	struct rfs_dirty *d = open_at(dir(s, "torn")), *e;

	CHECK_RC(rfs_dirty_adopt(d, 3), 0);
	run(d, OP(.code = RFS_OP_CREATE, .path = "a"));
	run(d, OP(.code = RFS_OP_WRITE, .path = "b", .off = 0, .data_len = 1));
	e = open_at(crash_copy(s, 0));
	SAME(e, ".=C; a=E; b= S[0K,16384K)");
	rfs_dirty_free(e);
	c = crash_copy(s, 3);
	e = open_at(c);
	CHECK(rfs_dirty_state(e, NULL) == RFS_DIRTY_RECORDING, "a torn tail: not recording");
	SAME(e, ".=C; a=E");
	run(e, OP(.code = RFS_OP_WRITE, .path = "c", .off = 0, .data_len = 1));
	/* Also garbage that is not a cut: the new records follow the last valid one. */
	e = (rfs_dirty_free(e), open_at(c));
	SAME(e, ".=C; a=E; c= D[0K,4K)");
	rfs_dirty_free(e);
	/* A torn header, a journal without its V: no lineage. */
	e = open_at(crash_copy(s, journal_size(s) - 10));
	CHECK(rfs_dirty_state(e, NULL) == RFS_DIRTY_INVALID, "a torn header: not invalid");
	rfs_dirty_free(e);
	rfs_dirty_free(d);
}

/* An operation begun before the detach holds the journal's V back until it ends. */
static void epoch(void)
{
	char s[PATH_MAX];
	struct rfs_dirty *d = open_at(dir(s, "epoch")), *c;
	const struct rfs_op *early = OP(.code = RFS_OP_WRITE, .path = "early", .off = 0, .data_len = 10);
	struct rfs_dirty_snapshot snap;
	struct rfs_dirty_ticket t, t2;
	int64_t until;

	CHECK_RC(rfs_dirty_adopt(d, 3), 0);
	CHECK_RC(rfs_dirty_snapshot(d, &snap), 0);
	CHECK_RC(rfs_dirty_synced(d, 3, &snap), 0);
	rfs_dirty_snapshot_free(&snap);
	CHECK(rfs_dirty_state(d, NULL) == RFS_DIRTY_CLEAN && !has_journal(s), "synced: not clean");
	rfs_dirty_begin(d, early, &t);
	rfs_dirty_detached(d);
	/* The stream marks what it could not send; later operations record themselves. */
	rfs_dirty_mark(d, early);
	rfs_dirty_begin(d, OP(.code = RFS_OP_CREATE, .path = "late"), &t2);
	rfs_dirty_end(d, &t2);
	usleep(200 * 1000);
	c = open_at(crash_copy(s, 0));
	CHECK(rfs_dirty_state(c, NULL) == RFS_DIRTY_INVALID, "complete while an older operation runs");
	rfs_dirty_free(c);
	rfs_dirty_end(d, &t);
	for (until = now_ms() + 5000;; usleep(10 * 1000)) {
		c = open_at(crash_copy(s, 0));
		if (rfs_dirty_state(c, NULL) == RFS_DIRTY_RECORDING)
			break;
		rfs_dirty_free(c);
		CHECK(now_ms() < until, "no V 5 s after the older operation ended");
	}
	SAME(c, ".=C; early= S[0K,16384K); late=E");
	rfs_dirty_free(c);
	/* With nothing in progress the journal is complete at once. */
	restart(d);
	for (until = now_ms() + 5000;; usleep(10 * 1000)) {
		c = open_at(crash_copy(s, 0));
		if (rfs_dirty_state(c, NULL) == RFS_DIRTY_RECORDING)
			break;
		rfs_dirty_free(c);
		CHECK(now_ms() < until, "no V 5 s after a detach");
	}
	rfs_dirty_free(c);
	rfs_dirty_free(d);
}

static void states(void)
{
	char s[PATH_MAX];
	struct rfs_dirty *d = open_at(dir(s, "states"));
	struct rfs_dirty_snapshot a, b;
	uint64_t tag;
	char keys[256], p[PATH_MAX + 16];
	int fd;

	/* No journal: INVALID, and nothing is recorded. */
	CHECK(rfs_dirty_state(d, NULL) == RFS_DIRTY_INVALID, "fresh: not invalid");
	run(d, OP(.code = RFS_OP_CREATE, .path = "x"));
	rfs_dirty_mark(d, OP(.code = RFS_OP_CREATE, .path = "y"));
	rfs_dirty_detached(d);
	CHECK(rfs_dirty_state(d, NULL) == RFS_DIRTY_INVALID && !has_journal(s), "detached: not invalid");
	SAME(d, "");
	rfs_dirty_keys(d, keys, sizeof keys);
	CHECK(!strcmp(keys, " journal=invalid journal_tag=0 dirty_paths=0 dirty_bytes=0"), "keys: %s", keys);
	CHECK_RC(rfs_dirty_adopt(d, 1), 0);
	CHECK(has_journal(s), "adopted: no journal");
	run(d, OP(.code = RFS_OP_WRITE, .path = "w", .off = 0, .data_len = 4097));
	rfs_dirty_keys(d, keys, sizeof keys);
	CHECK(!strcmp(keys, " journal=recording journal_tag=1 dirty_paths=1 dirty_bytes=8192"), "keys: %s", keys);
	/* The secondary was lost again during the sync: its result is stale. */
	CHECK_RC(rfs_dirty_snapshot(d, &a), 0);
	rfs_dirty_detached(d);
	CHECK_RC(rfs_dirty_snapshot(d, &b), 0);
	CHECK(b.detaches == a.detaches + 1, "detaches %llu, %llu", (unsigned long long)a.detaches,
	      (unsigned long long)b.detaches);
	CHECK_RC(rfs_dirty_synced(d, 2, &a), -ESTALE);
	CHECK(rfs_dirty_state(d, &tag) == RFS_DIRTY_RECORDING && tag == 1 && has_journal(s), "stale: changed");
	SAME(d, "w= D[0K,8K)");
	CHECK_RC(rfs_dirty_synced(d, 2, &b), 0);
	rfs_dirty_snapshot_free(&a);
	rfs_dirty_snapshot_free(&b);
	CHECK(rfs_dirty_state(d, &tag) == RFS_DIRTY_CLEAN && tag == 2 && !has_journal(s), "synced: not clean");
	run(d, OP(.code = RFS_OP_CREATE, .path = "x"));
	SAME(d, "");
	rfs_dirty_keys(d, keys, sizeof keys);
	CHECK(!strcmp(keys, " journal=clean journal_tag=2 dirty_paths=0 dirty_bytes=0"), "keys: %s", keys);
	CHECK_RC(rfs_dirty_adopt(d, 4), -EALREADY);
	/* CLEAN leaves nothing on disk: after a restart, INVALID. */
	rfs_dirty_free(d);
	d = open_at(s);
	CHECK(rfs_dirty_state(d, NULL) == RFS_DIRTY_INVALID, "restarted clean: not invalid");
	rfs_dirty_free(d);
	/* Not a journal: INVALID, and removed. */
	snprintf(p, sizeof p, "%s/journal", s);
	fd = open(p, O_WRONLY | O_CREAT, 0600);
	CHECK(fd >= 0 && write(fd, "not a journal, not at all, no.", 30) == 30, "write");
	close(fd);
	d = open_at(s);
	CHECK(rfs_dirty_state(d, NULL) == RFS_DIRTY_INVALID && !has_journal(s), "garbage: not invalid, or kept");
	rfs_dirty_free(d);
	/* The journal cannot be written (its directory is gone): logged, INVALID, the
	 * operation goes on. */
	d = open_at(s);
	CHECK_RC(rfs_dirty_adopt(d, 1), 0);
	CHECK_RC(rfs_dirty_snapshot(d, &a), 0);
	CHECK_RC(rfs_dirty_synced(d, 1, &a), 0);
	rfs_dirty_snapshot_free(&a);
	rmtree(s);
	rfs_dirty_detached(d);
	CHECK(rfs_dirty_state(d, NULL) == RFS_DIRTY_INVALID, "no directory: not invalid");
	run(d, OP(.code = RFS_OP_CREATE, .path = "x"));
	SAME(d, "");
	rfs_dirty_free(d);
}

struct worker {
	struct rfs_dirty *d;
	int n;
};

static void *writer(void *arg)
{
	struct worker *w = arg;
	char path[32];

	for (int i = 0; i < PER_THREAD; i++) {
		uint64_t k = (uint64_t)(w->n * PER_THREAD + i);

		snprintf(path, sizeof path, "t%d/%d", w->n, i);
		run(w->d, OP(.code = RFS_OP_CREATE, .path = path));
		run(w->d, OP(.code = RFS_OP_WRITE, .path = "shared", .off = (int64_t)(2 * k * EXT + 7), .data_len = 100));
	}
	return NULL;
}

/* Many threads at once, and a detach counter going up meanwhile. */
static void threads(void)
{
	char s[PATH_MAX];
	struct rfs_dirty *d = open_at(dir(s, "threads")), *c;
	struct worker w[THREADS];
	pthread_t th[THREADS];
	struct rfs_dirty_snapshot snap;
	char keys[256];

	CHECK_RC(rfs_dirty_adopt(d, 9), 0);
	for (int i = 0; i < THREADS; i++) {
		w[i] = (struct worker){d, i};
		CHECK(!pthread_create(&th[i], NULL, writer, &w[i]), "pthread_create");
	}
	for (int i = 0; i < 20; i++) {
		rfs_dirty_detached(d);
		rfs_dirty_keys(d, keys, sizeof keys);
		CHECK_RC(rfs_dirty_snapshot(d, &snap), 0);
		rfs_dirty_snapshot_free(&snap);
		usleep(1000);
	}
	for (int i = 0; i < THREADS; i++)
		pthread_join(th[i], NULL);
	/* Every one durable before it returned: as a crash would leave it. */
	for (int exact = 0; exact < 2; exact++) {
		const struct rfs_dirty_entry *e = NULL;
		const struct rfs_range *r;
		size_t n;

		c = exact ? d : open_at(crash_copy(s, 0));
		CHECK_RC(rfs_dirty_snapshot(c, &snap), 0);
		CHECK(snap.n == THREADS + THREADS * PER_THREAD + 1, "%zu paths", snap.n);
		for (size_t i = 0; i < snap.n; i++)
			e = !strcmp(snap.e[i].path, "shared") ? &snap.e[i] : e;
		CHECK(e, "no marks for shared");
		r = exact ? e->data : e->suspect;
		n = exact ? e->ndata : e->nsuspect;
		CHECK(n == THREADS * PER_THREAD, "%zu ranges", n);
		for (size_t k = 0; k < n; k++)
			CHECK(r[k].off == 2 * k * EXT && r[k].len == (exact ? RFS_DIRTY_BLOCK : EXT), "range %zu", k);
		CHECK(snap.detaches == (exact ? 20 : 0), "%llu detaches", (unsigned long long)snap.detaches);
		rfs_dirty_snapshot_free(&snap);
		if (!exact)
			rfs_dirty_free(c);
	}
	rfs_dirty_free(d);
}

int main(void)
{
	tmpdir(root, "dirty");
	op_marks();
	bitmaps();
	crash();
	clean_stop();
	torn_tail();
	epoch();
	states();
	threads();
	printf("ok\n");
	return 0;
}
