/* The primary's dirty marks (dirty.h): in memory, a table path -> entry; on disk, the
 * journal (state_dir/journal), an append-only file of checksummed records.
 *
 * Journal records: H (magic, version, tag) first; V once the journal is complete;
 * E, C, A (a path's entry, children, attributes); S (a path's data range to compare:
 * whole 16 MiB extents, or open-ended from a truncation); B (an exact data range,
 * written only by the clean stop's rewrite); Z (the rewrite's end).  Each record
 * carries its XXH3, so a record torn by a crash ends the journal there: a crash can
 * lose only records whose fdatasync had not returned, i.e. marks of operations that
 * had not yet begun on the real directory.
 *
 * Write-ahead, once.  rfs_dirty_begin() appends what the op adds to the journal and
 * waits for the fdatasync before the caller touches the real directory.  What the
 * journal already holds (an entry's marks, an extent, a truncation from lower down) is
 * not written again, so a stream of writes into one extent costs one record and one
 * fdatasync.  Syncs are shared: a caller whose bytes another thread's fdatasync covered
 * does not sync again.
 *
 * The detach epoch.  Operations begun while CLEAN were not journaled: whatever the
 * lost session had not applied, the stream marks through rfs_dirty_mark() before the
 * operation ends.  So a journal created by rfs_dirty_detached() is complete once every
 * operation begun before it has ended; begin() counts operations per epoch, detached()
 * starts a new epoch, and the worker thread writes V when the older ones are done.  The
 * worker also makes rfs_dirty_mark()'s records durable, as mark() never waits.
 *
 * Locks: d->mu guards everything but the fdatasyncs, which run under their journal's
 * smu, never with d->mu held (so detached() and mark() wait for no disk flush).  A
 * journal is refcounted: a syncing thread keeps its fd open when synced() or an error
 * drops it meanwhile.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dirty.h"
#include "io.h"
#include "log.h"

/* Header-only: the checksums need no library at run time. */
#define XXH_INLINE_ALL
#include <xxhash.h>

#define JOURNAL "journal"
#define JOURNAL_TMP "journal.tmp"
#define MAGIC 0x4a444b48u                             /* "HKDJ" */
#define VERSION 1u
#define OPEN UINT64_MAX                               /* the end of an open-ended range */
#define CHUNK_BLOCKS (8u * RFS_DIRTY_BLOCK)           /* blocks per bitmap page of 4 KiB */
#define CHUNK_BYTES ((uint64_t)CHUNK_BLOCKS * RFS_DIRTY_BLOCK) /* 128 MiB */
#define CHUNK_WORDS (CHUNK_BLOCKS / 64)
#define CHUNK_EXTENTS (CHUNK_BYTES / RFS_DIRTY_EXTENT)          /* 8: chunk.journaled */
/* A data mark this long becomes open-ended: a superset, bounded memory (a bitmap of
 * 2 MiB per 64 GiB), for fallocates of absurd lengths made before they fail. */
#define BITMAP_MAX (64ull << 30)
#define BUF_FLUSH (1u << 20)                          /* the rewrite writes in pieces */

_Static_assert(CHUNK_BYTES % RFS_DIRTY_EXTENT == 0 && CHUNK_EXTENTS <= 8, "extents per chunk");
_Static_assert(RFS_MARK_ENTRY == 1 && RFS_MARK_CHILDREN == 2 && RFS_MARK_ATTRS == 4, "NAME_REC");

/* The record of each name mark, by bit. */
static const char NAME_REC[3] = {'E', 'C', 'A'};

/* One journal record as written (native byte order: the journal never leaves the host),
 * followed by the path (no NUL). */
struct rec {
	uint64_t sum;   /* XXH3 of everything after it, path included */
	uint32_t size;  /* the whole record */
	uint8_t type;   /* 'H', 'V', 'E', 'C', 'A', 'S', 'B', 'Z' */
	uint8_t pad[3];
	uint64_t a, b;  /* H: MAGIC | VERSION << 32, tag.  S, B: off, end (OPEN) */
};
_Static_assert(sizeof(struct rec) == 32, "record layout");

struct span {
	uint64_t off, end;
};

struct spans {
	struct span *v;
	size_t n, cap;
};

struct chunk {
	uint64_t idx;       /* covers [idx * CHUNK_BYTES, +CHUNK_BYTES) */
	uint64_t *bits;     /* a bit per block; NULL until one is marked */
	uint8_t journaled;  /* a bit per extent: its S record is in the journal */
};

struct entry {
	struct entry *next;  /* hash chain */
	uint64_t hash;
	unsigned marks;      /* ENTRY, CHILDREN, ATTRS: journaled as soon as set */
	struct chunk *chunks; /* sorted by idx */
	size_t nchunks, cchunks;
	uint64_t open_from;  /* DATA from here to the file's end; OPEN: none */
	uint64_t jopen_from; /* the journal holds an open-ended range from here */
	struct spans sus;    /* SUSPECT, sorted and merged */
	size_t len;
	char path[];
};

