#!/bin/bash
# Spawn-time benchmark: `agentctl spawn --task default -- /bin/true` through a
# daemon started here (temp dir, temp workspace), and through a second one with
# warm sandboxes ([Pool] WarmSandboxes=2, "agentd-pool"), against bubblewrap,
# unshare and plain exec of /bin/true, plus `agentctl ping` as the
# client-overhead floor, all in ONE hyperfine run. Prints medians, p95 and the ratios
# agentd/bwrap and agentd/unshare (absolute times drift between machines; the
# ratios are the result).
#
# Usage: bench/spawn.sh [BUILD_DIR]    (default: build/ next to bench/)
# Env:   WARMUP (20, per round) RUNS (200 per command) ROUNDS (2)
#        JSON_OUT (keep the hyperfine JSONs there, as a list)
#        BENCH_USER (agentd-bench): run as root, the script re-executes itself
#        as this unprivileged user (user namespaces are what we measure).
#        DELEGATE (1): as root, first move into a cgroup v2 subtree owned by
#        that user, the way systemd's Delegate=yes runs agentd (0: do not).
#        AGENTD_CONF: an agentd.conf for both daemons (the pooled one gets
#        [Pool] WarmSandboxes=${WARM:-2} appended).
#        INTERLEAVE (0): 1 runs the commands round-robin, one run each in a
#        new random order per turn, timed by Python (output to /dev/null)
#        instead of hyperfine's blocks of runs: on a machine whose load
#        drifts within seconds, blocks favour whichever command ran in a
#        quiet moment; interleaving spreads the drift over all of them.
#        BASELINE: another build dir (e.g. of the commit before a change): its
#        agentd and agentctl run as "base" and "base-pool" in the same
#        hyperfine run, and the ratios against them are printed too.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BUILD=$(cd "${1:-$HERE/../build}" && pwd)
WARMUP=${WARMUP:-20}
RUNS=${RUNS:-200}
BENCH_USER=${BENCH_USER:-agentd-bench}

if [ "$(id -u)" = 0 ]; then
        if ! id "$BENCH_USER" >/dev/null 2>&1; then
                useradd -m "$BENCH_USER"
        fi
        CG=
        CG2=$(awk '$9 == "cgroup2" { print $5; exit }' /proc/self/mountinfo)
        if [ "${DELEGATE:-1}" = 1 ] && [ -n "$CG2" ]; then
                CG=$CG2/agentd-bench-$$
                mkdir -p "$CG"
                chown -R "$BENCH_USER" "$CG"
                echo $$ >"$CG/cgroup.procs"
        fi
        rc=0
        runuser -u "$BENCH_USER" -- env WARMUP="$WARMUP" RUNS="$RUNS" ROUNDS="${ROUNDS:-2}" JSON_OUT="${JSON_OUT:-}" \
                AGENTD_CONF="${AGENTD_CONF:-}" DELEGATED="${CG:-none}" BASELINE="${BASELINE:-}" \
                INTERLEAVE="${INTERLEAVE:-0}" PATH=/usr/bin:/bin \
                "$0" "$BUILD" || rc=$?
        if [ -n "$CG" ]; then
                echo $$ >"$CG2/cgroup.procs"
                find "$CG" -depth -type d -exec rmdir {} \; 2>/dev/null || true
        fi
        exit $rc
fi

AGENTD=$BUILD/daemon/agentd
AGENTCTL=$BUILD/client/agentctl
for b in "$AGENTD" "$AGENTCTL"; do
        [ -x "$b" ] || { echo "spawn.sh: $b missing (build first: ninja -C $BUILD)" >&2; exit 1; }
done
for t in hyperfine bwrap unshare /usr/bin/python3; do
        command -v "$t" >/dev/null || { echo "spawn.sh: $t not installed" >&2; exit 1; }
done

T=$(mktemp -d /tmp/agentd-spawn-bench.XXXXXX)
chmod 700 "$T"
mkdir -p "$T/run" "$T/config/agentd" "$T/state" "$T/pool/run" "$T/pool/config/agentd" "$T/pool/state"
[ -z "${AGENTD_CONF:-}" ] || cp "$AGENTD_CONF" "$T/config/agentd/agentd.conf"
{ [ -z "${AGENTD_CONF:-}" ] || cat "$AGENTD_CONF"; printf '\n[Pool]\nWarmSandboxes=%s\n' "${WARM:-2}"; } >"$T/pool/config/agentd/agentd.conf"
# The workspace may not be inside the socket's directory (agentd refuses that).
WS=$(mktemp -d /tmp/agentd-spawn-ws.XXXXXX)
SOCK=$T/agentd.sock
PSOCK=$T/pool/agentd.sock
DPID=
PPID_=
BPIDS=
cleanup() {
        for p in $DPID $PPID_ $BPIDS; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
        rm -rf "$T" "$WS"
}
trap cleanup EXIT

