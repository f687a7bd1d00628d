/* hakit-rfs: the replicated file system of one directory of a mirror module.
 *
 *   hakit-rfs primary   --dir D --ctl SOCKET [--nbremconn N] [--sendtimeout MS]
 *                       [--strict] [--compress] [--xattr] [--state DIR [--adopt TAG]]
 *                       [--fence] [--keep-dead-mount] [--root-fd N] [EXCLUSIONS] [SECURITY]
 *                       [--nbrei N] [--rei-bw-percent P] [--rei-allowed-bw KBPS]
 *   hakit-rfs secondary --dir D --ctl SOCKET --listen ADDR:PORT [--xattr] [EXCLUSIONS]
 *                       SECURITY | --insecure
 *   SECURITY (both roles): --auth-key-file FILE: every stream connection proves the
 *   module key, both ways; --tls-cert FILE --tls-key FILE --tls-ca FILE: the stream
 *   runs in TLS 1.3, both certificates checked against the CA (chan.h).  The secondary
 *   writes what a peer sends into D: without SECURITY it runs only when told --insecure.
 *   EXCLUSIONS: --exclude REGEX, --only REGEX, --exclude-path PATH, each repeatable
 *   (exclude.h); only the primary acts on them, the secondary takes them so that both
 *   roles can be given the same options.
 *
 * Both mount FUSE over D (fs.c), from a descriptor of D opened before the mount.  The
 * primary streams every change to the secondary it is attached to; the secondary's
 * mount is read-only and its receiver applies the stream to D underneath, through a
 * descriptor of its own.
 *
 * Supervised by the module, the primary takes --fence (a secondary lost by itself holds
 * every operation that would be acknowledged without it until "fenced", repl_send.h),
 * --keep-dead-mount (a crash leaves D dead, ENOTCONN, rather than bare) and, to be
 * started again in its place, --root-fd N: D's real directory, inherited from the
 * module, which holds it from before the first mount; the new mount then lands on top
 * of the dead one, and D is never uncovered.
 *
 * Control socket (Unix, mode 0600): one command per line, one reply line per command,
 * "ok[ ...]" or "error <message>" (the table commands[] dispatches them; lines, not
 * hakit's msgpack frames: docs/architecture.md says why):
 *   attach HOST PORT | detach | fenced | stats (ok key=value ...) | stop (unmounts, then exits 0)
 *   fullsync [tag=N]: the primary makes the secondary's tree identical to its own
 *     (sync.c); the reply comes when it is over: "ok files=N bytes_scanned=M bytes_sent=K
 *     elapsed_ms=T"; with a tag the journal (--state, dirty.h) then starts afresh from
 *     lineage N.
 *   resync tag=N: the same, incremental: only what the journal recorded while the
 *     secondary was away ("error resync: no journal..." when it recorded nothing valid).
 *   reibw [P KBPS]: the syncs' bandwidth cap (sync.h), now and for the next runs; the
 *     reply names it: "ok percent=P allowed_kbps=K".
 *   rfsdiff: what a sync would send: attached, a full comparison that sends nothing
 *     ("ok mode=compare paths=N bytes=B ..."); alone, the journal ("ok mode=journal ...").
 * The stream's news go to every connected client as "event <what>" lines ("detached
 * <reason>" on the primary, "receiver failed to <op> <path>: <error>" on the
 * secondary), and so does a
 * running full sync's progress ("event progress sync_state=running ...", the sync_* keys
 * of stats) at most twice a second.  SIGTERM and SIGINT stop as "stop" does.
 *
 * Threads: main runs the FUSE loop (which has its own workers); "control" serves the
 * control socket and the signals (signalfd); on the secondary, "receiver" runs
 * rfs_receiver_serve(); on the primary a full sync runs in a thread of its own, with its
 * --nbrei workers (sync.c).  They
 * share no lock: events cross from the stream's and the sync's threads through a pipe,
 * the end of the loop and of a full sync through eventfds, a stop through rfs_fs_stop().
 *
 * Exit status: 0 after a stop, 1 on an error at run time (logged), 2 on bad arguments.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mount.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "chan.h"
#include "dirty.h"
#include "exclude.h"
#include "fs.h"
#include "fuse_io.h"
#include "io.h"
#include "log.h"
#include "repl_recv.h"
#include "repl_send.h"
#include "sync.h"

#define FUSE_SUPER_MAGIC 0x65735546
#define DEFAULT_SENDTIMEOUT_MS 30000   /* the module's sendtimeout default, 30 s */
#define DEFAULT_NBREI 3                /* the module's nbrei default */
#define FLUSH_DELAY_MS 100             /* a buffered write is on the wire within this */
#define MAX_QUEUED_BYTES (64u << 20)   /* buffered writes beyond this wait for the wire */
#define MAX_CLIENTS 16
#define LINE_MAX_LEN 1024

static const char usage[] =
	"usage: hakit-rfs primary --dir D --ctl SOCKET [--nbremconn N] [--sendtimeout MS]"
	" [--strict] [--compress] [--xattr]\n"
	"                         [--state DIR [--adopt TAG]] [--fence] [--keep-dead-mount] [--root-fd N]\n"
	"                         [EXCLUSIONS] [SECURITY] [--nbrei N] [--rei-bw-percent P] [--rei-allowed-bw KBPS]\n"
	"       hakit-rfs secondary --dir D --ctl SOCKET --listen ADDR:PORT [--xattr] [EXCLUSIONS]"
	" [SECURITY]\n"
	"EXCLUSIONS, each repeatable, paths relative to D (used by the primary only):\n"
	"  --exclude REGEX      leave out entries whose path, or a parent's, matches (POSIX extended)\n"
	"  --only REGEX         replicate only the files (not directories) whose path matches one\n"
	"  --exclude-path PATH  leave out PATH and everything beneath it\n"
	"--state DIR: the journal of what changed while the secondary was away (incremental\n"
	"  resync); --adopt TAG: this copy is identical to the lineage TAG, record from now on\n"
	"--nbrei N: threads synchronising files (default 3); --rei-bw-percent P: while the\n"
	"  application writes, the syncs send at most P % of the data (default 100: no cap);\n"
	"  --rei-allowed-bw KBPS: and at most KBPS KiB/s (default 0: no limit)\n"
	"--fence: a secondary lost by itself holds what would be acknowledged without it until\n"
	"  'fenced'; --keep-dead-mount: a crash leaves D failing (ENOTCONN), never bare;\n"
	"  --root-fd N: D's real directory as inherited descriptor N (mounted over a dead mount)\n"
	"SECURITY, both roles (the secondary refuses to run without, unless --insecure):\n"
	"  --auth-key-file FILE  the module key (64 hex digits): every stream connection proves it\n"
	"  --tls-cert FILE --tls-key FILE --tls-ca FILE  TLS 1.3 on the stream, both certificates\n"
	"                       checked against the CA\n"
	"  --insecure           secondary: accept a primary that proves nothing (tests, trusted links)\n"
	"--no-passthrough: the secondary's reads go through the mount's page cache, not straight to\n"
	"  the real file (FUSE passthrough)\n";

