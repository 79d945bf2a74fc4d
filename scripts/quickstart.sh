#!/bin/bash
# The main job on a fresh Debian 12 machine: install packages, build, start
# agentd for the current user, and run a command in a sandbox on the built-in
# `default` task (no Vault or TPM needed).
# Usage: bash scripts/quickstart.sh   (uses sudo for apt when not root)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

bash tests/install-deps.sh
[ -f build/build.ninja ] || meson setup build >/dev/null
ninja -C build

# Where this user's agentd listens (CONTRACT §1); a private temp dir if there is no runtime dir.
if [ -z "${XDG_RUNTIME_DIR:-}" ] || [ ! -w "${XDG_RUNTIME_DIR}" ]; then
        export XDG_RUNTIME_DIR
        XDG_RUNTIME_DIR=$(mktemp -d /tmp/agentd-runtime.XXXXXX)
fi
SOCK=${AGENTD_SOCKET:-$XDG_RUNTIME_DIR/agentd/agentd.sock}
export AGENTD_SOCKET=$SOCK

if ! build/client/agentctl ping >/dev/null 2>&1; then
        LOG=$XDG_RUNTIME_DIR/agentd.log
        AGENTD_LOG_TARGET=${AGENTD_LOG_TARGET:-stderr} nohup build/daemon/agentd --socket "$SOCK" >"$LOG" 2>&1 &
        for _ in $(seq 100); do build/client/agentctl ping >/dev/null 2>&1 && break; sleep 0.05; done
        echo "agentd started (pid $!, socket $SOCK, log $LOG)"
fi
build/client/agentctl status
echo
WS=$(mktemp -d /tmp/agentd-demo.XXXXXX)
echo "hello" > "$WS/README"
echo "--- agentctl spawn (task default) in $WS"
cd "$WS"
set +e
"$ROOT/build/client/agentctl" spawn -- /bin/sh -c '
  echo "inside: host $(hostname), uid $(id -u), cwd $(pwd)";
  echo "processes visible: $(ls /proc | grep -c "^[0-9]")";
  echo "network interfaces: $(ls /sys/class/net 2>/dev/null || cut -d: -f1 /proc/net/dev | tail -n +3 | tr -d " ")";
  echo "home contents: [$(ls -A ~)]";
  echo changed > README; echo "wrote README inside the copy-on-write workspace"'
rc=$?
set -e
echo "--- sandbox exited with $rc; the host copy still says: $(cat "$WS/README")"
"$ROOT/build/client/agentctl" ps | sed -n '1p;$p'   # the header and this sandbox
echo
echo "agentd keeps running: AGENTD_SOCKET=$SOCK $ROOT/build/client/agentctl --help"
