#!/usr/bin/python3
"""Foundation: agentd serves msgpack-rpc on its socket; bad input never hurts it."""
import json
import os
import signal
import socket
import stat
import subprocess
import threading
import time

import msgpack

from harness import AGENTD, Daemon, rpc_error, run_tests


def test_ping_status_agentctl_and_raw():
    with Daemon() as d:
        c = d.client()
        res = c.ok("agentd.ping")
        assert res["protocol"] == 1 and res["version"] and res["uptime_ms"] >= 0
        st = c.ok("agentd.status")
        for key in ("version", "sandboxes", "locked_down", "vault", "tpm", "cgroup"):
            assert key in st, key
        assert st["vault"] == "unconfigured" and st["tpm"] == "unconfigured"
        assert st["locked_down"] is False
        # An empty params array and [nil] both mean defaults.
        assert c.call("agentd.ping", None)[0] is None
        p = d.agentctl("ping", check=0)
        assert b"protocol: 1" in p.stdout
        p = d.agentctl("--json", "status", check=0)
        j = json.loads(p.stdout)
        assert j["sandboxes"] == 0 and j["vault"] == "unconfigured"


def test_socket_modes():
    with Daemon() as d:
        st = os.stat(os.path.dirname(d.socket))
        assert stat.S_IMODE(st.st_mode) == 0o700, oct(st.st_mode)
        st = os.lstat(d.socket)
        assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600, oct(st.st_mode)
        assert st.st_uid == os.getuid()


def test_agentctl_exit_codes():
    with Daemon() as d:
        p = d.agentctl("task", "show", "no-such-task")
        assert p.returncode == 1, p
        assert p.stderr.startswith(b"agentctl: not_found: "), p.stderr
        p = d.agentctl("frobnicate")
        assert p.returncode == 2, p
        p = d.agentctl("ping", "extra")
        assert p.returncode == 2, p
        p = d.agentctl("--bogus-flag", "ping")
        assert p.returncode == 2, p
        p = d.agentctl("--socket", os.path.join(d.tmp, "nothing.sock"), "ping")
        assert p.returncode == 3, p
        # --socket beats AGENTD_SOCKET.
        p = d.agentctl("--socket", d.socket, "ping", env={"AGENTD_SOCKET": "/nonexistent"})
        assert p.returncode == 0, p
        help_text = d.agentctl("--help", check=0).stdout
        for m in (b"ping", b"status", b"spawn", b"task show NAME"):
            assert m in help_text, m


def test_unknown_method_and_bad_params():
    with Daemon() as d:
        c = d.client()
        err, res = c.call("agentd.nope")
        assert err["code"] == "method_not_found" and res is None, err
        err, _ = c.call("task.show", {"name": 5})
        assert err["code"] == "invalid_params" and "name" in err["message"], err
        err, _ = c.call("task.show", {})
        assert err["code"] == "invalid_params" and "missing" in err["message"], err
        err, _ = c.call("task.show", {"name": "default", "extra": 1})
        assert err["code"] == "invalid_params" and "extra" in err["message"], err
        err, _ = c.call("sandbox.spawn", {"argv": "not-a-list"})
        assert err["code"] == "invalid_params", err
        # Positional parameters are not our convention.
        c.send_raw(msgpack.packb([0, 99, "task.show", ["default", 1]]))
        err, _ = c.response(99)
        assert err["code"] == "invalid_params", err
        # Wrong envelope shape with a readable msgid.
        c.send_raw(msgpack.packb([0, 100, 12, []]))
        err, _ = c.response(100)
        assert err["code"] == "invalid_request", err
        # The connection still serves.
        assert c.ok("agentd.ping")["protocol"] == 1


def test_garbage_bytes_close_connection_only():
    with Daemon() as d:
        other = d.client()
        c = d.client()
        c.send_raw(b"\xc1\xc1\xc1 this is not msgpack")
        msg = c.read_message()
        assert msg is not None and rpc_error(msg[2])["code"] == "invalid_request", msg
        assert c.read_message() is None  # closed
        c = d.client()
        c.send_raw(b"hello world\n")  # 'h' is a fixint: a complete non-request message
        msg = c.read_message()
        assert msg[1] is None and rpc_error(msg[2])["code"] == "invalid_request", msg
        assert other.ok("agentd.ping")
        assert d.client().ok("agentd.ping")


