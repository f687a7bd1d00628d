/* The rules of exclude.h as a table: path, whether it is a directory, and what the
 * rules say, with parents tested (rfs_is_excluded) and for an entry of a walk
 * (rfs_is_excluded_entry); then the rules refused at parse time. */
#include <errno.h>
#include <string.h>

#include "exclude.h"
#include "rfs_test.h"

struct row {
	const char *path;
	bool dir;
	bool excluded;  /* rfs_is_excluded */
	bool entry;     /* rfs_is_excluded_entry: its parents taken as replicated */
};

static struct rfs_exclude *rules(const char *const *excl, const char *const *only, const char *const *paths)
{
	struct rfs_exclude *x = NULL;
	char err[256];

	for (; excl && *excl; excl++)
		CHECK_RC(rfs_exclude_add(&x, RFS_EXCLUDE_REGEX, *excl, err, sizeof err), 0);
	for (; only && *only; only++)
		CHECK_RC(rfs_exclude_add(&x, RFS_EXCLUDE_ONLY, *only, err, sizeof err), 0);
	for (; paths && *paths; paths++)
		CHECK_RC(rfs_exclude_add(&x, RFS_EXCLUDE_PATH, *paths, err, sizeof err), 0);
	return x;
}

static void table(const struct rfs_exclude *x, const struct row *rows, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		const struct row *r = &rows[i];

		CHECK(rfs_is_excluded(x, r->path, r->dir) == r->excluded, "rfs_is_excluded(\"%s\", dir=%d)", r->path, r->dir);
		CHECK(rfs_is_excluded_entry(x, r->path, r->dir) == r->entry, "rfs_is_excluded_entry(\"%s\", dir=%d)",
		      r->path, r->dir);
	}
}

static void refused(enum rfs_exclude_kind kind, const char *rule, const char *want)
{
	struct rfs_exclude *x = NULL;
	char err[256] = "";

	CHECK(rfs_exclude_add(&x, kind, rule, err, sizeof err) == -1, "'%s' accepted", rule);
	CHECK(strstr(err, want) && !strchr(err, '\n'), "'%s': %s", rule, err);
	rfs_exclude_free(x);
}

int main(void)
{
	static const char *const excl[] = { ".*\\.tmp$", "^cache$", "(^|/)\\.git$", NULL };
	static const char *const paths[] = { "data/spool/", "one", NULL };
	static const struct row excludes[] = {
		{ "", true, false, false },                        /* the root is always replicated */
		{ "a.tmp", false, true, true },
		{ "conf/config.tmp.swap", false, false, false },    /* $: the end of the path */
		{ "d.tmp", true, true, true },
		{ "d.tmp/x", false, true, false },                  /* by its parent */
		{ "d.tmp/e/x", false, true, false },
		{ "d.tmpx/y", false, false, false },
		{ "cache", true, true, true },
		{ "cache/z", false, true, false },                  /* $ at the end of the parent's path */
		{ "x/cache", true, false, false },                  /* ^: the start of the path */
		{ "src/.git/HEAD", false, true, false },
		{ "src/.github", true, false, false },
		{ "data/spool", true, true, true },
		{ "data/spool/q/1", false, true, false },
		{ "data/spooler", false, false, false },            /* exact paths are whole components */
		{ "data", true, false, false },
		{ "one", false, true, true },
		{ "one/two", false, true, false },
		{ "only", false, false, false },
		{ "Cache", true, false, false },                    /* case sensitive */
	};
	static const char *const only[] = { ".*\\.db$", "^keep/", NULL };
	static const char *const only_excl[] = { "^tmp$", NULL };
	static const struct row onlys[] = {
		{ "a.db", false, false, false },
		{ "a.txt", false, true, true },
		{ "d", true, false, false },                        /* directories are replicated */
		{ "d/b.db", false, false, false },
		{ "d/b.txt", false, true, true },
		{ "keep/any", false, false, false },
		{ "tmp", true, true, true },                        /* the excludes win */
		{ "tmp/x.db", false, true, false },
	};
	struct rfs_exclude *x = rules(excl, NULL, paths);

	CHECK(!rfs_is_excluded(NULL, "a.tmp", false) && !rfs_is_excluded_entry(NULL, "a.tmp", false), "NULL excludes");
	CHECK(rfs_exclude_verdict(NULL, "a") == RFS_REPLICATED, "NULL verdict");
	table(x, excludes, sizeof excludes / sizeof excludes[0]);
	rfs_exclude_free(x);

	x = rules(only_excl, only, NULL);
	table(x, onlys, sizeof onlys / sizeof onlys[0]);
	CHECK(rfs_exclude_verdict(x, "d") == RFS_REPLICATED_IF_DIR, "verdict of d");
	CHECK(rfs_exclude_verdict(x, "tmp") == RFS_EXCLUDED, "verdict of tmp");
	CHECK(rfs_exclude_verdict(x, "d/b.db") == RFS_REPLICATED, "verdict of d/b.db");
	rfs_exclude_free(x);

	refused(RFS_EXCLUDE_REGEX, "(", "--exclude '(': ");
	refused(RFS_EXCLUDE_ONLY, "a{1", "--only 'a{1': ");
	refused(RFS_EXCLUDE_REGEX, "", "--exclude: an empty regular expression");
	refused(RFS_EXCLUDE_PATH, "/abs", "--exclude-path '/abs': expected a path relative");
	refused(RFS_EXCLUDE_PATH, "a/../b", "--exclude-path 'a/../b'");
	refused(RFS_EXCLUDE_PATH, "a//b", "--exclude-path 'a//b'");
	refused(RFS_EXCLUDE_PATH, "./a", "--exclude-path './a'");
	refused(RFS_EXCLUDE_PATH, "", "--exclude-path ''");
	printf("ok\n");
	return 0;
}
