#include "util/common.h"

#include "oci/config.h"
#include "util/buf.h"
#include "tap.h"

#define H0 "5feceb66ffc86f38d952786c6d696c79c2dbc239dd4e91b46729d73a27fb57e9"
#define H1 "6b86b273ff34fce19d6b804eff5a3f5747ada4eaa22f1d49c01e52ddb7875b4b"
#define H2 "d4735e3a265e16eee03f59718b9b5d03019c07d8b6c51f90da3a666eec13ab35"
#define D0 "sha256:" H0
#define D1 "sha256:" H1
#define D2 "sha256:" H2

static char *pool[256];
static size_t pool_n;

/* JSON written with ' for ", freed at exit. */
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

/* A docker config as `docker build` writes it, with fields kiln does not model. */
static const char *docker_config(void)
{
    return J("{'architecture':'amd64','config':{'Hostname':'','Domainname':'','User':'1000',"
             "'AttachStdin':false,'ExposedPorts':{'8888/tcp':{}},'Tty':false,'Env':["
             "'PATH=/opt/conda/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',"
             "'DEBIAN_FRONTEND=noninteractive','CONDA_DIR=/opt/conda','SHELL=/bin/bash',"
             "'NB_USER=jovyan','EMPTY=','EQ=a=b'],'Cmd':['start-notebook.sh'],'Healthcheck':{"
             "'Test':['CMD-SHELL','wget -O- --no-verbose --tries=1 http://localhost:8888/api || "
             "exit 1'],'Interval':5000000000,'Timeout':3000000000,'StartPeriod':3000000000,"
             "'Retries':3},'ArgsEscaped':true,'Image':'sha256:" H2
             "','Volumes':null,'WorkingDir':'/home/jovyan','Entrypoint':['tini','-g','--'],"
             "'OnBuild':null,'Labels':{'maintainer':'Jupyter Project <jupyter@googlegroups.com>',"
             "'org.opencontainers.image.ref.name':'ubuntu','org.opencontainers.image.version':"
             "'22.04'}},'container':'4d1e2f','created':'2023-06-13T17:40:35.925209337Z',"
             "'docker_version':'20.10.24','history':[{'created':'2023-05-30T09:32:05.541227468Z',"
             "'created_by':'/bin/sh -c #(nop) ADD file:d4e5 in / '},{'created':"
             "'2023-05-30T09:32:05.863286447Z','created_by':'/bin/sh -c #(nop)  CMD "
             "[\\'/bin/bash\\']','empty_layer':true},{'created':'2023-06-13T17:38:00+02:00',"
             "'created_by':'RUN /bin/bash -o pipefail -c apt-get update --yes','comment':"
             "'buildkit.dockerfile.v0'}],'os':'linux','rootfs':{'type':'layers','diff_ids':['" D0
             "','" D1 "']},'variant':'v8'}");
}

static void bad(const char *json, int code, const char *msg, const char *what)
{
    struct kiln_image_config c = KILN_IMAGE_CONFIG_INIT;
    struct kiln_error *e = NULL;
    is_int(kiln_image_config_parse(json, strlen(json), &c, &e), -code, "%s: refused", what);
    ok(c.root == NULL, "%s: output untouched", what);
    if (msg)
        is_str(e ? e->msg : NULL, msg, "%s: message", what);
    else
        ok(e && e->msg && *e->msg, "%s: has a message", what);
    kiln_error_free(e);
}

static char *ser(const struct kiln_image_config *c)
{
    struct kiln_buf b = KILN_BUF_INIT;
    if (kiln_image_config_serialize(c, &b, NULL) < 0) {
        kiln_buf_release(&b);
        return NULL;
    }
    return kiln_buf_detach(&b, NULL);
}

