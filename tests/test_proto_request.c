/* test_proto_request.c - every request parser of proto/request.c: shapes,
 * ids, tokens, floats, and every error with its code and message. */
#include <check.h>
#include <float.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "error.h"
#include "request.h"
#include "testutil.h"
#include "vocab.h"

/* A 5 x 3 table: ids in [0, 5), D = 3. */
static const struct request_limits LIM = {
    .num_embeddings = 5, .dim = 3, .max_batch = 8, .max_k = 1000,
};

static char err[STATUS_ERR_MAX];

#define S(body) body, strlen(body)

static void check_fail(enum status_code got, enum status_code want, const char *fragment,
                       const char *body)
{
    ck_assert_msg(got == want, "%s: got %s (%s), want %s", body, status_name(got), err,
                  status_name(want));
    ck_assert_msg(strstr(err, fragment) != NULL, "%s: message \"%s\" lacks \"%s\"", body, err,
                  fragment);
}

static void lookup_fails(const char *body, enum status_code want, const char *fragment)
{
    struct lookup_request r;
    check_fail(request_parse_lookup(S(body), &LIM, &r, err, sizeof err), want, fragment, body);
    ck_assert_ptr_null(r.in.ids); /* left zeroed */
    ck_assert_ptr_null(r.offsets);
    request_lookup_deinit(&r);
}

static void lookup_ok(const char *body, struct lookup_request *r)
{
    enum status_code code = request_parse_lookup(S(body), &LIM, r, err, sizeof err);
    ck_assert_msg(code == STATUS_OK, "%s: %s", body, err);
}

/* A table with tokens "a".."e" for rows 0..4 (oov_id -1 or an id). */
static struct table *vocab_table(int64_t oov_id, bool with_vocab)
{
    struct matrix w;
    struct vocab *v = NULL;
    struct table_settings s;
    struct table *t = NULL;
    static const char *const toks[] = {"a", "b", "c", "d", "e"};

    ck_assert_int_eq(matrix_init(&w, 5, 3), CORE_OK);
    if (with_vocab) {
        ck_assert_int_eq(vocab_new(&v, 5), CORE_OK);
        for (int i = 0; i < 5; i++)
            ck_assert_int_eq(vocab_add(v, toks[i], 1, NULL), CORE_OK);
    }
    table_settings_init(&s);
    s.oov_id = oov_id;
    ck_assert_int_eq(table_new(&t, "words", &w, v, &s, err, sizeof err), CORE_OK);
    return t;
}

/* ---- lookup: ids ---- */

START_TEST(lookup_scalar_and_shapes)
{
    struct lookup_request r;

    lookup_ok("{\"ids\": 3}", &r);
    ck_assert(!r.is_bags && !r.in.is_tokens);
    ck_assert_uint_eq(r.in.ndim, 0);
    ck_assert_uint_eq(r.in.n, 1);
    ck_assert_int_eq(r.in.ids[0], 3);
    request_lookup_deinit(&r);

    lookup_ok("{\"ids\":[[0,1],[2,3],[4,0]]}", &r);
    ck_assert_uint_eq(r.in.ndim, 2);
    ck_assert_uint_eq(r.in.shape[0], 3);
    ck_assert_uint_eq(r.in.shape[1], 2);
    ck_assert_uint_eq(r.in.n, 6);
    static const int64_t want[] = {0, 1, 2, 3, 4, 0};
    ck_assert_mem_eq(r.in.ids, want, sizeof want);
    request_lookup_deinit(&r);

    lookup_ok("{\"ids\":[[[1],[2]],[[3],[4]]]}", &r);
    ck_assert_uint_eq(r.in.ndim, 3);
    ck_assert_uint_eq(r.in.shape[2], 1);
    ck_assert_int_eq(r.in.ids[3], 4);
    request_lookup_deinit(&r);

    /* JSON has one number type: 1.0, 1e0 and -0 are the integers 1, 1, 0 */
    lookup_ok("{\"ids\":[1.0,1e0,-0,4.0e0]}", &r);
    static const int64_t same[] = {1, 1, 0, 4};
    ck_assert_mem_eq(r.in.ids, same, sizeof same);
    request_lookup_deinit(&r);
}
END_TEST

START_TEST(lookup_empty_inputs_keep_their_shape)
{
    struct lookup_request r;

    lookup_ok("{\"ids\":[]}", &r);
    ck_assert_uint_eq(r.in.ndim, 1);
    ck_assert_uint_eq(r.in.shape[0], 0);
    ck_assert_uint_eq(r.in.n, 0);
    request_lookup_deinit(&r);

    lookup_ok("{\"ids\":[[],[]]}", &r);
    ck_assert_uint_eq(r.in.ndim, 2);
    ck_assert_uint_eq(r.in.shape[0], 2);
    ck_assert_uint_eq(r.in.shape[1], 0);
    ck_assert_uint_eq(r.in.n, 0);
    request_lookup_deinit(&r);

    lookup_fails("{\"ids\":[[],[1]]}", STATUS_INVALID_ARGUMENT,
                 "ids[1]: has 1 elements, expected 0 (arrays must be rectangular)");
}
END_TEST

START_TEST(lookup_bad_ids)
{
    lookup_fails("{\"ids\":[0,1.5]}", STATUS_INVALID_ARGUMENT, "ids[1]: 1.5 is not an integer");
    lookup_fails("{\"ids\":[[0,1],[2,1.5]]}", STATUS_INVALID_ARGUMENT,
                 "ids[1][1]: 1.5 is not an integer");
    lookup_fails("{\"ids\":1e-300}", STATUS_INVALID_ARGUMENT, "ids: 1e-300 is not an integer");
    lookup_fails("{\"ids\":[true]}", STATUS_INVALID_ARGUMENT,
                 "ids[0]: expected an integer id, got true");
    lookup_fails("{\"ids\":[0,\"3\"]}", STATUS_INVALID_ARGUMENT,
                 "ids[1]: expected an integer id, got a string");
    lookup_fails("{\"ids\":[null]}", STATUS_INVALID_ARGUMENT, "ids[0]: expected an integer id, got null");
    lookup_fails("{\"ids\":{}}", STATUS_INVALID_ARGUMENT, "ids: expected an integer id, got an object");
    lookup_fails("{\"ids\":[-1]}", STATUS_OUT_OF_RANGE, "ids[0]: id -1 is out of range [0, 5)");
    lookup_fails("{\"ids\":[[0],[5]]}", STATUS_OUT_OF_RANGE, "ids[1][0]: id 5 is out of range [0, 5)");
    lookup_fails("{\"ids\":[1e300]}", STATUS_OUT_OF_RANGE, "ids[0]: id 1e+300 is out of range");
    lookup_fails("{\"ids\":[1e999]}", STATUS_INVALID_ARGUMENT, "ids[0]: inf is not an integer");
    /* a non-integer is reported as such even when also out of range */
    lookup_fails("{\"ids\":[-1.5]}", STATUS_INVALID_ARGUMENT, "ids[0]: -1.5 is not an integer");
}
END_TEST

