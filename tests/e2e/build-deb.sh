#!/bin/bash
# Build agentd's Debian package from this tree with dpkg-buildpackage, in a copy of the tree
# (dpkg-buildpackage writes the .deb next to the source directory).
# usage: build-deb.sh OUTDIR     prints the path of the .deb
set -euo pipefail
SRC=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${1:?usage: build-deb.sh OUTDIR}
W=$OUT/src
rm -rf "$W"; mkdir -p "$W/agentd"
tar -C "$SRC" --exclude=./.git --exclude='./build*' --exclude='./obj-*' --exclude=./debian/agentd \
        --exclude=./debian/.debhelper -cf - . | tar -C "$W/agentd" -xf -
(cd "$W/agentd" && DEB_BUILD_OPTIONS="nocheck parallel=$(nproc)" dpkg-buildpackage -us -uc -b) \
        >"$OUT/build-deb.log" 2>&1 || { tail -40 "$OUT/build-deb.log" >&2; exit 1; }
ls "$W"/agentd_*.deb
