/* test_proto_cost.c - proto/cost.c: a request's cost from its sizes, the
 * 413 limits, the work-pool decision, and the pre-scan of raw bodies
 * (which must count what the parsers count). */
#include <check.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cost.h"
#include "request.h"
#include "testutil.h"

/* A 1000 x 64 table with a vocabulary whose longest token has 12 bytes. */
static const struct request_limits LIM = {
    .num_embeddings = 1000, .dim = 64, .max_batch = 100, .max_k = 1000,
    .max_answer_bytes = 1 << 20, .max_token_len = 12,
};

static char err[STATUS_ERR_MAX];

static struct request_cost cost_of(struct request_size s, const struct request_limits *lim)
{
    struct request_cost c;
    request_cost(&s, lim, &c);
    return c;
}

START_TEST(lookup_costs)
{
    /* 10 ids of shape [2,5]: 3 arrays in the input */
    struct request_size s = {.kind = REQUEST_LOOKUP, .field = "ids", .ids = 10, .arrays = 3};
    struct request_cost c = cost_of(s, &LIM);
    ck_assert_uint_eq(c.ids_in, 10);
    ck_assert_uint_eq(c.floats_out, 640);
    ck_assert_uint_eq(c.work, 2 * 640); /* rows read, rows written */
    /* at most 20 bytes a float, 3 per row's brackets, the frame and arrays */
    ck_assert_uint_ge(c.answer_bytes, 640 * 20 + 10 * 3);
    ck_assert_uint_le(c.answer_bytes, 640 * 20 + 10 * 3 + 1000);

    struct request_limits bin = LIM;
    bin.binary = true;
    c = cost_of(s, &bin);
    ck_assert_uint_eq(c.answer_bytes, 640 * 4);
}
END_TEST

START_TEST(bags_count_every_bag)
{
    struct request_size s = {.kind = REQUEST_BAGS, .field = "bags", .ids = 0, .bags = 200000};
    struct request_cost c = cost_of(s, &LIM);
    ck_assert_uint_eq(c.ids_in, 200000);
    ck_assert_uint_eq(c.floats_out, 200000u * 64);
    ck_assert_int_eq(request_cost_check(&c, &s, &LIM, err, sizeof err), STATUS_PAYLOAD_TOO_LARGE);
    ck_assert_str_eq(err, "bags: 200000 bags and 0 ids count 200000 toward max_batch 100 "
                          "(every bag counts, empty or not)");
    s.bags = 40;
    s.ids = 60;
    c = cost_of(s, &LIM);
    ck_assert_uint_eq(c.ids_in, 100);
    ck_assert_int_eq(request_cost_check(&c, &s, &LIM, err, sizeof err), STATUS_OK);
    s.ids = 61;
    c = cost_of(s, &LIM);
    ck_assert_int_eq(request_cost_check(&c, &s, &LIM, err, sizeof err), STATUS_PAYLOAD_TOO_LARGE);
}
END_TEST

START_TEST(neighbors_costs)
{
    struct request_size s = {.kind = REQUEST_NEIGHBORS, .field = "ids", .ids = 20, .k = 50};
    struct request_cost c = cost_of(s, &LIM);
    ck_assert_uint_eq(c.ids_in, 20);
    ck_assert_uint_eq(c.floats_out, 20 * 50);
    ck_assert_uint_eq(c.work, 20u * 1000 * 64);
    /* a hit: {"id":999,"token":"<12 bytes>","score":<20>}, */
    uint64_t hit = 17 + 20 + 3 + 11 + 12;
    ck_assert_uint_ge(c.answer_bytes, 20 * 50 * hit);
    ck_assert_uint_le(c.answer_bytes, 20 * 50 * hit + 20 * 3 + 100);
    /* k past the table's rows: at most rows hits */
    s.k = 5000;
    ck_assert_uint_eq(cost_of(s, &LIM).floats_out, 20u * 1000);
    /* no vocabulary: no token */
    struct request_limits plain = LIM;
    plain.max_token_len = 0;
    s.k = 50;
    ck_assert_uint_lt(cost_of(s, &plain).answer_bytes, c.answer_bytes);

    /* 90 queries x k 1000: about 6.8 MB, over the 1 MiB limit */
    s.ids = 90;
    s.k = 1000;
    c = cost_of(s, &LIM);
    ck_assert_int_eq(request_cost_check(&c, &s, &LIM, err, sizeof err), STATUS_PAYLOAD_TOO_LARGE);
    ck_assert_msg(strstr(err, "ids: 90 queries with k 1000 make an answer of up to ") == err, "%s",
                  err);
    ck_assert_ptr_nonnull(strstr(err, "over max_answer_bytes 1048576; send fewer queries"));
    /* max_answer_bytes 0: no bound */
    struct request_limits unbounded = LIM;
    unbounded.max_answer_bytes = 0;
    ck_assert_int_eq(request_cost_check(&c, &s, &unbounded, err, sizeof err), STATUS_OK);
    /* vectors name their field */
    s.field = "vectors";
    s.ids = 101;
    s.k = 1;
    c = cost_of(s, &LIM);
    ck_assert_int_eq(request_cost_check(&c, &s, &LIM, err, sizeof err), STATUS_PAYLOAD_TOO_LARGE);
    ck_assert_str_eq(err, "vectors: 101 vectors exceed max_batch 100");
}
END_TEST

