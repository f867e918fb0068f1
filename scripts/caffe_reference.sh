#!/usr/bin/env bash
# Regenerate tests/caffe/reference/ with real pycaffe: Debian 11's python3-caffe (BVLC Caffe
# 1.0) in a debootstrap'ed bullseye chroot, running tests/caffe/make_reference.py there.
#
#   sudo scripts/caffe_reference.sh [CHROOT_DIR]     (default /tmp/caffe-bullseye; reused if built)
#
# Needs root and debootstrap (apt-get install debootstrap); only Debian's mirror is contacted.
# The chroot is left in place so a second run takes seconds; delete the folder to rebuild it.
set -euo pipefail
ROOT=${1:-/tmp/caffe-bullseye}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
REPO=$(cd "$(dirname "$0")/.." && pwd)
OUT="$REPO/tests/caffe/reference"

if [ ! -x "$ROOT/usr/bin/python3" ] || ! chroot "$ROOT" python3 -c "import caffe" 2>/dev/null; then
    if [ ! -e "$ROOT/etc/debian_version" ]; then
        debootstrap --variant=minbase bullseye "$ROOT" "$MIRROR"
    fi
    chroot "$ROOT" env DEBIAN_FRONTEND=noninteractive apt-get update
    # --no-install-recommends: pycaffe's imports need only these (no skimage/matplotlib pulled in)
    chroot "$ROOT" env DEBIAN_FRONTEND=noninteractive apt-get install -y \
        --no-install-recommends python3-caffe python3-numpy python3-protobuf
fi

work=$(mktemp -d "$ROOT/tmp/reference.XXXXXX")
trap 'rm -rf "$work"' EXIT
cp "$REPO/tests/caffe/make_reference.py" "$work/"
inside=${work#"$ROOT"}
chroot "$ROOT" env GLOG_minloglevel=2 python3 "$inside/make_reference.py" "$inside/out"
mkdir -p "$OUT"
rm -f "$OUT"/*.prototxt "$OUT"/*.caffemodel "$OUT"/*.npz
cp "$work/out/"* "$OUT/"
chroot "$ROOT" dpkg-query -W -f='${Package} ${Version}\n' python3-caffe >"$OUT/VERSION"
echo "wrote $(ls "$OUT" | wc -l) files to $OUT ($(du -sh "$OUT" | cut -f1))"
