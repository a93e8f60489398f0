// The gRPC server kit end to end over loopback: error mapping, request ids,
// logging, deadlines, message size limits and metrics.
import { randomBytes } from "node:crypto";
import { connect as http2Connect } from "node:http2";
import { type Client, Metadata, status } from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  callError,
  clientFor,
  type FailureKind,
  newRecord,
  ProbeService,
  probeService,
  SECRET_TEXT,
  streamCall,
  unaryCall,
} from "../../test/grpc-probe.js";
import { baseConfigShape, loadConfig } from "../config.js";
import { createLogger } from "../logger.js";
import { createMetricsRegistry, type Registry, startMetricsServer } from "../metrics.js";
import { DEFAULT_MAX_METADATA_BYTES, GrpcApp, grpcOptionsFromConfig, HPACK_FIELD_CEILING } from "./app.js";
import { readErrorDetails } from "./status.js";

const lines: string[] = [];
const logger = createLogger({
  service: "grpc-server-test",
  level: "debug",
  destination: { write: (line: string) => void lines.push(line) },
});
const record = newRecord();
let registry: Registry;
let app: GrpcApp;
let client: Client;

const MAX_UNARY_MS = 800;

beforeAll(async () => {
  registry = createMetricsRegistry({ service: "grpc-server-test" });
  app = new GrpcApp({
    name: "grpc-server-test",
    logger,
    host: "127.0.0.1",
    port: 0,
    maxReceiveBytes: 4096,
    maxSendBytes: 4096,
    shutdownGraceMs: 2000,
    maxUnaryMs: MAX_UNARY_MS,
    metrics: registry,
  });
  app.addService(ProbeService, probeService(record));
  const port = await app.start();
  client = clientFor(`127.0.0.1:${port}`);
});

afterAll(async () => {
  client?.close();
  await app?.stop("test over");
});

const echo = ProbeService.echo;

function logLines(): Record<string, unknown>[] {
  return lines.map((l) => JSON.parse(l) as Record<string, unknown>);
}

