/* The stream's connections made safe: the module key proved both ways on every
 * connection, and TLS 1.3 with the cluster's certificates.  chan.h has the exchange.
 *
 * TLS runs over memory, not over the fd: OpenSSL reads ciphertext from `in`, which
 * the reading thread fills with recv, and writes it to `out`, which the writing thread
 * takes whole and sends.  So the lock on the SSL object covers only encrypting and
 * decrypting, and the primary's acker, blocked in recv for the next ack, never holds
 * up its sender.
 */
#include <ctype.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "chan.h"
#include "io.h"
#include "log.h"

#define KEY_LEN 32
#define NONCE_LEN 32
#define MAC_LEN 32
#define BIND_LEN 32
#define ALPN "hakit-rfs/1"
#define EXPORTER "EXPORTER-hakit-rfs-auth"
#define LABEL_P "hakit-rfs/1 primary"
#define LABEL_S "hakit-rfs/1 secondary"
#define AUTH_MAGIC "HKRA"
#define AUTH_VERSION 1
#define AUTH_HELLO (8 + NONCE_LEN + CHAN_HELLO_LEN) /* magic, version, 3 zeroes, nonce, hello */
#define VERDICT_LEN 4
#define REC_MAX 16384              /* plaintext in one TLS record */
#define STAGE_DIRECT 4096          /* plaintext this long is a record of its own, not copied */
#define SEAL_MAX (256u << 10)      /* plaintext encrypted per send: then it goes out */
#define IN_CAP (256u << 10)        /* ciphertext read per recv (and more than a record) */

_Static_assert(sizeof ALPN - 1 == 013, "alpn_wire's length prefix is ALPN's length");
_Static_assert(IN_CAP > 2 * (REC_MAX + 256), "in holds a partial record and room for another");

struct rfs_creds {
	int server, has_key;
	unsigned char key[KEY_LEN];
	SSL_CTX *tls;              /* NULL: no TLS */
};

/* Bytes [head, len) are waiting; cap allocated. */
struct buf {
	unsigned char *p;
	size_t head, len, cap;
};

struct chan {
	int fd;
	int ready;                 /* past the handshake and proof: failures are logged here */
	int direct;                /* past the handshake: TLS reads the socket itself (bio_read) */
	char peer[64];
	char why[160];             /* the last TLS failure */
	/* Guards ssl, in and out.  Held only to encrypt or decrypt, never across a call that
	 * blocks.  During the handshake the reading thread alone appends to in (recv outside
	 * the lock, into room past len, which nothing else touches); after it, TLS takes the
	 * socket's bytes itself, without waiting (bio_read). */
	pthread_mutex_t mu;
	SSL *ssl;
	struct buf in;             /* ciphertext received, not yet decrypted */
	struct buf out;            /* ciphertext made, not yet taken for sending */
	/* The writing thread's own: the stream sends on one connection from one thread at
	 * a time. */
	struct buf wire;           /* ciphertext being sent */
	size_t owed;               /* plaintext already in wire that the caller was not told of */
	unsigned char stage[REC_MAX];
};

/* A peer that keeps failing must not flood the log. */
static struct rfs_log_limit refusals = RFS_LOG_LIMIT_INIT;
static struct rfs_log_limit attach_failures = RFS_LOG_LIMIT_INIT;
static struct rfs_log_limit tls_failures = RFS_LOG_LIMIT_INIT;

/* ---- credentials ---- */

static const unsigned char alpn_wire[] = "\013" ALPN; /* length-prefixed */

static const char *ssl_reason(void)
{
	unsigned long e = ERR_peek_last_error();
	const char *r = e ? ERR_reason_error_string(e) : NULL;

	return r ? r : "unknown TLS error";
}

static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen, const unsigned char *in,
		       unsigned int inlen, void *arg)
{
	(void)ssl;
	(void)arg;
	if (SSL_select_next_proto((unsigned char **)out, outlen, alpn_wire, sizeof alpn_wire - 1, in, inlen) !=
	    OPENSSL_NPN_NEGOTIATED)
		return SSL_TLSEXT_ERR_ALERT_FATAL;
	return SSL_TLSEXT_ERR_OK;
}