env -i HOME="$HOME" USER="$(id -un)" PATH=/usr/bin:/bin \
        XDG_RUNTIME_DIR="$T/run" XDG_CONFIG_HOME="$T/config" XDG_STATE_HOME="$T/state" \
        AGENTD_LOG_TARGET=stderr "$AGENTD" --socket "$SOCK" 2>"$T/agentd.log" &
DPID=$!
env -i HOME="$HOME" USER="$(id -un)" PATH=/usr/bin:/bin \
        XDG_RUNTIME_DIR="$T/pool/run" XDG_CONFIG_HOME="$T/pool/config" XDG_STATE_HOME="$T/pool/state" \
        AGENTD_LOG_TARGET=stderr "$AGENTD" --socket "$PSOCK" 2>"$T/agentd-pool.log" &
PPID_=$!
for _ in $(seq 100); do
        [ -S "$SOCK" ] && [ -S "$PSOCK" ] && break
        sleep 0.05
done
BASE_CMDS=()
if [ -n "${BASELINE:-}" ]; then
        BASE=$(cd "$BASELINE" && pwd)
        for kind in base base-pool; do
                mkdir -p "$T/$kind/run" "$T/$kind/config/agentd" "$T/$kind/state"
                if [ "$kind" = base-pool ]; then
                        cp "$T/pool/config/agentd/agentd.conf" "$T/$kind/config/agentd/"
                elif [ -n "${AGENTD_CONF:-}" ]; then
                        cp "$AGENTD_CONF" "$T/$kind/config/agentd/agentd.conf"
                fi
                env -i HOME="$HOME" USER="$(id -un)" PATH=/usr/bin:/bin \
                        XDG_RUNTIME_DIR="$T/$kind/run" XDG_CONFIG_HOME="$T/$kind/config" XDG_STATE_HOME="$T/$kind/state" \
                        AGENTD_LOG_TARGET=stderr "$BASE/daemon/agentd" --socket "$T/$kind/agentd.sock" 2>"$T/$kind.log" &
                BPIDS="$BPIDS $!"
                for _ in $(seq 100); do [ -S "$T/$kind/agentd.sock" ] && break; sleep 0.05; done
                "$BASE/client/agentctl" --socket "$T/$kind/agentd.sock" spawn --task default --workspace "$WS" -- /bin/true ||
                        { echo "spawn.sh: baseline $kind failed:" >&2; cat "$T/$kind.log" >&2; exit 1; }
                BASE_CMDS+=("$kind" "$BASE/client/agentctl --socket $T/$kind/agentd.sock spawn --task default --workspace $WS -- /bin/true")
        done
        # The baseline's client against this build's pooled daemon: splits a change
        # into its daemon part (base-pool -> basectl-pool) and its client part.
        BASE_CMDS+=(basectl-pool "$BASE/client/agentctl --socket $PSOCK spawn --task default --workspace $WS -- /bin/true")
fi
export AGENTD_SOCKET=$SOCK
if ! "$AGENTCTL" ping >/dev/null; then
        echo "spawn.sh: agentd did not start:" >&2; cat "$T/agentd.log" >&2; exit 1
fi
if ! "$AGENTCTL" spawn --task default --workspace "$WS" -- /bin/true; then
        echo "spawn.sh: agentctl spawn failed:" >&2; cat "$T/agentd.log" >&2; exit 1
fi
if ! AGENTD_SOCKET=$PSOCK "$AGENTCTL" spawn --task default --workspace "$WS" -- /bin/true; then
        echo "spawn.sh: agentctl spawn (pool) failed:" >&2; cat "$T/agentd-pool.log" >&2; exit 1
fi

