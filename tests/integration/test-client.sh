#!/bin/sh
# TAP test of the registry client (src/registry/client.c, http.c) against real
# docker-registry instances: no auth, htpasswd Basic, token auth, and a fault
# proxy in front of the no-auth one, and a second no-auth registry with its own
# fault proxy (registry -> registry copies). The C program does the checks.
# usage: test-client.sh TEST_CLIENT_BINARY [SOURCE_DIR [KILN_BINARY]]
#   (SOURCE_DIR holds lib/; KILN_BINARY, for 'kiln copy' option checks, defaults
#   to the kiln next to the build directory of TEST_CLIENT_BINARY, if there)
set -u
BIN=$1
REGISTRY_LIB=$(cd "${2:-$(dirname "$0")}" && pwd)/lib
KT_KILN=${3:-$(dirname "$BIN")/../../kiln}
if [ -x "$KT_KILN" ]; then
    export KT_KILN
else
    unset KT_KILN
fi
# shellcheck source-path=SCRIPTDIR source=lib/registry.sh
. "$REGISTRY_LIB/registry.sh"

if ! registry_available; then
    echo "1..0 # SKIP $REGISTRY_MISSING"
    exit 0
fi

bail() {
    echo "Bail out! $*"
    exit 1
}

registry_start noauth || bail "cannot start a registry without auth"
KT_NOAUTH=$REGISTRY
KT_NOAUTH_DIR=$REGISTRY_DIR
export KT_NOAUTH KT_NOAUTH_DIR
if [ -f "$REGISTRY_LIB/faultproxy.py" ]; then
    # shellcheck disable=SC2119 # no rules at start: the C test adds them
    faultproxy_start || bail "cannot start the fault proxy"
    KT_PROXY=$FAULTPROXY
    KT_PROXY_LOG=$FAULTPROXY_LOG
    export KT_PROXY KT_PROXY_LOG
fi

# a registry that refuses deletes (storage.delete.enabled false, through
# docker-registry's environment override of its configuration)
REGISTRY_STORAGE_DELETE_ENABLED=false
export REGISTRY_STORAGE_DELETE_ENABLED
registry_start noauth || bail "cannot start a registry without deletes"
unset REGISTRY_STORAGE_DELETE_ENABLED
KT_NODELETE=$REGISTRY
export KT_NODELETE

registry_start basic || bail "cannot start a registry with Basic auth"
KT_BASIC=$REGISTRY
export KT_BASIC

registry_start token || bail "cannot start a registry with token auth"
KT_TOKEN=$REGISTRY
KT_TOKEN_DIR=$REGISTRY_DIR
KT_TOKEN_REALM=$REGISTRY_REALM
KT_TOKEN_SERVICE=$REGISTRY_SERVICE
export KT_TOKEN KT_TOKEN_DIR KT_TOKEN_REALM KT_TOKEN_SERVICE

KT_USER=$REGISTRY_USER
KT_PASSWORD=$REGISTRY_PASSWORD
KT_RO_USER=$REGISTRY_RO_USER
KT_RO_PASSWORD=$REGISTRY_RO_PASSWORD
export KT_USER KT_PASSWORD KT_RO_USER KT_RO_PASSWORD

# A fake registry over TLS (self-signed: loopback hosts skip verification).
# Repository kt/r wants Basic auth and redirects blob GETs/HEADs to a
# "storage" server on another port, which records whether an Authorization
# header reached it; kt/b wants Bearer tokens from its /token endpoint and
# honours each token for two requests only (to exercise the re-ask).
T=$(mktemp -d "${TMPDIR:-/tmp}/kiln-test-client.XXXXXX") || bail "mktemp"
redir_pid=
proxy2_pid=
# shellcheck disable=SC2317 # called from the traps
cleanup() {
    if [ -n "$redir_pid" ]; then
        kill "$redir_pid" 2>/dev/null
        wait "$redir_pid" 2>/dev/null
    fi
    if [ -n "$proxy2_pid" ]; then
        kill "$proxy2_pid" 2>/dev/null
        wait "$proxy2_pid" 2>/dev/null
    fi
    registry_cleanup
    rm -rf "$T"
}
trap 'cleanup' EXIT
trap 'cleanup; exit 130' INT TERM HUP

