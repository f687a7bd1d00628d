/* The FUSE session's I/O and the open modes of files: see fuse_io.h. */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/sysmacros.h>
#include <sys/uio.h>
#include <unistd.h>

#include <linux/fuse.h>

#include "fuse_io.h"
#include "io.h"
#include "log.h"

/* Protocol 7.40, newer than the headers of this distribution (and of libfuse 3.14). */
#define INIT_EXT (1u << 30)             /* FUSE_INIT_EXT: flags2 is valid */
#define INIT2_PASSTHROUGH (1u << 5)     /* FUSE_PASSTHROUGH, bit 37 of the 64 flags */
#define OPEN_PASSTHROUGH (1u << 7)      /* FOPEN_PASSTHROUGH */
#define STACK_DEPTH 1                   /* backing files on a plain file system only */
struct backing_map {
	int32_t fd;
	uint32_t flags;
	uint64_t padding;
};
#define IOC_BACKING_OPEN _IOW(229, 1, struct backing_map)
#define IOC_BACKING_CLOSE _IOW(229, 2, uint32_t)

/* Where the kernel reads these, in protocol 7.40: the INIT request's flags2, the INIT
 * reply's flags2 and max_stack_depth, the OPEN reply's backing_id (libfuse 3.14 calls
 * those fields unused and padding, and leaves them 0). */
#define INIT_IN_FLAGS2 16
#define INIT_OUT_FLAGS2 32
#define INIT_OUT_STACK_DEPTH 36
#define OPEN_OUT_FLAGS 8
#define OPEN_OUT_BACKING 12
#define OPEN_OUT_SIZE 16
_Static_assert(offsetof(struct fuse_init_in, flags) == 12, "INIT request flags");
_Static_assert(offsetof(struct fuse_init_out, flags) == 12, "INIT reply flags");
_Static_assert(sizeof(struct fuse_open_out) == OPEN_OUT_SIZE, "OPEN reply");
_Static_assert(sizeof(struct fuse_entry_out) == 128, "CREATE reply: entry, then open");

#define INODE_BUCKETS 1024
#define NODE_BUCKETS 1024
#define OPCODES 64 /* FUSE opcodes counted; CUSE's and beyond are not requests of this mount */

/* Requests per opcode and the time from reading each to answering it (the time spent
 * here, waiting on the secondary included): where a workload's time goes, without a
 * tracer.  Two clock reads per request. */
static struct {
	atomic_uint_fast64_t n, ns;
} served[OPCODES];

static const char *const opcode_names[OPCODES] = {
	[FUSE_LOOKUP] = "lookup", [FUSE_FORGET] = "forget", [FUSE_GETATTR] = "getattr",
	[FUSE_SETATTR] = "setattr", [FUSE_READLINK] = "readlink", [FUSE_SYMLINK] = "symlink",
	[FUSE_MKNOD] = "mknod", [FUSE_MKDIR] = "mkdir", [FUSE_UNLINK] = "unlink", [FUSE_RMDIR] = "rmdir",
	[FUSE_RENAME] = "rename", [FUSE_LINK] = "link", [FUSE_OPEN] = "open", [FUSE_READ] = "read",
	[FUSE_WRITE] = "write", [FUSE_STATFS] = "statfs", [FUSE_RELEASE] = "release",
	[FUSE_FSYNC] = "fsync", [FUSE_SETXATTR] = "setxattr", [FUSE_GETXATTR] = "getxattr",
	[FUSE_LISTXATTR] = "listxattr", [FUSE_REMOVEXATTR] = "removexattr", [FUSE_FLUSH] = "flush",
	[FUSE_INIT] = "init", [FUSE_OPENDIR] = "opendir", [FUSE_READDIR] = "readdir",
	[FUSE_RELEASEDIR] = "releasedir", [FUSE_FSYNCDIR] = "fsyncdir", [FUSE_ACCESS] = "access",
	[FUSE_CREATE] = "create", [FUSE_INTERRUPT] = "interrupt", [FUSE_BATCH_FORGET] = "batch_forget",
	[FUSE_FALLOCATE] = "fallocate", [FUSE_READDIRPLUS] = "readdirplus", [FUSE_RENAME2] = "rename2",
	[FUSE_LSEEK] = "lseek", [FUSE_COPY_FILE_RANGE] = "copy_file_range",
};