describe("error mapping", () => {
  const cases: [FailureKind, status, string][] = [
    ["invalid", status.INVALID_ARGUMENT, "text is not acceptable"],
    ["unauthenticated", status.UNAUTHENTICATED, "authentication required"],
    ["permission", status.PERMISSION_DENIED, "not allowed to echo"],
    ["notfound", status.NOT_FOUND, "echo 42 not found"],
    ["exists", status.ALREADY_EXISTS, "echo 42 already exists"],
    ["precondition", status.FAILED_PRECONDITION, "echo is closed"],
    ["concurrency", status.ABORTED, "the resource was modified concurrently; retry the request"],
    ["exhausted", status.RESOURCE_EXHAUSTED, "too many echoes"],
    ["unavailable", status.UNAVAILABLE, "a dependency is unavailable, retry later"],
    ["sync", status.NOT_FOUND, "thrown synchronously"],
  ];
  it.each(cases)("%s maps to its code with a safe message", async (kind, code, message) => {
    const err = await callError(unaryCall(client, echo, { fail: kind }));
    expect(status[err.code]).toBe(status[code]);
    expect(err.details).toBe(message);
    expect(err.details).not.toMatch(/prefix_auth|db\.internal|hunter2/);
  });

  it.each(["unexpected", "internal", "thrown-string"] as const)(
    "%s becomes INTERNAL with a generic message and is logged server-side only",
    async (kind) => {
      const err = await callError(unaryCall(client, echo, { fail: kind }));
      expect(status[err.code]).toBe("INTERNAL");
      const requestId = err.metadata.get("x-request-id")[0];
      expect(err.details).toBe(`internal error (request id ${requestId})`);
      expect(JSON.stringify(err.metadata.toJSON())).not.toContain("hunter2");
      expect(err.details).not.toContain(SECRET_TEXT);
      expect(err.details).not.toContain("/srv");
      const logged = logLines().find(
        (l) => l.requestId === requestId && l.msg === "unexpected error in gRPC handler",
      );
      expect(logged).toBeDefined();
    },
  );

  it("adds field violations as google.rpc.BadRequest details", async () => {
    const err = await callError(unaryCall(client, echo, { fail: "invalid" }));
    expect(err.metadata.get("grpc-status-details-bin")).toHaveLength(1);
    expect(readErrorDetails(err.metadata).violations).toEqual([
      { field: "text", description: "must not be empty" },
      { field: "delay_ms", description: "must be positive" },
    ]);
  });

  it("adds retry info to RESOURCE_EXHAUSTED", async () => {
    const err = await callError(unaryCall(client, echo, { fail: "exhausted" }));
    expect(err.metadata.get("retry-after-ms")).toEqual(["1500"]);
    expect(readErrorDetails(err.metadata).retryAfterMs).toBe(1500);
  });

  it("maps a server-streaming handler's error after the messages it sent", async () => {
    const { messages, error } = await streamCall(client, ProbeService.count, { n: 5, failAfter: 2 });
    expect(messages).toEqual([{ i: 0 }, { i: 1 }]);
    expect(error?.code).toBe(status.NOT_FOUND);
    expect(error?.details).toBe("no more");
  });

  it("trySend writes while the client keeps up and refuses (writing nothing) while it is behind; with send as fallback every message arrives once, in order", async () => {
    record.trySends = { written: 0, refused: 0 };
    const n = 20_000;
    const { messages, error } = await streamCall(client, ProbeService.count, { n, trySend: true });
    expect(error).toBeUndefined();
    expect(messages).toEqual(Array.from({ length: n }, (_, i) => ({ i })));
    // A handler writing in a loop outruns the client: some offers were refused, the rest written directly.
    expect(record.trySends.refused).toBeGreaterThan(0);
    expect(record.trySends.written).toBeGreaterThan(0);
    expect(record.trySends.written + record.trySends.refused).toBe(n);
  });

  it("ends a server stream OK when the handler resolves", async () => {
    const { messages, error } = await streamCall(client, ProbeService.count, { n: 3 });
    expect(messages).toHaveLength(3);
    expect(error).toBeUndefined();
  });
});

describe("request ids and logging", () => {
  it("echoes the caller's x-request-id in response metadata and the handler context", async () => {
    const metadata = new Metadata();
    metadata.set("x-request-id", "req-abc.123");
    const { response, headers } = await unaryCall(client, echo, { text: "hi" }, { metadata });
    expect(headers.get("x-request-id")).toEqual(["req-abc.123"]);
    expect(response.requestId).toBe("req-abc.123");
  });

  it("generates one when absent or unacceptable, and returns it with errors too", async () => {
    const { headers } = await unaryCall(client, echo, { text: "hi" });
    expect(String(headers.get("x-request-id")[0])).toMatch(/^[0-9a-f-]{36}$/);
    const metadata = new Metadata();
    metadata.set("x-request-id", `bad id with spaces ${"x".repeat(200)}`);
    const err = await callError(unaryCall(client, echo, { fail: "notfound" }, { metadata }));
    expect(String(err.metadata.get("x-request-id")[0])).toMatch(/^[0-9a-f-]{36}$/);
  });

  it("logs one line per call with method, code, duration and request id, never metadata values", async () => {
    const token = "Bearer eyJhbGciOiJFZERTQSJ9.super-secret-token-payload.signature";
    const metadata = new Metadata();
    metadata.set("authorization", token);
    metadata.set("x-request-id", "log-check-1");
    await unaryCall(client, echo, { text: "hello" }, { metadata });
    metadata.set("x-request-id", "log-check-2");
    await callError(unaryCall(client, echo, { fail: "permission" }, { metadata }));

    const calls = logLines().filter((l) => l.msg === "grpc call");
    const ok = calls.filter((l) => l.requestId === "log-check-1");
    expect(ok).toHaveLength(1);
    expect(ok[0]).toMatchObject({ method: "/spool.test.v1.Probe/Echo", code: "OK", level: "info" });
    expect(typeof ok[0]?.durationMs).toBe("number");
    const denied = calls.find((l) => l.requestId === "log-check-2");
    expect(denied).toMatchObject({ code: "PERMISSION_DENIED", details: "not allowed to echo" });
    expect(lines.join("\n")).not.toContain("super-secret-token");
  });
});

