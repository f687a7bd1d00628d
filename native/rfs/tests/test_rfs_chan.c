/* The stream's security (chan.c) end to end: a primary and a receiver in process over
 * localhost TCP, with the module key, with TLS (certificates made here, from two CAs),
 * and with peers that have the wrong key, the wrong CA, no key at all, or speak
 * garbage: those are refused before any frame is read, and nothing is applied. */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "proto.h"
#include "rfs_test.h"

#define OP(...) (&(struct rfs_op){__VA_ARGS__})

static char A[PATH_MAX], B[PATH_MAX], R[PATH_MAX], K[PATH_MAX];
static int afd;

/* ---- credentials made for the test ---- */

static void add_ext(X509 *x, X509V3_CTX *v3, int nid, const char *value)
{
	X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, v3, nid, value);

	CHECK(e && X509_add_ext(x, e, -1), "extension %d", nid);
	X509_EXTENSION_free(e);
}

/* K/name.crt and K/name.key: a CA (issuer NULL) or a node certificate it signs. */
static void make_cert(const char *name, const char *issuer)
{
	static long serial = 1;
	char path[PATH_MAX + 64];
	EVP_PKEY *key = EVP_EC_gen("P-256"), *ikey = NULL;
	X509 *x = X509_new(), *ix = NULL;
	X509V3_CTX v3;
	FILE *f;

	CHECK(key && x, "key or certificate");
	if (issuer) {
		snprintf(path, sizeof path, "%s/%s.crt", K, issuer);
		CHECK((f = fopen(path, "r")) && (ix = PEM_read_X509(f, NULL, NULL, NULL)), "%s", path);
		fclose(f);
		snprintf(path, sizeof path, "%s/%s.key", K, issuer);
		CHECK((f = fopen(path, "r")) && (ikey = PEM_read_PrivateKey(f, NULL, NULL, NULL)), "%s", path);
		fclose(f);
	}
	X509_set_version(x, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(x), serial++);
	X509_gmtime_adj(X509_getm_notBefore(x), -3600);
	X509_gmtime_adj(X509_getm_notAfter(x), 86400);
	X509_set_pubkey(x, key);
	X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC, (const unsigned char *)name, -1,
				   -1, 0);
	X509_set_issuer_name(x, X509_get_subject_name(ix ? ix : x));
	X509V3_set_ctx(&v3, ix ? ix : x, x, NULL, NULL, 0);
	add_ext(x, &v3, NID_basic_constraints, issuer ? "critical,CA:FALSE" : "critical,CA:TRUE");
	add_ext(x, &v3, NID_key_usage, issuer ? "critical,digitalSignature" : "critical,keyCertSign,cRLSign");
	add_ext(x, &v3, NID_subject_key_identifier, "hash");
	if (issuer)
		add_ext(x, &v3, NID_ext_key_usage, "serverAuth,clientAuth");
	CHECK(X509_sign(x, ikey ? ikey : key, EVP_sha256()), "sign");
	snprintf(path, sizeof path, "%s/%s.crt", K, name);
	CHECK((f = fopen(path, "w")) && PEM_write_X509(f, x), "%s", path);
	fclose(f);
	snprintf(path, sizeof path, "%s/%s.key", K, name);
	CHECK((f = fopen(path, "w")) && PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL), "%s", path);
	fclose(f);
	X509_free(x);
	X509_free(ix);
	EVP_PKEY_free(key);
	EVP_PKEY_free(ikey);
}

static void write_file(const char *name, const char *text)
{
	char path[PATH_MAX + 64];
	FILE *f;

	snprintf(path, sizeof path, "%s/%s", K, name);
	CHECK((f = fopen(path, "w")) && fputs(text, f) >= 0, "%s", path);
	fclose(f);
}

/* key: a file in K or NULL; node: its certificate and key in K, trusting ca, or NULL. */
static struct rfs_creds *creds(const char *key, const char *node, const char *ca, int server)
{
	char kf[PATH_MAX + 64], crt[PATH_MAX + 64], pk[PATH_MAX + 64], caf[PATH_MAX + 64], err[512] = "";
	struct rfs_creds_files f = {0};
	struct rfs_creds *c;

