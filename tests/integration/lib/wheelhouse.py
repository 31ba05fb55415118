#!/usr/bin/env python3
"""A local pip index for kiln's tests and benchmarks (PyPI is not reachable).

  wheelhouse.py make DIR [--requires A:REQ]... [--script A:CMD]... NAME==VER...
  wheelhouse.py serve DIR --port-file FILE [--port N] [--log FILE]

make writes a pure-Python wheel for every NAME==VER into DIR/simple/<name>/
(<name> normalised as PEP 503 says: lower case, runs of -_. become -) and
rewrites the PEP 503 pages DIR/simple/index.html and DIR/simple/<name>/index.html
from what the directories hold, so several make runs add to one index. Each
link carries a #sha256= fragment, which pip checks.

A wheel (tag py3-none-any) holds:
  <module>/__init__.py            __version__ = "VER" and main(), which prints
                                  "NAME VER"; <module> is the name with - and .
                                  turned into _
  <dist>-VER.dist-info/METADATA   Metadata-Version 2.1, Name, Version, Summary,
                                  one Requires-Dist per --requires
  <dist>-VER.dist-info/WHEEL      Wheel-Version 1.0, Root-Is-Purelib, Tag
  <dist>-VER.dist-info/entry_points.txt   with --script: CMD = <module>:main
  <dist>-VER.dist-info/RECORD     path,sha256=<urlsafe base64, no padding>,size
The bytes depend only on the arguments: fixed zip timestamps and modes, a
fixed member order. No setuptools or wheel package is needed.

--requires A:REQ makes every wheel of package A (a name, or NAME==VER for one
version) require REQ (a PEP 508 requirement, e.g. kilntest-dep>=1.0).
--script A:CMD gives A's wheels a console script CMD.

serve answers HTTP GETs for DIR on 127.0.0.1 on a port the kernel picks and
writes the port to --port-file once it listens (written to a temporary name
and renamed, so a reader never sees half of it); requests go to --log.
It stops on SIGTERM or SIGINT.
"""

import argparse
import base64
import functools
import hashlib
import html
import http.server
import io
import os
import re
import signal
import sys
import zipfile

ZIP_TIME = (1980, 1, 1, 0, 0, 0)
NAME_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$")
VERSION_RE = re.compile(r"^[0-9]+(\.[0-9]+)*([a-z0-9.+!-]*)$")


def normalise(name):
    """PEP 503 project name: lower case, runs of -_. as one -."""
    return re.sub(r"[-_.]+", "-", name).lower()


def dist_name(name):
    """The wheel file, dist-info and module name: lower case, runs of -_. as one _."""
    return re.sub(r"[-_.]+", "_", name).lower()


def module_name(name):
    return dist_name(name)


def record_hash(data):
    digest = hashlib.sha256(data).digest()
    return "sha256=" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def parse_spec(text, what):
    if "==" not in text:
        raise SystemExit("wheelhouse.py: %s: '%s' is not NAME==VERSION" % (what, text))
    name, version = text.split("==", 1)
    if not NAME_RE.match(name):
        raise SystemExit("wheelhouse.py: %s: '%s' is not a valid project name" % (what, name))
    if not VERSION_RE.match(version):
        raise SystemExit("wheelhouse.py: %s: '%s' is not a valid version" % (what, version))
    return name, version


def split_pair(text, what):
    if ":" not in text:
        raise SystemExit("wheelhouse.py: %s: '%s' is not A:VALUE" % (what, text))
    target, value = text.split(":", 1)
    if not value:
        raise SystemExit("wheelhouse.py: %s: '%s' has an empty value" % (what, text))
    return target, value


def applies(target, name, version):
    """True when --requires/--script TARGET (NAME or NAME==VER) covers name==version."""
    if "==" in target:
        tname, tver = target.split("==", 1)
        return normalise(tname) == normalise(name) and tver == version
    return normalise(target) == normalise(name)


def build_wheel(name, version, requires, scripts):
    """Returns (file name, bytes) of the wheel."""
    dist = dist_name(name)
    module = module_name(name)
    info = "%s-%s.dist-info" % (dist, version)
    files = []

    init = (
        '"""%s: a test package made by kiln\'s wheelhouse.py."""\n'
        "\n"
        '__version__ = "%s"\n'
        "\n"
        "\n"
        "def main():\n"
        '    print("%s %s")\n'
        "    return 0\n" % (name, version, name, version)
    )
    files.append(("%s/__init__.py" % module, init.encode()))

    meta = [
        "Metadata-Version: 2.1",
        "Name: %s" % name,
        "Version: %s" % version,
        "Summary: test package %s %s" % (name, version),
        "License: MIT",
    ]
    meta += ["Requires-Dist: %s" % r for r in requires]
    files.append(("%s/METADATA" % info, ("\n".join(meta) + "\n\n").encode()))

    wheel = (
        "Wheel-Version: 1.0\n"
        "Generator: kiln-wheelhouse 1\n"
        "Root-Is-Purelib: true\n"
        "Tag: py3-none-any\n"
        "\n"
    )
    files.append(("%s/WHEEL" % info, wheel.encode()))

    if scripts:
        eps = "[console_scripts]\n" + "".join("%s = %s:main\n" % (s, module) for s in scripts)
        files.append(("%s/entry_points.txt" % info, eps.encode()))

    record_path = "%s/RECORD" % info
    record = "".join("%s,%s,%d\n" % (p, record_hash(d), len(d)) for p, d in files)
    record += "%s,,\n" % record_path
    files.append((record_path, record.encode()))

    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        for path, data in files:
            zi = zipfile.ZipInfo(path, date_time=ZIP_TIME)
            zi.compress_type = zipfile.ZIP_DEFLATED
            zi.create_system = 3
            zi.external_attr = (0o100644 << 16)
            zf.writestr(zi, data, compresslevel=9)
    return "%s-%s-py3-none-any.whl" % (dist, version), out.getvalue()


