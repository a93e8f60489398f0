import { type ServiceError, status } from "@grpc/grpc-js";
import { connectNats, EventStore, Namespace, readErrorDetails } from "@spool/kit";
import {
  FailureReason,
  type FollowGenerationResponse,
  type GenerationEvent,
  GenerationStatus,
  type Message,
  type StartGenerationRequest,
  ToolChoiceMode,
} from "@spool/proto/spool/generation/v1/generation.js";
import { useInfra } from "@spool/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { GEN_STREAM, GenerationEvents, Subjects } from "../src/domain/events.js";
import { type FakeOpenAI, type RecordedRequest, sse, startFakeOpenAI, textStream } from "./fake-openai.js";
import { authCall, bearer, call, type Stack, startStack } from "./harness.js";

const infra = useInfra("genprov");
const API_KEY = "sk-test-0123456789abcdef0123456789";
const MAX_ATTEMPTS = 3;
let fake: FakeOpenAI;
let stack: Stack;
let store: EventStore;
let closeNats: () => Promise<void>;
let token: string;

const promptOf = (r: RecordedRequest) =>
  ((r.body as { messages?: { content: string | null }[] }).messages ?? []).map((m) => m.content).join(" ");
const requestsFor = (prompt: string) => fake.requests.filter((r) => promptOf(r).startsWith(prompt));

beforeAll(async () => {
  const attempts = new Map<string, number>();
  fake = await startFakeOpenAI((request) => {
    const prompt = promptOf(request);
    const n = (attempts.get(prompt) ?? 0) + 1;
    attempts.set(prompt, n);
    if (prompt === "flaky" && n === 1) return { status: 503, body: "overloaded" };
    if (prompt === "down") return { status: 503, body: `overloaded (key ${API_KEY})` };
    if (prompt === "slow-start" && n === 1) return { hang: true };
    if (prompt === "busy") return { status: 429, headers: { "retry-after-ms": "800" } };
    if (prompt === "boom")
      return {
        sse: [sse.role(), sse.delta("par"), { wait: 50 }, sse.error(`upstream broke (key ${API_KEY})`)],
      };
    if (prompt === "stall") return { sse: [sse.role(), sse.delta("slow"), { stall: true }] };
    if (prompt === "Weather in Paris?")
      return {
        sse: [
          sse.role(),
          sse.toolCall(0, { id: "call_w1", name: "get_weather", arguments: '{"city":' }),
          sse.toolCall(0, { arguments: '"Paris"}' }),
          sse.finish("tool_calls"),
          sse.usage(30, 12),
          sse.done(),
        ],
      };
    return { sse: textStream(["Hello", ", ", "world"]) };
  });
  const slice = infra();
  // The real wiring: built-in workers serve "gpt" through the OpenAI-compatible provider.
  stack = await startStack(slice, {
    SPOOL_OPENAI_BASE_URL: fake.url,
    SPOOL_OPENAI_API_KEY: API_KEY,
    SPOOL_OPENAI_MODELS: "gpt=fake-model-1",
    SPOOL_OPENAI_IDLE_TIMEOUT_MS: "500",
    SPOOL_OPENAI_CONNECT_TIMEOUT_MS: "1500",
    SPOOL_LIMIT_MAX_ACTIVE: "20",
    SPOOL_GENERATION_MAX_ATTEMPTS: String(MAX_ATTEMPTS),
    SPOOL_GENERATION_RETRY_BACKOFF_MS: "100",
    SPOOL_GENERATION_RETRY_BACKOFF_MAX_MS: "400",
    SPOOL_MAX_TOOLS: "4",
    SPOOL_MAX_TOOL_SCHEMA_CHARS: "200",
    SPOOL_MAX_TOOL_DESCRIPTION_CHARS: "50",
  });
  const nc = await connectNats({ url: slice.natsUrl, name: "provider-test" });
  closeNats = () => nc.drain();
  store = new EventStore(nc, { namespace: new Namespace(slice.streamPrefix) });
  await store.ensureStream(GEN_STREAM); // created by the service already: this only registers it here
  const a = stack.auth.client;
  token = (
    await authCall(a.login, a, { email: "admin@spool.test", password: "correct horse battery staple 42" })
  ).tokens!.accessToken;
});
afterAll(async () => {
  await stack?.stop();
  await closeNats?.();
  await fake?.close();
});

const user = (content: string): Message => ({ role: "user", content, toolCalls: [] });

function startRequest(clientRequestId: string, overrides: Partial<StartGenerationRequest> = {}) {
  return {
    clientRequestId,
    model: "gpt",
    messages: [user(clientRequestId)],
    parameters: undefined,
    toolIds: [],
    fileIds: [],
    conversationId: "",
    tools: [],
    ...overrides,
  };
}

