"""Shared helpers for agentd's integration tests.

Runs the real agentd (from the build tree) on a socket in a temporary
directory and talks to it with an independent msgpack-rpc client (Debian's
python3-msgpack) and with the real agentctl. Run with /usr/bin/python3.
"""
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback

import msgpack

BUILD = os.environ.get("AGENTD_BUILD", os.path.join(os.path.dirname(__file__), "..", "..", "build"))
BUILD = os.path.abspath(BUILD)
AGENTD = os.path.join(BUILD, "daemon", "agentd")
AGENTCTL = os.path.join(BUILD, "client", "agentctl")


def _inside_agentctl():
    """The agentctl copied into sandboxes: a sanitizer build cannot run under
    the sandbox's seccomp filter (LeakSanitizer needs ptrace), so use the plain
    build's (static) one when testing a sanitized daemon."""
    try:
        with open(AGENTCTL, "rb") as f:
            sanitized = b"libasan" in f.read()
    except OSError:
        return AGENTCTL
    plain = os.path.join(os.path.dirname(BUILD), "build", "client", "agentctl")
    return plain if sanitized and os.path.exists(plain) else AGENTCTL


AGENTCTL_INSIDE = _inside_agentctl()


class RpcError(dict):
    """An error response, normalised: err["code"], err["message"], err["kind"].
    On the wire it is [kind, "code: message"] (CONTRACT §2, errors v2);
    err.raw is what came over the wire."""

    def __init__(self, raw):
        assert isinstance(raw, list) and len(raw) == 2, f"error of unknown shape: {raw!r}"
        kind, text = raw
        assert isinstance(kind, int) and isinstance(text, str) and ": " in text, f"error of unknown shape: {raw!r}"
        code, message = text.split(": ", 1)
        super().__init__(code=code, message=message, kind=kind)
        self.raw = raw


def rpc_error(raw):
    """The normalised form of a response's error element (None stays None)."""
    return None if raw is None else RpcError(raw)


class Client:
    """An independent msgpack-rpc client (not agentd's code)."""

    def __init__(self, path, timeout=10):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)
        self.msgid = 0
        self.notifications = []

    def close(self):
        self.sock.close()

    def send_raw(self, data):
        self.sock.sendall(data)

    def read_message(self):
        while True:
            for msg in self.unpacker:
                return msg
            data = self.sock.recv(65536)
            if not data:
                return None
            self.unpacker.feed(data)

    def request(self, method, params=None, msgid=None):
        if msgid is None:
            self.msgid += 1
            msgid = self.msgid
        args = [] if params is None else [params]
        self.send_raw(msgpack.packb([0, msgid, method, args], use_bin_type=True))
        return msgid

    def response(self, msgid):
        while True:
            msg = self.read_message()
            if msg is None:
                raise ConnectionError("connection closed before the response")
            if msg[0] == 2:
                self.notifications.append(msg)
                continue
            assert msg[0] == 1, msg
            if msg[1] == msgid or msg[1] is None:
                return rpc_error(msg[2]), msg[3]

    def call(self, method, params=None):
        return self.response(self.request(method, params))

    def ok(self, method, params=None):
        err, res = self.call(method, params)
        assert err is None, f"{method}: {err}"
        return res


POOL_COUNTS = [0, 0]  # spawns that ran in a warm sandbox, all spawns (summed over stopped daemons)
RUNNING = []  # daemons started and not yet stopped


