/* The FUSE layer of hakit-rfs (fs.c): one replicated directory served through a FUSE
 * mount laid over the directory itself, from a descriptor of the real directory opened
 * before the mount.  On the primary every modifying operation is done on the real
 * directory and submitted to the replication stream (repl_send.h); on the secondary the
 * mount is read-only and the receiver writes underneath it.
 */
#ifndef HAKIT_RFS_FS_H
#define HAKIT_RFS_FS_H

#include <stdbool.h>
#include <stdint.h>

#include "exclude.h"
#include "repl_send.h"

struct rfs_fs;

struct rfs_fs_config {
	const char *dir;        /* absolute path of the directory: the mount point */
	int rootfd;             /* that directory, opened before the mount; stays the caller's */
	struct rfs_repl *repl;  /* the primary's stream; NULL: secondary, mounted read-only */
	struct rfs_dirty *dirty; /* the primary's journal (dirty.h), or NULL */
	bool strict;            /* every write waits until the secondary applied it */
	bool xattr;             /* extended attributes and POSIX ACLs served and replicated */
	bool passthrough;       /* secondary: opens served by the kernel from the real file (fuse_io.h) */
	const struct rfs_exclude *exclude; /* entries left out of replication (exclude.h), or NULL */
	const char *mountpoint; /* the path given to mount(2), if not dir (the mount lands on top of D all the same) */
	/* A death without unmounting leaves the mount dead (every access fails with
	 * ENOTCONN) instead of uncovering the directory beneath: the primary's, whose
	 * directory must never be written without interception. */
	bool keep_dead_mount;
};

struct rfs_fs_counters {
	uint64_t writes, write_bytes; /* data writes replicated */
	uint64_t namespace_ops;       /* operations the application waited on the secondary for */
	uint64_t syncs;               /* fsync, O_SYNC writes, closes of O_SYNC files: durable on the secondary */
	uint64_t closes;              /* other closes after writes: applied on the secondary */
	uint64_t getxattrs;           /* GETXATTR requests served (the kernel's killpriv probe included) */
	uint64_t diverged;            /* operations the secondary failed to apply */
	uint64_t passthrough_opens;   /* read-only opens the kernel served from the real file */
};

/* Mounts over cfg->dir; 0 or -errno, logged. */
int rfs_fs_mount(const struct rfs_fs_config *cfg, struct rfs_fs **out);

/* Serves requests with a pool of threads until rfs_fs_stop() (returns 0) or until the
 * mount disappears from outside (returns -ENOTCONN).  Call from one thread only. */
int rfs_fs_run(struct rfs_fs *fs);

/* Any thread: makes rfs_fs_run() return; returns once it has. */
void rfs_fs_stop(struct rfs_fs *fs);

void rfs_fs_counters(struct rfs_fs *fs, struct rfs_fs_counters *out);

/* Unmounts (exactly this mount, never what lies beneath) and frees. */
void rfs_fs_free(struct rfs_fs *fs);

/* For the full sync (sync.c), which reads the real directory while the application
 * works through the mount (fs.c says how the two are ordered).  spath: a path as the
 * stream has it.  A step on spath excludes every live modifying operation on spath and,
 * unless ns_held, every rename. */
void rfs_fs_step_begin(struct rfs_fs *fs, const char *spath, bool ns_held);
void rfs_fs_step_end(struct rfs_fs *fs, const char *spath, bool ns_held);
/* Holds renames off (the steps then pass ns_held), or lets them go again. */
void rfs_fs_hold_renames(struct rfs_fs *fs, bool hold);
/* Start (true) or stop recording the paths renames move from and to; both forget what
 * was recorded.  take returns what was recorded since the last take (n paths, NULL
 * entries skipped; the caller frees each and the array) and whether some were lost. */
void rfs_fs_track_moves(struct rfs_fs *fs, bool on);
char **rfs_fs_take_moves(struct rfs_fs *fs, size_t *n, bool *overflow);

#endif