static void test_parse(void)
{
    const char *in = docker_config();
    struct kiln_image_config c = KILN_IMAGE_CONFIG_INIT;
    struct kiln_error *e = NULL;
    is_int(kiln_image_config_parse(in, strlen(in), &c, &e), 0, "docker config parses");
    if (e)
        printf("# %s\n", e->msg);
    is_str(kiln_image_config_get(&c, KILN_IC_ARCHITECTURE), "amd64", "architecture");
    is_str(kiln_image_config_get(&c, KILN_IC_OS), "linux", "os");
    is_str(kiln_image_config_get(&c, KILN_IC_VARIANT), "v8", "variant");
    is_str(kiln_image_config_get(&c, KILN_IC_CREATED), "2023-06-13T17:40:35.925209337Z", "created");
    is_str(kiln_image_config_get(&c, KILN_IC_USER), "1000", "User");
    is_str(kiln_image_config_get(&c, KILN_IC_WORKING_DIR), "/home/jovyan", "WorkingDir");
    is_str(kiln_image_config_get(&c, KILN_IC_STOP_SIGNAL), NULL, "no StopSignal");
    is_str(kiln_image_config_get(&c, KILN_IC_AUTHOR), NULL, "no author");
    is_str(kiln_image_config_get(&c, (enum kiln_image_config_field)99), NULL, "unknown field");

    is_str(kiln_image_config_env_get(&c, "CONDA_DIR"), "/opt/conda", "env CONDA_DIR");
    is_str(kiln_image_config_env_get(&c, "EMPTY"), "", "env with empty value");
    is_str(kiln_image_config_env_get(&c, "EQ"), "a=b", "env value with '='");
    is_str(kiln_image_config_env_get(&c, "CONDA"), NULL, "no prefix match");
    is_str(kiln_image_config_env_get(&c, "NOPE"), NULL, "missing env");
    is_str(kiln_image_config_env_get(&c, ""), NULL, "empty name");
    struct kiln_strv sv = KILN_STRV_INIT;
    kiln_image_config_env(&c, &sv);
    is_int(sv.n, 7, "7 env entries");
    is_str(sv.v[4], "NB_USER=jovyan", "env order");
    kiln_strv_release(&sv);

    is_int(kiln_image_config_entrypoint(&c, &sv), 1, "Entrypoint set");
    ok(sv.n == 3 && strcmp(sv.v[0], "tini") == 0 && strcmp(sv.v[2], "--") == 0, "Entrypoint");
    kiln_strv_release(&sv);
    is_int(kiln_image_config_cmd(&c, &sv), 1, "Cmd set");
    ok(sv.n == 1 && strcmp(sv.v[0], "start-notebook.sh") == 0, "Cmd");
    kiln_strv_release(&sv);

    is_str(kiln_image_config_label(&c, "org.opencontainers.image.version"), "22.04", "label");
    is_str(kiln_image_config_label(&c, "nope"), NULL, "missing label");
    is_int(json_object_size(kiln_image_config_labels(&c)), 3, "3 labels");
    kiln_image_config_exposed_ports(&c, &sv);
    ok(sv.n == 1 && strcmp(sv.v[0], "8888/tcp") == 0, "exposed ports");
    kiln_strv_release(&sv);
    kiln_image_config_volumes(&c, &sv);
    is_int(sv.n, 0, "Volumes null: none");
    kiln_strv_release(&sv);

    is_int(kiln_image_config_n_diff_ids(&c), 2, "2 diff_ids");
    is_str(kiln_image_config_diff_id(&c, 1), D1, "diff_id 1");
    is_str(kiln_image_config_diff_id(&c, 2), NULL, "diff_id past the end");
    is_int(kiln_image_config_n_history(&c), 3, "3 history entries");
    struct kiln_history h;
    is_int(kiln_image_config_history(&c, 1, &h), 0, "history 1");
    ok(h.empty_layer && h.created_by && strstr(h.created_by, "CMD") && !h.comment,
       "history 1 fields");
    is_int(kiln_image_config_history(&c, 2, &h), 0, "history 2");
    is_str(h.comment, "buildkit.dockerfile.v0", "history comment");
    ok(!h.empty_layer, "history 2 not empty");
    is_int(kiln_image_config_history(&c, 3, &h), -KILN_ENOTFOUND, "history past the end");

    /* unknown fields survive an edit and a serialise */
    is_int(kiln_image_config_env_set(&c, "PIP_NO_CACHE_DIR", "1", NULL), 0, "edit");
    char *s = ser(&c);
    ok(s && strstr(s, "\"Healthcheck\":{\"Test\":[\"CMD-SHELL\""), "Healthcheck kept");
    ok(s && strstr(s, "\"docker_version\":\"20.10.24\""), "docker_version kept");
    ok(s && strstr(s, "\"Interval\":5000000000"), "large integers kept");
    ok(s && !strchr(s, '\n') && !strstr(s, "\": "), "compact");
    struct kiln_image_config again = KILN_IMAGE_CONFIG_INIT;
    is_int(kiln_image_config_parse(s, strlen(s), &again, NULL), 0, "serialised config parses");
    char *s2 = ser(&again);
    is_str(s2, s, "round trip stable");
    ok(json_equal(again.root, c.root), "same tree");
    free(s);
    free(s2);
    kiln_image_config_release(&again);

    /* copy is deep */
    struct kiln_image_config cp;
    kiln_image_config_copy(&cp, &c);
    kiln_image_config_set(&cp, KILN_IC_USER, "root", NULL);
    is_str(kiln_image_config_get(&c, KILN_IC_USER), "1000", "copy is independent");
    is_str(kiln_image_config_get(&cp, KILN_IC_USER), "root", "copy changed");
    kiln_image_config_release(&cp);
    kiln_image_config_release(&c);
    kiln_image_config_release(&c);
    kiln_image_config_release(NULL);
    ok(c.root == NULL, "release twice");

    /* minimal OCI config: no config, no history */
    const char *min = J("{'architecture':'arm64','os':'linux','rootfs':{'type':'layers',"
                        "'diff_ids':[]}}");
    is_int(kiln_image_config_parse(min, strlen(min), &c, NULL), 0, "minimal config");
    is_int(kiln_image_config_entrypoint(&c, &sv), 0, "no Entrypoint");
    is_int(kiln_image_config_n_history(&c), 0, "no history");
    is_str(kiln_image_config_env_get(&c, "PATH"), NULL, "no Env");
    kiln_image_config_release(&c);
}