/* OpenSSL says "system lib" for a missing file: ask first, for a clear line. */
static int readable(const char *opt, const char *path, char *err, size_t n)
{
	FILE *f = fopen(path, "re");

	if (!f)
		return snprintf(err, n, "%s %s: %s", opt, path, strerror(errno)), -1;
	fclose(f);
	return 0;
}

static int hexval(int c)
{
	return isdigit(c) ? c - '0' : isxdigit(c) ? tolower(c) - 'a' + 10 : -1;
}

static int load_key(struct rfs_creds *c, const char *path, char *err, size_t n)
{
	char text[160];
	size_t len;
	FILE *f = fopen(path, "re");

	if (!f)
		return snprintf(err, n, "--auth-key-file %s: %s", path, strerror(errno)), -1;
	len = fread(text, 1, sizeof text - 1, f);
	fclose(f);
	while (len && isspace((unsigned char)text[len - 1]))
		len--;
	for (size_t i = 0; len == 2 * KEY_LEN && i < KEY_LEN; i++) {
		int hi = hexval((unsigned char)text[2 * i]), lo = hexval((unsigned char)text[2 * i + 1]);

		if (hi < 0 || lo < 0)
			len = 0;
		else
			c->key[i] = (unsigned char)(hi << 4 | lo);
	}
	if (len != 2 * KEY_LEN)
		return snprintf(err, n, "--auth-key-file %s: not a %d-byte key in hexadecimal", path, KEY_LEN), -1;
	c->has_key = 1;
	return 0;
}

static int load_tls(struct rfs_creds *c, const struct rfs_creds_files *f, char *err, size_t n)
{
	SSL_CTX *ctx;

	if (readable("--tls-cert", f->tls_cert, err, n) || readable("--tls-key", f->tls_key, err, n) ||
	    readable("--tls-ca", f->tls_ca, err, n))
		return -1;
	ERR_clear_error();
	ctx = c->tls = SSL_CTX_new(c->server ? TLS_server_method() : TLS_client_method());
	/* AES-128-GCM first: as strong as the stream needs, and 10 % faster than AES-256 here
	 * (every replicated byte is sealed once and opened once). */
	if (!ctx || !SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION) ||
	    !SSL_CTX_set_ciphersuites(ctx, "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:"
					  "TLS_CHACHA20_POLY1305_SHA256"))
		return snprintf(err, n, "TLS: %s", ssl_reason()), -1;
	SSL_CTX_set_options(ctx, SSL_OP_CIPHER_SERVER_PREFERENCE);
	if (SSL_CTX_use_certificate_chain_file(ctx, f->tls_cert) != 1)
		return snprintf(err, n, "--tls-cert %s: %s", f->tls_cert, ssl_reason()), -1;
	/* Checked against the certificate loaded before. */
	if (SSL_CTX_use_PrivateKey_file(ctx, f->tls_key, SSL_FILETYPE_PEM) != 1) {
		if (ERR_GET_REASON(ERR_peek_last_error()) == X509_R_KEY_VALUES_MISMATCH)
			return snprintf(err, n, "--tls-key %s is not the key of --tls-cert %s", f->tls_key,
					f->tls_cert), -1;
		return snprintf(err, n, "--tls-key %s: %s", f->tls_key, ssl_reason()), -1;
	}
	if (SSL_CTX_load_verify_locations(ctx, f->tls_ca, NULL) != 1)
		return snprintf(err, n, "--tls-ca %s: %s", f->tls_ca, ssl_reason()), -1;
	/* As the RPC: the peer's certificate must chain to the cluster CA; any node's name
	 * is good (the module key says which node may talk to this directory). */
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
	/* Connections live long and are few: resumption would only be more to get right. */
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	if (c->server) {
		SSL_CTX_set_num_tickets(ctx, 0);
		SSL_CTX_set_alpn_select_cb(ctx, alpn_select, NULL);
	} else if (SSL_CTX_set_alpn_protos(ctx, alpn_wire, sizeof alpn_wire - 1)) {
		return snprintf(err, n, "TLS: %s", ssl_reason()), -1;
	}
	return 0;
}