START_TEST(lookup_ragged_and_mixed)
{
    lookup_fails("{\"ids\":[[0,1],[2]]}", STATUS_INVALID_ARGUMENT,
                 "ids[1]: has 1 elements, expected 2 (arrays must be rectangular)");
    lookup_fails("{\"ids\":[[0,1],[2,3,4]]}", STATUS_INVALID_ARGUMENT,
                 "ids[1]: has 3 elements, expected 2");
    lookup_fails("{\"ids\":[[0,1],3]}", STATUS_INVALID_ARGUMENT,
                 "ids[1]: expected an array, got a number");
    lookup_fails("{\"ids\":[0,[1]]}", STATUS_INVALID_ARGUMENT,
                 "ids[1]: expected an integer id, got an array");
    lookup_fails("{\"ids\":[[[0]],[[1],[2]]]}", STATUS_INVALID_ARGUMENT,
                 "ids[1]: has 2 elements, expected 1");
}
END_TEST

START_TEST(lookup_keys_and_body)
{
    lookup_fails("{\"ids\":[0],\"tokens\":[\"a\"]}", STATUS_INVALID_ARGUMENT,
                 "body: give either \"ids\" or \"tokens\", not both");
    lookup_fails("{}", STATUS_INVALID_ARGUMENT, "body: missing \"ids\" (or \"tokens\")");
    lookup_fails("{\"idz\":[0]}", STATUS_INVALID_ARGUMENT,
                 "body: unknown key \"idz\" (expected ids, tokens, bags, mode, per_sample_weights, min_seq)");
    lookup_fails("[0,1]", STATUS_INVALID_ARGUMENT, "body: expected a JSON object, got an array");
    lookup_fails("{\"ids\":[0,1]} x", STATUS_INVALID_JSON, "byte 14: trailing bytes");
    lookup_fails("{\"ids\":[0],\"ids\":[1]}", STATUS_INVALID_JSON, "duplicate key \"ids\"");
    lookup_fails("{\"ids\":[0],\"mode\":\"sum\"}", STATUS_INVALID_ARGUMENT,
                 "mode: only valid with \"bags\"");
    lookup_fails("{\"ids\":[0],\"bags\":[[0]]}", STATUS_INVALID_ARGUMENT,
                 "body: give \"bags\" or \"ids\", not both");
}
END_TEST

/* {"ids":[[...[1]...]]} with `levels` brackets. */
static void deep_ids(int levels, char *out, size_t outlen)
{
    size_t n = (size_t)snprintf(out, outlen, "{\"ids\":");
    for (int i = 0; i < levels; i++)
        out[n++] = '[';
    out[n++] = '1';
    for (int i = 0; i < levels; i++)
        out[n++] = ']';
    out[n++] = '}';
    out[n] = '\0';
    ck_assert_uint_lt(n, outlen);
}

START_TEST(lookup_limits)
{
    lookup_fails("{\"ids\":[0,1,2,3,4,0,1,2,3]}", STATUS_PAYLOAD_TOO_LARGE,
                 "ids: 9 ids exceed max_batch 8");
    lookup_fails("{\"ids\":[[0,1,2],[0,1,2],[0,1,2]]}", STATUS_PAYLOAD_TOO_LARGE,
                 "ids: 9 ids exceed max_batch 8");
    struct lookup_request r;
    lookup_ok("{\"ids\":[[0,1],[2,3],[4,0],[1,2]]}", &r); /* exactly max_batch */
    request_lookup_deinit(&r);

    /* 32 levels are fine, 33 are not */
    char deep[256];
    deep_ids(REQUEST_MAX_DIMS, deep, sizeof deep);
    lookup_ok(deep, &r);
    ck_assert_uint_eq(r.in.ndim, REQUEST_MAX_DIMS);
    ck_assert_uint_eq(r.in.n, 1);
    request_lookup_deinit(&r);
    deep_ids(REQUEST_MAX_DIMS + 1, deep, sizeof deep);
    lookup_fails(deep, STATUS_INVALID_ARGUMENT, "ids: nested deeper than 32 levels");
}
END_TEST

/* ---- lookup: tokens ---- */

START_TEST(lookup_tokens_and_resolve)
{
    struct lookup_request r;
    struct table *t = vocab_table(-1, true);

    lookup_ok("{\"tokens\":[[\"a\",\"b\"],[\"e\",\"\xC3\xA9t\xC3\xA9\"]]}", &r);
    ck_assert(r.in.is_tokens);
    ck_assert_uint_eq(r.in.ndim, 2);
    ck_assert_uint_eq(r.in.n, 4);
    ck_assert_uint_eq(r.in.lens[3], 5);
    ck_assert_mem_eq(r.in.tokens[3], "\xC3\xA9t\xC3\xA9", 5);
    ck_assert_int_eq(request_resolve_lookup(t, &r, err, sizeof err), STATUS_UNKNOWN_TOKEN);
    ck_assert_str_eq(err, "tokens[1][1]: unknown token \"\xC3\xA9t\xC3\xA9\"");
    request_lookup_deinit(&r);

    lookup_ok("{\"tokens\":[\"e\",\"a\",\"c\"]}", &r);
    ck_assert_int_eq(request_resolve_lookup(t, &r, err, sizeof err), STATUS_OK);
    static const int64_t want[] = {4, 0, 2};
    ck_assert_mem_eq(r.in.ids, want, sizeof want);
    request_lookup_deinit(&r);

    lookup_ok("{\"tokens\":\"d\"}", &r);
    ck_assert_uint_eq(r.in.ndim, 0);
    ck_assert_int_eq(request_resolve_lookup(t, &r, err, sizeof err), STATUS_OK);
    ck_assert_int_eq(r.in.ids[0], 3);
    request_lookup_deinit(&r);

    lookup_fails("{\"tokens\":[\"a\",3]}", STATUS_INVALID_ARGUMENT,
                 "tokens[1]: expected a string token, got a number");
    lookup_fails("{\"tokens\":[\"a\\u0000\"]}", STATUS_INVALID_ARGUMENT, "\\u0000");
    table_free(t);
}
END_TEST

