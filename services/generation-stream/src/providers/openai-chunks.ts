// Pure assembly of an OpenAI chat-completions stream: response bytes → SSE
// events → chunks (text deltas, whole tool calls, usage, finish). No I/O and
// no timers, so every framing and assembly rule is testable on plain strings.
import { z } from "zod";
import { createSseParser, type SseMessage, type SseParser } from "./sse.js";
import type { ModelChunk } from "./types.js";

// Only the fields we use; everything else in a chunk is ignored. Providers send
// explicit nulls for absent fields (`usage: null`, `content: null`), hence nullish.
const ToolCallFragment = z.object({
  index: z.number().int().nonnegative(),
  id: z.string().nullish(),
  function: z.object({ name: z.string().nullish(), arguments: z.string().nullish() }).nullish(),
});
const StreamChunk = z.object({
  choices: z
    .array(
      z.object({
        index: z.number().int().nullish(),
        delta: z
          .object({ content: z.string().nullish(), tool_calls: z.array(ToolCallFragment).nullish() })
          .nullish(),
        finish_reason: z.string().nullish(),
      }),
    )
    .nullish(),
  usage: z
    .object({
      prompt_tokens: z.number().int().nonnegative(),
      completion_tokens: z.number().int().nonnegative(),
    })
    .nullish(),
  error: z.unknown().optional(),
});
type StreamChunk = z.infer<typeof StreamChunk>;

/** What the stream says the provider should do with what arrived. */
export interface Step {
  /** Deliver these in order (also when there is a fault: what came before it still counts). */
  chunks: ModelChunk[];
  /** The stream is complete; `finish` is the last of `chunks`. */
  done: boolean;
  fault?: { reason: "protocol_error" | "http_error"; message: string };
}

interface PartialToolCall {
  id: string | undefined;
  name: string;
  args: string;
}

/**
 * Turns the data of OpenAI stream events into chunks. Tool calls arrive as
 * fragments keyed by index and are emitted whole when the choice finishes;
 * `finish` is held back until [DONE] so that usage (sent after the finish
 * reason) comes before it.
 */
export class ChunkAssembler {
  /** Output (text or a tool-call fragment) has begun. */
  started = false;
  #finishReason: string | undefined;
  readonly #toolCalls = new Map<number, PartialToolCall>();
  readonly #detail: (payload: unknown) => string;

  /** `detail` formats an error payload the provider sent in the stream, for the fault's message. */
  constructor(detail: (payload: unknown) => string) {
    this.#detail = detail;
  }

