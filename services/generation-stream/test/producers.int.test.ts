import { type ClientDuplexStream, status } from "@grpc/grpc-js";
import {
  FailureReason,
  type FollowGenerationResponse,
  type GenerationEvent,
  type ProduceGenerationRequest,
  type ProduceGenerationResponse,
} from "@spool/proto/spool/generation/v1/generation.js";
import { eventually, useInfra } from "@spool/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { authCall, bearer, call, type Stack, startStack } from "./harness.js";

const infra = useInfra("genprod");
let stack: Stack;
let userToken: string;
let producerToken: string;
const ADMIN = { email: "admin@spool.test", password: "correct horse battery staple 42" };

beforeAll(async () => {
  stack = await startStack(infra(), {
    SPOOL_EXTERNAL_MODELS: "external",
    SPOOL_LEASE_MS: "1500",
    SPOOL_LIMIT_MAX_ACTIVE: "20",
  });
  const a = stack.auth.client;
  userToken = (await authCall(a.login, a, ADMIN)).tokens!.accessToken;
  const sa = await authCall(
    a.createServiceAccount,
    a,
    { name: "producer", scopes: ["gen:produce"] },
    userToken,
  );
  producerToken = (
    await authCall(a.exchangeClientCredentials, a, {
      clientId: sa.serviceAccount!.serviceAccountId,
      clientSecret: sa.clientSecret,
      scopes: [],
    })
  ).accessToken;
});
afterAll(async () => {
  await stack?.stop();
});

const startExternal = async (requestId: string) =>
  (
    await call(
      stack.client.startGeneration,
      stack.client,
      {
        clientRequestId: requestId,
        model: "external",
        messages: [{ role: "user", content: "hi" }],
        parameters: undefined,
        toolIds: [],
        fileIds: [],
        conversationId: "",
      },
      userToken,
    )
  ).generation!.generationId;

const claim = (generationId: string) =>
  call(stack.client.claimGeneration, stack.client, { generationId, waitMs: 0 }, producerToken);

/** Opens a produce stream and returns helpers to send and to collect responses / the final status. */
function produce() {
  const stream: ClientDuplexStream<ProduceGenerationRequest, ProduceGenerationResponse> =
    stack.client.produceGeneration(bearer(producerToken));
  const responses: ProduceGenerationResponse[] = [];
  const done = new Promise<{ code: number }>((resolve) => {
    stream.on("data", (r: ProduceGenerationResponse) => responses.push(r));
    stream.on("error", (e: { code: number }) => resolve(e));
    stream.on("end", () => resolve({ code: status.OK }));
  });
  return { send: (m: ProduceGenerationRequest) => stream.write(m), end: () => stream.end(), responses, done };
}

function followAll(id: string): Promise<GenerationEvent[]> {
  return new Promise((resolve, reject) => {
    const events: GenerationEvent[] = [];
    const s = stack.client.followGeneration({ generationId: id, afterSequence: 0n }, bearer(userToken));
    s.on("data", (r: FollowGenerationResponse) => r.item?.$case === "event" && events.push(r.item.value));
    s.on("end", () => resolve(events));
    s.on("error", reject);
  });
}

describe("external producers", () => {
  it("claim, append deltas with acked sequences, complete; followers see it all", async () => {
    const id = await startExternal("ext-1");
    const { lease } = await claim(id);
    expect(lease).toMatchObject({ generationId: id, epoch: 1n });
    const p = produce();
    p.send({ item: { $case: "lease", value: lease! } });
    p.send({ item: { $case: "delta", value: { text: "hello" } } });
    p.send({ item: { $case: "delta", value: { text: " world" } } });
    p.send({ item: { $case: "completed", value: { usage: { promptTokens: 1n, completionTokens: 2n } } } });
    p.end();
    expect((await p.done).code).toBe(status.OK);
    const acked = p.responses.flatMap((r) =>
      r.item?.$case === "appended" ? [Number(r.item.value.sequence)] : [],
    );
    expect(acked).toEqual([3, 4, 5]); // 1 created, 2 started
    const events = await followAll(id);
    expect(events.map((e) => e.event?.$case)).toEqual(["created", "started", "delta", "delta", "completed"]);
    const got = await call(stack.client.getGeneration, stack.client, { generationId: id }, userToken);
    expect(got.generation?.text).toBe("hello world");
  });

  it("a user token cannot produce; a second claim of a leased generation fails", async () => {
    const id = await startExternal("ext-2");
    await expect(
      call(stack.client.claimGeneration, stack.client, { generationId: id, waitMs: 0 }, userToken),
    ).rejects.toMatchObject({
      code: status.PERMISSION_DENIED,
    });
    await claim(id);
    await expect(claim(id)).rejects.toMatchObject({ code: status.FAILED_PRECONDITION });
  });

  it("an expired lease with no output is re-queued; the stale producer's appends are rejected", async () => {
    const id = await startExternal("ext-3");
    const first = (await claim(id)).lease!;
    // No renewal: the sweeper re-queues it once the lease runs out, and a new producer takes over.
    const second = await eventually(async () => (await claim(id).catch(() => undefined))?.lease, {
      timeoutMs: 10_000,
    });
    expect(second.epoch).toBe(2n);
    const stale = produce();
    stale.send({ item: { $case: "lease", value: first } });
    stale.send({ item: { $case: "delta", value: { text: "late" } } });
    expect((await stale.done).code).toBe(status.FAILED_PRECONDITION);
    const fresh = produce();
    fresh.send({ item: { $case: "lease", value: second } });
    fresh.send({ item: { $case: "delta", value: { text: "fresh" } } });
    fresh.send({ item: { $case: "completed", value: { usage: undefined } } });
    fresh.end();
    expect((await fresh.done).code).toBe(status.OK);
    const events = await followAll(id);
    const text = events.map((e) => (e.event?.$case === "delta" ? e.event.value.text : "")).join("");
    expect(text).toBe("fresh");
  });

  it("an expired lease after output fails the generation with a typed reason", async () => {
    const id = await startExternal("ext-4");
    const { lease } = await claim(id);
    const p = produce();
    p.send({ item: { $case: "lease", value: lease! } });
    p.send({ item: { $case: "delta", value: { text: "partial" } } });
    await eventually(async () => p.responses.length >= 1, { timeoutMs: 5_000 });
    // The producer goes silent (dies): no renewal, no end.
    const events = await followAll(id);
    const last = events.at(-1);
    expect(last?.event?.$case).toBe("failed");
    if (last?.event?.$case === "failed")
      expect(last.event.value.reason).toBe(FailureReason.FAILURE_REASON_PRODUCER_LOST);
    p.end();
  });

  it("a cancel reaches the producer as a response, and the generation ends cancelled", async () => {
    const id = await startExternal("ext-5");
    const { lease } = await claim(id);
    const p = produce();
    p.send({ item: { $case: "lease", value: lease! } });
    p.send({ item: { $case: "delta", value: { text: "working" } } });
    await eventually(async () => p.responses.length >= 1, { timeoutMs: 5_000 });
    await call(stack.client.cancelGeneration, stack.client, { generationId: id }, userToken);
    await eventually(async () => p.responses.some((r) => r.item?.$case === "cancel"), { timeoutMs: 5_000 });
    p.end();
    expect((await p.done).code).toBe(status.OK);
    const events = await followAll(id);
    expect(events.at(-1)?.event?.$case).toBe("cancelled");
  });
});
