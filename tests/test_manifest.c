/* test_manifest.c - core/manifest.c: what manifest_dump writes,
 * manifest_parse reads back field for field (doubles to the bit); format 1
 * reads with log_seq 0; the writer refuses what it could not write back;
 * the reader refuses bytes it would not have written. The broken-snapshot
 * cases of test_snapshot.c cover the field checks through snapshot_load. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "manifest.h"
#include "testutil.h"

static void sample(struct manifest *m, enum optim_kind kind)
{
    memset(m, 0, sizeof(*m));
    m->format_version = MANIFEST_FORMAT_VERSION;
    strcpy(m->name, "Words_1.v-2");
    m->rows = 2147483647;
    m->dim = 300;
    table_settings_init(&m->settings);
    m->settings.has_padding = true;
    m->settings.padding_idx = 12;
    m->settings.has_max_norm = true;
    m->settings.max_norm = 0.1;
    m->settings.norm_type = INFINITY;
    m->settings.scale_grad_by_freq = true;
    m->settings.oov_id = 7;
    m->configured = true;
    /* doubles that need all 17 digits, or a subnormal's exponent */
    optim_config_defaults(&m->optimizer, kind);
    m->optimizer.lr = 1.0 / 3.0;
    if (kind == OPTIM_SPARSE_ADAM) {
        m->optimizer.beta1 = 0.9;
        m->optimizer.beta2 = nextafter(0.999, 1.0);
        m->optimizer.eps = 1e-300;
    }
    if (kind == OPTIM_ADAGRAD) {
        m->optimizer.lr_decay = 5e-324;
        m->optimizer.initial_accumulator_value = 0.1 + 0.2;
        m->optimizer.eps = 1e-300;
    }
    m->step = INT64_MAX;
    m->version = UINT64_MAX;
    m->log_seq = UINT64_MAX - 1;
    m->files[MANIFEST_WEIGHT] = true;
    m->files[MANIFEST_VOCAB] = true;
    m->files[MANIFEST_EXP_AVG] = kind == OPTIM_SPARSE_ADAM;
    m->files[MANIFEST_EXP_AVG_SQ] = kind == OPTIM_SPARSE_ADAM;
    m->files[MANIFEST_SUM] = kind == OPTIM_ADAGRAD;
}

static void parse_ok(const char *text, size_t len, struct manifest *m)
{
    char err[512] = "";
    int rc = manifest_parse(text, len, "m.json", m, err, sizeof(err));
    ck_assert_msg(rc == CORE_OK, "%s: %s\n%.*s", core_errname(rc), err, (int)len, text);
}

static void assert_same(const struct manifest *a, const struct manifest *b)
{
    ck_assert_int_eq(a->format_version, b->format_version);
    ck_assert_str_eq(a->name, b->name);
    ck_assert_int_eq(a->rows, b->rows);
    ck_assert_int_eq(a->dim, b->dim);
    ck_assert_mem_eq(&a->settings, &b->settings, sizeof(a->settings));
    ck_assert_int_eq(a->configured, b->configured);
    if (a->configured)
        ck_assert_mem_eq(&a->optimizer, &b->optimizer, sizeof(a->optimizer));
    ck_assert_int_eq(a->step, b->step);
    ck_assert_uint_eq(a->version, b->version);
    ck_assert_uint_eq(a->log_seq, b->log_seq);
    ck_assert_mem_eq(a->files, b->files, sizeof(a->files));
}

START_TEST(dump_parse_round_trip)
{
    static const enum optim_kind kinds[] = {OPTIM_SGD, OPTIM_SPARSE_ADAM, OPTIM_ADAGRAD};
    struct manifest m, back;
    sample(&m, kinds[_i]);
    char *text;
    size_t len;
    ck_assert_int_eq(manifest_dump(&m, &text, &len), CORE_OK);
    ck_assert_uint_eq(strlen(text), len);
    /* the reader does not need a terminating NUL */
    char *exact = malloc(len);
    memcpy(exact, text, len);
    parse_ok(exact, len, &back);
    assert_same(&m, &back);
    /* what a person reads stays short where it can */
    ck_assert_ptr_nonnull(strstr(text, "\"max_norm\": 0.1,"));
    ck_assert_ptr_nonnull(strstr(text, "\"norm_type\": \"inf\""));
    free(exact);
    free(text);
}
END_TEST

