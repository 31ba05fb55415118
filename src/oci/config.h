/*
 * The image configuration (OCI image-spec config.md; docker's
 * application/vnd.docker.container.image.v1+json is the same document).
 *
 * The config is kept as a JSON tree so that fields kiln does not know
 * (Healthcheck, OnBuild, container_config, ...) survive a parse, an edit and
 * a serialise. Typed accessors read and write the fields kiln uses.
 *
 * Validation (on parse and before serialising): a JSON object of at most
 * KILN_IMAGE_CONFIG_MAX_SIZE bytes without duplicate keys; "architecture"
 * and "os" non-empty strings; "created" and history[].created RFC 3339
 * timestamps; "config" an object (or null) whose User, WorkingDir and
 * StopSignal are strings, Env an array of "NAME=value" strings with a
 * non-empty NAME, Entrypoint and Cmd arrays of strings (or null), Labels an
 * object of strings, ExposedPorts and Volumes objects of objects; "rootfs"
 * an object with type "layers" and "diff_ids" an array of at most
 * KILN_IMAGE_CONFIG_MAX_LAYERS valid digests; "history" an array of at most
 * KILN_IMAGE_CONFIG_MAX_HISTORY objects (created_by, author, comment
 * strings, empty_layer a boolean). Errors name the field
 * ("config.Env[2]: must be 'NAME=value'") and are -KILN_EINVAL, -KILN_ETOOBIG
 * for a cap, -KILN_EUNSUPPORTED for a diff_id with an unknown algorithm.
 *
 * Ownership: the struct owns one reference to `root`;
 * kiln_image_config_release() drops it. Strings returned by getters are
 * borrowed from the tree and valid until it is next changed.
 */
#ifndef KILN_OCI_CONFIG_H
#define KILN_OCI_CONFIG_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include "kiln/error.h"
#include "util/buf.h"
#include "util/strv.h"

#define KILN_IMAGE_CONFIG_MAX_SIZE    ((size_t)8 << 20) /* bytes of JSON */
#define KILN_IMAGE_CONFIG_MAX_LAYERS  1000
#define KILN_IMAGE_CONFIG_MAX_HISTORY 10000

struct kiln_image_config {
    json_t *root; /* a JSON object once parsed or created */
};

#define KILN_IMAGE_CONFIG_INIT                                                                     \
    {                                                                                              \
        NULL                                                                                       \
    }

/* Parse and validate. *ret is written only on success. */
int kiln_image_config_parse(const char *data, size_t len, struct kiln_image_config *ret,
                            struct kiln_error **err);

/*
 * A new, minimal config: {"architecture", "os", "config": {}, "rootfs":
 * {"type": "layers", "diff_ids": []}, "history": []}. -KILN_EINVAL when os or
 * arch is empty or not UTF-8.
 */
int kiln_image_config_new(struct kiln_image_config *ret, const char *os, const char *arch,
                          struct kiln_error **err);

/* A deep copy of src into dst (dst is overwritten, not released). */
void kiln_image_config_copy(struct kiln_image_config *dst, const struct kiln_image_config *src);

/* Check the rules above. */
int kiln_image_config_validate(const struct kiln_image_config *c, struct kiln_error **err);

/*
 * Validate, then append compact JSON (keys in the tree's order, no newline)
 * to `out`. The caller digests exactly those bytes.
 */
int kiln_image_config_serialize(const struct kiln_image_config *c, struct kiln_buf *out,
                                struct kiln_error **err);

void kiln_image_config_release(struct kiln_image_config *c);

/* ---- string fields ---- */

enum kiln_image_config_field {
    KILN_IC_ARCHITECTURE, /* architecture (required) */
    KILN_IC_OS,           /* os (required) */
    KILN_IC_VARIANT,      /* variant */
    KILN_IC_OS_VERSION,   /* os.version */
    KILN_IC_CREATED,      /* created: RFC 3339 */
    KILN_IC_AUTHOR,       /* author */
    KILN_IC_USER,         /* config.User */
    KILN_IC_WORKING_DIR,  /* config.WorkingDir */
    KILN_IC_STOP_SIGNAL,  /* config.StopSignal */
};

/* The field's value, or NULL when absent (or not a string). */
const char *kiln_image_config_get(const struct kiln_image_config *c,
                                  enum kiln_image_config_field f);

/*
 * Set the field, or remove it when value is NULL. -KILN_EINVAL for a value
 * that is not UTF-8, an empty or NULL architecture/os, a created that is not
 * RFC 3339. Creates "config" when needed.
 */