static void test_invalid(void)
{
#define RF "'rootfs':{'type':'layers','diff_ids':[]}"
#define AO "'architecture':'amd64','os':'linux',"
    bad(J("{" AO "'rootfs':{'type':'layer','diff_ids':[]}}"), KILN_EINVAL,
        "rootfs.type: must be \"layers\"", "rootfs.type layer");
    bad(J("{" AO "'rootfs':{'diff_ids':[]}}"), KILN_EINVAL, "rootfs.type: must be \"layers\"",
        "no rootfs.type");
    bad(J("{" AO "'rootfs':{'type':'layers'}}"), KILN_EINVAL, "rootfs.diff_ids: missing",
        "no diff_ids");
    bad(J("{" AO "'rootfs':{'type':'layers','diff_ids':'x'}}"), KILN_EINVAL,
        "rootfs.diff_ids: must be an array of digests", "diff_ids string");
    bad(J("{" AO "'rootfs':{'type':'layers','diff_ids':['" D0 "','sha256:abc']}}"), KILN_EINVAL,
        "rootfs.diff_ids[1]: invalid digest 'sha256:abc': sha256 needs 64 lower-case hex digits",
        "bad diff_id");
    bad(J("{" AO "'rootfs':{'type':'layers','diff_ids':[5]}}"), KILN_EINVAL,
        "rootfs.diff_ids: entry 0 must be a string", "diff_id a number");
    bad(J("{" AO "'rootfs':{'type':'layers','diff_ids':['md5:abc']}}"), KILN_EUNSUPPORTED,
        "rootfs.diff_ids[0]: unsupported digest algorithm 'md5'", "md5 diff_id");
    bad(J("{'architecture':'amd64','os':'linux'}"), KILN_EINVAL, "rootfs: missing", "no rootfs");
    bad(J("{" AO "'rootfs':[]}"), KILN_EINVAL, "rootfs: must be an object", "rootfs array");
    bad(J("{'os':'linux'," RF "}"), KILN_EINVAL, "architecture: missing", "no architecture");
    bad(J("{'architecture':'','os':'linux'," RF "}"), KILN_EINVAL,
        "architecture: must not be empty", "empty architecture");
    bad(J("{'architecture':'amd64','os':3," RF "}"), KILN_EINVAL, "os: must be a string",
        "os a number");
    bad(J("{" AO RF ",'config':{'Env':['PATH=/bin','NOEQUALS']}}"), KILN_EINVAL,
        "config.Env[1]: must be 'NAME=value', got 'NOEQUALS'", "env without '='");
    bad(J("{" AO RF ",'config':{'Env':['=x']}}"), KILN_EINVAL,
        "config.Env[0]: must be 'NAME=value', got '=x'", "env without name");
    bad(J("{" AO RF ",'config':{'Env':'PATH=/bin'}}"), KILN_EINVAL,
        "config.Env: must be an array of strings", "env a string");
    bad(J("{" AO RF ",'config':{'Env':[1]}}"), KILN_EINVAL, "config.Env: entry 0 must be a string",
        "env entry a number");
    bad(J("{" AO RF ",'config':{'Cmd':'bash'}}"), KILN_EINVAL,
        "config.Cmd: must be an array of strings", "Cmd a string");
    bad(J("{" AO RF ",'config':{'Entrypoint':[true]}}"), KILN_EINVAL,
        "config.Entrypoint: entry 0 must be a string", "Entrypoint bool");
    bad(J("{" AO RF ",'config':{'User':1000}}"), KILN_EINVAL, "config.User: must be a string",
        "User a number");
    bad(J("{" AO RF ",'config':{'Labels':{'a':1}}}"), KILN_EINVAL,
        "config.Labels: value of 'a' must be strings", "label a number");
    bad(J("{" AO RF ",'config':{'ExposedPorts':{'80/tcp':1}}}"), KILN_EINVAL,
        "config.ExposedPorts: value of '80/tcp' must be objects", "port value");
    bad(J("{" AO RF ",'config':{'Volumes':['/data']}}"), KILN_EINVAL,
        "config.Volumes: must be an object of objects", "volumes array");
    bad(J("{" AO RF ",'config':'x'}"), KILN_EINVAL, "config: must be an object", "config string");
    bad(J("{" AO RF ",'created':'yesterday'}"), KILN_EINVAL,
        "created: invalid RFC 3339 timestamp 'yesterday'", "bad created");
    bad(J("{" AO RF ",'created':'2023-13-01T00:00:00Z'}"), KILN_EINVAL, NULL, "month 13");
    bad(J("{" AO RF ",'created':'2023-01-01 00:00:00Z'}"), KILN_EINVAL, NULL, "space for T");
    bad(J("{" AO RF ",'created':'2023-01-01T00:00:00'}"), KILN_EINVAL, NULL, "no zone");
    bad(J("{" AO RF ",'created':'2023-01-01T00:00:00.Z'}"), KILN_EINVAL, NULL, "empty fraction");
    bad(J("{" AO RF ",'created':'2023-01-01T00:00:00+0200'}"), KILN_EINVAL, NULL,
        "zone without colon");
    bad(J("{" AO RF ",'history':[{'created':'2023-01-01'}]}"), KILN_EINVAL,
        "history[0].created: invalid RFC 3339 timestamp '2023-01-01'", "bad history created");
    bad(J("{" AO RF ",'history':[{'empty_layer':'true'}]}"), KILN_EINVAL,
        "history[0].empty_layer: must be a boolean", "empty_layer string");
    bad(J("{" AO RF ",'history':[{},{'created_by':1}]}"), KILN_EINVAL,
        "history[1].created_by: must be a string", "created_by number");
    bad(J("{" AO RF ",'history':['x']}"), KILN_EINVAL, "history[0]: must be an object",
        "history entry string");
    bad(J("{" AO RF ",'history':{}}"), KILN_EINVAL, "history: must be an array", "history object");
    bad(J("{" AO RF ",'os':'linux'}"), KILN_EINVAL, NULL, "duplicate key");
    bad(J("[]"), KILN_EINVAL, "image config must be a JSON object", "array");
    bad("", KILN_EINVAL, NULL, "empty");
    bad(J("{" AO RF "}}"), KILN_EINVAL, NULL, "trailing brace");

    /* caps */
    struct kiln_buf b = KILN_BUF_INIT;
    kiln_buf_adds(&b, J("{" AO "'rootfs':{'type':'layers','diff_ids':["));
    for (int i = 0; i <= KILN_IMAGE_CONFIG_MAX_LAYERS; i++)
        kiln_buf_addf(&b, "%s\"%s\"", i ? "," : "", D0);
    kiln_buf_adds(&b, "]}}");
    bad(b.buf, KILN_ETOOBIG, "rootfs.diff_ids: more than 1000 entries", "1001 diff_ids");
    kiln_buf_truncate(&b, 0);
    kiln_buf_adds(&b, J("{" AO RF ",'history':["));
    for (int i = 0; i <= KILN_IMAGE_CONFIG_MAX_HISTORY; i++)
        kiln_buf_addf(&b, "%s{}", i ? "," : "");
    kiln_buf_adds(&b, "]}");
    bad(b.buf, KILN_ETOOBIG, "history: more than 10000 entries", "10001 history entries");
    kiln_buf_truncate(&b, 0);
    kiln_buf_adds(&b, J("{" AO RF ",'x':'"));
    while (b.len <= KILN_IMAGE_CONFIG_MAX_SIZE)
        kiln_buf_adds(&b, "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx");
    kiln_buf_adds(&b, "\"}");
    bad(b.buf, KILN_ETOOBIG, "image config is larger than 8388608 bytes", "over 8 MiB");
    kiln_buf_release(&b);

    /* accepted oddities */
    struct kiln_image_config c = KILN_IMAGE_CONFIG_INIT;
    const char *ok1 = J("{" AO RF ",'config':null,'history':null,'created':"
                        "'2023-01-01t00:00:00.1+05:30'}");
    is_int(kiln_image_config_parse(ok1, strlen(ok1), &c, NULL), 0,
           "null config/history, lower-case t, offset");
    kiln_image_config_release(&c);
    const char *ok2 = J("{" AO RF ",'config':{'Env':null,'Cmd':null,'Labels':null,"
                        "'Entrypoint':[]},'created':'0001-01-01T00:00:00Z'}");
    is_int(kiln_image_config_parse(ok2, strlen(ok2), &c, NULL), 0, "nulls inside config");
    struct kiln_strv sv = KILN_STRV_INIT;
    is_int(kiln_image_config_entrypoint(&c, &sv), 1, "empty Entrypoint is set");
    is_int(sv.n, 0, "empty Entrypoint");
    is_int(kiln_image_config_cmd(&c, &sv), 0, "null Cmd is unset");
    kiln_image_config_release(&c);
#undef RF
#undef AO
}