START_TEST(resolve_oov_and_missing_vocab)
{
    struct lookup_request r;
    struct table *oov = vocab_table(2, true), *plain = vocab_table(-1, false);

    lookup_ok("{\"tokens\":[\"a\",\"nope\"]}", &r);
    ck_assert_int_eq(request_resolve_lookup(oov, &r, err, sizeof err), STATUS_OK);
    ck_assert_int_eq(r.in.ids[0], 0);
    ck_assert_int_eq(r.in.ids[1], 2); /* reads fall back to the oov id */
    /* writes never fall back */
    ck_assert_int_eq(request_resolve(oov, &r.in, false, "tokens", err, sizeof err),
                     STATUS_UNKNOWN_TOKEN);
    ck_assert_str_eq(err, "tokens[1]: unknown token \"nope\"");
    ck_assert_int_eq(request_resolve(plain, &r.in, true, "tokens", err, sizeof err),
                     STATUS_INVALID_ARGUMENT);
    ck_assert_str_eq(err, "tokens: table \"words\" has no vocabulary; send ids");
    request_lookup_deinit(&r);

    /* ids need no vocabulary */
    lookup_ok("{\"ids\":[1]}", &r);
    ck_assert_int_eq(request_resolve_lookup(plain, &r, err, sizeof err), STATUS_OK);
    request_lookup_deinit(&r);

    /* long unknown tokens are quoted shortened, at a character boundary */
    char body[256], tok[128];
    memset(tok, 0, sizeof tok);
    for (int i = 0; i < 30; i++)
        memcpy(tok + 2 * i, "\xC3\xA9", 2);
    snprintf(body, sizeof body, "{\"tokens\":[\"%s\"]}", tok);
    lookup_ok(body, &r);
    ck_assert_int_eq(request_resolve(oov, &r.in, false, "tokens", err, sizeof err),
                     STATUS_UNKNOWN_TOKEN);
    char want[128];
    snprintf(want, sizeof want, "tokens[0]: unknown token \"%.48s\"", tok);
    ck_assert_str_eq(err, want);
    request_lookup_deinit(&r);
    table_free(oov);
    table_free(plain);
}
END_TEST

/* ---- lookup: bags ---- */

START_TEST(bags_parse)
{
    struct lookup_request r;

    lookup_ok("{\"bags\":[[0,1],[],[2,3,4]],\"mode\":\"sum\","
              "\"per_sample_weights\":[[1,2],[],[0.5,0.25,-1]]}", &r);
    ck_assert(r.is_bags);
    ck_assert_uint_eq(r.nbags, 3);
    static const size_t offsets[] = {0, 2, 2, 5};
    ck_assert_mem_eq(r.offsets, offsets, sizeof offsets);
    static const int64_t ids[] = {0, 1, 2, 3, 4};
    ck_assert_mem_eq(r.in.ids, ids, sizeof ids);
    ck_assert_uint_eq(r.in.n, 5);
    ck_assert_int_eq(r.mode, BAG_SUM);
    static const float w[] = {1, 2, 0.5f, 0.25f, -1};
    ck_assert_mem_eq(r.per_sample_weights, w, sizeof w);
    request_lookup_deinit(&r);

    lookup_ok("{\"bags\":[[4]]}", &r);
    ck_assert_int_eq(r.mode, BAG_MEAN); /* nn.EmbeddingBag's default */
    ck_assert_ptr_null(r.per_sample_weights);
    request_lookup_deinit(&r);

    lookup_ok("{\"bags\":[[],[]],\"mode\":\"max\"}", &r);
    ck_assert_int_eq(r.mode, BAG_MAX);
    ck_assert_uint_eq(r.in.n, 0);
    ck_assert_uint_eq(r.offsets[2], 0);
    request_lookup_deinit(&r);
}
END_TEST

START_TEST(bags_errors)
{
    lookup_fails("{\"bags\":[]}", STATUS_INVALID_ARGUMENT, "bags: must hold at least one bag");
    lookup_fails("{\"bags\":[1]}", STATUS_INVALID_ARGUMENT,
                 "bags[0]: expected an array of ids, got a number");
    lookup_fails("{\"bags\":{}}", STATUS_INVALID_ARGUMENT, "bags: expected an array of bags");
    lookup_fails("{\"bags\":[[0],[1,2.5]]}", STATUS_INVALID_ARGUMENT,
                 "bags[1][1]: 2.5 is not an integer");
    lookup_fails("{\"bags\":[[0],[7]]}", STATUS_OUT_OF_RANGE, "bags[1][0]: id 7 is out of range");
    lookup_fails("{\"bags\":[[0],[[1]]]}", STATUS_INVALID_ARGUMENT,
                 "bags[1][0]: expected an integer id, got an array");
    lookup_fails("{\"bags\":[[\"a\",1]]}", STATUS_INVALID_ARGUMENT,
                 "bags[0][1]: expected a string token, got a number");
    lookup_fails("{\"bags\":[[0]],\"mode\":\"median\"}", STATUS_INVALID_ARGUMENT,
                 "mode: unknown mode \"median\" (expected sum, mean or max)");
    lookup_fails("{\"bags\":[[0]],\"mode\":1}", STATUS_INVALID_ARGUMENT,
                 "mode: expected a string, got a number");
    lookup_fails("{\"bags\":[[0]],\"per_sample_weights\":[[1]]}", STATUS_INVALID_ARGUMENT,
                 "per_sample_weights: only supported with mode \"sum\"");
    lookup_fails("{\"bags\":[[0]],\"mode\":\"max\",\"per_sample_weights\":[[1]]}",
                 STATUS_INVALID_ARGUMENT, "only supported with mode \"sum\"");
    lookup_fails("{\"bags\":[[0,1],[2]],\"mode\":\"sum\",\"per_sample_weights\":[[1,1]]}",
                 STATUS_INVALID_ARGUMENT, "per_sample_weights: has 1 arrays, expected 2 (one per bag)");
    lookup_fails("{\"bags\":[[0,1],[2]],\"mode\":\"sum\",\"per_sample_weights\":[[1,1],[1,2]]}",
                 STATUS_INVALID_ARGUMENT,
                 "per_sample_weights[1]: has 2 weights, expected 1 (bags[1] has 1 ids)");
    lookup_fails("{\"bags\":[[0,1]],\"mode\":\"sum\",\"per_sample_weights\":[[1,1e39]]}",
                 STATUS_INVALID_ARGUMENT, "per_sample_weights[0][1]: 1e+39 is not a finite float32");
    lookup_fails("{\"bags\":[[0,1]],\"mode\":\"sum\",\"per_sample_weights\":[[1,true]]}",
                 STATUS_INVALID_ARGUMENT, "per_sample_weights[0][1]: expected a number, got true");
    lookup_fails("{\"bags\":[[0,1]],\"mode\":\"sum\",\"per_sample_weights\":[3]}",
                 STATUS_INVALID_ARGUMENT,
                 "per_sample_weights[0]: expected an array of numbers, got a number");
    /* all bags together count against max_batch, and every bag counts too */
    lookup_fails("{\"bags\":[[0,1,2],[3,4,0],[1,2,3]]}", STATUS_PAYLOAD_TOO_LARGE,
                 "bags: 3 bags and 9 ids count 12 toward max_batch 8");
    lookup_fails("{\"bags\":[[],[],[],[],[],[],[],[],[]]}", STATUS_PAYLOAD_TOO_LARGE,
                 "bags: 9 bags and 0 ids count 9 toward max_batch 8 (every bag counts, empty "
                 "or not)");
    struct lookup_request ok;
    lookup_ok("{\"bags\":[[0,1],[2,3],[4]]}", &ok); /* 3 bags + 5 ids: exactly max_batch */
    request_lookup_deinit(&ok);
}
END_TEST

