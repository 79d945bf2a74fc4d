#!/usr/bin/python3
"""The credential broker under faults: a proxy (faultproxy.py) between agentd
and the Vault dev server injects delays, 500s, garbage and hangs per path; the
swtpm is stopped (SIGSTOP: it hangs) or killed (SIGKILL: it is gone). Each test
names the fault and what agentd must do (see README "Timeouts")."""
import contextlib
import os
import signal
import tempfile
import time

from faultproxy import FaultProxy
from harness import Daemon, run_tests
from test_broker import TASKS, Swtpm, Vault, enroll, wait_vault_ok, workspace

LOOP_TOKEN = "while true; do ./agentctl token | rev; echo; sleep 0.3; done"


@contextlib.contextmanager
def faulty(role_ttl="1h", start=True, enrolled=True):
    """swtpm + Vault dev server behind the fault proxy + agentd (through the proxy)."""
    tpm = Swtpm()
    vault = Vault(os.path.join(tempfile.mkdtemp(prefix="vaultstate-"), "state.json"), role_ttl=role_ttl)
    proxy = FaultProxy(vault.url)
    d = Daemon(config=f"[Vault]\nAddress={proxy.url}\n[TPM]\nTCTI={tpm.tcti}\n", tasks=TASKS)
    try:
        if start:
            d.start()
            if enrolled:
                enroll(d)
                wait_vault_ok(d)
        yield tpm, vault, proxy, d
    finally:
        with contextlib.suppress(Exception):
            tpm.proc.send_signal(signal.SIGCONT)
        proxy.clear()
        d.stop()
        proxy.stop()
        vault.stop()
        tpm.stop()


def sessions(vault):
    return [t for t in vault.tokens().values() if t.get("path", "").startswith("auth/approle/login")]


def children(vault):
    return [t for t in vault.tokens().values() if t.get("display_name", "").startswith("token-agentd-")]


def tokens_printed(c, sid):
    out = c.ok("sandbox.logs", {"id": sid})["stdout"].decode()
    # Complete lines only: the log may be read while a line is half written.
    return [l.strip()[::-1] for l in out.split("\n")[:-1] if l.strip()]


def lookup(vault, token):
    return vault.req("GET", "auth/token/lookup-self", token)[0]


