"""The RPC server's connection lifecycle under hostile peers: short malformed
messages followed at once by a hang-up, on the main socket and on a sandbox's
$AGENTD_BROKER socket from inside the sandbox. agentd must keep serving (it
used to abort in libuv: a reply failed, closed the connection, and the poll
of the closing connection was restarted)."""
import os
import socket
import struct
import sys
import time

import msgpack

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Daemon, run_tests  # noqa: E402


def _req(method, params=None, msgid=1):
    return msgpack.packb([0, msgid, method, [] if params is None else [params]], use_bin_type=True)


# Each a byte string sent in one piece, then the peer hangs up.
VARIANTS = [
    b"\xa5hello",                       # a msgpack string, not an array
    b"\x91\x00",                        # [0]
    b"\x90",                            # []
    b"\x93\x00\x01\x90",                # [0, 1, []]
    b"\x94\x00\xc0\xa4ping\x90",        # nil msgid
    b"\x94\x05\x01\xa4ping\x90",        # bad type
    b"\xc1",                            # never-used byte
    b"\x80",                            # {}
    b"\x00",                            # 0
    b"\xc0",                            # nil
    b"\xdb\xff\xff\xff\xff",            # a 4 GiB string header
    b"\xdd\xff\xff\xff\xff",            # a 4G-element array header
    b"\x94\x00\x01\xa4ping",            # truncated request
    b"\x94\x00\x01",                    # truncated header
    b"\x91" * 40 + b"\x00",             # too deep
    _req("nope.nope"),                  # unknown method
    _req("agentd.ping"),                # a valid request, gone before its reply
    _req("task.show", {"name": 7}),     # invalid params
    _req("credentials.get"),            # unauthorized on the host socket
    _req("sandbox.wait", {"id": "nope"}),
    msgpack.packb([2, "x", []]),        # a notification
    msgpack.packb([1, 1, None, None]),  # a response
    _req("agentd.ping") * 200,          # many replies to a peer that left
    _req("agentd.ping") + b"\xa5hello", # a good request, then garbage
    b"\xa5hello" + _req("agentd.ping"),
]


def hangup(path, data, how):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    try:
        s.sendall(data)
    except OSError:
        pass  # the daemon may already have answered and closed
    if how == "shutdown":
        s.shutdown(socket.SHUT_WR)
        time.sleep(0.01)
    elif how == "linger":
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    elif how == "read-some":
        s.settimeout(0.2)
        try:
            s.recv(1)
        except OSError:
            pass
    s.close()


def assert_serving(d):
    assert d.proc.poll() is None, f"agentd died: {d.proc.returncode}\n{d.read_log()[-3000:]}"
    c = d.client()
    assert "version" in c.ok("agentd.ping")
    c.close()


def test_malformed_then_hangup_main_socket():
    with Daemon() as d:
        for rnd in range(3):
            for how in ("close", "shutdown", "linger", "read-some"):
                for data in VARIANTS:
                    hangup(d.socket, data, how)
                # The daemon works through them asynchronously: give it a moment, then check.
                time.sleep(0.05)
                assert_serving(d)
        # Many at once, before the daemon gets to any of them.
        socks = []
        for data in VARIANTS * 4:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(d.socket)
            s.sendall(data)
            socks.append(s)
        for s in socks:
            s.close()
        time.sleep(0.2)
        assert_serving(d)
        # No connection is leaked: the fd count comes back down.
        deadline = time.time() + 5
        while d.n_fds() > 40 and time.time() < deadline:
            time.sleep(0.05)
        assert d.n_fds() <= 40, d.n_fds()


INSIDE = r"""
import os, socket, struct, sys, time, msgpack
variants = [bytes.fromhex(h) for h in sys.argv[1:]]
p = os.environ['AGENTD_BROKER']
for how in ("close", "shutdown", "linger"):
    for data in variants:
        s = socket.socket(socket.AF_UNIX); s.connect(p)
        try:
            s.sendall(data)
        except OSError:
            pass
        if how == "shutdown":
            s.shutdown(socket.SHUT_WR)
        elif how == "linger":
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
# The broker still answers this sandbox (once the daemon has seen the hang-ups,
# the sandbox's connection allowance is free again).
for attempt in range(100):
    time.sleep(0.1)
    s = socket.socket(socket.AF_UNIX); s.connect(p)
    s.sendall(msgpack.packb([0, 9, "credentials.get", []]))
    u = msgpack.Unpacker(raw=False)
    got = []
    while not got:
        b = s.recv(65536)
        if not b:
            break
        u.feed(b)
        got = [m for m in u]
    s.close()
    if got and got[0][2] is not None and got[0][2][1].startswith("limit_exceeded"):
        continue
    break
print("reply", got[0][1], "error" if got[0][2] is not None else "ok") if got else print("closed")
"""


