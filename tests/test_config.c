/* test_config.c - config/: defaults, the JSON file (the API.md example and
 * config/example.json), one test per error class checking the message names
 * the key, precedence file < env < flag, path resolution against the file's
 * folder, tokens from the environment, the built-in default table, --help. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "config_internal.h"
#include "error.h"
#include "loader.h"
#include "vocab.h"
#include "testutil.h"

static const char *const env_vars[] = {
    "EMBEDDING_SERVER_CONFIG", "EMBEDDING_SERVER_DEFAULT_TABLE", "EMBEDDING_SERVER_HOST",
    "EMBEDDING_SERVER_PORT", "EMBEDDING_SERVER_DATA_DIR", "EMBEDDING_SERVER_LOG_LEVEL",
    "EMBEDDING_SERVER_MAX_BODY_BYTES", "EMBEDDING_SERVER_MAX_BATCH", "EMBEDDING_SERVER_MAX_K",
    "EMBEDDING_SERVER_THREADS", "EMBEDDING_SERVER_SNAPSHOT_INTERVAL",
    "EMBEDDING_SERVER_SNAPSHOT_ON_SHUTDOWN", "EMBEDDING_SERVER_READ_TOKEN",
    "EMBEDDING_SERVER_WRITE_TOKEN", "EMBEDDING_SERVER_CONNECTION_TIMEOUT",
    "EMBEDDING_SERVER_MAX_CONNECTIONS", "EMBEDDING_SERVER_MAX_CONNECTIONS_PER_IP",
    "EMBEDDING_SERVER_MAX_ANSWER_BYTES", "EMBEDDING_SERVER_HEADER_TIMEOUT",
    "EMBEDDING_SERVER_MIN_BODY_RATE",
};

/* Every test starts from a clean environment, whatever the shell had. */
static void clear_env(void)
{
    for (size_t i = 0; i < sizeof env_vars / sizeof env_vars[0]; i++)
        unsetenv(env_vars[i]);
}

static void setup(void)
{
    clear_env();
}

static void teardown(void)
{
    clear_env();
}

/* The API.md example, verbatim. */
static const char api_example[] =
    "{\n"
    "  \"listen\": {\"host\": \"127.0.0.1\", \"port\": 8080},\n"
    "  \"data_dir\": \"./data\",\n"
    "  \"limits\": {\"max_body_bytes\": 67108864, \"max_batch\": 100000, \"max_k\": 1000},\n"
    "  \"tables\": [\n"
    "    {\"name\": \"words\", \"path\": \"vectors.txt\", \"format\": \"auto\", \"freeze\": false,\n"
    "     \"padding_idx\": 0, \"max_norm\": null, \"norm_type\": 2.0, \"scale_grad_by_freq\": false,\n"
    "     \"optimizer\": {\"name\": \"sparse_adam\", \"lr\": 0.001}, \"oov\": \"error\"},\n"
    "    {\"name\": \"items\", \"init\": {\"num_embeddings\": 100000, \"embedding_dim\": 64, "
    "\"seed\": 7},\n"
    "     \"optimizer\": {\"name\": \"adagrad\", \"lr\": 0.01}}\n"
    "  ]\n"
    "}\n";

static int parse(struct config *c, const char *json, char *err, size_t errlen)
{
    ck_assert_int_eq(config_init(c), CORE_OK);
    return config_parse_json(c, json, strlen(json), "/etc/es", "cfg.json", err, errlen);
}

START_TEST(test_defaults)
{
    struct config c;
    ck_assert_int_eq(config_init(&c), CORE_OK);
    ck_assert_str_eq(c.host, "127.0.0.1");
    ck_assert_int_eq(c.port, 8080);
    ck_assert_str_eq(c.data_dir, "./data");
    ck_assert_uint_eq(c.max_body_bytes, 64u << 20);
    ck_assert_uint_eq(c.max_batch, 100000);
    ck_assert_int_eq(c.max_k, 1000);
    ck_assert_int_eq(c.conn_timeout_s, 30);
    ck_assert_int_eq(c.max_connections, 1024);
    ck_assert_int_eq(c.max_connections_per_ip, 64);
    ck_assert_int_eq(c.threads, 2);
    ck_assert_int_eq(c.log_level, CONFIG_LOG_INFO);
    ck_assert_ptr_null(c.read_token);
    ck_assert_ptr_null(c.write_token);
    ck_assert_int_eq(c.snapshot_interval_s, 0);
    ck_assert(c.snapshot_on_shutdown);
    ck_assert_uint_eq(c.ntables, 0);
    ck_assert_ptr_null(c.config_path);
    config_deinit(&c);
    config_deinit(&c); /* twice is fine */
    ck_assert_ptr_null(c.host);
}
END_TEST

START_TEST(test_api_example)
{
    struct config c;
    char err[512] = "";
    ck_assert_msg(parse(&c, api_example, err, sizeof err) == CORE_OK, "%s", err);
    ck_assert_uint_eq(c.ntables, 2);

    const struct config_table *w = config_find_table(&c, "words");
    ck_assert_ptr_eq(w, &c.tables[0]);
    ck_assert_str_eq(w->path, "/etc/es/vectors.txt");
    ck_assert_int_eq(w->format, LOADER_AUTO);
    ck_assert(!w->has_init);
    ck_assert(!w->settings.freeze);
    ck_assert(w->settings.has_padding);
    ck_assert_int_eq(w->settings.padding_idx, 0);
    ck_assert(!w->settings.has_max_norm);
    ck_assert_double_eq(w->settings.norm_type, 2.0);
    ck_assert(!w->settings.scale_grad_by_freq);
    ck_assert_int_eq(w->settings.oov_id, -1);
    ck_assert(w->has_optimizer);
    ck_assert_int_eq(w->optimizer.kind, OPTIM_SPARSE_ADAM);
    ck_assert_double_eq(w->optimizer.lr, 0.001);
    ck_assert_double_eq(w->optimizer.beta1, 0.9); /* torch's defaults fill the rest */
    ck_assert_double_eq(w->optimizer.beta2, 0.999);
    ck_assert_double_eq(w->optimizer.eps, 1e-8);

    const struct config_table *it = config_find_table(&c, "items");
    ck_assert_ptr_nonnull(it);
    ck_assert_ptr_null(it->path);
    ck_assert(it->has_init);
    ck_assert_int_eq(it->num_embeddings, 100000);
    ck_assert_int_eq(it->embedding_dim, 64);
    ck_assert_uint_eq(it->seed, 7);
    ck_assert(!it->settings.freeze); /* init tables train by default */
    ck_assert(!it->settings.has_padding);
    ck_assert_int_eq(it->optimizer.kind, OPTIM_ADAGRAD);
    ck_assert_double_eq(it->optimizer.lr, 0.01);
    ck_assert_double_eq(it->optimizer.lr_decay, 0);
    ck_assert_double_eq(it->optimizer.eps, 1e-10);
    ck_assert_ptr_null(config_find_table(&c, "nope"));
    config_deinit(&c);
}
END_TEST

