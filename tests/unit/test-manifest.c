#include "util/common.h"

#include "oci/digest.h"
#include "oci/manifest.h"
#include "util/buf.h"
#include "tap.h"

#define H0 "5feceb66ffc86f38d952786c6d696c79c2dbc239dd4e91b46729d73a27fb57e9"
#define H1 "6b86b273ff34fce19d6b804eff5a3f5747ada4eaa22f1d49c01e52ddb7875b4b"
#define H2 "d4735e3a265e16eee03f59718b9b5d03019c07d8b6c51f90da3a666eec13ab35"
#define H3 "4e07408562bedb8b60ce05c1decfe3ad16b72230967de01f640b7e4729b49fce"
#define H4 "4b227777d4dd1fc61c6f884f48641d02b4d121d3fd328cb08b5531fcacdabf8a"
#define H5 "ef2d127de37b942baad06145e54b0c619a1f22327b2ebbcfbec78f5564afe39d"
#define H6 "e7f6c011776e8db7cd330b54174fd76f7d0216b612387a5ffcfb81e6f0919683"
#define D0 "sha256:" H0
#define D1 "sha256:" H1
#define D2 "sha256:" H2
#define D3 "sha256:" H3
#define D4 "sha256:" H4
#define D5 "sha256:" H5
#define D6 "sha256:" H6

#define MT_DM  "application/vnd.docker.distribution.manifest.v2+json"
#define MT_DL  "application/vnd.docker.distribution.manifest.list.v2+json"
#define MT_DC  "application/vnd.docker.container.image.v1+json"
#define MT_DLY "application/vnd.docker.image.rootfs.diff.tar.gzip"
#define MT_OM  "application/vnd.oci.image.manifest.v1+json"
#define MT_OI  "application/vnd.oci.image.index.v1+json"
#define MT_OC  "application/vnd.oci.image.config.v1+json"
#define MT_OLY "application/vnd.oci.image.layer.v1.tar+gzip"

/* JSON written with ' for ", so the vectors stay readable; freed at exit. */
static char *pool[512];
static size_t pool_n;

static const char *J(const char *s)
{
    char *c = kiln_xstrdup(s);
    for (char *p = c; *p; p++)
        if (*p == '\'')
            *p = '"';
    if (pool_n < KILN_ARRAY_SIZE(pool))
        pool[pool_n++] = c;
    return c;
}

static void pool_free(void)
{
    for (size_t i = 0; i < pool_n; i++)
        free(pool[i]);
}

/* A docker v2 schema 2 manifest as a registry serves it (pretty-printed). */
static const char docker_manifest[] = "{\n"
                                      "   \"schemaVersion\": 2,\n"
                                      "   \"mediaType\": \"" MT_DM "\",\n"
                                      "   \"config\": {\n"
                                      "      \"mediaType\": \"" MT_DC "\",\n"
                                      "      \"size\": 7654,\n"
                                      "      \"digest\": \"" D0 "\"\n"
                                      "   },\n"
                                      "   \"layers\": [\n"
                                      "      {\n"
                                      "         \"mediaType\": \"" MT_DLY "\",\n"
                                      "         \"size\": 29534055,\n"
                                      "         \"digest\": \"" D1 "\"\n"
                                      "      },\n"
                                      "      {\n"
                                      "         \"mediaType\": \"" MT_DLY "\",\n"
                                      "         \"size\": 1234,\n"
                                      "         \"digest\": \"" D2 "\"\n"
                                      "      },\n"
                                      "      {\n"
                                      "         \"mediaType\": \"" MT_DLY "\",\n"
                                      "         \"size\": 0,\n"
                                      "         \"digest\": \"" D3 "\"\n"
                                      "      }\n"
                                      "   ]\n"
                                      "}\n";

static const char docker_canonical[] =
    "{\"schemaVersion\":2,\"mediaType\":\"" MT_DM "\",\"config\":{\"mediaType\":\"" MT_DC
    "\",\"size\":7654,\"digest\":\"" D0 "\"},\"layers\":[{\"mediaType\":\"" MT_DLY
    "\",\"size\":29534055,\"digest\":\"" D1 "\"},{\"mediaType\":\"" MT_DLY
    "\",\"size\":1234,\"digest\":\"" D2 "\"},{\"mediaType\":\"" MT_DLY
    "\",\"size\":0,\"digest\":\"" D3 "\"}]}";

/* An OCI manifest with most optional parts. */
static const char *oci_manifest(void)
{
    return J("{'schemaVersion':2,'mediaType':'" MT_OM "','config':{'mediaType':'" MT_OC
             "','digest':'" D0 "','size':1469},'layers':[{'mediaType':'" MT_OLY "','digest':'" D1
             "','size':3370706,'annotations':{'z':'1','a':'2'}},{'mediaType':"
             "'application/vnd.oci.image.layer.nondistributable.v1.tar+gzip','digest':'" D2
             "','size':77,'urls':['https://mirror.example.com/layer.tgz']}],'subject':{"
             "'mediaType':'" MT_OM "','digest':'" D3
             "','size':10},'annotations':{'org.opencontainers.image.created':'2024-01-02T03:04:"
             "05Z','com.example.key':'value','unknown':'x'},'extra':[1,2,3]}");
}

static const char *oci_canonical(void)
{
    return J("{'schemaVersion':2,'mediaType':'" MT_OM "','config':{'mediaType':'" MT_OC
             "','digest':'" D0 "','size':1469},'layers':[{'mediaType':'" MT_OLY "','digest':'" D1
             "','size':3370706,'annotations':{'a':'2','z':'1'}},{'mediaType':"
             "'application/vnd.oci.image.layer.nondistributable.v1.tar+gzip','digest':'" D2
             "','size':77,'urls':['https://mirror.example.com/layer.tgz']}],'subject':{"
             "'mediaType':'" MT_OM "','digest':'" D3
             "','size':10},'annotations':{'com.example.key':'value','org.opencontainers.image."
             "created':'2024-01-02T03:04:05Z','unknown':'x'}}");
}