/* The request this worker thread is serving: libfuse answers a request on the thread
 * that read it. */
static __thread struct {
	uint32_t opcode;
	int64_t since; /* 0: nothing to answer */
	uint64_t nodeid;
} serving;

static void answered(void)
{
	if (serving.since) {
		atomic_fetch_add_explicit(&served[serving.opcode].ns, (uint64_t)(rfs_now_ns() - serving.since),
					  memory_order_relaxed);
		serving.since = 0;
	}
}

/* The modes of one real inode's opens (a file with several names counts once). */
struct inode_mode {
	dev_t dev;
	ino_t ino;
	int32_t backing;      /* registered backing file while passthrough opens exist; 0: none */
	uint32_t passthrough; /* opens served by passthrough */
	uint32_t cached;      /* opens reading through the mount's page cache */
	struct inode_mode *next;
};

struct rfs_open_mode {
	struct inode_mode *inode;
	bool passthrough; /* else cached */
};

static struct {
	int devfd;
	bool want;
	unsigned readahead_kb;
	dev_t mount_dev;
	/* What the kernel's INIT offered, seen by io_read, answered by io_writev. */
	_Atomic uint64_t init_unique;
	atomic_bool offers_killpriv, offers_passthrough;
	atomic_bool passthrough; /* granted: the INIT reply asked for it */
	atomic_uint_fast64_t passthrough_opens;
	pthread_mutex_t mu;
	struct inode_mode *inodes[INODE_BUCKETS];
} io = { .devfd = -1, .mu = PTHREAD_MUTEX_INITIALIZER };

/* The OPEN or CREATE this worker thread is answering: libfuse answers a request on the
 * thread that read it, so what the handler decides reaches the reply through here. */
static __thread struct {
	uint64_t unique; /* 0: not an open */
	size_t at;       /* offset of fuse_open_out in the reply */
	uint32_t set, clear;
	int32_t backing;
	void *created;   /* CREATE: known by its node from the reply (rfs_node_open) */
} reply;

/* Open files by node (fuse_io.h). */
struct node_file {
	uint64_t nodeid;
	void *file;
	struct node_file *next;
};

static struct {
	pthread_mutex_t mu;
	struct node_file *b[NODE_BUCKETS];
} nodes = { .mu = PTHREAD_MUTEX_INITIALIZER };

static void node_add(uint64_t nodeid, void *file)
{
	struct node_file *n = malloc(sizeof *n);

	/* Without memory the node's fstat after an unlink fails (ESTALE), as before. */
	if (n == NULL)
		return;
	*n = (struct node_file){ .nodeid = nodeid, .file = file };
	pthread_mutex_lock(&nodes.mu);
	n->next = nodes.b[nodeid % NODE_BUCKETS];
	nodes.b[nodeid % NODE_BUCKETS] = n;
	pthread_mutex_unlock(&nodes.mu);
}

static void node_forget(uint64_t nodeid, const void *file)
{
	pthread_mutex_lock(&nodes.mu);
	for (struct node_file **p = &nodes.b[nodeid % NODE_BUCKETS]; *p; p = &(*p)->next) {
		if ((*p)->nodeid == nodeid && (*p)->file == file) {
			struct node_file *gone = *p;

			*p = gone->next;
			free(gone);
			break;
		}
	}
	pthread_mutex_unlock(&nodes.mu);
}

static void *node_file(uint64_t nodeid, void (*hold)(void *file))
{
	void *file = NULL;

	pthread_mutex_lock(&nodes.mu);
	for (struct node_file *n = nodes.b[nodeid % NODE_BUCKETS]; n && !file; n = n->next) {
		if (n->nodeid == nodeid) {
			file = n->file;
			if (hold)
				hold(file);
		}
	}
	pthread_mutex_unlock(&nodes.mu);
	return file;
}

void rfs_node_open(void *file)
{
	if (reply.at == 0)
		node_add(serving.nodeid, file);
	else
		reply.created = file;
}

void rfs_node_close(void *file)
{
	node_forget(serving.nodeid, file);
}

