#!/usr/bin/python3
"""Faults: one daemon per state directory, a stopping daemon removes only its
own socket, evidence fails closed (full state filesystem, no audit key, a
lockdown that cannot be persisted), audit.query is bounded, a broken config
never replaces a good one, ps/status after a restart say what is true, crash
leftovers are cleaned, and retention prunes records with the chain still
verifiable.

Every daemon here uses temporary XDG directories (harness.Daemon): nothing
touches the invoking user's real state. The full-filesystem tests mount a
small tmpfs over the state directory inside a private user + mount namespace
of the daemon (no root needed); they skip where user namespaces are off."""
import ctypes
import glob
import json
import os
import signal
import socket
import stat
import subprocess
import time

from harness import AGENTD, Daemon, run_tests

libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWUSER = 0x10000000
CLONE_NEWNS = 0x00020000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18


def wait_for(pred, timeout=10, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def state_dir(d):
    return os.path.join(d.state_home, "agentd")


def second_daemon(d, socket_path=None):
    """A second Daemon on the same state directory (and socket, unless given)."""
    d2 = Daemon()
    d2.env["XDG_STATE_HOME"] = d.state_home
    d2.env["XDG_RUNTIME_DIR"] = d.runtime
    d2.socket = d.socket
    if socket_path:
        d2.args = ["--socket", socket_path]
        d2.socket = socket_path
    return d2


def spawn_sleeper(d):
    ws = os.path.join(d.tmp, "ws")
    os.makedirs(ws, exist_ok=True)
    p = d.agentctl("spawn", "--detach", "--", "/bin/sleep", "1000", cwd=ws, check=0)
    sid = p.stdout.decode().strip()
    c = d.client()
    wait_for(lambda: [s for s in c.ok("sandbox.list") if s["id"] == sid and s["state"] == "running"], what="running")
    return sid


def sandbox_state(d, sid):
    return [s for s in d.client().ok("sandbox.list") if s["id"] == sid][0]


# ---- one daemon per state directory -----------------------------------------

def test_second_daemon_same_socket_refuses_and_kills_nothing():
    with Daemon() as d:
        sid = spawn_sleeper(d)
        pid = sandbox_state(d, sid)["pid"]
        d2 = second_daemon(d)
        d2.start(wait=False)
        rc = d2.proc.wait(timeout=20)
        d2.log.close()
        assert rc == 1, rc
        assert "another agentd" in d2.read_log() and str(d.proc.pid) in d2.read_log(), d2.read_log()
        time.sleep(0.2)
        s = sandbox_state(d, sid)
        assert s["state"] == "running" and s["pid"] == pid, s
        os.kill(pid, 0)  # still alive
        assert d.client().ok("audit.verify")["ok"] is True


def test_second_daemon_other_socket_refuses_and_chain_stays_whole():
    with Daemon() as d:
        sid = spawn_sleeper(d)
        other = os.path.join(d.tmp, "other.sock")
        d2 = second_daemon(d, other)
        d2.start(wait=False)
        rc = d2.proc.wait(timeout=20)
        d2.log.close()
        assert rc == 1 and "another agentd" in d2.read_log(), (rc, d2.read_log())
        assert not os.path.exists(other)
        assert sandbox_state(d, sid)["state"] == "running"
        for _ in range(3):
            d.client().ok("agentd.ping")
        d.agentctl("kill", sid, check=0)
    d.start()
    res = d.client().ok("audit.verify")
    d.stop()
    assert res["ok"] is True, res


def test_daemon_with_another_state_leaves_our_sandboxes_alone():
    """Two agentd with their own state directories may share a cgroup (started
    from one shell): starting one must not kill the other's sandboxes."""
    with Daemon() as d:
        sid = spawn_sleeper(d)
        pid = sandbox_state(d, sid)["pid"]
        other = Daemon()
        os.makedirs(os.path.join(state_dir(other), "sandboxes"))  # it has run before
        with other:
            other.client().ok("agentd.ping")
            time.sleep(0.3)
            s = sandbox_state(d, sid)
            assert s["state"] == "running" and s["pid"] == pid, s
            os.kill(pid, 0)


def test_two_daemons_started_together_one_serves():
    d = Daemon()
    d2 = second_daemon(d, os.path.join(d.tmp, "b.sock"))
    d.start(wait=False)
    d2.start(wait=False)
    deadline = time.time() + 20
    while time.time() < deadline and d.proc.poll() is None and d2.proc.poll() is None:
        time.sleep(0.05)
    time.sleep(1)
    alive = [x for x in (d, d2) if x.proc.poll() is None]
    dead = [x for x in (d, d2) if x.proc.poll() is not None]
    try:
        assert len(alive) == 1 and len(dead) == 1, [x.proc.poll() for x in (d, d2)]
        assert dead[0].proc.returncode == 1 and "another agentd" in dead[0].read_log(), dead[0].read_log()
        alive[0].wait_ready()
        st = alive[0].client().ok("agentd.status")
        assert st["audit"].startswith("ok"), st
    finally:
        for x in (d, d2):
            x.stop()


def test_stop_leaves_a_socket_that_is_not_ours():
    d = Daemon().start()
    # The service manager (or a newer agentd) now owns the path.
    os.unlink(d.socket)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(d.socket)
    s.listen(1)
    ino = os.stat(d.socket).st_ino
    d.stop()
    try:
        st = os.lstat(d.socket)
        assert stat.S_ISSOCK(st.st_mode) and st.st_ino == ino
    finally:
        s.close()
    # Its own socket it does remove.
    os.unlink(d.socket)
    d.start()
    d.stop()
    assert not os.path.exists(d.socket)


# ---- evidence fails closed ----------------------------------------------------

def userns_tmpfs(path, size):
    """preexec_fn: a private user + mount namespace with a tmpfs on `path`,
    the daemon's uid and gid mapped to themselves (it runs without caps)."""
    uid, gid = os.getuid(), os.getgid()

    def pre():
        if libc.unshare(CLONE_NEWUSER | CLONE_NEWNS) != 0:
            os._exit(97)
        for f, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"), ("gid_map", f"{gid} {gid} 1")):
            with open(f"/proc/self/{f}", "w") as fh:
                fh.write(text)
        if libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None) != 0:
            os._exit(98)
        if libc.mount(b"tmpfs", path.encode(), b"tmpfs", 0, f"size={size},mode=0700".encode()) != 0:
            os._exit(99)
    return pre


