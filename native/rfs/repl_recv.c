/* The replication stream, the secondary's side (repl_recv.h): the receiver accepts the
 * primary's connections (each proves itself first, chan.h), reads their frames
 * (proto.h), applies each op through the applier (apply.h) and acks it.
 *
 * One thread per connection applies that connection's frames in order: the primary
 * puts everything on one path on one connection, and sends an op that can change what
 * other paths refer to as a barrier (repl_send.c), so applying connections side by side
 * keeps every order the primary relies on.  Acks of one read are sent together; a
 * query's ack carries its answer and goes at once.
 *
 * Sessions.  Every connection opens with HELLO naming the primary's session; the newest
 * session wins: the older one's connections stop before their next frame, and the new
 * one applies nothing until they did (proto.h, struct rfs_wire_hello).
 */
#include <errno.h>
#include <fcntl.h>
#include <lz4.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "apply.h"
#include "chan.h"
#include "io.h"
#include "log.h"
#include "proto.h"
#include "query.h"
#include "repl_recv.h"

#define RX_BATCH (256u << 10)           /* read at once into an empty buffer */
#define RX_BUF (RX_BATCH + RFS_FRAME_MAX)
#define RX_ACKS 2048                    /* acks buffered before a send */
#define RX_CACHE 64                     /* write fds kept open */
#define RX_IDLE_NS (5000 * RFS_NS_PER_MS)   /* a cached fd unused this long is closed */
#define RX_POLL_MS 500
#define RX_PENDING_MAX 16               /* connections still proving themselves, at most */

struct receiver;

struct rconn {
	struct receiver *rx;
	int fd;
	pthread_t th;
	char peer[64];
	atomic_int closing;        /* stop before the next frame */
	atomic_int finished;       /* the thread is done: join it */
	/* Guarded by rx->mu (lock order: receiver.mu > applier.mu). */
	uint64_t session;
	int hello_seen, in_session;
	struct rconn *next;
	/* The thread's own. */
	struct chan *ch;           /* TLS over fd; NULL: plain */
	int bound;                 /* the primary proved the key for the HELLO in bound_hello */
	unsigned char bound_hello[CHAN_HELLO_LEN];
	uint64_t expect_seq;
	char *buf, *raw;
	char *reply;               /* a query's answer, RFS_REPLY_MAX bytes, allocated at the first */
	size_t start, have;        /* buf[start, have): received, not yet applied */
	char acks[RX_ACKS * RFS_HDR_LEN];
	size_t nacks;
};

struct receiver {
	struct rfs_applier *ap;
	struct rfs_rx_stats *stats; /* the caller's, or one of our own */
	volatile int *stop;
	const struct rfs_creds *creds;
	/* Guards conns, session and each conn's session fields; taken before applier.mu. */
	pthread_mutex_t mu;
	pthread_cond_t cond;       /* a connection left its session */
	struct rconn *conns;
	uint64_t session;
	int have_session;
	uint64_t real_failures;    /* of stats->failures, those not of an incomplete tree */
	int pending;               /* connections not through chan_accept yet; under mu */
	uint64_t refused;          /* connections refused for the cap on pending ones */
};

/* *stop is the caller's plain int: read it atomically all the same. */
static int rx_stop_asked(struct receiver *rx)
{
	return __atomic_load_n(rx->stop, __ATOMIC_RELAXED);
}

static int rx_stopping(struct rconn *k)
{
	return atomic_load(&k->closing) || rx_stop_asked(k->rx);
}

static int rconn_stopping(void *k)
{
	return rx_stopping(k);
}

/* No deadline: a primary slow to read its acks is the primary's business; a stop is
 * looked at whenever SO_SNDTIMEO ends a wait. */
static int rconn_send(struct rconn *k, const char *buf, size_t len)
{
	return chan_write_until(k->ch, k->fd, buf, len, INT64_MAX, rconn_stopping, k) ? -1 : 0;
}

