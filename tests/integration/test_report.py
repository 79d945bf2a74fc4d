#!/usr/bin/python3
"""agentctl report: one sandbox's story from request to diff, built from the
verified audit records; a tampered record makes it fail loudly; the HTML page
renders in headless Chromium without a single outside request; a revoke
snapshot carries the report."""
import glob
import hashlib
import http.server
import json
import os
import shutil
import subprocess
import tempfile
import time

from harness import AGENTD as AGENTD_BIN, Daemon, HttpServer, run_tests
from test_broker import ROLE_ID, SECRET_ID, Swtpm, Vault, enroll, wait_vault_ok, workspace

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


class Upstream(HttpServer):
    """A loopback HTTP server, the allowed destination; or (record=True) a
    recorder that notes every request reaching it (the browser's proxy)."""

    def __init__(self):
        hits = self.hits = []

        class H(http.server.BaseHTTPRequestHandler):
            def handle_one_request(self):
                super().handle_one_request()

            def do_GET(self):
                hits.append(("GET", self.path))
                body = b"hello from upstream\n"
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_CONNECT(self):
                hits.append(("CONNECT", self.path))
                self.send_response(502)
                self.end_headers()

        super().__init__(H)


def tasks(port):
    return {"story": "[Task]\nDescription=network, token and a change\n"
                     f"Environment=REVIEW_TICKET=secret-ticket-value\n[Network]\nMode=proxy\nAllow=127.0.0.1:{port}\n"
                     "[Credentials]\nVaultPolicies=ci-read\n",
            "plain": "[Task]\nDescription=writes a file\n"}


def wait_ended(c, sid, timeout=15):
    deadline = time.time() + timeout
    while time.time() < deadline:
        s = [x for x in c.ok("sandbox.list") if x["id"] == sid]
        if s and s[0]["state"] in ("exited", "killed"):
            return s[0]
        time.sleep(0.05)
    raise AssertionError(f"sandbox {sid} did not end")


def report_json(d, sid, check=0):
    p = d.agentctl("--json", "report", sid, check=check)
    return json.loads(p.stdout), p


def audit_files(d):
    return sorted(glob.glob(os.path.join(d.state_home, "agentd", "audit", "audit-*.jsonl")))


def plain_sandbox(d, script="echo changed > note.txt"):
    ws = os.path.join(d.tmp, "ws")
    os.makedirs(ws, exist_ok=True)
    p = d.agentctl("spawn", "--task", "plain", "--detach", "--", "/bin/sh", "-c", script, cwd=ws, check=0)
    sid = p.stdout.decode().strip()
    c = d.client()
    c.ok("sandbox.wait", {"id": sid})
    wait_ended(c, sid)
    return sid, ws


