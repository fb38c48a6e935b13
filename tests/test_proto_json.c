/* test_proto_json.c - the strict JSON pass of proto/json.c: every rule it
 * adds to cJSON, each accepted and rejected, with the byte offset named. */
#include <check.h>
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "testutil.h"

/* Validates exactly len bytes from a malloc'd copy without a terminating
 * NUL, so ASan catches any read past the end. */
static enum status_code validate_n(const char *text, size_t len, size_t depth, char *err,
                                   size_t errlen)
{
    char *copy = malloc(len ? len : 1);
    ck_assert_ptr_nonnull(copy);
    memcpy(copy, text, len);
    enum status_code code = json_validate(copy, len, depth, err, errlen);
    free(copy);
    return code;
}

static void accept_n(const char *text, size_t len)
{
    char err[STATUS_ERR_MAX] = "";
    enum status_code code = validate_n(text, len, JSON_MAX_DEPTH, err, sizeof err);
    ck_assert_msg(code == STATUS_OK, "rejected %s: %s", text, err);
    ck_assert_str_eq(err, "");
}

static void accept(const char *text)
{
    accept_n(text, strlen(text));
}

static void reject_n(const char *text, size_t len, enum status_code want, const char *fragment)
{
    char err[STATUS_ERR_MAX] = "";
    enum status_code code = validate_n(text, len, JSON_MAX_DEPTH, err, sizeof err);
    ck_assert_msg(code == want, "%s: got %s (%s), want %s", text, status_name(code), err,
                  status_name(want));
    ck_assert_msg(strstr(err, fragment) != NULL, "%s: message \"%s\" lacks \"%s\"", text, err,
                  fragment);
}

static void reject(const char *text, const char *fragment)
{
    reject_n(text, strlen(text), STATUS_INVALID_JSON, fragment);
}

START_TEST(accepts_rfc8259_values)
{
    accept("{}");
    accept("[]");
    accept(" \t\r\n{\"a\" : 1 , \"b\":[ 1 , 2 ] }\n");
    accept("\"x\"");
    accept("0");
    accept("-0");
    accept("-0.5e+10");
    accept("1E-7");
    accept("123.456e78");
    accept("true");
    accept("false");
    accept("null");
    accept("[1,\"a\",true,false,null,{},[],{\"k\":[{}]}]");
    /* 63 characters is the longest number cJSON reads whole */
    accept("1234567890123456789012345678901234567890123456789012345678901.5");
}
END_TEST

START_TEST(rejects_bad_grammar)
{
    reject("", "byte 0: empty body");
    reject(" \n ", "byte 3: empty body");
    reject("{\"a\" 1}", "byte 5: expected ':'");
    reject("{\"a\":1,}", "byte 7: expected a string key");
    reject("{1:2}", "byte 1: expected a string key");
    reject("[1,]", "byte 3: unexpected byte");
    reject("[1 2]", "byte 3: expected ',' or ']'");
    reject("{\"a\":1 \"b\":2}", "byte 7: expected ',' or '}'");
    reject("[", "byte 1: unexpected end of input");
    reject("{\"a\":", "byte 5: unexpected end of input");
    reject("\"abc", "byte 0: unterminated string");
    reject("tru", "byte 0: unexpected bytes");
    reject("True", "byte 0: unexpected byte");
    reject("nul", "byte 0");
    reject("'a'", "byte 0");
    reject("\xEF\xBB\xBF{}", "byte 0"); /* a BOM is not JSON text */
}
END_TEST

START_TEST(rejects_bad_numbers)
{
    reject("01", "byte 1: trailing bytes");
    reject("1.", "byte 2: expected a digit after '.'");
    reject(".5", "byte 0: unexpected byte");
    reject("-", "byte 1: expected a digit");
    reject("-a", "byte 1: expected a digit");
    reject("+1", "byte 0");
    reject("1e", "byte 2: expected a digit in the exponent");
    reject("1e+", "byte 3: expected a digit in the exponent");
    reject("NaN", "byte 0");
    reject("Infinity", "byte 0");
    reject("-Infinity", "byte 1");
    reject("0x10", "byte 1: trailing bytes");
    reject("[12345678901234567890123456789012345678901234567890123456789012.5]",
           "byte 1: number longer than 63 characters");
}
END_TEST

