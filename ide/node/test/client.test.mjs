// The client against a real agentd: tests/integration/test_node.py starts one
// and sets AGENTD_SOCKET and AGENTD_TEST_TMP (a directory for workspaces).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync, existsSync } from "node:fs";
import { join } from "node:path";
import { tmpdir } from "node:os";

import { connect, AgentdError, defaultSocketPath } from "../src/index.js";

const live = Boolean(process.env.AGENTD_SOCKET);
const opts = { skip: live ? false : "no agentd: set AGENTD_SOCKET (tests/integration/test_node.py does)" };
let c;

before(async () => {
  if (live) c = await connect();
});
after(() => c?.close());

function workspace() {
  const ws = mkdtempSync(join(process.env.AGENTD_TEST_TMP || tmpdir(), "ws-"));
  writeFileSync(join(ws, "keep.txt"), "host\n");
  writeFileSync(join(ws, "edit.txt"), "before\n");
  return ws;
}

// Reads events (without closing the iterator) until pred holds; fails after 30 s.
async function until(iter, pred, what) {
  const seen = [];
  const deadline = Date.now() + 30000;
  for (;;) {
    let timer;
    const timeout = new Promise((resolve) => { timer = setTimeout(resolve, Math.max(0, deadline - Date.now()), "timeout"); });
    const r = await Promise.race([iter.next(), timeout]);
    clearTimeout(timer);
    if (r === "timeout" || r.done) {
      assert.fail(`${r === "timeout" ? "no" : "events ended before"} ${what}: ${JSON.stringify(seen.map((e) => e.method))}`);
    }
    seen.push(r.value);
    if (pred(r.value, seen)) return seen;
  }
}

test("defaultSocketPath follows AGENTD_SOCKET, then XDG_RUNTIME_DIR", () => {
  assert.equal(defaultSocketPath({ AGENTD_SOCKET: "/x/s" }), "/x/s");
  assert.equal(defaultSocketPath({ XDG_RUNTIME_DIR: "/run/user/7" }), "/run/user/7/agentd/agentd.sock");
});

test("ping and status through the generated functions", opts, async () => {
  const p = await c.agentdPing();
  assert.equal(p.protocol, 1);
  assert.equal(typeof p.version, "string");
  const s = await c.agentdStatus({});
  assert.equal(s.protocol, 1);
  assert.ok(Array.isArray(await c.taskList()));
});

test("errors reject with AgentdError {code, detail, kind}", opts, async () => {
  await assert.rejects(c.taskShow({ name: "nope" }), (e) => {
    assert.ok(e instanceof AgentdError);
    assert.equal(e.code, "not_found");
    assert.equal(e.kind, 0);
    assert.match(e.detail, /nope/);
    return true;
  });
  await assert.rejects(c.call("no.such.method"), (e) => e.code === "method_not_found" && e.kind === 1);
  await assert.rejects(c.taskShow({}), (e) => e.code === "invalid_params" && e.kind === 1 && /name/.test(e.detail));
  // The connection stays usable after errors.
  assert.equal((await c.agentdPing()).protocol, 1);
});

test("concurrent calls are matched to their replies", opts, async () => {
  const rs = await Promise.allSettled([c.agentdPing(), c.taskShow({ name: "nope" }), c.sandboxList(), c.agentdPing()]);
  assert.equal(rs[0].value.protocol, 1);
  assert.equal(rs[1].reason.code, "not_found");
  assert.ok(Array.isArray(rs[2].value));
  assert.equal(rs[3].value.protocol, 1);
});

