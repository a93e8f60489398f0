import { credentials, Metadata, status } from "@grpc/grpc-js";
import { startTestAuth, type TestAuth } from "@spool/auth/testing";
import {
  FailureReason,
  type FollowGenerationResponse,
  type GenerationEvent,
  GenerationServiceClient,
} from "@spool/proto/spool/generation/v1/generation.js";
import { type Child, runTs, useInfra } from "@spool/testing";
import { afterAll, describe, expect, it } from "vitest";
import { authCall, genEnv, startRequest } from "./harness.js";

const infra = useInfra("genkill");
const MAIN = new URL("../src/main.ts", import.meta.url).pathname;
const children: Child[] = [];
let auth: TestAuth | undefined;
afterAll(async () => {
  for (const c of children) c.kill("SIGKILL");
  await auth?.stop();
});

async function replica(
  env: Record<string, string>,
  workers: number,
): Promise<{ child: Child; client: GenerationServiceClient }> {
  const child = runTs(MAIN, { env: { ...env, SPOOL_LOG_LEVEL: "info", SPOOL_WORKERS: String(workers) } });
  children.push(child);
  const line = await child.waitFor(/"port":\d+[^\n]*grpc server listening/, 60_000);
  const port = Number(/"port":(\d+)/.exec(line)?.[1]);
  return { child, client: new GenerationServiceClient(`127.0.0.1:${port}`, credentials.createInsecure()) };
}