void *rfs_node_file(void (*hold)(void *file))
{
	return node_file(serving.nodeid, hold);
}

/* A GETATTR or SETATTR without the open file, on a node with one: given fh 0. */
static void name_open_file(struct fuse_in_header *in, ssize_t n)
{
	if (in->opcode == FUSE_GETATTR && n >= (ssize_t)(sizeof *in + sizeof(struct fuse_getattr_in))) {
		struct fuse_getattr_in *arg = (void *)(in + 1);

		if (!(arg->getattr_flags & FUSE_GETATTR_FH) && node_file(in->nodeid, NULL)) {
			arg->getattr_flags |= FUSE_GETATTR_FH;
			arg->fh = 0;
		}
	} else if (in->opcode == FUSE_SETATTR && n >= (ssize_t)(sizeof *in + sizeof(struct fuse_setattr_in))) {
		struct fuse_setattr_in *arg = (void *)(in + 1);

		if (!(arg->valid & FATTR_FH) && node_file(in->nodeid, NULL)) {
			arg->valid |= FATTR_FH;
			arg->fh = 0;
		}
	}
}

static ssize_t io_read(int fd, void *buf, size_t len, void *userdata)
{
	ssize_t n = read(fd, buf, len);
	struct fuse_in_header *in = buf;

	(void)userdata;
	reply.unique = 0;
	serving.since = 0;
	if (n < (ssize_t)sizeof *in)
		return n;
	serving.nodeid = in->nodeid;
	name_open_file(in, n);
	if (in->opcode < OPCODES) {
		atomic_fetch_add_explicit(&served[in->opcode].n, 1, memory_order_relaxed);
		serving.opcode = in->opcode;
		serving.since = rfs_now_ns();
	}
	if (in->opcode == FUSE_OPEN || in->opcode == FUSE_CREATE) {
		reply.unique = in->unique;
		reply.at = in->opcode == FUSE_CREATE ? sizeof(struct fuse_entry_out) : 0;
		reply.set = reply.clear = 0;
		reply.backing = 0;
		reply.created = NULL;
	} else if (in->opcode == FUSE_INIT &&
		   n >= (ssize_t)(sizeof *in + INIT_IN_FLAGS2 + sizeof(uint32_t))) {
		const unsigned char *arg = (const unsigned char *)(in + 1);
		uint32_t flags, flags2;

		memcpy(&flags, arg + offsetof(struct fuse_init_in, flags), sizeof flags);
		memcpy(&flags2, arg + INIT_IN_FLAGS2, sizeof flags2);
		atomic_store(&io.offers_killpriv, (flags & FUSE_HANDLE_KILLPRIV_V2) != 0);
		atomic_store(&io.offers_passthrough, (flags & INIT_EXT) && (flags2 & INIT2_PASSTHROUGH));
		atomic_store(&io.init_unique, in->unique);
	}
	return n;
}

/* Without KILLPRIV_V2 the kernel sends GETXATTR security.capability before every
 * single write (file_remove_privs), doubling the requests of a write load; with it the
 * super block is SB_NOSEC and the probe happens once per inode.  Clearing set-ID bits
 * becomes ours (fs.c, kill_sxid). */
static void answer_init(struct iovec *iov, int count)
{
	unsigned char *arg;
	uint32_t flags, flags2, depth = STACK_DEPTH;

	if (count < 2 || iov[1].iov_len < INIT_OUT_STACK_DEPTH + sizeof depth)
		return;
	arg = iov[1].iov_base;
	memcpy(&flags, arg + offsetof(struct fuse_init_out, flags), sizeof flags);
	memcpy(&flags2, arg + INIT_OUT_FLAGS2, sizeof flags2);
	if (atomic_load(&io.offers_killpriv))
		flags |= FUSE_HANDLE_KILLPRIV_V2;
	if (io.want && atomic_load(&io.offers_passthrough) && !(flags & FUSE_WRITEBACK_CACHE)) {
		flags |= INIT_EXT;
		flags2 |= INIT2_PASSTHROUGH;
		memcpy(arg + INIT_OUT_STACK_DEPTH, &depth, sizeof depth);
		atomic_store(&io.passthrough, true);
	}
	memcpy(arg + offsetof(struct fuse_init_out, flags), &flags, sizeof flags);
	memcpy(arg + INIT_OUT_FLAGS2, &flags2, sizeof flags2);
}

