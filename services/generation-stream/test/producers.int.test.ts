import { type ClientDuplexStream, type Metadata, status } from "@grpc/grpc-js";
import { readErrorDetails } from "@spool/kit";
import {
  FailureReason,
  type FollowGenerationResponse,
  type GenerationEvent,
  GenerationStatus,
  type ProduceGenerationRequest,
  type ProduceGenerationResponse,
  ToolChoiceMode,
} from "@spool/proto/spool/generation/v1/generation.js";
import { eventually, useInfra } from "@spool/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { authCall, bearer, call, type Stack, startRequest, startStack } from "./harness.js";

const infra = useInfra("genprod");
let stack: Stack;
let userToken: string;
let producerToken: string;
/** A second organisation: a user who starts generations and its own producer. */
let otherUserToken: string;
let otherProducerToken: string;
const ADMIN = { email: "admin@spool.test", password: "correct horse battery staple 42" };

/** A service account with gen:produce in the organisation of `ownerToken`, and its access token. */
async function producerFor(ownerToken: string): Promise<string> {
  const a = stack.auth.client;
  const sa = await authCall(
    a.createServiceAccount,
    a,
    { name: "producer", scopes: ["gen:produce"] },
    ownerToken,
  );
  return (
    await authCall(a.exchangeClientCredentials, a, {
      clientId: sa.serviceAccount!.serviceAccountId,
      clientSecret: sa.clientSecret,
      scopes: [],
    })
  ).accessToken;
}

beforeAll(async () => {
  stack = await startStack(infra(), {
    SPOOL_EXTERNAL_MODELS: "external",
    SPOOL_LEASE_MS: "1500",
    SPOOL_LIMIT_MAX_ACTIVE: "20",
  });
  const a = stack.auth.client;
  userToken = (await authCall(a.login, a, ADMIN)).tokens!.accessToken;
  producerToken = await producerFor(userToken);
  // The bootstrap admin is an operator: it creates organisation B with its owner.
  const other = { email: "owner@other-org.test", password: "Quartz lantern drifts over velvet 7" };
  await authCall(
    a.createOrganization,
    a,
    {
      name: "Other",
      slug: "other-org",
      ownerEmail: other.email,
      ownerDisplayName: "B",
      ownerPassword: other.password,
    },
    userToken,
  );
  otherUserToken = (await authCall(a.login, a, other)).tokens!.accessToken;
  otherProducerToken = await producerFor(otherUserToken);
});
afterAll(async () => {
  await stack?.stop();
});

const startExternal = async (requestId: string, token = userToken) =>
  (
    await call(
      stack.client.startGeneration,
      stack.client,
      startRequest(requestId, "hi", { model: "external" }),
      token,
    )
  ).generation!.generationId;

const claim = (generationId: string, token = producerToken) =>
  call(stack.client.claimGeneration, stack.client, { generationId, waitMs: 0 }, token);

const claimAny = (waitMs: number, token: string) =>
  call(stack.client.claimGeneration, stack.client, { generationId: "", waitMs }, token);

