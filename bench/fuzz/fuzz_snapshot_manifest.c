/* fuzz_snapshot_manifest.c - libFuzzer target for manifest.json.
 *
 * First the reader alone: manifest_parse on the input; whatever it accepts,
 * manifest_dump must write (or refuse with CORE_EINVAL, for a name that is
 * no table name) and manifest_parse must read back to the same manifest,
 * else the target aborts. Then the input as the manifest.json of a snapshot
 * directory that otherwise holds valid files for a 4 x 3 table (weight.npy,
 * vocab.txt, exp_avg.npy, exp_avg_sq.npy, sum.npy), loaded with
 * snapshot_load: the field checks against the files and the table's; a
 * manifest that passes yields a table, which is freed. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "error.h"
#include "loader.h"
#include "manifest.h"
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

static bool same_double(double a, double b)
{
    return memcmp(&a, &b, sizeof(a)) == 0;
}

static bool same_settings(const struct table_settings *a, const struct table_settings *b)
{
    return a->has_padding == b->has_padding && a->padding_idx == b->padding_idx &&
           a->has_max_norm == b->has_max_norm && same_double(a->max_norm, b->max_norm) &&
           same_double(a->norm_type, b->norm_type) &&
           a->scale_grad_by_freq == b->scale_grad_by_freq && a->freeze == b->freeze &&
           a->oov_id == b->oov_id;
}

static bool same_optimizer(const struct optim_config *a, const struct optim_config *b)
{
    return a->kind == b->kind && same_double(a->lr, b->lr) && same_double(a->beta1, b->beta1) &&
           same_double(a->beta2, b->beta2) && same_double(a->eps, b->eps) &&
           same_double(a->lr_decay, b->lr_decay) &&
           same_double(a->initial_accumulator_value, b->initial_accumulator_value);
}

/* Everything but format_version, which the writer always sets to its own. */
static bool same_manifest(const struct manifest *a, const struct manifest *b)
{
    return strcmp(a->name, b->name) == 0 && a->rows == b->rows && a->dim == b->dim &&
           same_settings(&a->settings, &b->settings) && a->configured == b->configured &&
           (!a->configured || same_optimizer(&a->optimizer, &b->optimizer)) &&
           a->step == b->step && a->version == b->version && a->log_seq == b->log_seq &&
           memcmp(a->files, b->files, sizeof(a->files)) == 0;
}

static void round_trip(const uint8_t *data, size_t size)
{
    struct manifest m, back;
    char err[512];
    if (manifest_parse((const char *)data, size, "input", &m, err, sizeof(err)) != CORE_OK)
        return;
    char *text;
    size_t len;
    int rc = manifest_dump(&m, &text, &len);
    if (rc == CORE_EINVAL)
        return;
    if (rc != CORE_OK || manifest_parse(text, len, "dump", &back, err, sizeof(err)) != CORE_OK ||
        back.format_version != MANIFEST_FORMAT_VERSION || !same_manifest(&m, &back))
        abort();
    free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    setup();
    round_trip(data, size);
    FILE *f = fopen(g_manifest, "wb");
    if (f == NULL || fwrite(data, 1, size, f) != size || fclose(f) != 0)
        abort();
    struct table *t = NULL;
    char err[512];
    if (snapshot_load(g_dir, NULL, &t, err, sizeof(err)) == 0)
        table_free(t);
    return 0;
}
