import { once } from "node:events";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { InvalidArgumentError } from "@spool/kit";
import { afterEach, describe, expect, it, vi } from "vitest";
import {
  chatRequestProblem,
  type FakeOpenAI,
  type FakeScript,
  sse,
  startFakeOpenAI,
  textStream,
} from "../../test/fake-openai.js";
import { OpenAIProvider, type OpenAIProviderOptions } from "./openai.js";
import { type ModelChunk, type ModelRequest, ProviderError } from "./types.js";

const API_KEY = "sk-spool-test-9f8e7d6c5b4a3210";

const servers: FakeOpenAI[] = [];
afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => s.close()));
});

async function fake(script: FakeScript): Promise<FakeOpenAI> {
  const server = await startFakeOpenAI(script);
  servers.push(server);
  return server;
}

function provider(baseUrl: string, options: Partial<OpenAIProviderOptions> = {}): OpenAIProvider {
  return new OpenAIProvider({
    baseUrl,
    apiKey: API_KEY,
    models: { "spool-small": "fake-model-mini" },
    // Short backoff so retries do not slow the suite; timeouts are set per test where they matter.
    backoffBaseMs: 1,
    backoffMaxMs: 5,
    ...options,
  });
}

function request(overrides: Partial<ModelRequest> = {}): ModelRequest {
  return {
    model: "spool-small",
    messages: [
      { role: "system", content: "Be brief." },
      { role: "user", content: "Say hello." },
    ],
    params: {},
    signal: new AbortController().signal,
    ...overrides,
  };
}

/** Runs a stream to its end, keeping what it yielded and how it ended. */
async function run(stream: AsyncIterable<ModelChunk>): Promise<{ chunks: ModelChunk[]; error: unknown }> {
  const chunks: ModelChunk[] = [];
  try {
    for await (const chunk of stream) chunks.push(chunk);
    return { chunks, error: undefined };
  } catch (error) {
    return { chunks, error };
  }
}

const texts = (chunks: ModelChunk[]) => chunks.flatMap((c) => (c.kind === "delta" ? [c.text] : []));