struct rfs_creds *rfs_creds_load(const struct rfs_creds_files *f, int server, char *err, size_t errlen)
{
	int tls = f->tls_cert || f->tls_key || f->tls_ca;
	struct rfs_creds *c;

	if (tls && !(f->tls_cert && f->tls_key && f->tls_ca)) {
		snprintf(err, errlen, "--tls-cert, --tls-key and --tls-ca go together");
		return NULL;
	}
	if (!(c = calloc(1, sizeof *c))) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	c->server = server;
	if ((f->key_file && load_key(c, f->key_file, err, errlen)) || (tls && load_tls(c, f, err, errlen))) {
		rfs_creds_free(c);
		return NULL;
	}
	return c;
}

void rfs_creds_free(struct rfs_creds *c)
{
	if (!c)
		return;
	SSL_CTX_free(c->tls);
	OPENSSL_cleanse(c->key, sizeof c->key);
	free(c);
}

/* ---- a TLS connection over chan's buffers ---- */

static int buf_room(struct buf *b, size_t need)
{
	size_t cap = b->cap ? b->cap : 4096;
	unsigned char *p;

	if (b->cap - b->len >= need)
		return 0;
	while (cap - b->len < need)
		cap *= 2;
	if (!(p = realloc(b->p, cap)))
		return -1;
	b->p = p;
	b->cap = cap;
	return 0;
}

static int bio_write(BIO *bio, const char *data, size_t len, size_t *written)
{
	struct chan *ch = BIO_get_data(bio);

	BIO_clear_retry_flags(bio);
	if (buf_room(&ch->out, len))
		return 0;
	memcpy(ch->out.p + ch->out.len, data, len);
	ch->out.len += len;
	*written = len;
	return 1;
}

static int bio_read(BIO *bio, char *data, size_t len, size_t *got)
{
	struct chan *ch = BIO_get_data(bio);
	size_t have = ch->in.len - ch->in.head;

	BIO_clear_retry_flags(bio);
	if (!have && ch->direct) {
		/* Straight into TLS's read-ahead buffer: one copy less than through in.  An end
		 * or an error reads as "nothing yet": chan_tls_recv's wait sees it and says so. */
		ssize_t n = recv(ch->fd, data, len, MSG_DONTWAIT);

		if (n > 0) {
			*got = (size_t)n;
			return 1;
		}
	}
	if (!have) {
		BIO_set_retry_read(bio);
		return 0;
	}
	if (len > have)
		len = have;
	memcpy(data, ch->in.p + ch->in.head, len);
	ch->in.head += len;
	*got = len;
	return 1;
}

static long bio_ctrl(BIO *bio, int cmd, long num, void *ptr)
{
	(void)bio;
	(void)num;
	(void)ptr;
	return cmd == BIO_CTRL_FLUSH; /* out is sent by its owner, not on flush */
}

static int bio_create(BIO *bio)
{
	BIO_set_init(bio, 1);
	return 1;
}

static BIO_METHOD *bio_method;
static pthread_once_t bio_once = PTHREAD_ONCE_INIT;

static void bio_method_make(void)
{
	BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "hakit-rfs chan");

	if (m && BIO_meth_set_write_ex(m, bio_write) && BIO_meth_set_read_ex(m, bio_read) &&
	    BIO_meth_set_ctrl(m, bio_ctrl) && BIO_meth_set_create(m, bio_create))
		bio_method = m;
	else
		BIO_meth_free(m);
}

static struct chan *chan_new(const struct rfs_creds *c, int fd, const char *peer)
{
	struct chan *ch;
	BIO *bio;

	pthread_once(&bio_once, bio_method_make);
	if (!bio_method || !(ch = calloc(1, sizeof *ch)))
		return NULL;
	ch->fd = fd;
	snprintf(ch->peer, sizeof ch->peer, "%s", peer);
	pthread_mutex_init(&ch->mu, NULL);
	if (buf_room(&ch->in, IN_CAP) || !(ch->ssl = SSL_new(c->tls)) || !(bio = BIO_new(bio_method))) {
		chan_free(ch);
		return NULL;
	}
	BIO_set_data(bio, ch);
	SSL_set_bio(ch->ssl, bio, bio); /* one reference for both directions */
	/* Records are read a batch at a time (bio_read), not a header then a body. */
	SSL_set_read_ahead(ch->ssl, 1);
	SSL_set_default_read_buffer_len(ch->ssl, IN_CAP);
	if (c->server)
		SSL_set_accept_state(ch->ssl);
	else
		SSL_set_connect_state(ch->ssl);
	return ch;
}

