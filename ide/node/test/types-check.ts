// Compiled (not run) by test/types.test.mjs with tsc --noEmit: the published
// types accept correct use of the client and reject wrong use.
import { connect, AgentdError, METHODS, type Client, type Notification, type SandboxSpawnParams } from "../src/index.js";

export async function use(): Promise<void> {
  const c: Client = await connect({ path: "/run/user/1000/agentd/agentd.sock" });
  await c.agentdPing();
  await c.taskShow({ name: "default" });
  const spawn: SandboxSpawnParams = { argv: ["make", "test"], workspace: "/src", env: { A: "b" }, detach: true };
  const { id } = await c.sandboxSpawn(spawn);
  await c.sandboxPromote({ id, paths: ["a.c"], include_hooks: false });
  await c.call("sandbox.diff", { id, patch: true });
  await c.call("approval.list", {}); // newer methods through call()
  for await (const ev of await c.events({ sandbox: id })) {
    const n: Notification = ev;
    if (n.method === "sandbox.output") {
      const data: Uint8Array = n.params.data;
      void data;
    }
    break;
  }
  try {
    await c.sandboxKill({ id });
  } catch (e) {
    if (e instanceof AgentdError) {
      const code: string = e.code;
      const kind: number = e.kind;
      void code, kind;
    }
  }
  const names: string[] = METHODS.map((m) => m.name);
  void names;

  // @ts-expect-error task.show needs its name
  await c.taskShow({});
  // @ts-expect-error argv is a list of strings
  await c.sandboxSpawn({ argv: "make test" });
  // @ts-expect-error no such parameter
  await c.sandboxList({ all: true });
  // @ts-expect-error known methods are checked by name
  await c.call("sandbox.promote", { id, paths: "a.c" });
  // @ts-expect-error no such function
  await c.sandboxFrobnicate();
  c.close();
}