describe("OpenAIProvider", () => {
  it("streams deltas in order, then usage, then finish", async () => {
    const server = await fake({
      sse: textStream(["Hel", "lo", ", world"], { prompt: 11, completion: 3 }),
      delayMs: 5,
    });
    const { chunks, error } = await run(provider(server.url).stream(request()));
    expect(error).toBeUndefined();
    expect(chunks).toEqual([
      { kind: "delta", text: "Hel" },
      { kind: "delta", text: "lo" },
      { kind: "delta", text: ", world" },
      { kind: "usage", promptTokens: 11, completionTokens: 3 },
      { kind: "finish", reason: "stop" },
    ]);
  });

  it("maps the model and sends the key and a streaming request", async () => {
    const server = await fake({ sse: textStream(["hi"]) });
    const req = request({ params: { temperature: 0.2, maxTokens: 50, topP: 0.9 } });
    await run(provider(server.url).stream(req));
    expect(server.requests).toHaveLength(1);
    const [received] = server.requests;
    expect(received).toMatchObject({ method: "POST", path: "/v1/chat/completions" });
    expect(received?.headers.authorization).toBe(`Bearer ${API_KEY}`);
    expect(received?.body).toEqual({
      model: "fake-model-mini",
      messages: req.messages,
      stream: true,
      stream_options: { include_usage: true },
      temperature: 0.2,
      max_completion_tokens: 50,
      top_p: 0.9,
    });
    expect(received?.rejected).toBeUndefined();
  });

  it("sends tools, tool_choice, assistant tool calls and tool results as OpenAI expects them", async () => {
    const server = await fake({ sse: textStream(["It is sunny."]) });
    const req = request({
      messages: [
        { role: "user", content: "Weather in Paris?" },
        {
          role: "assistant",
          content: "",
          toolCalls: [{ id: "call_a", name: "get_weather", argumentsJson: '{"city":"Paris"}' }],
        },
        { role: "tool", content: '{"sky":"sunny"}', toolCallId: "call_a" },
      ],
      tools: [
        {
          name: "get_weather",
          description: "Current weather",
          parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] },
        },
        { name: "get_time" },
      ],
      toolChoice: { function: "get_weather" },
    });
    const { chunks, error } = await run(provider(server.url).stream(req));
    expect(error).toBeUndefined();
    expect(texts(chunks)).toEqual(["It is sunny."]);
    const [received] = server.requests;
    expect(received?.rejected).toBeUndefined();
    expect(received?.body).toMatchObject({
      messages: [
        { role: "user", content: "Weather in Paris?" },
        {
          role: "assistant",
          content: null,
          tool_calls: [
            {
              id: "call_a",
              type: "function",
              function: { name: "get_weather", arguments: '{"city":"Paris"}' },
            },
          ],
        },
        { role: "tool", tool_call_id: "call_a", content: '{"sky":"sunny"}' },
      ],
      tools: [
        {
          type: "function",
          function: {
            name: "get_weather",
            description: "Current weather",
            parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] },
          },
        },
        { type: "function", function: { name: "get_time" } },
      ],
      tool_choice: { type: "function", function: { name: "get_weather" } },
    });
  });

  it("the fake server refuses what OpenAI refuses, so the body checks above can fail", async () => {
    const valid = {
      model: "m",
      stream: true,
      messages: [
        { role: "user", content: "q" },
        {
          role: "assistant",
          content: null,
          tool_calls: [{ id: "c1", type: "function", function: { name: "f", arguments: "{}" } }],
        },
        { role: "tool", tool_call_id: "c1", content: "r" },
      ],
      tools: [{ type: "function", function: { name: "f" } }],
      tool_choice: "auto",
      max_completion_tokens: 5,
    };
    expect(chatRequestProblem(valid)).toBeUndefined();
    expect(chatRequestProblem({ ...valid, max_tokens: 5 })).toMatch(/max_completion_tokens/);
    expect(chatRequestProblem({ ...valid, tools: undefined })).toMatch(/tool_choice/);
    expect(
      chatRequestProblem({ ...valid, tool_choice: { type: "function", function: { name: "g" } } }),
    ).toMatch(/unknown function/);
    const [q, a] = valid.messages;
    expect(chatRequestProblem({ ...valid, messages: [q, a, { role: "tool", content: "r" }] })).toMatch(
      /tool_call_id/,
    );
    expect(
      chatRequestProblem({ ...valid, messages: [q, { role: "tool", tool_call_id: "c1", content: "r" }] }),
    ).toMatch(/preceding message with 'tool_calls'/);
    // Through the provider: a refused body is a non-retryable HTTP 400 naming the problem.
    const server = await fake({ sse: textStream(["never"]) });
    const { error } = await run(
      provider(server.url).stream(request({ tools: [{ name: "f" }], toolChoice: { function: "nope" } })),
    );
    expect(error).toBeInstanceOf(ProviderError);
    expect(error).toMatchObject({ reason: "http_error", status: 400, retryable: false });
    expect(server.requests).toHaveLength(1);
  });

  it.each([
    ["auto", "auto"],
    ["none", "none"],
    ["required", "required"],
  ] as const)("sends tool_choice %s as the string OpenAI takes", async (choice, wire) => {
    const server = await fake({ sse: textStream(["ok"]) });
    await run(provider(server.url).stream(request({ tools: [{ name: "f" }], toolChoice: choice })));
    expect(server.requests[0]?.rejected).toBeUndefined();
    expect(server.requests[0]?.body).toMatchObject({ tool_choice: wire });
  });

  it("sends neither tools nor tool_choice when the request has none", async () => {
    const server = await fake({ sse: textStream(["ok"]) });
    await run(provider(server.url).stream(request({ tools: [] })));
    expect(server.requests[0]?.body).not.toHaveProperty("tools");
    expect(server.requests[0]?.body).not.toHaveProperty("tool_choice");
  });

  it("assembles tool calls split across chunks and emits each once, whole, at finish", async () => {
    const server = await fake({
      sse: [
        sse.role(),
        sse.toolCall(0, { id: "call_a", name: "get_weather", arguments: '{"ci' }),
        sse.toolCall(0, { arguments: 'ty":"Par' }),
        sse.toolCall(1, { id: "call_b", name: "get_time", arguments: "{}" }),
        sse.toolCall(0, { arguments: 'is"}' }),
        sse.finish("tool_calls"),
        sse.usage(20, 9),
        sse.done(),
      ],
    });
    const { chunks, error } = await run(provider(server.url).stream(request()));
    expect(error).toBeUndefined();
    expect(chunks).toEqual([
      { kind: "tool_call", id: "call_a", name: "get_weather", argumentsJson: '{"city":"Paris"}' },
      { kind: "tool_call", id: "call_b", name: "get_time", argumentsJson: "{}" },
      { kind: "usage", promptTokens: 20, completionTokens: 9 },
      { kind: "finish", reason: "tool_calls" },
    ]);
  });

  it("accepts a finished stream that omits [DONE]", async () => {
    const server = await fake({ sse: [sse.role(), sse.delta("done"), sse.finish("length")] });
    const { chunks, error } = await run(provider(server.url).stream(request()));
    expect(error).toBeUndefined();
    expect(chunks).toEqual([
      { kind: "delta", text: "done" },
      { kind: "finish", reason: "length" },
    ]);
  });

  describe("before the first token", () => {
    it("retries 5xx and 429 (honouring retry-after), then succeeds", async () => {
      const server = await fake([
        { status: 503 },
        { status: 429, headers: { "retry-after": "0" } },
        { sse: textStream(["ok"]) },
      ]);
      const { chunks, error } = await run(provider(server.url).stream(request()));
      expect(error).toBeUndefined();
      expect(texts(chunks)).toEqual(["ok"]);
      expect(server.requests).toHaveLength(3);
    });

    it("gives up after maxAttempts with the last error, still retryable for a later re-queue", async () => {
      const server = await fake({ status: 503 });
      const { error } = await run(provider(server.url, { maxAttempts: 3 }).stream(request()));
      expect(error).toBeInstanceOf(ProviderError);
      expect(error).toMatchObject({ reason: "http_error", status: 503, retryable: true });
      expect((error as Error).message).toMatch(/gave up after 3 attempts/);
      expect(server.requests).toHaveLength(3);
    });

    it("does not retry a 4xx other than 408/429", async () => {
      const server = await fake({
        status: 400,
        body: JSON.stringify({ error: { message: "context too long" } }),
      });
      const { error } = await run(provider(server.url).stream(request()));
      expect(error).toMatchObject({ reason: "http_error", status: 400, retryable: false });
      expect((error as Error).message).toContain("context too long");
      expect(server.requests).toHaveLength(1);
    });

    it("retries a stall as first_token_timeout, then fails with that reason", async () => {
      const server = await fake({ sse: [sse.role(), { stall: true }] });
      const p = provider(server.url, { firstTokenTimeoutMs: 150, maxAttempts: 2 });
      const { chunks, error } = await run(p.stream(request()));
      expect(chunks).toEqual([]);
      expect(error).toMatchObject({ reason: "first_token_timeout", retryable: true });
      expect(server.requests).toHaveLength(2);
    });

    it("recovers when the retry after a first-token stall succeeds", async () => {
      const server = await fake([{ sse: [sse.role(), { stall: true }] }, { sse: textStream(["late"]) }]);
      const { chunks, error } = await run(
        provider(server.url, { firstTokenTimeoutMs: 150 }).stream(request()),
      );
      expect(error).toBeUndefined();
      expect(texts(chunks)).toEqual(["late"]);
      expect(server.requests).toHaveLength(2);
    });

    it("retries missing response headers as connect_timeout", async () => {
      const server = await fake({ hang: true });
      const p = provider(server.url, { connectTimeoutMs: 150, maxAttempts: 2 });
      const { error } = await run(p.stream(request()));
      expect(error).toMatchObject({ reason: "connect_timeout", retryable: true });
      expect(server.requests).toHaveLength(2);
    });

    it("retries a refused connection and reports it as http_error without a status", async () => {
      // A port that was just free: nothing listens on it any more.
      const server = createServer().listen(0, "127.0.0.1");
      await once(server, "listening");
      const { port } = server.address() as AddressInfo;
      server.close();
      await once(server, "close");
      const { error } = await run(provider(`http://127.0.0.1:${port}`).stream(request()));
      expect(error).toMatchObject({ reason: "http_error", retryable: true });
      expect((error as ProviderError).status).toBeUndefined();
      expect((error as Error).message).toMatch(/gave up after 3 attempts/);
    });

    it("refuses a 200 that is not an event stream, without retrying", async () => {
      const server = await fake({ status: 200, body: "{}" });
      const { error } = await run(provider(server.url).stream(request()));
      expect(error).toMatchObject({ reason: "protocol_error", retryable: false });
      expect(server.requests).toHaveLength(1);
    });
  });

  describe("after the first token", () => {
    it("a dropped connection is final", async () => {
      // The wait lets the client read the deltas first: a reset can discard data still in flight.
      const server = await fake({
        sse: [sse.role(), sse.delta("a"), sse.delta("b"), { wait: 50 }, { destroy: true }],
      });
      const { chunks, error } = await run(provider(server.url).stream(request()));
      expect(texts(chunks)).toEqual(["a", "b"]);
      expect(error).toBeInstanceOf(ProviderError);
      expect(error).toMatchObject({ reason: "http_error", retryable: false });
      expect(server.requests).toHaveLength(1);
    });

    it("an error event in the stream is final", async () => {
      const server = await fake({ sse: [sse.role(), sse.delta("a"), sse.error("model overloaded")] });
      const { chunks, error } = await run(provider(server.url).stream(request()));
      expect(texts(chunks)).toEqual(["a"]);
      expect(error).toMatchObject({ reason: "http_error", retryable: false });
      expect((error as Error).message).toContain("model overloaded");
      expect(server.requests).toHaveLength(1);
    });

    it("a stream that ends without finishing is final", async () => {
      const server = await fake({ sse: [sse.role(), sse.delta("a")] });
      const { chunks, error } = await run(provider(server.url).stream(request()));
      expect(texts(chunks)).toEqual(["a"]);
      expect(error).toMatchObject({ reason: "http_error", retryable: false });
      expect(server.requests).toHaveLength(1);
    });

    it("a stall is idle_timeout, not retried", async () => {
      const server = await fake({ sse: [sse.role(), sse.delta("a"), { stall: true }] });
      const { chunks, error } = await run(provider(server.url, { idleTimeoutMs: 200 }).stream(request()));
      expect(texts(chunks)).toEqual(["a"]);
      expect(error).toMatchObject({ reason: "idle_timeout", retryable: false });
      expect(server.requests).toHaveLength(1);
    });

    it("a slow consumer is not mistaken for an idle provider", async () => {
      // The provider sends every 150 ms (longer than idleTimeoutMs, so the body is
      // still streaming); the consumer takes 250 ms per chunk, so data is always
      // waiting when the provider reads again. Only time spent waiting may count.
      const server = await fake({ sse: textStream(["a", "b", "c"]), delayMs: 150 });
      const chunks: ModelChunk[] = [];
      for await (const chunk of provider(server.url, { idleTimeoutMs: 100 }).stream(request())) {
        chunks.push(chunk);
        await new Promise((resolve) => setTimeout(resolve, 250));
      }
      expect(texts(chunks)).toEqual(["a", "b", "c"]);
    });
  });

  describe("protocol bounds", () => {
    it("an event over maxEventBytes is a protocol_error", async () => {
      const server = await fake({ sse: [sse.role(), { raw: `data: ${"x".repeat(5000)}\n\n` }] });
      const { error } = await run(provider(server.url, { maxEventBytes: 1024 }).stream(request()));
      expect(error).toMatchObject({ reason: "protocol_error", retryable: false });
      expect(server.requests).toHaveLength(1);
    });

    it("malformed chunk JSON is a protocol_error", async () => {
      const server = await fake({ sse: [sse.role(), { raw: "data: {not json\n\n" }] });
      const { error } = await run(provider(server.url).stream(request()));
      expect(error).toMatchObject({ reason: "protocol_error", retryable: false });
    });
  });

  describe("cancellation", () => {
    it("aborting mid-stream ends it promptly with cancelled and drops the connection", {
      timeout: 10_000,
    }, async () => {
      // Timeouts far beyond the test's own: only the abort can end this stream in time.
      const server = await fake({ sse: [sse.role(), sse.delta("a"), { stall: true }] });
      const p = provider(server.url, { idleTimeoutMs: 60_000 });
      const controller = new AbortController();
      const chunks: ModelChunk[] = [];
      let error: unknown;
      try {
        for await (const chunk of p.stream(request({ signal: controller.signal }))) {
          chunks.push(chunk);
          // Abort a little later, while the provider is waiting on the stalled body.
          setTimeout(() => controller.abort(), 20);
        }
      } catch (e) {
        error = e;
      }
      expect(texts(chunks)).toEqual(["a"]);
      expect(error).toMatchObject({ reason: "cancelled", retryable: false });
      await vi.waitFor(() => expect(server.requests[0]?.disconnected).toBe(true));
    });

    it("aborting while waiting for headers ends with cancelled", { timeout: 10_000 }, async () => {
      const server = await fake({ hang: true });
      const controller = new AbortController();
      const done = run(
        provider(server.url, { connectTimeoutMs: 60_000 }).stream(request({ signal: controller.signal })),
      );
      await vi.waitFor(() => expect(server.requests).toHaveLength(1));
      controller.abort();
      expect((await done).error).toMatchObject({ reason: "cancelled" });
    });

    it("aborting during a retry backoff ends with cancelled and makes no further request", {
      timeout: 10_000,
    }, async () => {
      const server = await fake({ status: 503, headers: { "retry-after": "30" } });
      const controller = new AbortController();
      const done = run(provider(server.url).stream(request({ signal: controller.signal })));
      await vi.waitFor(() => expect(server.requests).toHaveLength(1));
      controller.abort();
      expect((await done).error).toMatchObject({ reason: "cancelled" });
      expect(server.requests).toHaveLength(1);
    });

    it("an already-aborted signal makes no request", async () => {
      const server = await fake({ sse: textStream(["x"]) });
      const { error } = await run(provider(server.url).stream(request({ signal: AbortSignal.abort() })));
      expect(error).toMatchObject({ reason: "cancelled" });
      expect(server.requests).toHaveLength(0);
    });

    it("a consumer that stops early releases the connection", async () => {
      const server = await fake({ sse: [sse.role(), sse.delta("a"), { stall: true }] });
      for await (const chunk of provider(server.url).stream(request())) {
        expect(chunk).toEqual({ kind: "delta", text: "a" });
        break;
      }
      await vi.waitFor(() => expect(server.requests[0]?.disconnected).toBe(true));
    });
  });

  it("rejects an unknown model before any request", async () => {
    const server = await fake({ sse: textStream(["x"]) });
    for (const model of ["gpt-4o", "fake-model-mini", "constructor", "__proto__"]) {
      const { error } = await run(provider(server.url).stream(request({ model })));
      expect(error).toBeInstanceOf(InvalidArgumentError);
    }
    expect(server.requests).toHaveLength(0);
  });

  it("never puts the API key in an error, even when the provider echoes it", async () => {
    const echo = (auth: unknown) => `Incorrect API key provided: ${String(auth)}`;
    const scripts: FakeScript[] = [
      (req) => ({
        status: 401,
        body: JSON.stringify({ error: { message: echo(req.headers.authorization) } }),
      }),
      // The bare key, as OpenAI echoes it, in a plain-text body.
      (req) => ({ status: 403, body: echo(String(req.headers.authorization).replace(/^Bearer /, "")) }),
      { sse: [sse.role(), sse.delta("a"), sse.error(echo(`Bearer ${API_KEY}`))] },
    ];
    for (const script of scripts) {
      const server = await fake(script);
      const { error } = await run(provider(server.url).stream(request()));
      expect(error).toBeInstanceOf(ProviderError);
      expect(server.requests[0]?.headers.authorization).toBe(`Bearer ${API_KEY}`);
      // The echo did reach the message (so this test can fail), with the key cut out.
      expect((error as Error).message).toContain("[redacted]");
      for (let e: unknown = error; e instanceof Error; e = e.cause) {
        expect(e.message).not.toContain(API_KEY);
        expect(String(e.stack)).not.toContain(API_KEY);
      }
      expect(JSON.stringify(error)).not.toContain(API_KEY);
    }
  });
});
