/* The one logger of hakit-rfs (log.c).  Lines go to stderr, which the module process
 * keeps in the directory's log file, each "hakit-rfs: " first and written with a single
 * write(2), so that lines of concurrent threads never interleave.
 *
 * Bottom layer (io.h says the order): includes nothing of hakit-rfs, so that any file
 * may log without pulling in the layer that happens to define a logger.
 */
#ifndef HAKIT_RFS_LOG_H
#define HAKIT_RFS_LOG_H

#include <pthread.h>
#include <stdint.h>

void rfs_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* For what a peer can repeat at will (refused connections, failing TLS): at most one
 * line every few seconds per limit, the next one saying how many were left out. */
struct rfs_log_limit {
	pthread_mutex_t mu;
	int64_t last_ns;
	unsigned skipped;
};
#define RFS_LOG_LIMIT_INIT {.mu = PTHREAD_MUTEX_INITIALIZER}

void rfs_log_limited(struct rfs_log_limit *l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
