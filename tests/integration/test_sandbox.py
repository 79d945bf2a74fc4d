#!/usr/bin/python3
"""Sandbox engine through agentd and agentctl: exit status, signals, stdin,
terminals, timeouts, kill, states, logs, events, and no leaks over many spawns."""
import json
import os
import signal
import subprocess
import time

from harness import AGENTCTL, Daemon, run_tests

TASKS = {
    "quick": "[Task]\nDescription=short timeout\nTimeout=1s\n",
    "withenv": "[Task]\nDescription=passes FOO\nPassEnvironment=FOO\nEnvironment=FROM_TASK=yes\n",
    "rwws": "[Task]\nDescription=writable workspace\n[Filesystem]\nWorkspace=rw\n",
}


def workspace(d, name="ws"):
    p = os.path.join(d.tmp, name)
    os.makedirs(p, exist_ok=True)
    with open(os.path.join(p, "hello.txt"), "w") as f:
        f.write("hello\n")
    return p


def test_exit_status_and_output():
    with Daemon() as d:
        ws = workspace(d)
        p = d.agentctl("spawn", "--", "/bin/sh", "-c", "echo out; echo err >&2; exit 7", cwd=ws)
        assert p.returncode == 7, p
        assert p.stdout == b"out\n" and p.stderr == b"err\n", p
        p = d.agentctl("spawn", "--", "/bin/true", cwd=ws, check=0)
        p = d.agentctl("spawn", "--", "/bin/false", cwd=ws, check=1)
        p = d.agentctl("spawn", "--", "/bin/sh", "-c", "kill -TERM $$", cwd=ws)
        assert p.returncode == 128 + 15, p
        p = d.agentctl("spawn", "--", "/bin/sh", "-c", "kill -KILL $$", cwd=ws)
        assert p.returncode == 128 + 9, p


def test_cwd_is_workspace_and_overlay():
    with Daemon() as d:
        ws = workspace(d)
        p = d.agentctl("spawn", "--", "/bin/sh", "-c", "pwd; cat hello.txt; echo changed > hello.txt; echo new > new.txt",
                       cwd=ws, check=0)
        assert p.stdout == (ws + "\nhello\n").encode(), p
        # The host copy is untouched; the change is in the sandbox's upper layer.
        assert open(os.path.join(ws, "hello.txt")).read() == "hello\n"
        assert not os.path.exists(os.path.join(ws, "new.txt"))
        sb = d.client().ok("sandbox.list")[-1]
        upper = os.path.join(d.state_home, "agentd", "sandboxes", sb["id"], "upper")
        assert open(os.path.join(upper, ws.lstrip("/") if False else "new.txt")).read() == "new\n" \
            if os.path.exists(os.path.join(upper, "new.txt")) else False, os.listdir(upper)


def test_stdin_is_attached():
    with Daemon() as d:
        ws = workspace(d)
        data = os.urandom(300000)
        p = d.agentctl("spawn", "--", "/bin/cat", cwd=ws, input=data, check=0)
        assert p.stdout == data


def test_big_output_relay_and_logs():
    with Daemon(config="[Daemon]\nLogLimit=64K\n") as d:
        ws = workspace(d)
        p = d.agentctl("spawn", "--", "/bin/sh", "-c", "head -c 5000000 /dev/zero; echo tail", cwd=ws, check=0)
        assert len(p.stdout) == 5000005 and p.stdout.endswith(b"tail\n"), len(p.stdout)
        sb = d.client().ok("sandbox.list")[-1]
        logs = d.client().ok("sandbox.logs", {"id": sb["id"]})
        assert len(logs["stdout"]) == 65536 and logs["stdout_dropped"] == 5000005 - 65536, (len(logs["stdout"]), logs)


