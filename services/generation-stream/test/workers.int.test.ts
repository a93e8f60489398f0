// A replica on several cores (SPOOL_WORKERS, node:cluster workers sharing the
// gRPC port; docs/adr/0009-generation-stream-multicore.md): follows spread over the workers
// by connection, resumes cross workers, and a worker's death touches only its
// own followers, who resume without a gap.
import { credentials, Metadata, status } from "@grpc/grpc-js";
import { startTestAuth, type TestAuth } from "@spool/auth/testing";
import {
  type FollowGenerationResponse,
  type GenerationEvent,
  GenerationServiceClient,
} from "@spool/proto/spool/generation/v1/generation.js";
import { type Child, runTs, useInfra } from "@spool/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { authCall, genEnv, startRequest } from "./harness.js";

const infra = useInfra("genworkers");
const MAIN = new URL("../src/main.ts", import.meta.url).pathname;
const children: Child[] = [];
const clients: GenerationServiceClient[] = [];
let auth: TestAuth;
let meta: Metadata;

beforeAll(async () => {
  auth = await startTestAuth(infra());
  const a = auth.client;
  const token = (
    await authCall(a.login, a, { email: "admin@spool.test", password: "correct horse battery staple 42" })
  ).tokens!.accessToken;
  meta = new Metadata();
  meta.set("authorization", `Bearer ${token}`);
});
afterAll(async () => {
  for (const c of clients) c.close();
  for (const c of children) c.kill("SIGKILL");
  await auth?.stop();
});

