// Types of the agentd client (src/index.js). Method signatures come from
// methods.d.ts, generated from proto/methods.def.
// (No dependency on @types/node: the socket is typed loosely.)
import type { GeneratedMethods, MethodName, MethodParams } from "./methods.js";

export { METHODS } from "./methods.js";
export type * from "./methods.js";

/** An error response: `code` is stable (proto/PROTOCOL.md, Errors), `detail` is for people. */
export declare class AgentdError extends Error {
  readonly code: string;
  readonly detail: string;
  /** 1 for invalid_request, invalid_params, method_not_found; else 0. */
  readonly kind: number;
  readonly method: string;
}

export interface SandboxOutput {
  id: string;
  stream: "stdout" | "stderr";
  data: Uint8Array;
}

export interface Approval {
  id: string;
  sandbox: string;
  task: string;
  kind: "network" | "credentials";
  what: string;
  requested_at: number;
  expires_at: number;
}

export type Notification =
  | { method: "sandbox.state"; params: { id: string; state: string; [k: string]: unknown } }
  | { method: "sandbox.output"; params: SandboxOutput }
  | { method: "alert"; params: Record<string, unknown> }
  | { method: "approval.requested"; params: Approval }
  | { method: "approval.answered"; params: { id: string; decision: "approve" | "deny"; scope: string; by: string } };

export interface Client extends GeneratedMethods {}
export declare class Client {
  /** sock: a connected node:net Socket. */
  constructor(sock: unknown);
  readonly closed: boolean;
  /** Calls any method by name (also ones newer than this package). */
  call<M extends MethodName>(method: M, params?: MethodParams[M]): Promise<any>;
  call<M extends string>(method: M extends MethodName ? never : M, params?: object): Promise<any>;
  /** events.subscribe, then every notification until the loop breaks or the connection closes. */
  events(filter?: { sandbox?: string }): Promise<AsyncIterableIterator<Notification>>;
  close(): void;
  on(event: "notification", listener: (n: Notification) => void): this;
  on(event: "close", listener: (error: Error | null) => void): this;
  off(event: "notification" | "close", listener: (...args: any[]) => void): this;
  once(event: "notification", listener: (n: Notification) => void): this;
  once(event: "close", listener: (error: Error | null) => void): this;
}

export declare function defaultSocketPath(env?: Record<string, string | undefined>): string;
export declare function connect(opts?: { path?: string }): Promise<Client>;