def test_detach_wait_logs_kill_states():
    with Daemon() as d:
        ws = workspace(d)
        p = d.agentctl("spawn", "--detach", "--", "/bin/sh", "-c", "echo started; echo e >&2; sleep 60", cwd=ws, check=0)
        sid = p.stdout.decode().strip()
        assert len(sid) == 12, sid
        c = d.client()
        deadline = time.time() + 5
        while time.time() < deadline:
            logs = c.ok("sandbox.logs", {"id": sid})
            if logs["stdout"] == b"started\n":
                break
            time.sleep(0.05)
        assert logs["stdout"] == b"started\n" and logs["stderr"] == b"e\n", logs
        p = d.agentctl("logs", sid, check=0)
        assert p.stdout == b"started\n" and p.stderr == b"e\n"
        lst = {s["id"]: s for s in c.ok("sandbox.list")}
        assert lst[sid]["state"] == "running" and lst[sid]["pid"] > 0 and lst[sid]["workspace"] == ws
        p = d.agentctl("--json", "ps", check=0)
        assert any(s["id"] == sid for s in json.loads(p.stdout))
        d.agentctl("kill", sid, "--signal", "KILL", check=0)
        p = d.agentctl("--json", "wait", sid, check=0)
        res = json.loads(p.stdout)
        assert res["signal"] == 9 and res["state"] == "killed", res
        lst = {s["id"]: s for s in c.ok("sandbox.list")}
        assert lst[sid]["state"] == "killed" and lst[sid]["exit_code"] == 137
        # Killing an ended sandbox or an unknown id is a clear error.
        err, _ = c.call("sandbox.kill", {"id": sid})
        assert err["code"] == "not_found", err
        err, _ = c.call("sandbox.wait", {"id": "nope"})
        assert err["code"] == "not_found", err
        err, _ = c.call("sandbox.kill", {"id": sid, "signal": "BOGUS"})
        assert err["code"] == "invalid_params", err


def test_sigterm_forwarded():
    with Daemon() as d:
        ws = workspace(d)
        p = d.agentctl("spawn", "--detach", "--", "/bin/sh", "-c", "trap 'echo got-term; exit 5' TERM; while :; do sleep 0.05; done",
                       cwd=ws, check=0)
        sid = p.stdout.decode().strip()
        time.sleep(0.3)
        d.agentctl("kill", sid, check=0)
        res = json.loads(d.agentctl("--json", "wait", sid, check=0).stdout)
        assert res["exit_code"] == 5 and res["signal"] == 0, res
        assert d.agentctl("logs", sid, check=0).stdout == b"got-term\n"


