/* test_http_auth.c - bearer tokens and the order of the checks (API.md:
 * route 404/405, then auth 401, then content type 415, then size 413, then
 * body 400), against the real binary.
 *
 * Server "both": read and write tokens from the environment
 * (EMBEDDING_SERVER_READ_TOKEN / _WRITE_TOKEN). Server "writeonly": only a
 * write token, from the config file: reads are open, writes are not. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http_client.h"
#include "testutil.h"

#define READ_TOKEN "read-secret-1"
#define WRITE_TOKEN "write-secret-2"
#define MAX_BODY 2048

static struct test_server srv;

static const char config_fmt[] =
    "{\"listen\": {\"host\": \"127.0.0.1\", \"port\": 0},\n"
    " \"data_dir\": \"%s/data\",\n"
    " \"limits\": {\"max_body_bytes\": %d},\n"
    " \"snapshot\": {\"on_shutdown\": false},\n"
    " %s\n"
    " \"tables\": [{\"name\": \"t\", \"init\": {\"num_embeddings\": 20, \"embedding_dim\": 4}}]}\n";

static void start_both(void)
{
    static const char *const env[] = {"EMBEDDING_SERVER_READ_TOKEN=" READ_TOKEN,
                                      "EMBEDDING_SERVER_WRITE_TOKEN=" WRITE_TOKEN, NULL};
    test_server_prepare(&srv);
    char config[2048];
    snprintf(config, sizeof config, config_fmt, srv.dir, MAX_BODY, "");
    test_server_start(&srv, config, env, true);
}

static void start_writeonly(void)
{
    test_server_prepare(&srv);
    char config[2048];
    snprintf(config, sizeof config, config_fmt, srv.dir, MAX_BODY,
             "\"auth\": {\"write_token\": \"" WRITE_TOKEN "\"},");
    test_server_start(&srv, config, NULL, true);
}

static void stop_server(void)
{
    test_server_cleanup(&srv);
}

/* One request; token NULL sends no Authorization header. */
static long call(const char *method, const char *path, const char *token,
                 const char *content_type, const char *body, const char *want_code)
{
    char authz[256];
    const char *hdrs[] = {authz, NULL};
    snprintf(authz, sizeof authz, "Authorization: Bearer %s", token ? token : "");
    struct reply r;
    http_do(&srv, method, path, content_type, body, body ? strlen(body) : 0,
            token ? hdrs : NULL, &r);
    long status = r.status;
    if (want_code != NULL) {
        char *code = reply_error_code(&r);
        ck_assert_msg(code != NULL && strcmp(code, want_code) == 0,
                      "%s %s: code %s, want %s (%s)", method, path, code ? code : "none",
                      want_code, r.body);
        free(code);
    }
    reply_free(&r);
    return status;
}

#define JSON "application/json"
static const char lookup[] = "/v1/tables/t/lookup";
static const char grads[] = "/v1/tables/t/gradients";
static const char grad_body[] = "{\"ids\": [1], \"grads\": [[0.5, 0.5, 0.5, 0.5]]}";

START_TEST(open_endpoints_need_no_token)
{
    ck_assert_int_eq(call("GET", "/healthz", NULL, NULL, NULL, NULL), 200);
    ck_assert_int_eq(call("GET", "/readyz", NULL, NULL, NULL, NULL), 200);
    ck_assert_int_eq(call("GET", "/metrics", NULL, NULL, NULL, NULL), 200);
}
END_TEST

START_TEST(reads_need_read_or_write_token)
{
    ck_assert_int_eq(call("GET", "/v1/tables", NULL, NULL, NULL, "unauthorized"), 401);
    ck_assert_int_eq(call("GET", "/v1/tables", "wrong", NULL, NULL, "unauthorized"), 401);
    /* a prefix of the token is not the token */
    ck_assert_int_eq(call("GET", "/v1/tables/t", "read-secret", NULL, NULL, "unauthorized"), 401);
    ck_assert_int_eq(call("GET", "/v1/tables/t", READ_TOKEN "x", NULL, NULL, "unauthorized"), 401);
    ck_assert_int_eq(call("GET", "/v1/tables", READ_TOKEN, NULL, NULL, NULL), 200);
    ck_assert_int_eq(call("GET", "/v1/tables/t", WRITE_TOKEN, NULL, NULL, NULL), 200);
    ck_assert_int_eq(call("POST", lookup, READ_TOKEN, JSON, "{\"ids\": [1]}", NULL), 200);
    ck_assert_int_eq(call("POST", "/v1/tables/t/neighbors", NULL, JSON, "{\"ids\": [1]}",
                          "unauthorized"), 401);

    /* the 401 carries WWW-Authenticate: Bearer */
    struct reply r;
    http_get(&srv, "/v1/tables", &r);
    char *www = reply_header(&r, "WWW-Authenticate");
    ck_assert_str_eq(www, "Bearer");
    free(www);
    reply_free(&r);
}
END_TEST

