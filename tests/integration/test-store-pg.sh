#!/bin/sh
# TAP test: the service store's tests (tests/unit/test-svcstore) on the
# PostgreSQL backend, against a private PostgreSQL 15 server: its own data
# directory under /tmp, a Unix socket in that directory, no TCP port
# (listen_addresses=''), trust authentication on the socket. The server is
# stopped and the directory removed on exit, also on failure.
# usage: test-store-pg.sh TEST_SVCSTORE...   (each program runs in turn)
# KILN_TEST_KILN: a kiln binary; then `kiln serve --store` is checked too.
# KILN_PG_BIN: the PostgreSQL bin directory (default /usr/lib/postgresql/15/bin).
set -u
if [ $# -eq 0 ]; then
    echo "Bail out! usage: test-store-pg.sh TEST_SVCSTORE..."
    exit 1
fi
for b in "$@"; do
    if [ ! -x "$b" ]; then
        echo "Bail out! test program '$b' is not an executable"
        exit 1
    fi
done

PGBIN=${KILN_PG_BIN:-/usr/lib/postgresql/15/bin}
for t in initdb pg_ctl createdb; do
    if [ ! -x "$PGBIN/$t" ]; then
        echo "1..0 # SKIP PostgreSQL 15 not installed ($PGBIN/$t is missing)"
        exit 0
    fi
done

# initdb and postgres refuse to run as root: run them as 'postgres' then.
AS=
if [ "$(id -u)" -eq 0 ]; then
    if ! id postgres >/dev/null 2>&1; then
        echo "1..0 # SKIP running as root and there is no 'postgres' user to run the server"
        exit 0
    fi
    if ! command -v runuser >/dev/null 2>&1; then
        echo "1..0 # SKIP running as root and runuser is missing"
        exit 0
    fi
    AS="runuser -u postgres --"
fi

T=$(mktemp -d "${TMPDIR:-/tmp}/kiln-test-pg.XXXXXX") || {
    echo "Bail out! mktemp failed"
    exit 1
}
STARTED=
cleanup() {
    if [ -n "${SERVE_PID:-}" ]; then
        kill -TERM "$SERVE_PID" 2>/dev/null
        wait "$SERVE_PID" 2>/dev/null
    fi
    if [ -n "$STARTED" ]; then
        $AS "$PGBIN/pg_ctl" -D "$T/data" -m immediate -w stop >/dev/null 2>&1
    fi
    rm -rf "$T"
}
trap cleanup EXIT
trap 'cleanup; exit 130' INT TERM HUP

bail() { # bail MESSAGE LOG
    echo "Bail out! $1"
    [ -f "$2" ] && sed 's/^/# /' "$2"
    exit 1
}

if [ -n "$AS" ]; then
    chown postgres "$T" || bail "cannot give '$T' to postgres" /dev/null
fi
chmod 700 "$T"

# A UTF-8 database whose default collation is not byte order (ICU en-US,
# where "a_b" sorts before "Alpha"), so an ORDER BY that forgets COLLATE "C"
# shows; plain C.UTF-8 when the server has no ICU.
LOCALE="ICU en-US"
if ! $AS "$PGBIN/initdb" -D "$T/data" -U postgres -A trust -E UTF8 --locale=C.UTF-8 \
    --locale-provider=icu --icu-locale=en-US >"$T/initdb.log" 2>&1; then
    rm -rf "$T/data"
    LOCALE=C.UTF-8
    $AS "$PGBIN/initdb" -D "$T/data" -U postgres -A trust -E UTF8 --locale=C.UTF-8 \
        >"$T/initdb.log" 2>&1 || bail "initdb failed" "$T/initdb.log"
fi
$AS "$PGBIN/pg_ctl" -D "$T/data" -l "$T/server.log" -w -t 60 \
    -o "-c listen_addresses='' -c unix_socket_directories='$T' -c fsync=off" \
    start >"$T/pg_ctl.log" 2>&1 || bail "the PostgreSQL server did not start" "$T/server.log"
STARTED=1
$AS "$PGBIN/createdb" -h "$T" -U postgres kiln >"$T/createdb.log" 2>&1 ||
    bail "createdb failed" "$T/createdb.log"

URL="postgresql:///kiln?host=$T&user=postgres"
echo "# PostgreSQL $("$PGBIN/pg_ctl" --version | awk '{print $3}') in $T, locale $LOCALE"

# Each program prints its own TAP; several are joined into one stream.
n=0
fails=0
for b in "$@"; do
    echo "# $b"
    KILN_TEST_STORE_URL=$URL KILN_TEST_NO_BENCH=1 "$b" >"$T/out" 2>"$T/err"
    st=$?
    while IFS= read -r line; do
        case $line in
        "ok "* | "not ok "*)
            n=$((n + 1))
            case $line in "not ok "*) fails=$((fails + 1)) ;; esac
            # renumber: "ok 12 - x" -> "ok $n - x"
            printf '%s\n' "$line" | sed "s/^\(not \)\{0,1\}ok [0-9]*/\1ok $n/"
            ;;
        1..*) ;;
        *) printf '%s\n' "$line" ;;
        esac
    done <"$T/out"
    if [ -s "$T/err" ]; then
        sed 's/^/# stderr: /' "$T/err"
    fi
    n=$((n + 1))
    if [ "$st" -eq 0 ]; then
        echo "ok $n - $b exited 0"
    else
        echo "not ok $n - $b exited $st"
        fails=$((fails + 1))
    fi
