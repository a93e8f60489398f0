// StreamContext.trySendFramed over loopback: frames written straight onto the
// HTTP/2 stream (framed.ts) keep every promise of the normal path — metadata
// first, order with messages still queued in grpc-js, backpressure, the max
// send size, nothing written after a cancel or the end — and the fast path
// is really taken with this grpc-js (the guard: when grpc-js's internals
// change shape, the first test fails instead of the fast path silently
// going away).
//
// A message that goes the normal way passes through the method's
// responseSerialize; a frame written directly does not: the count of
// serializations tells the two paths apart.
import {
  Client,
  credentials,
  getChannelzHandlers,
  Metadata,
  Server,
  ServerCredentials,
  ServerInterceptingCall,
  type ServerInterceptor,
  type ServiceError,
  status,
} from "@grpc/grpc-js";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { createLogger } from "../logger.js";
import { GrpcApp } from "./app.js";
import { DirectFrameWriter, type GrpcFrame, toGrpcFrame } from "./framed.js";
import { type StreamContext, toGrpcHandlers } from "./handlers.js";

type Pre = { preEncoded: Buffer };
type Scenario = (ctx: StreamContext<Pre>) => Promise<void>;

const MAX_SEND_BYTES = 64 * 1024;
let serialized = 0;
const scenarios = new Map<string, Scenario>();
const ended: string[] = [];

const definition = {
  stream: {
    path: "/spool.test.Framed/Stream",
    requestStream: false,
    responseStream: true,
    requestSerialize: (v: { scenario: string }) => Buffer.from(JSON.stringify(v)),
    requestDeserialize: (b: Buffer) => JSON.parse(b.toString()) as { scenario: string },
    responseSerialize: (v: Pre) => {
      serialized++;
      return v.preEncoded;
    },
    responseDeserialize: (b: Buffer) => b,
  },
} as const;

const implementation = {
  stream: async (request: { scenario: string }, ctx: StreamContext<Pre>) => {
    const run = scenarios.get(request.scenario);
    if (!run) throw new Error(`no scenario ${request.scenario}`);
    try {
      await run(ctx);
    } finally {
      ended.push(request.scenario);
    }
  },
};

/** Message `seq` of `size` bytes, its sequence number in its first four. */
function message(seq: number, size = 64): { pre: Pre; frame: GrpcFrame } {
  const wire = Buffer.alloc(size, seq & 0xff);
  wire.writeUInt32BE(seq, 0);
  return { pre: { preEncoded: wire }, frame: toGrpcFrame(wire) };
}

const turn = () => new Promise((r) => setImmediate(r));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Received {
  seqs: number[];
  headers: Promise<Metadata>;
  done: Promise<{ error: ServiceError | undefined }>;
  pause(): void;
  resume(): void;
  cancel(): void;
}

function follow(client: Client, scenario: string): Received {
  const call = client.makeServerStreamRequest(
    definition.stream.path,
    definition.stream.requestSerialize,
    definition.stream.responseDeserialize,
    { scenario },
    new Metadata(),
    // A broken stream fails its test in seconds instead of at the test timeout.
    { deadline: Date.now() + 20_000 },
  );
  const seqs: number[] = [];
  call.on("data", (b: Buffer) => seqs.push(b.readUInt32BE(0)));
  const headers = new Promise<Metadata>((resolve) => call.once("metadata", resolve));
  let error: ServiceError | undefined;
  call.on("error", (e: ServiceError) => {
    error = e;
  });
  const done = new Promise<{ error: ServiceError | undefined }>((resolve) =>
    call.on("status", () => resolve({ error })),
  );
  return {
    seqs,
    headers,
    done,
    pause: () => call.pause(),
    resume: () => call.resume(),
    cancel: () => call.cancel(),
  };
}

const range = (n: number) => Array.from({ length: n }, (_, i) => i);

