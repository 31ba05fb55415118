#!/usr/bin/python3
"""A token issuer for distribution's `auth: token`, for kiln's integration tests.

Run with Debian's /usr/bin/python3 (python3-cryptography). It implements the
distribution token spec (docs/spec/auth/token.md, jwt.md, oauth.md):

  GET  /token?service=S&scope=T:NAME:ACTIONS[&scope=...][&offline_token=true]
       with HTTP Basic credentials from the users file, or anonymous;
  POST /token  (application/x-www-form-urlencoded)
       grant_type=password      username, password
       grant_type=refresh_token refresh_token
       plus service, client_id, scope (space-separated), access_type=offline.

Replies {"token", "access_token", "expires_in", "issued_at"[, "refresh_token"]}.
Wrong credentials: 401 with `WWW-Authenticate: Basic realm=...`; a bad request
or grant: 400; a wrong service: 400.

Tokens are JWS compact tokens signed ES256 (P-256) or RS256 with a key whose
self-signed certificate is the registry's `rootcertbundle`. distribution 2.8
finds the verification key from the JOSE header in one of two ways, and both
are supported here (--sign):
  kid  the libtrust key id of the public key: SHA-256 of the DER
       SubjectPublicKeyInfo, first 240 bits, base32 without padding, in 12
       groups of 4 joined by ':'; the registry indexes the public keys of the
       rootcertbundle certificates by that id;
  x5c  the certificate chain (standard base64 DER, leaf first); the registry
       verifies it against the rootcertbundle.
ES256 signatures are the raw 64-byte r||s (not DER), as JWS requires.
Claims: iss, sub (the user, "" when anonymous), aud (the service), exp, nbf,
iat, jti and access [{type, name, actions}], where each requested action is
granted when the user may do it: every user may do pull, push, delete and *
unless listed with --readonly (pull only); anonymous requests get the
actions of --anonymous (default none: a token with empty access).

The users file holds `user:password` lines (split at the first ':'; '#'
starts a comment). With --key/--cert missing, a key and a certificate are
generated there first. The port actually bound is written to --port-file
(written atomically, after the key and certificate exist). Every request is
logged as one JSON line to --log (no passwords or tokens).
"""

import argparse
import base64
import datetime
import hashlib
import json
import os
import secrets
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

ALL_ACTIONS = ["pull", "push", "delete", "*"]


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def libtrust_key_id(public_key):
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    s = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode("ascii").rstrip("=")
    return ":".join(s[i : i + 4] for i in range(0, len(s), 4))


def generate(key_path, cert_path, alg):
    if alg == "ES256":
        key = ec.generate_private_key(ec.SECP256R1())
    else:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kiln test token issuer")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    write_atomic(
        key_path,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    write_atomic(cert_path, cert.public_bytes(serialization.Encoding.PEM))


def write_atomic(path, data):
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


class Signer:
    def __init__(self, key_path, cert_path, sign_mode):
        with open(key_path, "rb") as f:
            self.key = serialization.load_pem_private_key(f.read(), password=None)
        with open(cert_path, "rb") as f:
            self.cert = x509.load_pem_x509_certificate(f.read())
        if isinstance(self.key, ec.EllipticCurvePrivateKey):
            self.alg = "ES256"
        else:
            self.alg = "RS256"
        self.header = {"typ": "JWT", "alg": self.alg}
        if sign_mode == "x5c":
            der = self.cert.public_bytes(serialization.Encoding.DER)
            self.header["x5c"] = [base64.b64encode(der).decode("ascii")]
        else:
            self.header["kid"] = libtrust_key_id(self.key.public_key())

    def sign(self, claims):
        signing_input = (
            b64url(json.dumps(self.header, separators=(",", ":")).encode())
            + "."
            + b64url(json.dumps(claims, separators=(",", ":")).encode())
        ).encode("ascii")
        if self.alg == "ES256":
            der = self.key.sign(signing_input, ec.ECDSA(hashes.SHA256()))
            r, s = decode_dss_signature(der)
            sig = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        else:
            sig = self.key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
        return signing_input.decode("ascii") + "." + b64url(sig)


