"""The wire protocol's edges (CONTRACT §2): errors v2 as [kind, "code: message"]
as they travel, agentctl's reading of them, the params forms that mean
"all defaults", and nil for a required parameter."""
import os
import re
import sys

import msgpack

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Daemon, run_tests  # noqa: E402

METHODS_DEF = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "proto", "methods.def")


def methods():
    """(name, [(key, type, optional)]) from the one method table."""
    text = open(METHODS_DEF).read()
    out = []
    for name, params in re.findall(r'METHOD\("([^"]+)",\s*\w+,\s*[^,]+,\s*PARAMS\(((?:\s*(?:REQ|OPT)\(\w+, \w+\))*)\s*\)', text):
        spec = [(key, t, kind == "OPT") for kind, key, t in re.findall(r'(REQ|OPT)\((\w+), (\w+)\)', params)]
        out.append((name, spec))
    assert len(out) >= 20, out
    return out


def raw_call(c, method, params_array, msgid=41):
    c.send_raw(msgpack.packb([0, msgid, method, params_array], use_bin_type=True))
    while True:
        msg = c.read_message()
        assert msg is not None, "connection closed"
        if msg[0] == 1 and msg[1] == msgid:
            return msg


def test_error_wire_format_raw():
    with Daemon() as d:
        c = d.client()
        msg = raw_call(c, "nope.nope", [])
        assert msg == [1, 41, [1, "method_not_found: unknown method 'nope.nope'"], None], msg
        msg = raw_call(c, "task.show", [{"name": "nope"}])
        assert msg[2][0] == 0 and msg[2][1].startswith("not_found: "), msg
        assert msg[3] is None
        msg = raw_call(c, "task.show", [{"name": 7}])
        assert msg[2] == [1, "invalid_params: parameter 'name' must be a string"], msg
        msg = raw_call(c, "credentials.get", [])
        assert msg[2][0] == 0 and msg[2][1].startswith("unauthorized: "), msg
        # The harness gives other tests the normalised form.
        err, res = c.call("task.show", {"name": "nope"})
        assert err["code"] == "not_found" and err["kind"] == 0 and err["message"] == msg_text(c), err
        # An unreadable message: msgid nil, kind 1, then closed.
        c.send_raw(b"\xa5hello")
        msg = c.read_message()
        assert msg[:2] == [1, None] and msg[2][0] == 1 and msg[2][1].startswith("invalid_request: "), msg
        assert c.read_message() is None


def msg_text(c):
    return raw_call(c, "task.show", [{"name": "nope"}], msgid=42)[2][1].split(": ", 1)[1]


def test_agentctl_prints_code_and_message():
    with Daemon() as d:
        p = d.agentctl("task", "show", "nope")
        assert p.returncode == 1, p
        assert re.match(rb"agentctl: not_found: no task named 'nope'", p.stderr), p.stderr
        p = d.agentctl("wait", "no-such-sandbox")
        assert p.returncode == 1 and p.stderr.startswith(b"agentctl: not_found: "), p


def test_all_defaults_forms():
    with Daemon() as d:
        c = d.client()
        for params in ([], [{}], [[]], [None]):
            msg = raw_call(c, "agentd.ping", params)
            assert msg[2] is None and "version" in msg[3], (params, msg)
            msg = raw_call(c, "task.list", params)
            assert msg[2] is None and isinstance(msg[3], list), (params, msg)
        # A required parameter is still required in every spelling.
        for params in ([], [{}], [[]]):
            msg = raw_call(c, "task.show", params)
            assert msg[2] == [1, "invalid_params: missing parameter 'name'"], (params, msg)
        # An empty array where a map is taken is an empty map.
        ws = os.path.join(d.tmp, "ws")
        os.makedirs(ws)
        msg = raw_call(c, "sandbox.spawn", [{"argv": ["/bin/true"], "env": [], "workspace": ws}])
        assert msg[2] is None, msg
        res = c.ok("sandbox.wait", {"id": msg[3]["id"]})
        assert res["exit_code"] == 0, res
        # A non-empty array is not a map.
        msg = raw_call(c, "sandbox.spawn", [{"argv": ["/bin/true"], "env": ["A=1"], "workspace": ws}])
        assert msg[2] == [1, "invalid_params: parameter 'env' must be a map of strings to strings"], msg


def sample(t):
    return {"STR": "x", "SECRET": "x", "BOOL": True, "UINT": 1, "INT": 1, "STRV": [], "STRMAP": {}, "ANY": 1}[t]


def test_required_nil_every_method():
    with Daemon() as d:
        c = d.client()
        n = 0
        for name, spec in methods():
            required = [k for k, t, opt in spec if not opt]
            for nil_key in required:
                params = {k: (None if k == nil_key else sample(t)) for k, t, opt in spec if not opt}
                err, res = c.call(name, params)
                assert err is not None and err["code"] == "invalid_params", (name, params, err, res)
                assert f"'{nil_key}'" in err["message"], (name, err)
                n += 1
        assert n >= 9, n
        # The reported case: task.show {name: nil} said "internal: Cannot allocate memory".
        err, _ = c.call("task.show", {"name": None})
        assert err["code"] == "invalid_params" and err["kind"] == 1, err
        assert d.proc.poll() is None


if __name__ == "__main__":
    run_tests(globals())