START_TEST(test_example_file)
{
    struct config c;
    char err[512] = "";
    ck_assert_int_eq(config_init(&c), CORE_OK);
    const char *path = SOURCE_DIR "/config/example.json";
    ck_assert_msg(config_parse_file(&c, path, err, sizeof err) == CORE_OK, "%s", err);
    ck_assert_str_eq(c.config_path, path);
    ck_assert_uint_eq(c.ntables, 3);
    ck_assert_str_eq(c.tables[0].path, SOURCE_DIR "/config/default/words.vec");
    struct stat st;
    ck_assert_int_eq(stat(c.tables[0].path, &st), 0); /* the example runs as is */
    ck_assert(c.tables[0].settings.freeze);
    ck_assert_int_eq(c.tables[0].format, LOADER_WORD2VEC);
    ck_assert_int_eq(c.tables[1].settings.padding_idx, 0);
    ck_assert_int_eq(c.tables[2].optimizer.kind, OPTIM_ADAGRAD);
    ck_assert_uint_eq(c.tables[2].seed, 0);
    ck_assert_ptr_null(c.read_token);
    ck_assert_int_eq(config_validate(&c, err, sizeof err), CORE_OK);
    config_deinit(&c);
}
END_TEST

START_TEST(test_table_settings)
{
    struct config c;
    char err[512] = "";
    const char *json =
        "{\"tables\": [{\"name\": \"a.b-c_1\", \"path\": \"/abs/e.npy\", \"vocab\": \"v.txt\","
        " \"format\": \"npy\", \"norm_type\": \"inf\", \"max_norm\": 1.5, \"oov\": 3,"
        " \"padding_idx\": -1, \"scale_grad_by_freq\": true,"
        " \"optimizer\": {\"name\": \"sgd\", \"lr\": 0.5}},"
        " {\"name\": \"t\", \"path\": \"w.safetensors\", \"tensor\": \"emb.weight\","
        "  \"optimizer\": null, \"padding_idx\": null}]}";
    ck_assert_msg(parse(&c, json, err, sizeof err) == CORE_OK, "%s", err);
    const struct config_table *t = &c.tables[0];
    ck_assert_str_eq(t->name, "a.b-c_1");
    ck_assert_str_eq(t->path, "/abs/e.npy"); /* absolute stays */
    ck_assert_str_eq(t->vocab, "/etc/es/v.txt");
    ck_assert_int_eq(t->format, LOADER_NPY);
    ck_assert(isinf(t->settings.norm_type) && t->settings.norm_type > 0);
    ck_assert(t->settings.has_max_norm);
    ck_assert_double_eq(t->settings.max_norm, 1.5);
    ck_assert_int_eq(t->settings.oov_id, 3);
    ck_assert_int_eq(t->settings.padding_idx, -1);
    ck_assert(t->settings.scale_grad_by_freq);
    ck_assert(t->settings.freeze); /* file tables are frozen unless told */
    ck_assert_int_eq(t->optimizer.kind, OPTIM_SGD);
    ck_assert_double_eq(t->optimizer.lr, 0.5);
    t = &c.tables[1];
    ck_assert_str_eq(t->tensor, "emb.weight");
    ck_assert(!t->has_optimizer);
    ck_assert(!t->settings.has_padding);
    config_deinit(&c);
}
END_TEST