class TmpfsDaemon(Daemon):
    """agentd whose state directory is a small tmpfs of its own."""

    def __init__(self, size="8m", **kw):
        super().__init__(**kw)
        self.size = size

    def start(self, wait=True):
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([AGENTD] + self.args, env=self.env, stdout=self.log, stderr=self.log,
                                     preexec_fn=userns_tmpfs(self.state_home, self.size))
        if wait:
            self.wait_ready()
        return self

    def inside(self, *parts):
        """A path in the daemon's mount namespace, seen from here."""
        return os.path.join(f"/proc/{self.proc.pid}/root", self.state_home.lstrip("/"), *parts)


def userns_works():
    p = subprocess.run(["/usr/bin/unshare", "-Ur", "true"], capture_output=True)
    return p.returncode == 0


def fill(path):
    """Writes until the filesystem says ENOSPC."""
    with open(path, "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    try:
        with open(path, "ab") as f:
            while True:
                f.write(b"\0" * 512)
                f.flush()
    except OSError:
        pass


def test_full_state_filesystem_refuses_changes_and_lockdown_is_not_faked():
    if not userns_works():
        return "skip"
    d = TmpfsDaemon(size="8m").start()
    try:
        ws = os.path.join(d.tmp, "ws")
        os.makedirs(ws)
        c = d.client()
        assert c.ok("agentd.status")["audit"].startswith("ok")
        filler = d.inside("filler")
        fill(filler)
        st = c.ok("agentd.status")
        assert st["audit"].startswith("failing:") and ("full" in st["audit"] or "No space" in st["audit"]), st
        # State changes are refused while they cannot be recorded ...
        err, _ = c.call("sandbox.spawn", {"argv": ["/bin/true"], "workspace": ws})
        assert err is not None and err["code"] == "backend_unavailable" and "audit" in err["message"], err
        # ... reads stay available ...
        c.ok("agentd.ping")
        c.ok("sandbox.list")
        c.ok("task.list")
        # Reads go on; once even their records no longer fit, status says so.
        for _ in range(60):
            c.ok("agentd.ping")
        st = c.ok("agentd.status")
        assert "cannot write records" in st["audit"], st
        # ... and a lockdown that cannot be persisted is not reported as done.
        err, res = c.call("credentials.revoke", {"all": True})
        assert err is not None and err["code"] == "backend_unavailable" and "persisted" in err["message"], (err, res)
        assert not os.path.exists(d.inside("agentd", "lockdown"))
        assert c.ok("agentd.status")["locked_down"] is True  # in force while this process lives
        # Space again: requests are recorded again, with the gap accounted for.
        os.unlink(filler)
        wait_for(lambda: c.ok("agentd.status")["audit"].startswith("ok"), what="audit ok again")
        # The lockdown becomes durable as soon as its marker fits.
        wait_for(lambda: os.path.exists(d.inside("agentd", "lockdown")), what="lockdown marker written")
        err, _ = c.call("sandbox.spawn", {"argv": ["/bin/true"], "workspace": ws})
        assert err["code"] == "locked_down", err
        recs = c.ok("audit.query", {"limit": 50})
        resumed = [r for r in recs if r["type"] == "audit.resumed"]
        assert resumed and resumed[-1]["fields"]["events_not_recorded"] >= 1, [r["type"] for r in recs]
        assert c.ok("audit.verify")["ok"] is True
    finally:
        d.stop()


def test_spawn_refused_when_its_record_cannot_be_written():
    if not userns_works():
        return "skip"
    # No free-space reserve: only the record's own write can say no.
    d = TmpfsDaemon(size="8m", config="[Audit]\nMinFreeSpace=0\n").start()
    try:
        ws = os.path.join(d.tmp, "ws")
        os.makedirs(ws)
        c = d.client()
        fill(d.inside("filler"))
        err, res = c.call("sandbox.spawn", {"argv": ["/bin/true"], "workspace": ws})
        assert err is not None and err["code"] == "backend_unavailable" and "record" in err["message"], (err, res)
        assert c.ok("sandbox.list") == []
        # No record of a sandbox that never ran (its directory is swept at start).
        assert glob.glob(d.inside("agentd", "sandboxes", "*", "meta.json")) == []
        os.unlink(d.inside("filler"))
        res = c.ok("sandbox.spawn", {"argv": ["/bin/true"], "workspace": ws})
        assert len(glob.glob(d.inside("agentd", "sandboxes", "*", "meta.json"))) == 1, res
    finally:
        d.stop()


def test_flush_failure_in_worker_fails_closed():
    """The 50 ms flush (fsync, then audit.head) runs in a worker thread; when it
    fails, the log is "failing" and state changes are refused, exactly as when
    the loop flushed; once the head can be written again, the log resumes."""
    d = Daemon().start()
    try:
        ws = os.path.join(d.tmp, "ws")
        os.makedirs(ws)
        c = d.client()
        assert c.ok("agentd.status")["audit"].startswith("ok")
        blocker = os.path.join(state_dir(d), "audit", "audit.head.tmp")
        os.mkdir(blocker)  # the head's temporary cannot be created: EISDIR
        c.ok("agentd.ping")  # something to flush
        st = wait_for(lambda: (lambda s: s if "cannot write records" in s["audit"] else None)(c.ok("agentd.status")),
                      what="the failed flush reported")
        assert st["audit"].startswith("failing:") and "Is a directory" in st["audit"], st
        err, _ = c.call("sandbox.spawn", {"argv": ["/bin/true"], "workspace": ws})
        assert err is not None and err["code"] == "backend_unavailable" and "audit" in err["message"], err
        os.rmdir(blocker)
        wait_for(lambda: c.ok("agentd.status")["audit"].startswith("ok"), what="audit ok again")
        recs = c.ok("audit.query", {"limit": 50})
        assert any(r["type"] == "audit.resumed" for r in recs), [r["type"] for r in recs]
        assert c.ok("audit.verify")["ok"] is True
        c.ok("sandbox.spawn", {"argv": ["/bin/true"], "workspace": ws})
    finally:
        d.stop()


def test_lockdown_marker_survives_restart():
    with Daemon() as d:
        c = d.client()
        res = c.ok("credentials.revoke", {"all": True})
        assert res["locked_down"] is True
        assert open(os.path.join(state_dir(d), "lockdown")).read().startswith("locked")
        # The evidence says the lockdown was made durable.
        ev = [r for r in c.ok("audit.query", {"limit": 100}) if r["type"] == "lockdown"]
        assert ev and ev[-1]["fields"].get("persisted") is True, ev
    with d:
        err, _ = d.client().call("sandbox.spawn", {"argv": ["/bin/true"], "workspace": d.tmp})
        assert err["code"] == "locked_down", err


def test_no_audit_key_refuses_changes():
    d = Daemon().start()
    d.stop()
    key = os.path.join(state_dir(d), "audit", "hmac-key.sealed")
    with open(key, "r+b") as f:
        f.seek(20)
        f.write(b"\xff" * 16)
    ws = os.path.join(d.tmp, "ws")
    os.makedirs(ws)
    with d:
        c = d.client()
        st = c.ok("agentd.status")
        assert st["audit"].startswith("unavailable:"), st
        err, _ = c.call("sandbox.spawn", {"argv": ["/bin/true"], "workspace": ws})
        assert err["code"] == "backend_unavailable" and "audit" in err["message"], err
        err, _ = c.call("agentd.unlock")
        assert err["code"] == "backend_unavailable", err
        err, _ = c.call("agentd.prune")
        assert err["code"] == "backend_unavailable" and "audit" in err["message"], err
        c.ok("sandbox.list")


# ---- audit.query is bounded -------------------------------------------------------

def test_audit_query_limit_bounded_and_paged():
    with Daemon() as d:
        c = d.client()
        for _ in range(30):
            c.ok("agentd.ping")
        rss0 = d.rss_kb()
        for bad in (2**64 - 1, 2**32, 10001, 0):
            err, _ = c.call("audit.query", {"limit": bad})
            assert err["code"] == "invalid_params" and "10000" in err["message"], (bad, err)
        assert d.rss_kb() < rss0 + d.rss_slack_kb(16 * 1024), (rss0, d.rss_kb())
        p = d.agentctl("audit", "show", "--limit", "18446744073709551615")
        assert p.returncode == 1 and b"invalid_params" in p.stderr, p
        allrecs = c.ok("audit.query", {"limit": 10000})
        assert len(allrecs) >= 30
        # Each query is recorded too: page from a fixed point.
        page = c.ok("audit.query", {"limit": 10, "before": allrecs[-1]["seq"] + 1})
        assert [r["seq"] for r in page] == [r["seq"] for r in allrecs[-10:]]
        older = c.ok("audit.query", {"limit": 10, "before": page[0]["seq"]})
        assert [r["seq"] for r in older] == [r["seq"] for r in allrecs[-20:-10]], (older, allrecs[-20:])
        assert c.ok("audit.query", {"limit": 10, "before": 1}) == []


def fill_audit_log(c, n, batch=500):
    """n more "rpc" audit records: pings pipelined in batches (each is recorded)."""
    import msgpack
    for done in range(0, n, batch):
        k = min(batch, n - done)
        c.send_raw(b"".join(msgpack.packb([0, 1000000 + i, "agentd.ping", []]) for i in range(k)))
        for _ in range(k):
            msg = c.read_message()
            assert msg is not None and msg[0] == 1 and msg[2] is None, msg


QUERY_CLIENT = r"""
import json, socket, sys, time, msgpack
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(300)
s.connect(sys.argv[1])
u = msgpack.Unpacker(raw=False, strict_map_key=False)
t0 = time.monotonic()
s.sendall(msgpack.packb([0, 1, "audit.query", [{"limit": 10000}]]))
first = None
while True:
    data = s.recv(1 << 20)
    if not data:
        sys.exit("connection closed")
    if first is None:
        first = time.monotonic()
    u.feed(data)
    msg = next(u, None)
    if msg is not None:
        break
seqs = [r["seq"] for r in msg[3] or []]
print(json.dumps({"t0": t0, "first": first, "error": msg[2], "n": len(seqs),
                  "consecutive": seqs == list(range(seqs[0], seqs[0] + len(seqs))) if seqs else False}))
"""


def test_audit_query_runs_off_the_loop():
    """A big audit.query (a walk of the whole log) must not hold up the loop:
    pings on another connection are answered while it runs. Compared with the
    query's own duration (request to first byte of its reply, timed by a
    separate client process), never with fixed milliseconds: on the old code
    a ping sent after the query waits for all of it."""
    with Daemon() as d:
        c = d.client()
        records = 0
        for _ in range(6):
            fill_audit_log(c, 20000)
            records += 20000
            p = subprocess.Popen(["/usr/bin/python3", "-c", QUERY_CLIENT, d.socket], stdout=subprocess.PIPE)
            time.sleep(0.05)  # the query is on its way first
            lat = []
            while p.poll() is None:
                t0 = time.monotonic()
                c.ok("agentd.ping")
                lat.append((t0, time.monotonic()))
            out, _ = p.communicate()
            assert p.returncode == 0, out
            res = json.loads(out)
            assert res["error"] is None, res["error"]
            assert res["n"] == 10000 and res["consecutive"], ("a page is consecutive, nothing torn or skipped", res)
            q0, q1 = res["t0"], res["first"]
            dur = q1 - q0
            inside = [b - a for a, b in lat if a < q1]
            print(f"  {records} records: query {dur:.3f} s, {len(inside)} pings sent inside it, "
                  f"max {max(inside, default=0):.3f} s", flush=True)
            if dur >= 0.3:
                break
        assert dur >= 0.3, f"the query never took long enough to tell ({dur:.3f} s over {records} records)"
        # Every ping sent while the query ran got its answer in a fraction of it.
        assert inside and max(inside) < dur / 2, (max(inside, default=None), dur)
        # Records appended while the query ran are all there, and the chain is whole.
        assert c.ok("audit.verify")["ok"]


def test_stop_while_audit_query_runs():
    """SIGTERM while a big audit.query is in its worker: agentd finishes the
    walk and stops cleanly (exit 0; under ASan also no leak and no use after
    free of the connection or the snapshot), and the client's connection ends."""
    with Daemon() as d:
        c = d.client()
        fill_audit_log(c, 20000)
        q = d.client()
        q.sock.settimeout(60)
        q.request("audit.query", {"limit": 10000})
        time.sleep(0.05)
        t0 = time.monotonic()
        d.stop()
        while q.sock.recv(1 << 20):
            pass
        assert time.monotonic() - t0 < 30


def test_revoke_snapshot_audit_tail_written_off_the_loop():
    """The incident snapshot's audit-tail.json (the sandbox's last records) is
    read off the loop now: it still appears, holds only that sandbox's records,
    oldest first, and 0600."""
    with Daemon() as d:
        sid = spawn_sleeper(d)
        p = d.agentctl("--json", "revoke", "--sandbox", sid)
        assert p.returncode == 0, p
        res = json.loads(p.stdout)
        path = os.path.join(res["snapshots"][0], "audit-tail.json")
        tail = wait_for(lambda: os.path.exists(path) and json.load(open(path)), what="audit-tail.json")
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert all(r["sandbox"] == sid for r in tail), tail
        seqs = [r["seq"] for r in tail]
        assert seqs == sorted(seqs) and any(r["type"] == "sandbox.spawn" for r in tail), tail


# ---- a reload that fails changes nothing -----------------------------------------

def test_reload_of_nul_config_keeps_previous():
    conf = "[Daemon]\nMaxMessageSize=4096\n"
    d = Daemon(config=conf).start()
    try:
        big = {"name": "x" * 8000}

        def refused():
            c = d.client()
            err, _ = c.call("task.show", big)
            return err["code"] == "limit_exceeded"
        assert refused()
        path = os.path.join(d.config_home, "agentd", "agentd.conf")
        with open(path, "wb") as f:
            f.write(b"\0" * len(conf))
        d.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "keeping the previous configuration" in d.read_log(), what="reload refused")
        assert "NUL" in d.read_log()
        assert refused()
        # A good file is taken again.
        with open(path, "w") as f:
            f.write("[Daemon]\nMaxMessageSize=1M\n")
        d.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: not refused(), what="reload applied")
    finally:
        d.stop()


