/* A secondary that stops answering is detached after send_timeout_ms: every waiter
 * returns 0, the event callback hears why, later submits return at once, and a new
 * attach to a working receiver carries on.  With fence set, they return only once
 * rfs_repl_fenced() (or a detach) says so; a buffered write the secondary fails
 * detaches it. */
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "proto.h"
#include "rfs_test.h"

#define OP(...) (&(struct rfs_op){__VA_ARGS__})

/* ---- a fake secondary: answers hellos, then misbehaves ---- */

enum fake_mode {
	SILENT, /* reads everything, acks nothing */
	STALL,  /* stops reading */
	CLOSE,  /* closes on the first op */
	MUTE,   /* never answers the hello */
};

struct fake {
	enum fake_mode mode;
	int listen_fd, port;
	atomic_int stop;
	pthread_t th;
};

static void *fake_main(void *arg)
{
	struct fake *f = arg;
	struct pollfd p[17] = {{.fd = f->listen_fd, .events = POLLIN}};
	size_t have[17] = {0};
	int hello_done[17] = {0}, n = 1;
	static char buf[1 << 16];

	while (!atomic_load(&f->stop)) {
		if (poll(p, (nfds_t)n, 50) <= 0)
			continue;
		if (p[0].revents && n < 17) {
			p[n] = (struct pollfd){.fd = accept(f->listen_fd, NULL, NULL), .events = POLLIN};
			have[n] = 0;
			hello_done[n++] = 0;
		}
		for (int i = 1; i < n; i++) {
			ssize_t got;

			if (!(p[i].revents & POLLIN) || p[i].fd < 0)
				continue;
			got = recv(p[i].fd, buf, sizeof buf, 0);
			if (got <= 0) {
				close(p[i].fd);
				p[i].fd = -1;
				continue;
			}
			have[i] += (size_t)got;
			if (!hello_done[i] && have[i] >= sizeof(struct rfs_wire_hdr) + sizeof(struct rfs_wire_hello)) {
				char ack[sizeof(struct rfs_wire_hdr)];

				hello_done[i] = 1;
				if (f->mode == MUTE)
					continue;
				rfs_hdr_put(ack, &(struct rfs_wire_hdr){.magic = RFS_MAGIC, .version = RFS_VERSION,
									.type = RFS_T_ACK});
				send(p[i].fd, ack, sizeof ack, MSG_NOSIGNAL);
				if (f->mode == STALL)
					p[i].events = 0;
				continue;
			}
			if (hello_done[i] && f->mode == CLOSE) {
				close(p[i].fd);
				p[i].fd = -1;
			}
		}
	}
	for (int i = 0; i < n; i++)
		if (i && p[i].fd >= 0)
			close(p[i].fd);
	return NULL;
}

static void fake_start(struct fake *f, enum fake_mode mode)
{
	*f = (struct fake){.mode = mode};
	f->listen_fd = listen_local(&f->port);
	CHECK(!pthread_create(&f->th, NULL, fake_main, f), "pthread_create");
}

static void fake_stop(struct fake *f)
{
	atomic_store(&f->stop, 1);
	pthread_join(f->th, NULL);
	close(f->listen_fd);
}

/* ---- the primary ---- */

static pthread_mutex_t ev_mu = PTHREAD_MUTEX_INITIALIZER;
static char events[8][256];
static int nevents;
static struct rfs_repl *detach_on_event; /* as a daemon may do from the callback */

static void on_event(void *arg, const char *what)
{
	(void)arg;
	if (detach_on_event)
		rfs_repl_detach(detach_on_event);
	pthread_mutex_lock(&ev_mu);
	if (nevents < 8)
		snprintf(events[nevents], sizeof events[0], "%s", what);
	nevents++;
	pthread_mutex_unlock(&ev_mu);
}

/* The callback runs on a stream thread just after the waiters were woken: give it time. */
static void events_expect(int n, const char *what)
{
	for (int64_t t0 = now_ms(); now_ms() - t0 < 2000;) {
		pthread_mutex_lock(&ev_mu);
		if (nevents >= n) {
			pthread_mutex_unlock(&ev_mu);
			break;
		}
		pthread_mutex_unlock(&ev_mu);
		usleep(1000);
	}
	pthread_mutex_lock(&ev_mu);
	CHECK(nevents == n, "%d events, want %d (first: %s)", nevents, n, nevents ? events[0] : "-");
	for (int i = 0; i < n; i++)
		CHECK(strstr(events[i], what), "event '%s', want '%s'", events[i], what);
	nevents = 0;
	pthread_mutex_unlock(&ev_mu);
}

