/* test_http_explorer.c - the explorer's two sides against the real binary:
 * GET /v1/tables/{t}/tokens (prefix matching in token order, the limit's
 * bounds, UTF-8 and percent-escaped prefixes, strict arguments, a table
 * without a vocabulary, auth) and the page itself (GET and HEAD /, its
 * files, content types, caching headers and 304s, the size budget, no
 * external URLs, open to clients without the read token).
 *
 * Server "open": no tokens. Tables, written by the suite:
 *   words  word2vec text, 14 x 2, tokens with shared prefixes, case, UTF-8,
 *          a space and a '+'
 *   many   word2vec text, 1500 x 2, tokens t0000 .. t1499 (limit bounds)
 *   items  init 10 x 4: no vocabulary
 * Server "locked": a read and a write token, the words table. */
#include <check.h>
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http_client.h"
#include "testutil.h"

#define READ_TOKEN "explorer-read-1"
#define WRITE_TOKEN "explorer-write-2"

/* The page's budget over the wire, uncompressed (the target). */
#define PAGE_BYTES_MAX (100 * 1024)

static struct test_server srv;

/* In file order: the ids the answers must name. */
static const char *const word_tokens[] = {
    "<pad>", "gold", "golden", "goliath", "go", "Gold", "good",
    "\xC3\xA9t\xC3\xA9",           /* été */
    "\xC3\xA9toile",               /* étoile */
    "\xE6\x9D\xB1\xE4\xBA\xAC",    /* 東京 */
    "\xE6\x9D\xB1",                /* 東 */
    "x+y", "a\"b", "\xF0\x9F\x98\x80", /* U+1F600, four bytes */
};
#define NWORDS (sizeof word_tokens / sizeof word_tokens[0])

static char *words_text(void)
{
    size_t cap = 4096, len = 0;
    char *t = malloc(cap);
    len += (size_t)snprintf(t + len, cap - len, "%zu 2\n", NWORDS);
    for (size_t i = 0; i < NWORDS; i++)
        len += (size_t)snprintf(t + len, cap - len, "%s %zu 1\n", word_tokens[i], i);
    return t;
}

static char *many_text(void)
{
    size_t cap = 1500 * 24 + 32, len = 0;
    char *t = malloc(cap);
    len += (size_t)snprintf(t + len, cap - len, "1500 2\n");
    for (int i = 0; i < 1500; i++)
        len += (size_t)snprintf(t + len, cap - len, "t%04d %d 1\n", i, i);
    return t;
}

static const char config_fmt[] =
    "{\"listen\": {\"host\": \"127.0.0.1\", \"port\": 0},\n"
    " \"data_dir\": \"%s/data\",\n"
    " \"snapshot\": {\"on_shutdown\": false},\n"
    " %s\n"
    " \"tables\": [\n"
    "  {\"name\": \"words\", \"path\": \"words.txt\", \"format\": \"word2vec\"},\n"
    "  {\"name\": \"many\", \"path\": \"many.txt\", \"format\": \"word2vec\"},\n"
    "  {\"name\": \"items\", \"init\": {\"num_embeddings\": 10, \"embedding_dim\": 4}}\n"
    " ]}\n";

static void start(const char *auth, const char *const *env)
{
    test_server_prepare(&srv);
    char *w = words_text(), *m = many_text();
    free(testutil_write_file(srv.dir, "words.txt", w, strlen(w)));
    free(testutil_write_file(srv.dir, "many.txt", m, strlen(m)));
    free(w);
    free(m);
    char config[4096];
    snprintf(config, sizeof config, config_fmt, srv.dir, auth);
    test_server_start(&srv, config, env, true);
}

static void start_open(void)
{
    start("", NULL);
}

static void start_locked(void)
{
    static const char *const env[] = {"EMBEDDING_SERVER_READ_TOKEN=" READ_TOKEN,
                                      "EMBEDDING_SERVER_WRITE_TOKEN=" WRITE_TOKEN, NULL};
    start("", env);
}

static void stop_server(void)
{
    test_server_cleanup(&srv);
}

/* ---- helpers ------------------------------------------------------------ */

/* GET path with an optional bearer token. */
static void get(const char *path, const char *token, struct reply *r)
{
    char authz[128];
    const char *hdrs[] = {authz, NULL};
    snprintf(authz, sizeof authz, "Authorization: Bearer %s", token ? token : "");
    http_do(&srv, "GET", path, NULL, NULL, 0, token ? hdrs : NULL, r);
}

