/* testutil.h - small helpers shared by the Check suites: temporary files and
 * directories that are removed when the test ends, fixture paths, the
 * process's address space, and a float comparison in units in the last
 * place. */
#ifndef TESTS_TESTUTIL_H
#define TESTS_TESTUTIL_H

#include <stddef.h>
#include <stdint.h>

/* Returns a malloc'd path FIXTURE_DIR "/" name; caller frees. */
char *fixture_path(const char *name);

/* Creates a fresh temporary directory (mkdtemp under $TMPDIR or /tmp) and
 * returns its malloc'd path; testutil_rmtree removes it and frees path. */
char *testutil_tmpdir(void);
void testutil_rmtree(char *path);

/* Writes len bytes to dir/name and returns the malloc'd full path. */
char *testutil_write_file(const char *dir, const char *name, const void *data, size_t len);

/* Reads a whole file into a malloc'd buffer (NUL-terminated); *len gets the
 * size without the NUL. NULL on failure. */
char *testutil_read_file(const char *path, size_t *len);

/* The process's address space in bytes (VmSize), for tests that cap it
 * with RLIMIT_AS a little above what they have. Fails the test when
 * /proc/self/status cannot be read. */
long long testutil_vm_bytes(void);

/* Distance between two floats in units in the last place (0 when equal,
 * including +0 vs -0; huge when either is NaN). */
uint32_t ulp_diff(float a, float b);

/* Reads a .f32 fixture: raw little-endian float32 values; *n gets the count.
 * Fails the current test when the file is missing. Caller frees. */
float *fixture_f32(const char *name, size_t *n);
/* Reads a .i64 fixture of raw little-endian int64 values. Caller frees. */
int64_t *fixture_i64(const char *name, size_t *n);

#endif