struct args {
	bool primary;
	const char *dir, *ctl, *listen;
	int nbremconn, sendtimeout_ms;
	int nbrei, rei_bw_percent, rei_allowed_kbps;
	bool strict, compress, xattr, no_passthrough;
	bool primary_only_given;   /* an option the secondary refuses */
	const char *state;         /* the journal's directory (dirty.h); NULL: none, every sync is full */
	uint64_t adopt;            /* --adopt: the lineage to record from (adopting) */
	bool adopting;
	bool fence, keep_dead_mount;
	bool insecure;             /* the secondary may run without SECURITY */
	int root_fd;               /* --root-fd, or -1 */
	struct rfs_exclude *exclude; /* NULL: everything is replicated */
	struct rfs_creds_files sec;
	struct rfs_creds *creds;     /* NULL: the stream is plain TCP */
};

/* The process's state, shared by main and the control and receiver threads. */
struct server {
	struct args a;
	char dir[PATH_MAX];
	char mountpoint[64];          /* with --root-fd: the path mount(2) is given */
	struct rfs_fs *fs;
	struct rfs_repl *repl;        /* primary only */
	struct rfs_sync *sync;        /* primary only */
	struct rfs_dirty *dirty;      /* primary only, with --state */
	int ctl_fd, sig_fd, event_rd, event_wr, loop_done_fd, sync_done_fd;
	/* secondary only */
	int recv_rootfd, recv_listen_fd;
	volatile int recv_stop;
	struct rfs_rx_stats recv_stats;
	pthread_t recv_thread;
	atomic_int exit_code;
};

static _Noreturn void usage_error(const char *fmt, const char *what)
{
	char msg[512];

	snprintf(msg, sizeof msg, fmt, what);
	rfs_log("%s (hakit-rfs --help)", msg);
	exit(2);
}

static int parse_int(const char *s, const char *opt, long lo, long hi)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || end == s || *end || v < lo || v > hi) {
		char what[128];

		snprintf(what, sizeof what, "%s must be an integer from %ld to %ld", opt, lo, hi);
		usage_error("%s", what);
	}
	return (int)v;
}

/* A lineage tag (dirty.h): 0 or -1. */
static int parse_tag(const char *s, uint64_t *out)
{
	char *end;

	errno = 0;
	*out = strtoull(s, &end, 10);
	return errno || end == s || *end || *s == '-' ? -1 : 0;
}

