// Client-streaming and bidi methods through the kit end to end over loopback:
// the guard, per-message request checks, error mapping, request ids,
// deadlines, cancellation and metrics, as unary and server-streaming calls get them.
import { type Client, Metadata, status } from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  bidiCall,
  clientFor,
  clientStreamCall,
  newRecord,
  type PartRequest,
  SECRET_TEXT,
  StreamProbeService,
  streamProbeService,
} from "../../test/grpc-probe.js";
import { guarded } from "../auth/guard.js";
import type { Principal } from "../auth/principal.js";
import type { TokenVerifier } from "../auth/verifier.js";
import { UnauthenticatedError } from "../errors.js";
import { createLogger } from "../logger.js";
import { createMetricsRegistry, type Registry } from "../metrics.js";
import { rule } from "../request-rules.js";
import { GrpcApp } from "./app.js";
import { readErrorDetails } from "./status.js";

const lines: string[] = [];
const logger = createLogger({
  service: "grpc-streaming-test",
  level: "debug",
  destination: { write: (line: string) => void lines.push(line) },
});
const record = newRecord();
let registry: Registry;
let app: GrpcApp;
let client: Client;

/** The server's limit on streaming calls, whatever the client's deadline. */
const MAX_STREAM_MS = 1_500;
const SCOPE = "probe:stream";

const principal = (p: Partial<Principal>): Principal => ({
  kind: "service",
  subject: "svc-1",
  sessionId: undefined,
  orgId: "org-1",
  roles: [],
  scopes: [SCOPE],
  tokenId: "j1",
  expiresAtMs: Date.now() + 600_000,
  issuedAtMs: Date.now(),
  issuer: "iss",
  audience: ["aud"],
  ...p,
});

/** Accepts "producer" (the scope), "user" (a user token without it); "revoked" and anything else fail. */
const verifier = {
  verify: async (token: string) => {
    if (token === "producer") return principal({});
    if (token === "user") return principal({ kind: "user", scopes: [], roles: ["member"] });
    throw new UnauthenticatedError(token === "revoked" ? "the token was revoked" : "invalid token");
  },
} as unknown as TokenVerifier;

function auth(token: string | undefined, requestId?: string): Metadata {
  const metadata = new Metadata();
  if (token) metadata.set("authorization", `Bearer ${token}`);
  if (requestId) metadata.set("x-request-id", requestId);
  return metadata;
}

beforeAll(async () => {
  registry = createMetricsRegistry({ service: "grpc-streaming-test" });
  app = new GrpcApp({
    name: "grpc-streaming-test",
    logger,
    host: "127.0.0.1",
    port: 0,
    maxReceiveBytes: 4096,
    maxSendBytes: 4096,
    shutdownGraceMs: 2000,
    maxStreamMs: MAX_STREAM_MS,
    metrics: registry,
  });
  app.addService(
    StreamProbeService,
    guarded(StreamProbeService, streamProbeService(record), {
      verifier,
      policies: { sum: { kind: "service", scopes: [SCOPE] }, chat: { kind: "service", scopes: [SCOPE] } },
      // Request rules of a streaming method apply to each message as the handler reads it.
      rules: { sum: { n: rule.check((n) => ((n ?? 0) > 1000 ? "at most 1000" : undefined)) }, chat: {} },
    }),
  );
  const port = await app.start();
  client = clientFor(`127.0.0.1:${port}`);
});

afterAll(async () => {
  client?.close();
  await app?.stop("test over");
});

const sum = StreamProbeService.sum;
const chat = StreamProbeService.chat;

