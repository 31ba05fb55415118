#!/bin/sh
# shellcheck shell=sh
# bench/copy.sh: `kiln copy` against `skopeo copy` between two loopback
# registries, cold (nothing at the destination) and warm (every blob
# already there). A benchmark, not a test: it prints a table and exits 0
# whether or not the targets are met (non-zero only when something fails).
#
#   scripts/install-deps.sh --test && meson setup build && ninja -C build
#   bench/copy.sh                      # from the repository root
#
# Settings (environment):
#   KILN=PATH          kiln binary (default build/kiln)
#   SKOPEO=PATH        skopeo binary (default skopeo)
#   ROUNDS=N           rounds, interleaved kiln/skopeo (default 3)
#   KILN_ARGS="..."    extra arguments for `kiln copy` (e.g. "--jobs 8")
#   BENCH_IMAGE=DIR    keep the generated OCI layout in DIR and reuse it on
#                      the next run (default: made in the scratch directory
#                      and removed)
#   TMPDIR             where the scratch directory and the registries'
#                      storage go (default /tmp); needs ~2 GB free
#
# What one round does, for each tool (the order alternates per round): start
# an empty destination registry; `sync`; time a copy of the image from the
# source registry (cold); `sync`; time the same copy again (warm: all blobs
# and the manifest present); stop that registry and delete its storage.
# Wall time is taken with `date +%s%N` around the run (ms resolution; the
# warm cases take tens of ms), peak RSS and CPU (user + sys) of the tool
# come from /usr/bin/time (%M, %U, %S). "MB up" is what the destination
# registry read from its sockets during the copy (its rchar in
# /proc/PID/io: request bodies plus headers), "MB down" what the source
# registry wrote (wchar: response bodies plus headers), "reg cpu" the CPU
# time both registries used (utime + stime in /proc/PID/stat); all are per
# registry process, so other programs on the machine do not count. The
# machine's load average is printed before and after: the registries and
# the tool share the CPUs, so other work on the machine shows up as noise
# (compare the ratio within one run; ROUNDS=5 for steadier medians).
#
# The image (deterministic: same digests every run): an OCI layout of 6
# gzip'd tar layers, ~540 MB in blobs: random (incompressible) data and
# text-like and binary-like data that gzip shrinks 2-4x, made by the Python
# generator below.
set -eu

