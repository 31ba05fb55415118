#include "util/common.h"
#include "service/store.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "service/jobs.h"
#include "tap.h"
#include "util/buf.h"
#include "util/fs.h"
#include "util/log.h"

/*
 * With KILN_TEST_STORE_URL set (a PostgreSQL URL, see
 * tests/integration/test-store-pg.sh) the backend-independent tests run on
 * that database instead of SQLite files; it is wiped between test groups.
 */
static const char *pg_url;

static char tmpdir[] = "/tmp/kiln-svcstore-XXXXXX";

/* A clock that moves 1 ms per reading, so every write has its own time. */
static int64_t fake_now = 1700000000000;

static int64_t tick(void *userdata)
{
    return __atomic_add_fetch(&fake_now, 1, __ATOMIC_SEQ_CST);
}

static const struct kiln_store_options fake_clock = {.clock_ms = tick};

static char *db_path(const char *name)
{
    return kiln_xasprintf("%s/%s", tmpdir, name);
}

static struct kiln_store *open_store(const char *path, unsigned connections)
{
    struct kiln_store_options o = fake_clock;
    o.connections = connections;
    struct kiln_store *st = NULL;
    struct kiln_error *e = NULL;
    int r =
        pg_url ? kiln_store_open(pg_url, &o, &st, &e) : kiln_store_open_sqlite(path, &o, &st, &e);
    if (r < 0) {
        printf("# open '%s': %s\n", pg_url ? "(postgresql)" : path, e ? e->msg : "?");
        kiln_error_free(e);
        return NULL;
    }
    return st;
}

static void quiet(void *userdata, const char *message)
{
}

/* `sql` on a separate raw PostgreSQL connection: the result, or NULL. */
static PGresult *pg_raw(const char *sql)
{
    PGconn *db = PQconnectdb(pg_url);
    PGresult *res = NULL;
    PQsetNoticeProcessor(db, quiet, NULL);
    if (PQstatus(db) == CONNECTION_OK) {
        res = PQexec(db, sql);
        if (PQresultStatus(res) != PGRES_TUPLES_OK && PQresultStatus(res) != PGRES_COMMAND_OK) {
            printf("#   raw '%s': %s", sql, PQerrorMessage(db));
            PQclear(res);
            res = NULL;
        }
    } else {
        printf("#   raw connect: %s", PQerrorMessage(db));
    }
    PQfinish(db);
    return res;
}

/* The first column of the first row of `sql` on a separate raw connection. */
static int64_t raw_int(const char *path, const char *sql)
{
    if (pg_url) {
        PGresult *res = pg_raw(sql);
        int64_t v = res && PQntuples(res) > 0 && !PQgetisnull(res, 0, 0)
                        ? strtoll(PQgetvalue(res, 0, 0), NULL, 10)
                        : -1;
        PQclear(res);
        return v;
    }
    sqlite3 *db = NULL;
    sqlite3_stmt *s = NULL;
    int64_t v = -1;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL) == SQLITE_OK &&
        sqlite3_prepare_v2(db, sql, -1, &s, NULL) == SQLITE_OK && sqlite3_step(s) == SQLITE_ROW)
        v = sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    sqlite3_close(db);
    return v;
}

static char *raw_text(const char *path, const char *sql)
{
    if (pg_url) {
        PGresult *res = pg_raw(sql);
        char *v = res && PQntuples(res) > 0 && !PQgetisnull(res, 0, 0)
                      ? kiln_xstrdup(PQgetvalue(res, 0, 0))
                      : NULL;
        PQclear(res);
        return v;
    }
    sqlite3 *db = NULL;
    sqlite3_stmt *s = NULL;
    char *v = NULL;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL) == SQLITE_OK &&
        sqlite3_prepare_v2(db, sql, -1, &s, NULL) == SQLITE_OK && sqlite3_step(s) == SQLITE_ROW &&
        sqlite3_column_text(s, 0))
        v = kiln_xstrdup((const char *)sqlite3_column_text(s, 0));
    sqlite3_finalize(s);
    sqlite3_close(db);
    return v;
}

/* SQLITE_OK (0) when it worked. */
static int raw_exec(const char *path, const char *sql)
{
    if (pg_url) {
        PGresult *res = pg_raw(sql);
        PQclear(res);
        return res ? SQLITE_OK : SQLITE_ERROR;
    }
    sqlite3 *db = NULL;
    int rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
    sqlite3_close(db);
    return rc;
}

#define RANK_SQL                                                                                   \
    "(CASE s.latest_phase WHEN 'Running' THEN 0 WHEN 'Pending' THEN 1 WHEN 'Failed' THEN 2 "       \
    "WHEN 'Cancelled' THEN 3 WHEN 'Unknown' THEN 4 WHEN 'Succeeded' THEN 5 ELSE 6 END)"

/* specs.latest_job_id/latest_phase/latest_rank agree with the jobs table: the number of specs that
 * do not. */
#define LATEST_MISMATCHES(isnot)                                                                   \
    "SELECT COUNT(*) FROM specs AS s WHERE s.latest_job_id " isnot                                 \
    " (SELECT MAX(id) FROM jobs WHERE spec_name = s.name) OR s.latest_phase " isnot                \
    " (SELECT phase FROM jobs WHERE id = (SELECT MAX(id) FROM jobs WHERE spec_name = s.name))"
static int64_t latest_mismatches(const char *path)
{
    if (pg_url)
        return raw_int(path, LATEST_MISMATCHES("IS DISTINCT FROM") " OR s.latest_rank IS "
                                                                   "DISTINCT FROM " RANK_SQL);
    return raw_int(path, LATEST_MISMATCHES("IS NOT") " OR s.latest_rank IS NOT " RANK_SQL);
}

/* PostgreSQL: drop every table, for a fresh start. */
static void pg_reset(void)
{
    if (pg_url && raw_exec(NULL, "DROP SCHEMA public CASCADE; CREATE SCHEMA public") != SQLITE_OK)
        printf("Bail out! cannot reset the PostgreSQL database\n");
}

static struct kiln_spec *mkspec(const char *name, const char *base, const char *apt,
                                const char *desc)
{
    struct kiln_spec *s = kiln_spec_new();
    free(s->name);
    s->name = kiln_xstrdup(name);
    free(s->base_image);
    s->base_image = kiln_xstrdup(base);
    if (apt)
        kiln_strv_push(&s->pkgs[KILN_PKG_APT], apt);
    if (desc)
        s->description = kiln_xstrdup(desc);
    return s;
}

static int put(struct kiln_store *st, const char *name, const char *base, const char *apt,
               const char *desc, enum kiln_store_put_mode mode, struct kiln_error **e)
{
    struct kiln_spec *s = mkspec(name, base, apt, desc);
    int r = kiln_store_spec_put(st, s, mode, e);
    kiln_spec_free(s);
    return r;
}

/* Error code of a failed call, and drop the error. */
static int code(int r, struct kiln_error **e)
{
    if (r >= 0) {
        kiln_error_free(*e);
        *e = NULL;
        return 0;
    }
    int c = *e ? (*e)->code : -1;
    if (*e && getenv("TEST_VERBOSE"))
        printf("#   error: %s\n", (*e)->msg);
    kiln_error_free(*e);
    *e = NULL;
    return c;
}

static void test_migrations(void)
{
    _cleanup_free_ char *path = db_path("migrate.db");
    struct kiln_store *st = open_store(path, 2);
    ok(st != NULL, "open a new database");
    if (!st)
        return;
    is_str(kiln_store_backend(st), "sqlite", "backend name");
    is_int(kiln_store_schema_version(st, NULL), 5, "schema version 5 after the migrations");
    is_int(raw_int(path, "SELECT COUNT(*) FROM schema_version"), 5, "five migrations recorded");
    int64_t applied = raw_int(path, "SELECT applied_ms FROM schema_version WHERE version = 1");
    _cleanup_free_ char *mode = raw_text(path, "PRAGMA journal_mode");
    is_str(mode, "wal", "journal mode is WAL");
    struct stat sb;
    ok(stat(path, &sb) == 0 && (sb.st_mode & 0777) == 0600, "database file mode 0600");
    is_int(put(st, "keep", "debian:12", NULL, NULL, KILN_STORE_PUT_UPSERT, NULL), 7,
           "put a spec before re-open");
    kiln_store_free(st);

    st = open_store(path, 1);
    ok(st != NULL, "re-open");
    if (!st)
        return;
    is_int(kiln_store_schema_version(st, NULL), 5, "version kept");
    is_int(raw_int(path, "SELECT COUNT(*) FROM schema_version"), 5, "no migration re-run");
    is_int(raw_int(path, "SELECT applied_ms FROM schema_version WHERE version = 1"), applied,
           "migration record untouched");
    struct kiln_store_spec sp = {0};
    is_int(kiln_store_spec_get(st, "keep", &sp, NULL), 0, "data kept across re-open");
    kiln_store_spec_release(&sp);
    is_int(kiln_store_check(st, NULL), 0, "integrity check ok");
    kiln_store_free(st);

    /* A database from a newer kiln is refused. */
    ok(raw_exec(path, "INSERT INTO schema_version VALUES (99, 0)") == SQLITE_OK,
       "pretend a newer schema");
    struct kiln_error *e = NULL;
    st = NULL;
    int r = kiln_store_open_sqlite(path, NULL, &st, &e);
    ok(r == -KILN_EUNSUPPORTED && st == NULL, "newer schema refused");
    ok(e && strstr(e->msg, "99"), "error names the version: %s", e ? e->msg : "");
    kiln_error_free(e);

    /* URLs. */
    _cleanup_free_ char *url = kiln_xasprintf("sqlite://%s/url.db", tmpdir);
    e = NULL;
    r = kiln_store_open(url, NULL, &st, &e);
    ok(r == 0, "open by sqlite:// URL");
    kiln_store_free(st);
    st = NULL;
    is_int(code(kiln_store_open("", NULL, &st, &e), &e), KILN_EINVAL, "empty URL");
    _cleanup_free_ char *bad = kiln_xasprintf("%s/no/such/dir/x.db", tmpdir);
    is_int(code(kiln_store_open(bad, NULL, &st, &e), &e), KILN_EIO, "missing directory");
    ok(st == NULL, "no store on failure");
}

/* PostgreSQL URLs that cannot work: the errors, never with the password. No server needed. */
static void test_pg_urls(void)
{
    static const struct {
        const char *url;
        int code;
        const char *want;
    } cases[] = {
        {"postgresql://kiln:hunter2@/kiln?host=/nonexistent-kiln-dir&connect_timeout=2", KILN_EIO,
         "store: connect to '/nonexistent-kiln-dir/kiln': "},
        {"postgres://kiln:hunter2@/kiln?host=/nonexistent-kiln-dir&port=5433", KILN_EIO,
         "store: connect to '/nonexistent-kiln-dir:5433/kiln': "},
        {"postgresql://kiln:hunter2@/kiln?nosuchparam=hunter2", KILN_EINVAL,
         "store: invalid PostgreSQL connection string"},
        {"postgresql://kiln:hunter2@[::1/kiln", KILN_EINVAL,
         "store: invalid PostgreSQL connection string"},
    };
    for (size_t i = 0; i < KILN_ARRAY_SIZE(cases); i++) {
        struct kiln_store *st = NULL;
        struct kiln_error *e = NULL;
        int r = kiln_store_open(cases[i].url, NULL, &st, &e);
        ok(r == -cases[i].code && st == NULL && e && e->code == cases[i].code, "url %zu: code %d",
           i, r);
        ok(e && strncmp(e->msg, cases[i].want, strlen(cases[i].want)) == 0 &&
               !strstr(e->msg, "hunter2"),
           "url %zu: message without the password: %s", i, e ? e->msg : "");
        kiln_error_free(e);
    }
    struct kiln_store *st = NULL;
    is_int(kiln_store_open_postgres("", NULL, &st, NULL), -KILN_EINVAL, "empty conninfo");
}

/* PostgreSQL: migrations, re-open, a newer schema, processes opening a new database at once. */
static void test_pg_migrations(void)
{
    pg_reset();
    struct kiln_store *st = open_store(NULL, 2);
    ok(st != NULL, "open a new PostgreSQL database");
    if (!st)
        return;
    is_str(kiln_store_backend(st), "postgresql", "backend name");
    is_int(kiln_store_schema_version(st, NULL), 5, "schema version 5 after the migrations");
    is_int(raw_int(NULL, "SELECT COUNT(*) FROM schema_version"), 5, "five migrations recorded");
    int64_t applied = raw_int(NULL, "SELECT applied_ms FROM schema_version WHERE version = 1");
    is_int(put(st, "keep", "debian:12", NULL, NULL, KILN_STORE_PUT_UPSERT, NULL), 7,
           "put a spec before re-open");
    kiln_store_free(st);

    st = open_store(NULL, 1);
    ok(st != NULL, "re-open");
    if (!st)
        return;
    is_int(kiln_store_schema_version(st, NULL), 5, "version kept");
    is_int(raw_int(NULL, "SELECT COUNT(*) FROM schema_version"), 5, "no migration re-run");
    is_int(raw_int(NULL, "SELECT applied_ms FROM schema_version WHERE version = 1"), applied,
           "migration record untouched");
    struct kiln_store_spec sp = {0};
    is_int(kiln_store_spec_get(st, "keep", &sp, NULL), 0, "data kept across re-open");
    kiln_store_spec_release(&sp);
    is_int(kiln_store_check(st, NULL), 0, "integrity check ok");
    /* The check sees a broken latest-job record. */
    raw_exec(NULL, "ALTER TABLE jobs DISABLE TRIGGER USER");
    raw_exec(NULL, "INSERT INTO jobs (spec_name, revision, spec_json, target_image, created_ms) "
                   "VALUES ('keep', 'x', '{}', 'r/x', 1)");
    struct kiln_error *e = NULL;
    int r = kiln_store_check(st, &e);
    ok(r == -KILN_EIO && e && strstr(e->msg, "1 specs with a wrong latest job"),
       "integrity check finds a wrong latest job: %s", e ? e->msg : "");
    kiln_error_free(e);
    raw_exec(NULL, "DELETE FROM jobs");
    raw_exec(NULL, "ALTER TABLE jobs ENABLE TRIGGER USER");
    is_int(kiln_store_check(st, NULL), 0, "integrity check ok again");
    kiln_store_free(st);

    /* A database from a newer kiln is refused. */
    ok(raw_exec(NULL, "INSERT INTO schema_version VALUES (99, 0)") == SQLITE_OK,
       "pretend a newer schema");
    e = NULL;
    st = NULL;
    r = kiln_store_open(pg_url, NULL, &st, &e);
    ok(r == -KILN_EUNSUPPORTED && st == NULL, "newer schema refused");
    ok(e && strstr(e->msg, "99"), "error names the version: %s", e ? e->msg : "");
    kiln_error_free(e);

    /* Four processes open a new database at the same moment: one migrates, all work. */
    pg_reset();
    enum { KIDS = 4 };
    pid_t pids[KIDS];
    fflush(stdout);
    for (int k = 0; k < KIDS; k++) {
        pids[k] = fork();
        if (pids[k] == 0) {
            struct kiln_store *cs = open_store(NULL, 1);
            int v = cs ? kiln_store_schema_version(cs, NULL) : -1;
            kiln_store_free(cs);
            _exit(v == 5 ? 0 : 1);
        }
    }
    int good = 0;
    for (int k = 0; k < KIDS; k++) {
        int status = 0;
        if (pids[k] > 0 && waitpid(pids[k], &status, 0) == pids[k] && WIFEXITED(status) &&
            WEXITSTATUS(status) == 0)
            good++;
    }
    is_int(good, KIDS, "%d processes opened a new database at once", KIDS);
    is_int(raw_int(NULL, "SELECT COUNT(*) FROM schema_version"), 5, "each migration ran once");
}