static const char *oci_index(void)
{
    return J("{'schemaVersion':2,'mediaType':'" MT_OI "','manifests':["
             "{'mediaType':'" MT_OM "','digest':'" D0
             "','size':100,'platform':{'architecture':'amd64','os':'linux'}},"
             "{'mediaType':'" MT_OM "','digest':'" D1
             "','size':101,'platform':{'architecture':'arm64','os':'linux','variant':'v8'}},"
             "{'mediaType':'" MT_OM "','digest':'" D2
             "','size':102,'platform':{'architecture':'arm','os':'linux','variant':'v6'}},"
             "{'mediaType':'" MT_OM "','digest':'" D3
             "','size':103,'platform':{'architecture':'ppc64le','os':'linux'}},"
             "{'mediaType':'" MT_OM "','digest':'" D4
             "','size':104,'platform':{'architecture':'amd64','os':'windows','os.version':'10.0."
             "17763.5329','os.features':['win32k']}},"
             "{'mediaType':'" MT_OM "','digest':'" D5
             "','size':105,'platform':{'architecture':'unknown','os':'unknown'},'annotations':{"
             "'vnd.docker.reference.type':'attestation-manifest','vnd.docker.reference.digest':'" D0
             "'}}]}");
}

static const char *docker_list(void)
{
    return J("{'schemaVersion':2,'mediaType':'" MT_DL "','manifests':["
             "{'mediaType':'" MT_DM "','size':528,'digest':'" D0
             "','platform':{'architecture':'amd64','os':'linux'}},"
             "{'mediaType':'" MT_DM "','size':529,'digest':'" D1
             "','platform':{'architecture':'arm','os':'linux','variant':'v7'}},"
             "{'mediaType':'" MT_DM "','size':530,'digest':'" D2
             "','platform':{'architecture':'arm64','os':'linux'}},"
             "{'mediaType':'" MT_DM "','size':531,'digest':'" D3
             "','platform':{'architecture':'s390x','os':'linux'}}]}");
}

/* Expect parse_any to fail with `code` and, when msg != NULL, exactly msg. */
static void bad(const char *json, const char *ct, int code, const char *msg, const char *what)
{
    struct kiln_error *e = NULL;
    struct kiln_manifest m = KILN_MANIFEST_INIT;
    struct kiln_index idx = KILN_INDEX_INIT;
    enum kiln_manifest_kind kind = KILN_KIND_UNKNOWN;
    int r = kiln_manifest_parse_any(json, strlen(json), ct, &kind, &m, &idx, &e);
    is_int(r, -code, "%s: refused", what);
    ok(kind == KILN_KIND_UNKNOWN && m.layers == NULL && idx.manifests == NULL,
       "%s: outputs untouched", what);
    if (msg)
        is_str(e ? e->msg : NULL, msg, "%s: message", what);
    else
        ok(e && e->msg && *e->msg, "%s: has a message", what);
    is_int(kiln_manifest_parse_any(json, strlen(json), ct, NULL, NULL, NULL, NULL), -code,
           "%s: refused without err", what);
    kiln_error_free(e);
}

static char *ser_manifest(const struct kiln_manifest *m)
{
    struct kiln_buf b = KILN_BUF_INIT;
    if (kiln_manifest_serialize(m, &b, NULL) < 0) {
        kiln_buf_release(&b);
        return NULL;
    }
    return kiln_buf_detach(&b, NULL);
}

static char *ser_index(const struct kiln_index *idx)
{
    struct kiln_buf b = KILN_BUF_INIT;
    if (kiln_index_serialize(idx, &b, NULL) < 0) {
        kiln_buf_release(&b);
        return NULL;
    }
    return kiln_buf_detach(&b, NULL);
}

static void test_docker_manifest(void)
{
    struct kiln_manifest m = KILN_MANIFEST_INIT;
    struct kiln_error *e = NULL;
    size_t n = strlen(docker_manifest);
    is_int(kiln_manifest_parse(docker_manifest, n, MT_DM, &m, &e), 0, "docker manifest parses");
    is_int(m.schema_version, 2, "schemaVersion");
    is_str(m.media_type, MT_DM, "mediaType");
    is_str(m.config.media_type, MT_DC, "config mediaType");
    is_str(m.config.digest, D0, "config digest");
    is_int(m.config.size, 7654, "config size");
    is_int(m.n_layers, 3, "3 layers");
    is_str(m.layers[0].digest, D1, "layer 0 digest");
    is_int(m.layers[0].size, 29534055, "layer 0 size");
    is_int(m.layers[2].size, 0, "layer 2 size 0");
    ok(!m.subject && !m.annotations && !m.layers[0].platform && m.layers[0].urls.n == 0,
       "no optional parts");
    is_int(kiln_manifest_layer_compression(m.layers[0].media_type), KILN_COMPRESSION_GZIP,
           "docker layer is gzip");

    char *s = ser_manifest(&m);
    is_str(s, docker_canonical, "docker canonical bytes (docker key order)");
    struct kiln_manifest again = KILN_MANIFEST_INIT;
    is_int(kiln_manifest_parse(s, strlen(s), NULL, &again, NULL), 0, "canonical bytes parse");
    char *s2 = ser_manifest(&again);
    is_str(s2, s, "round trip is stable");
    free(s);
    free(s2);
    kiln_manifest_release(&again);

    /* content types: with parameters, upper case, generic, none */
    static const char *cts[] = {
        MT_DM,
        "application/vnd.docker.distribution.manifest.v2+json; charset=utf-8",
        "  Application/VND.Docker.Distribution.Manifest.V2+JSON ",
        "application/json",
        "text/plain; charset=utf-8",
        "application/octet-stream",
        "",
        NULL,
    };
    for (size_t i = 0; i < KILN_ARRAY_SIZE(cts); i++) {
        enum kiln_manifest_kind kind = KILN_KIND_UNKNOWN;
        struct kiln_manifest mm = KILN_MANIFEST_INIT;
        int r = kiln_manifest_parse_any(docker_manifest, n, cts[i], &kind, &mm, NULL, NULL);
        ok(r == 0 && kind == KILN_KIND_MANIFEST && mm.n_layers == 3,
           "parses with content type '%s'", cts[i] ? cts[i] : "(null)");
        kiln_manifest_release(&mm);
    }
    is_int(kiln_manifest_parse(docker_manifest, n, MT_OM, NULL, &e), -KILN_EINVAL,
           "OCI content type vs docker mediaType");
    is_str(e ? e->msg : NULL, "mediaType: '" MT_DM "' does not match the content type '" MT_OM "'",
           "mismatch message");
    kiln_error_free(e);
    e = NULL;
    is_int(kiln_index_parse(docker_manifest, n, NULL, NULL, &e), -KILN_EINVAL,
           "index_parse of a manifest");
    is_str(e ? e->msg : NULL, "expected an index, got an image manifest", "wrong kind message");
    kiln_error_free(e);
    kiln_manifest_release(&m);
    kiln_manifest_release(&m);
    ok(m.layers == NULL && m.n_layers == 0, "release twice is fine");
}

