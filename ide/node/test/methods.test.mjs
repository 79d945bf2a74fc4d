// The generated method list is current with proto/methods.def, and the client
// exposes every method of it under its camelCase name.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

import { Client, METHODS } from "../src/index.js";
import { parseMethods, camel } from "../scripts/gen-methods.mjs";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const def = join(root, "..", "..", "proto", "methods.def");

test("src/methods.js and src/methods.d.ts are generated from the current proto/methods.def", () => {
  const r = spawnSync(process.execPath, [join(root, "scripts", "gen-methods.mjs"), "--check"], { encoding: "utf8" });
  assert.equal(r.status, 0, r.stderr);
});

test("every METHOD line is in the list, with its parameters", () => {
  const text = readFileSync(def, "utf8");
  const names = [...text.matchAll(/^METHOD\("([^"]+)"/gm)].map((m) => m[1]);
  assert.deepEqual(METHODS.map((m) => m.name), names);
  const spawn = parseMethods(text).find((m) => m.name === "sandbox.spawn");
  assert.deepEqual(spawn.params.find((p) => p.key === "argv"), { key: "argv", type: "[string]", tsType: "string[]", optional: true });
  assert.equal(METHODS.find((m) => m.name === "task.show").params[0].optional, false);
});

test("the client has one function per method", () => {
  for (const m of METHODS) {
    assert.equal(m.fn, camel(m.name));
    assert.equal(typeof Client.prototype[m.fn], "function", m.fn);
  }
  assert.equal(camel("credentials.revoke"), "credentialsRevoke");
  assert.equal(camel("agentd.unlock"), "agentdUnlock");
});