test("spawn streams output as events; diff, promote a subset, discard", opts, async () => {
  const ws = workspace();
  const ev = await c.events();
  const script = "echo out-from-sandbox; echo err-from-sandbox >&2; echo after > edit.txt; echo one > one.txt; echo two > two.txt";
  const r = await c.sandboxSpawn({ argv: ["/bin/sh", "-c", script], workspace: ws });
  assert.match(r.id, /^[0-9a-zA-Z-]+$/);
  const seen = await until(ev, (e) => e.method === "sandbox.state" && e.params.id === r.id &&
    (e.params.state === "exited" || e.params.state === "killed"), "the sandbox ended");
  const text = (stream) => Buffer.concat(seen.filter((e) => e.method === "sandbox.output" && e.params.id === r.id &&
    e.params.stream === stream).map((e) => Buffer.from(e.params.data))).toString();
  assert.equal(text("stdout"), "out-from-sandbox\n");
  assert.equal(text("stderr"), "err-from-sandbox\n");
  assert.equal(seen.at(-1).params.exit_code, 0);

  const diff = await c.sandboxDiff({ id: r.id, patch: true });
  const byPath = Object.fromEntries(diff.map((d) => [d.path, d]));
  assert.deepEqual(Object.keys(byPath).sort(), ["edit.txt", "one.txt", "two.txt"]);
  assert.equal(byPath["edit.txt"].change, "modified");
  assert.equal(byPath["one.txt"].change, "added");
  assert.equal(readFileSync(byPath["edit.txt"].layer_path, "utf8"), "after\n");
  assert.equal(readFileSync(byPath["edit.txt"].host_path, "utf8"), "before\n");

  const res = await c.sandboxPromote({ id: r.id, paths: ["edit.txt", "one.txt"] });
  assert.deepEqual([...res.promoted].map((p) => p.path ?? p).sort(), ["edit.txt", "one.txt"]);
  assert.equal(readFileSync(join(ws, "edit.txt"), "utf8"), "after\n");
  assert.ok(!existsSync(join(ws, "two.txt")));
  assert.deepEqual((await c.sandboxDiff({ id: r.id })).map((d) => d.path), ["two.txt"]);
  assert.deepEqual(await c.sandboxDiscard({ id: r.id }), {});
  await assert.rejects(c.sandboxDiff({ id: r.id }), (e) => e.code === "not_found");
  assert.ok(!existsSync(join(ws, "two.txt")));
});

test("an events iterator ends when the loop breaks, and with the connection", opts, async () => {
  const c2 = await connect();
  const ev = await c2.events();
  const done = (async () => { for await (const _ of ev) { /* nothing arrives */ } return "ended"; })();
  c2.close();
  assert.equal(await done, "ended");
  await assert.rejects(c2.agentdPing(), /closed/);
});

test("approvals: approval.requested, approval.list, approval.answer, approval.answered", opts, async (t) => {
  let list;
  try {
    list = await c.call("approval.list", {});
  } catch (e) {
    if (e.code === "method_not_found") return t.skip("this agentd has no approval.list (method_not_found)");
    throw e;
  }
  assert.ok(Array.isArray(list));
  await assert.rejects(c.call("approval.answer", { id: "no-such-approval", decision: "deny" }),
    (e) => e.code === "not_found" || e.code === "invalid_params");
  const port = process.env.AGENTD_TEST_UPSTREAM_PORT;
  assert.ok(port, "agentd has approvals but test_node.py set up no 'ask' task and upstream");
  const ws = workspace();
  const ev = await c.events();
  const curl = `export NO_PROXY= no_proxy=; curl -s -m 40 -o /dev/null -w 'code=%{http_code}\\n' http://127.0.0.1:${port}/`;
  const r = await c.sandboxSpawn({ task: "ask", argv: ["/bin/sh", "-c", curl], workspace: ws });
  const seen = await until(ev, (e) => e.method === "approval.requested" && e.params.sandbox === r.id, "approval.requested");
  const req = seen.at(-1).params;
  assert.equal(req.task, "ask");
  assert.equal(req.kind, "network");
  assert.equal(req.what, `127.0.0.1:${port}`);
  assert.ok(req.expires_at > req.requested_at);
  assert.deepEqual((await c.call("approval.list", {})).map((a) => a.id), [req.id]);
  assert.deepEqual(await c.call("approval.answer", { id: req.id, decision: "approve", scope: "once" }), {});
  const rest = await until(ev, (e, all) => e.method === "sandbox.state" && e.params.id === r.id && e.params.state === "exited" &&
    all.some((x) => x.method === "approval.answered"), "the answer and the sandbox's end");
  const ans = rest.find((e) => e.method === "approval.answered").params;
  assert.equal(ans.id, req.id);
  assert.equal(ans.decision, "approve");
  assert.equal(ans.scope, "once");
  const out = Buffer.from((await c.sandboxLogs({ id: r.id })).stdout).toString();
  assert.equal(out, "code=200\n");
});