def wait_for(cond, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def renewal_fault_keeps_tokens(**fault):
    with faulty(role_ttl="12") as (tpm, vault, proxy, d):
        c = d.client()
        ws = workspace(d)
        sid = c.ok("sandbox.spawn", {"task": "creds", "argv": ["/bin/sh", "-c", LOOP_TOKEN], "workspace": ws})["id"]
        t1 = wait_for(lambda: tokens_printed(c, sid), 10, "the first token")[0]
        assert lookup(vault, t1) == 200
        first_session = sessions(vault)[0]["accessor"]
        first_expiry = c.ok("broker.status")["session_expires_at"] / 1000
        proxy.rule("auth/token/renew-self", **fault)
        # Renewal at 2/3 of 12 s fails; agentd logs in again.
        wait_for(lambda: proxy.count("auth/approle/login") >= 2 and len(sessions(vault)) >= 2, 20, "a re-login")
        proxy.clear()
        # The re-login did not revoke the old session: the sandbox's token still works.
        old = vault.tokens()[first_session]
        assert not (old["revoked"] and old["revoked_reason"] in ("revoke-accessor", "revoke-self", "revoke")), old
        assert lookup(vault, t1) == 200, (vault.tokens(), d.read_log())
        # The sandbox gets a token made under the new session, and every token it is
        # handed from now on works (none is known to be dead).
        t_new = wait_for(lambda: [t for t in tokens_printed(c, sid) if t != t1], 10, "a re-issued token")[0]
        assert lookup(vault, t_new) == 200, (t_new[:6], tokens_printed(c, sid)[-3:] and "...", children(vault), d.read_log())
        # Past the old session's expiry: its children die with it, and the sandbox is
        # never handed one of them.
        time.sleep(max(0, first_expiry - time.time()) + 1.5)
        n = len(tokens_printed(c, sid))
        time.sleep(1.5)
        for t in tokens_printed(c, sid)[n:]:
            assert lookup(vault, t) == 200, ("handed a dead token", d.read_log())
        assert c.ok("broker.status")["vault"] == "ok"
        c.ok("sandbox.kill", {"id": sid, "signal": "KILL"})


def test_renewal_500_relogin_keeps_sandbox_tokens():
    renewal_fault_keeps_tokens(status=500)


def test_renewal_garbage_relogin_keeps_sandbox_tokens():
    renewal_fault_keeps_tokens(garbage=True)


def test_session_revoked_at_vault_dead_token_never_handed_out():
    with faulty(role_ttl="6") as (tpm, vault, proxy, d):
        c = d.client()
        sid = c.ok("sandbox.spawn", {"task": "creds", "argv": ["/bin/sh", "-c", LOOP_TOKEN], "workspace": workspace(d)})["id"]
        t1 = wait_for(lambda: tokens_printed(c, sid), 10, "the first token")[0]
        # Someone revokes agentd's session at Vault: every child (t1) goes with it.
        session = [s for s in sessions(vault) if s["valid"]][0]["accessor"]
        st, _ = vault.req("POST", "auth/token/revoke-accessor", vault.root, {"accessor": session})
        assert st == 204 and lookup(vault, t1) == 403, st
        # The next renewal is refused (403): agentd knows t1 is dead, stops handing it
        # out, logs in and issues a new token.
        t2 = wait_for(lambda: [t for t in tokens_printed(c, sid) if t != t1], 15, "a token under the new session")[0]
        assert lookup(vault, t2) == 200
        n = len(tokens_printed(c, sid))
        time.sleep(1)
        assert t1 not in tokens_printed(c, sid)[n:], "a dead token was handed out"
        c.ok("sandbox.kill", {"id": sid, "signal": "KILL"})


def test_slow_renewal_status_follows_expiry_and_relogin_first():
    with faulty(role_ttl="9") as (tpm, vault, proxy, d):
        c = d.client()
        st0 = c.ok("broker.status")
        # Vault never sees the renewal: 30 s pass before the proxy forwards it.
        proxy.rule("auth/token/renew-self", delay=30)
        end = st0["session_expires_at"] / 1000 + 3
        while time.time() < end:
            st = c.ok("broker.status")
            if st["vault"] == "ok":
                assert st["session_expires_at"] > time.time() * 1000 - 500, ("status ok with an expired session", st)
            time.sleep(0.3)
        # The first session has expired at Vault; agentd logged in before that.
        err, res = c.call("sandbox.spawn", {"task": "creds", "argv": ["/bin/sh", "-c", "./agentctl token | rev; sleep 30"],
                                            "workspace": workspace(d)})
        assert err is None, (err, d.read_log())
        token = wait_for(lambda: tokens_printed(c, res["id"]), 10, "the sandbox's token")[0]
        assert lookup(vault, token) == 200, (vault.tokens(), d.read_log())
        c.ok("sandbox.kill", {"id": res["id"], "signal": "KILL"})


def test_slow_token_create_bounded_spawn_and_no_leak():
    with faulty() as (tpm, vault, proxy, d):
        c = d.client()
        ws = workspace(d)
        # Vault makes the token at once; its answer reaches agentd after 20 s.
        proxy.rule("auth/token/create", delay_after=20)
        t0 = time.time()
        c.sock.settimeout(90)
        err, _ = c.call("sandbox.spawn", {"task": "creds", "argv": ["true"], "workspace": ws})
        waited = time.time() - t0
        assert err and err["code"] == "backend_unavailable" and "did not answer within 10 s" in err["message"], err
        assert waited < 18, waited  # the documented 10 s spawn deadline, not curl's retries
        # Sent once (a retry would make a second token), and what it made is revoked once the answer arrives.
        wait_for(lambda: all(t["revoked"] for t in children(vault)) and len(children(vault)) >= 1, 40,
                 f"the late token to be revoked: {children(vault)}")
        assert proxy.count("auth/token/create") == 1, proxy.seen
        assert len(children(vault)) == 1, children(vault)
        proxy.clear()
        p = d.agentctl("spawn", "--task", "creds", "--", "./agentctl", "token", cwd=ws)
        assert p.returncode == 0, (p, d.read_log())


def test_garbage_create_answer_orphan_dies_with_old_session():
    with faulty(role_ttl="8") as (tpm, vault, proxy, d):
        c = d.client()
        ws = workspace(d)
        # Vault makes the token; agentd hears garbage and cannot name it.
        proxy.rule("auth/token/create", count=1, garbage=True)
        err, _ = c.call("sandbox.spawn", {"task": "creds", "argv": ["true"], "workspace": ws})
        assert err and err["code"] == "backend_unavailable", err
        orphan = [t for t in children(vault) if t["valid"]]
        assert len(orphan) == 1, children(vault)
        # agentd logs in again and lets the session holding the orphan expire (not renewed).
        wait_for(lambda: not vault.tokens()[orphan[0]["accessor"]]["valid"], 20,
                 f"the orphan to die with its session: {vault.tokens()[orphan[0]['accessor']]}")
        assert c.ok("broker.status")["vault"] == "ok"
        p = d.agentctl("spawn", "--task", "creds", "--", "./agentctl", "token", cwd=ws)
        assert p.returncode == 0, (p, d.read_log())


def test_slow_login_makes_one_session():
    with faulty(enrolled=False) as (tpm, vault, proxy, d):
        # Every login is answered 20 s late (Vault made the session at once).
        proxy.rule("auth/approle/login", delay_after=20)
        enroll(d)
        wait_vault_ok(d, timeout=40)
        proxy.clear()
        time.sleep(1)
        live = [s for s in sessions(vault) if s["valid"]]
        assert proxy.count("auth/approle/login") == 1 and len(live) == 1, (proxy.seen, sessions(vault))


def test_tpm_stopped_at_start_serves_and_recovers():
    with faulty() as (tpm, vault, proxy, d):
        d.stop()
        tpm.proc.send_signal(signal.SIGSTOP)
        d.start()  # answers ping: the TPM is not touched on the loop
        c = d.client()
        st = c.ok("agentd.status")
        assert not st["audit"].startswith("ok"), st
        st = wait_for(lambda: (lambda s: s if s["tpm"].startswith("unavailable") else None)(c.ok("agentd.status")), 30,
                      "status to say the TPM does not answer")
        assert "has not answered" in st["tpm"] and "has not answered" in st["audit"], st
        err, _ = c.call("sandbox.spawn", {"task": "creds", "argv": ["true"], "workspace": workspace(d)})
        assert err["code"] == "backend_unavailable" and not err["message"].endswith(": ok"), err
        assert "TPM" in err["message"], err
        # It stops on SIGTERM (exit 0) while a TPM call hangs, and starts again.
        d.stop()
        d.start()
        c = d.client()
        tpm.proc.send_signal(signal.SIGCONT)
        # Recovery without a restart: the audit log turns on, the broker logs in.
        wait_for(lambda: c.ok("agentd.status")["audit"].startswith("ok (key sealed: tpm)"), 30, "the audit log to turn on")
        wait_vault_ok(d, timeout=30)
        assert c.ok("agentd.status")["tpm"] == "ok"
        v = c.ok("audit.verify")
        assert v["ok"], v


def test_tpm_hung_then_killed_mid_run_status_tells():
    with faulty() as (tpm, vault, proxy, d):
        c = d.client()
        assert c.ok("agentd.status")["tpm"] == "ok"
        tpm.proc.send_signal(signal.SIGSTOP)
        st = wait_for(lambda: (lambda s: s if s["tpm"] != "ok" else None)(c.ok("agentd.status")), 40,
                      "status to notice the hung TPM")
        assert st["tpm"].startswith("unavailable: the TPM has not answered"), st
        # Vault credentials keep working meanwhile (the session needs no TPM).
        p = d.agentctl("spawn", "--task", "creds", "--", "./agentctl", "token", cwd=workspace(d))
        assert p.returncode == 0, (p, d.read_log())
        tpm.proc.send_signal(signal.SIGCONT)
        wait_for(lambda: c.ok("agentd.status")["tpm"] == "ok", 30, "the TPM to be ok again")
        tpm.proc.send_signal(signal.SIGKILL)
        tpm.proc.wait()
        st = wait_for(lambda: (lambda s: s if s["tpm"] != "ok" else None)(c.ok("agentd.status")), 30,
                      "status to notice the TPM is gone")
        assert st["tpm"].startswith("unavailable"), st


if __name__ == "__main__":
    run_tests(globals())