void chan_free(struct chan *ch)
{
	if (!ch)
		return;
	SSL_free(ch->ssl);
	free(ch->in.p);
	free(ch->out.p);
	free(ch->wire.p);
	pthread_mutex_destroy(&ch->mu);
	free(ch);
}

/* Why TLS failed (ch->mu held, right after the failing call: the error queue is the
 * thread's own); the errno to report. */
static int tls_failed(struct chan *ch, int sslerr)
{
	long v = SSL_get_verify_result(ch->ssl);
	int reason = ERR_GET_REASON(ERR_peek_last_error());

	switch (v != X509_V_OK ? SSL_R_CERTIFICATE_VERIFY_FAILED : reason) {
	case SSL_R_CERTIFICATE_VERIFY_FAILED:
	case SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE:
		snprintf(ch->why, sizeof ch->why, "its certificate is refused: %s",
			 v != X509_V_OK ? X509_verify_cert_error_string(v) : ssl_reason());
		return EACCES;
	case SSL_R_SSLV3_ALERT_BAD_CERTIFICATE:
	case SSL_R_SSLV3_ALERT_CERTIFICATE_UNKNOWN:
	case SSL_R_SSLV3_ALERT_CERTIFICATE_EXPIRED:
	case SSL_R_TLSV1_ALERT_UNKNOWN_CA:
	case SSL_R_TLSV13_ALERT_CERTIFICATE_REQUIRED:
		snprintf(ch->why, sizeof ch->why, "it refused this node's certificate (%s)", ssl_reason());
		return EACCES;
	default:
		snprintf(ch->why, sizeof ch->why, "TLS: %s",
			 sslerr == SSL_ERROR_SSL ? ssl_reason() : "the connection ended");
		return EPROTO;
	}
}

/* A TLS call failed once the connection was up (ch->mu held): the errno, and why in
 * out, copied while the other direction cannot overwrite it. */
static int tls_broke(struct chan *ch, char *out, size_t n)
{
	int err = tls_failed(ch, SSL_ERROR_SSL);

	snprintf(out, n, "%s", ch->why);
	return err;
}

static void tls_broke_log(struct chan *ch, const char *why)
{
	if (ch->ready)
		rfs_log_limited(&tls_failures, "connection with %s: %s", ch->peer, why);
}

/* Moves what TLS made to wire (ch->mu held; wire is empty). */
static void take_out(struct chan *ch)
{
	struct buf t = ch->wire;

	ch->wire = ch->out;
	ch->out = t;
}

/* Sends wire: 0, or -1 with errno (EAGAIN: SO_SNDTIMEO passed with no progress). */
static int wire_send(struct chan *ch)
{
	while (ch->wire.head < ch->wire.len) {
		ssize_t n = send(ch->fd, ch->wire.p + ch->wire.head, ch->wire.len - ch->wire.head, MSG_NOSIGNAL);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -1;
		ch->wire.head += (size_t)n;
	}
	ch->wire.head = ch->wire.len = 0;
	return 0;
}

static int tls_write(struct chan *ch, const void *p, size_t len)
{
	size_t done;

	return SSL_write_ex(ch->ssl, p, len, &done) == 1 && done == len ? 0 : -1;
}

/* Encrypts up to SEAL_MAX bytes of iov into out (ch->mu held): how many, or -1.
 * Frame headers and paths are short: they share records instead of one each. */