static int acks_flush(struct rconn *k)
{
	if (rconn_send(k, k->acks, k->nacks * RFS_HDR_LEN))
		return -1;
	k->nacks = 0;
	return 0;
}

/* A query's ack carries its answer: after the acks queued before it, at once. */
static int ack_answer(struct rconn *k, uint64_t seq, int result, size_t len)
{
	struct rfs_wire_hdr h = {.magic = RFS_MAGIC, .version = RFS_VERSION, .type = RFS_T_ACK,
				 .seq = seq, .result = result, .body_len = (uint32_t)len};
	char head[RFS_HDR_LEN];

	rfs_hdr_put(head, &h);
	return acks_flush(k) || rconn_send(k, head, RFS_HDR_LEN) || rconn_send(k, k->reply, len) ? -1 : 0;
}

static int ack(struct rconn *k, uint64_t seq, int result, uint16_t flags)
{
	struct rfs_wire_hdr h = {.magic = RFS_MAGIC, .version = RFS_VERSION, .type = RFS_T_ACK,
				 .flags = flags, .seq = seq, .result = result};

	if (k->nacks == RX_ACKS && acks_flush(k))
		return -1;
	rfs_hdr_put(k->acks + k->nacks++ * RFS_HDR_LEN, &h);
	return 0;
}

/* The header alone decides whether the frame is acceptable, before its body is read:
 * a huge length is refused without waiting for it.  0, or -1 with why set. */
static int check_hdr(struct rconn *k, const struct rfs_wire_hdr *h, char *why, size_t n)
{
	unsigned shape = rfs_op_shape(h->type);
	size_t strs = (size_t)h->path_len + h->path2_len + h->name_len;

#define BAD(...) return snprintf(why, n, __VA_ARGS__), -1
	if (h->magic != RFS_MAGIC)
		BAD("bad magic 0x%08x", h->magic);
	if (h->version != RFS_VERSION)
		BAD("unsupported version %u", h->version);
	if (!k->hello_seen) {
		if (h->type != RFS_T_HELLO || h->seq || h->body_len != sizeof(struct rfs_wire_hello))
			BAD("the first frame is not a hello");
		return 0;
	}
	if (h->type == RFS_T_KEEPALIVE) {
		if (h->seq || h->flags || h->body_len || strs)
			BAD("bad keepalive");
		return 0;
	}
	if (!shape)
		BAD("unknown frame type %u", h->type);
	if (h->seq != k->expect_seq)
		BAD("seq %llu, expected %llu", (unsigned long long)h->seq, (unsigned long long)k->expect_seq);
	if (h->flags & ~RFS_F_KNOWN || (h->flags & RFS_F_LZ4 && h->type != RFS_OP_WRITE))
		BAD("bad flags 0x%x for %s", h->flags, rfs_opcode_name(h->type));
	if (h->body_len > RFS_BODY_MAX || h->path_len > RFS_PATH_MAX || h->path2_len > RFS_PATH_MAX ||
	    h->name_len > RFS_NAME_MAX)
		BAD("%s frame beyond the limits", rfs_opcode_name(h->type));
	if (h->body_len < RFS_WOP_LEN + strs)
		BAD("%s frame shorter than its strings", rfs_opcode_name(h->type));
	if (!(shape & RFS_SHAPE_DATA) && h->body_len != RFS_WOP_LEN + strs)
		BAD("data in a %s frame", rfs_opcode_name(h->type));
	if (!(shape & RFS_SHAPE_PATH) != !h->path_len || !(shape & RFS_SHAPE_PATH2) != !h->path2_len ||
	    !(shape & RFS_SHAPE_NAME) != !h->name_len)
		BAD("%s frame with the wrong strings", rfs_opcode_name(h->type));
	return 0;
#undef BAD
}

