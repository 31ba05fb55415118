#include "util/common.h"
#include "util/yaml.h"
#include "tap.h"

static json_t *load(const char *text, char **ret_msg)
{
    json_t *v = NULL;
    struct kiln_error *err = NULL;
    if (kiln_yaml_load(text, strlen(text), &v, &err) < 0) {
        if (ret_msg)
            *ret_msg = kiln_xstrdup(err->msg);
        kiln_error_free(err);
        return NULL;
    }
    return v;
}

static void bad(const char *text, const char *want)
{
    char *msg = NULL;
    json_t *v = load(text, &msg);
    ok(!v && msg && strstr(msg, want), "rejects [%s]: %s", text, msg ? msg : "accepted");
    json_decref(v);
    free(msg);
}

static void roundtrip(const char *text)
{
    json_t *v = load(text, NULL);
    struct kiln_buf out = KILN_BUF_INIT;
    struct kiln_error *err = NULL;
    ok(v && kiln_yaml_dump(v, &out, &err) == 0, "dump [%s]", text);
    json_t *w = load(out.buf, NULL);
    ok(v && w && json_equal(v, w), "round trip [%s] -> [%s]", text, out.buf);
    json_decref(v);
    json_decref(w);
    kiln_buf_release(&out);
    kiln_error_free(err);
}

int main(void)
{
    json_t *v = load("name: x\nlist: [a, 'b', \"c\"]\nn: 3.8\nt: true\nz: ~\ne:\n", NULL);
    ok(json_is_object(v), "mapping loads as object");
    is_str(json_string_value(json_object_get(v, "name")), "x", "plain string");
    is_int(json_array_size(json_object_get(v, "list")), 3, "flow sequence");
    is_str(json_string_value(json_object_get(v, "n")), "3.8", "numbers stay text");
    is_str(json_string_value(json_object_get(v, "t")), "true", "booleans stay text");
    ok(json_is_null(json_object_get(v, "z")), "~ is null");
    ok(json_is_null(json_object_get(v, "e")), "empty value is null");
    json_decref(v);

    v = load("a: 'null'\nb: \"~\"\n", NULL);
    is_str(json_string_value(json_object_get(v, "a")), "null", "quoted null is a string");
    is_str(json_string_value(json_object_get(v, "b")), "~", "quoted ~ is a string");
    json_decref(v);

    v = load("pip: |\n  numpy\n  pandas\n", NULL);
    is_str(json_string_value(json_object_get(v, "pip")), "numpy\npandas\n", "literal block");
    json_decref(v);

    bad("a: [1, 2", "yaml: line");
    bad("a: 1\na: 2\n", "duplicate key a");
    bad("a: &x 1\nb: *x\n", "not supported");
    bad("a: 1\n---\nb: 2\n", "only one document");
    bad("", "empty");
    bad("? [a]\n: b\n", "mapping keys must be plain text");
    bad("a:\n\tb: 1\n", "yaml: line");

    /* deep nesting is capped */
    struct kiln_buf deep = KILN_BUF_INIT;
    for (int i = 0; i < KILN_YAML_MAX_DEPTH + 5; i++)
        kiln_buf_addch(&deep, '[');
    bad(deep.buf, "nested too deeply");
    kiln_buf_release(&deep);

    roundtrip("name: x\n");
    roundtrip("a: ['1.0', 'true', 'no', '~', '', '-x', '.5', 'null']\n");
    roundtrip("a: {b: [c, d], e: {}}\nf: []\n");
    roundtrip("s: \"line1\\nline2\\n\"\n");
    roundtrip("s: \"it's: # not a comment\"\n");
    roundtrip("u: \"caf\xc3\xa9\"\n");

    /* numbers and booleans from JSON are written plain */
    json_t *j = json_pack("{s:i, s:b, s:n}", "i", 3, "b", 1, "z");
    struct kiln_buf out = KILN_BUF_INIT;
    kiln_yaml_dump(j, &out, NULL);
    is_str(out.buf, "i: 3\nb: true\nz: null\n", "non-strings plain");
    kiln_buf_release(&out);
    json_decref(j);
    return tap_done();
}
