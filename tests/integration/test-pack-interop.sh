#!/bin/sh
# TAP: layers committed by kiln (src/layer/pack.c) read by other tools.
#  - GNU tar, Python's tarfile/gzip and zstd read the blobs;
#  - an OCI layout of a base layer + an overlay upper-dir layer (whiteouts,
#    opaque directory) is accepted by skopeo (inspect, copy) and unpacked by
#    umoci (Go's gzip and its own whiteout handling) into exactly the tree
#    the overlay showed.
# usage: test-pack-interop.sh TEST_PACK   (the tests/unit test-pack binary,
#        whose "pack DIR OUT [gzip|zstd|none] [--overlay] [--sde N]" mode packs)
# Needs root (overlay mount, devices, trusted xattrs); skips what is missing.
set -u
PACK=${1:?usage: test-pack-interop.sh TEST_PACK}
SDE=1600000000

if [ "$(id -u)" -ne 0 ]; then
    echo "1..0 # SKIP needs root"
    exit 0
fi
T=$(mktemp -d "${TMPDIR:-/tmp}/kiln-test-pack-interop.XXXXXX")
cleanup() {
    umount "$T/ov/merged" 2>/dev/null
    rm -rf "$T"
}
trap cleanup EXIT
trap 'cleanup; exit 130' INT TERM HUP
n=0
fails=0

ok() { # ok STATUS DESCRIPTION
    n=$((n + 1))
    if [ "$1" -eq 0 ]; then
        echo "ok $n - $2"
    else
        echo "not ok $n - $2"
        fails=$((fails + 1))
    fi
}

skip() {
    n=$((n + 1))
    echo "ok $n - # SKIP $1"
}

have() {
    command -v "$1" >/dev/null 2>&1
}

# describe DIR [SDE]: one sorted line per entry (type, mode, owner, size,
# link target, mtime clamped to SDE, data hash, xattrs except trusted.* and
# security.selinux). Sockets are left out (tar cannot hold them).
describe() {
    python3 - "$1" "${2:-}" <<'EOF'
import hashlib, os, stat, sys
root, sde = sys.argv[1], sys.argv[2]
out = []
for d, dirs, files in os.walk(root):
    for name in dirs + files:
        p = os.path.join(d, name)
        st = os.lstat(p)
        if stat.S_ISSOCK(st.st_mode):
            continue
        rel = os.path.relpath(p, root)
        mt = int(st.st_mtime)
        if sde and mt > int(sde):
            mt = int(sde)
        line = "%r %o %d/%d" % (rel, st.st_mode, st.st_uid, st.st_gid)
        if stat.S_ISREG(st.st_mode):
            line += " size %d %s" % (st.st_size, hashlib.sha256(open(p, "rb").read()).hexdigest()[:12])
        if stat.S_ISLNK(st.st_mode):
            line += " -> %r" % os.readlink(p)
        else:
            line += " mtime %d" % mt
        if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
            line += " dev %d,%d" % (os.major(st.st_rdev), os.minor(st.st_rdev))
        if stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode):
            for x in sorted(os.listxattr(p, follow_symlinks=False)):
                if x.startswith("trusted.") or x == "security.selinux":
                    continue
                line += " %s=%s" % (x, os.getxattr(p, x, follow_symlinks=False).hex())
        out.append(line)
for line in sorted(out):
    print(line)
EOF
}

sha() {
    sha256sum "$1" | cut -d' ' -f1
}

# ---- a tree of every kind of entry
S=$T/src
mkdir -p "$S/a/sub" "$S/b" "$S/long-0123456789-0123456789-0123456789-0123456789-0123456789-0123456789-0123456789"
printf 'hello\n' >"$S/a/file"
chmod 4755 "$S/a/file"
ln "$S/a/file" "$S/b/hardlink"
ln -s ../a/file "$S/b/sym"
printf 'x' >"$S/long-0123456789-0123456789-0123456789-0123456789-0123456789-0123456789-0123456789/long-0123456789-0123456789-0123456789-0123456789-0123456789-0123456789-0123456789"
mkfifo "$S/b/fifo"
mknod "$S/b/null" c 1 3
chown 1000:100 "$S/a/sub"
head -c 3000000 /dev/urandom >"$S/b/random"
seq 1 200000 >"$S/b/text"
python3 -c '
import os, sys
os.setxattr(sys.argv[1] + "/a/file", "user.note", b"v\x00x")
os.setxattr(sys.argv[1] + "/a/file", "security.capability",
            bytes([1, 0, 0, 2, 0, 0x20, 0, 0] + [0] * 12))
os.setxattr(sys.argv[1] + "/b", "user.dir", b"d")
os.setxattr(sys.argv[1] + "/a/file", "trusted.secret", b"no")
' "$S"

out=$("$PACK" pack "$S" "$T/l.tar.gz" gzip --sde $SDE)
ok $? "pack the tree (gzip)"
digest=$(echo "$out" | cut -d' ' -f1)
diffid=$(echo "$out" | cut -d' ' -f3)
[ "$digest" = "sha256:$(sha "$T/l.tar.gz")" ]
ok $? "digest is the sha256 of the blob"
[ "$diffid" = "sha256:$(gzip -dc "$T/l.tar.gz" | sha256sum | cut -d' ' -f1)" ]
ok $? "diff_id is the sha256 of the gunzipped blob"
gzip -t "$T/l.tar.gz"
ok $? "gzip -t"
if have pigz; then
    pigz -t "$T/l.tar.gz"
    ok $? "pigz -t"
else
    skip "pigz not installed"
