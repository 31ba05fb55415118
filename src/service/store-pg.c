#include "util/common.h"
#include "service/store.h"

#include <libpq-fe.h>
#include <limits.h>
#include <pthread.h>

#include "util/log.h"

/*
 * The PostgreSQL backend: the SQLite backend's behaviour (store-sqlite.c)
 * on a server that several processes and hosts share.
 *
 * Connections: a small pool, as in the SQLite backend. A call takes a free
 * connection (waiting when all are busy), uses it alone, and gives it back,
 * so each PGconn is used by one thread at a time. A connection found broken
 * (CONNECTION_BAD) is reset once (PQreset) before use; a statement that
 * fails because the connection broke is run again after one reset when it
 * cannot have changed anything (BEGIN or a SELECT outside a transaction);
 * otherwise the call fails with -KILN_EIO and the next call reconnects.
 *
 * Statements: constant texts run with PQexecParams; values always go as
 * parameters, never into the SQL. Transactions are READ COMMITTED (list
 * pages: REPEATABLE READ READ ONLY, one snapshot for the total and the
 * page), with explicit row locks where SQLite's BEGIN IMMEDIATE serializes:
 * a transaction that writes a job locks the job's spec row first, then the
 * job, so no two transactions wait on each other in opposite orders (the
 * cascade of a spec delete runs in that order too).
 *
 * Latest job: as in the SQLite schema, specs.latest_job_id/latest_phase/
 * latest_rank are kept by triggers on jobs (PL/pgSQL here), so they stay
 * right whatever writes the jobs. The insert trigger only moves the latest
 * job forward (a higher id), which keeps it right when two inserts race.
 *
 * Claims: one statement, UPDATE ... WHERE id = (SELECT ... ORDER BY id
 * LIMIT 1 FOR NO KEY UPDATE OF job, spec SKIP LOCKED) RETURNING ...: the
 * job and its spec row are locked, so two claimers never take the same job
 * nor two jobs of one spec at once; a claimer whose snapshot predates
 * another's commit is stopped by the unique index jobs_one_running (at most
 * one Running job per spec) and tries again. Under contention a claim may
 * pass over a job whose row or spec row another transaction holds for the
 * moment, and take the next one.
 *
 * Leases: a heartbeat is one autocommit UPDATE of the job's row (it locks
 * nothing else and fires no trigger); a recover locks the spec rows of the
 * jobs it takes first, as above. Times are the client's clock, as for every
 * other column: hosts sharing a database need clocks that agree.
 *
 * Migrations: the same versions as the SQLite schema (schema_version), each
 * in a transaction that first takes pg_advisory_xact_lock, so processes
 * starting together migrate one after the other. Names (spec, secret, image
 * URL, setting key) use COLLATE "C": byte order, like SQLite's BINARY, and
 * ASCII-only lower() for the case-insensitive name filter, like SQLite's
 * LIKE.
 *
 * libpq itself may read PG* environment variables and ~/.pgpass for what
 * the connection string leaves out; kiln does not.
 */

#define DEFAULT_CONNECTIONS 4
#define MAX_CONNECTIONS     64
#define CLAIM_TRIES         8
#define PUT_TRIES           4
#define MAX_PARAMS          8
/* pg_advisory_xact_lock key of the migrations: "kiln" in ASCII. */
#define MIGRATE_LOCK_KEY 0x6b696c6eLL

/* ---- schema ---- */

static const char schema_v1[] =
    "CREATE TABLE specs (\n"
    "  name TEXT COLLATE \"C\" NOT NULL PRIMARY KEY,\n"
    "  spec_json TEXT NOT NULL,\n"
    "  revision TEXT NOT NULL,\n"
    "  created_ms BIGINT NOT NULL,\n"
    "  updated_ms BIGINT NOT NULL,\n"
    "  latest_job_id BIGINT,\n"
    "  latest_phase TEXT\n"
    ");\n"
    "CREATE INDEX specs_updated ON specs (updated_ms, name);\n"
    "CREATE INDEX specs_status ON specs (latest_phase, name);\n"
    "CREATE TABLE jobs (\n"
    "  id BIGSERIAL PRIMARY KEY,\n"
    "  spec_name TEXT COLLATE \"C\" NOT NULL REFERENCES specs (name) ON DELETE CASCADE,\n"
    "  revision TEXT NOT NULL,\n"
    "  spec_json TEXT NOT NULL,\n"
    "  target_image TEXT NOT NULL,\n"
    "  phase TEXT NOT NULL DEFAULT 'Pending' CHECK (phase IN\n"
    "    ('Pending', 'Running', 'Succeeded', 'Failed', 'Cancelled', 'Unknown')),\n"
    "  created_ms BIGINT NOT NULL,\n"
    "  started_ms BIGINT,\n"
    "  finished_ms BIGINT,\n"
    "  image_digest TEXT,\n"
    "  image_url TEXT,\n"
    "  error_message TEXT,\n"
    "  worker TEXT,\n"
    "  attempt INTEGER NOT NULL DEFAULT 0,\n"
    "  cancel_requested BOOLEAN NOT NULL DEFAULT FALSE,\n"
    "  log_path TEXT\n"
    ");\n"
    "CREATE INDEX jobs_spec ON jobs (spec_name, id DESC);\n"
    "CREATE INDEX jobs_phase ON jobs (phase, id);\n"
    /* PostgreSQL only: what SQLite's single writer guarantees, claims rely on */
    "CREATE UNIQUE INDEX jobs_one_running ON jobs (spec_name) WHERE phase = 'Running';\n"
    "CREATE TABLE secrets (\n"
    "  name TEXT COLLATE \"C\" NOT NULL PRIMARY KEY,\n"
    "  dockerconfigjson TEXT NOT NULL,\n"
    "  created_ms BIGINT NOT NULL\n"
    ");\n"
    "CREATE TABLE images (\n"
    "  url TEXT COLLATE \"C\" NOT NULL PRIMARY KEY,\n"
    "  source TEXT NOT NULL CHECK (source IN ('built', 'admin')),\n"
    "  created_ms BIGINT NOT NULL\n"
    ");\n"
    "CREATE TABLE settings (\n"
    "  key TEXT COLLATE \"C\" NOT NULL PRIMARY KEY,\n"
    "  value TEXT NOT NULL\n"
    ");\n"
    /* specs.latest_* follow the spec's newest job, whatever writes the jobs */
    "CREATE FUNCTION kiln_jobs_latest_insert() RETURNS trigger LANGUAGE plpgsql AS $$\n"
    "BEGIN\n"
    "  UPDATE specs SET latest_job_id = NEW.id, latest_phase = NEW.phase\n"
    "    WHERE name = NEW.spec_name AND (latest_job_id IS NULL OR latest_job_id < NEW.id);\n"
    "  RETURN NULL;\n"
    "END $$;\n"
    "CREATE FUNCTION kiln_jobs_latest_phase() RETURNS trigger LANGUAGE plpgsql AS $$\n"
    "BEGIN\n"
    "  UPDATE specs SET latest_phase = NEW.phase\n"
    "    WHERE name = NEW.spec_name AND latest_job_id = NEW.id;\n"
    "  RETURN NULL;\n"
    "END $$;\n"
    "CREATE FUNCTION kiln_jobs_latest_delete() RETURNS trigger LANGUAGE plpgsql AS $$\n"
    "BEGIN\n"
    "  UPDATE specs SET (latest_job_id, latest_phase) =\n"
    "    (SELECT id, phase FROM jobs WHERE spec_name = OLD.spec_name ORDER BY id DESC LIMIT 1)\n"
    "    WHERE name = OLD.spec_name AND latest_job_id = OLD.id;\n"
    "  RETURN NULL;\n"
    "END $$;\n"
    "CREATE TRIGGER jobs_latest_insert AFTER INSERT ON jobs\n"
    "  FOR EACH ROW EXECUTE FUNCTION kiln_jobs_latest_insert();\n"
    "CREATE TRIGGER jobs_latest_phase AFTER UPDATE OF phase ON jobs\n"
    "  FOR EACH ROW EXECUTE FUNCTION kiln_jobs_latest_phase();\n"
    "CREATE TRIGGER jobs_latest_delete AFTER DELETE ON jobs\n"
    "  FOR EACH ROW EXECUTE FUNCTION kiln_jobs_latest_delete();\n";

/*
 * v2: specs.latest_rank, the rank of latest_phase in status order (Running
 * first, no job last: kiln_phase_rank), kept by the triggers and indexed.
 */
