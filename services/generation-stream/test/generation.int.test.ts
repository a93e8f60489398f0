import { type ClientReadableStream, type Metadata, status } from "@grpc/grpc-js";
import { jetstreamManager } from "@nats-io/jetstream";
import { connectNats, Namespace } from "@spool/kit";
import { Role } from "@spool/proto/spool/auth/v1/auth.js";
import {
  type FollowGenerationResponse,
  type GenerationEvent,
  GenerationStatus,
} from "@spool/proto/spool/generation/v1/generation.js";
import { eventually, useInfra } from "@spool/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BuiltinModel } from "../src/providers/index.js";
import { authCall, bearer, call, type Stack, startStack } from "./harness.js";

const infra = useInfra("gen");
let stack: Stack;
const ADMIN = { email: "admin@spool.test", password: "correct horse battery staple 42" };

beforeAll(async () => {
  stack = await startStack(
    infra(),
    { SPOOL_EXTERNAL_MODELS: "external" },
    new Map([
      ["builtin", new BuiltinModel({ tokensPerSecond: 0, length: 40 })],
      ["slow", new BuiltinModel({ tokensPerSecond: 40, length: 2_000 })],
    ]),
  );
});
afterAll(async () => {
  await stack?.stop();
});

async function owner(slug: string): Promise<string> {
  const a = stack.auth.client;
  const admin = (await authCall(a.login, a, ADMIN)).tokens!.accessToken;
  const email = `owner@${slug}.test`;
  await authCall(
    a.createOrganization,
    a,
    {
      name: slug,
      slug,
      ownerEmail: email,
      ownerDisplayName: "O",
      ownerPassword: "owner password long enough",
    },
    admin,
  );
  return (await authCall(a.login, a, { email, password: "owner password long enough" })).tokens!.accessToken;
}

async function member(ownerToken: string, email: string): Promise<string> {
  const a = stack.auth.client;
  await authCall(
    a.createUser,
    a,
    { email, displayName: "M", password: "member password long", roles: [Role.ROLE_MEMBER] },
    ownerToken,
  );
  return (await authCall(a.login, a, { email, password: "member password long" })).tokens!.accessToken;
}

const start = (token: string, requestId: string, model = "builtin") =>
  call(
    stack.client.startGeneration,
    stack.client,
    {
      clientRequestId: requestId,
      model,
      messages: [{ role: "user", content: `hello ${requestId}`, toolCalls: [] }],
      parameters: undefined,
      toolIds: [],
      fileIds: [],
      conversationId: "c1",
      tools: [],
    },
    token,
  );

/** Follows until the stream ends (or `stopAfter` events), returning the events. */
function follow(
  id: string,
  after: number,
  token: string,
  stopAfter = Number.POSITIVE_INFINITY,
): Promise<GenerationEvent[]> {
  return new Promise((resolve, reject) => {
    const events: GenerationEvent[] = [];
    const stream: ClientReadableStream<FollowGenerationResponse> = stack.client.followGeneration(
      { generationId: id, afterSequence: BigInt(after) },
      bearer(token),
    );
    stream.on("data", (r: FollowGenerationResponse) => {
      if (r.item?.$case !== "event") return;
      events.push(r.item.value);
      if (events.length >= stopAfter) {
        stream.cancel();
        resolve(events);
      }
    });
    stream.on("end", () => resolve(events));
    stream.on("error", (e: { code: number }) => (e.code === status.CANCELLED ? resolve(events) : reject(e)));
  });
}

const textOf = (events: GenerationEvent[]) =>
  events.map((e) => (e.event?.$case === "delta" ? e.event.value.text : "")).join("");