static ssize_t seal(struct chan *ch, const struct iovec *iov, size_t n)
{
	size_t total = 0, staged = 0;

	for (size_t i = 0; i < n && total < SEAL_MAX; i++) {
		const char *p = iov[i].iov_base;
		size_t len = iov[i].iov_len < SEAL_MAX - total ? iov[i].iov_len : SEAL_MAX - total;

		if (len >= STAGE_DIRECT) {
			if ((staged && tls_write(ch, ch->stage, staged)) || tls_write(ch, p, len))
				return -1;
			staged = 0;
		} else {
			if (staged + len > sizeof ch->stage) {
				if (tls_write(ch, ch->stage, staged))
					return -1;
				staged = 0;
			}
			memcpy(ch->stage + staged, p, len);
			staged += len;
		}
		total += len;
	}
	if (staged && tls_write(ch, ch->stage, staged))
		return -1;
	return (ssize_t)total;
}

ssize_t chan_tls_sendv(struct chan *ch, const struct iovec *iov, size_t n)
{
	char why[sizeof ch->why];
	ssize_t took;
	int err = 0;

	if (ch->wire.len) {
		/* The last call encrypted these bytes and timed out sending them. */
		if (wire_send(ch))
			return -1;
		took = (ssize_t)ch->owed;
		ch->owed = 0;
		if (took)
			return took;
	}
	pthread_mutex_lock(&ch->mu);
	ERR_clear_error();
	took = seal(ch, iov, n);
	if (took < 0)
		err = tls_broke(ch, why, sizeof why);
	take_out(ch);
	pthread_mutex_unlock(&ch->mu);
	if (took < 0) {
		tls_broke_log(ch, why);
		errno = err;
		return -1;
	}
	ch->owed = (size_t)took;
	if (wire_send(ch))
		return -1;
	ch->owed = 0;
	return took;
}

enum { OPEN_WANT, OPEN_FULL, OPEN_EOF, OPEN_FAIL };

/* Decrypts the whole records in holds into buf (ch->mu held). */
static int open_records(struct chan *ch, char *buf, size_t len, size_t *got)
{
	while (*got < len) {
		size_t n;
		int r;

		ERR_clear_error();
		r = SSL_read_ex(ch->ssl, buf + *got, len - *got, &n);
		if (r == 1) {
			*got += n;
			continue;
		}
		r = SSL_get_error(ch->ssl, r);
		return r == SSL_ERROR_WANT_READ ? OPEN_WANT : r == SSL_ERROR_ZERO_RETURN ? OPEN_EOF : OPEN_FAIL;
	}
	return OPEN_FULL;
}

ssize_t chan_tls_recv(struct chan *ch, void *buf, size_t len)
{
	char why[sizeof ch->why];
	size_t got = 0;

	for (;;) {
		ssize_t n;
		char peek;
		int st, err = 0;

		pthread_mutex_lock(&ch->mu);
		st = open_records(ch, buf, len, &got);
		if (st == OPEN_FAIL)
			err = tls_broke(ch, why, sizeof why);
		if (ch->in.head == ch->in.len)
			ch->in.head = ch->in.len = 0;
		pthread_mutex_unlock(&ch->mu);
		if (got)
			return (ssize_t)got; /* an end or a failure shows at the next call */
		if (st == OPEN_EOF)
			return 0;
		if (st == OPEN_FAIL) {
			tls_broke_log(ch, why);
			errno = err;
			return -1;
		}
		/* Nothing to give: wait for bytes (SO_RCVTIMEO applies) without taking them, so
		 * that TLS reads them itself; an end or an error is the caller's answer. */
		n = recv(ch->fd, &peek, 1, MSG_PEEK);
		if (n <= 0)
			return n;
	}
}

int chan_write_until(struct chan *ch, int fd, const void *buf, size_t len, int64_t deadline_ns,
		     int (*stop)(void *arg), void *arg)
{
	size_t off = 0;

	while (off < len) {
		ssize_t n = chan_send(ch, fd, (const char *)buf + off, len - off);

		if (n > 0)
			off += (size_t)n;
		else if (n < 0 && errno != EAGAIN && errno != EINTR)
			return -errno;
		else if (rfs_now_ns() > deadline_ns)
			return -ETIMEDOUT;
		else if (stop && stop(arg))
			return -ECANCELED;
	}
	return 0;
}

