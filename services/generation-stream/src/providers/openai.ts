import { InvalidArgumentError } from "@spool/kit";
import { type Step, StreamDecoder } from "./openai-chunks.js";
import {
  errorDetail,
  gaveUp,
  isTransient,
  parseRetryAfter,
  responseErrorDetail,
  TIMEOUT_MESSAGES,
} from "./openai-errors.js";
import { sleep } from "./sleep.js";
import {
  cancelledError,
  type ModelChunk,
  type ModelMessage,
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
    const ex = new Exchange(callerSignal);
    const res = await this.#connect(body, ex);
    try {
      const reader = await this.#openStream(res, ex);
      yield* this.#readStream(reader, ex);
    } finally {
      // Releases the connection on every way out: finished, failed, or the
      // consumer stopped iterating.
      ex.close();
    }
  }

  /** Sends the request; resolves with the response headers. */
  async #connect(body: string, ex: Exchange): Promise<Response> {
    const headers: Record<string, string> = {
      "content-type": "application/json",
      accept: "text/event-stream",
    };
    if (this.#apiKey !== "") headers.authorization = `Bearer ${this.#apiKey}`;
    const connectTimer = ex.arm("connect_timeout", this.#settings.connectTimeoutMs);
    try {
      // No redirects: an API endpoint has no reason to send one, and following
      // it could carry the bearer token somewhere else.
      return await fetch(this.#url, { method: "POST", headers, body, signal: ex.signal, redirect: "error" });
    } catch (e) {
      throw ex.broken(e, "before a response");
    } finally {
      clearTimeout(connectTimer);
    }
  }

  /** The body of a successful event-stream response; anything else is an error. */
  async #openStream(res: Response, ex: Exchange): Promise<ReadableStreamDefaultReader<Uint8Array>> {
    if (!res.ok) {
      const retryAfterMs = parseRetryAfter(res.headers);
      const detail = await responseErrorDetail(res, this.#settings.connectTimeoutMs, this.#apiKey);
      // Reading the error body swallows its own failures, including the caller's abort.
      if (ex.cancelled) throw cancelledError();
      throw ex.fail("http_error", `model provider returned HTTP ${res.status}${detail}`, {
        status: res.status,
        retryAfterMs,
      });
    }
    const type = res.headers.get("content-type") ?? "";
    if (!type.toLowerCase().startsWith("text/event-stream")) {
      throw ex.fail("protocol_error", `expected an event stream, got "${type.slice(0, 60)}"`);
    }
    if (res.body === null) throw ex.fail("protocol_error", "response has no body");
    return res.body.getReader();
  }

  /** Reads the event stream, yielding its chunks as they are assembled. */
  async *#readStream(
    reader: ReadableStreamDefaultReader<Uint8Array>,
    ex: Exchange,
  ): AsyncGenerator<ModelChunk, void, undefined> {
    const s = this.#settings;
    const decoder = new StreamDecoder(
      { maxEventBytes: s.maxEventBytes, maxResponseBytes: s.maxResponseBytes },
      (payload) => errorDetail(payload, this.#apiKey),
    );
    let waitedMs = 0; // time spent waiting on the provider since the last progress
    for (;;) {
      const t0 = performance.now();
      const read = await this.#read(reader, ex, decoder.started, waitedMs);
      waitedMs += performance.now() - t0;
      let step: Step;
      if (read.done) {
        step = decoder.end();
      } else {
        const fed = decoder.feed(read.value);
        if (fed.progressed) waitedMs = 0;
        step = fed;
      }
      // What arrived before a fault is still delivered, in order.
      for (const chunk of step.chunks) {
        if (ex.cancelled) throw cancelledError();
        ex.yielded = true;
        yield chunk;
      }
      if (step.fault) throw ex.fail(step.fault.reason, step.fault.message);
      if (step.done) return;
    }
  }

  /**
   * One read of the body, bounded by the first-token or idle timeout. Only
   * time spent waiting in read() counts (`waitedMs` so far), so a slow
   * consumer of this iterator never looks like a stalled provider.
   */
  async #read(
    reader: ReadableStreamDefaultReader<Uint8Array>,
    ex: Exchange,
    started: boolean,
    waitedMs: number,
  ): Promise<Awaited<ReturnType<ReadableStreamDefaultReader<Uint8Array>["read"]>>> {
    const s = this.#settings;
    const reason = started ? "idle_timeout" : "first_token_timeout";
    const budget = started ? s.idleTimeoutMs : s.firstTokenTimeoutMs;
    const timer = ex.arm(reason, Math.max(0, budget - waitedMs));
    try {
      return await reader.read();
    } catch (e) {
      throw ex.broken(e, "while streaming");
    } finally {
      clearTimeout(timer);
    }
  }

  #backoffMs(attempt: number, retryAfterMs: number | undefined): number {
    const s = this.#settings;
    if (retryAfterMs !== undefined) return Math.min(retryAfterMs, s.maxRetryAfterMs);
    const exp = Math.min(s.backoffMaxMs, s.backoffBaseMs * 2 ** (attempt - 1));
    return exp / 2 + (Math.random() * exp) / 2;
  }
}