describe("client streaming", () => {
  it("reads every message and answers once, echoing the request id", async () => {
    const parts: PartRequest[] = [{ n: 1 }, { n: 2, text: "a\tb" }, { n: 39 }];
    const { response, error, headers } = await clientStreamCall(client, sum, parts, {
      metadata: auth("producer", "sum-ok"),
    });
    expect(error).toBeUndefined();
    expect(response).toEqual({ total: 42, count: 3, requestId: "sum-ok" });
    expect(headers.get("x-request-id")).toEqual(["sum-ok"]);
  });

  it("refuses a call without a token, a revoked token and the wrong kind, before reading a message", async () => {
    const cases: [string | undefined, status][] = [
      [undefined, status.UNAUTHENTICATED],
      ["revoked", status.UNAUTHENTICATED],
      ["garbage", status.UNAUTHENTICATED],
      ["user", status.PERMISSION_DENIED],
    ];
    for (const [token, code] of cases) {
      const requestId = `sum-refused-${token ?? "none"}`;
      // Left open: the refusal does not wait for the client to finish sending.
      const { error } = await clientStreamCall(client, sum, [{ n: 1 }], {
        metadata: auth(token, requestId),
        keepOpen: true,
      });
      expect(status[error?.code ?? 0]).toBe(status[code]);
      expect(error?.metadata.get("x-request-id")).toEqual([requestId]);
      expect(record.started).not.toContain(requestId);
    }
  });

  it("refuses a bad message with INVALID_ARGUMENT naming its field", async () => {
    const { error } = await clientStreamCall(client, sum, [{ n: 1 }, { n: 2, text: "x\u0000y" }, { n: 3 }], {
      metadata: auth("producer"),
    });
    expect(status[error?.code ?? 0]).toBe("INVALID_ARGUMENT");
    expect(readErrorDetails(error?.metadata).violations.map((v) => v.field)).toEqual(["text"]);
  });

  it("checks the method's request rules on every message, naming the field", async () => {
    const { error } = await clientStreamCall(client, sum, [{ n: 1 }, { n: 1001 }, { n: 3 }], {
      metadata: auth("producer"),
    });
    expect(status[error?.code ?? 0]).toBe("INVALID_ARGUMENT");
    expect(readErrorDetails(error?.metadata).violations).toEqual([
      { field: "n", description: "at most 1000" },
    ]);
  });

  it("maps the handler's errors like a unary call's", async () => {
    const notFound = await clientStreamCall(client, sum, [{ n: 1 }, { fail: "notfound" }], {
      metadata: auth("producer"),
    });
    expect(status[notFound.error?.code ?? 0]).toBe("NOT_FOUND");
    expect(notFound.error?.details).toBe("echo 42 not found");
    const unexpected = await clientStreamCall(client, sum, [{ fail: "unexpected" }], {
      metadata: auth("producer", "sum-unexpected"),
    });
    expect(status[unexpected.error?.code ?? 0]).toBe("INTERNAL");
    expect(unexpected.error?.details).toBe("internal error (request id sum-unexpected)");
    expect(unexpected.error?.details).not.toContain(SECRET_TEXT);
  });

  it("ends a call the client keeps open at the server's limit, and the handler's read ends with it", async () => {
    const started = Date.now();
    const { error } = await clientStreamCall(client, sum, [{ n: 1 }], {
      metadata: auth("producer", "sum-server-limit"),
      keepOpen: true,
    });
    expect(status[error?.code ?? 0]).toBe("DEADLINE_EXCEEDED");
    expect(Date.now() - started).toBeLessThan(MAX_STREAM_MS + 1_000);
    await expect.poll(() => record.aborted).toContain("sum-server-limit");
    // The handler's rejection after its call ended is not an error worth a page.
    const late = lines
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .filter((l) => l.requestId === "sum-server-limit" && l.level === "error");
    expect(late).toEqual([]);
  });

  it("honours the client's own deadline", async () => {
    const { error } = await clientStreamCall(client, sum, [{ n: 1, delayMs: 3_000 }], {
      metadata: auth("producer", "sum-client-deadline"),
      timeoutMs: 200,
    });
    expect(status[error?.code ?? 0]).toBe("DEADLINE_EXCEEDED");
    await expect.poll(() => record.aborted).toContain("sum-client-deadline");
  });
});