# ---- ps and status after a restart say what is true, memory stays bounded -------

def fake_record(d, sid, started_at):
    dd = os.path.join(state_dir(d), "sandboxes", sid)
    os.makedirs(dd, mode=0o700)
    with open(os.path.join(dd, "meta.json"), "w") as f:
        json.dump({"id": sid, "task": "default", "workspace": d.tmp, "workspace_mode": 0, "started_at": started_at,
                   "started_ns": started_at * 1000000, "state": "exited", "exit_code": 0, "signal": 0,
                   "discarded": False, "argv": ["/bin/true"]}, f)


def test_restart_ps_pid_status_count_and_bounded_lookups():
    d = Daemon().start()
    ws = os.path.join(d.tmp, "ws")
    os.makedirs(ws)
    d.agentctl("spawn", "--", "/bin/true", cwd=ws, check=0)
    before = d.client().ok("sandbox.list")
    assert len(before) == 1 and before[0]["pid"] > 0, before
    d.stop()
    for k in range(300):
        fake_record(d, "%012x" % (0xa00000000000 + k), 1000 + k)
    d.start()
    c = d.client()
    lst = c.ok("sandbox.list")
    mine = [s for s in lst if s["id"] == before[0]["id"]]
    assert mine and mine[0]["pid"] == before[0]["pid"], (mine, before)
    st = c.ok("agentd.status")
    assert st["sandboxes"] == 0, st
    n0 = len(lst)
    assert n0 <= 256, n0
    # Looking up every old record does not keep them all.
    for k in range(300):
        res = c.ok("sandbox.wait", {"id": "%012x" % (0xa00000000000 + k)})
        assert res["exit_code"] == 0
    assert len(c.ok("sandbox.list")) <= 256
    assert c.ok("agentd.status")["sandboxes"] == 0
    d.stop()


