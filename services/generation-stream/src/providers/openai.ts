import { InvalidArgumentError } from "@spool/kit";
import { z } from "zod";
import { sleep } from "./sleep.js";
import { createSseParser, type SseMessage } from "./sse.js";
import {
  cancelledError,
  type ModelChunk,
  type ModelProvider,
  type ModelRequest,
  ProviderError,
  type ProviderErrorReason,
} from "./types.js";

export interface OpenAIProviderOptions {
  /** Origin (and optional path prefix) of the API; `/v1/chat/completions` is appended. */
  baseUrl: string;
  /** Sent as a bearer token; never logged and never part of an error message. Empty: no header. */
  apiKey: string;
  /** Spool model name → provider model name. Names not listed are refused. */
  models: Readonly<Record<string, string>>;
  /** Until the response headers arrive. Default 10 s. */
  connectTimeoutMs?: number;
  /** From the response headers until the first output (text or tool call). Default 30 s. */
  firstTokenTimeoutMs?: number;
  /** Longest silence between events once output has started. Default 30 s. */
  idleTimeoutMs?: number;
  /** Total tries of one request, counting the first. Retries happen only before any output. Default 3. */
  maxAttempts?: number;
  /** Backoff before retry n is about base·2^(n-1), half of it jitter, capped at backoffMaxMs. */
  backoffBaseMs?: number;
  backoffMaxMs?: number;
  /** A provider's retry-after is honoured up to this. Default 30 s. */
  maxRetryAfterMs?: number;
  /** Largest single SSE event (characters). Default 1 MiB. */
  maxEventBytes?: number;
  /** Largest whole response body. Default 32 MiB. */
  maxResponseBytes?: number;
}

type Settings = Required<Omit<OpenAIProviderOptions, "baseUrl" | "apiKey" | "models">>;

const DEFAULTS: Settings = {
  connectTimeoutMs: 10_000,
  firstTokenTimeoutMs: 30_000,
  idleTimeoutMs: 30_000,
  maxAttempts: 3,
  backoffBaseMs: 500,
  backoffMaxMs: 8_000,
  maxRetryAfterMs: 30_000,
  maxEventBytes: 1024 * 1024,
  maxResponseBytes: 32 * 1024 * 1024,
};

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

const ERROR_DETAIL_LIMIT = 200;
const ERROR_BODY_LIMIT = 4096;

/** An OpenAI-compatible chat-completions provider, streaming over SSE. */
export class OpenAIProvider implements ModelProvider {
  readonly #url: string;
  readonly #apiKey: string;
  readonly #models: ReadonlyMap<string, string>;
  readonly #settings: Settings;

  constructor(options: OpenAIProviderOptions) {
    const base = new URL(options.baseUrl);
    if (base.protocol !== "https:" && base.protocol !== "http:") {
      throw new InvalidArgumentError("provider base URL must be http(s)", [
        { field: "baseUrl", description: "must be an http or https URL" },
      ]);
    }
    this.#url = `${options.baseUrl.replace(/\/+$/, "")}/v1/chat/completions`;
    this.#apiKey = options.apiKey;
    // A Map, so that names like "constructor" or "__proto__" are never "configured".
    this.#models = new Map(Object.entries(options.models));
    const settings: Settings = { ...DEFAULTS };
    for (const key of Object.keys(DEFAULTS) as (keyof Settings)[]) {
      const value = options[key];
      if (value === undefined) continue;
      if (!Number.isFinite(value) || value < (key === "maxAttempts" ? 1 : 0)) {
        throw new InvalidArgumentError(`invalid provider setting ${key}`, [
          { field: key, description: "must be a finite, non-negative number (maxAttempts ≥ 1)" },
        ]);
      }
      settings[key] = value;
    }
    this.#settings = settings;
  }