describe("bidi streaming", () => {
  it("answers each message as it comes and ends OK when the client half-closes", async () => {
    const call = bidiCall(client, chat, { metadata: auth("producer") });
    call.write({ text: "one" });
    await expect.poll(() => call.messages.length).toBe(1);
    call.write({ text: "two" });
    await expect.poll(() => call.messages.length).toBe(2);
    call.end();
    const { messages, error } = await call.done;
    expect(error).toBeUndefined();
    expect(messages).toEqual([
      { text: "one", i: 0 },
      { text: "two", i: 1 },
    ]);
  });

  it("ends OK when the handler returns, though the client has not half-closed", async () => {
    const call = bidiCall(client, chat, { metadata: auth("producer") });
    call.write({ text: "one" });
    call.write({ stop: true });
    const { messages, error } = await call.done;
    expect(error).toBeUndefined();
    expect(messages).toEqual([{ text: "one", i: 0 }]);
    call.end();
  });

  it("refuses a call without a token or with the wrong kind of token", async () => {
    for (const [token, code] of [
      [undefined, status.UNAUTHENTICATED],
      ["user", status.PERMISSION_DENIED],
    ] as const) {
      const requestId = `chat-refused-${token ?? "none"}`;
      const call = bidiCall(client, chat, { metadata: auth(token, requestId) });
      call.write({ text: "hello" });
      const { messages, error } = await call.done;
      expect(status[error?.code ?? 0]).toBe(status[code]);
      expect(messages).toEqual([]);
      expect(record.started).not.toContain(requestId);
    }
  });

  it("refuses a bad message after answering the good ones", async () => {
    const call = bidiCall(client, chat, { metadata: auth("producer") });
    call.write({ text: "fine" });
    call.write({ text: "\u202egnp.exe" });
    const { messages, error } = await call.done;
    expect(messages).toEqual([{ text: "fine", i: 0 }]);
    expect(status[error?.code ?? 0]).toBe("INVALID_ARGUMENT");
    expect(readErrorDetails(error?.metadata).violations.map((v) => v.field)).toEqual(["text"]);
  });

  it("maps the handler's error after the messages it sent", async () => {
    const call = bidiCall(client, chat, { metadata: auth("producer") });
    call.write({ text: "a" });
    call.write({ fail: "precondition" });
    const { messages, error } = await call.done;
    expect(messages).toEqual([{ text: "a", i: 0 }]);
    expect(status[error?.code ?? 0]).toBe("FAILED_PRECONDITION");
    expect(error?.details).toBe("echo is closed");
  });

  it("propagates the client's cancel to the handler", async () => {
    // A Node client's cancel half-closes before it resets the stream, so the
    // handler is caught busy here; the server-limit test above covers a handler reading.
    const call = bidiCall(client, chat, { metadata: auth("producer", "chat-cancel") });
    call.write({ text: "hi" });
    await expect.poll(() => call.messages.length).toBe(1);
    call.write({ text: "slow", delayMs: 5_000 });
    await expect.poll(() => record.started).toContain("chat-cancel");
    await new Promise((r) => setTimeout(r, 100));
    call.cancel();
    expect(status[(await call.done).error?.code ?? 0]).toBe("CANCELLED");
    await expect.poll(() => record.aborted).toContain("chat-cancel");
    expect(record.completed).not.toContain("chat-cancel");
  });

  it("cancels a handler waiting to send to a client that does not read", async () => {
    const call = bidiCall(client, chat, { metadata: auth("producer", "chat-blocked-send") });
    call.pause();
    // Large replies fill the HTTP/2 window and the socket buffers: ctx.send waits for a drain.
    for (let i = 0; i < 400; i++) call.write({ text: "y".repeat(3_000) });
    call.end();
    // Were sends not held back, the handler would have answered all 400 and completed.
    await new Promise((r) => setTimeout(r, 300));
    expect(record.completed).not.toContain("chat-blocked-send");
    call.cancel();
    await expect.poll(() => record.aborted).toContain("chat-blocked-send");
  });

  it("honours the client's deadline", async () => {
    const call = bidiCall(client, chat, { metadata: auth("producer", "chat-deadline"), timeoutMs: 300 });
    call.write({ text: "x" });
    call.write({ text: "slow", delayMs: 3_000 });
    const { messages, error } = await call.done;
    expect(messages).toEqual([{ text: "x", i: 0 }]);
    expect(status[error?.code ?? 0]).toBe("DEADLINE_EXCEEDED");
    await expect.poll(() => record.aborted).toContain("chat-deadline");
  });

  it("ends a call at the server's limit, and the handler's read ends with it", async () => {
    const call = bidiCall(client, chat, { metadata: auth("producer", "chat-server-limit") });
    call.write({ text: "x" });
    const { error } = await call.done;
    expect(status[error?.code ?? 0]).toBe("DEADLINE_EXCEEDED");
    await expect.poll(() => record.aborted).toContain("chat-server-limit");
    call.end();
  });
});

describe("metrics", () => {
  it("records streaming calls by method and code, and in-flight calls return to zero", async () => {
    await clientStreamCall(client, sum, [{ n: 1 }], { metadata: auth("producer") });
    await clientStreamCall(client, sum, [{ n: 1 }], { metadata: auth(undefined) });
    const text = await registry.metrics();
    const count = (method: string, code: string) =>
      new RegExp(
        `spool_grpc_server_handling_seconds_count\\{[^}]*method="/spool\\.test\\.v1\\.StreamProbe/${method}"[^}]*code="${code}"[^}]*\\} [1-9]`,
      );
    expect(text).toMatch(count("Sum", "OK"));
    expect(text).toMatch(count("Sum", "UNAUTHENTICATED"));
    expect(text).toMatch(count("Chat", "OK"));
    expect(text).toMatch(count("Chat", "CANCELLED"));
    expect(text).toMatch(count("Chat", "DEADLINE_EXCEEDED"));
    await expect
      .poll(async () =>
        (await registry.getSingleMetric("spool_grpc_server_in_flight_calls")?.get())?.values.every(
          (v) => v.value === 0,
        ),
      )
      .toBe(true);
  });
});