/** Opens a produce stream and returns helpers to send and to collect responses / the final status. */
function produce(token = producerToken) {
  const stream: ClientDuplexStream<ProduceGenerationRequest, ProduceGenerationResponse> =
    stack.client.produceGeneration(bearer(token));
  const responses: ProduceGenerationResponse[] = [];
  const done = new Promise<{ code: number; metadata?: Metadata }>((resolve) => {
    stream.on("data", (r: ProduceGenerationResponse) => responses.push(r));
    stream.on("error", (e: { code: number; metadata: Metadata }) => resolve(e));
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

describe("producer messages are checked like any request", () => {
  it("a message with a control character is refused with INVALID_ARGUMENT naming its field, after the ones before it", async () => {
    const id = await startExternal("ext-text");
    const { lease } = await claim(id);
    const p = produce();
    p.send({ item: { $case: "lease", value: lease! } });
    p.send({ item: { $case: "delta", value: { text: "fine" } } });
    p.send({ item: { $case: "delta", value: { text: "bad\u0000" } } });
    p.send({ item: { $case: "delta", value: { text: "never read" } } });
    const end = await p.done;
    expect(end.code).toBe(status.INVALID_ARGUMENT);
    expect(readErrorDetails(end.metadata).violations.map((v) => v.field)).toEqual(["delta.text"]);
    const acked = p.responses.flatMap((r) =>
      r.item?.$case === "appended" ? [Number(r.item.value.sequence)] : [],
    );
    expect(acked).toEqual([3]);
    p.end();
  });
});

describe("producer tenancy: a producer serves only its own organisation", () => {
  it("another organisation's producer claiming a generation by id gets NOT_FOUND, like an unknown id", async () => {
    const id = await startExternal("tenant-1");
    await expect(claim(id, otherProducerToken)).rejects.toMatchObject({ code: status.NOT_FOUND });
    await expect(claim("no-such-generation", otherProducerToken)).rejects.toMatchObject({
      code: status.NOT_FOUND,
    });
    await expect(claim("gen.generation.>", otherProducerToken)).rejects.toMatchObject({
      code: status.NOT_FOUND,
    });
    // Nothing was granted: the owning organisation's producer takes the first lease.
    expect((await claim(id)).lease).toMatchObject({ generationId: id, epoch: 1n });
  });

  it("claiming with wait_ms offers only the producer's own organisation's generations", async () => {
    const mine = await startExternal("tenant-2");
    // The queue is read from the projection: wait until A's generation is in it, so it could be offered.
    await eventually(
      async () => {
        const { generations } = await call(
          stack.client.listGenerations,
          stack.client,
          {
            status: GenerationStatus.GENERATION_STATUS_QUEUED,
            conversationId: "",
            createdAfterMs: 0n,
            createdBeforeMs: 0n,
            pageSize: 50,
            pageToken: "",
          },
          userToken,
        );
        return generations.some((g) => g.generationId === mine);
      },
      { timeoutMs: 10_000 },
    );
    // Only A's generation is queued: B's producer waits and gets no lease.
    const none = await claimAny(500, otherProducerToken);
    expect(none.lease).toBeUndefined();
    expect(none.messages).toEqual([]);
    // B's own generation (newer than A's) is the one B's producer gets.
    const theirs = await startExternal("tenant-2b", otherUserToken);
    const got = await eventually(async () => (await claimAny(1_000, otherProducerToken)).lease, {
      timeoutMs: 10_000,
    });
    expect(got.generationId).toBe(theirs);
    // A's generation is still queued for A's producer.
    expect((await claim(mine)).lease).toMatchObject({ generationId: mine, epoch: 1n });
  });

  it("another organisation's producer cannot open, append to or finish a generation with its lease", async () => {
    const id = await startExternal("tenant-3");
    const { lease } = await claim(id);
    const intruder = produce(otherProducerToken);
    intruder.send({ item: { $case: "lease", value: lease! } });
    intruder.send({ item: { $case: "delta", value: { text: "injected" } } });
    intruder.send({ item: { $case: "completed", value: { usage: undefined } } });
    intruder.end();
    expect((await intruder.done).code).toBe(status.NOT_FOUND);
    expect(intruder.responses).toEqual([]);
    // The lease holder carries on undisturbed: its first append follows `started` directly.
    const owner = produce();
    owner.send({ item: { $case: "lease", value: lease! } });
    owner.send({ item: { $case: "delta", value: { text: "mine" } } });
    owner.send({ item: { $case: "completed", value: { usage: undefined } } });
    owner.end();
    expect((await owner.done).code).toBe(status.OK);
    const acked = owner.responses.flatMap((r) =>
      r.item?.$case === "appended" ? [Number(r.item.value.sequence)] : [],
    );
    expect(acked).toEqual([3, 4]);
    const events = await followAll(id);
    expect(events.map((e) => e.event?.$case)).toEqual(["created", "started", "delta", "completed"]);
    const text = events.map((e) => (e.event?.$case === "delta" ? e.event.value.text : "")).join("");
    expect(text).toBe("mine");
  });
});

describe("ClaimGeneration hands external producers the whole request", () => {
  it("includes the tools and tool_choice the generation was started with", async () => {
    const tools = [{ name: "lookup", description: "Looks things up", parametersJson: '{"type":"object"}' }];
    const toolChoice = { mode: ToolChoiceMode.TOOL_CHOICE_MODE_FUNCTION, functionName: "lookup" };
    const { generation } = await call(
      stack.client.startGeneration,
      stack.client,
      {
        clientRequestId: "ext-tools",
        model: "external",
        messages: [{ role: "user", content: "find it", toolCalls: [] }],
        parameters: undefined,
        toolIds: [],
        fileIds: [],
        conversationId: "",
        tools,
        toolChoice,
      },
      userToken,
    );
    const claimed = await claim(generation!.generationId);
    expect(claimed.tools).toEqual(tools);
    expect(claimed.toolChoice).toEqual(toolChoice);
  });
});
