/*
 * Fuzz the API's request-body parsing (service/apijson.c): every body goes
 * through the JSON reader, then the spec (short form and ImageSpec, with
 * and without a name from the URL), secret and image readers, and what
 * they accept through the output side (spec and job JSON, the rendered
 * Dockerfile, error JSON). Checks: a failure always says why, an accepted
 * spec validates and comes back out with the same packages, every output
 * is valid JSON.
 */
#include "util/common.h"
#include "service/apijson.h"
#include "spec/revision.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_json_text(const json_t *v)
{
    char *text = kiln_apijson_dump(v, NULL);
    json_t *back = json_loads(text, 0, NULL);
    if (!back)
        abort(); /* what the API sends must parse */
    json_decref(back);
    free(text);
}

static void errors_out(const struct kiln_diags *d)
{
    json_t *e = kiln_apijson_error("invalid", "invalid spec", d);
    if (d->n && json_array_size(json_object_get(json_object_get(e, "error"), "fields")) != d->n)
        abort();
    check_json_text(e);
    json_decref(e);
}

static void spec_out(const struct kiln_spec *s)
{
    /* as the store keeps it, then as the API shows it */
    json_t *short_form = kiln_spec_to_json(s, KILN_SPEC_SHAPE_KILN);
    struct kiln_store_spec ss = {0};
    ss.name = s->name;
    ss.spec_json = kiln_apijson_dump(short_form, NULL);
    kiln_spec_revision(s, ss.revision);
    ss.created_ms = 1700000000123;
    ss.updated_ms = 1700000000456;
    ss.job_id = 7;
    ss.job_phase = KILN_JOB_SUCCEEDED;
    ss.job_image_url = (char *)"127.0.0.1:5000/kiln/x:12345678";
    /* the list writer with its cache says the same, hit or miss */
    static struct kiln_apijson_cache *cache;
    if (!cache)
        cache = kiln_apijson_cache_new(8);
    struct kiln_buf plain = KILN_BUF_INIT, cached = KILN_BUF_INIT;
    kiln_apijson_spec_write(&plain, &ss, NULL);
    for (int i = 0; i < 2; i++) {
        kiln_buf_reset(&cached);
        kiln_apijson_spec_write(&cached, &ss, cache);
        if (cached.len != plain.len || memcmp(cached.buf, plain.buf, plain.len) != 0)
            abort();
    }
    kiln_buf_release(&plain);
    kiln_buf_release(&cached);
    json_t *o = kiln_apijson_spec(&ss);
    static const char *const kinds[KILN_PKG_KINDS] = {"apt", "conda", "pip"};
    const json_t *pk = json_object_get(o, "packages");
    for (int k = 0; k < KILN_PKG_KINDS; k++) {
        const json_t *list = json_object_get(pk, kinds[k]);
        if (json_array_size(list) != s->pkgs[k].n)
            abort();
        for (size_t i = 0; i < s->pkgs[k].n; i++)
            if (strcmp(json_string_value(json_array_get(list, i)), s->pkgs[k].v[i]) != 0)
                abort();
    }
    check_json_text(o);
    json_decref(o);

    struct kiln_store_job j = {0};
    j.id = 7;
    j.spec_name = s->name;
    memcpy(j.revision, ss.revision, sizeof(j.revision));
    j.spec_json = ss.spec_json;
    j.phase = KILN_JOB_RUNNING;
    j.created_ms = 1700000000000;
    j.started_ms = 1700000001000;
    o = kiln_apijson_job(&j, true, 1700000002500);
    if (!json_is_string(json_object_get(o, "dockerfile")))
        abort(); /* a validated spec always renders */
    check_json_text(o);
    json_decref(o);
    free(ss.spec_json);
    json_decref(short_form);
}

/* Whatever a store hands back as a spec's JSON, the output is valid JSON. */
static void stored_garbage(const uint8_t *data, size_t size)
{
    char *text = kiln_xstrndup((const char *)data, size);
    struct kiln_store_spec ss = {0};
    ss.name = (char *)"x";
    ss.spec_json = text;
    json_t *o = kiln_apijson_spec(&ss);
    if (!json_is_object(o) || !json_is_object(json_object_get(o, "packages")))
        abort();
    json_decref(o);
    free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_t *body = NULL;
    stored_garbage(data, size);
    struct kiln_error *err = NULL;
    if (kiln_apijson_parse_body((const char *)data, size, &body, &err) < 0) {
        if (!err)
            abort();
        kiln_error_free(err);
        /* query numbers come from outside too */
        char num[32];
        size_t n = size < sizeof(num) - 1 ? size : sizeof(num) - 1;
        memcpy(num, data, n);
        num[n] = '\0';
        uint64_t v;
        if (kiln_apijson_parse_uint(num, 1000, &v) == 0 && v > 1000)
            abort();
        return 0;
    }
    for (int with_name = 0; with_name < 2; with_name++) {
        struct kiln_diags d = KILN_DIAGS_INIT;
        struct kiln_spec *s = NULL;
        int r = kiln_apijson_spec_from_body(body, with_name ? "from-url" : NULL, &s, &d, &err);
        if (r < 0) {
            if (!err || d.n == 0)
                abort(); /* a refusal always names the problems */
            errors_out(&d);
            kiln_error_freep(&err);
        } else {
            struct kiln_diags again = KILN_DIAGS_INIT;
            if (kiln_spec_validate(s, &again) != 0)
                abort();
            kiln_diags_release(&again);
            if (with_name && strcmp(s->name, "from-url") != 0)
                abort();
            spec_out(s);
            kiln_spec_free(s);
        }
        kiln_diags_release(&d);
    }

    struct kiln_diags d = KILN_DIAGS_INIT;
    char *name = NULL, *value = NULL;
    if (kiln_apijson_secret_from_body(body, &name, &value, &d, &err) < 0) {
        if (!err)
            abort();
        /* the value is never quoted back */
        const json_t *v = json_object_get(body, "dockerconfigjson");
        if (json_is_string(v) && json_string_length(v) >= 12) {
            for (size_t i = 0; i < d.n; i++)
                if (strstr(d.v[i].message, json_string_value(v)))
                    abort();
        }
        errors_out(&d);
        kiln_error_freep(&err);
    } else {
        json_t *back = json_loads(value, 0, NULL);
        if (!json_is_object(json_object_get(back, "auths")))
            abort();
        json_decref(back);
        free(name);
        free(value);
    }
    kiln_diags_release(&d);

    char *url = NULL;
    if (kiln_apijson_image_from_body(body, &url, &d, &err) < 0) {
        if (!err)
            abort();
        errors_out(&d);
        kiln_error_freep(&err);
    } else {
        free(url);
    }
    kiln_diags_release(&d);
    json_decref(body);
    return 0;
}
