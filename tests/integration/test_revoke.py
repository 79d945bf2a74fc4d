#!/usr/bin/python3
"""Incident response: revoke --all with 20 credentialed sandboxes, lockdown
across a restart, --freeze-only really stops CPU use, and revocations that
Vault could not confirm are retried until they are (also across a restart)."""
import json
import os
import time

from harness import Daemon, cgroup_delegated, proc_stats, run_tests, skip_no_cgroup
from test_broker import enrolled_daemon, sandbox_accessors, wait_vault_ok


def wait_tokens(d, c, ids, vault, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if c.ok("broker.status")["tokens_live"] >= len(ids):
            return
        time.sleep(0.05)
    raise AssertionError(c.ok("broker.status"))


def children_cpu(init_pid):
    """utime+stime of every process whose parent is the sandbox's init (and the init)."""
    return sum(int(f[11]) + int(f[12]) for p, f in proc_stats().items() if int(f[1]) == init_pid or p == init_pid)


def creds_sandboxes(d, c, vault, ws, n):
    """n sandboxes of task creds, each holding a token it fetched, then sleeping: their ids."""
    ids = [c.ok("sandbox.spawn", {"task": "creds", "argv": ["/bin/sh", "-c", "./agentctl token >/dev/null; sleep 300"],
                                  "workspace": ws})["id"] for _ in range(n)]
    wait_tokens(d, c, ids, vault)
    return ids


def test_revoke_all_20_sandboxes_and_lockdown():
    if not cgroup_delegated():   # freezing needs the sandboxes' cgroups
        return skip_no_cgroup()
    with enrolled_daemon() as (tpm, vault, d, ws, c):
        ids = creds_sandboxes(d, c, vault, ws, 20)
        before = [t for t in vault.tokens().values() if t.get("display_name", "").startswith("token-agentd-")]
        assert len(before) == 20 and not any(t["revoked"] for t in before)
        p = d.agentctl("--json", "revoke", "--all")
        assert p.returncode == 0, p
        res = json.loads(p.stdout)
        assert res["frozen"] == 20 and res["killed"] == 20 and res["tokens_pending"] == 0, res
        assert res["tokens_revoked"] >= 20 and len(res["snapshots"]) == 20, res
        snap = json.load(open(os.path.join(res["snapshots"][0], "snapshot.json")))
        assert any("sleep" in pr["cmdline"] for pr in snap["processes"]), snap["processes"]
        for sid in ids:
            w = c.ok("sandbox.wait", {"id": sid})
            assert w["state"] == "killed" and w["reason"] == "killed by an incident revocation", w
        after = [t for t in vault.tokens().values() if t.get("display_name", "").startswith("token-agentd-")]
        assert all(t["revoked"] for t in after), after
        # Locked down: no spawns, with or without credentials; it survives a restart.
        err, _ = c.call("sandbox.spawn", {"argv": ["true"], "workspace": ws})
        assert err["code"] == "locked_down", err
        assert c.ok("agentd.status")["locked_down"] is True
        d.stop()
        d.start()
        c = d.client()
        assert c.ok("agentd.status")["locked_down"] is True
        err, _ = c.call("sandbox.spawn", {"argv": ["true"], "workspace": ws})
        assert err["code"] == "locked_down", err
        d.agentctl("unlock", check=0)
        assert c.ok("agentd.status")["locked_down"] is False
        wait_vault_ok(d)
        d.agentctl("spawn", "--task", "creds", "--", "./agentctl", "token", cwd=ws, check=0)
        types = [r["type"] for r in c.ok("audit.query", {"limit": 5000})]
        assert "revoke" in types and "lockdown" in types and "unlock" in types


def test_freeze_only_stops_cpu():
    if not cgroup_delegated():   # freezing needs the sandboxes' cgroups
        return skip_no_cgroup()
    with Daemon() as d:
        ws = os.path.join(d.tmp, "ws")
        os.makedirs(ws)
        c = d.client()
        res = c.ok("sandbox.spawn", {"argv": ["/bin/sh", "-c", "while :; do :; done"], "workspace": ws})
        sid, pid = res["id"], res["pid"]
        time.sleep(0.3)
        a = children_cpu(pid)
        time.sleep(0.5)
        assert children_cpu(pid) > a, "the busy loop should use CPU before the freeze"
        p = d.agentctl("--json", "revoke", "--sandbox", sid, "--freeze-only", check=0)
        r = json.loads(p.stdout)
        assert r["frozen"] == 1 and r["killed"] == 0 and r["locked_down"] is False, r
        cgroup_ok = c.ok("agentd.status")["cgroup"].startswith("ok")
        assert r["freeze_method"] == ("cgroup" if cgroup_ok else "signal") and r["failures"] == [], r
        assert {s["id"]: s for s in c.ok("sandbox.list")}[sid]["state"] == "frozen"
        # The freeze went through sandbox.c's one state writer: the record says so too.
        with open(os.path.join(d.state_home, "agentd", "sandboxes", sid, "meta.json")) as f:
            assert json.load(f)["state"] == "frozen"
        time.sleep(0.2)
        a = children_cpu(pid)
        time.sleep(1.0)
        b = children_cpu(pid)
        assert b - a <= 1, (a, b)
        c.ok("sandbox.kill", {"id": sid, "signal": "KILL"})
        w = c.ok("sandbox.wait", {"id": sid})
        assert w["state"] == "killed", w
        # revoke --task picks sandboxes by task; an unknown sandbox is not_found.
        err, _ = c.call("credentials.revoke", {"sandbox": "nope00000000"})
        assert err["code"] == "not_found", err
        err, _ = c.call("credentials.revoke", {"all": True, "task": "x"})
        assert err["code"] == "invalid_params", err


def test_vault_down_during_revoke_then_back_and_restart():
    if not cgroup_delegated():   # freezing needs the sandboxes' cgroups
        return skip_no_cgroup()
    with enrolled_daemon() as (tpm, vault, d, ws, c):
        ids = creds_sandboxes(d, c, vault, ws, 3)
        port = vault.port
        vault.stop()
        t0 = time.time()
        p = d.agentctl("--json", "revoke", "--task", "creds")
        assert p.returncode == 1 and b"not yet confirmed" in p.stderr, p
        res = json.loads(p.stdout)
        assert res["frozen"] == 3 and res["killed"] == 3 and res["tokens_pending"] == 3, res
        assert time.time() - t0 < 10
        for sid in ids:
            c.ok("sandbox.wait", {"id": sid})
        assert c.ok("broker.status")["revocations_pending"] >= 3
        assert c.ok("agentd.status")["revocations_pending"] >= 3
        # Pending across a restart, completed once Vault is back.
        d.stop()
        vault.start(port)
        d.start()
        deadline = time.time() + 30
        while time.time() < deadline and sandbox_accessors(d):
            time.sleep(0.2)
        assert not sandbox_accessors(d), (sandbox_accessors(d), d.read_log())
        toks = [t for t in vault.tokens().values() if t.get("display_name", "").startswith("token-agentd-")]
        assert len(toks) == 3 and all(t["revoked"] for t in toks), toks


if __name__ == "__main__":
    run_tests(globals())