START_TEST(rejects_trailing_bytes)
{
    reject("{} x", "byte 3: trailing bytes");
    reject("{}{}", "byte 2: trailing bytes");
    reject("1 2", "byte 2: trailing bytes");
    reject("[1],", "byte 3: trailing bytes");
    reject("{\"a\":1} x", "byte 8: trailing bytes");
    reject_n("{}\0", 3, STATUS_INVALID_JSON, "byte 2: trailing bytes");
    reject_n("{\"a\":1\0}", 8, STATUS_INVALID_JSON, "byte 6");
}
END_TEST

START_TEST(duplicate_keys_any_spelling_any_depth)
{
    accept("{\"a\":1,\"b\":{\"a\":2},\"c\":[{\"a\":3},{\"a\":4}]}");
    accept("{\"a\":{\"a\":{\"a\":1}}}");
    accept("{\"a\":1,\"A\":2,\"a \":3,\"\":4}");
    reject("{\"a\":1,\"a\":2}", "byte 7: duplicate key \"a\"");
    reject("{\"a\":1,\"\\u0061\":2}", "byte 7: duplicate key \"a\"");
    reject("{\"\":1,\"\":2}", "byte 6: duplicate key \"\"");
    reject("{\"x\":{\"b\":1,\"b\":2}}", "byte 12: duplicate key \"b\"");
    reject("[{\"ok\":1},{\"k\":[],\"k\":[]}]", "byte 18: duplicate key \"k\"");
    /* after a nested object closes, its keys no longer count... */
    accept("{\"x\":{\"b\":1},\"b\":2}");
    /* ...but the outer object's keys do */
    reject("{\"b\":{\"c\":1},\"b\":2}", "byte 13: duplicate key \"b\"");
}
END_TEST

START_TEST(duplicate_keys_in_large_objects)
{
    /* more keys than the pairwise check handles: the sorted path */
    char text[512];
    size_t n = (size_t)snprintf(text, sizeof text, "{");
    for (int i = 0; i < 20; i++)
        n += (size_t)snprintf(text + n, sizeof text - n, "%s\"k%02d\":%d", i ? "," : "", i, i);
    snprintf(text + n, sizeof text - n, "}");
    accept(text);
    /* the same with key 15 spelled as key 03 */
    char *dup = strstr(text, "\"k15\"");
    ck_assert_ptr_nonnull(dup);
    memcpy(dup, "\"k03\"", 5);
    char want[64];
    snprintf(want, sizeof want, "byte %zu: duplicate key \"k03\"", (size_t)(dup - text));
    reject(text, want);
}
END_TEST

