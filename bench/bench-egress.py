#!/usr/bin/python3
"""Benchmark: a 100 MB transfer through agentd's egress proxy (from inside a
Mode=proxy sandbox, via the in-sandbox bridge) next to the same transfer
directly on the host's loopback, in the same run, with the same client (curl,
started the same way: a small Python wrapper that reports curl's CPU time);
plus the latency the proxy adds to a small request and connections per second
for many small requests (one curl, a new connection per request).

The proxy runs side by side in several variants (daemons started once, runs
interleaved, the order rotated every round so that no path always goes first):
relaying with copies (the default) and with splice(2)
(AGENTD_NETPROXY_SPLICE=1); with AGENTD_BUILD_OLD=DIR also an older build's
agentd (copies), for before/after numbers from one run; with
AGENTD_BENCH_VARIANTS='name:VAR=V,VAR=V;name2:...' more variants, each an
agentd with those variables in its environment (e.g. the relay's sizes,
AGENTD_NETPROXY_BUF / AGENTD_NETPROXY_PIPE).

Besides wall-clock throughput it reports the CPU each process spent on one
transfer (curl, the Python server thread, agentd), measured over the same
window: from the request reaching the server to the client's close reaching
it (agentd's from /proc/PID/task/*/schedstat, so a sandbox's set-up and
tear-down are not counted). From those it prints two bounds for the ratio:
the CPU ratio (what the ratio tends to when the machine's CPUs are saturated
by other work, throughput proportional to 1/CPU) and the 2-CPU bound (the
best a three-process pipeline with these costs can do on two otherwise idle
CPUs). Run as root (re-executes as the unprivileged user agentd-bench) or as
a user. Usage: bench-egress.py [ROUNDS]"""
import http.server
import os
import statistics
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
from benchutil import reexec_unprivileged  # noqa: E402
SIZE = 100 * 1024 * 1024


def reexec():
    reexec_unprivileged(__file__, delegate_cgroup=False, keep_env=("AGENTD_BUILD_OLD", "AGENTD_BENCH_VARIANTS"))


CHUNK = b"x" * (1024 * 1024)


class Meter:
    """CPU of the server thread and of the agentd in use, over one /big request."""

    def __init__(self):
        self.cond = threading.Condition()
        self.done = 0
        self.server_ns = 0
        self.agentd_ns = 0
        self.agentd_pid = None

    def agentd_cpu_ns(self):
        pid = self.agentd_pid
        if pid is None:
            return 0
        t = 0
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    t += int(f.read().split()[0])
            except OSError:
                pass  # a thread that just ended
        return t

    def add(self, server_ns, agentd_ns):
        with self.cond:
            self.server_ns += server_ns
            self.agentd_ns += agentd_ns
            self.done += 1
            self.cond.notify_all()

    def wait(self, n, timeout=30):
        with self.cond:
            self.cond.wait_for(lambda: self.done >= n, timeout)


METER = Meter()


class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def do_GET(self):
        big = self.path == "/big"
        a0, t0 = METER.agentd_cpu_ns(), time.thread_time_ns()
        n = SIZE if big else 16
        self.send_response(200)
        self.send_header("Content-Length", str(n))
        self.end_headers()
        left = n
        while left > 0:
            k = min(left, len(CHUNK))
            self.wfile.write(CHUNK[:k])
            left -= k
        if not big:
            return
        # The window ends when the client's close arrives here: for the proxied
        # paths, agentd has then relayed every byte and the client's EOF.
        self.connection.settimeout(30)
        try:
            while self.connection.recv(65536):
                pass
        except OSError:
            pass
        self.close_connection = True
        METER.add(time.thread_time_ns() - t0, METER.agentd_cpu_ns() - a0)

    def log_message(self, *a):
        pass


def main():
    if os.geteuid() == 0:
        reexec()
    import harness
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    port = srv.server_address[1]
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    tasks = {"web": f"[Task]\nDescription=bench\n[Network]\nMode=proxy\nAllow=127.0.0.1:{port}\n"}
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    ds = {"copy": harness.Daemon(tasks=tasks), "splice": harness.Daemon(tasks=tasks, env={"AGENTD_NETPROXY_SPLICE": "1"})}
    for v in filter(None, os.environ.get("AGENTD_BENCH_VARIANTS", "").split(";")):
        name, _, assigns = v.partition(":")
        ds[name] = harness.Daemon(tasks=tasks, env=dict(a.split("=", 1) for a in assigns.split(",") if a))
    old = os.environ.get("AGENTD_BUILD_OLD")
    if old:
        ds["old-copy"] = harness.Daemon(tasks=tasks)
    for k, d in ds.items():
        new_binary = harness.AGENTD
        if k.startswith("old-"):
            harness.AGENTD = os.path.join(os.path.abspath(old), "daemon", "agentd")
        try:
            d.start()
        finally:
            harness.AGENTD = new_binary
        os.makedirs(os.path.join(d.tmp, "ws"))
    try:
        run_all(ds, port, runs)
    finally:
        for d in ds.values():
            d.stop()
    srv.shutdown()


