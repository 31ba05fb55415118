/*
 * Media types of the OCI image spec (v1.1) and of Docker's image manifest
 * v2 schema 2, as they appear in manifests, descriptors and HTTP
 * Content-Type / Accept headers. Constants only.
 */
#ifndef KILN_OCI_MEDIATYPE_H
#define KILN_OCI_MEDIATYPE_H

/* OCI image spec */
#define KILN_MT_OCI_MANIFEST      "application/vnd.oci.image.manifest.v1+json"
#define KILN_MT_OCI_INDEX         "application/vnd.oci.image.index.v1+json"
#define KILN_MT_OCI_CONFIG        "application/vnd.oci.image.config.v1+json"
#define KILN_MT_OCI_LAYOUT_HEADER "application/vnd.oci.layout.header.v1+json"
#define KILN_MT_OCI_EMPTY         "application/vnd.oci.empty.v1+json"
#define KILN_MT_OCI_LAYER_TAR     "application/vnd.oci.image.layer.v1.tar"
#define KILN_MT_OCI_LAYER_TAR_GZ  "application/vnd.oci.image.layer.v1.tar+gzip"
#define KILN_MT_OCI_LAYER_TAR_ZST "application/vnd.oci.image.layer.v1.tar+zstd"
/* nondistributable layers: deprecated in image-spec 1.1, still read */
#define KILN_MT_OCI_LAYER_ND_TAR     "application/vnd.oci.image.layer.nondistributable.v1.tar"
#define KILN_MT_OCI_LAYER_ND_TAR_GZ  "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
#define KILN_MT_OCI_LAYER_ND_TAR_ZST "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"

/* Docker image manifest v2, schema 2 */
#define KILN_MT_DOCKER_MANIFEST      "application/vnd.docker.distribution.manifest.v2+json"
#define KILN_MT_DOCKER_MANIFEST_LIST "application/vnd.docker.distribution.manifest.list.v2+json"
#define KILN_MT_DOCKER_CONFIG        "application/vnd.docker.container.image.v1+json"
#define KILN_MT_DOCKER_LAYER         "application/vnd.docker.image.rootfs.diff.tar.gzip"
#define KILN_MT_DOCKER_FOREIGN_LAYER "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
#define KILN_MT_DOCKER_PLUGIN_CONFIG "application/vnd.docker.plugin.v1+json"

/* Docker schema 1: only recognised, to be refused with a clear message */
#define KILN_MT_DOCKER_SCHEMA1        "application/vnd.docker.distribution.manifest.v1+json"
#define KILN_MT_DOCKER_SCHEMA1_SIGNED "application/vnd.docker.distribution.manifest.v1+prettyjws"

/* The Accept header of a manifest GET: every kind kiln can read. */
#define KILN_MT_ACCEPT_MANIFESTS                                                                   \
    KILN_MT_OCI_INDEX ", " KILN_MT_OCI_MANIFEST ", " KILN_MT_DOCKER_MANIFEST_LIST                  \
                      ", " KILN_MT_DOCKER_MANIFEST

/* Annotation keys (image-spec annotations.md) */
#define KILN_ANNOTATION_REF_NAME    "org.opencontainers.image.ref.name"
#define KILN_ANNOTATION_CREATED     "org.opencontainers.image.created"
#define KILN_ANNOTATION_BASE_DIGEST "org.opencontainers.image.base.digest"
#define KILN_ANNOTATION_BASE_NAME   "org.opencontainers.image.base.name"

#endif
