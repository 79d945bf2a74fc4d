// The .d.ts files (handwritten index.d.ts + generated methods.d.ts) compile
// under strict TypeScript, accept correct use and reject wrong use
// (test/types-check.ts, with @ts-expect-error lines).
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");

test("types: tsc --noEmit on test/types-check.ts", () => {
  const tsc = join(root, "node_modules", "typescript", "bin", "tsc");
  const r = spawnSync(process.execPath, [tsc, "-p", join(root, "test", "tsconfig.json")], { encoding: "utf8", cwd: root });
  assert.equal(r.status, 0, r.stdout + r.stderr);
});