/* PostgreSQL: a connection the server dropped is reset. */
static void test_pg_reconnect(void)
{
    static const char kill_sql[] =
        "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE "
        "datname = current_database() AND application_name = 'kiln' AND pid <> pg_backend_pid()";
    pg_reset();
    struct kiln_store *st = open_store(NULL, 1);
    ok(st != NULL, "open with one connection");
    if (!st)
        return;
    is_int(put(st, "rc", "debian:12", NULL, NULL, KILN_STORE_PUT_CREATE, NULL), 7, "put");
    is_int(raw_int(NULL, kill_sql), 1, "the server drops the store's connection");
    struct kiln_store_spec sp = {0};
    struct kiln_error *e = NULL;
    int r = kiln_store_spec_get(st, "rc", &sp, &e);
    ok(r == 0, "a read after the drop works (reconnected) %s", e ? e->msg : "");
    kiln_store_spec_release(&sp);
    kiln_error_free(e);
    e = NULL;
    raw_int(NULL, kill_sql);
    r = put(st, "rc", "debian:12", "curl", NULL, KILN_STORE_PUT_UPDATE, &e);
    ok(r == 6, "a transaction after the drop works (reconnected): %d %s", r, e ? e->msg : "");
    kiln_error_free(e);
    e = NULL;
    /* A lone write is not run twice: it fails, and the next call reconnects. */
    raw_int(NULL, kill_sql);
    r = kiln_store_setting_set(st, "k", "v", &e);
    ok(r == -KILN_EIO && e && strstr(e->msg, "connection to '"), "a lone write fails: %s",
       e ? e->msg : "");
    kiln_error_free(e);
    e = NULL;
    is_int(kiln_store_setting_set(st, "k", "v", NULL), 0, "the next one works");
    kiln_store_free(st);
}

/* Two processes claim from one database: no job twice, every job once. */
#define PROC_SPECS 20
#define PROC_PER   5
#define PROC_JOBS  (PROC_SPECS * PROC_PER)
#define PROC_KIDS  2

static int claim_child(const char *path, int fd, int go, int k)
{
    struct kiln_store *cs = open_store(path, 2);
    if (!cs)
        return 2;
    /* Start together: the parent closes the other end when both are forked. */
    char ch;
    if (read(go, &ch, 1) != 0)
        return 7;
    close(go);
    _cleanup_free_ char *worker = kiln_xasprintf("proc-%d", k);
    for (;;) {
        struct kiln_store_job j = {0};
        int r = kiln_store_job_claim(cs, worker, &j, NULL);
        if (r < 0)
            return 3;
        if (r == 1) {
            int64_t id = j.id;
            if (write(fd, &id, sizeof(id)) != (ssize_t)sizeof(id))
                return 4;
            /* "Build" a moment, so the other process gets its turns. */
            struct timespec ts = {0, 300000};
            nanosleep(&ts, NULL);
            r = kiln_store_job_finish(cs, j.id, KILN_JOB_SUCCEEDED, NULL, NULL, NULL, NULL);
            kiln_store_job_release(&j);
            if (r < 0)
                return 5;
            continue;
        }
        int64_t counts[KILN_JOB_PHASES] = {0};
        if (kiln_store_job_counts(cs, counts, NULL) < 0)
            return 6;
        if (counts[KILN_JOB_PENDING] == 0)
            break;
        struct timespec ts = {0, 200000};
        nanosleep(&ts, NULL);
    }
    kiln_store_free(cs);
    return 0;
}

static void test_claims_procs(void)
{
    _cleanup_free_ char *path = db_path("procs.db");
    pg_reset();
    struct kiln_store *st = open_store(path, 1);
    ok(st != NULL, "store for the process claims");
    if (!st)
        return;
    int64_t first = 0, last = 0;
    for (int k = 0; k < PROC_PER; k++)
        for (int i = 0; i < PROC_SPECS; i++) {
            char name[32];
            snprintf(name, sizeof(name), "proc-%02d", i);
            if (k == 0)
                put(st, name, "debian:12", NULL, NULL, KILN_STORE_PUT_CREATE, NULL);
            kiln_store_job_create(st, name, NULL, "r/p", &last, NULL);
            if (!first)
                first = last;
        }
    kiln_store_free(st);
    is_int(last - first + 1, PROC_JOBS, "%d jobs", PROC_JOBS);
    int fds[PROC_KIDS];
    pid_t pids[PROC_KIDS];
    int go[2];
    if (pipe(go) < 0) {
        printf("Bail out! pipe: %s\n", strerror(errno));
        exit(1);
    }
    fflush(stdout);
    for (int k = 0; k < PROC_KIDS; k++) {
        int p[2];
        if (pipe(p) < 0) {
            printf("Bail out! pipe: %s\n", strerror(errno));
            exit(1);
        }
        pids[k] = fork();
        if (pids[k] == 0) {
            close(p[0]);
            close(go[1]);
            for (int i = 0; i < k; i++)
                close(fds[i]);
            _exit(claim_child(path, p[1], go[0], k));
        }
        close(p[1]);
        fds[k] = p[0];
    }
    close(go[0]);
    /* Both are connected by now or soon: let them go. */
    struct timespec ts = {0, 100 * 1000 * 1000};
    nanosleep(&ts, NULL);
    close(go[1]);
    int seen[PROC_JOBS] = {0};
    int per_kid[PROC_KIDS] = {0};
    int bad = 0;
    for (int k = 0; k < PROC_KIDS; k++) {
        int64_t id;
        while (read(fds[k], &id, sizeof(id)) == (ssize_t)sizeof(id)) {
            if (id < first || id > last)
                bad++;
            else
                seen[id - first]++;
            per_kid[k]++;
        }
        close(fds[k]);
    }
    int exited = 0;
    for (int k = 0; k < PROC_KIDS; k++) {
        int status = 0;
        if (pids[k] > 0 && waitpid(pids[k], &status, 0) == pids[k] && WIFEXITED(status) &&
            WEXITSTATUS(status) == 0)
            exited++;
        else
            printf("#   claimer %d: status %d\n", k, status);
    }
    is_int(exited, PROC_KIDS, "both claimer processes finished");
    int once = 0, twice = 0;
    for (int i = 0; i < PROC_JOBS; i++) {
        once += seen[i] == 1;
        twice += seen[i] > 1;
    }
    is_int(twice + bad, 0, "no job claimed by two processes");
    is_int(once, PROC_JOBS, "every job claimed exactly once");
    printf("# claims per process: %d, %d\n", per_kid[0], per_kid[1]);
    ok(per_kid[0] > 0 && per_kid[1] > 0, "both processes claimed jobs");
    is_int(raw_int(path, "SELECT COUNT(*) FROM jobs WHERE phase = 'Succeeded' AND attempt = 1"),
           PROC_JOBS, "all Succeeded at the first attempt");
    is_int(latest_mismatches(path), 0, "every spec's latest job is right");
}

static void test_specs(struct kiln_store *st)
{
    struct kiln_error *e = NULL;
    int r = put(st, "web", "debian:12", "curl", "first", KILN_STORE_PUT_UPSERT, &e);
    is_int(r, KILN_STORE_PUT_NEW | KILN_STORE_PUT_CHANGED | KILN_STORE_PUT_REVISION_CHANGED,
           "new spec");
    struct kiln_store_spec a = {0};
    is_int(kiln_store_spec_get(st, "web", &a, NULL), 0, "get");
    is_str(a.name, "web", "name");
    ok(a.spec_json && strstr(a.spec_json, "\"baseImage\":\"debian:12\""), "spec JSON: %s",
       a.spec_json ? a.spec_json : "(null)");
    ok(strlen(a.revision) == KILN_REVISION_LEN, "revision of 8 hex: %s", a.revision);
    ok(a.created_ms > 0 && a.created_ms == a.updated_ms, "created == updated");
    is_int(a.job_id, 0, "no job yet");
    ok(a.job_image_url == NULL, "no job image");
    struct kiln_spec *back = NULL;
    struct kiln_spec *want = mkspec("web", "debian:12", "curl", "first");
    ok(kiln_store_spec_parse(&a, &back, NULL) == 0 && kiln_spec_same_build(back, want) &&
           strcmp(back->description, "first") == 0,
       "stored JSON parses back to the spec");
    kiln_spec_free(back);
    kiln_spec_free(want);

    is_int(put(st, "web", "debian:12", "curl", "first", KILN_STORE_PUT_UPSERT, &e), 0,
           "same spec again: no change");
    struct kiln_store_spec b = {0};
    kiln_store_spec_get(st, "web", &b, NULL);
    is_int(b.updated_ms, a.updated_ms, "no change keeps updated_ms");
    kiln_store_spec_release(&b);

    is_int(put(st, "web", "debian:12", "curl", "second", KILN_STORE_PUT_UPSERT, &e),
           KILN_STORE_PUT_CHANGED, "description changed, revision not");
    kiln_store_spec_get(st, "web", &b, NULL);
    is_str(b.revision, a.revision, "same revision");
    ok(b.updated_ms > a.updated_ms, "updated_ms moved");
    is_int(b.created_ms, a.created_ms, "created_ms kept");
    kiln_store_spec_release(&b);

    is_int(put(st, "web", "debian:12", "git", "second", KILN_STORE_PUT_UPDATE, &e),
           KILN_STORE_PUT_CHANGED | KILN_STORE_PUT_REVISION_CHANGED, "packages changed");
    kiln_store_spec_get(st, "web", &b, NULL);
    ok(strcmp(b.revision, a.revision) != 0, "new revision %s", b.revision);
    kiln_store_spec_release(&b);
    kiln_store_spec_release(&a);

    is_int(code(put(st, "web", "x", NULL, NULL, KILN_STORE_PUT_CREATE, &e), &e), KILN_ECONFLICT,
           "create-only on a taken name");
    is_int(code(put(st, "nope", "x", NULL, NULL, KILN_STORE_PUT_UPDATE, &e), &e), KILN_ENOTFOUND,
           "update-only on a missing name");
    is_int(code(put(st, "", "x", NULL, NULL, KILN_STORE_PUT_UPSERT, &e), &e), KILN_EINVAL,
           "empty name");
    r = kiln_store_spec_get(st, "nope", &a, &e);
    ok(r == -KILN_ENOTFOUND && e && strstr(e->msg, "'nope'"), "get missing: %s", e ? e->msg : "");
    code(r, &e);
    is_int(put(st, "gone", "x", NULL, NULL, KILN_STORE_PUT_CREATE, &e),
           KILN_STORE_PUT_NEW | KILN_STORE_PUT_CHANGED | KILN_STORE_PUT_REVISION_CHANGED,
           "create-only on a new name");
    /* Without an error object the code is the same. */
    is_int(kiln_store_spec_get(st, "nope", &a, NULL), -KILN_ENOTFOUND, "not found, err NULL");
    is_int(put(st, "web", "x", NULL, NULL, KILN_STORE_PUT_CREATE, NULL), -KILN_ECONFLICT,
           "conflict, err NULL");
    is_int(kiln_store_job_finish(st, 999999, KILN_JOB_FAILED, NULL, NULL, NULL, NULL),
           -KILN_ENOTFOUND, "finish a missing job, err NULL");
    is_int(kiln_store_job_create(st, "nope", NULL, "r/x", NULL, NULL), -KILN_ENOTFOUND,
           "job of a missing spec, err NULL");
    r = kiln_store_spec_delete(st, "nope", &e);
    ok(r == -KILN_ENOTFOUND && e && strcmp(e->msg, "store: spec 'nope': not found") == 0,
       "message: %s", e ? e->msg : "");
    code(r, &e);
    is_int(kiln_store_spec_delete(st, "gone", NULL), 0, "delete");
    is_int(code(kiln_store_spec_delete(st, "gone", &e), &e), KILN_ENOTFOUND, "delete again");
    is_int(code(kiln_store_spec_get(st, "gone", &a, &e), &e), KILN_ENOTFOUND, "deleted");
}

static bool list_names(struct kiln_store *st, const struct kiln_store_spec_query *q,
                       const char *want, int64_t want_total)
{
    struct kiln_store_spec_list l = {0};
    struct kiln_error *e = NULL;
    int r = kiln_store_spec_list(st, q, &l, &e);
    struct kiln_buf b = KILN_BUF_INIT;
    for (size_t i = 0; i < l.n; i++)
        kiln_buf_addf(&b, "%s%s", i ? "," : "", l.v[i].name);
    bool good = r == 0 && strcmp(b.buf, want) == 0 && l.total == want_total;
    if (!good)
        printf("#   r=%d got '%s' total %lld (want '%s' total %lld) %s\n", r, b.buf,
               (long long)l.total, want, (long long)want_total, e ? e->msg : "");
    kiln_error_free(e);
    kiln_buf_release(&b);
    kiln_store_spec_list_release(&l);
    return good;
}

static int64_t claim_named(struct kiln_store *st, const char *worker)
{
    struct kiln_store_job j = {0};
    int r = kiln_store_job_claim(st, worker, &j, NULL);
    int64_t id = r == 1 ? j.id : 0;
    kiln_store_job_release(&j);
    return id;
}

static void test_list(struct kiln_store *st)
{
    const char *names[] = {"a_b", "axb", "a%b", "a\\b", "zeta", "beta", "Alpha"};
    for (size_t i = 0; i < KILN_ARRAY_SIZE(names); i++)
        put(st, names[i], "debian:12", NULL, NULL, KILN_STORE_PUT_CREATE, NULL);
    /* "web" is there from test_specs */
    struct kiln_store_spec_query q = {0};
    ok(list_names(st, &q, "Alpha,a%b,a\\b,a_b,axb,beta,web,zeta", 8), "all by name");
    q.descending = true;
    ok(list_names(st, &q, "zeta,web,beta,axb,a_b,a\\b,a%b,Alpha", 8), "by name, descending");
    q = (struct kiln_store_spec_query){.name_contains = "_"};
    ok(list_names(st, &q, "a_b", 1), "'_' is literal");
    q.name_contains = "%";
    ok(list_names(st, &q, "a%b", 1), "'%%' is literal");
    q.name_contains = "\\";
    ok(list_names(st, &q, "a\\b", 1), "'\\' is literal");
    q.name_contains = "ta";
    ok(list_names(st, &q, "beta,zeta", 2), "substring");
    q.name_contains = "alp";
    ok(list_names(st, &q, "Alpha", 1), "ASCII case-insensitive");
    q.name_contains = "nothing";
    ok(list_names(st, &q, "", 0), "no match");

    q = (struct kiln_store_spec_query){.limit = 3};
    ok(list_names(st, &q, "Alpha,a%b,a\\b", 8), "page 1");
    q.offset = 3;
    ok(list_names(st, &q, "a_b,axb,beta", 8), "page 2");
    q.offset = 6;
    ok(list_names(st, &q, "web,zeta", 8), "last page");
    q.offset = 100;
    ok(list_names(st, &q, "", 8), "past the end: empty, total kept");
    q = (struct kiln_store_spec_query){.limit = KILN_STORE_LIST_MAX + 1};
    struct kiln_store_spec_list l = {0};
    struct kiln_error *e = NULL;
    is_int(code(kiln_store_spec_list(st, &q, &l, &e), &e), KILN_EINVAL, "page too large");
    ok(l.v == NULL && l.n == 0, "out struct untouched on error");

    /* Updated order: touch beta last. */
    put(st, "beta", "debian:12", NULL, "touched", KILN_STORE_PUT_UPDATE, NULL);
    q = (struct kiln_store_spec_query){
        .order = KILN_STORE_ORDER_UPDATED, .descending = true, .limit = 2};
    ok(list_names(st, &q, "beta,Alpha", 8), "by updated, newest first");
    q.descending = false;
    q.name_contains = "a";
    ok(list_names(st, &q, "a_b,axb", 7), "by updated, oldest first, filtered");

    /*
     * Status: zeta Running, axb Pending, beta Failed, a_b Succeeded (its
     * older job Failed), the rest without jobs.
     */
    int64_t id;
    kiln_store_job_create(st, "a_b", NULL, "r/a_b:1", &id, NULL);
    int64_t first = claim_named(st, "w");
    kiln_store_job_finish(st, first, KILN_JOB_FAILED, NULL, NULL, "boom", NULL);
    kiln_store_job_create(st, "a_b", NULL, "r/a_b:2", &id, NULL);
    int64_t ab = claim_named(st, "w");
    kiln_store_job_finish(st, ab, KILN_JOB_SUCCEEDED, "sha256:ab", "r/a_b:2", NULL, NULL);
    kiln_store_job_create(st, "beta", NULL, "r/beta:1", &id, NULL);
    int64_t bid = claim_named(st, "w");
    kiln_store_job_finish(st, bid, KILN_JOB_FAILED, NULL, NULL, "no", NULL);
    kiln_store_job_create(st, "zeta", NULL, "r/zeta:1", &id, NULL);
    ok(claim_named(st, "w") == id, "zeta claimed");
    int64_t axb_job;
    kiln_store_job_create(st, "axb", NULL, "r/axb:1", &axb_job, NULL);

    q = (struct kiln_store_spec_query){.order = KILN_STORE_ORDER_STATUS};
    ok(list_names(st, &q, "zeta,axb,beta,a_b,Alpha,a%b,a\\b,web", 8), "by status");
    q.descending = true;
    q.limit = 3;
    ok(list_names(st, &q, "Alpha,a%b,a\\b", 8), "by status, descending");

    q = (struct kiln_store_spec_query){.name_contains = "a_"};
    is_int(kiln_store_spec_list(st, &q, &l, NULL), 0, "list a_b");
    ok(l.n == 1 && l.v[0].job_id == ab && l.v[0].job_phase == KILN_JOB_SUCCEEDED,
       "latest job of a_b in the list");
    is_str(l.n ? l.v[0].job_image_url : NULL, "r/a_b:2", "latest job's image URL");
    kiln_store_spec_list_release(&l);
    ok(l.v == NULL && l.n == 0, "release leaves an empty list");
    struct kiln_store_spec s = {0};
    kiln_store_spec_get(st, "axb", &s, NULL);
    ok(s.job_id == axb_job && s.job_phase == KILN_JOB_PENDING && !s.job_image_url,
       "latest job in get");
    kiln_store_spec_release(&s);

    /* Leave no Running job behind for the next tests. */
    kiln_store_job_finish(st, id, KILN_JOB_SUCCEEDED, NULL, NULL, NULL, NULL);
    kiln_store_job_request_cancel(st, axb_job, NULL);
}