/* Each error class: the JSON, and the text the message must contain. */
static const struct {
    const char *json;
    const char *want;
} bad_configs[] = {
    {"{\"listn\": {}}", "cfg.json: listn: unknown key"},
    {"{\"listen\": {\"hots\": \"x\"}}", "cfg.json: listen.hots: unknown key"},
    {"{\"listen\": 8080}", "listen: must be an object"},
    {"{\"listen\": {\"port\": \"80\"}}", "listen.port: must be an integer in [0, 65535]"},
    {"{\"listen\": {\"port\": 70000}}", "listen.port: must be an integer in [0, 65535], got 70000"},
    {"{\"listen\": {\"port\": -1}}", "listen.port: must be an integer"},
    {"{\"listen\": {\"port\": 80.5}}", "listen.port: must be an integer"},
    {"{\"listen\": {\"host\": \"\"}}", "listen.host: must not be empty"},
    {"{\"listen\": {\"host\": 1}}", "listen.host: must be a string"},
    {"{\"limits\": {\"max_k\": 1001}}", "limits.max_k: must be an integer in [1, 1000]"},
    {"{\"limits\": {\"max_k\": 0}}", "limits.max_k: must be an integer in [1, 1000]"},
    {"{\"limits\": {\"max_batch\": 0}}", "limits.max_batch: must be an integer"},
    {"{\"limits\": {\"max_body_bytes\": 1e300}}", "limits.max_body_bytes: must be an integer"},
    {"{\"threads\": 0}", "threads: must be an integer in [1, 256]"},
    {"{\"log_level\": \"verbose\"}", "log_level: must be error, warn, info or debug"},
    {"{\"snapshot\": {\"on_shutdown\": 1}}", "snapshot.on_shutdown: must be true or false"},
    {"{\"snapshot\": {\"interval\": -5}}", "snapshot.interval: must be an integer"},
    {"{\"auth\": {\"write_token\": \"\"}}", "auth.write_token: must not be empty"},
    {"{\"data_dir\": \"a\", \"data_dir\": \"b\"}", "cfg.json: data_dir: duplicate key"},
    {"{\"limits\": {\"max_k\": 5, \"max_k\": 6}}", "cfg.json: limits.max_k: duplicate key"},
    {"{\"tables\": [{\"name\": \"a\", \"name\": \"b\", \"path\": \"x\"}]}",
     "tables[0].name: duplicate key"},
    {"{\"tables\": [{\"name\": \"a\", \"init\": {\"num_embeddings\": 2, \"num_embeddings\": 3, "
     "\"embedding_dim\": 2}}]}",
     "tables[0].init.num_embeddings: duplicate key"},
    {"{\"tables\": {}}", "tables: must be an array"},
    {"{\"tables\": [7]}", "tables[0]: must be an object"},
    {"{\"tables\": [{\"name\": \"a\", \"path\": \"x\"}, {\"name\": \"b\", \"path\": \"y\", "
     "\"optimzer\": {}}]}",
     "cfg.json: tables[1].optimzer: unknown key"},
    {"{\"tables\": [{\"path\": \"x\"}]}", "tables[0].name: missing"},
    {"{\"tables\": [{\"name\": \"bad name\", \"path\": \"x\"}]}", "tables[0].name: \"bad name\" must match"},
    {"{\"tables\": [{\"name\": \"_a\", \"path\": \"x\"}]}", "tables[0].name"},
    {"{\"tables\": [{\"name\": \"a\", \"path\": \"x\"}, {\"name\": \"a\", \"path\": \"y\"}]}",
     "tables[1].name: \"a\" is already the name of tables[0]"},
    {"{\"tables\": [{\"name\": \"a\"}]}", "tables[0]: needs exactly one of \"path\" and \"init\""},
    {"{\"tables\": [{\"name\": \"a\", \"path\": \"x\", \"init\": {\"num_embeddings\": 2, "
     "\"embedding_dim\": 2}}]}",
     "tables[0]: needs exactly one of \"path\" and \"init\""},
    {"{\"tables\": [{\"name\": \"a\", \"path\": \"\"}]}", "tables[0].path: must be a non-empty string"},
    {"{\"tables\": [{\"name\": \"a\", \"path\": \"x\", \"format\": \"csv\"}]}", "tables[0].format: must be one of"},
    {"{\"tables\": [{\"name\": \"a\", \"init\": {\"num_embeddings\": 2}}]}",
     "tables[0].init.embedding_dim: missing"},
    {"{\"tables\": [{\"name\": \"a\", \"init\": {\"num_embeddings\": 0, \"embedding_dim\": 2}}]}",
     "tables[0].init.num_embeddings: must be an integer"},
    {"{\"tables\": [{\"name\": \"a\", \"init\": {\"num_embeddings\": 2, \"embedding_dim\": 2, "
     "\"sede\": 1}}]}",
     "tables[0].init.sede: unknown key"},
    {"{\"tables\": [{\"name\": \"a\", \"init\": {\"num_embeddings\": 2, \"embedding_dim\": 2}, "
     "\"vocab\": \"v.txt\"}]}",
     "tables[0].vocab: only for tables read from a path"},
    {"{\"tables\": [{\"name\": \"a\", \"init\": {\"num_embeddings\": 4, \"embedding_dim\": 2}, "
     "\"padding_idx\": 4}]}",
     "tables[0].padding_idx: must be in [-4, 4)"},
    {"{\"tables\": [{\"name\": \"a\", \"init\": {\"num_embeddings\": 4, \"embedding_dim\": 2}, "
     "\"oov\": 9}]}",
     "tables[0].oov: id must be < num_embeddings 4"},
    {"{\"tables\": [{\"name\": \"a\", \"path\": \"x\", \"padding_idx\": 1.5}]}",
     "tables[0].padding_idx: must be an integer or null"},
    {"{\"tables\": [{\"name\": \"a\", \"path\": \"x\", \"freeze\": \"yes\"}]}",
     "tables[0].freeze: must be true or false"},
    {"{\"tables\": [{\"name\": \"a\", \"path\": \"x\", \"max_norm\": 0}]}",
     "tables[0].max_norm: must be a finite number > 0"},
    {"{\"tables\": [{\"name\": \"a\", \"path\": \"x\", \"norm_type\": 0}]}",
     "tables[0].norm_type: must be a finite number > 0, or \"inf\""},
    {"{\"tables\": [{\"name\": \"a\", \"path\": \"x\", \"norm_type\": -2}]}", "tables[0].norm_type"},
    {"{\"tables\": [{\"name\": \"a\", \"path\": \"x\", \"oov\": \"skip\"}]}",
     "tables[0].oov: must be \"error\" or an id >= 0"},
    {"{\"tables\": [{\"name\": \"a\", \"path\": \"x\", \"optimizer\": {\"lr\": 1}}]}",
     "tables[0].optimizer.name: missing"},
    {"{\"tables\": [{\"name\": \"a\", \"path\": \"x\", \"optimizer\": {\"name\": \"adam\"}}]}",
     "tables[0].optimizer.name: must be \"sgd\", \"sparse_adam\" or \"adagrad\""},
    {"{\"tables\": [{\"name\": \"a\", \"path\": \"x\", \"optimizer\": {\"name\": \"sgd\", "
     "\"lr\": 0}}]}",
     "tables[0].optimizer.lr: must be finite and > 0"},
    {"{\"tables\": [{\"name\": \"a\", \"path\": \"x\", \"optimizer\": {\"name\": \"sgd\", "
     "\"lr\": -1}}]}",
     "tables[0].optimizer.lr: must be finite and > 0"},
    {"{\"tables\": [{\"name\": \"a\", \"path\": \"x\", \"optimizer\": {\"name\": \"sgd\", "
     "\"lr\": 1e999}}]}",
     "tables[0].optimizer.lr: must be finite and > 0"},
    {"{\"tables\": [{\"name\": \"a\", \"path\": \"x\", \"optimizer\": {\"name\": \"sparse_adam\", "
     "\"betas\": [0.9, 1.0]}}]}",
     "tables[0].optimizer.betas: must be [beta1, beta2], each in [0, 1)"},
    {"{\"tables\": [{\"name\": \"a\", \"path\": \"x\", \"optimizer\": {\"name\": \"sparse_adam\", "
     "\"betas\": [0.9]}}]}",
     "tables[0].optimizer.betas: must be"},
    {"{\"tables\": [{\"name\": \"a\", \"path\": \"x\", \"optimizer\": {\"name\": \"sparse_adam\", "
     "\"betas\": [-0.1, 0.5]}}]}",
     "tables[0].optimizer.betas: must be"},
    {"{\"tables\": [{\"name\": \"a\", \"path\": \"x\", \"optimizer\": {\"name\": \"adagrad\", "
     "\"eps\": -1e-10}}]}",
     "tables[0].optimizer.eps: must be finite and >= 0"},
    {"{\"tables\": [{\"name\": \"a\", \"path\": \"x\", \"optimizer\": {\"name\": \"sparse_adam\", "
     "\"eps\": 0}}]}",
     "tables[0].optimizer.eps: must be finite and > 0"},
    {"{\"tables\": [{\"name\": \"a\", \"path\": \"x\", \"optimizer\": {\"name\": \"adagrad\", "
     "\"lr_decay\": -1}}]}",
     "tables[0].optimizer.lr_decay: must be finite and >= 0"},
    {"{\"tables\": [{\"name\": \"a\", \"path\": \"x\", \"optimizer\": {\"name\": \"sgd\", "
     "\"betas\": [0.9, 0.99]}}]}",
     "tables[0].optimizer.betas: not a setting of sgd (it takes lr)"},
    {"{\"tables\": [{\"name\": \"a\", \"path\": \"x\", \"optimizer\": {\"name\": \"sgd\", "
     "\"momentum\": 0.9}}]}",
     "tables[0].optimizer.momentum: unknown key"},
    /* beyond int64_t: found by fuzzing, the integer check cast before it
     * compared the range (undefined behaviour, UBSan aborts) */
    {"{\"limits\": {\"max_connections_per_ip\": 6433333333333333333333}}",
     "limits.max_connections_per_ip: must be an integer in ["},
    {"{\"limits\": {\"max_batch\": 1e400}}", "limits.max_batch: must be an integer in ["},
    {"{\"listen\": {\"port\": -1e300}}", "listen.port: must be an integer in ["},
    {"[1, 2]", "cfg.json: the top level must be a JSON object"},
    /* syntax errors say where and what was expected, as request bodies do */
    {"{\"data_dir\": }", "cfg.json:1:14: invalid JSON: unexpected byte, expected a value"},
    {"{\n  \"data_dir\": \"x\",\n}", "cfg.json:3:1: invalid JSON: expected a string key"},
    {"{\"data_dir\": \"x\"} {}", "cfg.json:1:19: invalid JSON: trailing bytes after the JSON value"},
    {"{\"data_dir\" \"x\"}", "cfg.json:1:13: invalid JSON: expected ':' after an object key"},
    {"{\"data_dir\": \"x\" \"threads\": 2}",
     "cfg.json:1:18: invalid JSON: expected ',' or '}' in an object"},
    {"{\"data_dir\": \"\xC3\"}", "cfg.json:1:15: invalid JSON: invalid UTF-8 in string"},
    {"{\"limits\": {\"max_k\": 5,}}", "cfg.json:1:24: invalid JSON: expected a string key"},
    {"{\"snapshot\": {\"on_shutdown\": 1}}", "snapshot.on_shutdown: must be true or false"},
    {"{\"snapshot\": {\"on_shutdown\": \"true\"}}", "snapshot.on_shutdown: must be true or false"},
};