/* GET a tokens path and join the answer's tokens with spaces (checking
 * each id against the file order); returns the count. */
static int tokens_of(const char *path, char *out, size_t outlen)
{
    struct reply r;
    http_get(&srv, path, &r);
    ck_reply(&r, 200, NULL);
    char *ct = reply_header(&r, "Content-Type");
    ck_assert_str_eq(ct, "application/json");
    free(ct);
    cJSON *root = cJSON_ParseWithLength(r.body, r.len);
    ck_assert_msg(root != NULL, "not JSON: %s", r.body);
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(root, "tokens");
    ck_assert_msg(cJSON_IsArray(list), "no tokens array: %s", r.body);
    ck_assert_int_eq(cJSON_GetArraySize(root), 1);
    size_t used = 0;
    int n = 0;
    out[0] = '\0';
    const cJSON *e;
    cJSON_ArrayForEach(e, list) {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(e, "id");
        const cJSON *tok = cJSON_GetObjectItemCaseSensitive(e, "token");
        ck_assert(cJSON_IsNumber(id) && cJSON_IsString(tok));
        ck_assert_int_eq(cJSON_GetArraySize(e), 2);
        if (strncmp(path, "/v1/tables/words/", 17) == 0) {
            ck_assert_int_lt(id->valueint, (int)NWORDS);
            ck_assert_str_eq(tok->valuestring, word_tokens[id->valueint]);
        }
        used += (size_t)snprintf(out + used, outlen - used, "%s%s", n ? " " : "",
                                 tok->valuestring);
        n++;
    }
    cJSON_Delete(root);
    reply_free(&r);
    return n;
}

static void expect(const char *path, const char *token, long status, const char *code,
                   const char *needle)
{
    struct reply r;
    get(path, token, &r);
    ck_reply(&r, status, code);
    if (needle != NULL)
        ck_assert_msg(strstr(r.body, needle) != NULL, "%s: \"%s\" not in %s", path, needle,
                      r.body);
    reply_free(&r);
}

/* ---- tokens ----------------------------------------------------------- */

START_TEST(tokens_by_prefix_in_token_order)
{
    char out[4096];
    ck_assert_int_eq(tokens_of("/v1/tables/words/tokens?prefix=gol", out, sizeof out), 3);
    ck_assert_str_eq(out, "gold golden goliath");
    ck_assert_int_eq(tokens_of("/v1/tables/words/tokens?prefix=go&limit=20", out, sizeof out),
                     5);
    ck_assert_str_eq(out, "go gold golden goliath good");
    /* exact bytes: case matters, a whole token is its own prefix */
    ck_assert_int_eq(tokens_of("/v1/tables/words/tokens?prefix=G", out, sizeof out), 1);
    ck_assert_str_eq(out, "Gold");
    ck_assert_int_eq(tokens_of("/v1/tables/words/tokens?prefix=golden", out, sizeof out), 1);
    ck_assert_int_eq(tokens_of("/v1/tables/words/tokens?prefix=goldenrod", out, sizeof out), 0);
    ck_assert_int_eq(tokens_of("/v1/tables/words/tokens?prefix=zzz", out, sizeof out), 0);
    /* no prefix (or an empty one): every token, in byte order */
    ck_assert_int_eq(tokens_of("/v1/tables/words/tokens", out, sizeof out), (int)NWORDS);
    ck_assert_str_eq(out, "<pad> Gold a\"b go gold golden goliath good x+y "
                          "\xC3\xA9toile \xC3\xA9t\xC3\xA9 \xE6\x9D\xB1 "
                          "\xE6\x9D\xB1\xE4\xBA\xAC \xF0\x9F\x98\x80");
    ck_assert_int_eq(tokens_of("/v1/tables/words/tokens?prefix=", out, sizeof out), (int)NWORDS);
    ck_assert_int_eq(tokens_of("/v1/tables/words/tokens?prefix", out, sizeof out), (int)NWORDS);
    ck_assert_int_eq(tokens_of("/v1/tables/words/tokens?limit=2&prefix=go", out, sizeof out), 2);
    ck_assert_str_eq(out, "go gold");
    /* JSON escaping of the token */
    ck_assert_int_eq(tokens_of("/v1/tables/words/tokens?prefix=a%22", out, sizeof out), 1);
    ck_assert_str_eq(out, "a\"b");
    /* HEAD answers like GET, without the body */
    struct reply r;
    http_do(&srv, "HEAD", "/v1/tables/words/tokens?prefix=gol", NULL, NULL, 0, NULL, &r);
    ck_reply(&r, 200, NULL);
    ck_assert_uint_eq(r.len, 0);
    reply_free(&r);
}
END_TEST

