#!/usr/bin/python3
"""Scale: what one running sandbox costs agentd, and whether anything grows per spawn.

1. For each N in SCALE_COUNTS (default "1 100 500"): start N sandboxes running
   `sleep`, concurrently (SCALE_PAR clients), then read agentd's RSS
   (/proc/PID/status VmRSS) and open fds (agentd.status open_fds, as agentd is
   not dumpable) and report (value - idle value) / N. Then kill, wait and
   discard them all.
2. SCALE_SPAWNS (default 10000) spawn -> wait -> discard cycles of /bin/true
   (SCALE_PAR at a time); RSS and open fds are sampled every SCALE_SPAWNS/10
   spawns. Growth is reported as the change from the first sample after
   warm-up to the last, and per spawn.

Prints numbers; it passes or fails nothing (timing and memory checks stay out
of the tests). Run as root (it re-executes itself as agentd-bench in a
delegated cgroup) or as any user. Env: SCALE_COUNTS, SCALE_SPAWNS, SCALE_PAR (8),
AGENTD_BUILD."""
import os
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
from benchutil import reexec_unprivileged  # noqa: E402

COUNTS = [int(x) for x in os.environ.get("SCALE_COUNTS", "1 100 500").split()]
SPAWNS = int(os.environ.get("SCALE_SPAWNS", "10000"))
PAR = int(os.environ.get("SCALE_PAR", "8"))


def sample(d):
    c = d.client()
    try:
        fds = c.ok("agentd.status")["open_fds"] - 1  # not this connection
    finally:
        c.close()
    return d.rss_kb(), fds


def parallel(n, fn):
    """Runs fn(client, i) for i in range(n) on PAR threads, one client each."""
    errors = []
    nxt = [0]
    lock = threading.Lock()

    def worker():
        c = d_global.client()
        try:
            while True:
                with lock:
                    i = nxt[0]
                    nxt[0] += 1
                if i >= n:
                    return
                fn(c, i)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)
        finally:
            c.close()

    ts = [threading.Thread(target=worker) for _ in range(min(PAR, n))]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if errors:
        raise errors[0]


def running(n, ws):
    ids = [None] * n

    def spawn(c, i):
        ids[i] = c.ok("sandbox.spawn", {"argv": ["/bin/sleep", "600"], "workspace": ws})["id"]

    t0 = time.perf_counter()
    parallel(n, spawn)
    t_spawn = time.perf_counter() - t0
    time.sleep(0.5)  # let the helpers report "started"
    rss, fds = sample(d_global)

    def end(c, i):
        c.ok("sandbox.kill", {"id": ids[i]})
        c.ok("sandbox.wait", {"id": ids[i]})
        c.ok("sandbox.discard", {"id": ids[i]})

    parallel(n, end)
    return rss, fds, t_spawn


def cycles(n, ws):
    def one(c, i):
        sid = c.ok("sandbox.spawn", {"argv": ["/bin/true"], "workspace": ws})["id"]
        c.ok("sandbox.wait", {"id": sid})
        c.ok("sandbox.discard", {"id": sid})
    parallel(n, one)


def main():
    global d_global
    sys.stdout.reconfigure(line_buffering=True)
    if os.geteuid() == 0:
        reexec_unprivileged(__file__, delegate_cgroup=True, keep_env=("SCALE_COUNTS", "SCALE_SPAWNS", "SCALE_PAR"))
    from harness import Daemon  # noqa: E402
    d = d_global = Daemon(config="[Daemon]\nMaxSandboxes=%d\n" % (max(COUNTS) + PAR + 16))
    ws = tempfile.mkdtemp(prefix="agentd-scale-ws-")
    d.start()
    try:
        c = d.client()
        st = c.ok("agentd.status")
        c.close()
        print(f"bench-scale: {os.cpu_count()} cpus, build {os.environ.get('AGENTD_BUILD')}, cgroup: {st.get('cgroup')}, "
              f"SCALE_COUNTS={' '.join(map(str, COUNTS))} SCALE_SPAWNS={SPAWNS} SCALE_PAR={PAR}")
        cycles(min(50, max(SPAWNS, 1)), ws)  # warm-up: pools, caches, the audit file
        idle_rss, idle_fds = sample(d)
        print(f"idle after warm-up: RSS {idle_rss} KiB, {idle_fds} open fds")
        print(f"{'sandboxes':>9} {'RSS KiB':>9} {'fds':>6} {'bytes/sandbox':>14} {'fds/sandbox':>12} {'spawn all s':>12}")
        for n in COUNTS:
            rss, fds, t = running(n, ws)
            print(f"{n:>9} {rss:>9} {fds:>6} {(rss - idle_rss) * 1024 / n:>14.0f} {(fds - idle_fds) / n:>12.2f} {t:>12.2f}")
        after_rss, after_fds = sample(d)
        print(f"after all ended and were discarded: RSS {after_rss} KiB, {after_fds} open fds")

        if SPAWNS > 0:
            step = max(SPAWNS // 10, 1)
            done = 0
            samples = []
            t0 = time.perf_counter()
            while done < SPAWNS:
                k = min(step, SPAWNS - done)
                cycles(k, ws)
                done += k
                rss, fds = sample(d)
                samples.append((done, rss, fds))
                print(f"  after {done:>6} spawns: RSS {rss} KiB, {fds} open fds, {done / (time.perf_counter() - t0):.0f} spawns/s")
            (n0, r0, f0), (n1, r1, f1) = samples[0], samples[-1]
            per = (r1 - r0) * 1024 / (n1 - n0) if n1 > n0 else 0
            print(f"growth from spawn {n0} to {n1}: RSS {r1 - r0:+d} KiB ({per:+.1f} bytes/spawn), fds {f1 - f0:+d}")
    finally:
        d.stop()


if __name__ == "__main__":
    main()
