/* Entries of a replicated directory left out of replication (exclude.c): the module's
 * <notreplicated> elements, given to hakit-rfs as --exclude, --only and --exclude-path.
 *
 * Paths are as the stream has them (op.h): relative to the replicated directory,
 * no leading slash, "" for the directory itself, which is always replicated.
 *  - an exclude regex (POSIX extended, case sensitive, matched with regexec: unanchored
 *    unless it says ^ or $) leaves out every entry whose path, or the path of one of
 *    its parent directories, it matches: `.*\.tmp$` leaves out "a.tmp" and "d.tmp/x",
 *    not "conf/config.tmp.swap";
 *  - an exact path leaves out that entry and everything beneath it;
 *  - with one or more include-only regexes (the module's regexpath="!..."), a
 *    non-directory entry is replicated only if its path matches one of them;
 *    directories are, so that the tree the kept files live in exists on the secondary.
 * The excludes win over the include-only regexes.
 *
 * Built once before the mount, read-only afterwards: any thread may test paths.
 */
#ifndef HAKIT_RFS_EXCLUDE_H
#define HAKIT_RFS_EXCLUDE_H

#include <stdbool.h>
#include <stddef.h>

struct rfs_exclude;

enum rfs_exclude_kind {
	RFS_EXCLUDE_REGEX,  /* --exclude REGEX */
	RFS_EXCLUDE_ONLY,   /* --only REGEX */
	RFS_EXCLUDE_PATH,   /* --exclude-path PATH */
};

/* Adds one rule to *x, made on the first call (*x NULL: no rule, nothing excluded).
 * 0, or -1 with a one-line reason in err ("--exclude '(': Unmatched ( or \\(");
 * -ENOMEM is reported the same way. */
int rfs_exclude_add(struct rfs_exclude **x, enum rfs_exclude_kind kind, const char *rule, char *err,
		    size_t err_size);
void rfs_exclude_free(struct rfs_exclude *x);

/* What the rules say of a path whose type is not known. */
enum rfs_verdict {
	RFS_REPLICATED,
	RFS_EXCLUDED,
	RFS_REPLICATED_IF_DIR,  /* left out by the include-only rule alone: kept if a directory */
};

enum rfs_verdict rfs_exclude_verdict(const struct rfs_exclude *x, const char *path);

/* Is the entry at path left out?  is_dir: it is a directory.  NULL x: false, at once.
 * Costs one regexec per exclude regex per path component. */
bool rfs_is_excluded(const struct rfs_exclude *x, const char *path, bool is_dir);

/* The same for an entry whose parent directories are known to be replicated (a walk
 * from the root that does not enter excluded directories): the entry alone is tested. */
bool rfs_is_excluded_entry(const struct rfs_exclude *x, const char *path, bool is_dir);

#endif