START_TEST(test_errors_name_the_key)
{
    struct config c;
    char err[512] = "";
    int rc = parse(&c, bad_configs[_i].json, err, sizeof err);
    ck_assert_msg(rc == CORE_EINVAL, "accepted: %s", bad_configs[_i].json);
    ck_assert_msg(strstr(err, bad_configs[_i].want) != NULL, "for %s\n want \"%s\"\n  got \"%s\"",
                  bad_configs[_i].json, bad_configs[_i].want, err);
    config_deinit(&c);
}
END_TEST

START_TEST(test_too_many_tables)
{
    char json[16384];
    size_t used = (size_t)snprintf(json, sizeof json, "{\"tables\": [");
    for (int i = 0; i <= CONFIG_MAX_TABLES; i++)
        used += (size_t)snprintf(json + used, sizeof json - used,
                                 "%s{\"name\": \"t%d\", \"path\": \"x\"}", i ? "," : "", i);
    snprintf(json + used, sizeof json - used, "]}");
    struct config c;
    char err[512] = "";
    ck_assert_int_eq(parse(&c, json, err, sizeof err), CORE_EINVAL);
    ck_assert_msg(strstr(err, "tables: at most 64 tables, got 65"), "%s", err);
    config_deinit(&c);
}
END_TEST