static void answer_open(struct iovec *iov, int count)
{
	unsigned char *arg;
	uint32_t flags;

	if (count < 2 || iov[1].iov_len < reply.at + OPEN_OUT_SIZE)
		return;
	arg = (unsigned char *)iov[1].iov_base + reply.at;
	memcpy(&flags, arg + OPEN_OUT_FLAGS, sizeof flags);
	flags = (flags | reply.set) & ~reply.clear;
	memcpy(arg + OPEN_OUT_FLAGS, &flags, sizeof flags);
	memcpy(arg + OPEN_OUT_BACKING, &reply.backing, sizeof reply.backing);
}

/* The bdi's readahead, which the kernel sets while it takes the INIT reply. */
static void set_readahead(void)
{
	char path[64], value[16];
	int fd, n;

	if (io.readahead_kb == 0)
		return;
	snprintf(path, sizeof path, "/sys/class/bdi/%u:%u/read_ahead_kb", major(io.mount_dev), minor(io.mount_dev));
	n = snprintf(value, sizeof value, "%u", io.readahead_kb);
	fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0 || write(fd, value, (size_t)n) != n)
		rfs_log("reads ahead 128 KiB, not %u KiB as the real directory's disk: %s: %s", io.readahead_kb, path,
			strerror(errno));
	if (fd >= 0)
		close(fd);
}

static ssize_t io_writev(int fd, struct iovec *iov, int count, void *userdata)
{
	const struct fuse_out_header *out = iov[0].iov_base;
	bool init = false;
	uint64_t created = 0; /* the node of a created file */
	ssize_t n;

	(void)userdata;
	if (out->error == 0) {
		if (reply.unique != 0 && out->unique == reply.unique && (reply.set | reply.clear))
			answer_open(iov, count);
		else if (out->unique == atomic_load_explicit(&io.init_unique, memory_order_relaxed) &&
			 atomic_exchange(&io.init_unique, 0) != 0)
			answer_init(iov, count), init = true;
		/* Known by its node before the kernel has the reply: its RELEASE may come at once. */
		if (reply.created && out->unique == reply.unique && count > 1 &&
		    iov[1].iov_len >= sizeof(struct fuse_entry_out)) {
			created = ((const struct fuse_entry_out *)iov[1].iov_base)->nodeid;
			node_add(created, reply.created);
		}
	}
	if (out->unique != 0)
		answered();
	n = writev(fd, iov, count);
	if (init && n >= 0)
		set_readahead();
	/* A reply the kernel refused is followed by libfuse's own release, which cannot name
	 * the node. */
	if (created && n < 0)
		node_forget(created, reply.created);
	return n;
}

/* With custom I/O libfuse splices only through these. */
static ssize_t io_splice(int fdin, off_t *offin, int fdout, off_t *offout, size_t len, unsigned int flags,
			 void *userdata)
{
	(void)userdata;
	if (fdout == io.devfd)
		answered(); /* a READ's answer, spliced from the real file */
	return splice(fdin, offin, fdout, offout, len, flags);
}

static const struct fuse_custom_io custom_io = {
	.read = io_read,
	.writev = io_writev,
	.splice_receive = io_splice,
	.splice_send = io_splice,
};

int rfs_fuse_io_install(struct fuse_session *se, bool passthrough, unsigned readahead_kb, dev_t mount_dev)
{
	io.devfd = fuse_session_fd(se);
	io.want = passthrough;
	io.readahead_kb = readahead_kb;
	io.mount_dev = mount_dev;
	return fuse_session_custom_io(se, &custom_io, io.devfd);
}

static struct inode_mode **bucket(dev_t dev, ino_t ino)
{
	uint64_t h = ((uint64_t)ino ^ ((uint64_t)dev << 32)) * 0x9e3779b97f4a7c15ull;

	return &io.inodes[h >> 54]; /* 10 bits: INODE_BUCKETS */
}
_Static_assert(INODE_BUCKETS == 1 << 10, "bucket() takes 10 bits");