// Each scenario with one process per replica and with SPOOL_WORKERS=2 (cluster workers sharing
// the port): killing a replica's primary ends its workers at once, like killing a single process.
for (const workers of [1, 2]) {
  describe(`a replica dies mid-generation (SPOOL_WORKERS=${workers})`, () => {
    it("followers on another replica keep their stream to the last event, then see the typed failure; nothing is duplicated", async () => {
      auth ??= await startTestAuth(infra());
      const a = auth.client;
      const token = (
        await authCall(a.login, a, { email: "admin@spool.test", password: "correct horse battery staple 42" })
      ).tokens!.accessToken;
      const env = genEnv(infra(), {
        SPOOL_BUILTIN_TOKENS_PER_SECOND: "40",
        SPOOL_BUILTIN_LENGTH: "5000",
        SPOOL_LEASE_MS: "2000",
        SPOOL_SWEEP_INTERVAL_MS: "200",
        SPOOL_HEARTBEAT_MS: "300",
      });
      const producerReplica = await replica(env, workers);
      const meta = new Metadata();
      meta.set("authorization", `Bearer ${token}`);
      const started = await new Promise<string>((resolve, reject) =>
        producerReplica.client.startGeneration(startRequest(`doomed-${workers}`, "go"), meta, (err, res) =>
          err ? reject(err) : resolve(res!.generation!.generationId),
        ),
      );
      // The first replica's worker has claimed it (its `started` event is out) before the second exists.
      await new Promise<void>((resolve, reject) => {
        const s = producerReplica.client.followGeneration({ generationId: started, afterSequence: 0n }, meta);
        s.on("data", (r: FollowGenerationResponse) => {
          if (r.item?.$case === "event" && r.item.value.event?.$case === "started") {
            s.cancel();
            resolve();
          }
        });
        s.on("error", (e: { code: number }) => (e.code === status.CANCELLED ? resolve() : reject(e)));
      });
      const followerReplica = await replica(env, workers);
      const events: GenerationEvent[] = [];
      const ended = new Promise<void>((resolve, reject) => {
        const stream = followerReplica.client.followGeneration(
          { generationId: started, afterSequence: 0n },
          meta,
        );
        stream.on("data", (r: FollowGenerationResponse) => {
          if (r.item?.$case === "event") events.push(r.item.value);
        });
        stream.on("end", () => resolve());
        stream.on("error", (e: { code: number }) => (e.code === status.CANCELLED ? resolve() : reject(e)));
      });
      // Let some output flow, then kill the producing replica outright.
      while (events.filter((e) => e.event?.$case === "delta").length < 3)
        await new Promise((r) => setTimeout(r, 20));
      producerReplica.child.kill("SIGKILL");
      await ended;

      expect(events.map((e) => Number(e.sequence))).toEqual(events.map((_, i) => i + 1));
      const last = events.at(-1)!;
      expect(last.event?.$case).toBe("failed");
      if (last.event?.$case === "failed")
        expect(last.event.value.reason).toBe(FailureReason.FAILURE_REASON_PRODUCER_LOST);
      // Everything the dead producer appended was delivered before the failure, once.
      expect(events.filter((e) => e.event?.$case === "delta").length).toBeGreaterThanOrEqual(3);
      producerReplica.client.close();
      followerReplica.client.close();
      followerReplica.child.kill("SIGTERM");
      expect(await followerReplica.child.exited).toBe(0);
    }, 240_000);
  });

  describe(`a replica shutting down (SPOOL_WORKERS=${workers})`, () => {
    it("ends its follow streams with UNAVAILABLE at once and exits 0; the follower resumes elsewhere with no gap", async () => {
      auth ??= await startTestAuth(infra());
      const a = auth.client;
      const token = (
        await authCall(a.login, a, { email: "admin@spool.test", password: "correct horse battery staple 42" })
      ).tokens!.accessToken;
      const env = genEnv(infra(), {
        SPOOL_BUILTIN_TOKENS_PER_SECOND: "50",
        SPOOL_BUILTIN_LENGTH: "200",
        SPOOL_SHUTDOWN_GRACE_MS: "10000",
        SPOOL_LIMIT_MAX_ACTIVE: "10",
      });
      const first = await replica(env, workers);
      const second = await replica(env, workers);
      const meta = new Metadata();
      meta.set("authorization", `Bearer ${token}`);
      const id = await new Promise<string>((resolve, reject) =>
        second.client.startGeneration(startRequest(`graceful-${workers}`, "go"), meta, (err, res) =>
          err ? reject(err) : resolve(res!.generation!.generationId),
        ),
      );
      const followOn = (client: GenerationServiceClient, after: number, onEvent?: (n: number) => void) => {
        const events: GenerationEvent[] = [];
        const done = new Promise<{ code: number }>((resolve) => {
          const s = client.followGeneration({ generationId: id, afterSequence: BigInt(after) }, meta);
          s.on("data", (r: FollowGenerationResponse) => {
            if (r.item?.$case === "event") {
              events.push(r.item.value);
              onEvent?.(events.length);
            }
          });
          s.on("end", () => resolve({ code: status.OK }));
          s.on("error", (e: { code: number }) => resolve(e));
        });
        return { events, done };
      };
      let sawSome!: () => void;
      const some = new Promise<void>((r) => {
        sawSome = r;
      });
      const onFirst = followOn(first.client, 0, (n) => n >= 3 && sawSome());
      await some;
      const t0 = Date.now();
      first.child.kill("SIGTERM");
      const ended = await onFirst.done;
      expect(ended.code).toBe(status.UNAVAILABLE);
      expect(await first.child.exited).toBe(0);
      // Well inside the 10 s grace: follows do not hold shutdown up.
      expect(Date.now() - t0).toBeLessThan(8_000);
      const last = Number(onFirst.events.at(-1)!.sequence);
      const resumed = followOn(second.client, last);
      expect((await resumed.done).code).toBe(status.OK);
      const all = [...onFirst.events, ...resumed.events];
      expect(all.map((e) => Number(e.sequence))).toEqual(all.map((_, i) => i + 1));
      expect(all.at(-1)?.event?.$case).toBe("completed");
      first.client.close();
      second.client.close();
      second.child.kill("SIGTERM");
      expect(await second.child.exited).toBe(0);
    }, 240_000);
  });
}
