/* The answers to the query opcodes (op.h: LIST, STAT, SUMS, XATTRS), as the
 * secondary sends them in an ack's body and as rfs_query() (apply.h) computes them on
 * either side: the full sync (sync.c) compares the primary's answer with the secondary's, so
 * both come from the same code (apply.c).  Integers little-endian; strings without NUL.
 *
 *   LIST    struct rfs_reply_head (more: 1 when the directory goes on at `next`), then
 *           `count` entries; "." and ".." are left out
 *   STAT    one entry, named after the path's last component
 *   SUMS    struct rfs_reply_head (`next` = the file's size), then `count` checksums of
 *           RFS_SUM_LEN bytes: one per block from `off` up to `off + len` or the end of
 *           the file, the last block short at the end of the file
 *   XATTRS  struct rfs_reply_head, then `count` attributes, sorted by name
 *
 * An entry: struct rfs_wire_entry, its name, then for a symlink its target.  An
 * attribute: struct rfs_wire_xattr, its name, its value.
 *
 * A block's checksum is XXH3-128 of its bytes (a hole reads as zeroes: the same sum
 * whether the zeroes are allocated or not).  The xattr digest of an entry is XXH3-64
 * of its XATTRS answer: equal digests, equal attributes.
 */
#ifndef HAKIT_RFS_QUERY_H
#define HAKIT_RFS_QUERY_H

#include <endian.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "op.h"

#define RFS_REPLY_MAX (1u << 20)   /* an answer's body, at most */
#define RFS_SUM_LEN 16
#define RFS_BLOCK_SHIFT_MIN 12
#define RFS_BLOCK_SHIFT_MAX 24
#define RFS_LIST_XATTRS 1u         /* LIST / STAT flags: with xattr digests */

struct rfs_reply_head {
	uint64_t next;
	uint32_t count;
	uint32_t more;
};

struct rfs_wire_entry {
	uint32_t mode, uid, gid;
	uint16_t name_len, target_len;
	uint64_t size, rdev;
	int64_t mtime_sec;
	uint32_t mtime_nsec, nlink; /* nlink, ino: the full sync gives both copies the same hard links */
	uint64_t xattr_digest;     /* 0 without RFS_LIST_XATTRS */
	uint64_t ino;
};

struct rfs_wire_xattr {
	uint16_t name_len, reserved;
	uint32_t value_len;
};

_Static_assert(sizeof(struct rfs_reply_head) == 16, "reply head is 16 bytes");
_Static_assert(sizeof(struct rfs_wire_entry) == 64, "entry is 64 bytes");
_Static_assert(sizeof(struct rfs_wire_xattr) == 8, "xattr is 8 bytes");

/* An entry as decoded: name and target point into the answer. */
struct rfs_entry {
	uint32_t mode, uid, gid;
	uint64_t size, rdev;
	int64_t mtime_sec;
	uint32_t mtime_nsec, nlink;
	uint64_t xattr_digest, ino;
	const char *name, *target;
	size_t name_len, target_len;
};

static inline void rfs_head_put(void *dst, uint64_t next, uint32_t count, uint32_t more)
{
	struct rfs_reply_head le = {.next = htole64(next), .count = htole32(count), .more = htole32(more)};

	memcpy(dst, &le, sizeof le);
}

/* 0, or -1 when len is too short. */
static inline int rfs_head_get(struct rfs_reply_head *h, const void *src, size_t len)
{
	if (len < sizeof *h)
		return -1;
	memcpy(h, src, sizeof *h);
	h->next = le64toh(h->next);
	h->count = le32toh(h->count);
	h->more = le32toh(h->more);
	return 0;
}

/* Bytes the entry takes. */
static inline size_t rfs_entry_size(const struct rfs_entry *e)
{
	return sizeof(struct rfs_wire_entry) + e->name_len + e->target_len;
}

static inline void rfs_entry_put(void *dst, const struct rfs_entry *e)
{
	struct rfs_wire_entry le = {
		.mode = htole32(e->mode), .uid = htole32(e->uid), .gid = htole32(e->gid),
		.name_len = htole16((uint16_t)e->name_len), .target_len = htole16((uint16_t)e->target_len),
		.size = htole64(e->size), .rdev = htole64(e->rdev),
		.mtime_sec = (int64_t)htole64((uint64_t)e->mtime_sec), .mtime_nsec = htole32(e->mtime_nsec),
		.nlink = htole32(e->nlink), .xattr_digest = htole64(e->xattr_digest), .ino = htole64(e->ino),
	};
	char *p = dst;

	memcpy(p, &le, sizeof le);
	memcpy(p + sizeof le, e->name, e->name_len);
	if (e->target_len)
		memcpy(p + sizeof le + e->name_len, e->target, e->target_len);
}

/* Bytes used, or 0 when the entry does not fit in len (a malformed answer). */
static inline size_t rfs_entry_get(struct rfs_entry *e, const void *src, size_t len)
{
	struct rfs_wire_entry w;
	const char *p = src;

	if (len < sizeof w)
		return 0;
	memcpy(&w, p, sizeof w);
	*e = (struct rfs_entry){
		.mode = le32toh(w.mode), .uid = le32toh(w.uid), .gid = le32toh(w.gid),
		.size = le64toh(w.size), .rdev = le64toh(w.rdev),
		.mtime_sec = (int64_t)le64toh((uint64_t)w.mtime_sec), .mtime_nsec = le32toh(w.mtime_nsec),
		.nlink = le32toh(w.nlink), .xattr_digest = le64toh(w.xattr_digest), .ino = le64toh(w.ino),
		.name = p + sizeof w, .name_len = le16toh(w.name_len),
		.target_len = le16toh(w.target_len),
	};
	e->target = e->name + e->name_len;
	if (!e->name_len || rfs_entry_size(e) > len)
		return 0;
	return rfs_entry_size(e);
}

#endif