def test_huge_length_header():
    with Daemon() as d:
        rss0 = d.rss_kb()
        c = d.client()
        # [0, 5, "agentd.ping", [str32 of 2 GiB ...
        c.send_raw(b"\x94\x00\x05\xabagentd.ping\x91\xdb\x80\x00\x00\x00" + b"A" * 1000)
        err, _ = c.response(5)
        assert err["code"] == "limit_exceeded" and "size" in err["message"], err
        assert c.read_message() is None
        # A bin32 with 2 GiB before any msgid: no msgid, closed.
        c = d.client()
        c.send_raw(b"\xc6\x80\x00\x00\x00")
        msg = c.read_message()
        assert msg[1] is None and rpc_error(msg[2])["code"] == "limit_exceeded", msg
        assert d.client().ok("agentd.ping")
        assert d.rss_kb() < rss0 + d.rss_slack_kb(8 * 1024), (rss0, d.rss_kb())


def test_really_oversized_message():
    with Daemon() as d:
        c = d.client()
        payload = msgpack.packb([0, 6, "task.show", [{"name": "x" * (2 * 1024 * 1024)}]])
        try:
            c.send_raw(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass
        err, _ = c.response(6)
        assert err["code"] == "limit_exceeded", err
        assert d.client().ok("agentd.ping")


def test_deep_nesting():
    with Daemon() as d:
        rss0 = d.rss_kb()
        c = d.client()
        depth = 100000
        c.send_raw(b"\x94\x00\x07\xa9task.show" + b"\x91" * depth + b"\xc0")
        err, _ = c.response(7)
        assert err["code"] == "limit_exceeded" and "nesting" in err["message"], err
        assert d.client().ok("agentd.ping")
        assert d.rss_kb() < rss0 + d.rss_slack_kb(8 * 1024)


def test_300_concurrent_connections():
    with Daemon() as d:
        rss0 = d.rss_kb()
        clients = [d.client() for _ in range(300)]
        ids = [c.request("agentd.ping") for c in clients]
        for c, i in zip(clients, ids):
            err, res = c.response(i)
            assert err is None and res["protocol"] == 1
        st = clients[0].ok("agentd.status")
        assert st["connections"] >= 300, st
        for c in clients:
            c.close()
        # And in parallel threads, each many requests.
        errors = []

        def worker():
            try:
                c = d.client()
                for _ in range(20):
                    c.ok("agentd.ping")
                c.close()
            except Exception as e:  # noqa
                errors.append(e)

        ts = [threading.Thread(target=worker) for _ in range(50)]
        [t.start() for t in ts]
        [t.join() for t in ts]
        assert not errors, errors
        time.sleep(0.2)
        assert d.client().ok("agentd.status")["connections"] <= 2
        assert d.rss_kb() < rss0 + d.rss_slack_kb(16 * 1024), (rss0, d.rss_kb())


def test_connection_cap():
    with Daemon(config="[Daemon]\nMaxConnections=5\n") as d:
        keep = [d.client() for _ in range(5)]
        for c in keep:
            c.ok("agentd.ping")
        # Past the limit a few connections are kept for credentials.revoke: anything
        # else is refused on them, revoke is served.
        extra = d.client()
        err, _ = extra.call("agentd.ping")
        assert err["code"] == "limit_exceeded" and "MaxConnections" in err["message"], err
        assert extra.read_message() is None
        reserve = [d.client() for _ in range(8)]
        err, _ = reserve[0].call("credentials.revoke", {"sandbox": "nope"})
        assert err["code"] == "not_found", err
        # Past those too: refused at once.
        extra = d.client()
        msg = extra.read_message()
        assert rpc_error(msg[2])["code"] == "limit_exceeded" and "MaxConnections" in rpc_error(msg[2])["message"], msg
        assert extra.read_message() is None
        for c in reserve:
            c.close()
        keep[0].close()
        time.sleep(0.1)
        assert d.client().ok("agentd.ping")


def test_many_requests_pipelined_and_partial_writes():
    with Daemon() as d:
        c = d.client()
        data = b"".join(msgpack.packb([0, i, "agentd.ping", []]) for i in range(1, 2001))
        # Dribble the first part byte by byte, then the rest at once.
        for b in data[:200]:
            c.send_raw(bytes([b]))
        c.send_raw(data[200:])
        seen = set()
        while len(seen) < 2000:
            msg = c.read_message()
            assert msg[2] is None
            seen.add(msg[1])
        assert seen == set(range(1, 2001))


def test_reader_that_never_reads():
    with Daemon() as d:
        rss0 = d.rss_kb()
        c = d.client()
        c.sock.setblocking(False)
        req = msgpack.packb([0, 1, "task.list", []]) * 1000
        sent = 0
        deadline = time.time() + 5
        while time.time() < deadline:
            try:
                sent += c.sock.send(req)
            except BlockingIOError:
                break
        # The daemon stopped reading this peer instead of buffering without end.
        assert d.client().ok("agentd.ping")
        assert d.rss_kb() < rss0 + d.rss_slack_kb(80 * 1024), (rss0, d.rss_kb())


def test_config_errors_and_reload():
    # A bad file at start: a clear file:line error and exit 1.
    d = Daemon(config="[Daemon]\nMaxMessageSize=64K\nBogusKey=1\n")
    d.start(wait=False)
    rc = d.proc.wait(timeout=10)
    assert rc == 1, rc
    log = d.read_log()
    assert "agentd.conf:3" in log and "BogusKey" in log, log

    d = Daemon(config="[Daemon]\nMaxMessageSize=64K  # small for the test\n")
    with d:
        c = d.client()
        err, _ = c.call("task.show", {"name": "y" * 100000})
        assert err["code"] == "limit_exceeded", err
        conf = os.path.join(d.config_home, "agentd", "agentd.conf")
        with open(conf, "w") as f:
            f.write("[Daemon]\nMaxMessageSize=1M\n")
        d.proc.send_signal(signal.SIGHUP)
        time.sleep(0.3)
        c = d.client()
        err, _ = c.call("task.show", {"name": "y" * 100000})
        assert err["code"] == "not_found", err
        # A broken file on reload: logged with file:line, the old config stays.
        with open(conf, "w") as f:
            f.write("[Daemon]\nMaxMessageSize=lots\n")
        d.proc.send_signal(signal.SIGHUP)
        time.sleep(0.3)
        err, _ = c.call("task.show", {"name": "y" * 100000})
        assert err["code"] == "not_found", err
        assert "agentd.conf:2" in d.read_log() and "keeping the previous configuration" in d.read_log()


def test_second_daemon_refused():
    with Daemon() as d:
        p = subprocess.run([AGENTD, "--socket", d.socket], env=d.env, capture_output=True, timeout=10)
        assert p.returncode == 1 and b"another agentd" in p.stderr, p  # the state-directory lock (docs/faults.md)
        assert d.client().ok("agentd.ping")


def test_no_runtime_dir_is_a_clear_error():
    d = Daemon()
    env = dict(d.env)
    del env["XDG_RUNTIME_DIR"]
    p = subprocess.run([AGENTD], env=env, capture_output=True, timeout=10)
    assert p.returncode == 1 and b"XDG_RUNTIME_DIR" in p.stderr, p


def test_sigterm_clean_exit_and_socket_removed():
    d = Daemon().start()
    c = d.client()
    c.ok("agentd.ping")
    d.stop(expect_rc=0)
    assert not os.path.exists(d.socket)
    assert "event loop did not close cleanly" not in d.read_log()


def _notify_socket(tmp):
    path = os.path.join(tmp, "notify.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    s.settimeout(5)
    return s, path


def test_sd_notify_ready_watchdog_stopping():
    d = Daemon()
    s, path = _notify_socket(d.tmp)
    d.env["NOTIFY_SOCKET"] = path
    d.env["WATCHDOG_USEC"] = "200000"
    d.start()
    got = []
    deadline = time.time() + 3
    while time.time() < deadline and not any(b"WATCHDOG=1" in m for m in got):
        got.append(s.recv(4096))
    assert any(b"READY=1" in m for m in got), got
    assert any(b"WATCHDOG=1" in m for m in got), got
    d.stop()
    rest = []
    try:
        while True:
            rest.append(s.recv(4096))
    except socket.timeout:
        pass
    except BlockingIOError:
        pass
    s.settimeout(0.5)
    assert any(b"STOPPING=1" in m for m in got + rest), got + rest


def test_socket_activation():
    d = Daemon()
    sock = os.path.join(d.runtime, "activated.sock")
    proc = subprocess.Popen(["systemd-socket-activate", "-l", sock, AGENTD], env=d.env,
                            stdout=subprocess.DEVNULL, stderr=open(d.log_path, "ab"))
    try:
        deadline = time.time() + 5
        while not os.path.exists(sock) and time.time() < deadline:
            time.sleep(0.02)
        p = d.agentctl("--socket", sock, "ping")
        assert p.returncode == 0, (p, d.read_log())
        p = d.agentctl("--socket", sock, "--json", "status", check=0)
        assert json.loads(p.stdout)["socket"] == "(socket-activated)"
        assert "serving on the socket passed by the service manager" in d.read_log()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)


if __name__ == "__main__":
    run_tests(globals())