def test_report_network_token_promote_verified():
    """The done-when case: network, a token and a promote, all in the report, verified."""
    up = Upstream()
    tpm = Swtpm()
    vault = Vault(os.path.join(tempfile.mkdtemp(prefix="vaultstate-"), "state.json"))
    d = Daemon(config=f"[Vault]\nAddress={vault.url}\n[TPM]\nTCTI={tpm.tcti}\n", tasks=tasks(up.port))
    try:
        d.start()
        enroll(d)
        wait_vault_ok(d)
        ws = workspace(d)
        script = (f"./agentctl token >/dev/null || exit 9; export NO_PROXY= no_proxy=; "
                  f"curl -sS -m 5 http://127.0.0.1:{up.port}/fetch >fetched.txt || exit 8; "
                  f"curl -sS -m 5 http://127.0.0.1:1/denied; printf 'result 42\\n' > result.txt; echo done")
        p = d.agentctl("spawn", "--task", "story", "--detach", "--", "/bin/sh", "-c", script, cwd=ws,
                       env={"LANG": "C.UTF-8-from-the-caller"}, check=0)
        sid = p.stdout.decode().strip()
        c = d.client()
        assert c.ok("sandbox.wait", {"id": sid})["exit_code"] == 0, d.read_log()
        wait_ended(c, sid)
        # The token's revocation follows the exit asynchronously.
        deadline = time.time() + 10
        while time.time() < deadline:
            r, _ = report_json(d, sid)
            if r["tokens"] and r["tokens"][0]["status"] == "revoked":
                break
            time.sleep(0.1)
        # Before the promote: the change layer, with a SHA-256 per changed file.
        want = hashlib.sha256(b"result 42\n").hexdigest()
        files = {f["path"]: f for f in r["changes"]["files"]}
        assert r["changes"]["layer"] == "present", r["changes"]
        assert files["result.txt"]["sha256"] == want and files["result.txt"]["change"] == "added", files
        assert r["promotions"] == [] and r["discarded"] is None
        text_before = d.agentctl("report", sid, check=0).stdout.decode()
        assert want in text_before and "added    result.txt" in text_before, text_before
        d.agentctl("promote", sid, check=0)
        r, _ = report_json(d, sid)

        v = r["verification"]
        assert v["ok"] is True and v["chain_ok"] is True, v
        own = [x["seq"] for x in c.ok("audit.query", {"sandbox": sid, "limit": 10000})]
        assert set(own) <= set(v["seqs"]), (own, v["seqs"])  # names every record of the sandbox, and more
        assert v["seqs"] == sorted(v["seqs"])
        # Who asked: agentctl, by pid and executable.
        assert r["requested_by"]["comm"] == "agentctl" and r["requested_by"]["exe"].endswith("/agentctl"), r["requested_by"]
        pol = [x for x in c.ok("audit.query", {"sandbox": sid, "limit": 10000})
               if x["type"] == "sandbox.spawn"][0]["fields"]["policy_sha256"]
        assert r["policy"]["sha256"] == pol and len(pol) == 64 and r["policy"]["task"] == "story", r["policy"]
        assert r["argv"] == ["/bin/sh", "-c", script], r["argv"]
        # Names of the environment, never values.
        assert "REVIEW_TICKET" in r["env_names"] and "LANG" in r["env_names"], r["env_names"]
        assert "secret-ticket-value" not in json.dumps(r) and "from-the-caller" not in json.dumps(r)
        assert r["exit"]["exit_code"] == 0 and r["exit"]["signal"] == 0 and r["exit"]["state"] == "exited", r["exit"]
        u = r["usage"]
        assert u["cpu_usec"] > 0 and u["layer_bytes"] >= len("result 42\n"), u
        allowed = [e for e in r["egress"] if e["decision"] == "allowed"]
        denied = [e for e in r["egress"] if e["decision"] == "denied"]
        assert len(allowed) == 1 and allowed[0]["port"] == up.port and allowed[0]["bytes_down"] > 0, r["egress"]
        assert len(denied) == 1 and denied[0]["port"] == 1, r["egress"]
        assert len(r["tokens"]) == 1 and r["tokens"][0]["status"] == "revoked", r["tokens"]
        assert r["tokens"][0]["accessor"] and r["tokens"][0]["policies"] == ["ci-read"], r["tokens"]
        assert len(r["promotions"]) == 1, r["promotions"]
        pr = r["promotions"][0]
        assert pr["files"]["result.txt"] == want and pr["by"]["comm"] == "agentctl", pr
        types = [t["type"] for t in r["timeline"]]
        for t in ("sandbox.spawn", "token.issued", "egress", "egress.closed", "sandbox.exit", "token.revoked",
                  "sandbox.promote"):
            assert t in types, (t, types)
        assert any(t["type"] == "rpc" and "sandbox.promote" in t["summary"] for t in r["timeline"]), r["timeline"]
        assert all(t["verified"] for t in r["timeline"])
        # The text a reviewer reads.
        p = d.agentctl("report", sid, check=0)
        out = p.stdout.decode()
        for s in ("Verified:   yes", "agentctl (pid", pol, "REVIEW_TICKET", f"127.0.0.1:{up.port}  allowed",
                  "denied", r["tokens"][0]["accessor"], want, "Promoted at", "Built from audit records (seq): " +
                  " ".join(str(x) for x in v["seqs"])):
            assert s in out, (s, out)
        assert "secret-ticket-value" not in out
        # The page shows the same story (its rendering is checked in Chromium below).
        page = os.path.join(tempfile.gettempdir(), f"agentd-report-{sid}.html")
        d.agentctl("report", sid, "--html", "-o", page, check=0)
        html = open(page).read()
        for s in (r["tokens"][0]["accessor"], want, f"127.0.0.1", "denied", "REVIEW_TICKET", "Promoted", pol):
            assert s in html, s
        print(f"page: {page}")
    finally:
        d.stop()
        vault.stop()
        tpm.stop()
        up.stop()


