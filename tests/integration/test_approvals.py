#!/usr/bin/python3
"""Approvals: with [Network] Ask=yes a connection to a host not on Allow= is
held, subscribers get approval.requested, and a person answers with agentctl
approve/deny; no answer within AskTimeout= is a denial; scopes sandbox and task
are remembered, and a revoke or the sandbox's end forgets them. Every request
and answer (with who answered) is an audit record."""
import os
import time

from harness import Daemon, run_tests
from test_egress import Upstream


def tasks_for(timeout="20s"):
    # Allow= names nothing reachable: every upstream of the test is asked for.
    return {
        "ask": f"[Task]\nDescription=ask\n[Network]\nMode=proxy\nAllow=127.0.0.1:1\nAsk=yes\nAskTimeout={timeout}\n",
        "noask": "[Task]\nDescription=noask\n[Network]\nMode=proxy\nAllow=127.0.0.1:1\n",
    }


def curls(port, n, path="/"):
    """A shell script: n curls through the proxy, one status code per line."""
    one = f"curl -s -m 40 -o /dev/null -w '%{{http_code}}\\n' http://127.0.0.1:{port}{path}; "
    return "export NO_PROXY= no_proxy=; " + one * n


def spawn(c, ws, script, task="ask"):
    return c.ok("sandbox.spawn", {"task": task, "argv": ["/bin/sh", "-c", script], "workspace": ws})["id"]


