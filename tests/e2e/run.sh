#!/bin/bash
# End-to-end: agentd installed from its Debian package into a Debian 12 container booted with
# systemd as PID 1, used by an ordinary user through `systemctl --user` as README says.
# Needs root (systemd-nspawn), debootstrap and systemd-container. The rootfs is cached
# (E2E_ROOTFS, default /var/cache/agentd-e2e/rootfs); the user's home is reset every run.
# usage: sudo bash tests/e2e/run.sh [path/to/agentd.deb]    (without one it builds the package)
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
export E2E_DIR=${E2E_DIR:-/var/cache/agentd-e2e/run}
ROOT=${E2E_ROOTFS:-/var/cache/agentd-e2e/rootfs}
T0=$SECONDS
[ "$(id -u)" -eq 0 ] || { echo "e2e: needs root (systemd-nspawn)"; exit 1; }
mkdir -p "$E2E_DIR"
bash "$HERE/stop.sh"      # a container left over from an interrupted run

timeout 1200 bash "$HERE/rootfs.sh" "$ROOT" || { echo "e2e: cannot build the rootfs"; exit 1; }
DEB=${1:-}
if [ -z "$DEB" ]; then
        t=$SECONDS
        DEB=$(timeout 900 bash "$HERE/build-deb.sh" "$E2E_DIR/deb") || { echo "e2e: cannot build the package"; exit 1; }
        echo "package: $DEB ($((SECONDS - t))s)"
fi

# A fresh home for u with the C project; the package file for root.
rm -rf "$ROOT/home/u"; cp -a "$ROOT/etc/skel" "$ROOT/home/u"
cp -r "$HERE/cproj" "$ROOT/home/u/proj"
chown -R 1000:1000 "$ROOT/home/u"; chmod 755 "$ROOT/home/u"
# This run's journal only (the container shares the host's boot id, so -b cannot tell runs apart).
mkdir -p "$ROOT/etc/systemd/journald.conf.d"
printf '[Journal]\nStorage=volatile\n' > "$ROOT/etc/systemd/journald.conf.d/agentd-e2e.conf"
rm -rf "$ROOT/var/log/journal"
cp "$DEB" "$ROOT/root/agentd.deb"
# The same tree installed the other way: `meson install` with --prefix ~/.local (as u would).
t=$SECONDS
SRC=$(cd "$HERE/../.." && pwd)
LB=$E2E_DIR/build-local-$(echo "$SRC" | md5sum | cut -c1-8)
{ [ -f "$LB/build.ninja" ] || timeout 300 meson setup "$LB" "$SRC" --prefix=/home/u/.local --buildtype=debug -Dtests=false; } \
        >"$E2E_DIR/build-local.log" 2>&1 && timeout 900 ninja -C "$LB" >>"$E2E_DIR/build-local.log" 2>&1 &&
        DESTDIR="$ROOT" timeout 120 meson install -C "$LB" --quiet >>"$E2E_DIR/build-local.log" 2>&1 ||
        { tail -30 "$E2E_DIR/build-local.log"; echo "e2e: cannot build the --prefix ~/.local install"; exit 1; }
chown -R 1000:1000 "$ROOT/home/u/.local"
echo "meson install --prefix ~/.local: $((SECONDS - t))s"

t=$SECONDS
trap 'bash "$HERE/stop.sh"' EXIT
timeout 120 bash "$HERE/boot.sh" "$ROOT" || { echo "e2e: boot failed"; exit 1; }
echo "boot: $((SECONDS - t))s"
LEADER=$(cat "$E2E_DIR/leader")

IN() { timeout "${TMO:-60}" nsenter -t "$LEADER" -a "$@"; }
# As user u through a PAM login (pam_systemd sets XDG_RUNTIME_DIR), in ~/proj.
U() { timeout "${TMO:-60}" nsenter -t "$LEADER" -a su -l u -c "cd ~/proj && $*"; }

pass=0; fail=0
ok() { echo "ok - $1"; pass=$((pass + 1)); }
bad() { echo "FAIL - $1"; [ -n "${2:-}" ] && printf '%s\n' "$2" | sed 's/^/    /'; fail=$((fail + 1)); }
# check DESC CMD...: the command succeeds
check() { local d=$1 out; shift; if out=$("$@" 2>&1); then ok "$d"; else bad "$d" "$out"; fi; LAST=$out; }
# expect DESC REGEX CMD...: the command succeeds and its output matches REGEX
expect() { local d=$1 re=$2 out; shift 2
        if out=$("$@" 2>&1) && grep -Eq -- "$re" <<<"$out"; then ok "$d"; else bad "$d" "$out"; fi; LAST=$out; }

TMO=300 check "apt-get install ./agentd.deb" IN env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends /root/agentd.deb
check "units installed in systemd's user unit dir" IN test -f /usr/lib/systemd/user/agentd.service -a -f /usr/lib/systemd/user/agentd.socket
check "helper installed in libexec" IN test -x /usr/libexec/agentd-sandbox
check "man pages installed" IN test -f /usr/share/man/man8/agentd.8.gz -a -f /usr/share/man/man1/agentctl.1.gz
doc=$(IN sed -n 's|^Documentation=.*file://\([^ ]*\).*|\1|p' /usr/lib/systemd/user/agentd.service)
check "Documentation= names an installed file ($doc)" IN test -n "$doc" -a -f "$doc"