class Daemon:
    def __init__(self, config=None, tasks=None, env=None, args=()):
        self.tmp = tempfile.mkdtemp(prefix="agentd-it-")
        os.chmod(self.tmp, 0o700)
        self.runtime = os.path.join(self.tmp, "run")
        self.config_home = os.path.join(self.tmp, "config")
        self.state_home = os.path.join(self.tmp, "state")
        for d in (self.runtime, self.config_home, self.state_home):
            os.makedirs(d, mode=0o700)
        self.socket = os.path.join(self.runtime, "agentd", "agentd.sock")
        # AGENTD_TEST_POOL=N: the whole suite against warm (pooled) sandboxes.
        pool = os.environ.get("AGENTD_TEST_POOL", "")
        if pool and pool != "0" and "WarmSandboxes=" not in (config or ""):
            config = (config or "") + f"\n[Pool]\nWarmSandboxes={int(pool)}\n"
        if config is not None:
            os.makedirs(os.path.join(self.config_home, "agentd"), exist_ok=True)
            with open(os.path.join(self.config_home, "agentd", "agentd.conf"), "w") as f:
                f.write(config)
        if tasks:
            d = os.path.join(self.config_home, "agentd", "tasks")
            os.makedirs(d, exist_ok=True)
            for name, text in tasks.items():
                with open(os.path.join(d, name + ".task"), "w") as f:
                    f.write(text)
        self.env = {
            "HOME": os.environ.get("HOME", "/"),
            "USER": os.environ.get("USER", "user"),
            "PATH": "/usr/bin:/bin",
            "XDG_RUNTIME_DIR": self.runtime,
            "XDG_CONFIG_HOME": self.config_home,
            "XDG_STATE_HOME": self.state_home,
            "AGENTD_LOG_TARGET": "stderr",
            # Only read by a sanitizer build: a small quarantine, so that RSS
            # bounds measure agentd's memory, not ASan's pool of freed blocks.
            "ASAN_OPTIONS": "quarantine_size_mb=4",
        }
        if env:
            self.env.update(env)
        self.args = list(args)
        self.proc = None
        self.log_path = os.path.join(self.tmp, "agentd.log")

    def start(self, wait=True):
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([AGENTD] + self.args, env=self.env, stdout=self.log, stderr=self.log)
        RUNNING.append(self)
        if wait:
            self.wait_ready()
            if self.pooled():
                self.wait_warm()
        return self

    def pooled(self):
        try:
            with open(os.path.join(self.config_home, "agentd", "agentd.conf")) as f:
                text = f.read()
            return "WarmSandboxes=" in text and "WarmSandboxes=0\n" not in text
        except OSError:
            return False

    def wait_warm(self, timeout=10):
        """AGENTD_TEST_POOL / [Pool]: the default task's warm sandboxes are ready
        (agentd.status warm_sandboxes), so the test's first spawn is a pooled one."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                if self.client().ok("agentd.status").get("warm_sandboxes", 0) > 0:
                    return
            except Exception:
                pass
            time.sleep(0.02)

    def warm_spawns(self):
        """How many spawns ran in a warm sandbox (agentd's log line says so)."""
        return self.read_log().count(", warm)")

    def wait_ready(self, timeout=10):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"agentd exited with {self.proc.returncode}: {self.read_log()}")
            try:
                c = Client(self.socket, timeout=2)
                c.ok("agentd.ping")
                c.close()
                return
            except (OSError, ConnectionError):
                time.sleep(0.02)
        raise RuntimeError("agentd did not become ready: " + self.read_log())

    def read_log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def client(self):
        return Client(self.socket)

    def agentctl(self, *args, input=None, timeout=60, env=None, cwd=None, check=None):
        e = dict(self.env)
        e.pop("XDG_RUNTIME_DIR", None)
        e["AGENTD_SOCKET"] = self.socket
        if env:
            e.update(env)
        p = subprocess.run([AGENTCTL] + list(args), input=input, capture_output=True, env=e,
                           timeout=timeout, cwd=cwd)
        if check is not None:
            assert p.returncode == check, f"agentctl {args}: rc={p.returncode} stdout={p.stdout!r} stderr={p.stderr!r}"
        return p

    def rss_kb(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def sanitized(self):
        """ASan keeps freed memory in quarantine: RSS bounds are looser there.
        (agentd is not dumpable: its /proc/PID/maps is not readable; look at the binary.)"""
        with open(AGENTD, "rb") as f:
            return b"libasan" in f.read()

    def rss_slack_kb(self, kb):
        return kb * 16 if self.sanitized() else kb

    def n_fds(self):
        """agentd is not dumpable, so /proc/PID/fd is not listable by its user: ask it."""
        c = self.client()
        try:
            return c.ok("agentd.status")["open_fds"] - 1  # not the asking connection
        finally:
            c.close()

    def stop(self, expect_rc=0):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                rc = self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                rc = self.proc.wait()
                raise AssertionError("agentd did not stop on SIGTERM: " + self.read_log())
            assert rc == expect_rc, f"agentd exited {rc}: {self.read_log()}"
        if getattr(self, "log", None):
            self.log.close()
            if self in RUNNING:
                RUNNING.remove(self)
                log = self.read_log()
                POOL_COUNTS[0] += log.count(", warm)")
                POOL_COUNTS[1] += log.count(": spawned task ")

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


class HttpServer:
    """A loopback HTTP server on a free port, serving from a thread until stop():
    the upstream of egress tests and the registries of the laptop tests. `handler`
    is a BaseHTTPRequestHandler subclass; its access log is silenced."""

    def __init__(self, handler, host="127.0.0.1"):
        import http.server
        import threading
        quiet = type(handler.__name__, (handler,), {"log_message": lambda self, *a: None})
        self.srv = http.server.ThreadingHTTPServer((host, 0), quiet)
        self.port = self.srv.server_address[1]
        self.url = f"http://{host}:{self.port}"
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()

    def stop(self):
        self.srv.shutdown()
        self.srv.server_close()


def proc_stats(pids=None):
    """{pid: the fields of /proc/PID/stat after the command name} of `pids`, or of
    every process visible now: [0] is the state, [1] the ppid, [11]+[12] utime+stime.
    Processes that are gone by the time they are read are left out."""
    out = {}
    for p in pids if pids is not None else (int(x) for x in os.listdir("/proc") if x.isdigit()):
        try:
            with open(f"/proc/{p}/stat") as f:
                st = f.read()
        except OSError:
            continue
        out[int(p)] = st[st.rindex(")") + 2:].split()
    return out


def cgroup_delegated():
    """True when this process's cgroup v2 directory is ours to manage (systemd's Delegate=yes,
    or tests/run-integration.sh as root). Tests that freeze sandboxes need it; without it they
    return skip_no_cgroup()."""
    try:
        with open("/proc/self/cgroup") as f:
            path = next((line.strip()[3:] for line in f if line.startswith("0::")), None)
    except OSError:
        return False
    if path is None:
        return False
    d = "/sys/fs/cgroup" + path
    if not os.path.exists(os.path.join(d, "cgroup.procs")):
        d = "/sys/fs/cgroup/unified" + path   # a hybrid host
    return all(os.access(os.path.join(d, f), os.W_OK) for f in ("cgroup.procs", "cgroup.subtree_control"))


def skip_no_cgroup():
    print("     (skipped: needs a cgroup delegated to this user: run tests/run-integration.sh as root, "
          "or under systemd-run --user -p Delegate=yes)", flush=True)
    return "skip"


def run_tests(module_globals):
    """Runs every test_* function in definition order; prints a closing line."""
    tests = [(n, f) for n, f in module_globals.items() if n.startswith("test_") and callable(f)]
    only = os.environ.get("AGENTD_TEST_ONLY")
    passed = failed = skipped = 0
    for name, fn in tests:
        if only and only not in name:
            continue
        t0 = time.time()
        try:
            r = fn()
            if r == "skip":
                skipped += 1
                print(f"SKIP {name}", flush=True)
            else:
                passed += 1
                print(f"PASS {name} ({time.time() - t0:.2f}s)", flush=True)
        except Exception:
            failed += 1
            print(f"FAIL {name}", flush=True)
            traceback.print_exc()
            sys.stdout.flush()
    if os.environ.get("AGENTD_TEST_POOL"):
        logs = [d.read_log() for d in RUNNING]
        warm = POOL_COUNTS[0] + sum(log.count(", warm)") for log in logs)
        total = POOL_COUNTS[1] + sum(log.count(": spawned task ") for log in logs)
        print(f"AGENTD_TEST_POOL: {warm} of {total} spawns ran in a warm sandbox", flush=True)
    print(f"{passed} passed, {failed} failed, {skipped} skipped", flush=True)
    sys.exit(1 if failed else 0)