def tamper(path, old, new):
    with open(path, "rb") as f:
        data = f.read()
    assert data.count(old) >= 1, (old, path)
    i = data.rfind(old)
    with open(path, "r+b") as f:
        f.seek(i)
        f.write(new)
    return i


def test_tampered_record_is_named_and_fails():
    with Daemon(tasks=tasks(1)) as d:
        sid, _ = plain_sandbox(d, "exit 3")
        r, _ = report_json(d, sid)
        assert r["verification"]["ok"] and r["exit"]["exit_code"] == 3
        exit_seq = [t["seq"] for t in r["timeline"] if t["type"] == "sandbox.exit"][0]
        # Someone rewrites history: the sandbox "succeeded" (same length, so nothing else moves).
        f = audit_files(d)[-1]
        with open(f, "rb") as fh:
            line = [l for l in fh.read().split(b"\n") if l.startswith(b'{"seq":%d,' % exit_seq)][0]
        tamper(f, line, line.replace(b'"exit_code":3', b'"exit_code":0'))
        r, p = report_json(d, sid, check=1)
        v = r["verification"]
        assert v["ok"] is False and v["chain_ok"] is False and v["first_bad_seq"] == exit_seq, v
        assert v["problems"][0]["seq"] == exit_seq and "invalid hmac" in v["problems"][0]["problem"], v
        # What follows the break cannot be vouched for either.
        assert all("after the break" in x["problem"] for x in v["problems"][1:]), v
        # Not silently omitted: the record is there, flagged.
        ex = [t for t in r["timeline"] if t["seq"] == exit_seq]
        assert ex and ex[0]["verified"] is False, r["timeline"]
        p = d.agentctl("report", sid, check=1)
        out = p.stdout.decode()
        assert "Verified:   NO" in out and f"seq {exit_seq} (sandbox.exit): invalid hmac" in out, out
        assert "NOT VERIFIED" in out and b"do not verify" in p.stderr, (out, p.stderr)
        p = d.agentctl("report", sid, "--html", check=1)
        assert b"NOT VERIFIED" in p.stdout


def test_deleted_record_breaks_the_report():
    with Daemon(tasks=tasks(1)) as d:
        sid, _ = plain_sandbox(d)
        r, _ = report_json(d, sid)
        spawn_seq = [t["seq"] for t in r["timeline"] if t["type"] == "sandbox.spawn"][0]
        f = audit_files(d)[-1]
        with open(f, "rb") as fh:
            data = fh.read()
        lines = data.split(b"\n")
        kept = [l for l in lines if not l.startswith(b'{"seq":%d,' % spawn_seq)]
        assert len(kept) == len(lines) - 1
        # Rewritten in place: the daemon's O_APPEND fd keeps writing at the (new) end.
        with open(f, "r+b") as fh:
            fh.write(b"\n".join(kept))
            fh.truncate()
        r, _ = report_json(d, sid, check=1)
        v = r["verification"]
        assert not v["ok"] and not v["chain_ok"] and v["first_bad_seq"] == spawn_seq + 1, v
        assert "deleted or reordered" in v["reason"], v


def test_unknown_and_bad_ids():
    with Daemon() as d:
        c = d.client()
        err, _ = c.call("sandbox.report", {"id": "nope123"})
        assert err is not None and err["code"] == "not_found", err
        err, _ = c.call("sandbox.report", {"id": "../../etc"})
        assert err is not None and err["code"] == "invalid_params", err
        err, _ = c.call("sandbox.report", {})
        assert err is not None and err["code"] == "invalid_params", err
        p = d.agentctl("report", check=2)
        p = d.agentctl("report", "x", "--json", "--html", check=2)


PROBE = "agentd-report-probe.test"
# Chromium's own background traffic (time sync, component updates, sign-in)
# goes to these even with --disable-background-networking; a page's never does.
BROWSER_HOSTS = ("google.com", "googleapis.com", "gstatic.com", "gvt1.com")


def chromium(rec, prof, *args):
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={prof}", f"--proxy-server=http://127.0.0.1:{rec.port}",
           "--proxy-bypass-list=<-loopback>", "--host-resolver-rules=MAP * 127.0.0.1"] + list(args)
    return subprocess.run(cmd, capture_output=True, timeout=120)