function follow(id: string): Promise<GenerationEvent[]> {
  return new Promise<GenerationEvent[]>((resolve, reject) => {
    const out: GenerationEvent[] = [];
    const s = stack.client.followGeneration({ generationId: id, afterSequence: 0n }, bearer(token));
    s.on("data", (r: FollowGenerationResponse) => r.item?.$case === "event" && out.push(r.item.value));
    s.on("end", () => resolve(out));
    s.on("error", (e: { code: number }) => (e.code === status.CANCELLED ? resolve(out) : reject(e)));
  });
}

async function runRequest(req: StartGenerationRequest): Promise<{ events: GenerationEvent[]; id: string }> {
  const { generation } = await call(stack.client.startGeneration, stack.client, req, token);
  const id = generation!.generationId;
  return { events: await follow(id), id };
}

const run = (prompt: string) => runRequest(startRequest(`p-${prompt}`, { messages: [user(prompt)] }));

/** The generation's lifecycle events (GEN stream), decoded. */
async function lifecycle(id: string) {
  const events = [];
  for await (const batch of store.readSubject(Subjects.generation(id)))
    for (const e of batch) events.push(GenerationEvents.decode(e));
  return events;
}

async function requeues(id: string) {
  return (await lifecycle(id)).flatMap((e) => (e.type === "GenerationRequeued" ? [e.data] : []));
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

  it("a provider error before the first token re-queues the generation (recorded), and the next attempt completes it", async () => {
    const { events, id } = await run("flaky");
    expect(events.at(-1)?.event?.$case).toBe("completed");
    expect(text(events)).toBe("Hello, world");
    expect(requestsFor("flaky")).toHaveLength(2);
    const [requeued, ...more] = await requeues(id);
    expect(more).toEqual([]);
    expect(requeued).toMatchObject({
      epoch: 1n,
      failureReason: FailureReason.FAILURE_REASON_PROVIDER_ERROR,
      attempt: 1,
    });
    expect(requeued!.reason).toContain("HTTP 503");
    // The second attempt ran under a new lease, after the backoff.
    const started = events.flatMap((e) => (e.event?.$case === "started" ? [e.event.value.epoch] : []));
    expect(started).toEqual([1n, 2n]);
    expect(requestsFor("flaky")[1]!.atMs).toBeGreaterThanOrEqual(Number(requeued!.retryAtMs));
  });

  it("a timeout before any output is retried too, as PROVIDER_TIMEOUT", async () => {
    const { events, id } = await run("slow-start");
    expect(events.at(-1)?.event?.$case).toBe("completed");
    expect((await requeues(id)).map((r) => [r.attempt, r.failureReason])).toEqual([
      [1, FailureReason.FAILURE_REASON_PROVIDER_TIMEOUT],
    ]);
  });

  it("after the last attempt the generation fails as PROVIDER_UNAVAILABLE, each attempt recorded, the key nowhere", async () => {
    const { events, id } = await run("down");
    const last = events.at(-1)!;
    expect(last.event?.$case).toBe("failed");
    if (last.event?.$case === "failed") {
      expect(last.event.value.reason).toBe(FailureReason.FAILURE_REASON_PROVIDER_UNAVAILABLE);
      expect(last.event.value.message).toContain(`gave up after ${MAX_ATTEMPTS} attempts`);
      expect(last.event.value.message).not.toContain(API_KEY);
    }
    const sent = requestsFor("down");
    expect(sent).toHaveLength(MAX_ATTEMPTS);
    const recorded = await requeues(id);
    expect(recorded.map((r) => r.attempt)).toEqual([1, 2]);
    expect(recorded.map((r) => r.epoch)).toEqual([1n, 2n]);
    for (const r of recorded) expect(r.reason).not.toContain(API_KEY);
    // No attempt started before its backoff had passed.
    recorded.forEach((r, i) => {
      expect(sent[i + 1]!.atMs).toBeGreaterThanOrEqual(Number(r.retryAtMs));
    });
    const got = (await call(stack.client.getGeneration, stack.client, { generationId: id }, token))
      .generation!;
    expect(got.status).toBe(GenerationStatus.GENERATION_STATUS_FAILED);
    expect(got.failureReason).toBe(FailureReason.FAILURE_REASON_PROVIDER_UNAVAILABLE);
  });

  it("honours the provider's retry-after, and a cancel during the backoff ends it with no further attempt", async () => {
    const { generation } = await call(
      stack.client.startGeneration,
      stack.client,
      startRequest("p-busy", { messages: [user("busy")] }),
      token,
    );
    const id = generation!.generationId;
    let requeued: Awaited<ReturnType<typeof lifecycle>> = [];
    for (let i = 0; i < 400 && requeued.length === 0; i++) {
      await new Promise((r) => setTimeout(r, 10));
      requeued = (await lifecycle(id)).filter((e) => e.type === "GenerationRequeued");
    }
    const [event] = requeued;
    if (event?.type !== "GenerationRequeued") throw new Error("the generation was not re-queued");
    // The provider asked for 800 ms: more than the configured backoff (50-100 ms for a first
    // attempt), and more than its cap, so the cap (400 ms) applies.
    expect(Number(event.data.retryAtMs) - requestsFor("busy")[0]!.atMs).toBeGreaterThanOrEqual(400);
    await call(stack.client.cancelGeneration, stack.client, { generationId: id }, token);
    const events = await follow(id);
    expect(events.at(-1)?.event?.$case).toBe("cancelled");
    await new Promise((r) => setTimeout(r, 800)); // past the backoff
    expect(requestsFor("busy")).toHaveLength(1);
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
    expect(requestsFor("boom")).toHaveLength(1);
    expect(await requeues(id)).toEqual([]);
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

const WEATHER_TOOL = {
  name: "get_weather",
  description: "Current weather",
  parametersJson: JSON.stringify({ type: "object", properties: { city: { type: "string" } } }),
};

describe("tool use through the OpenAI-compatible provider", () => {
  it("sends tools, tool_choice and max_completion_tokens; the model's tool call reaches followers; its result goes back with tool_call_id", async () => {
    const first = await runRequest(
      startRequest("tools-1", {
        messages: [user("Weather in Paris?")],
        tools: [WEATHER_TOOL, { name: "get_time", description: "", parametersJson: "" }],
        toolChoice: { mode: ToolChoiceMode.TOOL_CHOICE_MODE_REQUIRED, functionName: "" },
        parameters: { maxTokens: 64 },
      }),
    );
    expect(first.events.at(-1)?.event?.$case).toBe("completed");
    const calls = first.events.flatMap((e) => (e.event?.$case === "toolCall" ? [e.event.value] : []));
    expect(calls).toEqual([
      { callId: "call_w1", toolName: "get_weather", argumentsJson: '{"city":"Paris"}' },
    ]);
    const sent = requestsFor("Weather in Paris?")[0]!;
    expect(sent.rejected).toBeUndefined();
    expect(sent.body).toMatchObject({
      max_completion_tokens: 64,
      tools: [
        {
          type: "function",
          function: {
            name: "get_weather",
            description: "Current weather",
            parameters: { type: "object", properties: { city: { type: "string" } } },
          },
        },
        { type: "function", function: { name: "get_time" } },
      ],
      tool_choice: "required",
    });
    expect(sent.body).not.toHaveProperty("max_tokens");

    // The client runs the tool and answers with its result.
    const second = await runRequest(
      startRequest("tools-2", {
        messages: [
          user("Weather in Paris?"),
          { role: "assistant", content: "", toolCalls: calls },
          { role: "tool", content: '{"sky":"sunny"}', toolCallId: "call_w1", toolCalls: [] },
        ],
        tools: [WEATHER_TOOL],
        toolChoice: { mode: ToolChoiceMode.TOOL_CHOICE_MODE_FUNCTION, functionName: "get_weather" },
      }),
    );
    expect(second.events.at(-1)?.event?.$case).toBe("completed");
    const answer = fake.requests.find((r) => promptOf(r).includes('{"sky":"sunny"}'))!;
    expect(answer.rejected).toBeUndefined();
    expect(answer.body).toMatchObject({
      messages: [
        { role: "user", content: "Weather in Paris?" },
        {
          role: "assistant",
          content: null,
          tool_calls: [
            {
              id: "call_w1",
              type: "function",
              function: { name: "get_weather", arguments: '{"city":"Paris"}' },
            },
          ],
        },
        { role: "tool", tool_call_id: "call_w1", content: '{"sky":"sunny"}' },
      ],
      tool_choice: { type: "function", function: { name: "get_weather" } },
    });
    expect(answer.body).not.toHaveProperty("max_completion_tokens");
  });
});

async function refused(p: Promise<unknown>): Promise<{ code: string; fields: string[] }> {
  const err = (await p.then(
    () => {
      throw new Error("the call succeeded but was expected to fail");
    },
    (e: unknown) => e,
  )) as ServiceError;
  return { code: status[err.code], fields: readErrorDetails(err.metadata).violations.map((v) => v.field) };
}

describe("tool use is validated at the edge", () => {
  const toolCall = { callId: "call_1", toolName: "get_weather", argumentsJson: "{}" };
  const assistant: Message = { role: "assistant", content: "", toolCalls: [toolCall] };
  const result: Message = { role: "tool", content: "sunny", toolCallId: "call_1", toolCalls: [] };
  const cases: { name: string; req: Partial<StartGenerationRequest>; fields: string[] }[] = [
    {
      name: "a tool name outside the pattern",
      req: { tools: [{ ...WEATHER_TOOL, name: "get weather" }] },
      fields: ["tools[0].name"],
    },
    {
      name: "a duplicate tool name",
      req: { tools: [WEATHER_TOOL, WEATHER_TOOL] },
      fields: ["tools[1].name"],
    },
    {
      name: "parameters that are not a JSON object",
      req: {
        tools: [
          { ...WEATHER_TOOL, parametersJson: "[1]" },
          { ...WEATHER_TOOL, name: "b", parametersJson: "{" },
        ],
      },
      fields: ["tools[0].parameters_json", "tools[1].parameters_json"],
    },
    {
      name: "a schema over SPOOL_MAX_TOOL_SCHEMA_CHARS",
      req: { tools: [{ ...WEATHER_TOOL, parametersJson: JSON.stringify({ d: "x".repeat(200) }) }] },
      fields: ["tools[0].parameters_json"],
    },
    {
      name: "a description over SPOOL_MAX_TOOL_DESCRIPTION_CHARS",
      req: { tools: [{ ...WEATHER_TOOL, description: "x".repeat(51) }] },
      fields: ["tools[0].description"],
    },
    {
      name: "more tools than SPOOL_MAX_TOOLS",
      req: { tools: ["a", "b", "c", "d", "e"].map((name) => ({ ...WEATHER_TOOL, name })) },
      fields: ["tools"],
    },
    {
      name: "tool_choice naming no tool of the request",
      req: {
        tools: [WEATHER_TOOL],
        toolChoice: { mode: ToolChoiceMode.TOOL_CHOICE_MODE_FUNCTION, functionName: "get_time" },
      },
      fields: ["tool_choice.function_name"],
    },
    {
      name: "tool_choice without tools",
      req: { toolChoice: { mode: ToolChoiceMode.TOOL_CHOICE_MODE_AUTO, functionName: "" } },
      fields: ["tool_choice"],
    },
    {
      name: "a tool message without tool_call_id",
      req: { messages: [user("q"), assistant, { ...result, toolCallId: "" }] },
      fields: ["messages[2].tool_call_id"],
    },
    {
      name: "a tool result answering no earlier tool call",
      req: { messages: [user("q"), assistant, { ...result, toolCallId: "call_9" }] },
      fields: ["messages[2].tool_call_id"],
    },
    {
      name: "tool_call_id and tool_calls on a user message",
      req: { messages: [{ ...user("q"), toolCallId: "call_1", toolCalls: [toolCall] }] },
      fields: ["messages[0].tool_calls", "messages[0].tool_call_id"],
    },
    {
      name: "a tool call with a bad name and id",
      req: {
        messages: [
          user("q"),
          { ...assistant, toolCalls: [{ callId: "call 1", toolName: "x/y", argumentsJson: "{}" }] },
          { ...result, toolCallId: "call_1" },
        ],
      },
      fields: [
        "messages[1].tool_calls[0].call_id",
        "messages[1].tool_calls[0].tool_name",
        "messages[2].tool_call_id",
      ],
    },
    {
      name: "an assistant message with neither text nor tool calls",
      req: { messages: [user("q"), { role: "assistant", content: " ", toolCalls: [] }, user("again")] },
      fields: ["messages[1].content"],
    },
  ];

  it.each(cases)("refuses $name with its field violations, and stores nothing", async ({ req, fields }) => {
    const id = `bad-${fields[0]!.replace(/[^A-Za-z0-9]/g, "-")}`;
    const bad = call(stack.client.startGeneration, stack.client, startRequest(id, req), token);
    const got = await refused(bad);
    expect(got.code).toBe("INVALID_ARGUMENT");
    expect([...got.fields].sort()).toEqual([...fields].sort());
  });

  it("a refused request changed nothing: the same client request id starts afresh", async () => {
    const bad = call(
      stack.client.startGeneration,
      stack.client,
      startRequest("retry-me", { tools: [{ ...WEATHER_TOOL, name: "bad name" }] }),
      token,
    );
    expect((await refused(bad)).code).toBe("INVALID_ARGUMENT");
    const ok = await call(
      stack.client.startGeneration,
      stack.client,
      startRequest("retry-me", { tools: [WEATHER_TOOL] }),
      token,
    );
    expect(ok.created).toBe(true);
    await follow(ok.generation!.generationId);
  });
});
