// A small client for agentd's msgpack-rpc socket (proto/PROTOCOL.md).
// Every method of proto/methods.def is a camelCase function on Client
// (generated into methods.js); notifications come as an async iterator.
import { EventEmitter } from "node:events";
import { createConnection } from "node:net";
import { join } from "node:path";
import { Encoder, decodeMultiStream } from "@msgpack/msgpack";

import { METHODS } from "./methods.js";

export { METHODS };

const encoder = new Encoder({ ignoreUndefined: true });

/** An error response of agentd: `code` is the stable machine-readable part. */
export class AgentdError extends Error {
  /**
   * @param {string} code
   * @param {string} message
   * @param {number} kind
   * @param {string} method
   */
  constructor(code, message, kind, method) {
    super(`${method}: ${code}: ${message}`);
    this.name = "AgentdError";
    this.code = code;
    this.detail = message;
    this.kind = kind;
    this.method = method;
  }
}

/** The socket path agentd listens on: $AGENTD_SOCKET, else $XDG_RUNTIME_DIR/agentd/agentd.sock. */
export function defaultSocketPath(env = process.env) {
  if (env.AGENTD_SOCKET) return env.AGENTD_SOCKET;
  const runtime = env.XDG_RUNTIME_DIR || `/run/user/${process.getuid ? process.getuid() : 0}`;
  return join(runtime, "agentd", "agentd.sock");
}

/** Errors v2 on the wire: [kind, "code: message"]. */
function toError(raw, method) {
  if (Array.isArray(raw) && raw.length === 2 && typeof raw[1] === "string") {
    const text = raw[1];
    const i = text.indexOf(": ");
    return i > 0 ? new AgentdError(text.slice(0, i), text.slice(i + 2), Number(raw[0]), method)
      : new AgentdError("internal", text, Number(raw[0]), method);
  }
  return new AgentdError("invalid_request", `error of unknown shape: ${JSON.stringify(raw)}`, 0, method);
}

export class Client extends EventEmitter {
  /** @param {import("node:net").Socket} sock */
  constructor(sock) {
    super();
    this.sock = sock;
    this.nextId = 1;
    /** @type {Map<number, {resolve: Function, reject: Function, method: string}>} */
    this.pending = new Map();
    /** @type {Set<EventQueue>} */
    this.queues = new Set();
    this.closed = false;
    this.closeError = null;
    sock.on("error", (e) => this._fail(e));
    sock.on("close", () => this._fail(null));
    this._readLoop();
  }

  async _readLoop() {
    try {
      for await (const msg of decodeMultiStream(this.sock)) this._onMessage(msg);
    } catch (e) {
      this._fail(e);
      this.sock.destroy();
    }
  }

  _onMessage(msg) {
    if (!Array.isArray(msg)) return this._fail(new Error(`agentd sent a non-array message`));
    if (msg[0] === 1) {
      const p = this.pending.get(msg[1]);
      if (!p) return;
      this.pending.delete(msg[1]);
      if (msg[2] != null) p.reject(toError(msg[2], p.method));
      else p.resolve(msg[3]);
    } else if (msg[0] === 2) {
      const ev = { method: msg[1], params: Array.isArray(msg[2]) ? msg[2][0] : msg[2] };
      this.emit("notification", ev);
      for (const q of this.queues) q.push(ev);
    }
  }

  _fail(e) {
    if (this.closed) return;
    this.closed = true;
    this.closeError = e;
    const err = e ?? new Error("agentd closed the connection");
    for (const p of this.pending.values()) p.reject(err);
    this.pending.clear();
    for (const q of this.queues) q.end(e);
    this.emit("close", e);
  }

  /**
   * Calls a method by name; resolves with its result, rejects with AgentdError.
   * @param {string} method
   * @param {object} [params]
   */
  call(method, params) {
    if (this.closed) return Promise.reject(this.closeError ?? new Error("connection closed"));
    const id = this.nextId;
    this.nextId = this.nextId >= 0xffffffff ? 1 : this.nextId + 1;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject, method });
      this.sock.write(encoder.encode([0, id, method, params === undefined ? [] : [params]]));
    });
  }

  /**
   * Subscribes (events.subscribe) and returns an async iterator of
   * {method, params} notifications: sandbox.state, sandbox.output, alert,
   * approval.requested, approval.answered. Breaking out of the loop stops it.
   * @param {{sandbox?: string}} [filter]
   */
  async events(filter) {
    const q = new EventQueue(() => this.queues.delete(q));
    this.queues.add(q);
    try {
      await this.call("events.subscribe", filter ?? {});
    } catch (e) {
      this.queues.delete(q);
      throw e;
    }
    return q;
  }

  close() {
    this.sock.end();
    this._fail(null);
  }
}

for (const m of METHODS) {
  Object.defineProperty(Client.prototype, m.fn, {
    value: function (params) { return this.call(m.name, params); },
    writable: true,
    configurable: true,
  });
}

/** An async iterator fed by the connection. */
class EventQueue {
  constructor(onDone) {
    this.items = [];
    this.waiters = [];
    this.done = false;
    this.error = null;
    this.onDone = onDone;
  }

  push(ev) {
    if (this.done) return;
    const w = this.waiters.shift();
    if (w) w.resolve({ value: ev, done: false });
    else this.items.push(ev);
  }

  end(e) {
    if (this.done) return;
    this.done = true;
    this.error = e ?? null;
    for (const w of this.waiters.splice(0)) e ? w.reject(e) : w.resolve({ value: undefined, done: true });
    this.onDone();
  }

  next() {
    if (this.items.length) return Promise.resolve({ value: this.items.shift(), done: false });
    if (this.done) return this.error ? Promise.reject(this.error) : Promise.resolve({ value: undefined, done: true });
    return new Promise((resolve, reject) => this.waiters.push({ resolve, reject }));
  }

  return() {
    this.end(null);
    return Promise.resolve({ value: undefined, done: true });
  }

  [Symbol.asyncIterator]() {
    return this;
  }
}

/**
 * Connects to agentd.
 * @param {{path?: string}} [opts]
 * @returns {Promise<Client>}
 */
export function connect(opts = {}) {
  const path = opts.path ?? defaultSocketPath();
  return new Promise((resolve, reject) => {
    const sock = createConnection(path);
    sock.once("error", reject);
    sock.once("connect", () => {
      sock.off("error", reject);
      resolve(new Client(sock));
    });
  });
}
