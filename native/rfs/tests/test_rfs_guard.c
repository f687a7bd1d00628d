/* Whatever a peer sends, the receiver writes nothing outside its root: paths that
 * escape, symlinks planted in the tree, device nodes, and frames that are garbage. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <lz4.h>
#include <netinet/in.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "proto.h"
#include "rfs_test.h"

#define OP(...) (&(struct rfs_op){__VA_ARGS__})

static char ROOT[PATH_MAX], OUT[PATH_MAX];

static void direct_apply(int rootfd)
{
	static char longpath[5000];
	static const struct {
		struct rfs_op op;
		int want;
	} cases[] = {
		{{.code = RFS_OP_WRITE, .path = "../x", .data = "x", .data_len = 1}, -EINVAL},
		{{.code = RFS_OP_CREATE, .path = "/etc/hk-x", .mode = 0644}, -EINVAL},
		{{.code = RFS_OP_CREATE, .path = "a/./b"}, -EINVAL},
		{{.code = RFS_OP_CREATE, .path = "a//b"}, -EINVAL},
		{{.code = RFS_OP_CREATE, .path = "a/"}, -EINVAL},
		{{.code = RFS_OP_CREATE, .path = ""}, -EINVAL},
		{{.code = RFS_OP_MKDIR, .path = ".."}, -EINVAL},
		{{.code = RFS_OP_RENAME, .path = "plain", .path2 = "../stolen"}, -EINVAL},
		{{.code = RFS_OP_RENAME, .path = "plain", .path2 = ""}, -EINVAL},
		{{.code = RFS_OP_RENAME, .path = "plain"}, -EINVAL},
		{{.code = RFS_OP_SETXATTR, .path = "plain", .data = "x", .data_len = 1}, -EINVAL},
		{{.code = 0, .path = "plain"}, -EINVAL},
		{{.code = 99, .path = "plain"}, -EINVAL},
		{{.code = RFS_OP_WRITE, .path = "evil", .data = "x", .data_len = 1}, -ELOOP},
		{{.code = RFS_OP_WRITE, .path = "evdir/victim", .data = "x", .data_len = 1}, -ELOOP},
		{{.code = RFS_OP_TRUNCATE, .path = "evil"}, -ELOOP},
		{{.code = RFS_OP_FALLOCATE, .path = "evil", .len = 4096}, -ELOOP},
		{{.code = RFS_OP_CREATE, .path = "evdir/x", .mode = 0644}, -ELOOP},
		{{.code = RFS_OP_MKDIR, .path = "evdir/d", .mode = 0755}, -ELOOP},
		{{.code = RFS_OP_MKNOD, .path = "evdir/n", .mode = S_IFIFO | 0644}, -ELOOP},
		{{.code = RFS_OP_SYMLINK, .path = "evdir/l", .path2 = "x"}, -ELOOP},
		{{.code = RFS_OP_UNLINK, .path = "evdir/victim"}, -ELOOP},
		{{.code = RFS_OP_RENAME, .path = "evdir/victim", .path2 = "stolen"}, -ELOOP},
		{{.code = RFS_OP_RENAME, .path = "plain", .path2 = "evdir/plain"}, -ELOOP},
		{{.code = RFS_OP_CHMOD, .path = "evil", .mode = 0777}, -EOPNOTSUPP},
		{{.code = RFS_OP_CHMOD, .path = "evdir/victim", .mode = 0777}, -ELOOP},
		{{.code = RFS_OP_CHOWN, .path = "evdir/victim", .uid = 99, .gid = 99}, -ELOOP},
		{{.code = RFS_OP_CHOWN, .path = "evil", .uid = 99, .gid = 99}, 0}, /* the link itself */
		{{.code = RFS_OP_UTIMENS, .path = "evdir/victim", .mtime_sec = 1}, -ELOOP},
		{{.code = RFS_OP_UTIMENS, .path = "evil", .mtime_sec = 1}, 0},
		{{.code = RFS_OP_SETXATTR, .path = "evdir/victim", .name = "user.x", .data = "x", .data_len = 1}, -ELOOP},
		{{.code = RFS_OP_SETXATTR, .path = "evil", .name = "user.x", .data = "x", .data_len = 1}, -EPERM},
		{{.code = RFS_OP_REMOVEXATTR, .path = "evdir/victim", .name = "user.x"}, -ELOOP},
		{{.code = RFS_OP_FSYNC, .path = "evdir/victim"}, -ELOOP},
		{{.code = RFS_OP_SYMLINK, .path = "abs", .path2 = "/etc/passwd"}, 0}, /* a link is data */
		{{.code = RFS_OP_WRITE, .path = "abs", .data = "x", .data_len = 1}, -ELOOP},
		{{.code = RFS_OP_MKNOD, .path = "dev", .mode = S_IFCHR | 0600, .rdev = 0x103}, 0},
		{{.code = RFS_OP_WRITE, .path = "dev", .data = "x", .data_len = 1}, -EINVAL},
		{{.code = RFS_OP_TRUNCATE, .path = "dev"}, -EINVAL},
		{{.code = RFS_OP_MKNOD, .path = "fifo", .mode = S_IFIFO | 0600}, 0},
		{{.code = RFS_OP_WRITE, .path = "fifo", .data = "x", .data_len = 1}, -EINVAL},
		{{.code = RFS_OP_MKNOD, .path = "notanode", .mode = S_IFREG | 0600}, -EINVAL},
		{{.code = RFS_OP_MKDIR, .path = "dir", .mode = 0700}, 0},
		{{.code = RFS_OP_WRITE, .path = "dir", .data = "x", .data_len = 1}, -EISDIR},
	};

	for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
		int rc = rfs_apply(rootfd, &cases[i].op);

		CHECK(rc == cases[i].want, "case %zu (%s %s): %d, want %d", i, rfs_opcode_name(cases[i].op.code),
		      cases[i].op.path, rc, cases[i].want);
	}
	memset(longpath, 'a', sizeof longpath - 1);
	CHECK_RC(rfs_apply(rootfd, OP(.code = RFS_OP_CREATE, .path = longpath)), -ENAMETOOLONG);
	bait_untouched();
}

