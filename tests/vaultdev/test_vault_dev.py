#!/usr/bin/python3
"""Hold vault_dev.py to Vault's documented wire behaviour, using Debian's
python3-hvac (0.11.2) as the reference client.  Run: /usr/bin/python3 test_vault_dev.py"""
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
import warnings

import hvac
import hvac.exceptions as hx
import requests

HERE = os.path.dirname(os.path.abspath(__file__))
SERVER = os.path.join(HERE, "vault_dev.py")
ROLE_ID, SECRET_ID = "role-1234", "secret-5678"


class Vault:
    """vault_dev.py in a subprocess on a free port."""

    def __init__(self, *extra, tls=None, state_file=None, root_token=None):
        self.tls = tls
        cmd = ["/usr/bin/python3", SERVER, "--port", "0", "--print-root-token",
               "--role-id", ROLE_ID, "--secret-id", SECRET_ID,
               "--role-policies", "agentd,kv-read", "--role-token-ttl", "1h", *extra]
        if tls:
            cmd += ["--tls-cert", tls + "/server.pem", "--tls-key", tls + "/server-key.pem"]
        if state_file:
            cmd += ["--state-file", state_file]
        if root_token:
            cmd += ["--root-token", root_token]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        self.root = self.unseal_key = None
        deadline = time.time() + 10
        while time.time() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError("vault_dev exited before READY")
            kind, _, val = line.strip().partition(" ")
            if kind == "ROOT":
                self.root = val
            elif kind == "UNSEAL":
                self.unseal_key = val
            elif kind == "READY":
                self.port = int(val)
                break
        else:
            raise RuntimeError("no READY line")
        scheme = "https" if tls else "http"
        self.url = f"{scheme}://127.0.0.1:{self.port}"
        self.verify = (tls + "/ca.pem") if tls else True

    def client(self, token=None, namespace=None):
        return hvac.Client(url=self.url, token=token, verify=self.verify, namespace=namespace)

    def rootc(self, namespace=None):
        return self.client(self.root, namespace)

    def raw(self, method, path, token=None, body=None, headers=None, **kw):
        h = dict(headers or {})
        if token:
            h["X-Vault-Token"] = token
        return requests.request(method, self.url + "/v1/" + path, headers=h,
                                data=body if isinstance(body, (str, bytes)) else None,
                                json=body if isinstance(body, dict) else None,
                                verify=self.verify, timeout=10, **kw)

    def dev_tokens(self):
        r = self.raw("GET", "sys/dev/tokens", self.root)
        assert r.status_code == 200, r.text
        return {t["accessor"]: t for t in r.json()["data"]["tokens"]}

    def login(self, namespace=None):
        c = self.client(namespace=namespace)
        resp = c.auth.approle.login(ROLE_ID, SECRET_ID)
        return c, resp

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self.proc.stdout.close()

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.stop()


def raises(exc, fn, *a, **kw):
    try:
        fn(*a, **kw)
    except exc as e:
        return e
    raise AssertionError(f"{fn.__name__} did not raise {exc.__name__}")


def _certs():
    d = tempfile.mkdtemp(prefix="vaultdev-tls-")
    subprocess.run(["bash", os.path.join(HERE, "make_cert.sh"), d], check=True,
                   stdout=subprocess.DEVNULL)
    return d


# ------------------------------------------------------------------ tests ----

