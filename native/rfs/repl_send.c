/* The replication stream, the primary's side (repl_send.h): submitted ops become
 * frames (proto.h) on `nbremconn` TCP connections to the secondary's receiver
 * (repl_recv.c), which applies them and acks each one.
 *
 * Ordering.  The receiver applies each connection's frames in order, one connection
 * per thread, so two ops keep their order only when they share a connection:
 * - an op that acts on one path (write, truncate, fallocate, fsync, attributes, and
 *   also create, mknod, symlink and unlink, which add or remove only that entry) goes
 *   on the connection of its path's hash: everything on one file stays in order;
 * - an op that can change what other paths refer to (mkdir: a parent for new paths;
 *   rmdir, rename: a subtree removed or moved; syncfs) is a barrier.  It takes the
 *   gate exclusively, so nothing else is queued meanwhile, waits until every
 *   connection has no un-acked frame, goes out and is acked, then releases the gate:
 *   it is applied after everything submitted before it and before anything after it.
 *
 * Sending.  Submitters copy frames into their connection's queue under its mutex; the
 * whole queue goes out with one sendmsg (a batch).  Buffered ops are sent by a sender
 * thread per connection within flush_delay_ms, or at once when FLUSH_BYTES are
 * queued, so small writes share a send; a caller that waits for its ack sends the
 * queue itself, and its write data of ZEROCOPY_MIN or more is not copied.
 * Un-acked bytes per connection are bounded (max_queued_bytes / nbremconn): beyond
 * that the submitter blocks, nothing is dropped.  An acker thread per connection
 * reads acks (in seq order) and wakes the waiters; a query's answer, in its ack's body,
 * is copied to the buffer its waiter gave (rfs_repl_query).
 *
 * Detach.  No progress (a send that moves no byte, or un-acked frames and no ack) for
 * send_timeout_ms kills the session: sockets shut down, every waiter returns 0, the
 * event callback hears "detached <reason>".  The session is reaped (threads joined,
 * sockets closed) by the next attach, detach or free.  The callback may call
 * rfs_repl_detach or rfs_repl_attach, not rfs_repl_free.
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
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "chan.h"
#include "io.h"
#include "proto.h"
#include "query.h"
#include "repl_send.h"

#define FLUSH_BYTES (256u << 10)        /* a buffered queue this big goes out at once */
#define ZEROCOPY_MIN (64u << 10)        /* waited-for write data from here on is not copied */
#define LZ4_MIN 512                     /* shorter write data is not worth compressing */
#define LZ4_SKIP 16                     /* writes sent raw after one that did not compress */
#define ACK_POLL_MS 100
#define ACK_BUF (64 * RFS_HDR_LEN + RFS_HDR_LEN + RFS_REPLY_MAX) /* room for a batch of acks, or one with an answer */
#define DEFAULT_QUEUED (64u << 20)
#define DEFAULT_TIMEOUT_MS 30000

static void cond_init_mono(pthread_cond_t *c)
{
	pthread_condattr_t ca;

	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(c, &ca);
	pthread_condattr_destroy(&ca);
}

static void wait_until(pthread_cond_t *c, pthread_mutex_t *m, int64_t when_ns)
{
	struct timespec ts = {.tv_sec = when_ns / 1000000000, .tv_nsec = when_ns % 1000000000};

	pthread_cond_timedwait(c, m, &ts);
}

/* A run of queued bytes: inline in the queue's buffer, or a submitter's own data. */
struct seg {
	const char *ext; /* NULL: at off in buf */
	size_t off, len;
};

struct outq {
	char *buf;
	size_t len, cap;
	struct seg *segs;
	size_t nsegs, segcap;
	size_t bytes, raw_bytes; /* on the wire / before compression */
	uint64_t ops;
	int64_t first_ns;        /* when the oldest op in it was queued */
};

struct waiter {
	uint64_t seq;
	int result, done;
	void *reply;               /* a query's answer goes here (reply_cap bytes), else NULL */
	size_t reply_cap, reply_len;
	struct waiter *next;
};

struct session;

/* An un-acked frame: its wire size and opcode, and with a journal (dirty.h) what it
 * changes, so that the marks of frames a dying session never had acked can be
 * recorded (and a failure named). */
struct inflight {
	uint32_t size;
	uint8_t code;
	struct rfs_op op;  /* code, flags, off, len; path and path2 owned (malloc), else NULL */
};

struct conn {
	struct session *s;
	int fd;
	int threads;               /* how many of sender, acker were started */
	struct chan *ch;           /* TLS over fd; NULL: plain */
	char *ackbuf;              /* the acker's, ACK_BUF bytes */
	pthread_t sender, acker;
	/* Lock order: attach_mu > gate > conn.mu, one connection's at a time, never with
	 * repl.mu.  Guards every field below. */
	pthread_mutex_t mu;
	pthread_cond_t wake_sender;
	pthread_cond_t acked;      /* acks arrived, a batch was sent, or the session died */
	int dead;
	struct outq q;             /* being filled by submitters */
	struct outq spare;         /* being sent, outside mu, by whoever set sending */
	int sending;               /* a thread is sending spare: the sender, or a waiter */
	int fail_rc;               /* a waiter's send failed: the sender detaches */
	uint64_t next_seq;         /* last seq given out */
	uint64_t acked_seq;
	uint64_t taken_seq;        /* last seq taken for sending */
	uint64_t taken, sent;      /* batches taken for sending, and finished */
	struct inflight *ring;     /* the un-acked frames, in seq order */
	size_t ring_cap, ring_head, ring_n;
	size_t unacked_bytes, limit;
	int sleeping;              /* the sender waits on wake_sender */
	int ack_waiters;           /* threads waiting on acked */
	struct waiter *waiters;
	int64_t progress_ns;       /* last byte sent or ack received */
	int64_t sent_ns;           /* last byte sent */
	int keepalives;            /* the receiver takes KEEPALIVE (said in the HELLO's ack) */
};

struct session {
	struct rfs_repl *r;
	int nconn;
	struct conn *conns;
	atomic_int dead;
	atomic_int installed;      /* became cur: its death detaches */
	atomic_int refs;           /* submitters using the session */
	struct session *next;      /* on r->zombies */
};

