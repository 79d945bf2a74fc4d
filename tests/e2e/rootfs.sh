#!/bin/bash
# Build a Debian 12 (bookworm) rootfs with systemd as PID 1, a user u (uid 1000) and what
# agentd's package needs at run time plus make/gcc for the build task, for the end-to-end
# suite. Cached: rebuilt only when this package list changes (stamp file). ~2 min once.
# usage: rootfs.sh [ROOTFS]     (default /var/cache/agentd-e2e/rootfs)
# Adapted from the shared e2e recipe (shared/e2e/rootfs.sh).
set -euo pipefail
ROOT=${1:-${E2E_ROOTFS:-/var/cache/agentd-e2e/rootfs}}
PKGS=systemd,dbus,systemd-sysv,libpam-systemd,sudo,ca-certificates,procps,less
# agentd's shared libraries (the .deb's Depends) so `apt-get install ./agentd.deb` needs no download
PKGS=$PKGS,libuv1,libmsgpackc2,libseccomp2,libtss2-esys-3.0.2-0,libtss2-tctildr0,libcurl4,libssl3,libinih1,libjson-c5
# the "real source tree" the suite builds with the build task
PKGS=$PKGS,make,gcc,libc6-dev
STAMP="$ROOT/.agentd-e2e-stamp"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$PKGS" ]; then echo "rootfs: cached ($ROOT)"; exit 0; fi
MIRROR=${MIRROR:-$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)}
[ -n "$MIRROR" ] || MIRROR=$(awk '/^deb /{print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
[ -n "$MIRROR" ] || { echo "rootfs.sh: set MIRROR (no apt mirror found on this host)" >&2; exit 2; }
t0=$(date +%s)
rm -rf "$ROOT.tmp"; mkdir -p "$(dirname "$ROOT")"
debootstrap --variant=minbase --include="$PKGS" bookworm "$ROOT.tmp" "$MIRROR"
if [ -f /etc/apt/sources.list.d/debian.sources ]; then
        cp /etc/apt/sources.list.d/debian.sources "$ROOT.tmp/etc/apt/sources.list.d/debian.sources"
        rm -f "$ROOT.tmp/etc/apt/sources.list"
fi
printf "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n" > "$ROOT.tmp/etc/hosts"   # minbase writes none
chroot "$ROOT.tmp" useradd -m -u 1000 -s /bin/bash u
echo 'u ALL=(ALL) NOPASSWD:ALL' > "$ROOT.tmp/etc/sudoers.d/u"; chmod 440 "$ROOT.tmp/etc/sudoers.d/u"
chroot "$ROOT.tmp" systemctl mask console-getty.service >/dev/null 2>&1 || true
chroot "$ROOT.tmp" apt-get clean
echo "$PKGS" > "$ROOT.tmp/.agentd-e2e-stamp"
rm -rf "$ROOT"; mv "$ROOT.tmp" "$ROOT"
echo "rootfs: built in $(( $(date +%s) - t0 ))s ($ROOT)"
