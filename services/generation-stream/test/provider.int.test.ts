import { status } from "@grpc/grpc-js";
import {
  FailureReason,
  type FollowGenerationResponse,
  type GenerationEvent,
  GenerationStatus,
} from "@spool/proto/spool/generation/v1/generation.js";
import { useInfra } from "@spool/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type FakeOpenAI, type RecordedRequest, sse, startFakeOpenAI, textStream } from "./fake-openai.js";
import { authCall, bearer, call, type Stack, startStack } from "./harness.js";

const infra = useInfra("genprov");
const API_KEY = "sk-test-0123456789abcdef0123456789";
let fake: FakeOpenAI;
let stack: Stack;
let token: string;

const promptOf = (r: RecordedRequest) =>
  ((r.body as { messages?: { content: string }[] }).messages ?? []).map((m) => m.content).join(" ");

beforeAll(async () => {
  const attempts = new Map<string, number>();
  fake = await startFakeOpenAI((request) => {
    const prompt = promptOf(request);
    const n = (attempts.get(prompt) ?? 0) + 1;
    attempts.set(prompt, n);
    if (prompt === "flaky" && n === 1) return { status: 503, body: "overloaded" };
    if (prompt === "boom")
      return {
        sse: [sse.role(), sse.delta("par"), { wait: 50 }, sse.error(`upstream broke (key ${API_KEY})`)],
      };
    if (prompt === "stall") return { sse: [sse.role(), sse.delta("slow"), { stall: true }] };
    return { sse: textStream(["Hello", ", ", "world"]) };
  });
  // The real wiring: built-in workers serve "gpt" through the OpenAI-compatible provider.
  stack = await startStack(infra(), {
    SPOOL_OPENAI_BASE_URL: fake.url,
    SPOOL_OPENAI_API_KEY: API_KEY,
    SPOOL_OPENAI_MODELS: "gpt=fake-model-1",
    SPOOL_OPENAI_IDLE_TIMEOUT_MS: "500",
    SPOOL_LIMIT_MAX_ACTIVE: "20",
  });
  const a = stack.auth.client;
  token = (
    await authCall(a.login, a, { email: "admin@spool.test", password: "correct horse battery staple 42" })
  ).tokens!.accessToken;
});
afterAll(async () => {
  await stack?.stop();
  await fake?.close();
});

async function run(prompt: string): Promise<{ events: GenerationEvent[]; id: string }> {
  const { generation } = await call(
    stack.client.startGeneration,
    stack.client,
    {
      clientRequestId: `p-${prompt}`,
      model: "gpt",
      messages: [{ role: "user", content: prompt }],
      parameters: undefined,
      toolIds: [],
      fileIds: [],
      conversationId: "",
    },
    token,
  );
  const id = generation!.generationId;
  const events = await new Promise<GenerationEvent[]>((resolve, reject) => {
    const out: GenerationEvent[] = [];
    const s = stack.client.followGeneration({ generationId: id, afterSequence: 0n }, bearer(token));
    s.on("data", (r: FollowGenerationResponse) => r.item?.$case === "event" && out.push(r.item.value));
    s.on("end", () => resolve(out));
    s.on("error", (e: { code: number }) => (e.code === status.CANCELLED ? resolve(out) : reject(e)));
  });
  return { events, id };
}

const text = (events: GenerationEvent[]) =>
  events.map((e) => (e.event?.$case === "delta" ? e.event.value.text : "")).join("");

describe("generations through the OpenAI-compatible provider (fake server)", () => {
  it("streams deltas and usage to completion, with the mapped model and the API key sent", async () => {
    const { events, id } = await run("ok");
    expect(events.at(-1)?.event?.$case).toBe("completed");
    expect(text(events)).toBe("Hello, world");
    const req = fake.requests.find((r) => promptOf(r) === "ok")!;
    expect((req.body as { model: string; stream: boolean }).model).toBe("fake-model-1");
    expect(req.headers.authorization).toBe(`Bearer ${API_KEY}`);
    const got = (await call(stack.client.getGeneration, stack.client, { generationId: id }, token))
      .generation!;
    expect(got.usage?.completionTokens).toBe(3n);
  });

  it("a provider error before the first token is retried, and the generation completes", async () => {
    const { events } = await run("flaky");
    expect(events.at(-1)?.event?.$case).toBe("completed");
    expect(fake.requests.filter((r) => promptOf(r) === "flaky")).toHaveLength(2);
  });

  it("an error after the first token fails the generation with a typed reason, the key nowhere", async () => {
    const { events, id } = await run("boom");
    expect(text(events)).toBe("par");
    const last = events.at(-1)!;
    expect(last.event?.$case).toBe("failed");
    if (last.event?.$case === "failed") {
      expect(last.event.value.reason).toBe(FailureReason.FAILURE_REASON_PROVIDER_ERROR);
      expect(last.event.value.message).not.toContain(API_KEY);
    }
    expect(fake.requests.filter((r) => promptOf(r) === "boom")).toHaveLength(1);
    const got = (await call(stack.client.getGeneration, stack.client, { generationId: id }, token))
      .generation!;
    expect(got.status).toBe(GenerationStatus.GENERATION_STATUS_FAILED);
    expect(got.failureMessage).not.toContain(API_KEY);
  });

  it("a stalled stream fails with the provider-timeout reason", async () => {
    const { events } = await run("stall");
    const last = events.at(-1)!;
    expect(last.event?.$case).toBe("failed");
    if (last.event?.$case === "failed")
      expect(last.event.value.reason).toBe(FailureReason.FAILURE_REASON_PROVIDER_TIMEOUT);
  });
});