/* Registers fd as the inode's backing file, once for all its passthrough opens: the
 * kernel refuses two different backing files for one inode. */
static bool backed(struct inode_mode *m, int fd)
{
	static atomic_bool logged;
	struct backing_map map = { .fd = fd };
	int id;

	if (m->backing > 0)
		return true;
	id = ioctl(io.devfd, IOC_BACKING_OPEN, &map);
	if (id > 0) {
		m->backing = id;
		return true;
	}
	/* EPERM (no CAP_SYS_ADMIN), ELOOP (the real file is itself on a stacked file
	 * system): this open is cached, as without passthrough. */
	if (!atomic_exchange(&logged, true))
		rfs_log("read-only opens stay cached: the kernel refused a backing file (%s)", strerror(errno));
	return false;
}

int rfs_open_mode(int fd, const struct stat *st, bool read_only, struct rfs_open_mode **out)
{
	struct rfs_open_mode *om;
	struct inode_mode **head, *m;

	*out = NULL;
	if (!S_ISREG(st->st_mode) || !atomic_load(&io.passthrough))
		return 0;
	om = malloc(sizeof *om);
	if (om == NULL)
		return -ENOMEM;
	pthread_mutex_lock(&io.mu);
	head = bucket(st->st_dev, st->st_ino);
	for (m = *head; m && (m->ino != st->st_ino || m->dev != st->st_dev); m = m->next)
		;
	if (m == NULL) {
		m = calloc(1, sizeof *m);
		if (m == NULL) {
			pthread_mutex_unlock(&io.mu);
			free(om);
			return -ENOMEM;
		}
		*m = (struct inode_mode){ .dev = st->st_dev, .ino = st->st_ino, .next = *head };
		*head = m;
	}
	if (read_only && m->cached == 0 && backed(m, fd)) {
		om->passthrough = true;
		m->passthrough++;
		reply.set |= OPEN_PASSTHROUGH;
		reply.clear |= FOPEN_KEEP_CACHE; /* refused beside passthrough */
		reply.backing = m->backing;
		atomic_fetch_add(&io.passthrough_opens, 1);
	} else {
		om->passthrough = false;
		m->cached++;
	}
	om->inode = m;
	pthread_mutex_unlock(&io.mu);
	*out = om;
	return 0;
}

void rfs_open_release(struct rfs_open_mode *om)
{
	struct inode_mode *m, **p;

	if (om == NULL)
		return;
	m = om->inode;
	pthread_mutex_lock(&io.mu);
	if (om->passthrough && --m->passthrough == 0) {
		/* The kernel let go of it when it released its last passthrough file, before
		 * telling us. */
		ioctl(io.devfd, IOC_BACKING_CLOSE, &(uint32_t){ (uint32_t)m->backing });
		m->backing = 0;
	} else if (!om->passthrough) {
		m->cached--;
	}
	if (m->passthrough == 0 && m->cached == 0) {
		for (p = bucket(m->dev, m->ino); *p != m; p = &(*p)->next)
			;
		*p = m->next;
		free(m);
	}
	pthread_mutex_unlock(&io.mu);
	free(om);
}

uint64_t rfs_passthrough_opens(void)
{
	return atomic_load(&io.passthrough_opens);
}

void rfs_fuse_io_served(char *out, size_t size)
{
	size_t k = 0;

	out[0] = '\0';
	for (int op = 0; op < OPCODES; op++) {
		uint64_t n = atomic_load_explicit(&served[op].n, memory_order_relaxed);
		uint64_t ns = atomic_load_explicit(&served[op].ns, memory_order_relaxed);
		int w;

		if (n == 0)
			continue;
		w = opcode_names[op] ? snprintf(out + k, size - k, " %s=%" PRIu64 ":%" PRIu64, opcode_names[op], n, ns / 1000)
				     : snprintf(out + k, size - k, " op%d=%" PRIu64 ":%" PRIu64, op, n, ns / 1000);
		/* Whole entries only: a cut one would read as a smaller count. */
		if (w < 0 || (size_t)w >= size - k) {
			out[k] = '\0';
			break;
		}
		k += (size_t)w;
	}
}
