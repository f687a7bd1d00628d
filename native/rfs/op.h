/* One modifying operation on a replicated directory, as the FUSE layer (fs.c) sees it
 * and as the replication stream (repl_send.c) carries it to the secondary, where
 * apply.c performs it on the real directory.  Declared once here for all three; op.c
 * holds the table of opcodes.
 *
 * Paths are relative to the replicated directory's root, without a leading slash,
 * never containing "." or ".." components (the FUSE layer builds them; the receiver
 * refuses anything else).  Times are resolved to absolute values by the primary
 * (UTIME_NOW becomes the primary's clock) so both copies end identical.
 */
#ifndef HAKIT_RFS_OP_H
#define HAKIT_RFS_OP_H

#include <stddef.h>
#include <stdint.h>

enum rfs_opcode {
	RFS_OP_WRITE = 1,   /* path, off, data/data_len */
	RFS_OP_TRUNCATE,    /* path, off = new size */
	RFS_OP_CREATE,      /* path, mode: a new empty regular file (replaces nothing) */
	RFS_OP_MKDIR,       /* path, mode */
	RFS_OP_MKNOD,       /* path, mode (S_IFIFO, S_IFSOCK, S_IFCHR, S_IFBLK), rdev */
	RFS_OP_SYMLINK,     /* path = the link, path2 = its target (taken verbatim) */
	RFS_OP_UNLINK,      /* path */
	RFS_OP_RMDIR,       /* path */
	RFS_OP_RENAME,      /* path -> path2, flags = renameat2 flags */
	RFS_OP_CHMOD,       /* path, mode */
	RFS_OP_CHOWN,       /* path, uid, gid ((uint32_t)-1: unchanged) */
	RFS_OP_UTIMENS,     /* path, atime, mtime */
	RFS_OP_SETXATTR,    /* path, name, data/data_len = value, flags = XATTR_CREATE/REPLACE */
	RFS_OP_REMOVEXATTR, /* path, name */
	RFS_OP_FALLOCATE,   /* path, flags = fallocate mode, off, len */
	RFS_OP_FSYNC,       /* path, flags = 1 for fdatasync: make the file durable on the secondary */
	RFS_OP_SYNCFS,      /* make everything durable on the secondary (barrier) */
	/* Full synchronisation (sync.c).  PURGE changes the tree; the others are queries:
	 * they change nothing and the secondary answers with a reply (query.h). */
	RFS_OP_PURGE,       /* path: remove whatever is there, a directory with all it holds */
	RFS_OP_LIST,        /* path = a directory, off = where to resume (0: the start), flags 1: xattr digests */
	RFS_OP_STAT,        /* path, flags 1: xattr digest: one entry as LIST gives it */
	RFS_OP_SUMS,        /* path, off, len: checksums of its blocks in [off, off+len), flags = log2(block size) */
	RFS_OP_XATTRS,      /* path: its extended attributes, names sorted */
	/* After the queries so that the older opcodes keep their numbers on the wire. */
	RFS_OP_LINK,        /* path = an existing entry, path2 = its new name (a hard link);
			     * flags RFS_LINK_REPLACE: whatever path2 is goes first, unless it is
			     * path's inode already (the full sync) */
	RFS_OP_MAX
};

#define RFS_LINK_REPLACE 1u

/* What one op may carry (the stream refuses more, the receiver takes no more). */
#define RFS_PATH_MAX 4096           /* path and path2, NUL included (PATH_MAX) */
#define RFS_NAME_MAX 256            /* xattr name, NUL included (XATTR_NAME_MAX + 1) */
#define RFS_DATA_MAX (1u << 20)     /* one WRITE's data (longer writes are split), xattr values */

struct rfs_op {
	uint16_t code;      /* enum rfs_opcode */
	uint32_t flags;
	uint32_t mode;
	uint32_t uid, gid;
	uint64_t rdev;
	int64_t off;
	uint64_t len;
	int64_t atime_sec, atime_nsec, mtime_sec, mtime_nsec;
	const char *path;
	const char *path2;  /* NULL when unused */
	const char *name;   /* NULL when unused */
	const void *data;
	size_t data_len;
};

/* How long rfs_repl_submit() blocks. */
enum rfs_wait {
	RFS_WAIT_QUEUED,  /* buffered write: returns once queued; sent within the documented delay */
	RFS_WAIT_APPLIED, /* namespace ops, close, strict writes: the secondary performed it */
	RFS_WAIT_DURABLE, /* fsync, O_SYNC/O_DSYNC writes: the secondary made it durable */
};

const char *rfs_opcode_name(uint16_t code);

/* What each opcode carries and how the stream orders it (op.c has the table). */
enum {
	RFS_SHAPE_PATH = 1 << 0,    /* path is required */
	RFS_SHAPE_PATH2 = 1 << 1,   /* path2 is required */
	RFS_SHAPE_NAME = 1 << 2,    /* name is required */
	RFS_SHAPE_DATA = 1 << 3,    /* data may be present (absent for every other opcode) */
	RFS_SHAPE_ROOT = 1 << 4,    /* path may be "", the replicated directory itself */
	/* Can change what other paths refer to (a new parent, a moved or removed subtree,
	 * everything for syncfs): the stream sends it as a barrier, see repl_send.c. */
	RFS_SHAPE_BARRIER = 1 << 5,
	/* Changes nothing; the ack carries the answer (query.h) and the submitter waits. */
	RFS_SHAPE_QUERY = 1 << 6,
};

/* The RFS_SHAPE_* bits of code; 0 for an unknown opcode. */
unsigned rfs_op_shape(uint16_t code);

/* An error a secondary's copy gives while a sync is still making it identical (an entry
 * missing, already there, or of another type), as opposed to one of the copy's file
 * system (full, read-only, failing, over quota, out of descriptors). */
int rfs_err_of_incomplete_tree(int err);

#endif