fi
python3 -c '
import gzip, sys, tarfile, zlib
d = open(sys.argv[1], "rb").read()
o = zlib.decompressobj(31)
p = o.decompress(d)
assert o.eof and not o.unused_data, "not exactly one gzip member"
names = tarfile.open(sys.argv[1]).getnames()
assert "a/file" in names and "b/hardlink" in names, names
' "$T/l.tar.gz"
ok $? "python: one gzip member, tarfile reads it"

mkdir "$T/x"
tar --xattrs --xattrs-include='*' --numeric-owner -p -xzf "$T/l.tar.gz" -C "$T/x"
ok $? "GNU tar extracts it"
describe "$S" $SDE >"$T/want"
describe "$T/x" >"$T/got"
diff -u "$T/want" "$T/got" | sed 's/^/# /'
cmp -s "$T/want" "$T/got"
ok $? "GNU tar's tree equals the source"

if have zstd; then
    out=$("$PACK" pack "$S" "$T/l.tar.zst" zstd --sde $SDE)
    ok $? "pack the tree (zstd)"
    zstd -q -t "$T/l.tar.zst"
    ok $? "zstd -t"
    [ "$(echo "$out" | cut -d' ' -f3)" = "$diffid" ]
    ok $? "zstd layer has the gzip layer's diff_id"
    [ "$(echo "$out" | cut -d' ' -f1)" = "sha256:$(sha "$T/l.tar.zst")" ]
    ok $? "zstd digest is the sha256 of the blob"
else
    skip "zstd not installed"
fi

# ---- an overlay: base layer = lower, second layer = the upper dir
O=$T/ov
mkdir -p "$O/lower/etc" "$O/lower/replaced" "$O/lower/opaque/olddir" "$O/upper" "$O/work" "$O/merged"
echo x >"$O/lower/etc/deleted"
echo x >"$O/lower/etc/deleted2"
echo x >"$O/lower/etc/kept"
echo x >"$O/lower/replaced/inside"
echo x >"$O/lower/opaque/old"
echo x >"$O/lower/opaque/olddir/f"
if mount -t overlay overlay -o "lowerdir=$O/lower,upperdir=$O/upper,workdir=$O/work" "$O/merged" 2>/dev/null; then
    rm "$O/merged/etc/deleted" "$O/merged/etc/deleted2"
    rm -rf "$O/merged/replaced" "$O/merged/opaque"
    echo file >"$O/merged/replaced"
    mkdir "$O/merged/opaque"
    echo new >"$O/merged/opaque/new"
    echo added >"$O/merged/etc/added"
    describe "$O/merged" $SDE >"$T/want-ov"
    umount "$O/merged"

    b=$("$PACK" pack "$O/lower" "$T/base.tar.gz" gzip --sde $SDE)
    ok $? "pack the lower dir"
    u=$("$PACK" pack "$O/upper" "$T/upper.tar.gz" gzip --overlay --sde $SDE)
    ok $? "pack the upper dir in overlay mode"
    tar -tzf "$T/upper.tar.gz" >"$T/upper.list"
    grep -qx 'etc/.wh.deleted' "$T/upper.list" && grep -qx 'opaque/.wh..wh..opq' "$T/upper.list"
    ok $? "the upper layer holds OCI whiteouts"

    # an OCI layout with both layers
    L=$T/layout
    mkdir -p "$L/blobs/sha256"
    for f in base upper; do
        cp "$T/$f.tar.gz" "$L/blobs/sha256/$(sha "$T/$f.tar.gz")"
    done
    bd=$(echo "$b" | cut -d' ' -f1)
    bs=$(echo "$b" | cut -d' ' -f2)
    bi=$(echo "$b" | cut -d' ' -f3)
    ud=$(echo "$u" | cut -d' ' -f1)
    us=$(echo "$u" | cut -d' ' -f2)
    ui=$(echo "$u" | cut -d' ' -f3)
    printf '{"architecture":"amd64","os":"linux","config":{},"rootfs":{"type":"layers","diff_ids":["%s","%s"]}}' \
        "$bi" "$ui" >"$T/config.json"
    cd_=$(sha "$T/config.json")
    cp "$T/config.json" "$L/blobs/sha256/$cd_"
    printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"%s","size":%s},{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"%s","size":%s}]}' \
        "$cd_" "$(wc -c <"$T/config.json")" "$bd" "$bs" "$ud" "$us" >"$T/manifest.json"
    md=$(sha "$T/manifest.json")
    cp "$T/manifest.json" "$L/blobs/sha256/$md"
    printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"t"}}]}' \
        "$md" "$(wc -c <"$T/manifest.json")" >"$L/index.json"
    echo '{"imageLayoutVersion":"1.0.0"}' >"$L/oci-layout"

    if have skopeo; then
        skopeo inspect "oci:$L:t" >"$T/inspect.json" 2>"$T/err"
        ok $? "skopeo inspect reads the image"
        grep -q "$ud" "$T/inspect.json"
        ok $? "skopeo lists the upper layer"
        skopeo copy -q "oci:$L:t" "oci:$T/copy:t" 2>"$T/err"
        ok $? "skopeo copy reads and verifies every blob"
        sed 's/^/# /' "$T/err"
    else
        skip "skopeo not installed"
    fi
    if have umoci; then
        umoci unpack --image "$L:t" "$T/bundle" >/dev/null 2>"$T/err"
        ok $? "umoci unpacks the image"
        sed 's/^/# /' "$T/err"
        describe "$T/bundle/rootfs" >"$T/got-ov"
        diff -u "$T/want-ov" "$T/got-ov" | sed 's/^/# /'
        cmp -s "$T/want-ov" "$T/got-ov"
        ok $? "umoci's rootfs equals the merged overlay view"
    else
        skip "umoci not installed"
    fi
else
    skip "cannot mount an overlay"
fi

echo "1..$n"
[ "$fails" -eq 0 ]
