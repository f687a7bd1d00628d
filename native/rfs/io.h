/* The small helpers every other file of hakit-rfs would otherwise write again (io.c):
 * the clock, growing arrays, whole reads and writes at an offset, socket options.
 *
 * Layering of native/rfs, each header including only headers of the layers below it
 * (docs/architecture.md draws the same):
 *   1. io.h, log.h: nothing of hakit-rfs;
 *   2. op.h (one operation), then proto.h (the stream's frames) and query.h (the
 *      answers to queries), which describe bytes on the wire;
 *   3. exclude.h, dirty.h, apply.h, chan.h: the parts the stream is built from;
 *   4. repl_send.h (the primary's stream), repl_recv.h (the secondary's receiver);
 *   5. fuse_io.h (the FUSE session's I/O), fs.h (FUSE), then sync.h (the full sync,
 *      which orders itself against fs.h);
 *   6. main.c, which includes what it assembles and is included by nothing.
 * A lower file never includes a higher one: the tests and the fuzzer link layers 1-4
 * without FUSE.
 */
#ifndef HAKIT_RFS_IO_H
#define HAKIT_RFS_IO_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define RFS_NS_PER_MS 1000000LL

int64_t rfs_now_ns(void); /* CLOCK_MONOTONIC */

/* Makes *pp (an array of elem-sized items, *cap of them) hold at least need, doubling:
 * 0 or -ENOMEM (*pp then unchanged). */
int rfs_grow(void *pp, size_t *cap, size_t need, size_t elem);

/* All len bytes at off, retrying short writes and EINTR: 0 or -errno (-EIO for a write
 * that took nothing). */
int rfs_pwrite_all(int fd, const void *buf, size_t len, off_t off);

/* Up to len bytes at off, retrying short reads and EINTR: the bytes read, fewer than len
 * only at the end of the file, or -errno. */
ssize_t rfs_pread_full(int fd, void *buf, size_t len, off_t off);

/* Socket buffers big enough for the stream (set before connect or listen: the window
 * scale is agreed in the handshake), and no Nagle delay on its small frames. */
void rfs_sock_bufs(int fd);
void rfs_sock_nodelay(int fd);

#endif