static void test_oci_manifest(void)
{
    const char *in = oci_manifest();
    struct kiln_manifest m = KILN_MANIFEST_INIT;
    struct kiln_error *e = NULL;
    is_int(kiln_manifest_parse(in, strlen(in), MT_OM, &m, &e), 0, "OCI manifest parses");
    if (e)
        printf("# %s\n", e->msg);
    is_int(m.n_layers, 2, "2 layers");
    ok(m.subject && strcmp(m.subject->digest, D3) == 0, "subject");
    is_str(kiln_descriptor_annotation(&m.layers[0], "z"), "1", "layer annotation");
    is_str(kiln_descriptor_annotation(&m.layers[0], "nope"), NULL, "missing annotation");
    is_int(m.layers[1].urls.n, 1, "layer urls");
    is_str(m.layers[1].urls.v[0], "https://mirror.example.com/layer.tgz", "layer url");
    is_str(json_string_value(json_object_get(m.annotations, "unknown")), "x",
           "manifest annotation");
    is_str(kiln_manifest_media_type(&m), MT_OM, "served media type");

    char *s = ser_manifest(&m);
    is_str(s, oci_canonical(),
           "OCI canonical bytes (spec order, sorted annotations, unknown gone)");
    free(s);

    /* no mediaType and no content type: a manifest by its shape */
    const char *bare = J("{'schemaVersion':2,'config':{'mediaType':'" MT_OC "','digest':'" D0
                         "','size':2},'layers':[]}");
    struct kiln_manifest b = KILN_MANIFEST_INIT;
    enum kiln_manifest_kind kind = KILN_KIND_UNKNOWN;
    is_int(kiln_manifest_parse_any(bare, strlen(bare), NULL, &kind, &b, NULL, NULL), 0,
           "bare manifest parses");
    is_int(kind, KILN_KIND_MANIFEST, "detected as manifest");
    ok(b.media_type == NULL, "no mediaType kept as NULL");
    is_str(kiln_manifest_media_type(&b), MT_OM, "served as OCI");
    is_int(b.n_layers, 0, "zero layers allowed");
    s = ser_manifest(&b);
    is_str(s,
           J("{'schemaVersion':2,'config':{'mediaType':'" MT_OC "','digest':'" D0
             "','size':2},'layers':[]}"),
           "bare manifest serialises without mediaType");
    free(s);
    kiln_manifest_release(&b);

    /* nulls on optional fields count as absent */
    const char *nulls =
        J("{'schemaVersion':2,'mediaType':null,'config':{'mediaType':'" MT_OC "','digest':'" D0
          "','size':2,'urls':null,'annotations':null,'platform':null},"
          "'layers':[],'subject':null,'annotations':null}");
    is_int(kiln_manifest_parse(nulls, strlen(nulls), NULL, &b, NULL), 0,
           "nulls on optional fields");
    ok(!b.subject && !b.annotations && !b.config.annotations, "nulls are absent");
    kiln_manifest_release(&b);

    /* artifact with the empty config */
    const char *art =
        J("{'schemaVersion':2,'mediaType':'" MT_OM
          "','artifactType':'application/vnd.example+type','config':{'mediaType':'"
          "application/vnd.oci.empty.v1+json','digest':'sha256:"
          "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a','size':"
          "2,'data':'e30='},'layers':[{'mediaType':'text/plain','digest':'" D1 "','size':5}]}");
    is_int(kiln_manifest_parse(art, strlen(art), NULL, &b, NULL), 0, "artifact manifest");
    is_str(b.artifact_type, "application/vnd.example+type", "artifactType");
    is_int(kiln_manifest_layer_compression(b.layers[0].media_type), KILN_COMPRESSION_UNKNOWN,
           "unknown layer type");
    kiln_manifest_release(&b);
    kiln_manifest_release(&m);
}

static void test_index(void)
{
    const char *in = oci_index();
    struct kiln_index idx = KILN_INDEX_INIT;
    struct kiln_error *e = NULL;
    enum kiln_manifest_kind kind = KILN_KIND_UNKNOWN;
    is_int(kiln_manifest_parse_any(in, strlen(in), NULL, &kind, NULL, &idx, &e), 0,
           "OCI index parses");
    is_int(kind, KILN_KIND_INDEX, "detected as index");
    is_int(idx.n_manifests, 6, "6 entries");
    is_str(idx.manifests[1].platform->variant, "v8", "variant");
    is_str(idx.manifests[4].platform->os_version, "10.0.17763.5329", "os.version");
    is_int(idx.manifests[4].platform->os_features.n, 1, "os.features");
    char *ps = kiln_platform_string(idx.manifests[1].platform);
    is_str(ps, "linux/arm64/v8", "platform string");
    free(ps);

    char *s = ser_index(&idx);
    struct kiln_index again = KILN_INDEX_INIT;
    is_int(kiln_index_parse(s, strlen(s), MT_OI, &again, NULL), 0, "serialised index parses");
    char *s2 = ser_index(&again);
    is_str(s2, s, "index round trip");
    ok(s && strstr(s, "\"platform\":{\"architecture\":\"amd64\",\"os\":\"windows\",\"os.version\":"
                      "\"10.0.17763.5329\",\"os.features\":[\"win32k\"]}"),
       "platform key order");
    free(s);
    free(s2);
    kiln_index_release(&again);

    /* the index of a fresh layout: no entries */
    const char *empty = J("{'schemaVersion':2,'manifests':[]}");
    is_int(kiln_index_parse(empty, strlen(empty), NULL, &again, NULL), 0, "empty index");
    is_int(again.n_manifests, 0, "no entries");
    kiln_index_release(&again);

    const char *dl = docker_list();
    is_int(kiln_index_parse(dl, strlen(dl), MT_DL, &again, NULL), 0, "docker list parses");
    s = ser_index(&again);
    is_str(s, J(dl), "docker list canonical (mediaType, size, digest)");
    free(s);
    is_int(kiln_manifest_parse(dl, strlen(dl), NULL, NULL, &e), -KILN_EINVAL,
           "manifest_parse of a list");
    is_str(e ? e->msg : NULL, "expected an image manifest, got an index", "wrong kind message");
    kiln_error_free(e);
    e = NULL;

    /* remove keeps order */
    kiln_index_remove(&again, 1);
    is_int(again.n_manifests, 3, "removed one");
    is_str(again.manifests[1].digest, D2, "order kept after remove");
    kiln_index_remove(&again, 99);
    is_int(again.n_manifests, 3, "remove past the end does nothing");
    kiln_index_release(&again);
    kiln_index_release(&idx);
}