def test_malformed_then_hangup_broker_socket():
    """From inside a sandbox, on $AGENTD_BROKER (needs swtpm and the Vault dev server)."""
    import shutil
    if not shutil.which("swtpm"):
        print("swtpm not installed")
        return "skip"
    from test_broker import enrolled_daemon
    with enrolled_daemon() as (tpm, vault, d, ws, c):
        args = [v.hex() for v in VARIANTS]
        p = d.agentctl("spawn", "--task", "creds", "--", "/usr/bin/python3", "-c", INSIDE, *args, cwd=ws, timeout=120)
        assert p.returncode == 0, (p, d.read_log()[-3000:])
        assert p.stdout.decode().strip() == "reply 9 ok", (p, d.read_log()[-3000:])
        assert_serving(d)


ASK_EVERY = r"""
import json, os, socket, sys, msgpack
p = os.environ['AGENTD_BROKER']
out = {}
s = socket.socket(socket.AF_UNIX); s.connect(p)
replies = msgpack.Unpacker(s.makefile("rb", buffering=0), raw=False)
for i, (method, params) in enumerate(json.loads(sys.argv[1])):
    s.sendall(msgpack.packb([0, i, method, [params]]))
    msg = next(replies)
    out[method] = msg[2] if msg[1] == i else ["unexpected reply", msg]
print(json.dumps(out))
"""


def method_flags():
    """{method: set of RPC_* flags} from proto/methods.def."""
    import re
    from test_wire import METHODS_DEF
    text = open(METHODS_DEF).read()
    return {name: {f.strip() for f in flags.split("|")}
            for name, flags in re.findall(r'METHOD\("([^"]+)",\s*\w+,\s*([^,]+),', text)}


def test_host_only_methods_refused_on_broker_socket():
    """Every method of the table is host-only or sandbox-only, and dispatch holds
    it to that: each host-only method, called with valid parameters on a
    sandbox's $AGENTD_BROKER, is unauthorized (it never runs), and each
    sandbox-only one is unauthorized on the host socket (needs swtpm and the
    Vault dev server)."""
    import json
    import shutil
    from test_wire import methods, sample
    if not shutil.which("swtpm"):
        print("swtpm not installed")
        return "skip"
    from test_broker import enrolled_daemon
    flags = method_flags()
    assert all(("RPC_HOST_ONLY" in f) != ("RPC_SANDBOX_ONLY" in f) for f in flags.values()), flags
    host = [(name, {k: sample(t) for k, t, opt in spec if not opt})
            for name, spec in methods() if "RPC_HOST_ONLY" in flags[name]]
    assert len(host) >= 20 and "agentd.ping" in dict(host) and "task.show" in dict(host), host
    with enrolled_daemon() as (tpm, vault, d, ws, c):
        p = d.agentctl("spawn", "--task", "creds", "--", "/usr/bin/python3", "-c", ASK_EVERY, json.dumps(host),
                       cwd=ws, timeout=120)
        assert p.returncode == 0, (p, d.read_log()[-3000:])
        got = json.loads(p.stdout.decode())
        for name, _ in host:
            assert got[name] == [0, f"unauthorized: {name} is not available from inside a sandbox"], (name, got[name])
        for name in (n for n, f in flags.items() if "RPC_SANDBOX_ONLY" in f):
            err, _ = c.call(name, {"policies": ["x"]} if name == "credentials.request" else {})
            assert err["code"] == "unauthorized" and "$AGENTD_BROKER" in err["message"], (name, err)
        assert_serving(d)


def test_agentd_memory_not_readable_by_its_user():
    """agentd is not dumpable: another process of the same user cannot read its
    memory, environment or fd table (and it leaves no core dump)."""
    with Daemon(env={"AGENTD_TEST_CANARY": "canary-7f3a"}) as d:
        pid = d.proc.pid
        for name in ("mem", "environ", "maps", "auxv"):
            try:
                with open(f"/proc/{pid}/{name}", "rb") as f:
                    data = f.read(4096)
            except PermissionError:
                continue
            raise AssertionError(f"/proc/{pid}/{name} readable by uid {os.getuid()}: {data[:64]!r}")
        try:
            os.listdir(f"/proc/{pid}/fd")
            raise AssertionError("fd table listable")
        except PermissionError:
            pass
        # The files belong to root now (the kernel's sign of a non-dumpable process).
        assert os.stat(f"/proc/{pid}/environ").st_uid == 0
        # And it still serves, fd accounting included.
        assert d.n_fds() > 0
        assert_serving(d)


def broker_daemon(extra_conf):
    """swtpm + the Vault dev server + agentd (with extra [Daemon] keys), enrolled."""
    import contextlib
    import test_broker as tb

    @contextlib.contextmanager
    def cm():
        tpm, vault, d = tb.setup()
        with open(os.path.join(d.config_home, "agentd", "agentd.conf"), "a") as f:
            f.write("[Daemon]\n" + extra_conf)
        try:
            d.start()
            tb.enroll(d)
            tb.wait_vault_ok(d)
            yield d, tb.workspace(d)
        finally:
            d.stop()
            vault.stop()
            tpm.stop()
    return cm()