describe("deadlines", () => {
  it("caps a call without deadline at the server's limit and aborts the handler", async () => {
    const metadata = new Metadata();
    metadata.set("x-request-id", "slow-no-deadline");
    const started = Date.now();
    const err = await callError(unaryCall(client, echo, { delayMs: 5_000 }, { metadata }));
    expect(status[err.code]).toBe("DEADLINE_EXCEEDED");
    expect(Date.now() - started).toBeLessThan(MAX_UNARY_MS + 1_000);
    await expect.poll(() => record.aborted).toContain("slow-no-deadline");
    expect(record.completed).not.toContain("slow-no-deadline");
    // The handler's rejection after its call ended is not an error worth a page.
    const late = logLines().filter((l) => l.requestId === "slow-no-deadline" && l.level === "error");
    expect(late).toEqual([]);
  });

  it("exposes the remaining time: the client's deadline when sooner, else the server's limit", async () => {
    const soon = await unaryCall(client, echo, { text: "x" }, { timeoutMs: 300 });
    expect(soon.response.remainingMs).toBeGreaterThan(0);
    expect(soon.response.remainingMs).toBeLessThanOrEqual(300);
    const none = await unaryCall(client, echo, { text: "x" });
    expect(none.response.remainingMs).toBeGreaterThan(MAX_UNARY_MS - 300);
    expect(none.response.remainingMs).toBeLessThanOrEqual(MAX_UNARY_MS);
  });

  it("the client's own deadline ends a slow call with DEADLINE_EXCEEDED and aborts the handler", async () => {
    const metadata = new Metadata();
    metadata.set("x-request-id", "slow-client-deadline");
    const err = await callError(unaryCall(client, echo, { delayMs: 3_000 }, { metadata, timeoutMs: 200 }));
    expect(status[err.code]).toBe("DEADLINE_EXCEEDED");
    await expect.poll(() => record.aborted).toContain("slow-client-deadline");
  });

  it("refuses a call whose deadline has already passed without running the handler", async () => {
    const session = http2Connect(`http://127.0.0.1:${app.port}`);
    try {
      const req = session.request({
        ":method": "POST",
        ":path": echo.path,
        "content-type": "application/grpc",
        te: "trailers",
        "grpc-timeout": "0m",
        "x-request-id": "already-late",
      });
      const body = Buffer.from(JSON.stringify({ text: "late" }));
      const frame = Buffer.alloc(5 + body.length);
      frame.writeUInt32BE(body.length, 1);
      body.copy(frame, 5);
      req.end(frame);
      const grpcStatus = await new Promise<string>((resolve, reject) => {
        req.on("response", (headers) => {
          // A trailers-only response carries the status in the headers.
          if (headers["grpc-status"] !== undefined) resolve(String(headers["grpc-status"]));
        });
        req.on("trailers", (trailers) => resolve(String(trailers["grpc-status"])));
        req.on("error", reject);
        req.resume();
      });
      expect(grpcStatus).toBe(String(status.DEADLINE_EXCEEDED));
      await new Promise((r) => setTimeout(r, 100));
      expect(record.started).not.toContain("already-late");
    } finally {
      session.close();
    }
  });
});