START_TEST(other_costs_and_messages)
{
    struct request_size s = {.kind = REQUEST_SIMILARITY, .field = "pairs", .ids = 202};
    struct request_cost c = cost_of(s, &LIM);
    ck_assert_uint_eq(c.floats_out, 101);
    ck_assert_int_eq(request_cost_check(&c, &s, &LIM, err, sizeof err), STATUS_PAYLOAD_TOO_LARGE);
    ck_assert_str_eq(err, "pairs: 101 pairs (202 ids) exceed max_batch 100");

    s = (struct request_size){.kind = REQUEST_GRADIENTS, .field = "tokens", .ids = 101};
    c = cost_of(s, &LIM);
    ck_assert_uint_eq(c.floats_out, 0);
    ck_assert_uint_eq(c.work, 101u * 64);
    ck_assert_int_eq(request_cost_check(&c, &s, &LIM, err, sizeof err), STATUS_PAYLOAD_TOO_LARGE);
    ck_assert_str_eq(err, "tokens: 101 tokens exceed max_batch 100");

    /* a lookup over the answer bound says how to get it smaller */
    s = (struct request_size){.kind = REQUEST_LOOKUP, .field = "ids", .ids = 100, .arrays = 1};
    struct request_limits small = LIM;
    small.max_answer_bytes = 100000;
    c = cost_of(s, &small);
    ck_assert_int_eq(request_cost_check(&c, &s, &small, err, sizeof err),
                     STATUS_PAYLOAD_TOO_LARGE);
    ck_assert_ptr_nonnull(strstr(err, "ids: 100 rows of 64 floats make an answer of up to"));
    ck_assert_ptr_nonnull(strstr(err, "or send Accept: application/octet-stream"));
    small.binary = true;
    c = cost_of(s, &small);
    ck_assert_int_eq(request_cost_check(&c, &s, &small, err, sizeof err), STATUS_OK);
}
END_TEST

START_TEST(costs_saturate)
{
    struct request_size s = {.kind = REQUEST_NEIGHBORS, .ids = UINT64_MAX / 3, .k = 1000};
    struct request_limits huge = LIM;
    huge.num_embeddings = INT64_MAX;
    huge.dim = INT64_MAX;
    struct request_cost c = cost_of(s, &huge);
    ck_assert_uint_eq(c.work, UINT64_MAX);
    ck_assert_uint_eq(c.answer_bytes, UINT64_MAX);
    s = (struct request_size){.kind = REQUEST_BAGS, .ids = UINT64_MAX, .bags = UINT64_MAX};
    c = cost_of(s, &huge);
    ck_assert_uint_eq(c.ids_in, UINT64_MAX);
    ck_assert_uint_eq(c.floats_out, UINT64_MAX);
}
END_TEST

START_TEST(heavy_decision)
{
    struct request_size s = {.kind = REQUEST_NEIGHBORS, .ids = 1, .k = 10};
    struct request_limits t = LIM; /* 1000 x 64: a 64k-float scan */
    ck_assert(!request_cost_heavy(&(struct request_cost){0}));
    struct request_cost c = cost_of(s, &t);
    ck_assert(!request_cost_heavy(&c));
    s.ids = 200; /* 12.8 M floats searched */
    c = cost_of(s, &t);
    ck_assert(request_cost_heavy(&c));
    /* one query over a big table */
    t.num_embeddings = 1000000;
    s.ids = 1;
    c = cost_of(s, &t);
    ck_assert(request_cost_heavy(&c));
    /* a big body, a big answer */
    s = (struct request_size){.kind = REQUEST_LOOKUP, .ids = 1, .body_bytes = 1 << 20};
    c = cost_of(s, &LIM);
    ck_assert(request_cost_heavy(&c));
    s.body_bytes = 100;
    s.ids = 2000; /* 128k floats of JSON, about 2.5 MB */
    c = cost_of(s, &LIM);
    ck_assert(request_cost_heavy(&c));
    s.ids = 20;
    c = cost_of(s, &LIM);
    ck_assert(!request_cost_heavy(&c));
}
END_TEST

