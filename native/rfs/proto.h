/* The replication wire: what repl_send.c sends on the primary and repl_recv.c reads
 * on the secondary.
 * Private to the rfs core; docs/replication.md describes it for people.
 *
 * A connection carries frames.  Every frame starts with one fixed 32-byte header,
 * all integers little-endian:
 *
 *   primary -> secondary   HELLO (once, first), then op frames, seq 1, 2, 3, ...; and,
 *                          when the HELLO's ACK says RFS_F_KEEPALIVES, a KEEPALIVE (a
 *                          bare header, seq 0, not acked) on a connection idle for
 *                          RFS_KEEPALIVE_MS
 *   secondary -> primary   one ACK per frame received but KEEPALIVE, same seq, in the
 *                          same order; the ACK of a query opcode carries its answer
 *                          (query.h) as its body, at most RFS_REPLY_MAX bytes; every
 *                          other ACK has none
 *
 * An op frame's body is the op's fixed fields (struct rfs_wire_op), then path, path2
 * and name, each NUL-terminated and only when its length in the header is non-zero,
 * then the data (lz4-compressed when RFS_F_LZ4 is set; wire_op.data_len is then the
 * length once decompressed).  The data's length on the wire is what the body has left.
 */
#ifndef HAKIT_RFS_PROTO_H
#define HAKIT_RFS_PROTO_H

#include <endian.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "op.h"

#define RFS_MAGIC 0x46524b48u /* the bytes "HKRF" */
#define RFS_VERSION 2             /* 2: LINK, and entries (query.h) with nlink and ino */

/* Frame types beside the opcodes (which are 1 .. RFS_OP_MAX-1). */
enum {
	RFS_T_HELLO = 0x40,
	RFS_T_ACK = 0x41,
	RFS_T_KEEPALIVE = 0x42,
};

/* The receiver's time since the last frame is the secondary's evidence that the primary's
 * node and hakit-rfs live while its module's heartbeats are silent (a module process
 * restarting): an idle stream carries a keepalive this often.  Only to a receiver that
 * said it takes them (a receiver of before refuses unknown frame types). */
#define RFS_KEEPALIVE_MS 100

/* Header flags. */
#define RFS_F_LZ4 0x0001u     /* WRITE data is lz4 block-compressed */
#define RFS_F_DURABLE 0x0002u /* make the result durable before acking */
#define RFS_F_KNOWN (RFS_F_LZ4 | RFS_F_DURABLE)
#define RFS_F_KEEPALIVES 0x0004u /* in the ACK of a HELLO: this receiver takes KEEPALIVE */

/* The limits of op.h are what a receiver enforces before reading a body: a frame
 * beyond them is garbage. */

struct rfs_wire_hdr {
	uint32_t magic;
	uint8_t version;
	uint8_t type;       /* opcode, RFS_T_HELLO, RFS_T_ACK or RFS_T_KEEPALIVE */
	uint16_t flags;     /* RFS_F_* */
	uint64_t seq;       /* per connection: HELLO 0, ops from 1, +1 each; an ACK repeats it; KEEPALIVE 0 */
	uint32_t body_len;  /* bytes after the header */
	int32_t result;     /* ACK: 0 or -errno of the apply; else 0 */
	uint16_t path_len;  /* NUL included; 0 when absent */
	uint16_t path2_len;
	uint16_t name_len;
	uint16_t reserved;
};

struct rfs_wire_op {
	uint32_t flags, mode, uid, gid;
	uint64_t rdev;
	int64_t off;
	uint64_t len;
	int64_t atime_sec, atime_nsec, mtime_sec, mtime_nsec;
	uint32_t data_len;  /* data length once decompressed */
	uint32_t reserved;
};

/* Body of HELLO.  A receiver serves one session at a time: a HELLO with a new session
 * closes the connections of the previous one and waits until they stopped applying,
 * so a half-dead old connection can never apply an op after a newer session's. */
struct rfs_wire_hello {
	uint64_t session;
	uint16_t conn_index, nconn;
	uint32_t reserved;
};

_Static_assert(sizeof(struct rfs_wire_hdr) == 32, "wire header is 32 bytes");
_Static_assert(offsetof(struct rfs_wire_hdr, seq) == 8, "seq at 8");
_Static_assert(offsetof(struct rfs_wire_hdr, path_len) == 24, "string lengths at 24");
_Static_assert(sizeof(struct rfs_wire_op) == 80, "wire op is 80 bytes");
_Static_assert(offsetof(struct rfs_wire_op, data_len) == 72, "data_len at 72");
_Static_assert(sizeof(struct rfs_wire_hello) == 16, "hello is 16 bytes");
_Static_assert((int)RFS_OP_MAX <= (int)RFS_T_HELLO, "opcodes and frame types share the type byte");
_Static_assert(RFS_PATH_MAX <= UINT16_MAX && RFS_NAME_MAX <= UINT16_MAX, "string lengths fit u16");

