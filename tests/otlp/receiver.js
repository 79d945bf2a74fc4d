#!/usr/bin/node
// A local OTLP/HTTP receiver for agentd's tests. Every POST to /v1/logs,
// /v1/traces or /v1/metrics is decoded against the official OpenTelemetry
// protobuf schema (opentelemetry-proto, as generated with protobufjs into
// @opentelemetry/otlp-transformer) following the OTLP/JSON rules: lowerCamelCase
// field names, trace and span ids as hex, enums as integers, 64-bit integers
// as decimal strings or numbers. Decoding is strict: the request is turned into
// a protobuf message, checked with verify(), encoded to the binary wire format,
// decoded again, and must come back as exactly the JSON that was posted (a
// misspelled or mistyped field would not survive). Accepted requests are
// appended as JSON lines {signal, body} to the file named by --out; refused
// ones answer 400 and are logged with the reason to --out too ({signal, error}).
// Prints "READY <port>" once listening on 127.0.0.1.
"use strict";
const http = require("http");
const fs = require("fs");
const root = require("@opentelemetry/otlp-transformer/build/src/generated/root");

const P = root.opentelemetry.proto.collector;
const TYPES = {
  "/v1/logs": ["logs", P.logs.v1.ExportLogsServiceRequest, P.logs.v1.ExportLogsServiceResponse],
  "/v1/traces": ["traces", P.trace.v1.ExportTraceServiceRequest, P.trace.v1.ExportTraceServiceResponse],
  "/v1/metrics": ["metrics", P.metrics.v1.ExportMetricsServiceRequest, P.metrics.v1.ExportMetricsServiceResponse],
};
const ID_FIELDS = { traceId: 16, spanId: 8, parentSpanId: 8 };

const args = process.argv.slice(2);
const out = args[args.indexOf("--out") + 1];
const failStatus = args.includes("--fail") ? Number(args[args.indexOf("--fail") + 1]) : 0;

// OTLP/JSON ids are hex; protobufjs's JSON mapping wants base64 for bytes.
function idsToBase64(v, path) {
  if (Array.isArray(v)) return v.map((x, i) => idsToBase64(x, `${path}[${i}]`));
  if (v && typeof v === "object") {
    const o = {};
    for (const [k, x] of Object.entries(v)) {
      if (k in ID_FIELDS && typeof x === "string" && x !== "") {
        if (!new RegExp(`^[0-9a-f]{${2 * ID_FIELDS[k]}}$`).test(x))
          throw new Error(`${path}.${k}: not ${ID_FIELDS[k]} bytes of lowercase hex: ${x}`);
        o[k] = Buffer.from(x, "hex").toString("base64");
      } else o[k] = idsToBase64(x, `${path}.${k}`);
    }
    return o;
  }
  return v;
}

function idsToHex(v) {
  if (Array.isArray(v)) return v.map(idsToHex);
  if (v && typeof v === "object") {
    const o = {};
    for (const [k, x] of Object.entries(v))
      o[k] = k in ID_FIELDS && typeof x === "string" ? Buffer.from(x, "base64").toString("hex") : idsToHex(x);
    return o;
  }
  return v;
}

// Proto3 does not carry defaults: compare without them; numbers as strings.
function canon(v) {
  if (Array.isArray(v)) return v.map(canon);
  if (v && typeof v === "object") {
    const o = {};
    for (const k of Object.keys(v).sort()) {
      const x = canon(v[k]);
      if (x === undefined || x === "0" || x === "" || x === false || (Array.isArray(x) && x.length === 0)) continue;
      if (x && typeof x === "object" && !Array.isArray(x) && Object.keys(x).length === 0 && k !== "value") continue;
      o[k] = x;
    }
    return o;
  }
  if (typeof v === "number") return String(v);
  return v;
}

function firstDifference(a, b, path) {
  if (typeof a !== typeof b || Array.isArray(a) !== Array.isArray(b)) return `${path}: ${JSON.stringify(a)} != ${JSON.stringify(b)}`;
  if (a && typeof a === "object") {
    const keys = new Set([...Object.keys(a), ...Object.keys(b)]);
    for (const k of keys) {
      if (!(k in b)) return `${path}.${k}: not in the schema (or of the wrong type)`;
      if (!(k in a)) return `${path}.${k}: appeared in decoding`;
      const d = firstDifference(a[k], b[k], `${path}.${k}`);
      if (d) return d;
    }
    return null;
  }
  return a === b ? null : `${path}: ${JSON.stringify(a)} != ${JSON.stringify(b)}`;
}

function decode(Type, body) {
  const posted = JSON.parse(body);
  const msg = Type.fromObject(idsToBase64(posted, "$"));
  const err = Type.verify(msg);
  if (err) throw new Error(`verify: ${err}`);
  const wire = Type.encode(msg).finish();
  const back = Type.toObject(Type.decode(wire), { longs: String, enums: Number, bytes: String, defaults: false });
  const decoded = idsToHex(back);
  const d = firstDifference(canon(posted), canon(decoded), "$");
  if (d) throw new Error(`not an OTLP message: ${d}`);
  return decoded;
}

function record(obj) {
  fs.appendFileSync(out, JSON.stringify(obj) + "\n");
}

const server = http.createServer((req, res) => {
  const chunks = [];
  req.on("data", (c) => chunks.push(c));
  req.on("end", () => {
    const t = TYPES[req.url];
    const body = Buffer.concat(chunks).toString("utf8");
    if (req.method !== "POST" || !t) {
      res.writeHead(404).end();
      return;
    }
    const [signal, Type, Resp] = t;
    if (!/^application\/json/.test(req.headers["content-type"] || "")) {
      record({ signal, error: `content-type ${req.headers["content-type"]}` });
      res.writeHead(415).end();
      return;
    }
    if (failStatus) {
      record({ signal, refused: failStatus });
      res.writeHead(failStatus).end();
      return;
    }
    try {
      const decoded = decode(Type, body);
      record({ signal, body: decoded, raw: body });
      res.writeHead(200, { "Content-Type": "application/json" }).end(JSON.stringify(Resp.toObject(Resp.create({}))));
    } catch (e) {
      record({ signal, error: String(e.message || e), raw: body });
      res.writeHead(400, { "Content-Type": "application/json" }).end(JSON.stringify({ code: 3, message: String(e) }));
    }
  });
});
server.listen(0, "127.0.0.1", () => {
  process.stdout.write(`READY ${server.address().port}\n`);
});