struct journal {
	int fd;
	int refs;                 /* d's own and syncing threads'; under d->mu */
	bool valid;               /* its V is durable; under d->mu */
	_Atomic uint64_t end;     /* bytes appended (under d->mu) */
	_Atomic uint64_t synced;  /* bytes known durable */
	pthread_mutex_t smu;      /* one fdatasync at a time */
	atomic_bool dir_synced;   /* its name is durable in the directory */
};

struct rfs_dirty {
	pthread_mutex_t mu;
	pthread_cond_t wake;      /* the worker: a V due, bytes to sync, stop */
	pthread_t worker;
	bool stop;
	int dirfd;
	enum rfs_dirty_state state;
	uint64_t tag, detaches;
	struct journal *j;        /* RECORDING: the journal; else NULL */
	bool v_due;               /* j is waiting for the older epoch to end */
	int epoch;                /* begin()s of this epoch are counted in cur (wraps) */
	uint64_t cur, old;        /* operations in progress: this epoch's, older ones' */
	struct entry **tab;
	size_t nbuckets, nentries;
	char *buf;                /* records being built, written with one pwrite */
	size_t blen, bcap;
};

/* ---- ranges */

/* Appends [off, end) to ranges pushed in ascending off, merging touching ones. */
static int push(struct spans *s, uint64_t off, uint64_t end)
{
	if (s->n && off <= s->v[s->n - 1].end) {
		if (end > s->v[s->n - 1].end)
			s->v[s->n - 1].end = end;
		return 0;
	}
	if (rfs_grow(&s->v, &s->cap, s->n + 1, sizeof *s->v))
		return -ENOMEM;
	s->v[s->n++] = (struct span){off, end};
	return 0;
}

/* Inserts into sorted, merged ranges. */
static int insert(struct spans *s, uint64_t off, uint64_t end)
{
	size_t lo = 0, hi = s->n, k;

	while (lo < hi) {           /* the first range that ends at or after off */
		size_t mid = (lo + hi) / 2;

		if (s->v[mid].end < off)
			lo = mid + 1;
		else
			hi = mid;
	}
	for (k = lo; k < s->n && s->v[k].off <= end; k++) {
		off = s->v[k].off < off ? s->v[k].off : off;
		end = s->v[k].end > end ? s->v[k].end : end;
	}
	if (k == lo) {
		if (rfs_grow(&s->v, &s->cap, s->n + 1, sizeof *s->v))
			return -ENOMEM;
		memmove(s->v + lo + 1, s->v + lo, (s->n - lo) * sizeof *s->v);
		s->n++;
	} else {
		memmove(s->v + lo + 1, s->v + k, (s->n - k) * sizeof *s->v);
		s->n -= k - lo - 1;
	}
	s->v[lo] = (struct span){off, end};
	return 0;
}

/* An entry's DATA as ranges: the bitmap's runs below open_from, then open_from on. */
static int data_spans(const struct entry *e, struct spans *out)
{
	out->n = 0;
	for (size_t c = 0; c < e->nchunks; c++) {
		const uint64_t *w = e->chunks[c].bits;
		uint64_t base = e->chunks[c].idx * CHUNK_BYTES;

		for (size_t i = 0; w && i < CHUNK_WORDS && base < e->open_from; i++, base += 64 * RFS_DIRTY_BLOCK) {
			if (w[i] == ~0ull) {
				if (push(out, base, base + 64 * RFS_DIRTY_BLOCK))
					return -ENOMEM;
				continue;
			}
			for (unsigned b = 0; w[i] && b < 64; b++) {
				uint64_t off = base + (uint64_t)b * RFS_DIRTY_BLOCK;

				if (w[i] >> b & 1 && off < e->open_from && push(out, off, off + RFS_DIRTY_BLOCK))
					return -ENOMEM;
			}
		}
	}
	if (e->open_from != OPEN)
		return push(out, e->open_from, OPEN);
	return 0;
}

static uint64_t bounded_bytes(const struct spans *s)
{
	uint64_t n = 0;

	for (size_t i = 0; i < s->n; i++)
		n += s->v[i].end == OPEN ? 0 : s->v[i].end - s->v[i].off;
	return n;
}

/* ---- the table */

static void entry_free(struct entry *e)
{
	for (size_t c = 0; c < e->nchunks; c++)
		free(e->chunks[c].bits);
	free(e->chunks);
	free(e->sus.v);
	free(e);
}

static void forget(struct rfs_dirty *d)
{
	for (size_t b = 0; b < d->nbuckets; b++) {
		while (d->tab[b]) {
			struct entry *e = d->tab[b];

			d->tab[b] = e->next;
			entry_free(e);
		}
	}
	d->nentries = 0;
}

static struct entry *entry_get(struct rfs_dirty *d, const char *path, size_t len)
{
	uint64_t h = XXH3_64bits(path, len);
	struct entry *e;