static void test_jobs(struct kiln_store *st)
{
    struct kiln_error *e = NULL;
    put(st, "job1", "debian:12", "curl", NULL, KILN_STORE_PUT_CREATE, NULL);
    put(st, "job2", "debian:12", "git", NULL, KILN_STORE_PUT_CREATE, NULL);
    struct kiln_store_spec s1 = {0};
    kiln_store_spec_get(st, "job1", &s1, NULL);

    int64_t j1 = 0, j2 = 0, j3 = 0, k1 = 0;
    is_int(kiln_store_job_create(st, "job1", s1.revision, "r/job1:a", &j1, NULL), 0,
           "create with the current revision");
    is_int(code(kiln_store_job_create(st, "job1", "deadbeef", "r/x", &j3, &e), &e), KILN_ECONFLICT,
           "stale revision");
    is_int(code(kiln_store_job_create(st, "nojob", NULL, "r/x", &j3, &e), &e), KILN_ENOTFOUND,
           "missing spec");
    is_int(code(kiln_store_job_create(st, "job1", NULL, "", &j3, &e), &e), KILN_EINVAL,
           "empty target");
    is_int(j3, 0, "no id on failure");
    kiln_store_job_create(st, "job1", NULL, "r/job1:b", &j2, NULL);
    kiln_store_job_create(st, "job2", NULL, "r/job2:a", &k1, NULL);
    ok(j1 > 0 && j2 > j1 && k1 > j2, "ids grow");

    struct kiln_store_job j = {0};
    is_int(kiln_store_job_get(st, j1, &j, NULL), 0, "get job");
    ok(j.phase == KILN_JOB_PENDING && j.attempt == 0 && j.started_ms == 0 && j.finished_ms == 0 &&
           !j.worker && !j.cancel_requested,
       "a new job is Pending");
    is_str(j.spec_name, "job1", "job spec");
    is_str(j.revision, s1.revision, "job revision");
    is_str(j.spec_json, s1.spec_json, "frozen spec JSON");
    is_str(j.target_image, "r/job1:a", "target image");
    kiln_store_job_release(&j);
    is_int(code(kiln_store_job_get(st, 999999, &j, &e), &e), KILN_ENOTFOUND, "missing job");
    is_int(code(kiln_store_job_get(st, 0, &j, &e), &e), KILN_EINVAL, "job id 0");

    /* The frozen copy stays when the spec changes. */
    put(st, "job1", "debian:12", "wget", NULL, KILN_STORE_PUT_UPDATE, NULL);
    kiln_store_job_get(st, j1, &j, NULL);
    is_str(j.spec_json, s1.spec_json, "frozen copy unchanged by a spec update");
    kiln_store_job_release(&j);

    is_int(kiln_store_job_set_log_path(st, j1, "/var/log/kiln/1.log", NULL), 0, "set log path");
    is_int(code(kiln_store_job_set_log_path(st, 999999, "x", &e), &e), KILN_ENOTFOUND,
           "log path of a missing job");

    struct kiln_store_job_list l = {0};
    is_int(kiln_store_job_list(st, "job1", 0, 0, &l, NULL), 0, "jobs of a spec");
    ok(l.n == 2 && l.total == 2 && l.v[0].id == j2 && l.v[1].id == j1, "newest first");
    is_str(l.n == 2 ? l.v[1].log_path : NULL, "/var/log/kiln/1.log", "log path listed");
    kiln_store_job_list_release(&l);
    is_int(kiln_store_job_list(st, "job1", 1, 1, &l, NULL), 0, "jobs page 2");
    ok(l.n == 1 && l.total == 2 && l.v[0].id == j1, "paged");
    kiln_store_job_list_release(&l);
    is_int(kiln_store_job_list(st, "nojob", 10, 0, &l, NULL), 0, "jobs of an unknown spec");
    ok(l.n == 0 && l.total == 0, "empty");
    kiln_store_job_list_release(&l);

    /* Claims: oldest first, one Running per spec. */
    is_int(kiln_store_job_claim(st, "w1", &j, NULL), 1, "claim");
    ok(j.id == j1 && j.phase == KILN_JOB_RUNNING && j.attempt == 1 && j.started_ms > 0,
       "oldest Pending job claimed, Running, attempt 1");
    is_str(j.worker, "w1", "worker recorded");
    kiln_store_job_release(&j);
    is_int(kiln_store_job_claim(st, "w2", &j, NULL), 1, "claim again");
    is_int(j.id, k1, "job1's second job waits: job2's is claimed");
    kiln_store_job_release(&j);
    is_int(kiln_store_job_claim(st, "w3", &j, NULL), 0, "nothing claimable");
    ok(j.id == 0 && j.spec_name == NULL, "out struct untouched when none");
    is_int(code(kiln_store_job_claim(st, "", &j, &e), &e), KILN_EINVAL, "empty worker");

    is_int(code(kiln_store_job_finish(st, j2, KILN_JOB_FAILED, NULL, NULL, "x", &e), &e),
           KILN_ECONFLICT, "finish a Pending job");
    is_int(code(kiln_store_job_finish(st, j1, KILN_JOB_RUNNING, NULL, NULL, NULL, &e), &e),
           KILN_EINVAL, "finish as Running");
    is_int(code(kiln_store_job_finish(st, 999999, KILN_JOB_FAILED, NULL, NULL, NULL, &e), &e),
           KILN_ENOTFOUND, "finish a missing job");
    is_int(kiln_store_job_finish(st, j1, KILN_JOB_SUCCEEDED, "sha256:11", "r/job1:a", NULL, NULL),
           0, "finish Succeeded");
    kiln_store_job_get(st, j1, &j, NULL);
    ok(j.phase == KILN_JOB_SUCCEEDED && j.finished_ms >= j.started_ms, "Succeeded, finished");
    is_str(j.image_digest, "sha256:11", "digest");
    is_str(j.image_url, "r/job1:a", "url");
    ok(j.error_message == NULL, "no error");
    kiln_store_job_release(&j);
    is_int(code(kiln_store_job_finish(st, j1, KILN_JOB_FAILED, NULL, NULL, NULL, &e), &e),
           KILN_ECONFLICT, "finish twice");

    struct kiln_store_image_list il = {0};
    is_int(kiln_store_image_list(st, &il, NULL), 0, "list images");
    bool found = false;
    for (size_t i = 0; i < il.n; i++)
        if (strcmp(il.v[i].url, "r/job1:a") == 0 && il.v[i].source == KILN_IMAGE_BUILT)
            found = true;
    ok(found, "a finished job's image is listed as built");
    kiln_store_image_list_release(&il);
    is_int(kiln_store_image_add(st, "r/job1:a", KILN_IMAGE_ADMIN, NULL), 0, "add a known image: 0");
    is_int(kiln_store_image_add(st, "docker.io/library/debian:12", KILN_IMAGE_ADMIN, NULL), 1,
           "add an admin image: 1");
    kiln_store_image_list(st, &il, NULL);
    ok(il.n >= 2 && strcmp(il.v[0].url, "docker.io/library/debian:12") == 0 &&
           il.v[0].source == KILN_IMAGE_ADMIN && il.v[0].created_ms > 0,
       "images by URL, with source");
    kiln_store_image_list_release(&il);

    /* Cancel: Pending at once, Running by request. */
    is_int(kiln_store_job_request_cancel(st, j2, NULL), KILN_STORE_CANCELLED_NOW, "cancel Pending");
    kiln_store_job_get(st, j2, &j, NULL);
    ok(j.phase == KILN_JOB_CANCELLED && j.finished_ms > 0, "Pending job Cancelled at once");
    kiln_store_job_release(&j);
    is_int(kiln_store_job_cancel_requested(st, k1, NULL), 0, "no cancel requested yet");
    is_int(kiln_store_job_request_cancel(st, k1, NULL), KILN_STORE_CANCEL_REQUESTED,
           "cancel Running");
    is_int(kiln_store_job_cancel_requested(st, k1, NULL), 1, "cancel requested");
    kiln_store_job_get(st, k1, &j, NULL);
    ok(j.phase == KILN_JOB_RUNNING && j.cancel_requested, "still Running, flagged");
    kiln_store_job_release(&j);
    is_int(kiln_store_job_finish(st, k1, KILN_JOB_CANCELLED, NULL, NULL, "cancelled", NULL), 0,
           "worker finishes it Cancelled");
    is_int(code(kiln_store_job_request_cancel(st, k1, &e), &e), KILN_ECONFLICT,
           "cancel a finished job");
    is_int(code(kiln_store_job_request_cancel(st, 999999, &e), &e), KILN_ENOTFOUND,
           "cancel a missing job");
    is_int(code(kiln_store_job_cancel_requested(st, 999999, &e), &e), KILN_ENOTFOUND,
           "cancel state of a missing job");
    kiln_store_spec_release(&s1);
}

static void test_recover(struct kiln_store *st)
{
    put(st, "rec1", "debian:12", NULL, NULL, KILN_STORE_PUT_CREATE, NULL);
    put(st, "rec2", "debian:12", NULL, NULL, KILN_STORE_PUT_CREATE, NULL);
    put(st, "rec3", "debian:12", NULL, NULL, KILN_STORE_PUT_CREATE, NULL);
    int64_t a, b, c;
    kiln_store_job_create(st, "rec1", NULL, "r/rec1", &a, NULL);
    kiln_store_job_create(st, "rec2", NULL, "r/rec2", &b, NULL);
    ok(claim_named(st, "w") == a && claim_named(st, "w") == b, "two Running");
    is_int(kiln_store_recover(st, INT64_MAX, false, NULL), 2, "recover: 2 Running jobs");
    struct kiln_store_job j = {0};
    kiln_store_job_get(st, a, &j, NULL);
    ok(j.phase == KILN_JOB_FAILED && j.finished_ms > 0, "Running -> Failed");
    is_str(j.error_message, "interrupted", "error 'interrupted'");
    kiln_store_job_release(&j);
    is_int(kiln_store_recover(st, INT64_MAX, false, NULL), 0, "nothing left to recover");

    kiln_store_job_create(st, "rec1", NULL, "r/rec1", &a, NULL);
    kiln_store_job_create(st, "rec3", NULL, "r/rec3", &c, NULL);
    ok(claim_named(st, "w") == a && claim_named(st, "w") == c, "two Running again");
    kiln_store_job_request_cancel(st, c, NULL);
    is_int(kiln_store_recover(st, INT64_MAX, true, NULL), 2, "recover with requeue");
    kiln_store_job_get(st, a, &j, NULL);
    ok(j.phase == KILN_JOB_PENDING && j.started_ms == 0 && j.worker == NULL && j.attempt == 1,
       "Running -> Pending, attempt kept");
    kiln_store_job_release(&j);
    kiln_store_job_get(st, c, &j, NULL);
    ok(j.phase == KILN_JOB_CANCELLED, "a job with a cancel request -> Cancelled");
    kiln_store_job_release(&j);
    is_int(kiln_store_job_claim(st, "w2", &j, NULL), 1, "claim the requeued job");
    ok(j.id == a && j.attempt == 2, "attempt 2");
    kiln_store_job_release(&j);
    kiln_store_job_finish(st, a, KILN_JOB_FAILED, NULL, NULL, "x", NULL);
}

/* A job of spec `name` (created when missing) claimed by `worker`: its id, or 0. */
static int64_t claim_new(struct kiln_store *st, const char *name, const char *worker)
{
    put(st, name, "debian:12", NULL, NULL, KILN_STORE_PUT_UPSERT, NULL);
    int64_t id = 0;
    if (kiln_store_job_create(st, name, NULL, "r/lease", &id, NULL) < 0)
        return 0;
    struct kiln_store_job j = {0};
    int r = kiln_store_job_claim(st, worker, &j, NULL);
    int64_t got = r == 1 ? j.id : 0;
    kiln_store_job_release(&j);
    return got == id ? id : 0;
}

static int64_t heartbeat_of(struct kiln_store *st, int64_t id)
{
    struct kiln_store_job j = {0};
    int64_t v = kiln_store_job_get(st, id, &j, NULL) == 0 ? j.heartbeat_ms : -1;
    kiln_store_job_release(&j);
    return v;
}

static bool job_is(struct kiln_store *st, int64_t id, enum kiln_job_phase phase, const char *worker)
{
    struct kiln_store_job j = {0};
    bool good = kiln_store_job_get(st, id, &j, NULL) == 0 && j.phase == phase &&
                (worker ? j.worker && strcmp(j.worker, worker) == 0 : j.worker == NULL);
    if (!good)
        printf("#   job %lld: %s under '%s'\n", (long long)id, kiln_job_phase_name(j.phase),
               j.worker ? j.worker : "(none)");
    kiln_store_job_release(&j);
    return good;
}