echo "spawn.sh: $(nproc) cpus, kernel $(uname -r), user $(id -un), warmup $WARMUP, runs $RUNS, build $BUILD"
echo "spawn.sh: delegated cgroup ${DELEGATED:-none}; agentd: $("$AGENTCTL" status 2>/dev/null | grep -i cgroup | head -1)"
# -N: no intermediate shell, each command is exec'd directly by hyperfine.
# hyperfine measures one command after the other; to keep drift (other load,
# thermal, page cache) from biasing the ratios, the runs are split into ROUNDS
# rounds, the command order reversed every other round, and the times pooled.
ROUNDS=${ROUNDS:-2}
PER_ROUND=$(( (RUNS + ROUNDS - 1) / ROUNDS ))
CMDS=(
        agentd "$AGENTCTL --socket $SOCK spawn --task default --workspace $WS -- /bin/true"
        agentd-pool "$AGENTCTL --socket $PSOCK spawn --task default --workspace $WS -- /bin/true"
        bwrap "bwrap --unshare-all --die-with-parent --new-session --ro-bind / / --dev /dev --proc /proc --tmpfs /tmp /bin/true"
        unshare "unshare -Urmpfn --mount-proc /bin/true"
        true "/bin/true"
        agentctl-ping "$AGENTCTL ping"
        ${BASE_CMDS[@]+"${BASE_CMDS[@]}"}
)
JSONS=()
if [ "${INTERLEAVE:-0}" = 1 ]; then
        /usr/bin/python3 - "$T/spawn-1.json" "$WARMUP" "$RUNS" "${CMDS[@]}" <<'EOF'
import json, os, random, shlex, subprocess, sys, time

out, warmup, runs, pairs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
cmds = [(pairs[i], shlex.split(pairs[i + 1])) for i in range(0, len(pairs), 2)]
times = {name: [] for name, _ in cmds}
cpu = {name: [0.0, 0.0] for name, _ in cmds}
for turn in range(warmup + runs):
    order = cmds[:]
    random.shuffle(order)
    for name, argv in order:
        t0 = time.perf_counter()
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _, status, ru = os.wait4(p.pid, 0)
        dt = time.perf_counter() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
        if p.returncode != 0:
            sys.exit(f"spawn.sh: {name} failed with {p.returncode}")
        if turn >= warmup:
            times[name].append(dt)
            cpu[name][0] += ru.ru_utime
            cpu[name][1] += ru.ru_stime
json.dump({"results": [{"command": n, "times": t, "user": cpu[n][0] / len(t), "system": cpu[n][1] / len(t)}
                       for n, t in times.items()]}, open(out, "w"))
EOF
        JSONS+=("$T/spawn-1.json")