struct rfs_repl {
	struct rfs_repl_config cfg;
	/* Serializes attach/detach and guards zombies.  Top of the lock order; never held
	 * while joining threads (a stream thread may call detach from the event callback). */
	pthread_mutex_t attach_mu;
	/* Shared by per-path submitters while they queue; exclusive for a barrier op from
	 * before its drain to its ack, and to change cur.  Writer-preferring, so a stream
	 * of writes cannot starve a rename.  Lock order: attach_mu > gate > conn.mu. */
	pthread_rwlock_t gate;
	/* With cond: reapers wait for a dead session's refs.  Lock order: gate > mu; held
	 * with no conn.mu. */
	pthread_mutex_t mu;
	pthread_cond_t cond;
	struct session *cur;       /* written under attach_mu and gate; read under either */
	struct session *zombies;   /* killed, not yet reaped; guarded by attach_mu */
	atomic_int attached;
	atomic_int lz_skip;
	atomic_uint_fast64_t ops_sent, bytes_sent, bytes_on_wire, acks, attaches, failures;
	atomic_size_t queued;
	/* With cfg.fence: a session that died by itself holds every op that would be
	 * acknowledged without the secondary until rfs_repl_fenced() or a detach (under mu,
	 * waited on with fence_cond). */
	atomic_int fencing;
	pthread_cond_t fence_cond;
};

/* ---- queues ---- */

/* All allocation for one frame happens here, before it gets a seq. */
static int outq_room(struct outq *q, size_t n)
{
	int rc = rfs_grow(&q->buf, &q->cap, q->len + n, 1);

	return rc ? rc : rfs_grow(&q->segs, &q->segcap, q->nsegs + 2, sizeof *q->segs);
}

static void outq_copy(struct outq *q, const void *p, size_t n)
{
	struct seg *last = q->nsegs ? &q->segs[q->nsegs - 1] : NULL;

	if (!n)
		return;
	if (last && !last->ext)
		last->len += n; /* inline runs always end at q->len */
	else
		q->segs[q->nsegs++] = (struct seg){.off = q->len, .len = n};
	memcpy(q->buf + q->len, p, n);
	q->len += n;
	q->bytes += n;
}

static void outq_ref(struct outq *q, const void *p, size_t n)
{
	q->segs[q->nsegs++] = (struct seg){.ext = p, .len = n};
	q->bytes += n;
}

static void outq_reset(struct outq *q)
{
	q->len = q->nsegs = q->bytes = q->raw_bytes = 0;
	q->ops = 0;
}

static void outq_free(struct outq *q)
{
	free(q->buf);
	free(q->segs);
}

static int ring_room(struct conn *c)
{
	struct inflight *n;
	size_t cap = c->ring_cap ? c->ring_cap * 2 : 256;

	if (c->ring_n < c->ring_cap)
		return 0;
	n = malloc(cap * sizeof *n);
	if (!n)
		return -ENOMEM;
	for (size_t i = 0; i < c->ring_n; i++)
		n[i] = c->ring[(c->ring_head + i) % c->ring_cap];
	free(c->ring);
	c->ring = n;
	c->ring_cap = cap;
	c->ring_head = 0;
	return 0;
}

static void inflight_clear(struct inflight *f)
{
	f->code = 0;
	free((char *)f->op.path);
	free((char *)f->op.path2);
	f->op.path = f->op.path2 = NULL;
}

/* What a frame changes, kept until its ack when a journal wants it: 0 or -ENOMEM. */
static int inflight_keep(struct rfs_repl *r, struct inflight *f, const struct rfs_op *op)
{
	f->op = (struct rfs_op){0};
	f->code = (uint8_t)op->code;
	if (!r->cfg.dirty || rfs_op_shape(op->code) & RFS_SHAPE_QUERY)
		return 0;
	f->op = (struct rfs_op){.code = op->code, .flags = op->flags, .off = op->off,
				.len = op->code == RFS_OP_WRITE ? op->data_len : op->len};
	f->op.path = op->path ? strdup(op->path) : NULL;
	f->op.path2 = op->path2 ? strdup(op->path2) : NULL;
	if ((op->path && !f->op.path) || (op->path2 && !f->op.path2)) {
		inflight_clear(f);
		return -ENOMEM;
	}
	return 0;
}

/* ---- sessions ---- */

static void session_kill(struct session *s, const char *reason)
{
	struct rfs_repl *r = s->r;
	int was = 0;

	/* An op of our own spans the detach and the marks of the frames left un-acked, so
	 * that the journal is not declared complete before they are in it.  The journal
	 * records before the session is seen dead: a submitter that finds it dead gives its
	 * op to the journal, which must be recording by then. */
	struct rfs_dirty_ticket t;
	struct rfs_dirty *journal = atomic_load(&s->installed) && !atomic_load(&s->dead) ? r->cfg.dirty : NULL;

	/* Before the session is seen dead or detached: a submitter that sees either must
	 * find the fence up, or it would acknowledge an op without the secondary, which
	 * nobody has told yet.  Raised for a session that may die by another's hand
	 * meanwhile: by its own threads, which raise it too, or by a detach asked for,
	 * which lowers it once every user of the session is gone. */
	if (reason && r->cfg.fence && atomic_load(&s->installed) && !atomic_load(&s->dead)) {
		pthread_mutex_lock(&r->mu);
		atomic_store(&r->fencing, 1);
		pthread_mutex_unlock(&r->mu);
	}
	if (journal) {
		rfs_dirty_begin(journal, &(struct rfs_op){.code = RFS_OP_SYNCFS}, &t);
		rfs_dirty_detached(journal);
	}
	if (!atomic_compare_exchange_strong(&s->dead, &was, 1)) {
		if (journal)
			rfs_dirty_end(journal, &t);
		return;
	}
	if (atomic_load(&s->installed))
		atomic_store(&r->attached, 0);
	for (int i = 0; i < s->nconn; i++) {
		struct conn *c = &s->conns[i];

		pthread_mutex_lock(&c->mu);
		c->dead = 1;
		/* Done here, perhaps not there: the journal takes what was not acked. */
		for (size_t k = 0; journal && k < c->ring_n; k++) {
			struct inflight *f = &c->ring[(c->ring_head + k) % c->ring_cap];

			if (f->op.code)
				rfs_dirty_mark(journal, &f->op);
		}
		pthread_cond_broadcast(&c->wake_sender);
		pthread_cond_broadcast(&c->acked);
		pthread_mutex_unlock(&c->mu);
		if (c->fd >= 0)
			shutdown(c->fd, SHUT_RDWR);
	}
	if (journal)
		rfs_dirty_end(journal, &t);
	if (reason && r->cfg.event) {
		char what[256];

		snprintf(what, sizeof what, "detached %s", reason);
		r->cfg.event(r->cfg.event_arg, what);
	}
}

static void session_put(struct session *s)
{
	struct rfs_repl *r = s->r;
	int dead = atomic_load(&s->dead); /* read before: s may be freed once refs is 0 */

	if (atomic_fetch_sub(&s->refs, 1) == 1 && dead) {
		pthread_mutex_lock(&r->mu);
		pthread_cond_broadcast(&r->cond);
		pthread_mutex_unlock(&r->mu);
	}
}