/* Leases: heartbeats, recovery of stale jobs only, finish by a worker that lost its job. */
static void test_leases(struct kiln_store *st)
{
    struct kiln_error *e = NULL;
    /* No other job in the way: finish what earlier tests left. */
    kiln_store_recover(st, INT64_MAX, false, NULL);
    for (int i = 0; i < 100; i++) {
        int64_t id = claim_named(st, "drain");
        if (!id)
            break;
        kiln_store_job_finish(st, id, KILN_JOB_FAILED, NULL, NULL, "drained", NULL);
    }

    int64_t a = claim_new(st, "lease1", "wa");
    int64_t b = claim_new(st, "lease2", "wb");
    int64_t c = claim_new(st, "lease3", "wc");
    ok(a && b && c, "three jobs claimed by wa, wb, wc");
    struct kiln_store_job j = {0};
    kiln_store_job_get(st, a, &j, NULL);
    ok(j.heartbeat_ms > 0 && j.heartbeat_ms == j.started_ms, "a claim sets heartbeat_ms (%lld)",
       (long long)j.heartbeat_ms);
    kiln_store_job_release(&j);

    struct kiln_strv names = KILN_STRV_INIT;
    is_int(kiln_store_running_workers(st, &names, NULL), 0, "running workers");
    ok(names.n == 3 && strcmp(names.v[0], "wa") == 0 && strcmp(names.v[1], "wb") == 0 &&
           strcmp(names.v[2], "wc") == 0,
       "wa, wb, wc (%zu names)", names.n);
    kiln_strv_release(&names);

    /* Heartbeats: 1 for the job's worker, 0 otherwise. */
    int64_t hb_c = heartbeat_of(st, c);
    is_int(kiln_store_job_heartbeat(st, a, "wa", NULL), 1, "heartbeat by the job's worker: 1");
    int64_t hb_a = heartbeat_of(st, a);
    ok(hb_a > hb_c, "heartbeat_ms moved on");
    is_int(kiln_store_job_heartbeat(st, b, "wb", NULL), 1, "heartbeat of b");
    int64_t hb_b = heartbeat_of(st, b);
    ok(hb_b > hb_a, "b renewed last");
    is_int(kiln_store_job_heartbeat(st, a, "wb", NULL), 0, "heartbeat by another worker: 0");
    is_int(heartbeat_of(st, a), hb_a, "and it changes nothing");
    is_int(kiln_store_job_heartbeat(st, 999999, "wa", NULL), 0, "heartbeat of a missing job: 0");
    is_int(code(kiln_store_job_heartbeat(st, 0, "wa", &e), &e), KILN_EINVAL, "heartbeat: job id 0");
    is_int(code(kiln_store_job_heartbeat(st, a, "", &e), &e), KILN_EINVAL,
           "heartbeat: empty worker");

    /* Recover with a bound in the middle: only the stale ones. */
    is_int(kiln_store_recover(st, hb_c, false, NULL), 0, "nothing older than the oldest heartbeat");
    is_int(kiln_store_recover(st, hb_a, false, NULL), 1, "recover stale jobs: only c");
    ok(job_is(st, c, KILN_JOB_FAILED, "wc"), "c Failed");
    kiln_store_job_get(st, c, &j, NULL);
    is_str(j.error_message, "interrupted", "c 'interrupted'");
    int64_t c_finished = j.finished_ms;
    kiln_store_job_release(&j);
    ok(job_is(st, a, KILN_JOB_RUNNING, "wa") && job_is(st, b, KILN_JOB_RUNNING, "wb"),
       "a and b (renewed) still Running");
    is_int(kiln_store_job_heartbeat(st, c, "wc", NULL), 0, "the recovered job's worker: 0");
    is_int(
        code(kiln_store_job_finish_as(st, c, "wc", KILN_JOB_SUCCEEDED, "sha256:c", "r/c", NULL, &e),
             &e),
        KILN_ECONFLICT, "finish_as of a recovered job: conflict");
    kiln_store_job_get(st, c, &j, NULL);
    ok(j.phase == KILN_JOB_FAILED && j.finished_ms == c_finished && j.image_digest == NULL,
       "the recovered job is left as it was");
    kiln_store_job_release(&j);

    /* Requeued and claimed by another worker: the old one cannot finish it. */
    is_int(code(kiln_store_recover_worker(st, "", false, &e), &e), KILN_EINVAL,
           "recover_worker: empty worker");
    is_int(kiln_store_recover_worker(st, "nobody", false, NULL), 0, "recover_worker: no such");
    is_int(kiln_store_recover_worker(st, "wa", true, NULL), 1, "recover wa's job, requeued");
    kiln_store_job_get(st, a, &j, NULL);
    ok(j.phase == KILN_JOB_PENDING && j.worker == NULL && j.heartbeat_ms == 0 &&
           j.started_ms == 0 && j.attempt == 1,
       "a Pending, heartbeat and worker cleared, attempt kept");
    kiln_store_job_release(&j);
    ok(job_is(st, b, KILN_JOB_RUNNING, "wb"), "b untouched");
    is_int(claim_named(st, "wz"), a, "wz claims a again");
    is_int(kiln_store_job_heartbeat(st, a, "wa", NULL), 0, "wa's heartbeat: 0");
    is_int(kiln_store_job_heartbeat(st, a, "wz", NULL), 1, "wz's heartbeat: 1");
    int r = kiln_store_job_finish_as(st, a, "wa", KILN_JOB_SUCCEEDED, "sha256:a", "r/a", NULL, &e);
    ok(r == -KILN_ECONFLICT && e && strstr(e->msg, "'wz'") && strstr(e->msg, "'wa'"),
       "finish_as by wa: conflict: %s", e ? e->msg : "");
    kiln_error_free(e);
    e = NULL;
    ok(job_is(st, a, KILN_JOB_RUNNING, "wz"), "still Running under wz");
    is_int(code(kiln_store_job_finish_as(st, a, "", KILN_JOB_FAILED, NULL, NULL, NULL, &e), &e),
           KILN_EINVAL, "finish_as: empty worker");
    is_int(kiln_store_job_finish_as(st, a, "wz", KILN_JOB_SUCCEEDED, "sha256:a", "r/a", NULL, NULL),
           0, "finish_as by wz");
    ok(job_is(st, a, KILN_JOB_SUCCEEDED, "wz"), "Succeeded");
    is_int(kiln_store_job_heartbeat(st, a, "wz", NULL), 0, "heartbeat of a finished job: 0");

    /* The cancel rule holds with a bound: a stale job with a cancel request -> Cancelled. */
    kiln_store_job_request_cancel(st, b, NULL);
    is_int(kiln_store_recover(st, hb_b, true, NULL), 0, "b is not stale before its heartbeat");
    is_int(kiln_store_recover(st, hb_b + 1, true, NULL), 1, "b is stale after it");
    ok(job_is(st, b, KILN_JOB_CANCELLED, "wb"), "b Cancelled (a cancel was requested)");
    is_int(kiln_store_running_workers(st, &names, NULL), 0, "running workers again");
    is_int((int)names.n, 0, "none");
    kiln_strv_release(&names);
}

/* A database of schema version 2 (no jobs.heartbeat_ms) is migrated with its jobs. */
static void test_migrate_v2(void)
{
    pg_reset();
    _cleanup_free_ char *path = db_path("v2.db");
    struct kiln_store *st = open_store(path, 1);
    ok(st != NULL, "v2: new database");
    if (!st)
        return;
    int64_t run = claim_new(st, "old1", "old-worker");
    int64_t done = claim_new(st, "old2", "old-worker");
    kiln_store_job_finish(st, done, KILN_JOB_SUCCEEDED, "sha256:00", "r/old2", NULL, NULL);
    int64_t pend = 0;
    kiln_store_job_create(st, "old2", NULL, "r/old2b", &pend, NULL);
    kiln_store_free(st);
    ok(run && done && pend, "v2: a Running, a Succeeded and a Pending job");
    /* Back to version 2, as an older kiln left it. */
    is_int(raw_exec(path, "DROP TABLE job_logs"), SQLITE_OK, "v2: drop job_logs");
    is_int(raw_exec(path, "ALTER TABLE jobs DROP COLUMN heartbeat_ms"), SQLITE_OK,
           "v2: drop jobs.heartbeat_ms");
    is_int(raw_exec(path, "DELETE FROM schema_version WHERE version >= 3"), SQLITE_OK,
           "v2: schema version 2");
    is_int(raw_int(path, "SELECT MAX(version) FROM schema_version"), 2, "v2: it says 2");

    st = open_store(path, 1);
    ok(st != NULL, "v2: re-open migrates");
    if (!st)
        return;
    is_int(kiln_store_schema_version(st, NULL), 5, "v2: now version 5");
    struct kiln_store_job j = {0};
    is_int(kiln_store_job_get(st, run, &j, NULL), 0, "v2: the Running job is kept");
    ok(j.phase == KILN_JOB_RUNNING && j.heartbeat_ms == 0 && j.worker &&
           strcmp(j.worker, "old-worker") == 0,
       "v2: Running, no heartbeat");
    kiln_store_job_release(&j);
    kiln_store_job_get(st, done, &j, NULL);
    ok(j.phase == KILN_JOB_SUCCEEDED && j.image_url && strcmp(j.image_url, "r/old2") == 0,
       "v2: the Succeeded job is kept");
    kiln_store_job_release(&j);
    ok(job_is(st, pend, KILN_JOB_PENDING, NULL), "v2: the Pending job is kept");
    is_int(kiln_store_check(st, NULL), 0, "v2: integrity check");
    /* No heartbeat: its lease counts as expired, whatever the bound. */
    is_int(kiln_store_recover(st, 1, true, NULL), 1, "v2: a job without a heartbeat is stale");
    ok(job_is(st, run, KILN_JOB_PENDING, NULL), "v2: requeued");
    kiln_store_free(st);
}

/* A database of schema version 3 (no job_logs) is migrated with its jobs; logs work after. */
static void test_migrate_v3(void)
{
    pg_reset();
    _cleanup_free_ char *path = db_path("v3.db");
    struct kiln_store *st = open_store(path, 1);
    ok(st != NULL, "v3: new database");
    if (!st)
        return;
    int64_t run = claim_new(st, "v3run", "v3-worker");
    int64_t done = claim_new(st, "v3done", "v3-worker");
    kiln_store_job_finish(st, done, KILN_JOB_FAILED, NULL, NULL, "boom", NULL);
    kiln_store_free(st);
    ok(run && done, "v3: a Running and a Failed job");
    is_int(raw_exec(path, "DROP TABLE job_logs"), SQLITE_OK, "v3: drop job_logs");
    is_int(raw_exec(path, "DELETE FROM schema_version WHERE version >= 4"), SQLITE_OK,
           "v3: schema version 3");
    is_int(raw_int(path, "SELECT MAX(version) FROM schema_version"), 3, "v3: it says 3");

    st = open_store(path, 1);
    ok(st != NULL, "v3: re-open migrates");
    if (!st)
        return;
    is_int(kiln_store_schema_version(st, NULL), 5, "v3: now version 5");
    ok(job_is(st, run, KILN_JOB_RUNNING, "v3-worker"), "v3: the Running job is kept");
    struct kiln_store_job j = {0};
    is_int(kiln_store_job_get(st, done, &j, NULL), 0, "v3: the Failed job is kept");
    ok(j.phase == KILN_JOB_FAILED && j.error_message && !strcmp(j.error_message, "boom") &&
           j.heartbeat_ms > 0,
       "v3: with its fields");
    kiln_store_job_release(&j);
    char *log = NULL;
    size_t len = 0;
    struct kiln_error *e = NULL;
    is_int(code(kiln_store_job_log_get(st, done, &log, &len, NULL, &e), &e), KILN_ENOTFOUND,
           "v3: no stored log yet");
    is_int(kiln_store_job_log_put(st, done, "old log\n", 8, false, NULL), 0,
           "v3: a log is stored after the migration");
    is_int(kiln_store_job_log_get(st, done, &log, &len, NULL, NULL), 0, "v3: and read back");
    ok(len == 8 && log && !strcmp(log, "old log\n"), "v3: the same");
    free(log);
    is_int(kiln_store_check(st, NULL), 0, "v3: integrity check");
    kiln_store_free(st);
}

/*
 * A database of schema version 4 (job_logs without start offsets nor the
 * final flag) is migrated: its stored log, truncated with its first line
 * of kiln's own, reads back as it was, a final copy from offset 0.
 */
static void test_migrate_v4(void)
{
    pg_reset();
    _cleanup_free_ char *path = db_path("v4.db");
    struct kiln_store *st = open_store(path, 1);
    ok(st != NULL, "v4: new database");
    if (!st)
        return;
    int64_t done = claim_new(st, "v4done", "v4-worker");
    kiln_store_job_finish(st, done, KILN_JOB_FAILED, NULL, NULL, "boom", NULL);
    int64_t run = claim_new(st, "v4run", "v4-worker");
    kiln_store_free(st);
    ok(done && run, "v4: a Failed and a Running job");
    /* job_logs as version 4 made it, with a row an older kiln wrote */
    is_int(raw_exec(path, "DROP TABLE job_logs"), SQLITE_OK, "v4: drop job_logs");
    is_int(raw_exec(path,
                    pg_url ? "CREATE TABLE job_logs (\n"
                             "  job_id BIGINT NOT NULL PRIMARY KEY REFERENCES jobs (id) ON DELETE "
                             "CASCADE,\n"
                             "  log BYTEA NOT NULL,\n"
                             "  size BIGINT NOT NULL,\n"
                             "  truncated BOOLEAN NOT NULL DEFAULT FALSE,\n"
                             "  stored_ms BIGINT NOT NULL\n"
                             ")"
                           : "CREATE TABLE job_logs (\n"
                             "  job_id INTEGER NOT NULL PRIMARY KEY REFERENCES jobs (id) ON DELETE "
                             "CASCADE,\n"
                             "  log BLOB NOT NULL,\n"
                             "  size INTEGER NOT NULL,\n"
                             "  truncated INTEGER NOT NULL DEFAULT 0 CHECK (truncated IN (0, 1)),\n"
                             "  stored_ms INTEGER NOT NULL\n"
                             ")"),
           SQLITE_OK, "v4: job_logs of version 4");
    static const char old[] = "[log truncated: the first 900 bytes are only on h in /d/1.log]\n"
                              "t9 last line\n";
    _cleanup_free_ char *ins = kiln_xasprintf(
        pg_url ? "INSERT INTO job_logs VALUES (%lld, convert_to('%s', 'UTF8'), %zu, TRUE, 5)"
               : "INSERT INTO job_logs VALUES (%lld, CAST('%s' AS BLOB), %zu, 1, 5)",
        (long long)done, old, strlen(old));
    is_int(raw_exec(path, ins), SQLITE_OK, "v4: a truncated log stored by version 4");
    is_int(raw_exec(path, "DELETE FROM schema_version WHERE version >= 5"), SQLITE_OK,
           "v4: schema version 4");
    is_int(raw_int(path, "SELECT MAX(version) FROM schema_version"), 4, "v4: it says 4");

    st = open_store(path, 1);
    ok(st != NULL, "v4: re-open migrates");
    if (!st)
        return;
    is_int(kiln_store_schema_version(st, NULL), 5, "v4: now version 5");
    struct kiln_store_job_log l = {0};
    is_int(kiln_store_job_log_read(st, done, &l, NULL), 0, "v4: the old log is read");
    ok(l.len == strlen(old) && l.data && !strcmp(l.data, old), "v4: as it was, its first line too");
    ok(l.final && l.truncated && l.start_offset == 0 && l.stored_ms == 5,
       "v4: a final copy, truncated, from offset 0");
    kiln_store_job_log_release(&l);
    char *text = NULL;
    size_t len = 0;
    bool trunc = false;
    is_int(kiln_store_job_log_get(st, done, &text, &len, &trunc, NULL), 0, "v4: get works too");
    ok(text && !strcmp(text, old) && trunc, "v4: the same text");
    free(text);
    is_int(kiln_store_job_log_put_live(st, done, NULL, "x\n", 2, 0, NULL), 0,
           "v4: no live copy over it (the job is final)");
    is_int(kiln_store_job_log_put_live(st, run, "v4-worker", "live\n", 5, 7, NULL), 1,
           "v4: a live copy of the Running job after the migration");
    is_int(kiln_store_job_log_read(st, run, &l, NULL), 0, "v4: read it");
    ok(!l.final && l.start_offset == 7 && l.len == 5 && !strcmp(l.data, "live\n"),
       "v4: live, from offset 7");
    kiln_store_job_log_release(&l);
    is_int(kiln_store_check(st, NULL), 0, "v4: integrity check");
    kiln_store_free(st);
}

