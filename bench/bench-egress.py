#!/usr/bin/python3
"""Benchmark: a 100 MB transfer through agentd's egress proxy (from inside a
Mode=proxy sandbox, via the in-sandbox bridge) next to the same transfer
directly on the host's loopback, in the same run, with the same client (curl);
plus the latency the proxy adds to a small request and connections per second
for many small requests (one curl, a new connection per request). The proxy
runs twice, side by side: relaying with copies (the default) and with
splice(2) (AGENTD_NETPROXY_SPLICE=1); runs alternate. Prints ratios.
Run as root (re-executes as the unprivileged user agentd-bench) or as a user."""
import http.server
import os
import statistics
import subprocess
import sys
import threading

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
from benchutil import reexec_unprivileged  # noqa: E402
SIZE = 100 * 1024 * 1024


def reexec():
    reexec_unprivileged(__file__, delegate_cgroup=False)


CHUNK = b"x" * (1024 * 1024)


class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def do_GET(self):
        n = SIZE if self.path == "/big" else 16
        self.send_response(200)
        self.send_header("Content-Length", str(n))
        self.end_headers()
        left = n
        while left > 0:
            k = min(left, len(CHUNK))
            self.wfile.write(CHUNK[:k])
            left -= k

    def log_message(self, *a):
        pass


def main():
    if os.geteuid() == 0:
        reexec()
    from harness import Daemon
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    port = srv.server_address[1]
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    tasks = {"web": f"[Task]\nDescription=bench\n[Network]\nMode=proxy\nAllow=127.0.0.1:{port}\n"}
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    ds = {"splice": Daemon(tasks=tasks, env={"AGENTD_NETPROXY_SPLICE": "1"}), "copy": Daemon(tasks=tasks)}
    for d in ds.values():
        d.start()
        os.makedirs(os.path.join(d.tmp, "ws"))
    try:
        run_all(ds, port, runs)
    finally:
        for d in ds.values():
            d.stop()
    srv.shutdown()


def run_all(ds, port, runs):
    curl_big = f"curl -s -o /dev/null -w '%{{time_total}} %{{size_download}}\\n' http://127.0.0.1:{port}/big"
    curl_small = f"for i in $(seq 30); do curl -s -o /dev/null -w '%{{time_total}}\\n' http://127.0.0.1:{port}/small; done"
    # Many small requests in one curl, each on a new connection: connections/s.
    n_conn = 200
    urls = " ".join([f"http://127.0.0.1:{port}/small"] * n_conn)
    curl_many = ("t0=$(date +%s%N); curl -s -H 'Connection: close' " + " ".join(["-o /dev/null"] * n_conn) + " " + urls +
                 "; t1=$(date +%s%N); echo $(( (t1 - t0) / 1000 ))e-6")
    env = {"PATH": "/usr/bin:/bin"}
    direct_big, direct_many = [], []
    proxy_big = {k: [] for k in ds}
    tunnel_big = {k: [] for k in ds}
    many = {k: [] for k in ds}

    def inside(d, cmd):
        p = d.agentctl("spawn", "--task", "web", "--", "/bin/sh", "-c", "export NO_PROXY= no_proxy=; " + cmd,
                       cwd=os.path.join(d.tmp, "ws"), check=0)
        return p.stdout.decode().split()

    for i in range(runs):
        out = subprocess.run(["sh", "-c", curl_big], capture_output=True, text=True, env=env).stdout.split()
        direct_big.append(float(out[0]))
        direct_many.append(float(subprocess.run(["sh", "-c", curl_many], capture_output=True, text=True,
                                                env=env).stdout.split()[0]))
        for k in (("splice", "copy") if i % 2 == 0 else ("copy", "splice")):
            t, n = inside(ds[k], curl_big)
            assert int(n) == SIZE, n
            proxy_big[k].append(float(t))
            t, n = inside(ds[k], curl_big.replace("curl -s", "curl -s --proxytunnel"))
            assert int(n) == SIZE, n
            tunnel_big[k].append(float(t))
            many[k].append(float(inside(ds[k], curl_many)[0]))
    direct_small = [float(x) for x in subprocess.run(["sh", "-c", curl_small], capture_output=True, text=True,
                                                     env=env).stdout.split()]
    proxy_small = [float(x) for x in inside(ds["splice"], curl_small)]
    med = statistics.median
    mb = SIZE / 1e6
    print(f"100 MB transfer, curl, {runs} runs each (medians); proxy relaying with splice / with copies")
    print(f"  direct on host loopback        {mb/med(direct_big):8.0f} MB/s")
    for k in ds:
        print(f"  [{k:6}] via proxy, absolute-URI HTTP   {mb/med(proxy_big[k]):8.0f} MB/s   ratio {med(direct_big)/med(proxy_big[k]):.2f}")
        print(f"  [{k:6}] via proxy, CONNECT tunnel      {mb/med(tunnel_big[k]):8.0f} MB/s   ratio "
              f"{med(direct_big)/med(tunnel_big[k]):.2f}  (target >= 0.9)")
    print(f"  splice/copy, CONNECT: {med(tunnel_big['copy'])/med(tunnel_big['splice']):.2f}x throughput")
    print(f"{n_conn} small requests, one curl, a new connection each (medians)")
    print(f"  direct                  {n_conn/med(direct_many):8.0f} connections/s")
    for k in ds:
        print(f"  [{k:6}] via proxy       {n_conn/med(many[k]):8.0f} connections/s   ratio {med(direct_many)/med(many[k]):.2f}")
    print("small request (connect + 16-byte response), 30 each (medians)")
    print(f"  direct {med(direct_small)*1000:.3f} ms, via proxy {med(proxy_small)*1000:.3f} ms: the proxy adds "
          f"{(med(proxy_small)-med(direct_small))*1000:.3f} ms")


if __name__ == "__main__":
    main()
