#!/usr/bin/python3
"""Benchmark: how long the event loop stalls while agentd promotes 60,000 files.
A second connection pings agentd every 5 ms, first while agentd is idle, then
while a sandbox.promote of 60,000 new files runs; prints the worst and the
p99 ping latency of both phases, their ratio, and the promote's own time.
systemd's WatchdogSec=30s kills a daemon whose loop stalls for 30 s.
Usage: bench-promote-stall.py [FILES] [BUILD_DIR...]   (several build dirs:
one run each, side by side, e.g. the current build and a baseline)."""
import os
import multiprocessing
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "integration"))

from benchutil import reexec_unprivileged  # noqa: E402


def pinger(socket_path, stop, conn):
    """In its own process: the caller's decoding of a big reply must not hold it back (GIL)."""
    import harness
    c = harness.Client(socket_path, timeout=600)
    out = []
    while not stop.is_set():
        t0 = time.perf_counter()
        c.ok("agentd.ping")
        out.append(time.perf_counter() - t0)
        time.sleep(0.005)
    conn.send(out)


def phase(d, seconds=None, work=None):
    stop = multiprocessing.Event()
    mine, theirs = multiprocessing.Pipe()
    t = multiprocessing.Process(target=pinger, args=(d.socket, stop, theirs))
    t.start()
    time.sleep(0.2)
    t0 = time.perf_counter()
    result = work() if work else time.sleep(seconds)
    took = time.perf_counter() - t0
    stop.set()
    lat = mine.recv()
    t.join()
    lat.sort()
    return {"max": lat[-1], "p99": lat[int(len(lat) * 0.99) - 1 if len(lat) > 1 else 0],
            "median": statistics.median(lat), "n": len(lat), "took": took, "result": result}


def run(build, files):
    os.environ["AGENTD_BUILD"] = build
    import importlib
    import harness
    importlib.reload(harness)
    with harness.Daemon() as d:
        ws = os.path.join(d.tmp, "ws")
        os.makedirs(ws)
        dirs = files // 100
        script = f"for i in $(seq 0 {dirs - 1}); do mkdir d$i; (cd d$i; seq 1 100 | xargs touch); done"
        d.agentctl("spawn", "--", "/bin/sh", "-c", script, cwd=ws, check=0, timeout=900)
        c = d.client()
        c.sock.settimeout(3600)
        sid = c.ok("sandbox.list")[-1]["id"]
        idle = phase(d, seconds=2.0)
        busy = phase(d, work=lambda: c.ok("sandbox.promote", {"id": sid}))
        assert len(busy["result"]["promoted"]) == dirs * 101, len(busy["result"]["promoted"])
        return idle, busy


def main():
    if os.geteuid() == 0:
        reexec_unprivileged(__file__, delegate_cgroup=True)
    files = int(sys.argv[1]) if len(sys.argv) > 1 else 60000
    builds = sys.argv[2:] or [os.environ.get("AGENTD_BUILD") or os.path.join(os.path.dirname(__file__), "..", "build")]
    print(f"promote of {files // 100 * 101} entries ({files // 100 * 100} files); ping every 5 ms on a second connection")
    print(f"{'build':40} {'idle max':>10} {'idle p99':>10} {'busy max':>10} {'busy p99':>10} {'ratio':>8} {'promote':>9}")
    for b in builds:
        idle, busy = run(os.path.abspath(b), files)
        print(f"{os.path.abspath(b)[-40:]:40} {idle['max']*1000:8.1f}ms {idle['p99']*1000:8.1f}ms {busy['max']*1000:8.1f}ms "
              f"{busy['p99']*1000:8.1f}ms {busy['max']/idle['max']:8.1f} {busy['took']:8.1f}s")
    print("ratio: worst ping latency during the promote / worst when idle. "
          "Target: worst stall during the promote under 100 ms (WatchdogSec=30s)")


if __name__ == "__main__":
    main()