check "systemctl --user enable --now agentd.socket" U systemctl --user enable --now agentd.socket
expect "agentd.service not started before the first connection" '^inactive$' U 'systemctl --user is-active agentd.service || true'
expect "first agentctl ping socket-activates agentd" '"version"' U agentctl --json ping
expect "agentd.service active" '^active$' U systemctl --user is-active agentd.service
expect "systemctl --user status shows the STATUS= line" 'Status: "serving, [0-9]+ sandbox' U systemctl --user status agentd.service
PID1=$(U systemctl --user show -P MainPID agentd.service)
expect "the unit's hardening is in force for everything below" \
        '^Delegate=yes LockPersonality=yes NoNewPrivileges=yes RestrictRealtime=yes UMask=0077$' \
        U 'systemctl --user show -p LockPersonality,RestrictRealtime,NoNewPrivileges,UMask,Delegate agentd.service | sort -t= -k1,1 -s | tr "\n" " " | sed "s/ $//"'

TMO=300 expect "spawn --task build compiles the C project with make" 'built hello' U agentctl spawn --task build -- make
expect "the build output is on the host and runs" 'hello from a sandboxed build' U ./hello
expect "build outputs get the caller's umask (022: rwxr-xr-x), not the unit's UMask=0077" '^755 644$' \
        U 'umask 022; stat -c %a hello main.o | tr "\n" " " | sed "s/ $//"'
expect "status counts the sandbox" 'Status: "serving, 1 sandbox ' U systemctl --user status agentd.service
expect "an attached spawn's output reaches a pipe another uid created (su)" '^relayed$' \
        bash -c "timeout 60 nsenter -t $LEADER -a su -l u -c 'cd ~/proj && agentctl spawn -- echo relayed' | cat"

SB=$(U agentctl spawn --detach -- sleep 300); SB=$(tail -1 <<<"$SB")
expect "a detached sandbox runs" running U agentctl ps
expect "revoke --all kills it and locks down" '"killed": *1' U agentctl --json revoke --all
expect "status says locked down" 'LOCKED DOWN' U systemctl --user status agentd.service
expect "spawn is refused while locked down" 'locked_down' U 'agentctl spawn -- true; echo "exit $?"'
check "unlock" U agentctl unlock
expect "spawn works again after unlock" '^exit 0$' U 'agentctl spawn -- true; echo "exit $?"'

check "systemctl --user reload agentd" U systemctl --user reload agentd.service
expect "still active after reload" '^active$' U systemctl --user is-active agentd.service
expect "same process after reload" "^$PID1\$" U systemctl --user show -P MainPID agentd.service
expect "ping after reload" '"version"' U agentctl --json ping
check "systemctl --user stop agentd" U systemctl --user stop agentd.service
expect "agentd.service inactive after stop" '^inactive$' U 'systemctl --user is-active agentd.service || true'
expect "agentd.socket still listening" '^active$' U systemctl --user is-active agentd.socket
expect "the next ping re-activates agentd" '"version"' U agentctl --json ping
expect "agentd.service active again" '^active$' U systemctl --user is-active agentd.service
PID2=$(U systemctl --user show -P MainPID agentd.service)
[ "$PID2" != "$PID1" ] && ok "a new process ($PID1 -> $PID2)" || bad "a new process" "MainPID $PID1 -> $PID2"

# The --prefix ~/.local install: its units are found by systemctl --user and work.
check "disable the package's units" U systemctl --user disable --now agentd.socket agentd.service
check "systemctl --user daemon-reload" U systemctl --user daemon-reload
expect "agentd.service now from ~/.local/share/systemd/user" '^/home/u/\.local/share/systemd/user/agentd\.service$' \
        U systemctl --user show -P FragmentPath agentd.service
check "systemctl --user enable --now agentd.socket (~/.local)" U systemctl --user enable --now agentd.socket
expect "~/.local/bin/agentctl ping socket-activates ~/.local/bin/agentd" '"version"' U '~/.local/bin/agentctl --json ping'
# (its command line: agentd is not dumpable, so even its user cannot read /proc/PID/exe)
expect "the running agentd is ~/.local/bin/agentd" '^/home/u/\.local/bin/agentd( |$)' \
        U 'ps -o args= -p $(systemctl --user show -P MainPID agentd.service)'
expect "a spawn works (helper from ~/.local/libexec)" '^local-ok$' U '~/.local/bin/agentctl spawn -- echo local-ok'
check "back to the package's units" U 'systemctl --user disable --now agentd.socket agentd.service && rm -r ~/.local/share/systemd && systemctl --user daemon-reload'

expect "the journal has agentd's log (audit records other than requests mirrored)" '^[1-9]' \
        bash -c "timeout 30 nsenter -t $LEADER -a journalctl -q --no-pager _SYSTEMD_USER_UNIT=agentd.service -o cat | grep -c '^audit sandbox.spawn ' || true"
expect "the journal has no info line per RPC" '^0$' \
        bash -c "timeout 30 nsenter -t $LEADER -a journalctl -q --no-pager _SYSTEMD_USER_UNIT=agentd.service -o cat | grep -c '^audit rpc ' || true"
IN journalctl -q --no-pager _SYSTEMD_USER_UNIT=agentd.service -o short-monotonic > "$E2E_DIR/agentd.journal" 2>&1 || true

echo "e2e: $pass passed, $fail failed in $((SECONDS - T0))s (journal: $E2E_DIR/agentd.journal)"
[ "$fail" -eq 0 ]
