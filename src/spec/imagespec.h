/*
 * The image spec: a base image plus apt, conda and pip packages.
 *
 * Two shapes are read and written, in YAML or JSON:
 *
 *   kiln's short form              PrimeHub's ImageSpec resource
 *   name: my-env                   apiVersion: primehub.io/v1alpha1
 *   description: text              kind: ImageSpec
 *   baseImage: REF                 metadata:
 *   pullSecret: SECRET               name: my-env
 *   packages:                        annotations: {description: text}
 *     apt: [curl]                  spec:
 *     conda: []                      baseImage: REF
 *     pip: ["numpy>=1.17"]           pullSecret: SECRET
 *                                    packages: {apt: [], conda: [], pip: []}
 *                                    updateTime: "2026-01-01T00:00:00Z"
 *
 * A package list may also be one string holding one package per line (the
 * web form's and PrimeHub API's shape): blank lines are dropped and spaces
 * around each package trimmed; each package remembers its line.
 *
 * Reading is in two stages. kiln_spec_load() checks the syntax and the shape
 * (which keys, which types); kiln_spec_validate() checks every value against
 * its grammar. Both add every problem they find to a struct kiln_diags with
 * the field path ("packages.pip[2]", or "spec.packages.pip[2]" for a
 * resource), so a user sees all problems at once.
 */
#ifndef KILN_SPEC_IMAGESPEC_H
#define KILN_SPEC_IMAGESPEC_H

#include <jansson.h>

#include "kiln/error.h"
#include "util/buf.h"
#include "util/diag.h"
#include "util/strv.h"

/* Caps on outside input. */
#define KILN_SPEC_MAX_BYTES       ((size_t)1 << 20)
#define KILN_SPEC_MAX_PACKAGES    1000
#define KILN_SPEC_MAX_DESCRIPTION 4096

#define KILN_CRD_API_VERSION "primehub.io/v1alpha1"
#define KILN_CRD_KIND        "ImageSpec"

/* Package kinds, in the order their build steps run. */
enum kiln_pkg_kind { KILN_PKG_APT, KILN_PKG_CONDA, KILN_PKG_PIP, KILN_PKG_KINDS };

enum kiln_spec_shape { KILN_SPEC_SHAPE_KILN, KILN_SPEC_SHAPE_CRD };
enum kiln_spec_format { KILN_SPEC_FORMAT_YAML, KILN_SPEC_FORMAT_JSON };

struct kiln_spec {
    char *name;        /* never NULL after load ("" when missing: validate reports it) */
    char *base_image;  /* never NULL after load */
    char *pull_secret; /* or NULL */
    char *description; /* or NULL */
    char *update_time; /* or NULL; kept as text, written back as read */
    struct kiln_strv pkgs[KILN_PKG_KINDS];
    /* 1-based source line of each package when the list came as one string, else NULL */
    int *pkg_line[KILN_PKG_KINDS];
    enum kiln_spec_shape shape; /* the shape it was read from (for field paths) */
};

/* "apt", "conda", "pip". */
const char *kiln_pkg_kind_name(enum kiln_pkg_kind kind);

/* A new, empty spec (name and base image ""); kiln_spec_free() frees it. */
struct kiln_spec *kiln_spec_new(void);
void kiln_spec_free(struct kiln_spec *s);
void kiln_spec_freep(struct kiln_spec **s);
/* A deep copy. */
struct kiln_spec *kiln_spec_dup(const struct kiln_spec *s);

/*
 * Parse `len` bytes of YAML or JSON (JSON when the first non-blank byte is
 * '{') in either shape. Syntax errors and inputs over KILN_SPEC_MAX_BYTES
 * fail with *err only. Shape problems are added to `diags` (may be NULL),
 * and the call fails with -KILN_EINVAL and *err listing them. On success
 * *ret is a new spec the caller frees. Values are not validated.
 */
int kiln_spec_load(const char *data, size_t len, struct kiln_spec **ret, struct kiln_diags *diags,
                   struct kiln_error **err);

/*
 * The same from a JSON tree already parsed (an API body). The shape is the
 * resource when the object has "apiVersion" or "kind", else the short form.
 */
int kiln_spec_from_json(const json_t *root, struct kiln_spec **ret, struct kiln_diags *diags,
                        struct kiln_error **err);

/*
 * Check every value against its grammar, adding a problem to `diags` for
 * each failure. Returns the number of problems added.
 */
size_t kiln_spec_validate(const struct kiln_spec *s, struct kiln_diags *diags);

/*
 * Load and validate in one call: fails with -KILN_EINVAL and *err joining
 * every problem (also in `diags`, which may be NULL) when anything is wrong.
 */
int kiln_spec_parse(const char *data, size_t len, struct kiln_spec **ret, struct kiln_diags *diags,
                    struct kiln_error **err);

/* The spec as a JSON tree of the given shape; a new reference. */
json_t *kiln_spec_to_json(const struct kiln_spec *s, enum kiln_spec_shape shape);

/* Append the spec as text in the given shape and format to `out`. */
int kiln_spec_write(const struct kiln_spec *s, enum kiln_spec_shape shape,
                    enum kiln_spec_format format, struct kiln_buf *out, struct kiln_error **err);

/* True when the two specs build the same image (base image and packages). */
bool kiln_spec_same_build(const struct kiln_spec *a, const struct kiln_spec *b);

#endif