def next_event(sub, names, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        msg = sub.read_message()
        assert msg is not None, "subscription closed"
        if msg[0] == 2 and msg[1] in names:
            return msg[1], msg[2][0]
    raise AssertionError(f"no {names} within {timeout}s")


def finish(c, sid):
    c.ok("sandbox.wait", {"id": sid})
    return c.ok("sandbox.logs", {"id": sid})["stdout"]


def audit(c, sid, kind):
    return [r["fields"] for r in c.ok("audit.query", {"sandbox": sid}) if r["type"] == kind]


def setup(d):
    ws = os.path.join(d.tmp, "ws")
    os.makedirs(ws, exist_ok=True)
    sub = d.client()
    sub.ok("events.subscribe")
    return ws, sub, d.client()


def test_approve_once_then_deny_with_audit():
    up = Upstream()
    try:
        with Daemon(tasks=tasks_for()) as d:
            ws, sub, c = setup(d)
            sid = spawn(c, ws, curls(up.port, 2))
            what = f"127.0.0.1:{up.port}"

            _, req = next_event(sub, ["approval.requested"])
            assert req["sandbox"] == sid and req["task"] == "ask" and req["kind"] == "network", req
            assert req["what"] == what and req["expires_at"] > req["requested_at"], req
            assert not up.hits, "the held connection reached the upstream before approval"
            listed = c.ok("approval.list")
            assert [a["id"] for a in listed] == [req["id"]] and listed[0] == req, (listed, req)
            p = d.agentctl("approvals", check=0)
            assert req["id"].encode() in p.stdout and what.encode() in p.stdout, p.stdout
            d.agentctl("approve", req["id"], "--once", check=0)
            _, ans = next_event(sub, ["approval.answered"])
            assert ans["id"] == req["id"] and ans["decision"] == "approve" and ans["scope"] == "once", ans
            assert "agentctl" in ans["by"], ans

            # "once" is one connection: the second one asks again.
            _, req2 = next_event(sub, ["approval.requested"])
            assert req2["id"] != req["id"] and req2["what"] == what, req2
            d.agentctl("deny", req2["id"], check=0)
            _, ans2 = next_event(sub, ["approval.answered"])
            assert ans2["id"] == req2["id"] and ans2["decision"] == "deny", ans2

            assert finish(c, sid) == b"200\n403\n"
            assert len(up.hits) == 1, up.hits
            assert c.ok("approval.list") == []

            asked = audit(c, sid, "approval.requested")
            answered = audit(c, sid, "approval.answered")
            assert [r["id"] for r in asked] == [req["id"], req2["id"]], asked
            assert [(r["id"], r["decision"]) for r in answered] == [(req["id"], "approve"), (req2["id"], "deny")], answered
            for r in answered:
                assert r["peer_exe"].endswith("/agentctl") and r["peer_pid"] > 0, r
            egress = [(r["decision"], r.get("reason", "")) for r in audit(c, sid, "egress")]
            assert egress[0][0] == "allowed" and egress[1][0] == "denied" and "denied" in egress[1][1], egress

            # Unknown ids, bad decisions and scopes are refused.
            err, _ = c.call("approval.answer", {"id": req["id"], "decision": "approve"})
            assert err["code"] == "not_found", err
            err, _ = c.call("approval.answer", {"id": "x", "decision": "maybe"})
            assert err["code"] == "invalid_params", err
            err, _ = c.call("approval.answer", {"id": "x", "decision": "approve", "scope": "forever"})
            assert err["code"] == "invalid_params", err
            assert d.agentctl("approve", "ap-0000000000").returncode != 0
            assert d.agentctl("approve", "x", "--always").returncode == 2
    finally:
        up.stop()


def test_no_answer_is_a_denial():
    up = Upstream()
    try:
        with Daemon(tasks=tasks_for("2s")) as d:
            ws, sub, c = setup(d)
            sid = spawn(c, ws, curls(up.port, 1))
            _, req = next_event(sub, ["approval.requested"])
            assert req["expires_at"] - req["requested_at"] == 2000, req
            _, ans = next_event(sub, ["approval.answered"], timeout=15)
            assert ans == {"id": req["id"], "decision": "deny", "scope": "once", "by": "timeout"}, ans
            assert finish(c, sid) == b"403\n"
            assert not up.hits
            rec = audit(c, sid, "approval.answered")
            assert len(rec) == 1 and rec[0]["by"] == "timeout" and "expired" in rec[0]["reason"], rec
    finally:
        up.stop()


def test_without_ask_nothing_is_held():
    up = Upstream()
    try:
        with Daemon(tasks=tasks_for()) as d:
            ws, sub, c = setup(d)
            sid = spawn(c, ws, curls(up.port, 1), task="noask")
            assert finish(c, sid) == b"403\n"
            assert c.ok("approval.list") == [] and not audit(c, sid, "approval.requested")
            bad = d.agentctl("task", "show", "ask", check=0)
            assert b"AskTimeout" in bad.stdout, bad.stdout
    finally:
        up.stop()


def test_scopes_sandbox_task_and_revoke():
    up = Upstream()
    try:
        with Daemon(tasks=tasks_for()) as d:
            ws, sub, c = setup(d)
            # scope sandbox: the second connection of the sandbox is not asked about.
            sid = spawn(c, ws, curls(up.port, 2))
            _, req = next_event(sub, ["approval.requested"])
            d.agentctl("approve", req["id"], "--sandbox", check=0)
            assert finish(c, sid) == b"200\n200\n"
            assert len(audit(c, sid, "approval.requested")) == 1
            # ... and it ended with the sandbox: the next sandbox asks again.
            sid2 = spawn(c, ws, curls(up.port, 1))
            _, req2 = next_event(sub, ["approval.requested"])
            assert req2["sandbox"] == sid2, req2
            d.agentctl("approve", req2["id"], "--task", check=0)
            assert finish(c, sid2) == b"200\n"
            # scope task: every sandbox of the task, without asking.
            sid3 = spawn(c, ws, curls(up.port, 1))
            assert finish(c, sid3) == b"200\n"
            assert not audit(c, sid3, "approval.requested")
            assert len(up.hits) == 4

            # revoke: a pending approval is gone (denied), and so is the task's.
            sid5 = spawn(c, ws, f"export NO_PROXY= no_proxy=; curl -s -m 40 -o /dev/null http://127.0.0.1:{up.port + 1}/; sleep 30")
            _, req5 = next_event(sub, ["approval.requested"])
            assert req5["sandbox"] == sid5 and [a["id"] for a in c.ok("approval.list")] == [req5["id"]]
            d.agentctl("revoke", "--task", "ask", check=0)
            _, ans5 = next_event(sub, ["approval.answered"])
            assert ans5["id"] == req5["id"] and ans5["decision"] == "deny" and ans5["by"] == "revoke", ans5
            assert c.ok("approval.list") == []
            c.ok("sandbox.wait", {"id": sid5})
            gone = [r["fields"] for r in c.ok("audit.query") if r["type"] == "approval.expired"]
            assert any(r["scope"] == "task" and r["task"] == "ask" and r["reason"] == "revoke" for r in gone), gone
            sid6 = spawn(c, ws, curls(up.port, 1))
            _, req6 = next_event(sub, ["approval.requested"])
            assert req6["sandbox"] == sid6, req6
            d.agentctl("deny", req6["id"], check=0)
            assert finish(c, sid6) == b"403\n"

            # revoke --sandbox also withdraws what was approved for its task.
            sid7 = spawn(c, ws, curls(up.port, 1))
            _, req7 = next_event(sub, ["approval.requested"])
            d.agentctl("approve", req7["id"], "--task", check=0)
            assert finish(c, sid7) == b"200\n"
            sid8 = spawn(c, ws, curls(up.port, 1) + "echo done; sleep 30")
            deadline = time.time() + 20
            while b"done" not in c.ok("sandbox.logs", {"id": sid8})["stdout"] and time.time() < deadline:
                time.sleep(0.05)
            assert c.ok("sandbox.logs", {"id": sid8})["stdout"] == b"200\ndone\n"
            d.agentctl("revoke", "--sandbox", sid8, check=0)
            c.ok("sandbox.wait", {"id": sid8})
            sid9 = spawn(c, ws, curls(up.port, 1))
            _, req9 = next_event(sub, ["approval.requested"])
            assert req9["sandbox"] == sid9, req9
            d.agentctl("deny", req9["id"], check=0)
            assert finish(c, sid9) == b"403\n"
    finally:
        up.stop()


def test_approval_settles_the_pending_ones_it_covers():
    up = Upstream()
    try:
        with Daemon(tasks=tasks_for()) as d:
            ws, sub, c = setup(d)
            one = f"curl -s -m 40 -o /dev/null -w '%{{http_code}}\\n' http://127.0.0.1:{up.port}/"
            sid = spawn(c, ws, f"export NO_PROXY= no_proxy=; {one} & {one} & wait")
            _, req1 = next_event(sub, ["approval.requested"])
            _, req2 = next_event(sub, ["approval.requested"])
            assert len(c.ok("approval.list")) == 2
            d.agentctl("approve", req2["id"], "--sandbox", check=0)
            answers = {}
            while len(answers) < 2:
                _, a = next_event(sub, ["approval.answered"])
                answers[a["id"]] = a
            assert answers[req2["id"]]["scope"] == "sandbox", answers
            assert answers[req1["id"]]["decision"] == "approve" and answers[req1["id"]]["scope"] == "sandbox", answers
            assert finish(c, sid) == b"200\n200\n"
            rec = {r["id"]: r for r in audit(c, sid, "approval.answered")}
            assert rec[req1["id"]]["reason"] == "covered by an earlier approval", rec
    finally:
        up.stop()


def test_credentials_request_round_trip():
    """A sandbox asks for another Vault policy (credentials.request through
    $AGENTD_BROKER): approved -> a child token with it, revoked at the sandbox's
    end; denied or unanswered -> policy_denied. A sandbox cannot answer."""
    import tempfile
    from test_broker import Swtpm, Vault, enroll, wait_vault_ok, workspace
    tpm = Swtpm()
    vault = Vault(os.path.join(tempfile.mkdtemp(prefix="vaultstate-"), "state.json"))
    tasks = {"creds": "[Task]\nDescription=asks\n[Credentials]\nVaultPolicies=ci-read\n[Network]\nAskTimeout=3s\n"}
    d = Daemon(config=f"[Vault]\nAddress={vault.url}\n[TPM]\nTCTI={tpm.tcti}\n", tasks=tasks)
    try:
        d.start()
        enroll(d)
        wait_vault_ok(d)
        ws = workspace(d)
        sub = d.client()
        sub.ok("events.subscribe")
        c = d.client()
        script = ("AGENTD_SOCKET=$AGENTD_BROKER ./agentctl approvals 2>&1; "
                  "AGENTD_SOCKET=$AGENTD_BROKER ./agentctl approve ap-0000000000 2>&1; "
                  "tok=$(./agentctl token --request deploy); echo rc1=$?; echo \"TOKEN=$(echo \"$tok\" | rev)\"; "
                  "./agentctl token --request deploy >/dev/null; echo rc1b=$?; "
                  "./agentctl token --request agentd 2>&1; echo rc2=$?; "
                  "./agentctl token --request agentd 2>&1; echo rc3=$?; "
                  "./agentctl token --request root 2>&1; echo rc4=$?")
        sid = spawn(c, ws, script, task="creds")
        _, req = next_event(sub, ["approval.requested"])
        assert req["kind"] == "credentials" and req["what"] == "deploy" and req["sandbox"] == sid, req
        d.agentctl("approve", req["id"], "--sandbox", check=0)
        _, req2 = next_event(sub, ["approval.requested"])
        assert req2["what"] == "agentd", req2      # the second "deploy" was not asked about
        d.agentctl("deny", req2["id"], check=0)
        _, req3 = next_event(sub, ["approval.requested"])
        _, ans3 = next_event(sub, ["approval.answered"], timeout=15)
        while ans3["id"] != req3["id"]:
            _, ans3 = next_event(sub, ["approval.answered"], timeout=15)
        assert ans3["by"] == "timeout" and ans3["decision"] == "deny", ans3
        out = finish(c, sid).decode()
        lines = out.splitlines()
        assert lines[0].startswith("agentctl: unauthorized:") and lines[1].startswith("agentctl: unauthorized:"), out
        assert "rc1=0" in out and "rc1b=0" in out, out
        assert "rc2=1" in out and "policy_denied" in out and "denied" in out, out
        assert "rc3=1" in out and "expired" in out, out
        assert "rc4=1" in out and "invalid_params" in out, out
        token = [l for l in lines if l.startswith("TOKEN=")][0][6:][::-1]
        assert token, out
        # Child tokens with the approved policy, scoped to this sandbox, revoked at its end.
        deadline = time.time() + 10
        while True:
            mine = [t for t in vault.tokens().values() if t["path"] == "auth/token/create" and "deploy" in t["policies"]]
            if (len(mine) == 2 and all(t["revoked"] for t in mine)) or time.time() > deadline:
                break
            time.sleep(0.05)
        assert len(mine) == 2 and all(t["revoked"] and sid in t["display_name"] for t in mine), mine
        assert all(sorted(t["policies"]) in (["deploy"], ["default", "deploy"]) for t in mine), mine
        st, _ = vault.req("GET", "auth/token/lookup-self", token)
        assert st == 403, st
        answered = audit(c, sid, "approval.answered")
        assert [(r["what"], r["decision"], r["by"] == "timeout") for r in answered] == \
            [("deploy", "approve", False), ("agentd", "deny", False), ("agentd", "deny", True)], answered
        assert answered[0]["peer_exe"].endswith("/agentctl"), answered[0]
    finally:
        d.stop()
        vault.stop()
        tpm.stop()


def test_one_sandbox_cannot_fill_the_pending_table():
    """A sandbox opening many connections to hosts outside Allow= gets only its
    own share of pending approvals (the rest are refused at once): it cannot
    fill the daemon-wide table and so deny another sandbox's chance to ask.
    (No automatic response here: the refusals would freeze the hog first.)"""
    up = Upstream()
    try:
        with Daemon(tasks=tasks_for("60s"), config="[Response]\nEgressDenials=0\n") as d:
            ws, sub, c = setup(d)
            n = 70
            one = f"curl -s -m 70 -o /dev/null -w '%{{http_code}}\\n' http://127.0.0.1:{up.port}/"
            hog = spawn(c, ws, "export NO_PROXY= no_proxy=; " + f"{one} & " * n + "wait")
            # Settled: every connection of the hog is either pending or refused.
            deadline = time.time() + 30
            while True:
                mine = [a for a in c.ok("approval.list") if a["sandbox"] == hog]
                refused = c.ok("sandbox.logs", {"id": hog})["stdout"].count(b"\n")
                if len(mine) + refused == n or time.time() > deadline:
                    break
                time.sleep(0.2)
            assert len(mine) + refused == n, (len(mine), refused, c.ok("sandbox.logs", {"id": hog}))
            assert 0 < len(mine) <= 16, len(mine)
            assert len(audit(c, hog, "approval.requested")) == len(mine)

            other = spawn(c, ws, curls(up.port, 1))
            deadline = time.time() + 20
            theirs = []
            while not theirs and time.time() < deadline:
                theirs = [a for a in c.ok("approval.list") if a["sandbox"] == other]
                time.sleep(0.1)
            assert theirs, "the other sandbox could not ask: " + repr(c.ok("sandbox.logs", {"id": other}))
            d.agentctl("approve", theirs[0]["id"], check=0)
            assert finish(c, other) == b"200\n"
            c.ok("credentials.revoke", {"sandbox": hog})
    finally:
        up.stop()


if __name__ == "__main__":
    run_tests(globals())