START_TEST(bags_of_tokens)
{
    struct lookup_request r;
    struct table *t = vocab_table(-1, true);

    lookup_ok("{\"bags\":[[],[\"b\",\"c\"],[\"e\"]]}", &r);
    ck_assert(r.in.is_tokens);
    ck_assert_int_eq(request_resolve_lookup(t, &r, err, sizeof err), STATUS_OK);
    static const int64_t want[] = {1, 2, 4};
    ck_assert_mem_eq(r.in.ids, want, sizeof want);
    request_lookup_deinit(&r);

    lookup_ok("{\"bags\":[[\"a\"],[\"b\",\"zz\"]]}", &r);
    ck_assert_int_eq(request_resolve_lookup(t, &r, err, sizeof err), STATUS_UNKNOWN_TOKEN);
    ck_assert_str_eq(err, "bags[1][1]: unknown token \"zz\"");
    request_lookup_deinit(&r);
    table_free(t);
}
END_TEST

/* ---- similarity ---- */

static void similarity_fails(const char *body, enum status_code want, const char *fragment)
{
    struct similarity_request r;
    check_fail(request_parse_similarity(S(body), &LIM, &r, err, sizeof err), want, fragment,
               body);
    ck_assert_ptr_null(r.pairs.ids);
    request_similarity_deinit(&r);
}

START_TEST(similarity_parse)
{
    struct similarity_request r;
    ck_assert_int_eq(request_parse_similarity(S("{\"pairs\":[[0,1],[4,2]]}"), &LIM, &r, err,
                                              sizeof err), STATUS_OK);
    ck_assert_uint_eq(r.npairs, 2);
    ck_assert_uint_eq(r.pairs.n, 4);
    static const int64_t want[] = {0, 1, 4, 2};
    ck_assert_mem_eq(r.pairs.ids, want, sizeof want);
    ck_assert_int_eq(r.metric, METRIC_COSINE);
    request_similarity_deinit(&r);

    struct table *t = vocab_table(-1, true);
    ck_assert_int_eq(request_parse_similarity(S("{\"pairs\":[[\"a\",\"e\"]],\"metric\":\"l2\"}"),
                                              &LIM, &r, err, sizeof err), STATUS_OK);
    ck_assert(r.pairs.is_tokens);
    ck_assert_int_eq(r.metric, METRIC_L2);
    ck_assert_int_eq(request_resolve(t, &r.pairs, true, "pairs", err, sizeof err), STATUS_OK);
    ck_assert_int_eq(r.pairs.ids[1], 4);
    request_similarity_deinit(&r);

    ck_assert_int_eq(request_parse_similarity(S("{\"pairs\":[[\"a\",\"b\"],[\"q\",\"c\"]]}"),
                                              &LIM, &r, err, sizeof err), STATUS_OK);
    ck_assert_int_eq(request_resolve(t, &r.pairs, true, "pairs", err, sizeof err),
                     STATUS_UNKNOWN_TOKEN);
    ck_assert_str_eq(err, "pairs[1][0]: unknown token \"q\"");
    request_similarity_deinit(&r);
    table_free(t);

    ck_assert_int_eq(request_parse_similarity(S("{\"metric\":\"dot\",\"pairs\":[[3,3]]}"),
                                              &LIM, &r, err, sizeof err), STATUS_OK);
    ck_assert_int_eq(r.metric, METRIC_DOT);
    request_similarity_deinit(&r);
}
END_TEST

START_TEST(similarity_errors)
{
    similarity_fails("{}", STATUS_INVALID_ARGUMENT, "body: missing \"pairs\"");
    similarity_fails("{\"pairs\":[]}", STATUS_INVALID_ARGUMENT, "pairs: must not be empty");
    similarity_fails("{\"pairs\":[0,1]}", STATUS_INVALID_ARGUMENT,
                     "pairs[0]: expected an array, got a number");
    similarity_fails("{\"pairs\":[[0,1],[1,2,3]]}", STATUS_INVALID_ARGUMENT,
                     "pairs[1]: has 3 elements, expected 2");
    similarity_fails("{\"pairs\":[[0]]}", STATUS_INVALID_ARGUMENT,
                     "pairs[0]: has 1 elements, expected 2");
    similarity_fails("{\"pairs\":[[0,5]]}", STATUS_OUT_OF_RANGE, "pairs[0][1]: id 5 is out of range");
    similarity_fails("{\"pairs\":[[0,0.5]]}", STATUS_INVALID_ARGUMENT,
                     "pairs[0][1]: 0.5 is not an integer");
    similarity_fails("{\"pairs\":[[\"a\",0]]}", STATUS_INVALID_ARGUMENT,
                     "pairs[0][1]: expected a string token, got a number");
    similarity_fails("{\"pairs\":[[0,1]],\"metric\":\"euclid\"}", STATUS_INVALID_ARGUMENT,
                     "metric: unknown metric \"euclid\" (expected cosine, dot or l2)");
    similarity_fails("{\"pairs\":[[0,1]],\"metric\":null}", STATUS_INVALID_ARGUMENT,
                     "metric: expected a string, got null");
    similarity_fails("{\"pairs\":[[0,1]],\"k\":3}", STATUS_INVALID_ARGUMENT,
                     "body: unknown key \"k\" (expected pairs, metric, min_seq)");
    /* pairs count twice: 5 pairs are 10 ids > 8 */
    similarity_fails("{\"pairs\":[[0,1],[0,1],[0,1],[0,1],[0,1]]}", STATUS_PAYLOAD_TOO_LARGE,
                     "pairs: 5 pairs (10 ids) exceed max_batch 8");
    struct similarity_request r;
    ck_assert_int_eq(request_parse_similarity(S("{\"pairs\":[[0,1],[0,1],[0,1],[0,1]]}"), &LIM,
                                              &r, err, sizeof err), STATUS_OK);
    request_similarity_deinit(&r);
}
END_TEST