	snprintf(kf, sizeof kf, "%s/%s", K, key ? key : "");
	snprintf(crt, sizeof crt, "%s/%s.crt", K, node ? node : "");
	snprintf(pk, sizeof pk, "%s/%s.key", K, node ? node : "");
	snprintf(caf, sizeof caf, "%s/%s.crt", K, ca ? ca : "");
	if (key)
		f.key_file = kf;
	if (node) {
		f.tls_cert = crt;
		f.tls_key = pk;
		f.tls_ca = caf;
	}
	c = rfs_creds_load(&f, server, err, sizeof err);
	CHECK(c, "rfs_creds_load: %s", err);
	return c;
}

static void load_fails(const struct rfs_creds_files *f, const char *want)
{
	char err[512] = "";
	struct rfs_creds *c = rfs_creds_load(f, 0, err, sizeof err);

	CHECK(!c && strstr(err, want), "loading should fail with '%s', got '%s'", want, err);
}

/* ---- peers ---- */

static struct rfs_repl *primary(const struct rfs_creds *c, int nconn)
{
	struct rfs_repl_config cfg = {.nbremconn = nconn, .send_timeout_ms = 5000, .compress = 0,
				      .flush_delay_ms = 5, .creds = c};
	struct rfs_repl *r = rfs_repl_new(&cfg);

	CHECK(r, "rfs_repl_new");
	return r;
}

static int dir_empty(const char *path)
{
	DIR *d = opendir(path);
	struct dirent *e;
	int n = 0;

	CHECK(d, "opendir %s", path);
	while ((e = readdir(d)))
		n += strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
	closedir(d);
	return !n;
}

/* A raw TCP client to the receiver. */
static int raw_connect(int port)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	struct timeval tv = {.tv_sec = 3};
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	CHECK(fd >= 0 && !connect(fd, (struct sockaddr *)&sa, sizeof sa), "connect: %s", strerror(errno));
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	return fd;
}

/* The receiver closed the connection without answering a frame: reads see the end
 * (or a reset) within the receive timeout, and never an ACK. */
static void closed_without_ack(int fd)
{
	char buf[256];
	ssize_t n;

	while ((n = recv(fd, buf, sizeof buf, 0)) > 0) {
		struct rfs_wire_hdr h;

		if ((size_t)n >= sizeof h) {
			rfs_hdr_get(&h, buf);
			CHECK(h.magic != RFS_MAGIC, "the receiver answered a frame");
		}
	}
	CHECK(n == 0 || errno == ECONNRESET, "the connection is still open: %s", strerror(errno));
	close(fd);
}

/* Everything the receivers log during fn, in K/log (they log from their own threads:
 * wait for the line). */
static int stderr_saved = -1;

static void log_begin(void)
{
	char path[PATH_MAX + 64];
	int fd;

	snprintf(path, sizeof path, "%s/log", K);
	fflush(stderr);
	stderr_saved = dup(2);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	CHECK(fd >= 0 && stderr_saved >= 0 && dup2(fd, 2) == 2, "redirect stderr");
	close(fd);
}

static void log_expect(const char *want)
{
	char path[PATH_MAX + 64], text[4096];
	int64_t t0 = now_ms();

	snprintf(path, sizeof path, "%s/log", K);
	for (;;) {
		FILE *f = fopen(path, "r");
		size_t n = f ? fread(text, 1, sizeof text - 1, f) : 0;

		if (f)
			fclose(f);
		text[n] = '\0';
		if (strstr(text, want))
			return;
		CHECK(now_ms() - t0 < 3000, "the log lacks '%s':\n%s", want, text);
		usleep(10000);
	}
}

static void log_end(void)
{
	fflush(stderr);
	dup2(stderr_saved, 2);
	close(stderr_saved);
}