	for (e = d->nbuckets ? d->tab[h & (d->nbuckets - 1)] : NULL; e; e = e->next)
		if (e->hash == h && e->len == len && !memcmp(e->path, path, len))
			return e;
	if (d->nentries >= d->nbuckets) {   /* keep chains short: double the buckets */
		size_t nb = d->nbuckets ? 2 * d->nbuckets : 64;
		struct entry **t = calloc(nb, sizeof *t);

		if (!t)
			return NULL;
		for (size_t b = 0; b < d->nbuckets; b++) {
			while ((e = d->tab[b])) {
				d->tab[b] = e->next;
				e->next = t[e->hash & (nb - 1)];
				t[e->hash & (nb - 1)] = e;
			}
		}
		free(d->tab);
		d->tab = t;
		d->nbuckets = nb;
	}
	e = calloc(1, sizeof *e + len + 1);
	if (!e)
		return NULL;
	e->hash = h;
	e->len = len;
	memcpy(e->path, path, len);
	e->open_from = e->jopen_from = OPEN;
	e->next = d->tab[h & (d->nbuckets - 1)];
	d->tab[h & (d->nbuckets - 1)] = e;
	d->nentries++;
	return e;
}

static struct chunk *chunk_get(struct entry *e, uint64_t idx)
{
	size_t lo = 0, hi = e->nchunks;

	while (lo < hi) {
		size_t mid = (lo + hi) / 2;

		if (e->chunks[mid].idx < idx)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo < e->nchunks && e->chunks[lo].idx == idx)
		return &e->chunks[lo];
	if (rfs_grow(&e->chunks, &e->cchunks, e->nchunks + 1, sizeof *e->chunks))
		return NULL;
	memmove(e->chunks + lo + 1, e->chunks + lo, (e->nchunks - lo) * sizeof *e->chunks);
	e->nchunks++;
	e->chunks[lo] = (struct chunk){.idx = idx};
	return &e->chunks[lo];
}

/* ---- journal records */

/* Adds a record to d->buf; path may be NULL. */
static int emit(struct rfs_dirty *d, uint8_t type, const char *path, size_t len, uint64_t a, uint64_t b)
{
	struct rec r = {.size = (uint32_t)(sizeof r + len), .type = type, .a = a, .b = b};

	if (rfs_grow(&d->buf, &d->bcap, d->blen + r.size, 1))
		return -ENOMEM;
	memcpy(d->buf + d->blen, &r, sizeof r);
	if (len)
		memcpy(d->buf + d->blen + sizeof r, path, len);
	r.sum = XXH3_64bits(d->buf + d->blen + sizeof r.sum, r.size - sizeof r.sum);
	memcpy(d->buf + d->blen, &r.sum, sizeof r.sum);
	d->blen += r.size;
	return 0;
}

/* Appends d->buf to the journal (not yet durable). */
static int append(struct rfs_dirty *d)
{
	int r = 0;

	if (d->blen) {
		r = rfs_pwrite_all(d->j->fd, d->buf, d->blen, (off_t)atomic_load(&d->j->end));
		if (!r)
			atomic_fetch_add(&d->j->end, d->blen);
	}
	d->blen = 0;
	return r;
}

static void journal_put(struct journal *j)
{
	if (j && !--j->refs) {
		close(j->fd);
		pthread_mutex_destroy(&j->smu);
		free(j);
	}
}

static struct journal *journal_new(int fd, uint64_t end, bool dir_synced)
{
	struct journal *j = calloc(1, sizeof *j);

	if (!j)
		return NULL;
	j->fd = fd;
	j->refs = 1;
	atomic_init(&j->dir_synced, dir_synced);
	atomic_init(&j->end, end);
	atomic_init(&j->synced, end);
	pthread_mutex_init(&j->smu, NULL);
	return j;
}

/* Durable up to need (fdatasync, and the directory for a new file): one thread syncs,
 * the others waiting meanwhile find their bytes synced.  Without d->mu. */
static int jsync(int dirfd, struct journal *j, uint64_t need)
{
	int r = 0;

	pthread_mutex_lock(&j->smu);
	if (atomic_load(&j->synced) < need || !j->dir_synced) {
		uint64_t target = atomic_load(&j->end);

		if (fdatasync(j->fd) || (!j->dir_synced && fsync(dirfd)))
			r = -errno;
		if (!r) {
			j->dir_synced = true;
			atomic_store(&j->synced, target);
		}
	}
	pthread_mutex_unlock(&j->smu);
	return r;
}

/* A journal write failed (or memory ran out): the marks can no longer be trusted, so
 * nothing is (the next sync is a full one).  The journal goes first, durably, so that a
 * crash cannot bring back an incomplete one. */
static void invalidate(struct rfs_dirty *d, const char *what, int err)
{
	rfs_log("dirty-block journal: %s: %s; the next synchronisation will be a full one", what, strerror(-err));
	if (d->j) {
		if (unlinkat(d->dirfd, JOURNAL, 0) && errno != ENOENT)
			rfs_log("dirty-block journal: cannot remove it: %s", strerror(errno));
		fsync(d->dirfd);
		journal_put(d->j);
		d->j = NULL;
	}
	d->state = RFS_DIRTY_INVALID;
	d->v_due = false;
	d->blen = 0;
	forget(d);
}