/* ---- neighbors ---- */

static void neighbors_fails(const char *body, enum status_code want, const char *fragment)
{
    struct neighbors_request r;
    check_fail(request_parse_neighbors(S(body), &LIM, &r, err, sizeof err), want, fragment, body);
    ck_assert_ptr_null(r.vectors);
    ck_assert_ptr_null(r.queries.ids);
    request_neighbors_deinit(&r);
}

START_TEST(neighbors_parse)
{
    struct neighbors_request r;

    ck_assert_int_eq(request_parse_neighbors(S("{\"ids\":[1,3]}"), &LIM, &r, err, sizeof err),
                     STATUS_OK);
    ck_assert(!r.by_vectors);
    ck_assert_uint_eq(r.nq, 2);
    ck_assert_int_eq(r.queries.ids[1], 3);
    ck_assert_uint_eq(r.k, 10);
    ck_assert_int_eq(r.metric, METRIC_COSINE);
    request_neighbors_deinit(&r);

    ck_assert_int_eq(request_parse_neighbors(S("{\"vectors\":[[1,2,3],[-0.5,0,3.4028235e38]],"
                                               "\"k\":1000,\"metric\":\"dot\"}"),
                                             &LIM, &r, err, sizeof err), STATUS_OK);
    ck_assert(r.by_vectors);
    ck_assert_uint_eq(r.nq, 2);
    ck_assert_uint_eq(r.k, 1000);
    ck_assert_int_eq(r.metric, METRIC_DOT);
    const float want[] = {1, 2, 3, -0.5f, 0, FLT_MAX};
    ck_assert_mem_eq(r.vectors, want, sizeof want);
    request_neighbors_deinit(&r);

    ck_assert_int_eq(request_parse_neighbors(S("{\"tokens\":[\"b\"],\"k\":1.0}"), &LIM, &r, err,
                                             sizeof err), STATUS_OK);
    ck_assert(r.queries.is_tokens);
    ck_assert_uint_eq(r.k, 1);
    request_neighbors_deinit(&r);

    /* the default k never exceeds max_k */
    struct request_limits small = LIM;
    small.max_k = 3;
    ck_assert_int_eq(request_parse_neighbors(S("{\"ids\":[1]}"), &small, &r, err, sizeof err),
                     STATUS_OK);
    ck_assert_uint_eq(r.k, 3);
    request_neighbors_deinit(&r);
}
END_TEST

START_TEST(neighbors_errors)
{
    neighbors_fails("{}", STATUS_INVALID_ARGUMENT, "body: missing \"ids\" (or \"tokens\")");
    neighbors_fails("{\"ids\":[1],\"vectors\":[[1,2,3]]}", STATUS_INVALID_ARGUMENT,
                    "give one of \"ids\", \"tokens\" or \"vectors\", not several");
    neighbors_fails("{\"ids\":[]}", STATUS_INVALID_ARGUMENT, "ids: must not be empty");
    neighbors_fails("{\"ids\":1}", STATUS_INVALID_ARGUMENT, "ids: expected an array of ids, got a number");
    neighbors_fails("{\"ids\":[[1]]}", STATUS_INVALID_ARGUMENT,
                    "ids[0]: expected an integer id, got an array");
    neighbors_fails("{\"ids\":[9]}", STATUS_OUT_OF_RANGE, "ids[0]: id 9 is out of range [0, 5)");
    neighbors_fails("{\"tokens\":[\"a\",false]}", STATUS_INVALID_ARGUMENT,
                    "tokens[1]: expected a string token, got false");
    neighbors_fails("{\"ids\":[1],\"k\":0}", STATUS_INVALID_ARGUMENT, "k: 0 is outside [1, 1000] (max_k)");
    neighbors_fails("{\"ids\":[1],\"k\":1001}", STATUS_INVALID_ARGUMENT, "k: 1001 is outside [1, 1000]");
    neighbors_fails("{\"ids\":[1],\"k\":-3}", STATUS_INVALID_ARGUMENT, "k: -3 is outside");
    neighbors_fails("{\"ids\":[1],\"k\":2.5}", STATUS_INVALID_ARGUMENT, "k: 2.5 is not an integer");
    neighbors_fails("{\"ids\":[1],\"k\":\"5\"}", STATUS_INVALID_ARGUMENT,
                    "k: expected an integer, got a string");
    neighbors_fails("{\"ids\":[1],\"metric\":\"cos\"}", STATUS_INVALID_ARGUMENT,
                    "metric: unknown metric \"cos\"");
    neighbors_fails("{\"vectors\":[]}", STATUS_INVALID_ARGUMENT, "vectors: must not be empty");
    neighbors_fails("{\"vectors\":[1,2,3]}", STATUS_INVALID_ARGUMENT,
                    "vectors[0]: expected an array, got a number");
    neighbors_fails("{\"vectors\":[[1,2,3],[1,2]]}", STATUS_INVALID_ARGUMENT,
                    "vectors[1]: has 2 elements, expected 3 (the table's embedding_dim)");
    neighbors_fails("{\"vectors\":[[1,2,3,4]]}", STATUS_INVALID_ARGUMENT,
                    "vectors[0]: has 4 elements, expected 3 (the table's embedding_dim)");
    neighbors_fails("{\"vectors\":[[1,2,1e39]]}", STATUS_INVALID_ARGUMENT,
                    "vectors[0][2]: 1e+39 is not a finite float32");
    neighbors_fails("{\"vectors\":[[1,2,3.4028236e38]]}", STATUS_INVALID_ARGUMENT,
                    "vectors[0][2]: 3.4028236e+38 is not a finite float32");
    neighbors_fails("{\"vectors\":[[1,-1e999,3]]}", STATUS_INVALID_ARGUMENT,
                    "vectors[0][1]: -inf is not a finite float32");
    neighbors_fails("{\"vectors\":[[1,\"2\",3]]}", STATUS_INVALID_ARGUMENT,
                    "vectors[0][1]: expected a number, got a string");
    neighbors_fails("{\"ids\":[0,1,2,3,4,0,1,2,3]}", STATUS_PAYLOAD_TOO_LARGE,
                    "ids: 9 ids exceed max_batch 8");
    neighbors_fails("{\"vectors\":[[0,0,0],[0,0,0],[0,0,0],[0,0,0],[0,0,0],[0,0,0],[0,0,0],"
                    "[0,0,0],[0,0,0]]}", STATUS_PAYLOAD_TOO_LARGE,
                    "vectors: 9 vectors exceed max_batch 8");
}
END_TEST

