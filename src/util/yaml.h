/*
 * YAML <-> JSON tree (jansson), for reading and writing spec files.
 *
 * kiln_yaml_load() reads exactly one YAML document into a json_t tree:
 * mappings become objects (keys must be scalars; a repeated key is an error),
 * sequences become arrays, and scalars become strings - except the plain
 * (unquoted) null forms "", "~", "null", "Null", "NULL", which become JSON
 * null. Keeping "3.8" or "true" as strings is deliberate: every spec field
 * is text, and "python=3.8" must never turn into a number. Anchors, aliases
 * and more than one document are rejected (they are not needed for a spec
 * and aliases allow "billion laughs" expansion). Nesting is capped at
 * KILN_YAML_MAX_DEPTH and the node count at KILN_YAML_MAX_NODES. Errors
 * name the line and column.
 *
 * kiln_yaml_dump() writes a tree as block-style YAML. Strings that a YAML
 * reader would take for something else (numbers, booleans, null, leading
 * indicators) are quoted; numbers, booleans and null are written plain.
 */
#ifndef KILN_YAML_H
#define KILN_YAML_H

#include <jansson.h>
#include <stddef.h>

#include "kiln/error.h"
#include "util/buf.h"

#define KILN_YAML_MAX_DEPTH 64
#define KILN_YAML_MAX_NODES 100000

/* On success *ret holds a new reference the caller must json_decref(). */
int kiln_yaml_load(const char *data, size_t len, json_t **ret, struct kiln_error **err);

/* Append the YAML text of `v` to `out`. */
int kiln_yaml_dump(const json_t *v, struct kiln_buf *out, struct kiln_error **err);

#endif
