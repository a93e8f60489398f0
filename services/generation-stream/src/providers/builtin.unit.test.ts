import { InvalidArgumentError } from "@spool/kit";
import { afterEach, describe, expect, it, vi } from "vitest";
import { BuiltinModel, DEFAULT_BUILTIN_MAX_TOKENS } from "./builtin.js";
import { type ModelChunk, type ModelRequest, ProviderError } from "./types.js";

function request(overrides: Partial<ModelRequest> = {}): ModelRequest {
  return {
    model: "builtin",
    messages: [{ role: "user", content: "tell me about streams" }],
    params: {},
    signal: new AbortController().signal,
    ...overrides,
  };
}

async function collect(stream: AsyncIterable<ModelChunk>): Promise<ModelChunk[]> {
  const chunks: ModelChunk[] = [];
  for await (const chunk of stream) chunks.push(chunk);
  return chunks;
}

const text = (chunks: ModelChunk[]) => chunks.map((c) => (c.kind === "delta" ? c.text : "")).join("");
const deltas = (chunks: ModelChunk[]) => chunks.filter((c) => c.kind === "delta").length;

afterEach(() => {
  vi.useRealTimers();
});

describe("BuiltinModel", () => {
  it("gives the same text for the same request and seed, other text otherwise", async () => {
    const model = new BuiltinModel({ tokensPerSecond: 0, length: 40, seed: 1 });
    const first = text(await collect(model.stream(request())));
    expect(first.split(" ")).toHaveLength(40);
    expect(text(await collect(model.stream(request())))).toBe(first);
    expect(
      text(await collect(new BuiltinModel({ tokensPerSecond: 0, length: 40, seed: 1 }).stream(request()))),
    ).toBe(first);
    const otherPrompt = request({ messages: [{ role: "user", content: "something else" }] });
    expect(text(await collect(model.stream(otherPrompt)))).not.toBe(first);
    const otherSeed = new BuiltinModel({ tokensPerSecond: 0, length: 40, seed: 2 });
    expect(text(await collect(otherSeed.stream(request())))).not.toBe(first);
  });

  it("yields `length` deltas, then usage, then finish", async () => {
    const chunks = await collect(
      new BuiltinModel({ tokensPerSecond: Infinity, length: 25 }).stream(request()),
    );
    expect(deltas(chunks)).toBe(25);
    expect(chunks.slice(-2)).toEqual([
      { kind: "usage", promptTokens: 4, completionTokens: 25 },
      { kind: "finish", reason: "stop" },
    ]);
  });

  it("stops at a lower maxTokens with finish reason length", async () => {
    const chunks = await collect(
      new BuiltinModel({ tokensPerSecond: 0, length: 25 }).stream(request({ params: { maxTokens: 3 } })),
    );
    expect(deltas(chunks)).toBe(3);
    expect(chunks.at(-1)).toEqual({ kind: "finish", reason: "length" });
  });

  it("honours a maxTokens above its length (and above 200) up to the ceiling, then cuts with length", async () => {
    // Issue 7 item 9: the model used to stop at its length (200 by default) whatever maxTokens said.
    const model = new BuiltinModel({ tokensPerSecond: 0, length: 200, maxTokens: 1_000 });
    const asked = await collect(model.stream(request({ params: { maxTokens: 750 } })));
    expect(deltas(asked)).toBe(750);
    expect(asked.slice(-2)).toEqual([
      { kind: "usage", promptTokens: 4, completionTokens: 750 },
      { kind: "finish", reason: "length" },
    ]);
    const beyond = await collect(model.stream(request({ params: { maxTokens: 5_000 } })));
    expect(deltas(beyond)).toBe(1_000);
    expect(beyond.at(-1)).toEqual({ kind: "finish", reason: "length" });
    // Without maxTokens: its own length, ended naturally.
    const plain = await collect(model.stream(request()));
    expect(deltas(plain)).toBe(200);
    expect(plain.at(-1)).toEqual({ kind: "finish", reason: "stop" });
  });

  it("defaults its ceiling to DEFAULT_BUILTIN_MAX_TOKENS, or its length when larger", async () => {
    const byDefault = new BuiltinModel({ tokensPerSecond: 0, length: 200 });
    const huge = { params: { maxTokens: DEFAULT_BUILTIN_MAX_TOKENS + 10 } };
    expect(deltas(await collect(byDefault.stream(request(huge))))).toBe(DEFAULT_BUILTIN_MAX_TOKENS);
    const long = new BuiltinModel({ tokensPerSecond: 0, length: DEFAULT_BUILTIN_MAX_TOKENS + 5 });
    expect(deltas(await collect(long.stream(request(huge))))).toBe(DEFAULT_BUILTIN_MAX_TOKENS + 5);
  });

  it("paces tokens at the configured rate", async () => {
    // Fake clock: asserts the schedule, not wall-clock timing.
    vi.useFakeTimers();
    const chunks: ModelChunk[] = [];
    const done = (async () => {
      for await (const chunk of new BuiltinModel({ tokensPerSecond: 10, length: 5 }).stream(request())) {
        chunks.push(chunk);
      }
    })();
    await vi.advanceTimersByTimeAsync(250); // tokens are due at 0, 100, 200, 300, 400 ms
    expect(deltas(chunks)).toBe(3);
    await vi.advanceTimersByTimeAsync(1000);
    await done;
    expect(deltas(chunks)).toBe(5);
    expect(chunks.at(-1)).toEqual({ kind: "finish", reason: "stop" });
  });

  it("stops promptly with cancelled when aborted while pacing", async () => {
    vi.useFakeTimers();
    const controller = new AbortController();
    const chunks: ModelChunk[] = [];
    const done = (async () => {
      for await (const chunk of new BuiltinModel({ tokensPerSecond: 10, length: 100 }).stream(
        request({ signal: controller.signal }),
      )) {
        chunks.push(chunk);
      }
    })().catch((e: unknown) => e);
    await vi.advanceTimersByTimeAsync(250);
    controller.abort();
    // No timer needs to fire for the abort to land.
    const error = await done;
    expect(error).toBeInstanceOf(ProviderError);
    expect(error).toMatchObject({ reason: "cancelled", retryable: false });
    expect(deltas(chunks)).toBe(3);
  });

  it("an abort lands even when running as fast as possible", async () => {
    const controller = new AbortController();
    setTimeout(() => controller.abort(), 10);
    let count = 0;
    const length = 50_000_000; // far more than can be produced before the abort
    const error = await (async () => {
      for await (const chunk of new BuiltinModel({ tokensPerSecond: 0, length }).stream(
        request({ signal: controller.signal }),
      )) {
        if (chunk.kind === "delta") count++;
      }
    })().catch((e: unknown) => e);
    expect(error).toMatchObject({ reason: "cancelled" });
    expect(count).toBeLessThan(length);
  });

  it("an already-aborted signal yields nothing", async () => {
    const stream = new BuiltinModel({ tokensPerSecond: 0, length: 5 }).stream(
      request({ signal: AbortSignal.abort() }),
    );
    await expect(collect(stream)).rejects.toMatchObject({ reason: "cancelled" });
  });

  it("refuses invalid options", () => {
    expect(() => new BuiltinModel({ tokensPerSecond: -1, length: 5 })).toThrow(InvalidArgumentError);
    expect(() => new BuiltinModel({ tokensPerSecond: Number.NaN, length: 5 })).toThrow(InvalidArgumentError);
    expect(() => new BuiltinModel({ tokensPerSecond: 1, length: 1.5 })).toThrow(InvalidArgumentError);
    expect(() => new BuiltinModel({ tokensPerSecond: 1, length: 5, maxTokens: 0 })).toThrow(
      InvalidArgumentError,
    );
  });
});