def test_ctrl_c_on_agentctl_reaches_the_command():
    with Daemon() as d:
        ws = workspace(d)
        e = dict(d.env, AGENTD_SOCKET=d.socket)
        proc = subprocess.Popen([AGENTCTL, "spawn", "--", "/bin/sh", "-c",
                                 "trap 'echo interrupted; exit 9' INT; echo ready; while :; do sleep 0.05; done"],
                                cwd=ws, env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert proc.stdout.readline() == b"ready\n"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
        assert proc.returncode == 9 and out == b"interrupted\n", (proc.returncode, out, err)


def test_timeout_enforced():
    with Daemon(tasks=TASKS) as d:
        ws = workspace(d)
        t0 = time.time()
        p = d.agentctl("spawn", "--task", "quick", "--", "/bin/sleep", "30", cwd=ws)
        assert p.returncode == 137, p
        assert time.time() - t0 < 5
        sb = d.client().ok("sandbox.list")[-1]
        res = d.client().ok("sandbox.wait", {"id": sb["id"]})
        assert res["reason"] == "timeout" and res["state"] == "killed", res


def test_client_disconnect_ends_attached_sandbox():
    with Daemon() as d:
        ws = workspace(d)
        e = dict(d.env, AGENTD_SOCKET=d.socket)
        proc = subprocess.Popen([AGENTCTL, "spawn", "--", "/bin/sh", "-c", "echo ready; sleep 60"],
                                cwd=ws, env=e, stdout=subprocess.PIPE)
        assert proc.stdout.readline() == b"ready\n"
        proc.kill()
        proc.wait()
        c = d.client()
        sid = c.ok("sandbox.list")[-1]["id"]
        res = c.ok("sandbox.wait", {"id": sid})
        assert res["state"] == "killed" and res["reason"] == "client disconnected", res


def test_environment_is_rebuilt():
    with Daemon(tasks=TASKS) as d:
        ws = workspace(d)
        p = d.agentctl("spawn", "--", "/usr/bin/env", cwd=ws, env={"SECRET_TOKEN": "s3cr3t", "TERM": "xterm-test"}, check=0)
        env = dict(l.split("=", 1) for l in p.stdout.decode().splitlines())
        assert "SECRET_TOKEN" not in env and env["TERM"] == "xterm-test", env
        # PATH: the caller's (agentctl's, here /usr/bin:/bin) filtered to what is visible, then the defaults.
        assert env["HOME"] == os.path.realpath(os.environ["HOME"]) and \
            env["PATH"] == "/usr/bin:/bin:/usr/local/bin:/run/agentd/bin", env
        assert not any(k.startswith("LD_") or k.startswith("XDG_") or k == "AGENTD_SOCKET" for k in env), env
        c = d.client()
        err, _ = c.call("sandbox.spawn", {"argv": ["env"], "workspace": ws, "env": {"LD_PRELOAD": "/x.so"}})
        assert err["code"] == "policy_denied" and "LD_PRELOAD" in err["message"], err
        sid = c.ok("sandbox.spawn", {"task": "withenv", "argv": ["/usr/bin/env"], "workspace": ws,
                                     "env": {"FOO": "bar"}})["id"]
        c.ok("sandbox.wait", {"id": sid})
        out = c.ok("sandbox.logs", {"id": sid})["stdout"].decode()
        assert "FOO=bar\n" in out and "FROM_TASK=yes\n" in out, out


def test_workspace_defaults_to_the_callers_cwd():
    with Daemon() as d:
        ws = workspace(d)
        here = os.path.dirname(os.path.abspath(__file__))
        code = ("import sys; sys.path.insert(0, %r); from harness import Client; c = Client(%r); "
                "sid = c.ok('sandbox.spawn', {'argv': ['/bin/pwd']})['id']; c.ok('sandbox.wait', {'id': sid}); "
                "sys.stdout.write(c.ok('sandbox.logs', {'id': sid})['stdout'].decode())") % (here, d.socket)
        p = subprocess.run(["/usr/bin/python3", "-c", code], cwd=ws, capture_output=True, timeout=30)
        assert p.returncode == 0 and p.stdout.decode() == os.path.realpath(ws) + "\n", p


def test_spawn_errors():
    with Daemon(tasks=TASKS) as d:
        ws = workspace(d)
        c = d.client()
        err, _ = c.call("sandbox.spawn", {"task": "nope", "argv": ["true"], "workspace": ws})
        assert err["code"] == "not_found", err
        err, _ = c.call("sandbox.spawn", {"argv": ["true"], "workspace": "relative/path"})
        assert err["code"] == "invalid_params", err
        err, _ = c.call("sandbox.spawn", {"argv": ["true"], "workspace": "/nonexistent/dir"})
        assert err["code"] == "invalid_params", err
        err, _ = c.call("sandbox.spawn", {"argv": ["true"], "workspace": os.environ["HOME"]})
        assert err["code"] == "policy_denied", err
        err, _ = c.call("sandbox.spawn", {"argv": ["true"], "workspace": "/"})
        assert err["code"] == "policy_denied", err
        err, _ = c.call("sandbox.spawn", {"argv": [], "workspace": ws})
        assert err["code"] == "invalid_params", err
        err, _ = c.call("sandbox.spawn", {"argv": ["true"], "workspace": ws, "attach": True})
        assert err["code"] == "invalid_params" and "attach" in err["message"], err
        err, _ = c.call("sandbox.spawn", {"argv": ["x" * 1000] * 300, "workspace": ws})
        assert err["code"] == "limit_exceeded", err
        err, res = c.call("sandbox.spawn", {"argv": ["/no/such/program"], "workspace": ws})
        if err is None:  # an absolute path is exec'd directly: the failure comes like a shell's
            assert c.ok("sandbox.wait", {"id": res["id"]})["exit_code"] == 127
            assert b"No such file" in c.ok("sandbox.logs", {"id": res["id"]})["stderr"]
        else:
            assert err["code"] == "spawn_failed" and "No such file" in err["message"], err
        p = d.agentctl("spawn", "--", "no-such-command-xyz", cwd=ws)
        assert p.returncode == 1 and b"spawn_failed" in p.stderr, p
        assert c.ok("agentd.ping")


def test_rw_workspace_changes_host():
    with Daemon(tasks=TASKS) as d:
        ws = workspace(d)
        d.agentctl("spawn", "--task", "rwws", "--", "/bin/sh", "-c", "echo rw > out.txt", cwd=ws, check=0)
        assert open(os.path.join(ws, "out.txt")).read() == "rw\n"


def test_terminal_with_t():
    with Daemon() as d:
        ws = workspace(d)
        e = dict(d.env, AGENTD_SOCKET=d.socket, TERM="xterm")
        # script(1) gives agentctl a real terminal.
        cmd = f"{AGENTCTL} spawn -t -- /bin/sh -c 'tty; stty size; test -t 0 && echo isatty; exit 4'"
        p = subprocess.run(["script", "-qec", f"stty rows 33 cols 101; {cmd}", "/dev/null"], cwd=ws, env=e,
                           capture_output=True, timeout=30, input=b"")
        out = p.stdout.decode(errors="replace")
        assert "/dev/pts/0" in out and "33 101" in out and "isatty" in out, (p.returncode, out, p.stderr)
        assert p.returncode == 4, (p.returncode, out)


def test_events_subscribe_streams_output_and_state():
    with Daemon() as d:
        ws = workspace(d)
        sub = d.client()
        sub.ok("events.subscribe")
        c = d.client()
        sid = c.ok("sandbox.spawn", {"argv": ["/bin/sh", "-c", "echo streamed"], "workspace": ws})["id"]
        c.ok("sandbox.wait", {"id": sid})
        states, data = [], b""
        deadline = time.time() + 5
        while time.time() < deadline and "exited" not in states:
            msg = sub.read_message()
            assert msg[0] == 2
            if msg[1] == "sandbox.state":
                states.append(msg[2][0]["state"])
            elif msg[1] == "sandbox.output":
                data += msg[2][0]["data"]
        assert data == b"streamed\n" and states == ["running", "exited"], (data, states)
        p = d.agentctl("logs", sid, "-f", check=0)
        assert p.stdout == b"streamed\n"


def test_200_spawns_no_growth():
    with Daemon() as d:
        ws = workspace(d)
        c = d.client()

        def one():
            sid = c.ok("sandbox.spawn", {"argv": ["/bin/true"], "workspace": ws})["id"]
            assert c.ok("sandbox.wait", {"id": sid})["exit_code"] == 0

        for _ in range(20):
            one()
        # The exit is reported before the helper is reaped: let the last one go.
        time.sleep(0.5)
        fds0, rss0 = d.n_fds(), d.rss_kb()
        for _ in range(200):
            one()
        time.sleep(0.5)
        fds1, rss1 = d.n_fds(), d.rss_kb()
        assert fds1 <= fds0, (fds0, fds1)
        assert rss1 < rss0 + d.rss_slack_kb(4096), (rss0, rss1)
        assert c.ok("agentd.status")["sandboxes"] <= 256 + 1


def test_status_reports_cgroup_and_spawn_reports_limits():
    with Daemon() as d:
        ws = workspace(d)
        c = d.client()
        st = c.ok("agentd.status")
        assert st["cgroup"].startswith("ok") or st["cgroup"].startswith("unavailable: "), st
        res = c.ok("sandbox.spawn", {"argv": ["/bin/sh", "-c", "cat /proc/self/cgroup"], "workspace": ws})
        assert "limits" in res and "cgroup" in res, res
        c.ok("sandbox.wait", {"id": res["id"]})
        if st["cgroup"].startswith("ok"):
            # Inside, the cgroup namespace shows the sandbox's own cgroup as the root.
            out = c.ok("sandbox.logs", {"id": res["id"]})["stdout"]
            assert b"0::/\n" in out.splitlines(keepends=True) or out.endswith(b"\n0::/\n") or out == b"0::/\n", out
            assert "not enforced" in res["limits"] or res["limits"] == "enforced"


def test_shutdown_kills_sandboxes():
    d = Daemon().start()
    ws = workspace(d)
    c = d.client()
    res = c.ok("sandbox.spawn", {"argv": ["/bin/sleep", "1000"], "workspace": ws})
    pid = res["pid"]
    assert os.path.exists(f"/proc/{pid}")
    d.stop(expect_rc=0)
    time.sleep(0.2)
    assert not os.path.exists(f"/proc/{pid}"), "a sandbox outlived the daemon"


def test_daemon_killed_takes_sandboxes_along():
    d = Daemon().start()
    ws = workspace(d)
    c = d.client()
    res = c.ok("sandbox.spawn", {"argv": ["/bin/sleep", "1000"], "workspace": ws})
    pid = res["pid"]
    d.proc.kill()
    d.proc.wait()
    deadline = time.time() + 5
    while os.path.exists(f"/proc/{pid}") and time.time() < deadline:
        time.sleep(0.05)
    assert not os.path.exists(f"/proc/{pid}"), "a sandbox outlived a killed daemon"


if __name__ == "__main__":
    run_tests(globals())