static int session_has_thread(struct session *s, pthread_t t)
{
	for (int i = 0; i < s->nconn; i++) {
		struct conn *c = &s->conns[i];

		if ((c->threads > 0 && pthread_equal(c->sender, t)) ||
		    (c->threads > 1 && pthread_equal(c->acker, t)))
			return 1;
	}
	return 0;
}

/* Join, wait for the last submitter, close, free.  s is dead. */
static void session_free(struct session *s)
{
	struct rfs_repl *r = s->r;

	for (int i = 0; i < s->nconn; i++) {
		struct conn *c = &s->conns[i];

		if (c->threads > 0)
			pthread_join(c->sender, NULL);
		if (c->threads > 1)
			pthread_join(c->acker, NULL);
	}
	pthread_mutex_lock(&r->mu);
	/* A submitter that decremented refs before dead was set does not broadcast: poll. */
	while (atomic_load(&s->refs) > 0)
		wait_until(&r->cond, &r->mu, rfs_now_ns() + 10 * RFS_NS_PER_MS);
	pthread_mutex_unlock(&r->mu);
	for (int i = 0; i < s->nconn; i++) {
		struct conn *c = &s->conns[i];

		chan_free(c->ch);
		if (c->fd >= 0)
			close(c->fd);
		atomic_fetch_sub(&r->queued, c->unacked_bytes);
		outq_free(&c->q);
		outq_free(&c->spare);
		for (size_t k = 0; k < c->ring_n; k++)
			inflight_clear(&c->ring[(c->ring_head + k) % c->ring_cap]);
		free(c->ring);
		free(c->ackbuf);
		pthread_mutex_destroy(&c->mu);
		pthread_cond_destroy(&c->wake_sender);
		pthread_cond_destroy(&c->acked);
	}
	free(s->conns);
	free(s);
}

/* Kill cur and move it to the zombies.  Caller holds attach_mu. */
static void detach_locked(struct rfs_repl *r)
{
	struct session *s = r->cur; /* not under the gate: a barrier op may hold it */

	if (!s)
		return;
	/* Kill first: it wakes every submitter holding the gate, so we can take it. */
	session_kill(s, NULL);
	pthread_rwlock_wrlock(&r->gate);
	r->cur = NULL;
	pthread_rwlock_unlock(&r->gate);
	s->next = r->zombies;
	r->zombies = s;
}

/* Reap every zombie except the one whose thread we run on (it is reaped later). */
static void reap_zombies(struct rfs_repl *r)
{
	struct session *list, *s, *keep = NULL;

	pthread_mutex_lock(&r->attach_mu);
	list = r->zombies;
	r->zombies = NULL;
	pthread_mutex_unlock(&r->attach_mu);
	while ((s = list)) {
		list = s->next;
		if (session_has_thread(s, pthread_self())) {
			s->next = keep;
			keep = s;
		} else {
			session_free(s);
		}
	}
	if (keep) {
		pthread_mutex_lock(&r->attach_mu);
		keep->next = r->zombies;
		r->zombies = keep;
		pthread_mutex_unlock(&r->attach_mu);
	}
}

/* ---- the two threads of a connection ---- */

static int send_batch(struct conn *c, const struct outq *q)
{
	struct iovec iov[64];
	size_t i = 0, skip = 0; /* next segment, bytes of it already sent */

	while (i < q->nsegs) {
		struct msghdr mh = {.msg_iov = iov};
		size_t n = 0;
		ssize_t sent;

		for (size_t j = i; j < q->nsegs && n < sizeof iov / sizeof *iov; j++, n++) {
			const struct seg *g = &q->segs[j];
			const char *base = g->ext ? g->ext : q->buf + g->off;
			size_t from = j == i ? skip : 0;

			iov[n] = (struct iovec){.iov_base = (void *)(base + from), .iov_len = g->len - from};
		}
		mh.msg_iovlen = n;
		sent = chan_sendmsg(c->ch, c->fd, &mh);
		if (sent < 0 && errno == EINTR)
			continue;
		if (sent < 0)
			return errno == EAGAIN || errno == EWOULDBLOCK ? -ETIMEDOUT : -errno;
		pthread_mutex_lock(&c->mu);
		c->progress_ns = c->sent_ns = rfs_now_ns();
		pthread_mutex_unlock(&c->mu);
		while (sent > 0) {
			size_t left = q->segs[i].len - skip;

			if ((size_t)sent < left) {
				skip += (size_t)sent;
				break;
			}
			sent -= (ssize_t)left;
			i++;
			skip = 0;
		}
	}
	return 0;
}

/* Send everything queued on c as one batch.  Called and returns with c->mu held;
 * the caller checked that nobody is sending. */
static int flush_locked(struct conn *c)
{
	struct rfs_repl *r = c->s->r;
	struct outq t = c->q;
	int rc;

	c->q = c->spare;
	c->spare = t;
	c->sending = 1;
	c->taken++;
	c->taken_seq = c->next_seq;
	pthread_mutex_unlock(&c->mu);
	rc = send_batch(c, &c->spare);
	pthread_mutex_lock(&c->mu);
	c->sending = 0;
	c->sent = c->taken;
	if (!rc) {
		atomic_fetch_add(&r->ops_sent, c->spare.ops);
		atomic_fetch_add(&r->bytes_sent, c->spare.raw_bytes);
		atomic_fetch_add(&r->bytes_on_wire, c->spare.bytes);
		outq_reset(&c->spare);
	}
	/* Waiters whose frame was queued meanwhile send it now; owners of zero-copy data
	 * may return; the sender restarts its timer for what buffered ops came in. */
	if (c->ack_waiters)
		pthread_cond_broadcast(&c->acked);
	if (c->q.bytes && c->sleeping)
		pthread_cond_signal(&c->wake_sender);
	return rc;
}

/* Sends the queue when seq is still in it and nobody is sending (c->mu held): 1, or 0
 * when the caller has to wait for someone else.  A waiter sends the queue itself:
 * waking the sender thread would add a hand-off to every round trip.  A failure is
 * left to the sender thread to report: the caller may hold the gate, which the event
 * callback may need. */
static int send_queued(struct conn *c, uint64_t seq)
{
	int rc;

	if (c->sending || c->fail_rc || c->taken_seq >= seq || !c->q.bytes)
		return 0;
	rc = flush_locked(c);
	if (rc) {
		c->fail_rc = rc;
		pthread_cond_signal(&c->wake_sender);
	}
	return 1;
}

/* One step of a wait for seq to be acked (c->mu held). */
static void wait_step(struct conn *c, uint64_t seq)
{
	if (!send_queued(c, seq))
		pthread_cond_wait(&c->acked, &c->mu);
}

/* A connection idle for RFS_KEEPALIVE_MS gets a KEEPALIVE (proto.h), queued as a frame
 * of no op: no seq, no ack, nothing in flight (c->mu held).  0, or 1 when it is not due
 * yet (then *due says when) or cannot be queued. */