START_TEST(test_nul_and_missing_file)
{
    struct config c;
    char err[512] = "";
    ck_assert_int_eq(config_init(&c), CORE_OK);
    const char text[] = "{\"data_dir\": \"a\0b\"}";
    ck_assert_int_eq(config_parse_json(&c, text, sizeof text - 1, NULL, "n.json", err, sizeof err),
                     CORE_EINVAL);
    ck_assert_msg(strstr(err, "n.json:1:16: NUL byte"), "%s", err);
    ck_assert_int_eq(config_parse_file(&c, "/nonexistent/cfg.json", err, sizeof err), CORE_EIO);
    ck_assert_msg(strstr(err, "/nonexistent/cfg.json: cannot open"), "%s", err);
    ck_assert_str_eq(c.data_dir, "./data"); /* failures change nothing visible */
    config_deinit(&c);
}
END_TEST

static char *write_config(const char *dir, const char *name, const char *json)
{
    return testutil_write_file(dir, name, json, strlen(json));
}

START_TEST(test_precedence)
{
    char *dir = testutil_tmpdir();
    char *file = write_config(dir, "cfg.json",
                              "{\"listen\": {\"host\": \"10.0.0.1\", \"port\": 9001},"
                              " \"threads\": 3, \"log_level\": \"warn\", \"data_dir\": \"/f\","
                              " \"tables\": [{\"name\": \"a\", \"path\": \"x.vec\"}]}");
    setenv("EMBEDDING_SERVER_PORT", "9002", 1);
    setenv("EMBEDDING_SERVER_THREADS", "4", 1);
    setenv("EMBEDDING_SERVER_DATA_DIR", "/e", 1);
    setenv("EMBEDDING_SERVER_LOG_LEVEL", "", 1); /* empty = unset */
    char *const argv[] = {"embedding-server", "--config", file, "--port", "9003",
                          "--data-dir=/g", NULL};
    struct config c;
    enum config_action action;
    char err[512] = "";
    ck_assert_msg(config_load(&c, 6, argv, &action, err, sizeof err) == CORE_OK, "%s", err);
    ck_assert_int_eq(action, CONFIG_RUN);
    ck_assert_int_eq(c.port, 9003);              /* flag over env over file */
    ck_assert_str_eq(c.data_dir, "/g");          /* flag */
    ck_assert_int_eq(c.threads, 4);              /* env over file */
    ck_assert_str_eq(c.host, "10.0.0.1");        /* file over default */
    ck_assert_int_eq(c.log_level, CONFIG_LOG_WARN);
    ck_assert_int_eq(c.max_k, 1000);             /* default */
    ck_assert_str_eq(c.config_path, file);
    ck_assert_uint_eq(c.ntables, 1);
    ck_assert(!c.builtin_default);
    config_deinit(&c);

    /* EMBEDDING_SERVER_CONFIG names the file when there is no --config */
    setenv("EMBEDDING_SERVER_CONFIG", file, 1);
    char *const argv2[] = {"embedding-server", NULL};
    ck_assert_msg(config_load(&c, 1, argv2, &action, err, sizeof err) == CORE_OK, "%s", err);
    ck_assert_str_eq(c.host, "10.0.0.1");
    ck_assert_int_eq(c.port, 9002);
    config_deinit(&c);
    free(file);
    testutil_rmtree(dir);
}
END_TEST

START_TEST(test_env_and_flag_errors)
{
    struct config c;
    enum config_action action;
    char err[512] = "";
    char *const argv[] = {"embedding-server", NULL};
    setenv("EMBEDDING_SERVER_PORT", "80x", 1);
    ck_assert_int_eq(config_load(&c, 1, argv, &action, err, sizeof err), CORE_EINVAL);
    ck_assert_msg(strstr(err, "EMBEDDING_SERVER_PORT: must be an integer in [0, 65535], got \"80x\""),
                  "%s", err);
    ck_assert_ptr_null(c.host); /* left deinit'ed */
    unsetenv("EMBEDDING_SERVER_PORT");

    /* booleans take exactly what --help says: true or false */
    static const char *const not_bools[] = {"maybe", "1", "0", "yes", "on", "True", ""};
    for (size_t i = 0; i + 1 < sizeof not_bools / sizeof not_bools[0]; i++) {
        setenv("EMBEDDING_SERVER_SNAPSHOT_ON_SHUTDOWN", not_bools[i], 1);
        ck_assert_int_eq(config_load(&c, 1, argv, &action, err, sizeof err), CORE_EINVAL);
        ck_assert_msg(strstr(err, "EMBEDDING_SERVER_SNAPSHOT_ON_SHUTDOWN: must be true or false"),
                      "%s: %s", not_bools[i], err);
    }
    setenv("EMBEDDING_SERVER_SNAPSHOT_ON_SHUTDOWN", "false", 1);
    ck_assert_msg(config_load(&c, 1, argv, &action, err, sizeof err) == CORE_OK, "%s", err);
    ck_assert(!c.snapshot_on_shutdown);
    config_deinit(&c);
    unsetenv("EMBEDDING_SERVER_SNAPSHOT_ON_SHUTDOWN");
    char *const bool_flag[] = {"embedding-server", "--snapshot-on-shutdown=no", NULL};
    ck_assert_int_eq(config_load(&c, 2, bool_flag, &action, err, sizeof err), CORE_EINVAL);
    ck_assert_msg(strstr(err, "--snapshot-on-shutdown: must be true or false, got \"no\""), "%s",
                  err);

    /* --config naming a directory says so */
    char *dir = testutil_tmpdir();
    char *const dir_flag[] = {"embedding-server", "--config", dir, NULL};
    ck_assert_int_eq(config_load(&c, 3, dir_flag, &action, err, sizeof err), CORE_EINVAL);
    ck_assert_msg(strstr(err, "is a directory; --config takes the JSON file itself"), "%s", err);
    testutil_rmtree(dir);

    /* the new limits come from flags and the environment like the others */
    setenv("EMBEDDING_SERVER_MAX_ANSWER_BYTES", "4096", 1);
    char *const limit_flags[] = {"embedding-server", "--header-timeout", "3",
                                 "--min-body-rate=100", NULL};
    ck_assert_msg(config_load(&c, 4, limit_flags, &action, err, sizeof err) == CORE_OK, "%s",
                  err);
    ck_assert_uint_eq(c.max_answer_bytes, 4096);
    ck_assert_int_eq(c.header_timeout_s, 3);
    ck_assert_uint_eq(c.min_body_rate, 100);
    config_deinit(&c);
    unsetenv("EMBEDDING_SERVER_MAX_ANSWER_BYTES");

    static const struct {
        const char *a, *b, *want;
    } bad_flags[] = {
        {"--bogus", "1", "--bogus: unknown option"},
        {"--max-k", "1001", "--max-k: must be an integer in [1, 1000], got 1001"},
        {"--port", "+80", "--port: must be an integer"},
        {"--log-level=loud", NULL, "--log-level: must be error, warn, info or debug"},
        {"--threads", NULL, "--threads: needs a value"},
        {"serve", NULL, "unexpected argument \"serve\""},
        {"--config", NULL, "--config: needs a file name"},
        {"--config", "/nonexistent.json", "/nonexistent.json: cannot open"},
        {"--read-token", "x", "--read-token: unknown option"}, /* tokens stay out of ps */
    };
    for (size_t i = 0; i < sizeof bad_flags / sizeof bad_flags[0]; i++) {
        char *const av[] = {"embedding-server", (char *)bad_flags[i].a, (char *)bad_flags[i].b,
                            NULL};
        int ac = bad_flags[i].b ? 3 : 2;
        ck_assert_int_ne(config_load(&c, ac, av, &action, err, sizeof err), CORE_OK);
        ck_assert_msg(strstr(err, bad_flags[i].want), "%s %s: want \"%s\", got \"%s\"",
                      bad_flags[i].a, bad_flags[i].b ? bad_flags[i].b : "", bad_flags[i].want,
                      err);
    }
}
END_TEST