static void test_select(void)
{
    const char *in = oci_index();
    struct kiln_index idx = KILN_INDEX_INIT;
    kiln_index_parse(in, strlen(in), NULL, &idx, NULL);
    const struct kiln_descriptor *d = NULL;
    struct kiln_error *e = NULL;

    struct {
        const char *os, *arch, *variant, *want;
    } cases[] = {
        {"linux", "amd64", NULL, D0},   {"linux", "x86_64", NULL, D0},
        {"Linux", "AMD64", NULL, D0},   {"linux", "amd64", "v1", D0},
        {"linux", "amd64", "v3", D0}, /* a v3 CPU runs v1 */
        {"linux", "arm64", NULL, D1},   {"linux", "aarch64", NULL, D1},
        {"linux", "arm64", "v8", D1},   {"linux", "arm64", "8", D1},
        {"linux", "arm", NULL, D2}, /* arm defaults to v7, runs v6 */
        {"linux", "arm", "v7", D2},     {"linux", "armhf", NULL, D2},
        {"linux", "arm", "v6", D2},     {"linux", "armel", NULL, D2},
        {"linux", "ppc64le", NULL, D3}, {"windows", "amd64", NULL, D4},
    };
    for (size_t i = 0; i < KILN_ARRAY_SIZE(cases); i++) {
        d = NULL;
        int r = kiln_index_select(&idx, cases[i].os, cases[i].arch, cases[i].variant, &d, NULL);
        ok(r == 0 && d && strcmp(d->digest, cases[i].want) == 0, "select %s/%s/%s", cases[i].os,
           cases[i].arch, cases[i].variant ? cases[i].variant : "-");
    }

    d = NULL;
    is_int(kiln_index_select(&idx, "linux", "s390x", NULL, &d, &e), -KILN_ENOTFOUND, "no s390x");
    ok(d == NULL, "no output on failure");
    is_str(e ? e->msg : NULL,
           "no manifest for platform 'linux/s390x' in the index; available: linux/amd64, "
           "linux/arm64/v8, linux/arm/v6, linux/ppc64le, windows/amd64",
           "no-match message lists the platforms, not attestations");
    kiln_error_free(e);
    e = NULL;
    is_int(kiln_index_select(&idx, "linux", "arm", "v5", &d, NULL), -KILN_ENOTFOUND,
           "arm/v5 cannot run v6");
    is_int(kiln_index_select(&idx, "linux", "arm64", "v9", &d, NULL), 0, "arm64/v9 runs v8");
    is_int(kiln_index_select(&idx, "linux", "ppc64le", "v9", &d, NULL), -KILN_ENOTFOUND,
           "no variant fallback for other architectures");
    is_int(kiln_index_select(&idx, "", "amd64", NULL, &d, NULL), -KILN_EINVAL, "os required");
    is_int(kiln_index_select(&idx, "linux", NULL, NULL, &d, NULL), -KILN_EINVAL, "arch required");
    kiln_index_release(&idx);

    /* docker list: arm64 entry without variant, arm v7 */
    const char *dl = docker_list();
    kiln_index_parse(dl, strlen(dl), NULL, &idx, NULL);
    ok(kiln_index_select(&idx, "linux", "arm64", "v8", &d, NULL) == 0 && strcmp(d->digest, D2) == 0,
       "arm64/v8 matches an entry without variant");
    ok(kiln_index_select(&idx, "linux", "arm", NULL, &d, NULL) == 0 && strcmp(d->digest, D1) == 0,
       "arm matches v7");
    is_int(kiln_index_select(&idx, "linux", "arm", "v6", &d, NULL), -KILN_ENOTFOUND,
           "arm/v6 cannot run v7");
    kiln_index_release(&idx);

    /* exact variant beats a lower one, whatever the order */
    const char *two = J("{'schemaVersion':2,'manifests':["
                        "{'mediaType':'" MT_OM "','digest':'" D0
                        "','size':1,'platform':{'architecture':'arm','os':'linux','variant':'v6'}},"
                        "{'mediaType':'" MT_OM "','digest':'" D1
                        "','size':1,'platform':{'architecture':'arm','os':'linux','variant':'v7'}},"
                        "{'mediaType':'" MT_OM "','digest':'" D2
                        "','size':1,'platform':{'architecture':'arm','os':'linux','variant':'v5'}},"
                        "{'mediaType':'" MT_OM "','digest':'" D3 "','size':1}]}");
    kiln_index_parse(two, strlen(two), NULL, &idx, NULL);
    ok(kiln_index_select(&idx, "linux", "arm", "v7", &d, NULL) == 0 && strcmp(d->digest, D1) == 0,
       "exact variant wins");
    ok(kiln_index_select(&idx, "linux", "arm", "v8", &d, NULL) == 0 && strcmp(d->digest, D1) == 0,
       "highest lower variant wins");
    ok(kiln_index_select(&idx, "linux", "arm", "v6", &d, NULL) == 0 && strcmp(d->digest, D0) == 0,
       "v6 picks v6 over v5");
    kiln_index_release(&idx);

    const char *none =
        J("{'schemaVersion':2,'manifests':[{'mediaType':'" MT_OM "','digest':'" D3 "','size':1}]}");
    kiln_index_parse(none, strlen(none), NULL, &idx, NULL);
    is_int(kiln_index_select(&idx, "linux", "amd64", NULL, &d, &e), -KILN_ENOTFOUND,
           "entries without platform never match");
    is_str(e ? e->msg : NULL,
           "no manifest for platform 'linux/amd64' in the index; available: none",
           "message with nothing available");
    kiln_error_free(e);
    kiln_index_release(&idx);
}