/* A string of the body: exactly len bytes, NUL last and only there. */
static const char *body_str(const char *p, uint16_t len, int *bad)
{
	if (!len)
		return NULL;
	if (memchr(p, '\0', len) != p + len - 1)
		*bad = 1;
	return p;
}

static int hello_in(struct rconn *k, const char *body)
{
	struct receiver *rx = k->rx;
	struct rfs_wire_hello hl;
	int ok;

	if (k->bound && memcmp(body, k->bound_hello, sizeof k->bound_hello)) {
		rfs_log("receiver: closing the connection from %s: its hello is not the one it proved", k->peer);
		return -1;
	}
	rfs_hello_get(&hl, body);
	pthread_mutex_lock(&rx->mu);
	if (!rx->have_session || rx->session != hl.session) {
		/* The latest session wins: the older one's connections stop before their next
		 * frame and the new one applies nothing until they did. */
		rx->session = hl.session;
		rx->have_session = 1;
		for (struct rconn *o = rx->conns; o; o = o->next) {
			if (o != k && o->hello_seen && o->session != hl.session) {
				atomic_store(&o->closing, 1);
				shutdown(o->fd, SHUT_RDWR);
			}
		}
		/* Files may have been changed outside the stream between sessions. */
		rfs_applier_expire(rx->ap, 0);
	}
	k->session = hl.session;
	k->hello_seen = 1;
	for (;;) {
		int old = 0;

		for (struct rconn *o = rx->conns; o; o = o->next)
			old |= o->in_session && o->session != k->session;
		if (!old || rx_stopping(k))
			break;
		pthread_cond_wait(&rx->cond, &rx->mu);
	}
	ok = rx->session == k->session && !rx_stopping(k);
	k->in_session = ok;
	pthread_mutex_unlock(&rx->mu);
	k->expect_seq = 1;
	return ok ? ack(k, 0, 0, RFS_F_KEEPALIVES) : -1;
}

/* The primary hears of it in the ack (and detaches this copy unless a sync expects
 * it); said here too, so that this node's log and module know. */
static void rx_failed(struct receiver *rx, const struct rfs_op *op, int err)
{
	uint64_t n = __atomic_add_fetch(&rx->stats->failures, 1, __ATOMIC_RELAXED);
	int real = !rfs_err_of_incomplete_tree(err);
	char what[RFS_PATH_MAX + 128];

	/* The copy's own file system failing is news; entries a sync has not reached yet
	 * are not, and only its log hears of them. */
	if (real)
		n = __atomic_add_fetch(&rx->real_failures, 1, __ATOMIC_RELAXED);
	if (n & (n - 1))
		return;
	snprintf(what, sizeof what, "failed to %s %s: %s (%llu so far)", rfs_opcode_name(op->code),
		 op->path && *op->path ? op->path : "/", strerror(-err), (unsigned long long)n);
	rfs_log("receiver: %s", what);
	if (real && rx->stats->failed)
		rx->stats->failed(rx->stats->arg, what);
}

#ifdef RFS_FAULT_INJECTION
/* Test builds only (make rfs-faults): HAKIT_RFS_FAULT=ERRNO:TEXT makes every operation
 * whose path contains TEXT fail with that errno number, for the errors that cannot be
 * caused for real on the test machine (EIO). */
static int injected_fault(const struct rfs_op *op)
{
	const char *spec = getenv("HAKIT_RFS_FAULT"), *text;
	long err;

	if (!spec || !(text = strchr(spec, ':')) || !op->path || !strstr(op->path, text + 1))
		return 0;
	err = strtol(spec, NULL, 10);
	return err > 0 && err < 4096 ? -(int)err : 0;
}
#else
static int injected_fault(const struct rfs_op *op)
{
	(void)op;
	return 0;
}
#endif

/* One whole op frame: decode, apply, queue the ack.  0, or -1 with why set (garbage)
 * or not (the connection is being closed). */