START_TEST(test_actions)
{
    struct config c;
    enum config_action action;
    char err[512] = "";
    /* --help works even when the environment is broken */
    setenv("EMBEDDING_SERVER_PORT", "nope", 1);
    char *const help[] = {"embedding-server", "--port", "1", "-h", NULL};
    ck_assert_int_eq(config_load(&c, 4, help, &action, err, sizeof err), CORE_OK);
    ck_assert_int_eq(action, CONFIG_HELP);
    config_deinit(&c);
    char *const version[] = {"embedding-server", "--version", NULL};
    ck_assert_int_eq(config_load(&c, 2, version, &action, err, sizeof err), CORE_OK);
    ck_assert_int_eq(action, CONFIG_VERSION);
    config_deinit(&c);
    unsetenv("EMBEDDING_SERVER_PORT");
    char *const check[] = {"embedding-server", "--check-config", "--port=0", NULL};
    ck_assert_msg(config_load(&c, 3, check, &action, err, sizeof err) == CORE_OK, "%s", err);
    ck_assert_int_eq(action, CONFIG_CHECK);
    ck_assert_int_eq(c.port, 0); /* ephemeral */
    config_deinit(&c);
}
END_TEST

START_TEST(test_relative_paths)
{
    char *dir = testutil_tmpdir();
    char sub[512];
    snprintf(sub, sizeof sub, "%s/sub", dir);
    ck_assert_int_eq(mkdir(sub, 0700), 0);
    const char *json = "{\"tables\": [{\"name\": \"a\", \"path\": \"vec/a.vec\"},"
                       " {\"name\": \"b\", \"path\": \"/abs/b.npy\", \"vocab\": \"../v.txt\"}]}";
    char *file = write_config(sub, "cfg.json", json);
    struct config c;
    char err[512] = "", want[600];
    ck_assert_int_eq(config_init(&c), CORE_OK);
    ck_assert_msg(config_parse_file(&c, file, err, sizeof err) == CORE_OK, "%s", err);
    snprintf(want, sizeof want, "%s/vec/a.vec", sub);
    ck_assert_str_eq(c.tables[0].path, want);
    ck_assert_str_eq(c.tables[1].path, "/abs/b.npy");
    snprintf(want, sizeof want, "%s/../v.txt", sub);
    ck_assert_str_eq(c.tables[1].vocab, want);
    config_deinit(&c);

    /* a cwd-relative config path gives cwd-relative table paths */
    char cwd[512];
    ck_assert_ptr_nonnull(getcwd(cwd, sizeof cwd));
    ck_assert_int_eq(chdir(dir), 0);
    ck_assert_int_eq(config_init(&c), CORE_OK);
    ck_assert_msg(config_parse_file(&c, "sub/cfg.json", err, sizeof err) == CORE_OK, "%s", err);
    ck_assert_str_eq(c.tables[0].path, "sub/vec/a.vec");
    config_deinit(&c);
    free(file);
    file = write_config(dir, "top.json", json);
    ck_assert_int_eq(config_init(&c), CORE_OK);
    ck_assert_msg(config_parse_file(&c, "top.json", err, sizeof err) == CORE_OK, "%s", err);
    ck_assert_str_eq(c.tables[0].path, "vec/a.vec");
    config_deinit(&c);
    ck_assert_int_eq(chdir(cwd), 0);
    free(file);
    testutil_rmtree(dir);
}
END_TEST