fi
for r in $(seq "$ROUNDS"); do
        [ "${INTERLEAVE:-0}" = 1 ] && break
        args=()
        n=$(( ${#CMDS[@]} / 2 ))
        for i in $(seq 0 $((n - 1))); do
                j=$i
                [ $((r % 2)) = 0 ] && j=$((n - 1 - i))
                args+=(-n "${CMDS[$((2 * j))]}" "${CMDS[$((2 * j + 1))]}")
        done
        hyperfine -N --style basic --warmup "$WARMUP" --runs "$PER_ROUND" \
                --export-json "$T/spawn-$r.json" "${args[@]}" >"$T/hyperfine-$r.out" 2>&1
        JSONS+=("$T/spawn-$r.json")
done
WARM_N=$(grep -c ', warm)' "$T/agentd-pool.log" || true)
ALL_N=$(grep -c ': spawned task ' "$T/agentd-pool.log" || true)
echo "spawn.sh: agentd-pool: $WARM_N of $ALL_N spawns ran in a warm sandbox"
if [ -n "${BASELINE:-}" ]; then
        echo "spawn.sh: baseline $BASE: base-pool: $(grep -c ', warm)' "$T/base-pool.log" || true) of $(grep -c ': spawned task ' "$T/base-pool.log" || true) spawns warm"
fi
if [ -n "${JSON_OUT:-}" ]; then
        /usr/bin/python3 -c 'import json,sys; json.dump([json.load(open(f)) for f in sys.argv[2:]], open(sys.argv[1], "w"))' \
                "$JSON_OUT" "${JSONS[@]}"
fi

# CPU time per spawn (load changes it far less than the wall-clock time):
# agentd's own (utime+stime) and that of the sandboxes it reaped (cutime+cstime),
# divided by the spawns its log counts. Ticks of 10 ms: meaningful over many spawns.
cpu_line() {
        /usr/bin/python3 - "$1" "$2" "$3" <<'EOF'
import os, re, sys
name, pid, log = sys.argv[1], sys.argv[2], sys.argv[3]
f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
tick = os.sysconf("SC_CLK_TCK")
own, kids = (int(f[11]) + int(f[12])) / tick, (int(f[13]) + int(f[14])) / tick
n = open(log).read().count(": spawned task ")
print(f"spawn.sh: cpu {name:<12} agentd {own / n * 1e3:6.2f} ms/spawn, sandboxes reaped by it {kids / n * 1e3:6.2f} ms/spawn ({n} spawns)")
EOF
}
cpu_line agentd "$DPID" "$T/agentd.log"
cpu_line agentd-pool "$PPID_" "$T/agentd-pool.log"
if [ -n "${BASELINE:-}" ]; then
        set -- $BPIDS
        cpu_line base "$1" "$T/base.log"
        cpu_line base-pool "$2" "$T/base-pool.log"
fi
if [ "${INTERLEAVE:-0}" = 1 ]; then
        echo "spawn.sh: interleaved: $RUNS turns, one run of each command per turn in a random order (after $WARMUP warm-up turns)"
else
        echo "spawn.sh: $ROUNDS rounds x $PER_ROUND runs per command (order reversed every other round), pooled"
fi
BENCH_DIR="$HERE" /usr/bin/python3 - "${JSONS[@]}" <<'EOF'
import json, os, statistics, sys

sys.path.insert(0, os.environ["BENCH_DIR"])
from benchutil import pct  # noqa: E402

res = {}
for f in sys.argv[1:]:
    for r in json.load(open(f))["results"]:
        e = res.setdefault(r["command"], {"times": [], "user": 0.0, "system": 0.0, "w": 0})
        n = len(r["times"])
        # hyperfine and the interleaved runner both give the mean user/system time per run
        e["user"] = (e["user"] * e["w"] + r.get("user", 0.0) * n) / (e["w"] + n)
        e["system"] = (e["system"] * e["w"] + r.get("system", 0.0) * n) / (e["w"] + n)
        e["w"] += n
        e["times"] += r["times"]

rows = {}
print()
print(f"{'command':<14} {'median ms':>10} {'p95 ms':>8} {'p99 ms':>8} {'mean ms':>8} {'min ms':>7} {'runs':>5} {'cpu ms':>7}")
names = ["agentd", "agentd-pool", "bwrap", "unshare", "true", "agentctl-ping"] + [n for n in ("base", "base-pool", "basectl-pool") if n in res]
for name in names:
    t = [x * 1e3 for x in res[name]["times"]]
    rows[name] = (statistics.median(t), pct(t, 0.95), pct(t, 0.99))
    cpu = (res[name]["user"] + res[name]["system"]) * 1e3  # the client's own (hyperfine: user+system per run)
    print(f"{name:<14} {rows[name][0]:>10.2f} {rows[name][1]:>8.2f} {rows[name][2]:>8.2f} {statistics.mean(t):>8.2f} {min(t):>7.2f} {len(t):>5} {cpu:>7.2f}")

a = rows["agentd"]
print()
print(f"{'ratio':<28} {'median':>7} {'p95':>7} {'p99':>7}")
for who in ("agentd", "agentd-pool"):
    for peer, target in (("bwrap", "target <= 0.5" if who == "agentd-pool" else ""), ("unshare", "")):
        p, w = rows[peer], rows[who]
        print(f"{who + '/' + peer:<28} {w[0] / p[0]:>7.2f} {w[1] / p[1]:>7.2f} {w[2] / p[2]:>7.2f}  {target}")
net = a[0] - rows["agentctl-ping"][0]
print(f"{'agentd - agentctl ping':<28} {net:>7.2f} ms (spawn cost beyond the client round trip floor)")
print(f"{'(agentd - ping)/bwrap':<28} {net / rows['bwrap'][0]:>7.2f}")
pool = rows["agentd-pool"]
print(f"{'agentd-pool - agentctl ping':<28} {pool[0] - rows['agentctl-ping'][0]:>7.2f} ms")
for who, base in (("agentd", "base"), ("agentd-pool", "base-pool")):
    if base in rows:
        if who == "agentd":
            print()
        w, b, p = rows[who], rows[base], rows["bwrap"]
        print(f"{base + '/bwrap':<28} {b[0] / p[0]:>7.2f} {b[1] / p[1]:>7.2f} {b[2] / p[2]:>7.2f}")
        print(f"{who + '/' + base:<28} {w[0] / b[0]:>7.2f} {w[1] / b[1]:>7.2f} {w[2] / b[2]:>7.2f}  (this build / the baseline)")
if "basectl-pool" in rows:
    w, b, c = rows["agentd-pool"], rows["base-pool"], rows["basectl-pool"]
    print(f"{'basectl-pool/base-pool':<28} {c[0] / b[0]:>7.2f} {c[1] / b[1]:>7.2f} {c[2] / b[2]:>7.2f}  (the daemon's part)")
    print(f"{'agentd-pool/basectl-pool':<28} {w[0] / c[0]:>7.2f} {w[1] / c[1]:>7.2f} {w[2] / c[2]:>7.2f}  (the client's part)")
verdict = "met" if pool[0] / rows["bwrap"][0] <= 0.5 else "NOT met"
print(f"\nspawn.sh: agentd-pool/bwrap median ratio target (<= 0.5) {verdict}")
EOF