def page_hits(rec):
    """Requests the recorder saw that were not the browser's own."""
    out = []
    for method, target in rec.hits:
        host = target.split("://", 1)[-1].split("/", 1)[0].split(":", 1)[0]
        if not any(host == h or host.endswith("." + h) for h in BROWSER_HOSTS):
            out.append((method, target))
    return out


def test_html_renders_offline_in_chromium():
    if not os.path.exists(CHROMIUM):
        print("chromium is not installed (tests/install-deps.sh installs it)")
        return "skip"
    rec = Upstream()
    prof = tempfile.mkdtemp(prefix="chromium-")
    try:
        with Daemon(tasks=tasks(1)) as d:
            # A file name that tries to pull in an outside resource must stay text.
            sid, _ = plain_sandbox(d, f"echo changed > note.txt; touch '<img src=http:__{PROBE}_x.png>'")
            out = os.path.join(d.tmp, "report.html")
            d.agentctl("report", sid, "--html", "-o", out, check=0)
            html = open(out).read()
            assert "default-src 'none'" in html and "<script" not in html and "<link" not in html
            assert "<img" not in html and "&lt;img" in html

            # The control: a page that does load something is seen by the recorder.
            control = os.path.join(d.tmp, "control.html")
            with open(control, "w") as f:
                f.write(f'<!DOCTYPE html><html><body><img src="http://{PROBE}/probe.png"></body></html>')
            chromium(rec, prof, "--dump-dom", "file://" + control)
            assert any(PROBE in t for _, t in page_hits(rec)), rec.hits
            rec.hits.clear()

            p = chromium(rec, prof, "--dump-dom", "file://" + out)
            dom = p.stdout.decode()
            assert p.returncode == 0 and 'id="timeline"' in dom, (p.returncode, p.stderr[-2000:])
            for t in ("spawned task plain", "exited: exit code 0", "note.txt", "Verified: ", "HMACs and the hash chain"):
                assert t in dom, (t, dom[:3000])
            assert dom.count('<li class="k-') == 3, dom  # spawn, the wait request, exit
            shot = os.path.join(tempfile.gettempdir(), f"agentd-report-{sid}.png")
            p = chromium(rec, prof, "--window-size=1100,1400", f"--screenshot={shot}", "file://" + out)
            assert p.returncode == 0 and os.path.getsize(shot) > 10000, p.stderr[-2000:]
            print(f"screenshot: {shot}")
            # Rendering the report made no request of its own.
            assert page_hits(rec) == [], page_hits(rec)
    finally:
        shutil.rmtree(prof, ignore_errors=True)
        rec.stop()


def test_revoke_snapshot_carries_the_report():
    with Daemon(tasks=tasks(1)) as d:
        ws = os.path.join(d.tmp, "ws")
        os.makedirs(ws)
        p = d.agentctl("spawn", "--task", "plain", "--detach", "--", "/bin/sh", "-c", "echo x > a.txt; sleep 60",
                       cwd=ws, check=0)
        sid = p.stdout.decode().strip()
        c = d.client()
        deadline = time.time() + 10
        while not os.path.exists(os.path.join(ws, "a.txt")) and time.time() < deadline:
            layer = glob.glob(os.path.join(d.state_home, "agentd", "sandboxes", sid, "upper", "a.txt"))
            if layer:
                break
            time.sleep(0.05)
        res = c.ok("credentials.revoke", {"sandbox": sid})
        assert len(res["snapshots"]) == 1, res
        path = os.path.join(res["snapshots"][0], "report.json")
        deadline = time.time() + 10
        while not os.path.exists(path) and time.time() < deadline:
            time.sleep(0.05)
        with open(path) as f:
            rep = json.load(f)
        assert rep["id"] == sid and rep["verification"]["ok"] is True, rep["verification"]
        assert rep["argv"][-1].startswith("echo x > a.txt"), rep["argv"]
        assert os.stat(path).st_mode & 0o777 == 0o600
        # Later reports name the snapshot and the revocation that froze it
        # (the kill is asynchronous: wait for the exit record first).
        c.ok("sandbox.wait", {"id": sid})
        r, _ = report_json(d, sid)
        assert r["snapshots"] == [res["snapshots"][0]], (r["snapshots"], res)
        assert [i["type"] for i in r["incidents"]] == ["revoke"] and r["incidents"][0]["fields"]["frozen"] == 1, r
        assert r["exit"]["reason"] == "killed by an incident revocation", r["exit"]