/* The exchange of chan.h done by hand with key k1, proving the HELLO body `proved`,
 * then sending the HELLO frame of session `sent`: the connection, ready for frames. */
static const unsigned char k1[32] = {0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa,
				     0xbb, 0xcc, 0xdd, 0xee, 0xff, 0x00, 0x11, 0x22, 0x33, 0x44, 0x55,
				     0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff};

static void by_hand_mac(const char *label, const unsigned char *m1, const unsigned char *nonce_s,
			unsigned char out[32])
{
	unsigned char msg[128];
	size_t n = strlen(label) + 1;
	unsigned int len = 32;

	memcpy(msg, label, n);
	memcpy(msg + n, m1 + 8, 32);                     /* nonce_p */
	memcpy(msg + n + 32, nonce_s, 32);
	memcpy(msg + n + 64, m1 + 40, 16);               /* the proved HELLO body */
	CHECK(HMAC(EVP_sha256(), k1, 32, msg, n + 80, out, &len), "HMAC");
}

static int by_hand(int port, uint64_t proved, uint64_t sent)
{
	unsigned char m1[56] = "HKRA\1", m2[64], mine[32], theirs[32], verdict[4];
	char frame[sizeof(struct rfs_wire_hdr) + sizeof(struct rfs_wire_hello)];
	struct rfs_wire_hdr h = {.magic = RFS_MAGIC, .version = RFS_VERSION, .type = RFS_T_HELLO,
				 .body_len = sizeof(struct rfs_wire_hello)};
	int fd = raw_connect(port);

	fill(m1 + 8, 32, 3, 0);
	rfs_hello_put(m1 + 40, &(struct rfs_wire_hello){.session = proved, .nconn = 1});
	CHECK(send(fd, m1, sizeof m1, MSG_NOSIGNAL) == sizeof m1, "send");
	CHECK(recv(fd, m2, sizeof m2, MSG_WAITALL) == sizeof m2, "no challenge");
	by_hand_mac("hakit-rfs/1 secondary", m1, m2, theirs);
	CHECK(!memcmp(theirs, m2 + 32, 32), "the secondary's proof is not the documented one");
	by_hand_mac("hakit-rfs/1 primary", m1, m2, mine);
	CHECK(send(fd, mine, sizeof mine, MSG_NOSIGNAL) == sizeof mine, "send");
	CHECK(recv(fd, verdict, 4, MSG_WAITALL) == 4 && !memcmp(verdict, "HKOK", 4), "proof refused");
	rfs_hdr_put(frame, &h);
	rfs_hello_put(frame + sizeof h, &(struct rfs_wire_hello){.session = sent, .nconn = 1});
	CHECK(send(fd, frame, sizeof frame, MSG_NOSIGNAL) == sizeof frame, "send");
	return fd;
}

/* ---- what gets replicated ---- */

static void workload(struct rfs_repl *r, const char *tag)
{
	static char big[3 << 20];
	char d[64], f[96], g[96], l[96];

	snprintf(d, sizeof d, "%s", tag);
	snprintf(f, sizeof f, "%s/file", tag);
	snprintf(g, sizeof g, "%s/moved", tag);
	snprintf(l, sizeof l, "%s/link", tag);
	fill(big, sizeof big, 7, 0);
	CHECK_RC(both(r, afd, OP(.code = RFS_OP_MKDIR, .path = d, .mode = 0755), RFS_WAIT_APPLIED), 0);
	CHECK_RC(both(r, afd, OP(.code = RFS_OP_CREATE, .path = f, .mode = 0640), RFS_WAIT_APPLIED), 0);
	for (int i = 0; i < 64; i++)
		both(r, afd, OP(.code = RFS_OP_WRITE, .path = f, .off = i * 7, .data = "small w", .data_len = 7),
		     RFS_WAIT_QUEUED);
	both(r, afd, OP(.code = RFS_OP_WRITE, .path = f, .off = 4096, .data = big, .data_len = sizeof big),
	     RFS_WAIT_QUEUED);
	CHECK_RC(both(r, afd, OP(.code = RFS_OP_WRITE, .path = f, .off = 100, .data = big, .data_len = 100 << 10),
		      RFS_WAIT_APPLIED), 0);
	CHECK_RC(both(r, afd, OP(.code = RFS_OP_SYMLINK, .path = l, .path2 = "file"), RFS_WAIT_APPLIED), 0);
	CHECK_RC(both(r, afd, OP(.code = RFS_OP_RENAME, .path = f, .path2 = g), RFS_WAIT_APPLIED), 0);
	CHECK_RC(both(r, afd, OP(.code = RFS_OP_FSYNC, .path = g), RFS_WAIT_DURABLE), 0);
}