def test_health_statuses():
    with Vault() as v:
        c = v.rootc()
        h = c.sys.read_health_status(method="GET")
        assert h["initialized"] is True and h["sealed"] is False and h["standby"] is False, h
        assert v.raw("HEAD", "sys/health").status_code == 200
        # Sealed: 503 with a body, and every other endpoint answers "Vault is sealed".
        c.sys.seal()
        r = v.raw("GET", "sys/health")
        assert r.status_code == 503 and r.json()["sealed"] is True, r.text
        assert r.headers["Content-Type"] == "application/json"
        assert v.raw("GET", "sys/health?sealedcode=200").status_code == 200
        assert c.sys.is_sealed() is True
        e = raises(hx.VaultDown, c.auth.token.lookup_self)
        assert e.errors == ["Vault is sealed"], e.errors
        r = v.raw("GET", "auth/token/lookup-self", v.root)
        assert r.status_code == 503 and r.json() == {"errors": ["Vault is sealed"]}, r.text
        raises(hx.InvalidRequest, c.sys.submit_unseal_key, "AAAA")
        st = c.sys.submit_unseal_key(v.unseal_key)
        assert st["sealed"] is False, st
        assert c.auth.token.lookup_self()["data"]["policies"] == ["root"]
        # Standby / uninitialised via the dev switch and the query codes.
        assert v.raw("PUT", "sys/dev/health", v.root, {"standby": True}).status_code == 204
        assert v.raw("GET", "sys/health").status_code == 429
        assert v.raw("GET", "sys/health?standbyok=true").status_code == 200
        assert v.raw("GET", "sys/health?standbyok").status_code == 200
        assert v.raw("GET", "sys/health?standbycode=299").status_code == 299
        v.raw("PUT", "sys/dev/health", v.root, {"standby": False, "initialized": False})
        r = v.raw("GET", "sys/health")
        assert r.status_code == 501 and r.json()["initialized"] is False, r.text
    with Vault("--standby") as v:
        assert v.raw("GET", "sys/health").status_code == 429
    with Vault("--uninitialized") as v:
        assert v.raw("GET", "sys/health").status_code == 501
        assert v.raw("GET", "auth/token/lookup-self", v.root).status_code == 503


def test_seal_needs_root():
    with Vault() as v:
        c, _ = v.login()
        raises(hx.Forbidden, c.sys.seal)
        assert v.client().sys.read_health_status(method="GET")["sealed"] is False


def test_approle_login():
    with Vault() as v:
        c, resp = v.login()
        a = resp["auth"]
        for k in ("request_id", "lease_id", "renewable", "lease_duration", "data",
                  "wrap_info", "warnings", "auth"):
            assert k in resp, k
        assert a["policies"] == ["agentd", "default", "kv-read"], a
        assert a["token_policies"] == a["policies"]
        assert a["lease_duration"] == 3600 and a["renewable"] is True and a["orphan"] is True
        assert a["token_type"] == "service" and a["entity_id"] == "" and a["num_uses"] == 0
        assert a["metadata"] == {"role_name": "agentd"}
        assert c.token == a["client_token"] and c.is_authenticated()
        e = raises(hx.InvalidRequest, v.client().auth.approle.login, ROLE_ID, "wrong")
        assert e.errors == ["invalid role or secret ID"], e.errors
        raises(hx.InvalidRequest, v.client().auth.approle.login, "wrong", SECRET_ID)
        # The legacy 0.x API name still works against us too.
        with warnings.catch_warnings(record=True):   # hvac forces "always"
            assert v.client().auth_approle(ROLE_ID, SECRET_ID)["auth"]["client_token"]
    with Vault("--approle-path", "agentd-approle") as v:
        c = v.client()
        c.auth.approle.login(ROLE_ID, SECRET_ID, mount_point="agentd-approle")
        assert c.is_authenticated()
        raises(hx.Forbidden, v.client().auth.approle.login, ROLE_ID, SECRET_ID)