START_TEST(accepts_valid_utf8_and_escapes)
{
    accept("\"\xC3\xA9\"");             /* é */
    accept("\"\xE2\x82\xAC\"");         /* € */
    accept("\"\xED\x9F\xBF\"");         /* U+D7FF, just below the surrogates */
    accept("\"\xEE\x80\x80\"");         /* U+E000, just above */
    accept("\"\xF0\x9D\x84\x9E\"");     /* U+1D11E */
    accept("\"\xF4\x8F\xBF\xBF\"");     /* U+10FFFF, the last code point */
    accept("{\"\xC3\xA9\":1,\"e\\u0301\":2}");
    accept("\"\\u00e9\\u20AC\\ud834\\udd1e\\uDBFF\\uDFFF\"");
    accept("\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"");
    accept("\"\\u0001\"");
}
END_TEST

START_TEST(rejects_invalid_utf8)
{
    reject("\"\xC0\x80\"", "byte 1: invalid UTF-8");     /* overlong NUL */
    reject("\"\xC1\xBF\"", "byte 1: invalid UTF-8");     /* overlong */
    reject("\"\xE0\x80\x80\"", "byte 1: invalid UTF-8"); /* overlong 3-byte */
    reject("\"\xE0\x9F\xBF\"", "byte 1: invalid UTF-8");
    reject("\"\xF0\x80\x80\x80\"", "byte 1: invalid UTF-8"); /* overlong 4-byte */
    reject("\"\xF0\x8F\xBF\xBF\"", "byte 1: invalid UTF-8");
    reject("\"\xED\xA0\x80\"", "byte 1: invalid UTF-8"); /* U+D800 encoded */
    reject("\"\xED\xBF\xBF\"", "byte 1: invalid UTF-8"); /* U+DFFF encoded */
    reject("\"\xF4\x90\x80\x80\"", "byte 1: invalid UTF-8"); /* U+110000 */
    reject("\"\xF5\x80\x80\x80\"", "byte 1: invalid UTF-8");
    reject("\"\xFF\"", "byte 1: invalid UTF-8");
    reject("\"a\x80\"", "byte 2: invalid UTF-8"); /* stray continuation */
    reject("\"\xC3\"", "byte 1: invalid UTF-8");   /* truncated by the quote */
    reject("\"\xE2\x82\"", "byte 1: invalid UTF-8");
    reject("\"\xF0\x9D\x84\"", "byte 1: invalid UTF-8");
    reject_n("\"\xE2\x82", 3, STATUS_INVALID_JSON, "byte 1: invalid UTF-8"); /* at the end */
    reject("{\"\xC3\x28\":1}", "byte 2: invalid UTF-8");                       /* in a key */
    reject("[\xC3\xA9]", "byte 1: unexpected byte"); /* UTF-8 outside strings */
}
END_TEST

START_TEST(rejects_bad_escapes_and_controls)
{
    reject("\"\\ud834\"", "byte 1: \\u escape is a high surrogate without a low one");
    reject("\"\\ud834x\"", "byte 1: \\u escape is a high surrogate");
    reject("\"\\ud834\\u0041\"", "byte 1: \\u escape is a high surrogate");
    reject("\"\\ud834\\ud834\"", "byte 1: \\u escape is a high surrogate");
    reject("\"\\udd1e\"", "byte 1: \\u escape is a lone low surrogate");
    reject("\"a\\uDC00\\uD800\"", "byte 2: \\u escape is a lone low surrogate");
    reject("\"\\x\"", "byte 1: invalid escape");
    reject("\"\\U00e9\"", "byte 1: invalid escape");
    reject("\"\\u12\"", "byte 5: \\u escape needs 4 hex digits");
    reject("\"\\u12G4\"", "byte 5: \\u escape needs 4 hex digits");
    reject_n("\"\\u12", 5, STATUS_INVALID_JSON, "truncated \\u escape");
    reject_n("\"\\", 2, STATUS_INVALID_JSON, "byte 1: unterminated string");
    reject("\"a\x01\"", "byte 2: control byte in string");
    reject("\"a\tb\"", "byte 2: control byte in string");
    reject("\"a\nb\"", "byte 2: control byte in string");
    reject_n("\"a\0b\"", 5, STATUS_INVALID_JSON, "byte 2: control byte in string");
}
END_TEST

START_TEST(nul_escape_is_invalid_argument)
{
    reject_n("\"\\u0000\"", 8, STATUS_INVALID_ARGUMENT, "byte 1");
    const char *in_token = "{\"tokens\":[\"ok\",\"a\\u0000b\"]}";
    reject_n(in_token, strlen(in_token), STATUS_INVALID_ARGUMENT,
             "string holds \\u0000 at byte 18; NUL characters are not allowed");
    const char *in_key = "{\"a\\u0000\":1}";
    reject_n(in_key, strlen(in_key), STATUS_INVALID_ARGUMENT, "\\u0000 at byte 3");
}
END_TEST

START_TEST(nesting_is_bounded)
{
    char err[STATUS_ERR_MAX];
    ck_assert_int_eq(validate_n("[[[1]]]", 7, 3, err, sizeof err), STATUS_OK);
    ck_assert_int_eq(validate_n("[[[[1]]]]", 9, 3, err, sizeof err), STATUS_INVALID_JSON);
    ck_assert_str_eq(err, "invalid JSON at byte 3: nested deeper than 3 levels");
    ck_assert_int_eq(validate_n("{\"a\":{\"b\":[[]]}}", 16, 4, err, sizeof err), STATUS_OK);
    ck_assert_int_eq(validate_n("{\"a\":{\"b\":[[[]]]}}", 18, 4, err, sizeof err),
                     STATUS_INVALID_JSON);

    /* the default limit, and far past it (no stack overflow) */
    size_t deep = 100000;
    char *text = malloc(2 * deep);
    ck_assert_ptr_nonnull(text);
    memset(text, '[', deep);
    memset(text + deep, ']', deep);
    ck_assert_int_eq(validate_n(text, 2 * JSON_MAX_DEPTH, JSON_MAX_DEPTH, err, sizeof err),
                     STATUS_INVALID_JSON); /* unbalanced halves, but depth comes first */
    char *ok = malloc(2 * JSON_MAX_DEPTH);
    ck_assert_ptr_nonnull(ok);
    memset(ok, '[', JSON_MAX_DEPTH);
    memset(ok + JSON_MAX_DEPTH, ']', JSON_MAX_DEPTH);
    ck_assert_int_eq(validate_n(ok, 2 * JSON_MAX_DEPTH, JSON_MAX_DEPTH, err, sizeof err),
                     STATUS_OK);
    ck_assert_int_eq(validate_n(text, 2 * deep, JSON_MAX_DEPTH, err, sizeof err),
                     STATUS_INVALID_JSON);
    ck_assert_ptr_nonnull(strstr(err, "nested deeper than 40 levels"));
    free(ok);
    free(text);
}
END_TEST

START_TEST(parse_builds_the_tree_from_the_true_length)
{
    char err[STATUS_ERR_MAX];
    struct cJSON *root = NULL;
    /* the bytes after len are not part of the body */
    const char body[] = "{\"a\":[1,2.5],\"s\":\"\\u00e9\"}GARBAGE";
    size_t len = sizeof body - 1 - strlen("GARBAGE");
    ck_assert_int_eq(json_parse(body, len, &root, err, sizeof err), STATUS_OK);
    ck_assert_ptr_nonnull(root);
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(root, "a");
    ck_assert_int_eq(cJSON_GetArraySize(a), 2);
    ck_assert_double_eq(cJSON_GetArrayItem(a, 1)->valuedouble, 2.5);
    ck_assert_str_eq(cJSON_GetObjectItemCaseSensitive(root, "s")->valuestring, "\xC3\xA9");
    cJSON_Delete(root);

    root = (struct cJSON *)1;
    ck_assert_int_eq(json_parse(body, sizeof body - 1, &root, err, sizeof err),
                     STATUS_INVALID_JSON);
    ck_assert_ptr_null(root);
    char want[96];
    snprintf(want, sizeof want, "invalid JSON at byte %zu: trailing bytes after the JSON value",
             len);
    ck_assert_str_eq(err, want);
}
END_TEST

START_TEST(utf8_len_classifies_sequences)
{
    ck_assert_uint_eq(json_utf8_len((const unsigned char *)"a", 1), 1);
    ck_assert_uint_eq(json_utf8_len((const unsigned char *)"\xC3\xA9", 2), 2);
    ck_assert_uint_eq(json_utf8_len((const unsigned char *)"\xC3\xA9", 1), 0);
    ck_assert_uint_eq(json_utf8_len((const unsigned char *)"\xE2\x82\xAC", 3), 3);
    ck_assert_uint_eq(json_utf8_len((const unsigned char *)"\xF4\x8F\xBF\xBF", 4), 4);
    ck_assert_uint_eq(json_utf8_len((const unsigned char *)"\xF4\x90\x80\x80", 4), 0);
    ck_assert_uint_eq(json_utf8_len((const unsigned char *)"\xBF", 1), 0);
}
END_TEST

/* ---- the in-place reader ---- */

START_TEST(keys_per_object_are_bounded)
{
    size_t cap = 16 * (JSON_MAX_KEYS + 2), n = 0;
    char *text = malloc(cap);
    ck_assert_ptr_nonnull(text);
    text[n++] = '{';
    for (int i = 0; i < JSON_MAX_KEYS; i++)
        n += (size_t)snprintf(text + n, cap - n, "%s\"k%d\":0", i ? "," : "", i);
    text[n++] = '}';
    accept_n(text, n);
    n--;
    n += (size_t)snprintf(text + n, cap - n, ",\"one_more\":0}");
    reject_n(text, n, STATUS_INVALID_ARGUMENT, "has more than 4096 keys");
    free(text);
}
END_TEST

START_TEST(validate_where_names_the_place)
{
    char what[160];
    size_t at = 99;
    const char text[] = "{\"a\": 1 \"b\": 2}";
    ck_assert_int_eq(json_validate_where(text, strlen(text), JSON_MAX_DEPTH, &at, what,
                                         sizeof what),
                     STATUS_INVALID_JSON);
    ck_assert_uint_eq(at, 8);
    ck_assert_str_eq(what, "expected ',' or '}' in an object");
    ck_assert_int_eq(json_validate_where("[1]", 3, JSON_MAX_DEPTH, &at, what, sizeof what),
                     STATUS_OK);
    ck_assert_uint_eq(at, 0);
    ck_assert_str_eq(what, "");
}
END_TEST

static struct json_value root_of(const char *text)
{
    struct json_value v;
    ck_assert(json_root(text, strlen(text), &v));
    return v;
}

START_TEST(reader_walks_values_in_place)
{
    const char *text = "  {\"a\": [1, [2, 3], {\"x\": \"]\"}, \"s,]\", -0.5e3], \"b\": null} ";
    struct json_value root = root_of(text), key, val, e;
    struct json_iter it, in;
    ck_assert_int_eq(json_type_of(root), JSON_OBJECT);
    ck_assert_uint_eq(root.len, strlen(text) - 3);
    ck_assert(json_iter_begin(&it, root));
    ck_assert(json_object_next(&it, &key, &val));
    ck_assert(json_string_is(key, "a"));
    ck_assert_int_eq(json_type_of(val), JSON_ARRAY);
    ck_assert_uint_eq(json_array_count(val), 5);
    static const enum json_type types[] = {JSON_NUMBER, JSON_ARRAY, JSON_OBJECT, JSON_STRING,
                                           JSON_NUMBER};
    ck_assert(json_iter_begin(&in, val));
    for (int i = 0; i < 5; i++) {
        ck_assert(json_array_next(&in, &e));
        ck_assert_int_eq(json_type_of(e), types[i]);
    }
    ck_assert(!json_array_next(&in, &e));
    ck_assert(json_number(e) == -500.0);
    ck_assert(json_object_next(&it, &key, &val));
    ck_assert(json_string_is(key, "b"));
    ck_assert_int_eq(json_type_of(val), JSON_NULL);
    ck_assert_str_eq(json_type_name(json_type_of(val)), "null");
    ck_assert(!json_object_next(&it, &key, &val));
    ck_assert_uint_eq(json_array_count(root_of("[]")), 0);
    ck_assert_uint_eq(json_array_count(root_of("[ ]")), 0);
    ck_assert_uint_eq(json_array_count(root_of("7")), 0);
    ck_assert(!json_root("   ", 3, &e));
}
END_TEST

START_TEST(reader_decodes_strings)
{
    char out[64];
    struct json_value v = root_of("\"a\\\"b\\\\c\\/\\n\\u00e9\\ud83d\\ude00\"");
    size_t n = json_string_decode(v, out);
    ck_assert_uint_eq(n, 13);
    ck_assert_mem_eq(out, "a\"b\\c/\n\xC3\xA9\xF0\x9F\x98\x80", 13);
    ck_assert(json_string_is(root_of("\"\\u006d\\u0065\\u0061n\""), "mean"));
    ck_assert(!json_string_is(root_of("\"mea\""), "mean"));
    ck_assert(!json_string_is(root_of("\"means\""), "mean"));
    ck_assert(!json_string_is(root_of("5"), "5"));
}
END_TEST

static Suite *proto_json_suite(void)
{
    Suite *s = suite_create("proto_json");
    TCase *tc = tcase_create("strict");
    tcase_add_test(tc, accepts_rfc8259_values);
    tcase_add_test(tc, rejects_bad_grammar);
    tcase_add_test(tc, rejects_bad_numbers);
    tcase_add_test(tc, rejects_trailing_bytes);
    tcase_add_test(tc, duplicate_keys_any_spelling_any_depth);
    tcase_add_test(tc, duplicate_keys_in_large_objects);
    tcase_add_test(tc, accepts_valid_utf8_and_escapes);
    tcase_add_test(tc, rejects_invalid_utf8);
    tcase_add_test(tc, rejects_bad_escapes_and_controls);
    tcase_add_test(tc, nul_escape_is_invalid_argument);
    tcase_add_test(tc, nesting_is_bounded);
    tcase_add_test(tc, parse_builds_the_tree_from_the_true_length);
    tcase_add_test(tc, utf8_len_classifies_sequences);
    tcase_add_test(tc, keys_per_object_are_bounded);
    tcase_add_test(tc, validate_where_names_the_place);
    tcase_add_test(tc, reader_walks_values_in_place);
    tcase_add_test(tc, reader_decodes_strings);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(proto_json_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