/* ---- frames by hand ---- */

static int raw_connect(int port)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	CHECK(fd >= 0 && !connect(fd, (struct sockaddr *)&sa, sizeof sa), "connect: %s", strerror(errno));
	return fd;
}

static void send_all(int fd, const void *p, size_t n)
{
	CHECK(send(fd, p, n, MSG_NOSIGNAL) == (ssize_t)n, "send: %s", strerror(errno));
}

/* The next ack, or -1 if the connection closed within 3 s. */
static int read_ack(int fd, struct rfs_wire_hdr *h)
{
	char buf[sizeof *h];
	size_t got = 0;

	while (got < sizeof buf) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		ssize_t n;

		CHECK(poll(&p, 1, 3000) == 1, "no answer in 3 s");
		n = recv(fd, buf + got, sizeof buf - got, 0);
		if (n <= 0)
			return -1;
		got += (size_t)n;
	}
	rfs_hdr_get(h, buf);
	CHECK(h->magic == RFS_MAGIC && h->type == RFS_T_ACK, "not an ack");
	return 0;
}

static void say_hello(int fd, uint64_t session)
{
	char f[sizeof(struct rfs_wire_hdr) + sizeof(struct rfs_wire_hello)];
	struct rfs_wire_hdr h = {.magic = RFS_MAGIC, .version = RFS_VERSION, .type = RFS_T_HELLO,
				 .body_len = sizeof(struct rfs_wire_hello)};

	rfs_hdr_put(f, &h);
	rfs_hello_put(f + sizeof h, &(struct rfs_wire_hello){.session = session, .nconn = 1});
	send_all(fd, f, sizeof f);
	CHECK(read_ack(fd, &h) == 0 && h.seq == 0 && h.result == 0, "hello not acked");
}

/* An op frame: header fields as given, body = wire op + strings + data. */
struct frame {
	struct rfs_wire_hdr h;
	struct rfs_op op;
	uint32_t data_len;               /* wire_op.data_len */
	const char *strs;                /* path_len + path2_len + name_len bytes */
	const void *data;
	size_t wire;                     /* data bytes in the body */
	int fix_body;                    /* compute body_len */
	int head_only;                   /* the header must be refused on its own */
};

static void send_frame(int fd, struct frame *f)
{
	size_t strs = f->head_only ? 0 : (size_t)f->h.path_len + f->h.path2_len + f->h.name_len;
	size_t n = sizeof f->h + sizeof(struct rfs_wire_op) + strs + f->wire;
	char *buf = malloc(n);

	if (f->fix_body)
		f->h.body_len = (uint32_t)(n - sizeof f->h);
	f->h.magic = f->h.magic ? f->h.magic : RFS_MAGIC;
	f->h.version = f->h.version ? f->h.version : RFS_VERSION;
	rfs_hdr_put(buf, &f->h);
	rfs_wop_put(buf + sizeof f->h, &f->op, f->data_len);
	if (strs)
		memcpy(buf + sizeof f->h + sizeof(struct rfs_wire_op), f->strs, strs);
	if (f->wire)
		memcpy(buf + n - f->wire, f->data, f->wire);
	send_all(fd, buf, f->head_only ? sizeof f->h : n);
	free(buf);
}