def test_token_create_subset_and_envelope():
    with Vault() as v:
        c, _ = v.login()
        r = c.auth.token.create(policies=["kv-read"], ttl="10m", display_name="sandbox 7",
                                meta={"sandbox": "7"})
        for k in ("request_id", "lease_id", "renewable", "lease_duration", "data",
                  "wrap_info", "warnings", "auth"):
            assert k in r, k
        assert r["lease_id"] == "" and r["renewable"] is False and r["lease_duration"] == 0
        assert r["data"] is None and r["wrap_info"] is None and r["warnings"] is None
        a = r["auth"]
        assert a["policies"] == ["default", "kv-read"], a
        assert a["lease_duration"] == 600 and a["renewable"] is True and a["orphan"] is False
        assert a["metadata"] == {"sandbox": "7"} and a["num_uses"] == 0
        child = v.client(a["client_token"]).auth.token.lookup_self()["data"]
        assert child["display_name"] == "token-sandbox-7", child["display_name"]
        assert child["path"] == "auth/token/create" and child["creation_ttl"] == 600
        assert child["meta"] == {"sandbox": "7"} and child["orphan"] is False
        e = raises(hx.InvalidRequest, c.auth.token.create, policies=["admin"])
        assert e.errors == ["child policies must be subset of parent"], e.errors
        # No policies: inherit the parent's.
        inh = c.auth.token.create()["auth"]
        assert inh["policies"] == ["agentd", "default", "kv-read"], inh
        # Only root/sudo may make orphans or periodic tokens.
        raises(hx.InvalidRequest, c.auth.token.create, no_parent=True)
        raises(hx.InvalidRequest, c.auth.token.create, period="1h")
        # Root may grant anything; a root child with no TTL never expires.
        rc = v.rootc()
        any_ = rc.auth.token.create(policies=["whatever"], ttl="1h")["auth"]
        assert any_["policies"] == ["default", "whatever"]
        r2 = rc.auth.token.create(policies=["root"])["auth"]
        assert r2["lease_duration"] == 0 and r2["renewable"] is False
        orphan = rc.auth.token.create(policies=["x"], no_parent=True)["auth"]
        assert orphan["orphan"] is True and orphan["lease_duration"] == 768 * 3600
        # TTL beyond the system max is capped with Vault's warning.
        big = rc.auth.token.create(policies=["x"], ttl="1000h")
        assert big["auth"]["lease_duration"] <= 768 * 3600 and big["warnings"], big


def test_use_limited_parent_cannot_create():
    with Vault() as v:
        rc = v.rootc()
        t = rc.auth.token.create(policies=["p"], num_uses=5)["auth"]
        assert t["num_uses"] == 5
        e = raises(hx.InvalidRequest, v.client(t["client_token"]).auth.token.create, policies=["p"])
        assert e.errors == ["restricted use token cannot generate child tokens"], e.errors


def test_lookup_and_renew():
    with Vault() as v:
        c, login = v.login()
        d = c.auth.token.lookup_self()["data"]
        for k in ("accessor", "creation_time", "creation_ttl", "display_name", "expire_time",
                  "explicit_max_ttl", "id", "issue_time", "meta", "num_uses", "orphan", "path",
                  "policies", "renewable", "ttl", "type"):
            assert k in d, k
        assert d["id"] == c.token and d["path"] == "auth/approle/login"
        assert d["display_name"] == "approle" and d["creation_ttl"] == 3600
        assert 3590 <= d["ttl"] <= 3600 and d["renewable"] is True and d["type"] == "service"
        assert d["expire_time"].endswith("Z")
        rc = v.rootc()
        assert rc.auth.token.lookup(c.token)["data"]["accessor"] == d["accessor"]
        la = rc.auth.token.lookup_accessor(d["accessor"])["data"]
        assert la["id"] == "" and la["policies"] == d["policies"]
        raises(hx.InvalidRequest, rc.auth.token.lookup_accessor, "nope")
        e = raises(hx.Forbidden, rc.auth.token.lookup, "hvs.nope")
        assert e.errors == ["bad token"], e.errors
        # A plain token may not look up others (default-policy-like ACL).
        raises(hx.Forbidden, c.auth.token.lookup, c.token)
        # renew-self: increment sets the new TTL from now; 0 restores the creation TTL.
        r = c.auth.token.renew_self(increment="2h")
        assert r["auth"]["lease_duration"] == 7200 and r["auth"]["client_token"] == c.token
        assert c.auth.token.lookup_self()["data"]["ttl"] > 7000
        assert "last_renewal_time" in c.auth.token.lookup_self()["data"]
        assert c.auth.token.renew_self()["auth"]["lease_duration"] == 3600
        # explicit_max_ttl caps renewals.
        t = rc.auth.token.create(policies=["p"], ttl="30s", explicit_max_ttl="60s")["auth"]
        r = v.client(t["client_token"]).auth.token.renew_self(increment="1h")
        assert 55 <= r["auth"]["lease_duration"] <= 60 and r["warnings"], r
        # Non-renewable tokens and non-expiring root tokens cannot renew.
        nr = rc.auth.token.create(policies=["p"], ttl="1h", renewable=False)["auth"]
        assert nr["renewable"] is False
        e = raises(hx.InvalidRequest, v.client(nr["client_token"]).auth.token.renew_self)
        assert e.errors == ["lease is not renewable"], e.errors
        raises(hx.InvalidRequest, rc.auth.token.renew_self)
        # renew-accessor hides the token.
        r = rc.auth.token.renew_accessor(d["accessor"], increment=100)
        assert r["auth"]["client_token"] == "" and r["auth"]["lease_duration"] == 100