static int keepalive_queued(struct conn *c, int64_t *due)
{
	struct rfs_wire_hdr h = {.magic = RFS_MAGIC, .version = RFS_VERSION, .type = RFS_T_KEEPALIVE};
	char head[RFS_HDR_LEN];

	*due = c->sent_ns + RFS_KEEPALIVE_MS * RFS_NS_PER_MS;
	if (rfs_now_ns() < *due)
		return 1;
	if (outq_room(&c->q, sizeof head))
		return *due = rfs_now_ns() + RFS_KEEPALIVE_MS * RFS_NS_PER_MS, 1;
	rfs_hdr_put(head, &h);
	c->q.first_ns = rfs_now_ns();
	outq_copy(&c->q, head, sizeof head);
	return 0;
}

/* The sender thread sends buffered ops: once flush_delay_ms passed since the oldest
 * was queued, or at once when FLUSH_BYTES are waiting; and the keepalives. */
static void *sender_main(void *arg)
{
	struct conn *c = arg;
	struct rfs_repl *r = c->s->r;
	int64_t delay = (int64_t)(r->cfg.flush_delay_ms > 0 ? r->cfg.flush_delay_ms : 0) * RFS_NS_PER_MS;
	char reason[128] = "";

	pthread_mutex_lock(&c->mu);
	c->sent_ns = rfs_now_ns(); /* the HELLO */
	while (!c->dead) {
		int rc = c->fail_rc;
		/* Idle: nothing queued, nothing awaiting its ack.  Not while frames are in flight:
		 * a keepalive's send would count as progress and hide a secondary that stopped
		 * acknowledging (the acker's timeout). */
		int idle = !rc && !c->sending && !c->q.bytes && !c->ring_n && c->keepalives;
		int64_t due = rfs_now_ns() + RFS_KEEPALIVE_MS * RFS_NS_PER_MS;

		if (idle && !keepalive_queued(c, &due)) {
			rc = flush_locked(c);
		} else if (!rc && (c->sending || !c->q.bytes)) {
			c->sleeping = 1;
			/* Timed even while a waiter sends: a waiter's flush wakes nobody when it
			 * leaves the queue empty, and the keepalives would stop for good. */
			if (c->keepalives)
				wait_until(&c->wake_sender, &c->mu, due); /* acks do not wake it */
			else
				pthread_cond_wait(&c->wake_sender, &c->mu);
			c->sleeping = 0;
			continue;
		} else if (!rc && c->q.bytes < FLUSH_BYTES && rfs_now_ns() < c->q.first_ns + delay) {
			c->sleeping = 1;
			wait_until(&c->wake_sender, &c->mu, c->q.first_ns + delay);
			c->sleeping = 0;
			continue;
		} else if (!rc) {
			rc = flush_locked(c);
		}
		if (rc == -ETIMEDOUT)
			snprintf(reason, sizeof reason, "send timeout (no progress for %d ms)",
				 r->cfg.send_timeout_ms);
		else if (rc)
			snprintf(reason, sizeof reason, "connection lost (%s)", strerror(-rc));
		if (rc)
			break;
	}
	pthread_mutex_unlock(&c->mu);
	if (*reason)
		session_kill(c->s, reason);
	return NULL;
}

/* May the secondary fail op `code` with err and stay attached?  A query's error is its
 * answer.  While a sync catches the secondary up (the journal is not clean), its copy
 * lacks what the sync has not reached yet, so an entry missing, already there or of
 * another type is expected, and the sync sends that path.  Nothing else is: a full disk,
 * a read-only or failing file system, a quota, no descriptors left...  Without a
 * journal (the core's tests) the waiter of an op gets its error, and answers for it. */
static int tolerated(struct rfs_repl *r, unsigned code, int err, int waited)
{
	if (rfs_op_shape(code) & RFS_SHAPE_QUERY)
		return 1;
	if (!r->cfg.dirty)
		return waited;
	return rfs_dirty_state(r->cfg.dirty, NULL) != RFS_DIRTY_CLEAN && rfs_err_of_incomplete_tree(err);
}

static int has_waiter(const struct conn *c, uint64_t seq)
{
	for (const struct waiter *w = c->waiters; w; w = w->next)
		if (w->seq == seq)
			return 1;
	return 0;
}

/* Takes the whole ack frames at the start of buf[0..n): the bytes used, or -1 with why
 * set.  A query's answer is copied to its waiter.  An operation the secondary failed to
 * apply (and may not fail, see tolerated()) stops here: its frame stays un-acked, so
 * that the session's death gives it to the journal, and no waiter of a later frame is
 * told it was acknowledged. */
static ssize_t take_acks(struct conn *c, const char *buf, size_t n, char *why, size_t whylen)
{
	struct rfs_repl *r = c->s->r;
	size_t pos = 0;

	pthread_mutex_lock(&c->mu);
	while (n - pos >= RFS_HDR_LEN) {
		struct rfs_wire_hdr h;
		uint32_t size;

		rfs_hdr_get(&h, buf + pos);
		if (h.magic != RFS_MAGIC || h.version != RFS_VERSION || h.type != RFS_T_ACK ||
		    h.body_len > RFS_REPLY_MAX || h.seq != c->acked_seq + 1 || h.seq > c->next_seq) {
			snprintf(why, whylen, "bad ack from the secondary (seq %llu, expected %llu)",
				 (unsigned long long)h.seq, (unsigned long long)c->acked_seq + 1);
			pthread_mutex_unlock(&c->mu);
			return -1;
		}
		if (n - pos < RFS_HDR_LEN + h.body_len)
			break;
		if (h.result < 0 && !tolerated(r, c->ring[c->ring_head].code, h.result, has_waiter(c, h.seq))) {
			const struct inflight *f = &c->ring[c->ring_head];

			snprintf(why, whylen, "the secondary failed to %s %s: %s", rfs_opcode_name(f->code),
				 !f->op.path ? "(a path)" : *f->op.path ? f->op.path : "/", strerror(-h.result));
			atomic_fetch_add(&r->failures, 1);
			pthread_mutex_unlock(&c->mu);
			return -1;
		}
		size = c->ring[c->ring_head].size;
		inflight_clear(&c->ring[c->ring_head]);
		c->ring_head = (c->ring_head + 1) % c->ring_cap;
		c->ring_n--;
		c->unacked_bytes -= size;
		atomic_fetch_sub(&r->queued, size);
		c->acked_seq = h.seq;
		for (struct waiter *w = c->waiters; w; w = w->next) {
			if (w->seq != h.seq)
				continue;
			w->result = h.result;
			w->done = 1;
			if (w->reply && h.body_len > w->reply_cap)
				w->result = -EOVERFLOW;
			else if (w->reply)
				memcpy(w->reply, buf + pos + RFS_HDR_LEN, w->reply_len = h.body_len);
		}
		atomic_fetch_add(&r->acks, 1);
		pos += RFS_HDR_LEN + h.body_len;
	}
	c->progress_ns = rfs_now_ns();
	if (c->ack_waiters)
		pthread_cond_broadcast(&c->acked);
	pthread_mutex_unlock(&c->mu);
	return (ssize_t)pos;
}