static int closed_soon(int fd)
{
	char b[64];
	struct pollfd p = {.fd = fd, .events = POLLIN};

	return poll(&p, 1, 3000) == 1 && recv(fd, b, sizeof b, 0) <= 0;
}

/* Each case is a good frame with one field spoiled: later initializers override. */
#pragma GCC diagnostic ignored "-Woverride-init"
#define MK(...) ((struct frame){.fix_body = 1, __VA_ARGS__})
#define PWN(len) .h = {.type = RFS_OP_MKDIR, .seq = 1, .path_len = (len)}, .strs = "pwned", .op = {.mode = 0777}

static void garbage(int port, const char *logpath)
{
	static char junk[64 << 10];
	char lz[256];
	int lzn = LZ4_compress_default("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", lz, 55, sizeof lz);
	struct {
		const char *name, *reason;
		int hello;
		struct frame f;
	} cases[] = {
		{"bad magic", "bad magic", 1, MK(PWN(6), .h.magic = 0x12345678)},
		{"bad version", "unsupported version 9", 1, MK(PWN(6), .h.version = 9)},
		{"no hello", "not a hello", 0, MK(PWN(6))},
		{"unknown opcode", "unknown frame type 99", 1, MK(.h = {.type = 99, .seq = 1})},
		{"ack from the primary", "unknown frame type 65", 1, MK(.h = {.type = RFS_T_ACK, .seq = 1})},
		{"huge body", "beyond the limits", 1, MK(PWN(6), .fix_body = 0, .head_only = 1, .h.body_len = 0xfffffff0u)},
		{"huge path", "beyond the limits", 1, MK(PWN(6), .fix_body = 0, .head_only = 1, .h.path_len = 5000,
								      .h.body_len = 6000)},
		{"short body", "shorter than its strings", 1, MK(PWN(6), .fix_body = 0, .head_only = 1,
									      .h.body_len = 50)},
		{"not terminated", "not NUL-terminated", 1, MK(PWN(5))},
		{"inner NUL", "not NUL-terminated", 1, MK(.h = {.type = RFS_OP_MKDIR, .seq = 1, .path_len = 6},
							   .strs = "pw\0ed")},
		{"wrong seq", "seq 5, expected 1", 1, MK(PWN(6), .h.seq = 5)},
		{"missing path", "wrong strings", 1, MK(.h = {.type = RFS_OP_MKDIR, .seq = 1})},
		{"extra name", "wrong strings", 1, MK(.h = {.type = RFS_OP_MKDIR, .seq = 1, .path_len = 6, .name_len = 2},
						      .strs = "pwned\0x")},
		{"data in mkdir", "data in a mkdir frame", 1, MK(PWN(6), .data = "xx", .wire = 2)},
		{"lz4 on mkdir", "bad flags", 1, MK(PWN(6), .h.flags = RFS_F_LZ4)},
		{"unknown flag", "bad flags", 1, MK(PWN(6), .h.flags = 0x80)},
		{"data length", "bad data length", 1, MK(.h = {.type = RFS_OP_WRITE, .seq = 1, .path_len = 6},
							 .strs = "plain", .data = "xy", .wire = 2, .data_len = 3)},
		{"huge raw length", "bad data length", 1, MK(.h = {.type = RFS_OP_WRITE, .seq = 1, .path_len = 6,
								   .flags = RFS_F_LZ4}, .strs = "plain",
							     .data = lz, .wire = (size_t)lzn, .data_len = 1u << 30)},
		{"corrupt lz4", "corrupt lz4", 1, MK(.h = {.type = RFS_OP_WRITE, .seq = 1, .path_len = 6,
							   .flags = RFS_F_LZ4}, .strs = "plain",
						     .data = junk, .wire = 100, .data_len = 4000)},
		{"lz4 too long", "corrupt lz4", 1, MK(.h = {.type = RFS_OP_WRITE, .seq = 1, .path_len = 6,
							    .flags = RFS_F_LZ4}, .strs = "plain",
						      .data = lz, .wire = (size_t)lzn, .data_len = 20)},
	};
	char log[16384] = "";
	int saved = dup(2), logfd = open(logpath, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

	memset(junk, 0xff, sizeof junk);
	CHECK(lzn > 0 && logfd >= 0, "setup");
	/* The receiver logs on stderr: catch it to check each refusal says why. */
	dup2(logfd, 2);
	for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
		int fd = raw_connect(port), closed;

		if (cases[i].hello)
			say_hello(fd, 1000 + i);
		send_frame(fd, &cases[i].f);
		closed = closed_soon(fd);
		close(fd);
		if (!closed) {
			dup2(saved, 2);
			CHECK(0, "case '%s': the connection stayed open", cases[i].name);
		}
	}
	dup2(saved, 2);
	close(saved);
	CHECK(pread(logfd, log, sizeof log - 1, 0) > 0, "no log");
	close(logfd);
	for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
		CHECK(strstr(log, cases[i].reason), "case '%s': no '%s' in the log:\n%s", cases[i].name,
		      cases[i].reason, log);
}

