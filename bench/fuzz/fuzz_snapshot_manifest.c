/* fuzz_snapshot_manifest.c - libFuzzer target: the input as the manifest.json
 * of a snapshot directory that otherwise holds valid files for a 4 x 3 table
 * (weight.npy, vocab.txt, exp_avg.npy, exp_avg_sq.npy, sum.npy), loaded with
 * snapshot_load. Exercises the manifest's own JSON reader and every field
 * check; a manifest that passes yields a table, which is freed. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "loader.h"
#include "snapshot.h"
#include "table.h"

static char g_dir[64];
static char g_manifest[128];

static void write_file(const char *name, const void *data, size_t len)
{
    char path[128];
    snprintf(path, sizeof(path), "%s/%s", g_dir, name);
    FILE *f = fopen(path, "wb");
    if (f == NULL || fwrite(data, 1, len, f) != len || fclose(f) != 0)
        abort();
}

static void write_npy(const char *name)
{
    char path[128];
    snprintf(path, sizeof(path), "%s/%s", g_dir, name);
    FILE *f = fopen(path, "wb");
    float w[12];
    for (int i = 0; i < 12; i++)
        w[i] = (float)i * 0.25f;
    if (f == NULL || npy_write_fd(fileno(f), w, 4, 3, 3) != 0 || fclose(f) != 0)
        abort();
}

/* The fixed files, once per process; the directory is removed at exit. */
static void cleanup(void)
{
    static const char *const names[] = {"manifest.json", "weight.npy", "vocab.txt",
                                        "exp_avg.npy", "exp_avg_sq.npy", "sum.npy"};
    char path[128];
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        snprintf(path, sizeof(path), "%s/%s", g_dir, names[i]);
        unlink(path);
    }
    rmdir(g_dir);
}

static void setup(void)
{
    if (g_dir[0] != '\0')
        return;
    snprintf(g_dir, sizeof(g_dir), "/tmp/fuzz-snapdir-XXXXXX");
    if (mkdtemp(g_dir) == NULL)
        abort();
    atexit(cleanup);
    snprintf(g_manifest, sizeof(g_manifest), "%s/manifest.json", g_dir);
    write_npy("weight.npy");
    write_npy("exp_avg.npy");
    write_npy("exp_avg_sq.npy");
    write_npy("sum.npy");
    write_file("vocab.txt", "a\nb\nc\nd\n", 8);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    setup();
    FILE *f = fopen(g_manifest, "wb");
    if (f == NULL || fwrite(data, 1, size, f) != size || fclose(f) != 0)
        abort();
    struct table *t = NULL;
    char err[512];
    if (snapshot_load(g_dir, NULL, &t, err, sizeof(err)) == 0)
        table_free(t);
    return 0;
}