/* Live copies of a running job's log: offsets, the worker, final over live, cascade. */
static void test_live_logs(struct kiln_store *st, const char *path)
{
    struct kiln_error *e = NULL;
    int64_t a = claim_new(st, "livelog", "host-1");
    int64_t p = 0;
    kiln_store_job_create(st, "livelog", NULL, "r/lease", &p, NULL);
    ok(a > 0 && p > a, "live: a Running job and a Pending one");
    struct kiln_store_job_log l = {.len = 99};
    is_int(code(kiln_store_job_log_read(st, a, &l, &e), &e), KILN_ENOTFOUND, "live: none yet");
    ok(l.data == NULL && l.len == 99, "live: out-parameter untouched on failure");

    is_int(kiln_store_job_log_put_live(st, a, "host-1", "l1\nl2\n", 6, 0, &e), 1,
           "live: put a live copy %s", e ? e->msg : "");
    kiln_error_freep(&e);
    l = (struct kiln_store_job_log){0};
    is_int(kiln_store_job_log_read(st, a, &l, NULL), 0, "live: read");
    ok(l.len == 6 && !memcmp(l.data, "l1\nl2\n", 7) && l.start_offset == 0 && !l.final &&
           !l.truncated && l.stored_ms > 0,
       "live: its text, from offset 0, not final");
    kiln_store_job_log_release(&l);
    ok(l.data == NULL && l.len == 0, "live: released");

    /* a newer window of the log: from offset 3 */
    static const char bin[] = "l2\n\0\xff l3\n";
    is_int(kiln_store_job_log_put_live(st, a, "host-1", bin, sizeof(bin) - 1, 3, NULL), 1,
           "live: a newer copy replaces it");
    kiln_store_job_log_read(st, a, &l, NULL);
    ok(l.len == sizeof(bin) - 1 && !memcmp(l.data, bin, l.len) && l.start_offset == 3 && !l.final,
       "live: any bytes, from offset 3");
    kiln_store_job_log_release(&l);
    is_int(raw_int(path, "SELECT COUNT(*) FROM job_logs WHERE NOT is_final"), 1,
           "live: one live row");

    is_int(kiln_store_job_log_put_live(st, a, "host-2", "other\n", 6, 0, NULL), 0,
           "live: another worker's copy is not stored");
    is_int(kiln_store_job_log_put_live(st, a, NULL, "any\nmore\n", 9, 100, NULL), 1,
           "live: worker NULL: any worker");
    kiln_store_job_log_read(st, a, &l, NULL);
    ok(l.start_offset == 100 && l.len == 9 && !strcmp(l.data, "any\nmore\n"),
       "live: the last copy is kept");
    kiln_store_job_log_release(&l);
    is_int(kiln_store_job_log_put_live(st, p, NULL, "x\n", 2, 0, NULL), 0,
           "live: a Pending job gets no live copy");
    is_int(code(kiln_store_job_log_read(st, p, &l, &e), &e), KILN_ENOTFOUND, "live: and has none");
    kiln_store_job_request_cancel(st, p, NULL);
    is_int(code(kiln_store_job_log_put_live(st, 987654321, NULL, "x", 1, 0, &e), &e),
           KILN_ENOTFOUND, "live: an unknown job: ENOTFOUND");
    is_int(code(kiln_store_job_log_put_live(st, 0, NULL, "x", 1, 0, &e), &e), KILN_EINVAL,
           "live: job 0: EINVAL");
    is_int(code(kiln_store_job_log_put_live(st, a, "", "x", 1, 0, &e), &e), KILN_EINVAL,
           "live: an empty worker name: EINVAL");
    is_int(code(kiln_store_job_log_put_live(st, a, NULL, "x", 1, (uint64_t)INT64_MAX + 1, &e), &e),
           KILN_EINVAL, "live: an offset over INT64_MAX: EINVAL");
    is_int(code(kiln_store_job_log_put_live(st, a, NULL, NULL, 2, 0, &e), &e), KILN_EINVAL,
           "live: NULL data with a length: EINVAL");
    is_int(kiln_store_job_log_put_live(st, a, NULL, NULL, 0, 5, NULL), 1,
           "live: an empty copy at offset 5");
    kiln_store_job_log_read(st, a, &l, NULL);
    ok(l.len == 0 && l.data && l.data[0] == '\0' && l.start_offset == 5, "live: empty, at 5");
    kiln_store_job_log_release(&l);

    /* the final copy replaces the live one, and a live one never replaces it */
    is_int(kiln_store_job_finish_as(st, a, "host-1", KILN_JOB_SUCCEEDED, NULL, NULL, NULL, NULL), 0,
           "live: the job finishes");
    static const char fin[] = "[log truncated: the first 40 bytes are only on h in p]\nend\n";
    is_int(kiln_store_job_log_put_final(st, a, fin, strlen(fin), 40, true, &e), 0,
           "live: the final copy %s", e ? e->msg : "");
    kiln_error_freep(&e);
    kiln_store_job_log_read(st, a, &l, NULL);
    ok(l.final && l.truncated && l.start_offset == 40 && l.len == strlen(fin) &&
           !strcmp(l.data, fin),
       "live: final replaces live: truncated, from offset 40");
    kiln_store_job_log_release(&l);
    is_int(kiln_store_job_log_put_live(st, a, NULL, "late\n", 5, 200, NULL), 0,
           "live: a live copy after the final one is not stored");
    kiln_store_job_log_read(st, a, &l, NULL);
    ok(l.final && l.start_offset == 40 && !strcmp(l.data, fin), "live: the final copy is kept");
    kiln_store_job_log_release(&l);
    is_int(code(kiln_store_job_log_put_final(st, a, "x\n", 2, 3, false, &e), &e), KILN_EINVAL,
           "live: a final copy from an offset must be truncated");
    is_int(kiln_store_job_log_put(st, a, "whole\n", 6, false, NULL), 0,
           "live: kiln_store_job_log_put: a final copy");
    kiln_store_job_log_read(st, a, &l, NULL);
    ok(l.final && !l.truncated && l.start_offset == 0 && !strcmp(l.data, "whole\n"),
       "live: final, from offset 0");
    kiln_store_job_log_release(&l);

    /* kiln_jobs_store_live_log: a small file whole, a big one's end from a line start */
    int64_t b = claim_new(st, "livelog2", "host-1");
    ok(b > 0, "live: another Running job");
    _cleanup_free_ char *small = db_path("live-small.log");
    int fd = open(small, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    kiln_fs_write_all(fd, "t0 job: started\nt1 | out", 24);
    close(fd);
    uint64_t size = 0;
    is_int(kiln_jobs_store_live_log(st, b, "host-1", small, &size, &e), 1,
           "live: store a small log file %s", e ? e->msg : "");
    kiln_error_freep(&e);
    kiln_store_job_log_read(st, b, &l, NULL);
    ok(size == 24 && l.len == 24 && !strcmp(l.data, "t0 job: started\nt1 | out") &&
           l.start_offset == 0 && !l.final,
       "live: stored whole (a line not ended yet too), from 0");
    kiln_store_job_log_release(&l);
    _cleanup_free_ char *bigp = db_path("live-big.log");
    struct kiln_buf text = KILN_BUF_INIT;
    for (int i = 0; text.len < 3 * KILN_JOBS_LIVE_LOG_MAX; i++)
        kiln_buf_addf(&text, "2026-11-25T10:00:00Z | line %07d\n", i);
    fd = open(bigp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    kiln_fs_write_all(fd, text.buf, text.len);
    close(fd);
    is_int(kiln_jobs_store_live_log(st, b, "host-1", bigp, &size, &e), 1,
           "live: store the end of a %zu-byte log %s", text.len, e ? e->msg : "");
    kiln_error_freep(&e);
    kiln_store_job_log_read(st, b, &l, NULL);
    ok(size == text.len && l.len <= KILN_JOBS_LIVE_LOG_MAX &&
           l.len > KILN_JOBS_LIVE_LOG_MAX - 100 && l.start_offset + l.len == text.len,
       "live: its last %zu bytes, from offset %llu", l.len, (unsigned long long)l.start_offset);
    ok(l.start_offset > 0 && text.buf[l.start_offset - 1] == '\n' &&
           !memcmp(l.data, text.buf + l.start_offset, l.len) && !l.final && !l.truncated,
       "live: from a line start, the same bytes");
    kiln_store_job_log_release(&l);
    is_int(kiln_jobs_store_live_log(st, b, "host-9", bigp, &size, NULL), 0,
           "live: not stored for another worker");
    _cleanup_free_ char *nofile = db_path("no-such-live.log");
    is_int(code(kiln_jobs_store_live_log(st, b, "host-1", nofile, NULL, &e), &e), KILN_ENOTFOUND,
           "live: no log file: ENOTFOUND");
    /* the final copy of the big log: its start offset is the N of its first line */
    is_int(kiln_store_job_finish_as(st, b, "host-1", KILN_JOB_FAILED, NULL, NULL, "x", NULL), 0,
           "live: the second job finishes");
    for (int i = 0; text.len <= KILN_STORE_LOG_MAX + 1000; i++)
        kiln_buf_addf(&text, "2026-11-25T10:00:01Z | more %07d\n", i);
    fd = open(bigp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    kiln_fs_write_all(fd, text.buf, text.len);
    close(fd);
    is_int(kiln_jobs_store_log(st, b, bigp, "h", &e), 0, "live: its final copy %s",
           e ? e->msg : "");
    kiln_error_freep(&e);
    kiln_store_job_log_read(st, b, &l, NULL);
    unsigned long long n = 0;
    const char *nl = l.data ? strchr(l.data, '\n') : NULL;
    ok(l.final && l.truncated && l.data &&
           sscanf(l.data, "[log truncated: the first %llu bytes", &n) == 1 && n == l.start_offset &&
           nl && l.start_offset + (l.len - (size_t)(nl + 1 - l.data)) == text.len,
       "live: final, truncated, from offset %llu as its first line says",
       (unsigned long long)l.start_offset);
    kiln_store_job_log_release(&l);
    kiln_buf_release(&text);
    unlink(small);
    unlink(bigp);

    /* they go with their jobs */
    is_int(kiln_store_job_log_put_live(st, claim_new(st, "livelog", "host-1"), "host-1", "x\n", 2,
                                       0, NULL),
           1, "live: a live copy of a third job");
    is_int(raw_int(path, "SELECT COUNT(*) FROM job_logs WHERE job_id IN (SELECT id FROM jobs "
                         "WHERE spec_name LIKE 'livelog%')"),
           3, "live: three stored logs");
    kiln_store_spec_delete(st, "livelog", NULL);
    kiln_store_spec_delete(st, "livelog2", NULL);
    is_int(raw_int(path, "SELECT COUNT(*) FROM job_logs"), 0,
           "live: deleting the specs deletes them (cascade)");
}

/* Job logs in the store: put, get, replace, cascade, limits; kiln_jobs_store_log. */
static void test_job_logs(struct kiln_store *st, const char *path)
{
    struct kiln_error *e = NULL;
    put(st, "logged", "debian:12", NULL, NULL, KILN_STORE_PUT_CREATE, NULL);
    int64_t a = 0, b = 0;
    kiln_store_job_create(st, "logged", NULL, "r/logged", &a, NULL);
    kiln_store_job_create(st, "logged", NULL, "r/logged", &b, NULL);
    ok(a > 0 && b > a, "logs: two jobs");
    char *log = NULL;
    size_t len = 99;
    bool trunc = true;
    is_int(code(kiln_store_job_log_get(st, a, &log, &len, &trunc, &e), &e), KILN_ENOTFOUND,
           "logs: none stored yet");
    ok(log == NULL && len == 99 && trunc, "logs: out-parameters untouched on failure");

    /* any bytes: a NUL, bytes that are not UTF-8, a CR */
    static const char bin[] = "line 1\n\0\xff\xfe binary\r\nlast";
    size_t binlen = sizeof(bin) - 1;
    is_int(kiln_store_job_log_put(st, a, bin, binlen, false, &e), 0, "logs: put %s",
           e ? e->msg : "");
    kiln_error_freep(&e);
    is_int(kiln_store_job_log_get(st, a, &log, &len, &trunc, NULL), 0, "logs: get");
    ok(len == binlen && log && memcmp(log, bin, binlen) == 0 && log[len] == '\0',
       "logs: the same bytes back, NUL-terminated (%zu bytes)", len);
    ok(!trunc, "logs: not truncated");
    free(log);
    is_int(raw_int(path, "SELECT size FROM job_logs WHERE job_id = (SELECT MIN(id) FROM jobs "
                         "WHERE spec_name = 'logged')"),
           (int64_t)binlen, "logs: size column");

    /* replace, truncated */
    is_int(kiln_store_job_log_put(st, a, "[log truncated]\nend\n", 20, true, NULL), 0,
           "logs: replace");
    is_int(kiln_store_job_log_get(st, a, &log, &len, &trunc, NULL), 0, "logs: get again");
    ok(len == 20 && !strcmp(log, "[log truncated]\nend\n") && trunc, "logs: replaced, truncated");
    free(log);
    is_int(raw_int(path, "SELECT COUNT(*) FROM job_logs"), 1, "logs: one row");
    is_int(kiln_store_job_log_get(st, a, &log, &len, NULL, NULL), 0,
           "logs: ret_truncated may be NULL");
    free(log);

    /* empty, and exactly the largest */
    is_int(kiln_store_job_log_put(st, b, NULL, 0, false, NULL), 0, "logs: an empty log");
    is_int(kiln_store_job_log_get(st, b, &log, &len, &trunc, NULL), 0, "logs: get the empty one");
    ok(len == 0 && log && log[0] == '\0' && !trunc, "logs: empty");
    free(log);
    char *big = kiln_xmalloc(KILN_STORE_LOG_MAX);
    for (size_t i = 0; i < KILN_STORE_LOG_MAX; i++)
        big[i] = (char)(i % 251);
    is_int(kiln_store_job_log_put(st, b, big, KILN_STORE_LOG_MAX, true, &e), 0,
           "logs: KILN_STORE_LOG_MAX bytes %s", e ? e->msg : "");
    kiln_error_freep(&e);
    is_int(kiln_store_job_log_get(st, b, &log, &len, &trunc, NULL), 0, "logs: get the big one");
    ok(len == KILN_STORE_LOG_MAX && log && memcmp(log, big, len) == 0 && trunc,
       "logs: %zu bytes back", len);
    free(log);
    is_int(code(kiln_store_job_log_put(st, b, big, KILN_STORE_LOG_MAX + 1, false, &e), &e),
           KILN_EINVAL, "logs: one byte more: EINVAL");
    free(big);

    is_int(code(kiln_store_job_log_put(st, 987654321, "x", 1, false, &e), &e), KILN_ENOTFOUND,
           "logs: an unknown job: ENOTFOUND");
    is_int(code(kiln_store_job_log_put(st, 0, "x", 1, false, &e), &e), KILN_EINVAL,
           "logs: job 0: EINVAL");
    is_int(code(kiln_store_job_log_put(st, a, NULL, 3, false, &e), &e), KILN_EINVAL,
           "logs: NULL data with a length: EINVAL");
    is_int(code(kiln_store_job_log_get(st, 987654321, &log, &len, NULL, &e), &e), KILN_ENOTFOUND,
           "logs: get of an unknown job: ENOTFOUND");

    /* kiln_jobs_store_log: a small file whole, a big one's end */
    _cleanup_free_ char *small = db_path("small.log");
    int fd = open(small, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    kiln_fs_write_all(fd, "t0 job: started\nt1 | output\n", 28);
    close(fd);
    is_int(kiln_jobs_store_log(st, a, small, "testhost", &e), 0, "logs: store a small log file %s",
           e ? e->msg : "");
    kiln_error_freep(&e);
    kiln_store_job_log_get(st, a, &log, &len, &trunc, NULL);
    ok(len == 28 && log && !strcmp(log, "t0 job: started\nt1 | output\n") && !trunc,
       "logs: stored whole");
    free(log);
    _cleanup_free_ char *bigp = db_path("big.log");
    fd = open(bigp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    struct kiln_buf text = KILN_BUF_INIT;
    for (int i = 0; text.len < KILN_STORE_LOG_MAX + 1000000; i++)
        kiln_buf_addf(&text, "2026-11-25T10:00:00Z | line %07d of the build\n", i);
    kiln_buf_adds(&text, "2026-11-25T10:00:00Z job 1: Failed: the error at the end\n");
    kiln_fs_write_all(fd, text.buf, text.len);
    close(fd);
    is_int(kiln_jobs_store_log(st, a, bigp, "testhost", &e), 0, "logs: store a %zu-byte log %s",
           text.len, e ? e->msg : "");
    kiln_error_freep(&e);
    log = NULL;
    kiln_store_job_log_get(st, a, &log, &len, &trunc, NULL);
    ok(trunc && len <= KILN_STORE_LOG_MAX && len > KILN_STORE_LOG_MAX - 100000,
       "logs: truncated to %zu bytes", len);
    _cleanup_free_ char *want_end = kiln_xasprintf(" bytes are only on testhost in %s]\n", bigp);
    const char *nl = log ? strchr(log, '\n') : NULL;
    unsigned long long omitted = 0;
    ok(log && sscanf(log, "[log truncated: the first %llu bytes", &omitted) == 1 && nl &&
           (size_t)(nl + 1 - log) > strlen(want_end) &&
           !strncmp(nl + 1 - strlen(want_end), want_end, strlen(want_end)),
       "logs: the first line says what is left out and where: %.120s", log ? log : "");
    size_t head = nl ? (size_t)(nl + 1 - log) : 0;
    ok(nl && omitted + (len - head) == text.len, "logs: %llu left out + %zu kept = %zu", omitted,
       len - head, text.len);
    ok(nl && !strncmp(nl + 1, "2026-11-25T10:00:00Z | line ", 28), "logs: kept from a line start");
    ok(log && len > 60 && text.len > 60 && !memcmp(log + len - 60, text.buf + text.len - 60, 60),
       "logs: the end is kept");
    free(log);
    kiln_buf_release(&text);
    unlink(bigp);
    unlink(small);
    _cleanup_free_ char *nofile = db_path("no-such.log");
    is_int(code(kiln_jobs_store_log(st, a, nofile, NULL, &e), &e), KILN_ENOTFOUND,
           "logs: no log file: ENOTFOUND");

    /* the logs go with the spec's jobs */
    is_int(raw_int(path, "SELECT COUNT(*) FROM job_logs"), 2, "logs: two stored");
    is_int(kiln_store_spec_delete(st, "logged", NULL), 0, "logs: delete the spec");
    is_int(raw_int(path, "SELECT COUNT(*) FROM job_logs"), 0, "logs: its logs are gone (cascade)");
    is_int(code(kiln_store_job_log_get(st, a, &log, &len, NULL, &e), &e), KILN_ENOTFOUND,
           "logs: get after the delete: ENOTFOUND");
    is_int(kiln_store_check(st, NULL), 0, "logs: integrity check");
}

static void test_counts_cascade(struct kiln_store *st, const char *path)
{
    int64_t before[KILN_JOB_PHASES] = {0};
    is_int(kiln_store_job_counts(st, before, NULL), 0, "counts");
    int64_t total = 0;
    for (int i = 0; i < KILN_JOB_PHASES; i++)
        total += before[i];
    is_int(total, raw_int(path, "SELECT COUNT(*) FROM jobs"), "counts add up");
    is_int(before[KILN_JOB_RUNNING], 0, "none Running");

    put(st, "casc", "debian:12", NULL, NULL, KILN_STORE_PUT_CREATE, NULL);
    int64_t a, b;
    kiln_store_job_create(st, "casc", NULL, "r/casc", &a, NULL);
    kiln_store_job_create(st, "casc", NULL, "r/casc", &b, NULL);
    int64_t mid[KILN_JOB_PHASES] = {0};
    kiln_store_job_counts(st, mid, NULL);
    is_int(mid[KILN_JOB_PENDING], before[KILN_JOB_PENDING] + 2, "two more Pending");
    is_int(kiln_store_spec_delete(st, "casc", NULL), 0, "delete a spec with jobs");
    struct kiln_store_job j = {0};
    struct kiln_error *e = NULL;
    is_int(code(kiln_store_job_get(st, a, &j, &e), &e), KILN_ENOTFOUND, "its jobs are gone");
    is_int(raw_int(path, "SELECT COUNT(*) FROM jobs WHERE spec_name = 'casc'"), 0,
           "cascade in the table");
    int64_t after[KILN_JOB_PHASES] = {0};
    kiln_store_job_counts(st, after, NULL);
    is_int(after[KILN_JOB_PENDING], before[KILN_JOB_PENDING], "counts back");
    /* A new job never reuses a deleted id. */
    put(st, "casc", "debian:12", NULL, NULL, KILN_STORE_PUT_CREATE, NULL);
    int64_t c = 0;
    kiln_store_job_create(st, "casc", NULL, "r/casc", &c, NULL);
    ok(c > b, "ids are not reused");
    kiln_store_spec_delete(st, "casc", NULL);
}

static void test_secrets_settings(struct kiln_store *st)
{
    struct kiln_error *e = NULL;
    const char *v1 = "{\"auths\":{\"r\":{\"auth\":\"SECRET-ONE\"}}}";
    is_int(kiln_store_secret_put(st, "pull", v1, NULL), 1, "new secret");
    is_int(kiln_store_secret_put(st, "pull", "{\"auths\":{}}", NULL), 0, "replace secret");
    is_int(kiln_store_secret_put(st, "other", v1, NULL), 1, "second secret");
    char *v = NULL;
    is_int(kiln_store_secret_get_value(st, "pull", &v, NULL), 0, "get value");
    is_str(v, "{\"auths\":{}}", "value replaced");
    free(v);
    v = NULL;
    is_int(code(kiln_store_secret_get_value(st, "nope", &v, &e), &e), KILN_ENOTFOUND,
           "missing secret");
    ok(v == NULL, "no value on failure");
    struct kiln_store_secret_list l = {0};
    is_int(kiln_store_secret_list(st, &l, NULL), 0, "list secrets");
    ok(l.n == 2 && strcmp(l.v[0].name, "other") == 0 && strcmp(l.v[1].name, "pull") == 0 &&
           l.v[0].created_ms > 0,
       "names and times, by name");
    kiln_store_secret_list_release(&l);
    /* No list output carries a value. */
    put(st, "uses-secret", "debian:12", NULL, NULL, KILN_STORE_PUT_CREATE, NULL);
    struct kiln_store_spec_list sl = {0};
    struct kiln_store_spec_query q = {.limit = KILN_STORE_LIST_MAX};
    kiln_store_spec_list(st, &q, &sl, NULL);
    bool leak = false;
    for (size_t i = 0; i < sl.n; i++)
        if (strstr(sl.v[i].spec_json, "SECRET-ONE"))
            leak = true;
    ok(!leak && sl.n > 0, "spec list holds no secret value");
    kiln_store_spec_list_release(&sl);
    is_int(kiln_store_secret_delete(st, "other", NULL), 0, "delete secret");
    is_int(code(kiln_store_secret_delete(st, "other", &e), &e), KILN_ENOTFOUND, "delete again");

    char *s = NULL;
    is_int(kiln_store_setting_get(st, KILN_STORE_SETTING_ADMIN_TOKEN, &s, NULL), 0,
           "unset setting");
    ok(s == NULL, "no value");
    is_int(kiln_store_setting_set(st, KILN_STORE_SETTING_ADMIN_TOKEN, "abc", NULL), 0, "set");
    is_int(kiln_store_setting_set(st, KILN_STORE_SETTING_ADMIN_TOKEN, "def", NULL), 0, "reset");
    is_int(kiln_store_setting_get(st, KILN_STORE_SETTING_ADMIN_TOKEN, &s, NULL), 1, "get");
    is_str(s, "def", "value");
    free(s);
    s = NULL;
    is_int(kiln_store_setting_set(st, KILN_STORE_SETTING_ADMIN_TOKEN, NULL, NULL), 0, "delete");
    is_int(kiln_store_setting_get(st, KILN_STORE_SETTING_ADMIN_TOKEN, &s, NULL), 0, "deleted");
    is_int(code(kiln_store_setting_set(st, "", "x", &e), &e), KILN_EINVAL, "empty key");
}

/* ---- claims from 4 threads ---- */

#define CLAIM_SPECS   50
#define CLAIM_PER     4
#define CLAIM_JOBS    (CLAIM_SPECS * CLAIM_PER)
#define CLAIM_THREADS 4

struct claim_ctx {
    struct kiln_store *st[2];
    pthread_mutex_t lock;
    int64_t first_id;
    int claimed[CLAIM_JOBS];
    int running[CLAIM_SPECS];
    int max_running;
    int done;
    int errors;
    int reads;
};

struct claim_arg {
    struct claim_ctx *ctx;
    int n;
};

static int spec_index(const char *name)
{
    /* "claim-NN" */
    return (int)strtol(name + 6, NULL, 10);
}

static void *claimer(void *p)
{
    struct claim_arg *a = p;
    struct claim_ctx *ctx = a->ctx;
    struct kiln_store *st = ctx->st[a->n % 2];
    _cleanup_free_ char *worker = kiln_xasprintf("worker-%d", a->n);
    for (;;) {
        pthread_mutex_lock(&ctx->lock);
        bool finished = ctx->done >= CLAIM_JOBS || ctx->errors > 0;
        pthread_mutex_unlock(&ctx->lock);
        if (finished)
            break;
        struct kiln_store_job j = {0};
        struct kiln_error *e = NULL;
        int r = kiln_store_job_claim(st, worker, &j, &e);
        if (r < 0) {
            printf("#   claim: %s\n", e ? e->msg : "?");
            kiln_error_free(e);
            pthread_mutex_lock(&ctx->lock);
            ctx->errors++;
            pthread_mutex_unlock(&ctx->lock);
            break;
        }
        if (r == 0) {
            struct timespec ts = {0, 200000};
            nanosleep(&ts, NULL);
            continue;
        }
        int k = spec_index(j.spec_name);
        pthread_mutex_lock(&ctx->lock);
        ctx->claimed[j.id - ctx->first_id]++;
        if (++ctx->running[k] > ctx->max_running)
            ctx->max_running = ctx->running[k];
        pthread_mutex_unlock(&ctx->lock);
        /* "Build" a moment, then give the spec back before finishing. */
        if (kiln_store_job_cancel_requested(st, j.id, NULL) != 0)
            ctx->errors++;
        pthread_mutex_lock(&ctx->lock);
        ctx->running[k]--;
        pthread_mutex_unlock(&ctx->lock);
        _cleanup_free_ char *url = kiln_xasprintf("r/%s:%lld", j.spec_name, (long long)j.id);
        r = kiln_store_job_finish(st, j.id, KILN_JOB_SUCCEEDED, "sha256:00", url, NULL, &e);
        pthread_mutex_lock(&ctx->lock);
        if (r < 0) {
            printf("#   finish: %s\n", e ? e->msg : "?");
            ctx->errors++;
        }
        ctx->done++;
        pthread_mutex_unlock(&ctx->lock);
        kiln_error_free(e);
        kiln_store_job_release(&j);
    }
    return NULL;
}

/* An HTTP-like thread: lists, gets and counts while the workers claim. */
static void *reader(void *p)
{
    struct claim_ctx *ctx = p;
    for (int i = 0;; i++) {
        pthread_mutex_lock(&ctx->lock);
        bool finished = ctx->done >= CLAIM_JOBS || ctx->errors > 0;
        pthread_mutex_unlock(&ctx->lock);
        if (finished)
            break;
        struct kiln_store_spec_query q = {.order = (enum kiln_store_spec_order)(i % 3),
                                          .name_contains = "claim"};
        struct kiln_store_spec_list l = {0};
        int64_t counts[KILN_JOB_PHASES];
        struct kiln_store_spec s = {0};
        struct kiln_error *e = NULL;
        int r = kiln_store_spec_list(ctx->st[i % 2], &q, &l, &e);
        if (r >= 0)
            r = kiln_store_job_counts(ctx->st[0], counts, &e);
        if (r >= 0)
            r = kiln_store_spec_get(ctx->st[1], "claim-07", &s, &e);
        if (r >= 0 && (l.total != CLAIM_SPECS || counts[KILN_JOB_RUNNING] > CLAIM_SPECS))
            r = -1;
        pthread_mutex_lock(&ctx->lock);
        ctx->reads++;
        if (r < 0) {
            printf("#   reader: %s\n", e ? e->msg : "bad totals");
            ctx->errors++;
        }
        pthread_mutex_unlock(&ctx->lock);
        kiln_error_free(e);
        kiln_store_spec_release(&s);
        kiln_store_spec_list_release(&l);
    }
    return NULL;
}

static void test_claims(void)
{
    _cleanup_free_ char *path = db_path("claims.db");
    struct claim_ctx ctx = {0};
    pthread_mutex_init(&ctx.lock, NULL);
    ctx.st[0] = open_store(path, 3);
    ctx.st[1] = open_store(path, 2);
    ok(ctx.st[0] && ctx.st[1], "two stores on one file");
    if (!ctx.st[0] || !ctx.st[1])
        return;
    for (int i = 0; i < CLAIM_SPECS; i++) {
        char name[32];
        snprintf(name, sizeof(name), "claim-%02d", i);
        put(ctx.st[0], name, "debian:12", NULL, NULL, KILN_STORE_PUT_CREATE, NULL);
    }
    int made = 0;
    for (int k = 0; k < CLAIM_PER; k++)
        for (int i = 0; i < CLAIM_SPECS; i++) {
            char name[32];
            snprintf(name, sizeof(name), "claim-%02d", i);
            int64_t id = 0;
            if (kiln_store_job_create(ctx.st[0], name, NULL, "r/x", &id, NULL) == 0)
                made++;
            if (made == 1)
                ctx.first_id = id;
        }
    is_int(made, CLAIM_JOBS, "%d jobs created", CLAIM_JOBS);

    pthread_t th[CLAIM_THREADS + 1];
    struct claim_arg args[CLAIM_THREADS];
    for (int i = 0; i < CLAIM_THREADS; i++) {
        args[i] = (struct claim_arg){&ctx, i};
        pthread_create(&th[i], NULL, claimer, &args[i]);
    }
    pthread_create(&th[CLAIM_THREADS], NULL, reader, &ctx);
    for (int i = 0; i <= CLAIM_THREADS; i++)
        pthread_join(th[i], NULL);

    is_int(ctx.errors, 0, "no errors in the threads");
    is_int(ctx.done, CLAIM_JOBS, "every job done");
    int once = 0;
    for (int i = 0; i < CLAIM_JOBS; i++)
        once += ctx.claimed[i] == 1;
    is_int(once, CLAIM_JOBS, "each job claimed exactly once");
    ok(ctx.max_running == 1, "at most one Running job per spec (max %d)", ctx.max_running);
    printf("# %d concurrent reads\n", ctx.reads);
    int64_t counts[KILN_JOB_PHASES] = {0};
    kiln_store_job_counts(ctx.st[1], counts, NULL);
    is_int(counts[KILN_JOB_SUCCEEDED], CLAIM_JOBS, "all Succeeded");
    struct kiln_store_image_list il = {0};
    kiln_store_image_list(ctx.st[0], &il, NULL);
    is_int(il.n, CLAIM_JOBS, "one built image per job");
    kiln_store_image_list_release(&il);
    is_int(raw_int(path, "SELECT COUNT(*) FROM jobs WHERE attempt != 1"), 0,
           "every job has attempt 1");
    is_int(latest_mismatches(path), 0, "every spec's latest job is right");
    kiln_store_free(ctx.st[0]);
    kiln_store_free(ctx.st[1]);
    pthread_mutex_destroy(&ctx.lock);
}

/* ---- kill -9 while writing ---- */

static void test_crash(void)
{
    _cleanup_free_ char *path = db_path("crash.db");
    struct kiln_store *st = open_store(path, 1);
    ok(st != NULL, "crash db created");
    kiln_store_free(st);
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        /* The child writes until it is killed. */
        struct kiln_store *cs = open_store(path, 2);
        if (!cs)
            _exit(2);
        for (unsigned i = 0;; i++) {
            char name[32];
            snprintf(name, sizeof(name), "crash-%u", i % 500);
            int64_t id = 0;
            put(cs, name, "debian:12", i % 2 ? "curl" : "git", NULL, KILN_STORE_PUT_UPSERT, NULL);
            kiln_store_job_create(cs, name, NULL, "r/crash", &id, NULL);
            struct kiln_store_job j = {0};
            if (kiln_store_job_claim(cs, "child", &j, NULL) == 1) {
                kiln_store_job_finish(cs, j.id, KILN_JOB_SUCCEEDED, "sha256:0", NULL, NULL, NULL);
                kiln_store_job_release(&j);
            }
            if (i % 50 == 49)
                kiln_store_spec_delete(cs, name, NULL);
            kiln_store_secret_put(cs, "s", name, NULL);
        }
    }
    ok(pid > 0, "fork");
    if (pid < 0)
        return;
    /* Let it get going, then kill it in the middle of something. */
    for (int i = 0; i < 200 && raw_int(path, "SELECT COUNT(*) FROM jobs") < 300; i++) {
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    struct timespec ts = {0, 7 * 1000 * 1000};
    nanosleep(&ts, NULL);
    kill(pid, SIGKILL);
    int status = 0;
    waitpid(pid, &status, 0);
    ok(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL, "child killed by SIGKILL");

    st = open_store(path, 2);
    ok(st != NULL, "re-open after kill -9");
    if (!st)
        return;
    struct kiln_error *e = NULL;
    int r = kiln_store_check(st, &e);
    ok(r == 0, "store integrity check ok %s", e ? e->msg : "");
    kiln_error_free(e);
    if (!pg_url) {
        _cleanup_free_ char *ic = raw_text(path, "PRAGMA integrity_check");
        is_str(ic, "ok", "PRAGMA integrity_check");
        is_int(raw_int(path, "PRAGMA foreign_key_check"), -1, "no dangling foreign keys");
    }
    is_int(latest_mismatches(path), 0, "every spec's latest job is right");
    int64_t jobs = raw_int(path, "SELECT COUNT(*) FROM jobs");
    printf("# %lld jobs written before the kill\n", (long long)jobs);
    ok(jobs > 0, "the child wrote jobs");
    r = kiln_store_recover(st, INT64_MAX, false, NULL);
    ok(r == 0 || r == 1, "recover after the crash: %d", r);
    struct kiln_store_spec_list l = {0};
    is_int(kiln_store_spec_list(st, NULL, &l, NULL), 0, "list works");
    kiln_store_spec_list_release(&l);
    is_int(put(st, "after", "debian:12", NULL, NULL, KILN_STORE_PUT_CREATE, NULL), 7,
           "writes work");
    kiln_store_free(st);
}

/* ---- leases between kiln_jobs instances ---- */

static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;
static struct kiln_buf log_seen = KILN_BUF_INIT;

static void log_capture(enum kiln_log_level level, const char *msg, void *userdata)
{
    pthread_mutex_lock(&log_mu);
    kiln_buf_addf(&log_seen, "%s\n", msg);
    pthread_mutex_unlock(&log_mu);
}

static bool log_has(const char *s)
{
    pthread_mutex_lock(&log_mu);
    bool found = log_seen.buf && strstr(log_seen.buf, s);
    pthread_mutex_unlock(&log_mu);
    return found;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* A store on the real clock: the workers compare leases with it. */
static struct kiln_store *open_store_realtime(const char *path)
{
    struct kiln_store_options o = {.connections = 4};
    struct kiln_store *st = NULL;
    struct kiln_error *e = NULL;
    int r =
        pg_url ? kiln_store_open(pg_url, &o, &st, &e) : kiln_store_open_sqlite(path, &o, &st, &e);
    if (r < 0) {
        printf("# open: %s\n", e ? e->msg : "?");
        kiln_error_free(e);
        return NULL;
    }
    return st;
}

/* A port on 127.0.0.1 that takes connections and never answers: a registry that hangs. */
static int hang_listener(int *ret_port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(fd, 16) < 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) < 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    *ret_port = ntohs(a.sin_port);
    return fd;
}

/* Wait up to `ms` for job `id` to be in `phase`. */
static bool wait_phase(struct kiln_store *st, int64_t id, enum kiln_job_phase phase, long ms)
{
    for (long t = 0; t <= ms; t += 20) {
        struct kiln_store_job j = {0};
        bool done = kiln_store_job_get(st, id, &j, NULL) == 0 && j.phase == phase;
        kiln_store_job_release(&j);
        if (done)
            return true;
        sleep_ms(20);
    }
    return false;
}

static bool wait_idle(struct kiln_jobs *jobs, long ms)
{
    for (long t = 0; t <= ms; t += 20) {
        struct kiln_jobs_stats stats;
        kiln_jobs_stats(jobs, &stats);
        if (stats.running == 0)
            return true;
        sleep_ms(20);
    }
    return false;
}

/*
 * Two kiln_jobs on one store: A builds a job (its base image on a registry
 * that never answers) and renews its lease rarely; B, with a short lease,
 * finds A's lease expired and recovers the job; A's next renewal returns 0,
 * so A stops the build and leaves the job as B left it.
 */
static void test_jobs_leases(void)
{
    pg_reset();
    _cleanup_free_ char *path = db_path("lease.db");
    _cleanup_free_ char *dir_a = db_path("jobs-a");
    _cleanup_free_ char *dir_b = db_path("jobs-b");
    struct kiln_store *st = open_store_realtime(path);
    ok(st != NULL, "leases: store on the real clock");
    int port = 0;
    int lfd = hang_listener(&port);
    ok(lfd >= 0, "leases: a registry that never answers on port %d", port);
    if (!st || lfd < 0) {
        kiln_store_free(st);
        return;
    }
    _cleanup_free_ char *base = kiln_xasprintf("127.0.0.1:%d/kiln/hang:1", port);
    _cleanup_free_ char *target = kiln_xasprintf("127.0.0.1:%d/kiln/out:1", port);
    put(st, "hang", base, NULL, NULL, KILN_STORE_PUT_CREATE, NULL);
    int64_t id = 0;
    kiln_store_job_create(st, "hang", NULL, target, &id, NULL);

    struct kiln_error *e = NULL;
    struct kiln_jobs_options ao = {.store = st,
                                   .data_dir = dir_a,
                                   .workers = 1,
                                   .worker_name = "alpha",
                                   .registry = {.configured = true},
                                   .beat_ms = 2500,
                                   .lease_ms = 60000};
    struct kiln_jobs *ja = NULL, *jb = NULL;
    is_int(kiln_jobs_start(&ao, &ja, &e), 0, "leases: A starts %s", e ? e->msg : "");
    kiln_error_free(TAKE_PTR(e));
    ok(wait_phase(st, id, KILN_JOB_RUNNING, 10000), "leases: A claims the job");
    ok(job_is(st, id, KILN_JOB_RUNNING, "alpha"), "leases: Running under alpha");

    /* B claims nothing (no registry); its lease is 1 s, A renews every 2.5 s. */
    struct kiln_jobs_options bo = {.store = st,
                                   .data_dir = dir_b,
                                   .workers = 1,
                                   .worker_name = "beta",
                                   .beat_ms = 100,
                                   .lease_ms = 1000};
    is_int(kiln_jobs_start(&bo, &jb, &e), 0, "leases: B starts %s", e ? e->msg : "");
    kiln_error_free(TAKE_PTR(e));
    ok(job_is(st, id, KILN_JOB_RUNNING, "alpha"), "leases: A's fresh lease is not recovered");
    ok(wait_phase(st, id, KILN_JOB_FAILED, 10000), "leases: B recovers it once the lease expired");
    struct kiln_store_job j = {0};
    kiln_store_job_get(st, id, &j, NULL);
    is_str(j.error_message, "interrupted", "leases: Failed 'interrupted'");
    int64_t finished = j.finished_ms;
    kiln_store_job_release(&j);
    ok(log_has("whose lease expired"), "leases: B says so");

    ok(wait_idle(ja, 15000), "leases: A finds the job lost and stops the build");
    ok(log_has("no longer Running on alpha"), "leases: A says so");
    kiln_store_job_get(st, id, &j, NULL);
    ok(j.phase == KILN_JOB_FAILED && j.finished_ms == finished && j.error_message &&
           strcmp(j.error_message, "interrupted") == 0,
       "leases: A left the job as B made it (%s, %s)", kiln_job_phase_name(j.phase),
       j.error_message ? j.error_message : "");
    kiln_store_job_release(&j);

    kiln_jobs_stop(jb, 0);
    kiln_jobs_stop(ja, 0);
    close(lfd);
    kiln_store_free(st);
    kiln_fs_rm_rf_at(AT_FDCWD, dir_a, NULL);
    kiln_fs_rm_rf_at(AT_FDCWD, dir_b, NULL);
}

/*
 * At start, the jobs of dead processes of this host are recovered at once,
 * and those of live processes (or other hosts) only when their lease expired.
 */
static void test_jobs_dead_local(void)
{
    pg_reset();
    _cleanup_free_ char *path = db_path("dead.db");
    _cleanup_free_ char *dir = db_path("jobs-c");
    struct kiln_store *st = open_store_realtime(path);
    ok(st != NULL, "dead: store");
    if (!st)
        return;
    fflush(stdout);
    pid_t dead = fork();
    if (dead == 0)
        _exit(0);
    waitpid(dead, NULL, 0);
    long self = (long)getpid();
    _cleanup_free_ char *w_dead = kiln_xasprintf("testhost-%ld/2", (long)dead);
    _cleanup_free_ char *w_self = kiln_xasprintf("testhost-%ld", self);
    _cleanup_free_ char *w_other = kiln_xasprintf("otherhost-%ld", (long)dead);
    _cleanup_free_ char *w_bad = kiln_xasprintf("testhost-%ldx", (long)dead);
    int64_t d1 = claim_new(st, "dead1", w_dead);
    int64_t d2 = claim_new(st, "dead2", w_self);
    int64_t d3 = claim_new(st, "dead3", "testhost-1"); /* init: alive */
    int64_t d4 = claim_new(st, "dead4", w_other);
    int64_t d5 = claim_new(st, "dead5", "ghost");
    int64_t d6 = claim_new(st, "dead6", w_bad);
    int64_t d7 = claim_new(st, "dead7", "fresh");
    ok(d1 && d2 && d3 && d4 && d5 && d6 && d7, "dead: seven jobs claimed");
    /* ghost's lease expired two minutes ago */
    _cleanup_free_ char *sql = kiln_xasprintf(
        "UPDATE jobs SET heartbeat_ms = heartbeat_ms - 120000 WHERE id = %lld", (long long)d5);
    is_int(raw_exec(path, sql), SQLITE_OK, "dead: ghost's heartbeat is old");

    struct kiln_jobs_options o = {.store = st,
                                  .data_dir = dir,
                                  .workers = 2,
                                  .worker_name = w_self,
                                  .requeue_interrupted = true};
    struct kiln_jobs *jc = NULL;
    struct kiln_error *e = NULL;
    is_int(kiln_jobs_start(&o, &jc, &e), 0, "dead: start as %s %s", w_self, e ? e->msg : "");
    kiln_error_free(e);
    ok(job_is(st, d1, KILN_JOB_PENDING, NULL), "dead: a dead process's job is requeued");
    ok(job_is(st, d2, KILN_JOB_PENDING, NULL), "dead: our own pid's (a previous life) too");
    ok(job_is(st, d3, KILN_JOB_RUNNING, "testhost-1"), "dead: a live process's is kept");
    ok(job_is(st, d4, KILN_JOB_RUNNING, w_other), "dead: another host's is kept");
    ok(job_is(st, d5, KILN_JOB_PENDING, NULL), "dead: an expired lease is recovered");
    ok(job_is(st, d6, KILN_JOB_RUNNING, w_bad), "dead: a name that is not host-pid is kept");
    ok(job_is(st, d7, KILN_JOB_RUNNING, "fresh"), "dead: a fresh lease is kept");
    ok(log_has("left running by a stopped kiln: queued again"), "dead: said");
    kiln_jobs_stop(jc, 0);

    struct kiln_jobs_options bad = {
        .store = st, .data_dir = dir, .beat_ms = 5000, .lease_ms = 5000};
    e = NULL;
    is_int(code(kiln_jobs_start(&bad, &jc, &e), &e), KILN_EINVAL, "dead: beat_ms >= lease_ms");
    bad.beat_ms = -1;
    is_int(code(kiln_jobs_start(&bad, &jc, &e), &e), KILN_EINVAL, "dead: negative beat_ms");
    kiln_store_free(st);
    kiln_fs_rm_rf_at(AT_FDCWD, dir, NULL);
}

/* A worker keeps the log of a job it finished in the store (here: a base image that cannot be
 * pulled). */
static void test_jobs_log_stored(void)
{
    pg_reset();
    _cleanup_free_ char *path = db_path("joblog.db");
    _cleanup_free_ char *dir = db_path("jobs-log");
    struct kiln_store *st = open_store_realtime(path);
    ok(st != NULL, "job log: store");
    if (!st)
        return;
    /* a port nobody listens on: the pull fails at once */
    int port = 0;
    int lfd = hang_listener(&port);
    if (lfd >= 0)
        close(lfd);
    _cleanup_free_ char *base = kiln_xasprintf("127.0.0.1:%d/kiln/none:1", port);
    _cleanup_free_ char *target = kiln_xasprintf("127.0.0.1:%d/kiln/out:1", port);
    put(st, "joblog", base, NULL, NULL, KILN_STORE_PUT_CREATE, NULL);
    int64_t id = 0;
    kiln_store_job_create(st, "joblog", NULL, target, &id, NULL);
    struct kiln_jobs_options o = {.store = st,
                                  .data_dir = dir,
                                  .workers = 1,
                                  .worker_name = "logger",
                                  .registry = {.configured = true}};
    struct kiln_jobs *jl = NULL;
    struct kiln_error *e = NULL;
    is_int(kiln_jobs_start(&o, &jl, &e), 0, "job log: start %s", e ? e->msg : "");
    kiln_error_freep(&e);
    ok(wait_phase(st, id, KILN_JOB_FAILED, 30000), "job log: the job fails");
    char *log = NULL;
    size_t len = 0;
    bool trunc = true;
    int r = -1;
    for (int i = 0; i < 250 && r < 0; i++) {
        r = kiln_store_job_log_get(st, id, &log, &len, &trunc, NULL);
        if (r < 0)
            sleep_ms(20);
    }
    is_int(r, 0, "job log: its log is in the store");
    _cleanup_free_ char *want = kiln_xasprintf("job %lld: Failed after", (long long)id);
    ok(log && strstr(log, "building spec 'joblog'") && strstr(log, want) && !trunc,
       "job log: the whole log, to the end (%zu bytes)", len);
    _cleanup_free_ char *file = kiln_jobs_log_path(dir, id);
    struct kiln_buf disk = KILN_BUF_INIT;
    int fd = open(file, O_RDONLY | O_CLOEXEC);
    char chunk[4096];
    ssize_t n;
    while (fd >= 0 && (n = read(fd, chunk, sizeof(chunk))) > 0)
        kiln_buf_add(&disk, chunk, (size_t)n);
    if (fd >= 0)
        close(fd);
    ok(disk.len == len && log && memcmp(disk.buf, log, len) == 0, "job log: the same as the file");
    kiln_buf_release(&disk);
    free(log);
    kiln_jobs_stop(jl, 0);
    kiln_store_free(st);
    kiln_fs_rm_rf_at(AT_FDCWD, dir, NULL);
}

/*
 * A running job's log is kept live in the store by the supervisor (its base
 * image on a registry that never answers, so it runs until cancelled); the
 * final copy replaces the live one when the job ends.
 */
static void test_jobs_live_log(void)
{
    pg_reset();
    _cleanup_free_ char *path = db_path("livejob.db");
    _cleanup_free_ char *dir = db_path("jobs-live");
    struct kiln_store *st = open_store_realtime(path);
    int port = 0;
    int lfd = hang_listener(&port);
    ok(st != NULL && lfd >= 0, "live job: store, and a registry that never answers");
    if (!st || lfd < 0) {
        kiln_store_free(st);
        if (lfd >= 0)
            close(lfd);
        return;
    }
    _cleanup_free_ char *base = kiln_xasprintf("127.0.0.1:%d/kiln/hang:1", port);
    _cleanup_free_ char *target = kiln_xasprintf("127.0.0.1:%d/kiln/out:1", port);
    put(st, "livejob", base, NULL, NULL, KILN_STORE_PUT_CREATE, NULL);
    int64_t id = 0;
    kiln_store_job_create(st, "livejob", NULL, target, &id, NULL);
    struct kiln_jobs_options o = {.store = st,
                                  .data_dir = dir,
                                  .workers = 1,
                                  .worker_name = "livehost-1",
                                  .registry = {.configured = true}};
    struct kiln_jobs *jl = NULL;
    struct kiln_error *e = NULL;
    is_int(kiln_jobs_start(&o, &jl, &e), 0, "live job: start %s", e ? e->msg : "");
    kiln_error_freep(&e);
    ok(wait_phase(st, id, KILN_JOB_RUNNING, 10000), "live job: Running");

    /* a live copy comes within a sync or two */
    struct kiln_store_job_log l = {0};
    bool live = false;
    for (int i = 0; i < 300 && !live; i++) {
        if (kiln_store_job_log_read(st, id, &l, NULL) == 0)
            live = !l.final && l.start_offset == 0 && strstr(l.data, "building spec 'livejob'");
        kiln_store_job_log_release(&l);
        if (!live)
            sleep_ms(20);
    }
    ok(live, "live job: a live copy of its log while it runs");
    /* the log grows: the next copy has it */
    _cleanup_free_ char *file = kiln_jobs_log_path(dir, id);
    int fd = open(file, O_WRONLY | O_APPEND | O_CLOEXEC);
    kiln_fs_write_all(fd, "2026-11-25T10:00:00Z | a line written later\n", 44);
    close(fd);
    bool grown = false;
    for (int i = 0; i < 300 && !grown; i++) {
        if (kiln_store_job_log_read(st, id, &l, NULL) == 0)
            grown = !l.final && strstr(l.data, "a line written later");
        kiln_store_job_log_release(&l);
        if (!grown)
            sleep_ms(20);
    }
    ok(grown, "live job: the next copy has what was written since");

    is_int(kiln_jobs_cancel(jl, st, id, NULL), KILN_STORE_CANCEL_REQUESTED, "live job: cancel");
    ok(wait_phase(st, id, KILN_JOB_CANCELLED, 15000), "live job: Cancelled");
    bool final = false;
    for (int i = 0; i < 250 && !final; i++) {
        if (kiln_store_job_log_read(st, id, &l, NULL) == 0)
            final = l.final && strstr(l.data, "a line written later") &&
                    strstr(l.data, ": Cancelled after");
        kiln_store_job_log_release(&l);
        if (!final)
            sleep_ms(20);
    }
    ok(final, "live job: then the final copy, to the end");
    ok(!log_has("cannot keep a live copy"), "live job: no warning");
    kiln_jobs_stop(jl, 0);
    close(lfd);
    kiln_store_free(st);
    kiln_fs_rm_rf_at(AT_FDCWD, dir, NULL);
}

/*
 * No workers (an API-only kiln serve): nothing is claimed (the registry is
 * configured, so a worker would claim at once) and DATA/logs is not made;
 * a cancel of a job Running elsewhere is asked of the store; the supervisor
 * still recovers the job of a worker whose lease expired; stop is quick.
 */
static void test_jobs_no_workers(void)
{
    pg_reset();
    _cleanup_free_ char *path = db_path("noworkers.db");
    _cleanup_free_ char *dir = db_path("jobs-none");
    _cleanup_free_ char *logs = db_path("jobs-none/logs");
    struct kiln_store *st = open_store_realtime(path);
    ok(st != NULL, "no workers: store");
    if (!st)
        return;
    kiln_fs_mkdir_p_path(dir, 0700, NULL, NULL);
    pthread_mutex_lock(&log_mu);
    kiln_buf_release(&log_seen);
    pthread_mutex_unlock(&log_mu);

    struct kiln_error *e = NULL;
    struct kiln_jobs *jn = NULL;
    struct kiln_jobs_options bad = {.store = st,
                                    .data_dir = dir,
                                    .workers = 2,
                                    .no_workers = true,
                                    .registry = {.configured = true}};
    is_int(code(kiln_jobs_start(&bad, &jn, &e), &e), KILN_EINVAL,
           "no workers: with workers 2 too is EINVAL");
    ok(jn == NULL, "no workers: nothing returned then");

    /* a job another worker ("remote-1") runs and keeps renewing, one whose worker is gone
     * ("ghost-1": its lease runs out), and one Pending */
    int64_t remote = claim_new(st, "nw-remote", "remote-1");
    int64_t ghost = claim_new(st, "nw-ghost", "ghost-1");
    put(st, "nw-pending", "debian:12", NULL, NULL, KILN_STORE_PUT_CREATE, NULL);
    int64_t pending = 0;
    kiln_store_job_create(st, "nw-pending", NULL, "r/none", &pending, NULL);
    ok(remote && ghost && pending, "no workers: two jobs Running elsewhere, one Pending");

    struct kiln_jobs_options o = {.store = st,
                                  .data_dir = dir,
                                  .no_workers = true,
                                  .worker_name = "apihost-1",
                                  .registry = {.configured = true},
                                  .beat_ms = 100,
                                  .lease_ms = 1000};
    is_int(kiln_jobs_start(&o, &jn, &e), 0, "no workers: start %s", e ? e->msg : "");
    kiln_error_freep(&e);
    if (!jn) {
        kiln_store_free(st);
        return;
    }
    kiln_jobs_wake(jn);
    bool claimed = false;
    for (int i = 0; i < 40 && !claimed; i++) {
        /* renew remote-1's lease as its own supervisor would */
        kiln_store_job_heartbeat(st, remote, "remote-1", NULL);
        claimed = !job_is(st, pending, KILN_JOB_PENDING, NULL);
        sleep_ms(50);
    }
    ok(!claimed, "no workers: the Pending job stays Pending for 2 s, woken or not");
    struct stat sb;
    ok(stat(logs, &sb) < 0 && errno == ENOENT, "no workers: no log directory made");
    struct kiln_jobs_stats stats;
    kiln_jobs_stats(jn, &stats);
    is_int(stats.running, 0, "no workers: nothing running here");

    is_int(kiln_jobs_cancel(jn, st, remote, NULL), KILN_STORE_CANCEL_REQUESTED,
           "no workers: cancel of a job Running elsewhere is requested");
    is_int(kiln_store_job_cancel_requested(st, remote, NULL), 1,
           "no workers: its worker finds the flag in the store");
    ok(job_is(st, remote, KILN_JOB_RUNNING, "remote-1"),
       "no workers: the job stays with its worker (it is renewed)");
    is_int(kiln_jobs_cancel(jn, st, pending, NULL), KILN_STORE_CANCELLED_NOW,
           "no workers: cancel of a Pending job is at once");

    ok(wait_phase(st, ghost, KILN_JOB_FAILED, 5000),
       "no workers: the sweep recovers a job whose lease expired");
    ok(log_has("1 job whose lease expired"), "no workers: said");

    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    kiln_jobs_stop(jn, 30000);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
    ok(ms < 1000, "no workers: stop returns at once (%.0f ms, grace 30 s)", ms);
    kiln_store_free(st);
    kiln_fs_rm_rf_at(AT_FDCWD, dir, NULL);
}

/* ---- 10,000 specs, 100,000 jobs: time list pages ---- */

static double ms_since(const struct timespec *t0)
{
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    return (double)(t1.tv_sec - t0->tv_sec) * 1e3 + (double)(t1.tv_nsec - t0->tv_nsec) / 1e6;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* A realistic short-form spec: about 400 bytes. */
#define BENCH_JSON                                                                                 \
    "{\"name\":\"x\",\"description\":\"a data science environment for the team\","                 \
    "\"baseImage\":\"registry.example.com/base/jupyter-notebook:2024.06\",\"pullSecret\":"         \
    "\"registry\",\"packages\":{\"apt\":[\"curl\",\"git\",\"vim\",\"build-essential\"],"           \
    "\"conda\":[\"numpy=1.26\",\"pandas\"],\"pip\":[\"requests>=2.31\",\"scikit-learn==1.4.2\","   \
    "\"matplotlib\",\"seaborn\",\"torch==2.3.0\"]}}"

/* Fill through a raw connection in one transaction: this times the query, not the fill. */
static bool fill(const char *path, int nspecs, int per)
{
    static const char *const phases[] = {"Succeeded", "Failed", "Running", "Pending", "Cancelled"};
    sqlite3 *db = NULL;
    sqlite3_stmt *ins_s = NULL, *ins_j = NULL;
    bool good = sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL) == SQLITE_OK &&
                sqlite3_exec(db, "BEGIN", NULL, NULL, NULL) == SQLITE_OK &&
                sqlite3_prepare_v2(db,
                                   "INSERT INTO specs (name, spec_json, revision, created_ms, "
                                   "updated_ms) VALUES (?1, '" BENCH_JSON "', 'abcdef01', ?2, ?2)",
                                   -1, &ins_s, NULL) == SQLITE_OK &&
                sqlite3_prepare_v2(db,
                                   "INSERT INTO jobs (spec_name, revision, spec_json, target_image,"
                                   " phase, created_ms, image_url, log_path) VALUES (?1, "
                                   "'abcdef01', '" BENCH_JSON "', ?4, ?2, ?3, ?4, "
                                   "'/var/lib/kiln/logs/0000000.log')",
                                   -1, &ins_j, NULL) == SQLITE_OK;
    unsigned seed = 12345;
    for (int i = 0; good && i < nspecs; i++) {
        char name[32];
        /* Not inserted in name order. */
        snprintf(name, sizeof(name), "spec-%05d", (i * 7919) % nspecs);
        sqlite3_bind_text(ins_s, 1, name, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int64(ins_s, 2, 1700000000000LL + i);
        good = sqlite3_step(ins_s) == SQLITE_DONE;
        sqlite3_reset(ins_s);
    }
    /* Jobs interleaved across specs, as they arrive in real life. */
    for (int k = 0; good && k < per; k++)
        for (int i = 0; good && i < nspecs; i++) {
            char name[32], url[80];
            snprintf(name, sizeof(name), "spec-%05d", i);
            snprintf(url, sizeof(url), "registry.example.com/kiln/%s:abcdef01", name);
            seed = seed * 1103515245u + 12345u;
            const char *ph = k + 1 < per ? "Succeeded" : phases[(seed >> 16) % 5];
            sqlite3_bind_text(ins_j, 1, name, -1, SQLITE_TRANSIENT);
            sqlite3_bind_text(ins_j, 2, ph, -1, SQLITE_STATIC);
            sqlite3_bind_int64(ins_j, 3, 1700000000000LL + k * nspecs + i);
            sqlite3_bind_text(ins_j, 4, url, -1, SQLITE_TRANSIENT);
            good = sqlite3_step(ins_j) == SQLITE_DONE;
            sqlite3_reset(ins_j);
        }
    sqlite3_finalize(ins_s);
    sqlite3_finalize(ins_j);
    good = good && sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) == SQLITE_OK;
    sqlite3_close(db);
    return good;
}

static void test_bench(void)
{
    int nspecs = 10000, per = 10;
    _cleanup_free_ char *path = db_path("bench.db");
    struct kiln_store *st = open_store(path, 2);
    ok(st != NULL, "bench db");
    if (!st)
        return;
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    ok(fill(path, nspecs, per), "fill %d specs, %d jobs", nspecs, nspecs * per);
    printf("# fill: %.0f ms\n", ms_since(&t0));
    is_int(latest_mismatches(path), 0, "every spec's latest job is right after the fill");

    static const struct {
        const char *label;
        struct kiln_store_spec_query q;
    } cases[] = {
        {"name, page 1", {.order = KILN_STORE_ORDER_NAME}},
        {"name, page 100", {.order = KILN_STORE_ORDER_NAME, .offset = 4950}},
        {"updated desc, page 1", {.order = KILN_STORE_ORDER_UPDATED, .descending = true}},
        {"status, page 1", {.order = KILN_STORE_ORDER_STATUS}},
        {"status desc, page 50",
         {.order = KILN_STORE_ORDER_STATUS, .descending = true, .offset = 2450}},
        {"name contains '12', page 1", {.name_contains = "12"}},
    };
    for (size_t c = 0; c < KILN_ARRAY_SIZE(cases); c++) {
        double t[50];
        bool good = true;
        for (int i = 0; i < 50; i++) {
            struct kiln_store_spec_list l = {0};
            clock_gettime(CLOCK_MONOTONIC, &t0);
            int r = kiln_store_spec_list(st, &cases[c].q, &l, NULL);
            t[i] = ms_since(&t0);
            if (r < 0 || l.n == 0 || l.v[0].job_id == 0)
                good = false;
            if (cases[c].q.name_contains == NULL && l.total != nspecs)
                good = false;
            kiln_store_spec_list_release(&l);
        }
        qsort(t, 50, sizeof(t[0]), cmp_double);
        ok(good, "list %s", cases[c].label);
        printf("# list %s (50 rows): p50 %.2f ms, p99 %.2f ms\n", cases[c].label, t[25], t[49]);
    }
    struct kiln_store_spec_list l = {0};
    struct kiln_store_spec_query q = {.order = KILN_STORE_ORDER_NAME};
    kiln_store_spec_list(st, &q, &l, NULL);
    ok(l.n == 50 && strcmp(l.v[0].name, "spec-00000") == 0 &&
           strcmp(l.v[49].name, "spec-00049") == 0 && l.v[0].job_id > (int64_t)(per - 1) * nspecs,
       "first page by name, with the latest job");
    kiln_store_spec_list_release(&l);
    int64_t counts[KILN_JOB_PHASES] = {0};
    clock_gettime(CLOCK_MONOTONIC, &t0);
    kiln_store_job_counts(st, counts, NULL);
    printf("# job counts: %.2f ms\n", ms_since(&t0));
    int64_t sum = 0;
    for (int i = 0; i < KILN_JOB_PHASES; i++)
        sum += counts[i];
    is_int(sum, nspecs * per, "counts of 100,000 jobs");
    struct kiln_store_job j = {0};
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int r = kiln_store_job_claim(st, "bench", &j, NULL);
    printf("# claim among 100,000 jobs: %.2f ms\n", ms_since(&t0));
    is_int(r, 1, "claim in the big store");
    kiln_store_job_release(&j);
    kiln_store_free(st);
}

static void rm_tmpdir(void)
{
    DIR *d = opendir(tmpdir);
    if (!d)
        return;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        _cleanup_free_ char *p = db_path(de->d_name);
        unlink(p);
    }
    closedir(d);
    rmdir(tmpdir);
}

int main(void)
{
    if (!mkdtemp(tmpdir)) {
        printf("Bail out! mkdtemp: %s\n", strerror(errno));
        return 1;
    }
    pg_url = getenv("KILN_TEST_STORE_URL");
    if (pg_url && !*pg_url)
        pg_url = NULL;
    test_pg_urls();
    if (pg_url)
        test_pg_migrations();
    else
        test_migrations();
    test_migrate_v2();
    test_migrate_v3();
    test_migrate_v4();

    pg_reset();
    _cleanup_free_ char *path = db_path("main.db");
    struct kiln_store *st = open_store(path, 0);
    ok(st != NULL, "open main store");
    if (st) {
        test_specs(st);
        test_list(st);
        test_jobs(st);
        test_recover(st);
        test_leases(st);
        test_counts_cascade(st, path);
        test_job_logs(st, path);
        test_live_logs(st, path);
        test_secrets_settings(st);
        is_int(latest_mismatches(path), 0, "every spec's latest job is right");
        /* Jobs deleted by hand (no API does it): the latest goes back one. */
        raw_exec(path, "DELETE FROM jobs WHERE id = (SELECT MAX(id) FROM jobs)");
        is_int(latest_mismatches(path), 0, "latest job right after a job is deleted");
        raw_exec(path, "DELETE FROM jobs WHERE spec_name = 'job1'");
        struct kiln_store_spec sp = {0};
        kiln_store_spec_get(st, "job1", &sp, NULL);
        is_int(sp.job_id, 0, "no latest job after all its jobs are deleted");
        kiln_store_spec_release(&sp);
        is_int(latest_mismatches(path), 0, "latest job right after all of a spec's are deleted");
        kiln_store_free(st);
    }
    kiln_store_free(NULL);
    pg_reset();
    test_claims();
    test_claims_procs();
    pg_reset();
    test_crash();
    if (pg_url)
        test_pg_reconnect();
    kiln_log_set_handler(log_capture, NULL, KILN_LOG_DEBUG);
    test_jobs_leases();
    test_jobs_dead_local();
    test_jobs_log_stored();
    test_jobs_live_log();
    test_jobs_no_workers();
    kiln_log_set_handler(NULL, NULL, KILN_LOG_INFO);
    kiln_buf_release(&log_seen);
    /* Slow under valgrind: KILN_TEST_NO_BENCH=1 skips it. SQLite only (it fills the file). */
    if (!getenv("KILN_TEST_NO_BENCH") && !pg_url)
        test_bench();
    pg_reset();
    rm_tmpdir();
    return tap_done();
}