static void *acker_main(void *arg)
{
	struct conn *c = arg;
	struct session *s = c->s;
	int64_t timeout = (int64_t)s->r->cfg.send_timeout_ms * RFS_NS_PER_MS;
	char *buf = c->ackbuf, why[160] = "";
	size_t have = 0;

	/* The socket's SO_RCVTIMEO (ACK_POLL_MS) wakes the loop to check the ack timeout. */
	while (!atomic_load(&s->dead)) {
		ssize_t got = chan_recv(c->ch, c->fd, buf + have, ACK_BUF - have), used;

		if (got < 0 && (errno == EAGAIN || errno == EINTR)) {
			int late;

			pthread_mutex_lock(&c->mu);
			late = c->ring_n && rfs_now_ns() - c->progress_ns > timeout;
			pthread_mutex_unlock(&c->mu);
			if (late) {
				snprintf(why, sizeof why, "no acknowledgement for %d ms", s->r->cfg.send_timeout_ms);
				break;
			}
			continue;
		}
		if (got <= 0) {
			if (got)
				snprintf(why, sizeof why, "connection lost (%s)", strerror(errno));
			else
				snprintf(why, sizeof why, "connection closed by the secondary");
			break;
		}
		have += (size_t)got;
		used = take_acks(c, buf, have, why, sizeof why);
		if (used < 0)
			break;
		memmove(buf, buf + used, have - (size_t)used);
		have -= (size_t)used;
	}
	if (*why)
		session_kill(s, why);
	return NULL;
}

/* ---- connecting ---- */

static int connect_one(const char *host, int port, int timeout_ms)
{
	struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
				 .ai_flags = AI_NUMERICSERV}, *ai, *a;
	char service[16];
	struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = timeout_ms % 1000 * 1000};
	struct timeval ack_tv = {.tv_usec = ACK_POLL_MS * 1000};
	int fd = -1, rc, err = -ECONNREFUSED;

	snprintf(service, sizeof service, "%d", port);
	rc = getaddrinfo(host, service, &hints, &ai);
	if (rc)
		return rc == EAI_SYSTEM ? -errno : -EHOSTUNREACH;
	for (a = ai; a; a = a->ai_next) {
		struct pollfd p;
		socklen_t len = sizeof err;

		fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, a->ai_protocol);
		if (fd < 0) {
			err = -errno;
			continue;
		}
		/* Before connect: the window scale is agreed in the handshake. */
		rfs_sock_bufs(fd);
		if (connect(fd, a->ai_addr, a->ai_addrlen) && errno != EINPROGRESS) {
			err = -errno;
		} else {
			p = (struct pollfd){.fd = fd, .events = POLLOUT};
			rc = poll(&p, 1, timeout_ms);
			if (rc == 0)
				err = -ETIMEDOUT;
			else if (rc < 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len))
				err = -errno;
			else
				err = -err;
		}
		if (!err)
			break;
		close(fd);
		fd = -1;
	}
	freeaddrinfo(ai);
	if (fd < 0)
		return err;
	/* Blocking from now on; a send that moves no byte for the timeout fails with EAGAIN,
	 * a receive returns EAGAIN every ACK_POLL_MS for the acker to check the time. */
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &ack_tv, sizeof ack_tv);
	rfs_sock_nodelay(fd);
	return fd;
}

/* TLS and the proof of the key (chan.c), as the config asks, then HELLO and its ack. */
static int hello(struct conn *c, const char *peer, uint64_t session, int index, int nconn)
{
	char frame[RFS_HDR_LEN + sizeof(struct rfs_wire_hello)], ack[RFS_HDR_LEN];
	struct rfs_wire_hdr h = {.magic = RFS_MAGIC, .version = RFS_VERSION, .type = RFS_T_HELLO,
				 .body_len = sizeof(struct rfs_wire_hello)};
	struct rfs_wire_hello hl = {.session = session, .conn_index = (uint16_t)index,
				    .nconn = (uint16_t)nconn};
	int64_t deadline = rfs_now_ns() + c->s->r->cfg.send_timeout_ms * RFS_NS_PER_MS;
	int rc;

	rfs_hdr_put(frame, &h);
	rfs_hello_put(frame + RFS_HDR_LEN, &hl);
	if ((rc = chan_connect(c->s->r->cfg.creds, c->fd, peer, frame + RFS_HDR_LEN, deadline, &c->ch)) ||
	    (rc = chan_write_all(c->ch, c->fd, frame, sizeof frame, deadline)) ||
	    (rc = chan_read_all(c->ch, c->fd, ack, sizeof ack, deadline)))
		return rc;
	rfs_hdr_get(&h, ack);
	if (h.magic != RFS_MAGIC || h.version != RFS_VERSION || h.type != RFS_T_ACK || h.seq || h.body_len)
		return -EPROTO;
	c->keepalives = !!(h.flags & RFS_F_KEEPALIVES);
	return h.result;
}

static int session_open(struct rfs_repl *r, const char *host, int port, struct session **out)
{
	static atomic_uint_fast64_t serial;
	struct session *s = calloc(1, sizeof *s);
	struct timespec now;
	uint64_t id;
	int n = r->cfg.nbremconn, rc = 0;
	size_t queued = r->cfg.max_queued_bytes ? r->cfg.max_queued_bytes : DEFAULT_QUEUED;
	char peer[300];

	snprintf(peer, sizeof peer, "%s:%d", host, port);
	if (!s || !(s->conns = calloc((size_t)n, sizeof *s->conns))) {
		free(s);
		return -ENOMEM;
	}
	clock_gettime(CLOCK_REALTIME, &now);
	id = ((uint64_t)now.tv_sec * 1000000000 + (uint64_t)now.tv_nsec) ^ (uint64_t)getpid() << 48;
	id += atomic_fetch_add(&serial, 1);
	s->r = r;
	s->nconn = n;
	for (int i = 0; i < n; i++) {
		struct conn *c = &s->conns[i];

		c->s = s;
		c->fd = -1;
		c->limit = queued / (size_t)n;
		if (!(c->ackbuf = malloc(ACK_BUF)))
			rc = -ENOMEM;
		pthread_mutex_init(&c->mu, NULL);
		cond_init_mono(&c->wake_sender);
		cond_init_mono(&c->acked);
	}
	for (int i = 0; i < n && !rc; i++) {
		struct conn *c = &s->conns[i];

		c->fd = connect_one(host, port, r->cfg.send_timeout_ms);
		if (c->fd < 0) {
			rc = c->fd;
			c->fd = -1;
		} else {
			rc = hello(c, peer, id, i, n);
		}
	}
	for (int i = 0; i < n && !rc; i++) {
		struct conn *c = &s->conns[i];

		rc = -pthread_create(&c->sender, NULL, sender_main, c);
		if (!rc && ++c->threads && (rc = -pthread_create(&c->acker, NULL, acker_main, c)) == 0)
			c->threads++;
	}
	if (rc) {
		session_kill(s, NULL);
		session_free(s);
		return rc;
	}
	*out = s;
	return 0;
}