def test_revoke_self_cascades():
    with Vault() as v:
        c, login = v.login()
        child = v.client(c.auth.token.create(policies=["agentd"], ttl="10m")["auth"]["client_token"])
        grandchild = v.client(child.auth.token.create(ttl="5m")["auth"]["client_token"])
        orphan = v.client(v.rootc().auth.token.create(policies=["x"])["auth"]["client_token"])
        assert child.is_authenticated() and grandchild.is_authenticated()
        r = c.auth.token.revoke_self()
        assert r.status_code == 204 and r.content == b"", r
        for cl in (c, child, grandchild):
            e = raises(hx.Forbidden, cl.auth.token.lookup_self)
            assert e.errors == ["permission denied"], e.errors
            assert cl.is_authenticated() is False
        assert orphan.is_authenticated()
        toks = v.dev_tokens()
        acc = login["auth"]["accessor"]
        assert toks[acc]["revoked"] and toks[acc]["revoked_reason"] == "revoke-self"
        kids = [t for t in toks.values() if t["parent_accessor"] == acc]
        assert len(kids) == 1 and kids[0]["revoked"] and kids[0]["revoked_reason"] == "parent revoked"


def test_revoke_accessor_and_revoke_cascade():
    with Vault() as v:
        rc = v.rootc()
        p = rc.auth.token.create(policies=["a", "b"], ttl="1h")["auth"]
        k = v.client(p["client_token"]).auth.token.create(policies=["a"])["auth"]
        r = rc.auth.token.revoke_accessor(p["accessor"])
        assert r.status_code == 204, r
        raises(hx.Forbidden, v.client(k["client_token"]).auth.token.lookup_self)
        assert v.dev_tokens()[k["accessor"]]["revoked"]
        # Unknown accessor: Vault answers 200 with a warning, not an error.
        r = rc.auth.token.revoke_accessor("no-such-accessor")
        assert r["warnings"] == ["No token found with this accessor"], r
        # revoke {token}: cascades; unknown token is 204 with no exception.
        p = rc.auth.token.create(policies=["a"], ttl="1h")["auth"]
        k = v.client(p["client_token"]).auth.token.create()["auth"]
        assert rc.auth.token.revoke(p["client_token"]).status_code == 204
        raises(hx.Forbidden, v.client(k["client_token"]).auth.token.lookup_self)
        r = rc.auth.token.revoke("hvs.doesnotexist")
        assert r.status_code == 204 and r.content == b""
        raises(hx.InvalidRequest, rc.auth.token.revoke, "")
        # revoke-orphan keeps the children.
        p = rc.auth.token.create(policies=["a"], ttl="1h")["auth"]
        k = v.client(p["client_token"]).auth.token.create()["auth"]
        assert rc.auth.token.revoke_and_orphan_children(p["client_token"]).status_code == 204
        kd = v.client(k["client_token"]).auth.token.lookup_self()["data"]
        assert kd["orphan"] is True


