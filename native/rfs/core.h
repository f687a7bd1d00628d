/* Shared by the rfs core's own files (ops.c, repl.c, apply.c): not an interface for
 * fs.c or main.c, which use rfs_op.h and rfs_repl.h only. */
#ifndef HAKIT_RFS_CORE_H
#define HAKIT_RFS_CORE_H

#include <stddef.h>
#include <stdint.h>

#include "io.h"
#include "rfs_op.h"

/* What each opcode carries and how the stream orders it (ops.c has the table). */
enum {
	RFS_SHAPE_PATH = 1 << 0,    /* path is required */
	RFS_SHAPE_PATH2 = 1 << 1,   /* path2 is required */
	RFS_SHAPE_NAME = 1 << 2,    /* name is required */
	RFS_SHAPE_DATA = 1 << 3,    /* data may be present (absent for every other opcode) */
	RFS_SHAPE_ROOT = 1 << 4,    /* path may be "", the replicated directory itself */
	/* Can change what other paths refer to (a new parent, a moved or removed subtree,
	 * everything for syncfs): the stream sends it as a barrier, see repl.c. */
	RFS_SHAPE_BARRIER = 1 << 5,
	/* Changes nothing; the ack carries the answer (rfs_query.h) and the submitter waits. */
	RFS_SHAPE_QUERY = 1 << 6,
};

/* The RFS_SHAPE_* bits of code; 0 for an unknown opcode. */
unsigned rfs_op_shape(uint16_t code);

/* The receiver's side of apply.c: rfs_apply() plus a cache of open fds for writes, so
 * that a stream of small writes to one file does not open and close it per op.
 * Thread-safe; one per root. */
struct rfs_applier;

/* NULL and errno set on failure.  cache_max 0: no cache. */
struct rfs_applier *rfs_applier_new(int rootfd, int cache_max);
void rfs_applier_free(struct rfs_applier *a);
/* rfs_apply(), plus with durable set: fsync what the op changed before returning. */
int rfs_applier_apply(struct rfs_applier *a, const struct rfs_op *op, int durable);
/* rfs_query() with the applier's root (a query opcode only). */
int rfs_applier_query(struct rfs_applier *a, const struct rfs_op *op, void *reply, size_t cap, size_t *len);
/* Close cached fds unused for idle_ns (0: all of them, e.g. when a new session starts). */
void rfs_applier_expire(struct rfs_applier *a, int64_t idle_ns);

#endif