/* ---- the interface ---- */

static pthread_key_t lz_key;
static pthread_once_t lz_once = PTHREAD_ONCE_INIT;

static void lz_key_make(void)
{
	pthread_key_create(&lz_key, free);
}

struct rfs_repl *rfs_repl_new(const struct rfs_repl_config *cfg)
{
	struct rfs_repl *r = calloc(1, sizeof *r);
	pthread_rwlockattr_t ra;

	if (!r)
		return NULL;
	pthread_once(&lz_once, lz_key_make);
	r->cfg = *cfg;
	if (r->cfg.nbremconn < 1)
		r->cfg.nbremconn = 1;
	if (r->cfg.nbremconn > 16)
		r->cfg.nbremconn = 16;
	if (r->cfg.send_timeout_ms <= 0)
		r->cfg.send_timeout_ms = DEFAULT_TIMEOUT_MS;
	pthread_mutex_init(&r->attach_mu, NULL);
	pthread_rwlockattr_init(&ra);
	pthread_rwlockattr_setkind_np(&ra, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
	pthread_rwlock_init(&r->gate, &ra);
	pthread_rwlockattr_destroy(&ra);
	pthread_mutex_init(&r->mu, NULL);
	cond_init_mono(&r->cond);
	pthread_cond_init(&r->fence_cond, NULL);
	return r;
}

void rfs_repl_free(struct rfs_repl *r)
{
	if (!r)
		return;
	rfs_repl_detach(r);
	pthread_rwlock_destroy(&r->gate);
	pthread_mutex_destroy(&r->attach_mu);
	pthread_mutex_destroy(&r->mu);
	pthread_cond_destroy(&r->cond);
	pthread_cond_destroy(&r->fence_cond);
	free(r);
}

int rfs_repl_attach(struct rfs_repl *r, const char *host, int port)
{
	struct session *s;
	int rc;

	rfs_repl_detach(r);
	rc = session_open(r, host, port, &s);
	if (rc)
		return rc;
	pthread_mutex_lock(&r->attach_mu);
	detach_locked(r); /* a concurrent attach won meanwhile: replace it */
	pthread_rwlock_wrlock(&r->gate);
	r->cur = s;
	atomic_store(&s->installed, 1);
	atomic_store(&r->attached, 1);
	atomic_fetch_add(&r->attaches, 1);
	pthread_rwlock_unlock(&r->gate);
	pthread_mutex_unlock(&r->attach_mu);
	return 0;
}

void rfs_repl_detach(struct rfs_repl *r)
{
	pthread_mutex_lock(&r->attach_mu);
	detach_locked(r);
	pthread_mutex_unlock(&r->attach_mu);
	reap_zombies(r);
	/* Asked for: whoever asks knows the secondary is gone and answers for it. */
	rfs_repl_fenced(r);
}

void rfs_repl_fenced(struct rfs_repl *r)
{
	pthread_mutex_lock(&r->mu);
	atomic_store(&r->fencing, 0);
	pthread_cond_broadcast(&r->fence_cond);
	pthread_mutex_unlock(&r->mu);
}

static void unlock_mutex(void *mu)
{
	pthread_mutex_unlock(mu);
}

/* An op is about to be acknowledged without the secondary: not while fencing.  Called
 * holding no lock of the stream.  libfuse cancels its workers when the loop ends: one
 * cancelled here leaves the mutex free (its request is never answered: the caller sees
 * the mount go, not a success). */
static void fence_wait(struct rfs_repl *r)
{
	if (!atomic_load(&r->fencing))
		return; /* alone, every op passes here: no lock for them */
	pthread_mutex_lock(&r->mu);
	pthread_cleanup_push(unlock_mutex, &r->mu);
	while (atomic_load(&r->fencing))
		pthread_cond_wait(&r->fence_cond, &r->mu);
	pthread_cleanup_pop(1);
}

void rfs_repl_stats(struct rfs_repl *r, struct rfs_repl_stats *out)
{
	*out = (struct rfs_repl_stats){
		.ops_sent = atomic_load(&r->ops_sent),
		.bytes_sent = atomic_load(&r->bytes_sent),
		.bytes_on_wire = atomic_load(&r->bytes_on_wire),
		.acks = atomic_load(&r->acks),
		.queued_bytes = atomic_load(&r->queued),
		.attaches = atomic_load(&r->attaches),
		.failures = atomic_load(&r->failures),
		.attached = atomic_load(&r->attached),
	};
	out->fencing = atomic_load(&r->fencing);
}

/* Write data compressed into this thread's scratch when that pays; else NULL. */
static const void *compress(struct rfs_repl *r, const void *data, size_t len, size_t *out_len)
{
	size_t cap = (size_t)LZ4_compressBound((int)RFS_DATA_MAX);
	char *buf = pthread_getspecific(lz_key);
	int n;

	if (!r->cfg.compress || len < LZ4_MIN)
		return NULL;
	/* Incompressible data (media, encrypted, fio's random buffers) would cost CPU on
	 * every write for nothing: after a miss, the next LZ4_SKIP writes go raw. */
	if (atomic_load_explicit(&r->lz_skip, memory_order_relaxed) > 0) {
		atomic_fetch_sub_explicit(&r->lz_skip, 1, memory_order_relaxed);
		return NULL;
	}
	if (!buf) {
		buf = malloc(cap);
		if (!buf || pthread_setspecific(lz_key, buf)) {
			free(buf);
			return NULL;
		}
	}
	n = LZ4_compress_default(data, buf, (int)len, (int)cap);
	if (n <= 0 || (size_t)n > len - len / 8) {
		atomic_store_explicit(&r->lz_skip, LZ4_SKIP, memory_order_relaxed);
		return NULL;
	}
	*out_len = (size_t)n;
	return buf;
}

static size_t slen(const char *s)
{
	return s ? strlen(s) + 1 : 0;
}

static struct conn *conn_of(struct session *s, const char *path)
{
	uint64_t h = 1469598103934665603ull; /* FNV-1a */