BENCH_ROOT=$(pwd)
KILN=${KILN:-build/kiln}
case $KILN in /*) ;; *) KILN=$BENCH_ROOT/$KILN ;; esac
SKOPEO=${SKOPEO:-skopeo}
ROUNDS=${ROUNDS:-3}
KILN_ARGS=${KILN_ARGS:-}
REGISTRY_LIB=$BENCH_ROOT/tests/integration/lib

die() {
    echo "bench/copy.sh: $*" >&2
    exit 1
}

[ -f "$REGISTRY_LIB/registry.sh" ] || die "run me from the repository root ($REGISTRY_LIB/registry.sh missing)"
[ -x "$KILN" ] || die "no kiln binary at $KILN (build first, or set KILN=)"
command -v "$SKOPEO" >/dev/null 2>&1 || die "skopeo not found (scripts/install-deps.sh --test)"
[ -x /usr/bin/time ] || die "/usr/bin/time not found (apt-get install time)"
command -v python3 >/dev/null 2>&1 || die "python3 not found"
case $ROUNDS in '' | *[!0-9]*) die "ROUNDS must be a number" ;; esac
[ "$ROUNDS" -ge 1 ] || die "ROUNDS must be at least 1"

# shellcheck source-path=SCRIPTDIR source=../tests/integration/lib/registry.sh
. "$REGISTRY_LIB/registry.sh"
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$BENCH_ROOT/bench/lib.sh"
registry_available || die "$REGISTRY_MISSING"

SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/kiln-bench.XXXXXX")
bench_cleanup() {
    set +e
    registry_cleanup
    rm -rf "$SCRATCH"
}
# registry.sh's traps are replaced: ours stop the registries too.
trap 'bench_cleanup' EXIT
trap 'bench_cleanup; exit 130' INT
trap 'bench_cleanup; exit 143' TERM
trap 'bench_cleanup; exit 129' HUP

IMAGE=${BENCH_IMAGE:-$SCRATCH/image}
RESULTS=$SCRATCH/results

# ---- the image ------------------------------------------------------------------

make_image() {
    python3 - "$1" <<'PY'
import gzip, hashlib, json, os, random, sys, tarfile, zlib

layout = sys.argv[1]
MiB = 1 << 20
SEED = "kiln-bench-copy-v1"
# (kind, raw bytes): random is incompressible; text ~4x and binary ~2x with gzip -1
LAYERS = [
    ("random", 200 * MiB),
    ("text", 300 * MiB),
    ("random", 100 * MiB),
    ("binary", 160 * MiB),
    ("random", 45 * MiB),
    ("text", 12 * MiB),
]

def text_blocks(rnd, n):
    syl = ["ka", "lo", "mi", "ne", "tor", "vex", "sa", "qu", "di", "rem", "pol", "xu", "an", "es"]
    vocab = ["".join(rnd.choice(syl) for _ in range(rnd.randint(1, 4))) for _ in range(3000)]
    levels = ["INFO", "WARN", "DEBUG", "ERROR"]
    blocks = []
    for b in range(n):
        lines, size = [], 0
        while size < MiB:
            words = " ".join(rnd.choices(vocab, k=rnd.randint(4, 16)))
            line = "2026-01-%02d %02d:%02d:%02d %s svc-%d[%d]: %s n=%d\n" % (
                rnd.randint(1, 28), rnd.randint(0, 23), rnd.randint(0, 59), rnd.randint(0, 59),
                rnd.choice(levels), rnd.randint(0, 9), rnd.randint(100, 99999), words,
                rnd.randint(0, 1 << 30))
            lines.append(line)
            size += len(line)
        blocks.append("".join(lines).encode()[:MiB])
    return blocks

def binary_blocks(rnd, n):
    # code-like: random bytes interleaved with zero runs and repeated tables
    blocks = []
    for b in range(n):
        parts, size = [], 0
        table = rnd.randbytes(256)
        while size < MiB:
            k = rnd.random()
            if k < 0.45:
                p = rnd.randbytes(rnd.randint(64, 4096))
            elif k < 0.75:
                p = bytes(rnd.randint(16, 2048))
            else:
                p = table * rnd.randint(1, 8)
            parts.append(p)
            size += len(p)
        blocks.append(b"".join(parts)[:MiB])
    return blocks

class Source:
    """A file object of `size` bytes made of 1 MiB pieces from `piece(i)`."""
    def __init__(self, size, piece):
        self.size, self.piece, self.pos, self.buf = size, piece, 0, b""
    def read(self, n=-1):
        if n is None or n < 0:
            n = self.size - self.pos
        out = []
        while n > 0 and self.pos < self.size:
            if not self.buf:
                i = self.pos // MiB
                self.buf = self.piece(i)[: min(MiB, self.size - self.pos)]
            take = self.buf[:n]
            self.buf = self.buf[len(take):]
            self.pos += len(take)
            n -= len(take)
            out.append(take)
        return b"".join(out)

class Sink:
    """Takes the tar stream: hashes it (diff_id), gzips it into `f` and hashes that."""
    def __init__(self, f):
        self.f = f
        self.tar_hash = hashlib.sha256()
        self.blob_hash = hashlib.sha256()
        self.size = 0
        self.z = zlib.compressobj(1, zlib.DEFLATED, 31)  # gzip wrapper, mtime 0
    def _out(self, data):
        if data:
            self.f.write(data)
            self.blob_hash.update(data)
            self.size += len(data)
    def write(self, data):
        self.tar_hash.update(data)
        self._out(self.z.compress(data))
        return len(data)
    def close(self):
        self._out(self.z.flush())

blobs = os.path.join(layout, "blobs", "sha256")
os.makedirs(blobs, exist_ok=True)

def put(data):
    d = hashlib.sha256(data).hexdigest()
    with open(os.path.join(blobs, d), "wb") as f:
        f.write(data)
    return "sha256:" + d, len(data)

rnd = random.Random(SEED)
texts = text_blocks(rnd, 24)
bins = binary_blocks(rnd, 24)
layers, diff_ids, history = [], [], []
for n, (kind, size) in enumerate(LAYERS):
    lr = random.Random("%s/%d" % (SEED, n))
    if kind == "random":
        piece = lambda i, lr=lr: lr.randbytes(MiB)
    elif kind == "text":
        order = [lr.randrange(len(texts)) for _ in range(size // MiB + 1)]
        piece = lambda i, order=order: texts[order[i]]
    else:
        order = [lr.randrange(len(bins)) for _ in range(size // MiB + 1)]
        piece = lambda i, order=order: bins[order[i]]
    tmp = os.path.join(blobs, ".layer.tmp")
    with open(tmp, "wb") as f:
        sink = Sink(f)
        with tarfile.open(fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT) as tf:
            d = tarfile.TarInfo("opt/bench")
            d.type, d.mode, d.mtime = tarfile.DIRTYPE, 0o755, 1700000000
            tf.addfile(d)
            ti = tarfile.TarInfo("opt/bench/layer%d-%s.dat" % (n, kind))
            ti.size, ti.mode, ti.mtime = size, 0o644, 1700000000
            tf.addfile(ti, Source(size, piece))
        sink.close()
    digest = sink.blob_hash.hexdigest()
    os.rename(tmp, os.path.join(blobs, digest))
    layers.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                   "digest": "sha256:" + digest, "size": sink.size})
    diff_ids.append("sha256:" + sink.tar_hash.hexdigest())
    history.append({"created": "2026-01-01T00:00:00Z", "created_by": "bench layer %d (%s)" % (n, kind)})
    print("  layer %d: %-6s %4d MiB raw -> %6.1f MB gzip" % (n, kind, size // MiB, sink.size / 1e6),
          file=sys.stderr)

cfg = {"architecture": "amd64", "os": "linux", "created": "2026-01-01T00:00:00Z",
       "config": {"Env": ["PATH=/usr/local/bin:/usr/bin:/bin"], "Cmd": ["/bin/sh"]},
       "rootfs": {"type": "layers", "diff_ids": diff_ids}, "history": history}
cdigest, csize = put(json.dumps(cfg, separators=(",", ":")).encode())
man = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
       "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                  "digest": cdigest, "size": csize},
       "layers": layers}
mdata = json.dumps(man, separators=(",", ":")).encode()
mdigest, msize = put(mdata)
with open(os.path.join(layout, "oci-layout"), "w") as f:
    f.write('{"imageLayoutVersion":"1.0.0"}')
with open(os.path.join(layout, "index.json"), "w") as f:
    json.dump({"schemaVersion": 2, "manifests": [
        {"mediaType": man["mediaType"], "digest": mdigest, "size": msize,
         "annotations": {"org.opencontainers.image.ref.name": "bench"}}]}, f)
total = sum(l["size"] for l in layers) + csize
print("  %d layers, %.1f MB of blobs, manifest %s" % (len(layers), total / 1e6, mdigest),
      file=sys.stderr)
if total < 500e6 or len(layers) < 5:
    sys.exit("image too small")
PY
}

if [ -f "$IMAGE/index.json" ]; then
    echo "bench: reusing the image in $IMAGE" >&2
else
    echo "bench: making the image in $IMAGE" >&2
    rm -rf "$IMAGE"
    mkdir -p "$IMAGE"
    make_image "$IMAGE" || die "cannot make the image"
fi
IMAGE_BYTES=$(du -sb "$IMAGE/blobs" | cut -f1)
N_LAYERS=$(python3 -c 'import json,sys; i=json.load(open(sys.argv[1]+"/index.json")); d=i["manifests"][0]["digest"][7:]; print(len(json.load(open(sys.argv[1]+"/blobs/sha256/"+d))["layers"]))' "$IMAGE")

# ---- registries --------------------------------------------------------------------

# The pid of the registry registry_start just started (the last one it tracks).
last_pid() {
    # shellcheck disable=SC2154 # registry.sh's list of the pids it started
    echo "${_registry_pids##* }"
}

io_field() { # PID FIELD: a counter of /proc/PID/io
    sed -n "s/^$2: //p" "/proc/$1/io"
}

cpu_ticks() { # PID: utime + stime in clock ticks
    sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'
}


TICKS=$(getconf CLK_TCK)
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)

registry_start noauth 2>/dev/null || die "cannot start the source registry"
SRC=$REGISTRY
SRC_PID=$(last_pid)
REF=bench/big:1
echo "bench: source registry $SRC (pid $SRC_PID); pushing the image" >&2
"$KILN" push -q --oci-dir "$IMAGE:bench" "$SRC/$REF" >/dev/null || die "cannot push the image to the source registry"
SRC_DIGEST=$(curl -sfI -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
    "http://$SRC/v2/bench/big/manifests/1" | tr -d '\r' | sed -n 's/^[Dd]ocker-[Cc]ontent-[Dd]igest: //p')
[ -n "$SRC_DIGEST" ] || die "the source registry does not serve the image"

: >"$RESULTS"

# measure TOOL CASE: time one copy to $DST; appends a line to $RESULTS.
measure() {
    _tool=$1
    _case=$2
    case $_tool in
    kiln)
        # shellcheck disable=SC2086 # KILN_ARGS is split on purpose
        set -- "$KILN" copy -q $KILN_ARGS "$SRC/$REF" "$DST/$REF"
        ;;
    skopeo)
        set -- "$SKOPEO" copy -q --src-tls-verify=false --dest-tls-verify=false \
            "docker://$SRC/$REF" "docker://$DST/$REF"
        ;;
    esac
    sync
    _up0=$(io_field "$DST_PID" rchar)
    _down0=$(io_field "$SRC_PID" wchar)
    _cpu0=$(($(cpu_ticks "$DST_PID") + $(cpu_ticks "$SRC_PID")))
    _t0=$(now_ns)
    if ! /usr/bin/time -o "$SCRATCH/time" -f '%e %M %U %S' "$@" >"$SCRATCH/out" 2>"$SCRATCH/err"; then
        cat "$SCRATCH/err" >&2
        die "$_tool copy ($_case) failed"
    fi
    _t1=$(now_ns)
    _cpu1=$(($(cpu_ticks "$DST_PID") + $(cpu_ticks "$SRC_PID")))
    _up1=$(io_field "$DST_PID" rchar)
    _down1=$(io_field "$SRC_PID" wchar)
    _got=$(curl -sfI -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
        "http://$DST/v2/bench/big/manifests/1" | tr -d '\r' | sed -n 's/^[Dd]ocker-[Cc]ontent-[Dd]igest: //p')
    [ "$_got" = "$SRC_DIGEST" ] || die "$_tool copy ($_case): the destination has '$_got', not $SRC_DIGEST"
    read -r _ _rss _user _sys <"$SCRATCH/time"
    _wall=$(echo "$_t0 $_t1" | awk '{printf "%.3f", ($2 - $1) / 1e9}')
    _regcpu=$(echo "$_cpu0 $_cpu1 $TICKS" | awk '{printf "%.2f", ($2 - $1) / $3}')
    echo "$_tool $_case $_wall $_rss $_user $_sys $((_up1 - _up0)) $((_down1 - _down0)) $_regcpu" >>"$RESULTS"
    printf 'bench:   %-6s %-4s %6.3f s  %6.1f MiB RSS  cpu %5.2f s  registries cpu %5.2f s\n' \
        "$_tool" "$_case" "$_wall" "$(echo "$_rss" | awk '{print $1 / 1024}')" \
        "$(echo "$_user $_sys" | awk '{print $1 + $2}')" "$_regcpu" >&2
}

round=1
while [ "$round" -le "$ROUNDS" ]; do
    if [ $((round % 2)) -eq 1 ]; then order="kiln skopeo"; else order="skopeo kiln"; fi
    echo "bench: round $round of $ROUNDS ($order)" >&2
    for tool in $order; do
        registry_start noauth 2>/dev/null || die "cannot start a destination registry"
        DST=$REGISTRY
        DST_PID=$(last_pid)
        measure "$tool" cold
        measure "$tool" warm
        _registry_kill "$DST_PID" || true # registry.sh's stop-one-pid helper
        rm -rf "$REGISTRY_DIR" # set by registry_start
    done
    round=$((round + 1))
done

# ---- the table ------------------------------------------------------------------------

LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
python3 - "$RESULTS" "$ROUNDS" "$IMAGE_BYTES" "$N_LAYERS" "$LOAD_BEFORE" "$LOAD_AFTER" <<'PY'
import collections, statistics, sys
path, rounds, image_bytes, n_layers = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
runs = collections.defaultdict(list)
for line in open(path):
    tool, case, wall, rss, user, sys_, up, down, regcpu = line.split()
    runs[(tool, case)].append((float(wall), int(rss), float(user) + float(sys_), int(up), int(down),
                               float(regcpu)))
targets = {"cold": 0.7, "warm": 0.5}
print("kiln copy vs skopeo copy, %s layers, %.0f MB of blobs, %d round(s), medians"
      % (n_layers, image_bytes / 1e6, rounds))
print()
print("| case | kiln s | skopeo s | kiln/skopeo | target | kiln peak RSS | skopeo peak RSS "
      "| kiln cpu s | skopeo cpu s | kiln MB up | skopeo MB up |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
worst_rss = 0
for case in ("cold", "warm"):
    k, s = runs[("kiln", case)], runs[("skopeo", case)]
    kw = statistics.median(r[0] for r in k)
    sw = statistics.median(r[0] for r in s)
    ratio = kw / sw if sw > 0 else float("inf")
    krss = max(r[1] for r in k) / 1024
    srss = max(r[1] for r in s) / 1024
    worst_rss = max(worst_rss, krss)
    kc = statistics.median(r[2] for r in k)
    sc = statistics.median(r[2] for r in s)
    kup = statistics.median(r[3] for r in k) / 1e6
    sup = statistics.median(r[3] for r in s) / 1e6
    verdict = "met" if ratio <= targets[case] else "missed"
    print("| %s | %.3f | %.3f | **%.2f** | <= %.1f (%s) | %.1f MiB | %.1f MiB | %.2f | %.2f | %.1f | %.1f |"
          % (case, kw, sw, ratio, targets[case], verdict, krss, srss, kc, sc, kup, sup))
print()
print("kiln peak RSS %.1f MiB (target <= 64 MiB: %s)" % (worst_rss, "met" if worst_rss <= 64 else "missed"))
print()
print("load average before: %s, after: %s" % (sys.argv[5], sys.argv[6]))
print()
print("all runs (wall s / tool cpu s / registries cpu s / MB up / MB down from the source):")
for (tool, case), rs in sorted(runs.items()):
    print("  %-6s %-4s %s" % (tool, case, "  ".join(
        "%.3f/%.2f/%.2f/%.0f/%.0f" % (r[0], r[2], r[5], r[3] / 1e6, r[4] / 1e6) for r in rs)))
PY