static void test_invalid(void)
{
    /* config and layer pieces for building bad manifests */
#define CFG   "'config':{'mediaType':'" MT_OC "','digest':'" D0 "','size':2}"
#define LAYER "{'mediaType':'" MT_OLY "','digest':'" D1 "','size':3}"
#define HEAD  "{'schemaVersion':2,'mediaType':'" MT_OM "',"

    bad(J(HEAD CFG ",'layers':[" LAYER "," LAYER ",{'mediaType':'" MT_OLY
                   "','digest':'sha256:xyz','size':3}]}"),
        NULL, KILN_EINVAL,
        "layers[2].digest: invalid digest 'sha256:xyz': sha256 needs 64 lower-case hex digits",
        "bad layer digest");
    bad(J(HEAD "'config':{'mediaType':'" MT_OC "','digest':'" D0 "','size':-1},'layers':[]}"), NULL,
        KILN_EINVAL, "config.size: must be a non-negative integer", "negative size");
    bad(J(HEAD "'config':{'mediaType':'" MT_OC "','digest':'" D0 "','size':1.5},'layers':[]}"),
        NULL, KILN_EINVAL, "config.size: must be a non-negative integer", "real size");
    bad(J(HEAD "'config':{'mediaType':'" MT_OC "','digest':'" D0 "','size':'12'},'layers':[]}"),
        NULL, KILN_EINVAL, "config.size: must be a non-negative integer", "string size");
    bad(J(HEAD "'config':{'mediaType':'" MT_OC "','digest':'" D0 "','size':null},'layers':[]}"),
        NULL, KILN_EINVAL, "config.size: must be a non-negative integer", "null size");
    bad(J(HEAD "'config':{'mediaType':'" MT_OC "','digest':'" D0 "'},'layers':[]}"), NULL,
        KILN_EINVAL, "config.size: missing", "missing size");
    bad(J(HEAD "'config':{'mediaType':'" MT_OC "','digest':'" D0
               "','size':99999999999999999999},'layers':[]}"),
        NULL, KILN_EINVAL, NULL, "size too big for JSON integers");
    bad(J(HEAD "'config':{'digest':'" D0 "','size':2},'layers':[]}"), NULL, KILN_EINVAL,
        "config.mediaType: missing", "missing config mediaType");
    bad(J(HEAD "'config':{'mediaType':'oci config','digest':'" D0 "','size':2},'layers':[]}"), NULL,
        KILN_EINVAL, "config.mediaType: invalid media type 'oci config'", "bad media type");
    bad(J(HEAD "'config':{'mediaType':'" MT_OC "; x=y','digest':'" D0 "','size':2},'layers':[]}"),
        NULL, KILN_EINVAL, NULL, "media type with parameters");
    bad(J(HEAD "'config':{'mediaType':'" MT_OC "','size':2},'layers':[]}"), NULL, KILN_EINVAL,
        "config.digest: missing", "missing config digest");
    bad(J(HEAD "'config':{'mediaType':'" MT_OC "','digest':'md5:abc','size':2},'layers':[]}"), NULL,
        KILN_EUNSUPPORTED, "config.digest: unsupported digest algorithm 'md5'", "md5 digest");
    bad(J(HEAD "'layers':[]}"), NULL, KILN_EINVAL, "config: missing", "no config");
    bad(J(HEAD "'config':[],'layers':[]}"), NULL, KILN_EINVAL, "config: must be an object",
        "config not an object");
    bad(J(HEAD CFG "}"), NULL, KILN_EINVAL, "layers: missing", "no layers");
    bad(J(HEAD CFG ",'layers':{}}"), NULL, KILN_EINVAL, "layers: must be an array",
        "layers not an array");
    bad(J(HEAD CFG ",'layers':null}"), NULL, KILN_EINVAL, "layers: must be an array",
        "null layers");
    bad(J(HEAD CFG ",'layers':[7]}"), NULL, KILN_EINVAL, "layers[0]: must be an object",
        "layer not an object");
    bad(J("{'schemaVersion':3,'mediaType':'" MT_OM "'," CFG ",'layers':[]}"), NULL, KILN_EINVAL,
        "schemaVersion: must be 2", "schemaVersion 3");
    bad(J("{'schemaVersion':'2','mediaType':'" MT_OM "'," CFG ",'layers':[]}"), NULL, KILN_EINVAL,
        "schemaVersion: must be 2", "schemaVersion string");
    bad(J("{'mediaType':'" MT_OM "'," CFG ",'layers':[]}"), NULL, KILN_EINVAL,
        "schemaVersion: missing", "no schemaVersion");
    bad(J(HEAD CFG ",'layers':[],'annotations':{'a':1}}"), NULL, KILN_EINVAL,
        "annotations: value of 'a' must be a string", "annotation value not a string");
    bad(J(HEAD CFG ",'layers':[],'annotations':{'':'x'}}"), NULL, KILN_EINVAL,
        "annotations: empty key", "empty annotation key");
    bad(J(HEAD CFG ",'layers':[],'annotations':[]}"), NULL, KILN_EINVAL,
        "annotations: must be an object of strings", "annotations not an object");
    bad(J(HEAD CFG ",'layers':[{'mediaType':'" MT_OLY "','digest':'" D1
                   "','size':3,'urls':['not a url']}]}"),
        NULL, KILN_EINVAL, "layers[0].urls: invalid URL 'not a url'", "bad url");
    bad(J(HEAD CFG ",'layers':[{'mediaType':'" MT_OLY "','digest':'" D1
                   "','size':3,'urls':'https://x'}]}"),
        NULL, KILN_EINVAL, "layers[0].urls: must be an array of strings", "urls not an array");
    bad(J(HEAD CFG ",'layers':[{'mediaType':'" MT_OLY "','digest':'" D1 "','size':3,'urls':[1]}]}"),
        NULL, KILN_EINVAL, "layers[0].urls: entry 0 must be a string", "url not a string");
    bad(J(HEAD CFG ",'layers':[],'subject':{'mediaType':'" MT_OM "','digest':'" D1 "'}}"), NULL,
        KILN_EINVAL, "subject.size: missing", "bad subject");
    bad(J(HEAD CFG ",'layers':[],'artifactType':'x'}"), NULL, KILN_EINVAL,
        "artifactType: invalid media type 'x'", "bad artifactType");
    bad(J("{'schemaVersion':2,'mediaType':'" MT_OM "','mediaType':'" MT_OM "'," CFG
          ",'layers':[]}"),
        NULL, KILN_EINVAL, NULL, "duplicate key");
    bad(J(HEAD CFG ",'layers':[]} x"), NULL, KILN_EINVAL, NULL, "trailing garbage");
    bad(J("[1,2]"), NULL, KILN_EINVAL, "manifest must be a JSON object", "array");
    bad(J("\"x\""), NULL, KILN_EINVAL, NULL, "string");
    bad("", NULL, KILN_EINVAL, NULL, "empty input");
    bad("{", NULL, KILN_EINVAL, NULL, "cut JSON");
    bad(J("{'schemaVersion':2,'x':\"\\u0000\"}"), NULL, KILN_EINVAL, NULL, "NUL in a string");
    bad(J("{'schemaVersion':2}"), NULL, KILN_EINVAL,
        "cannot tell the manifest kind: no mediaType, 'manifests' or 'config'", "no shape");
    bad(J("{'schemaVersion':2,'manifests':[]," CFG ",'layers':[]}"), NULL, KILN_EINVAL, NULL,
        "ambiguous shape");
    bad(J("{'schemaVersion':2,'mediaType':'application/vnd.oci.artifact.manifest.v1+json'}"), NULL,
        KILN_EUNSUPPORTED,
        "mediaType: unsupported manifest media type "
        "'application/vnd.oci.artifact.manifest.v1+json'",
        "unknown manifest mediaType");
    bad(J(HEAD CFG ",'layers':[]}"), "application/vnd.example+json", KILN_EUNSUPPORTED,
        "unsupported manifest media type 'application/vnd.example+json'", "unknown content type");
    bad(J("{'schemaVersion':2,'mediaType':'" MT_OI "'," CFG ",'layers':[]}"), MT_OM, KILN_EINVAL,
        NULL, "index mediaType, manifest content type");
    bad(J("{'schemaVersion':2,'mediaType':'" MT_OI "','manifests':[]}"), MT_OM, KILN_EINVAL, NULL,
        "index served as manifest");
    bad(J("{'schemaVersion':2,'mediaType':'" MT_OM "','manifests':[]}"), NULL, KILN_EINVAL,
        "config: missing", "manifest mediaType, index shape");
    bad(J("{'schemaVersion':2,'mediaType':'" MT_OI "','manifests':[{'mediaType':'" MT_OM
          "','digest':'" D0 "','size':1,'platform':{'os':'linux'}}]}"),
        NULL, KILN_EINVAL, "manifests[0].platform.architecture: missing", "platform without arch");
    bad(J("{'schemaVersion':2,'mediaType':'" MT_OI "','manifests':[{'mediaType':'" MT_OM
          "','digest':'" D0 "','size':1,'platform':{'os':'','architecture':'amd64'}}]}"),
        NULL, KILN_EINVAL, "manifests[0].platform.os: must not be empty", "platform empty os");
    bad(J("{'schemaVersion':2,'mediaType':'" MT_OI "','manifests':[{'mediaType':'" MT_OM
          "','digest':'" D0 "','size':1,'platform':'linux/amd64'}]}"),
        NULL, KILN_EINVAL, "manifests[0].platform: must be an object", "platform a string");
    bad(J("{'schemaVersion':2,'mediaType':'" MT_OI "','manifests':[{'mediaType':'" MT_OM
          "','digest':'" D0 "','size':1,'platform':{'os':'linux','architecture':'arm',"
          "'variant':7}}]}"),
        NULL, KILN_EINVAL, "manifests[0].platform.variant: must be a string", "variant a number");
    bad(J("{'schemaVersion':2,'mediaType':'" MT_OI "'}"), NULL, KILN_EINVAL, "manifests: missing",
        "index without manifests");

    /* docker schema 1, however it shows */
    const char *s1 = J("{'schemaVersion':1,'name':'library/x','tag':'latest','architecture':"
                       "'amd64','fsLayers':[{'blobSum':'" D0 "'}],'history':[]}");
    bad(s1, NULL, KILN_EUNSUPPORTED, "docker schema 1 manifests are not supported",
        "schema 1 by schemaVersion");
    bad(J(HEAD CFG ",'layers':[]}"), "application/vnd.docker.distribution.manifest.v1+prettyjws",
        KILN_EUNSUPPORTED, "docker schema 1 manifests are not supported",
        "schema 1 by content type");
    bad(J("{'schemaVersion':2,'mediaType':'application/vnd.docker.distribution.manifest.v1+json'}"),
        NULL, KILN_EUNSUPPORTED, "docker schema 1 manifests are not supported",
        "schema 1 by mediaType");
    bad(J("{'fsLayers':[],'signatures':[]}"), NULL, KILN_EUNSUPPORTED,
        "docker schema 1 manifests are not supported", "schema 1 by shape");

    /* caps */
    const char *layer = J(LAYER);
    struct kiln_buf b = KILN_BUF_INIT;
    kiln_buf_adds(&b, J(HEAD CFG ",'layers':["));
    for (int i = 0; i <= KILN_MANIFEST_MAX_LAYERS; i++)
        kiln_buf_addf(&b, "%s%s", i ? "," : "", layer);
    kiln_buf_adds(&b, "]}");
    bad(b.buf, NULL, KILN_ETOOBIG, "layers: more than 1000 entries", "1001 layers");
    kiln_buf_truncate(&b, 0);
    kiln_buf_adds(&b, J("{'schemaVersion':2,'manifests':["));
    for (int i = 0; i <= KILN_INDEX_MAX_MANIFESTS; i++)
        kiln_buf_addf(&b, "%s%s", i ? "," : "", layer);
    kiln_buf_adds(&b, "]}");
    bad(b.buf, NULL, KILN_ETOOBIG, "manifests: more than 1000 entries", "1001 index entries");
    kiln_buf_truncate(&b, 0);
    kiln_buf_adds(&b, J(HEAD CFG ",'layers':[],'annotations':{'a':'"));
    while (b.len <= KILN_MANIFEST_MAX_SIZE)
        kiln_buf_adds(&b, "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx");
    kiln_buf_adds(&b, "'}}");
    bad(b.buf, NULL, KILN_ETOOBIG, "manifest is larger than 4194304 bytes", "over 4 MiB");

    /* exactly 1000 layers is fine */
    kiln_buf_truncate(&b, 0);
    kiln_buf_adds(&b, J(HEAD CFG ",'layers':["));
    for (int i = 0; i < KILN_MANIFEST_MAX_LAYERS; i++)
        kiln_buf_addf(&b, "%s%s", i ? "," : "", layer);
    kiln_buf_adds(&b, "]}");
    struct kiln_manifest m = KILN_MANIFEST_INIT;
    is_int(kiln_manifest_parse(b.buf, b.len, NULL, &m, NULL), 0, "1000 layers parse");
    is_int(m.n_layers, 1000, "1000 layers");
    kiln_manifest_release(&m);
    kiln_buf_release(&b);
#undef CFG
#undef LAYER
#undef HEAD
}

