/* The replication stream, secondary side (repl_recv.c): the receiver accepts the
 * primary's connections, applies what they carry (apply.h) and acks each frame.
 */
#ifndef HAKIT_RFS_REPL_RECV_H
#define HAKIT_RFS_REPL_RECV_H

#include <stdint.h>

/* The stream's credentials (chan.h); NULL: none asked. */
struct rfs_creds;

/* What a receiver took in: bytes of the stream read from its connections (after TLS),
 * operations applied and queries answered, operations it failed to apply, and when it
 * last heard a primary (an idle stream carries keepalives, proto.h).  Updated
 * with relaxed atomics: read them with __atomic_load_n.  failed (or NULL) hears each
 * failure ("failed to <op> <path>: <error>"), the first ones and then fewer and fewer
 * (when the count is a power of two), as the receiver's log does. */
struct rfs_rx_stats {
	uint64_t bytes, ops, failures;
	int64_t last_ns;  /* rfs_now_ns() when bytes last came from a primary; 0: never */
	void (*failed)(void *arg, const char *what);
	void *arg;
};

/* Accept connections on listen_fd and apply what they carry under rootfd until *stop
 * becomes non-zero.  A connection that does not pass creds (NULL: none asked) is
 * closed before its first frame.  stats (or NULL) counts what came in.  0 or -errno. */
int rfs_receiver_serve(int rootfd, int listen_fd, volatile int *stop, const struct rfs_creds *creds,
		       struct rfs_rx_stats *stats);

#endif
