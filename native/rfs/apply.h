/* Performing operations on the secondary's copy (apply.c): the receiver (repl_recv.c)
 * applies what the stream carries through an applier; the full sync (sync.c) asks
 * rfs_query() the same questions of the primary's tree as of the secondary's, so that
 * both sides are described by one code.
 */
#ifndef HAKIT_RFS_APPLY_H
#define HAKIT_RFS_APPLY_H

#include <stddef.h>
#include <stdint.h>

#include "op.h"

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

/* Perform one operation under rootfd; 0 or -errno.  Refuses absolute paths, "." / ".."
 * components and symlinks met on the way (openat2 RESOLVE_BENEATH |
 * RESOLVE_NO_SYMLINKS): a peer speaking garbage can only fail, never escape. */
int rfs_apply(int rootfd, const struct rfs_op *op);

/* Answer a query opcode under rootfd (query.h has the answers' layout): 0 and *len
 * bytes in reply, or -errno.  cap: at least RFS_REPLY_MAX for any answer to fit. */
int rfs_query(int rootfd, const struct rfs_op *op, void *reply, size_t cap, size_t *len);

/* The xattr digest of an XATTRS answer. */
uint64_t rfs_xattr_digest(const void *answer, size_t len);

#endif