int kiln_image_config_set(struct kiln_image_config *c, enum kiln_image_config_field f,
                          const char *value, struct kiln_error **err);

/* Set "created" to `t` as "YYYY-MM-DDTHH:MM:SSZ" (UTC). */
int kiln_image_config_set_created_time(struct kiln_image_config *c, time_t t,
                                       struct kiln_error **err);

/* ---- config.Env ---- */

/* Append copies of the Env entries ("NAME=value"), in order, to ret. */
void kiln_image_config_env(const struct kiln_image_config *c, struct kiln_strv *ret);

/* The value of NAME (the last entry wins, as at container start), or NULL. */
const char *kiln_image_config_env_get(const struct kiln_image_config *c, const char *name);

/*
 * Set NAME=value: the first entry for NAME is replaced in place and later
 * ones are removed; else the entry is appended. -KILN_EINVAL when NAME is
 * empty, holds '=', or a string is not UTF-8.
 */
int kiln_image_config_env_set(struct kiln_image_config *c, const char *name, const char *value,
                              struct kiln_error **err);

/* Remove every entry for NAME. */
void kiln_image_config_env_unset(struct kiln_image_config *c, const char *name);

/* ---- config.Entrypoint / config.Cmd ---- */

/*
 * Append the argv to ret: returns 1 when the field is set (possibly to an
 * empty list), 0 when absent or null.
 */
int kiln_image_config_entrypoint(const struct kiln_image_config *c, struct kiln_strv *ret);
int kiln_image_config_cmd(const struct kiln_image_config *c, struct kiln_strv *ret);

/* Set to a copy of argv, or remove when argv is NULL. -KILN_EINVAL for non-UTF-8. */
int kiln_image_config_set_entrypoint(struct kiln_image_config *c, const struct kiln_strv *argv,
                                     struct kiln_error **err);
int kiln_image_config_set_cmd(struct kiln_image_config *c, const struct kiln_strv *argv,
                              struct kiln_error **err);

/* ---- config.Labels ---- */

const char *kiln_image_config_label(const struct kiln_image_config *c, const char *key);
/* Set, or remove when value is NULL. -KILN_EINVAL for an empty key or non-UTF-8. */
int kiln_image_config_set_label(struct kiln_image_config *c, const char *key, const char *value,
                                struct kiln_error **err);
/* The Labels object (borrowed) to iterate over, or NULL. */
json_t *kiln_image_config_labels(const struct kiln_image_config *c);

/* ---- config.ExposedPorts / config.Volumes ---- */

/* Append the keys ("8888/tcp", "/data") to ret, in order. */
void kiln_image_config_exposed_ports(const struct kiln_image_config *c, struct kiln_strv *ret);
void kiln_image_config_volumes(const struct kiln_image_config *c, struct kiln_strv *ret);

/*
 * Add "PORT[/PROTO]" (PORT 1-65535 or a range "A-B", PROTO tcp, udp or
 * sctp; "/tcp" is added when missing). Adding one that is there is fine.
 */
int kiln_image_config_add_exposed_port(struct kiln_image_config *c, const char *port,
                                       struct kiln_error **err);
/* Add an absolute path. */
int kiln_image_config_add_volume(struct kiln_image_config *c, const char *path,
                                 struct kiln_error **err);

/* ---- rootfs.diff_ids ---- */

size_t kiln_image_config_n_diff_ids(const struct kiln_image_config *c);
/* The i-th diff_id, or NULL past the end. */
const char *kiln_image_config_diff_id(const struct kiln_image_config *c, size_t i);
/* Append a diff_id (the digest of the uncompressed layer tar). */
int kiln_image_config_add_diff_id(struct kiln_image_config *c, const char *digest,
                                  struct kiln_error **err);

/* ---- history ---- */

/* One history entry; the strings may be NULL (absent). */
struct kiln_history {
    const char *created; /* RFC 3339 */
    const char *created_by;
    const char *author;
    const char *comment;
    bool empty_layer;
};

size_t kiln_image_config_n_history(const struct kiln_image_config *c);
/* Fill *ret with borrowed strings of entry i; -KILN_ENOTFOUND past the end. */
int kiln_image_config_history(const struct kiln_image_config *c, size_t i,
                              struct kiln_history *ret);
/* Append an entry ("empty_layer" written only when true). */
int kiln_image_config_add_history(struct kiln_image_config *c, const struct kiln_history *h,
                                  struct kiln_error **err);

#endif