/* ---- gradients ---- */

static void gradients_fails(const char *body, enum status_code want, const char *fragment)
{
    struct gradients_request r;
    check_fail(request_parse_gradients(S(body), &LIM, &r, err, sizeof err), want, fragment, body);
    ck_assert_ptr_null(r.grads);
    ck_assert_ptr_null(r.ids.ids);
    request_gradients_deinit(&r);
}

START_TEST(gradients_parse)
{
    struct gradients_request r;

    ck_assert_int_eq(request_parse_gradients(
                         S("{\"ids\":[[0,1],[1,4]],\"grads\":[[[1,2,3],[4,5,6]],"
                           "[[7,8,9],[0.5,-0.25,1e-45]]],\"lr\":0.5}"),
                         &LIM, &r, err, sizeof err), STATUS_OK);
    ck_assert_uint_eq(r.ids.ndim, 2);
    ck_assert_uint_eq(r.ids.n, 4);
    static const int64_t ids[] = {0, 1, 1, 4};
    ck_assert_mem_eq(r.ids.ids, ids, sizeof ids);
    const float g[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 0.5f, -0.25f, 1e-45f};
    ck_assert_mem_eq(r.grads, g, sizeof g);
    ck_assert(r.has_lr);
    ck_assert_double_eq(r.lr, 0.5);
    request_gradients_deinit(&r);

    /* a scalar id takes one row of D */
    ck_assert_int_eq(request_parse_gradients(S("{\"grads\":[1,2,3],\"ids\":2}"), &LIM, &r, err,
                                             sizeof err), STATUS_OK);
    ck_assert_uint_eq(r.ids.ndim, 0);
    ck_assert_int_eq(r.ids.ids[0], 2);
    ck_assert(!r.has_lr);
    request_gradients_deinit(&r);

    ck_assert_int_eq(request_parse_gradients(S("{\"tokens\":[\"a\"],\"grads\":[[1,2,3]]}"), &LIM,
                                             &r, err, sizeof err), STATUS_OK);
    ck_assert(r.ids.is_tokens);
    request_gradients_deinit(&r);
}
END_TEST

START_TEST(gradients_errors)
{
    gradients_fails("{\"grads\":[[1,2,3]]}", STATUS_INVALID_ARGUMENT, "body: missing \"ids\"");
    gradients_fails("{\"ids\":[0]}", STATUS_INVALID_ARGUMENT, "body: missing \"grads\"");
    gradients_fails("{\"ids\":[],\"grads\":[]}", STATUS_INVALID_ARGUMENT, "ids: must not be empty");
    gradients_fails("{\"ids\":[0,1],\"grads\":[[1,2,3]]}", STATUS_INVALID_ARGUMENT,
                    "grads: shape [1,3] does not match the ids' shape [2] plus embedding_dim 3");
    gradients_fails("{\"ids\":[0,1],\"grads\":[[1,2],[1,2]]}", STATUS_INVALID_ARGUMENT,
                    "grads: shape [2,2] does not match the ids' shape [2] plus embedding_dim 3");
    gradients_fails("{\"ids\":[[0,1]],\"grads\":[[1,2,3],[1,2,3]]}", STATUS_INVALID_ARGUMENT,
                    "grads: shape [2,3] does not match the ids' shape [1,2] plus embedding_dim 3");
    gradients_fails("{\"ids\":0,\"grads\":7}", STATUS_INVALID_ARGUMENT,
                    "grads: shape [] does not match the ids' shape [] plus embedding_dim 3");
    gradients_fails("{\"ids\":[0,1],\"grads\":[[1,2,3],[1,2]]}", STATUS_INVALID_ARGUMENT,
                    "grads[1]: has 2 elements, expected 3 (the table's embedding_dim)");
    gradients_fails("{\"ids\":[[0],[1]],\"grads\":[[[1,2,3]],[1,2,3]]}", STATUS_INVALID_ARGUMENT,
                    "grads[1]: has 3 elements, expected 1 (arrays must be rectangular)");
    gradients_fails("{\"ids\":[0,1],\"grads\":[[1,2,3],[1,2,1e999]]}", STATUS_INVALID_ARGUMENT,
                    "grads[1][2]: inf is not a finite float32");
    gradients_fails("{\"ids\":[0,1],\"grads\":[[1,2,3],[1,null,3]]}", STATUS_INVALID_ARGUMENT,
                    "grads[1][1]: expected a number, got null");
    gradients_fails("{\"ids\":[0,1.5],\"grads\":[[1,2,3],[1,2,3]]}", STATUS_INVALID_ARGUMENT,
                    "ids[1]: 1.5 is not an integer");
    gradients_fails("{\"ids\":[0,-1],\"grads\":[[1,2,3],[1,2,3]]}", STATUS_OUT_OF_RANGE,
                    "ids[1]: id -1 is out of range [0, 5)");
    gradients_fails("{\"ids\":[0],\"grads\":[[1,2,3]],\"lr\":0}", STATUS_INVALID_ARGUMENT,
                    "lr: must be finite and > 0, got 0");
    gradients_fails("{\"ids\":[0],\"grads\":[[1,2,3]],\"lr\":-0.1}", STATUS_INVALID_ARGUMENT,
                    "lr: must be finite and > 0, got -0.1");
    gradients_fails("{\"ids\":[0],\"grads\":[[1,2,3]],\"lr\":1e999}", STATUS_INVALID_ARGUMENT,
                    "lr: must be finite and > 0, got inf");
    gradients_fails("{\"ids\":[0],\"grads\":[[1,2,3]],\"lr\":\"0.1\"}", STATUS_INVALID_ARGUMENT,
                    "lr: expected a number, got a string");
    gradients_fails("{\"ids\":[0],\"grads\":[[1,2,3]],\"momentum\":0.9}", STATUS_INVALID_ARGUMENT,
                    "body: unknown key \"momentum\" (expected ids, tokens, grads, lr)");
    gradients_fails("{\"ids\":[0,1,2,3,4,0,1,2,3],\"grads\":[]}", STATUS_PAYLOAD_TOO_LARGE,
                    "ids: 9 ids exceed max_batch 8");
}
END_TEST