static struct rfs_repl *repl_fenced(int nconn, int timeout_ms, size_t max_queued, int fence)
{
	struct rfs_repl_config cfg = {.nbremconn = nconn, .send_timeout_ms = timeout_ms, .compress = 0,
				      .max_queued_bytes = max_queued, .flush_delay_ms = 5, .event = on_event,
				      .fence = fence};
	struct rfs_repl *r = rfs_repl_new(&cfg);

	CHECK(r, "rfs_repl_new");
	return r;
}

static struct rfs_repl *repl(int nconn, int timeout_ms, size_t max_queued)
{
	return repl_fenced(nconn, timeout_ms, max_queued, 0);
}

struct job {
	struct rfs_repl *r;
	struct rfs_op op;
	enum rfs_wait wait;
	int repeat;
	int rc;
	int64_t ms;
};

static void *job_main(void *arg)
{
	struct job *j = arg;
	int64_t t0 = now_ms();

	for (int i = 0; i < j->repeat && !j->rc; i++) {
		j->op.off = (int64_t)i * (int64_t)j->op.data_len;
		j->rc = rfs_repl_submit(j->r, &j->op, j->wait);
	}
	j->ms = now_ms() - t0;
	return NULL;
}

static char data[1 << 20];

/* Waiters of every kind are blocked when the peer goes quiet; all return 0. */
static void waiters_woken(enum fake_mode mode, const char *reason, int detach_from_callback)
{
	struct job jobs[] = {
		{.op = {.code = RFS_OP_WRITE, .path = "a", .data = data, .data_len = 4096}, .wait = RFS_WAIT_APPLIED, .repeat = 1},
		{.op = {.code = RFS_OP_WRITE, .path = "big", .data = data, .data_len = 256 << 10},
		 .wait = RFS_WAIT_DURABLE, .repeat = 1}, /* zero-copy data */
		{.op = {.code = RFS_OP_MKDIR, .path = "d", .mode = 0700}, .wait = RFS_WAIT_APPLIED, .repeat = 1},
		{.op = {.code = RFS_OP_FSYNC, .path = "b"}, .wait = RFS_WAIT_DURABLE, .repeat = 1},
		/* Buffered writes beyond max_queued_bytes: blocked by backpressure. */
		{.op = {.code = RFS_OP_WRITE, .path = "c", .data = data, .data_len = 64 << 10},
		 .wait = RFS_WAIT_QUEUED, .repeat = 1000},
	};
	pthread_t th[sizeof jobs / sizeof *jobs];
	struct rfs_repl_stats st;
	struct fake f;
	struct rfs_repl *r = repl(2, 300, 1 << 20);
	int64_t t0;

	fake_start(&f, mode);
	detach_on_event = detach_from_callback ? r : NULL;
	CHECK_RC(rfs_repl_attach(r, "127.0.0.1", f.port), 0);
	t0 = now_ms();
	for (size_t i = 0; i < sizeof jobs / sizeof *jobs; i++) {
		jobs[i].r = r;
		pthread_create(&th[i], NULL, job_main, &jobs[i]);
	}
	for (size_t i = 0; i < sizeof jobs / sizeof *jobs; i++) {
		pthread_join(th[i], NULL);
		CHECK(jobs[i].rc == 0, "job %zu returned %d", i, jobs[i].rc);
	}
	CHECK(mode == CLOSE || now_ms() - t0 >= 250, "returned after %lld ms, before the timeout",
	      (long long)(now_ms() - t0));
	CHECK(now_ms() - t0 < 3000, "waiters took %lld ms", (long long)(now_ms() - t0));
	events_expect(1, reason);
	rfs_repl_stats(r, &st);
	CHECK(!st.attached, "still attached");
	t0 = now_ms();
	CHECK_RC(rfs_repl_submit(r, OP(.code = RFS_OP_FSYNC, .path = "a"), RFS_WAIT_DURABLE), 0);
	CHECK(now_ms() - t0 < 50, "a submit while detached took %lld ms", (long long)(now_ms() - t0));
	detach_on_event = NULL;
	rfs_repl_free(r);
	fake_stop(&f);
	events_expect(0, "");
}