  async *stream(req: ModelRequest): AsyncGenerator<ModelChunk, void, undefined> {
    const model = this.#models.get(req.model);
    if (model === undefined) {
      throw new InvalidArgumentError(`unknown model "${req.model.slice(0, 100)}"`, [
        { field: "model", description: "not a configured model" },
      ]);
    }
    const body = JSON.stringify(requestBody(model, req));
    for (let attempt = 1; ; attempt++) {
      if (req.signal.aborted) throw cancelledError();
      let error: ProviderError;
      try {
        yield* this.#attempt(body, req.signal);
        return;
      } catch (e) {
        if (!(e instanceof ProviderError)) throw e;
        error = e;
      }
      if (!error.retryable || attempt >= this.#settings.maxAttempts) {
        throw attempt === 1 ? error : gaveUp(error, attempt);
      }
      await sleep(this.#backoffMs(attempt, error.retryAfterMs), req.signal);
    }
  }

  /** One HTTP exchange. Its errors are retryable only while it has yielded nothing. */
  async *#attempt(body: string, callerSignal: AbortSignal): AsyncGenerator<ModelChunk, void, undefined> {
    const s = this.#settings;
    // Our own controller carries the timeouts; the caller's signal is combined
    // with it so either one tears down the fetch and any pending body read.
    const ctrl = new AbortController();
    const signal = AbortSignal.any([callerSignal, ctrl.signal]);
    let timedOut: ProviderErrorReason | undefined;
    const arm = (reason: ProviderErrorReason, ms: number) =>
      setTimeout(() => {
        timedOut = reason;
        ctrl.abort();
      }, ms);
    let yielded = false;
    const fail = (
      reason: ProviderErrorReason,
      message: string,
      extra: { status?: number; retryAfterMs?: number | undefined; cause?: unknown } = {},
    ) =>
      new ProviderError(reason, message, {
        retryable: !yielded && isTransient(reason, extra.status),
        ...(extra.status === undefined ? {} : { status: extra.status }),
        ...(extra.retryAfterMs === undefined ? {} : { retryAfterMs: extra.retryAfterMs }),
        ...(extra.cause === undefined ? {} : { cause: extra.cause }),
      });
    // A rejected fetch or read: was it the caller, one of our timers, or the network?
    const broken = (e: unknown, when: string) => {
      if (callerSignal.aborted) return cancelledError();
      if (timedOut !== undefined) return fail(timedOut, TIMEOUT_MESSAGES[timedOut] ?? "provider timed out");
      return fail("http_error", `connection to the model provider failed ${when}`, { cause: e });
    };

    const headers: Record<string, string> = {
      "content-type": "application/json",
      accept: "text/event-stream",
    };
    if (this.#apiKey !== "") headers.authorization = `Bearer ${this.#apiKey}`;

    let res: Response;
    const connectTimer = arm("connect_timeout", s.connectTimeoutMs);
    try {
      // No redirects: an API endpoint has no reason to send one, and following
      // it could carry the bearer token somewhere else.
      res = await fetch(this.#url, { method: "POST", headers, body, signal, redirect: "error" });
    } catch (e) {
      throw broken(e, "before a response");
    } finally {
      clearTimeout(connectTimer);
    }

    try {
      if (!res.ok) {
        const retryAfterMs = parseRetryAfter(res.headers);
        const detail = await this.#errorDetail(res);
        // Reading the error body swallows its own failures, including the caller's abort.
        if (callerSignal.aborted) throw cancelledError();
        throw fail("http_error", `model provider returned HTTP ${res.status}${detail}`, {
          status: res.status,
          retryAfterMs,
        });
      }
      const type = res.headers.get("content-type") ?? "";
      if (!type.toLowerCase().startsWith("text/event-stream")) {
        throw fail("protocol_error", `expected an event stream, got "${type.slice(0, 60)}"`);
      }
      if (res.body === null) throw fail("protocol_error", "response has no body");

      const reader = res.body.getReader();
      const decoder = new TextDecoder();
      const events: SseMessage[] = [];
      let oversized = false;
      const parser = createSseParser({
        maxBufferSize: s.maxEventBytes,
        onEvent: (event) => events.push(event),
        // Unknown fields and bad retry values are ignored, as SSE says; only
        // the buffer bound is fatal.
        onError: (err) => {
          if (err.type === "max-buffer-size-exceeded") oversized = true;
        },
      });

      const assembler = new ChunkAssembler((payload) => this.#detail(payload));
      let waitedMs = 0; // time spent waiting on the provider since the last progress
      let received = 0;

      for (;;) {
        // Only time spent waiting in read() counts, so a slow consumer of this
        // iterator never looks like a stalled provider.
        const reason = assembler.started ? "idle_timeout" : "first_token_timeout";
        const budget = assembler.started ? s.idleTimeoutMs : s.firstTokenTimeoutMs;
        const t0 = performance.now();
        const timer = arm(reason, Math.max(0, budget - waitedMs));
        let read: Awaited<ReturnType<typeof reader.read>>;
        try {
          read = await reader.read();
        } catch (e) {
          throw broken(e, "while streaming");
        } finally {
          clearTimeout(timer);
        }
        waitedMs += performance.now() - t0;

        let step: Step;
        if (read.done) {
          step = assembler.end();
        } else {
          received += read.value.byteLength;
          if (received > s.maxResponseBytes) {
            throw fail("protocol_error", `response exceeded ${s.maxResponseBytes} bytes`);
          }
          parser.feed(decoder.decode(read.value, { stream: true }));
          if (oversized) throw fail("protocol_error", `an event exceeded ${s.maxEventBytes} characters`);
          step = { chunks: [], done: false };
          for (const event of events.splice(0)) {
            const wasStarted = assembler.started;
            const next = assembler.accept(event.data);
            // Before the first output only output counts as progress; after it, any event does.
            if (wasStarted || assembler.started) waitedMs = 0;
            step.chunks.push(...next.chunks);
            if (next.fault) step.fault = next.fault;
            if (next.done || next.fault) {
              step.done = next.done;
              break; // anything after [DONE] or a fault is ignored
            }
          }
        }
        // What arrived before a fault is still delivered, in order.
        for (const chunk of step.chunks) {
          if (callerSignal.aborted) throw cancelledError();
          yielded = true;
          yield chunk;
        }
        if (step.fault) throw fail(step.fault.reason, step.fault.message);
        if (step.done) return;
      }
    } finally {
      // Releases the connection on every way out: finished, failed, or the
      // consumer stopped iterating.
      ctrl.abort();
    }
  }

  #backoffMs(attempt: number, retryAfterMs: number | undefined): number {
    const s = this.#settings;
    if (retryAfterMs !== undefined) return Math.min(retryAfterMs, s.maxRetryAfterMs);
    const exp = Math.min(s.backoffMaxMs, s.backoffBaseMs * 2 ** (attempt - 1));
    return exp / 2 + (Math.random() * exp) / 2;
  }

  /** A short, key-free excerpt of an error response body, read with a size and time bound. */
  async #errorDetail(res: Response): Promise<string> {
    if (res.body === null) return "";
    const reader = res.body.getReader();
    // cancel() resolves a pending read as done, so a stalled error body cannot hang us.
    const timer = setTimeout(() => void reader.cancel().catch(() => {}), this.#settings.connectTimeoutMs);
    const parts: Uint8Array[] = [];
    let size = 0;
    try {
      while (size < ERROR_BODY_LIMIT) {
        const { done, value } = await reader.read();
        if (done) break;
        parts.push(value);
        size += value.byteLength;
      }
    } catch {
      // The status is what matters; a body we cannot read adds nothing.
    } finally {
      clearTimeout(timer);
      void reader.cancel().catch(() => {});
    }
    const text = new TextDecoder().decode(Buffer.concat(parts).subarray(0, ERROR_BODY_LIMIT));
    try {
      const json: unknown = JSON.parse(text);
      return this.#detail(json && typeof json === "object" && "error" in json ? json.error : json);
    } catch {
      return this.#detail(text);
    }
  }

  /** Formats a provider's error payload for a message: its `message` if any, key removed, truncated. */
  #detail(payload: unknown): string {
    let text: string;
    if (typeof payload === "string") text = payload;
    else if (
      payload &&
      typeof payload === "object" &&
      "message" in payload &&
      typeof payload.message === "string"
    ) {
      text = payload.message;
    } else text = JSON.stringify(payload) ?? "";
    // Providers echo credentials back (OpenAI: "Incorrect API key provided: …").
    // Redact before truncating, so a cut can never leave part of the key behind.
    if (this.#apiKey !== "") text = text.split(this.#apiKey).join("[redacted]");
    text = text
      .replace(/Bearer\s+\S+/gi, "Bearer [redacted]")
      .replace(/\s+/g, " ")
      .trim();
    if (text === "") return "";
    return `: ${text.length > ERROR_DETAIL_LIMIT ? `${text.slice(0, ERROR_DETAIL_LIMIT)}…` : text}`;
  }
}

interface Step {
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
class ChunkAssembler {
  /** Output (text or a tool-call fragment) has begun. */
  started = false;
  #finishReason: string | undefined;
  readonly #toolCalls = new Map<number, PartialToolCall>();
  readonly #detail: (payload: unknown) => string;

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

function fault(reason: "protocol_error" | "http_error", message: string): Step {
  return { chunks: [], done: false, fault: { reason, message } };
}

const TIMEOUT_MESSAGES: Partial<Record<ProviderErrorReason, string>> = {
  connect_timeout: "model provider did not respond in time",
  first_token_timeout: "model provider produced no output in time",
  idle_timeout: "model provider stalled mid-stream",
};

function requestBody(model: string, req: ModelRequest): Record<string, unknown> {
  const body: Record<string, unknown> = {
    model,
    messages: req.messages.map(({ role, content }) => ({ role, content })),
    stream: true,
    stream_options: { include_usage: true },
  };
  if (req.params.temperature !== undefined) body.temperature = req.params.temperature;
  if (req.params.maxTokens !== undefined) body.max_tokens = req.params.maxTokens;
  if (req.params.topP !== undefined) body.top_p = req.params.topP;
  return body;
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

/** Timeouts, broken connections, 408, 429 and 5xx may succeed on another try. */
function isTransient(reason: ProviderErrorReason, status: number | undefined): boolean {
  switch (reason) {
    case "connect_timeout":
    case "first_token_timeout":
    case "idle_timeout":
      return true;
    case "http_error":
      return status === undefined || status === 408 || status === 429 || status >= 500;
    case "protocol_error":
    case "cancelled":
      return false;
    default: {
      const never: never = reason;
      return never;
    }
  }
}

/** `retry-after-ms` (OpenAI), else `retry-after` as seconds or an HTTP date. */
function parseRetryAfter(headers: Headers): number | undefined {
  const ms = Number(headers.get("retry-after-ms") ?? Number.NaN);
  if (Number.isFinite(ms) && ms >= 0) return ms;
  const value = headers.get("retry-after")?.trim();
  if (!value) return undefined;
  if (/^\d+(\.\d+)?$/.test(value)) return Number(value) * 1000;
  const date = Date.parse(value);
  return Number.isNaN(date) ? undefined : Math.max(0, date - Date.now());
}

function gaveUp(error: ProviderError, attempts: number): ProviderError {
  return new ProviderError(error.reason, `${error.message} (gave up after ${attempts} attempts)`, {
    retryable: error.retryable,
    ...(error.status === undefined ? {} : { status: error.status }),
    ...(error.retryAfterMs === undefined ? {} : { retryAfterMs: error.retryAfterMs }),
    cause: error,
  });
}