done
# kiln serve --store on the same server (KILN_TEST_KILN: the kiln binary):
# a spec saved through the API is in PostgreSQL, survives a restart, and no
# SQLite file is made in the data directory; two kiln serve on one database
# (leases).
t() { # t COND_STATUS DESCRIPTION
    n=$((n + 1))
    if [ "$1" -eq 0 ]; then echo "ok $n - $2"; else
        echo "not ok $n - $2"
        fails=$((fails + 1))
    fi
}
SERVE_PID=
serve_start() {
    : >"$T/serve.err"
    env -u KILN_REGISTRY_ENDPOINT -u PRIMEHUB_CUSTOM_IMAGE_REGISTRY_ENDPOINT \
        KILN_ADMIN_TOKEN=pg-test-token "$KILN_TEST_KILN" serve --store "$SURL" \
        --listen 127.0.0.1:0 --data-dir "$T/serve" </dev/null 2>>"$T/serve.err" &
    SERVE_PID=$!
    i=0
    while [ $i -lt 200 ] && ! grep -q 'listening on http' "$T/serve.err"; do
        kill -0 "$SERVE_PID" 2>/dev/null || break
        sleep 0.1
        i=$((i + 1))
    done
    API=$(sed -n 's/.*listening on \(http:[^ ]*\).*/\1/p' "$T/serve.err" | head -n 1)
    [ -n "$API" ]
}
serve_stop() {
    [ -n "$SERVE_PID" ] || return 0
    kill -TERM "$SERVE_PID" 2>/dev/null
    wait "$SERVE_PID" 2>/dev/null
    SERVE_PID=
}
if [ -n "${KILN_TEST_KILN:-}" ] && [ -x "$KILN_TEST_KILN" ] && command -v curl >/dev/null 2>&1; then
    $AS "$PGBIN/createdb" -h "$T" -U postgres kilnserve >"$T/createdb2.log" 2>&1 ||
        bail "createdb kilnserve failed" "$T/createdb2.log"
    SURL="postgresql:///kilnserve?host=$T&user=postgres"
    mkdir -p "$T/serve"
    serve_start
    t $? "kiln serve --store postgresql://... starts"
    [ -n "$API" ] || sed 's/^/# serve: /' "$T/serve.err"
    code=$(curl -s -o "$T/post.json" -w '%{http_code}' -H 'Authorization: Bearer pg-test-token' \
        -H 'Content-Type: application/json' -X POST "$API/api/v1/specs" \
        --data '{"name":"pg-spec","baseImage":"127.0.0.1:5000/kiln/base:bookworm","packages":{"apt":["curl"]}}')
    [ "$code" = 201 ]
    t $? "POST /api/v1/specs answers 201 ($code)"
    serve_stop
    serve_start
    t $? "kiln serve starts again on the same database"
    code=$(curl -s -o "$T/get.json" -w '%{http_code}' -H 'Authorization: Bearer pg-test-token' \
        "$API/api/v1/specs/pg-spec")
    [ "$code" = 200 ] && grep -q '"pg-spec"' "$T/get.json"
    t $? "the spec is still there after the restart ($code)"
    serve_stop
    [ ! -e "$T/serve/kiln.db" ]
    t $? "no SQLite database in the data directory"
    n_specs=$($AS "$PGBIN/psql" -h "$T" -U postgres -d kilnserve -At -c "SELECT count(*) FROM specs WHERE name = 'pg-spec'" 2>/dev/null)
    [ "$n_specs" = 1 ]
    t $? "the spec row is in PostgreSQL (psql: $n_specs)"

    # Leases: a second kiln serve on the database leaves the running job of a
    # live one (this host, its pid) alone, and recovers at once the job of a
    # dead kiln serve of this host. The jobs are made by hand (no registry).
    psql_serve() { $AS "$PGBIN/psql" -h "$T" -U postgres -d kilnserve -At -c "$1" 2>>"$T/psql.err"; }
    serve_start
    t $? "kiln serve (the first) starts again"
    P1=$SERVE_PID
    sh -c 'exit 0' &
    DEAD=$!
    wait "$DEAD"
    H=$(hostname)
    NOW="(extract(epoch from now()) * 1000)::bigint"
    psql_serve "INSERT INTO specs (name, spec_json, revision, created_ms, updated_ms) VALUES
        ('lease-live', '{}', 'x', 1, 1), ('lease-dead', '{}', 'x', 1, 1)" >/dev/null
    LIVE=$(psql_serve "INSERT INTO jobs (spec_name, revision, spec_json, target_image, phase,
        created_ms, started_ms, heartbeat_ms, worker, attempt) VALUES ('lease-live', 'x', '{}',
        'r/x', 'Running', $NOW, $NOW, $NOW, '$H-$P1', 1) RETURNING id" | head -n 1)
    GONE=$(psql_serve "INSERT INTO jobs (spec_name, revision, spec_json, target_image, phase,
        created_ms, started_ms, heartbeat_ms, worker, attempt) VALUES ('lease-dead', 'x', '{}',
        'r/x', 'Running', $NOW, $NOW, $NOW, '$H-$DEAD/1', 1) RETURNING id" | head -n 1)
    [ -n "$LIVE" ] && [ -n "$GONE" ]
    t $? "a Running job of the live kiln serve ($H-$P1) and one of a dead one ($H-$DEAD/1)"
    mkdir -p "$T/serve2"
    env -u KILN_REGISTRY_ENDPOINT -u PRIMEHUB_CUSTOM_IMAGE_REGISTRY_ENDPOINT \
        KILN_ADMIN_TOKEN=pg-test-token "$KILN_TEST_KILN" serve --store "$SURL" \
        --listen 127.0.0.1:0 --data-dir "$T/serve2" </dev/null 2>"$T/serve2.err" &
    P2=$!
    i=0
    while [ $i -lt 200 ] && ! grep -q 'listening on http' "$T/serve2.err"; do
        kill -0 "$P2" 2>/dev/null || break
        sleep 0.1
        i=$((i + 1))
    done
    grep -q 'listening on http' "$T/serve2.err"
    t $? "a second kiln serve starts on the same database"
    got=$(psql_serve "SELECT phase || ' ' || COALESCE(error_message, '-') FROM jobs WHERE id = ${LIVE:-0}")
    [ "$got" = "Running -" ]
    t $? "the live kiln serve's job is left Running ($got)"
    got=$(psql_serve "SELECT phase || ' ' || COALESCE(error_message, '-') FROM jobs WHERE id = ${GONE:-0}")
    [ "$got" = "Failed interrupted" ]
    t $? "the dead kiln serve's job is recovered at once ($got)"
    grep -q 'left running by a stopped kiln' "$T/serve2.err"
    t $? "the second kiln serve says so"
    kill -TERM "$P2" 2>/dev/null
    wait "$P2" 2>/dev/null
    serve_stop
    got=$(psql_serve "SELECT phase FROM jobs WHERE id = ${LIVE:-0}")
    [ "$got" = "Running" ]
    t $? "stopping both leaves the other job alone ($got)"

    # Stored logs: a finished job built by another host (no log file here)
    # is served from the database's job_logs.
    DONE=$(psql_serve "INSERT INTO jobs (spec_name, revision, spec_json, target_image, phase,
        created_ms, started_ms, finished_ms, heartbeat_ms, worker, attempt, error_message)
        VALUES ('lease-dead', 'x', '{}', 'r/x', 'Failed', $NOW, $NOW, $NOW, $NOW,
        'otherhost-1', 1, 'boom') RETURNING id" | head -n 1)
    psql_serve "INSERT INTO job_logs (job_id, log, size, truncated, stored_ms) VALUES
        (${DONE:-0}, convert_to(E'remote line 1\\nremote line 2\\n', 'UTF8'), 28, FALSE, 1)" >/dev/null
    [ -n "$DONE" ]
    t $? "a finished job of another host with a stored log ($DONE)"
    serve_start
    t $? "kiln serve starts again"
    code=$(curl -s -D "$T/log.h" -o "$T/log.txt" -w '%{http_code}' \
        -H 'Authorization: Bearer pg-test-token' "$API/api/v1/jobs/${DONE:-0}/log")
    [ "$code" = 200 ] && [ "$(cat "$T/log.txt")" = "$(printf 'remote line 1\nremote line 2')" ] &&
        grep -qi '^X-Kiln-Log-Source: store' "$T/log.h"
    t $? "GET /jobs/$DONE/log serves the stored log ($code)"
    got=$(curl -s -H 'Authorization: Bearer pg-test-token' "$API/api/v1/jobs/${DONE:-0}/log?tail=1")
    [ "$got" = "remote line 2" ]
    t $? "?tail=1 of the stored log ($got)"
    got=$(curl -s -H 'Authorization: Bearer pg-test-token' "$API/api/v1/jobs/${DONE:-0}/events" |
        grep -c '^event: log')
    [ "$got" = 2 ]
    t $? "/events sends the stored log's lines ($got)"

    # Live logs: a job Running on another host, with the live copy of its
    # log's end (from offset 1000) that its worker keeps in the database, is
    # served from it; ?follow=1 sends what the next copies add, then the
    # final copy's end, each byte once.
    RUN=$(psql_serve "INSERT INTO jobs (spec_name, revision, spec_json, target_image, phase,
        created_ms, started_ms, heartbeat_ms, worker, attempt) VALUES ('lease-dead', 'x', '{}',
        'r/x', 'Running', $NOW, $NOW, $NOW, 'otherhost-2', 1) RETURNING id" | head -n 1)
    psql_serve "INSERT INTO job_logs (job_id, log, size, truncated, stored_ms, start_offset,
        is_final) VALUES (${RUN:-0}, convert_to(E'live line 1\\n', 'UTF8'), 12, FALSE, 1, 1000,
        FALSE)" >/dev/null
    [ -n "$RUN" ]
    t $? "a job Running on another host with a live copy of its log ($RUN)"
    code=$(curl -s -D "$T/live.h" -o "$T/live.txt" -w '%{http_code}' \
        -H 'Authorization: Bearer pg-test-token' "$API/api/v1/jobs/${RUN:-0}/log")
    [ "$code" = 200 ] && grep -qi '^X-Kiln-Log-Source: store' "$T/live.h" &&
        [ "$(cat "$T/live.txt")" = "$(printf '[... 1000 bytes not shown ...]\nlive line 1')" ]
    t $? "GET /jobs/$RUN/log serves the live copy, after a line for the bytes left out ($code)"
    curl -s -N --max-time 30 -H 'Authorization: Bearer pg-test-token' \
        "$API/api/v1/jobs/${RUN:-0}/log?follow=1" >"$T/follow.txt" 2>/dev/null &
    FPID=$!
    wait_grep() { # wait_grep TEXT FILE: up to 10 s
        i=0
        while [ $i -lt 100 ] && ! grep -q "$1" "$2"; do
            sleep 0.1
            i=$((i + 1))
        done
        grep -q "$1" "$2"
    }
    wait_grep 'live line 1' "$T/follow.txt"
    t $? "?follow=1 sends the live copy"
    psql_serve "UPDATE job_logs SET log = convert_to(E'live line 2\\n', 'UTF8'), size = 12,
        start_offset = 1012 WHERE job_id = ${RUN:-0}" >/dev/null
    wait_grep 'live line 2' "$T/follow.txt"
    t $? "?follow=1 sends what a newer live copy adds"
    psql_serve "UPDATE jobs SET phase = 'Succeeded', finished_ms = $NOW WHERE id = ${RUN:-0}" >/dev/null
    FINAL='[log truncated: the first 1000 bytes are only on otherhost in /x]\nlive line 1\nlive line 2\nlive line 3\n'
    psql_serve "UPDATE job_logs SET log = convert_to(E'$FINAL', 'UTF8'), size = 99,
        truncated = TRUE, is_final = TRUE, start_offset = 1000 WHERE job_id = ${RUN:-0}" >/dev/null
    wait "$FPID"
    [ "$(cat "$T/follow.txt")" = "$(printf '[... 1000 bytes not shown ...]\nlive line 1\nlive line 2\nlive line 3')" ]
    t $? "?follow=1 ends with the final copy's end, each line once"
    serve_stop
    psql_serve "DELETE FROM specs WHERE name = 'lease-dead'" >/dev/null
    got=$(psql_serve "SELECT COUNT(*) FROM job_logs WHERE job_id IN (${DONE:-0}, ${RUN:-0})")
    [ "$got" = 0 ]
    t $? "deleting the spec deletes the stored logs ($got)"
else
    echo "# kiln serve --store: skipped (no KILN_TEST_KILN binary or no curl)"
fi

echo "1..$n"
[ "$fails" -eq 0 ]
