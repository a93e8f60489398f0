import { describe, expect, it } from "vitest";
import { ChunkAssembler, StreamDecoder } from "./openai-chunks.js";

const detail = (payload: unknown) => `: ${JSON.stringify(payload)}`;
const bytes = (text: string) => new TextEncoder().encode(text);
const event = (data: unknown) => `data: ${typeof data === "string" ? data : JSON.stringify(data)}\n\n`;
const delta = (d: Record<string, unknown>, finish: string | null = null) => ({
  choices: [{ index: 0, delta: d, finish_reason: finish }],
});
const limits = { maxEventBytes: 1024, maxResponseBytes: 4096 };

describe("ChunkAssembler", () => {
  it("turns text deltas into delta chunks and holds finish back until [DONE], after usage", () => {
    const a = new ChunkAssembler(detail);
    expect(a.accept(JSON.stringify(delta({ content: "Hel" }))).chunks).toEqual([
      { kind: "delta", text: "Hel" },
    ]);
    expect(a.started).toBe(true);
    expect(a.accept(JSON.stringify(delta({ content: "lo" }, "stop"))).chunks).toEqual([
      { kind: "delta", text: "lo" },
    ]);
    expect(
      a.accept(JSON.stringify({ choices: [], usage: { prompt_tokens: 3, completion_tokens: 2 } })),
    ).toEqual({
      chunks: [{ kind: "usage", promptTokens: 3, completionTokens: 2 }],
      done: false,
    });
    expect(a.accept("[DONE]")).toEqual({ chunks: [{ kind: "finish", reason: "stop" }], done: true });
  });

  it("assembles tool calls from fragments by index, emitted whole when the choice finishes", () => {
    const a = new ChunkAssembler(detail);
    a.accept(
      JSON.stringify(
        delta({ tool_calls: [{ index: 1, id: "b", function: { name: "two", arguments: "" } }] }),
      ),
    );
    a.accept(
      JSON.stringify(delta({ tool_calls: [{ index: 0, function: { name: "one", arguments: '{"x"' } }] })),
    );
    a.accept(
      JSON.stringify(delta({ tool_calls: [{ index: 0, id: "late", function: { arguments: ":1}" } }] })),
    );
    expect(a.accept(JSON.stringify(delta({}, "tool_calls"))).chunks).toEqual([
      { kind: "tool_call", id: "late", name: "one", argumentsJson: '{"x":1}' },
      { kind: "tool_call", id: "b", name: "two", argumentsJson: "" },
    ]);
    expect(a.end()).toEqual({ chunks: [{ kind: "finish", reason: "tool_calls" }], done: true });
  });

  it("reports malformed chunks, in-stream errors, nameless tool calls and early ends as faults", () => {
    expect(new ChunkAssembler(detail).accept("{not json").fault).toEqual({
      reason: "protocol_error",
      message: "malformed stream chunk",
    });
    expect(
      new ChunkAssembler(detail).accept(JSON.stringify({ error: { message: "overloaded" } })).fault,
    ).toEqual({
      reason: "http_error",
      message: 'model provider reported an error: {"message":"overloaded"}',
    });
    const nameless = new ChunkAssembler(detail);
    nameless.accept(JSON.stringify(delta({ content: "a", tool_calls: [{ index: 0 }] })));
    expect(nameless.accept(JSON.stringify(delta({}, "stop"))).fault?.message).toBe("tool call 0 has no name");
    expect(new ChunkAssembler(detail).end().fault?.reason).toBe("http_error");
    expect(new ChunkAssembler(detail).accept("[DONE]").fault?.reason).toBe("protocol_error");
  });
});

describe("StreamDecoder", () => {
  it("reassembles events split across reads and ignores what follows [DONE]", () => {
    const d = new StreamDecoder(limits, detail);
    const body =
      event(delta({ content: "hi" }, "stop")) + event("[DONE]") + event(delta({ content: "late" }));
    const first = d.feed(bytes(body.slice(0, 10)));
    expect(first).toEqual({ chunks: [], done: false, progressed: false });
    expect(d.feed(bytes(body.slice(10)))).toEqual({
      chunks: [
        { kind: "delta", text: "hi" },
        { kind: "finish", reason: "stop" },
      ],
      done: true,
      progressed: true,
    });
  });

  it("counts only output as progress before the first output, any event after it", () => {
    const d = new StreamDecoder(limits, detail);
    expect(d.feed(bytes(event(delta({ role: "assistant" })))).progressed).toBe(false);
    expect(d.feed(bytes(event(delta({ content: "a" })))).progressed).toBe(true);
    expect(d.feed(bytes(event(delta({}))))).toMatchObject({ progressed: true, chunks: [] });
  });

  it("faults on an oversized event or body", () => {
    expect(new StreamDecoder(limits, detail).feed(bytes(`data: ${"x".repeat(2000)}`)).fault).toEqual({
      reason: "protocol_error",
      message: "an event exceeded 1024 characters",
    });
    const d = new StreamDecoder(limits, detail);
    expect(d.feed(bytes(": keep-alive\n".repeat(300))).fault).toBeUndefined();
    expect(d.feed(bytes(": keep-alive\n".repeat(100))).fault).toEqual({
      reason: "protocol_error",
      message: "response exceeded 4096 bytes",
    });
  });
});