int chan_write_all(struct chan *ch, int fd, const void *buf, size_t len, int64_t deadline_ns)
{
	return chan_write_until(ch, fd, buf, len, deadline_ns, NULL, NULL);
}

int chan_read_all(struct chan *ch, int fd, void *buf, size_t len, int64_t deadline_ns)
{
	size_t got = 0;

	while (got < len) {
		ssize_t n = chan_recv(ch, fd, (char *)buf + got, len - got);

		if (n > 0)
			got += (size_t)n;
		else if (n == 0)
			return -ECONNRESET;
		else if (errno != EAGAIN && errno != EINTR)
			return -errno;
		else if (rfs_now_ns() > deadline_ns)
			return -ETIMEDOUT;
	}
	return 0;
}

/* Before anything else uses ch: 0, or -errno with ch->why set. */
static int handshake(struct chan *ch, int64_t deadline_ns)
{
	for (;;) {
		struct pollfd p = {.fd = ch->fd, .events = POLLIN};
		int64_t left;
		int r, e = 0, err = 0;
		ssize_t n;

		ERR_clear_error();
		r = SSL_do_handshake(ch->ssl);
		if (r != 1 && (e = SSL_get_error(ch->ssl, r)) != SSL_ERROR_WANT_READ)
			err = tls_failed(ch, e);
		/* Also an alert when it failed: the peer learns why. */
		take_out(ch);
		if (wire_send(ch) && !err) {
			snprintf(ch->why, sizeof ch->why, "TLS handshake: %s", strerror(errno));
			return errno == EAGAIN ? -ETIMEDOUT : -errno;
		}
		if (err) {
			/* A peer without TLS speaks frames (or a proof) at once. */
			if (ch->in.len >= 3 && !memcmp(ch->in.p, "HKR", 3))
				snprintf(ch->why, sizeof ch->why, "it speaks without TLS (no --tls-* on that side?)");
			return -err;
		}
		if (r == 1)
			break;
		left = (deadline_ns - rfs_now_ns()) / RFS_NS_PER_MS;
		if (left <= 0 || (r = poll(&p, 1, (int)left)) == 0) {
			snprintf(ch->why, sizeof ch->why, "TLS handshake: no answer in time");
			return -ETIMEDOUT;
		}
		if (r < 0 && errno == EINTR)
			continue;
		n = r < 0 ? -1 : recv(ch->fd, ch->in.p + ch->in.len, ch->in.cap - ch->in.len, 0);
		if (n == 0) {
			snprintf(ch->why, sizeof ch->why, "the connection was closed during the TLS handshake"
				 " (no --tls-* on that side, or it refused this node's certificate?)");
			return -ECONNRESET;
		}
		if (n < 0 && errno != EAGAIN && errno != EINTR) {
			snprintf(ch->why, sizeof ch->why, "TLS handshake: %s", strerror(errno));
			return -errno;
		}
		if (n > 0)
			ch->in.len += (size_t)n;
	}
	{
		const unsigned char *proto;
		unsigned int len;

		SSL_get0_alpn_selected(ch->ssl, &proto, &len);
		if (len != sizeof ALPN - 1 || memcmp(proto, ALPN, len)) {
			snprintf(ch->why, sizeof ch->why, "TLS: it does not speak %s", ALPN);
			return -EPROTO;
		}
	}
	ch->direct = 1;
	return 0;
}

/* ---- the proof of the module key ---- */

static void mac(const struct rfs_creds *c, const char *label, const unsigned char *nonce_p,
		const unsigned char *nonce_s, const void *hello, const unsigned char *bind, size_t bind_len,
		unsigned char out[MAC_LEN])
{
	unsigned char msg[32 + 2 * NONCE_LEN + CHAN_HELLO_LEN + BIND_LEN], *p = msg;
	size_t llen = strlen(label) + 1;
	unsigned int len = MAC_LEN;

	memcpy(p, label, llen);
	p += llen;
	memcpy(p, nonce_p, NONCE_LEN);
	p += NONCE_LEN;
	memcpy(p, nonce_s, NONCE_LEN);
	p += NONCE_LEN;
	memcpy(p, hello, CHAN_HELLO_LEN);
	p += CHAN_HELLO_LEN;
	memcpy(p, bind, bind_len);
	p += bind_len;
	HMAC(EVP_sha256(), c->key, KEY_LEN, msg, (size_t)(p - msg), out, &len);
}