describe("generation with the built-in model", () => {
  it("start, follow to the end, get: ordered, gap-free, and the text matches", async () => {
    const token = await owner("gen-basic");
    const { generation, created } = await start(token, "req-1");
    expect(created).toBe(true);
    const events = await follow(generation!.generationId, 0, token);
    expect(events.map((e) => Number(e.sequence))).toEqual(events.map((_, i) => i + 1));
    expect(events[0]?.event?.$case).toBe("created");
    expect(events[1]?.event?.$case).toBe("started");
    expect(events.at(-1)?.event?.$case).toBe("completed");
    const got = (
      await call(stack.client.getGeneration, stack.client, { generationId: generation!.generationId }, token)
    ).generation!;
    expect(got.status).toBe(GenerationStatus.GENERATION_STATUS_COMPLETED);
    expect(got.text).toBe(textOf(events));
    expect(got.text.length).toBeGreaterThan(0);
    // Resume from the middle: exactly the rest.
    const rest = await follow(generation!.generationId, 3, token);
    expect(rest).toEqual(events.slice(3));
  });

  it("Get still answers once retention has removed the output events", async () => {
    const token = await owner("gen-retention");
    const { generation } = await start(token, "expire-me");
    const id = generation!.generationId;
    const events = await follow(id, 0, token);
    // What the retention window does to a finished generation's output: its messages are gone.
    const nc = await connectNats({ url: infra().natsUrl, name: "retention-test" });
    const ns = new Namespace(infra().streamPrefix);
    const jsm = await jetstreamManager(nc);
    await jsm.streams.purge(ns.stream("GEN_OUTPUT"), { filter: ns.subject(`gen.output.${id}`) });
    await nc.close();
    const got = (await call(stack.client.getGeneration, stack.client, { generationId: id }, token))
      .generation!;
    expect(got.status).toBe(GenerationStatus.GENERATION_STATUS_COMPLETED);
    expect(got.text).toBe(textOf(events));
  });

  it("the same client request id (also in parallel) yields one generation", async () => {
    const token = await owner("gen-idem");
    const results = await Promise.all(Array.from({ length: 8 }, () => start(token, "same-id")));
    const ids = new Set(results.map((r) => r.generation!.generationId));
    expect(ids.size).toBe(1);
    expect(results.filter((r) => r.created)).toHaveLength(1);
  });

  it("per-user limits hold under 20 parallel starts", async () => {
    const token = await owner("gen-limits");
    const results = await Promise.allSettled(
      Array.from({ length: 20 }, (_, i) => start(token, `lim-${i}`, "slow")),
    );
    const ok = results.filter((r) => r.status === "fulfilled");
    expect(ok).toHaveLength(2);
    for (const r of results) {
      if (r.status !== "rejected") continue;
      const e = r.reason as { code: number; metadata: Metadata };
      expect(e.code).toBe(status.RESOURCE_EXHAUSTED);
      // A slot frees when a generation ends, not when its entry would expire: a short hint (1 s by default).
      expect(Number(e.metadata.get("retry-after-ms")[0])).toBe(1_000);
    }
    for (const r of ok) {
      const id = (r as PromiseFulfilledResult<Awaited<ReturnType<typeof start>>>).value.generation!
        .generationId;
      await call(stack.client.cancelGeneration, stack.client, { generationId: id }, token);
    }
  });

  it("cancel during output ends with a cancelled event; a second cancel adds nothing", async () => {
    const token = await owner("gen-cancel");
    const { generation } = await start(token, "cancel-me", "slow");
    const id = generation!.generationId;
    const some = await follow(id, 0, token, 4);
    expect(some.some((e) => e.event?.$case === "delta")).toBe(true);
    await call(stack.client.cancelGeneration, stack.client, { generationId: id }, token);
    const all = await follow(id, 0, token);
    expect(all.at(-1)?.event?.$case).toBe("cancelled");
    const again = await call(stack.client.cancelGeneration, stack.client, { generationId: id }, token);
    expect(again.generation?.status).toBe(GenerationStatus.GENERATION_STATUS_CANCELLED);
    expect(await follow(id, 0, token)).toHaveLength(all.length);
    const got = (await call(stack.client.getGeneration, stack.client, { generationId: id }, token))
      .generation!;
    expect(got.text).toBe(textOf(all));
  });

  it("another organisation's user, or another member, gets NOT_FOUND", async () => {
    const ownerToken = await owner("gen-tenant");
    const { generation } = await start(ownerToken, "private");
    const id = generation!.generationId;
    const stranger = await owner("gen-stranger");
    await expect(follow(id, 0, stranger)).rejects.toMatchObject({ code: status.NOT_FOUND });
    await expect(
      call(stack.client.getGeneration, stack.client, { generationId: id }, stranger),
    ).rejects.toMatchObject({ code: status.NOT_FOUND });
    const colleague = await member(ownerToken, "m@gen-tenant.test");
    await expect(follow(id, 0, colleague)).rejects.toMatchObject({ code: status.NOT_FOUND });
    await expect(follow("no-such-generation", 0, ownerToken)).rejects.toMatchObject({
      code: status.NOT_FOUND,
    });
  });

  it("lists the caller's generations with independent filters and pages", async () => {
    const token = await owner("gen-list");
    for (const i of [1, 2, 3]) {
      const { generation } = await start(token, `list-${i}`);
      await follow(generation!.generationId, 0, token);
    }
    // The list reads a projection: wait until it has caught up with the three.
    await eventually(async () => {
      const all = await call(
        stack.client.listGenerations,
        stack.client,
        {
          status: GenerationStatus.GENERATION_STATUS_COMPLETED,
          conversationId: "",
          createdAfterMs: 0n,
          createdBeforeMs: 0n,
          pageSize: 10,
          pageToken: "",
        },
        token,
      );
      return all.generations.length === 3;
    });
    const page1 = await call(
      stack.client.listGenerations,
      stack.client,
      {
        status: GenerationStatus.GENERATION_STATUS_COMPLETED,
        conversationId: "c1",
        createdAfterMs: 0n,
        createdBeforeMs: 0n,
        pageSize: 2,
        pageToken: "",
      },
      token,
    );
    expect(page1.generations).toHaveLength(2);
    const page2 = await call(
      stack.client.listGenerations,
      stack.client,
      {
        status: 0,
        conversationId: "",
        createdAfterMs: 0n,
        createdBeforeMs: 0n,
        pageSize: 2,
        pageToken: page1.nextPageToken,
      },
      token,
    );
    expect(page2.generations.map((g) => g.generationId)).not.toContain(page1.generations[0]!.generationId);
  });
});