describe("trySendFramed through the kit's GrpcApp", () => {
  let app: GrpcApp;
  let client: Client;

  beforeAll(async () => {
    app = new GrpcApp({
      name: "framed-test",
      logger: createLogger({ service: "framed-test", level: "silent" }),
      host: "127.0.0.1",
      port: 0,
      maxReceiveBytes: 4096,
      maxSendBytes: MAX_SEND_BYTES,
      shutdownGraceMs: 1000,
    });
    app.addService(definition, implementation);
    const port = await app.start();
    client = new Client(`127.0.0.1:${port}`, credentials.createInsecure());
  });

  afterAll(async () => {
    client?.close();
    await app?.stop("test over");
  });

  beforeEach(() => {
    serialized = 0;
  });

  it("writes frames directly once the response metadata is out (the guard on grpc-js's internals)", async () => {
    const K = 50;
    let tries = 0;
    scenarios.set("fast", async (ctx) => {
      // The first message sends the metadata the normal way.
      await ctx.send(message(0).pre);
      await sleep(20);
      for (let i = 1; i <= K; i++) {
        const m = message(i);
        if (!ctx.trySendFramed(m.pre, m.frame)) await ctx.send(m.pre);
        tries++;
        await turn();
      }
    });
    const r = follow(client, "fast");
    const { error } = await r.done;
    expect(error).toBeUndefined();
    expect(tries).toBe(K);
    expect(r.seqs).toEqual(range(K + 1));
    // Only the first went through responseSerialize: every frame was written directly.
    expect(serialized).toBe(1);
    // The response metadata (the kit interceptor's request id) came before the messages.
    expect((await r.headers).get("x-request-id")).toHaveLength(1);
  });

  it("sends the metadata the normal way when the first message is a framed one", async () => {
    scenarios.set("first-framed", async (ctx) => {
      for (let i = 0; i < 5; i++) {
        const m = message(i);
        if (!ctx.trySendFramed(m.pre, m.frame)) await ctx.send(m.pre);
      }
    });
    const r = follow(client, "first-framed");
    const { error } = await r.done;
    expect(error).toBeUndefined();
    expect(r.seqs).toEqual(range(5));
    expect((await r.headers).get("x-request-id")).toHaveLength(1);
    expect(serialized).toBeGreaterThanOrEqual(1);
  });

  it("never lets a frame overtake a message still queued in grpc-js: mixed with normal sends, under backpressure", async () => {
    const K = 3000;
    const counts = { framedRefused: 0, normal: 0 };
    scenarios.set("mixed", async (ctx) => {
      for (let i = 0; i < K; i++) {
        const m = message(i, 1000);
        if (i % 97 < 3) {
          // Normal sends, not awaited: the second waits in grpc-js's Writable
          // while the first is written, and the next frame must not pass it.
          void ctx.send(m.pre);
          counts.normal++;
        } else if (!ctx.trySendFramed(m.pre, m.frame)) {
          counts.framedRefused++;
          await ctx.send(m.pre);
        }
        if (i % 10 === 0) await turn();
      }
    });
    const r = follow(client, "mixed");
    r.pause();
    // The client reads nothing for a while: HTTP/2 flow control and grpc-js's buffers fill.
    await sleep(300);
    expect(ended).not.toContain("mixed");
    r.resume();
    const { error } = await r.done;
    expect(error).toBeUndefined();
    // Every message exactly once, in order.
    expect(r.seqs).toEqual(range(K));
    expect(counts.framedRefused).toBeGreaterThan(0);
    // Both paths were taken: some frames went directly, some messages the normal way.
    expect(serialized).toBeGreaterThanOrEqual(counts.normal + counts.framedRefused);
    expect(serialized).toBeLessThan(K);
  });

  it("holds the sender back while the client does not read (the HTTP/2 stream's backpressure)", async () => {
    const K = 3000;
    let refused = 0;
    scenarios.set("held-back", async (ctx) => {
      for (let i = 0; i < K; i++) {
        const m = message(i, 1000);
        if (!ctx.trySendFramed(m.pre, m.frame)) {
          refused++;
          await ctx.send(m.pre);
        }
      }
    });
    const r = follow(client, "held-back");
    r.pause();
    await sleep(300);
    // Were frames written whatever the HTTP/2 stream's buffer, all 3 MB would be queued and the handler done.
    expect(refused).toBeGreaterThan(0);
    expect(ended).not.toContain("held-back");
    r.resume();
    expect((await r.done).error).toBeUndefined();
    expect(r.seqs).toEqual(range(K));
  });

  it("writes nothing once the client cancelled, and nothing after the handler ended", async () => {
    const afterCancel: boolean[] = [];
    let kept: StreamContext<Pre> | undefined;
    scenarios.set("cancel", async (ctx) => {
      kept = ctx;
      for (let i = 0; !ctx.signal.aborted; i++) {
        const m = message(i);
        if (!ctx.trySendFramed(m.pre, m.frame)) await ctx.send(m.pre).catch(() => {});
        await sleep(2);
      }
      for (let i = 0; i < 5; i++) {
        const m = message(1_000_000 + i);
        afterCancel.push(ctx.trySendFramed(m.pre, m.frame));
      }
    });
    const r = follow(client, "cancel");
    await expect.poll(() => r.seqs.length).toBeGreaterThan(20);
    r.cancel();
    const { error } = await r.done;
    expect(status[error?.code ?? 0]).toBe("CANCELLED");
    await expect.poll(() => ended).toContain("cancel");
    expect(afterCancel).toEqual([false, false, false, false, false]);
    const m = message(7);
    expect(kept?.trySendFramed(m.pre, m.frame)).toBe(false);
    // What arrived before the cancel is in order.
    expect(r.seqs).toEqual(range(r.seqs.length));
  });

  it("a frame over the max send size takes the normal path, which ends the call RESOURCE_EXHAUSTED", async () => {
    scenarios.set("too-big", async (ctx) => {
      await ctx.send(message(0).pre);
      await sleep(20);
      const ok = message(1);
      if (!ctx.trySendFramed(ok.pre, ok.frame)) await ctx.send(ok.pre);
      await sleep(20);
      const big = message(2, MAX_SEND_BYTES + 1);
      if (!ctx.trySendFramed(big.pre, big.frame)) await ctx.send(big.pre);
      await sleep(50);
    });
    const r = follow(client, "too-big");
    const { error } = await r.done;
    expect(status[error?.code ?? 0]).toBe("RESOURCE_EXHAUSTED");
    expect(r.seqs).toEqual([0, 1]);
    // The first message and the big one were serialized; the small frame was not.
    expect(serialized).toBe(2);
  });
});

