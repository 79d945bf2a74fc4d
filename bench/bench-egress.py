#!/usr/bin/python3
"""Benchmark: a 100 MB transfer through agentd's egress proxy (from inside a
Mode=proxy sandbox, via the in-sandbox bridge) next to the same transfer
directly on the host's loopback, in the same run, with the same client (curl);
plus the latency the proxy adds to a small request. Prints ratios.
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
    with Daemon(tasks=tasks) as d:
        ws = os.path.join(d.tmp, "ws")
        os.makedirs(ws)
        curl_big = f"curl -s -o /dev/null -w '%{{time_total}} %{{size_download}}\\n' http://127.0.0.1:{port}/big"
        curl_small = f"for i in $(seq 30); do curl -s -o /dev/null -w '%{{time_total}}\\n' http://127.0.0.1:{port}/small; done"
        direct_big, proxy_big, tunnel_big = [], [], []
        for _ in range(runs):
            out = subprocess.run(["sh", "-c", curl_big], capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"}).stdout.split()
            direct_big.append(float(out[0]))
            p = d.agentctl("spawn", "--task", "web", "--", "/bin/sh", "-c", "export NO_PROXY= no_proxy=; " + curl_big, cwd=ws, check=0)
            t, n = p.stdout.decode().split()
            assert int(n) == SIZE, n
            proxy_big.append(float(t))
            p = d.agentctl("spawn", "--task", "web", "--", "/bin/sh", "-c",
                           "export NO_PROXY= no_proxy=; " + curl_big.replace("curl -s", "curl -s --proxytunnel"), cwd=ws, check=0)
            tunnel_big.append(float(p.stdout.decode().split()[0]))
        direct_small = [float(x) for x in subprocess.run(["sh", "-c", curl_small], capture_output=True, text=True,
                                                         env={"PATH": "/usr/bin:/bin"}).stdout.split()]
        p = d.agentctl("spawn", "--task", "web", "--", "/bin/sh", "-c", "export NO_PROXY= no_proxy=; " + curl_small, cwd=ws, check=0)
        proxy_small = [float(x) for x in p.stdout.decode().split()]
        med = statistics.median
        mb = SIZE / 1e6
        print(f"100 MB transfer, curl, {runs} runs each (medians)")
        print(f"  direct on host loopback        {mb/med(direct_big):8.0f} MB/s")
        print(f"  via proxy, absolute-URI HTTP   {mb/med(proxy_big):8.0f} MB/s   ratio {med(direct_big)/med(proxy_big):.2f}")
        print(f"  via proxy, CONNECT tunnel      {mb/med(tunnel_big):8.0f} MB/s   ratio {med(direct_big)/med(tunnel_big):.2f}  (target >= 0.8)")
        print("small request (connect + 16-byte response), 30 each (medians)")
        print(f"  direct {med(direct_small)*1000:.3f} ms, via proxy {med(proxy_small)*1000:.3f} ms: the proxy adds "
              f"{(med(proxy_small)-med(direct_small))*1000:.3f} ms")
    srv.shutdown()


if __name__ == "__main__":
    main()
