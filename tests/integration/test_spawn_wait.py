#!/usr/bin/python3
"""sandbox.spawn with wait: true (one round trip): the reply comes when the
command ends and carries sandbox.wait's fields with the spawn reply's; a
sandbox.started notification names the sandbox first; errors before the
command ran stay errors; a client that leaves mid-wait is handled as one that
leaves a sandbox.wait; agentctl's foreground spawn uses it (no sandbox.wait)."""
import os
import signal
import socket
import subprocess
import time

import msgpack

from harness import AGENTCTL, Daemon, run_tests


def workspace(d):
    p = os.path.join(d.tmp, "ws")
    os.makedirs(p, exist_ok=True)
    return p


def started(c, sid=None):
    notes = [n for n in c.notifications if n[0] == 2 and n[1] == "sandbox.started"]
    assert len(notes) == 1, c.notifications
    params = notes[0][2][0]
    assert sid is None or params["id"] == sid, (params, sid)
    return params


def wait_state(c, sid, states, timeout=10):
    end = time.time() + timeout
    while time.time() < end:
        sb = [s for s in c.ok("sandbox.list") if s["id"] == sid]
        if sb and sb[0]["state"] in states:
            return sb[0]
        time.sleep(0.05)
    raise AssertionError(f"sandbox {sid} never reached {states}")


def test_exit_code_in_one_call():
    with Daemon() as d:
        ws = workspace(d)
        c = d.client()
        res = c.ok("sandbox.spawn", {"argv": ["/bin/sh", "-c", "sleep 0.3; exit 7"], "workspace": ws, "wait": True})
        assert res["exit_code"] == 7 and res["signal"] == 0 and res["state"] == "exited", res
        # The spawn reply's fields are there too, and the notification came first with the same map.
        assert len(res["id"]) == 12 and res["task"] == "default" and res["pid"] > 0 and "limits" in res, res
        note = started(c, res["id"])
        assert note["pid"] == res["pid"] and "exit_code" not in note, note
        assert [s for s in c.ok("sandbox.list") if s["id"] == res["id"]][0]["state"] == "exited"
        # wait: false (and no wait) answer at the start, as before.
        res = c.ok("sandbox.spawn", {"argv": ["/bin/true"], "workspace": ws, "wait": False})
        assert "exit_code" not in res, res
        assert c.ok("sandbox.wait", {"id": res["id"]})["exit_code"] == 0


def test_signal_death():
    with Daemon() as d:
        ws = workspace(d)
        c = d.client()
        res = c.ok("sandbox.spawn", {"argv": ["/bin/sh", "-c", "kill -TERM $$"], "workspace": ws, "wait": True})
        assert res["signal"] == 15 and res["exit_code"] == 128 + 15 and res["state"] == "exited", res
        # Killed from outside while the caller waits: the reply says so.
        c2 = d.client()
        mid = c.request("sandbox.spawn", {"argv": ["/bin/sleep", "60"], "workspace": ws, "wait": True})
        deadline = time.time() + 10
        while not [n for n in c.notifications if n[1] == "sandbox.started"][1:] and time.time() < deadline:
            msg = c.read_message()
            assert msg[0] == 2, msg  # nothing but notifications before the end
            c.notifications.append(msg)
        sid = [n for n in c.notifications if n[1] == "sandbox.started"][-1][2][0]["id"]
        c2.ok("sandbox.kill", {"id": sid, "signal": 9})
        err, res = c.response(mid)
        assert err is None and res["id"] == sid and res["signal"] == 9 and res["state"] == "killed", (err, res)


def test_spawn_errors_stay_errors():
    with Daemon(tasks={"noseccomp": "[Task]\nDescription=x\n[Security]\nSeccomp=/nonexistent/profile\n"}) as d:
        ws = workspace(d)
        c = d.client()
        err, res = c.call("sandbox.spawn", {"task": "nope", "argv": ["/bin/true"], "workspace": ws, "wait": True})
        assert err and err["code"] == "not_found", (err, res)
        err, res = c.call("sandbox.spawn", {"argv": ["/bin/true"], "workspace": "/", "wait": True})
        assert err and err["code"] == "policy_denied", (err, res)
        err, res = c.call("sandbox.spawn", {"argv": ["/bin/true"], "workspace": ws, "env": {"SECRET": "x"}, "wait": True})
        assert err and err["code"] == "policy_denied", (err, res)
        err, res = c.call("sandbox.spawn", {"argv": ["/bin/true"], "workspace": ws, "tty": True, "wait": True})
        assert err and err["code"] == "invalid_params" and "wait" in err["message"], (err, res)
        err, res = c.call("sandbox.spawn", {"argv": ["/bin/true"], "workspace": ws, "wait": "yes"})
        assert err and err["code"] == "invalid_params", (err, res)
        assert not [n for n in c.notifications if n[1] == "sandbox.started"], c.notifications
        # A command that cannot be executed: it started (the helper reports), then 127, as without wait.
        res = c.ok("sandbox.spawn", {"argv": ["/nonexistent/cmd"], "workspace": ws, "wait": True})
        assert res["exit_code"] == 127, res