/* ---- rows ---- */

static void rows_fails(const char *body, enum status_code want, const char *fragment)
{
    struct rows_request r;
    check_fail(request_parse_rows(S(body), &LIM, &r, err, sizeof err), want, fragment, body);
    ck_assert_ptr_null(r.vectors);
    request_rows_deinit(&r);
}

START_TEST(rows_parse)
{
    struct rows_request r;
    ck_assert_int_eq(request_parse_rows(S("{\"ids\":[4,0],\"vectors\":[[1,2,3],[0.1,0.2,0.3]]}"),
                                        &LIM, &r, err, sizeof err), STATUS_OK);
    ck_assert_uint_eq(r.ids.n, 2);
    ck_assert_int_eq(r.ids.ids[0], 4);
    const float want[] = {1, 2, 3, 0.1f, 0.2f, 0.3f};
    ck_assert_mem_eq(r.vectors, want, sizeof want);
    request_rows_deinit(&r);

    /* writes by token never use the oov id */
    struct table *t = vocab_table(1, true);
    ck_assert_int_eq(request_parse_rows(S("{\"tokens\":[\"c\",\"new\"],\"vectors\":[[1,2,3],[4,5,6]]}"),
                                        &LIM, &r, err, sizeof err), STATUS_OK);
    ck_assert_int_eq(request_resolve(t, &r.ids, false, "tokens", err, sizeof err),
                     STATUS_UNKNOWN_TOKEN);
    ck_assert_str_eq(err, "tokens[1]: unknown token \"new\"");
    request_rows_deinit(&r);
    table_free(t);
}
END_TEST

START_TEST(rows_errors)
{
    rows_fails("{\"ids\":[0]}", STATUS_INVALID_ARGUMENT, "body: missing \"vectors\"");
    rows_fails("{\"vectors\":[[1,2,3]]}", STATUS_INVALID_ARGUMENT, "body: missing \"ids\"");
    rows_fails("{\"ids\":[0,1],\"vectors\":[[1,2,3]]}", STATUS_INVALID_ARGUMENT,
               "vectors: has 1 vectors, expected 2 (one per id)");
    rows_fails("{\"ids\":[0],\"vectors\":[[1,2]]}", STATUS_INVALID_ARGUMENT,
               "vectors[0]: has 2 elements, expected 3 (the table's embedding_dim)");
    rows_fails("{\"ids\":[0],\"vectors\":[[1,2,-1e39]]}", STATUS_INVALID_ARGUMENT,
               "vectors[0][2]: -1e+39 is not a finite float32");
    rows_fails("{\"ids\":[5],\"vectors\":[[1,2,3]]}", STATUS_OUT_OF_RANGE, "ids[0]: id 5 is out of range");
    rows_fails("{\"ids\":[],\"vectors\":[]}", STATUS_INVALID_ARGUMENT, "ids: must not be empty");
    rows_fails("{\"ids\":[0],\"tokens\":[\"a\"],\"vectors\":[[1,2,3]]}", STATUS_INVALID_ARGUMENT,
               "give either \"ids\" or \"tokens\", not both");
    rows_fails("{\"ids\":[0],\"vectors\":[[1,2,3]],\"lr\":1}", STATUS_INVALID_ARGUMENT,
               "body: unknown key \"lr\" (expected ids, tokens, vectors)");
}
END_TEST

/* ---- costs: refused before anything is built ---- */

/* "{"ids":[1,1,...]}" of n ids, malloc'd. */
static char *many_ids(size_t n, size_t *len)
{
    char *b = malloc(2 * n + 16);
    ck_assert_ptr_nonnull(b);
    size_t used = (size_t)sprintf(b, "{\"ids\":[");
    for (size_t i = 0; i < n; i++) {
        b[used++] = '1';
        b[used++] = ',';
    }
    b[used - 1] = ']';
    b[used++] = '}';
    *len = used;
    return b;
}

#if !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
#define CAP_ADDRESS_SPACE 1
#endif

/* With the address space capped at what the process has plus twice the
 * body, a 20 MB body of ids is still refused at max_batch with 413 (a
 * cJSON tree of it would need ~800 MB and fail as internal). Sanitizers
 * reserve terabytes of shadow memory, so they skip the cap. */
START_TEST(refused_within_twice_the_body)
{
    size_t len;
    char *body = many_ids(10000000, &len);
    struct lookup_request r;
#ifdef CAP_ADDRESS_SPACE
    struct rlimit cap = {(rlim_t)(testutil_vm_bytes() + 2 * (long long)len),
                         (rlim_t)(testutil_vm_bytes() + 2 * (long long)len)};
    ck_assert_int_eq(setrlimit(RLIMIT_AS, &cap), 0);
#endif
    check_fail(request_parse_lookup(body, len, &LIM, &r, err, sizeof err),
               STATUS_PAYLOAD_TOO_LARGE, "ids: 10000000 ids exceed max_batch 8", "20 MB of ids");
    ck_assert_ptr_null(r.in.ids);
    /* within max_batch the same bytes parse: the cap is not what refuses */
    struct request_limits lim = LIM;
    lim.max_batch = 10000000;
    lim.max_answer_bytes = 0;
    lim.binary = true;
    enum status_code code = request_parse_lookup(body, len, &lim, &r, err, sizeof err);
    ck_assert_msg(code == STATUS_OK || code == STATUS_INTERNAL, "%s", err);
    request_lookup_deinit(&r);
    free(body);
}
END_TEST