static int op_in(struct rconn *k, const struct rfs_wire_hdr *h, const char *body, char *why, size_t n)
{
	struct rfs_op op = {.code = h->type};
	const char *p = body + RFS_WOP_LEN;
	size_t wire = h->body_len - RFS_WOP_LEN - h->path_len - h->path2_len - h->name_len;
	uint32_t raw = rfs_wop_get(&op, body);
	int bad = 0, durable = !!(h->flags & RFS_F_DURABLE), rc;

	op.path = body_str(p, h->path_len, &bad);
	p += h->path_len;
	op.path2 = body_str(p, h->path2_len, &bad);
	p += h->path2_len;
	op.name = body_str(p, h->name_len, &bad);
	p += h->name_len;
	if (bad)
		return snprintf(why, n, "%s frame with a string not NUL-terminated", rfs_opcode_name(h->type)), -1;
	if (raw > RFS_DATA_MAX || (!(h->flags & RFS_F_LZ4) && raw != wire))
		return snprintf(why, n, "%s frame with a bad data length", rfs_opcode_name(h->type)), -1;
	if (h->flags & RFS_F_LZ4) {
		if (LZ4_decompress_safe(p, k->raw, (int)wire, (int)raw) != (int)raw)
			return snprintf(why, n, "write frame with corrupt lz4 data"), -1;
		p = k->raw;
	}
	op.data = raw ? p : NULL;
	op.data_len = raw;
	if (rfs_op_shape(op.code) & RFS_SHAPE_QUERY) {
		size_t len = 0;

		if (!k->reply && !(k->reply = malloc(RFS_REPLY_MAX)))
			rc = -ENOMEM;
		else
			rc = rfs_applier_query(k->rx->ap, &op, k->reply, RFS_REPLY_MAX, &len);
		__atomic_fetch_add(&k->rx->stats->ops, 1, __ATOMIC_RELAXED);
		k->expect_seq++;
		return ack_answer(k, h->seq, rc, len);
	}
	/* Acks already earned should not wait behind an fsync. */
	if ((durable || op.code == RFS_OP_FSYNC || op.code == RFS_OP_SYNCFS) && k->nacks && acks_flush(k))
		return -1;
	if (!(rc = injected_fault(&op)))
		rc = rfs_applier_apply(k->rx->ap, &op, durable);
	__atomic_fetch_add(&k->rx->stats->ops, 1, __ATOMIC_RELAXED);
	if (rc)
		rx_failed(k->rx, &op, rc);
	k->expect_seq++;
	return ack(k, h->seq, rc, 0);
}

/* Every whole frame in the buffer; 0, or -1: close (with why set if garbage). */
static int frames_in(struct rconn *k, char *why, size_t n)
{
	size_t pos = k->start;
	int rc = 0;

	while (!rc && k->have - pos >= RFS_HDR_LEN) {
		struct rfs_wire_hdr h;

		rfs_hdr_get(&h, k->buf + pos);
		if (check_hdr(k, &h, why, n))
			return -1;
		if (k->have - pos < RFS_HDR_LEN + h.body_len)
			break;
		if (rx_stopping(k))
			return -1;
		if (!k->hello_seen)
			rc = hello_in(k, k->buf + pos + RFS_HDR_LEN);
		else if (h.type == RFS_T_KEEPALIVE)
			rc = 0; /* what it says, its arrival said */
		else
			rc = op_in(k, &h, k->buf + pos + RFS_HDR_LEN, why, n);
		pos += RFS_HDR_LEN + h.body_len;
	}
	k->start = pos;
	if (k->start == k->have)
		k->start = k->have = 0;
	return rc;
}

/* How much to read next: a batch into an empty buffer, else the rest of the frame begun
 * (its header first).  A frame then always begins within the first batch and fits
 * where it begins: nothing is ever moved to make room (a copy of the whole stream
 * when reads end inside frames, as TLS's do). */
