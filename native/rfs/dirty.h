/* What changed on the primary while the secondary could not hear it (dirty.c): the
 * dirty-block bitmaps and the namespace journal that make reintegration incremental.
 *
 * Every mark names a path (as the stream has it) and is a pure union: marks never
 * cancel each other, so their order does not matter (a rename marks both parents'
 * names and the whole entry it produced, instead of re-keying what lay beneath).
 *
 * Two records of the same marks:
 * - in memory, exact: data marks per 4 KiB block (RFS_DIRTY_BLOCK).  The resync sends
 *   these blocks as they are now, without comparing anything.
 * - on disk (the journal in the state directory), coarse and written ahead: before an
 *   operation is done on the real directory its marks are durable (fdatasync), data at
 *   the granularity of 16 MiB extents (RFS_DIRTY_EXTENT), each mark once.  After a crash
 *   the journal gives the marks back, data extents as suspects (compared by checksum).
 *   A clean stop (rfs_dirty_free) rewrites the journal with the exact marks.
 *
 * States:
 *   INVALID: no lineage; the next sync must be a full one.  Nothing is recorded.
 *   CLEAN(tag): a sync made the secondary identical and it is attached; nothing is
 *     recorded (the stream carries every change); no journal on disk.
 *   RECORDING(tag): the secondary is away, or a sync is catching it up; every
 *     operation's marks are recorded, in memory and in the journal.
 * tag: the lineage the marks are relative to (chosen by the module, see mirror.py):
 * the copy that was identical to this one when recording began.
 */
#ifndef HAKIT_RFS_DIRTY_H
#define HAKIT_RFS_DIRTY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "op.h"

#define RFS_DIRTY_BLOCK 4096
#define RFS_DIRTY_EXTENT (16u << 20)

enum rfs_dirty_state { RFS_DIRTY_INVALID, RFS_DIRTY_CLEAN, RFS_DIRTY_RECORDING };

enum {
	RFS_MARK_ENTRY = 1 << 0,    /* the whole entry, a directory with all it holds */
	RFS_MARK_CHILDREN = 1 << 1, /* a directory's names (added, removed, replaced) */
	RFS_MARK_ATTRS = 1 << 2,    /* owner, mode, times, xattrs; a file's size */
	RFS_MARK_DATA = 1 << 3,     /* a file's blocks: ranges, exact */
	RFS_MARK_SUSPECT = 1 << 4,  /* a file's blocks: ranges to compare (after a crash) */
};

/* len UINT64_MAX - off: from off to wherever the file ends (a truncation). */
struct rfs_range {
	uint64_t off, len;
};

/* One path's marks, in a snapshot. */
struct rfs_dirty_entry {
	char *path;
	unsigned marks;                  /* RFS_MARK_* */
	struct rfs_range *data;          /* sorted, merged, block-aligned: RFS_MARK_DATA */
	size_t ndata;
	struct rfs_range *suspect;       /* sorted, merged: RFS_MARK_SUSPECT */
	size_t nsuspect;
};

/* Every path with marks, sorted by strcmp (a directory before what it holds). */
struct rfs_dirty_snapshot {
	struct rfs_dirty_entry *e;
	size_t n;
	uint64_t data_bytes, suspect_bytes; /* sums of the bounded ranges */
	uint64_t detaches;                  /* rfs_dirty_detached() calls so far */
};

struct rfs_dirty;

/* Opens the state directory (created if missing) and loads the journal a previous run
 * left: RECORDING(tag) if it is complete, else INVALID.  0 or -errno (logged). */
int rfs_dirty_open(const char *state_dir, struct rfs_dirty **out);

/* A clean stop: nothing is in progress any more.  If RECORDING, the journal is
 * rewritten (temporary file, fsync, rename) with the exact marks, then freed. */
void rfs_dirty_free(struct rfs_dirty *d);

enum rfs_dirty_state rfs_dirty_state(struct rfs_dirty *d, uint64_t *tag);

/* INVALID -> RECORDING(tag) with no marks: this copy is identical to the lineage tag
 * (a secondary promoted with an in-sync copy).  Before any operation is served.
 * 0, -EALREADY (not INVALID) or -errno writing the journal. */
int rfs_dirty_adopt(struct rfs_dirty *d, uint64_t tag);

/* The secondary was lost: CLEAN(tag) -> RECORDING(tag) (INVALID and RECORDING stay).
 * The journal is complete (survives a crash as RECORDING) only once every operation
 * begun before this call has ended: a thread of dirty.c waits for them.  Any thread,
 * any lock held: it never blocks. */
void rfs_dirty_detached(struct rfs_dirty *d);

/* Brackets every modifying operation on the primary, from before it is done on the
 * real directory to after it was submitted.  begin records op's marks when RECORDING
 * (durably: a journal write fails -> logged, INVALID; the operation goes on).  The
 * ticket is the caller's (no allocation). */
struct rfs_dirty_ticket {
	int epoch;
};
void rfs_dirty_begin(struct rfs_dirty *d, const struct rfs_op *op, struct rfs_dirty_ticket *t);
void rfs_dirty_end(struct rfs_dirty *d, const struct rfs_dirty_ticket *t);

/* An operation the secondary may not have applied (submitted while detached, or
 * un-acked when the session died): its marks, when not INVALID. */
void rfs_dirty_mark(struct rfs_dirty *d, const struct rfs_op *op);

/* The marks now (RECORDING; else an empty snapshot).  Recording goes on. */
int rfs_dirty_snapshot(struct rfs_dirty *d, struct rfs_dirty_snapshot *out);
void rfs_dirty_snapshot_free(struct rfs_dirty_snapshot *s);

/* A sync that began at snapshot `since` made the secondary identical and it stays
 * attached: CLEAN(tag), every mark forgotten, the journal removed.  -ESTALE (nothing
 * changes) if the secondary was lost since: what the lost session carried is marked. */
int rfs_dirty_synced(struct rfs_dirty *d, uint64_t tag, const struct rfs_dirty_snapshot *since);

/* " journal=invalid|clean|recording journal_tag=T dirty_paths=N dirty_bytes=B" */
void rfs_dirty_keys(struct rfs_dirty *d, char *out, size_t size);

#endif
