/* The replication stream, primary side (repl.c): the FUSE layer submits every
 * modifying operation; the stream carries it to the secondary over `nbremconn` TCP
 * connections, in order for any one file and in order across namespace operations.
 *
 * While no secondary is attached (the module is ALONE), submit gives the op to the
 * journal (dirty.h) and returns 0 at once: the application is never blocked by a
 * missing peer; so do ops a dying session never had acked.  A secondary that stops answering
 * for `send_timeout_ms` is detached; submits waiting on it return 0 and the detach is
 * reported through the event callback.
 */
#ifndef HAKIT_RFS_REPL_H
#define HAKIT_RFS_REPL_H

#include <stdint.h>

#include "dirty.h"
#include "rfs_op.h"

struct rfs_repl;

/* What a node proves and checks on every stream connection (chan.c): the module key
 * (a challenge-response, both ways) and TLS 1.3 with the cluster's certificates.
 * Loaded once, shared by all connections of one role, read-only once loaded. */
struct rfs_creds;

struct rfs_creds_files {
	const char *key_file;                  /* the module key: 32 bytes as hex, one line */
	const char *tls_cert, *tls_key, *tls_ca; /* all three or none: PEM files */
};

/* NULL with one line in err (a file missing, unreadable or unusable).  server: the
 * receiver's side. */
struct rfs_creds *rfs_creds_load(const struct rfs_creds_files *f, int server, char *err, size_t errlen);
void rfs_creds_free(struct rfs_creds *c);

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

/* Ask the secondary a query opcode (rfs_query.h); its answer lands in reply (cap bytes,
 * *len set).  Applied in order after everything submitted before on the same path.
 * 0, the secondary's -errno, -EOVERFLOW (answer longer than cap), or -ENOTCONN when no
 * secondary is attached or it went away before answering. */
int rfs_repl_query(struct rfs_repl *r, const struct rfs_op *op, void *reply, size_t cap, size_t *len);

void rfs_repl_stats(struct rfs_repl *r, struct rfs_repl_stats *out);

/* What a receiver took in: bytes of the stream read from its connections (after TLS),
 * operations applied and queries answered, and operations it failed to apply.  Updated
 * with relaxed atomics: read them with __atomic_load_n.  failed (or NULL) hears each
 * failure ("failed to <op> <path>: <error>"), the first ones and then fewer and fewer
 * (when the count is a power of two), as the receiver's log does. */
struct rfs_rx_stats {
	uint64_t bytes, ops, failures;
	void (*failed)(void *arg, const char *what);
	void *arg;
};

/* Secondary side (repl.c + apply.c): accept connections on listen_fd and apply what
 * they carry under rootfd until *stop becomes non-zero.  A connection that does not
 * pass creds (NULL: none asked) is closed before its first frame.  stats (or NULL)
 * counts what came in.  0 or -errno. */
int rfs_receiver_serve(int rootfd, int listen_fd, volatile int *stop, const struct rfs_creds *creds,
		       struct rfs_rx_stats *stats);

/* Perform one operation under rootfd (apply.c); 0 or -errno.  Refuses absolute paths,
 * "." / ".." components and symlinks met on the way (openat2 RESOLVE_BENEATH |
 * RESOLVE_NO_SYMLINKS): a peer speaking garbage can only fail, never escape. */
int rfs_apply(int rootfd, const struct rfs_op *op);

#endif