static size_t rx_want(const struct rconn *k)
{
	size_t got = k->have - k->start;
	struct rfs_wire_hdr h;

	if (!got)
		return RX_BATCH;
	if (got < RFS_HDR_LEN)
		return RFS_HDR_LEN - got;
	rfs_hdr_get(&h, k->buf + k->start); /* checked by frames_in: fits in RFS_FRAME_MAX */
	return RFS_HDR_LEN + h.body_len - got;
}

static void *rconn_main(void *arg)
{
	struct rconn *k = arg;
	struct receiver *rx = k->rx;
	int64_t expired = rfs_now_ns();
	char why[192] = "";
	/* Before any frame is read: a peer refused here was never listened to. */
	int auth = chan_accept(rx->creds, k->fd, k->peer, &k->ch, k->bound_hello);

	pthread_mutex_lock(&rx->mu);
	rx->pending--;
	pthread_mutex_unlock(&rx->mu);
	/* The frame buffers (1.3 MiB) only for a peer that passed: nobody can make the
	 * receiver allocate them by merely connecting. */
	if (auth >= 0 && (!(k->buf = malloc(RX_BUF)) || !(k->raw = malloc(RFS_DATA_MAX)))) {
		rfs_log("receiver: closing the connection from %s: out of memory", k->peer);
		auth = -1;
	}
	k->bound = auth > 0;
	/* SO_RCVTIMEO makes recv return every RX_POLL_MS to look at stop and the cache. */
	while (auth >= 0 && !rx_stopping(k)) {
		ssize_t got = chan_recv(k->ch, k->fd, k->buf + k->have, rx_want(k));

		if (rfs_now_ns() - expired > RX_IDLE_NS / 4) {
			rfs_applier_expire(rx->ap, RX_IDLE_NS);
			expired = rfs_now_ns();
		}
		if (got < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (got <= 0)
			break;
		k->have += (size_t)got;
		__atomic_fetch_add(&rx->stats->bytes, (uint64_t)got, __ATOMIC_RELAXED);
		__atomic_store_n(&rx->stats->last_ns, rfs_now_ns(), __ATOMIC_RELAXED);
		if (frames_in(k, why, sizeof why) || acks_flush(k))
			break;
	}
	if (*why)
		rfs_log("receiver: closing the connection from %s: %s", k->peer, why);
	shutdown(k->fd, SHUT_RDWR); /* the peer learns now, not when the fd is reaped */
	pthread_mutex_lock(&rx->mu);
	k->in_session = 0;
	pthread_cond_broadcast(&rx->cond);
	pthread_mutex_unlock(&rx->mu);
	/* The fd stays open until the thread is joined: another thread may shut it down. */
	atomic_store(&k->finished, 1);
	return NULL;
}

static void rconn_free(struct rconn *k)
{
	chan_free(k->ch);
	close(k->fd);
	free(k->buf);
	free(k->raw);
	free(k->reply);
	free(k);
}

/* Join the connections whose thread is done (all of them with all set). */
static void rx_reap(struct receiver *rx, int all)
{
	struct rconn *done = NULL, **pp, *k;

	pthread_mutex_lock(&rx->mu);
	for (pp = &rx->conns; (k = *pp);) {
		if (all || atomic_load(&k->finished)) {
			*pp = k->next;
			k->next = done;
			done = k;
		} else {
			pp = &k->next;
		}
	}
	pthread_mutex_unlock(&rx->mu);
	while ((k = done)) {
		done = k->next;
		pthread_join(k->th, NULL);
		rconn_free(k);
	}
}

static void rx_accept(struct receiver *rx, int fd, const struct sockaddr_storage *sa, socklen_t len)
{
	struct rconn *k = calloc(1, sizeof *k);
	struct timeval tv = {.tv_usec = RX_POLL_MS * 1000};
	char host[INET6_ADDRSTRLEN] = "?", serv[16] = "?";

	getnameinfo((const struct sockaddr *)sa, len, host, sizeof host, serv, sizeof serv,
		    NI_NUMERICHOST | NI_NUMERICSERV);
	if (!k) {
		rfs_log("receiver: refusing the connection from %s: out of memory", host);
		close(fd);
		return;
	}
	k->rx = rx;
	k->fd = fd;
	snprintf(k->peer, sizeof k->peer, "%s:%s", host, serv);
	rfs_sock_nodelay(fd);
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
	pthread_mutex_lock(&rx->mu);
	/* Each waits up to the proof's deadline (10 s) with a thread: a flood of connections
	 * that prove nothing holds at most this many, and is said at counts that are powers
	 * of two.  A primary refused meanwhile attaches again (the module retries). */
	if (rx->pending >= RX_PENDING_MAX) {
		uint64_t n = ++rx->refused;

		pthread_mutex_unlock(&rx->mu);
		if (!(n & (n - 1)))
			rfs_log("receiver: refusing the connection from %s: %d connections are proving themselves "
			    "already (%llu refused so far)", k->peer, RX_PENDING_MAX, (unsigned long long)n);
		rconn_free(k);
		return;
	}
	if (pthread_create(&k->th, NULL, rconn_main, k)) {
		pthread_mutex_unlock(&rx->mu);
		rfs_log("receiver: refusing the connection from %s: no thread", k->peer);
		rconn_free(k);
		return;
	}
	rx->pending++;
	k->next = rx->conns;
	rx->conns = k;
	pthread_mutex_unlock(&rx->mu);
}

int rfs_receiver_serve(int rootfd, int listen_fd, volatile int *stop, const struct rfs_creds *creds,
		       struct rfs_rx_stats *stats)
{
	struct rfs_rx_stats own = {0};
	struct receiver rx = {.stop = stop, .creds = creds, .stats = stats ? stats : &own};
	int rc = 0;

	/* Modes arrive already masked by the application's umask on the primary. */
	umask(0);
	rx.ap = rfs_applier_new(rootfd, RX_CACHE);
	if (!rx.ap)
		return -errno;
	/* A connection that resets between poll and accept must not block the loop. */
	fcntl(listen_fd, F_SETFL, fcntl(listen_fd, F_GETFL) | O_NONBLOCK);
	/* Accepted sockets inherit the listener's buffers (and window scale). */
	rfs_sock_bufs(listen_fd);
	pthread_mutex_init(&rx.mu, NULL);
	pthread_cond_init(&rx.cond, NULL);
	while (!rx_stop_asked(&rx)) {
		struct pollfd p = {.fd = listen_fd, .events = POLLIN};
		struct sockaddr_storage sa;
		socklen_t len = sizeof sa;
		int n = poll(&p, 1, RX_POLL_MS / 2), fd;

		rx_reap(&rx, 0);
		if (n < 0 && errno != EINTR) {
			rc = -errno;
			break;
		}
		if (n <= 0)
			continue;
		fd = accept4(listen_fd, (struct sockaddr *)&sa, &len, SOCK_CLOEXEC);
		if (fd >= 0)
			rx_accept(&rx, fd, &sa, len);
		else if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
			rfs_log("receiver: accept: %s", strerror(errno));
		else if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED && errno != EPROTO)
			rc = -errno;
		if (rc)
			break;
	}
	pthread_mutex_lock(&rx.mu);
	for (struct rconn *k = rx.conns; k; k = k->next) {
		atomic_store(&k->closing, 1);
		shutdown(k->fd, SHUT_RDWR);
	}
	pthread_cond_broadcast(&rx.cond);
	pthread_mutex_unlock(&rx.mu);
	rx_reap(&rx, 1);
	pthread_mutex_destroy(&rx.mu);
	pthread_cond_destroy(&rx.cond);
	rfs_applier_free(rx.ap);
	return rc;
}