static void parse_args(int argc, char **argv, struct args *a)
{
	enum { O_DIR = 1, O_CTL, O_LISTEN, O_NBREMCONN, O_SENDTIMEOUT, O_STRICT, O_COMPRESS, O_XATTR, O_HELP,
	       O_EXCLUDE, O_ONLY, O_EXCLUDE_PATH, O_STATE, O_ADOPT, O_AUTH_KEY, O_TLS_CERT, O_TLS_KEY, O_TLS_CA,
	       O_FENCE, O_KEEP_DEAD, O_ROOT_FD, O_INSECURE, O_NO_PASSTHROUGH, O_NBREI, O_REI_PERCENT,
	       O_REI_ALLOWED };
	static const struct option opts[] = {
		{ "dir", required_argument, NULL, O_DIR },
		{ "ctl", required_argument, NULL, O_CTL },
		{ "listen", required_argument, NULL, O_LISTEN },
		{ "nbremconn", required_argument, NULL, O_NBREMCONN },
		{ "sendtimeout", required_argument, NULL, O_SENDTIMEOUT },
		{ "strict", no_argument, NULL, O_STRICT },
		{ "compress", no_argument, NULL, O_COMPRESS },
		{ "xattr", no_argument, NULL, O_XATTR },
		{ "help", no_argument, NULL, O_HELP },
		{ "exclude", required_argument, NULL, O_EXCLUDE },
		{ "only", required_argument, NULL, O_ONLY },
		{ "exclude-path", required_argument, NULL, O_EXCLUDE_PATH },
		{ "state", required_argument, NULL, O_STATE },
		{ "adopt", required_argument, NULL, O_ADOPT },
		{ "auth-key-file", required_argument, NULL, O_AUTH_KEY },
		{ "tls-cert", required_argument, NULL, O_TLS_CERT },
		{ "tls-key", required_argument, NULL, O_TLS_KEY },
		{ "tls-ca", required_argument, NULL, O_TLS_CA },
		{ "fence", no_argument, NULL, O_FENCE },
		{ "keep-dead-mount", no_argument, NULL, O_KEEP_DEAD },
		{ "root-fd", required_argument, NULL, O_ROOT_FD },
		{ "insecure", no_argument, NULL, O_INSECURE },
		{ "no-passthrough", no_argument, NULL, O_NO_PASSTHROUGH },
		{ "nbrei", required_argument, NULL, O_NBREI },
		{ "rei-bw-percent", required_argument, NULL, O_REI_PERCENT },
		{ "rei-allowed-bw", required_argument, NULL, O_REI_ALLOWED },
		{ 0 },
	};
	int c;

	*a = (struct args){ .nbremconn = 1, .sendtimeout_ms = DEFAULT_SENDTIMEOUT_MS, .root_fd = -1,
			    .nbrei = DEFAULT_NBREI, .rei_bw_percent = 100 };
	if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
		fputs(usage, stdout);
		exit(0);
	}
	if (argc < 2 || (strcmp(argv[1], "primary") && strcmp(argv[1], "secondary")))
		usage_error("%s", argc < 2 ? "missing role: primary or secondary" : "the role must be primary or secondary");
	a->primary = !strcmp(argv[1], "primary");
	opterr = 0;
	optind = 2;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case O_DIR: a->dir = optarg; break;
		case O_CTL: a->ctl = optarg; break;
		case O_LISTEN: a->listen = optarg; break;
		case O_NBREMCONN:
			a->nbremconn = parse_int(optarg, "--nbremconn", 1, 16);
			a->primary_only_given = true;
			break;
		case O_SENDTIMEOUT:
			a->sendtimeout_ms = parse_int(optarg, "--sendtimeout", 1, 24 * 3600 * 1000);
			a->primary_only_given = true;
			break;
		/* The syncs' tuning: the secondary takes it too (and ignores it), as it does
		 * EXCLUSIONS, so that a role change keeps the command line. */
		case O_NBREI: a->nbrei = parse_int(optarg, "--nbrei", 1, RFS_NBREI_MAX); break;
		case O_REI_PERCENT: a->rei_bw_percent = parse_int(optarg, "--rei-bw-percent", 1, 100); break;
		case O_REI_ALLOWED: a->rei_allowed_kbps = parse_int(optarg, "--rei-allowed-bw", 0, INT_MAX); break;
		case O_STRICT: a->strict = a->primary_only_given = true; break;
		case O_COMPRESS: a->compress = a->primary_only_given = true; break;
		case O_XATTR: a->xattr = true; break;
		case O_NO_PASSTHROUGH: a->no_passthrough = true; break;
		case O_AUTH_KEY: a->sec.key_file = optarg; break;
		case O_INSECURE: a->insecure = true; break;
		case O_TLS_CERT: a->sec.tls_cert = optarg; break;
		case O_TLS_KEY: a->sec.tls_key = optarg; break;
		case O_TLS_CA: a->sec.tls_ca = optarg; break;
		case O_STATE: a->state = optarg; a->primary_only_given = true; break;
		case O_FENCE: a->fence = a->primary_only_given = true; break;
		case O_KEEP_DEAD: a->keep_dead_mount = a->primary_only_given = true; break;
		case O_ROOT_FD:
			a->root_fd = parse_int(optarg, "--root-fd", 3, INT_MAX);
			a->primary_only_given = true;
			break;
		case O_ADOPT:
			if (parse_tag(optarg, &a->adopt))
				usage_error("%s", "--adopt must be a non-negative integer");
			a->adopting = a->primary_only_given = true;
			break;
		case O_EXCLUDE:
		case O_ONLY:
		case O_EXCLUDE_PATH: {
			static const enum rfs_exclude_kind kind[] = {
				[O_EXCLUDE] = RFS_EXCLUDE_REGEX, [O_ONLY] = RFS_EXCLUDE_ONLY,
				[O_EXCLUDE_PATH] = RFS_EXCLUDE_PATH,
			};
			char err[400];

			if (rfs_exclude_add(&a->exclude, kind[c], optarg, err, sizeof err))
				usage_error("%s", err);
			break;
		}
		case O_HELP:
			fputs(usage, stdout);
			exit(0);
		default:
			usage_error("unknown option or missing value: %s", argv[optind - 1]);
		}
	}
	if (optind < argc)
		usage_error("unexpected argument: %s", argv[optind]);
	if (a->dir == NULL || a->ctl == NULL)
		usage_error("%s", "--dir and --ctl are required");
	if (a->primary && a->listen)
		usage_error("%s", "--listen is for the secondary");
	if (!a->primary && a->listen == NULL)
		usage_error("%s", "the secondary needs --listen ADDR:PORT");
	if (!a->primary && a->primary_only_given)
		usage_error("%s", "--nbremconn, --sendtimeout, --strict, --compress, --state, --adopt, --fence, "
			    "--keep-dead-mount and --root-fd are for the primary");
	if (a->adopting && !a->state)
		usage_error("%s", "--adopt needs --state");
	bool secured = a->sec.key_file || a->sec.tls_cert || a->sec.tls_key || a->sec.tls_ca;

	if (secured && a->insecure)
		usage_error("%s", "--insecure contradicts --auth-key-file and --tls-*");
	if (!a->primary && !secured && !a->insecure)
		usage_error("%s", "the secondary writes what its peer sends: give it --auth-key-file FILE "
			    "(and --tls-cert, --tls-key, --tls-ca), or --insecure to accept any peer");
	if (secured) {
		char err[512];

		if (!(a->creds = rfs_creds_load(&a->sec, !a->primary, err, sizeof err))) {
			rfs_log("%s", err);
			exit(2);
		}
	}
}

/* Descriptors 0-2 must be taken before anything opens: the watchdog (fs.c) relies on
 * its fds landing above them. */
static void hold_std_fds(void)
{
	int fd;

	while ((fd = open("/dev/null", O_RDWR)) >= 0 && fd <= 2)
		;
	if (fd > 2)
		close(fd);
}

/* Is the mount on top of path a hakit-rfs mount (from /proc/self/mountinfo)? */
static bool hakit_mount_on(const char *path)
{
	FILE *f = fopen("/proc/self/mountinfo", "re");
	char line[4096], mnt[PATH_MAX];
	bool found = false;

	if (f == NULL)
		return false;
	while (fgets(line, sizeof line, f)) {
		char *sep = strstr(line, " - "), *p = line, *o = mnt;
		/* Field 5 is the mount point, with space, tab, newline and backslash escaped as \ooo. */
		for (int i = 0; i < 4 && p; i++)
			p = strchr(p, ' ') ? strchr(p, ' ') + 1 : NULL;
		if (p == NULL || sep == NULL)
			continue;
		while (*p && *p != ' ' && o < mnt + sizeof mnt - 1) {
			if (p[0] == '\\' && p[1] >= '0' && p[1] <= '3' && p[2] && p[3]) {
				*o++ = (char)((p[1] - '0') * 64 + (p[2] - '0') * 8 + (p[3] - '0'));
				p += 4;
			} else {
				*o++ = *p++;
			}
		}
		*o = '\0';
		if (strcmp(mnt, path) == 0)
			/* Later lines are mounted later: the last match is the top one. */
			found = strncmp(sep + 3, "fuse.hakit-rfs ", 15) == 0;
	}
	fclose(f);
	return found;
}