#define RFS_HDR_LEN sizeof(struct rfs_wire_hdr)
#define RFS_WOP_LEN sizeof(struct rfs_wire_op)
#define RFS_BODY_MAX (sizeof(struct rfs_wire_op) + 2 * RFS_PATH_MAX + RFS_NAME_MAX + RFS_DATA_MAX)
#define RFS_FRAME_MAX (sizeof(struct rfs_wire_hdr) + RFS_BODY_MAX)

/* Encoders and decoders go through memcpy: frames sit at any offset of a buffer. */
static inline void rfs_hdr_put(void *dst, const struct rfs_wire_hdr *h)
{
	struct rfs_wire_hdr le = {
		.magic = htole32(h->magic), .version = h->version, .type = h->type,
		.flags = htole16(h->flags), .seq = htole64(h->seq), .body_len = htole32(h->body_len),
		.result = (int32_t)htole32((uint32_t)h->result), .path_len = htole16(h->path_len),
		.path2_len = htole16(h->path2_len), .name_len = htole16(h->name_len),
	};
	memcpy(dst, &le, sizeof le);
}

static inline void rfs_hdr_get(struct rfs_wire_hdr *h, const void *src)
{
	memcpy(h, src, sizeof *h);
	h->magic = le32toh(h->magic);
	h->flags = le16toh(h->flags);
	h->seq = le64toh(h->seq);
	h->body_len = le32toh(h->body_len);
	h->result = (int32_t)le32toh((uint32_t)h->result);
	h->path_len = le16toh(h->path_len);
	h->path2_len = le16toh(h->path2_len);
	h->name_len = le16toh(h->name_len);
}

static inline void rfs_wop_put(void *dst, const struct rfs_op *op, uint32_t data_len)
{
	struct rfs_wire_op le = {
		.flags = htole32(op->flags), .mode = htole32(op->mode),
		.uid = htole32(op->uid), .gid = htole32(op->gid), .rdev = htole64(op->rdev),
		.off = (int64_t)htole64((uint64_t)op->off), .len = htole64(op->len),
		.atime_sec = (int64_t)htole64((uint64_t)op->atime_sec),
		.atime_nsec = (int64_t)htole64((uint64_t)op->atime_nsec),
		.mtime_sec = (int64_t)htole64((uint64_t)op->mtime_sec),
		.mtime_nsec = (int64_t)htole64((uint64_t)op->mtime_nsec),
		.data_len = htole32(data_len),
	};
	memcpy(dst, &le, sizeof le);
}

/* Fills the fixed fields of op; returns the data length once decompressed. */
static inline uint32_t rfs_wop_get(struct rfs_op *op, const void *src)
{
	struct rfs_wire_op w;

	memcpy(&w, src, sizeof w);
	op->flags = le32toh(w.flags);
	op->mode = le32toh(w.mode);
	op->uid = le32toh(w.uid);
	op->gid = le32toh(w.gid);
	op->rdev = le64toh(w.rdev);
	op->off = (int64_t)le64toh((uint64_t)w.off);
	op->len = le64toh(w.len);
	op->atime_sec = (int64_t)le64toh((uint64_t)w.atime_sec);
	op->atime_nsec = (int64_t)le64toh((uint64_t)w.atime_nsec);
	op->mtime_sec = (int64_t)le64toh((uint64_t)w.mtime_sec);
	op->mtime_nsec = (int64_t)le64toh((uint64_t)w.mtime_nsec);
	return le32toh(w.data_len);
}

static inline void rfs_hello_put(void *dst, const struct rfs_wire_hello *h)
{
	struct rfs_wire_hello le = {
		.session = htole64(h->session), .conn_index = htole16(h->conn_index),
		.nconn = htole16(h->nconn),
	};
	memcpy(dst, &le, sizeof le);
}

static inline void rfs_hello_get(struct rfs_wire_hello *h, const void *src)
{
	memcpy(h, src, sizeof *h);
	h->session = le64toh(h->session);
	h->conn_index = le16toh(h->conn_index);
	h->nconn = le16toh(h->nconn);
}

#endif