HOLD = r"""
import os, socket, sys, time, msgpack
p = os.environ['AGENTD_BROKER']
socks, refused = [], 0
for i in range(int(sys.argv[1])):
    s = socket.socket(socket.AF_UNIX); s.connect(p); socks.append(s)
time.sleep(0.5)
for s in socks:
    s.setblocking(False)
    try:
        b = s.recv(4096)
        if b and 'limit_exceeded' in msgpack.unpackb(b, raw=False)[2][1]:
            refused += 1
    except BlockingIOError:
        pass
print('held', len(socks), 'refused', refused, flush=True)
time.sleep(60)
"""


def test_sandbox_connections_do_not_crowd_out_host():
    """A sandbox holding many connections on $AGENTD_BROKER: it gets its own small
    allowance, the host's ping and revoke still work."""
    import shutil
    if not shutil.which("swtpm"):
        print("swtpm not installed")
        return "skip"
    with broker_daemon("MaxConnections=20\nMaxConnectionsPerSandbox=4\n") as (d, ws):
        c = d.client()
        res = c.ok("sandbox.spawn", {"task": "creds", "argv": ["/usr/bin/python3", "-c", HOLD, "100"],
                                     "workspace": ws})
        sid = res["id"]
        deadline = time.time() + 30
        out = b""
        while b"held" not in out and time.time() < deadline:
            out = c.ok("sandbox.logs", {"id": sid})["stdout"]
            time.sleep(0.1)
        assert out.decode().split() == ["held", "100", "refused", "96"], (out, d.read_log()[-2000:])
        p = d.agentctl("ping")
        assert p.returncode == 0, p
        p = d.agentctl("revoke", "--sandbox", sid)
        assert p.returncode == 0, (p, d.read_log()[-2000:])
        assert c.ok("sandbox.wait", {"id": sid})["signal"] != 0
        assert_serving(d)


LOOP = r"""
import os, socket, time, msgpack
p = os.environ['AGENTD_BROKER']
s = socket.socket(socket.AF_UNIX); s.connect(p)
u = msgpack.Unpacker(raw=False)
ok = limited = 0
t0 = time.time()
for i in range(1, 3001):
    s.sendall(msgpack.packb([0, i, "credentials.get", []]))
    while True:
        m = next(u, None)
        if m is not None:
            break
        u.feed(s.recv(65536))
    if m[2] is None:
        ok += 1
    elif m[2][1].startswith("limit_exceeded: "):
        limited += 1
print(ok, limited, round(time.time() - t0, 3))
"""


def test_sandbox_request_flood_is_rate_limited_and_aggregated_in_audit():
    import shutil
    if not shutil.which("swtpm"):
        print("swtpm not installed")
        return "skip"
    with broker_daemon("SandboxRequestRate=5\n") as (d, ws):
        c = d.client()
        res = c.ok("sandbox.spawn", {"task": "creds", "argv": ["/usr/bin/python3", "-c", LOOP], "workspace": ws})
        sid = res["id"]
        assert c.ok("sandbox.wait", {"id": sid})["exit_code"] == 0, c.ok("sandbox.logs", {"id": sid})
        ok, limited, secs = c.ok("sandbox.logs", {"id": sid})["stdout"].decode().split()
        ok, limited, secs = int(ok), int(limited), float(secs)
        assert ok + limited == 3000, (ok, limited)
        # A burst of 10, then 5 per second.
        assert 10 <= ok <= 10 + 5 * (secs + 1), (ok, limited, secs)
        deadline = time.time() + 5
        while True:
            recs = c.ok("audit.query", {"sandbox": sid, "limit": 10000})
            gets = [r for r in recs if r["type"] == "rpc" and r["fields"]["method"] == "credentials.get"]
            supp = [r for r in recs if r["type"] == "rpc.suppressed"]
            if sum(r["fields"]["suppressed"] for r in supp) == limited or time.time() > deadline:
                break
            time.sleep(0.1)
        # One record per admitted request, the refused ones only counted.
        assert len(gets) == ok, (len(gets), ok)
        assert sum(r["fields"]["suppressed"] for r in supp) == limited, supp
        assert all(r["fields"]["method"] == "credentials.get" for r in supp)
        # An aggregate closes when a request is admitted again (at most one per
        # admitted request after the burst of 10), when its interval ends, and
        # when the sandbox goes: thousands of refusals, a handful of records.
        assert len(supp) <= (ok - 10) + secs + 2, (len(supp), ok, secs)
        v = c.ok("audit.verify")
        assert v["ok"] is True, v


if __name__ == "__main__":
    run_tests(globals())
