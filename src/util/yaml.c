#include "util/common.h"
#include "util/yaml.h"

#include <yaml.h>

struct loader {
    yaml_parser_t parser;
    size_t nodes;
    struct kiln_error **err;
};

static int load_fail(struct loader *l, const yaml_event_t *ev, const char *fmt, const char *what)
{
    return kiln_error_set(l->err, KILN_EINVAL, 0, "yaml: line %zu column %zu: %s%s",
                          ev->start_mark.line + 1, ev->start_mark.column + 1, fmt, what);
}

static int next_event(struct loader *l, yaml_event_t *ev)
{
    if (!yaml_parser_parse(&l->parser, ev)) {
        const yaml_parser_t *p = &l->parser;
        return kiln_error_set(l->err, KILN_EINVAL, 0, "yaml: line %zu column %zu: %s",
                              p->problem_mark.line + 1, p->problem_mark.column + 1,
                              p->problem ? p->problem : "syntax error");
    }
    return 0;
}

static bool is_plain_null(const yaml_event_t *ev)
{
    if (ev->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return false;
    const char *v = (const char *)ev->data.scalar.value;
    return !*v || !strcmp(v, "~") || !strcmp(v, "null") || !strcmp(v, "Null") || !strcmp(v, "NULL");
}

static int load_node(struct loader *l, yaml_event_t *ev, int depth, json_t **ret);

/* Consumes events up to and including the end of the collection started by `start`. */
static int load_collection(struct loader *l, yaml_event_t *start, int depth, json_t **ret)
{
    bool mapping = start->type == YAML_MAPPING_START_EVENT;
    json_t *v = mapping ? json_object() : json_array();
    for (;;) {
        yaml_event_t ev;
        int r = next_event(l, &ev);
        if (r < 0)
            goto fail;
        if (ev.type == YAML_MAPPING_END_EVENT || ev.type == YAML_SEQUENCE_END_EVENT) {
            yaml_event_delete(&ev);
            break;
        }
        if (!mapping) {
            json_t *item = NULL;
            r = load_node(l, &ev, depth + 1, &item);
            yaml_event_delete(&ev);
            if (r < 0)
                goto fail;
            json_array_append_new(v, item);
            continue;
        }
        if (ev.type != YAML_SCALAR_EVENT) {
            r = load_fail(l, &ev, "mapping keys must be plain text", "");
            yaml_event_delete(&ev);
            goto fail;
        }
        _cleanup_free_ char *key =
            kiln_xstrndup((const char *)ev.data.scalar.value, ev.data.scalar.length);
        if (strlen(key) != ev.data.scalar.length) {
            r = load_fail(l, &ev, "mapping key contains a NUL byte", "");
            yaml_event_delete(&ev);
            goto fail;
        }
        if (json_object_get(v, key)) {
            r = load_fail(l, &ev, "duplicate key ", key);
            yaml_event_delete(&ev);
            goto fail;
        }
        yaml_event_delete(&ev);
        r = next_event(l, &ev);
        if (r < 0)
            goto fail;
        json_t *item = NULL;
        r = load_node(l, &ev, depth + 1, &item);
        yaml_event_delete(&ev);
        if (r < 0)
            goto fail;
        json_object_set_new(v, key, item);
    }
    *ret = v;
    return 0;
fail:
    json_decref(v);
    return -KILN_EINVAL;
}

static int load_node(struct loader *l, yaml_event_t *ev, int depth, json_t **ret)
{
    if (++l->nodes > KILN_YAML_MAX_NODES)
        return load_fail(l, ev, "too many nodes", "");
    if (depth > KILN_YAML_MAX_DEPTH)
        return load_fail(l, ev, "nested too deeply", "");
    switch (ev->type) {
    case YAML_ALIAS_EVENT:
        return load_fail(l, ev, "aliases are not supported", "");
    case YAML_SCALAR_EVENT:
        if (ev->data.scalar.anchor)
            return load_fail(l, ev, "anchors are not supported", "");
        if (is_plain_null(ev)) {
            *ret = json_null();
            return 0;
        }
        *ret = json_stringn_nocheck((const char *)ev->data.scalar.value, ev->data.scalar.length);
        return 0;
    case YAML_SEQUENCE_START_EVENT:
        if (ev->data.sequence_start.anchor)
            return load_fail(l, ev, "anchors are not supported", "");
        return load_collection(l, ev, depth, ret);
    case YAML_MAPPING_START_EVENT:
        if (ev->data.mapping_start.anchor)
            return load_fail(l, ev, "anchors are not supported", "");
        return load_collection(l, ev, depth, ret);
    default:
        return load_fail(l, ev, "unexpected event", "");
    }
}

int kiln_yaml_load(const char *data, size_t len, json_t **ret, struct kiln_error **err)
{
    struct loader l = {.err = err};
    json_t *root = NULL;
    yaml_event_t ev;
    int r;

    if (!yaml_parser_initialize(&l.parser))
        return kiln_error_set(err, KILN_EINTERNAL, 0, "yaml: cannot initialise parser");
    yaml_parser_set_input_string(&l.parser, (const unsigned char *)data, len);

    /* stream start, then a document start (or an empty stream) */
    r = next_event(&l, &ev);
    if (r < 0)
        goto out;
    yaml_event_delete(&ev);
    r = next_event(&l, &ev);
    if (r < 0)
        goto out;
    if (ev.type == YAML_STREAM_END_EVENT) {
        yaml_event_delete(&ev);
        r = kiln_error_set(err, KILN_EINVAL, 0, "yaml: the document is empty");
        goto out;
    }
    yaml_event_delete(&ev);
    r = next_event(&l, &ev);
    if (r < 0)
        goto out;
    r = load_node(&l, &ev, 0, &root);
    yaml_event_delete(&ev);
    if (r < 0)
        goto out;
    /* document end, then the stream must end: one document only */
    r = next_event(&l, &ev);
    if (r < 0)
        goto out;
    yaml_event_delete(&ev);
    r = next_event(&l, &ev);
    if (r < 0)
        goto out;
    if (ev.type != YAML_STREAM_END_EVENT) {
        r = load_fail(&l, &ev, "only one document is allowed", "");
        yaml_event_delete(&ev);
        goto out;
    }
    yaml_event_delete(&ev);
    *ret = root;
    root = NULL;
    r = 0;
out:
    json_decref(root);
    yaml_parser_delete(&l.parser);
    return r;
}

/* ---- dump ---- */

static int write_handler(void *data, unsigned char *buffer, size_t size)
{
    return kiln_buf_add(data, buffer, size) == 0;
}

/* Would a YAML 1.1 or 1.2 reader resolve this plain scalar to a non-string? */
static bool needs_quotes(const char *s)
{
    static const char *const words[] = {
        "y",    "Y",    "yes",   "Yes",   "YES",   "n",    "N",    "no",    "No",   "NO",   "true",
        "True", "TRUE", "false", "False", "FALSE", "on",   "On",   "ON",    "off",  "Off",  "OFF",
        "null", "Null", "NULL",  "~",     ".inf",  ".Inf", ".INF", "-.inf", ".nan", ".NaN", ".NAN",
    };
    if (!*s)
        return true;
    for (size_t i = 0; i < KILN_ARRAY_SIZE(words); i++)
        if (!strcmp(s, words[i]))
            return true;
    /* numbers of every YAML flavour start with a digit, a sign or a dot */
    const char *p = s;
    if (*p == '+' || *p == '-')
        p++;
    if (*p == '.')
        p++;
    if (*p >= '0' && *p <= '9')
        return true;
    return false;
}

static int emit(yaml_emitter_t *em, yaml_event_t *ev)
{
    return yaml_emitter_emit(em, ev) ? 0 : -1;
}

static int dump_node(yaml_emitter_t *em, const json_t *v)
{
    yaml_event_t ev;
    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        yaml_mapping_start_event_initialize(&ev, NULL, NULL, 1, YAML_BLOCK_MAPPING_STYLE);
        if (emit(em, &ev) < 0)
            return -1;
        const char *key;
        json_t *item;
        json_object_foreach((json_t *)v, key, item)
        {
            json_t *k = json_string(key);
            int r = dump_node(em, k);
            json_decref(k);
            if (r < 0 || dump_node(em, item) < 0)
                return -1;
        }
        yaml_mapping_end_event_initialize(&ev);
        return emit(em, &ev);
    }
    case JSON_ARRAY: {
        size_t n = json_array_size(v);
        yaml_sequence_start_event_initialize(
            &ev, NULL, NULL, 1, n ? YAML_BLOCK_SEQUENCE_STYLE : YAML_FLOW_SEQUENCE_STYLE);
        if (emit(em, &ev) < 0)
            return -1;
        for (size_t i = 0; i < n; i++)
            if (dump_node(em, json_array_get(v, i)) < 0)
                return -1;
        yaml_sequence_end_event_initialize(&ev);
        return emit(em, &ev);
    }
    case JSON_STRING: {
        const char *s = json_string_value(v);
        yaml_scalar_style_t style =
            needs_quotes(s) ? YAML_DOUBLE_QUOTED_SCALAR_STYLE : YAML_ANY_SCALAR_STYLE;
        if (strchr(s, '\n'))
            style = YAML_LITERAL_SCALAR_STYLE;
        yaml_scalar_event_initialize(&ev, NULL, NULL, (yaml_char_t *)s, (int)json_string_length(v),
                                     1, 1, style);
        return emit(em, &ev);
    }
    default: {
        /* numbers, booleans and null, written plain */
        _cleanup_free_ char *s = json_dumps(v, JSON_ENCODE_ANY);
        if (!s)
            return -1;
        yaml_scalar_event_initialize(&ev, NULL, NULL, (yaml_char_t *)s, (int)strlen(s), 1, 0,
                                     YAML_PLAIN_SCALAR_STYLE);
        return emit(em, &ev);
    }
    }
}