START_TEST(test_tokens_from_env)
{
    struct config c;
    enum config_action action;
    char err[512] = "";
    char *const argv[] = {"embedding-server", NULL};
    setenv("EMBEDDING_SERVER_READ_TOKEN", "r-secret", 1);
    setenv("EMBEDDING_SERVER_WRITE_TOKEN", "w-secret", 1);
    ck_assert_msg(config_load(&c, 1, argv, &action, err, sizeof err) == CORE_OK, "%s", err);
    ck_assert_str_eq(c.read_token, "r-secret");
    ck_assert_str_eq(c.write_token, "w-secret");
    config_deinit(&c);

    /* the environment beats the file for tokens too */
    char *dir = testutil_tmpdir();
    char *file = write_config(dir, "c.json",
                              "{\"auth\": {\"read_token\": \"file-r\", \"write_token\": \"file-w\"}}");
    unsetenv("EMBEDDING_SERVER_READ_TOKEN");
    char *const argv2[] = {"embedding-server", "--config", file, NULL};
    ck_assert_msg(config_load(&c, 3, argv2, &action, err, sizeof err) == CORE_OK, "%s", err);
    ck_assert_str_eq(c.read_token, "file-r");
    ck_assert_str_eq(c.write_token, "w-secret");
    config_deinit(&c);

    /* a read token alone would leave writes open while reads are closed */
    unsetenv("EMBEDDING_SERVER_WRITE_TOKEN");
    setenv("EMBEDDING_SERVER_READ_TOKEN", "r-secret", 1);
    ck_assert_int_eq(config_load(&c, 1, argv, &action, err, sizeof err), CORE_EINVAL);
    ck_assert_msg(strstr(err, "auth.read_token is set but auth.write_token is not"), "%s", err);
    free(file);
    testutil_rmtree(dir);
}
END_TEST

START_TEST(test_builtin_default)
{
    struct config c;
    enum config_action action;
    char err[512] = "";
    char *const argv[] = {"embedding-server", NULL};
    ck_assert_msg(config_load(&c, 1, argv, &action, err, sizeof err) == CORE_OK, "%s", err);
    ck_assert(c.builtin_default);
    ck_assert_uint_eq(c.ntables, 1);
    ck_assert_str_eq(c.tables[0].name, "words");
    ck_assert_str_eq(c.tables[0].path, SOURCE_DIR "/config/default/words.vec");
    ck_assert_int_eq(c.tables[0].format, LOADER_WORD2VEC);
    ck_assert(c.tables[0].settings.freeze);
    ck_assert_int_eq(c.tables[0].settings.oov_id, -1);
    config_deinit(&c);

    char *dir = testutil_tmpdir();
    char *vec = write_config(dir, "mine.vec", "1 2\nx 1 2\n");
    setenv("EMBEDDING_SERVER_DEFAULT_TABLE", vec, 1);
    ck_assert_msg(config_load(&c, 1, argv, &action, err, sizeof err) == CORE_OK, "%s", err);
    ck_assert_str_eq(c.tables[0].path, vec);
    config_deinit(&c);

    setenv("EMBEDDING_SERVER_DEFAULT_TABLE", "/nonexistent/words.vec", 1);
    ck_assert_int_eq(config_load(&c, 1, argv, &action, err, sizeof err), CORE_ENOTFOUND);
    ck_assert_msg(strstr(err, "EMBEDDING_SERVER_DEFAULT_TABLE=/nonexistent/words.vec: no such file"),
                  "%s", err);
    free(vec);
    testutil_rmtree(dir);
}
END_TEST

static const float *row_of(const struct matrix *m, const struct vocab *v, const char *tok)
{
    int64_t id = vocab_find(v, tok, strlen(tok));
    ck_assert_msg(id >= 0, "%s missing from the default table", tok);
    return matrix_row(m, id);
}

static double cosine(const float *a, const float *b, int64_t dim)
{
    double ab = 0, aa = 0, bb = 0;
    for (int64_t i = 0; i < dim; i++) {
        ab += (double)a[i] * b[i];
        aa += (double)a[i] * a[i];
        bb += (double)b[i] * b[i];
    }
    return ab / (sqrt(aa) * sqrt(bb));
}

/* The shipped words.vec loads as the built-in config says, and its vectors
 * mean something: gold sits nearer silver than an unrelated word. */
START_TEST(test_default_table_loads)
{
    struct loader_opts o = {.format = LOADER_WORD2VEC};
    struct matrix m = {0};
    struct vocab *v = NULL;
    char err[512] = "";
    int rc = loader_load(SOURCE_DIR "/config/default/words.vec", &o, &m, &v, err, sizeof err);
    ck_assert_msg(rc == CORE_OK, "%s", err);
    ck_assert_int_eq(m.rows, 5278);
    ck_assert_int_eq(m.dim, 64);
    ck_assert_ptr_nonnull(v);
    ck_assert_int_eq(vocab_size(v), 5278);
    const float *gold = row_of(&m, v, "gold");
    double silver = cosine(gold, row_of(&m, v, "silver"), m.dim);
    double sheep = cosine(gold, row_of(&m, v, "sheep"), m.dim);
    ck_assert_msg(silver > 0.7 && silver > sheep + 0.3, "gold~silver %f, gold~sheep %f", silver,
                  sheep);
    matrix_deinit(&m);
    vocab_free(v);

    /* words.json describes the same table */
    struct config c;
    ck_assert_int_eq(config_init(&c), CORE_OK);
    ck_assert_msg(config_parse_file(&c, SOURCE_DIR "/config/default/words.json", err, sizeof err) ==
                      CORE_OK, "%s", err);
    ck_assert_uint_eq(c.ntables, 1);
    ck_assert_str_eq(c.tables[0].name, "words");
    ck_assert_str_eq(c.tables[0].path, SOURCE_DIR "/config/default/words.vec");
    ck_assert(c.tables[0].settings.freeze);
    config_deinit(&c);
}
END_TEST