def test_log_lines_carry_journal_fields():
    """The daemon's own lines about a sandbox carry AGENTD_SANDBOX/TASK/EVENT. This
    host has no journald, so the daemon runs with its stderr fallback, which
    appends the same fields it would send to the journal; selecting lines by
    AGENTD_SANDBOX= here is what `journalctl --user -u agentd AGENTD_SANDBOX=ID` does."""
    with Daemon(tasks=tasks(1)) as d:
        sid, _ = plain_sandbox(d)
        other, _ = plain_sandbox(d, "exit 4")
        d.agentctl("promote", sid, check=0)
        mine = [l for l in d.read_log().splitlines() if f" AGENTD_SANDBOX={sid}" in l]
        events = [l.rsplit("AGENTD_EVENT=", 1)[1] for l in mine]
        assert events == ["spawn", "exit", "promote"], mine
        assert all(" AGENTD_TASK=plain " in l for l in mine), mine
        assert not any(other in l for l in mine), mine


JOURNALD = "/lib/systemd/systemd-journald"


class JournaldDaemon(Daemon):
    """agentd logging to a real systemd-journald. The host has no journald, so
    both run in a private user + mount namespace: a tmpfs on /run/systemd (the
    journal's sockets) and a host directory bound on /run/log, where journald
    writes the journal files that journalctl then reads from outside."""

    def start(self, wait=True):
        self.jdir = os.path.join(self.tmp, "runlog")
        os.makedirs(self.jdir)
        self.jpid = os.path.join(self.tmp, "journald.pid")
        self.env.pop("AGENTD_LOG_TARGET", None)
        script = (f"mount -t tmpfs none /run/systemd && mkdir -p /run/systemd/journal && "
                  f"mount --bind {self.jdir} /run/log || exit 99; "
                  f"{JOURNALD} >/dev/null 2>&1 & echo $! > {self.jpid}; "
                  "i=0; while [ ! -S /run/systemd/journal/socket ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done; "
                  f"exec {AGENTD_BIN}")
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(["unshare", "-Urm", "sh", "-c", script], env=self.env, stdout=self.log,
                                     stderr=self.log)
        if wait:
            self.wait_ready()
        return self

    def stop(self, expect_rc=0):
        try:
            super().stop(expect_rc)
        finally:
            try:
                with open(self.jpid) as f:
                    os.kill(int(f.read()), 15)
            except (OSError, ValueError):
                pass

    def journal(self, *matches):
        p = subprocess.run(["journalctl", "-D", os.path.join(self.jdir, "journal"), "--no-pager", "-o", "json"]
                           + list(matches), capture_output=True, text=True, timeout=30)
        return [json.loads(l) for l in p.stdout.splitlines() if l.startswith("{")]


def test_journalctl_filters_by_sandbox():
    """The real thing: journalctl AGENTD_SANDBOX=ID selects that sandbox's lines."""
    if not os.path.exists(JOURNALD) or not shutil.which("unshare"):
        print("systemd-journald or unshare missing")
        return "skip"
    probe = subprocess.run(["unshare", "-Urm", "true"], capture_output=True)
    if probe.returncode != 0:
        print(f"no unprivileged user namespaces here: {probe.stderr!r}")
        return "skip"
    d = JournaldDaemon(tasks=tasks(1))
    try:
        d.start()
        sid, _ = plain_sandbox(d)
        other, _ = plain_sandbox(d, "exit 4")
        d.agentctl("promote", sid, check=0)

        def mine():
            got = d.journal(f"AGENTD_SANDBOX={sid}")
            return got if [e.get("AGENTD_EVENT") for e in got] == ["spawn", "exit", "promote"] else None
        got = wait_for(mine, timeout=10) or d.journal(f"AGENTD_SANDBOX={sid}")
        assert [e.get("AGENTD_EVENT") for e in got] == ["spawn", "exit", "promote"], (got, d.read_log())
        assert all(e["AGENTD_TASK"] == "plain" and e["SYSLOG_IDENTIFIER"] == "agentd" for e in got), got
        assert sid in got[0]["MESSAGE"] and "spawned task plain" in got[0]["MESSAGE"], got[0]
        assert all(other not in e["MESSAGE"] for e in got)
        # Other matches journalctl combines: by event across sandboxes, by task.
        exits = d.journal("AGENTD_EVENT=exit")
        assert {e["AGENTD_SANDBOX"] for e in exits} == {sid, other}, exits
        assert len(d.journal("AGENTD_TASK=plain", "AGENTD_EVENT=spawn")) == 2
        # The daemon's lines went to the journal, not to stderr.
        assert "spawned task" not in d.read_log()
    finally:
        d.stop()