START_TEST(tokens_limit_is_bounded)
{
    char *out = malloc(1 << 16);
    /* default 20, the first ones in token order */
    ck_assert_int_eq(tokens_of("/v1/tables/many/tokens", out, 1 << 16), 20);
    ck_assert(strncmp(out, "t0000 t0001 t0002", 17) == 0);
    ck_assert_int_eq(tokens_of("/v1/tables/many/tokens?limit=1", out, 1 << 16), 1);
    ck_assert_str_eq(out, "t0000");
    ck_assert_int_eq(tokens_of("/v1/tables/many/tokens?limit=1000", out, 1 << 16), 1000);
    ck_assert_int_eq(tokens_of("/v1/tables/many/tokens?limit=0001000&prefix=t1", out, 1 << 16),
                     500);
    ck_assert_int_eq(tokens_of("/v1/tables/many/tokens?prefix=t149&limit=5", out, 1 << 16), 5);
    ck_assert_str_eq(out, "t1490 t1491 t1492 t1493 t1494");
    free(out);

    static const char *const bad[] = {
        "limit=0", "limit=1001", "limit=-1", "limit=%2B5", "limit=1.5", "limit=abc",
        "limit=", "limit", "limit=%205", "limit=5%20", "limit=99999999999999999999",
        "limit=1e3", "limit=0x10",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char path[128];
        snprintf(path, sizeof path, "/v1/tables/many/tokens?%s", bad[i]);
        expect(path, NULL, 400, "invalid_argument", "limit");
    }
    /* arguments are read strictly, as JSON keys are */
    expect("/v1/tables/many/tokens?limit=5&limit=6", NULL, 400, "invalid_argument", "twice");
    expect("/v1/tables/many/tokens?prefix=a&prefix=b", NULL, 400, "invalid_argument", "twice");
    expect("/v1/tables/many/tokens?prefx=t1", NULL, 400, "invalid_argument",
           "unknown query argument \\\"prefx\\\"");
}
END_TEST

START_TEST(tokens_utf8_prefixes)
{
    char out[1024];
    ck_assert_int_eq(tokens_of("/v1/tables/words/tokens?prefix=%C3%A9t", out, sizeof out), 2);
    ck_assert_str_eq(out, "\xC3\xA9toile \xC3\xA9t\xC3\xA9"); /* 'o' < 0xC3 */
    ck_assert_int_eq(tokens_of("/v1/tables/words/tokens?prefix=%E6%9D%B1", out, sizeof out), 2);
    ck_assert_str_eq(out, "\xE6\x9D\xB1 \xE6\x9D\xB1\xE4\xBA\xAC");
    ck_assert_int_eq(tokens_of("/v1/tables/words/tokens?prefix=%F0%9F%98%80", out, sizeof out),
                     1);
    /* percent escapes and '+' are decoded as in a form (a '+' itself is %2B) */
    ck_assert_int_eq(tokens_of("/v1/tables/words/tokens?prefix=x%2B", out, sizeof out), 1);
    ck_assert_str_eq(out, "x+y");
    ck_assert_int_eq(tokens_of("/v1/tables/words/tokens?prefix=%67%6F%6C", out, sizeof out), 3);
    /* not UTF-8: a cut character, a stray continuation byte, an overlong
     * form, a surrogate; and a NUL byte */
    static const char *const bad[] = {"%C3", "%A9", "%C0%AF", "%ED%A0%80", "%FF", "go%E6%9D"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char path[128];
        snprintf(path, sizeof path, "/v1/tables/words/tokens?prefix=%s", bad[i]);
        expect(path, NULL, 400, "invalid_argument", "not valid UTF-8");
    }
    expect("/v1/tables/words/tokens?prefix=go%00", NULL, 400, "invalid_argument", "NUL");
}
END_TEST

