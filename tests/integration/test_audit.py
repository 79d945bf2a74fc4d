#!/usr/bin/python3
"""Audit log through agentd: every request, spawn, exit and promote is recorded,
the chain verifies, and tampering with the file is caught at the right seq."""
import glob
import json
import os

from harness import Daemon, run_tests


def audit_files(d):
    return sorted(glob.glob(os.path.join(d.state_home, "agentd", "audit", "audit-*.jsonl")))


def test_events_recorded_and_verified():
    with Daemon() as d:
        ws = os.path.join(d.tmp, "ws")
        os.makedirs(ws)
        d.agentctl("spawn", "--", "/bin/sh", "-c", "echo x > new.txt", cwd=ws, check=0)
        c = d.client()
        sid = c.ok("sandbox.list")[-1]["id"]
        c.ok("sandbox.promote", {"id": sid})
        c.call("task.show", {"name": "nope"})
        recs = c.ok("audit.query", {"sandbox": sid})
        types = [r["type"] for r in recs]
        assert "sandbox.spawn" in types and "sandbox.exit" in types and "sandbox.promote" in types, types
        spawn = [r for r in recs if r["type"] == "sandbox.spawn"][0]
        assert spawn["fields"]["argv"] == ["/bin/sh", "-c", "echo x > new.txt"] and len(spawn["fields"]["policy_sha256"]) == 64
        assert spawn["fields"]["workspace"] == ws
        prom = [r for r in recs if r["type"] == "sandbox.promote"][0]
        assert "new.txt" in prom["fields"]["promoted_sha256"], prom
        allrecs = c.ok("audit.query")
        rpcs = [r for r in allrecs if r["type"] == "rpc"]
        assert any(r["fields"]["method"] == "task.show" and r["fields"]["outcome"] == "not_found" for r in rpcs), rpcs[-3:]
        assert all(r["fields"]["peer_uid"] == os.getuid() for r in rpcs)
        seqs = [r["seq"] for r in allrecs]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
        res = c.ok("audit.verify")
        assert res["ok"] is True and res["records"] >= len(allrecs), res
        p = d.agentctl("audit", "verify", check=0)
        assert b"audit log OK" in p.stdout
        p = d.agentctl("audit", "show", "--sandbox", sid, check=0)
        assert b"sandbox.spawn" in p.stdout and sid.encode() in p.stdout
        assert c.ok("agentd.status")["audit"].startswith("ok")


def pings_logged(d, n=10):
    """Runs d for n audited pings: the newest log file and its lines."""
    d.start()
    for _ in range(n):
        d.client().ok("agentd.ping")
    d.stop()
    f = audit_files(d)[-1]
    return f, open(f).read().splitlines(keepends=True)


def test_tampering_is_caught():
    d = Daemon()
    f, lines = pings_logged(d)
    assert len(lines) >= 10
    victim = json.loads(lines[4])
    lines[4] = lines[4].replace('"agentd.ping"', '"agentd.pong"')
    open(f, "w").writelines(lines)
    d.start()
    res = d.client().ok("audit.verify")
    assert res["ok"] is False and res["first_bad_seq"] == victim["seq"], (res, victim["seq"])
    p = d.agentctl("audit", "verify")
    assert p.returncode == 1 and b"TAMPERED" in p.stdout, p
    d.stop()


def test_deleted_record_is_caught():
    d = Daemon()
    f, lines = pings_logged(d)
    gone = json.loads(lines[3])["seq"]
    del lines[3]
    open(f, "w").writelines(lines)
    d.start()
    res = d.client().ok("audit.verify")
    assert res["ok"] is False and res["first_bad_seq"] == gone + 1, (res, gone)
    d.stop()


def test_audit_survives_restart_with_chain():
    d = Daemon().start()
    d.client().ok("agentd.ping")
    d.stop()
    d.start()
    d.client().ok("agentd.ping")
    res = d.client().ok("audit.verify")
    assert res["ok"] is True, res
    d.stop()


if __name__ == "__main__":
    run_tests(globals())
