/*
 * Image manifests and image indexes: the OCI image spec v1.1 (manifest.md,
 * image-index.md, descriptor.md) and Docker's image manifest v2 schema 2
 * (manifest and manifest list), which share one shape.
 *
 * Parsing is strict: the input is JSON of at most KILN_MANIFEST_MAX_SIZE
 * bytes without duplicate keys; schemaVersion must be 2; every descriptor
 * needs a mediaType (RFC 6838 "type/subtype"), a valid digest (oci/digest.h)
 * and a non-negative integer size; urls, annotations (string values) and
 * platform (os and architecture required) are checked when present; at most
 * KILN_MANIFEST_MAX_LAYERS layers and KILN_INDEX_MAX_MANIFESTS index entries.
 * Errors name the field: "layers[2].digest: invalid digest 'sha256:xyz': ...",
 * "config.size: must be a non-negative integer". Unknown fields are ignored
 * (as the spec asks) and not kept; an optional field that is null counts as
 * absent. Docker schema 1 is refused: "docker schema 1 manifests are not
 * supported" (-KILN_EUNSUPPORTED).
 *
 * Error codes: -KILN_EINVAL (malformed), -KILN_ETOOBIG (a cap), and
 * -KILN_EUNSUPPORTED (schema 1, an unknown manifest media type, a digest
 * algorithm other than sha256/sha512).
 *
 * Ownership: every struct here owns all it points to, including one
 * reference to each json_t; the _release() functions free the contents and
 * reset the struct to its INIT value; all accept NULL.
 */
#ifndef KILN_OCI_MANIFEST_H
#define KILN_OCI_MANIFEST_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kiln/error.h"
#include "oci/mediatype.h"
#include "util/buf.h"
#include "util/strv.h"

#define KILN_MANIFEST_MAX_SIZE   ((size_t)4 << 20) /* bytes of JSON */
#define KILN_MANIFEST_MAX_LAYERS 1000
#define KILN_INDEX_MAX_MANIFESTS 1000
#define KILN_DESCRIPTOR_MAX_URLS 64

/* A platform (image-index.md), all strings owned. */
struct kiln_platform {
    char *architecture;           /* required: "amd64", "arm64" */
    char *os;                     /* required: "linux" */
    char *os_version;             /* "os.version", or NULL */
    struct kiln_strv os_features; /* "os.features", may be empty */
    char *variant;                /* "v8", or NULL */
};

struct kiln_descriptor {
    char *media_type;
    char *digest; /* "sha256:<hex>" */
    int64_t size; /* bytes, >= 0 */
    struct kiln_strv urls;
    json_t *annotations;            /* object of strings, or NULL */
    struct kiln_platform *platform; /* or NULL */
    char *artifact_type;            /* OCI 1.1, or NULL */
};

#define KILN_DESCRIPTOR_INIT                                                                       \
    {                                                                                              \
        NULL, NULL, 0, KILN_STRV_INIT, NULL, NULL, NULL                                            \
    }

/* An image manifest: OCI image manifest or docker v2 schema 2. */
struct kiln_manifest {
    int schema_version; /* 2 */
    char *media_type;   /* as in the JSON; NULL when it had none (OCI allows that) */
    char *artifact_type;
    struct kiln_descriptor config;
    struct kiln_descriptor *layers; /* base layer first */
    size_t n_layers;
    struct kiln_descriptor *subject; /* or NULL */
    json_t *annotations;             /* or NULL */
};

#define KILN_MANIFEST_INIT                                                                         \
    {                                                                                              \
        2, NULL, NULL, KILN_DESCRIPTOR_INIT, NULL, 0, NULL, NULL                                   \
    }

/* An image index: OCI image index or docker manifest list. */
struct kiln_index {
    int schema_version; /* 2 */
    char *media_type;   /* as in the JSON, or NULL */
    char *artifact_type;
    struct kiln_descriptor *manifests;
    size_t n_manifests;
    struct kiln_descriptor *subject; /* or NULL */
    json_t *annotations;             /* or NULL */
};

#define KILN_INDEX_INIT                                                                            \
    {                                                                                              \
        2, NULL, NULL, NULL, 0, NULL, NULL                                                         \
    }

enum kiln_manifest_kind {
    KILN_KIND_UNKNOWN = 0,
    KILN_KIND_MANIFEST, /* OCI image manifest, docker v2 schema 2 manifest */
    KILN_KIND_INDEX,    /* OCI image index, docker manifest list */
    KILN_KIND_SCHEMA1,  /* docker schema 1: recognised, never parsed */
};

/* The kind a media type names (parameters and case ignored); NULL is UNKNOWN. */
enum kiln_manifest_kind kiln_manifest_kind_of(const char *media_type);

/*
 * Parse a manifest or an index. `content_type` is the HTTP Content-Type
 * (parameters and case ignored) or NULL; a generic one ("application/json",
 * "text/plain", "application/octet-stream") counts as NULL. The kind comes
 * from the content type; else from the JSON mediaType; else from the shape:
 * "manifests" -> index, "config" and "layers" -> manifest. When both the
 * content type and the JSON mediaType are given they must agree. Any other
 * content type is -KILN_EUNSUPPORTED.
 *
 * On success *ret_kind is KILN_KIND_MANIFEST (and *ret_manifest filled) or
 * KILN_KIND_INDEX (and *ret_index filled); the other struct is untouched.
 * Outputs are written only on success, overwriting without releasing.
 */
