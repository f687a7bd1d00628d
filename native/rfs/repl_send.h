/* The replication stream, primary side (repl_send.c): the FUSE layer submits every
 * modifying operation; the stream carries it to the secondary over `nbremconn` TCP
 * connections, in order for any one file and in order across namespace operations.
 *
 * While no secondary is attached (the module is ALONE), submit gives the op to the
 * journal (dirty.h) and returns 0 at once: the application is never blocked by a
 * missing peer; so do ops a dying session never had acked.  A secondary that stops answering
 * for `send_timeout_ms` is detached; submits waiting on it return 0 and the detach is
 * reported through the event callback.
 */
#ifndef HAKIT_RFS_REPL_SEND_H
#define HAKIT_RFS_REPL_SEND_H

#include <stdint.h>

#include "dirty.h"
#include "op.h"

struct rfs_repl;

/* The stream's credentials (chan.h); NULL: plain TCP. */
struct rfs_creds;

struct rfs_repl_config {
	int nbremconn;                 /* 1..16 */
	int send_timeout_ms;
	int compress;                  /* lz4 for write data where it pays */
	size_t max_queued_bytes;       /* buffered writes beyond this block the writer */
	int flush_delay_ms;            /* a queued write is on the wire within this */
	const struct rfs_creds *creds; /* NULL: plain TCP, as a test of the core wants */
	/* The primary's journal (dirty.h), or NULL: told about detaches and given every op
	 * the secondary may not have applied. */
	struct rfs_dirty *dirty;
	/* A session that dies by itself (the secondary failed an operation, stopped
	 * answering, closed) fences: nothing is acknowledged without the secondary (see
	 * rfs_repl_fenced) until the caller has made its copy known to be outdated.  0: such
	 * ops return at once (the journal has them). */
	int fence;
	/* Called from the stream's threads: "detached <reason>" when the peer is lost. */
	void (*event)(void *arg, const char *what);
	void *event_arg;
};

struct rfs_repl_stats {
	uint64_t ops_sent, bytes_sent, bytes_on_wire, acks, queued_bytes;
	uint64_t attaches;  /* successful attaches so far: a change means a new session */
	uint64_t failures;  /* operations the secondary failed to apply, which detached it */
	int attached;
	int fencing;        /* ops wait for rfs_repl_fenced() */
};

struct rfs_repl *rfs_repl_new(const struct rfs_repl_config *cfg);
void rfs_repl_free(struct rfs_repl *r);

/* Connect to a receiver; 0 or -errno.  Replaces a previous attachment. */
int rfs_repl_attach(struct rfs_repl *r, const char *host, int port);
/* Also ends a fence: the caller decided the secondary is gone. */
void rfs_repl_detach(struct rfs_repl *r);
/* The secondary is known not to be a good copy any more (or cannot be told and the
 * caller goes on alone): ops held by the fence are acknowledged without it. */
void rfs_repl_fenced(struct rfs_repl *r);

/* 0, or the -errno the secondary got applying it (the primary already did it: the
 * caller logs the divergence, it does not fail the application).  Only failures a
 * sync in progress expects reach the caller; any other detaches the secondary as soon
 * as its ack arrives, waited for or not ("detached the secondary failed to <op> <path>:
 * <error>"), its op going to the journal.  Fencing, an op acknowledged without the
 * secondary waits for rfs_repl_fenced(). */
int rfs_repl_submit(struct rfs_repl *r, const struct rfs_op *op, enum rfs_wait wait);

/* The secondary acked op with err after the primary did it: the copies differ.  If the
 * journal holds the secondary for identical (CLEAN), it is detached (event "detached
 * the secondary failed to <op> <path>: <err>"), so that it is not taken for an
 * identical copy, and op's marks go to the journal (recording from then on), so that
 * the reintegration that follows repairs that path.  While a sync catches the
 * secondary up, failures are expected (it lacks what the sync has not reached yet):
 * nothing is done.  Called by the submitter, holding no lock of the stream. */
void rfs_repl_diverged(struct rfs_repl *r, const struct rfs_op *op, int err);

/* rfs_repl_submit(op, wait) in two halves, so that the caller works while the
 * secondary applies: rfs_repl_send() puts op on the wire and returns without waiting;
 * rfs_repl_wait() returns its result (and frees it).  Only for an op on one path
 * without data, waited for (RFS_WAIT_APPLIED or RFS_WAIT_DURABLE).  NULL when nothing
 * was sent (nothing attached, a bad op, no memory): rfs_repl_wait(NULL) is 0.  Every
 * non-NULL send must be waited for. */
struct rfs_repl_pending;
struct rfs_repl_pending *rfs_repl_send(struct rfs_repl *r, const struct rfs_op *op, enum rfs_wait wait);
int rfs_repl_wait(struct rfs_repl_pending *p);

/* Ask the secondary a query opcode (query.h); its answer lands in reply (cap bytes,
 * *len set).  Applied in order after everything submitted before on the same path.
 * 0, the secondary's -errno, -EOVERFLOW (answer longer than cap), or -ENOTCONN when no
 * secondary is attached or it went away before answering. */
int rfs_repl_query(struct rfs_repl *r, const struct rfs_op *op, void *reply, size_t cap, size_t *len);

void rfs_repl_stats(struct rfs_repl *r, struct rfs_repl_stats *out);

#endif