/* The TLS session's own value, so that a proof made in one session is worth nothing
 * in another: its length (0 without TLS), or -1. */
static int binding(struct chan *ch, unsigned char out[BIND_LEN])
{
	if (!ch)
		return 0;
	return SSL_export_keying_material(ch->ssl, out, BIND_LEN, EXPORTER, sizeof EXPORTER - 1, NULL, 0, 0) == 1
		       ? BIND_LEN : -1;
}

/* Why reading or writing the proof failed. */
static void io_why(struct chan *ch, int rc, const char *closed, char *why, size_t n)
{
	if (ch && ch->why[0])
		snprintf(why, n, "%s", ch->why);
	else if (rc == -ECONNRESET)
		snprintf(why, n, "%s", closed);
	else if (rc == -ETIMEDOUT)
		snprintf(why, n, "no answer in time");
	else
		snprintf(why, n, "%s", strerror(-rc));
}

static int prove_primary(const struct rfs_creds *c, struct chan *ch, int fd, const void *hello,
			 int64_t deadline_ns, char *why, size_t n)
{
	static const char closed[] = "the secondary closed the connection instead of a challenge"
				     " (no --auth-key-file there, or TLS there and not here?)";
	unsigned char m1[AUTH_HELLO] = AUTH_MAGIC, m2[NONCE_LEN + MAC_LEN], mine[MAC_LEN], theirs[MAC_LEN];
	unsigned char verdict[VERDICT_LEN], bind[BIND_LEN];
	int blen = binding(ch, bind), rc;

	m1[4] = AUTH_VERSION;
	memcpy(m1 + 8 + NONCE_LEN, hello, CHAN_HELLO_LEN);
	if (blen < 0 || RAND_bytes(m1 + 8, NONCE_LEN) != 1)
		return snprintf(why, n, "no random bytes or TLS exporter"), -EIO;
	if ((rc = chan_write_all(ch, fd, m1, sizeof m1, deadline_ns)) ||
	    (rc = chan_read_all(ch, fd, m2, sizeof m2, deadline_ns)))
		return io_why(ch, rc, closed, why, n), rc;
	mac(c, LABEL_P, m1 + 8, m2, hello, bind, (size_t)blen, mine);
	mac(c, LABEL_S, m1 + 8, m2, hello, bind, (size_t)blen, theirs);
	if ((rc = chan_write_all(ch, fd, mine, sizeof mine, deadline_ns)) ||
	    (rc = chan_read_all(ch, fd, verdict, sizeof verdict, deadline_ns)))
		return io_why(ch, rc, "the secondary closed the connection before its verdict", why, n), rc;
	if (memcmp(verdict, "HKOK", VERDICT_LEN))
		return snprintf(why, n, "the secondary refused this node's proof (another module key there?)"), -EACCES;
	/* It accepted a proof with our key, yet cannot make one: not the real secondary. */
	if (CRYPTO_memcmp(theirs, m2 + NONCE_LEN, MAC_LEN))
		return snprintf(why, n, "the secondary does not prove the module key"), -EACCES;
	return 0;
}