/* A frame cut short by the peer's close is not applied. */
static void truncated(int port)
{
	int fd = raw_connect(port);
	struct frame f = MK(.h = {.type = RFS_OP_WRITE, .seq = 1, .path_len = 6}, .strs = "plain",
			    .data = "truncated!", .wire = 10, .data_len = 10);
	char buf[256];
	struct rfs_wire_hdr h = {.magic = RFS_MAGIC, .version = RFS_VERSION, .type = RFS_OP_WRITE, .seq = 1,
				 .path_len = 6, .body_len = (uint32_t)(sizeof(struct rfs_wire_op) + 6 + 10)};

	(void)f;
	say_hello(fd, 77);
	rfs_hdr_put(buf, &h);
	rfs_wop_put(buf + sizeof h, &(struct rfs_op){0}, 10);
	memcpy(buf + sizeof h + sizeof(struct rfs_wire_op), "plain\0trunc", 11);
	send_all(fd, buf, sizeof h + sizeof(struct rfs_wire_op) + 11);
	shutdown(fd, SHUT_WR);
	CHECK(closed_soon(fd), "not closed");
	close(fd);
}

/* Valid frames with escaping paths get an error ack; the connection goes on. */
static void escapes_over_the_wire(int port)
{
	static const struct {
		const char *path;
		int want;
	} cases[] = {{"../esc", -EINVAL}, {"/tmp/hk-esc", -EINVAL}, {"evdir/esc", -ELOOP}, {"ok", 0}};
	struct rfs_wire_hdr h;
	int fd = raw_connect(port);

	say_hello(fd, 99);
	for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
		struct frame f = MK(.h = {.type = RFS_OP_MKDIR, .seq = i + 1,
					  .path_len = (uint16_t)(strlen(cases[i].path) + 1)},
				    .strs = cases[i].path, .op = {.mode = 0755});

		send_frame(fd, &f);
		CHECK(read_ack(fd, &h) == 0 && h.seq == i + 1 && h.result == cases[i].want,
		      "%s: ack seq %llu result %d", cases[i].path, (unsigned long long)h.seq, h.result);
	}
	close(fd);
}

int main(void)
{
	char logdir[PATH_MAX], log[2 * PATH_MAX], p[2 * PATH_MAX];
	struct stat st;
	struct rx rx;
	int rootfd;

	umask(0);
	tmpdir(ROOT, "root");
	tmpdir(OUT, "outside");
	bait_plant(OUT, ROOT);
	snprintf(p, sizeof p, "%s/plain", ROOT);
	close(open(p, O_WRONLY | O_CREAT, 0644));

	rootfd = open_dir(ROOT);
	direct_apply(rootfd);
	close(rootfd);

	rx_start(&rx, ROOT);
	tmpdir(logdir, "log");
	snprintf(log, sizeof log, "%s/receiver.log", logdir);
	garbage(rx.port, log);
	truncated(rx.port);
	escapes_over_the_wire(rx.port);
	rx_stop(&rx);

	snprintf(p, sizeof p, "%s/pwned", ROOT);
	CHECK(lstat(p, &st) && errno == ENOENT, "a garbage frame was applied");
	snprintf(p, sizeof p, "%s/plain", ROOT);
	CHECK(!lstat(p, &st) && st.st_size == 0, "a truncated or bad write was applied");
	snprintf(p, sizeof p, "%s/ok", ROOT);
	CHECK(!lstat(p, &st) && S_ISDIR(st.st_mode), "the valid op after refused ones was not applied");
	bait_untouched();
	printf("ok\n");
	return 0;
}