/* D's absolute path without resolving D itself, which may be a dead mount. */
static int canonical_dir(const char *dir, char *out)
{
	char copy[PATH_MAX], parent[PATH_MAX];
	char *slash, *base;

	if (strlen(dir) >= sizeof copy)
		return -ENAMETOOLONG;
	strcpy(copy, dir);
	for (size_t n = strlen(copy); n > 1 && copy[n - 1] == '/'; n--)
		copy[n - 1] = '\0';
	slash = strrchr(copy, '/');
	base = slash ? slash + 1 : copy;
	if (!strcmp(base, ".") || !strcmp(base, "..") || !strcmp(copy, "/"))
		return -EINVAL;
	if (slash == copy)
		strcpy(parent, "/");
	else if (realpath(slash ? (*slash = '\0', copy) : ".", parent) == NULL)
		return -errno;
	if (snprintf(out, PATH_MAX, "%s/%s", strcmp(parent, "/") ? parent : "", base) >= PATH_MAX)
		return -ENAMETOOLONG;
	return 0;
}

/* --root-fd: D's real directory, inherited.  What covers D now must be dead (the run
 * this one replaces): the new mount goes on top of it, through the inherited
 * descriptor, so that D is never bare. */
static int adopt_root_fd(struct server *s)
{
	struct statfs sfs;
	struct stat st, top;
	int fd = s->a.root_fd;

	if (fstat(fd, &st) < 0 || !S_ISDIR(st.st_mode) || fcntl(fd, F_SETFD, FD_CLOEXEC) < 0) {
		rfs_log("--root-fd %d: not an open directory", fd);
		return -1;
	}
	/* statfs, not stat: FUSE answers stat from its attribute cache, dead or alive, but
	 * always asks its server for statfs. */
	if (statfs(s->dir, &sfs) == 0) {
		if (stat(s->dir, &top) == 0 && (top.st_dev != st.st_dev || top.st_ino != st.st_ino)) {
			rfs_log("%s is covered by a live file system (another hakit-rfs?)", s->dir);
			return -1;
		}
	} else if (errno == ENOTCONN) {
		rfs_log("mounting over the dead mount left on %s", s->dir);
	} else {
		rfs_log("%s: %s", s->dir, strerror(errno));
		return -1;
	}
	snprintf(s->mountpoint, sizeof s->mountpoint, "/proc/self/fd/%d", fd);
	return fd;
}

/* D, opened before the mount.  A hakit-rfs mount left dead on D by a crashed run (its
 * watchdog killed with it) is removed; a live FUSE mount at D means D is served already. */