START_TEST(plain_settings_round_trip)
{
    struct manifest m, back;
    sample(&m, OPTIM_SGD);
    table_settings_init(&m.settings);
    m.configured = false;
    m.files[MANIFEST_VOCAB] = false;
    m.version = 0;
    m.log_seq = 0;
    m.step = 0;
    char *text;
    size_t len;
    ck_assert_int_eq(manifest_dump(&m, &text, &len), CORE_OK);
    parse_ok(text, len, &back);
    assert_same(&m, &back);
    ck_assert_ptr_nonnull(strstr(text, "\"optimizer\": null"));
    ck_assert_ptr_nonnull(strstr(text, "\"vocab\": null"));
    ck_assert_ptr_nonnull(strstr(text, "\"oov\": \"error\""));
    free(text);
}
END_TEST

/* A manifest as format 1 wrote it: no log_seq. */
static const char format1[] =
    "{\n  \"format\": \"embedding-server snapshot\",\n  \"format_version\": 1,\n"
    "  \"name\": \"items\",\n  \"shape\": [4, 3],\n  \"dtype\": \"float32\",\n"
    "  \"version\": 9,\n  \"step\": 8,\n"
    "  \"settings\": {\"padding_idx\": null, \"max_norm\": null, \"norm_type\": 2, "
    "\"scale_grad_by_freq\": false, \"freeze\": false, \"oov\": \"error\"},\n"
    "  \"optimizer\": {\"name\": \"adagrad\", \"lr\": 0.01, \"lr_decay\": 0, "
    "\"initial_accumulator_value\": 0, \"eps\": 1e-10},\n"
    "  \"vocab\": null,\n  \"weight\": \"weight.npy\",\n  \"state\": [\"sum.npy\"]\n}\n";

START_TEST(format_1_reads_with_seq_0)
{
    struct manifest m;
    parse_ok(format1, strlen(format1), &m);
    ck_assert_int_eq(m.format_version, 1);
    ck_assert_uint_eq(m.version, 9);
    ck_assert_int_eq(m.step, 8);
    ck_assert_uint_eq(m.log_seq, 0);
    ck_assert(m.files[MANIFEST_SUM] && !m.files[MANIFEST_EXP_AVG]);
    /* written again, it is the current format */
    char *text;
    size_t len;
    ck_assert_int_eq(manifest_dump(&m, &text, &len), CORE_OK);
    ck_assert_ptr_nonnull(strstr(text, "\"format_version\": 2"));
    ck_assert_ptr_nonnull(strstr(text, "\"log_seq\": 0"));
    free(text);
}
END_TEST

START_TEST(dump_refuses_what_it_cannot_write)
{
    struct manifest m;
    char *text = (char *)0x1;
    size_t len = 9;
    static const char *const names[] = {"", "a\"b", "a\\b", "a b", ".hidden", "x/y"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        sample(&m, OPTIM_SGD);
        strcpy(m.name, names[i]);
        ck_assert_msg(manifest_dump(&m, &text, &len) == CORE_EINVAL, "name '%s'", names[i]);
        ck_assert_ptr_null(text);
    }
    sample(&m, OPTIM_SPARSE_ADAM);
    m.files[MANIFEST_EXP_AVG_SQ] = false;
    ck_assert_int_eq(manifest_dump(&m, &text, &len), CORE_EINVAL);
    sample(&m, OPTIM_SGD);
    m.files[MANIFEST_WEIGHT] = false;
    ck_assert_int_eq(manifest_dump(&m, &text, &len), CORE_EINVAL);
}
END_TEST

static void parse_fails(const char *text, int code, const char *needle)
{
    struct manifest m;
    char err[512] = "";
    int rc = manifest_parse(text, strlen(text), "m.json", &m, err, sizeof(err));
    ck_assert_msg(rc == code, "expected %s, got %s (%s) for %s", core_errname(code),
                  core_errname(rc), err, text);
    ck_assert_msg(strstr(err, needle) != NULL, "'%s' not in: %s", needle, err);
    ck_assert_ptr_nonnull(strstr(err, "m.json"));
}

/* format1 with one edit. */
static char *edited(const char *from, const char *to)
{
    const char *at = strstr(format1, from);
    ck_assert_ptr_nonnull(at);
    size_t n = strlen(format1) - strlen(from) + strlen(to) + 1;
    char *out = malloc(n);
    snprintf(out, n, "%.*s%s%s", (int)(at - format1), format1, to, at + strlen(from));
    return out;
}