int kiln_yaml_dump(const json_t *v, struct kiln_buf *out, struct kiln_error **err)
{
    yaml_emitter_t em;
    yaml_event_t ev;
    int r = -1;

    if (!yaml_emitter_initialize(&em))
        return kiln_error_set(err, KILN_EINTERNAL, 0, "yaml: cannot initialise emitter");
    yaml_emitter_set_output(&em, write_handler, out);
    yaml_emitter_set_unicode(&em, 1);
    yaml_emitter_set_width(&em, -1);

    yaml_stream_start_event_initialize(&ev, YAML_UTF8_ENCODING);
    if (emit(&em, &ev) < 0)
        goto out;
    yaml_document_start_event_initialize(&ev, NULL, NULL, NULL, 1);
    if (emit(&em, &ev) < 0)
        goto out;
    if (dump_node(&em, v) < 0)
        goto out;
    yaml_document_end_event_initialize(&ev, 1);
    if (emit(&em, &ev) < 0)
        goto out;
    yaml_stream_end_event_initialize(&ev);
    if (emit(&em, &ev) < 0)
        goto out;
    r = 0;
out:
    if (r < 0) {
        r = kiln_buf_finish(out, "yaml output", err);
        if (r == 0)
            r = kiln_error_set(err, KILN_EINTERNAL, 0, "yaml: %s",
                               em.problem ? em.problem : "cannot emit");
    }
    yaml_emitter_delete(&em);
    return r;
}
