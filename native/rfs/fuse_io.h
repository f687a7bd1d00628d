/* The FUSE session's I/O with the kernel (fuse_io.c): what libfuse 3.14 cannot ask of
 * this kernel, added on the wire, and how each open of a regular file is served.
 *
 * libfuse 3.14 speaks protocol 7.36: it cannot negotiate FUSE_HANDLE_KILLPRIV_V2 nor
 * FUSE_PASSTHROUGH (7.40), nor put a backing file in an OPEN reply.  The session's
 * reads and writes pass through fuse_io's custom I/O, which adds those to the INIT
 * reply and to the OPEN replies fs.c asks for.  One mount per process: file-scope state.
 *
 * Passthrough: a read-only open of a file is served by the kernel straight from the
 * real file (its page cache, its readahead), without a request per read.  Only where
 * no open can write: the secondary's read-only mount.  On the primary a writable open
 * of a file already open for passthrough would have to be passthrough too (the kernel
 * fails a mixed open with EIO), and then its shared mappings map the real file: their
 * writes, and the msync that should make them durable on both nodes, would never pass
 * through hakit-rfs, and the secondary would silently miss them.
 *
 * The kernel keeps one I/O mode per inode, and one backing file for all its
 * passthrough opens, so fuse_io counts opens per real inode: a read-only open while no
 * cached open exists (one whose backing file the kernel refused) is passthrough, any
 * other is cached.
 */
#ifndef HAKIT_RFS_FUSE_IO_H
#define HAKIT_RFS_FUSE_IO_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>

#include <fuse.h>
#include <fuse_lowlevel.h>

/* The session's I/O; passthrough: whether read-only opens may be served by the kernel
 * (when the kernel offers it and lets this process register backing files): only for a
 * mount no open can write.  readahead_kb (0: the kernel's): how far the kernel reads
 * ahead through the mount, set on the mount's bdi (mount_dev) once INIT is answered,
 * which would cap it to the kernel's 128 KiB default.  0 or -errno. */
int rfs_fuse_io_install(struct fuse_session *se, bool passthrough, unsigned readahead_kb, dev_t mount_dev);

struct rfs_open_mode; /* an open's share of its inode's mode; NULL: not counted */

/* Decides how the open of fd (a regular file, st its fstat) being answered on this
 * thread is served: passthrough (asked for in the reply) or cached.  *out is released with rfs_open_release() when the file is.  0 or -errno. */
int rfs_open_mode(int fd, const struct stat *st, bool read_only, struct rfs_open_mode **out);
void rfs_open_release(struct rfs_open_mode *m);

/* Open files by node.  The kernel asks for an open file's attributes (fstat) and
 * changes them (fchmod, fchown, futimens) without naming the open file; libfuse's
 * high-level API then wants the node's path, which a node whose name was removed
 * (unlink, a rename over it) has no more: ESTALE.  So such a request on a node with an
 * open file is given fh 0, which the handlers take as "the node's open file".  The
 * files are fs.c's, opaque here.  open: the OPEN (now) or CREATE (from its reply, which
 * names the node) this thread answers opened file; close: the RELEASE this thread
 * serves closes it; file: one of the node's files of the request this thread serves,
 * handed to hold() under the table's lock (so that it outlives its release), or NULL. */
void rfs_node_open(void *file);
void rfs_node_close(void *file);
void *rfs_node_file(void (*hold)(void *file));

/* " NAME=COUNT:MICROSECONDS" per opcode served since the mount: the requests and the time
 * from reading each to answering it (waits on the secondary included). */
void rfs_fuse_io_served(char *out, size_t size);

/* Opens served by passthrough since the mount. */
uint64_t rfs_passthrough_opens(void);

#endif