static const char schema_v2[] =
    "CREATE FUNCTION kiln_phase_rank(phase TEXT) RETURNS INTEGER LANGUAGE sql IMMUTABLE AS $$\n"
    "  SELECT CASE phase WHEN 'Running' THEN 0 WHEN 'Pending' THEN 1 WHEN 'Failed' THEN 2\n"
    "    WHEN 'Cancelled' THEN 3 WHEN 'Unknown' THEN 4 WHEN 'Succeeded' THEN 5 ELSE 6 END\n"
    "$$;\n"
    "ALTER TABLE specs ADD COLUMN latest_rank INTEGER NOT NULL DEFAULT 6;\n"
    "UPDATE specs SET latest_rank = kiln_phase_rank(latest_phase);\n"
    "CREATE INDEX specs_rank ON specs (latest_rank, name);\n"
    "CREATE OR REPLACE FUNCTION kiln_jobs_latest_insert() RETURNS trigger LANGUAGE plpgsql AS $$\n"
    "BEGIN\n"
    "  UPDATE specs SET latest_job_id = NEW.id, latest_phase = NEW.phase,\n"
    "    latest_rank = kiln_phase_rank(NEW.phase)\n"
    "    WHERE name = NEW.spec_name AND (latest_job_id IS NULL OR latest_job_id < NEW.id);\n"
    "  RETURN NULL;\n"
    "END $$;\n"
    "CREATE OR REPLACE FUNCTION kiln_jobs_latest_phase() RETURNS trigger LANGUAGE plpgsql AS $$\n"
    "BEGIN\n"
    "  UPDATE specs SET latest_phase = NEW.phase, latest_rank = kiln_phase_rank(NEW.phase)\n"
    "    WHERE name = NEW.spec_name AND latest_job_id = NEW.id;\n"
    "  RETURN NULL;\n"
    "END $$;\n"
    "CREATE OR REPLACE FUNCTION kiln_jobs_latest_delete() RETURNS trigger LANGUAGE plpgsql AS $$\n"
    "BEGIN\n"
    "  UPDATE specs SET (latest_job_id, latest_phase) =\n"
    "    (SELECT id, phase FROM jobs WHERE spec_name = OLD.spec_name ORDER BY id DESC LIMIT 1)\n"
    "    WHERE name = OLD.spec_name AND latest_job_id = OLD.id;\n"
    "  IF FOUND THEN\n"
    "    UPDATE specs SET latest_rank = kiln_phase_rank(latest_phase) WHERE name = OLD.spec_name;\n"
    "  END IF;\n"
    "  RETURN NULL;\n"
    "END $$;\n";

/*
 * v3: jobs.heartbeat_ms, the last renewal of a Running job's lease (set by
 * the claim and kiln_store_job_heartbeat); NULL for jobs claimed before,
 * whose lease counts as expired.
 */
static const char schema_v3[] = "ALTER TABLE jobs ADD COLUMN heartbeat_ms BIGINT;\n";

/*
 * v4: job_logs, a finished job's log (its last KILN_STORE_LOG_MAX bytes at
 * most: `truncated` when the beginning was left out; `size` the bytes
 * kept), so that every process sharing the database can serve it. It goes
 * with its job (and the job with its spec). BYTEA: a log is any bytes.
 */
static const char schema_v4[] =
    "CREATE TABLE job_logs (\n"
    "  job_id BIGINT NOT NULL PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,\n"
    "  log BYTEA NOT NULL,\n"
    "  size BIGINT NOT NULL,\n"
    "  truncated BOOLEAN NOT NULL DEFAULT FALSE,\n"
    "  stored_ms BIGINT NOT NULL\n"
    ");\n";

/*
 * v5: job_logs.start_offset, where the stored log's bytes start in the
 * whole log (after the "[log truncated ...]" line of a truncated copy), and
 * job_logs.is_final: true for the copy written at the job's end, false for
 * a live copy refreshed while the job runs. Rows of v4 are final copies,
 * start 0.
 */
static const char schema_v5[] =
    "ALTER TABLE job_logs ADD COLUMN start_offset BIGINT NOT NULL DEFAULT 0;\n"
    "ALTER TABLE job_logs ADD COLUMN is_final BOOLEAN NOT NULL DEFAULT TRUE;\n";

/* Migration i takes the schema from version i to i + 1; append, never edit (as in SQLite's). */
static const char *const migrations[] = {
    schema_v1, schema_v2, schema_v3, schema_v4, schema_v5,
};

#define SCHEMA_VERSION ((int)KILN_ARRAY_SIZE(migrations))

/* ---- statements ---- */

#define SPEC_COLS                                                                                  \
    "s.name, s.spec_json, s.revision, s.created_ms, s.updated_ms, j.id, j.phase, j.image_url"
#define JOB_COLS                                                                                   \
    "id, spec_name, revision, spec_json, target_image, phase, created_ms, started_ms, "            \
    "finished_ms, image_digest, image_url, error_message, worker, log_path, attempt, "             \
    "cancel_requested, heartbeat_ms"

/* The Running jobs recover takes: $1 stale_before_ms, $2 worker or NULL (any). */
#define RECOVER_FILTER                                                                             \
    "phase = 'Running' AND (heartbeat_ms IS NULL OR heartbeat_ms < $1::bigint) AND "               \
    "($2::text IS NULL OR worker = $2::text)"

/* ASCII case-insensitive, '\' escapes: SQLite's LIKE. */
#define NAME_FILTER "lower(name) LIKE lower($1::text COLLATE \"C\") ESCAPE '\\'"

#define LIST_SQL(page, order)                                                                      \
    "WITH page AS (" page " LIMIT $2 OFFSET $3) SELECT " SPEC_COLS                                 \
    " FROM page JOIN specs AS s ON s.name = page.name LEFT JOIN jobs AS j ON j.id = "              \
    "s.latest_job_id ORDER BY " order

#define PAGE_BY_NAME(dir) "SELECT name FROM specs WHERE " NAME_FILTER " ORDER BY name " dir
#define PAGE_BY_UPDATED(dir)                                                                       \
    "SELECT name, updated_ms FROM specs WHERE " NAME_FILTER " ORDER BY updated_ms " dir ", name "  \
    "ASC"
#define PAGE_BY_STATUS(dir)                                                                        \
    "SELECT name, latest_rank AS phase_rank FROM specs WHERE " NAME_FILTER                         \
    " ORDER BY latest_rank " dir ", name ASC"

/* The spec row stays locked until the transaction ends (SQLite: BEGIN IMMEDIATE). */
static const char sql_spec_find_lock[] =
    "SELECT spec_json, revision FROM specs WHERE name = $1 FOR NO KEY UPDATE";
static const char sql_spec_insert[] =
    "INSERT INTO specs (name, spec_json, revision, created_ms, updated_ms) "
    "VALUES ($1, $2, $3, $4, $4) ON CONFLICT (name) DO NOTHING";
static const char sql_spec_update[] =
    "UPDATE specs SET spec_json = $2, revision = $3, updated_ms = $4 WHERE name = $1";
static const char sql_spec_get[] = "SELECT " SPEC_COLS " FROM specs AS s LEFT JOIN jobs AS j ON "
                                   "j.id = s.latest_job_id WHERE s.name = $1";
static const char sql_spec_delete[] = "DELETE FROM specs WHERE name = $1";
static const char sql_spec_count[] = "SELECT COUNT(*) FROM specs WHERE " NAME_FILTER;
static const char sql_spec_count_all[] = "SELECT COUNT(*) FROM specs";
static const char sql_job_insert[] =
    "INSERT INTO jobs (spec_name, revision, spec_json, target_image, phase, created_ms, attempt, "
    "cancel_requested) VALUES ($1, $2, $3, $4, 'Pending', $5, 0, FALSE) RETURNING id";
static const char sql_job_get[] = "SELECT " JOB_COLS " FROM jobs WHERE id = $1";
static const char sql_job_list[] = "SELECT " JOB_COLS " FROM jobs WHERE spec_name = $1 ORDER BY "
                                   "id DESC LIMIT $2 OFFSET $3";
static const char sql_job_count_spec[] = "SELECT COUNT(*) FROM jobs WHERE spec_name = $1";
static const char sql_job_set_log[] = "UPDATE jobs SET log_path = $2 WHERE id = $1";
/* Lock the spec row of job $1 (before the job's: see the top). */
static const char sql_job_lock_spec[] =
    "SELECT 1 FROM specs WHERE name = (SELECT spec_name FROM jobs WHERE id = $1) "
    "FOR NO KEY UPDATE";
static const char sql_job_phase_lock[] = "SELECT phase, worker FROM jobs WHERE id = $1 FOR UPDATE";
static const char sql_job_claim[] =
    "UPDATE jobs SET phase = 'Running', started_ms = $1, heartbeat_ms = $1, worker = $2, "
    "attempt = attempt + 1 "
    "WHERE id = (SELECT p.id FROM jobs AS p JOIN specs AS s ON s.name = p.spec_name "
    "WHERE p.phase = 'Pending' AND NOT EXISTS (SELECT 1 FROM jobs AS r WHERE "
    "r.spec_name = p.spec_name AND r.phase = 'Running') ORDER BY p.id LIMIT 1 "
    "FOR NO KEY UPDATE OF p, s SKIP LOCKED) AND phase = 'Pending' RETURNING " JOB_COLS;
static const char sql_job_finish[] =
    "UPDATE jobs SET phase = $2, finished_ms = $3, image_digest = $4, image_url = $5, "
    "error_message = $6 WHERE id = $1 AND phase = 'Running'";
/* One row, autocommit: no spec lock needed (it takes no other lock, fires no trigger). */
static const char sql_job_heartbeat[] = "UPDATE jobs SET heartbeat_ms = $3 WHERE id = $1 AND "
                                        "phase = 'Running' AND worker = $2";
static const char sql_job_cancel_pending[] =
    "UPDATE jobs SET phase = 'Cancelled', finished_ms = $2, cancel_requested = TRUE "
    "WHERE id = $1 AND phase = 'Pending'";