def test_disconnect_mid_wait_detached_runs_on():
    with Daemon() as d:
        ws = workspace(d)
        c = d.client()
        c.request("sandbox.spawn", {"argv": ["/bin/sh", "-c", "sleep 1; exit 3"], "workspace": ws, "wait": True})
        msg = c.read_message()
        assert msg[0] == 2 and msg[1] == "sandbox.started", msg
        sid = msg[2][0]["id"]
        c.close()
        # Like leaving a sandbox.wait: the sandbox runs on and ends on its own.
        c2 = d.client()
        assert [s for s in c2.ok("sandbox.list") if s["id"] == sid][0]["state"] == "running"
        res = c2.ok("sandbox.wait", {"id": sid})
        assert res["exit_code"] == 3 and res["state"] == "exited", res
        assert c2.ok("agentd.ping")


def test_disconnect_mid_wait_attached_ends_it():
    with Daemon() as d:
        ws = workspace(d)
        c = d.client()
        rd, wr = os.pipe()
        devnull = os.open("/dev/null", os.O_RDONLY)
        req = msgpack.packb([0, 1, "sandbox.spawn", [{"argv": ["/bin/sh", "-c", "echo up; sleep 60"], "workspace": ws,
                                                      "attach": True, "wait": True}]], use_bin_type=True)
        socket.send_fds(c.sock, [req], [devnull, wr, wr])
        os.close(wr)
        os.close(devnull)
        msg = c.read_message()
        assert msg[0] == 2 and msg[1] == "sandbox.started", msg
        sid = msg[2][0]["id"]
        assert os.read(rd, 3) == b"up\n"
        c.close()
        # As without wait: an attached command whose caller left ends.
        c2 = d.client()
        sb = wait_state(c2, sid, ("killed", "exited"))
        assert sb["state"] == "killed", sb
        res = c2.ok("sandbox.wait", {"id": sid})
        assert res["reason"] == "client disconnected", res
        os.close(rd)


def test_two_waits_on_one_connection_answer_each_call():
    """Two spawns with wait pipelined on one connection: each reply goes to its
    own call (by msgid), the shorter first, each with its own exit code."""
    with Daemon() as d:
        ws = workspace(d)
        c = d.client()
        a = c.request("sandbox.spawn", {"argv": ["/bin/sh", "-c", "sleep 0.5; exit 4"], "workspace": ws, "wait": True})
        b = c.request("sandbox.spawn", {"argv": ["/bin/sh", "-c", "exit 5"], "workspace": ws, "wait": True})
        eb, rb = c.response(b)
        ea, ra = c.response(a)
        assert ea is None and eb is None and ra["exit_code"] == 4 and rb["exit_code"] == 5, (ea, ra, eb, rb)
        assert ra["id"] != rb["id"]
        notes = {n[2][0]["id"] for n in c.notifications if n[1] == "sandbox.started"}
        assert notes == {ra["id"], rb["id"]}, c.notifications


def test_disconnect_racing_the_exit_leaks_nothing():
    """Clients that leave while (or just after) their wait spawn ends: agentd
    stays up, every sandbox ends, and no descriptor stays behind."""
    with Daemon() as d:
        ws = workspace(d)
        c = d.client()
        c.ok("sandbox.spawn", {"argv": ["/bin/true"], "workspace": ws, "wait": True})  # the plan cache's fds
        c.close()
        base = d.n_fds()
        for i in range(20):
            c = d.client()
            c.request("sandbox.spawn", {"argv": ["/bin/true"], "workspace": ws, "wait": True})
            if i % 2:
                c.read_message()  # the started notification: leave between it and the reply
            c.close()
        c = d.client()
        deadline = time.time() + 10
        while time.time() < deadline and {s["state"] for s in c.ok("sandbox.list")} != {"exited"}:
            time.sleep(0.05)
        assert {s["state"] for s in c.ok("sandbox.list")} == {"exited"}, c.ok("sandbox.list")
        c.close()
        deadline = time.time() + 5
        while time.time() < deadline and d.n_fds() > base:
            time.sleep(0.05)
        assert d.n_fds() <= base, (base, d.n_fds())


def test_agentctl_spawn_is_one_call():
    with Daemon() as d:
        ws = workspace(d)
        p = d.agentctl("spawn", "--", "/bin/sh", "-c", "echo out; echo err >&2; exit 5", cwd=ws)
        assert p.returncode == 5 and p.stdout == b"out\n" and p.stderr == b"err\n", p
        p = d.agentctl("spawn", "--", "/bin/sh", "-c", "kill -INT $$", cwd=ws)
        assert p.returncode == 128 + 2, p
        # Ctrl-C while agentctl waits in the one call reaches the command (sandbox.started named it).
        env = dict(d.env, AGENTD_SOCKET=d.socket)
        env.pop("XDG_RUNTIME_DIR", None)
        p = subprocess.Popen([AGENTCTL, "spawn", "--", "/bin/sh", "-c", "trap 'echo got-int; exit 42' INT; echo ready; "
                              "while :; do sleep 0.1; done"], cwd=ws, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert p.stdout.readline() == b"ready\n"
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=20)
        assert p.returncode == 42 and out == b"got-int\n", (p.returncode, out, err)
        c = d.client()
        methods = [r["fields"]["method"] for r in c.ok("audit.query") if r["type"] == "rpc"]
        assert methods.count("sandbox.spawn") == 3 and "sandbox.wait" not in methods, methods


if __name__ == "__main__":
    run_tests(globals())