/* Senders and ackers of several connections at once: the TLS object of a connection
 * is written by its sender while its acker reads. */
struct writer {
	struct rfs_repl *r;
	const char *tag;
	int index;
};

static void *writer_main(void *arg)
{
	struct writer *w = arg;
	static char data[4][64 << 10];
	char path[32];

	snprintf(path, sizeof path, "%s-par%d", w->tag, w->index);
	fill(data[w->index], sizeof data[w->index], (unsigned)w->index, w->index % 2);
	CHECK_RC(both(w->r, afd, OP(.code = RFS_OP_CREATE, .path = path, .mode = 0600), RFS_WAIT_APPLIED), 0);
	for (int i = 0; i < 200; i++)
		both(w->r, afd, OP(.code = RFS_OP_WRITE, .path = path, .off = (int64_t)i * (40 << 10),
				   .data = data[w->index], .data_len = sizeof data[w->index]),
		     i % 10 ? RFS_WAIT_QUEUED : RFS_WAIT_APPLIED);
	CHECK_RC(both(w->r, afd, OP(.code = RFS_OP_FSYNC, .path = path), RFS_WAIT_DURABLE), 0);
	return NULL;
}

static void parallel(struct rfs_repl *r, const char *tag)
{
	struct writer w[4];
	pthread_t th[4];

	for (int i = 0; i < 4; i++) {
		w[i] = (struct writer){.r = r, .tag = tag, .index = i};
		CHECK(!pthread_create(&th[i], NULL, writer_main, &w[i]), "pthread_create");
	}
	for (int i = 0; i < 4; i++)
		pthread_join(th[i], NULL);
}

/* ---- cases ---- */

static void loading(void)
{
	char kf[PATH_MAX + 64], bad[PATH_MAX + 64], crt[PATH_MAX + 64], other[PATH_MAX + 64], ca[PATH_MAX + 64];

	snprintf(kf, sizeof kf, "%s/missing.key", K);
	snprintf(bad, sizeof bad, "%s/bad.hex", K);
	snprintf(crt, sizeof crt, "%s/nodeA.crt", K);
	snprintf(other, sizeof other, "%s/nodeB.key", K);
	snprintf(ca, sizeof ca, "%s/ca1.crt", K);
	load_fails(&(struct rfs_creds_files){.key_file = kf}, "No such file");
	load_fails(&(struct rfs_creds_files){.key_file = bad}, "not a 32-byte key");
	load_fails(&(struct rfs_creds_files){.tls_cert = crt, .tls_ca = ca}, "go together");
	load_fails(&(struct rfs_creds_files){.tls_cert = crt, .tls_key = other, .tls_ca = ca}, "is not the key of");
	load_fails(&(struct rfs_creds_files){.tls_cert = crt, .tls_key = kf, .tls_ca = ca}, "No such file");
	load_fails(&(struct rfs_creds_files){.tls_cert = crt, .tls_key = other, .tls_ca = bad}, "--tls-");
}