/* With d->mu held, released while waiting: d->j's bytes so far are durable (or INVALID). */
static void sync_now(struct rfs_dirty *d)
{
	struct journal *j = d->j;
	uint64_t need;
	int r;

	if (!j)
		return;
	need = atomic_load(&j->end);
	if (atomic_load(&j->synced) >= need && j->dir_synced)
		return;
	j->refs++;
	pthread_mutex_unlock(&d->mu);
	r = jsync(d->dirfd, j, need);
	pthread_mutex_lock(&d->mu);
	if (r && d->j == j)
		invalidate(d, "fdatasync", r);
	journal_put(j);
}

/* A new journal holding H(tag): d->j. */
static int journal_create(struct rfs_dirty *d, uint64_t tag)
{
	int fd = openat(d->dirfd, JOURNAL, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600), r;

	if (fd < 0)
		return -errno;
	d->j = journal_new(fd, 0, false);
	if (!d->j) {
		close(fd);
		return -ENOMEM;
	}
	d->blen = 0;
	r = emit(d, 'H', NULL, 0, MAGIC | (uint64_t)VERSION << 32, tag);
	return r ? r : append(d);
}

/* ---- marking: memory, plus with jr the journal records it lacks (into d->buf) */

static int mark_names(struct rfs_dirty *d, const char *path, size_t len, unsigned m, bool jr)
{
	struct entry *e = entry_get(d, path, len);

	if (!e)
		return -ENOMEM;
	for (unsigned i = 0; i < 3; i++) {
		if (m & ~e->marks & 1u << i) {
			if (jr && emit(d, (uint8_t)NAME_REC[i], path, len, 0, 0))
				return -ENOMEM;
			e->marks |= 1u << i;
		}
	}
	return 0;
}

static int mark_parent(struct rfs_dirty *d, const char *path, bool jr)
{
	const char *slash = strrchr(path, '/');

	return mark_names(d, path, slash ? (size_t)(slash - path) : 0, RFS_MARK_CHILDREN, jr);
}

/* DATA from off to the file's end (a truncation; with jr, an S record if the journal
 * has none from there or lower). */
static int mark_open(struct rfs_dirty *d, struct entry *e, uint64_t off, bool jr)
{
	off -= off % RFS_DIRTY_BLOCK;
	if (off < e->open_from)
		e->open_from = off;
	if (off < e->jopen_from) {
		if (jr && emit(d, 'S', e->path, e->len, off, OPEN))
			return -ENOMEM;
		e->jopen_from = off;
	}
	return 0;
}

/* DATA [off, end), widened to blocks; with jr, S records for the extents the journal
 * lacks (consecutive ones as one record). */
static int mark_data(struct rfs_dirty *d, struct entry *e, uint64_t off, uint64_t end, bool jr)
{
	uint64_t b0 = off / RFS_DIRTY_BLOCK, b1 = (end - 1) / RFS_DIRTY_BLOCK + 1, x0, x1, run = OPEN;

	for (uint64_t b = b0; b < b1;) {
		uint64_t idx = b / CHUNK_BLOCKS, lo = b % CHUNK_BLOCKS, hi = CHUNK_BLOCKS;
		struct chunk *c = chunk_get(e, idx);

		if (!c || (!c->bits && !(c->bits = calloc(CHUNK_WORDS, sizeof *c->bits))))
			return -ENOMEM;
		if (hi > lo + (b1 - b))
			hi = lo + (b1 - b);
		for (uint64_t i = lo; i < hi;) {
			uint64_t n = 64 - i % 64 < hi - i ? 64 - i % 64 : hi - i;

			c->bits[i / 64] |= (n == 64 ? ~0ull : (1ull << n) - 1) << (i % 64);
			i += n;
		}
		b += hi - lo;
	}
	if (!jr)
		return 0;
	x0 = off / RFS_DIRTY_EXTENT;
	x1 = (end - 1) / RFS_DIRTY_EXTENT;
	for (uint64_t x = x0; x <= x1 + 1; x++) {
		struct chunk *c = x <= x1 ? chunk_get(e, x / CHUNK_EXTENTS) : NULL;
		uint8_t bit = (uint8_t)(1u << x % CHUNK_EXTENTS);
		bool need = c && !(c->journaled & bit) && x * RFS_DIRTY_EXTENT < e->jopen_from;

		if (x <= x1 && !c)
			return -ENOMEM;
		if (need) {
			c->journaled |= bit;
			if (run == OPEN)
				run = x;
		} else if (run != OPEN) {
			if (emit(d, 'S', e->path, e->len, run * RFS_DIRTY_EXTENT, x * RFS_DIRTY_EXTENT))
				return -ENOMEM;
			run = OPEN;
		}
	}
	return 0;
}