START_TEST(test_help_mentions_everything)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    ck_assert_ptr_nonnull(f);
    config_print_help(f, "embedding-server");
    ck_assert_int_eq(fclose(f), 0);
    ck_assert(strstr(text, "Usage: embedding-server"));
    for (size_t i = 0; i < config_noptions; i++) {
        const struct config_option *o = &config_options[i];
        char env[96];
        snprintf(env, sizeof env, "EMBEDDING_SERVER_%s", o->env);
        ck_assert_msg(strstr(text, o->key), "help lacks key %s", o->key);
        ck_assert_msg(strstr(text, env), "help lacks %s", env);
        if (o->flag)
            ck_assert_msg(strstr(text, o->flag), "help lacks %s", o->flag);
        if (o->def) {
            char def[96];
            snprintf(def, sizeof def, "default %s", o->def);
            ck_assert_msg(strstr(text, def), "help lacks the default of %s", o->key);
        }
    }
    static const char *const more[] = {
        "--config", "EMBEDDING_SERVER_CONFIG", "EMBEDDING_SERVER_DEFAULT_TABLE", "--help",
        "--version", "--check-config", "padding_idx", "max_norm", "norm_type",
        "scale_grad_by_freq", "optimizer", "oov", "init", "vocab", "tensor", "format", "freeze",
        "sparse_adam", "\"tables\"", "curl",
    };
    for (size_t i = 0; i < sizeof more / sizeof more[0]; i++)
        ck_assert_msg(strstr(text, more[i]), "help lacks %s", more[i]);
    free(text);
}
END_TEST

START_TEST(test_log_levels)
{
    static const char *const names[] = {"error", "warn", "info", "debug"};
    for (int i = 0; i < 4; i++) {
        enum config_log_level l;
        ck_assert(config_log_level_parse(names[i], &l));
        ck_assert_int_eq(l, i);
        ck_assert_str_eq(config_log_level_name(l), names[i]);
    }
    enum config_log_level l = CONFIG_LOG_WARN;
    ck_assert(!config_log_level_parse("INFO", &l));
    ck_assert(!config_log_level_parse(NULL, &l));
    ck_assert_int_eq(l, CONFIG_LOG_WARN);
}
END_TEST

/* The "cluster" section: nats as an array (joined) or a string, the other
 * keys through the option table, and the rules that span sections. */
START_TEST(test_cluster_section)
{
    struct config c;
    char err[512] = "";
    ck_assert_int_eq(parse(&c, "{\"cluster\": {\"nats\": [\"nats://a:4222\", \"nats://b:4222\"],"
                               " \"node\": \"es-1\", \"stream_replicas\": 1, \"wait_ms\": 50}}",
                           err, sizeof err),
                     CORE_OK);
    ck_assert_str_eq(c.cluster_nats, "nats://a:4222,nats://b:4222");
    ck_assert_str_eq(c.cluster_node, "es-1");
    ck_assert_int_eq(c.cluster_stream_replicas, 1);
    ck_assert_int_eq(c.cluster_wait_ms, 50);
    ck_assert_int_eq(c.cluster_publish_timeout_ms, 5000);
    config_deinit(&c);

    ck_assert_int_eq(parse(&c, "{\"cluster\": {\"nats\": \"nats://a:4222\"}}", err, sizeof err),
                     CORE_OK);
    ck_assert_str_eq(c.cluster_nats, "nats://a:4222");
    ck_assert_int_eq(c.cluster_stream_replicas, 3);
    config_deinit(&c);

    ck_assert_int_eq(parse(&c, "{}", err, sizeof err), CORE_OK);
    ck_assert_ptr_null(c.cluster_nats); /* off unless asked for */
    config_deinit(&c);

    ck_assert_int_eq(parse(&c, "{\"cluster\": {\"nats\": []}}", err, sizeof err), CORE_EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "cluster.nats: must list at least one NATS URL"));
    config_deinit(&c);
    ck_assert_int_eq(parse(&c, "{\"cluster\": {\"nats\": [\"a\", 3]}}", err, sizeof err),
                     CORE_EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "cluster.nats[1]"));
    config_deinit(&c);
    ck_assert_int_eq(parse(&c, "{\"cluster\": {\"stream_replicas\": 7}}", err, sizeof err),
                     CORE_EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "cluster.stream_replicas"));
    config_deinit(&c);
    ck_assert_int_eq(parse(&c, "{\"cluster\": {\"natz\": 1}}", err, sizeof err), CORE_EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "cluster.natz: unknown key"));
    config_deinit(&c);

    ck_assert_int_eq(parse(&c, "{\"cluster\": {\"nats\": [\"nats://a:4222\"]}, \"tables\": "
                               "[{\"name\": \"t\", \"init\": {\"num_embeddings\": 4, "
                               "\"embedding_dim\": 2}, \"resume\": false}]}", err, sizeof err),
                     CORE_OK);
    ck_assert_int_eq(config_validate(&c, err, sizeof err), CORE_EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "tables[0].resume"));
    config_deinit(&c);

    setenv("EMBEDDING_SERVER_NATS", "nats://x:1,nats://y:2", 1);
    ck_assert_int_eq(config_init(&c), CORE_OK);
    ck_assert_int_eq(config_apply_env(&c, err, sizeof err), CORE_OK);
    ck_assert_str_eq(c.cluster_nats, "nats://x:1,nats://y:2");
    unsetenv("EMBEDDING_SERVER_NATS");
    config_deinit(&c);
}
END_TEST

static Suite *config_suite(void)
{
    Suite *s = suite_create("config");
    TCase *tc = tcase_create("config");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_defaults);
    tcase_add_test(tc, test_api_example);
    tcase_add_test(tc, test_example_file);
    tcase_add_test(tc, test_table_settings);
    tcase_add_loop_test(tc, test_errors_name_the_key, 0,
                        (int)(sizeof bad_configs / sizeof bad_configs[0]));
    tcase_add_test(tc, test_too_many_tables);
    tcase_add_test(tc, test_nul_and_missing_file);
    tcase_add_test(tc, test_precedence);
    tcase_add_test(tc, test_env_and_flag_errors);
    tcase_add_test(tc, test_actions);
    tcase_add_test(tc, test_relative_paths);
    tcase_add_test(tc, test_tokens_from_env);
    tcase_add_test(tc, test_builtin_default);
    tcase_add_test(tc, test_default_table_loads);
    tcase_add_test(tc, test_help_mentions_everything);
    tcase_add_test(tc, test_log_levels);
    tcase_add_test(tc, test_cluster_section);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(config_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
