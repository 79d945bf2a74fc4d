#!/usr/bin/python3
"""Credential broker end to end: swtpm (through tpm2-tss) seals the AppRole
secret; agentd logs in to the Vault-compatible dev server (tests/vaultdev,
itself checked against python3-hvac); a sandbox gets its own child token over
$AGENTD_BROKER as a sealed memfd; it is revoked when the sandbox ends, and
after a crash at the next start."""
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request

from harness import AGENTCTL_INSIDE, Client, Daemon, run_tests

HERE = os.path.dirname(os.path.abspath(__file__))
SERVER = os.path.join(HERE, "..", "vaultdev", "vault_dev.py")
ROLE_ID = "agentd-role"
SECRET_ID = "s3cret-approle-id-0123456789"


def free_port_pair():
    for _ in range(50):
        s1 = socket.socket()
        s1.bind(("127.0.0.1", 0))
        p = s1.getsockname()[1]
        s1.close()
        if p >= 65000:
            continue
        try:
            s2 = socket.socket()
            s2.bind(("127.0.0.1", p + 1))
            s2.close()
            return p
        except OSError:
            continue
    raise RuntimeError("no free port pair")


class Swtpm:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="swtpm-")
        self.port = free_port_pair()
        self.proc = subprocess.Popen(
            ["swtpm", "socket", "--tpm2", "--server", f"type=tcp,port={self.port},bindaddr=127.0.0.1",
             "--ctrl", f"type=tcp,port={self.port + 1},bindaddr=127.0.0.1",
             "--flags", "not-need-init,startup-clear", "--tpmstate", f"dir={self.dir}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("swtpm did not start")

    @property
    def tcti(self):
        return f"swtpm:host=127.0.0.1,port={self.port}"

    def stop(self):
        self.proc.terminate()
        self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


class Vault:
    def __init__(self, state_file, port=0, tls=None, role_ttl="1h"):
        self.state_file = state_file
        self.tls = tls
        self.role_ttl = role_ttl
        self.start(port)

    def start(self, port=0):
        cmd = ["/usr/bin/python3", SERVER, "--port", str(port), "--print-root-token", "--role-id", ROLE_ID,
               "--secret-id", SECRET_ID, "--role-policies", "agentd,ci-read,deploy", "--role-token-ttl", self.role_ttl,
               "--grant", "agentd=auth/token/revoke-accessor", "--state-file", self.state_file,
               "--root-token", "root-token-for-tests"]
        if self.tls:
            cmd += ["--tls-cert", os.path.join(self.tls, "server.pem"), "--tls-key", os.path.join(self.tls, "server-key.pem")]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError("vault_dev exited")
            kind, _, val = line.strip().partition(" ")
            if kind == "ROOT":
                self.root = val
            if kind == "READY":
                self.port = int(val)
                break
        self.url = f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def stop(self):
        self.proc.terminate()
        self.proc.wait()

    def req(self, method, path, token=None, body=None):
        data = json.dumps(body).encode() if body is not None else None
        r = urllib.request.Request(self.url + "/v1/" + path, data=data, method=method)
        if token:
            r.add_header("X-Vault-Token", token)
        ctx = None
        if self.tls:
            import ssl
            ctx = ssl.create_default_context(cafile=os.path.join(self.tls, "ca.pem"))
        try:
            with urllib.request.urlopen(r, timeout=10, context=ctx) as resp:
                raw = resp.read()
                return resp.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as e:
            raw = e.read()
            return e.code, json.loads(raw) if raw else None

    def tokens(self):
        st, body = self.req("GET", "sys/dev/tokens", self.root)
        assert st == 200, (st, body)
        return {t["accessor"]: t for t in body["data"]["tokens"]}


TASKS = {"creds": "[Task]\nDescription=gets a token\n[Credentials]\nVaultPolicies=ci-read\n",
         "creds-short": "[Task]\nDescription=short token\n[Credentials]\nVaultPolicies=ci-read\nTTL=6s\n"}


def setup(tmp_name="b"):
    tpm = Swtpm()
    vault = Vault(os.path.join(tempfile.mkdtemp(prefix="vaultstate-"), "state.json"))
    conf = f"[Vault]\nAddress={vault.url}\n[TPM]\nTCTI={tpm.tcti}\n"
    d = Daemon(config=conf, tasks=TASKS)
    return tpm, vault, d


def wait_vault_ok(d, timeout=15):
    deadline = time.time() + timeout
    st = None
    while time.time() < deadline:
        st = d.client().ok("broker.status")
        if st["vault"] == "ok":
            return st
        time.sleep(0.1)
    raise AssertionError(f"Vault session not established: {st}\n{d.read_log()}")


def enroll(d):
    f = os.path.join(d.tmp, "secret-id")
    with open(f, "w") as fh:
        fh.write(SECRET_ID + "\n")
    p = d.agentctl("broker", "enroll", "--role-id", ROLE_ID, "--secret-id-file", f, check=0)
    os.unlink(f)
    return p


def workspace(d):
    ws = os.path.join(d.tmp, "ws")
    os.makedirs(ws, exist_ok=True)
    shutil.copy(AGENTCTL_INSIDE, os.path.join(ws, "agentctl"))
    return ws


@contextlib.contextmanager
def enrolled_daemon():
    """swtpm + the Vault dev server + agentd, enrolled and logged in; all stopped after."""
    tpm, vault, d = setup()
    try:
        d.start()
        enroll(d)
        wait_vault_ok(d)
        yield tpm, vault, d, workspace(d), d.client()
    finally:
        d.stop()
        vault.stop()
        tpm.stop()


def sandbox_accessors(d):
    """Recorded accessors of sandbox tokens (the session's own record is not one)."""
    adir = os.path.join(d.state_home, "agentd", "broker", "accessors")
    out = {}
    for f in os.listdir(adir):
        with open(os.path.join(adir, f)) as fh:
            owner = fh.read()
        if owner != "session":
            out[f] = owner
    return out


def grep_tree(root, needle):
    hits = []
    for dp, dn, fn in os.walk(root):
        for f in fn:
            p = os.path.join(dp, f)
            try:
                with open(p, "rb") as fh:
                    if needle in fh.read():
                        hits.append(p)
            except OSError:
                pass
    return hits


def test_enroll_spawn_token_revoke():
    tpm, vault, d = setup()
    try:
        d.start()
        st = d.client().ok("agentd.status")
        assert st["vault"].startswith("unavailable: not enrolled"), st
        deadline = time.time() + 10
        while d.client().ok("broker.status")["tpm"] == "checking" and time.time() < deadline:
            time.sleep(0.05)
        assert d.client().ok("broker.status")["tpm"] == "ok", d.client().ok("broker.status")
        p = enroll(d)
        assert b"sealed_with: tpm" in p.stdout, p
        # Only the sealed form is stored.
        assert not grep_tree(d.state_home, SECRET_ID.encode()), "secret_id stored in clear"
        st = wait_vault_ok(d)
        assert st["enrolled"] is True and st["tokens_live"] == 0
        ws = workspace(d)
        script = ("tok=$(./agentctl token) || exit 9; echo \"$tok\" > /tmp/t; "
                  "if env | grep -q \"$tok\"; then echo IN-ENV; fi; "
                  "for f in /proc/[0-9]*/environ; do grep -q \"$tok\" $f 2>/dev/null && echo IN-PROC-ENV; done; "
                  "echo \"TOKEN=$(echo \"$tok\" | rev)\"; ./agentctl --json token >/dev/null; echo got-json=$?")
        p = d.agentctl("spawn", "--task", "creds", "--", "/bin/sh", "-c", script, cwd=ws)
        assert p.returncode == 0, (p, d.read_log())
        out = p.stdout.decode()
        assert "IN-ENV" not in out and "IN-PROC-ENV" not in out and "got-json=0" in out, out
        token = [l for l in out.splitlines() if l.startswith("TOKEN=")][0][6:][::-1]  # printed reversed: the log must not hold it
        assert token, out
        # The token is a child of the session with exactly the task's policies. It is revoked
        # when the sandbox ends; the revocation request runs just after the exit is reported.
        deadline = time.time() + 10
        while True:
            toks = vault.tokens()
            mine = [t for t in toks.values() if t.get("display_name", "").startswith("token-agentd-")]
            assert len(mine) == 1, toks
            rec = mine[0]
            if rec["revoked"] or time.time() > deadline:
                break
            time.sleep(0.05)
        assert rec["revoked"] is True, rec  # the sandbox ended: revoked
        assert sorted(rec["policies"]) == ["ci-read"] or sorted(rec["policies"]) == ["ci-read", "default"], rec
        st_, body = vault.req("GET", "auth/token/lookup-self", token)
        assert st_ == 403, (st_, body)
        # Nowhere else: not in the state dir, not in the daemon's log.
        assert not grep_tree(d.state_home, token.encode()), grep_tree(d.state_home, token.encode())
        assert token not in d.read_log()
        assert rec["accessor"] in d.read_log()
        deadline = time.time() + 10
        while sandbox_accessors(d) and time.time() < deadline:
            time.sleep(0.05)
        assert not sandbox_accessors(d), sandbox_accessors(d)
        # Outside a sandbox, credentials.get is refused; inside a task without credentials there is no broker.
        err, _ = d.client().call("credentials.get")
        assert err["code"] == "unauthorized", err
        p = d.agentctl("spawn", "--", "./agentctl", "token", cwd=ws)
        assert p.returncode == 3 and b"AGENTD_BROKER is not set" in p.stderr, p
    finally:
        d.stop()
        vault.stop()
        tpm.stop()


def test_token_works_ttl_and_policy_check():
    with enrolled_daemon() as (tpm, vault, d, ws, c):
        sid = c.ok("sandbox.spawn", {"task": "creds", "argv": ["/bin/sh", "-c", "./agentctl --json token; ./agentctl token; sleep 30"],
                                     "workspace": ws})["id"]
        deadline = time.time() + 10
        out = b""
        while time.time() < deadline and out.count(b"\n") < 2:
            out = c.ok("sandbox.logs", {"id": sid})["stdout"]
            time.sleep(0.05)
        meta = json.loads(out.splitlines()[0])
        token = out.splitlines()[1].decode()
        assert 890 <= meta["ttl"] <= 900, meta
        st_, body = vault.req("GET", "auth/token/lookup-self", token)
        assert st_ == 200 and body["data"]["policies"] in (["ci-read"], ["ci-read", "default"], ["default", "ci-read"]), body
        assert 0 < body["data"]["ttl"] <= 900 and body["data"]["meta"]["agentd_sandbox"] == sid, body
        assert c.ok("broker.status")["tokens_live"] == 1
        c.ok("sandbox.kill", {"id": sid, "signal": "KILL"})
        c.ok("sandbox.wait", {"id": sid})
        deadline = time.time() + 10
        while time.time() < deadline and vault.req("GET", "auth/token/lookup-self", token)[0] != 403:
            time.sleep(0.1)
        assert vault.req("GET", "auth/token/lookup-self", token)[0] == 403
        assert c.ok("broker.status")["tokens_live"] == 0


def test_spawn_waits_for_the_vault_login():
    """A credentialed spawn right after enrolment or a restart waits for the Vault login (at most
    BROKER_LOGIN_WAIT_MS, 10 s) instead of failing with 'backend_unavailable: logging in'."""
    tpm, vault, d = setup()
    try:
        d.start()
        st, _ = vault.req("POST", "sys/dev/latency", vault.root, {"ms": 1500})
        assert st in (200, 204), st
        assert enroll(d).returncode == 0
        st_ = d.client().ok("broker.status")["vault"]
        assert st_.startswith("unavailable: logging in"), st_  # (waiting for the TPM) while the secret is unsealed
        ws = workspace(d)
        p = d.agentctl("spawn", "--task", "creds", "--", "./agentctl", "token", cwd=ws, timeout=60)
        assert p.returncode == 0 and p.stdout.strip(), (p, d.read_log())
        # After a restart, a login slower than the deadline: the spawn fails, saying so.
        d.stop()
        vault.req("POST", "sys/dev/latency", vault.root, {"ms": 14000})
        d.start()
        t0 = time.time()
        # The answer comes after the 10 s login wait: a client that waits longer than that.
        err, _ = Client(d.socket, timeout=40).call("sandbox.spawn", {"task": "creds", "argv": ["true"], "workspace": ws})
        waited = time.time() - t0
        assert err["code"] == "backend_unavailable" and "did not finish within 10 s" in err["message"], err
        assert waited >= 9, waited
        # A spawn still waiting when agentd stops is answered (and nothing leaks).
        c = d.client()
        msgid = c.request("sandbox.spawn", {"task": "creds", "argv": ["true"], "workspace": ws})
        time.sleep(0.3)
        d.stop()
        err, _ = c.response(msgid)
        assert err["code"] == "backend_unavailable" and "stopping" in err["message"], err
        d.start()
        vault.req("POST", "sys/dev/latency", vault.root, {"ms": 0})
        wait_vault_ok(d, timeout=30)
        d.agentctl("spawn", "--task", "creds", "--", "true", cwd=ws, check=0)
    finally:
        d.stop()
        vault.stop()
        tpm.stop()


def test_spawn_keeps_the_task_it_was_asked_under():
    """A credentialed spawn waits for its token; a task file edited meanwhile does not change what
    it runs: the sandbox gets the task's policy as it was when the request came."""
    def set_mark(d, c, value):
        with open(os.path.join(d.config_home, "agentd", "tasks", "creds.task"), "w") as f:
            f.write(TASKS["creds"].replace("[Credentials]", f"Environment=MARK={value}\n[Credentials]"))
        deadline = time.time() + 10
        while time.time() < deadline:
            if f"MARK={value}" in json.dumps(c.ok("task.show", {"name": "creds"})):
                return
            time.sleep(0.05)
        raise AssertionError(c.ok("task.show", {"name": "creds"}))

    with enrolled_daemon() as (tpm, vault, d, ws, c):
        set_mark(d, c, "before")
        st, _ = vault.req("POST", "sys/dev/latency", vault.root, {"ms": 2000})
        assert st in (200, 204), st
        spawner = d.client()
        msgid = spawner.request("sandbox.spawn", {"task": "creds", "argv": ["/bin/sh", "-c", "echo $MARK"], "workspace": ws})
        time.sleep(0.3)
        set_mark(d, c, "after")  # while the token is being issued
        err, res = spawner.response(msgid)
        vault.req("POST", "sys/dev/latency", vault.root, {"ms": 0})
        assert err is None, err
        w = c.ok("sandbox.wait", {"id": res["id"]})
        assert w["exit_code"] == 0, w
        assert c.ok("sandbox.logs", {"id": res["id"]})["stdout"] == b"before\n"


def test_vault_down_and_back():
    tpm, vault, d = setup()
    try:
        d.start()
        enroll(d)
        wait_vault_ok(d)
        ws = workspace(d)
        port = vault.port
        vault.stop()
        c = d.client()
        err, _ = c.call("sandbox.spawn", {"task": "creds", "argv": ["true"], "workspace": ws})
        assert err["code"] == "backend_unavailable" and "Vault" in err["message"], err
        # Tasks without credentials are unaffected.
        d.agentctl("spawn", "--", "/bin/true", cwd=ws, check=0)
        vault.start(port)
        # The broker notices (renewal or retry) and recovers; spawning works again.
        deadline = time.time() + 60
        ok = False
        while time.time() < deadline:
            err, res = c.call("sandbox.spawn", {"task": "creds", "argv": ["./agentctl", "token"], "workspace": ws})
            if err is None:
                assert c.ok("sandbox.wait", {"id": res["id"]})["exit_code"] == 0
                ok = True
                break
            time.sleep(0.5)
        assert ok, (err, d.read_log())
    finally:
        d.stop()
        vault.stop()
        tpm.stop()


def test_restart_unseals_and_other_tpm_cannot():
    tpm, vault, d = setup()
    other = Swtpm()
    try:
        d.start()
        enroll(d)
        wait_vault_ok(d)
        d.stop()
        d.start()
        wait_vault_ok(d)
        d.stop()
        conf = os.path.join(d.config_home, "agentd", "agentd.conf")
        with open(conf, "w") as f:
            f.write(f"[Vault]\nAddress={vault.url}\n[TPM]\nTCTI={other.tcti}\n")
        d.start()
        deadline = time.time() + 10
        st = None
        while time.time() < deadline:
            st = d.client().ok("broker.status")
            if "unseal" in st["vault"]:
                break
            time.sleep(0.1)
        assert "cannot unseal" in st["vault"] and st["vault"].startswith("unavailable"), st
        err, _ = d.client().call("sandbox.spawn", {"task": "creds", "argv": ["true"], "workspace": workspace(d)})
        assert err["code"] == "backend_unavailable", err
    finally:
        d.stop()
        vault.stop()
        tpm.stop()
        other.stop()


def test_crash_with_live_token_revoked_at_next_start():
    with enrolled_daemon() as (tpm, vault, d, ws, c):
        sid = c.ok("sandbox.spawn", {"task": "creds", "argv": ["/bin/sh", "-c", "./agentctl token; sleep 60"], "workspace": ws})["id"]
        deadline = time.time() + 10
        token = b""
        while time.time() < deadline and not token.endswith(b"\n"):
            token = c.ok("sandbox.logs", {"id": sid})["stdout"]
            time.sleep(0.05)
        token = token.decode().strip()
        assert vault.req("GET", "auth/token/lookup-self", token)[0] == 200
        d.proc.send_signal(signal.SIGKILL)
        d.proc.wait()
        d.log.close()
        assert vault.req("GET", "auth/token/lookup-self", token)[0] == 200, "still live right after the crash"
        assert sandbox_accessors(d)
        d.start()
        deadline = time.time() + 15
        while time.time() < deadline and vault.req("GET", "auth/token/lookup-self", token)[0] != 403:
            time.sleep(0.1)
        assert vault.req("GET", "auth/token/lookup-self", token)[0] == 403, d.read_log()
        deadline = time.time() + 5
        while time.time() < deadline and sandbox_accessors(d):
            time.sleep(0.1)
        assert not sandbox_accessors(d)
        assert d.client().ok("broker.status")["revocations_pending"] == 0


def test_no_tpm_refused_unless_software_allowed():
    vault = Vault(os.path.join(tempfile.mkdtemp(prefix="vaultstate-"), "state.json"))
    try:
        dead = free_port_pair()
        d = Daemon(config=f"[Vault]\nAddress={vault.url}\n[TPM]\nTCTI=swtpm:host=127.0.0.1,port={dead}\n", tasks=TASKS)
        with d:
            p = enroll.__wrapped__(d) if hasattr(enroll, "__wrapped__") else None
            f = os.path.join(d.tmp, "sid")
            with open(f, "w") as fh:
                fh.write(SECRET_ID)
            p = d.agentctl("broker", "enroll", "--role-id", ROLE_ID, "--secret-id-file", f)
            assert p.returncode == 1 and b"backend_unavailable" in p.stderr and b"AllowSoftwareKey" in p.stderr, p
            st = d.client().ok("broker.status")
            assert st["tpm"].startswith("unavailable"), st
        d = Daemon(config=f"[Vault]\nAddress={vault.url}\n[TPM]\nTCTI=swtpm:host=127.0.0.1,port={dead}\nAllowSoftwareKey=yes\n",
                   tasks=TASKS)
        with d:
            p = enroll(d)
            assert b"sealed_with: software" in p.stdout, p
            st = wait_vault_ok(d)
            assert st["tpm"].startswith("software"), st
            assert d.client().ok("agentd.status")["tpm"].startswith("software")
            ws = workspace(d)
            d.agentctl("spawn", "--task", "creds", "--", "./agentctl", "token", cwd=ws, check=0)
    finally:
        vault.stop()


def test_tls_verified_with_ca_and_refused_without():
    certs = tempfile.mkdtemp(prefix="vaultcerts-")
    subprocess.run(["bash", os.path.join(HERE, "..", "vaultdev", "make_cert.sh"), certs], check=True, capture_output=True)
    tpm = Swtpm()
    vault = Vault(os.path.join(tempfile.mkdtemp(prefix="vaultstate-"), "state.json"), tls=certs)
    try:
        # Without the CA: TLS verification fails and says so; nothing falls back to plain text.
        d = Daemon(config=f"[Vault]\nAddress={vault.url}\n[TPM]\nTCTI={tpm.tcti}\n", tasks=TASKS)
        with d:
            enroll(d)
            deadline = time.time() + 10
            st = None
            while time.time() < deadline:
                st = d.client().ok("broker.status")
                if st["vault"].startswith("unavailable") and "logging in" not in st["vault"]:
                    break
                time.sleep(0.1)
            assert st["vault"].startswith("unavailable") and ("certificate" in st["vault"] or "SSL" in st["vault"]), st
        d = Daemon(config=f"[Vault]\nAddress={vault.url}\nCACertificate={certs}/ca.pem\n[TPM]\nTCTI={tpm.tcti}\n", tasks=TASKS)
        with d:
            enroll(d)
            wait_vault_ok(d)
            d.agentctl("spawn", "--task", "creds", "--", "./agentctl", "token", cwd=workspace(d), check=0)
    finally:
        vault.stop()
        tpm.stop()


def test_session_renewed_and_tokens_reissued():
    tpm = Swtpm()
    vault = Vault(os.path.join(tempfile.mkdtemp(prefix="vaultstate-"), "state.json"), role_ttl="3")
    try:
        d = Daemon(config=f"[Vault]\nAddress={vault.url}\n[TPM]\nTCTI={tpm.tcti}\n", tasks=TASKS)
        with d:
            enroll(d)
            st0 = wait_vault_ok(d)
            ws = workspace(d)
            c = d.client()
            # A 6 s token re-issued at about 4 s while the sandbox lives.
            sid = c.ok("sandbox.spawn", {"task": "creds-short", "argv": ["/bin/sh", "-c",
                       "./agentctl token | rev; sleep 5; ./agentctl token | rev"], "workspace": ws})["id"]
            res = c.ok("sandbox.wait", {"id": sid})
            assert res["exit_code"] == 0, (res, c.ok("sandbox.logs", {"id": sid}))
            t1, t2 = [l[::-1] for l in c.ok("sandbox.logs", {"id": sid})["stdout"].decode().split()]
            assert t1 != t2, "the token was not re-issued"
            # The session (3 s TTL) was renewed meanwhile, not lost.
            st = c.ok("broker.status")
            assert st["vault"] == "ok" and st["session_expires_at"] > st0["session_expires_at"], (st0, st)
            st_, body = vault.req("GET", "sys/dev/requests", vault.root)
            paths = [r["path"] for r in body["data"]["requests"]]
            assert any("renew-self" in p for p in paths), paths[-20:]
            deadline = time.time() + 10
            while time.time() < deadline and (vault.req("GET", "auth/token/lookup-self", t1)[0] != 403 or
                                              vault.req("GET", "auth/token/lookup-self", t2)[0] != 403):
                time.sleep(0.1)
            assert vault.req("GET", "auth/token/lookup-self", t2)[0] == 403
    finally:
        vault.stop()
        tpm.stop()


def test_vault_namespace_is_sent():
    tpm = Swtpm()
    vault = Vault(os.path.join(tempfile.mkdtemp(prefix="vaultstate-"), "state.json"))
    try:
        d = Daemon(config=f"[Vault]\nAddress={vault.url}\nNamespace=team-a\n[TPM]\nTCTI={tpm.tcti}\n", tasks=TASKS)
        with d:
            enroll(d)
            wait_vault_ok(d)
            d.agentctl("spawn", "--task", "creds", "--", "./agentctl", "token", cwd=workspace(d), check=0)
            toks = vault.tokens()
            mine = [t for t in toks.values() if t.get("display_name", "").startswith("token-agentd-")]
            sessions = [t for t in toks.values() if "agentd" in t.get("policies", []) and not t.get("display_name", "").startswith("token-agentd-")]
            assert mine and all(t["namespace"] == "team-a" for t in mine), mine
            assert sessions and all(t["namespace"] == "team-a" for t in sessions), sessions
    finally:
        vault.stop()
        tpm.stop()


if __name__ == "__main__":
    run_tests(globals())