/* With the key on both sides the stream works as without it. */
static void authenticated(void)
{
	struct rfs_creds *sc = creds("k1", NULL, NULL, 1), *pc = creds("k1", NULL, NULL, 0);
	struct rfs_repl *r = primary(pc, 3);
	struct rx rx;

	rx_start_creds(&rx, B, sc);
	CHECK_RC(rfs_repl_attach(r, "127.0.0.1", rx.port), 0);
	workload(r, "auth");
	parallel(r, "auth");
	rfs_repl_free(r);
	rx_stop(&rx);
	tree_same(A, B);
	rfs_creds_free(sc);
	rfs_creds_free(pc);
}

/* Refusals: R stays empty. */
static void refused_by_key(void)
{
	struct rfs_creds *sc = creds("k1", NULL, NULL, 1), *wrong = creds("k2", NULL, NULL, 0);
	struct rfs_repl *r = primary(wrong, 2), *plain = primary(NULL, 1);
	struct rfs_repl_stats st;
	struct rx rx;
	int fd;

	rx_start_creds(&rx, R, sc);
	log_begin();
	/* Another key: both sides see it, the primary reports the failed attach. */
	CHECK_RC(rfs_repl_attach(r, "127.0.0.1", rx.port), -EACCES);
	log_expect("receiver: refused the connection from 127.0.0.1:");
	log_expect("wrong module key");
	log_expect("attach 127.0.0.1:");
	log_end();
	rfs_repl_stats(r, &st);
	CHECK(!st.attached, "attached with a wrong key");
	/* No key: a primary of before, or anyone who can reach the port. */
	CHECK_RC(rfs_repl_attach(plain, "127.0.0.1", rx.port), -ECONNRESET);
	/* By hand: a well-formed HELLO and a MKDIR, sent at once. */
	{
		char frames[2 * sizeof(struct rfs_wire_hdr) + sizeof(struct rfs_wire_hello) + sizeof(struct rfs_wire_op) + 8];
		struct rfs_wire_hdr h = {.magic = RFS_MAGIC, .version = RFS_VERSION, .type = RFS_T_HELLO,
					 .body_len = sizeof(struct rfs_wire_hello)};
		struct rfs_wire_hello hl = {.session = 42, .nconn = 1};
		size_t at = 0;

		rfs_hdr_put(frames, &h);
		rfs_hello_put(frames + (at += sizeof h), &hl);
		at += sizeof hl;
		h = (struct rfs_wire_hdr){.magic = RFS_MAGIC, .version = RFS_VERSION, .type = RFS_OP_MKDIR, .seq = 1,
					  .body_len = sizeof(struct rfs_wire_op) + 6, .path_len = 6};
		rfs_hdr_put(frames + at, &h);
		at += sizeof h;
		rfs_wop_put(frames + at, OP(.code = RFS_OP_MKDIR, .mode = 0777), 0);
		at += sizeof(struct rfs_wire_op);
		memcpy(frames + at, "pwned", 6);
		at += 6;
		fd = raw_connect(rx.port);
		CHECK(send(fd, frames, at, MSG_NOSIGNAL) == (ssize_t)at, "send");
		closed_without_ack(fd);
	}
	/* Garbage, longer than any message of the exchange. */
	{
		char junk[4096];

		fill(junk, sizeof junk, 99, 0);
		fd = raw_connect(rx.port);
		CHECK(send(fd, junk, sizeof junk, MSG_NOSIGNAL) == (ssize_t)sizeof junk, "send");
		closed_without_ack(fd);
	}
	/* The documented exchange works by hand; a HELLO other than the one proved does not. */
	{
		char ack[sizeof(struct rfs_wire_hdr)];
		struct rfs_wire_hdr h;

		fd = by_hand(rx.port, 7, 7);
		CHECK(recv(fd, ack, sizeof ack, MSG_WAITALL) == sizeof ack, "no ack of the hello");
		rfs_hdr_get(&h, ack);
		CHECK(h.magic == RFS_MAGIC && h.type == RFS_T_ACK && !h.seq && !h.result, "bad ack of the hello");
		close(fd);
		closed_without_ack(by_hand(rx.port, 8, 9));
	}
	CHECK(dir_empty(R), "something was applied by a peer without the key");
	rfs_repl_free(r);
	rfs_repl_free(plain);
	rx_stop(&rx);
	rfs_creds_free(sc);
	rfs_creds_free(wrong);
}