describe("message size limits", () => {
  it("rejects a request over the receive limit with RESOURCE_EXHAUSTED", async () => {
    const err = await callError(unaryCall(client, echo, { text: "x".repeat(10_000) }));
    expect(status[err.code]).toBe("RESOURCE_EXHAUSTED");
  });

  it("accepts one just under it", async () => {
    const { response } = await unaryCall(client, echo, { text: "y".repeat(3_000) });
    expect(response.text).toHaveLength(3_000);
  });

  it("refuses to send a response over the send limit", async () => {
    const err = await callError(unaryCall(client, echo, { text: "z".repeat(100), repeat: 100 }));
    expect(status[err.code]).toBe("RESOURCE_EXHAUSTED");
  });
});

describe("request metadata limits", () => {
  /** Random base64url text: HPACK's Huffman coding cannot shrink it much. */
  const token = (bytes: number) => `Bearer ${randomBytes(bytes).toString("base64url").slice(0, bytes)}`;

  it("refuses metadata over the limit with RESOURCE_EXHAUSTED for that call alone", async () => {
    // A stream and a unary call in flight on the same channel (one HTTP/2 connection).
    const stream = streamCall(client, ProbeService.count, { n: 5, delayMs: 100 });
    const slow = unaryCall(client, echo, { text: "still here", delayMs: 300 });
    const metadata = new Metadata();
    metadata.set("authorization", token(40_000));
    const err = await callError(unaryCall(client, echo, { text: "big" }, { metadata }));
    expect(status[err.code]).toBe("RESOURCE_EXHAUSTED");
    expect(err.details).toMatch(new RegExp(`the limit is ${DEFAULT_MAX_METADATA_BYTES}$`));
    const { messages, error } = await stream;
    expect(error).toBeUndefined();
    expect(messages).toHaveLength(5);
    expect((await slow).response.text).toBe("still here");
    // Just under the limit is served.
    const fits = new Metadata();
    fits.set("authorization", token(DEFAULT_MAX_METADATA_BYTES - 1_000));
    expect((await unaryCall(client, echo, { text: "fits" }, { metadata: fits })).response.text).toBe("fits");
  });

  it("takes its limit from SPOOL_GRPC_MAX_METADATA_BYTES", async () => {
    const config = loadConfig(baseConfigShape, {
      SPOOL_GRPC_HOST: "127.0.0.1",
      SPOOL_GRPC_PORT: "0",
      SPOOL_GRPC_MAX_METADATA_BYTES: "2048",
    });
    const small = new GrpcApp({ name: "small-metadata", logger, ...grpcOptionsFromConfig(config) });
    small.addService(ProbeService, probeService(newRecord()));
    const own = clientFor(`127.0.0.1:${await small.start()}`);
    try {
      const metadata = new Metadata();
      metadata.set("authorization", token(3_000));
      const err = await callError(unaryCall(own, echo, { text: "x" }, { metadata }));
      expect(status[err.code]).toBe("RESOURCE_EXHAUSTED");
      expect(err.details).toMatch(/the limit is 2048$/);
      expect((await unaryCall(own, echo, { text: "small" })).response.text).toBe("small");
    } finally {
      own.close();
      await small.stop("test over");
    }
  });

  it("advertises a header list size, so clients that honour it refuse what HTTP/2 cannot decode", async () => {
    const session = http2Connect(`http://127.0.0.1:${app.port}`);
    try {
      const settings = await new Promise<{ maxHeaderListSize?: number }>((resolve) =>
        session.once("remoteSettings", resolve),
      );
      expect(settings.maxHeaderListSize).toBe(HPACK_FIELD_CEILING);
    } finally {
      session.close();
    }
  });

  it("documented limit: one header field beyond HPACK's 64 KiB closes its connection; the server serves on", async () => {
    // nghttp2 cannot decode the field (COMPRESSION_ERROR, a connection error in
    // HTTP/2), so the calls sharing that connection fail with it, before any
    // server code runs. docs/SECURITY.md says so; clients must bound their headers.
    const own = clientFor(`127.0.0.1:${app.port}`);
    try {
      const inFlight = unaryCall(own, echo, { text: "shared", delayMs: 300 });
      await new Promise((r) => setTimeout(r, 50));
      const metadata = new Metadata();
      metadata.set("authorization", token(100_000));
      const err = await callError(unaryCall(own, echo, { text: "huge" }, { metadata }));
      expect(["INTERNAL", "UNAVAILABLE"]).toContain(status[err.code]);
      const shared = await callError(inFlight);
      expect(["INTERNAL", "UNAVAILABLE"]).toContain(status[shared.code]);
      // The server is unharmed: the same client reconnects, other clients never noticed.
      expect((await unaryCall(own, echo, { text: "again" })).response.text).toBe("again");
      expect((await unaryCall(client, echo, { text: "other" })).response.text).toBe("other");
    } finally {
      own.close();
    }
  });
});