def test_bad_tokens_and_errors():
    with Vault() as v:
        for tok in ("", "hvs.bogus"):
            c = v.client(tok)
            raises(hx.Forbidden, c.auth.token.lookup_self)
            raises(hx.Forbidden, c.auth.token.create, policies=["x"])
        r = v.raw("GET", "auth/token/lookup-self", "hvs.bogus")
        assert r.status_code == 403 and r.json() == {"errors": ["permission denied"]}
        assert r.headers["Content-Type"] == "application/json"
        r = v.raw("GET", "secret/data/foo", v.root)
        assert r.status_code == 404 and r.json() == {"errors": []}
        assert v.rootc().read("secret/data/foo") is None     # hvac maps 404 to None
        raises(hx.InvalidPath, v.rootc().adapter.get, "/v1/secret/data/foo")
        r = v.raw("POST", "auth/token/create", v.root, body="{not json")
        assert r.status_code == 400 and r.headers["Content-Type"] == "application/json"
        assert r.json()["errors"][0].startswith("failed to parse JSON input")
        # PUT is POST.
        r = v.raw("PUT", "auth/token/create", v.root, {"policies": ["x"], "ttl": "1m"})
        assert r.status_code == 200 and r.json()["auth"]["lease_duration"] == 60
        assert v.raw("GET", "auth/token/create", v.root).status_code == 405
        # sys/dev/* is root-only.
        c, _ = v.login()
        assert v.raw("GET", "sys/dev/tokens", c.token).status_code == 403
        assert v.raw("GET", "sys/dev/tokens").status_code == 403


def test_namespace_isolation():
    with Vault() as v:
        a, login = v.login(namespace="team-a")
        tok = login["auth"]["client_token"]
        d = a.auth.token.lookup_self()["data"]
        assert d["namespace_path"] == "team-a/", d
        # Not valid in the root namespace nor in a sibling namespace ...
        raises(hx.Forbidden, v.client(tok).auth.token.lookup_self)
        raises(hx.Forbidden, v.client(tok, namespace="team-b").auth.token.lookup_self)
        # ... but, as in Vault, usable in its own child namespaces.
        assert v.client(tok, namespace="team-a/sub").auth.token.lookup_self()
        # Children created in the namespace stay in it.
        k = a.auth.token.create(policies=["agentd"], ttl="1m")["auth"]["client_token"]
        assert v.client(k, namespace="team-a").is_authenticated()
        raises(hx.Forbidden, v.client(k).auth.token.lookup_self)
        # A token from the root namespace (root) works in a child namespace, and the
        # namespace's own lookups don't see tokens from elsewhere.
        rna = v.rootc(namespace="team-a")
        assert rna.auth.token.lookup(tok)["data"]["accessor"] == login["auth"]["accessor"]
        root_tok = v.rootc().auth.token.create(policies=["x"])["auth"]["client_token"]
        raises(hx.Forbidden, rna.auth.token.lookup, root_tok)
        assert v.dev_tokens()[login["auth"]["accessor"]]["namespace"] == "team-a"


def test_num_uses_exhaustion():
    with Vault() as v:
        t = v.rootc().auth.token.create(policies=["p"], num_uses=3, ttl="1h")["auth"]
        c = v.client(t["client_token"])
        assert c.auth.token.lookup_self()["data"]["num_uses"] == 2
        assert c.auth.token.lookup_self()["data"]["num_uses"] == 1
        c.auth.token.lookup_self()          # the last use still succeeds
        raises(hx.Forbidden, c.auth.token.lookup_self)
        tok = v.dev_tokens()[t["accessor"]]
        assert tok["revoked"] and tok["revoked_reason"] == "num_uses exhausted", tok


def test_ttl_expiry():
    with Vault() as v:
        rc = v.rootc()
        t = rc.auth.token.create(policies=["p"], ttl="2s")["auth"]
        assert t["lease_duration"] == 2
        c = v.client(t["client_token"])
        k = v.client(c.auth.token.create(ttl="1h")["auth"]["client_token"])
        assert c.is_authenticated() and k.is_authenticated()
        time.sleep(2.3)
        raises(hx.Forbidden, c.auth.token.lookup_self)
        # The parent's expiry revokes its subtree, as Vault's expiration manager does.
        raises(hx.Forbidden, k.auth.token.lookup_self)
        toks = v.dev_tokens()
        assert toks[t["accessor"]]["revoked_reason"] == "expired"