static int open_served_dir(struct server *s)
{
	struct statfs sfs;
	struct stat st, up;
	int r = canonical_dir(s->a.dir, s->dir);
	int fd;

	if (r) {
		rfs_log("%s: %s", s->a.dir, r == -EINVAL ? "not a usable directory path" : strerror(-r));
		return -1;
	}
	if (s->a.root_fd >= 0)
		return adopt_root_fd(s);
	fd = open(s->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0 && errno == ENOTCONN && hakit_mount_on(s->dir) && umount2(s->dir, MNT_DETACH) == 0) {
		rfs_log("removed the dead mount a previous run left on %s", s->dir);
		fd = open(s->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	}
	if (fd < 0) {
		rfs_log("%s: %s", s->dir, errno == ENOENT ? "no such directory" : errno == ENOTDIR ? "not a directory" : strerror(errno));
		return -1;
	}
	if (fstatfs(fd, &sfs) == 0 && sfs.f_type == FUSE_SUPER_MAGIC && fstat(fd, &st) == 0 &&
	    fstatat(fd, "..", &up, 0) == 0 && st.st_dev != up.st_dev) {
		rfs_log("%s is already served by a FUSE file system (another hakit-rfs?)", s->dir);
		close(fd);
		return -1;
	}
	return fd;
}

static int ctl_listen(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct stat st;
	mode_t old;
	int fd, r;

	if (strlen(path) >= sizeof sa.sun_path) {
		rfs_log("control socket path too long: %s", path);
		return -1;
	}
	strcpy(sa.sun_path, path);
	if (lstat(path, &st) == 0 && !S_ISSOCK(st.st_mode)) {
		rfs_log("%s exists and is not a socket", path);
		return -1;
	}
	unlink(path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		rfs_log("control socket: %s", strerror(errno));
		return -1;
	}
	old = umask(0177); /* born 0600: root's only */
	r = bind(fd, (struct sockaddr *)&sa, sizeof sa);
	umask(old);
	if (r < 0 || listen(fd, MAX_CLIENTS) < 0) {
		rfs_log("control socket %s: %s", path, strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

/* "ADDR:PORT" or "[ADDR]:PORT" -> a listening TCP socket. */
static int tcp_listen(const char *spec)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
				  .ai_flags = AI_PASSIVE | AI_NUMERICSERV | AI_NUMERICHOST };
	struct addrinfo *res;
	char host[256];
	const char *colon = strrchr(spec, ':');
	size_t len;
	int fd = -1, r, one = 1;

	if (colon == NULL || colon == spec || !colon[1] || (size_t)(colon - spec) >= sizeof host) {
		rfs_log("--listen %s: expected ADDR:PORT", spec);
		return -1;
	}
	len = (size_t)(colon - spec);
	if (spec[0] == '[' && spec[len - 1] == ']') {
		memcpy(host, spec + 1, len - 2);
		host[len - 2] = '\0';
	} else {
		memcpy(host, spec, len);
		host[len] = '\0';
	}
	r = getaddrinfo(host, colon + 1, &hints, &res);
	if (r) {
		rfs_log("--listen %s: %s", spec, gai_strerror(r));
		return -1;
	}
	fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
	    bind(fd, res->ai_addr, res->ai_addrlen) < 0 || listen(fd, 16) < 0) {
		rfs_log("cannot listen on %s: %s", spec, strerror(errno));
		if (fd >= 0)
			close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	return fd;
}

/* Never blocks: a full pipe drops the line. */
static void send_event(struct server *s, const char *what)
{
	char line[512];
	int n = snprintf(line, sizeof line, "event %s\n", what);

	if (n >= (int)sizeof line) {
		n = (int)sizeof line - 1;
		line[n - 1] = '\n';
	}
	if (write(s->event_wr, line, (size_t)n) < 0)
		return;
}

/* From the stream's threads: logged as well. */
static void on_event(void *arg, const char *what)
{
	rfs_log("%s", what);
	send_event(arg, what);
}

/* From the receiver's threads: a failure to apply, logged there already. */
static void on_rx_failed(void *arg, const char *what)
{
	char line[512];

	snprintf(line, sizeof line, "receiver %s", what);
	send_event(arg, line);
}

/* From the full sync's thread: progress, not worth a log line. */
static void on_progress(void *arg, const char *line)
{
	send_event(arg, line);
}

static void on_sync_done(void *arg)
{
	struct server *s = arg;

	if (eventfd_write(s->sync_done_fd, 1) < 0)
		rfs_log("eventfd: %s", strerror(errno));
}

struct client {
	int fd;
	uint64_t id;
	size_t len;
	char buf[LINE_MAX_LEN];
};

struct control {
	struct server *s;
	struct client clients[MAX_CLIENTS];
	int nclients;
	uint64_t next_id;
	uint64_t sync_waiter;   /* the client whose fullsync is running; 0: none */
	char events[4096];
	size_t events_len;
	bool done;
};

/* A client that does not take its lines is dropped rather than let it stall the others. */
static void client_send(struct control *c, int i, const char *line)
{
	size_t len = strlen(line);

	if (c->clients[i].fd >= 0 && send(c->clients[i].fd, line, len, MSG_NOSIGNAL | MSG_DONTWAIT) != (ssize_t)len) {
		close(c->clients[i].fd);
		c->clients[i].fd = -1;
	}
}

static void stats_line(struct server *s, char *out, size_t size)
{
	struct rfs_fs_counters n;
	int k;

	rfs_fs_counters(s->fs, &n);
	k = snprintf(out, size, "ok role=%s", s->a.primary ? "primary" : "secondary");
	if (s->a.primary) {
		struct rfs_repl_stats r;

		rfs_repl_stats(s->repl, &r);
		k += snprintf(out + k, size - (size_t)k,
			      " attached=%d ops_sent=%llu bytes_sent=%llu bytes_on_wire=%llu acks=%llu queued_bytes=%llu"
			      " apply_failures=%llu fencing=%d",
			      r.attached, (unsigned long long)r.ops_sent, (unsigned long long)r.bytes_sent,
			      (unsigned long long)r.bytes_on_wire, (unsigned long long)r.acks,
			      (unsigned long long)r.queued_bytes, (unsigned long long)r.failures, r.fencing);
	} else {
		int64_t last = __atomic_load_n(&s->recv_stats.last_ns, __ATOMIC_RELAXED);

		/* rx_idle_ms: since a primary was last heard (-1: never), for the module's grace. */
		k += snprintf(out + k, size - (size_t)k, " rx_ops=%llu rx_bytes=%llu rx_failures=%llu rx_idle_ms=%lld",
			      (unsigned long long)__atomic_load_n(&s->recv_stats.ops, __ATOMIC_RELAXED),
			      (unsigned long long)__atomic_load_n(&s->recv_stats.bytes, __ATOMIC_RELAXED),
			      (unsigned long long)__atomic_load_n(&s->recv_stats.failures, __ATOMIC_RELAXED),
			      last ? (long long)((rfs_now_ns() - last) / RFS_NS_PER_MS) : -1LL);
	}
	snprintf(out + k, size - (size_t)k,
		 " writes=%llu write_bytes=%llu namespace_ops=%llu syncs=%llu closes=%llu getxattrs=%llu"
		 " diverged=%llu passthrough_opens=%llu",
		 (unsigned long long)n.writes, (unsigned long long)n.write_bytes,
		 (unsigned long long)n.namespace_ops, (unsigned long long)n.syncs, (unsigned long long)n.closes,
		 (unsigned long long)n.getxattrs, (unsigned long long)n.diverged,
		 (unsigned long long)n.passthrough_opens);
	k = (int)strlen(out);
	if (s->dirty)
		rfs_dirty_keys(s->dirty, out + k, size - (size_t)k - 1);
	k = (int)strlen(out);
	if (s->sync)
		rfs_sync_keys(s->sync, out + k, size - (size_t)k - 1);
	strcat(out, "\n");
}

/* rfsdiff with no secondary attached: what the journal holds (0: replied in out);
 * -1: attached, a comparison answers. */
static int journal_diff(struct server *s, char *out, size_t size)
{
	struct rfs_repl_stats st;
	struct rfs_dirty_snapshot snap;
	uint64_t tag;

	rfs_repl_stats(s->repl, &st);
	if (st.attached)
		return -1;
	if (!s->dirty || rfs_dirty_state(s->dirty, &tag) != RFS_DIRTY_RECORDING)
		snprintf(out, size, "ok mode=none paths=0 bytes=0 (no journal: the next sync is a full one)\n");
	else if (rfs_dirty_snapshot(s->dirty, &snap))
		snprintf(out, size, "error rfsdiff: out of memory\n");
	else {
		snprintf(out, size, "ok mode=journal paths=%zu bytes=%" PRIu64 "\n", snap.n,
			 snap.data_bytes + snap.suspect_bytes);
		rfs_dirty_snapshot_free(&snap);
	}
	return 0;
}

static void stop_all(struct control *c)
{
	rfs_fs_stop(c->s->fs);
	c->done = true;
}

/* The control commands, one handler each.  A handler writes its reply line into out,
 * or returns 1 when the reply comes later (a sync, answered by sync_done). */
typedef int command_fn(struct control *c, int client, const char *verb, char **args, int nargs,
		       char *out, size_t size);

static int cmd_stats(struct control *c, int client, const char *verb, char **args, int nargs,
		     char *out, size_t size)
{
	(void)client, (void)verb, (void)args, (void)nargs;
	stats_line(c->s, out, size);
	return 0;
}

static int cmd_served(struct control *c, int client, const char *verb, char **args, int nargs,
		      char *out, size_t size)
{
	(void)c, (void)client, (void)verb, (void)args, (void)nargs;
	memcpy(out, "ok", 3);
	rfs_fuse_io_served(out + 2, size - 3);
	strcat(out, "\n");
	return 0;
}

static int cmd_stop(struct control *c, int client, const char *verb, char **args, int nargs,
		    char *out, size_t size)
{
	(void)client, (void)verb, (void)args, (void)nargs;
	stop_all(c);
	snprintf(out, size, "ok\n");
	return 0;
}

static int cmd_attach(struct control *c, int client, const char *verb, char **args, int nargs,
		      char *out, size_t size)
{
	char host[256], *end;
	long port = strtol(args[1], &end, 10);
	int r;

	(void)client, (void)verb, (void)nargs;
	snprintf(host, sizeof host, "%s", args[0]);
	if (*end || port < 1 || port > 65535)
		snprintf(out, size, "error attach: bad port %s\n", args[1]);
	else if ((r = rfs_repl_attach(c->s->repl, host, (int)port)) < 0)
		snprintf(out, size, "error attach %s %ld: %s\n", host, port, strerror(-r));
	else
		snprintf(out, size, "ok\n");
	return 0;
}

static int cmd_detach(struct control *c, int client, const char *verb, char **args, int nargs,
		      char *out, size_t size)
{
	(void)client, (void)verb, (void)args, (void)nargs;
	rfs_repl_detach(c->s->repl);
	snprintf(out, size, "ok\n");
	return 0;
}

static int cmd_fenced(struct control *c, int client, const char *verb, char **args, int nargs,
		      char *out, size_t size)
{
	(void)client, (void)verb, (void)args, (void)nargs;
	rfs_repl_fenced(c->s->repl);
	snprintf(out, size, "ok\n");
	return 0;
}

/* fullsync [tag=N], resync [tag=N], rfsdiff: the journal answers rfsdiff while no
 * secondary is attached, a run of the sync everything else. */
static int cmd_sync(struct control *c, int client, const char *verb, char **args, int nargs,
		    char *out, size_t size)
{
	enum rfs_sync_mode mode = !strcmp(verb, "fullsync") ? RFS_SYNC_FULL :
				  !strcmp(verb, "resync") ? RFS_SYNC_INCREMENTAL : RFS_SYNC_ESTIMATE;
	const char *a1 = nargs ? args[0] : NULL;
	uint64_t tag;
	bool tagged = a1 && !strncmp(a1, "tag=", 4) && !parse_tag(a1 + 4, &tag);
	int r;

	if (mode == RFS_SYNC_ESTIMATE && !a1 && !journal_diff(c->s, out, size))
		return 0;
	r = (a1 && !tagged) || (mode == RFS_SYNC_ESTIMATE && a1) ? -EINVAL :
		rfs_sync_start(c->s->sync, mode, tagged ? &tag : NULL);
	if (r == 0) {
		c->sync_waiter = c->clients[client].id;
		return 1;
	}
	snprintf(out, size, "error %s: %s\n", verb,
		 r == -EBUSY ? "a synchronisation is running already" :
		 r == -ENOTCONN ? "no secondary attached" :
		 r == -ENODATA ? "no journal: a full sync is needed" :
		 r == -EINVAL ? "the argument is tag=N" : strerror(-r));
	return 0;
}

/* reibw [P KBPS]: the cap of the running sync and the next ones; the reply says it. */
static int cmd_reibw(struct control *c, int client, const char *verb, char **args, int nargs,
		     char *out, size_t size)
{
	char *end1 = NULL, *end2 = NULL;
	long percent = nargs == 2 ? strtol(args[0], &end1, 10) : 0, kbps = nargs == 2 ? strtol(args[1], &end2, 10) : 0;
	uint64_t allowed;
	int now;

	(void)client, (void)verb;
	if (nargs == 1 || (nargs && (*end1 || *end2 || percent < 1 || percent > 100 || kbps < 0 || kbps > INT_MAX))) {
		snprintf(out, size, "error reibw: P is 1 to 100 (100: no share), KBPS 0 (no limit) or more\n");
		return 0;
	}
	if (nargs)
		rfs_sync_set_bw(c->s->sync, (int)percent, (uint64_t)kbps * 1024);
	rfs_sync_get_bw(c->s->sync, &now, &allowed);
	snprintf(out, size, "ok percent=%d allowed_kbps=%" PRIu64 "\n", now, allowed / 1024);
	return 0;
}

/* Read as the protocol: a verb, how many words follow it, whether only the primary
 * serves it.  The usages, in this order, make the reply to an unknown command. */
static const struct command {
	const char *verb, *usage;
	int min_args, max_args;
	bool primary_only;
	command_fn *run;
} commands[] = {
	{ "attach", "attach HOST PORT", 2, 2, true, cmd_attach },
	{ "detach", "detach", 0, 0, true, cmd_detach },
	{ "fenced", "fenced", 0, 0, true, cmd_fenced },
	{ "fullsync", "fullsync [tag=N]", 0, 1, true, cmd_sync },
	{ "resync", "resync tag=N", 0, 1, true, cmd_sync },
	{ "rfsdiff", "rfsdiff", 0, 1, true, cmd_sync },
	{ "reibw", "reibw [P KBPS]", 0, 2, true, cmd_reibw },
	{ "served", "served", 0, 0, false, cmd_served },
	{ "stats", "stats", 0, 0, false, cmd_stats },
	{ "stop", "stop", 0, 0, false, cmd_stop },
};

#define COMMAND_WORDS 4 /* beyond the longest command: enough to tell it has too many */

static void run_command(struct control *c, int i, char *line)
{
	char reply[1024], *words[COMMAND_WORDS], *save;
	const struct command *cmd = NULL;
	int n = 0;

	for (char *w = strtok_r(line, " \t", &save); w && n < COMMAND_WORDS; w = strtok_r(NULL, " \t", &save))
		words[n++] = w;
	for (size_t k = 0; n && k < sizeof commands / sizeof *commands && !cmd; k++)
		if (!strcmp(words[0], commands[k].verb))
			cmd = &commands[k];
	if (n == 0) {
		snprintf(reply, sizeof reply, "error empty command\n");
	} else if (cmd && cmd->primary_only && c->s->repl == NULL) {
		snprintf(reply, sizeof reply, "error %s: this is the secondary\n", cmd->verb);
	} else if (cmd && n - 1 >= cmd->min_args && n - 1 <= cmd->max_args) {
		if (cmd->run(c, i, cmd->verb, words + 1, n - 1, reply, sizeof reply))
			return;
	} else {
		int k = snprintf(reply, sizeof reply, "error unknown command '%s' (", words[0]);

		for (size_t u = 0; u < sizeof commands / sizeof *commands && k < (int)sizeof reply; u++)
			k += snprintf(reply + k, sizeof reply - (size_t)k, "%s%s", u ? ", " : "", commands[u].usage);
		if (k < (int)sizeof reply)
			snprintf(reply + k, sizeof reply - (size_t)k, ")\n");
	}
	client_send(c, i, reply);
}

static void client_input(struct control *c, int i)
{
	struct client *cl = &c->clients[i];
	ssize_t n = recv(cl->fd, cl->buf + cl->len, sizeof cl->buf - cl->len, 0);
	char *nl;

	if (n <= 0) {
		close(cl->fd);
		cl->fd = -1;
		return;
	}
	cl->len += (size_t)n;
	while (cl->fd >= 0 && !c->done && (nl = memchr(cl->buf, '\n', cl->len)) != NULL) {
		size_t used = (size_t)(nl - cl->buf) + 1;

		*nl = '\0';
		if (nl > cl->buf && nl[-1] == '\r')
			nl[-1] = '\0';
		run_command(c, i, cl->buf);
		memmove(cl->buf, cl->buf + used, cl->len - used);
		cl->len -= used;
	}
	if (cl->fd >= 0 && cl->len == sizeof cl->buf) {
		client_send(c, i, "error line too long\n");
		if (cl->fd >= 0) {
			close(cl->fd);
			cl->fd = -1;
		}
	}
}

/* A full sync ended: its reply to the client that asked, if still there. */
static void sync_done(struct control *c)
{
	char reply[512];
	eventfd_t n;
	size_t k;

	if (eventfd_read(c->s->sync_done_fd, &n) < 0 || !c->sync_waiter)
		return;
	rfs_sync_result(c->s->sync, reply, sizeof reply - 1);
	k = strlen(reply);
	reply[k] = '\n';
	reply[k + 1] = '\0';
	for (int i = 0; i < c->nclients; i++)
		if (c->clients[i].id == c->sync_waiter)
			client_send(c, i, reply);
	c->sync_waiter = 0;
}

/* Forwards whole "event" lines to every client. */
static void forward_events(struct control *c)
{
	ssize_t n = read(c->s->event_rd, c->events + c->events_len, sizeof c->events - c->events_len - 1);
	char *start = c->events, *nl;

	if (n <= 0)
		return;
	c->events_len += (size_t)n;
	c->events[c->events_len] = '\0';
	while ((nl = strchr(start, '\n')) != NULL) {
		char save = nl[1];

		nl[1] = '\0';
		for (int i = 0; i < c->nclients; i++)
			client_send(c, i, start);
		nl[1] = save;
		start = nl + 1;
	}
	c->events_len -= (size_t)(start - c->events);
	memmove(c->events, start, c->events_len);
	if (c->events_len == sizeof c->events - 1)
		c->events_len = 0; /* a line longer than the buffer: on_event never writes one */
}

static void *control_main(void *arg)
{
	struct control *c = calloc(1, sizeof *c);
	struct server *s = arg;

	if (c == NULL) {
		rfs_log("control: out of memory");
		atomic_store(&s->exit_code, 1);
		rfs_fs_stop(s->fs);
		return NULL;
	}
	c->s = s;
	while (!c->done) {
		struct pollfd p[5 + MAX_CLIENTS];
		int np = 0;

		p[np++] = (struct pollfd){ .fd = s->ctl_fd, .events = POLLIN };
		p[np++] = (struct pollfd){ .fd = s->sig_fd, .events = POLLIN };
		p[np++] = (struct pollfd){ .fd = s->event_rd, .events = POLLIN };
		p[np++] = (struct pollfd){ .fd = s->loop_done_fd, .events = POLLIN };
		p[np++] = (struct pollfd){ .fd = s->sync_done_fd, .events = POLLIN };
		for (int i = 0; i < c->nclients; i++)
			p[np++] = (struct pollfd){ .fd = c->clients[i].fd, .events = POLLIN };
		if (poll(p, (nfds_t)np, -1) < 0) {
			if (errno == EINTR)
				continue;
			rfs_log("control: poll: %s", strerror(errno));
			break;
		}
		if (p[3].revents)
			break;
		if (p[1].revents) {
			struct signalfd_siginfo si;

			if (read(s->sig_fd, &si, sizeof si) == (ssize_t)sizeof si)
				rfs_log("signal %u: stopping", si.ssi_signo);
			stop_all(c);
			break;
		}
		/* Progress before the end, which says the last word. */
		if (p[2].revents)
			forward_events(c);
		if (p[4].revents)
			sync_done(c);
		for (int i = 0; i < c->nclients && !c->done; i++)
			if (p[5 + i].revents)
				client_input(c, i);
		/* Compact the table over the clients that left. */
		int kept = 0;
		for (int i = 0; i < c->nclients; i++)
			if (c->clients[i].fd >= 0)
				c->clients[kept++] = c->clients[i];
		c->nclients = kept;
		if (p[0].revents && !c->done) {
			int fd = accept4(s->ctl_fd, NULL, NULL, SOCK_CLOEXEC);

			if (fd >= 0 && c->nclients == MAX_CLIENTS) {
				if (send(fd, "error too many control clients\n", 31, MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
					rfs_log("control: refused a client: %s", strerror(errno));
				close(fd);
			} else if (fd >= 0) {
				c->clients[c->nclients++] = (struct client){ .fd = fd, .id = ++c->next_id };
			}
		}
	}
	for (int i = 0; i < c->nclients; i++)
		if (c->clients[i].fd >= 0)
			close(c->clients[i].fd);
	free(c);
	return NULL;
}

static void *receiver_main(void *arg)
{
	struct server *s = arg;
	int r = rfs_receiver_serve(s->recv_rootfd, s->recv_listen_fd, &s->recv_stop, s->a.creds,
				       &s->recv_stats);

	if (!s->recv_stop) {
		rfs_log("the receiver stopped: %s", r < 0 ? strerror(-r) : "no reason given");
		atomic_store(&s->exit_code, 1);
		rfs_fs_stop(s->fs);
	}
	return NULL;
}

/* Signals: TERM and INT are read by the control thread (signalfd), so they are blocked
 * in every thread, which inherit main's mask; a closed client must not kill us (PIPE). */
static int signals_to_fd(void)
{
	sigset_t set;

	signal(SIGPIPE, SIG_IGN);
	signal(SIGHUP, SIG_IGN);
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	return signalfd(-1, &set, SFD_CLOEXEC);
}

static int start_stream(struct server *s)
{
	int ev[2];

	if (pipe2(ev, O_CLOEXEC | O_NONBLOCK) < 0) {
		rfs_log("pipe: %s", strerror(errno));
		return -1;
	}
	s->event_rd = ev[0];
	s->event_wr = ev[1];
	if (!s->a.primary) {
		s->recv_stats.failed = on_rx_failed;
		s->recv_stats.arg = s;
		return 0;
	}
	if (s->a.state) {
		int r = rfs_dirty_open(s->a.state, &s->dirty);

		if (r < 0) {
			rfs_log("cannot open the journal in %s: %s", s->a.state, strerror(-r));
			return -1;
		}
		r = s->a.adopting ? rfs_dirty_adopt(s->dirty, s->a.adopt) : 0;
		if (r == -EALREADY)
			rfs_log("--adopt %" PRIu64 ": the journal left by the last run is kept", s->a.adopt);
		else if (r < 0)
			rfs_log("--adopt %" PRIu64 ": %s (the next sync is a full one)", s->a.adopt, strerror(-r));
	}
	struct rfs_repl_config cfg = {
		.dirty = s->dirty,
		.creds = s->a.creds,
		.nbremconn = s->a.nbremconn,
		.send_timeout_ms = s->a.sendtimeout_ms,
		.compress = s->a.compress,
		.max_queued_bytes = MAX_QUEUED_BYTES,
		.flush_delay_ms = FLUSH_DELAY_MS,
		.fence = s->a.fence,
		.event = on_event,
		.event_arg = s,
	};
	s->repl = rfs_repl_new(&cfg);
	if (s->repl == NULL) {
		rfs_log("cannot start the replication stream");
		return -1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	static struct server srv = { .ctl_fd = -1, .sig_fd = -1, .event_rd = -1, .event_wr = -1,
				     .loop_done_fd = -1, .sync_done_fd = -1, .recv_rootfd = -1,
				     .recv_listen_fd = -1 };
	struct server *s = &srv;
	pthread_t ctl_thread;
	int rootfd, r;

	hold_std_fds();
	parse_args(argc, argv, &s->a);
	rootfd = open_served_dir(s);
	if (rootfd < 0)
		return 1;
	/* The receiver's own descriptor of D, also from before the mount. */
	if (!s->a.primary && (s->recv_rootfd = open(s->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) {
		rfs_log("%s: %s", s->dir, strerror(errno));
		return 1;
	}
	/* The stream's listener before the control socket: whoever waits for the control
	 * socket to appear may attach a primary at once. */
	if (!s->a.primary && (s->recv_listen_fd = tcp_listen(s->a.listen)) < 0)
		return 1;
	s->ctl_fd = ctl_listen(s->a.ctl);
	if (s->ctl_fd < 0)
		return 1;
	s->sig_fd = signals_to_fd();
	s->loop_done_fd = eventfd(0, EFD_CLOEXEC);
	s->sync_done_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (s->sig_fd < 0 || s->loop_done_fd < 0 || s->sync_done_fd < 0) {
		rfs_log("signalfd/eventfd: %s", strerror(errno));
		goto out_ctl;
	}
	/* Modes reach the real directory exactly as the kernel passed them (fs.c applies the
	 * caller's umask itself where the kernel leaves it to us). */
	umask(0);
	if (start_stream(s) < 0)
		goto out_ctl;
	struct rfs_fs_config cfg = { .dir = s->dir, .rootfd = rootfd, .repl = s->repl, .strict = s->a.strict,
				     .xattr = s->a.xattr, .exclude = s->a.exclude, .dirty = s->dirty,
				     .passthrough = !s->a.no_passthrough,
				     .mountpoint = *s->mountpoint ? s->mountpoint : NULL,
				     .keep_dead_mount = s->a.keep_dead_mount };
	if (rfs_fs_mount(&cfg, &s->fs) < 0)
		goto out_repl;
	if (s->repl) {
		struct rfs_sync_config sc = { .rootfd = rootfd, .repl = s->repl, .fs = s->fs, .xattr = s->a.xattr,
					      .exclude = s->a.exclude, .dirty = s->dirty, .progress = on_progress, .done = on_sync_done,
					      .nbrei = s->a.nbrei, .bw_percent = s->a.rei_bw_percent,
					      .bw_allowed = (uint64_t)s->a.rei_allowed_kbps * 1024,
					      .arg = s };

		s->sync = rfs_sync_new(&sc);
		if (s->sync == NULL) {
			rfs_log("cannot set up the full sync: out of memory");
			atomic_store(&s->exit_code, 1);
			goto out_fs;
		}
	}
	if (!s->a.primary && (r = pthread_create(&s->recv_thread, NULL, receiver_main, s)) != 0) {
		rfs_log("receiver thread: %s", strerror(r));
		atomic_store(&s->exit_code, 1);
		goto out_fs;
	}
	if ((r = pthread_create(&ctl_thread, NULL, control_main, s)) != 0) {
		rfs_log("control thread: %s", strerror(r));
		atomic_store(&s->exit_code, 1);
		goto out_recv;
	}
	rfs_log("%s %s mounted", s->a.primary ? "primary" : "secondary (read-only)", s->dir);

	r = rfs_fs_run(s->fs);
	if (r < 0) {
		rfs_log("%s was unmounted from outside: stopping", s->dir);
		atomic_store(&s->exit_code, 1);
	}
	if (eventfd_write(s->loop_done_fd, 1) < 0)
		rfs_log("eventfd: %s", strerror(errno));
	pthread_join(ctl_thread, NULL);
out_recv:
	if (!s->a.primary) {
		s->recv_stop = 1;
		/* Wakes a receiver blocked in accept. */
		shutdown(s->recv_listen_fd, SHUT_RDWR);
		pthread_join(s->recv_thread, NULL);
	}
out_fs:
	/* A full sync still running is cancelled: it uses the mount's locks and the stream. */
	rfs_sync_free(s->sync);
	rfs_fs_free(s->fs);
	rfs_log("%s unmounted", s->dir);
	if (s->repl)
		rfs_repl_free(s->repl);
	/* After the stream: its end records what the secondary had not acked. */
	rfs_dirty_free(s->dirty);
	rfs_exclude_free(s->a.exclude);
	rfs_creds_free(s->a.creds);
	unlink(s->a.ctl);
	return atomic_load(&s->exit_code);
out_repl:
	if (s->repl)
		rfs_repl_free(s->repl);
	rfs_dirty_free(s->dirty);
out_ctl:
	unlink(s->a.ctl);
	return 1;
}
