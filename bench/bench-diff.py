#!/usr/bin/python3
"""Benchmark: sandbox.diff of a 10,000-file change set, next to GNU `diff -rq`
walking the same two trees (workspace vs. change layer) in the same run.
Prints medians and the ratio; run as an unprivileged user (re-executes as
agentd-bench when started as root)."""
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "integration"))
from harness import Daemon  # noqa: E402

from benchutil import reexec_unprivileged  # noqa: E402


def reexec():
    reexec_unprivileged(__file__, delegate_cgroup=False)


def timeit(fn, runs):
    ts = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts), sorted(ts)[int(len(ts) * 0.95) - 1 if len(ts) > 1 else 0]


def main():
    if os.geteuid() == 0:
        reexec()
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 7
    with Daemon() as d:
        ws = os.path.join(d.tmp, "ws")
        os.makedirs(ws)
        # 5,000 files the sandbox will modify, plus 5,000 it adds: 10,000 changes.
        for i in range(50):
            os.makedirs(os.path.join(ws, f"old{i}"))
            for j in range(100):
                with open(os.path.join(ws, f"old{i}", f"f{j}"), "w") as f:
                    f.write("original %d %d\n" % (i, j))
        script = ("for i in $(seq 0 49); do for j in $(seq 0 99); do echo changed >> old$i/f$j; done; done;"
                  " for i in $(seq 0 49); do mkdir new$i; (cd new$i; seq 1 100 | xargs touch); done")
        d.agentctl("spawn", "--", "/bin/sh", "-c", script, cwd=ws, check=0, timeout=600)
        c = d.client()
        sid = c.ok("sandbox.list")[-1]["id"]
        upper = os.path.join(d.state_home, "agentd", "sandboxes", sid, "upper")
        n = len(c.ok("sandbox.diff", {"id": sid}))
        agentd_med, agentd_p95 = timeit(lambda: c.ok("sandbox.diff", {"id": sid}), runs)
        peer_med, peer_p95 = timeit(lambda: subprocess.run(["diff", "-rq", ws, upper], stdout=subprocess.DEVNULL), runs)
        print(f"change set: {n} entries ({runs} runs each)")
        print(f"{'':28} {'median':>10} {'p95':>10}")
        print(f"{'agentd sandbox.diff':28} {agentd_med*1000:9.1f}ms {agentd_p95*1000:9.1f}ms")
        print(f"{'diff -rq (same two trees)':28} {peer_med*1000:9.1f}ms {peer_p95*1000:9.1f}ms")
        print(f"ratio agentd/diff-rq: {agentd_med/peer_med:.2f}  (target: 10,000-change diff under 1 s: "
              f"{'met' if agentd_med < 1.0 else 'NOT met'})")


if __name__ == "__main__":
    main()