def write_atomic(path, data):
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def page(title, links):
    body = "".join('    <a href="%s">%s</a><br/>\n' % (html.escape(h), html.escape(t)) for h, t in links)
    return (
        "<!DOCTYPE html>\n<html>\n  <head>\n"
        '    <meta name="pypi:repository-version" content="1.0">\n'
        "    <title>%s</title>\n  </head>\n  <body>\n%s  </body>\n</html>\n"
        % (html.escape(title), body)
    ).encode()


def write_index(simple):
    projects = sorted(
        d for d in os.listdir(simple) if os.path.isdir(os.path.join(simple, d))
    )
    for proj in projects:
        pdir = os.path.join(simple, proj)
        links = []
        for fn in sorted(os.listdir(pdir)):
            if not fn.endswith(".whl"):
                continue
            with open(os.path.join(pdir, fn), "rb") as f:
                digest = hashlib.sha256(f.read()).hexdigest()
            links.append(("%s#sha256=%s" % (fn, digest), fn))
        write_atomic(os.path.join(pdir, "index.html"), page("Links for %s" % proj, links))
    write_atomic(
        os.path.join(simple, "index.html"),
        page("Simple index", [("%s/" % p, p) for p in projects]),
    )


def cmd_make(args):
    wanted = [parse_spec(s, "package") for s in args.packages]
    reqs = [split_pair(r, "--requires") for r in args.requires]
    scripts = [split_pair(s, "--script") for s in args.script]
    simple = os.path.join(args.dir, "simple")
    os.makedirs(simple, exist_ok=True)
    for name, version in wanted:
        requires = [r for t, r in reqs if applies(t, name, version)]
        cmds = [c for t, c in scripts if applies(t, name, version)]
        fn, data = build_wheel(name, version, requires, cmds)
        pdir = os.path.join(simple, normalise(name))
        os.makedirs(pdir, exist_ok=True)
        write_atomic(os.path.join(pdir, fn), data)
        print("%s/%s" % (normalise(name), fn))
    write_index(simple)
    return 0


class Handler(http.server.SimpleHTTPRequestHandler):
    log_file = None

    def log_message(self, fmt, *a):
        if self.log_file:
            self.log_file.write("%s %s\n" % (self.address_string(), fmt % a))
            self.log_file.flush()


def cmd_serve(args):
    if not os.path.isdir(args.dir):
        raise SystemExit("wheelhouse.py: serve: '%s' is not a directory" % args.dir)
    if args.log:
        Handler.log_file = open(args.log, "a", buffering=1)
    handler = functools.partial(Handler, directory=os.path.abspath(args.dir))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", args.port), handler)
    server.daemon_threads = True

    def stop(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGHUP, stop)
    write_atomic(args.port_file, b"%d\n" % server.server_address[1])
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    server.server_close()
    return 0


def main(argv):
    usage = (
        "usage: wheelhouse.py make DIR [--requires A:REQ]... [--script A:CMD]... NAME==VER...\n"
        "       wheelhouse.py serve DIR --port-file FILE [--port N] [--log FILE]\n"
    )
    if not argv or argv[0] not in ("make", "serve"):
        sys.stderr.write(usage)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    if argv[0] == "make":
        mk = argparse.ArgumentParser(prog="wheelhouse.py make", description="write wheels and PEP 503 pages")
        mk.add_argument("dir")
        mk.add_argument("packages", nargs="+", metavar="NAME==VER")
        mk.add_argument("--requires", action="append", default=[], metavar="A:REQ")
        mk.add_argument("--script", action="append", default=[], metavar="A:CMD")
        return cmd_make(mk.parse_intermixed_args(argv[1:]))
    sv = argparse.ArgumentParser(prog="wheelhouse.py serve", description="serve DIR on 127.0.0.1")
    sv.add_argument("dir")
    sv.add_argument("--port-file", required=True)
    sv.add_argument("--port", type=int, default=0, help="the port (default: one the kernel picks)")
    sv.add_argument("--log")
    return cmd_serve(sv.parse_args(argv[1:]))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
