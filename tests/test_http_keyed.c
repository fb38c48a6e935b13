/* test_http_keyed.c - keyed tables through the real binary: insert on
 * write, the three missing policies, ttl expiry, lru eviction order, 507
 * with evict none, DELETE, exact keys above 2^53, and a kill -9 restart
 * that keeps every key in its row, bit for bit. */
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "http_client.h"

#define CONFIG_FMT \
    "{\"listen\": {\"host\": \"127.0.0.1\", \"port\": 0}, \"data_dir\": \"%s/data\"," \
    " \"tables\": [" \
    "  {\"name\": \"users\", \"keys\": \"int64\", \"capacity\": 3," \
    "   \"init\": {\"embedding_dim\": 2, \"std\": 0.5, \"seed\": 3}," \
    "   \"optimizer\": {\"name\": \"adagrad\", \"lr\": 0.1}}," \
    "  {\"name\": \"zeros\", \"keys\": \"int64\", \"capacity\": 2, \"missing\": \"zeros\"," \
    "   \"evict\": \"none\", \"init\": {\"embedding_dim\": 2}}," \
    "  {\"name\": \"init\", \"keys\": \"int64\", \"capacity\": 2, \"missing\": \"init\"," \
    "   \"ttl_seconds\": 1, \"init\": {\"embedding_dim\": 2, \"seed\": 3, \"std\": 0.5}}]}"

static void start(struct test_server *s)
{
    char config[2048];
    snprintf(config, sizeof config, CONFIG_FMT, s->dir);
    test_server_start(s, config, NULL, true);
}

static char *post(struct test_server *s, const char *method, const char *path, const char *body,
                  long status, const char *code)
{
    struct reply r;
    if (body != NULL)
        http_json(s, method, path, body, &r);
    else
        http_do(s, method, path, NULL, NULL, 0, NULL, &r);
    ck_reply(&r, status, code);
    char *out = strdup(r.body);
    reply_free(&r);
    return out;
}

static void has(const char *body, const char *needle)
{
    ck_assert_msg(strstr(body, needle) != NULL, "no %s in %s", needle, body);
}