  accept(data: string): Step {
    const chunks: ModelChunk[] = [];
    if (data === "[DONE]") return this.#finish();
    const chunk = parseChunk(data);
    if (chunk === undefined) return fault("protocol_error", "malformed stream chunk");
    if (chunk.error !== undefined && chunk.error !== null) {
      return fault("http_error", `model provider reported an error${this.#detail(chunk.error)}`);
    }
    const choice = chunk.choices?.find((c) => (c.index ?? 0) === 0);
    const text = choice?.delta?.content;
    if (text) {
      chunks.push({ kind: "delta", text });
      this.started = true;
    }
    for (const fragment of choice?.delta?.tool_calls ?? []) {
      const call = this.#toolCalls.get(fragment.index) ?? { id: undefined, name: "", args: "" };
      // Servers differ on repeating id and name in later fragments; the first wins.
      call.id ??= fragment.id ?? undefined;
      if (call.name === "" && fragment.function?.name) call.name = fragment.function.name;
      call.args += fragment.function?.arguments ?? "";
      this.#toolCalls.set(fragment.index, call);
      this.started = true;
    }
    if (choice?.finish_reason && this.#finishReason === undefined) {
      this.#finishReason = choice.finish_reason;
      for (const [index, call] of [...this.#toolCalls].sort(([a], [b]) => a - b)) {
        if (call.name === "") return { ...fault("protocol_error", `tool call ${index} has no name`), chunks };
        // Arguments are passed on as sent: invalid JSON from the model is for the tool layer to refuse.
        chunks.push({
          kind: "tool_call",
          id: call.id ?? `call_${index}`,
          name: call.name,
          argumentsJson: call.args,
        });
      }
      this.#toolCalls.clear();
    }
    if (chunk.usage) {
      chunks.push({
        kind: "usage",
        promptTokens: chunk.usage.prompt_tokens,
        completionTokens: chunk.usage.completion_tokens,
      });
    }
    return { chunks, done: false };
  }

  /** The body ended. Some compatible servers omit [DONE]; a finish reason is enough. */
  end(): Step {
    if (this.#finishReason === undefined) {
      return fault("http_error", "model provider closed the stream before it finished");
    }
    return this.#finish();
  }

  #finish(): Step {
    if (this.#finishReason === undefined)
      return fault("protocol_error", "stream ended without a finish reason");
    return { chunks: [{ kind: "finish", reason: this.#finishReason }], done: true };
  }
}

export interface StreamDecoderLimits {
  /** Largest single SSE event (characters). */
  maxEventBytes: number;
  /** Largest whole response body. */
  maxResponseBytes: number;
}

/**
 * The whole body side of a response: bytes in, one Step per read out. It
 * bounds event and body sizes, and tells whether a read made progress (for
 * the provider's stall timers).
 */
export class StreamDecoder {
  readonly #limits: StreamDecoderLimits;
  readonly #assembler: ChunkAssembler;
  readonly #text = new TextDecoder();
  readonly #parser: SseParser;
  readonly #events: SseMessage[] = [];
  #oversized = false;
  #received = 0;

  constructor(limits: StreamDecoderLimits, detail: (payload: unknown) => string) {
    this.#limits = limits;
    this.#assembler = new ChunkAssembler(detail);
    this.#parser = createSseParser({
      maxBufferSize: limits.maxEventBytes,
      onEvent: (event) => this.#events.push(event),
      // Unknown fields and bad retry values are ignored, as SSE says; only
      // the buffer bound is fatal.
      onError: (err) => {
        if (err.type === "max-buffer-size-exceeded") this.#oversized = true;
      },
    });
  }

  /** Output (text or a tool call) has begun. */
  get started(): boolean {
    return this.#assembler.started;
  }

  /**
   * One piece of the body. `progressed`: before the first output only output
   * counts as progress; after it, any event does.
   */
  feed(bytes: Uint8Array): Step & { progressed: boolean } {
    const { maxEventBytes, maxResponseBytes } = this.#limits;
    this.#received += bytes.byteLength;
    if (this.#received > maxResponseBytes) {
      return { ...fault("protocol_error", `response exceeded ${maxResponseBytes} bytes`), progressed: false };
    }
    this.#parser.feed(this.#text.decode(bytes, { stream: true }));
    if (this.#oversized) {
      return {
        ...fault("protocol_error", `an event exceeded ${maxEventBytes} characters`),
        progressed: false,
      };
    }
    const step: Step & { progressed: boolean } = { chunks: [], done: false, progressed: false };
    for (const event of this.#events.splice(0)) {
      const wasStarted = this.#assembler.started;
      const next = this.#assembler.accept(event.data);
      if (wasStarted || this.#assembler.started) step.progressed = true;
      step.chunks.push(...next.chunks);
      if (next.fault) step.fault = next.fault;
      if (next.done || next.fault) {
        step.done = next.done;
        break; // anything after [DONE] or a fault is ignored
      }
    }
    return step;
  }

  /** The body ended. */
  end(): Step {
    return this.#assembler.end();
  }
}

function fault(reason: "protocol_error" | "http_error", message: string): Step {
  return { chunks: [], done: false, fault: { reason, message } };
}

function parseChunk(data: string): StreamChunk | undefined {
  let json: unknown;
  try {
    json = JSON.parse(data);
  } catch {
    return undefined;
  }
  const parsed = StreamChunk.safeParse(json);
  return parsed.success ? parsed.data : undefined;
}