# ---- crash leftovers are cleaned at start ------------------------------------------

def test_crash_leftovers_removed_at_start():
    d = Daemon().start()
    ws = os.path.join(d.tmp, "ws")
    os.makedirs(os.path.join(ws, "sub"))
    d.agentctl("spawn", "--", "/bin/sh", "-c", "echo a > sub/new.txt; echo b > top.txt", cwd=ws, check=0)
    sid = d.client().ok("sandbox.list")[-1]["id"]
    # What a kill -9 in the middle of a promote leaves: temp files beside the targets.
    d.proc.kill()
    d.proc.wait()
    d.log.close()
    temps = [os.path.join(ws, ".agentd-promote.0123456789abcdef"), os.path.join(ws, "sub", ".agentd-promote.l4242")]
    for t in temps:
        with open(t, "w") as f:
            f.write("half")
    keep = os.path.join(ws, "sub", "agentd-promote.notours")
    open(keep, "w").close()
    # And a sandbox directory created before the crash, without a record yet.
    orphan = os.path.join(state_dir(d), "sandboxes", "0badc0ffee00")
    os.makedirs(os.path.join(orphan, "upper", "x"))
    os.makedirs(os.path.join(orphan, "work", "work"))
    open(os.path.join(orphan, "upper", "x", "f"), "w").close()
    os.chmod(os.path.join(orphan, "work", "work"), 0)
    d.start()
    try:
        for t in temps:
            assert not os.path.exists(t), t
        assert os.path.exists(keep)
        assert not os.path.exists(orphan)
        c = d.client()
        assert [s for s in c.ok("sandbox.list") if s["id"] == sid]
        res = c.ok("sandbox.promote", {"id": sid})
        assert sorted(res["promoted"]) == ["sub/new.txt", "top.txt"] or len(res["promoted"]) == 2, res
        assert open(os.path.join(ws, "sub", "new.txt")).read() == "a\n"
    finally:
        d.stop()


