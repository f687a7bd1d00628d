/* See log.h. */
#include <stdarg.h>
#include <stdio.h>
#include <unistd.h>

#include "io.h"
#include "log.h"

#define LINE_MAX_LEN 1024
#define LIMIT_EVERY_NS (5000 * RFS_NS_PER_MS)

static void log_line(const char *fmt, va_list ap, unsigned skipped)
{
	char line[LINE_MAX_LEN];
	int n = snprintf(line, sizeof line, "hakit-rfs: ");

	n += vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
	if (n > (int)sizeof line - 2)
		n = (int)sizeof line - 2;
	if (skipped && n < (int)sizeof line - 2)
		n += snprintf(line + n, sizeof line - (size_t)n - 1, " (and %u more like it not logged)", skipped);
	if (n > (int)sizeof line - 2)
		n = (int)sizeof line - 2;
	line[n++] = '\n';
	if (write(STDERR_FILENO, line, (size_t)n) < 0)
		return;
}

void rfs_log(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_line(fmt, ap, 0);
	va_end(ap);
}

void rfs_log_limited(struct rfs_log_limit *l, const char *fmt, ...)
{
	int64_t now = rfs_now_ns();
	unsigned skipped;
	va_list ap;

	pthread_mutex_lock(&l->mu);
	if (l->last_ns && now - l->last_ns < LIMIT_EVERY_NS) {
		l->skipped++;
		pthread_mutex_unlock(&l->mu);
		return;
	}
	l->last_ns = now;
	skipped = l->skipped;
	l->skipped = 0;
	pthread_mutex_unlock(&l->mu);
	va_start(ap, fmt);
	log_line(fmt, ap, skipped);
	va_end(ap);
}