/** The messages a server sent, as channelz counts them (grpc-js's callEventTracker.addMessageSent). */
async function messagesSent(server: Server): Promise<number> {
  // biome-ignore lint/suspicious/noExplicitAny: channelz's handlers, called in-process with plain objects
  const handlers = getChannelzHandlers() as any;
  const call = <T>(handler: string, request: object) =>
    new Promise<T>((resolve, reject) =>
      handlers[handler]({ request }, (e: Error | null, r: T) => (e ? reject(e) : resolve(r))),
    );
  const serverId = String((server as unknown as { channelzRef: { id: number } }).channelzRef.id);
  const sockets = await call<{ socket_ref: { socket_id: string }[] }>("GetServerSockets", {
    server_id: serverId,
    start_socket_id: "0",
    max_results: "0",
  });
  let total = 0;
  for (const ref of sockets.socket_ref) {
    const socket = await call<{ socket: { data: { messages_sent: number } } }>("GetSocket", {
      socket_id: ref.socket_id,
    });
    total += Number(socket.socket.data.messages_sent);
  }
  return total;
}

describe("trySendFramed on other server shapes", () => {
  async function serve(interceptors: ServerInterceptor[]): Promise<{ client: Client; server: Server }> {
    const server = new Server({ interceptors });
    server.addService(
      definition,
      toGrpcHandlers(definition, implementation, { logger: createLogger({ service: "t", level: "silent" }) }),
    );
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync("127.0.0.1:0", ServerCredentials.createInsecure(), (e, p) =>
        e ? reject(e) : resolve(p),
      ),
    );
    return { server, client: new Client(`127.0.0.1:${port}`, credentials.createInsecure()) };
  }

  const K = 20;
  beforeAll(() => {
    serialized = 0;
    scenarios.set("plain", async (ctx) => {
      await ctx.send(message(0).pre);
      await sleep(20);
      for (let i = 1; i <= K; i++) {
        const m = message(i);
        if (!ctx.trySendFramed(m.pre, m.frame)) await ctx.send(m.pre);
        await turn();
      }
    });
  });
  beforeEach(() => {
    serialized = 0;
  });

  it("takes the fast path on a server without interceptors", async () => {
    const { server, client } = await serve([]);
    try {
      const r = follow(client, "plain");
      expect((await r.done).error).toBeUndefined();
      expect(r.seqs).toEqual(range(K + 1));
      expect(serialized).toBe(1);
      // Frames written directly are counted like the others.
      await expect.poll(() => messagesSent(server)).toBe(K + 1);
    } finally {
      client.close();
      server.forceShutdown();
    }
  });

  it("sends the metadata first on a server without interceptors when the first message is a framed one", async () => {
    const { server, client } = await serve([]);
    scenarios.set("plain-first-framed", async (ctx) => {
      for (let i = 0; i < 5; i++) {
        const m = message(i);
        if (!ctx.trySendFramed(m.pre, m.frame)) await ctx.send(m.pre);
        await turn();
      }
    });
    try {
      const r = follow(client, "plain-first-framed");
      expect((await r.done).error).toBeUndefined();
      expect(r.seqs).toEqual(range(5));
      expect(serialized).toBeGreaterThanOrEqual(1);
    } finally {
      client.close();
      server.forceShutdown();
    }
  });

  it("every message goes the normal way when an interceptor rewrites messages", async () => {
    let rewritten = 0;
    const rewriting: ServerInterceptor = (_descriptor, call) =>
      new ServerInterceptingCall(call, {
        sendMessage: (m, next) => {
          rewritten++;
          next(m);
        },
      });
    const { server, client } = await serve([rewriting]);
    try {
      const r = follow(client, "plain");
      expect((await r.done).error).toBeUndefined();
      expect(r.seqs).toEqual(range(K + 1));
      expect(serialized).toBe(K + 1);
      expect(rewritten).toBe(K + 1);
    } finally {
      client.close();
      server.forceShutdown();
    }
  });
});

describe("DirectFrameWriter.for", () => {
  it("refuses objects that are not grpc-js calls of the known shape", () => {
    expect(DirectFrameWriter.for(undefined)).toBeUndefined();
    expect(DirectFrameWriter.for({})).toBeUndefined();
    expect(
      DirectFrameWriter.for({
        writableLength: 0,
        writableNeedDrain: false,
        writableEnded: false,
        writableCorked: 0,
        destroyed: false,
        cancelled: false,
        call: { stream: {} },
      }),
    ).toBeUndefined();
  });

  it("frames a message as gRPC does: flag 0, big-endian length, the bytes", () => {
    const frame = toGrpcFrame(Buffer.from("abc"));
    expect([...frame]).toEqual([0, 0, 0, 0, 3, 97, 98, 99]);
  });
});