# ---- retention ---------------------------------------------------------------------

RETENTION_CONF = """[Audit]
FileSize=4K
[Retention]
SandboxRecords=2
AuditMaxSize=16K
"""


def audit_files(d):
    return sorted(glob.glob(os.path.join(state_dir(d), "audit", "audit-*.jsonl")))


def test_prune_records_and_audit_chain_stays_verifiable():
    d = Daemon(config=RETENTION_CONF).start()
    ws = os.path.join(d.tmp, "ws")
    os.makedirs(ws)
    ids = []
    for i in range(4):
        d.agentctl("spawn", "--", "/bin/true", cwd=ws, check=0)
        ids.append(d.client().ok("sandbox.list")[-1]["id"])
        time.sleep(0.01)
    c = d.client()
    for _ in range(150):
        c.ok("agentd.ping")
    n_files = len(audit_files(d))
    assert n_files >= 8, n_files
    p = d.agentctl("--json", "prune", check=0)
    res = json.loads(p.stdout)
    assert res["sandboxes_removed"] == 2 and res["audit_files_removed"] >= 1 and res["audit_first_seq"] > 1, res
    for sid in ids[:2]:
        assert not os.path.exists(os.path.join(state_dir(d), "sandboxes", sid))
        err, _ = c.call("sandbox.wait", {"id": sid})
        assert err["code"] == "not_found", err
    listed = [s["id"] for s in c.ok("sandbox.list")]
    assert ids[2] in listed and ids[3] in listed and ids[0] not in listed, listed
    assert len(audit_files(d)) < n_files
    total = sum(os.path.getsize(f) for f in audit_files(d))
    assert total <= 16 * 1024 + 4096, total
    v = c.ok("audit.verify")
    assert v["ok"] is True, v
    recs = c.ok("audit.query", {"limit": 10000})
    assert recs[0]["seq"] == res["audit_first_seq"], (recs[0]["seq"], res)
    assert any(r["type"] == "audit.pruned" for r in recs)
    d.stop()
    # Still verifiable after a restart; the checkpoint cannot be removed or edited unnoticed.
    d.start()
    assert d.client().ok("audit.verify")["ok"] is True
    # Retention runs again at start and may have pruned further: where the kept log starts now.
    first_seq = d.client().ok("audit.query", {"limit": 10000})[0]["seq"]
    d.stop()
    cp = os.path.join(state_dir(d), "audit", "audit.checkpoint")
    text = open(cp).read()
    os.rename(cp, cp + ".away")
    d.start()
    v = d.client().ok("audit.verify")
    assert v["ok"] is False and v["first_bad_seq"] == first_seq, (v, first_seq)
    d.stop()
    edited = text.replace('"seq":', '"seq":1', 1)
    with open(cp, "w") as f:
        f.write(edited)
    d.start()
    v = d.client().ok("audit.verify")
    assert v["ok"] is False and "checkpoint" in v["reason"], v
    d.stop()


if __name__ == "__main__":
    run_tests(globals())