static void set_desc(struct kiln_descriptor *d, const char *mt, const char *digest, int64_t size)
{
    d->media_type = kiln_xstrdup(mt);
    d->digest = kiln_xstrdup(digest);
    d->size = size;
}

static void test_build(void)
{
    struct kiln_manifest m = KILN_MANIFEST_INIT;
    m.media_type = kiln_xstrdup(MT_OM);
    set_desc(&m.config, MT_OC, D0, 1234);
    struct kiln_descriptor l = KILN_DESCRIPTOR_INIT;
    set_desc(&l, MT_OLY, D1, 100);
    kiln_manifest_add_layer(&m, &l);
    kiln_descriptor_release(&l);
    set_desc(&l, "application/vnd.oci.image.layer.v1.tar+zstd", D2, 200);
    is_int(kiln_descriptor_set_annotation(&l, "b", "2", NULL), 0, "set annotation");
    is_int(kiln_descriptor_set_annotation(&l, "a", "1", NULL), 0, "set another annotation");
    is_int(kiln_descriptor_set_annotation(&l, "c", "3", NULL), 0, "set a third");
    is_int(kiln_descriptor_set_annotation(&l, "c", NULL, NULL), 0, "remove one");
    is_int(kiln_descriptor_set_annotation(&l, "", "x", NULL), -KILN_EINVAL, "empty key refused");
    is_int(kiln_descriptor_set_annotation(&l, "k", "\xff", NULL), -KILN_EINVAL,
           "non-UTF-8 value refused");
    is_int(kiln_descriptor_set_annotation(&l, "\xff", "v", NULL), -KILN_EINVAL,
           "non-UTF-8 key refused");
    kiln_manifest_add_layer(&m, &l);
    kiln_descriptor_release(&l);

    char *s = ser_manifest(&m);
    is_str(s,
           J("{'schemaVersion':2,'mediaType':'" MT_OM "','config':{'mediaType':'" MT_OC
             "','digest':'" D0 "','size':1234},'layers':[{'mediaType':'" MT_OLY "','digest':'" D1
             "','size':100},{'mediaType':'application/vnd.oci.image.layer.v1.tar+zstd','digest':'"
             "" D2 "','size':200,'annotations':{'a':'1','b':'2'}}]}"),
           "built manifest bytes");
    char d[KILN_DIGEST_BUFSZ];
    kiln_digest_buf(s, strlen(s), d);
    ok(kiln_digest_is_valid(d), "the caller digests the bytes");
    free(s);
    is_int(kiln_manifest_layer_compression(m.layers[1].media_type), KILN_COMPRESSION_ZSTD, "zstd");

    /* descriptor copy is deep */
    struct kiln_descriptor c;
    kiln_descriptor_copy(&c, &m.layers[1]);
    kiln_descriptor_set_annotation(&m.layers[1], "a", "changed", NULL);
    is_str(kiln_descriptor_annotation(&c, "a"), "1", "copy has its own annotations");
    kiln_descriptor_release(&c);

    /* conversion to docker: zstd has no docker type, nothing changes */
    struct kiln_error *e = NULL;
    is_int(kiln_manifest_convert(&m, KILN_FORMAT_DOCKER, &e), -KILN_EUNSUPPORTED,
           "zstd cannot go docker");
    is_str(e ? e->msg : NULL,
           "layers[1].mediaType: 'application/vnd.oci.image.layer.v1.tar+zstd' has no docker "
           "equivalent",
           "conversion message");
    kiln_error_free(e);
    e = NULL;
    is_str(m.media_type, MT_OM, "unchanged after failed conversion");
    is_str(m.layers[0].media_type, MT_OLY, "layer unchanged after failed conversion");

    /* drop the zstd layer; convert OCI -> docker -> OCI */
    kiln_descriptor_release(&m.layers[1]);
    m.n_layers = 1;
    m.annotations = json_pack("{s:s}", "k", "v");
    is_int(kiln_manifest_convert(&m, KILN_FORMAT_DOCKER, &e), 0, "convert to docker");
    is_str(m.media_type, MT_DM, "docker manifest type");
    is_str(m.config.media_type, MT_DC, "docker config type");
    is_str(m.layers[0].media_type, MT_DLY, "docker layer type");
    ok(m.annotations == NULL, "top-level annotations dropped for docker");
    s = ser_manifest(&m);
    is_str(s,
           J("{'schemaVersion':2,'mediaType':'" MT_DM "','config':{'mediaType':'" MT_DC
             "','size':1234,'digest':'" D0 "'},'layers':[{'mediaType':'" MT_DLY
             "','size':100,'digest':'" D1 "'}]}"),
           "docker bytes");
    free(s);
    is_int(kiln_manifest_convert(&m, KILN_FORMAT_OCI, &e), 0, "convert back to OCI");
    is_str(m.media_type, MT_OM, "OCI manifest type");
    is_str(m.config.media_type, MT_OC, "OCI config type");
    is_str(m.layers[0].media_type, MT_OLY, "OCI layer type");

    m.subject = kiln_xcalloc(1, sizeof(*m.subject));
    set_desc(m.subject, MT_OM, D3, 5);
    is_int(kiln_manifest_convert(&m, KILN_FORMAT_DOCKER, NULL), -KILN_EUNSUPPORTED,
           "subject cannot go docker");

    /* invalid structs are not serialised */
    struct kiln_buf b = KILN_BUF_INIT;
    free(m.layers[0].digest);
    m.layers[0].digest = kiln_xstrdup("sha256:nothex");
    is_int(kiln_manifest_serialize(&m, &b, &e), -KILN_EINVAL, "bad digest not serialised");
    is_str(e ? e->msg : NULL,
           "layers[0].digest: invalid digest 'sha256:nothex': sha256 needs 64 lower-case hex "
           "digits",
           "serialise error names the field");
    kiln_error_free(e);
    e = NULL;
    is_int(b.len, 0, "nothing written");
    free(m.layers[0].digest);
    m.layers[0].digest = kiln_xstrdup(D1);
    m.layers[0].size = -1;
    is_int(kiln_manifest_serialize(&m, &b, NULL), -KILN_EINVAL, "negative size not serialised");
    m.layers[0].size = 1;
    free(m.layers[0].media_type);
    m.layers[0].media_type = NULL;
    is_int(kiln_manifest_serialize(&m, &b, NULL), -KILN_EINVAL, "no mediaType not serialised");
    m.layers[0].media_type = kiln_xstrdup("text/\xff");
    is_int(kiln_manifest_serialize(&m, &b, &e), -KILN_EINVAL, "non-UTF-8 not serialised");
    kiln_error_free(e);
    e = NULL;
    free(m.layers[0].media_type);
    m.layers[0].media_type = kiln_xstrdup(MT_OLY);
    m.schema_version = 1;
    is_int(kiln_manifest_serialize(&m, &b, NULL), -KILN_EUNSUPPORTED, "schema 1 not serialised");
    m.schema_version = 2;
    is_int(kiln_manifest_serialize(&m, &b, NULL), 0, "valid again");
    ok(b.len > 0, "written");

    /* a small output cap */
    struct kiln_buf small;
    kiln_buf_init(&small, 16);
    is_int(kiln_manifest_serialize(&m, &small, &e), -KILN_ETOOBIG, "output cap");
    is_int(small.len, 0, "output cap: nothing left");
    kiln_error_free(e);
    kiln_buf_release(&small);
    kiln_buf_release(&b);
    kiln_manifest_release(&m);
}