	for (const char *p = path ? path : ""; *p; p++)
		h = (h ^ (unsigned char)*p) * 1099511628211ull;
	return &s->conns[h % (uint64_t)s->nconn];
}

/* Wait until every frame queued on every connection is acked (the session may die). */
static void drain(struct session *s)
{
	for (int i = 0; i < s->nconn; i++) {
		struct conn *c = &s->conns[i];

		pthread_mutex_lock(&c->mu);
		c->ack_waiters++;
		while (!c->dead && c->acked_seq < c->next_seq)
			wait_step(c, c->next_seq);
		c->ack_waiters--;
		pthread_mutex_unlock(&c->mu);
	}
}

/* What a queued frame's submitter may still have to wait for. */
struct ticket {
	struct waiter w;
	int waiting;        /* w is on the conn's list */
	uint64_t batch;     /* data sent from the caller's buffer: the batch that sends it */
};

/* Queue one frame on c; 0, -ESHUTDOWN (the session died) or -ENOMEM (nothing queued
 * either way; the caller kills the session once it holds no lock). */
static int enqueue(struct session *s, struct conn *c, const struct rfs_op *op, enum rfs_wait wait,
		   int must_ack, struct ticket *t)
{
	struct rfs_repl *r = s->r;
	size_t plen = slen(op->path), p2len = slen(op->path2), nlen = slen(op->name);
	size_t dlen = op->data_len, size;
	const void *data;
	char head[RFS_HDR_LEN + RFS_WOP_LEN];
	struct rfs_wire_hdr h = {.magic = RFS_MAGIC, .version = RFS_VERSION, .type = (uint8_t)op->code,
				 .path_len = (uint16_t)plen, .path2_len = (uint16_t)p2len,
				 .name_len = (uint16_t)nlen};
	int zerocopy;

	if (op->code == RFS_OP_WRITE && (data = compress(r, op->data, op->data_len, &dlen)))
		h.flags |= RFS_F_LZ4;
	else
		data = op->data;
	if (wait == RFS_WAIT_DURABLE)
		h.flags |= RFS_F_DURABLE;
	/* The caller's buffer outlives the send only when it waits for the ack. */
	zerocopy = !(h.flags & RFS_F_LZ4) && wait != RFS_WAIT_QUEUED && dlen >= ZEROCOPY_MIN;
	h.body_len = (uint32_t)(RFS_WOP_LEN + plen + p2len + nlen + dlen);
	size = RFS_HDR_LEN + h.body_len;

	pthread_mutex_lock(&c->mu);
	c->ack_waiters++;
	while (!c->dead && c->unacked_bytes && c->unacked_bytes + size > c->limit)
		wait_step(c, c->next_seq);
	c->ack_waiters--;
	if (c->dead || outq_room(&c->q, size - (zerocopy ? dlen : 0)) || ring_room(c) ||
	    inflight_keep(r, &c->ring[(c->ring_head + c->ring_n) % c->ring_cap], op)) {
		int rc = c->dead ? -ESHUTDOWN : -ENOMEM;

		pthread_mutex_unlock(&c->mu);
		return rc;
	}
	h.seq = ++c->next_seq;
	rfs_hdr_put(head, &h);
	rfs_wop_put(head + RFS_HDR_LEN, op, (uint32_t)op->data_len);
	if (!c->q.bytes)
		c->q.first_ns = rfs_now_ns();
	outq_copy(&c->q, head, sizeof head);
	outq_copy(&c->q, op->path, plen);
	outq_copy(&c->q, op->path2, p2len);
	outq_copy(&c->q, op->name, nlen);
	if (zerocopy)
		outq_ref(&c->q, data, dlen);
	else
		outq_copy(&c->q, data, dlen);
	c->q.raw_bytes += size - dlen + op->data_len;
	c->q.ops++;
	c->ring[(c->ring_head + c->ring_n++) % c->ring_cap].size = (uint32_t)size;
	if (!c->unacked_bytes)
		c->progress_ns = rfs_now_ns(); /* the ack timeout runs from here */
	c->unacked_bytes += size;
	atomic_fetch_add(&r->queued, size);
	t->batch = zerocopy ? c->taken + 1 : 0;
	t->waiting = must_ack;
	if (must_ack) {
		/* Sent by the caller itself, in await(). */
		t->w.seq = h.seq;
		t->w.next = c->waiters;
		c->waiters = &t->w;
	} else if (c->sleeping && (c->q.bytes == size || c->q.bytes >= FLUSH_BYTES)) {
		/* A first op for the timer, or enough to send now; else the sender is due anyway. */
		pthread_cond_signal(&c->wake_sender);
	}
	pthread_mutex_unlock(&c->mu);
	return 0;
}

/* The ack's result (0 if the session died, and then *unacked is set); returns only once
 * the caller's data is no longer referenced by the queue. */
static int await(struct conn *c, struct ticket *t, int *unacked)
{
	int rc = 0;

	pthread_mutex_lock(&c->mu);
	c->ack_waiters++;
	for (;;) {
		int acked = !t->waiting || t->w.done || c->dead;
		int data_busy = t->batch && c->sent < t->batch && !(c->dead && c->taken < t->batch);

		if (acked && !data_busy)
			break;
		wait_step(c, t->waiting ? t->w.seq : 0);
	}
	c->ack_waiters--;
	if (t->waiting) {
		for (struct waiter **p = &c->waiters; *p; p = &(*p)->next) {
			if (*p == &t->w) {
				*p = t->w.next;
				break;
			}
		}
		rc = t->w.done ? t->w.result : 0;
		*unacked = !t->w.done;
	}
	pthread_mutex_unlock(&c->mu);
	return rc;
}

/* An op the secondary will not get: the journal's, when there is one. */
static void lost(struct rfs_repl *r, const struct rfs_op *op)
{
	if (r->cfg.dirty && !(rfs_op_shape(op->code) & RFS_SHAPE_QUERY))
		rfs_dirty_mark(r->cfg.dirty, op);
}

/* op acknowledged without the secondary: the journal takes it; and unless it is a
 * buffered write (never promised more than the journal), not while fencing. */
static void alone(struct rfs_repl *r, const struct rfs_op *op, enum rfs_wait wait)
{
	lost(r, op);
	if (wait != RFS_WAIT_QUEUED)
		fence_wait(r);
}

/* With reply (a query): its answer, and -ENOTCONN when there was none (no session,
 * or it died first); without: 0 then. */
static int submit_one(struct rfs_repl *r, const struct rfs_op *op, enum rfs_wait wait, struct waiter *reply)
{
	int barrier = rfs_op_shape(op->code) & RFS_SHAPE_BARRIER, rc = 0, queued, unacked = 0;
	struct ticket t = {0};
	struct session *s;
	struct conn *c;

	if (reply)
		t.w = *reply;
	if (barrier)
		pthread_rwlock_wrlock(&r->gate);
	else
		pthread_rwlock_rdlock(&r->gate);
	s = r->cur;
	if (!s || atomic_load(&s->dead)) {
		pthread_rwlock_unlock(&r->gate);
		if (reply)
			return -ENOTCONN;
		alone(r, op, wait);
		return 0;
	}
	atomic_fetch_add(&s->refs, 1);
	if (barrier)
		drain(s);
	c = conn_of(s, op->path);
	queued = enqueue(s, c, op, wait, barrier || wait != RFS_WAIT_QUEUED, &t);
	if (!queued && !barrier)
		pthread_rwlock_unlock(&r->gate);
	if (!queued && (t.waiting || t.batch))
		rc = await(c, &t, &unacked);
	if (queued || barrier)
		pthread_rwlock_unlock(&r->gate);
	if (queued == -ENOMEM)
		session_kill(s, "out of memory queueing an op");
	session_put(s);
	if (reply && !t.w.done)
		return -ENOTCONN;
	if (reply)
		reply->reply_len = t.w.reply_len;
	else if (queued)
		alone(r, op, wait); /* the journal records by now: the session is dead */
	else if (unacked)
		fence_wait(r);
	return rc;
}

/* 0 or why a submitted op cannot go on the wire. */
static int check_op(const struct rfs_op *op)
{
	unsigned shape = rfs_op_shape(op->code);

	if (!shape)
		return -EINVAL;
	if (slen(op->path) > RFS_PATH_MAX || slen(op->path2) > RFS_PATH_MAX)
		return -ENAMETOOLONG;
	if (slen(op->name) > RFS_NAME_MAX)
		return -ERANGE;
	if ((shape & RFS_SHAPE_PATH && !op->path) || (shape & RFS_SHAPE_PATH2 && !op->path2) ||
	    (shape & RFS_SHAPE_NAME && !op->name) || (op->data_len && !(shape & RFS_SHAPE_DATA)))
		return -EINVAL;
	if (shape & RFS_SHAPE_QUERY)
		return -EINVAL; /* rfs_repl_query() */
	return 0;
}

int rfs_repl_submit(struct rfs_repl *r, const struct rfs_op *op, enum rfs_wait wait)
{
	struct rfs_op part;
	int rc;

	if (!rfs_op_shape(op->code))
		return -EINVAL;
	if (!atomic_load(&r->attached)) {
		alone(r, op, wait);
		return 0;
	}
	if ((rc = check_op(op)))
		return rc;
	if (op->data_len <= RFS_DATA_MAX)
		return submit_one(r, op, wait, NULL);
	if (op->code != RFS_OP_WRITE)
		return -E2BIG;
	/* Longer writes go as consecutive frames on the file's connection. */
	part = *op;
	for (size_t done = 0; done < op->data_len; done += part.data_len) {
		part.data = (const char *)op->data + done;
		part.off = op->off + (int64_t)done;
		part.data_len = op->data_len - done < RFS_DATA_MAX ? op->data_len - done : RFS_DATA_MAX;
		rc = submit_one(r, &part, done + part.data_len < op->data_len ? RFS_WAIT_QUEUED : wait, NULL);
		if (rc)
			return rc;
	}
	return 0;
}

void rfs_repl_diverged(struct rfs_repl *r, const struct rfs_op *op, int err)
{
	struct session *s = NULL;
	char why[192];

	/* Not while a sync catches the secondary up: its copy lacks what the sync has not
	 * reached yet, failures there are expected, and the sync sends those paths. */
	if (r->cfg.dirty && rfs_dirty_state(r->cfg.dirty, NULL) != RFS_DIRTY_CLEAN)
		return;
	pthread_rwlock_rdlock(&r->gate);
	if ((s = r->cur))
		atomic_fetch_add(&s->refs, 1);
	pthread_rwlock_unlock(&r->gate);
	if (s) {
		snprintf(why, sizeof why, "the secondary failed to %s %s: %s", rfs_opcode_name(op->code),
			 op->path && *op->path ? op->path : "/", strerror(-err));
		session_kill(s, why); /* the journal records from here */
		session_put(s);
	}
	lost(r, op);
}

struct rfs_repl_pending {
	struct session *s;
	struct conn *c;
	struct ticket t;
};

struct rfs_repl_pending *rfs_repl_send(struct rfs_repl *r, const struct rfs_op *op, enum rfs_wait wait)
{
	struct rfs_repl_pending *p;
	struct session *s;
	int queued;

