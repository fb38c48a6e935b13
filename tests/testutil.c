/* testutil.c - see testutil.h. */
#include "testutil.h"

#include <check.h>
#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

char *fixture_path(const char *name)
{
    size_t n = strlen(FIXTURE_DIR) + strlen(name) + 2;
    char *p = malloc(n);
    ck_assert_ptr_nonnull(p);
    snprintf(p, n, "%s/%s", FIXTURE_DIR, name);
    return p;
}

char *testutil_tmpdir(void)
{
    const char *base = getenv("TMPDIR");
    if (base == NULL || *base == '\0')
        base = "/tmp";
    size_t n = strlen(base) + 32;
    char *p = malloc(n);
    ck_assert_ptr_nonnull(p);
    snprintf(p, n, "%s/es-test-XXXXXX", base);
    ck_assert_ptr_nonnull(mkdtemp(p));
    return p;
}

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

void testutil_rmtree(char *path)
{
    if (path == NULL)
        return;
    nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    free(path);
}

char *testutil_write_file(const char *dir, const char *name, const void *data, size_t len)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    ck_assert_ptr_nonnull(p);
    snprintf(p, n, "%s/%s", dir, name);
    FILE *f = fopen(p, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(data, 1, len, f), len);
    ck_assert_int_eq(fclose(f), 0);
    return p;
}

char *testutil_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    if (fseek(f, 0, SEEK_END) != 0) {
        fclose(f);
        return NULL;
    }
    long sz = ftell(f);
    rewind(f);
    char *buf = malloc((size_t)sz + 1);
    if (buf == NULL || fread(buf, 1, (size_t)sz, f) != (size_t)sz) {
        free(buf);
        fclose(f);
        return NULL;
    }
    fclose(f);
    buf[sz] = '\0';
    if (len != NULL)
        *len = (size_t)sz;
    return buf;
}

long long testutil_vm_bytes(void)
{
    char line[256];
    long long kb = -1;
    FILE *f = fopen("/proc/self/status", "r");
    ck_assert_ptr_nonnull(f);
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "VmSize:", 7) == 0)
            kb = atoll(line + 7);
    fclose(f);
    ck_assert_int_gt(kb, 0);
    return kb * 1024;
}

uint32_t ulp_diff(float a, float b)
{
    if (isnan(a) || isnan(b))
        return UINT32_MAX;
    if (a == b)
        return 0;
    int32_t ia, ib;
    memcpy(&ia, &a, 4);
    memcpy(&ib, &b, 4);
    /* map sign-magnitude to a monotonic integer line */
    if (ia < 0)
        ia = INT32_MIN - ia;
    if (ib < 0)
        ib = INT32_MIN - ib;
    int64_t d = (int64_t)ia - (int64_t)ib;
    return (uint32_t)(d < 0 ? -d : d);
}

static void *fixture_raw(const char *name, size_t elem, size_t *n)
{
    char *p = fixture_path(name);
    size_t len = 0;
    char *buf = testutil_read_file(p, &len);
    ck_assert_msg(buf != NULL, "fixture %s missing", p);
    ck_assert_msg(len % elem == 0, "fixture %s has a partial element", p);
    free(p);
    *n = len / elem;
    return buf;
}

float *fixture_f32(const char *name, size_t *n)
{
    return fixture_raw(name, sizeof(float), n);
}

int64_t *fixture_i64(const char *name, size_t *n)
{
    return fixture_raw(name, sizeof(int64_t), n);
}