START_TEST(writes_need_write_token)
{
    ck_assert_int_eq(call("POST", grads, NULL, JSON, grad_body, "unauthorized"), 401);
    ck_assert_int_eq(call("POST", grads, READ_TOKEN, JSON, grad_body, "unauthorized"), 401);
    ck_assert_int_eq(call("PUT", "/v1/tables/t/rows", READ_TOKEN, JSON,
                          "{\"ids\": [1], \"vectors\": [[1, 1, 1, 1]]}", "unauthorized"), 401);
    ck_assert_int_eq(call("POST", "/v1/tables/t/snapshot", READ_TOKEN, NULL, NULL,
                          "unauthorized"), 401);
    ck_assert_int_eq(call("POST", grads, WRITE_TOKEN, JSON, grad_body, NULL), 200);
    ck_assert_int_eq(call("POST", "/v1/tables/t/snapshot", WRITE_TOKEN, NULL, NULL, NULL), 200);
}
END_TEST

START_TEST(check_order)
{
    char big[MAX_BODY + 64];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';

    /* 404 and 405 come before 401 */
    ck_assert_int_eq(call("GET", "/nowhere", NULL, NULL, NULL, "not_found"), 404);
    ck_assert_int_eq(call("GET", lookup, NULL, NULL, NULL, "method_not_allowed"), 405);
    ck_assert_int_eq(call("PUT", grads, NULL, "text/plain", big, "method_not_allowed"), 405);
    /* 401 comes before 415, 413 and 400 */
    ck_assert_int_eq(call("POST", lookup, NULL, "text/plain", big, "unauthorized"), 401);
    ck_assert_int_eq(call("POST", lookup, "wrong", JSON, "{bad", "unauthorized"), 401);
    /* then 415 before 413 and 400 */
    ck_assert_int_eq(call("POST", lookup, READ_TOKEN, "text/plain", big, "unsupported_media_type"),
                     415);
    ck_assert_int_eq(call("POST", lookup, READ_TOKEN, NULL, "{bad", "unsupported_media_type"), 415);
    /* then 413 before 400 */
    ck_assert_int_eq(call("POST", lookup, READ_TOKEN, JSON, big, "payload_too_large"), 413);
    /* and the body last */
    ck_assert_int_eq(call("POST", lookup, READ_TOKEN, JSON, "{bad", "invalid_json"), 400);
    /* an unknown table is told only to a client that passed auth */
    ck_assert_int_eq(call("POST", "/v1/tables/zz/lookup", NULL, JSON, "{}", "unauthorized"), 401);
    ck_assert_int_eq(call("POST", "/v1/tables/zz/lookup", READ_TOKEN, JSON, "{}", "not_found"),
                     404);
}
END_TEST

START_TEST(write_token_only)
{
    ck_assert_int_eq(call("GET", "/v1/tables", NULL, NULL, NULL, NULL), 200);
    ck_assert_int_eq(call("POST", lookup, NULL, JSON, "{\"ids\": [[1, 2]]}", NULL), 200);
    ck_assert_int_eq(call("POST", grads, NULL, JSON, grad_body, "unauthorized"), 401);
    ck_assert_int_eq(call("POST", grads, "nope", JSON, grad_body, "unauthorized"), 401);
    ck_assert_int_eq(call("POST", grads, WRITE_TOKEN, JSON, grad_body, NULL), 200);
}
END_TEST

static Suite *http_auth_suite(void)
{
    Suite *s = suite_create("http_auth");
    TCase *both = tcase_create("both_tokens");
    tcase_add_unchecked_fixture(both, start_both, stop_server);
    tcase_set_timeout(both, 120);
    tcase_add_test(both, open_endpoints_need_no_token);
    tcase_add_test(both, reads_need_read_or_write_token);
    tcase_add_test(both, writes_need_write_token);
    tcase_add_test(both, check_order);
    suite_add_tcase(s, both);

    TCase *wo = tcase_create("write_token_only");
    tcase_add_unchecked_fixture(wo, start_writeonly, stop_server);
    tcase_set_timeout(wo, 120);
    tcase_add_test(wo, write_token_only);
    suite_add_tcase(s, wo);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(http_auth_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