/* TLS with the key; a node of another CA, a plain peer and garbage are refused. */
static void tls(void)
{
	struct rfs_creds *sc = creds("k1", "nodeA", "ca1", 1), *pc = creds("k1", "nodeB", "ca1", 0);
	struct rfs_creds *alien = creds("k1", "alien", "ca1", 0); /* its certificate is from ca2 */
	struct rfs_creds *gullible = creds("k1", "nodeB", "ca2", 0); /* does not trust ca1 */
	struct rfs_creds *plain = creds("k1", NULL, NULL, 0);
	struct rfs_creds *sonly = creds(NULL, "nodeA", "ca1", 1), *ponly = creds(NULL, "nodeB", "ca1", 0);
	struct rfs_repl *r = primary(pc, 4), *bad;
	struct rfs_repl_stats st;
	struct rx rx, ry;
	char hello[512];
	int fd;

	rx_start_creds(&ry, R, sc);
	bad = primary(alien, 1);
	CHECK_RC(rfs_repl_attach(bad, "127.0.0.1", ry.port), -EACCES);
	rfs_repl_free(bad);
	bad = primary(gullible, 1);
	CHECK_RC(rfs_repl_attach(bad, "127.0.0.1", ry.port), -EACCES);
	rfs_repl_free(bad);
	bad = primary(plain, 1);
	CHECK(rfs_repl_attach(bad, "127.0.0.1", ry.port) < 0, "a primary without TLS attached");
	rfs_repl_free(bad);
	fd = raw_connect(ry.port);
	fill(hello, sizeof hello, 5, 0);
	memcpy(hello, "\x16\x03\x01\x01\xf8\x01", 6); /* a ClientHello that goes wrong after its start */
	CHECK(send(fd, hello, sizeof hello, MSG_NOSIGNAL) == (ssize_t)sizeof hello, "send");
	closed_without_ack(fd);
	CHECK(dir_empty(R), "something was applied over a refused TLS connection");
	rx_stop(&ry);

	rx_start_creds(&rx, B, sc);
	CHECK_RC(rfs_repl_attach(r, "127.0.0.1", rx.port), 0);
	workload(r, "tls");
	parallel(r, "tls");
	rfs_repl_stats(r, &st);
	CHECK(st.attached && st.bytes_on_wire > (12u << 20), "stats: attached %d, %llu bytes", st.attached,
	      (unsigned long long)st.bytes_on_wire);
	rfs_repl_free(r);
	rx_stop(&rx);
	tree_same(A, B);

	/* TLS alone, without the key. */
	rx_start_creds(&rx, B, sonly);
	r = primary(ponly, 2);
	CHECK_RC(rfs_repl_attach(r, "127.0.0.1", rx.port), 0);
	workload(r, "tlsonly");
	rfs_repl_free(r);
	rx_stop(&rx);
	tree_same(A, B);
	rfs_creds_free(sc);
	rfs_creds_free(pc);
	rfs_creds_free(alien);
	rfs_creds_free(gullible);
	rfs_creds_free(plain);
	rfs_creds_free(sonly);
	rfs_creds_free(ponly);
}

int main(void)
{
	umask(0);
	tmpdir(A, "primary");
	tmpdir(B, "secondary");
	tmpdir(R, "refusing");
	tmpdir(K, "creds");
	afd = open_dir(A);
	write_file("k1", "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n");
	write_file("k2", "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100");
	write_file("bad.hex", "0011zz\n");
	make_cert("ca1", NULL);
	make_cert("ca2", NULL);
	make_cert("nodeA", "ca1");
	make_cert("nodeB", "ca1");
	make_cert("alien", "ca2");
	loading();
	authenticated();
	refused_by_key();
	tls();
	close(afd);
	printf("ok\n");
	return 0;
}
