#!/usr/bin/python3
"""Network egress: none by default; Mode=proxy reaches named hosts only through
agentd's proxy (exposed inside as 127.0.0.1:PORT); every decision audited;
repeated denials trip the automatic response."""
import contextlib
import http.server
import os
import time

from harness import Daemon, HttpServer, cgroup_delegated, run_tests, skip_no_cgroup


class Upstream(HttpServer):
    """A loopback HTTP server on the host, the allowed destination."""

    def __init__(self):
        hits = self.hits = []

        class H(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                hits.append((self.path, dict(self.headers)))
                body = b"hello from upstream\n"
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        super().__init__(H)


def tasks_for(port, other):
    return {
        "web": f"[Task]\nDescription=web\n[Network]\nMode=proxy\nAllow=127.0.0.1:{port}\nAllow=localhost:{other}\n",
    }


@contextlib.contextmanager
def upstream_and_daemon(web=False, **daemon_kw):
    """An Upstream and a Daemon (with the web task allowing the upstream when
    web) and an empty workspace: yields (upstream, daemon, workspace)."""
    up = Upstream()
    try:
        if web:
            daemon_kw["tasks"] = tasks_for(up.port, up.port + 1)
        with Daemon(**daemon_kw) as d:
            ws = os.path.join(d.tmp, "ws")
            os.makedirs(ws)
            yield up, d, ws
    finally:
        up.stop()


def run(d, ws, script, task="web", check=None):
    return d.agentctl("spawn", "--task", task, "--", "/bin/sh", "-c", script, cwd=ws, check=check)


def test_default_has_only_loopback():
    with upstream_and_daemon() as (up, d, ws):
        p = run(d, ws, f"cat /proc/net/dev | tail -n +3 | cut -d: -f1; env | grep -i proxy; "
                       f"curl -sS -m 3 http://127.0.0.1:{up.port}/ && echo REACHED", task="default")
        assert b"REACHED" not in p.stdout and p.stdout.split() == [b"lo"], p
        assert not up.hits


def test_allowed_via_curl_and_urllib_connect_and_absolute_uri():
    with upstream_and_daemon(web=True) as (up, d, ws):
        # Plain HTTP through the proxy (absolute URI), then a CONNECT tunnel, then Python's urllib.
        script = (f"export NO_PROXY= no_proxy=; echo $HTTP_PROXY; curl -sS -m 5 http://127.0.0.1:{up.port}/abs; "
                  f"curl -sS -m 5 --proxytunnel http://127.0.0.1:{up.port}/tunnel; "
                  f"/usr/bin/python3 -c \"import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:{up.port}/py', timeout=5).read().decode(), end='')\"")
        p = run(d, ws, script, check=0)
        out = p.stdout.decode()
        assert out.startswith("http://127.0.0.1:3128\n"), out
        assert out.count("hello from upstream") == 3, (out, p.stderr)
        paths = [h[0] for h in up.hits]
        assert paths == ["/abs", "/tunnel", "/py"], paths
        c = d.client()
        sid = c.ok("sandbox.list")[-1]["id"]
        recs = c.ok("audit.query", {"sandbox": sid})
        eg = [r["fields"] for r in recs if r["type"] == "egress"]
        assert len(eg) == 3 and all(e["decision"] == "allowed" and e["port"] == up.port for e in eg), eg
        closed = [r["fields"] for r in recs if r["type"] == "egress.closed"]
        assert len(closed) == 3 and all(e["bytes_down"] > 0 and e["bytes_up"] > 0 for e in closed), closed


def test_denials_and_bypass_attempts():
    with upstream_and_daemon(web=True) as (up, d, ws):
        script = (f"export NO_PROXY= no_proxy=; "
                  f"curl -s -m 5 -o /dev/null -w '%{{http_code}}\\n' http://127.0.0.1:{up.port + 7}/; "   # other port
                  f"curl -s -m 5 http://example.com/ ; echo; "                                              # other host
                  f"curl -s -m 5 -o /dev/null -w '%{{http_code}}\\n' http://localhost:{up.port + 1}/; "     # name -> loopback
                  f"curl -s -m 5 -o /dev/null -w '%{{http_code}}\\n' --proxytunnel https://evil.example:443/; "
                  f"curl -s -m 3 --noproxy '*' http://127.0.0.1:{up.port}/direct && echo DIRECT-REACHED; "  # bypass
                  f"/usr/bin/python3 -c \"import socket; socket.getaddrinfo('example.com', 80)\" 2>/dev/null && echo DNS-WORKED; "
                  f"printf 'GARBAGE\\r\\n\\r\\n' | /usr/bin/python3 -c \"import socket,sys; s=socket.create_connection(('127.0.0.1',3128)); s.sendall(sys.stdin.buffer.read()); print(s.recv(100).split(b' ')[1].decode())\"")
        p = run(d, ws, script)
        out = p.stdout.decode()
        lines = out.splitlines()
        assert lines[0] == "403", out
        assert "denied by task 'web'" in out and "example.com" in out, out
        assert lines[2] == "403" or "403" in lines[2:4], out
        assert "DIRECT-REACHED" not in out and "DNS-WORKED" not in out, out
        assert lines[-1] == "400", out
        assert all(h[0] != "/direct" for h in up.hits)
        c = d.client()
        sid = c.ok("sandbox.list")[-1]["id"]
        denied = [r["fields"] for r in c.ok("audit.query", {"sandbox": sid}) if r["type"] == "egress" and r["fields"]["decision"] == "denied"]
        reasons = " | ".join(e["reason"] for e in denied)
        assert any(e["host"] == "example.com" for e in denied) and "loopback" in reasons, reasons


def test_slowloris_is_cut_off():
    with upstream_and_daemon(config="[Daemon]\nProxyHeaderTimeoutMs=500\n", web=True) as (up, d, ws):
        script = ("/usr/bin/python3 -c \"\nimport socket, time\ns = socket.create_connection(('127.0.0.1', 3128))\nt0 = time.time()\n"
                  "try:\n  for ch in b'GET http://127.0.0.1/ HTTP/1.1\\r\\n':\n    s.sendall(bytes([ch])); time.sleep(0.1)\n"
                  "  print('SENT-ALL')\nexcept OSError:\n  pass\ndata = s.recv(100)\nprint(data[:12].decode(), round(time.time() - t0))\n\"")
        p = run(d, ws, script)
        out = p.stdout.decode()
        assert "HTTP/1.1 408" in out, (out, p.stderr)


def test_automatic_response_freezes_and_alerts():
    if not cgroup_delegated():   # freezing needs the sandboxes' cgroups
        return skip_no_cgroup()
    with upstream_and_daemon(config="[Response]\nEgressDenials=3\nEgressWindowSec=60\n", web=True) as (up, d, ws):
        sub = d.client()
        sub.ok("events.subscribe")
        c = d.client()
        sid = c.ok("sandbox.spawn", {"task": "web", "argv": ["/bin/sh", "-c",
               "for i in 1 2 3 4; do curl -s -m 2 -o /dev/null http://denied.example/; done; sleep 60"], "workspace": ws})["id"]
        deadline = time.time() + 15
        alert = None
        while time.time() < deadline and not alert:
            msg = sub.read_message()
            if msg[0] == 2 and msg[1] == "alert":
                alert = msg[2][0]
        assert alert and alert["sandbox"] == sid and "EgressDenials=3" in alert["rule"], alert
        deadline = time.time() + 5
        while time.time() < deadline and {s["id"]: s for s in c.ok("sandbox.list")}[sid]["state"] != "frozen":
            time.sleep(0.05)
        assert {s["id"]: s for s in c.ok("sandbox.list")}[sid]["state"] == "frozen"
        types = [r["type"] for r in c.ok("audit.query", {"sandbox": sid})]
        assert "alert" in types
        c.ok("sandbox.kill", {"id": sid, "signal": "KILL"})
        c.ok("sandbox.wait", {"id": sid})


FLOOD = ("/usr/bin/python3 -c \"\nimport socket\nfor i in range(100000):\n  try:\n"
         "    s = socket.create_connection(('127.0.0.1', 3128))\n"
         "    s.sendall(b'CONNECT denied%d.example:443 HTTP/1.1\\r\\n\\r\\n' % i); s.recv(100); s.close()\n"
         "  except OSError: pass\n\"")


def test_denial_flood_during_revoke_all_keeps_the_lockdown():
    """Sandboxes flooding denials (each tripping the automatic response) and
    others ending on their own while revoke --all runs: every one is killed by
    the revocation or ends, the lockdown is in force and written, agentd stops
    cleanly (no response acting on a sandbox that is gone)."""
    if not cgroup_delegated():
        return skip_no_cgroup()
    with upstream_and_daemon(config="[Response]\nEgressDenials=3\nEgressWindowSec=60\n", web=True) as (up, d, ws):
        c = d.client()
        ids = [c.ok("sandbox.spawn", {"task": "web", "argv": ["/bin/sh", "-c", FLOOD], "workspace": ws})["id"]
               for _ in range(4)]
        ids += [c.ok("sandbox.spawn", {"task": "web", "argv": ["/bin/sh", "-c",
                "for h in a b c; do curl -s -m 1 http://$h.example/; done"], "workspace": ws})["id"] for _ in range(4)]
        time.sleep(0.3)
        p = d.agentctl("--json", "revoke", "--all")
        assert p.returncode == 0, p
        for sid in ids:
            assert c.ok("sandbox.wait", {"id": sid})["state"] in ("killed", "exited")
        assert c.ok("agentd.status")["locked_down"] is True
        assert os.path.exists(os.path.join(d.state_home, "agentd", "lockdown"))
        types = [r["type"] for r in c.ok("audit.query", {"limit": 5000})]
        assert "lockdown" in types and "alert" in types, types


if __name__ == "__main__":
    run_tests(globals())
