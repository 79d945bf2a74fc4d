"""A fault-injecting HTTP proxy for the broker's fault tests. It sits between
agentd and the Vault dev server (tests/vaultdev/vault_dev.py) and, per path
prefix, as the test says:

  delay=S        wait S seconds, then forward (Vault has not seen the request yet)
  delay_after=S  forward at once, then hold Vault's answer S seconds (Vault
                 already acted: the slow-Vault case, where a token exists
                 before the client hears of it)
  status=N       answer N with Vault's error envelope without forwarding
  status_after=N forward, then answer N instead of Vault's answer
  garbage=True   forward, then answer 200 with a body that is not JSON
  hang=True      forward nothing and never answer (until the rule is cleared)
  count=K        the rule applies to the next K matching requests (default: all)

The test drives it in-process: p = FaultProxy(upstream_url); p.rule("auth/token/renew-self",
status=500); p.clear(). p.seen lists (method, path, action) for every request."""
import http.client
import http.server
import threading
import time
import urllib.parse


class FaultProxy:
    def __init__(self, upstream):
        u = urllib.parse.urlsplit(upstream)
        self.up_host, self.up_port = u.hostname, u.port
        self.lock = threading.Lock()
        self.rules = []  # [prefix, dict, remaining or None]
        self.seen = []
        self.release = threading.Event()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def handle_any(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                path = self.path[len("/v1/"):] if self.path.startswith("/v1/") else self.path
                rule = proxy._take(path)
                proxy.seen.append((self.command, path, dict(rule) if rule else None))
                r = rule or {}
                if r.get("hang"):
                    while not proxy.release.wait(0.1):
                        pass
                    self.close_connection = True
                    return
                if r.get("delay"):
                    time.sleep(r["delay"])
                if r.get("status"):
                    return self.reply(r["status"], b'{"errors":["injected fault"]}')
                try:
                    status, data, ctype = proxy._forward(self.command, self.path, self.headers, body)
                except OSError:
                    self.close_connection = True  # Vault is gone: so is the answer
                    return
                if r.get("delay_after"):
                    time.sleep(r["delay_after"])
                if r.get("status_after"):
                    return self.reply(r["status_after"], b'{"errors":["injected fault"]}')
                if r.get("garbage"):
                    return self.reply(200, b"<html>\x00\xffnot json", "text/html")
                self.reply(status, data, ctype)

            def reply(self, status, data, ctype="application/json"):
                try:
                    self.send_response(status)
                    if data:
                        self.send_header("Content-Type", ctype)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the client gave up: what Vault did stands

            do_GET = do_POST = do_PUT = do_DELETE = do_LIST = do_HEAD = handle_any

        class Server(http.server.ThreadingHTTPServer):
            def handle_error(self, request, client_address):
                pass  # a client that gave up mid-answer is part of the game

        self.server = Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def _take(self, path):
        with self.lock:
            for r in self.rules:
                if path.startswith(r[0]) and (r[2] is None or r[2] > 0):
                    if r[2] is not None:
                        r[2] -= 1
                    return r[1]
        return None

    def _forward(self, method, path, headers, body):
        c = http.client.HTTPConnection(self.up_host, self.up_port, timeout=60)
        hdrs = {k: v for k, v in headers.items() if k.lower() not in ("host", "connection", "content-length")}
        c.request(method, path, body=body or None, headers=hdrs)
        r = c.getresponse()
        data = r.read()
        c.close()
        return r.status, data, r.headers.get("Content-Type", "application/json")

    def rule(self, prefix, count=None, **action):
        with self.lock:
            self.rules.insert(0, [prefix, action, count])

    def clear(self):
        with self.lock:
            self.rules = []
        self.release.set()
        time.sleep(0.2)
        self.release.clear()

    def count(self, prefix):
        return sum(1 for m, p, a in self.seen if p.startswith(prefix))

    def stop(self):
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
