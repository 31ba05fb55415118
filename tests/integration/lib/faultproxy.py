#!/usr/bin/python3
"""A loopback reverse proxy that injects faults, for kiln's retry tests.

  faultproxy.py --upstream 127.0.0.1:5000 [--port 0] [--port-file F] [--log F]
                [--rule SPEC]...

Every request is passed to the upstream (the Host header is kept, so a
registry builds its Location URLs with the proxy's address and clients stay
on the proxy) unless a rule fires. A rule SPEC is comma-separated key=value
pairs:

  path=REGEX     re.search() against the request target (path and query);
                 default: any
  method=GET     only this method (default: any)
  skip=N         let the first N matching requests through untouched first
  count=N        fire for N matching requests (default 1; 0 = forever)
  status=503     answer this status without asking the upstream
  retry-after=S  with status: add "Retry-After: S"
  drop=K         pass the upstream's response on but close the connection
                 after K bytes of its body (a short read for the client)
  hangup=1       close the connection without any response
  delay=MS       wait MS milliseconds before going on (alone: a slow reply)
  norange=1      pass the request on without its Range header: the upstream
                 answers 200 with the whole body (a server ignoring Range)
  corrupt=K      pass the upstream's response on with byte K of its body
                 flipped (XOR 0xff; nothing changes when the body is shorter)
  cutbody=K      read K bytes of the request body (all of it when shorter),
                 then close the connection without passing anything on (a
                 request cut mid-body; the upstream never sees it)

Rules are tried in order; the first that matches and has firings left wins.
Faults combine in one rule (e.g. norange=1,drop=1000). Examples:
"path=^/v2/$,status=503,count=2,retry-after=1",
"path=/blobs/sha256:,method=GET,drop=1000".

Control endpoint on the same port (not proxied):
  GET    /__faultproxy/rules   the rules with their hit counts (JSON)
  POST   /__faultproxy/rules   add a rule: body is a SPEC or a JSON object
                               with the same keys; answers {"id": N}
  DELETE /__faultproxy/rules   remove all rules
  GET    /__faultproxy/stats   {"requests": N, "proxied": N, "faults": N}
The port actually bound is written to --port-file (atomically); each request
is logged as a JSON line to --log (with the request's Range header, if any,
as "range").
"""

import argparse
import http.client
import json
import os
import re
import socket
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "trailers",
    "transfer-encoding",
    "upgrade",
    "content-length",
}
CONTROL = "/__faultproxy/"
CHUNK = 64 * 1024


class Rule:
    KEYS = {"path", "method", "skip", "count", "status", "retry-after", "drop", "hangup", "delay",
            "norange", "corrupt", "cutbody"}

    def __init__(self, spec, rid):
        if isinstance(spec, str):
            d = {}
            for part in spec.split(","):
                if not part.strip():
                    continue
                k, sep, v = part.partition("=")
                if not sep:
                    raise ValueError("rule part %r is not key=value" % part)
                d[k.strip()] = v.strip()
            spec = d
        bad = set(spec) - self.KEYS
        if bad:
            raise ValueError("unknown rule keys: %s" % ", ".join(sorted(bad)))
        self.id = rid
        self.spec = dict(spec)
        self.path = re.compile(str(spec.get("path", "")))
        self.method = spec.get("method")
        self.skip = int(spec.get("skip", 0))
        self.count = int(spec.get("count", 1))
        self.status = int(spec["status"]) if "status" in spec else None
        self.retry_after = spec.get("retry-after")
        self.drop = int(spec["drop"]) if "drop" in spec else None
        self.hangup = str(spec.get("hangup", "0")) not in ("0", "", "false")
        self.delay = int(spec.get("delay", 0)) / 1000.0
        self.norange = str(spec.get("norange", "0")) not in ("0", "", "false")
        self.corrupt = int(spec["corrupt"]) if "corrupt" in spec else None
        self.cutbody = int(spec["cutbody"]) if "cutbody" in spec else None
        if (self.status is None and self.drop is None and not self.hangup and not self.delay
                and not self.norange and self.corrupt is None and self.cutbody is None):
            raise ValueError("rule has no fault (status, drop, hangup, delay, norange, corrupt "
                             "or cutbody)")
        self.seen = 0
        self.fired = 0

    def take(self, method, target):
        """Called under the lock: True when this rule fires for the request."""
        if self.method and self.method.upper() != method:
            return False
        if not self.path.search(target):
            return False
        self.seen += 1
        if self.seen <= self.skip:
            return False
        if self.count and self.fired >= self.count:
            return False
        self.fired += 1
        return True

    def describe(self):
        return {"id": self.id, "spec": self.spec, "seen": self.seen, "fired": self.fired}


