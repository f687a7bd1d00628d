/* The full synchronisation, primary side (sync.c): makes the secondary's tree identical
 * to the primary's while the application keeps working through the mount.  Started by
 * `fullsync` on the control socket; runs in a thread of its own.
 */
#ifndef HAKIT_RFS_SYNC_H
#define HAKIT_RFS_SYNC_H

#include <stdbool.h>
#include <stddef.h>

#include "exclude.h"
#include "dirty.h"
#include "fs.h"
#include "repl_send.h"

struct rfs_sync;

#define RFS_NBREI_MAX 16

struct rfs_sync_config {
	int rootfd;             /* the replicated directory beneath the mount */
	struct rfs_repl *repl;
	struct rfs_fs *fs;
	struct rfs_dirty *dirty; /* the journal (dirty.h): a successful run makes it clean; or NULL */
	bool xattr;             /* extended attributes are replicated: compare them too */
	const struct rfs_exclude *exclude; /* neither sent nor purged there (exclude.h), or NULL */
	int nbrei;              /* threads synchronising regular files; 1: the walk's own */
	int bw_percent;         /* the cap, as rfs_sync_set_bw takes it */
	uint64_t bw_allowed;
	/* From the sync's thread: a "progress ..." line (at most twice a second), and the
	 * end of a run (rfs_sync_result then tells how it went). */
	void (*progress)(void *arg, const char *line);
	void (*done)(void *arg);
	void *arg;
};

struct rfs_sync *rfs_sync_new(const struct rfs_sync_config *cfg);
/* Cancels a run and waits for its thread. */
void rfs_sync_free(struct rfs_sync *s);

enum rfs_sync_mode {
	RFS_SYNC_FULL,        /* the whole tree, block checksums compared */
	RFS_SYNC_INCREMENTAL, /* only what the journal marked */
	RFS_SYNC_ESTIMATE,    /* a full comparison that sends nothing: what a full sync would send */
};

/* Starts a run: 0, -EBUSY (one is running), -ENOTCONN (no secondary attached) or, for
 * an incremental one, -ENODATA (the journal is not recording).  tag (NULL: none): when
 * the run succeeds, the journal becomes clean with this lineage. */
int rfs_sync_start(struct rfs_sync *s, enum rfs_sync_mode mode, const uint64_t *tag);

/* The last run's reply line, without newline: "ok files=N bytes_scanned=M bytes_sent=K
 * elapsed_ms=T" (an estimate: "ok mode=compare paths=N bytes=B bytes_scanned=M
 * elapsed_ms=T") or "error <reason>". */
void rfs_sync_result(struct rfs_sync *s, char *out, size_t size);

/* The bandwidth cap, for the running sync too: while the application writes, the sync's
 * data is at most percent % of the data sent (1-100; 100: no share); and at most allowed
 * bytes per second (0: no limit).  docs/replication.md, "Tuning". */
void rfs_sync_set_bw(struct rfs_sync *s, int percent, uint64_t allowed);
void rfs_sync_get_bw(struct rfs_sync *s, int *percent, uint64_t *allowed);

/* " sync_state=idle|running|done|failed sync_files_scanned=... sync_elapsed_ms=...". */
void rfs_sync_keys(struct rfs_sync *s, char *out, size_t size);

#endif