START_TEST(tokens_without_vocabulary)
{
    expect("/v1/tables/items/tokens", NULL, 404, "not_found", "no vocabulary");
    expect("/v1/tables/items/tokens?prefix=a", NULL, 404, "not_found", "ids 0 to 9");
    expect("/v1/tables/nosuch/tokens?prefix=a", NULL, 404, "not_found", "nosuch");
    struct reply r;
    http_json(&srv, "POST", "/v1/tables/words/tokens", "{}", &r);
    ck_reply(&r, 405, "method_not_allowed");
    char *allow = reply_header(&r, "Allow");
    ck_assert_str_eq(allow, "GET, HEAD");
    free(allow);
    reply_free(&r);
}
END_TEST

/* ---- the page ---------------------------------------------------------- */

/* GETs path and checks the answer of a page file: 200, type, caching. */
static void get_file(const char *path, const char *type, struct reply *r)
{
    http_get(&srv, path, r);
    ck_reply(r, 200, NULL);
    char *ct = reply_header(r, "Content-Type");
    ck_assert_msg(ct && strcmp(ct, type) == 0, "%s: Content-Type %s", path, ct);
    free(ct);
    char *cc = reply_header(r, "Cache-Control");
    ck_assert_msg(cc && strcmp(cc, "no-cache") == 0, "%s: Cache-Control %s", path, cc);
    free(cc);
    char *nosniff = reply_header(r, "X-Content-Type-Options");
    ck_assert_str_eq(nosniff, "nosniff");
    free(nosniff);
    char *etag = reply_header(r, "ETag");
    ck_assert_msg(etag && etag[0] == '"' && strlen(etag) > 2, "%s: ETag %s", path, etag);
    free(etag);
}

/* Every URL a file names must be of this origin (a namespace name is not
 * fetched): the page works offline. */
static void check_offline(const char *path, const struct reply *r)
{
    ck_assert_msg(strstr(r->body, "https:") == NULL, "%s names an https: URL", path);
    for (const char *p = r->body; (p = strstr(p, "http:")) != NULL; p++)
        ck_assert_msg(strncmp(p, "http://www.w3.org/", 18) == 0, "%s names %.60s", path, p);
    ck_assert_msg(strstr(r->body, "src=\"//") == NULL && strstr(r->body, "href=\"//") == NULL &&
                      strstr(r->body, "url(//") == NULL,
                  "%s names a protocol-relative URL", path);
}

/* The files the page loads; index.html must name the first two. */
static const struct {
    const char *path, *type;
} page_files[] = {
    {"/explorer/style.css", "text/css; charset=utf-8"},
    {"/explorer/app.js", "text/javascript; charset=utf-8"},
    {"/explorer/api.js", "text/javascript; charset=utf-8"},
    {"/explorer/pca.js", "text/javascript; charset=utf-8"},
    {"/explorer/map.js", "text/javascript; charset=utf-8"},
};

START_TEST(page_and_files)
{
    struct reply r;
    get_file("/", "text/html; charset=utf-8", &r);
    ck_assert_msg(strncmp(r.body, "<!doctype html>", 15) == 0, "%.40s", r.body);
    size_t total = r.len;
    check_offline("/", &r);
    ck_assert_ptr_nonnull(strstr(r.body, "/explorer/style.css"));
    ck_assert_ptr_nonnull(strstr(r.body, "/explorer/app.js"));
    ck_assert_ptr_nonnull(strstr(r.body, "type=\"module\""));
    char *csp = reply_header(&r, "Content-Security-Policy");
    ck_assert_ptr_nonnull(csp);
    ck_assert_ptr_nonnull(strstr(csp, "default-src 'none'"));
    ck_assert_ptr_nonnull(strstr(csp, "connect-src 'self'"));
    free(csp);
    char *page_etag = reply_header(&r, "ETag");
    reply_free(&r);

    for (size_t i = 0; i < sizeof page_files / sizeof page_files[0]; i++) {
        get_file(page_files[i].path, page_files[i].type, &r);
        ck_assert_uint_gt(r.len, 0);
        total += r.len;
        check_offline(page_files[i].path, &r);
        reply_free(&r);
    }
    get_file("/explorer/app.js?v=2", "text/javascript; charset=utf-8", &r); /* query ignored */
    reply_free(&r);
    fprintf(stderr, "explorer: the page is %zu bytes over the wire (budget %d)\n", total,
            PAGE_BYTES_MAX);
    ck_assert_uint_lt(total, PAGE_BYTES_MAX);

    /* HEAD: the same headers, no body */
    http_do(&srv, "HEAD", "/", NULL, NULL, 0, NULL, &r);
    ck_reply(&r, 200, NULL);
    ck_assert_uint_eq(r.len, 0);
    char *etag = reply_header(&r, "ETag");
    ck_assert_str_eq(etag, page_etag);
    free(etag);
    char *ct = reply_header(&r, "Content-Type");
    ck_assert_str_eq(ct, "text/html; charset=utf-8");
    free(ct);
    reply_free(&r);

    /* revalidation: a matching If-None-Match is 304 without a body, a stale
     * one gets the file */
    char inm[128];
    const char *hdrs[] = {inm, NULL};
    snprintf(inm, sizeof inm, "If-None-Match: %s", page_etag);
    http_do(&srv, "GET", "/", NULL, NULL, 0, hdrs, &r);
    ck_assert_int_eq(r.status, 304);
    ck_assert_uint_eq(r.len, 0);
    reply_free(&r);
    snprintf(inm, sizeof inm, "If-None-Match: \"stale\", W/%s", page_etag);
    http_do(&srv, "GET", "/", NULL, NULL, 0, hdrs, &r);
    ck_assert_int_eq(r.status, 304);
    reply_free(&r);
    snprintf(inm, sizeof inm, "If-None-Match: \"stale\"");
    http_do(&srv, "GET", "/", NULL, NULL, 0, hdrs, &r);
    ck_reply(&r, 200, NULL);
    ck_assert_uint_gt(r.len, 0);
    reply_free(&r);
    free(page_etag);
}
END_TEST