OTLP_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "otlp")


class Receiver:
    """tests/otlp/receiver.js: decodes every post against the official OTLP schema."""

    def __init__(self, fail=None):
        self.out = tempfile.mktemp(prefix="otlp-", suffix=".jsonl")
        cmd = ["node", os.path.join(OTLP_DIR, "receiver.js"), "--out", self.out]
        if fail:
            cmd += ["--fail", str(fail)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        assert line.startswith("READY "), line
        self.port = int(line.split()[1])
        self.url = f"http://127.0.0.1:{self.port}"

    def posts(self):
        try:
            with open(self.out) as f:
                return [json.loads(l) for l in f if l.endswith("\n")]  # a line being written is not one yet
        except FileNotFoundError:
            return []

    def stop(self):
        self.proc.terminate()
        self.proc.wait()


def otlp_available():
    if not shutil.which("node") or not os.path.isdir(os.path.join(OTLP_DIR, "node_modules", "@opentelemetry")):
        print("node or tests/otlp/node_modules missing (tests/install-deps.sh installs them)")
        return False
    return True


def attrs(items):
    out = {}
    for kv in items or []:
        v = kv["value"]
        out[kv["key"]] = (v.get("stringValue") if "stringValue" in v else v.get("intValue") if "intValue" in v
                          else [x.get("stringValue") for x in v["arrayValue"].get("values", [])] if "arrayValue" in v
                          else v.get("boolValue"))
    return out


def otlp_items(posts, signal):
    key = {"logs": ("resourceLogs", "scopeLogs", "logRecords"), "traces": ("resourceSpans", "scopeSpans", "spans"),
           "metrics": ("resourceMetrics", "scopeMetrics", "metrics")}[signal]
    out = []
    for p in posts:
        if p.get("signal") != signal or "body" not in p:
            continue
        for r in p["body"].get(key[0], []):
            for sc in r.get(key[1], []):
                out += sc.get(key[2], [])
    return out


def wait_for(pred, timeout=15):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.1)
    return pred()


def telemetry_run(include_args):
    """Spawns two sandboxes in a workspace whose path, file names and arguments
    carry markers, promotes, revokes a third; returns what the receiver decoded."""
    up = Upstream()
    rx = Receiver()
    conf = f"[Telemetry]\nEndpoint={rx.url}\nFlushIntervalMs=100\n" + ("IncludeArguments=yes\n" if include_args else "")
    try:
        with Daemon(config=conf, tasks={**tasks(up.port), "web": f"[Task]\nDescription=web\n[Network]\nMode=proxy\n"
                                                                   f"Allow=127.0.0.1:{up.port}\n"}) as d:
            ws = os.path.join(d.tmp, "wsmarker-private-project")
            os.makedirs(ws)
            script = (f"export NO_PROXY= no_proxy=; curl -sS -m 5 http://127.0.0.1:{up.port}/ >/dev/null; "
                      "echo argmarker-SECRET-ARG > filemarker-private-name.txt")
            for _ in range(2):
                d.agentctl("spawn", "--task", "web", "--", "/bin/sh", "-c", script, cwd=ws, check=0)
            sid = d.client().ok("sandbox.list")[-1]["id"]
            d.agentctl("promote", sid, check=0)
            p = d.agentctl("spawn", "--task", "plain", "--detach", "--", "sleep", "60", cwd=ws, check=0)
            victim = p.stdout.decode().strip()
            time.sleep(0.3)
            d.client().ok("credentials.revoke", {"sandbox": victim})

            def done():
                logs = [attrs(r["attributes"]).get("agentd.event") for r in otlp_items(rx.posts(), "logs")]
                spans = [s["name"] for s in otlp_items(rx.posts(), "traces")]
                return (logs.count("sandbox.exit") >= 3 and "sandbox.promote" in logs and "revoke" in logs and
                        spans.count("agentd.sandbox") >= 3 and "agentd.revoke" in spans)
            assert wait_for(done), (rx.posts(), d.read_log())
            time.sleep(0.3)  # the metrics of the last flush
            status = d.client().ok("agentd.status")["telemetry"]
            return rx.posts(), status, d.tmp, ws, up.port
    finally:
        rx.stop()
        up.stop()


