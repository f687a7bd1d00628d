/* Helpers shared by the rfs core's C tests (built with ASan/UBSan by `make rfs-asan`). */
#ifndef HAKIT_RFS_TEST_H
#define HAKIT_RFS_TEST_H

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "apply.h"
#include "chan.h"
#include "op.h"
#include "repl_recv.h"
#include "repl_send.h"

/* A failed check ends the program: the Python runner reports its message.  On stdout,
 * because a test may point stderr elsewhere to read what the receiver logs. */
#define CHECK(cond, ...)                                                              \
	do {                                                                          \
		if (!(cond)) {                                                        \
			printf("FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);        \
			printf(__VA_ARGS__);                                          \
			printf("\n");                                                 \
			exit(1);                                                      \
		}                                                                     \
	} while (0)

#define CHECK_RC(expr, want)                                                          \
	do {                                                                          \
		int rc_ = (expr);                                                     \
		CHECK(rc_ == (want), "got %d (%s), want %d", rc_, rc_ < 0 ? strerror(-rc_) : "", (want)); \
	} while (0)

/* A fresh directory under $TMPDIR or /tmp, removed at exit; its path in out (PATH_MAX). */
void tmpdir(char *out, const char *what);
void rmtree(const char *path);
int open_dir(const char *path);

/* Escape bait: out, a directory beside a receiver's root, holds one file, the victim;
 * root gets "evil", a symlink to the victim, and "evdir", one to out.  Whatever a peer
 * sends may succeed or fail inside root, never change out or the victim.  bait_links
 * plants the symlinks again in a root that was emptied. */
void bait_plant(const char *out, const char *root);
void bait_links(const char *root);
void bait_untouched(void);

/* Both trees hold the same entries: type, mode, owner, size, content, symlink target,
 * device number, xattrs; mtimes too for files whose mtime is EXACT_SEC in a. */
#define EXACT_SEC 1000000000
void tree_same(const char *a, const char *b);

/* A receiver applying under root, served by a thread on 127.0.0.1:port; with creds,
 * only to peers that pass them. */
struct rx {
	int rootfd, listen_fd, port;
	const struct rfs_creds *creds;
	volatile int stop;
	int result;
	pthread_t th;
};
void rx_start(struct rx *rx, const char *root);
void rx_start_creds(struct rx *rx, const char *root, const struct rfs_creds *creds);
void rx_stop(struct rx *rx);
int listen_local(int *port);

/* The primary's side of a test: do op on the primary's tree, submit it, and check that
 * both sides got the same result (the secondary's comes back in the ack). */
int both(struct rfs_repl *r, int rootfd, const struct rfs_op *op, enum rfs_wait wait);

void fill(void *buf, size_t n, unsigned seed, int compressible);
int64_t now_ms(void);

#endif
