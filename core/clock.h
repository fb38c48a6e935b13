/* clock.h - the two clocks core/ and server/ read: monotonic time for
 * durations and deadlines, wall time for what is recorded (a log record's
 * time_ms, ttl, JetStream's timestamps). One definition of each, inline. */
#ifndef CORE_CLOCK_H
#define CORE_CLOCK_H

#include <stdint.h>
#include <time.h>

/* Nanoseconds of CLOCK_MONOTONIC: for durations, never goes back. */
static inline uint64_t clock_mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Milliseconds of CLOCK_MONOTONIC, for deadlines and timers. */
static inline uint64_t clock_mono_ms(void)
{
    return clock_mono_ns() / 1000000u;
}

/* Seconds of CLOCK_MONOTONIC, for progress lines and logged durations. */
static inline double clock_mono_s(void)
{
    return (double)clock_mono_ns() * 1e-9;
}

/* Nanoseconds of CLOCK_REALTIME (since the Unix epoch). */
static inline int64_t clock_wall_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Milliseconds of CLOCK_REALTIME (since the Unix epoch). */
static inline uint64_t clock_wall_ms(void)
{
    return (uint64_t)clock_wall_ns() / 1000000u;
}

#endif