static struct request_size prescan(enum request_kind kind, const char *body)
{
    struct request_size s;
    request_prescan(kind, body, strlen(body), &s);
    ck_assert_uint_eq(s.body_bytes, strlen(body));
    return s;
}

START_TEST(prescan_counts)
{
    struct request_size s = prescan(REQUEST_LOOKUP, "{\"ids\": [[1, 2, 3], [4, 5, 6]]}");
    ck_assert_int_eq(s.kind, REQUEST_LOOKUP);
    ck_assert_uint_eq(s.ids, 6);
    ck_assert_uint_eq(s.arrays, 3);
    s = prescan(REQUEST_LOOKUP, "{\"ids\": 7}");
    ck_assert_uint_eq(s.ids, 1);
    ck_assert_uint_eq(s.arrays, 0);
    s = prescan(REQUEST_LOOKUP, "{\"ids\": [[], [ ], []]}");
    ck_assert_uint_eq(s.ids, 0);
    ck_assert_uint_eq(s.arrays, 4);
    /* commas and brackets inside tokens are not structure */
    s = prescan(REQUEST_LOOKUP, "{\"tokens\": [\"a,b\", \"[\", \"\\\"],\"]}");
    ck_assert_str_eq(s.field, "tokens");
    ck_assert_uint_eq(s.ids, 3);
    s = prescan(REQUEST_LOOKUP, "{\"mode\": \"sum\", \"bags\": [[1, 2], [], [3]]}");
    ck_assert_int_eq(s.kind, REQUEST_BAGS);
    ck_assert_uint_eq(s.bags, 3);
    ck_assert_uint_eq(s.ids, 3);
    s = prescan(REQUEST_SIMILARITY, "{\"pairs\": [[1, 2], [3, 4], [5, 6]]}");
    ck_assert_uint_eq(s.ids, 6);
    s = prescan(REQUEST_NEIGHBORS, "{\"k\": 250, \"vectors\": [[1, 2], [3, 4]]}");
    ck_assert_str_eq(s.field, "vectors");
    ck_assert_uint_eq(s.ids, 2);
    ck_assert_uint_eq(s.k, 250);
    s = prescan(REQUEST_NEIGHBORS, "{\"tokens\": [\"a\"]}");
    ck_assert_uint_eq(s.k, 10); /* the default */
    s = prescan(REQUEST_GRADIENTS, "{\"ids\": [[1, 2]], \"grads\": [[[1], [2]]]}");
    ck_assert_uint_eq(s.ids, 2);
    /* keys spelled with escapes are the same keys */
    s = prescan(REQUEST_LOOKUP, "{\"\\u0069ds\": [1, 2]}");
    ck_assert_uint_eq(s.ids, 2);
}
END_TEST

/* The pre-scan of a valid body finds what the parser counts. */
START_TEST(prescan_agrees_with_the_parser)
{
    static const char *const lookups[] = {
        "{\"ids\": [[1, 2, 3], [4, 5, 6]]}", "{\"ids\": 3}", "{\"ids\": [[[1]], [[2]]]}",
        "{\"ids\": [[], []]}", "{\"bags\": [[1, 2], [], [3]], \"mode\": \"max\"}",
        "{ \"bags\" : [ [ ] , [ 1 ] ] }",
    };
    struct request_limits lim = LIM;
    lim.max_token_len = 0;
    for (size_t i = 0; i < sizeof lookups / sizeof lookups[0]; i++) {
        struct lookup_request r;
        ck_assert_msg(request_parse_lookup(lookups[i], strlen(lookups[i]), &lim, &r, err,
                                           sizeof err) == STATUS_OK, "%s: %s", lookups[i], err);
        struct request_size s = prescan(REQUEST_LOOKUP, lookups[i]);
        ck_assert_uint_eq(s.ids, r.in.n);
        ck_assert_uint_eq(s.bags, r.nbags);
        ck_assert_int_eq(s.kind, r.is_bags ? REQUEST_BAGS : REQUEST_LOOKUP);
        request_lookup_deinit(&r);
    }
    const char nb[] = "{\"ids\": [1, 2, 3, 4], \"k\": 7}";
    struct neighbors_request n;
    ck_assert_int_eq(request_parse_neighbors(nb, strlen(nb), &lim, &n, err, sizeof err), STATUS_OK);
    struct request_size s = prescan(REQUEST_NEIGHBORS, nb);
    ck_assert_uint_eq(s.ids, n.nq);
    ck_assert_uint_eq(s.k, n.k);
    request_neighbors_deinit(&n);
}
END_TEST

