/* log.c - see log.h. */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

_Atomic int log_max_level = LOG_INFO;

static const char *const level_names[] = {"error", "warn", "info", "debug"};

void log_set_level(enum log_level level)
{
    atomic_store_explicit(&log_max_level, (int)level, memory_order_relaxed);
}

/* Writes "YYYY-MM-DDTHH:MM:SS.mmmZ" into out; returns its length. */
static int format_timestamp(char *out, size_t n)
{
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    return snprintf(out, n, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900,
                    tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                    ts.tv_nsec / 1000000L);
}

void log_write(enum log_level level, const char *fmt, ...)
{
    char line[2048];
    int n = format_timestamp(line, sizeof line);
    n += snprintf(line + n, sizeof line - (size_t)n, " %s: ", level_names[level]);

    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    va_end(ap);
    /* a message too long for the line is cut, never dropped */
    if (m < 0)
        m = 0;
    size_t len = (size_t)n + (size_t)m;
    if (len > sizeof line - 2)
        len = sizeof line - 2;
    line[len++] = '\n';

    /* one write per line keeps lines of concurrent threads whole */
    ssize_t w = write(STDERR_FILENO, line, len);
    (void)w;
}