def test_otlp_export_decodes_and_is_redacted():
    if not otlp_available():
        return "skip"
    posts, status, tmp, ws, port = telemetry_run(include_args=False)
    assert not [p for p in posts if "error" in p], [p for p in posts if "error" in p]
    raw = "".join(p["raw"] for p in posts)
    # Nothing that names the user's files or what the command was told leaves the machine.
    for secret in ("wsmarker", "private-project", "filemarker", "private-name", "argmarker", "SECRET-ARG", tmp):
        assert secret not in raw, secret
    logs = otlp_items(posts, "logs")
    spawns = [attrs(r["attributes"]) for r in logs if attrs(r["attributes"])["agentd.event"] == "sandbox.spawn"]
    assert len(spawns) == 3, spawns
    # The workspace as a keyed hash: the same on this machine, not the path.
    hashes = {s["agentd.workspace.hmac"] for s in spawns}
    assert len(hashes) == 1 and hashes.pop().startswith("hmac-sha256:"), spawns
    assert all("process.command_args" not in s and s["agentd.argc"] in ("3", "2") for s in spawns), spawns
    promote = [attrs(r["attributes"]) for r in logs if attrs(r["attributes"])["agentd.event"] == "sandbox.promote"][0]
    assert promote["agentd.promote.files.hmac"][0].startswith("hmac-sha256:"), promote
    egress = [attrs(r["attributes"]) for r in logs if attrs(r["attributes"])["agentd.event"] == "egress"]
    assert len(egress) == 2 and all(e["server.port"] == str(port) and e["agentd.egress.decision"] == "allowed"
                                    for e in egress), egress
    # A sandbox's log records carry its span's ids.
    spans = otlp_items(posts, "traces")
    sb = [s for s in spans if s["name"] == "agentd.sandbox"]
    ids = {(s["traceId"], s["spanId"]) for s in sb}
    assert all((r["traceId"], r["spanId"]) in ids for r in logs if "traceId" in r), (logs, sb)
    assert all(int(s["endTimeUnixNano"]) >= int(s["startTimeUnixNano"]) for s in spans)
    rv = [s for s in spans if s["name"] == "agentd.revoke"][0]
    assert attrs(rv["attributes"])["agentd.revoke.frozen"] == "1", rv
    metrics = {m["name"]: m for m in otlp_items(posts, "metrics")}
    spawned = max(int(dp["asInt"]) for m in otlp_items(posts, "metrics") if m["name"] == "agentd.sandboxes.spawned"
                  for dp in m["sum"]["dataPoints"])
    assert spawned == 3 and metrics["agentd.sandboxes.spawned"]["sum"]["isMonotonic"] is True, metrics
    assert status["sent_logs"] >= 10 and status["dropped"] == 0 and status["state"].startswith("ok"), status


def test_otlp_arguments_only_when_opted_in():
    if not otlp_available():
        return "skip"
    posts, status, tmp, ws, port = telemetry_run(include_args=True)
    spawns = [attrs(r["attributes"]) for r in otlp_items(posts, "logs")
              if attrs(r["attributes"])["agentd.event"] == "sandbox.spawn"]
    assert any("argmarker-SECRET-ARG" in " ".join(s.get("process.command_args", [])) for s in spawns), spawns
    raw = "".join(p["raw"] for p in posts)
    assert "wsmarker" not in raw and all(s["agentd.workspace.hmac"].startswith("hmac-sha256:") for s in spawns)


def test_otlp_bounded_queue_and_failures_are_counted():
    if not otlp_available():
        return "skip"
    rx = Receiver(fail=503)
    try:
        # A queue of 16 that is never flushed by the timer: the 17th record is dropped, and counted.
        conf = f"[Telemetry]\nEndpoint={rx.url}\nQueueMax=16\nFlushIntervalMs=600000\n"
        with Daemon(config=conf, tasks=tasks(1)) as d:
            for _ in range(6):
                plain_sandbox(d, "true")
            st = d.client().ok("agentd.status")["telemetry"]
            assert st["queued"] == 16 and st["dropped_queue_full"] == 6 * 3 - 16, st
            assert not rx.posts()
        # A collector that refuses: after the client's retries the batch is dropped and counted.
        conf = f"[Telemetry]\nEndpoint={rx.url}\nFlushIntervalMs=50\n"
        with Daemon(config=conf, tasks=tasks(1)) as d:
            plain_sandbox(d, "true")
            st = wait_for(lambda: (lambda s: s if s["dropped_failed"] >= 2 else None)(d.client().ok("agentd.status")["telemetry"]))
            assert st and st["state"].startswith("failing: the collector answered HTTP 503"), st
            assert d.client().ok("agentd.ping")  # the loop never waited for it
    finally:
        rx.stop()