static const char sql_job_cancel_running[] =
    "UPDATE jobs SET cancel_requested = TRUE WHERE id = $1 AND phase = 'Running'";
static const char sql_job_cancel_requested[] = "SELECT cancel_requested FROM jobs WHERE id = $1";
static const char sql_recover_lock[] =
    "SELECT 1 FROM specs WHERE name IN (SELECT spec_name FROM jobs WHERE " RECOVER_FILTER ") "
    "ORDER BY name FOR NO KEY UPDATE";
static const char sql_recover_fail[] = "UPDATE jobs SET phase = 'Failed', finished_ms = $3, "
                                       "error_message = 'interrupted' WHERE " RECOVER_FILTER;
static const char sql_recover_cancel[] =
    "UPDATE jobs SET phase = 'Cancelled', finished_ms = $3, error_message = 'interrupted' "
    "WHERE " RECOVER_FILTER " AND cancel_requested";
static const char sql_recover_requeue[] =
    "UPDATE jobs SET phase = 'Pending', started_ms = NULL, heartbeat_ms = NULL, worker = NULL "
    "WHERE " RECOVER_FILTER;
static const char sql_running_workers[] =
    "SELECT DISTINCT worker COLLATE \"C\" AS w FROM jobs WHERE phase = 'Running' AND "
    "worker IS NOT NULL ORDER BY w";
static const char sql_job_counts[] = "SELECT phase, COUNT(*) FROM jobs GROUP BY phase";
/*
 * The spec row of job $1 held FOR KEY SHARE while its log is written: a
 * spec delete (whose cascade would take the job) waits, a claim or a finish
 * (FOR NO KEY UPDATE) does not. No row: no such job.
 */
static const char sql_log_lock_spec[] =
    "SELECT 1 FROM specs WHERE name = (SELECT spec_name FROM jobs WHERE id = $1) FOR KEY SHARE";
static const char sql_log_put[] =
    "INSERT INTO job_logs (job_id, log, size, truncated, stored_ms, start_offset, is_final) "
    "VALUES ($1, $2, $3, $4::boolean, $5, $6, TRUE) ON CONFLICT (job_id) DO UPDATE SET "
    "log = excluded.log, size = excluded.size, truncated = excluded.truncated, "
    "stored_ms = excluded.stored_ms, start_offset = excluded.start_offset, is_final = TRUE";
/* a live copy: while the job is Running (under $6 when not NULL), never over a final one */
static const char sql_log_put_live[] =
    "INSERT INTO job_logs (job_id, log, size, truncated, stored_ms, start_offset, is_final) "
    "SELECT $1, $2, $3, FALSE, $4, $5, FALSE WHERE EXISTS (SELECT 1 FROM jobs WHERE id = $1 "
    "AND phase = 'Running' AND ($6::text IS NULL OR worker = $6::text)) ON CONFLICT (job_id) "
    "DO UPDATE SET log = excluded.log, size = excluded.size, truncated = FALSE, "
    "stored_ms = excluded.stored_ms, start_offset = excluded.start_offset "
    "WHERE job_logs.is_final = FALSE";
static const char sql_log_get[] = "SELECT log, truncated, start_offset, is_final, stored_ms FROM "
                                  "job_logs WHERE job_id = $1";
static const char sql_secret_insert[] =
    "INSERT INTO secrets (name, dockerconfigjson, created_ms) VALUES ($1, $2, $3) "
    "ON CONFLICT (name) DO NOTHING";
static const char sql_secret_update[] = "UPDATE secrets SET dockerconfigjson = $2 WHERE name = $1";
static const char sql_secret_list[] = "SELECT name, created_ms FROM secrets ORDER BY name";
static const char sql_secret_get[] = "SELECT dockerconfigjson FROM secrets WHERE name = $1";
static const char sql_secret_delete[] = "DELETE FROM secrets WHERE name = $1";
static const char sql_image_add[] = "INSERT INTO images (url, source, created_ms) VALUES ($1, $2, "
                                    "$3) ON CONFLICT (url) DO NOTHING";
static const char sql_image_list[] = "SELECT url, source, created_ms FROM images ORDER BY url";
static const char sql_setting_get[] = "SELECT value FROM settings WHERE key = $1";
static const char sql_setting_set[] = "INSERT INTO settings (key, value) VALUES ($1, $2) "
                                      "ON CONFLICT (key) DO UPDATE SET value = excluded.value";
static const char sql_setting_delete[] = "DELETE FROM settings WHERE key = $1";
static const char sql_schema_version[] = "SELECT COALESCE(MAX(version), 0) FROM schema_version";
static const char sql_schema_table[] = "CREATE TABLE IF NOT EXISTS schema_version ("
                                       "version INTEGER NOT NULL PRIMARY KEY, "
                                       "applied_ms BIGINT NOT NULL)";
static const char sql_schema_record[] =
    "INSERT INTO schema_version (version, applied_ms) VALUES ($1, $2)";
static const char sql_migrate_lock[] = "SELECT pg_advisory_xact_lock($1)";
static const char sql_check[] =
    "SELECT COUNT(*) FROM specs AS s WHERE s.latest_job_id IS DISTINCT FROM "
    "(SELECT MAX(id) FROM jobs WHERE spec_name = s.name)";

/* ---- connections ---- */

struct pg;

struct conn {
    struct pg *owner;
    PGconn *db;
    bool in_tx;
};

struct pg {
    char *conninfo;
    char *label; /* "host/dbname", for messages: never the password */
    bool label_final;
    struct kiln_store_options opts;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct conn *conns;
    size_t nconns;
    size_t *free_idx; /* a stack of indexes of free connections */
    size_t nfree;
};

static int64_t now_ms(const struct pg *pg)
{
    return kiln_store_now_ms(&pg->opts);
}

/* libpq's message on one line: whitespace runs become one space, trimmed. */
static char *one_line(const char *msg)
{
    if (!msg || !*msg)
        return kiln_xstrdup("unknown error");
    size_t n = strlen(msg);
    char *out = kiln_xmalloc(n + 1);
    size_t o = 0;
    bool space = false;
    for (size_t i = 0; i < n; i++) {
        if (msg[i] == ' ' || msg[i] == '\t' || msg[i] == '\n' || msg[i] == '\r') {
            space = o > 0;
            continue;
        }
        if (space)
            out[o++] = ' ';
        space = false;
        out[o++] = msg[i];
    }
    out[o] = '\0';
    return out;
}

static int code_of_sqlstate(const char *state)
{
    if (!state)
        return KILN_EIO;
    if (strncmp(state, "23", 2) == 0) /* integrity constraint violation */
        return KILN_ECONFLICT;
    if (strcmp(state, "40P01") == 0 || strcmp(state, "40001") == 0 || strcmp(state, "55P03") == 0 ||
        strcmp(state, "57014") == 0)
        return KILN_ETIMEOUT; /* deadlock, serialization, lock or statement timeout */
    return KILN_EIO;
}

static bool is_sqlstate(const PGresult *res, const char *state)
{
    const char *s = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    return s && strcmp(s, state) == 0;
}

/*
 * Set *err for a failed statement: "<what>: <primary message>". Only the
 * primary message: the detail may quote row values (secrets).
 */
static int res_error(struct conn *c, const PGresult *res, struct kiln_error **err, const char *what)
{
    const char *primary = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    if (PQstatus(c->db) == CONNECTION_BAD) {
        _cleanup_free_ char *msg = one_line(PQerrorMessage(c->db));
        return kiln_error_set(err, KILN_EIO, 0, "%s: connection to '%s' lost: %s", what,
                              c->owner->label, msg);
    }
    _cleanup_free_ char *msg = one_line(primary ? primary : PQerrorMessage(c->db));
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    /* "invalid byte sequence for encoding "UTF8": 0x..": the bytes may be a secret's. */
    char *colon = strrchr(msg, ':');
    if (state && strncmp(state, "22", 2) == 0 && colon && strstr(colon, "0x"))
        *colon = '\0';
    return kiln_error_set(err, code_of_sqlstate(state), 0, "%s: %s", what, msg);
}

/* Connect or reconnect `c` when it is not healthy: PQreset once. */
static int conn_ensure(struct conn *c, struct kiln_error **err)
{
    if (PQstatus(c->db) == CONNECTION_OK)
        return 0;
    c->in_tx = false;
    PQreset(c->db);
    if (PQstatus(c->db) == CONNECTION_OK) {
        kiln_log(KILN_LOG_INFO, "store: reconnected to '%s'", c->owner->label);
        return 0;
    }
    _cleanup_free_ char *msg = one_line(PQerrorMessage(c->db));
    return kiln_error_set(err, KILN_EIO, 0, "connect to '%s': %s", c->owner->label, msg);
}

/* Whether `sql` cannot have changed anything: run again after a reset when the connection broke. */
static bool is_retryable(const struct conn *c, const char *sql)
{
    return !c->in_tx && (strncmp(sql, "BEGIN", 5) == 0 || strncmp(sql, "SELECT", 6) == 0 ||
                         strncmp(sql, "WITH", 4) == 0);
}