/** A replica with `workers` cluster workers; resolves once every worker listens. */
async function replica(
  env: Record<string, string>,
  workers: number,
): Promise<{ child: Child; port: number }> {
  const child = runTs(MAIN, { env: { ...env, SPOOL_LOG_LEVEL: "info", SPOOL_WORKERS: String(workers) } });
  children.push(child);
  const listening = /"port":(\d+)[^\n]*grpc server listening/g;
  const deadline = Date.now() + 90_000;
  while ([...child.output().matchAll(listening)].length < workers) {
    if (Date.now() > deadline) throw new Error(`workers did not start:\n${child.output().slice(-3000)}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  const ports = new Set([...child.output().matchAll(listening)].map((m) => Number(m[1])));
  // One port, shared by every worker.
  expect(ports.size).toBe(1);
  return { child, port: [...ports][0]! };
}

/** A client on a connection of its own (no shared subchannel), so the primary hands it to the next worker. */
function ownConnection(port: number): GenerationServiceClient {
  const c = new GenerationServiceClient(`127.0.0.1:${port}`, credentials.createInsecure(), {
    "grpc.use_local_subchannel_pool": 1,
  });
  clients.push(c);
  return c;
}

function start(client: GenerationServiceClient, requestId: string): Promise<string> {
  return new Promise((resolve, reject) =>
    client.startGeneration(startRequest(requestId, requestId), meta, (err, res) =>
      err ? reject(err) : resolve(res!.generation!.generationId),
    ),
  );
}

interface Connection {
  events: GenerationEvent[];
  /** OK when the stream ended after its terminal event; the error's code otherwise. */
  done: Promise<number>;
  cancel(): void;
}

function follow(
  client: GenerationServiceClient,
  id: string,
  after: number,
  onEvent?: () => void,
): Connection {
  const events: GenerationEvent[] = [];
  const s = client.followGeneration({ generationId: id, afterSequence: BigInt(after) }, meta);
  const done = new Promise<number>((resolve) => {
    s.on("data", (r: FollowGenerationResponse) => {
      if (r.item?.$case !== "event") return;
      events.push(r.item.value);
      onEvent?.();
    });
    s.on("end", () => resolve(status.OK));
    s.on("error", (e: { code: number }) => resolve(e.code));
  });
  return { events, done, cancel: () => s.cancel() };
}

const sequences = (events: GenerationEvent[]) => events.map((e) => Number(e.sequence));
const terminal = (e: GenerationEvent | undefined) =>
  e?.event?.$case === "completed" || e?.event?.$case === "failed" || e?.event?.$case === "cancelled";

describe("a replica with SPOOL_WORKERS=2", () => {
  it("a follower cut off 50 times and resumed on new connections (alternating workers) gets every event exactly once", async () => {
    const env = genEnv(infra(), {
      SPOOL_BUILTIN_TOKENS_PER_SECOND: "150",
      SPOOL_BUILTIN_LENGTH: "1500",
      SPOOL_COALESCE_WINDOW_MS: "5",
    });
    const { child, port } = await replica(env, 2);
    const id = await start(ownConnection(port), "flaky-workers");
    const got: GenerationEvent[] = [];
    let seed = 7;
    const random = () => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed / 2 ** 31;
    };
    let cuts = 0;
    for (;;) {
      const after = got.length === 0 ? 0 : Number(got.at(-1)!.sequence);
      const limit = cuts < 50 ? 1 + Math.floor(random() * 4) : Number.POSITIVE_INFINITY;
      let c!: Connection;
      c = follow(ownConnection(port), id, after, () => {
        if (c.events.length >= limit) c.cancel();
      });
      const code = await c.done;
      got.push(...c.events);
      if (code === status.OK) break;
      expect(code).toBe(status.CANCELLED);
      cuts++;
    }
    expect(cuts).toBeGreaterThanOrEqual(50);
    expect(sequences(got)).toEqual(got.map((_, i) => i + 1));
    expect(got.at(-1)?.event?.$case).toBe("completed");
    const text = got.map((e) => (e.event?.$case === "delta" ? e.event.value.text : "")).join("");
    const stored = await new Promise<string>((resolve, reject) =>
      ownConnection(port).getGeneration({ generationId: id }, meta, (err, res) =>
        err ? reject(err) : resolve(res!.generation!.text),
      ),
    );
    expect(text).toBe(stored);
    child.kill("SIGTERM");
    expect(await child.exited).toBe(0);
  }, 240_000);

  it("killing one worker loses none of the other worker's followers' events; its own followers resume without a gap", async () => {
    const env = genEnv(infra(), {
      SPOOL_BUILTIN_TOKENS_PER_SECOND: "40",
      SPOOL_BUILTIN_LENGTH: "240",
      SPOOL_LEASE_MS: "2000",
      SPOOL_SWEEP_INTERVAL_MS: "200",
      SPOOL_HEARTBEAT_MS: "300",
    });
    const { child, port } = await replica(env, 2);
    const workerPids = [...child.output().matchAll(/"workerPid":(\d+)[^\n]*worker started/g)].map((m) =>
      Number(m[1]),
    );
    expect(workerPids).toHaveLength(2);
    const id = await start(ownConnection(port), "kill-one-worker");
    // Eight followers on eight connections: the primary deals connections to the workers in turn.
    const followers = Array.from({ length: 8 }, () => {
      const first = follow(ownConnection(port), id, 0);
      return { connections: [first], interrupted: false };
    });
    const delivered = (f: (typeof followers)[number]) => f.connections.flatMap((c) => c.events);
    while (followers.some((f) => delivered(f).filter((e) => e.event?.$case === "delta").length < 3))
      await new Promise((r) => setTimeout(r, 20));
    process.kill(workerPids[0]!, "SIGKILL");
    // Each follower follows on; one whose stream broke resumes on a new connection from its last sequence.
    await Promise.all(
      followers.map(async (f) => {
        for (;;) {
          const code = await f.connections.at(-1)!.done;
          const events = delivered(f);
          if (code === status.OK && terminal(events.at(-1))) return;
          f.interrupted = true;
          await new Promise((r) => setTimeout(r, 100));
          f.connections.push(follow(ownConnection(port), id, Number(events.at(-1)?.sequence ?? 0)));
        }
      }),
    );
    const reference = delivered(followers[0]!);
    expect(sequences(reference)).toEqual(reference.map((_, i) => i + 1));
    expect(terminal(reference.at(-1))).toBe(true);
    for (const f of followers) expect(delivered(f)).toEqual(reference);
    // The kill hit some followers (their worker) and spared others (the other worker's), whose
    // single stream carried everything to the end.
    expect(followers.filter((f) => f.interrupted).length).toBeGreaterThan(0);
    expect(followers.filter((f) => !f.interrupted).length).toBeGreaterThan(0);
    // The primary noticed and replaced the dead worker.
    await expect.poll(() => /worker died/.test(child.output()), { timeout: 10_000 }).toBe(true);
    // ... and its replacement serves (a stop during its start-up is another test's subject).
    await expect
      .poll(() => child.output().match(/grpc server listening/g)?.length ?? 0, { timeout: 60_000 })
      .toBe(3);
    child.kill("SIGTERM");
    expect(await child.exited).toBe(0);
  }, 240_000);
});
