#!/bin/bash
# Boot ROOTFS with systemd as PID 1 (systemd-nspawn -b) and leave it running; enable lingering for u.
# Writes $E2E_DIR/nspawn.pid and $E2E_DIR/leader (the container's PID 1 as seen from the host).
# usage: boot.sh ROOTFS      (adapted from the shared e2e recipe)
set -euo pipefail
ROOT=${1:?usage: boot.sh ROOTFS}
E=${E2E_DIR:?}
mkdir -p "$E"
LOG=$E/boot.log
# Debian 12 hosts run the unified cgroup v2 hierarchy: ask nspawn for it even on a hybrid host
# (controllers stay with the host, so none are delegated inside; freeze and kill work).
export SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=${SYSTEMD_NSPAWN_UNIFIED_HIERARCHY-1}
# nspawn's own seccomp allow list lacks landlock_* (EPERM in every service of the container);
# a Debian 12 host has no such filter on user services, so allow them.
setsid systemd-nspawn -D "$ROOT" -b --register=no --keep-unit --console=passive \
        --system-call-filter="landlock_create_ruleset landlock_add_rule landlock_restrict_self" \
        </dev/null >"$LOG" 2>&1 &
NSPAWN=$!
echo $NSPAWN > "$E/nspawn.pid"
LEADER=
for _ in $(seq 300); do
        for c in $(pgrep -P $NSPAWN || true); do
                [ "$(cat /proc/$c/comm 2>/dev/null)" = systemd ] && grep -Eq '^NSpid:\s+[0-9]+\s+1$' /proc/$c/status && LEADER=$c
        done
        [ -n "$LEADER" ] && break; sleep 0.1
done
[ -n "$LEADER" ] || { echo "container did not boot:"; cat "$LOG"; exit 1; }
echo $LEADER > "$E/leader"
IN() { timeout 30 nsenter -t "$LEADER" -a "$@"; }
st=
for _ in $(seq 300); do
        st=$(IN systemctl is-system-running --wait 2>/dev/null || true)
        [ "$st" != offline ] && [ -n "$st" ] && break; sleep 0.1
done
echo "system: $st"
IN loginctl enable-linger u
for _ in $(seq 100); do IN systemctl is-active -q user@1000.service && break; sleep 0.1; done
echo "user@1000: $(IN systemctl is-active user@1000.service)"