# curl under a wrapper that prints curl's output and then curl's CPU seconds
# (getrusage of the child: user + system, precise to the scheduler's clock).
WRAP = ("/usr/bin/python3 -c \"import resource,subprocess,sys; "
        "o=subprocess.run(sys.argv[1:],stdout=subprocess.PIPE).stdout.decode(); "
        "r=resource.getrusage(resource.RUSAGE_CHILDREN); print(o.strip(), r.ru_utime+r.ru_stime)\" ")


def run_all(ds, port, runs):
    curl_big = WRAP + f"curl -s -o /dev/null -w '%{{time_total}} %{{size_download}}' http://127.0.0.1:{port}/big"
    curl_start = WRAP + "curl -s -o /dev/null -w '0 0' file:///dev/null"
    curl_small = f"for i in $(seq 30); do curl -s -o /dev/null -w '%{{time_total}}\\n' http://127.0.0.1:{port}/small; done"
    # Many small requests in one curl, each on a new connection: connections/s.
    n_conn = 200
    urls = " ".join([f"http://127.0.0.1:{port}/small"] * n_conn)
    curl_many = ("t0=$(date +%s%N); curl -s -H 'Connection: close' " + " ".join(["-o /dev/null"] * n_conn) + " " + urls +
                 "; t1=$(date +%s%N); echo $(( (t1 - t0) / 1000 ))e-6")
    env = {"PATH": "/usr/bin:/bin"}

    def host(cmd):
        return subprocess.run(["sh", "-c", cmd], capture_output=True, text=True, env=env).stdout.split()

    def inside(d, cmd):
        p = d.agentctl("spawn", "--task", "web", "--", "/bin/sh", "-c", "export NO_PROXY= no_proxy=; " + cmd,
                       cwd=os.path.join(d.tmp, "ws"), check=0)
        return p.stdout.decode().split()

    def big(name, d, cmd):
        """One 100 MB transfer: (seconds, curl CPU s, server CPU s, agentd CPU s)."""
        METER.agentd_pid = d.proc.pid if d else None
        s0, a0, n0 = METER.server_ns, METER.agentd_ns, METER.done
        out = inside(d, cmd) if d else host(cmd)
        assert int(out[1]) == SIZE, (name, out)
        METER.wait(n0 + 1)
        return float(out[0]), float(out[2]), (METER.server_ns - s0) / 1e9, (METER.agentd_ns - a0) / 1e9

    jobs = [("direct", None, curl_big)]
    for k, d in ds.items():
        jobs.append((f"[{k}] CONNECT", d, curl_big.replace("curl -s", "curl -s --proxytunnel")))
        jobs.append((f"[{k}] absolute-URI", d, curl_big))
    res = {name: [] for name, _, _ in jobs}
    many = {k: [] for k in ["direct"] + list(ds)}
    start = []
    load0 = os.getloadavg()[0]
    for i in range(runs):
        start.append(float(host(curl_start)[2]))
        for name, d, cmd in jobs[i % len(jobs):] + jobs[:i % len(jobs)]:
            res[name].append(big(name, d, cmd))
        for k in list(many)[i % len(many):] + list(many)[:i % len(many)]:
            us = host(curl_many) if k == "direct" else inside(ds[k], curl_many)
            many[k].append(float(us[0]))
    load1 = os.getloadavg()[0]
    direct_small = [float(x) for x in host(curl_small)]
    proxy_small = [float(x) for x in inside(ds["copy"], curl_small)]
    med = statistics.median
    mb = SIZE / 1e6
    cs = med(start)
    print(f"100 MB transfer, curl, {runs} rounds (medians; order rotated each round); load average "
          f"{load0:.1f} -> {load1:.1f} on {os.cpu_count()} CPUs")
    print(f"  CPU ms per transfer: curl's (its start, {cs*1e3:.0f} ms, subtracted), the server thread's, agentd's")
    print(f"  {'path':24} {'MB/s':>6} {'ratio':>6} {'curl':>6} {'server':>6} {'agentd':>6} {'total':>6}"
          f" {'CPU ratio':>9} {'2-CPU bound':>11}")
    dw = med(r[0] for r in res["direct"])
    dcpu = dmin = None
    for name, _, _ in jobs:
        v = res[name]
        wall = med(r[0] for r in v)
        c, s, a = (max(0.0, med(r[1] for r in v) - cs), med(r[2] for r in v), med(r[3] for r in v))
        tot = c + s + a
        tmin = max(c, s, a, tot / 2)   # the shortest wall time these costs allow on 2 idle CPUs
        if dcpu is None:
            dcpu, dmin = tot, tmin
        print(f"  {name:24} {mb/wall:6.0f} {dw/wall:6.2f} {c*1e3:6.1f} {s*1e3:6.1f} {a*1e3:6.1f} {tot*1e3:6.1f}"
              f" {dcpu/tot:9.2f} {dmin/tmin:11.2f}")
    print("  (target: CONNECT >= 0.9 of direct)")
    print(f"{n_conn} small requests, one curl, a new connection each (medians)")
    for k, v in many.items():
        print(f"  {k:10} {n_conn/med(v):8.0f} connections/s   ratio {med(many['direct'])/med(v):.2f}")
    print("small request (connect + 16-byte response), 30 each (medians)")
    print(f"  direct {med(direct_small)*1000:.3f} ms, via proxy (copy) {med(proxy_small)*1000:.3f} ms: the proxy adds "
          f"{(med(proxy_small)-med(direct_small))*1000:.3f} ms")


if __name__ == "__main__":
    main()
