#!/bin/sh
# kiln's main job on embedded defaults, on a fresh Debian 12 machine (as root):
# install the dependencies, build kiln, start a local registry, bootstrap the
# JupyterHub base image into it, start a local pip index, start `kiln serve`
# (SQLite, the build workers, the JSON API and the web page) and build the
# sample spec through it, then print the web page's URL and the admin token.
#
# Everything keeps running afterwards, with its pid in /var/lib/kiln/*.pid:
#   registry 127.0.0.1:5000, pip index 127.0.0.1:8000, kiln serve 127.0.0.1:8080
# Stop them with: for p in /var/lib/kiln/*.pid; do kill "$(cat "$p")"; done
set -eu
cd "$(dirname "$0")/.."

REGISTRY=${KILN_QUICKSTART_REGISTRY:-127.0.0.1:5000}
STATE=${KILN_STATE_DIR:-/var/lib/kiln}
BASE=$REGISTRY/kiln/base:bookworm

scripts/install-deps.sh
if [ ! -f build/build.ninja ]; then
    meson setup build --buildtype=release -Dwerror=true >/dev/null
fi
ninja -C build >/dev/null
KILN=build/kiln
echo "== kiln $($KILN --version | cut -d' ' -f2)"

# A local registry (Debian's docker-registry), started once.
if ! curl -fsS "http://$REGISTRY/v2/" >/dev/null 2>&1; then
    mkdir -p "$STATE/registry"
    cat >"$STATE/registry.yml" <<YML
version: 0.1
storage:
  filesystem:
    rootdirectory: $STATE/registry
  delete:
    enabled: true
http:
  addr: $REGISTRY
YML
    echo "== starting docker-registry on $REGISTRY (data in $STATE/registry)"
    docker-registry serve "$STATE/registry.yml" >"$STATE/registry.log" 2>&1 &
    echo $! >"$STATE/registry.pid"
    i=0
    until curl -fsS "http://$REGISTRY/v2/" >/dev/null 2>&1; do
        i=$((i + 1))
        [ $i -lt 50 ] || { echo "docker-registry did not start: see $STATE/registry.log"; exit 1; }
        sleep 0.2
    done
fi

# The JupyterHub base image, bootstrapped from Debian packages once.
if $KILN inspect -q "$BASE" >/dev/null 2>&1; then
    echo "== base image $BASE is there"
else
    echo "== bootstrapping the base image $BASE (mmdebstrap, about a minute)"
    $KILN base --push "$BASE"
fi
$KILN inspect "$BASE"

# A local pip index with a demo wheel, unless one is configured.
if [ -z "${KILN_PIP_INDEX_URL:-}" ]; then
    PIP_PORT=${KILN_QUICKSTART_PIP_PORT:-8000}
    export KILN_PIP_INDEX_URL="http://127.0.0.1:$PIP_PORT/simple"
    if ! curl -fsS "$KILN_PIP_INDEX_URL/" >/dev/null 2>&1; then
        echo "== starting a local pip index on 127.0.0.1:$PIP_PORT (data in $STATE/wheels)"
        python3 tests/integration/lib/wheelhouse.py make "$STATE/wheels" kilntest-hello==1.0 >/dev/null
        python3 tests/integration/lib/wheelhouse.py serve "$STATE/wheels" --port "$PIP_PORT" \
            --port-file "$STATE/wheels.port" >"$STATE/wheels.log" 2>&1 &
        echo $! >"$STATE/wheels.pid"
        i=0
        until curl -fsS "$KILN_PIP_INDEX_URL/" >/dev/null 2>&1; do
            i=$((i + 1))
            [ $i -lt 50 ] || { echo "the pip index did not start: see $STATE/wheels.log"; exit 1; }
            sleep 0.2
        done
    fi
fi

# kiln serve: the store (SQLite), the build workers, the JSON API, the web page.
LISTEN=${KILN_QUICKSTART_LISTEN:-127.0.0.1:8080}
export KILN_URL="http://$LISTEN"
if [ ! -s "$STATE/admin-token" ]; then
    (umask 077 && od -An -N32 -tx1 /dev/urandom | tr -d ' \n' >"$STATE/admin-token")
fi
export KILN_TOKEN="$(cat "$STATE/admin-token")"
if ! curl -fsS "$KILN_URL/healthz" >/dev/null 2>&1; then
    echo "== starting kiln serve on $KILN_URL (data in $STATE)"
    KILN_ADMIN_TOKEN="$KILN_TOKEN" KILN_REGISTRY_ENDPOINT="$REGISTRY" \
        KILN_REPO_PREFIX="${KILN_REPO_PREFIX:-$REGISTRY/kiln}" \
        setsid "$PWD/$KILN" serve --listen "$LISTEN" --data-dir "$STATE" >"$STATE/serve.log" 2>&1 &
    echo $! >"$STATE/serve.pid"
    i=0
    until curl -fsS "$KILN_URL/healthz" >/dev/null 2>&1; do
        i=$((i + 1))
        [ $i -lt 100 ] || { echo "kiln serve did not start: see $STATE/serve.log"; exit 1; }
        sleep 0.2
    done
fi

spec=examples/quickstart.yaml
echo "== the sample spec $spec (revision $($KILN spec hash "$spec"))"
$KILN apply -f "$spec"
job=$($KILN get jobs --spec quickstart -o json | jq -r '.items[0].id // empty')
if [ -n "$job" ]; then
    echo "== building it: job $job (kiln logs $job -f)"
    $KILN logs "$job" -f || { echo "== the build failed: see above"; exit 1; }
fi
$KILN get specs
echo
echo "== kiln serve is running: open $KILN_URL/ and log in with the admin token:"
echo "   $KILN_TOKEN"
echo "   (also in $STATE/admin-token; the CLI reads KILN_URL and KILN_TOKEN)"
