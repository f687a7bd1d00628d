/* The full synchronisation, primary side (sync.c): makes the secondary's tree identical
 * to the primary's while the application keeps working through the mount.  Started by
 * `fullsync` on the control socket; runs in a thread of its own.
 */
#ifndef HAKIT_RFS_SYNC_H
#define HAKIT_RFS_SYNC_H

#include <stdbool.h>
#include <stddef.h>

#include "fs.h"
#include "rfs_repl.h"

struct rfs_sync;

struct rfs_sync_config {
	int rootfd;             /* the replicated directory beneath the mount */
	struct rfs_repl *repl;
	struct rfs_fs *fs;
	bool xattr;             /* extended attributes are replicated: compare them too */
	/* From the sync's thread: a "progress ..." line (at most twice a second), and the
	 * end of a run (rfs_sync_result then tells how it went). */
	void (*progress)(void *arg, const char *line);
	void (*done)(void *arg);
	void *arg;
};

struct rfs_sync *rfs_sync_new(const struct rfs_sync_config *cfg);
/* Cancels a run and waits for its thread. */
void rfs_sync_free(struct rfs_sync *s);

/* Starts a run: 0, -EBUSY (one is running) or -ENOTCONN (no secondary attached). */
int rfs_sync_start(struct rfs_sync *s);

/* The last run's reply line, without newline: "ok files=N bytes_scanned=M bytes_sent=K
 * elapsed_ms=T" or "error <reason>". */
void rfs_sync_result(struct rfs_sync *s, char *out, size_t size);

/* " sync_state=idle|running|done|failed sync_files_scanned=... sync_elapsed_ms=...". */
void rfs_sync_keys(struct rfs_sync *s, char *out, size_t size);

#endif
