/* libFuzzer target: the rfs receiver (repl_recv.c, apply.c) fed one connection's stream per
 * input, as a primary sends it once the connection has passed chan.c's checks
 * (rfs_receiver_serve without creds asks for none).  The real receiver runs in a thread
 * for the whole process; each input is one connection: header checks, hello, decoding,
 * lz4, every opcode applied or answered, acks.
 *
 * What counts as a crash: a sanitizer report, a hang (libFuzzer's -timeout), or a
 * change outside the receiver's root (the bait of rfs_test.h, checked after every
 * input; its CHECK ends the process, which libFuzzer reports as a crash with the input).
 *
 * The root lives on a tmpfs of its own, mounted in a private mount namespace: an input
 * may fallocate gigabytes or fill the tree, and must not fill the machine's disk; nodev,
 * so that a device node an input creates cannot reach a real device.  Root is needed
 * for that (and for chown, device nodes and trusted.* xattrs to be exercised at all).
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "rfs_test.h"

#define SCRATCH_OPTS "size=64m,nr_inodes=16384,mode=0755"

static char top[PATH_MAX], root[PATH_MAX + 8], out[PATH_MAX + 8];
static struct sockaddr_un addr = {.sun_family = AF_UNIX};
static socklen_t addr_len;
static struct rx rx;

static void *serve(void *arg)
{
	(void)arg;
	rx.result = rfs_receiver_serve(rx.rootfd, rx.listen_fd, &rx.stop, NULL, NULL);
	return NULL;
}

static void stop_receiver(void)
{
	rx_stop(&rx);
}

/* An abstract unix socket: no TIME_WAIT per input as over TCP, no file to clean up. */
static int listen_abstract(void)
{
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	int n = snprintf(addr.sun_path + 1, sizeof addr.sun_path - 1, "hakit-fuzz-rfs-%d", (int)getpid());

	addr_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + (size_t)n);
	CHECK(fd >= 0 && !bind(fd, (struct sockaddr *)&addr, addr_len) && !listen(fd, 16),
	      "listen: %s", strerror(errno));
	return fd;
}

/* The tmpfs goes over "scratch" beside the executable: the directory stays, empty, in
 * the machine's namespace; nothing is left to remove when the process dies. */
static void private_scratch(void)
{
	char exe[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);

	CHECK(n > 0, "readlink /proc/self/exe: %s", strerror(errno));
	exe[n] = '\0';
	*strrchr(exe, '/') = '\0';
	snprintf(top, sizeof top, "%s/scratch", exe);
	CHECK(!mkdir(top, 0755) || errno == EEXIST, "mkdir %s: %s", top, strerror(errno));
	CHECK(!unshare(CLONE_NEWNS), "a private mount namespace (run as root): %s", strerror(errno));
	/* Or the tmpfs would propagate back to the machine's namespace. */
	CHECK(!mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL), "make / private: %s", strerror(errno));
	CHECK(!mount("hakit-fuzz", top, "tmpfs", MS_NODEV | MS_NOSUID | MS_NOEXEC, SCRATCH_OPTS),
	      "mount tmpfs on %s: %s", top, strerror(errno));
	snprintf(root, sizeof root, "%s/root", top);
	snprintf(out, sizeof out, "%s/out", top);
	CHECK(!mkdir(root, 0755) && !mkdir(out, 0755), "mkdir: %s", strerror(errno));
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	private_scratch();
	bait_plant(out, root);
	rx = (struct rx){.rootfd = open_dir(root), .listen_fd = listen_abstract()};
	CHECK(!pthread_create(&rx.th, NULL, serve, NULL), "pthread_create");
	atexit(stop_receiver);
	return 0;
}

/* Send all of data while reading the acks (or the receiver blocks on a full socket and
 * so do we), then read until the receiver closes: by then it handled every frame. */
static void one_connection(const uint8_t *data, size_t size)
{
	static char acks[1 << 16];
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	size_t off = 0;
	int sending = 1;

	CHECK(fd >= 0 && !connect(fd, (struct sockaddr *)&addr, addr_len), "connect: %s", strerror(errno));
	for (;;) {
		struct pollfd p = {.fd = fd, .events = POLLIN | (sending ? POLLOUT : 0)};
		ssize_t n;

		if (sending && off == size) {
			shutdown(fd, SHUT_WR);
			sending = 0;
			continue;
		}
		if (poll(&p, 1, -1) < 0)
			continue;
		if (sending && p.revents & POLLOUT) {
			n = send(fd, data + off, size - off, MSG_NOSIGNAL);
			if (n > 0)
				off += (size_t)n;
			else if (n < 0 && errno != EAGAIN && errno != EINTR)
				sending = 0; /* refused and closed: read what it said */
		}
		if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
			n = recv(fd, acks, sizeof acks, 0);
			if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
				break;
		}
	}
	close(fd);
}

static int rm_below(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	if (ftw->level > 0)
		CHECK(!remove(p), "remove %s: %s", p, strerror(errno));
	return 0;
}

/* Each input starts from the same tree (but for the receiver's cache of open fds). */
static void reset_root(void)
{
	char names[1 << 16];
	ssize_t n = llistxattr(root, names, sizeof names);

	CHECK(!nftw(root, rm_below, 32, FTW_DEPTH | FTW_PHYS), "emptying the root: %s", strerror(errno));
	for (char *x = names; n > 0 && x < names + n; x += strlen(x) + 1)
		lremovexattr(root, x);
	chmod(root, 0755);
	bait_links(root);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	one_connection(data, size);
	bait_untouched();
	reset_root();
	return 0;
}
