// The server's CPU per streamed message sent to a live follower, in-process:
// a real kit GrpcApp (its interceptor included) with one server-streaming
// method, N client streams opened by a CHILD process (so the client's CPU is
// not counted), split into groups of F (a generation's followers), and the
// server sending M pre-encoded ~400-byte events to every stream: each turn of
// the event loop, one event per group fanned out to its F streams, as the
// follow hub does.
// Variants run interleaved over rounds:
//   trySend        ctx.trySend({ preEncoded }) (grpc-js's call.write path)
//   trySendFramed  ctx.trySendFramed({ preEncoded }, frame), the frame built once per event
// A refused send falls back to ctx.send in order, like a follower falling
// behind. Each stream's messages are checked by the client (all received,
// once, in order) before the round counts.
//   node --conditions=@spool/source --import tsx bench/gen/send-cpu.ts
import { fork } from "node:child_process";
import { fileURLToPath } from "node:url";
import { Client, credentials, type ServiceError } from "@grpc/grpc-js";
import { createLogger, GrpcApp, type GrpcFrame, type StreamContext, toGrpcFrame } from "@spool/kit";
import { envInt } from "../lib/env.js";

const N = envInt("SPOOL_BENCH_SEND_STREAMS", 200, 1);
/** Streams per event (followers of one generation); the frame is built once per event. */
const F = envInt("SPOOL_BENCH_SEND_FANOUT", 10, 1);
const M = envInt("SPOOL_BENCH_SEND_MESSAGES", 300, 1);
const ROUNDS = envInt("SPOOL_BENCH_SEND_ROUNDS", 3, 1);
const BYTES = envInt("SPOOL_BENCH_SEND_BYTES", 400, 8);
const CHANNELS = envInt("SPOOL_BENCH_SEND_CHANNELS", 4, 1);
const PATH = "/spool.bench.SendCpu/Stream";
/** The first message of every stream (it sends the response metadata); not measured. */
const HELLO = 0xffff_ffff;

type Pre = { preEncoded: Buffer };
const definition = {
  stream: {
    path: PATH,
    requestStream: false,
    responseStream: true,
    requestSerialize: (v: { round: string }) => Buffer.from(JSON.stringify(v)),
    requestDeserialize: (b: Buffer) => JSON.parse(b.toString()) as { round: string },
    responseSerialize: (v: Pre) => v.preEncoded,
    responseDeserialize: (b: Buffer) => b,
  },
} as const;

/** A message of BYTES bytes whose first four say its sequence number. */
function message(seq: number): Buffer {
  const b = Buffer.alloc(BYTES, seq & 0xff);
  b.writeUInt32BE(seq, 0);
  return b;
}

type ChildMessage = { kind: "hellos" } | { kind: "done"; received: number; errors: string[] };
type ParentMessage = { kind: "open"; port: number; round: string } | { kind: "exit" };

// ---------------------------------------------------------------- client (child)

function runClient(): void {
  const clients: Client[] = [];
  process.on("message", (m: ParentMessage) => {
    if (m.kind === "exit") {
      for (const c of clients) c.close();
      process.exit(0);
    }
    if (clients.length === 0) {
      for (let i = 0; i < CHANNELS; i++) {
        clients.push(
          new Client(`127.0.0.1:${m.port}`, credentials.createInsecure(), {
            "grpc.use_local_subchannel_pool": 1,
          }),
        );
      }
    }
    openRound(clients, m.round);
  });
}

function openRound(clients: Client[], round: string): void {
  let hellos = 0;
  let finished = 0;
  let received = 0;
  const errors: string[] = [];
  for (let s = 0; s < N; s++) {
    const client = clients[s % clients.length] as Client;
    const call = client.makeServerStreamRequest(
      PATH,
      definition.stream.requestSerialize,
      definition.stream.responseDeserialize,
      { round },
    );
    let next = 0;
    let helloSeen = false;
    call.on("data", (b: Buffer) => {
      const seq = b.readUInt32BE(0);
      if (b.byteLength !== BYTES) errors.push(`stream ${s}: message of ${b.byteLength} bytes`);
      if (!helloSeen) {
        if (seq !== HELLO) errors.push(`stream ${s}: first message ${seq}, not the hello`);
        helloSeen = true;
        if (++hellos === N) process.send?.({ kind: "hellos" } satisfies ChildMessage);
        return;
      }
      if (seq !== next) errors.push(`stream ${s}: got ${seq}, expected ${next}`);
      next = seq + 1;
      received++;
    });
    const end = (error?: ServiceError) => {
      if (error) errors.push(`stream ${s}: ${error.message}`);
      if (next !== M) errors.push(`stream ${s}: ended after ${next} of ${M}`);
      if (++finished === N) {
        process.send?.({ kind: "done", received, errors: errors.slice(0, 10) } satisfies ChildMessage);
      }
    };
    call.on("error", end);
    call.on("status", (st: { code: number }) => {
      if (st.code === 0) end();
    });
  }
}

// ---------------------------------------------------------------- server (this process)

type Variant = "trySend" | "trySendFramed";