static int mark_range(struct rfs_dirty *d, const char *path, int64_t off, uint64_t len)
{
	struct entry *e;

	if (off < 0 || !len)
		return 0;
	if (!(e = entry_get(d, path, strlen(path))))
		return -ENOMEM;
	if (len > BITMAP_MAX)
		return mark_open(d, e, (uint64_t)off, true);
	return mark_data(d, e, (uint64_t)off, (uint64_t)off + len, true);
}

/* op's marks (see dirty.h's list) in memory and d->buf. */
static int record(struct rfs_dirty *d, const struct rfs_op *op)
{
	const char *p = op->path, *q = op->path2;
	size_t n = p ? strlen(p) : 0;
	struct entry *e;
	int r;

	if (!p)
		return 0;
	switch (op->code) {
	case RFS_OP_WRITE:
		/* A write described before it is done (begin) or kept after it was sent has its
		 * length in len, without the data. */
		return mark_range(d, p, op->off, op->data_len > op->len ? op->data_len : op->len);
	case RFS_OP_FALLOCATE:
		r = mark_names(d, p, n, RFS_MARK_ATTRS, true);
		return r ? r : mark_range(d, p, op->off, op->len);
	case RFS_OP_TRUNCATE:
		/* From the new size's block on: a later extension must carry the zeros. */
		r = mark_names(d, p, n, RFS_MARK_ATTRS, true);
		if (r || op->off < 0)
			return r;
		return (e = entry_get(d, p, n)) ? mark_open(d, e, (uint64_t)op->off, true) : -ENOMEM;
	case RFS_OP_CREATE:
	case RFS_OP_MKNOD:
	case RFS_OP_SYMLINK:
	case RFS_OP_MKDIR:
		r = mark_names(d, p, n, RFS_MARK_ENTRY, true);
		return r ? r : mark_parent(d, p, true);
	case RFS_OP_UNLINK:
	case RFS_OP_RMDIR:
		return mark_parent(d, p, true);
	case RFS_OP_RENAME:
		if (!q)
			return 0;
		r = mark_parent(d, p, true);
		if (!r)
			r = mark_parent(d, q, true);
		if (!r)
			r = mark_names(d, q, strlen(q), RFS_MARK_ENTRY, true);
		if (!r && op->flags & RENAME_EXCHANGE)
			r = mark_names(d, p, n, RFS_MARK_ENTRY, true);
		return r;
	case RFS_OP_CHMOD:
	case RFS_OP_CHOWN:
	case RFS_OP_UTIMENS:
	case RFS_OP_SETXATTR:
	case RFS_OP_REMOVEXATTR:
		return mark_names(d, p, n, RFS_MARK_ATTRS, true);
	case RFS_OP_LINK:
		/* The names of one inode are found only by a walk of the whole tree, which the
		 * full sync does (sync.c): the root's entry.  Recorded for a link, and for a
		 * rename or unlink of a file with several names (fs.c). */
		return mark_names(d, "", 0, RFS_MARK_ENTRY, true);
	default:
		return 0;
	}
}

/* With d->mu held: op's marks in memory and appended to the journal. */
static void record_op(struct rfs_dirty *d, const struct rfs_op *op)
{
	int r;

	d->blen = 0;
	r = record(d, op);
	if (!r)
		r = append(d);
	if (r)
		invalidate(d, r == -ENOMEM ? "out of memory" : "write", r);
}

/* ---- loading and the clean stop's rewrite */

static int load_rec(struct rfs_dirty *d, const struct rec *r, const char *path, size_t len)
{
	struct entry *e;

	switch (r->type) {
	case 'E':
	case 'C':
	case 'A':
		return mark_names(d, path, len, r->type == 'E' ? RFS_MARK_ENTRY :
				  r->type == 'C' ? RFS_MARK_CHILDREN : RFS_MARK_ATTRS, false);
	case 'S':
	case 'B':
		if (r->a >= r->b || !(e = entry_get(d, path, len)))
			return r->a >= r->b ? -EINVAL : -ENOMEM;
		if (r->type == 'B')
			return r->b == OPEN ? mark_open(d, e, r->a, false) : mark_data(d, e, r->a, r->b, false);
		/* What this S record covers needs no other. */
		if (r->b == OPEN && r->a < e->jopen_from)
			e->jopen_from = r->a;
		for (uint64_t x = (r->a + RFS_DIRTY_EXTENT - 1) / RFS_DIRTY_EXTENT;
		     r->b != OPEN && (x + 1) * RFS_DIRTY_EXTENT <= r->b; x++) {
			struct chunk *c = chunk_get(e, x / CHUNK_EXTENTS);

			if (!c)
				return -ENOMEM;
			c->journaled |= (uint8_t)(1u << x % CHUNK_EXTENTS);
		}
		return insert(&e->sus, r->a, r->b);
	case 'V':
	case 'Z':
		return 0;
	default:
		return -EINVAL;
	}
}

/* The journal a previous run left: RECORDING(tag) if it has its V, else INVALID (and
 * gone).  Loading stops at the first record that is torn or corrupt; what lies beyond is
 * cut off, so that nothing stale ever follows the records appended from now on. */