	if (!atomic_load(&r->attached) || check_op(op) || op->data_len || wait == RFS_WAIT_QUEUED ||
	    rfs_op_shape(op->code) & RFS_SHAPE_BARRIER || !(p = calloc(1, sizeof *p)))
		return NULL;
	pthread_rwlock_rdlock(&r->gate);
	s = r->cur;
	if (!s || atomic_load(&s->dead)) {
		pthread_rwlock_unlock(&r->gate);
		free(p);
		return NULL;
	}
	atomic_fetch_add(&s->refs, 1);
	p->s = s;
	p->c = conn_of(s, op->path);
	queued = enqueue(s, p->c, op, wait, 1, &p->t);
	pthread_rwlock_unlock(&r->gate);
	if (queued) {
		if (queued == -ENOMEM)
			session_kill(s, "out of memory queueing an op");
		session_put(s);
		free(p);
		return NULL;
	}
	/* On the wire now, unless a send is under way: its end or the wait sends it. */
	pthread_mutex_lock(&p->c->mu);
	send_queued(p->c, p->t.w.seq);
	pthread_mutex_unlock(&p->c->mu);
	return p;
}

int rfs_repl_wait(struct rfs_repl_pending *p)
{
	struct rfs_repl *r;
	int rc, unacked = 0;

	if (!p)
		return 0;
	r = p->s->r;
	rc = await(p->c, &p->t, &unacked);
	session_put(p->s);
	free(p);
	if (unacked)
		fence_wait(r);
	return rc;
}

int rfs_repl_query(struct rfs_repl *r, const struct rfs_op *op, void *reply, size_t cap, size_t *len)
{
	struct waiter w = {.reply = reply, .reply_cap = cap};
	int rc;

	*len = 0;
	if (!(rfs_op_shape(op->code) & RFS_SHAPE_QUERY) || !op->path || op->path2 || op->name || op->data_len)
		return -EINVAL;
	if (slen(op->path) > RFS_PATH_MAX)
		return -ENAMETOOLONG;
	if (!atomic_load(&r->attached))
		return -ENOTCONN;
	rc = submit_one(r, op, RFS_WAIT_APPLIED, &w);
	if (!rc)
		*len = w.reply_len;
	return rc;
}
