#!/bin/bash
# Runs every benchmark and prints everything: bench-rpc (agentd.ping vs a
# plain epoll echo server) and spawn.sh (agentctl spawn vs bwrap / unshare /
# plain exec); as root also the Python benches (diff, credentials, egress,
# concurrent spawns, scale). Builds first if needed. Run as root or as any user; the
# measurements run as an unprivileged user (BENCH_USER, default agentd-bench).
#
# Usage: bench/run.sh [BUILD_DIR]
# Env:   RPC_SECONDS (3)  WARMUP (20)  RUNS (200)  ROUNDS (2)  RPC_PLACEMENTS  BENCH_USER
#        SPAWN_CONC (50) SPAWN_TOTAL (500) SPAWN_ROUNDS (4)  SCALE_COUNTS ("1 100 500")
#        SCALE_SPAWNS (10000) SCALE_PAR (8)
#        RPC_ONLY=1: only the RPC part (bench-rpc in each placement)
#        BENCH_RPC_POLL=1: bench-rpc's clients wait in poll() instead of a blocking read
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BUILD=${1:-$HERE/../build}
BENCH_USER=${BENCH_USER:-agentd-bench}
RPC_SECONDS=${RPC_SECONDS:-3}

# The feature benchmarks run as root: each re-executes itself unprivileged.
python_bench() {
        echo
        echo "== $1 ($2)"
        AGENTD_BUILD="$BUILD" /usr/bin/python3 "$HERE/$1"
}

python_benches() {
        python_bench bench-diff.py "workspace review"
        python_bench bench-credentials.py "broker and revoke --all"
        python_bench bench-egress.py "egress proxy: copy and splice relays, connections/s"
        python_bench bench-spawn-concurrent.py "50 concurrent spawns vs 50 concurrent bwrap"
        python_bench bench-scale.py "memory and fds per sandbox, growth over SCALE_SPAWNS=${SCALE_SPAWNS:-10000} spawns"
}

if [ "${AGENTD_BENCH_INNER:-}" != 1 ]; then
        if [ ! -f "$BUILD/build.ninja" ]; then
                meson setup "$BUILD" "$HERE/.."
        fi
        if ! ninja -C "$BUILD" >"$BUILD/bench-build.log" 2>&1; then
                # other parts of the tree may be mid-edit: go on with what is built
                echo "run.sh: warning: build failed (see $BUILD/bench-build.log); using existing binaries" >&2
        fi
        for b in daemon/agentd client/agentctl bench/bench-rpc; do
                [ -x "$BUILD/$b" ] || { echo "run.sh: $BUILD/$b missing" >&2; exit 1; }
        done
        BUILD=$(cd "$BUILD" && pwd)
        if [ "$(id -u)" = 0 ]; then
                id "$BENCH_USER" >/dev/null 2>&1 || useradd -m "$BENCH_USER"
                runuser -u "$BENCH_USER" -- env AGENTD_BENCH_INNER=1 PATH=/usr/bin:/bin \
                        RPC_SECONDS="$RPC_SECONDS" RPC_PLACEMENTS="${RPC_PLACEMENTS:-}" RPC_ONLY="${RPC_ONLY:-}" BENCH_RPC_POLL="${BENCH_RPC_POLL:-}" WARMUP="${WARMUP:-20}" RUNS="${RUNS:-200}" ROUNDS="${ROUNDS:-2}" "$0" "$BUILD"
                [ "${RPC_ONLY:-}" = 1 ] || python_benches
                exit 0
        fi
fi
BUILD=$(cd "$BUILD" && pwd)

echo "== machine: $(nproc) cpus, kernel $(uname -r), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
BUILDTYPE=$(/usr/bin/python3 -c 'import json,sys; o={x["name"]: x["value"] for x in json.load(open(sys.argv[1]))}; print(o["buildtype"], "-O" + str(o["optimization"]))' \
        "$BUILD/meson-info/intro-buildoptions.json" 2>/dev/null || echo unknown)
echo "== build: $BUILD ($BUILDTYPE)"
echo

# ---- RPC: a daemon of our own in a temp dir ---------------------------------
T=$(mktemp -d /tmp/agentd-rpc-bench.XXXXXX)
chmod 700 "$T"
mkdir -p "$T/run" "$T/config" "$T/state"
DPID=
cleanup() {
        if [ -n "$DPID" ]; then kill "$DPID" 2>/dev/null || true; wait "$DPID" 2>/dev/null || true; fi
        rm -rf "$T"
}
trap cleanup EXIT
start_agentd() {   # start_agentd [taskset CPU-LIST]
        env -i HOME="$HOME" USER="$(id -un)" PATH=/usr/bin:/bin \
                XDG_RUNTIME_DIR="$T/run" XDG_CONFIG_HOME="$T/config" XDG_STATE_HOME="$T/state" \
                AGENTD_LOG_TARGET=stderr "$@" "$BUILD/daemon/agentd" --socket "$T/agentd.sock" 2>"$T/agentd.log" &
        DPID=$!
        for _ in $(seq 100); do
                [ -S "$T/agentd.sock" ] && return 0
                sleep 0.05
        done
        cat "$T/agentd.log" >&2
        exit 1
}
stop_agentd() {
        kill "$DPID"
        wait "$DPID" 2>/dev/null || true
        DPID=
        rm -f "$T/agentd.sock"
}

# Placement matters more than code on a VM: a wake-up on another CPU costs
# ~50 us, on the same CPU ~3 us. bench-rpc pins its echo server to agentd's
# CPUs, so each placement compares like with like.
#   split:    agentd (and echo) on CPU 0, clients on CPU 1 (the cross-CPU case)
#   shared:   everything on CPU 0 (pure per-request CPU cost)
#   unpinned: as the scheduler places them (noisy: bimodal)
if [ "$(nproc)" -ge 2 ]; then
        PLACEMENTS=${RPC_PLACEMENTS:-split shared unpinned}
else
        PLACEMENTS=unpinned
fi
for pl in $PLACEMENTS; do
        case $pl in
        split)    srv=(taskset -c 0); cli=(taskset -c 1) ;;
        shared)   srv=(taskset -c 0); cli=(taskset -c 0) ;;
        *)        srv=(); cli=() ;;
        esac
        start_agentd "${srv[@]}"
        echo "== bench-rpc, placement $pl ($RPC_SECONDS s per cell)"
        if ! "${cli[@]}" "$BUILD/bench/bench-rpc" "$T/agentd.sock" "$RPC_SECONDS"; then
                cat "$T/agentd.log" >&2
                exit 1
        fi
        stop_agentd
        echo
done

[ "${RPC_ONLY:-}" = 1 ] && exit 0
echo "== spawn.sh"
"$HERE/spawn.sh" "$BUILD"

