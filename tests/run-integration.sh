#!/bin/bash
# Runs one integration test file the way tests/run-all.sh does: as root, it
# creates the unprivileged test user if needed and runs the file as that user
# inside a cgroup v2 subtree delegated to it (like systemd's Delegate=yes);
# as any other user, it runs the file directly.
# Usage: bash tests/run-integration.sh test_foo.py   [AGENTD_BUILD=dir] [AGENTD_TEST_ONLY=name]
#        [AGENTD_TEST_POOL=N: every daemon keeps N warm sandboxes per task ([Pool] WarmSandboxes=)]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TEST_USER=${AGENTD_TEST_USER:-agentd-test}
file=$(basename "$1")
build=${AGENTD_BUILD:-$ROOT/build}
if [ "$(id -u)" -ne 0 ]; then
        exec env AGENTD_BUILD="$build" /usr/bin/python3 "$ROOT/tests/integration/$file"
fi
id "$TEST_USER" >/dev/null 2>&1 || useradd --create-home --shell /bin/bash "$TEST_USER"
# The test user needs to read the tree and run the binaries.
d=$ROOT
while [ "$d" != / ]; do chmod o+rx "$d" 2>/dev/null || true; d=$(dirname "$d"); done
home=$(getent passwd "$TEST_USER" | cut -d: -f6)
# A file's root-only setup (e.g. toolchains copied into the test user's home).
setup="$ROOT/tests/integration/${file%.py}-setup.sh"
[ ! -x "$setup" ] || "$setup" "$TEST_USER" "$home"
cg=""
if [ -n "${CGROUP_BASE:-}" ]; then
        cg="$CGROUP_BASE/${file%.py}"
else
        mnt=$(grep -m1 ' - cgroup2 ' /proc/self/mountinfo | awk '{print $5}' || true)
        [ -z "$mnt" ] || cg="$mnt/agentd-test-run-$$"
fi
if [ -n "$cg" ]; then
        mkdir -p "$cg" && chown -R "$TEST_USER" "$cg" || cg=""
fi
rc=0
env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME="$home" USER="$TEST_USER" \
        AGENTD_BUILD="$build" AGENTD_TEST_ONLY="${AGENTD_TEST_ONLY:-}" AGENTD_TEST_POOL="${AGENTD_TEST_POOL:-}" CG="$cg" \
        sh -c '[ -z "$CG" ] || echo $$ > "$CG/cgroup.procs"; exec runuser -u '"$TEST_USER"' -- /usr/bin/python3 "$0"' \
        "$ROOT/tests/integration/$file" || rc=$?
if [ -n "$cg" ] && [ -z "${CGROUP_BASE:-}" ]; then
        find "$cg" -depth -type d -exec rmdir {} \; 2>/dev/null || true
fi
exit $rc