static int check_primary(const struct rfs_creds *c, struct chan *ch, int fd, unsigned char hello[CHAN_HELLO_LEN],
			 int64_t deadline_ns, char *why, size_t n)
{
	static const char closed[] = "it closed the connection before proving the module key";
	unsigned char m1[AUTH_HELLO], m2[NONCE_LEN + MAC_LEN], theirs[MAC_LEN], want[MAC_LEN], bind[BIND_LEN];
	int blen = binding(ch, bind), rc;
	uint32_t magic;

	if ((rc = chan_read_all(ch, fd, m1, 4, deadline_ns)))
		return io_why(ch, rc, closed, why, n), rc;
	memcpy(&magic, m1, sizeof magic);
	if (le32toh(magic) == RFS_MAGIC)
		return snprintf(why, n, "it sends frames without proving the module key (no --auth-key-file there?)"),
		       -EACCES;
	if (memcmp(m1, AUTH_MAGIC, 4))
		return snprintf(why, n, "it does not speak hakit-rfs"), -EPROTO;
	if ((rc = chan_read_all(ch, fd, m1 + 4, sizeof m1 - 4, deadline_ns)))
		return io_why(ch, rc, closed, why, n), rc;
	if (m1[4] != AUTH_VERSION)
		return snprintf(why, n, "unsupported authentication version %u", m1[4]), -EPROTO;
	if (blen < 0 || RAND_bytes(m2, NONCE_LEN) != 1)
		return snprintf(why, n, "no random bytes or TLS exporter"), -EIO;
	mac(c, LABEL_S, m1 + 8, m2, m1 + 8 + NONCE_LEN, bind, (size_t)blen, m2 + NONCE_LEN);
	if ((rc = chan_write_all(ch, fd, m2, sizeof m2, deadline_ns)) ||
	    (rc = chan_read_all(ch, fd, theirs, sizeof theirs, deadline_ns)))
		return io_why(ch, rc, closed, why, n), rc;
	mac(c, LABEL_P, m1 + 8, m2, m1 + 8 + NONCE_LEN, bind, (size_t)blen, want);
	if (CRYPTO_memcmp(theirs, want, MAC_LEN)) {
		/* Told, so that the primary reports a refusal rather than a lost connection. */
		chan_write_all(ch, fd, "HKNO", VERDICT_LEN, deadline_ns);
		return snprintf(why, n, "wrong module key"), -EACCES;
	}
	if ((rc = chan_write_all(ch, fd, "HKOK", VERDICT_LEN, deadline_ns)))
		return io_why(ch, rc, closed, why, n), rc;
	memcpy(hello, m1 + 8 + NONCE_LEN, CHAN_HELLO_LEN);
	return 0;
}

/* ---- the two ends ---- */

/* The TLS channel when creds ask for one, its handshake done: 0, or -errno with why set. */
static int tls_open(const struct rfs_creds *creds, int fd, const char *peer, int64_t deadline_ns,
		    struct chan **ch, char *why, size_t n)
{
	int rc;

	if (!creds->tls)
		return 0;
	if (!(*ch = chan_new(creds, fd, peer)))
		return snprintf(why, n, "out of memory"), -ENOMEM;
	if ((rc = handshake(*ch, deadline_ns)))
		snprintf(why, n, "%s", (*ch)->why);
	return rc;
}

int chan_connect(const struct rfs_creds *creds, int fd, const char *peer, const void *hello, int64_t deadline_ns,
		 struct chan **out)
{
	struct chan *ch = NULL;
	char why[200] = "out of memory";
	int rc;

	*out = NULL;
	if (!creds)
		return 0;
	rc = tls_open(creds, fd, peer, deadline_ns, &ch, why, sizeof why);
	if (!rc && creds->has_key)
		rc = prove_primary(creds, ch, fd, hello, deadline_ns, why, sizeof why);
	if (rc) {
		rfs_log_limited(&attach_failures, "attach %s: %s", peer, why);
		chan_free(ch);
		return rc;
	}
	if (ch)
		ch->ready = 1;
	*out = ch;
	return 0;
}

int chan_accept(const struct rfs_creds *creds, int fd, const char *peer, struct chan **out,
		unsigned char hello[CHAN_HELLO_LEN])
{
	int64_t deadline_ns = rfs_now_ns() + CHAN_ACCEPT_MS * RFS_NS_PER_MS;
	struct chan *ch = NULL;
	char why[200] = "out of memory";
	int rc;

	*out = NULL;
	if (!creds)
		return 0;
	rc = tls_open(creds, fd, peer, deadline_ns, &ch, why, sizeof why);
	if (!rc && creds->has_key)
		rc = check_primary(creds, ch, fd, hello, deadline_ns, why, sizeof why);
	if (rc) {
		rfs_log_limited(&refusals, "receiver: refused the connection from %s: %s", peer, why);
		chan_free(ch);
		return -1;
	}
	if (ch)
		ch->ready = 1;
	*out = ch;
	return creds->has_key;
}