/* Any bytes: the pre-scan stays inside them and ends. */
START_TEST(prescan_survives_garbage)
{
    static const char *const bodies[] = {
        "", "{", "[", "{\"ids\"", "{\"ids\":", "{\"ids\": [[[[", "{\"ids\": [\"", "{\"ids\": [\"\\",
        "{\"bags\": [1, [", "{\"k\": 1e999, \"ids\": [1]}", "{\"k\": -5}", "}}}]]]", "\"\\\"",
        "{\"pairs\": {\"a\": [1,2]}}", "{\"ids\": {\"x\": [1, [2, 3]]}}",
    };
    for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; i++) {
        for (enum request_kind k = REQUEST_LOOKUP; k <= REQUEST_ROWS; k++) {
            struct request_size s;
            request_prescan(k, bodies[i], strlen(bodies[i]), &s);
            ck_assert_uint_le(s.ids, strlen(bodies[i]) + 1);
        }
    }
    /* random bytes, every length up to 64 */
    srand(7);
    char junk[64];
    for (int round = 0; round < 2000; round++) {
        size_t n = (size_t)rand() % sizeof junk;
        for (size_t i = 0; i < n; i++)
            junk[i] = "{}[],:\"\\ 0a-"[rand() % 12];
        struct request_size s;
        request_prescan((enum request_kind)(round % 6), junk, n, &s);
        ck_assert_uint_le(s.ids, n + 1);
    }
}
END_TEST

/* Binary bodies: their length says how many ids they hold; a parsed
 * lookup gives its sizes back for the same checks. */
START_TEST(binary_bodies_and_parsed_sizes)
{
    struct request_size s;
    request_prescan_binary(REQUEST_LOOKUP, 8000, 64, &s);
    ck_assert_uint_eq(s.ids, 1000);
    ck_assert_uint_eq(s.body_bytes, 8000);
    request_prescan_binary(REQUEST_GRADIENTS, 10 * (8 + 64 * 4), 64, &s);
    ck_assert_uint_eq(s.ids, 10);
    struct request_cost c;
    request_prescan_binary(REQUEST_LOOKUP, 64000, 64, &s); /* 8000 ids, 10 MB of JSON */
    request_cost(&s, &LIM, &c);
    ck_assert(request_cost_heavy(&c));

    const char body[] = "{\"ids\": [[1, 2], [3, 4], [5, 6]]}";
    struct lookup_request r;
    struct request_limits lim = LIM;
    lim.max_batch = 1000;
    ck_assert_int_eq(request_parse_lookup(body, strlen(body), &lim, &r, err, sizeof err),
                     STATUS_OK);
    request_size_of_lookup(&r, &s);
    ck_assert_int_eq(s.kind, REQUEST_LOOKUP);
    ck_assert_uint_eq(s.ids, 6);
    ck_assert_uint_eq(s.arrays, 4);
    ck_assert_str_eq(s.field, "ids");
    request_lookup_deinit(&r);
    const char bags[] = "{\"bags\": [[1], [], [2, 3]]}";
    ck_assert_int_eq(request_parse_lookup(bags, strlen(bags), &lim, &r, err, sizeof err),
                     STATUS_OK);
    request_size_of_lookup(&r, &s);
    ck_assert_int_eq(s.kind, REQUEST_BAGS);
    ck_assert_uint_eq(s.bags, 3);
    ck_assert_uint_eq(s.ids, 3);
    request_cost(&s, &lim, &c);
    ck_assert_uint_eq(c.ids_in, 6);
    request_lookup_deinit(&r);
}
END_TEST

static Suite *proto_cost_suite(void)
{
    Suite *s = suite_create("proto_cost");
    TCase *tc = tcase_create("cost");
    tcase_add_test(tc, lookup_costs);
    tcase_add_test(tc, bags_count_every_bag);
    tcase_add_test(tc, neighbors_costs);
    tcase_add_test(tc, other_costs_and_messages);
    tcase_add_test(tc, costs_saturate);
    tcase_add_test(tc, heavy_decision);
    tcase_add_test(tc, prescan_counts);
    tcase_add_test(tc, prescan_agrees_with_the_parser);
    tcase_add_test(tc, prescan_survives_garbage);
    tcase_add_test(tc, binary_bodies_and_parsed_sizes);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(proto_cost_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