START_TEST(answer_bounds_refuse_early)
{
    struct request_limits lim = LIM;
    lim.max_answer_bytes = 2000;
    struct neighbors_request n;
    /* 8 queries x k 1000 on a 5-row table: 5 hits each, fine */
    const char *ok = "{\"ids\":[0,1,2,3,4,0,1,2],\"k\":1000}";
    ck_assert_int_eq(request_parse_neighbors(S(ok), &lim, &n, err, sizeof err), STATUS_OK);
    request_neighbors_deinit(&n);
    lim.max_answer_bytes = 500;
    check_fail(request_parse_neighbors(S(ok), &lim, &n, err, sizeof err), STATUS_PAYLOAD_TOO_LARGE,
               "ids: 8 queries with k 1000 make an answer of up to", ok);
    ck_assert_ptr_null(n.queries.ids);
    /* k is read before the queries: its errors come first */
    const char *bad_k = "{\"ids\":[9],\"k\":0}";
    check_fail(request_parse_neighbors(S(bad_k), &lim, &n, err, sizeof err),
               STATUS_INVALID_ARGUMENT, "k: 0 is outside", bad_k);
    /* k in messages is an integer, even written with an exponent */
    const char *big_k = "{\"ids\":[1],\"k\":1e5}";
    check_fail(request_parse_neighbors(S(big_k), &LIM, &n, err, sizeof err),
               STATUS_INVALID_ARGUMENT, "k: 100000 is outside [1, 1000] (max_k)", big_k);
    /* lookups: JSON rows bounded, raw float32 four bytes each */
    struct lookup_request r;
    lim.max_answer_bytes = 1000;
    const char *ids = "{\"ids\":[0,1,2,3,4,0,1,2]}";
    check_fail(request_parse_lookup(S(ids), &lim, &r, err, sizeof err), STATUS_PAYLOAD_TOO_LARGE,
               "ids: 8 rows of 3 floats make an answer of up to", ids);
    lim.binary = true;
    ck_assert_int_eq(request_parse_lookup(S(ids), &lim, &r, err, sizeof err), STATUS_OK);
    request_lookup_deinit(&r);
}
END_TEST

/* A float array whose first row promises more values than the body can
 * hold is refused where it is ragged, before it is allocated. */
START_TEST(ragged_floats_refused_before_allocation)
{
    struct request_limits lim = LIM;
    lim.dim = 1000000;
    lim.max_batch = 1000000;
    struct gradients_request g;
    const char *body = "{\"ids\":[0,1,2],\"grads\":[[0],[1],[2]]}";
    check_fail(request_parse_gradients(S(body), &lim, &g, err, sizeof err),
               STATUS_INVALID_ARGUMENT, "grads: shape [3,1] does not match", body);
    struct rows_request r;
    const char *rows = "{\"ids\":[0,1],\"vectors\":[[1],[2]]}";
    check_fail(request_parse_rows(S(rows), &lim, &r, err, sizeof err), STATUS_INVALID_ARGUMENT,
               "vectors[0]: has 1 elements, expected 1000000 (the table's embedding_dim)", rows);
    ck_assert_ptr_null(r.vectors);
}
END_TEST

/* Keys and words spelled with escapes are the same keys and words. */
START_TEST(escaped_keys_and_words)
{
    struct similarity_request r;
    const char *body = "{\"\\u0070airs\":[[0,1]],\"metric\":\"\\u0064ot\"}";
    ck_assert_msg(request_parse_similarity(S(body), &LIM, &r, err, sizeof err) == STATUS_OK, "%s",
                  err);
    ck_assert_int_eq(r.metric, METRIC_DOT);
    request_similarity_deinit(&r);
    struct lookup_request l;
    const char *toks = "{\"tokens\":[\"\\u00e9t\\u00e9\", \"a\\\"b\", \"\\ud83d\\ude00\"]}";
    ck_assert_msg(request_parse_lookup(S(toks), &LIM, &l, err, sizeof err) == STATUS_OK, "%s",
                  err);
    ck_assert_uint_eq(l.in.lens[0], 5);
    ck_assert_mem_eq(l.in.tokens[0], "\xC3\xA9t\xC3\xA9", 5);
    ck_assert_uint_eq(l.in.lens[1], 3);
    ck_assert_mem_eq(l.in.tokens[1], "a\"b", 3);
    ck_assert_uint_eq(l.in.lens[2], 4);
    ck_assert_mem_eq(l.in.tokens[2], "\xF0\x9F\x98\x80", 4);
    request_lookup_deinit(&l);
    lookup_fails("{\"\\u0069dz\":[0]}", STATUS_INVALID_ARGUMENT, "body: unknown key \"idz\"");
}
END_TEST

/* ---- helpers ---- */

START_TEST(index_names_and_deinit)
{
    struct request_ids r = {.ndim = 2, .shape = {2, 3}, .n = 6};
    char out[64];
    ck_assert_str_eq(request_index_name(&r, "ids", 4, out, sizeof out), "ids[1][1]");
    ck_assert_str_eq(request_index_name(&r, "ids", 5, out, sizeof out), "ids[1][2]");
    r.ndim = 0;
    ck_assert_str_eq(request_index_name(&r, "tokens", 0, out, sizeof out), "tokens");

    struct lookup_request z;
    memset(&z, 0, sizeof z);
    request_lookup_deinit(&z);
    request_lookup_deinit(&z);
    struct rows_request zr = {0};
    request_rows_deinit(&zr);
}
END_TEST

static Suite *proto_request_suite(void)
{
    Suite *s = suite_create("proto_request");
    TCase *tc = tcase_create("parse");
    tcase_add_test(tc, lookup_scalar_and_shapes);
    tcase_add_test(tc, lookup_empty_inputs_keep_their_shape);
    tcase_add_test(tc, lookup_bad_ids);
    tcase_add_test(tc, lookup_ragged_and_mixed);
    tcase_add_test(tc, lookup_keys_and_body);
    tcase_add_test(tc, lookup_limits);
    tcase_add_test(tc, lookup_tokens_and_resolve);
    tcase_add_test(tc, resolve_oov_and_missing_vocab);
    tcase_add_test(tc, bags_parse);
    tcase_add_test(tc, bags_errors);
    tcase_add_test(tc, bags_of_tokens);
    tcase_add_test(tc, similarity_parse);
    tcase_add_test(tc, similarity_errors);
    tcase_add_test(tc, neighbors_parse);
    tcase_add_test(tc, neighbors_errors);
    tcase_add_test(tc, gradients_parse);
    tcase_add_test(tc, gradients_errors);
    tcase_add_test(tc, rows_parse);
    tcase_add_test(tc, rows_errors);
    tcase_add_test(tc, refused_within_twice_the_body);
    tcase_add_test(tc, answer_bounds_refuse_early);
    tcase_add_test(tc, ragged_floats_refused_before_allocation);
    tcase_add_test(tc, escaped_keys_and_words);
    tcase_add_test(tc, index_names_and_deinit);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(proto_request_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