def test_file_names_cannot_write_to_the_terminal():
    """A sandbox names a file in its change layer with terminal escapes and a
    newline: agentctl report and diff print them as '?', so the sandbox can
    neither drive the operator's terminal nor forge a line of the report."""
    with Daemon() as d:
        c = d.client()
        ws = os.path.join(d.tmp, "ws")
        os.makedirs(ws, exist_ok=True)
        evil = "x\x1b]0;owned\x07\x1b[2J\rVerified:   yes\nPromoted at now"
        sid = c.ok("sandbox.spawn", {"argv": ["/usr/bin/python3", "-c", f"open({evil!r}, 'w').write('hi')"],
                                     "workspace": ws})["id"]
        assert c.ok("sandbox.wait", {"id": sid})["exit_code"] == 0
        assert any("owned" in e["path"] for e in c.ok("sandbox.diff", {"id": sid}))
        for args in (("report", sid), ("diff", sid)):
            out = d.agentctl(*args).stdout
            assert b"owned" in out, (args, out)
            assert not any(ch < 0x20 and ch not in (0x0a, 0x09) or ch == 0x7f for ch in out), (args, out)
            assert b"\nPromoted at now" not in out, (args, out)


def test_report_and_diff_of_a_running_sandbox_that_swaps_files_for_fifos():
    """A running sandbox turns a changed file into a FIFO between the diff's
    look at it and its read (comparing with the host's copy, hashing it for
    the report): neither sandbox.diff (on agentd's loop) nor the report hangs."""
    with Daemon() as d:
        c = d.client()
        ws = os.path.join(d.tmp, "ws")
        os.makedirs(ws, exist_ok=True)
        for i in range(300):
            with open(os.path.join(ws, "f%d" % i), "w") as f:
                f.write("x")
        swap = ("import os\n"
                "names = ['f%d' % i for i in range(300)]\n"
                "while True:\n"
                "    for n in names:\n"
                "        try: os.unlink(n)\n"
                "        except OSError: pass\n"
                "        open(n, 'w').write('x')\n"
                "    for n in names:\n"
                "        os.unlink(n); os.mkfifo(n)\n")
        sid = c.ok("sandbox.spawn", {"argv": ["/usr/bin/python3", "-c", swap], "workspace": ws})["id"]
        time.sleep(0.5)
        for _ in range(40):
            r = d.client()
            r.sock.settimeout(20)
            rep = r.ok("sandbox.report", {"id": sid})
            assert rep["id"] == sid
            r.ok("sandbox.diff", {"id": sid})
        c.ok("sandbox.kill", {"id": sid, "signal": "KILL"})
        c.ok("sandbox.wait", {"id": sid})


def test_otlp_failed_spawn_reason_is_redacted():
    """A command that cannot be found: the helper's message names it; the
    exported reason says only which step failed."""
    if not otlp_available():
        return "skip"
    rx = Receiver()
    try:
        with Daemon(config=f"[Telemetry]\nEndpoint={rx.url}\nFlushIntervalMs=100\n") as d:
            ws = os.path.join(d.tmp, "ws")
            os.makedirs(ws)
            d.agentctl("spawn", "--", "argmarker-no-such-command", "x", cwd=ws)

            def exits():
                return [attrs(r["attributes"]) for r in otlp_items(rx.posts(), "logs")
                        if attrs(r["attributes"]).get("agentd.event") == "sandbox.exit"]
            ex = wait_for(exits)
            assert ex, rx.posts()
            raw = "".join(p["raw"] for p in rx.posts())
            assert "argmarker" not in raw, [e.get("agentd.reason") for e in ex]
            assert ex[0].get("agentd.reason") == "sandbox setup failed at exec", ex
            assert ex[0]["agentd.reason.hmac"].startswith("hmac-sha256:"), ex
    finally:
        rx.stop()


if __name__ == "__main__":
    run_tests(globals())