/* Much more data than the socket buffers hold, to a peer that stopped reading: the
 * sender blocks in the kernel and is woken by the detach. */
static void stalled_sender(void)
{
	struct fake f;
	struct rfs_repl *r = repl(1, 300, 256 << 20);
	int64_t t0;

	fake_start(&f, STALL);
	CHECK_RC(rfs_repl_attach(r, "127.0.0.1", f.port), 0);
	t0 = now_ms();
	for (int i = 0; i < 48; i++)
		CHECK_RC(rfs_repl_submit(r, OP(.code = RFS_OP_WRITE, .path = "s", .off = (int64_t)i << 20,
					       .data = data, .data_len = sizeof data), RFS_WAIT_QUEUED), 0);
	CHECK_RC(rfs_repl_submit(r, OP(.code = RFS_OP_FSYNC, .path = "s"), RFS_WAIT_DURABLE), 0);
	CHECK(now_ms() - t0 < 3000, "took %lld ms", (long long)(now_ms() - t0));
	events_expect(1, "detached ");
	rfs_repl_free(r);
	fake_stop(&f);
}

/* An explicit detach wakes waiters too, and reports nothing: the caller knows. */
static void explicit_detach(void)
{
	struct job j = {.op = {.code = RFS_OP_MKDIR, .path = "d", .mode = 0700}, .wait = RFS_WAIT_APPLIED,
			.repeat = 1};
	pthread_t th;
	struct fake f;
	struct rfs_repl *r = repl(3, 10000, 0);

	fake_start(&f, SILENT);
	CHECK_RC(rfs_repl_attach(r, "127.0.0.1", f.port), 0);
	j.r = r;
	pthread_create(&th, NULL, job_main, &j);
	usleep(100 * 1000);
	rfs_repl_detach(r);
	pthread_join(th, NULL);
	CHECK(j.rc == 0 && j.ms < 1000, "waiter: %d after %lld ms", j.rc, (long long)j.ms);
	events_expect(0, "");
	rfs_repl_free(r);
	fake_stop(&f);
}

static void attach_failures(void)
{
	struct fake f;
	struct rfs_repl *r = repl(2, 300, 0);
	int port, fd = listen_local(&port);
	int64_t t0;

	close(fd); /* nobody listens there now */
	CHECK_RC(rfs_repl_attach(r, "127.0.0.1", port), -ECONNREFUSED);
	CHECK_RC(rfs_repl_attach(r, "no-such-host.invalid", port), -EHOSTUNREACH);
	fake_start(&f, MUTE);
	t0 = now_ms();
	CHECK_RC(rfs_repl_attach(r, "127.0.0.1", f.port), -ETIMEDOUT);
	CHECK(now_ms() - t0 < 1500, "attach took %lld ms", (long long)(now_ms() - t0));
	fake_stop(&f);
	CHECK_RC(rfs_repl_submit(r, OP(.code = RFS_OP_MKDIR, .path = "x", .mode = 0700), RFS_WAIT_APPLIED), 0);
	events_expect(0, "");
	rfs_repl_free(r);
}

/* After a detach, attach to a working receiver: the stream carries on. */
static void reattach(void)
{
	char dir[PATH_MAX];
	struct fake f;
	struct rx rx;
	struct rfs_repl *r = repl(2, 300, 0);

	tmpdir(dir, "reattach");
	fake_start(&f, SILENT);
	CHECK_RC(rfs_repl_attach(r, "127.0.0.1", f.port), 0);
	CHECK_RC(rfs_repl_submit(r, OP(.code = RFS_OP_MKDIR, .path = "lost", .mode = 0700), RFS_WAIT_APPLIED), 0);
	events_expect(1, "detached no acknowledgement for 300 ms");
	fake_stop(&f);
	rx_start(&rx, dir);
	CHECK_RC(rfs_repl_attach(r, "127.0.0.1", rx.port), 0);
	CHECK_RC(rfs_repl_submit(r, OP(.code = RFS_OP_MKDIR, .path = "kept", .mode = 0700), RFS_WAIT_APPLIED), 0);
	CHECK_RC(rfs_repl_submit(r, OP(.code = RFS_OP_MKDIR, .path = "kept", .mode = 0700), RFS_WAIT_APPLIED),
		 -EEXIST);
	rfs_repl_free(r);
	rx_stop(&rx);
	events_expect(0, "");
}