/*
 * Run `sql` with parameters by a format: 't' text (NULL is NULL), 'i'
 * int64_t, 'b' binary bytes (const char *, size_t: for a BYTEA), one
 * letter per $1, $2, ... On success *ret (when not NULL) is
 * the result (the caller PQclears it); on failure an error naming `what`,
 * and *ret_failed (when not NULL) keeps the failed result for its SQLSTATE.
 */
static int vquery(struct conn *c, const char *sql, PGresult **ret, PGresult **ret_failed,
                  const char *what, struct kiln_error **err, const char *fmt, va_list ap)
{
    char nums[MAX_PARAMS][24];
    const char *values[MAX_PARAMS];
    int lengths[MAX_PARAMS] = {0};
    int formats[MAX_PARAMS] = {0};
    int n = 0;
    for (; fmt[n]; n++) {
        if (n >= MAX_PARAMS)
            return kiln_error_set(err, KILN_EINTERNAL, 0, "%s: too many parameters", what);
        if (fmt[n] == 't') {
            values[n] = va_arg(ap, const char *);
        } else if (fmt[n] == 'b') {
            const char *v = va_arg(ap, const char *);
            size_t len = va_arg(ap, size_t);
            if (len > INT_MAX)
                return kiln_error_set(err, KILN_EINVAL, 0, "%s: %zu bytes are too many", what, len);
            values[n] = v ? v : "";
            lengths[n] = (int)len;
            formats[n] = 1;
        } else {
            snprintf(nums[n], sizeof(nums[n]), "%lld", (long long)va_arg(ap, int64_t));
            values[n] = nums[n];
        }
    }
    int r = c->in_tx ? 0 : conn_ensure(c, err);
    if (r < 0)
        return kiln_store_errctx(r, err, "%s", what);
    for (int attempt = 0;; attempt++) {
        PGresult *res = PQexecParams(c->db, sql, n, NULL, values, lengths, formats, 0);
        ExecStatusType st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
        if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
            if (ret)
                *ret = res;
            else
                PQclear(res);
            return 0;
        }
        if (attempt == 0 && PQstatus(c->db) == CONNECTION_BAD && is_retryable(c, sql)) {
            PQclear(res);
            r = conn_ensure(c, err);
            if (r < 0)
                return kiln_store_errctx(r, err, "%s", what);
            continue;
        }
        if (PQstatus(c->db) == CONNECTION_BAD)
            c->in_tx = false;
        r = res_error(c, res, err, what);
        if (ret_failed)
            *ret_failed = res;
        else
            PQclear(res);
        return r;
    }
}

static int query(struct conn *c, const char *sql, PGresult **ret, const char *what,
                 struct kiln_error **err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int r = vquery(c, sql, ret, NULL, what, err, fmt, ap);
    va_end(ap);
    return r;
}

/* Like query() for a statement whose rows are not read; returns the rows it affected. */
static int64_t exec(struct conn *c, const char *sql, const char *what, struct kiln_error **err,
                    const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    PGresult *res = NULL;
    int r = vquery(c, sql, &res, NULL, what, err, fmt, ap);
    va_end(ap);
    if (r < 0)
        return r;
    const char *t = PQcmdTuples(res);
    int64_t n = t && *t ? strtoll(t, NULL, 10) : 0;
    PQclear(res);
    return n;
}

static void resultp_clear(PGresult **r)
{
    PQclear(*r);
    *r = NULL;
}

#define _cleanup_result_ _cleanup_(resultp_clear)

static int tx_begin_as(struct conn *c, const char *sql, struct kiln_error **err)
{
    int r = query(c, sql, NULL, "begin transaction", err, "");
    if (r >= 0)
        c->in_tx = true;
    return r;
}

static int tx_begin(struct conn *c, struct kiln_error **err)
{
    return tx_begin_as(c, "BEGIN", err);
}