/**
 * The state of one HTTP exchange that decides how it fails: our own
 * controller carries the timeouts, combined with the caller's signal so
 * either one tears down the fetch and any pending body read.
 */
class Exchange {
  readonly signal: AbortSignal;
  /** Output was yielded: from then on no error of this exchange is retryable. */
  yielded = false;
  readonly #caller: AbortSignal;
  readonly #ctrl = new AbortController();
  #timedOut: ProviderErrorReason | undefined;

  constructor(caller: AbortSignal) {
    this.#caller = caller;
    this.signal = AbortSignal.any([caller, this.#ctrl.signal]);
  }

  get cancelled(): boolean {
    return this.#caller.aborted;
  }

  /** Aborts the exchange as `reason` after `ms`, unless the returned timer is cleared first. */
  arm(reason: ProviderErrorReason, ms: number): NodeJS.Timeout {
    return setTimeout(() => {
      this.#timedOut = reason;
      this.#ctrl.abort();
    }, ms);
  }

  fail(
    reason: ProviderErrorReason,
    message: string,
    extra: { status?: number; retryAfterMs?: number | undefined; cause?: unknown } = {},
  ): ProviderError {
    return new ProviderError(reason, message, {
      retryable: !this.yielded && isTransient(reason, extra.status),
      ...(extra.status === undefined ? {} : { status: extra.status }),
      ...(extra.retryAfterMs === undefined ? {} : { retryAfterMs: extra.retryAfterMs }),
      ...(extra.cause === undefined ? {} : { cause: extra.cause }),
    });
  }

  /** A rejected fetch or read: was it the caller, one of our timers, or the network? */
  broken(e: unknown, when: string): Error {
    if (this.#caller.aborted) return cancelledError();
    if (this.#timedOut !== undefined) {
      return this.fail(this.#timedOut, TIMEOUT_MESSAGES[this.#timedOut] ?? "provider timed out");
    }
    return this.fail("http_error", `connection to the model provider failed ${when}`, { cause: e });
  }

  close(): void {
    this.#ctrl.abort();
  }
}

export function requestBody(model: string, req: ModelRequest): Record<string, unknown> {
  const body: Record<string, unknown> = {
    model,
    messages: req.messages.map(wireMessage),
    stream: true,
    stream_options: { include_usage: true },
  };
  if (req.params.temperature !== undefined) body.temperature = req.params.temperature;
  // max_tokens is deprecated by OpenAI and refused by its reasoning models; max_completion_tokens
  // bounds all completion tokens (reasoning included) and is what current compatible servers take.
  if (req.params.maxTokens !== undefined) body.max_completion_tokens = req.params.maxTokens;
  if (req.params.topP !== undefined) body.top_p = req.params.topP;
  if (req.tools !== undefined && req.tools.length > 0) {
    body.tools = req.tools.map((t) => ({
      type: "function",
      function: {
        name: t.name,
        ...(t.description ? { description: t.description } : {}),
        ...(t.parameters !== undefined ? { parameters: t.parameters } : {}),
      },
    }));
  }
  if (req.toolChoice !== undefined) {
    body.tool_choice =
      typeof req.toolChoice === "string"
        ? req.toolChoice
        : { type: "function", function: { name: req.toolChoice.function } };
  }
  return body;
}

function wireMessage(m: ModelMessage): Record<string, unknown> {
  if (m.role === "tool") return { role: "tool", tool_call_id: m.toolCallId ?? "", content: m.content };
  if (m.role === "assistant" && m.toolCalls !== undefined && m.toolCalls.length > 0) {
    return {
      role: "assistant",
      // OpenAI wants null, not "", for an assistant turn that only called tools.
      content: m.content === "" ? null : m.content,
      tool_calls: m.toolCalls.map((c) => ({
        id: c.id,
        type: "function",
        function: { name: c.name, arguments: c.argumentsJson },
      })),
    };
  }
  return { role: m.role, content: m.content };
}