struct held {
	struct job j;
	pthread_t th;
	atomic_int done;
};

static void *held_main(void *arg)
{
	struct held *h = arg;

	job_main(&h->j);
	atomic_store(&h->done, 1);
	return NULL;
}

static void held_start(struct held *h, struct rfs_repl *r, const struct rfs_op *op, enum rfs_wait wait)
{
	*h = (struct held){.j = {.r = r, .op = *op, .wait = wait, .repeat = 1}};
	CHECK(!pthread_create(&h->th, NULL, held_main, h), "pthread_create");
}

/* Fencing: a waiter woken by the secondary's loss, and a submit made after it, return
 * only once told that the secondary's copy is outdated; buffered writes do not wait. */
static void fenced_until_told(int by_detach)
{
	struct rfs_repl_stats st;
	struct held before, after;
	struct fake f;
	struct rfs_repl *r = repl_fenced(2, 300, 0, 1);

	fake_start(&f, CLOSE);
	CHECK_RC(rfs_repl_attach(r, "127.0.0.1", f.port), 0);
	held_start(&before, r, OP(.code = RFS_OP_FSYNC, .path = "a"), RFS_WAIT_DURABLE);
	events_expect(1, "detached connection ");
	held_start(&after, r, OP(.code = RFS_OP_MKDIR, .path = "d", .mode = 0700), RFS_WAIT_APPLIED);
	CHECK_RC(rfs_repl_submit(r, OP(.code = RFS_OP_WRITE, .path = "w", .data = data, .data_len = 4096),
				 RFS_WAIT_QUEUED), 0);
	usleep(200 * 1000);
	rfs_repl_stats(r, &st);
	CHECK(st.fencing && !atomic_load(&before.done) && !atomic_load(&after.done),
	      "fencing %d, waiters done %d %d", st.fencing, atomic_load(&before.done), atomic_load(&after.done));
	if (by_detach)
		rfs_repl_detach(r);
	else
		rfs_repl_fenced(r);
	pthread_join(before.th, NULL);
	pthread_join(after.th, NULL);
	CHECK(before.j.rc == 0 && after.j.rc == 0, "rc %d %d", before.j.rc, after.j.rc);
	rfs_repl_stats(r, &st);
	CHECK(!st.fencing, "still fencing");
	rfs_repl_free(r);
	fake_stop(&f);
	events_expect(0, "");
}

/* A buffered write the secondary fails (its parent missing there) detaches it when its
 * ack comes, nobody waiting for it; the next waiter returns without it. */
static void buffered_failure(void)
{
	char dir[PATH_MAX];
	struct rfs_repl_stats st;
	struct rx rx;
	struct rfs_repl *r = repl(1, 2000, 0);

	tmpdir(dir, "bufferedfail");
	rx_start(&rx, dir);
	CHECK_RC(rfs_repl_attach(r, "127.0.0.1", rx.port), 0);
	CHECK_RC(rfs_repl_submit(r, OP(.code = RFS_OP_WRITE, .path = "missing/x", .data = data, .data_len = 4096),
				 RFS_WAIT_QUEUED), 0);
	CHECK_RC(rfs_repl_submit(r, OP(.code = RFS_OP_FSYNC, .path = "missing/x"), RFS_WAIT_DURABLE), 0);
	events_expect(1, "detached the secondary failed to write (a path): No such file or directory");
	rfs_repl_stats(r, &st);
	CHECK(!st.attached && st.failures == 1, "attached %d, failures %llu", st.attached,
	      (unsigned long long)st.failures);
	rfs_repl_free(r);
	rx_stop(&rx);
}

int main(void)
{
	waiters_woken(SILENT, "detached no acknowledgement for 300 ms", 0);
	/* Closed with frames unread, the socket may be reset rather than closed. */
	waiters_woken(CLOSE, "detached connection ", 1);
	stalled_sender();
	explicit_detach();
	attach_failures();
	reattach();
	fenced_until_told(0);
	fenced_until_told(1);
	buffered_failure();
	printf("ok\n");
	return 0;
}