START_TEST(page_route_errors)
{
    expect("/explorer/nope.js", NULL, 404, "not_found", "nope.js");
    expect("/explorer/", NULL, 404, "not_found", NULL);
    expect("/explorer/../main.c", NULL, 404, "not_found", NULL);
    expect("/explorer/sub/app.js", NULL, 404, "not_found", NULL);
    expect("/index.html", NULL, 404, "not_found", NULL);
    struct reply r;
    http_json(&srv, "POST", "/", "{}", &r);
    ck_reply(&r, 405, "method_not_allowed");
    char *allow = reply_header(&r, "Allow");
    ck_assert_str_eq(allow, "GET, HEAD");
    free(allow);
    char *cc = reply_header(&r, "Cache-Control"); /* errors are not cached as files */
    ck_assert_ptr_null(cc);
    reply_free(&r);
}
END_TEST

/* ---- with tokens configured ------------------------------------------- */

START_TEST(page_open_api_locked)
{
    struct reply r;
    get("/", NULL, &r);
    ck_reply(&r, 200, NULL);
    reply_free(&r);
    for (size_t i = 0; i < sizeof page_files / sizeof page_files[0]; i++) {
        get(page_files[i].path, NULL, &r);
        ck_reply(&r, 200, NULL);
        reply_free(&r);
    }
    expect("/v1/tables/words/tokens?prefix=gol", NULL, 401, "unauthorized", NULL);
    expect("/v1/tables/words/tokens?prefix=gol", "wrong", 401, "unauthorized", NULL);
    expect("/v1/tables/words/tokens?prefix=gol", READ_TOKEN, 200, NULL, "goliath");
    expect("/v1/tables/words/tokens?prefix=gol", WRITE_TOKEN, 200, NULL, "goliath");
    /* auth comes before the table and the arguments: nothing leaks */
    expect("/v1/tables/nosuch/tokens?limit=0", NULL, 401, "unauthorized", NULL);
    expect("/v1/tables/items/tokens", NULL, 401, "unauthorized", NULL);
    expect("/v1/tables/items/tokens", READ_TOKEN, 404, "not_found", NULL);
}
END_TEST

static Suite *http_explorer_suite(void)
{
    Suite *s = suite_create("http_explorer");
    TCase *tc = tcase_create("open");
    tcase_add_unchecked_fixture(tc, start_open, stop_server);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, tokens_by_prefix_in_token_order);
    tcase_add_test(tc, tokens_limit_is_bounded);
    tcase_add_test(tc, tokens_utf8_prefixes);
    tcase_add_test(tc, tokens_without_vocabulary);
    tcase_add_test(tc, page_and_files);
    tcase_add_test(tc, page_route_errors);
    suite_add_tcase(s, tc);

    tc = tcase_create("locked");
    tcase_add_unchecked_fixture(tc, start_locked, stop_server);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, page_open_api_locked);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(http_explorer_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
