/* The opcode table shared by the stream (repl_send.c, repl_recv.c) and the receiver's
 * workers (apply.c): see op.h. */
#include <errno.h>
#include <stddef.h>

#include "op.h"

#define P RFS_SHAPE_PATH
#define P2 RFS_SHAPE_PATH2
#define N RFS_SHAPE_NAME
#define D RFS_SHAPE_DATA
#define R RFS_SHAPE_ROOT
#define B RFS_SHAPE_BARRIER
#define Q RFS_SHAPE_QUERY

static const struct {
	const char *name;
	unsigned shape;
} ops[RFS_OP_MAX] = {
	[RFS_OP_WRITE] = {"write", P | D},
	[RFS_OP_TRUNCATE] = {"truncate", P},
	[RFS_OP_CREATE] = {"create", P},
	[RFS_OP_MKDIR] = {"mkdir", P | B},
	[RFS_OP_MKNOD] = {"mknod", P},
	[RFS_OP_SYMLINK] = {"symlink", P | P2},
	[RFS_OP_UNLINK] = {"unlink", P},
	[RFS_OP_RMDIR] = {"rmdir", P | B},
	[RFS_OP_RENAME] = {"rename", P | P2 | B},
	[RFS_OP_CHMOD] = {"chmod", P | R},
	[RFS_OP_CHOWN] = {"chown", P | R},
	[RFS_OP_UTIMENS] = {"utimens", P | R},
	[RFS_OP_SETXATTR] = {"setxattr", P | R | N | D},
	[RFS_OP_REMOVEXATTR] = {"removexattr", P | R | N},
	[RFS_OP_FALLOCATE] = {"fallocate", P},
	[RFS_OP_FSYNC] = {"fsync", P | R},
	[RFS_OP_SYNCFS] = {"syncfs", B},
	/* Not a barrier: the full sync purges a path only where the primary has no directory,
	 * so no operation below it can be in flight on another connection (sync.c). */
	[RFS_OP_PURGE] = {"purge", P},
	[RFS_OP_LIST] = {"list", P | R | Q},
	[RFS_OP_STAT] = {"stat", P | R | Q},
	[RFS_OP_SUMS] = {"sums", P | Q},
	[RFS_OP_XATTRS] = {"xattrs", P | R | Q},
	/* A barrier: it names an existing inode by another path, so everything queued on the
	 * first name is applied before it (repl_send.c routes by path, not by inode). */
	[RFS_OP_LINK] = {"link", P | P2 | B},
};

_Static_assert(RFS_OP_LINK + 1 == RFS_OP_MAX, "a row above for every opcode");

const char *rfs_opcode_name(uint16_t code)
{
	return code < RFS_OP_MAX && ops[code].name ? ops[code].name : "unknown";
}

unsigned rfs_op_shape(uint16_t code)
{
	return code < RFS_OP_MAX ? ops[code].shape : 0;
}

int rfs_err_of_incomplete_tree(int err)
{
	switch (err < 0 ? -err : err) {
	case ENOENT:
	case ENOTDIR:
	case EISDIR:
	case EEXIST:
	case ENOTEMPTY:
	case ELOOP:
		return 1;
	default:
		return 0;
	}
}