static void test_index_build(void)
{
    struct kiln_index idx = KILN_INDEX_INIT;
    idx.media_type = kiln_xstrdup(MT_OI);
    struct kiln_descriptor d = KILN_DESCRIPTOR_INIT;
    set_desc(&d, MT_OM, D0, 10);
    d.platform = kiln_xcalloc(1, sizeof(*d.platform));
    d.platform->os = kiln_xstrdup("linux");
    d.platform->architecture = kiln_xstrdup("arm64");
    d.platform->variant = kiln_xstrdup("v8");
    kiln_index_add(&idx, &d);
    kiln_descriptor_release(&d);
    set_desc(&d, MT_OI, D1, 11);
    kiln_index_add(&idx, &d);
    kiln_descriptor_release(&d);
    char *s = ser_index(&idx);
    is_str(s,
           J("{'schemaVersion':2,'mediaType':'" MT_OI "','manifests':[{'mediaType':'" MT_OM
             "','digest':'" D0
             "','size':10,'platform':{'architecture':'arm64','os':'linux','variant':'v8'}},{"
             "'mediaType':'" MT_OI "','digest':'" D1 "','size':11}]}"),
           "built index bytes");
    free(s);
    is_int(kiln_index_convert(&idx, KILN_FORMAT_DOCKER, NULL), 0, "index to docker");
    is_str(idx.media_type, MT_DL, "docker list type");
    is_str(idx.manifests[0].media_type, MT_DM, "entry docker manifest");
    is_str(idx.manifests[1].media_type, MT_DL, "nested index becomes list");
    s = ser_index(&idx);
    ok(s && strstr(s, "{\"mediaType\":\"" MT_DM "\",\"size\":10,\"digest\":\"" D0 "\""),
       "docker list entry order");
    free(s);
    is_int(kiln_index_convert(&idx, KILN_FORMAT_OCI, NULL), 0, "index back to OCI");
    is_str(idx.media_type, MT_OI, "OCI index type");
    is_str(idx.manifests[0].media_type, MT_OM, "entry OCI manifest");
    free(idx.manifests[1].media_type);
    idx.manifests[1].media_type = kiln_xstrdup("application/vnd.example+json");
    is_int(kiln_index_convert(&idx, KILN_FORMAT_DOCKER, NULL), -KILN_EUNSUPPORTED,
           "unknown entry type cannot go docker");
    is_str(idx.media_type, MT_OI, "unchanged after failure");
    idx.manifests[0].platform->architecture[0] = '\0';
    is_int(kiln_index_serialize(&idx, &(struct kiln_buf)KILN_BUF_INIT, NULL), -KILN_EINVAL,
           "empty architecture not serialised");
    kiln_index_release(&idx);
}

