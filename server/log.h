/* log.h - the server's one logging facility: levelled lines on stderr.
 *
 * A line is "2024-05-01T12:00:00.123Z info: message\n", written with one
 * write(2) so lines from different threads never interleave. The level test
 * happens in the macros, before any argument is formatted, so a debug line
 * costs one load when debug is off. Any thread may log. */
#ifndef SERVER_LOG_H
#define SERVER_LOG_H

#include <stdatomic.h>
#include <stdbool.h>

enum log_level { LOG_ERROR, LOG_WARN, LOG_INFO, LOG_DEBUG };

/* The most verbose level that is printed; set once at startup, read by all. */
extern _Atomic int log_max_level;

/* Sets the most verbose level printed (LOG_INFO by default). */
void log_set_level(enum log_level level);

/* True when lines at level are printed. */
static inline bool log_enabled(enum log_level level)
{
    return (int)level <= atomic_load_explicit(&log_max_level, memory_order_relaxed);
}

/* Formats and writes one line at level, unconditionally; use the macros. */
void log_write(enum log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#define LOG_AT(level, ...)                  \
    do {                                    \
        if (log_enabled(level))             \
            log_write((level), __VA_ARGS__); \
    } while (0)

#define log_error(...) LOG_AT(LOG_ERROR, __VA_ARGS__)
#define log_warn(...) LOG_AT(LOG_WARN, __VA_ARGS__)
#define log_info(...) LOG_AT(LOG_INFO, __VA_ARGS__)
#define log_debug(...) LOG_AT(LOG_DEBUG, __VA_ARGS__)

#endif