describe("request text", () => {
  it("refuses NUL, control and bidi-override characters in any string field before the handler runs", async () => {
    for (const text of ["a\u0000b", "\u001b[2J", "\u0085", "\u202egnp.exe"]) {
      const metadata = new Metadata();
      metadata.set("x-request-id", `bad-text-${text.codePointAt(1)}`);
      const err = await callError(unaryCall(client, echo, { text }, { metadata }));
      expect(status[err.code]).toBe("INVALID_ARGUMENT");
      expect(readErrorDetails(err.metadata).violations.map((v) => v.field)).toEqual(["text"]);
      expect(record.started).not.toContain(`bad-text-${text.codePointAt(1)}`);
    }
    // Server-streaming methods get the same check (the probe's count has no strings: add one).
    const { error } = await streamCall(client, ProbeService.count, { n: 1, note: "x\u0000" } as never);
    expect(error?.code).toBe(status.INVALID_ARGUMENT);
    expect(readErrorDetails(error?.metadata).violations.map((v) => v.field)).toEqual(["note"]);
  });

  it("accepts tab, LF and CR", async () => {
    const { response } = await unaryCall(client, echo, { text: "a\tb\r\nc" });
    expect(response.text).toBe("a\tb\r\nc");
  });
});

describe("metrics", () => {
  it("records call durations by method and code, and in-flight calls return to zero", async () => {
    await unaryCall(client, echo, { text: "m" });
    await callError(unaryCall(client, echo, { fail: "notfound" }));
    const text = await registry.metrics();
    expect(text).toMatch(
      /spool_grpc_server_handling_seconds_count\{[^}]*method="\/spool\.test\.v1\.Probe\/Echo"[^}]*code="OK"[^}]*\} [1-9]/,
    );
    expect(text).toMatch(/spool_grpc_server_handling_seconds_count\{[^}]*code="NOT_FOUND"[^}]*\} [1-9]/);
    const inFlight = await registry.getSingleMetric("spool_grpc_server_in_flight_calls")?.get();
    expect(inFlight?.values.every((v) => v.value === 0)).toBe(true);
  });

  it("serves /metrics, /healthz and /readyz over HTTP and closes", async () => {
    let ready = false;
    const server = await startMetricsServer({ registry, port: 0, host: "127.0.0.1", ready: () => ready });
    const base = `http://127.0.0.1:${server.port}`;
    try {
      const metrics = await fetch(`${base}/metrics`);
      expect(metrics.status).toBe(200);
      const body = await metrics.text();
      expect(body).toContain("process_cpu_user_seconds_total");
      expect(body).toContain("spool_grpc_server_handling_seconds_bucket");
      expect(body).toContain('service="grpc-server-test"');
      expect((await fetch(`${base}/healthz`)).status).toBe(200);
      expect((await fetch(`${base}/readyz`)).status).toBe(503);
      ready = true;
      expect((await fetch(`${base}/readyz`)).status).toBe(200);
      expect((await fetch(`${base}/nope`)).status).toBe(404);
    } finally {
      await server.close();
    }
    await expect(fetch(`${base}/healthz`)).rejects.toThrow();
  });
});
