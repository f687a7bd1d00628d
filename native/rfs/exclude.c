/* Entries left out of replication: see exclude.h.
 *
 * A path's parents are tested without copying it: regexec's REG_STARTEND (glibc, the
 * BSDs) bounds the string to the prefix, so `$` matches at the end of "a/b" within
 * "a/b/c" and nothing is allocated on the write path.
 */
#include <errno.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "exclude.h"

struct rules {
	regex_t *re;
	size_t n;
};

struct rfs_exclude {
	struct rules excl, only;
	char **paths;       /* exact paths, no trailing slash */
	size_t npaths;
};

static const char *const option[] = {
	[RFS_EXCLUDE_REGEX] = "--exclude",
	[RFS_EXCLUDE_ONLY] = "--only",
	[RFS_EXCLUDE_PATH] = "--exclude-path",
};

/* A relative path without empty, "." or ".." parts: what the stream's paths look like. */
static bool stream_like(const char *p)
{
	if (*p == '\0' || *p == '/')
		return false;
	for (const char *c = p; *c; ) {
		size_t n = strcspn(c, "/");

		if (n == 0 || (n == 1 && c[0] == '.') || (n == 2 && c[0] == '.' && c[1] == '.'))
			return false;
		c += n;
		if (*c == '/')
			c++;
	}
	return true;
}

static int add_path(struct rfs_exclude *x, const char *rule, char *err, size_t err_size)
{
	size_t len = strlen(rule);
	char **paths, *copy;

	while (len > 1 && rule[len - 1] == '/')
		len--;
	copy = strndup(rule, len);
	if (copy && !stream_like(copy)) {
		snprintf(err, err_size, "--exclude-path '%s': expected a path relative to the replicated directory, "
			 "without . or .. parts", rule);
		free(copy);
		return -1;
	}
	paths = copy ? realloc(x->paths, (x->npaths + 1) * sizeof *paths) : NULL;
	if (!paths) {
		snprintf(err, err_size, "--exclude-path: %s", strerror(ENOMEM));
		free(copy);
		return -1;
	}
	x->paths = paths;
	x->paths[x->npaths++] = copy;
	return 0;
}

static int add_regex(struct rules *r, const char *opt, const char *rule, char *err, size_t err_size)
{
	regex_t *re;
	int rc;

	if (*rule == '\0') {
		snprintf(err, err_size, "%s: an empty regular expression", opt);
		return -1;
	}
	re = realloc(r->re, (r->n + 1) * sizeof *re);
	if (!re) {
		snprintf(err, err_size, "%s: %s", opt, strerror(ENOMEM));
		return -1;
	}
	r->re = re;
	rc = regcomp(&r->re[r->n], rule, REG_EXTENDED | REG_NOSUB);
	if (rc) {
		char why[200];

		regerror(rc, &r->re[r->n], why, sizeof why);
		snprintf(err, err_size, "%s '%s': %s", opt, rule, why);
		return -1;
	}
	r->n++;
	return 0;
}

int rfs_exclude_add(struct rfs_exclude **x, enum rfs_exclude_kind kind, const char *rule, char *err,
		    size_t err_size)
{
	if (!*x && !(*x = calloc(1, sizeof **x))) {
		snprintf(err, err_size, "%s: %s", option[kind], strerror(ENOMEM));
		return -1;
	}
	switch (kind) {
	case RFS_EXCLUDE_REGEX:
		return add_regex(&(*x)->excl, option[kind], rule, err, err_size);
	case RFS_EXCLUDE_ONLY:
		return add_regex(&(*x)->only, option[kind], rule, err, err_size);
	case RFS_EXCLUDE_PATH:
		return add_path(*x, rule, err, err_size);
	}
	return -1;
}

static void rules_free(struct rules *r)
{
	for (size_t i = 0; i < r->n; i++)
		regfree(&r->re[i]);
	free(r->re);
}

void rfs_exclude_free(struct rfs_exclude *x)
{
	if (!x)
		return;
	rules_free(&x->excl);
	rules_free(&x->only);
	for (size_t i = 0; i < x->npaths; i++)
		free(x->paths[i]);
	free(x->paths);
	free(x);
}

/* Does one of the rules match path's first len bytes? */
static bool match(const struct rules *r, const char *path, size_t len)
{
	for (size_t i = 0; i < r->n; i++) {
		regmatch_t m = { .rm_so = 0, .rm_eo = (regoff_t)len };

		if (regexec(&r->re[i], path, 1, &m, REG_STARTEND) == 0)
			return true;
	}
	return false;
}

/* An exact path is path itself or, with parents, one of its parent directories. */
static bool exact(const struct rfs_exclude *x, const char *path, bool parents)
{
	for (size_t i = 0; i < x->npaths; i++) {
		size_t n = strlen(x->paths[i]);

		if (!strncmp(path, x->paths[i], n) && (path[n] == '\0' || (parents && path[n] == '/')))
			return true;
	}
	return false;
}

static enum rfs_verdict verdict(const struct rfs_exclude *x, const char *path, bool parents)
{
	size_t len;

	if (!x || !*path)
		return RFS_REPLICATED;
	if (exact(x, path, parents))
		return RFS_EXCLUDED;
	len = strlen(path);
	if (parents)
		for (const char *s = strchr(path, '/'); s; s = strchr(s + 1, '/'))
			if (match(&x->excl, path, (size_t)(s - path)))
				return RFS_EXCLUDED;
	if (match(&x->excl, path, len))
		return RFS_EXCLUDED;
	if (x->only.n && !match(&x->only, path, len))
		return RFS_REPLICATED_IF_DIR;
	return RFS_REPLICATED;
}

enum rfs_verdict rfs_exclude_verdict(const struct rfs_exclude *x, const char *path)
{
	return verdict(x, path, true);
}

static bool excluded(enum rfs_verdict v, bool is_dir)
{
	return v == RFS_EXCLUDED || (v == RFS_REPLICATED_IF_DIR && !is_dir);
}

bool rfs_is_excluded(const struct rfs_exclude *x, const char *path, bool is_dir)
{
	return excluded(verdict(x, path, true), is_dir);
}

bool rfs_is_excluded_entry(const struct rfs_exclude *x, const char *path, bool is_dir)
{
	return excluded(verdict(x, path, false), is_dir);
}