class State:
    def __init__(self, upstream, log):
        host, _, port = upstream.rpartition(":")
        self.upstream = (host or "127.0.0.1", int(port))
        self.rules = []
        self.next_id = 1
        self.lock = threading.Lock()
        self.stats = {"requests": 0, "proxied": 0, "faults": 0}
        self.log = open(log, "a", buffering=1) if log else None

    def add(self, spec):
        with self.lock:
            r = Rule(spec, self.next_id)
            self.next_id += 1
            self.rules.append(r)
            return r.id

    def match(self, method, target):
        with self.lock:
            self.stats["requests"] += 1
            for r in self.rules:
                if r.take(method, target):
                    self.stats["faults"] += 1
                    return r
            self.stats["proxied"] += 1
            return None

    def record(self, **kw):
        if self.log:
            self.log.write(json.dumps(kw, sort_keys=True) + "\n")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "kiln-faultproxy/1"

    def log_message(self, fmt, *args):
        pass

    @property
    def state(self):
        return self.server.state

    # -- request bodies ----------------------------------------------------

    def read_some(self, limit):
        """Up to `limit` raw bytes of the request body (chunk framing included)."""
        n = limit
        if "chunked" not in self.headers.get("Transfer-Encoding", "").lower():
            n = min(n, int(self.headers.get("Content-Length", "0") or 0))
        got = 0
        while got < n:
            b = self.rfile.read(min(CHUNK, n - got))
            if not b:
                break
            got += len(b)
        return got

    def read_body(self):
        """The whole request body (Content-Length or chunked), as bytes."""
        te = self.headers.get("Transfer-Encoding", "").lower()
        if "chunked" in te:
            out = bytearray()
            while True:
                line = self.rfile.readline(1024)
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline(1024)
        n = int(self.headers.get("Content-Length", "0") or 0)
        out = bytearray()
        while len(out) < n:
            b = self.rfile.read(min(CHUNK, n - len(out)))
            if not b:
                break
            out += b
        return bytes(out)

    # -- replies -----------------------------------------------------------

    def reply_json(self, status, body, headers=None):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def hang_up(self):
        self.close_connection = True
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    # -- control -----------------------------------------------------------

    def control(self, body):
        what = urllib.parse.urlsplit(self.path).path[len(CONTROL) :]
        st = self.state
        if what == "rules" and self.command == "GET":
            with st.lock:
                rules = [r.describe() for r in st.rules]
            self.reply_json(200, rules)
        elif what == "rules" and self.command == "POST":
            text = body.decode("utf-8", "replace").strip()
            try:
                spec = json.loads(text) if text.startswith("{") else text
                rid = st.add(spec)
            except (ValueError, re.error) as e:
                self.reply_json(400, {"error": str(e)})
                return
            self.reply_json(200, {"id": rid})
        elif what == "rules" and self.command == "DELETE":
            with st.lock:
                st.rules = []
            self.reply_json(200, {})
        elif what == "stats" and self.command == "GET":
            with st.lock:
                stats = dict(st.stats)
            self.reply_json(200, stats)
        else:
            self.reply_json(404, {"error": "unknown control request"})

    # -- proxying ----------------------------------------------------------

    def handle_any(self):
        target = self.path
        if target.startswith(CONTROL):
            self.control(self.read_body())
            return
        rule = self.state.match(self.command, target)
        rec = {"method": self.command, "target": target, "rule": rule.id if rule else None}
        if self.headers.get("Range") is not None:
            rec["range"] = self.headers.get("Range")
        if rule and rule.cutbody is not None:
            got = self.read_some(rule.cutbody)
            self.state.record(result="cutbody", body_read=got, **rec)
            self.hang_up()
            return
        body = self.read_body()
        if rule and rule.delay:
            time.sleep(rule.delay)
        if rule and rule.hangup:
            self.state.record(result="hangup", **rec)
            self.hang_up()
            return
        if rule and rule.status is not None:
            headers = {}
            if rule.retry_after is not None:
                headers["Retry-After"] = rule.retry_after
            self.state.record(result=rule.status, **rec)
            self.reply_json(
                rule.status,
                {"errors": [{"code": "UNAVAILABLE", "message": "injected by faultproxy",
                             "detail": {"rule": rule.id}}]},
                headers,
            )
            return
        drop = rule.drop if rule else None
        try:
            status, sent = self.forward(body, drop, rule)
        except (OSError, http.client.HTTPException) as e:
            self.state.record(result="upstream-error", error=str(e), **rec)
            try:
                self.reply_json(502, {"errors": [{"code": "UNAVAILABLE", "message": str(e)}]})
            except OSError:
                pass
            self.close_connection = True
            return
        extra = {}
        if rule and rule.norange:
            extra["range_stripped"] = True
        if rule and rule.corrupt is not None:
            extra["corrupted"] = rule.corrupt < sent
        self.state.record(result=status, body_bytes=sent, dropped=drop is not None, **extra, **rec)

    def forward(self, body, drop, rule=None):
        conn = http.client.HTTPConnection(*self.state.upstream, timeout=120)
        corrupt = rule.corrupt if rule else None
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP}
            if rule and rule.norange:
                headers = {k: v for k, v in headers.items()
                           if k.lower() not in ("range", "if-range")}
            if body or self.command in ("POST", "PUT", "PATCH"):
                headers["Content-Length"] = str(len(body))
            conn.request(self.command, self.path, body=body if body else None, headers=headers)
            resp = conn.getresponse()
            self.send_response_only(resp.status, resp.reason)
            for k, v in resp.getheaders():
                if k.lower() not in HOP:
                    self.send_header(k, v)
            length = resp.getheader("Content-Length")
            no_body = self.command == "HEAD" or resp.status in (204, 304) or 100 <= resp.status < 200
            chunked = False
            if no_body:
                if length is not None:
                    self.send_header("Content-Length", length)
            elif length is not None:
                self.send_header("Content-Length", length)
            else:
                self.send_header("Transfer-Encoding", "chunked")
                chunked = True
            self.end_headers()
            sent = 0
            if no_body:
                resp.read()
                return resp.status, 0
            while True:
                want = CHUNK
                if drop is not None:
                    want = min(want, drop - sent)
                    if want <= 0:
                        self.hang_up()
                        return resp.status, sent
                data = resp.read(want)
                if not data:
                    break
                if corrupt is not None and sent <= corrupt < sent + len(data):
                    i = corrupt - sent
                    data = data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1:]
                if chunked:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                else:
                    self.wfile.write(data)
                sent += len(data)
            if chunked:
                self.wfile.write(b"0\r\n\r\n")
            if drop is not None:  # the body was shorter than K: cut anyway, after it
                self.hang_up()
            return resp.status, sent
        finally:
            conn.close()

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = handle_any


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--upstream", required=True, help="host:port of the server behind")
    ap.add_argument("--addr", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--port-file")
    ap.add_argument("--log")
    ap.add_argument("--rule", action="append", default=[], metavar="SPEC")
    args = ap.parse_args()

    state = State(args.upstream, args.log)
    for spec in args.rule:
        try:
            state.add(spec)
        except (ValueError, re.error) as e:
            print("faultproxy: bad rule %r: %s" % (spec, e), file=sys.stderr)
            return 2
    server = ThreadingHTTPServer((args.addr, args.port), Handler)
    server.daemon_threads = True
    server.state = state
    port = server.server_address[1]
    if args.port_file:
        tmp = args.port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write("%d\n" % port)
        os.replace(tmp, args.port_file)
    print("faultproxy listening on %s:%d -> %s:%d" % ((args.addr, port) + state.upstream),
          file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