START_TEST(keyed_tables_end_to_end)
{
    struct test_server s;
    test_server_prepare(&s);
    start(&s);
    char *b;
    /* unseen keys: error (404 unknown_key), zeros, init */
    free(post(&s, "POST", "/v1/tables/users/lookup", "{\"ids\": [5]}", 404, "unknown_key"));
    b = post(&s, "POST", "/v1/tables/zeros/lookup", "{\"ids\": [5]}", 200, NULL);
    has(b, "[[0.0,0.0]]");
    free(b);
    char *init = post(&s, "POST", "/v1/tables/init/lookup", "{\"ids\": [9007199254740993]}",
                      200, NULL);
    /* insert on write: the step applies to the init row; keys above 2^53 stay exact */
    b = post(&s, "PUT", "/v1/tables/users/rows",
             "{\"ids\": [9007199254740993], \"vectors\": [[1, 2]]}", 200, NULL);
    has(b, "\"inserted\":1");
    free(b);
    b = post(&s, "POST", "/v1/tables/users/lookup", "{\"ids\": [9007199254740992]}", 404,
             "unknown_key");
    free(b);
    b = post(&s, "POST", "/v1/tables/users/gradients",
             "{\"ids\": [9007199254740993, 7, 8], \"grads\": [[1, 1], [1, 1], [0, 0]]}", 200,
             NULL);
    has(b, "\"inserted\":2");
    free(b);
    /* the same key's init row on a table of the same seed and std */
    b = post(&s, "POST", "/v1/tables/init/lookup", "{\"ids\": [9007199254740993]}", 200, NULL);
    ck_assert_str_eq(b, init);
    free(b);
    free(init);
    /* lru: 9007199254740993 and 7 written after 8's insert... touch 8, add 9: 9007.. goes */
    free(post(&s, "PUT", "/v1/tables/users/rows", "{\"ids\": [8], \"vectors\": [[3, 3]]}", 200,
              NULL));
    free(post(&s, "PUT", "/v1/tables/users/rows", "{\"ids\": [9007199254740993], \"vectors\": "
              "[[4, 4]]}", 200, NULL));
    free(post(&s, "PUT", "/v1/tables/users/rows", "{\"ids\": [9], \"vectors\": [[5, 5]]}", 200,
              NULL));
    free(post(&s, "POST", "/v1/tables/users/lookup", "{\"ids\": [7]}", 404, "unknown_key"));
    b = post(&s, "GET", "/v1/tables/users", NULL, 200, NULL);
    has(b, "\"keys\":\"int64\"");
    has(b, "\"capacity\":3");
    has(b, "\"rows_used\":3");
    has(b, "\"evictions\":1");
    free(b);
    /* evict none: 507, nothing changed */
    free(post(&s, "PUT", "/v1/tables/zeros/rows", "{\"ids\": [1, 2], \"vectors\": [[1, 1], [2, "
              "2]]}", 200, NULL));
    free(post(&s, "PUT", "/v1/tables/zeros/rows", "{\"ids\": [3], \"vectors\": [[1, 1]]}", 507,
              "capacity_exceeded"));
    /* DELETE */
    b = post(&s, "DELETE", "/v1/tables/zeros/rows", "{\"ids\": [1, 77]}", 200, NULL);
    has(b, "\"deleted\":1");
    free(b);
    free(post(&s, "PUT", "/v1/tables/zeros/rows", "{\"ids\": [3], \"vectors\": [[1, 1]]}", 200,
              NULL));
    /* neighbours name keys */
    b = post(&s, "POST", "/v1/tables/users/neighbors", "{\"ids\": [8], \"k\": 5}", 200, NULL);
    has(b, "\"id\":9007199254740993");
    has(b, "\"id\":9,");
    free(b);
    /* ttl: a key not written for 1 s is gone */
    free(post(&s, "PUT", "/v1/tables/init/rows", "{\"ids\": [42], \"vectors\": [[7, 7]]}", 200,
              NULL));
    b = post(&s, "POST", "/v1/tables/init/lookup", "{\"ids\": [42]}", 200, NULL);
    has(b, "[[7.0,7.0]]");
    free(b);
    sleep(2);
    b = post(&s, "POST", "/v1/tables/init/lookup", "{\"ids\": [42]}", 200, NULL);
    ck_assert_ptr_null(strstr(b, "[[7.0,7.0]]"));
    free(b);
    /* kill -9: the log gives back the same keys in the same rows */
    char *before = post(&s, "POST", "/v1/tables/users/lookup",
                        "{\"ids\": [9007199254740993, 8, 9]}", 200, NULL);
    kill(s.pid, SIGKILL);
    ck_assert(test_server_wait(&s, 20.0));
    start(&s);
    b = post(&s, "POST", "/v1/tables/users/lookup", "{\"ids\": [9007199254740993, 8, 9]}", 200,
             NULL);
    ck_assert_str_eq(b, before);
    free(b);
    free(post(&s, "POST", "/v1/tables/users/lookup", "{\"ids\": [7]}", 404, "unknown_key"));
    /* and through a snapshot too */
    free(post(&s, "POST", "/v1/tables/users/snapshot", NULL, 200, NULL));
    test_server_stop(&s, 20.0);
    start(&s);
    b = post(&s, "POST", "/v1/tables/users/lookup", "{\"ids\": [9007199254740993, 8, 9]}", 200,
             NULL);
    ck_assert_str_eq(b, before);
    free(b);
    free(before);
    test_server_cleanup(&s);
}
END_TEST

START_TEST(keyed_config_errors)
{
    struct test_server s;
    test_server_prepare(&s);
    char config[1024];
    snprintf(config, sizeof config,
             "{\"listen\": {\"port\": 0}, \"data_dir\": \"%s/data\", \"tables\": [{\"name\": "
             "\"u\", \"keys\": \"int64\", \"capacity\": 4, \"padding_idx\": 0, \"init\": "
             "{\"embedding_dim\": 2}}]}", s.dir);
    char path[600];
    snprintf(path, sizeof path, "%s/bad.json", s.dir);
    FILE *f = fopen(path, "w");
    fputs(config, f);
    fclose(f);
    char cmd[1400];
    snprintf(cmd, sizeof cmd, "%s --config %s --check-config 2>&1", SERVER_BIN, path);
    FILE *p = popen(cmd, "r");
    char out[2048] = "";
    size_t n = fread(out, 1, sizeof out - 1, p);
    out[n] = '\0';
    ck_assert_int_ne(pclose(p), 0);
    ck_assert_msg(strstr(out, "padding_idx") && strstr(out, "keyed"), "%s", out);
    test_server_cleanup(&s);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("http_keyed");
    TCase *tc = tcase_create("keyed");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, keyed_tables_end_to_end);
    tcase_add_test(tc, keyed_config_errors);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