# The second no-auth registry (the destination of registry -> registry copies)
# and a fault proxy of its own in front of it (faultproxy_start keeps one
# proxy only, so this one is started here).
if [ -n "${KT_PROXY:-}" ]; then
    registry_start noauth || bail "cannot start a second registry without auth"
    KT_NOAUTH2=$REGISTRY
    export KT_NOAUTH2
    "$REGISTRY_PYTHON" "$REGISTRY_LIB/faultproxy.py" --upstream "$KT_NOAUTH2" \
        --port-file "$T/proxy2.port" --log "$T/proxy2.log" </dev/null >"$T/proxy2.out" 2>&1 &
    proxy2_pid=$!
    i=0
    while [ ! -s "$T/proxy2.port" ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
    [ -s "$T/proxy2.port" ] || bail "cannot start the second fault proxy"
    KT_PROXY2=127.0.0.1:$(cat "$T/proxy2.port")
    KT_PROXY2_LOG=$T/proxy2.log
    export KT_PROXY2 KT_PROXY2_LOG
fi
# It listens on 127.0.0.1 only. Reached under the name registry.kiln.test
# (pinned to 127.0.0.1 with the client's resolve option, no DNS), it is not a
# loopback host to kiln, so TLS is verified there, which the test checks too.
san="DNS:localhost,DNS:registry.kiln.test,IP:127.0.0.1"
if command -v openssl >/dev/null 2>&1 &&
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=localhost \
        -addext "subjectAltName=$san" \
        -keyout "$T/key.pem" -out "$T/cert.pem" >/dev/null 2>&1; then
    head -c 200000 /dev/urandom >"$T/blob"
    cat >"$T/redirector.py" <<'PY'
import base64, hashlib, json, ssl, sys, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

blob = open(sys.argv[1], "rb").read()
digest = "sha256:" + hashlib.sha256(blob).hexdigest()
cert, key, portfile, logfile = sys.argv[2:6]
log = open(logfile, "a", buffering=1)
want = "Basic " + base64.b64encode(b"u:p").decode()
ports = {}

class Storage(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def do_GET(self):
        log.write("storage %s auth=%s\n" % (self.path.split("?")[0],
                  "yes" if self.headers.get("Authorization") else "no"))
        self.send_response(200)
        self.send_header("Content-Length", str(len(blob)))
        self.end_headers()
        if self.command == "GET":
            self.wfile.write(blob)
    do_HEAD = do_GET

class Registry(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def reply(self, code, headers=()):
        self.send_response(code)
        for k, v in headers: self.send_header(k, v)
        self.send_header("Content-Length", "0")
        self.end_headers()
    def do_GET(self):
        auth = self.headers.get("Authorization")
        if self.path.startswith("/token?"):
            # Bearer flow: tokens t1, t2, ... each valid for two requests
            if auth != want:
                return self.reply(401, [("WWW-Authenticate", 'Basic realm="fake"')])
            ports["n"] = ports.get("n", 0) + 1
            ports["uses"] = 0
            log.write("token %s issued t%d\n" % (self.path, ports["n"]))
            body = ('{"token": "t%d", "expires_in": 300}' % ports["n"]).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            return self.wfile.write(body)
        if self.path.startswith("/v2/kt/b/"):
            good = auth == "Bearer t%d" % ports.get("n", 0) and ports.get("uses", 0) < 2
            log.write("bearer %s %s\n" % (self.path, "ok" if good else "refused"))
            if not good:
                realm = "https://127.0.0.1:%d/token" % self.server.server_address[1]
                return self.reply(401, [("WWW-Authenticate", 'Bearer realm="%s",service="fake",'
                                         'scope="repository:kt/b:pull"' % realm)])
            ports["uses"] += 1
            return self.reply(200, [("Docker-Content-Digest", digest)])
        log.write("registry %s auth=%s\n" % (self.path, "yes" if auth == want else "no"))
        if auth != want:
            self.reply(401, [("WWW-Authenticate", 'Basic realm="fake"')])
        elif self.path == "/v2/":
            self.reply(200)
        elif self.path.startswith("/v2/kt/paged/tags/list") or \
                self.path.startswith("/v2/kt/nolast/tags/list") or \
                self.path.startswith("/v2/kt/badtag/tags/list"):
            # tags lists: kt/paged honours n and last (distribution spec), kt/nolast
            # honours n only, kt/badtag names an invalid tag
            q = dict(p.split("=", 1) for p in self.path.split("?", 1)[-1].split("&") if "=" in p)
            tags = ["p%02d" % i for i in range(23)]
            if "/badtag/" in self.path:
                tags = ["ok", "bad tag"]
            if "/paged/" in self.path and "last" in q:
                tags = [t for t in tags if t > q["last"]]
            n = int(q.get("n", "1000"))
            hdrs = [("Content-Type", "application/json")]
            if len(tags) > n:
                tags = tags[:n]
                repo = self.path.split("/tags/list", 1)[0]
                hdrs.append(("Link", '<%s/tags/list?n=%d&last=%s>; rel="next"' % (repo, n, tags[-1])))
            body = json.dumps({"name": "kt/x", "tags": tags}).encode()
            self.send_response(200)
            for k, v in hdrs: self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif self.path.startswith("/v2/kt/linked/tags/list") or \
                self.path.startswith("/v2/kt/offsite/tags/list"):
            # tags lists paged by Link only, 4 tags a page whatever n says, with an
            # opaque cursor; kt/offsite's Link leads to another origin
            q = dict(p.split("=", 1) for p in self.path.split("?", 1)[-1].split("&") if "=" in p)
            tags = ["p%02d" % i for i in range(23)]
            k = int(q.get("cursor", "0"))
            hdrs = [("Content-Type", "application/json")]
            if k + 4 < len(tags):
                where = "http://127.0.0.2:1" if "/offsite/" in self.path else ""
                hdrs.append(("Link", '<%s/v2/kt/%s/tags/list?cursor=%d>; rel="next"' %
                             (where, "offsite" if where else "linked", k + 4)))
            body = json.dumps({"name": "kt/x", "tags": tags[k:k + 4]}).encode()
            self.send_response(200)
            for k2, v in hdrs: self.send_header(k2, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif self.path == "/v2/kt/r/blobs/" + digest:
            self.reply(307, [("Location", "http://127.0.0.1:%d/bucket/obj?X-Sig=s3cr3t" % ports["s"])])
        else:
            self.reply(404)
    do_HEAD = do_GET

s = ThreadingHTTPServer(("127.0.0.1", 0), Storage)
r = ThreadingHTTPServer(("127.0.0.1", 0), Registry)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
r.socket = ctx.wrap_socket(r.socket, server_side=True)
ports["s"] = s.server_address[1]
threading.Thread(target=s.serve_forever, daemon=True).start()
with open(portfile + ".tmp", "w") as f:
    f.write("%d\n" % r.server_address[1])
import os; os.rename(portfile + ".tmp", portfile)
r.serve_forever()
PY
    "$REGISTRY_PYTHON" "$T/redirector.py" "$T/blob" "$T/cert.pem" "$T/key.pem" "$T/port" \
        "$T/redirector.log" </dev/null >"$T/redirector.out" 2>&1 &
    redir_pid=$!
    i=0
    while [ ! -s "$T/port" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
    if [ -s "$T/port" ]; then
        KT_REDIRECT=127.0.0.1:$(cat "$T/port")
        KT_REDIRECT_BLOB=$T/blob
        KT_REDIRECT_LOG=$T/redirector.log
        KT_REDIRECT_CA=$T/cert.pem
        export KT_REDIRECT KT_REDIRECT_BLOB KT_REDIRECT_LOG KT_REDIRECT_CA
        KT_REDIRECT_REMOTE=registry.kiln.test:$(cat "$T/port")
        export KT_REDIRECT_REMOTE
    fi
fi

"$BIN"
status=$?
exit $status