def parse_scope(scope):
    """'repository:host:5000/a/b:pull,push' -> ('repository', 'host:5000/a/b', [...])"""
    first = scope.find(":")
    last = scope.rfind(":")
    if first <= 0 or last == first:
        return None
    rtype = scope[:first]
    if "(" in rtype:  # resource class, e.g. repository(plugin)
        rtype = rtype[: rtype.index("(")]
    name = scope[first + 1 : last]
    actions = [a for a in scope[last + 1 :].split(",") if a]
    if not name:
        return None
    return rtype, name, actions


class Issuer:
    def __init__(self, args):
        self.args = args
        self.signer = Signer(args.key, args.cert, args.sign)
        self.users = {}
        with open(args.users) as f:
            for line in f:
                line = line.rstrip("\r\n")
                if not line or line.startswith("#") or ":" not in line:
                    continue
                user, password = line.split(":", 1)
                self.users[user] = password
        self.readonly = set(args.readonly or [])
        self.anonymous = [a for a in (args.anonymous or "").split(",") if a and a != "none"]
        self.refresh = {}  # refresh token -> user
        self.lock = threading.Lock()
        self.log = open(args.log, "a", buffering=1) if args.log else None

    def check_password(self, user, password):
        want = self.users.get(user)
        return want is not None and secrets.compare_digest(want.encode(), password.encode())

    def allowed(self, user):
        if user is None:
            return self.anonymous
        if user in self.readonly:
            return ["pull"]
        return ALL_ACTIONS

    def grant(self, user, scopes):
        may = self.allowed(user)
        access = []
        for sc in scopes:
            p = parse_scope(sc)
            if not p:
                continue
            rtype, name, actions = p
            granted = [a for a in actions if a in may]
            for a in access:
                if a["type"] == rtype and a["name"] == name:
                    a["actions"] = sorted(set(a["actions"]) | set(granted))
                    break
            else:
                access.append({"type": rtype, "name": name, "actions": granted})
        return access

    def new_refresh_token(self, user):
        tok = "kiln-rt-" + secrets.token_urlsafe(24)
        with self.lock:
            self.refresh[tok] = user
        return tok

    def issue(self, user, scopes, want_refresh):
        now = int(time.time())
        access = self.grant(user, scopes)
        claims = {
            "iss": self.args.issuer,
            "sub": user or "",
            "aud": self.args.service,
            "exp": now + self.args.expires_in,
            "nbf": now - 1,
            "iat": now,
            "jti": secrets.token_hex(16),
            "access": access,
        }
        token = self.signer.sign(claims)
        body = {
            "token": token,
            "access_token": token,
            "expires_in": self.args.expires_in,
            "issued_at": datetime.datetime.fromtimestamp(now, datetime.timezone.utc)
            .isoformat()
            .replace("+00:00", "Z"),
        }
        if want_refresh and user is not None:
            body["refresh_token"] = self.new_refresh_token(user)
        return body, access

    def record(self, **kw):
        if self.log:
            self.log.write(json.dumps(kw, sort_keys=True) + "\n")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "kiln-token-issuer/1"

    def log_message(self, fmt, *args):  # quiet: requests go to --log
        pass

    @property
    def issuer(self):
        return self.server.issuer

    def reply(self, status, body, headers=None):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def unauthorized(self, why):
        self.reply(
            401,
            {"errors": [{"code": "UNAUTHORIZED", "message": why}]},
            {"WWW-Authenticate": 'Basic realm="%s"' % self.issuer.args.issuer},
        )

    def basic_user(self):
        """None (anonymous), a user name, or False (bad credentials)."""
        h = self.headers.get("Authorization")
        if not h:
            return None
        scheme, _, value = h.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, sep, password = base64.b64decode(value.strip(), validate=True).decode().partition(":")
        except Exception:
            return False
        if not sep or not self.issuer.check_password(user, password):
            return False
        return user

    def check_service(self, service):
        if service is not None and service != self.issuer.args.service:
            self.reply(400, {"errors": [{"code": "INVALID_REQUEST", "message": "unknown service"}]})
            return False
        return True

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        if url.path != "/token":
            self.reply(404, {"errors": [{"code": "NOT_FOUND", "message": "no such endpoint"}]})
            return
        q = urllib.parse.parse_qs(url.query, keep_blank_values=True)
        service = q.get("service", [None])[0]
        scopes = []
        for s in q.get("scope", []):
            scopes.extend(s.split(" "))
        scopes = [s for s in scopes if s]
        user = self.basic_user()
        rec = dict(method="GET", service=service, scopes=scopes, user=user)
        if user is False:
            self.issuer.record(result=401, **rec)
            self.unauthorized("invalid username or password")
            return
        if not self.check_service(service):
            self.issuer.record(result=400, **rec)
            return
        want_refresh = q.get("offline_token", [""])[0] == "true"
        body, access = self.issuer.issue(user, scopes, want_refresh)
        self.issuer.record(result=200, granted=access, **rec)
        self.reply(200, body)

    def do_POST(self):
        url = urllib.parse.urlsplit(self.path)
        if url.path != "/token":
            self.reply(404, {"errors": [{"code": "NOT_FOUND", "message": "no such endpoint"}]})
            return
        try:
            n = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            n = -1
        if n < 0 or n > 1 << 20:
            self.reply(400, {"error": "invalid_request"})
            return
        form = urllib.parse.parse_qs(self.rfile.read(n).decode("utf-8", "replace"), keep_blank_values=True)
        get = lambda k: form.get(k, [None])[0]
        grant_type, service = get("grant_type"), get("service")
        scopes = [s for s in (get("scope") or "").split(" ") if s]
        rec = dict(method="POST", grant_type=grant_type, service=service, scopes=scopes,
                   client_id=get("client_id"))
        if grant_type == "password":
            user, password = get("username"), get("password")
            if user is None or password is None or not self.issuer.check_password(user, password):
                self.issuer.record(result=401, user=user, **rec)
                self.unauthorized("invalid username or password")
                return
        elif grant_type == "refresh_token":
            with self.issuer.lock:
                user = self.issuer.refresh.get(get("refresh_token") or "")
            if user is None:
                self.issuer.record(result=400, **rec)
                self.reply(400, {"error": "invalid_grant"})
                return
        else:
            self.issuer.record(result=400, **rec)
            self.reply(400, {"error": "unsupported_grant_type"})
            return
        if not self.check_service(service):
            self.issuer.record(result=400, user=user, **rec)
            return
        want_refresh = grant_type == "password" and get("access_type") == "offline"
        body, access = self.issuer.issue(user, scopes, want_refresh)
        if grant_type == "refresh_token":
            body["refresh_token"] = get("refresh_token")
        body["scope"] = " ".join(scopes)
        self.issuer.record(result=200, user=user, granted=access, **rec)
        self.reply(200, body)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--key", required=True, help="PEM private key (generated when missing)")
    ap.add_argument("--cert", required=True, help="PEM certificate: the registry's rootcertbundle")
    ap.add_argument("--alg", choices=["ES256", "RS256"], default="ES256",
                    help="key type when generating (default ES256)")
    ap.add_argument("--sign", choices=["kid", "x5c"], default="kid",
                    help="how the JOSE header names the key (default kid)")
    ap.add_argument("--users", required=True, help="file of user:password lines")
    ap.add_argument("--readonly", action="append", metavar="USER", help="user limited to pull")
    ap.add_argument("--anonymous", default="none",
                    help="actions granted without credentials, e.g. pull (default none)")
    ap.add_argument("--service", default="kiln-test")
    ap.add_argument("--issuer", default="kiln-test-issuer")
    ap.add_argument("--expires-in", type=int, default=300)
    ap.add_argument("--addr", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--port-file", help="where to write the bound port")
    ap.add_argument("--log", help="JSON lines request log")
    args = ap.parse_args()

    if not (os.path.exists(args.key) and os.path.exists(args.cert)):
        generate(args.key, args.cert, args.alg)
    server = ThreadingHTTPServer((args.addr, args.port), Handler)
    server.daemon_threads = True
    server.issuer = Issuer(args)
    port = server.server_address[1]
    if args.port_file:
        write_atomic(args.port_file, ("%d\n" % port).encode())
    print("token issuer listening on %s:%d (%s, %s)" % (args.addr, port, server.issuer.signer.alg,
                                                       args.sign), file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
