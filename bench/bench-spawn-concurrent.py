#!/usr/bin/python3
"""Spawns under concurrency: SPAWN_CONC (50) clients at once, each running
`agentctl spawn --task default --workspace WS -- /bin/true` back to back, next
to the same number of concurrent `bwrap --unshare-all ... /bin/true` in the
same run. Reports spawns/s and the p50/p95/p99 of one spawn, and the ratios.

Rounds alternate agentd, bwrap, bwrap, agentd, ... (SPAWN_ROUNDS, default 4)
and the results are pooled, so drift favours neither. Each round runs
SPAWN_TOTAL (500) spawns. SPAWN_WARM=N: agentd keeps N warm sandboxes
([Pool] WarmSandboxes=, at most 16). Prints numbers; passes or fails nothing. Run as root
(re-executes itself as agentd-bench) or as any user."""
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
from benchutil import pct, reexec_unprivileged  # noqa: E402

CONC = int(os.environ.get("SPAWN_CONC", "50"))
TOTAL = int(os.environ.get("SPAWN_TOTAL", "500"))
ROUNDS = int(os.environ.get("SPAWN_ROUNDS", "4"))
WARM = int(os.environ.get("SPAWN_WARM", "0"))
BWRAP = ["bwrap", "--unshare-all", "--die-with-parent", "--new-session", "--ro-bind", "/", "/", "--dev", "/dev",
         "--proc", "/proc", "--tmpfs", "/tmp", "/bin/true"]


def round_of(argv, env):
    """TOTAL runs of argv, CONC at a time; returns (wall seconds, [latency s], failures)."""
    lat, fails = [], []
    nxt = [0]
    lock = threading.Lock()

    def worker():
        while True:
            with lock:
                if nxt[0] >= TOTAL:
                    return
                nxt[0] += 1
            t0 = time.perf_counter()
            p = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
            dt = time.perf_counter() - t0
            with lock:
                if p.returncode == 0:
                    lat.append(dt)
                else:
                    fails.append(p.stderr.decode(errors="replace").strip()[:200])

    ts = [threading.Thread(target=worker) for _ in range(CONC)]
    t0 = time.perf_counter()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return time.perf_counter() - t0, lat, fails


def main():
    sys.stdout.reconfigure(line_buffering=True)
    if os.geteuid() == 0:
        reexec_unprivileged(__file__, keep_env=("SPAWN_CONC", "SPAWN_TOTAL", "SPAWN_ROUNDS", "SPAWN_WARM"))
    from harness import AGENTCTL, Daemon  # noqa: E402
    d = Daemon(config="[Daemon]\nMaxSandboxes=%d\n" % (CONC + 16) + (f"[Pool]\nWarmSandboxes={WARM}\n" if WARM else ""))
    ws = tempfile.mkdtemp(prefix="agentd-conc-ws-")
    d.start()
    try:
        env = dict(d.env)
        env.pop("XDG_RUNTIME_DIR", None)
        env["AGENTD_SOCKET"] = d.socket
        agentd = [AGENTCTL, "spawn", "--task", "default", "--workspace", ws, "--", "/bin/true"]
        print(f"bench-spawn-concurrent: {os.cpu_count()} cpus, {CONC} concurrent, {TOTAL} spawns per round, "
              f"{ROUNDS} rounds, warm sandboxes {WARM}, build {os.environ.get('AGENTD_BUILD')}")
        round_of(agentd, env)  # warm-up (not counted)
        res = {"agentd": [0.0, [], []], "bwrap": [0.0, [], []]}
        for r in range(ROUNDS):
            order = ("agentd", "bwrap") if r % 2 == 0 else ("bwrap", "agentd")
            for name in order:
                wall, lat, fails = round_of(agentd if name == "agentd" else BWRAP, env)
                res[name][0] += wall
                res[name][1] += lat
                res[name][2] += fails
        rows = {}
        print(f"\n{'command':<8} {'spawns/s':>9} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'ok':>6} {'failed':>6}")
        for name, (wall, lat, fails) in res.items():
            rate = len(lat) / wall if wall else 0
            rows[name] = (rate, pct(lat, .5) * 1e3, pct(lat, .95) * 1e3, pct(lat, .99) * 1e3)
            print(f"{name:<8} {rate:>9.1f} {rows[name][1]:>8.2f} {rows[name][2]:>8.2f} {rows[name][3]:>8.2f} "
                  f"{len(lat):>6} {len(fails):>6}")
            for f in sorted(set(fails))[:3]:
                print(f"   failure: {f}")
        a, b = rows["agentd"], rows["bwrap"]
        if WARM:
            print(f"warm: {d.warm_spawns()} of {d.read_log().count(': spawned task ')} spawns ran in a warm sandbox")
        print(f"\nagentd/bwrap: spawns/s {a[0] / b[0]:.2f} (higher is better), p50 {a[1] / b[1]:.2f}, "
              f"p95 {a[2] / b[2]:.2f}, p99 {a[3] / b[3]:.2f} (lower is better)")
    finally:
        d.stop()


if __name__ == "__main__":
    main()