static void test_build(void)
{
    struct kiln_image_config c = KILN_IMAGE_CONFIG_INIT;
    struct kiln_error *e = NULL;
    is_int(kiln_image_config_new(&c, "linux", "amd64", NULL), 0, "new");
    char *s = ser(&c);
    is_str(s,
           J("{'architecture':'amd64','os':'linux','config':{},'rootfs':{'type':'layers',"
             "'diff_ids':[]},'history':[]}"),
           "new config bytes");
    free(s);
    is_int(kiln_image_config_new(&c, "", "amd64", NULL), -KILN_EINVAL, "new without os");
    is_int(kiln_image_config_new(&c, "linux", "\xc3", NULL), -KILN_EINVAL, "new non-UTF-8");

    is_int(kiln_image_config_set_created_time(&c, 1700000000, NULL), 0, "created from time");
    is_str(kiln_image_config_get(&c, KILN_IC_CREATED), "2023-11-14T22:13:20Z", "created value");
    is_int(kiln_image_config_set(&c, KILN_IC_CREATED, "now", &e), -KILN_EINVAL, "bad created");
    is_str(e ? e->msg : NULL, "created: invalid RFC 3339 timestamp 'now'", "bad created message");
    kiln_error_free(e);
    e = NULL;
    is_int(kiln_image_config_set(&c, KILN_IC_OS, NULL, NULL), -KILN_EINVAL, "os required");
    is_int(kiln_image_config_set(&c, KILN_IC_ARCHITECTURE, "", NULL), -KILN_EINVAL,
           "architecture required");
    is_int(kiln_image_config_set(&c, KILN_IC_USER, "jovyan", NULL), 0, "set User");
    is_int(kiln_image_config_set(&c, KILN_IC_WORKING_DIR, "/home/jovyan", NULL), 0,
           "set WorkingDir");
    is_int(kiln_image_config_set(&c, KILN_IC_STOP_SIGNAL, "SIGTERM", NULL), 0, "set StopSignal");
    is_int(kiln_image_config_set(&c, KILN_IC_STOP_SIGNAL, NULL, NULL), 0, "remove StopSignal");
    is_str(kiln_image_config_get(&c, KILN_IC_STOP_SIGNAL), NULL, "StopSignal gone");
    is_int(kiln_image_config_set(&c, KILN_IC_USER, "\xff", NULL), -KILN_EINVAL, "non-UTF-8 User");
    is_str(kiln_image_config_get(&c, KILN_IC_USER), "jovyan", "User kept");
    is_int(kiln_image_config_set(&c, KILN_IC_VARIANT, "v2", NULL), 0, "set variant");

    /* Env */
    is_int(kiln_image_config_env_set(&c, "PATH", "/usr/bin", NULL), 0, "env PATH");
    is_int(kiln_image_config_env_set(&c, "A", "1", NULL), 0, "env A");
    is_int(kiln_image_config_env_set(&c, "PATH", "/opt/bin:/usr/bin", NULL), 0, "replace PATH");
    struct kiln_strv sv = KILN_STRV_INIT;
    kiln_image_config_env(&c, &sv);
    ok(sv.n == 2 && strcmp(sv.v[0], "PATH=/opt/bin:/usr/bin") == 0 && strcmp(sv.v[1], "A=1") == 0,
       "replaced in place");
    kiln_strv_release(&sv);
    is_int(kiln_image_config_env_set(&c, "", "x", &e), -KILN_EINVAL, "empty env name");
    is_str(e ? e->msg : NULL, "invalid environment variable name ''", "env name message");
    kiln_error_free(e);
    e = NULL;
    is_int(kiln_image_config_env_set(&c, "A=B", "x", NULL), -KILN_EINVAL, "env name with '='");
    is_int(kiln_image_config_env_set(&c, "X", "\xff", NULL), -KILN_EINVAL, "non-UTF-8 value");
    is_int(kiln_image_config_env_set(&c, "E", NULL, NULL), 0, "NULL value is empty");
    is_str(kiln_image_config_env_get(&c, "E"), "", "empty value");

    /* duplicates: get returns the last, set collapses them */
    struct kiln_image_config d = KILN_IMAGE_CONFIG_INIT;
    const char *dup = J("{'architecture':'amd64','os':'linux','config':{'Env':['X=1','Y=2','X=3',"
                        "'XX=4']},'rootfs':{'type':'layers','diff_ids':[]}}");
    kiln_image_config_parse(dup, strlen(dup), &d, NULL);
    is_str(kiln_image_config_env_get(&d, "X"), "3", "last duplicate wins");
    kiln_image_config_env_set(&d, "X", "9", NULL);
    kiln_image_config_env(&d, &sv);
    ok(sv.n == 3 && strcmp(sv.v[0], "X=9") == 0 && strcmp(sv.v[1], "Y=2") == 0 &&
           strcmp(sv.v[2], "XX=4") == 0,
       "duplicates collapsed to the first place");
    kiln_strv_release(&sv);
    kiln_image_config_env_unset(&d, "Y");
    kiln_image_config_env_unset(&d, "NOPE");
    kiln_image_config_env(&d, &sv);
    ok(sv.n == 2 && strcmp(sv.v[1], "XX=4") == 0, "unset");
    kiln_strv_release(&sv);
    kiln_image_config_release(&d);

    /* Entrypoint / Cmd */
    struct kiln_strv argv = KILN_STRV_INIT;
    kiln_strv_push(&argv, "tini");
    kiln_strv_push(&argv, "--");
    is_int(kiln_image_config_set_entrypoint(&c, &argv, NULL), 0, "set Entrypoint");
    struct kiln_strv empty = KILN_STRV_INIT;
    is_int(kiln_image_config_set_cmd(&c, &empty, NULL), 0, "set empty Cmd");
    is_int(kiln_image_config_cmd(&c, &sv), 1, "empty Cmd is set");
    is_int(sv.n, 0, "empty Cmd");
    is_int(kiln_image_config_entrypoint(&c, &sv), 1, "Entrypoint is set");
    ok(sv.n == 2 && strcmp(sv.v[1], "--") == 0, "Entrypoint value");
    kiln_strv_release(&sv);
    is_int(kiln_image_config_set_cmd(&c, NULL, NULL), 0, "remove Cmd");
    is_int(kiln_image_config_cmd(&c, &sv), 0, "Cmd removed");
    kiln_strv_push(&argv, "\xff");
    is_int(kiln_image_config_set_cmd(&c, &argv, NULL), -KILN_EINVAL, "non-UTF-8 argv");
    is_int(kiln_image_config_cmd(&c, &sv), 0, "Cmd still removed");
    kiln_strv_release(&argv);

    /* Labels */
    is_int(kiln_image_config_set_label(&c, "org.opencontainers.image.source", "kiln", NULL), 0,
           "set label");
    is_int(kiln_image_config_set_label(&c, "b", "2", NULL), 0, "set label b");
    is_int(kiln_image_config_set_label(&c, "b", NULL, NULL), 0, "remove label b");
    is_str(kiln_image_config_label(&c, "b"), NULL, "label b gone");
    is_int(kiln_image_config_set_label(&c, "", "x", NULL), -KILN_EINVAL, "empty label key");
    is_int(kiln_image_config_set_label(&c, "\xff", "x", NULL), -KILN_EINVAL, "non-UTF-8 label key");
    is_int(kiln_image_config_set_label(&c, "k", "\xff", NULL), -KILN_EINVAL,
           "non-UTF-8 label value");

    /* ports and volumes */
    is_int(kiln_image_config_add_exposed_port(&c, "8888", NULL), 0, "port without proto");
    is_int(kiln_image_config_add_exposed_port(&c, "8888/tcp", NULL), 0, "same port again");
    is_int(kiln_image_config_add_exposed_port(&c, "53/udp", NULL), 0, "udp port");
    is_int(kiln_image_config_add_exposed_port(&c, "8000-8010/sctp", NULL), 0, "port range");
    is_int(kiln_image_config_add_exposed_port(&c, "0", NULL), -KILN_EINVAL, "port 0");
    is_int(kiln_image_config_add_exposed_port(&c, "65536", NULL), -KILN_EINVAL, "port 65536");
    is_int(kiln_image_config_add_exposed_port(&c, "80/icmp", NULL), -KILN_EINVAL, "bad proto");
    is_int(kiln_image_config_add_exposed_port(&c, "90-80", NULL), -KILN_EINVAL, "reverse range");
    is_int(kiln_image_config_add_exposed_port(&c, "http", &e), -KILN_EINVAL, "port name");
    is_str(e ? e->msg : NULL, "invalid exposed port 'http': want PORT[/tcp|udp|sctp]",
           "port message");
    kiln_error_free(e);
    e = NULL;
    kiln_image_config_exposed_ports(&c, &sv);
    ok(sv.n == 3 && strcmp(sv.v[0], "8888/tcp") == 0 && strcmp(sv.v[2], "8000-8010/sctp") == 0,
       "ports listed");
    kiln_strv_release(&sv);
    is_int(kiln_image_config_add_volume(&c, "/data", NULL), 0, "volume");
    is_int(kiln_image_config_add_volume(&c, "/data", NULL), 0, "volume again");
    is_int(kiln_image_config_add_volume(&c, "data", NULL), -KILN_EINVAL, "relative volume");
    kiln_image_config_volumes(&c, &sv);
    ok(sv.n == 1 && strcmp(sv.v[0], "/data") == 0, "volumes listed");
    kiln_strv_release(&sv);

    /* diff_ids and history */
    is_int(kiln_image_config_add_diff_id(&c, D0, NULL), 0, "diff_id 0");
    is_int(kiln_image_config_add_diff_id(&c, D1, NULL), 0, "diff_id 1");
    is_int(kiln_image_config_add_diff_id(&c, "sha256:abc", NULL), -KILN_EINVAL, "bad diff_id");
    is_int(kiln_image_config_n_diff_ids(&c), 2, "2 diff_ids");
    struct kiln_history h = {"2023-11-14T22:13:20Z", "kiln apt: curl jq", NULL, "kiln", false};
    is_int(kiln_image_config_add_history(&c, &h, NULL), 0, "history entry");
    struct kiln_history h2 = {NULL, "USER 1000", "kiln", NULL, true};
    is_int(kiln_image_config_add_history(&c, &h2, NULL), 0, "empty-layer history entry");
    struct kiln_history h3 = {"bad", NULL, NULL, NULL, false};
    is_int(kiln_image_config_add_history(&c, &h3, NULL), -KILN_EINVAL, "bad history time");
    struct kiln_history h4 = {NULL, "\xff", NULL, NULL, false};
    is_int(kiln_image_config_add_history(&c, &h4, NULL), -KILN_EINVAL, "non-UTF-8 history");
    is_int(kiln_image_config_n_history(&c), 2, "2 history entries");
    struct kiln_history got;
    kiln_image_config_history(&c, 1, &got);
    ok(got.empty_layer && strcmp(got.author, "kiln") == 0 && !got.created, "history read back");

    s = ser(&c);
    is_str(s,
           J("{'architecture':'amd64','os':'linux','config':{'User':'jovyan','WorkingDir':'/home/"
             "jovyan','Env':['PATH=/opt/bin:/usr/bin','A=1','E='],'Entrypoint':['tini','--'],"
             "'Labels':{'org.opencontainers.image.source':'kiln'},'ExposedPorts':{'8888/tcp':{},"
             "'53/udp':{},'8000-8010/sctp':{}},'Volumes':{'/data':{}}},'rootfs':{'type':'layers',"
             "'diff_ids':['" D0 "','" D1 "']},'history':[{'created':'2023-11-14T22:13:20Z',"
             "'created_by':'kiln apt: curl jq','comment':'kiln'},{'created_by':'USER 1000',"
             "'author':'kiln','empty_layer':true}],'created':'2023-11-14T22:13:20Z','variant':"
             "'v2'}"),
           "built config bytes");
    free(s);

    /* a config broken through the tree is not serialised */
    json_object_set_new(json_object_get(c.root, "rootfs"), "type", json_string("x"));
    struct kiln_buf b = KILN_BUF_INIT;
    is_int(kiln_image_config_serialize(&c, &b, &e), -KILN_EINVAL, "broken tree refused");
    is_str(e ? e->msg : NULL, "rootfs.type: must be \"layers\"", "broken tree message");
    kiln_error_free(e);
    e = NULL;
    is_int(b.len, 0, "nothing written");
    /* adding a diff_id repairs rootfs.type */
    is_int(kiln_image_config_add_diff_id(&c, D2, NULL), 0, "diff_id 2");
    is_int(kiln_image_config_serialize(&c, &b, NULL), 0, "valid again");
    is_int(kiln_image_config_validate(&c, NULL), 0, "validate");
    kiln_buf_release(&b);
    kiln_image_config_release(&c);

    /* setters on an empty struct make an object; still invalid until os/arch are set */
    struct kiln_image_config z = KILN_IMAGE_CONFIG_INIT;
    is_int(kiln_image_config_env_set(&z, "A", "1", NULL), 0, "env on empty struct");
    is_int(kiln_image_config_validate(&z, NULL), -KILN_EINVAL, "empty struct invalid");
    kiln_image_config_set(&z, KILN_IC_OS, "linux", NULL);
    kiln_image_config_set(&z, KILN_IC_ARCHITECTURE, "arm64", NULL);
    kiln_image_config_add_diff_id(&z, D0, NULL);
    is_int(kiln_image_config_validate(&z, NULL), 0, "valid once complete");
    kiln_image_config_release(&z);

    /* caps on the setters */
    kiln_image_config_new(&z, "linux", "amd64", NULL);
    for (int i = 0; i < KILN_IMAGE_CONFIG_MAX_LAYERS; i++)
        kiln_image_config_add_diff_id(&z, D0, NULL);
    is_int(kiln_image_config_add_diff_id(&z, D0, NULL), -KILN_ETOOBIG, "diff_id cap");
    kiln_image_config_release(&z);
}

int main(void)
{
    test_parse();
    test_invalid();
    test_build();
    for (size_t i = 0; i < pool_n; i++)
        free(pool[i]);
    return tap_done();
}