START_TEST(parse_is_strict)
{
    parse_fails("", CORE_EFORMAT, "end of file");
    parse_fails("{\"a\": \"\\u0041\"}", CORE_EFORMAT, "escape");
    parse_fails("{\"a\": 1} {}", CORE_EFORMAT, "trailing");
    parse_fails("{\"a\": 1, \"a\": 2}", CORE_EFORMAT, "duplicate");
    parse_fails("{\"format\": \"embedding-server snapshot\", \"format_version\": 1.5}",
                CORE_EFORMAT, "format_version");
    char *t = edited("\"version\": 9", "\"version\": 18446744073709551616");
    parse_fails(t, CORE_EFORMAT, "\"version\"");
    free(t);
    t = edited("\"format_version\": 1", "\"format_version\": 2");
    parse_fails(t, CORE_EFORMAT, "\"log_seq\" is missing");
    free(t);
    t = edited("\"state\": [\"sum.npy\"]", "\"state\": [\"sum.npy\", \"weight.npy\"]");
    parse_fails(t, CORE_EFORMAT, "unknown file");
    free(t);
    t = edited("\"lr\": 0.01", "\"lr\": 1e999");
    parse_fails(t, CORE_EFORMAT, "optimizer.lr");
    free(t);
    struct manifest m;
    char err[256] = "";
    ck_assert_int_eq(manifest_parse("{}\0", 3, "m.json", &m, err, sizeof(err)), CORE_EFORMAT);
    ck_assert_ptr_nonnull(strstr(err, "NUL"));
}
END_TEST

START_TEST(read_names_the_file)
{
    char *dir = testutil_tmpdir();
    char path[4200], err[512] = "";
    struct manifest m;
    snprintf(path, sizeof(path), "%s/none.json", dir);
    ck_assert_int_eq(manifest_read(path, &m, err, sizeof(err)), CORE_ENOTFOUND);
    ck_assert_ptr_nonnull(strstr(err, path));
    free(testutil_write_file(dir, "ok.json", format1, strlen(format1)));
    snprintf(path, sizeof(path), "%s/ok.json", dir);
    ck_assert_int_eq(manifest_read(path, &m, err, sizeof(err)), CORE_OK);
    ck_assert_str_eq(m.name, "items");
    size_t big = MANIFEST_MAX_BYTES + 1;
    char *spaces = malloc(big);
    memset(spaces, ' ', big);
    free(testutil_write_file(dir, "big.json", spaces, big));
    free(spaces);
    snprintf(path, sizeof(path), "%s/big.json", dir);
    ck_assert_int_eq(manifest_read(path, &m, err, sizeof(err)), CORE_ETOOBIG);
    ck_assert_ptr_nonnull(strstr(err, path));
    testutil_rmtree(dir);
}
END_TEST

START_TEST(file_names)
{
    ck_assert_str_eq(manifest_file_name(MANIFEST_WEIGHT), "weight.npy");
    ck_assert_str_eq(manifest_file_name(MANIFEST_VOCAB), "vocab.txt");
    ck_assert_str_eq(manifest_file_name(MANIFEST_EXP_AVG), "exp_avg.npy");
    ck_assert_str_eq(manifest_file_name(MANIFEST_EXP_AVG_SQ), "exp_avg_sq.npy");
    ck_assert_str_eq(manifest_file_name(MANIFEST_SUM), "sum.npy");
    ck_assert(!manifest_file_is_npy(MANIFEST_VOCAB));
    ck_assert(manifest_file_is_npy(MANIFEST_SUM));
}
END_TEST

static Suite *manifest_suite(void)
{
    Suite *s = suite_create("manifest");
    TCase *tc = tcase_create("manifest");
    tcase_add_loop_test(tc, dump_parse_round_trip, 0, 3);
    tcase_add_test(tc, plain_settings_round_trip);
    tcase_add_test(tc, format_1_reads_with_seq_0);
    tcase_add_test(tc, dump_refuses_what_it_cannot_write);
    tcase_add_test(tc, parse_is_strict);
    tcase_add_test(tc, read_names_the_file);
    tcase_add_test(tc, file_names);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(manifest_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