interface Follower {
  ctx: StreamContext<Pre>;
  end: () => void;
  /** Messages waiting for ctx.send, in order, once a try was refused. */
  backlog: Pre[];
  draining: Promise<void> | undefined;
}

async function main(): Promise<void> {
  const logger = createLogger({ service: "bench-send-cpu", level: "error" });
  const app = new GrpcApp({
    name: "bench-send-cpu",
    logger,
    host: "127.0.0.1",
    port: 0,
    maxReceiveBytes: 1 << 20,
    maxSendBytes: 4 << 20,
    shutdownGraceMs: 1_000,
  });
  const waiting = new Map<string, { followers: Follower[]; all: () => void }>();
  app.addService(definition, {
    stream: (request, ctx) =>
      new Promise<void>((resolve) => {
        const r = waiting.get(request.round);
        if (!r) throw new Error(`unknown round ${request.round}`);
        r.followers.push({ ctx, end: resolve, backlog: [], draining: undefined });
        if (r.followers.length === N) r.all();
      }),
  });
  const port = await app.start();

  const child = fork(fileURLToPath(import.meta.url), ["--client"], { stdio: "inherit" });
  const fromChild = (kind: ChildMessage["kind"]) =>
    new Promise<ChildMessage>((resolve) => {
      const on = (m: ChildMessage) => {
        if (m.kind !== kind) return;
        child.off("message", on);
        resolve(m);
      };
      child.on("message", on);
    });

  const payloads = Array.from({ length: M }, (_, i) => message(i));
  const hello: Pre = { preEncoded: message(HELLO) };
  const variants: Variant[] = ["trySend", "trySendFramed"];
  const results = new Map<Variant, number[]>(variants.map((v) => [v, []]));
  let roundNo = 0;

  const runOne = async (variant: Variant) => {
    const round = `r${roundNo++}`;
    let all!: () => void;
    const opened = new Promise<void>((r) => {
      all = r;
    });
    const entry = { followers: [] as Follower[], all };
    waiting.set(round, entry);
    const hellos = fromChild("hellos");
    child.send({ kind: "open", port, round } satisfies ParentMessage);
    await opened;
    for (const f of entry.followers) await f.ctx.send(hello);
    await hellos;
    const done = fromChild("done");

    let refused = 0;
    const start = process.cpuUsage();
    const t0 = performance.now();
    for (let i = 0; i < M; i++) {
      const wire = payloads[i] as Buffer;
      for (let g = 0; g < N; g += F) {
        // One event of one generation: its own message and frame, shared by its followers.
        const pre: Pre = { preEncoded: wire };
        const frame: GrpcFrame | undefined = variant === "trySendFramed" ? toGrpcFrame(wire) : undefined;
        for (let s = g; s < Math.min(g + F, N); s++) {
          const f = entry.followers[s] as Follower;
          if (f.backlog.length === 0) {
            const sent = frame ? f.ctx.trySendFramed(pre, frame) : f.ctx.trySend(pre);
            if (sent) continue;
            refused++;
          }
          f.backlog.push(pre);
          f.draining ??= drain(f);
        }
      }
      await new Promise((r) => setImmediate(r));
    }
    await Promise.all(entry.followers.map((f) => f.draining));
    for (const f of entry.followers) f.end();
    const result = (await done) as Extract<ChildMessage, { kind: "done" }>;
    const cpu = process.cpuUsage(start);
    const wallMs = performance.now() - t0;
    waiting.delete(round);
    if (result.errors.length > 0 || result.received !== N * M) {
      throw new Error(`${variant}: received ${result.received} of ${N * M}: ${result.errors.join("; ")}`);
    }
    const perMessage = (cpu.user + cpu.system) / (N * M);
    results.get(variant)?.push(perMessage);
    console.log(
      `${variant.padEnd(14)} ${perMessage.toFixed(2)} µs/message  (${N}×${M}, fan-out ${F}, refused ${refused}, wall ${wallMs.toFixed(0)} ms)`,
    );
  };

  // A warm-up of each, not counted.
  for (const v of variants) await runOne(v);
  for (const r of results.values()) r.length = 0;
  console.log("--- measured");
  for (let round = 0; round < ROUNDS; round++) {
    const order = round % 2 === 0 ? variants : [...variants].reverse();
    for (const v of order) await runOne(v);
  }
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number;
  const base = median(results.get("trySend") ?? []);
  for (const v of variants) {
    const m = median(results.get(v) ?? []);
    console.log(
      `median ${v.padEnd(14)} ${m.toFixed(2)} µs/message  (${(((m - base) / base) * 100).toFixed(1)} % vs trySend)`,
    );
  }
  child.send({ kind: "exit" } satisfies ParentMessage);
  await app.stop();
}

async function drain(f: Follower): Promise<void> {
  while (f.backlog.length > 0) {
    await f.ctx.send(f.backlog[0] as Pre);
    f.backlog.shift();
  }
  f.draining = undefined;
}

if (process.argv.includes("--client")) {
  runClient();
} else {
  await main();
}
