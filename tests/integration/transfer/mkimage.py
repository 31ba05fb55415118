#!/usr/bin/python3
"""Make test images as OCI image layouts, for kiln's transfer tests.

  mkimage.py DIR NAME [--layers SIZES] [--seed S] [--docker] [--arch A,...]
                     [--user U] [--env K=V]... [--label K=V]...

Writes (or adds to) the OCI image layout DIR an image named NAME in
index.json. SIZES is a comma-separated list of approximate layer sizes in
bytes (suffixes k, m): each layer is a gzip'd tar holding one file of
pseudo-random (incompressible) bytes made from the seed, so the same
arguments give the same digests. --docker writes Docker v2 schema 2 media
types instead of OCI ones. With several --arch values an image index (or
docker manifest list) of one image per architecture is written, each with
its own layers. Prints the digest of what NAME points to.
"""

import argparse
import gzip
import hashlib
import io
import json
import os
import random
import sys
import tarfile

OCI = {
    "manifest": "application/vnd.oci.image.manifest.v1+json",
    "index": "application/vnd.oci.image.index.v1+json",
    "config": "application/vnd.oci.image.config.v1+json",
    "layer": "application/vnd.oci.image.layer.v1.tar+gzip",
}
DOCKER = {
    "manifest": "application/vnd.docker.distribution.manifest.v2+json",
    "index": "application/vnd.docker.distribution.manifest.list.v2+json",
    "config": "application/vnd.docker.container.image.v1+json",
    "layer": "application/vnd.docker.image.rootfs.diff.tar.gzip",
}


def size_of(s):
    s = s.strip().lower()
    mult = 1
    if s.endswith("k"):
        mult, s = 1024, s[:-1]
    elif s.endswith("m"):
        mult, s = 1024 * 1024, s[:-1]
    return int(float(s) * mult)


def put_blob(layout, data):
    d = hashlib.sha256(data).hexdigest()
    path = os.path.join(layout, "blobs", "sha256", d)
    if not os.path.exists(path):
        with open(path + ".tmp", "wb") as f:
            f.write(data)
        os.rename(path + ".tmp", path)
    return "sha256:" + d, len(data)


def make_layer(seed, i, size):
    rnd = random.Random("%s/%d/%d" % (seed, i, size))
    payload = rnd.randbytes(size)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tf:
        ti = tarfile.TarInfo("data/layer%d.bin" % i)
        ti.size = len(payload)
        ti.mtime = 1700000000
        ti.mode = 0o644
        tf.addfile(ti, io.BytesIO(payload))
    tar = raw.getvalue()
    gz = io.BytesIO()
    with gzip.GzipFile(fileobj=gz, mode="wb", compresslevel=1, mtime=0) as g:
        g.write(tar)
    return gz.getvalue(), "sha256:" + hashlib.sha256(tar).hexdigest()


def make_image(layout, args, mt, arch, seed):
    layers = []
    diff_ids = []
    history = []
    for i, s in enumerate(args.layers):
        blob, diff_id = make_layer(seed, i, s)
        digest, size = put_blob(layout, blob)
        layers.append({"mediaType": mt["layer"], "digest": digest, "size": size})
        diff_ids.append(diff_id)
        history.append({"created": "2026-01-01T00:00:00Z", "created_by": "layer %d" % i})
    cfg = {
        "architecture": arch,
        "os": "linux",
        "created": "2026-01-01T00:00:00Z",
        "config": {
            "User": args.user,
            "Env": ["PATH=/usr/local/bin:/usr/bin:/bin"] + args.env,
            "Entrypoint": ["/usr/bin/tini", "--"],
            "Cmd": ["start-notebook.sh"],
            "WorkingDir": "/home/jovyan",
            "Labels": dict(kv.split("=", 1) for kv in args.label),
        },
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": history,
    }
    if arch == "arm64":
        cfg["variant"] = "v8"
    cdata = json.dumps(cfg, separators=(",", ":")).encode()
    cdigest, csize = put_blob(layout, cdata)
    man = {
        "schemaVersion": 2,
        "mediaType": mt["manifest"],
        "config": {"mediaType": mt["config"], "digest": cdigest, "size": csize},
        "layers": layers,
    }
    mdata = json.dumps(man, separators=(",", ":")).encode()
    mdigest, msize = put_blob(layout, mdata)
    return {"mediaType": mt["manifest"], "digest": mdigest, "size": msize}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("layout")
    ap.add_argument("name")
    ap.add_argument("--layers", default="100k,200k,50k")
    ap.add_argument("--seed", default="kiln")
    ap.add_argument("--docker", action="store_true")
    ap.add_argument("--arch", default="amd64")
    ap.add_argument("--user", default="jovyan")
    ap.add_argument("--env", action="append", default=[])
    ap.add_argument("--label", action="append", default=[])
    args = ap.parse_args()
    args.layers = [size_of(s) for s in args.layers.split(",") if s.strip()]
    mt = DOCKER if args.docker else OCI
    layout = args.layout
    os.makedirs(os.path.join(layout, "blobs", "sha256"), exist_ok=True)
    with open(os.path.join(layout, "oci-layout"), "w") as f:
        f.write('{"imageLayoutVersion":"1.0.0"}')
    archs = args.arch.split(",")
    if len(archs) == 1:
        desc = make_image(layout, args, mt, archs[0], args.seed)
    else:
        entries = []
        for a in archs:
            d = make_image(layout, args, mt, a, "%s/%s" % (args.seed, a))
            d["platform"] = {"architecture": a, "os": "linux"}
            if a == "arm64":
                d["platform"]["variant"] = "v8"
            entries.append(d)
        idx = {"schemaVersion": 2, "mediaType": mt["index"], "manifests": entries}
        idata = json.dumps(idx, separators=(",", ":")).encode()
        digest, size = put_blob(layout, idata)
        desc = {"mediaType": mt["index"], "digest": digest, "size": size}
    ipath = os.path.join(layout, "index.json")
    try:
        with open(ipath) as f:
            index = json.load(f)
    except FileNotFoundError:
        index = {"schemaVersion": 2, "manifests": []}
    index["manifests"] = [
        m for m in index.get("manifests", [])
        if m.get("annotations", {}).get("org.opencontainers.image.ref.name") != args.name
    ]
    desc["annotations"] = {"org.opencontainers.image.ref.name": args.name}
    index["manifests"].append(desc)
    with open(ipath + ".tmp", "w") as f:
        json.dump(index, f)
    os.rename(ipath + ".tmp", ipath)
    print(desc["digest"])


if __name__ == "__main__":
    sys.exit(main())