static void load(struct rfs_dirty *d)
{
	int fd = openat(d->dirfd, JOURNAL, O_RDWR | O_CLOEXEC);
	uint64_t pos = 0, tag = 0;
	bool valid = false;
	struct stat st;
	char *data = NULL;
	struct rec r;

	if (fd < 0) {
		if (errno != ENOENT)
			rfs_log("dirty-block journal: cannot open it: %s", strerror(errno));
		return;
	}
	if (fstat(fd, &st) || !(data = malloc((size_t)st.st_size + 1)) ||
	    rfs_pread_full(fd, data, (size_t)st.st_size, 0) != st.st_size) {
		rfs_log("dirty-block journal: cannot read it: %s", data ? strerror(errno) : "out of memory");
		goto invalid;
	}
	while ((uint64_t)st.st_size - pos >= sizeof r) {
		memcpy(&r, data + pos, sizeof r);
		if (r.size < sizeof r || r.size > (uint64_t)st.st_size - pos || r.size - sizeof r >= RFS_PATH_MAX ||
		    r.sum != XXH3_64bits(data + pos + sizeof r.sum, r.size - sizeof r.sum) ||
		    (!pos) != (r.type == 'H'))
			break;
		if (r.type == 'H' && r.a != (MAGIC | (uint64_t)VERSION << 32))
			break;
		tag = r.type == 'H' ? r.b : tag;
		valid |= r.type == 'V';
		if (r.type != 'H' && load_rec(d, &r, data + pos + sizeof r, r.size - sizeof r) == -ENOMEM) {
			rfs_log("dirty-block journal: out of memory loading it");
			goto invalid;
		}
		pos += r.size;
	}
	if (!valid)
		goto invalid;
	if (pos < (uint64_t)st.st_size && ftruncate(fd, (off_t)pos)) {
		rfs_log("dirty-block journal: cannot cut its torn end: %s", strerror(errno));
		goto invalid;
	}
	if (!(d->j = journal_new(fd, pos, true)))
		goto invalid;
	free(data);
	d->j->valid = true;
	d->state = RFS_DIRTY_RECORDING;
	d->tag = tag;
	return;
invalid:
	/* Never complete, or unreadable: the next sync is a full one anyway. */
	free(data);
	close(fd);
	forget(d);
	unlinkat(d->dirfd, JOURNAL, 0);
}

static int flush_to(struct rfs_dirty *d, int fd, uint64_t *off, size_t above)
{
	int r = 0;

	if (d->blen > above) {
		r = rfs_pwrite_all(fd, d->buf, d->blen, (off_t)*off);
		*off += d->blen;
		d->blen = 0;
	}
	return r;
}

/* The exact marks replace the journal: H, V, per entry E/C/A, B, S; Z. */
static int rewrite(struct rfs_dirty *d)
{
	int fd = openat(d->dirfd, JOURNAL_TMP, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600), r;
	struct spans s = {0};
	uint64_t off = 0;

	if (fd < 0)
		return -errno;
	d->blen = 0;
	r = emit(d, 'H', NULL, 0, MAGIC | (uint64_t)VERSION << 32, d->tag);
	if (!r)
		r = emit(d, 'V', NULL, 0, 0, 0);
	for (size_t b = 0; !r && b < d->nbuckets; b++) {
		for (struct entry *e = d->tab[b]; !r && e; e = e->next) {
			for (unsigned i = 0; !r && i < 3; i++)
				if (e->marks & 1u << i)
					r = emit(d, (uint8_t)NAME_REC[i], e->path, e->len, 0, 0);
			if (!r)
				r = data_spans(e, &s);
			for (size_t i = 0; !r && i < s.n; i++)
				r = emit(d, 'B', e->path, e->len, s.v[i].off, s.v[i].end);
			for (size_t i = 0; !r && i < e->sus.n; i++)
				r = emit(d, 'S', e->path, e->len, e->sus.v[i].off, e->sus.v[i].end);
			if (!r)
				r = flush_to(d, fd, &off, BUF_FLUSH);
		}
	}
	if (!r)
		r = emit(d, 'Z', NULL, 0, 0, 0);
	if (!r)
		r = flush_to(d, fd, &off, 0);
	if (!r && fsync(fd))
		r = -errno;
	close(fd);
	if (!r && renameat(d->dirfd, JOURNAL_TMP, d->dirfd, JOURNAL))
		r = -errno;
	if (!r && fsync(d->dirfd))
		r = -errno;
	free(s.v);
	return r;
}

/* ---- the worker: V when the older epoch ended, and mark()'s records durable */

static void *journal_thread(void *arg)
{
	struct rfs_dirty *d = arg;

	pthread_mutex_lock(&d->mu);
	while (!d->stop) {
		struct journal *j = d->j;

		if (j && d->v_due && !d->old) {
			int r;

			d->blen = 0;
			d->v_due = false;
			r = emit(d, 'V', NULL, 0, 0, 0);
			if (!r)
				r = append(d);
			if (r) {
				invalidate(d, "write", r);
				continue;
			}
			j->refs++;   /* not freed, so not mistaken for a newer one */
			sync_now(d);
			if (d->j == j)
				j->valid = true;
			journal_put(j);
		} else if (j && (atomic_load(&j->synced) < atomic_load(&j->end) || !j->dir_synced)) {
			sync_now(d);
		} else {
			pthread_cond_wait(&d->wake, &d->mu);
		}
	}
	pthread_mutex_unlock(&d->mu);
	return NULL;
}