/* A transaction of reads that see one snapshot. */
static int tx_begin_snapshot(struct conn *c, struct kiln_error **err)
{
    return tx_begin_as(c, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", err);
}

static void tx_rollback(struct conn *c)
{
    if (c->in_tx && PQstatus(c->db) == CONNECTION_OK &&
        PQtransactionStatus(c->db) != PQTRANS_IDLE) {
        PGresult *res = PQexec(c->db, "ROLLBACK");
        PQclear(res);
    }
    c->in_tx = false;
}

static int tx_commit(struct conn *c, struct kiln_error **err)
{
    int r = query(c, "COMMIT", NULL, "commit", err, "");
    if (r < 0) {
        tx_rollback(c);
        return r;
    }
    c->in_tx = false;
    return 0;
}

static struct conn *conn_get(struct pg *pg)
{
    pthread_mutex_lock(&pg->lock);
    while (pg->nfree == 0)
        pthread_cond_wait(&pg->cond, &pg->lock);
    struct conn *c = &pg->conns[pg->free_idx[--pg->nfree]];
    pthread_mutex_unlock(&pg->lock);
    return c;
}

static void conn_put(struct conn *c)
{
    struct pg *pg = c->owner;
    /* An early return inside a transaction ends here: roll it back. */
    tx_rollback(c);
    pthread_mutex_lock(&pg->lock);
    pg->free_idx[pg->nfree++] = (size_t)(c - pg->conns);
    pthread_cond_signal(&pg->cond);
    pthread_mutex_unlock(&pg->lock);
}

static void conn_putp(struct conn **c)
{
    if (*c)
        conn_put(*c);
}

/* Declared before any result, so it is released after them. */
#define _cleanup_conn_ _cleanup_(conn_putp)

/* ---- column readers ---- */

static char *col_str(const PGresult *res, int row, int i)
{
    return PQgetisnull(res, row, i) ? NULL : kiln_xstrdup(PQgetvalue(res, row, i));
}

static int64_t col_int(const PGresult *res, int row, int i)
{
    return PQgetisnull(res, row, i) ? 0 : strtoll(PQgetvalue(res, row, i), NULL, 10);
}

static bool col_bool(const PGresult *res, int row, int i)
{
    const char *v = PQgetisnull(res, row, i) ? NULL : PQgetvalue(res, row, i);
    return v && (v[0] == 't' || v[0] == '1');
}

static void col_revision(const PGresult *res, int row, int i, char ret[KILN_REVISION_LEN + 1])
{
    const char *t = PQgetisnull(res, row, i) ? NULL : PQgetvalue(res, row, i);
    size_t n = 0;
    for (; t && t[n] && n < KILN_REVISION_LEN; n++)
        ret[n] = t[n];
    ret[n] = '\0';
}

static enum kiln_job_phase col_phase(const PGresult *res, int row, int i)
{
    int p = PQgetisnull(res, row, i) ? -1 : kiln_job_phase_from_name(PQgetvalue(res, row, i));
    return p < 0 ? KILN_JOB_UNKNOWN : (enum kiln_job_phase)p;
}

/* A row of SPEC_COLS. */
static void read_spec(const PGresult *res, int row, struct kiln_store_spec *ret)
{
    ret->name = col_str(res, row, 0);
    ret->spec_json = col_str(res, row, 1);
    col_revision(res, row, 2, ret->revision);
    ret->created_ms = col_int(res, row, 3);
    ret->updated_ms = col_int(res, row, 4);
    if (!PQgetisnull(res, row, 5)) {
        ret->job_id = col_int(res, row, 5);
        ret->job_phase = col_phase(res, row, 6);
        ret->job_image_url = col_str(res, row, 7);
    }
}

/* A row of JOB_COLS. */
static void read_job(const PGresult *res, int row, struct kiln_store_job *ret)
{
    ret->id = col_int(res, row, 0);
    ret->spec_name = col_str(res, row, 1);
    col_revision(res, row, 2, ret->revision);
    ret->spec_json = col_str(res, row, 3);
    ret->target_image = col_str(res, row, 4);
    ret->phase = col_phase(res, row, 5);
    ret->created_ms = col_int(res, row, 6);
    ret->started_ms = col_int(res, row, 7);
    ret->finished_ms = col_int(res, row, 8);
    ret->image_digest = col_str(res, row, 9);
    ret->image_url = col_str(res, row, 10);
    ret->error_message = col_str(res, row, 11);
    ret->worker = col_str(res, row, 12);
    ret->log_path = col_str(res, row, 13);
    ret->attempt = (int)col_int(res, row, 14);
    ret->cancel_requested = col_bool(res, row, 15);
    ret->heartbeat_ms = col_int(res, row, 16);
}

/* ---- schema ---- */

static int op_schema_version(void *impl, struct kiln_error **err)
{
    _cleanup_conn_ struct conn *c = conn_get(impl);
    _cleanup_result_ PGresult *res = NULL;
    int r = query(c, sql_schema_version, &res, "schema version", err, "");
    if (r < 0)
        return r;
    return PQntuples(res) == 1 ? (int)col_int(res, 0, 0) : 0;
}

/* No PRAGMA integrity_check here: the server keeps its files; check kiln's own bookkeeping. */
static int op_check(void *impl, struct kiln_error **err)
{
    _cleanup_conn_ struct conn *c = conn_get(impl);
    _cleanup_result_ PGresult *res = NULL;
    int r = query(c, sql_check, &res, "integrity check", err, "");
    if (r < 0)
        return r;
    int64_t bad = PQntuples(res) == 1 ? col_int(res, 0, 0) : -1;
    if (bad != 0)
        return kiln_error_set(err, KILN_EIO, 0,
                              "integrity check of '%s': %lld specs with a wrong latest job",
                              c->owner->label, (long long)bad);
    return 0;
}

/* Bring the database to SCHEMA_VERSION, one migration per transaction, under an advisory lock. */
static int migrate(struct pg *pg, struct conn *c, struct kiln_error **err)
{
    for (;;) {
        int r = tx_begin(c, err);
        if (r >= 0)
            r = query(c, sql_migrate_lock, NULL, "lock migrations", err, "i",
                      (int64_t)MIGRATE_LOCK_KEY);
        if (r >= 0)
            r = query(c, sql_schema_table, NULL, "create schema_version", err, "");
        _cleanup_result_ PGresult *res = NULL;
        if (r >= 0)
            r = query(c, sql_schema_version, &res, "schema version", err, "");
        if (r < 0)
            return kiln_store_errctx(r, err, "migrate '%s'", pg->label);
        int v = PQntuples(res) == 1 ? (int)col_int(res, 0, 0) : 0;
        if (v > SCHEMA_VERSION)
            return kiln_error_set(err, KILN_EUNSUPPORTED, 0,
                                  "database '%s' has schema version %d, newer than this "
                                  "kiln's %d",
                                  pg->label, v, SCHEMA_VERSION);
        if (v == SCHEMA_VERSION)
            return tx_commit(c, err);
        /* A constant script of several statements: the simple protocol, no values. */
        PGresult *mres = PQexec(c->db, migrations[v]);
        if (PQresultStatus(mres) != PGRES_COMMAND_OK) {
            _cleanup_free_ char *what =
                kiln_xasprintf("migrate '%s' to schema version %d", pg->label, v + 1);
            r = res_error(c, mres, err, what);
            PQclear(mres);
            return r;
        }
        PQclear(mres);
        r = query(c, sql_schema_record, NULL, "record schema version", err, "ii", (int64_t)(v + 1),
                  now_ms(pg));
        if (r >= 0)
            r = tx_commit(c, err);
        if (r < 0)
            return kiln_store_errctx(r, err, "migrate '%s'", pg->label);
        kiln_log(KILN_LOG_INFO, "store: database '%s' migrated to schema version %d", pg->label,
                 v + 1);
    }
}

/* ---- specs ---- */

static int op_spec_put(void *impl, const char *name, const char *spec_json, const char *revision,
                       enum kiln_store_put_mode mode, struct kiln_error **err)
{
    struct pg *pg = impl;
    _cleanup_conn_ struct conn *c = conn_get(pg);
    /* A new name raced by another insert: look again (then it exists). */
    for (int attempt = 0; attempt < PUT_TRIES; attempt++) {
        _cleanup_result_ PGresult *res = NULL;
        int r = tx_begin(c, err);
        if (r >= 0)
            r = query(c, sql_spec_find_lock, &res, "find spec", err, "t", name);
        if (r < 0)
            return kiln_store_errctx(r, err, "spec '%s'", name);
        int64_t now = now_ms(pg);
        int flags;
        int64_t n;
        if (PQntuples(res) == 1) {
            if (mode == KILN_STORE_PUT_CREATE)
                return kiln_error_set(err, KILN_ECONFLICT, 0, "spec '%s' already exists", name);
            const char *old_json = PQgetisnull(res, 0, 0) ? NULL : PQgetvalue(res, 0, 0);
            const char *old_rev = PQgetisnull(res, 0, 1) ? NULL : PQgetvalue(res, 0, 1);
            if (old_json && strcmp(old_json, spec_json) == 0)
                return 0; /* the rollback at release ends the transaction */
            flags = KILN_STORE_PUT_CHANGED;
            if (!old_rev || strcmp(old_rev, revision) != 0)
                flags |= KILN_STORE_PUT_REVISION_CHANGED;
            n = exec(c, sql_spec_update, "update spec", err, "ttti", name, spec_json, revision,
                     now);
        } else {
            if (mode == KILN_STORE_PUT_UPDATE)
                return kiln_error_set(err, KILN_ENOTFOUND, 0, "spec '%s': not found", name);
            flags = KILN_STORE_PUT_NEW | KILN_STORE_PUT_CHANGED | KILN_STORE_PUT_REVISION_CHANGED;
            n = exec(c, sql_spec_insert, "insert spec", err, "ttti", name, spec_json, revision,
                     now);
            if (n == 0) {
                /* Another process inserted it since the look-up. */
                tx_rollback(c);
                if (mode == KILN_STORE_PUT_CREATE)
                    return kiln_error_set(err, KILN_ECONFLICT, 0, "spec '%s' already exists", name);
                continue;
            }
        }
        r = n < 0 ? (int)n : tx_commit(c, err);
        if (r < 0)
            return kiln_store_errctx(r, err, "spec '%s'", name);
        return flags;
    }
    return kiln_error_set(err, KILN_ETIMEOUT, 0, "spec '%s': changed by others %d times", name,
                          PUT_TRIES);
}

static int op_spec_get(void *impl, const char *name, struct kiln_store_spec *ret,
                       struct kiln_error **err)
{
    _cleanup_conn_ struct conn *c = conn_get(impl);
    _cleanup_result_ PGresult *res = NULL;
    int r = query(c, sql_spec_get, &res, "get spec", err, "t", name);
    if (r < 0)
        return kiln_store_errctx(r, err, "spec '%s'", name);
    if (PQntuples(res) == 0)
        return kiln_error_set(err, KILN_ENOTFOUND, 0, "spec '%s': not found", name);
    read_spec(res, 0, ret);
    return 0;
}

static int op_spec_delete(void *impl, const char *name, struct kiln_error **err)
{
    _cleanup_conn_ struct conn *c = conn_get(impl);
    int64_t n = exec(c, sql_spec_delete, "delete spec", err, "t", name);
    if (n < 0)
        return kiln_store_errctx((int)n, err, "spec '%s'", name);
    if (n == 0)
        return kiln_error_set(err, KILN_ENOTFOUND, 0, "spec '%s': not found", name);
    return 0;
}

static const char *list_sql(const struct kiln_store_spec_query *q)
{
    static const char name_asc[] = LIST_SQL(PAGE_BY_NAME("ASC"), "s.name ASC");
    static const char name_desc[] = LIST_SQL(PAGE_BY_NAME("DESC"), "s.name DESC");
    static const char status_asc[] =
        LIST_SQL(PAGE_BY_STATUS("ASC"), "page.phase_rank ASC, s.name ASC");
    static const char status_desc[] =
        LIST_SQL(PAGE_BY_STATUS("DESC"), "page.phase_rank DESC, s.name ASC");
    static const char updated_asc[] =
        LIST_SQL(PAGE_BY_UPDATED("ASC"), "s.updated_ms ASC, s.name ASC");
    static const char updated_desc[] =
        LIST_SQL(PAGE_BY_UPDATED("DESC"), "s.updated_ms DESC, s.name ASC");
    switch (q->order) {
    case KILN_STORE_ORDER_STATUS:
        return q->descending ? status_desc : status_asc;
    case KILN_STORE_ORDER_UPDATED:
        return q->descending ? updated_desc : updated_asc;
    case KILN_STORE_ORDER_NAME:
    default:
        return q->descending ? name_desc : name_asc;
    }
}

static int op_spec_list(void *impl, const struct kiln_store_spec_query *q, const char *like,
                        struct kiln_store_spec_list *ret, struct kiln_error **err)
{
    _cleanup_conn_ struct conn *c = conn_get(impl);
    _cleanup_result_ PGresult *cres = NULL;
    _cleanup_result_ PGresult *res = NULL;
    /* One snapshot for the total and the page. */
    bool all = !q->name_contains || !*q->name_contains;
    int r = tx_begin_snapshot(c, err);
    if (r >= 0)
        r = all ? query(c, sql_spec_count_all, &cres, "count specs", err, "")
                : query(c, sql_spec_count, &cres, "count specs", err, "t", like);
    if (r < 0)
        return kiln_store_errctx(r, err, "list specs");
    ret->total = PQntuples(cres) == 1 ? col_int(cres, 0, 0) : 0;
    r = query(c, list_sql(q), &res, "list specs", err, "tii", like, (int64_t)q->limit,
              (int64_t)q->offset);
    if (r >= 0)
        r = tx_commit(c, err);
    if (r < 0)
        return r;
    int n = PQntuples(res);
    if (n > 0) {
        ret->v = kiln_xcalloc((size_t)n, sizeof(*ret->v));
        for (int i = 0; i < n; i++)
            read_spec(res, i, &ret->v[i]);
        ret->n = (size_t)n;
    }
    return 0;
}

/* ---- jobs ---- */

static int op_job_create(void *impl, const char *spec_name, const char *revision,
                         const char *target_image, int64_t *ret_id, struct kiln_error **err)
{
    struct pg *pg = impl;
    _cleanup_conn_ struct conn *c = conn_get(pg);
    _cleanup_result_ PGresult *res = NULL;
    _cleanup_result_ PGresult *ires = NULL;
    /* The spec row stays locked: its revision cannot change before the job is in. */
    int r = tx_begin(c, err);
    if (r >= 0)
        r = query(c, sql_spec_find_lock, &res, "find spec", err, "t", spec_name);
    if (r < 0)
        return kiln_store_errctx(r, err, "spec '%s': create job", spec_name);
    if (PQntuples(res) == 0)
        return kiln_error_set(err, KILN_ENOTFOUND, 0, "spec '%s': not found", spec_name);
    const char *json = PQgetisnull(res, 0, 0) ? "" : PQgetvalue(res, 0, 0);
    const char *cur = PQgetisnull(res, 0, 1) ? "" : PQgetvalue(res, 0, 1);
    if (revision && strcmp(revision, cur) != 0)
        return kiln_error_set(err, KILN_ECONFLICT, 0, "spec '%s': revision is '%s', not '%s'",
                              spec_name, cur, revision);
    r = query(c, sql_job_insert, &ires, "insert job", err, "tttti", spec_name, cur, json,
              target_image, now_ms(pg));
    if (r < 0)
        return kiln_store_errctx(r, err, "spec '%s': create job", spec_name);
    int64_t id = PQntuples(ires) == 1 ? col_int(ires, 0, 0) : 0;
    r = tx_commit(c, err);
    if (r < 0)
        return kiln_store_errctx(r, err, "spec '%s': create job", spec_name);
    *ret_id = id;
    return 0;
}

static int op_job_get(void *impl, int64_t id, struct kiln_store_job *ret, struct kiln_error **err)
{
    _cleanup_conn_ struct conn *c = conn_get(impl);
    _cleanup_result_ PGresult *res = NULL;
    int r = query(c, sql_job_get, &res, "get job", err, "i", id);
    if (r < 0)
        return kiln_store_errctx(r, err, "job %lld", (long long)id);
    if (PQntuples(res) == 0)
        return kiln_error_set(err, KILN_ENOTFOUND, 0, "job %lld: not found", (long long)id);
    read_job(res, 0, ret);
    return 0;
}

/*
 * In a transaction: lock the spec row of job `id`, then the job's row, and
 * return its phase (>= 0), or -KILN_ENOTFOUND; its worker into *ret_worker
 * (may be NULL).
 */
static int job_lock_phase(struct conn *c, int64_t id, char **ret_worker, struct kiln_error **err)
{
    _cleanup_result_ PGresult *res = NULL;
    int r = query(c, sql_job_lock_spec, NULL, "lock spec of job", err, "i", id);
    if (r >= 0)
        r = query(c, sql_job_phase_lock, &res, "get job phase", err, "i", id);
    if (r < 0)
        return kiln_store_errctx(r, err, "job %lld", (long long)id);
    if (PQntuples(res) == 0)
        return kiln_error_set(err, KILN_ENOTFOUND, 0, "job %lld: not found", (long long)id);
    if (ret_worker)
        *ret_worker = col_str(res, 0, 1);
    return (int)col_phase(res, 0, 0);
}

static int op_job_list(void *impl, const char *spec_name, size_t limit, size_t offset,
                       struct kiln_store_job_list *ret, struct kiln_error **err)
{
    _cleanup_conn_ struct conn *c = conn_get(impl);
    _cleanup_result_ PGresult *cres = NULL;
    _cleanup_result_ PGresult *res = NULL;
    int r = tx_begin_snapshot(c, err);
    if (r >= 0)
        r = query(c, sql_job_count_spec, &cres, "count jobs", err, "t", spec_name);
    if (r < 0)
        return kiln_store_errctx(r, err, "spec '%s': list jobs", spec_name);
    ret->total = PQntuples(cres) == 1 ? col_int(cres, 0, 0) : 0;
    r = query(c, sql_job_list, &res, "list jobs", err, "tii", spec_name, (int64_t)limit,
              (int64_t)offset);
    if (r >= 0)
        r = tx_commit(c, err);
    if (r < 0)
        return kiln_store_errctx(r, err, "spec '%s'", spec_name);
    int n = PQntuples(res);
    if (n > 0) {
        ret->v = kiln_xcalloc((size_t)n, sizeof(*ret->v));
        for (int i = 0; i < n; i++)
            read_job(res, i, &ret->v[i]);
        ret->n = (size_t)n;
    }
    return 0;
}

static int op_job_set_log_path(void *impl, int64_t id, const char *log_path,
                               struct kiln_error **err)
{
    _cleanup_conn_ struct conn *c = conn_get(impl);
    int64_t n = exec(c, sql_job_set_log, "set log path", err, "it", id, log_path);
    if (n < 0)
        return kiln_store_errctx((int)n, err, "job %lld", (long long)id);
    if (n == 0)
        return kiln_error_set(err, KILN_ENOTFOUND, 0, "job %lld: not found", (long long)id);
    return 0;
}

/* Like query(), keeping a failed statement's result in *ret_failed (the caller PQclears it). */
static int query_keep(struct conn *c, const char *sql, PGresult **ret, PGresult **ret_failed,
                      const char *what, struct kiln_error **err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int r = vquery(c, sql, ret, ret_failed, what, err, fmt, ap);
    va_end(ap);
    return r;
}

static int op_job_claim(void *impl, const char *worker, struct kiln_store_job *ret,
                        struct kiln_error **err)
{
    struct pg *pg = impl;
    _cleanup_conn_ struct conn *c = conn_get(pg);
    for (int attempt = 0; attempt < CLAIM_TRIES; attempt++) {
        _cleanup_result_ PGresult *res = NULL;
        _cleanup_result_ PGresult *failed = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *e = NULL;
        /* One statement: pick, lock and start the job (autocommit). */
        int r =
            query_keep(c, sql_job_claim, &res, &failed, "claim job", &e, "it", now_ms(pg), worker);
        if (r < 0 && is_sqlstate(failed, "23505"))
            continue; /* a claim of the same spec committed after this one's snapshot */
        if (r < 0) {
            if (err) {
                kiln_error_free(*err);
                *err = TAKE_PTR(e);
            }
            return kiln_store_errctx(r, err, "claim job for '%s'", worker);
        }
        if (PQntuples(res) != 1)
            return 0;
        read_job(res, 0, ret);
        return 1;
    }
    return kiln_error_set(err, KILN_ETIMEOUT, 0, "claim job for '%s': %d tries lost to others",
                          worker, CLAIM_TRIES);
}

static int op_job_finish(void *impl, int64_t id, const char *worker, enum kiln_job_phase phase,
                         const char *image_digest, const char *image_url, const char *error_message,
                         struct kiln_error **err)
{
    struct pg *pg = impl;
    _cleanup_conn_ struct conn *c = conn_get(pg);
    _cleanup_free_ char *owner = NULL;
    int64_t now = now_ms(pg);
    int r = tx_begin(c, err);
    if (r < 0)
        return kiln_store_errctx(r, err, "job %lld: finish", (long long)id);
    r = job_lock_phase(c, id, &owner, err);
    if (r < 0)
        return r;
    if (r != KILN_JOB_RUNNING)
        return kiln_error_set(err, KILN_ECONFLICT, 0, "job %lld is %s, not Running", (long long)id,
                              kiln_job_phase_name((enum kiln_job_phase)r));
    if (worker && (!owner || strcmp(owner, worker) != 0))
        return kiln_error_set(err, KILN_ECONFLICT, 0, "job %lld is Running under '%s', not '%s'",
                              (long long)id, owner ? owner : "", worker);
    int64_t n = exec(c, sql_job_finish, "finish job", err, "itittt", id, kiln_job_phase_name(phase),
                     now, image_digest, image_url, error_message);
    if (n >= 0 && phase == KILN_JOB_SUCCEEDED && image_url && *image_url)
        n = exec(c, sql_image_add, "add built image", err, "tti", image_url,
                 kiln_image_source_name(KILN_IMAGE_BUILT), now);
    r = n < 0 ? (int)n : tx_commit(c, err);
    if (r < 0)
        return kiln_store_errctx(r, err, "job %lld: finish", (long long)id);
    return 0;
}

static int op_job_request_cancel(void *impl, int64_t id, struct kiln_error **err)
{
    struct pg *pg = impl;
    _cleanup_conn_ struct conn *c = conn_get(pg);
    int r = tx_begin(c, err);
    if (r < 0)
        return kiln_store_errctx(r, err, "job %lld: cancel", (long long)id);
    r = job_lock_phase(c, id, NULL, err);
    if (r < 0)
        return r;
    int result;
    int64_t n;
    if (r == KILN_JOB_PENDING) {
        n = exec(c, sql_job_cancel_pending, "cancel job", err, "ii", id, now_ms(pg));
        result = KILN_STORE_CANCELLED_NOW;
    } else if (r == KILN_JOB_RUNNING) {
        n = exec(c, sql_job_cancel_running, "cancel job", err, "i", id);
        result = KILN_STORE_CANCEL_REQUESTED;
    } else {
        return kiln_error_set(err, KILN_ECONFLICT, 0, "job %lld is already %s", (long long)id,
                              kiln_job_phase_name((enum kiln_job_phase)r));
    }
    r = n < 0 ? (int)n : tx_commit(c, err);
    if (r < 0)
        return kiln_store_errctx(r, err, "job %lld: cancel", (long long)id);
    return result;
}

static int op_job_cancel_requested(void *impl, int64_t id, struct kiln_error **err)
{
    _cleanup_conn_ struct conn *c = conn_get(impl);
    _cleanup_result_ PGresult *res = NULL;
    int r = query(c, sql_job_cancel_requested, &res, "get cancel request", err, "i", id);
    if (r < 0)
        return kiln_store_errctx(r, err, "job %lld", (long long)id);
    if (PQntuples(res) == 0)
        return kiln_error_set(err, KILN_ENOTFOUND, 0, "job %lld: not found", (long long)id);
    return col_bool(res, 0, 0) ? 1 : 0;
}

static int op_job_heartbeat(void *impl, int64_t id, const char *worker, struct kiln_error **err)
{
    struct pg *pg = impl;
    _cleanup_conn_ struct conn *c = conn_get(pg);
    int64_t n = exec(c, sql_job_heartbeat, "renew lease", err, "iti", id, worker, now_ms(pg));
    if (n < 0)
        return kiln_store_errctx((int)n, err, "job %lld", (long long)id);
    return n > 0 ? 1 : 0;
}

static int op_recover(void *impl, int64_t stale_before_ms, const char *worker, bool requeue,
                      struct kiln_error **err)
{
    struct pg *pg = impl;
    _cleanup_conn_ struct conn *c = conn_get(pg);
    int64_t now = now_ms(pg);
    int64_t n = 0, m = 0;
    int r = tx_begin(c, err);
    /* Spec rows first, as everywhere. */
    if (r >= 0)
        r = query(c, sql_recover_lock, NULL, "recover jobs", err, "it", stale_before_ms, worker);
    if (r >= 0 && requeue) {
        n = exec(c, sql_recover_cancel, "recover jobs", err, "iti", stale_before_ms, worker, now);
        if (n >= 0)
            m = exec(c, sql_recover_requeue, "recover jobs", err, "it", stale_before_ms, worker);
    } else if (r >= 0) {
        m = exec(c, sql_recover_fail, "recover jobs", err, "iti", stale_before_ms, worker, now);
    }
    if (r >= 0 && (n < 0 || m < 0))
        r = (int)(n < 0 ? n : m);
    if (r >= 0)
        r = tx_commit(c, err);
    if (r < 0)
        return kiln_store_errctx(r, err, "recover");
    return (int)(n + m);
}

static int op_running_workers(void *impl, struct kiln_strv *ret, struct kiln_error **err)
{
    _cleanup_conn_ struct conn *c = conn_get(impl);
    _cleanup_result_ PGresult *res = NULL;
    int r = query(c, sql_running_workers, &res, "list workers", err, "");
    if (r < 0)
        return r;
    for (int i = 0; i < PQntuples(res); i++)
        if (!PQgetisnull(res, i, 0))
            kiln_strv_push(ret, PQgetvalue(res, i, 0));
    return 0;
}

static int op_job_counts(void *impl, int64_t ret_counts[KILN_JOB_PHASES], struct kiln_error **err)
{
    _cleanup_conn_ struct conn *c = conn_get(impl);
    _cleanup_result_ PGresult *res = NULL;
    int r = query(c, sql_job_counts, &res, "count jobs", err, "");
    if (r < 0)
        return r;
    for (int i = 0; i < PQntuples(res); i++)
        ret_counts[col_phase(res, i, 0)] += col_int(res, i, 1);
    return 0;
}

/* ---- job logs ---- */

static int op_job_log_put(void *impl, int64_t id, const char *worker, const char *data, size_t len,
                          uint64_t start_offset, bool truncated, bool final,
                          struct kiln_error **err)
{
    struct pg *pg = impl;
    _cleanup_conn_ struct conn *c = conn_get(pg);
    _cleanup_result_ PGresult *res = NULL;
    int r = tx_begin(c, err);
    if (r >= 0)
        r = query(c, sql_log_lock_spec, &res, "lock spec of job", err, "i", id);
    if (r < 0)
        return kiln_store_errctx(r, err, "job %lld", (long long)id);
    if (PQntuples(res) == 0)
        return kiln_error_set(err, KILN_ENOTFOUND, 0, "job %lld: not found", (long long)id);
    int64_t n = final
                    ? exec(c, sql_log_put, "store log", err, "ibitii", id, data, len, (int64_t)len,
                           truncated ? "true" : "false", now_ms(pg), (int64_t)start_offset)
                    : exec(c, sql_log_put_live, "store live log", err, "ibiiit", id, data, len,
                           (int64_t)len, now_ms(pg), (int64_t)start_offset, worker);
    r = n < 0 ? (int)n : tx_commit(c, err);
    if (r < 0)
        return kiln_store_errctx(r, err, "job %lld", (long long)id);
    if (final)
        return 0;
    return n > 0 ? 1 : 0;
}

static int op_job_log_get(void *impl, int64_t id, struct kiln_store_job_log *ret,
                          struct kiln_error **err)
{
    _cleanup_conn_ struct conn *c = conn_get(impl);
    _cleanup_result_ PGresult *res = NULL;
    int r = query(c, sql_log_get, &res, "get log", err, "i", id);
    if (r < 0)
        return kiln_store_errctx(r, err, "job %lld", (long long)id);
    if (PQntuples(res) == 0)
        return kiln_error_set(err, KILN_ENOTFOUND, 0, "job %lld: no stored log", (long long)id);
    /* text results: the BYTEA comes as hex ("\\x..."); PQunescapeBytea decodes it */
    size_t len = 0;
    unsigned char *raw = PQgetisnull(res, 0, 0)
                             ? NULL
                             : PQunescapeBytea((const unsigned char *)PQgetvalue(res, 0, 0), &len);
    if (!raw && !PQgetisnull(res, 0, 0))
        return kiln_error_set(err, KILN_EIO, 0, "job %lld: cannot decode the stored log",
                              (long long)id);
    char *v = kiln_xmalloc(len + 1);
    if (len)
        memcpy(v, raw, len);
    v[len] = '\0';
    PQfreemem(raw);
    int64_t start = col_int(res, 0, 2);
    ret->data = v;
    ret->len = len;
    ret->truncated = col_bool(res, 0, 1);
    ret->start_offset = start > 0 ? (uint64_t)start : 0;
    ret->final = col_bool(res, 0, 3);
    ret->stored_ms = col_int(res, 0, 4);
    return 0;
}

/* ---- secrets ---- */

static int op_secret_put(void *impl, const char *name, const char *value, struct kiln_error **err)
{
    struct pg *pg = impl;
    _cleanup_conn_ struct conn *c = conn_get(pg);
    /* Insert, else update; a delete in between: again. */
    for (int attempt = 0; attempt < PUT_TRIES; attempt++) {
        int64_t n =
            exec(c, sql_secret_insert, "insert secret", err, "tti", name, value, now_ms(pg));
        if (n > 0)
            return 1;
        if (n == 0)
            n = exec(c, sql_secret_update, "update secret", err, "tt", name, value);
        if (n < 0)
            return kiln_store_errctx((int)n, err, "secret '%s'", name);
        if (n > 0)
            return 0;
    }
    return kiln_error_set(err, KILN_ETIMEOUT, 0, "secret '%s': changed by others %d times", name,
                          PUT_TRIES);
}

static int op_secret_list(void *impl, struct kiln_store_secret_list *ret, struct kiln_error **err)
{
    _cleanup_conn_ struct conn *c = conn_get(impl);
    _cleanup_result_ PGresult *res = NULL;
    int r = query(c, sql_secret_list, &res, "list secrets", err, "");
    if (r < 0)
        return r;
    int n = PQntuples(res);
    if (n > 0) {
        ret->v = kiln_xcalloc((size_t)n, sizeof(*ret->v));
        for (int i = 0; i < n; i++) {
            ret->v[i].name = col_str(res, i, 0);
            ret->v[i].created_ms = col_int(res, i, 1);
        }
        ret->n = (size_t)n;
    }
    return 0;
}

static int op_secret_get_value(void *impl, const char *name, char **ret, struct kiln_error **err)
{
    _cleanup_conn_ struct conn *c = conn_get(impl);
    _cleanup_result_ PGresult *res = NULL;
    int r = query(c, sql_secret_get, &res, "get secret", err, "t", name);
    if (r < 0)
        return kiln_store_errctx(r, err, "secret '%s'", name);
    if (PQntuples(res) == 0)
        return kiln_error_set(err, KILN_ENOTFOUND, 0, "secret '%s': not found", name);
    *ret = col_str(res, 0, 0);
    if (!*ret)
        *ret = kiln_xstrdup("");
    return 0;
}

static int op_secret_delete(void *impl, const char *name, struct kiln_error **err)
{
    _cleanup_conn_ struct conn *c = conn_get(impl);
    int64_t n = exec(c, sql_secret_delete, "delete secret", err, "t", name);
    if (n < 0)
        return kiln_store_errctx((int)n, err, "secret '%s'", name);
    if (n == 0)
        return kiln_error_set(err, KILN_ENOTFOUND, 0, "secret '%s': not found", name);
    return 0;
}

/* ---- images ---- */

static int op_image_add(void *impl, const char *url, enum kiln_image_source source,
                        struct kiln_error **err)
{
    struct pg *pg = impl;
    _cleanup_conn_ struct conn *c = conn_get(pg);
    int64_t n = exec(c, sql_image_add, "add image", err, "tti", url, kiln_image_source_name(source),
                     now_ms(pg));
    if (n < 0)
        return kiln_store_errctx((int)n, err, "image '%s'", url);
    return n > 0 ? 1 : 0;
}

static int op_image_list(void *impl, struct kiln_store_image_list *ret, struct kiln_error **err)
{
    _cleanup_conn_ struct conn *c = conn_get(impl);
    _cleanup_result_ PGresult *res = NULL;
    int r = query(c, sql_image_list, &res, "list images", err, "");
    if (r < 0)
        return r;
    int n = PQntuples(res);
    if (n > 0) {
        ret->v = kiln_xcalloc((size_t)n, sizeof(*ret->v));
        for (int i = 0; i < n; i++) {
            struct kiln_store_image *im = &ret->v[i];
            im->url = col_str(res, i, 0);
            const char *src = PQgetisnull(res, i, 1) ? NULL : PQgetvalue(res, i, 1);
            im->source = src && strcmp(src, "admin") == 0 ? KILN_IMAGE_ADMIN : KILN_IMAGE_BUILT;
            im->created_ms = col_int(res, i, 2);
        }
        ret->n = (size_t)n;
    }
    return 0;
}

/* ---- settings ---- */

static int op_setting_get(void *impl, const char *key, char **ret, struct kiln_error **err)
{
    _cleanup_conn_ struct conn *c = conn_get(impl);
    _cleanup_result_ PGresult *res = NULL;
    int r = query(c, sql_setting_get, &res, "get setting", err, "t", key);
    if (r < 0)
        return kiln_store_errctx(r, err, "setting '%s'", key);
    if (PQntuples(res) == 0)
        return 0;
    *ret = col_str(res, 0, 0);
    if (!*ret)
        *ret = kiln_xstrdup("");
    return 1;
}

static int op_setting_set(void *impl, const char *key, const char *value, struct kiln_error **err)
{
    _cleanup_conn_ struct conn *c = conn_get(impl);
    int64_t n = value ? exec(c, sql_setting_set, "set setting", err, "tt", key, value)
                      : exec(c, sql_setting_delete, "delete setting", err, "t", key);
    if (n < 0)
        return kiln_store_errctx((int)n, err, "setting '%s'", key);
    return 0;
}

/* ---- open and close ---- */

static void pg_free(void *impl)
{
    struct pg *pg = impl;
    if (!pg)
        return;
    for (size_t i = 0; i < pg->nconns; i++)
        if (pg->conns[i].db)
            PQfinish(pg->conns[i].db);
    pthread_cond_destroy(&pg->cond);
    pthread_mutex_destroy(&pg->lock);
    free(pg->conns);
    free(pg->free_idx);
    free(pg->conninfo);
    free(pg->label);
    free(pg);
}

/*
 * "host/dbname" (or "host:port/dbname") of a connection string, leaving out
 * everything else (the password). What the string leaves out comes from
 * `db` (libpq's defaults) when there is one.
 */
static int conninfo_label(const char *conninfo, PGconn *db, char **ret, struct kiln_error **err)
{
    /* libpq's parse errors may quote the string: not shown. */
    PQconninfoOption *opts = PQconninfoParse(conninfo, NULL);
    if (!opts)
        return kiln_error_set(err, KILN_EINVAL, 0,
                              "invalid PostgreSQL connection string (not shown: it may hold "
                              "a password)");
    const char *host = NULL, *hostaddr = NULL, *port = NULL, *dbname = NULL, *user = NULL;
    for (PQconninfoOption *o = opts; o->keyword; o++) {
        if (!o->val || !*o->val)
            continue;
        if (strcmp(o->keyword, "host") == 0)
            host = o->val;
        else if (strcmp(o->keyword, "hostaddr") == 0)
            hostaddr = o->val;
        else if (strcmp(o->keyword, "port") == 0)
            port = o->val;
        else if (strcmp(o->keyword, "dbname") == 0)
            dbname = o->val;
        else if (strcmp(o->keyword, "user") == 0)
            user = o->val;
    }
    if (!host && !hostaddr && db && PQhost(db) && *PQhost(db))
        host = PQhost(db);
    if (!dbname && db && PQdb(db) && *PQdb(db))
        dbname = PQdb(db);
    const char *h = host ? host : hostaddr ? hostaddr : "localhost";
    const char *d = dbname ? dbname : user ? user : "";
    *ret = port ? kiln_xasprintf("%s:%s/%s", h, port, d) : kiln_xasprintf("%s/%s", h, d);
    PQconninfoFree(opts);
    return 0;
}

/* Server notices ("relation already exists, skipping") go to the log, not stderr. */
static void on_notice(void *userdata, const char *message)
{
    _cleanup_free_ char *msg = one_line(message);
    kiln_log(KILN_LOG_DEBUG, "store: '%s': %s", (const char *)userdata, msg);
}

/*
 * Open connection `c`. The connection string comes last, so what it says
 * wins over kiln's defaults (a 10 s connect timeout, UTF-8, the
 * application name).
 */
static int conn_open(struct pg *pg, struct conn *c, struct kiln_error **err)
{
    static const char *const keys[] = {"connect_timeout", "client_encoding", "application_name",
                                       "dbname", NULL};
    const char *values[] = {"10", "UTF8", "kiln", pg->conninfo, NULL};
    c->owner = pg;
    c->db = PQconnectdbParams(keys, values, 1);
    if (!c->db)
        return kiln_error_set(err, KILN_EIO, 0, "connect to '%s': out of memory", pg->label);
    if (!pg->label_final) {
        /* Now with what libpq filled in (its default host and database). */
        char *label = NULL;
        if (conninfo_label(pg->conninfo, c->db, &label, NULL) >= 0) {
            free(pg->label);
            pg->label = label;
        }
        pg->label_final = true;
    }
    PQsetNoticeProcessor(c->db, on_notice, pg->label);
    if (PQstatus(c->db) != CONNECTION_OK) {
        _cleanup_free_ char *msg = one_line(PQerrorMessage(c->db));
        return kiln_error_set(err, KILN_EIO, 0, "connect to '%s': %s", pg->label, msg);
    }
    return 0;
}

static const struct kiln_store_ops pg_ops = {
    .name = "postgresql",
    .free = pg_free,
    .schema_version = op_schema_version,
    .check = op_check,
    .spec_put = op_spec_put,
    .spec_get = op_spec_get,
    .spec_delete = op_spec_delete,
    .spec_list = op_spec_list,
    .job_create = op_job_create,
    .job_get = op_job_get,
    .job_list = op_job_list,
    .job_set_log_path = op_job_set_log_path,
    .job_claim = op_job_claim,
    .job_finish = op_job_finish,
    .job_heartbeat = op_job_heartbeat,
    .job_request_cancel = op_job_request_cancel,
    .job_cancel_requested = op_job_cancel_requested,
    .recover = op_recover,
    .running_workers = op_running_workers,
    .job_counts = op_job_counts,
    .job_log_put = op_job_log_put,
    .job_log_get = op_job_log_get,
    .secret_put = op_secret_put,
    .secret_list = op_secret_list,
    .secret_get_value = op_secret_get_value,
    .secret_delete = op_secret_delete,
    .image_add = op_image_add,
    .image_list = op_image_list,
    .setting_get = op_setting_get,
    .setting_set = op_setting_set,
};

static int open_pg(const char *conninfo, const struct kiln_store_options *opts,
                   struct kiln_store **ret, struct kiln_error **err)
{
    if (!conninfo || !*conninfo)
        return kiln_error_set(err, KILN_EINVAL, 0, "no PostgreSQL connection string");
    if (!PQisthreadsafe())
        return kiln_error_set(err, KILN_EUNSUPPORTED, 0, "libpq was built without thread support");
    char *label = NULL;
    int r = conninfo_label(conninfo, NULL, &label, err);
    if (r < 0)
        return r;
    struct pg *pg = kiln_xcalloc(1, sizeof(*pg));
    pg->conninfo = kiln_xstrdup(conninfo);
    pg->label = label;
    if (opts)
        pg->opts = *opts;
    size_t n = pg->opts.connections ? pg->opts.connections : DEFAULT_CONNECTIONS;
    if (n > MAX_CONNECTIONS)
        n = MAX_CONNECTIONS;
    pthread_mutex_init(&pg->lock, NULL);
    pthread_cond_init(&pg->cond, NULL);
    pg->conns = kiln_xcalloc(n, sizeof(*pg->conns));
    pg->free_idx = kiln_xcalloc(n, sizeof(*pg->free_idx));
    pg->nconns = n;
    for (size_t i = 0; i < n && r >= 0; i++) {
        r = conn_open(pg, &pg->conns[i], err);
        if (r >= 0 && i == 0)
            r = migrate(pg, &pg->conns[0], err);
        tx_rollback(&pg->conns[i]);
    }
    if (r < 0) {
        pg_free(pg);
        return r;
    }
    for (size_t i = 0; i < n; i++)
        pg->free_idx[pg->nfree++] = n - 1 - i;
    *ret = kiln_store_new(&pg_ops, pg);
    return 0;
}

int kiln_store_open_postgres(const char *conninfo, const struct kiln_store_options *opts,
                             struct kiln_store **ret, struct kiln_error **err)
{
    return kiln_store_errctx(open_pg(conninfo, opts, ret, err), err, "store");
}
