import { type ClientReadableStream, status } from "@grpc/grpc-js";
import type {
  FollowGenerationResponse,
  GenerationEvent,
} from "@spool/proto/spool/generation/v1/generation.js";
import { useInfra } from "@spool/testing";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { followDefinition } from "../src/grpc/generation-service.js";
import { BuiltinModel } from "../src/providers/index.js";
import { authCall, bearer, call, type Stack, startRequest, startStack } from "./harness.js";

const infra = useInfra("genfollow");
let stack: Stack;
let token: string;

/** Events that went out through grpc-js's normal path (its serializer); the direct frames do not. */
let serializedEvents = 0;

beforeAll(async () => {
  // Before the service registers the definition, which grpc-js reads once.
  const serialize = followDefinition.followGeneration.responseSerialize;
  vi.spyOn(followDefinition.followGeneration, "responseSerialize").mockImplementation((value) => {
    if ("preEncoded" in value) serializedEvents++;
    return serialize(value);
  });
  // 400 tokens at 200/s, coalesced every 5 ms: a couple of seconds of live output.
  stack = await startStack(
    infra(),
    { SPOOL_COALESCE_WINDOW_MS: "5" },
    new Map([["builtin", new BuiltinModel({ tokensPerSecond: 200, length: 400 })]]),
  );
  const a = stack.auth.client;
  token = (
    await authCall(a.login, a, { email: "admin@spool.test", password: "correct horse battery staple 42" })
  ).tokens!.accessToken;
});
afterAll(async () => {
  await stack?.stop();
});

/** Follows from `after`; stops after `limit` events (simulating a dropped connection) or at the end. */
function follow(
  id: string,
  after: number,
  limit = Number.POSITIVE_INFINITY,
): Promise<{ events: GenerationEvent[]; ended: boolean }> {
  return new Promise((resolve, reject) => {
    const events: GenerationEvent[] = [];
    const s: ClientReadableStream<FollowGenerationResponse> = stack.client.followGeneration(
      { generationId: id, afterSequence: BigInt(after) },
      bearer(token),
    );
    s.on("data", (r: FollowGenerationResponse) => {
      if (r.item?.$case !== "event") return;
      events.push(r.item.value);
      if (events.length >= limit) {
        s.cancel();
        resolve({ events, ended: false });
      }
    });
    s.on("end", () => resolve({ events, ended: true }));
    s.on("error", (e: { code: number }) =>
      e.code === status.CANCELLED ? resolve({ events, ended: false }) : reject(e),
    );
  });
}

const start = async (requestId: string) =>
  (await call(stack.client.startGeneration, stack.client, startRequest(requestId, requestId), token))
    .generation!.generationId;

const sequences = (events: GenerationEvent[]) => events.map((e) => Number(e.sequence));

describe("following through the service", () => {
  it("ten followers, some joining late, receive identical sequences", async () => {
    const id = await start("ten");
    const early = Array.from({ length: 5 }, () => follow(id, 0));
    await new Promise((r) => setTimeout(r, 400));
    const late = [follow(id, 0), follow(id, 0), follow(id, 2), follow(id, 5), follow(id, 0)];
    const serializedBefore = serializedEvents;
    const results = await Promise.all([...early, ...late]);
    const full = results[0]!.events;
    expect(full.at(-1)?.event?.$case).toBe("completed");
    expect(sequences(full)).toEqual(full.map((_, i) => i + 1));
    results.forEach((r, i) => {
      const after = [0, 0, 0, 0, 0, 0, 0, 2, 5, 0][i]!;
      expect(r.ended).toBe(true);
      expect(r.events).toEqual(full.slice(after));
    });
    // Live followers are written pre-built frames (kit trySendFramed): most events skip the
    // serializer; the late followers' catch-up, a follower behind and the terminal events do not.
    const delivered = results.reduce((n, r) => n + r.events.length, 0);
    expect(serializedEvents - serializedBefore).toBeLessThan(delivered / 2);
  });

  it("a follower cut off at random points 50 times gets every event exactly once, in order, text intact", async () => {
    const id = await start("flaky");
    const got: GenerationEvent[] = [];
    let seed = 42;
    const random = () => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed / 2 ** 31;
    };
    for (let cut = 0; cut < 50; cut++) {
      const after = got.length === 0 ? 0 : Number(got.at(-1)!.sequence);
      const { events, ended } = await follow(id, after, 1 + Math.floor(random() * 4));
      got.push(...events);
      if (ended) break;
    }
    const rest = await follow(id, got.length === 0 ? 0 : Number(got.at(-1)!.sequence));
    got.push(...rest.events);
    expect(sequences(got)).toEqual(got.map((_, i) => i + 1));
    expect(got.at(-1)?.event?.$case).toBe("completed");
    const text = got.map((e) => (e.event?.$case === "delta" ? e.event.value.text : "")).join("");
    const stored = (await call(stack.client.getGeneration, stack.client, { generationId: id }, token))
      .generation!;
    expect(text).toBe(stored.text);
    // The shared subscription served everyone: one per followed generation on this replica at most.
    expect(stack.gen.hub.stats().subscriptionsOpened).toBeLessThanOrEqual(2);
  });
});