/* ---- the interface */

static int mkdirs(char *path)
{
	for (char *s = strchr(path + 1, '/');; s = strchr(s + 1, '/')) {
		if (s)
			*s = 0;
		if (mkdir(path, 0700) && errno != EEXIST)
			return -errno;
		if (!s)
			return 0;
		*s = '/';
	}
}

int rfs_dirty_open(const char *state_dir, struct rfs_dirty **out)
{
	struct rfs_dirty *d = calloc(1, sizeof *d);
	char *dir = strdup(state_dir);
	int r = !d || !dir ? -ENOMEM : !*dir ? -EINVAL : mkdirs(dir);

	free(dir);
	if (!r && (d->dirfd = open(state_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
		r = -errno;
	if (r) {
		rfs_log("dirty-block journal: %s: %s", state_dir, strerror(-r));
		free(d);
		return r;
	}
	pthread_mutex_init(&d->mu, NULL);
	pthread_cond_init(&d->wake, NULL);
	unlinkat(d->dirfd, JOURNAL_TMP, 0);   /* a rewrite that never finished */
	load(d);
	r = -pthread_create(&d->worker, NULL, journal_thread, d);
	if (r) {
		rfs_log("dirty-block journal: no thread: %s", strerror(-r));
		d->stop = true;
		rfs_dirty_free(d);
		return r;
	}
	*out = d;
	return 0;
}

void rfs_dirty_free(struct rfs_dirty *d)
{
	int r;

	if (!d)
		return;
	pthread_mutex_lock(&d->mu);
	if (!d->stop) {
		d->stop = true;
		pthread_cond_signal(&d->wake);
		pthread_mutex_unlock(&d->mu);
		pthread_join(d->worker, NULL);
		pthread_mutex_lock(&d->mu);
	}
	/* Nothing is in progress: a journal still waiting for its V is complete too. */
	if (d->state == RFS_DIRTY_RECORDING && (d->j->valid || !d->old) && (r = rewrite(d)))
		invalidate(d, "rewriting it", r);
	pthread_mutex_unlock(&d->mu);
	forget(d);
	journal_put(d->j);
	free(d->tab);
	free(d->buf);
	close(d->dirfd);
	pthread_cond_destroy(&d->wake);
	pthread_mutex_destroy(&d->mu);
	free(d);
}

enum rfs_dirty_state rfs_dirty_state(struct rfs_dirty *d, uint64_t *tag)
{
	enum rfs_dirty_state s;

	pthread_mutex_lock(&d->mu);
	s = d->state;
	if (tag)
		*tag = d->tag;
	pthread_mutex_unlock(&d->mu);
	return s;
}

int rfs_dirty_adopt(struct rfs_dirty *d, uint64_t tag)
{
	int r = -EALREADY;

	pthread_mutex_lock(&d->mu);
	if (d->state == RFS_DIRTY_INVALID) {
		r = journal_create(d, tag);
		if (!r)
			r = emit(d, 'V', NULL, 0, 0, 0);
		if (!r)
			r = append(d);
		if (!r && (fdatasync(d->j->fd) || fsync(d->dirfd)))
			r = -errno;
		if (r) {
			invalidate(d, "creating it", r);
		} else {
			d->j->valid = true;
			atomic_store(&d->j->dir_synced, true);
			atomic_store(&d->j->synced, atomic_load(&d->j->end));
			d->state = RFS_DIRTY_RECORDING;
			d->tag = tag;
		}
	}
	pthread_mutex_unlock(&d->mu);
	return r;
}

void rfs_dirty_detached(struct rfs_dirty *d)
{
	int r;

	pthread_mutex_lock(&d->mu);
	d->detaches++;
	if (d->state == RFS_DIRTY_CLEAN) {
		d->old += d->cur;
		d->cur = 0;
		d->epoch = (d->epoch + 1) & INT_MAX;
		r = journal_create(d, d->tag);
		if (r) {
			invalidate(d, "creating it", r);
		} else {
			d->state = RFS_DIRTY_RECORDING;
			d->v_due = true;
			pthread_cond_signal(&d->wake);
		}
	}
	pthread_mutex_unlock(&d->mu);
}

void rfs_dirty_begin(struct rfs_dirty *d, const struct rfs_op *op, struct rfs_dirty_ticket *t)
{
	pthread_mutex_lock(&d->mu);
	t->epoch = d->epoch;
	d->cur++;
	if (d->state == RFS_DIRTY_RECORDING) {
		record_op(d, op);
		sync_now(d);
	}
	pthread_mutex_unlock(&d->mu);
}

void rfs_dirty_end(struct rfs_dirty *d, const struct rfs_dirty_ticket *t)
{
	pthread_mutex_lock(&d->mu);
	if (t->epoch == d->epoch) {
		d->cur--;
	} else if (!--d->old && d->v_due) {
		pthread_cond_signal(&d->wake);
	}
	pthread_mutex_unlock(&d->mu);
}

void rfs_dirty_mark(struct rfs_dirty *d, const struct rfs_op *op)
{
	pthread_mutex_lock(&d->mu);
	if (d->state == RFS_DIRTY_RECORDING) {
		record_op(d, op);
		if (d->j && atomic_load(&d->j->synced) < atomic_load(&d->j->end))
			pthread_cond_signal(&d->wake);
	}
	pthread_mutex_unlock(&d->mu);
}

static int cmp_entry(const void *a, const void *b)
{
	return strcmp(((const struct rfs_dirty_entry *)a)->path, ((const struct rfs_dirty_entry *)b)->path);
}

/* A snapshot entry's ranges from spans; the bounded bytes added to *bytes. */
static int ranges(const struct spans *s, struct rfs_range **out, size_t *n, uint64_t *bytes)
{
	*n = 0;
	if (!s->n)
		return 0;
	if (!(*out = malloc(s->n * sizeof **out)))
		return -ENOMEM;
	for (size_t i = 0; i < s->n; i++)
		(*out)[i] = (struct rfs_range){s->v[i].off, s->v[i].end - s->v[i].off};
	*n = s->n;
	*bytes += bounded_bytes(s);
	return 0;
}

int rfs_dirty_snapshot(struct rfs_dirty *d, struct rfs_dirty_snapshot *out)
{
	struct spans s = {0};
	int r = 0;

	*out = (struct rfs_dirty_snapshot){0};
	pthread_mutex_lock(&d->mu);
	out->detaches = d->detaches;
	if (d->state == RFS_DIRTY_RECORDING && d->nentries && !(out->e = calloc(d->nentries, sizeof *out->e)))
		r = -ENOMEM;
	for (size_t b = 0; !r && out->e && b < d->nbuckets; b++) {
		for (struct entry *e = d->tab[b]; !r && e; e = e->next) {
			struct rfs_dirty_entry *x = &out->e[out->n++];

			r = data_spans(e, &s);
			if (!r && !(x->path = strndup(e->path, e->len)))
				r = -ENOMEM;
			if (!r)
				r = ranges(&s, &x->data, &x->ndata, &out->data_bytes);
			if (!r)
				r = ranges(&e->sus, &x->suspect, &x->nsuspect, &out->suspect_bytes);
			x->marks = e->marks | (x->ndata ? RFS_MARK_DATA : 0) | (x->nsuspect ? RFS_MARK_SUSPECT : 0);
		}
	}
	pthread_mutex_unlock(&d->mu);
	free(s.v);
	if (r) {
		rfs_dirty_snapshot_free(out);
		return r;
	}
	if (out->n)
		qsort(out->e, out->n, sizeof *out->e, cmp_entry);
	return 0;
}

void rfs_dirty_snapshot_free(struct rfs_dirty_snapshot *s)
{
	for (size_t i = 0; i < s->n; i++) {
		free(s->e[i].path);
		free(s->e[i].data);
		free(s->e[i].suspect);
	}
	free(s->e);
	*s = (struct rfs_dirty_snapshot){0};
}

int rfs_dirty_synced(struct rfs_dirty *d, uint64_t tag, const struct rfs_dirty_snapshot *since)
{
	int r = 0;

	pthread_mutex_lock(&d->mu);
	if (since->detaches != d->detaches) {
		r = -ESTALE;
	} else {
		/* Durably gone before any operation goes unrecorded: a crash must not bring
		 * back a journal that lacks what follows. */
		if (d->j && ((unlinkat(d->dirfd, JOURNAL, 0) && errno != ENOENT) || fsync(d->dirfd))) {
			r = -errno;
			invalidate(d, "removing it", r);
		}
		journal_put(d->j);
		d->j = NULL;
		d->v_due = false;
		forget(d);
		if (!r) {
			d->state = RFS_DIRTY_CLEAN;
			d->tag = tag;
		}
	}
	pthread_mutex_unlock(&d->mu);
	return r;
}

void rfs_dirty_keys(struct rfs_dirty *d, char *out, size_t size)
{
	static const char *const names[] = {"invalid", "clean", "recording"};
	struct spans s = {0};
	uint64_t bytes = 0;

	pthread_mutex_lock(&d->mu);
	for (size_t b = 0; b < d->nbuckets; b++) {
		for (struct entry *e = d->tab[b]; e; e = e->next) {
			if (!data_spans(e, &s))
				bytes += bounded_bytes(&s);
			bytes += bounded_bytes(&e->sus);
		}
	}
	snprintf(out, size, " journal=%s journal_tag=%" PRIu64 " dirty_paths=%zu dirty_bytes=%" PRIu64,
		 names[d->state], d->tag, d->nentries, bytes);
	pthread_mutex_unlock(&d->mu);
	free(s.v);
}