int kiln_manifest_parse_any(const char *data, size_t len, const char *content_type,
                            enum kiln_manifest_kind *ret_kind, struct kiln_manifest *ret_manifest,
                            struct kiln_index *ret_index, struct kiln_error **err);

/* Parse an image manifest; an index is -KILN_EINVAL ("expected an image manifest, got an index").
 */
int kiln_manifest_parse(const char *data, size_t len, const char *content_type,
                        struct kiln_manifest *ret, struct kiln_error **err);

/* Parse an image index; a manifest is -KILN_EINVAL. */
int kiln_index_parse(const char *data, size_t len, const char *content_type, struct kiln_index *ret,
                     struct kiln_error **err);

/*
 * Canonical bytes: compact JSON (no spaces or newline), keys in the order of
 * the specs' Go types (manifest: schemaVersion, mediaType, artifactType,
 * config, layers, subject, annotations; descriptor: mediaType, digest, size,
 * urls, annotations, platform, artifactType, except that a docker-typed
 * manifest or list writes mediaType, size, digest as docker does),
 * annotations sorted by key, absent fields left out. The struct is
 * validated as a parsed one would be (and strings must be UTF-8) first.
 * Appends to `out`; the caller digests exactly those bytes. Parsing the
 * output gives the same struct back.
 */
int kiln_manifest_serialize(const struct kiln_manifest *m, struct kiln_buf *out,
                            struct kiln_error **err);
int kiln_index_serialize(const struct kiln_index *idx, struct kiln_buf *out,
                         struct kiln_error **err);

enum kiln_manifest_format { KILN_FORMAT_OCI, KILN_FORMAT_DOCKER };

/*
 * Rewrite the media types for the other format: manifest, config and layer
 * types (tar+gzip <-> rootfs.diff.tar.gzip, nondistributable tar+gzip <->
 * foreign). Towards docker, a layer type without a docker equivalent (plain
 * tar, zstd) or an unknown config type, a subject or an artifactType is
 * -KILN_EUNSUPPORTED, and top-level annotations are dropped. Towards OCI,
 * unknown types are kept. On failure the struct is unchanged.
 */
int kiln_manifest_convert(struct kiln_manifest *m, enum kiln_manifest_format fmt,
                          struct kiln_error **err);
/* The same for an index: its own type and its entries' manifest/index types. */
int kiln_index_convert(struct kiln_index *idx, enum kiln_manifest_format fmt,
                       struct kiln_error **err);

/*
 * Pick the manifest for a platform from an index. `os` and `arch` are
 * required, `variant` may be NULL. Names are compared without case, after
 * normalising the usual aliases (x86_64 -> amd64, aarch64 -> arm64, armhf
 * -> arm/v7, armel -> arm/v6, i386 -> 386) and default variants (arm64: v8,
 * arm: v7, amd64: v1; "8" -> "v8"). An exact variant match wins; otherwise
 * the highest lower variant of the same family (arm/v6 runs on arm/v7).
 * Ties go to the first entry. Entries without a platform never match.
 * On success *ret_desc points into idx. None: -KILN_ENOTFOUND
 * "no manifest for platform 'linux/s390x' in the index; available:
 * linux/amd64, linux/arm64/v8".
 */
int kiln_index_select(const struct kiln_index *idx, const char *os, const char *arch,
                      const char *variant, const struct kiln_descriptor **ret_desc,
                      struct kiln_error **err);

/* Compression of a layer media type. */
enum kiln_compression {
    KILN_COMPRESSION_UNKNOWN = -1, /* not a layer type kiln knows */
    KILN_COMPRESSION_NONE = 0,
    KILN_COMPRESSION_GZIP,
    KILN_COMPRESSION_ZSTD,
};
enum kiln_compression kiln_manifest_layer_compression(const char *media_type);

/* The media type a manifest is served with: its own, or the OCI one when it has none. */
const char *kiln_manifest_media_type(const struct kiln_manifest *m);
const char *kiln_index_media_type(const struct kiln_index *idx);

/* Lifecycle */
void kiln_platform_free(struct kiln_platform *p);
/* A deep copy; NULL gives NULL. The caller frees it. */
struct kiln_platform *kiln_platform_copy(const struct kiln_platform *p);
/* "os/arch[/variant]"; the caller frees it. */
char *kiln_platform_string(const struct kiln_platform *p);

void kiln_descriptor_release(struct kiln_descriptor *d);
/* Deep copy of src into dst (not released first; annotations deep-copied). */
void kiln_descriptor_copy(struct kiln_descriptor *dst, const struct kiln_descriptor *src);
/* The annotation's value, or NULL. Borrowed from d. */
const char *kiln_descriptor_annotation(const struct kiln_descriptor *d, const char *key);
/*
 * Set (value != NULL) or remove (value == NULL) an annotation. -KILN_EINVAL
 * when key or value is not UTF-8 or the key is empty.
 */
int kiln_descriptor_set_annotation(struct kiln_descriptor *d, const char *key, const char *value,
                                   struct kiln_error **err);

void kiln_manifest_release(struct kiln_manifest *m);
/* Append a deep copy of d to m->layers. */
void kiln_manifest_add_layer(struct kiln_manifest *m, const struct kiln_descriptor *d);

void kiln_index_release(struct kiln_index *idx);
/* Append a deep copy of d to idx->manifests. */
void kiln_index_add(struct kiln_index *idx, const struct kiln_descriptor *d);
/* Remove entry i (i < n_manifests), keeping the order of the others. */
void kiln_index_remove(struct kiln_index *idx, size_t i);

#endif