static void test_kinds(void)
{
    is_int(kiln_manifest_kind_of(MT_OM), KILN_KIND_MANIFEST, "OCI manifest kind");
    is_int(kiln_manifest_kind_of(MT_DM "; charset=utf-8"), KILN_KIND_MANIFEST,
           "docker manifest kind with a parameter");
    is_int(kiln_manifest_kind_of(MT_OI), KILN_KIND_INDEX, "OCI index kind");
    is_int(kiln_manifest_kind_of(MT_DL), KILN_KIND_INDEX, "docker list kind");
    is_int(kiln_manifest_kind_of("application/vnd.docker.distribution.manifest.v1+prettyjws"),
           KILN_KIND_SCHEMA1, "schema 1 kind");
    is_int(kiln_manifest_kind_of("application/json"), KILN_KIND_UNKNOWN, "json is unknown");
    is_int(kiln_manifest_kind_of(NULL), KILN_KIND_UNKNOWN, "NULL is unknown");
    is_int(kiln_manifest_layer_compression("application/vnd.oci.image.layer.v1.tar"),
           KILN_COMPRESSION_NONE, "plain tar");
    is_int(kiln_manifest_layer_compression(
               "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"),
           KILN_COMPRESSION_GZIP, "foreign gzip");
    is_int(kiln_manifest_layer_compression(NULL), KILN_COMPRESSION_UNKNOWN, "NULL");
    ok(strstr(KILN_MT_ACCEPT_MANIFESTS, MT_OI) && strstr(KILN_MT_ACCEPT_MANIFESTS, MT_DM),
       "accept header names the kinds");
    struct kiln_platform *p = kiln_platform_copy(NULL);
    ok(p == NULL, "copy of NULL platform");
    kiln_platform_free(NULL);
    kiln_descriptor_release(NULL);
    kiln_manifest_release(NULL);
    kiln_index_release(NULL);
    ok(1, "NULL-safe destructors");
}

int main(void)
{
    test_docker_manifest();
    test_oci_manifest();
    test_index();
    test_select();
    test_invalid();
    test_build();
    test_index_build();
    test_kinds();
    pool_free();
    return tap_done();
}