def test_dev_fail_and_latency():
    with Vault() as v:
        assert v.raw("PUT", "sys/dev/fail", v.root, {"status": 500, "count": 2}).status_code == 204
        c = v.rootc()
        raises(hx.InternalServerError, c.auth.token.lookup_self)
        r = v.raw("GET", "sys/health")
        assert r.status_code == 500 and r.json() == {"errors": ["internal error"]}
        assert c.auth.token.lookup_self()["data"]["policies"] == ["root"]    # recovered
        v.raw("PUT", "sys/dev/fail", v.root, {"status": 503, "count": 1})
        raises(hx.VaultDown, v.client().auth.approle.login, ROLE_ID, SECRET_ID)
        assert v.login()[1]["auth"]["client_token"]
        # path_prefix limits the injection; custom errors are returned verbatim.
        v.raw("PUT", "sys/dev/fail", v.root,
              {"status": 429, "count": 1, "path_prefix": "auth/approle", "errors": ["slow down"]})
        assert c.auth.token.lookup_self()
        e = raises(hx.RateLimitExceeded, v.client().auth.approle.login, ROLE_ID, SECRET_ID)
        assert e.errors == ["slow down"]
        reqs = v.raw("GET", "sys/dev/requests", v.root).json()["data"]["requests"]
        assert [q["status"] for q in reqs if q["path"] == "auth/approle/login"][-2:] == [200, 429]
        v.raw("PUT", "sys/dev/latency", v.root, {"ms": 300})
        t0 = time.time()
        c.auth.token.lookup_self()
        assert time.time() - t0 >= 0.3
        v.raw("PUT", "sys/dev/latency", v.root, {"ms": 0})


def test_persistence_across_restart():
    d = tempfile.mkdtemp(prefix="vaultdev-state-")
    try:
        sf = os.path.join(d, "state.json")
        with Vault(state_file=sf) as v:
            root = v.root
            c, login = v.login()
            k = c.auth.token.create(policies=["agentd"], ttl="1h")["auth"]
            assert oct(os.stat(sf).st_mode & 0o777) == "0o600"
        with Vault(state_file=sf) as v:
            assert v.root == root
            c2 = v.client(login["auth"]["client_token"])
            assert c2.auth.token.lookup_self()["data"]["accessor"] == login["auth"]["accessor"]
            # "daemon restart revokes leftover tokens": revoke by accessor from the record.
            assert v.rootc().auth.token.revoke_accessor(login["auth"]["accessor"]).status_code == 204
            assert v.dev_tokens()[k["accessor"]]["revoked"]
        with Vault(state_file=sf) as v:
            raises(hx.Forbidden, v.client(k["client_token"]).auth.token.lookup_self)
            assert v.dev_tokens()[login["auth"]["accessor"]]["revoked"]
    finally:
        shutil.rmtree(d)


def test_tls():
    d = _certs()
    try:
        with Vault(tls=d) as v:
            assert v.url.startswith("https://")
            c, login = v.login()
            assert c.auth.token.lookup_self()["data"]["policies"] == ["agentd", "default", "kv-read"]
            assert v.client().sys.read_health_status(method="GET")["initialized"] is True
            # localhost is in the SAN too.
            h = hvac.Client(url=f"https://localhost:{v.port}", verify=d + "/ca.pem")
            assert h.sys.read_health_status(method="GET")["sealed"] is False
            # Without the CA the handshake fails.
            try:
                requests.get(v.url + "/v1/sys/health", timeout=5)
            except requests.exceptions.SSLError:
                pass
            else:
                raise AssertionError("TLS without CA should fail")
            # Plain HTTP to the TLS port does not get an answer from Vault's API.
            try:
                r = requests.get(f"http://127.0.0.1:{v.port}/v1/sys/health", timeout=5)
                assert r.status_code != 200
            except requests.exceptions.RequestException:
                pass
    finally:
        shutil.rmtree(d)


def run_tests(ns):
    names = [n for n in ns if n.startswith("test_") and callable(ns[n])]
    only = sys.argv[1:]
    passed = failed = 0
    for n in names:
        if only and n not in only:
            continue
        t0 = time.time()
        try:
            ns[n]()
        except Exception:
            failed += 1
            print(f"FAIL {n} ({time.time() - t0:.1f}s)")
            traceback.print_exc()
        else:
            passed += 1
            print(f"PASS {n} ({time.time() - t0:.1f}s)")
        sys.stdout.flush()
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(run_tests(globals()))
