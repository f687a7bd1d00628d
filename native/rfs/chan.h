/* The stream's connections made safe (chan.c).  main.c loads the credentials (struct
 * rfs_creds, below) and hands them to the stream; the chan_* calls are the stream's own
 * (repl_send.c, repl_recv.c).  docs/replication.md, "Security of the stream",
 * says what it protects against.
 *
 * Before the first frame of proto.h, a connection goes through:
 *   1. with TLS (--tls-*): a TLS 1.3 handshake, both sides presenting a certificate of
 *      the cluster CA and checking the other's, ALPN "hakit-rfs/1";
 *   2. with a key (--auth-key-file): a challenge-response, inside TLS when there is TLS:
 *        primary -> secondary   "HKRA", version, 3 zero bytes, nonce_p[32], hello[16]
 *        secondary -> primary   nonce_s[32], mac_s[32]
 *        primary -> secondary   mac_p[32]
 *        secondary -> primary   "HKOK" (accepted) or "HKNO" (then it closes)
 *      mac = HMAC-SHA256(key, label || nonce_p || nonce_s || hello || binding), label
 *      "hakit-rfs/1 secondary" or "hakit-rfs/1 primary" (NUL included), binding 32
 *      bytes exported from the TLS session (RFC 8446 7.5), none without TLS; hello is
 *      the body of the HELLO frame that follows, and the receiver closes a connection
 *      whose HELLO is another one.
 *   3. the frames, as without either.
 * The HMAC runs inside TLS: certificates say "a node of this cluster", the key says
 * "a node of this module", and the exporter ties the proof to this very TLS session.
 *
 * Without TLS a connection is the plain fd (struct chan NULL) and every call below is
 * the system call it stands for.  With TLS, memory goes through chan.c's own buffers:
 * the primary's sender writes while its acker reads the same connection, so TLS state
 * is touched only under a per-connection lock, never held across a blocking call.
 * Every fd has SO_RCVTIMEO and SO_SNDTIMEO set, as the stream's do: a blocking call
 * returns EAGAIN now and then for the caller to look at the time.
 */
#ifndef HAKIT_RFS_CHAN_H
#define HAKIT_RFS_CHAN_H

#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "proto.h"

/* What a node proves and checks on every stream connection: the module key
 * (a challenge-response, both ways) and TLS 1.3 with the cluster's certificates.
 * Loaded once, shared by all connections of one role, read-only once loaded. */
struct rfs_creds;

struct rfs_creds_files {
	const char *key_file;                  /* the module key: 32 bytes as hex, one line */
	const char *tls_cert, *tls_key, *tls_ca; /* all three or none: PEM files */
};

/* NULL with one line in err (a file missing, unreadable or unusable).  server: the
 * receiver's side. */
struct rfs_creds *rfs_creds_load(const struct rfs_creds_files *f, int server, char *err, size_t errlen);
void rfs_creds_free(struct rfs_creds *c);

#define CHAN_HELLO_LEN sizeof(struct rfs_wire_hello)
#define CHAN_ACCEPT_MS 10000 /* a connecting peer proves itself within this */

struct chan;

/* The primary's side, on a connected fd: TLS, then the proof binding hello (the HELLO
 * body about to be sent).  0 with *out set (NULL without TLS), or -errno: -EACCES (a
 * key or certificate refused, on either side), -EPROTO (the peer does not speak this),
 * -ETIMEDOUT, -ECONNRESET.  Logs why, at most a line every few seconds.  creds NULL:
 * nothing to do. */
int chan_connect(const struct rfs_creds *creds, int fd, const char *peer, const void *hello,
		 int64_t deadline_ns, struct chan **out);

/* The receiver's side: 1 with hello[] the HELLO body the primary proved (a key was
 * asked), 0 (no key asked), -1: refused, logged (rate-limited), nothing to read on. */
int chan_accept(const struct rfs_creds *creds, int fd, const char *peer, struct chan **out,
		unsigned char hello[CHAN_HELLO_LEN]);

void chan_free(struct chan *ch);

/* TLS halves of the calls below: as sendmsg and recv.  After -1 with EAGAIN or EINTR,
 * chan_tls_sendv must be called again with the same bytes (they may be encrypted
 * already; nothing is sent twice).  A broken TLS record fails with EPROTO, a refused
 * certificate with EACCES. */
ssize_t chan_tls_sendv(struct chan *ch, const struct iovec *iov, size_t n);
ssize_t chan_tls_recv(struct chan *ch, void *buf, size_t len);

static inline ssize_t chan_sendmsg(struct chan *ch, int fd, const struct msghdr *mh)
{
	return ch ? chan_tls_sendv(ch, mh->msg_iov, mh->msg_iovlen) : sendmsg(fd, mh, MSG_NOSIGNAL);
}

static inline ssize_t chan_send(struct chan *ch, int fd, const void *buf, size_t len)
{
	struct iovec iov = {.iov_base = (void *)buf, .iov_len = len};

	return ch ? chan_tls_sendv(ch, &iov, 1) : send(fd, buf, len, MSG_NOSIGNAL);
}

static inline ssize_t chan_recv(struct chan *ch, int fd, void *buf, size_t len)
{
	return ch ? chan_tls_recv(ch, buf, len) : recv(fd, buf, len, 0);
}

/* All of buf, before the deadline (CLOCK_MONOTONIC ns): 0 or -errno (-ECONNRESET for
 * a connection closed first). */
int chan_write_all(struct chan *ch, int fd, const void *buf, size_t len, int64_t deadline_ns);
/* The same, giving up too (-ECANCELED) when stop(arg) says so: asked whenever a wait of
 * SO_SNDTIMEO passed without the whole of buf going out. */
int chan_write_until(struct chan *ch, int fd, const void *buf, size_t len, int64_t deadline_ns,
		     int (*stop)(void *arg), void *arg);
int chan_read_all(struct chan *ch, int fd, void *buf, size_t len, int64_t deadline_ns);

#endif
