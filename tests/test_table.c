/* test_table.c - settings validation, initialization, lookup, renorm and
 * row assignment of core/table.c, against fixtures from real PyTorch. */
#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "table.h"
#include "table_internal.h"
#include "testutil.h"
#include "vocab.h"

static struct table *new_init(int64_t num, int64_t dim, uint64_t seed, const struct table_settings *s)
{
    struct table *t = NULL;
    char err[256] = "";
    int rc = table_new_init(&t, "t", num, dim, seed, s, err, sizeof(err));
    ck_assert_msg(rc == CORE_OK, "table_new_init: %s", err);
    return t;
}

START_TEST(init_is_deterministic_and_pads)
{
    struct table_settings s;
    table_settings_init(&s);
    s.has_padding = true;
    s.padding_idx = -2;
    struct table *a = new_init(100, 7, 42, &s);
    struct table *b = new_init(100, 7, 42, &s);
    struct table *c = new_init(100, 7, 43, &s);
    ck_assert_int_eq(table_settings(a)->padding_idx, 98);
    float ra[7], rb[7], rc[7];
    int differs = 0;
    for (int64_t i = 0; i < 100; i++) {
        table_read_row(a, i, ra);
        table_read_row(b, i, rb);
        table_read_row(c, i, rc);
        ck_assert_mem_eq(ra, rb, sizeof(ra));
        differs += memcmp(ra, rc, sizeof(ra)) != 0;
        float sq = 0;
        for (int j = 0; j < 7; j++) {
            if (i == 98)
                ck_assert_float_eq(ra[j], 0.0f);
            sq += ra[j] * ra[j];
        }
        ck_assert_float_eq_tol(a->norms[i], sqrtf(sq), 1e-5f * (1 + sqrtf(sq)));
    }
    ck_assert_int_eq(differs, 99);
    table_free(a);
    table_free(b);
    table_free(c);
}
END_TEST

static Suite *table_suite(void)
{
    Suite *s = suite_create("table");
    TCase *tc = tcase_create("init");
    tcase_add_test(tc, init_is_deterministic_and_pads);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(table_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
