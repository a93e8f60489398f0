import { createHash } from "node:crypto";
import { InvalidArgumentError } from "@spool/kit";
import { sleep } from "./sleep.js";
import { cancelledError, type ModelChunk, type ModelProvider, type ModelRequest } from "./types.js";

export interface BuiltinModelOptions {
  /** Output rate. 0 or Infinity: as fast as possible. */
  tokensPerSecond: number;
  /** Tokens per completion when the request sets no maxTokens. */
  length: number;
  /**
   * The most tokens a request's maxTokens gets (a larger one is cut to this,
   * finish reason "length"). Default: DEFAULT_BUILTIN_MAX_TOKENS, or `length`
   * when that is larger.
   */
  maxTokens?: number;
  /** Varies the text; the same seed and request always give the same text. */
  seed?: string | number;
}

// Filler vocabulary: the text only has to look like prose and be reproducible.
const WORDS = (
  "the a stream of events carries every token in order while followers resume from any " +
  "sequence and nothing is lost or repeated when a producer fails another takes over its " +
  "lease so output continues durable log keeps what matters model writes slowly clients read"
).split(" ");

/** The default ceiling on a request's maxTokens (SPOOL_BUILTIN_MAX_TOKENS). */
export const DEFAULT_BUILTIN_MAX_TOKENS = 8192;

/** Tokens between forced returns to the event loop when no timer runs, so an abort can land. */
const YIELD_EVERY = 64;

/**
 * A deterministic model for demos, tests and benchmarks: no network, text
 * derived from the request and seed, emitted at a steady rate. It writes
 * `length` tokens, or exactly the request's maxTokens up to the ceiling
 * (maxTokens is how a client picks the length of a synthetic completion).
 */
export class BuiltinModel implements ModelProvider {
  readonly #intervalMs: number;
  readonly #length: number;
  readonly #maxTokens: number;
  readonly #seed: string;

  constructor(options: BuiltinModelOptions) {
    const { tokensPerSecond, length } = options;
    if (Number.isNaN(tokensPerSecond) || tokensPerSecond < 0) {
      throw new InvalidArgumentError("tokensPerSecond must be ≥ 0", [
        { field: "tokensPerSecond", description: "must be a non-negative number (0 or Infinity: no limit)" },
      ]);
    }
    if (!Number.isSafeInteger(length) || length < 0) {
      throw new InvalidArgumentError("length must be a non-negative integer", [
        { field: "length", description: "must be a non-negative integer" },
      ]);
    }
    this.#intervalMs = tokensPerSecond > 0 && Number.isFinite(tokensPerSecond) ? 1000 / tokensPerSecond : 0;
    const maxTokens = options.maxTokens ?? Math.max(length, DEFAULT_BUILTIN_MAX_TOKENS);
    if (!Number.isSafeInteger(maxTokens) || maxTokens < 1) {
      throw new InvalidArgumentError("maxTokens must be a positive integer", [
        { field: "maxTokens", description: "must be a positive integer" },
      ]);
    }
    this.#length = length;
    this.#maxTokens = maxTokens;
    this.#seed = String(options.seed ?? "");
  }

  async *stream(req: ModelRequest): AsyncGenerator<ModelChunk, void, undefined> {
    const { signal } = req;
    if (signal.aborted) throw cancelledError();
    const requested = req.params.maxTokens;
    // A limit (the request's or the ceiling) ends it with "length"; its own length with "stop".
    const limited = requested !== undefined;
    const count = limited ? Math.max(0, Math.min(Math.floor(requested), this.#maxTokens)) : this.#length;
    const next = rngFor(this.#seed, req);
    // Token i is due at start + i·interval (the first at once); scheduling
    // against the start keeps the average rate exact despite timer jitter.
    const start = performance.now();
    let sinceEventLoop = 0;
    for (let i = 0; i < count; i++) {
      const wait = start + i * this.#intervalMs - performance.now();
      if (wait >= 1) {
        await sleep(wait, signal);
        sinceEventLoop = 0;
      } else if (++sinceEventLoop >= YIELD_EVERY) {
        // Without this, a fast stream consumed by a fast reader runs entirely
        // in microtasks and an abort (a timer or I/O callback) never gets to run.
        await new Promise<void>((resolve) => setImmediate(resolve));
        sinceEventLoop = 0;
      }
      if (signal.aborted) throw cancelledError();
      const word = WORDS[Math.floor(next() * WORDS.length)] ?? "token";
      yield { kind: "delta", text: i === 0 ? word : ` ${word}` };
    }
    if (signal.aborted) throw cancelledError();
    yield { kind: "usage", promptTokens: promptTokens(req), completionTokens: count };
    yield { kind: "finish", reason: limited ? "length" : "stop" };
  }
}

/** mulberry32, seeded from a hash of the seed, model and messages. */
function rngFor(seed: string, req: ModelRequest): () => number {
  const digest = createHash("sha256")
    .update(JSON.stringify([seed, req.model, req.messages.map((m) => [m.role, m.content])]))
    .digest();
  let state = digest.readUInt32LE(0);
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A rough count (words), enough for usage accounting in demos. */
function promptTokens(req: ModelRequest): number {
  return req.messages.reduce((n, m) => n + (m.content.match(/\S+/g)?.length ?? 0), 0);
}
