import { baseConfigShape, ConfigError, envBoolean, loadConfig, secret } from "@spool/kit";
import { z } from "zod";
import { DEFAULT_BUILTIN_MAX_TOKENS } from "./providers/builtin.js";

const int = (def: number, min: number, max: number) => z.coerce.number().int().min(min).max(max).default(def);

export const genConfigShape = {
  ...baseConfigShape,
  GRPC_PORT: int(50062, 0, 65535),
  METRICS_PORT: int(9462, 0, 65535),
  REDIS_PREFIX: z.string().max(64).default("spool:gen:"),
  AUTH_ISSUER: z.string().min(1).default("spool-auth"),
  /** This service's audience in access tokens. */
  AUTH_AUDIENCE: z.string().min(1).default("spool.generation"),
  /**
   * How long output events are kept (GEN_OUTPUT max age). A follow needing older events is
   * OUT_OF_RANGE (OutputExpired names the earliest kept); the final transcript stays in GetGeneration.
   */
  GEN_OUTPUT_RETENTION_SECONDS: int(86_400, 1, 365 * 86_400),
  /** Generations a user may have queued or running at once. */
  LIMIT_MAX_ACTIVE: int(2, 1, 1_000),
  /** Starts per window, as a rate: a burst of this many, then one per window / this (GCRA). */
  LIMIT_STARTS_PER_WINDOW: int(30, 1, 100_000),
  LIMIT_WINDOW_SECONDS: int(60, 1, 86_400),
  /** Retry-after advised when every active slot is taken (a slot frees when a generation ends); 0 = none. */
  LIMIT_ACTIVE_RETRY_MS: int(1_000, 0, 60_000),
  /** A producer's lease; renewed every third of it. A dead producer is noticed within about this long. */
  LEASE_MS: int(15_000, 1_000, 600_000),
  SWEEP_INTERVAL_MS: int(2_000, 100, 60_000),
  /**
   * Processes of this replica (node:cluster workers sharing the gRPC port, each
   * a full replica: docs/adr/0009-generation-stream-multicore.md). 1: one process, as before;
   * 0: one per core.
   */
  WORKERS: int(1, 0, 64),
  /** Generations one replica's built-in workers run at once (per process when WORKERS > 1). */
  WORKER_CONCURRENCY: int(16, 1, 10_000),
  /** At shutdown, how long running generations may take to finish (then their leases settle them). */
  WORKER_DRAIN_MS: int(8_000, 0, 600_000),
  /**
   * Runs of one generation in all when its model provider fails transiently (timeout, 408, 429,
   * 5xx, broken connection) before any output: each failure re-queues the generation
   * (GenerationRequeued) after a backoff of about BACKOFF_MS·2^(n-1) with jitter, at least the
   * provider's retry-after, at most BACKOFF_MAX_MS; the last fails it as PROVIDER_UNAVAILABLE.
   */
  GENERATION_MAX_ATTEMPTS: int(3, 1, 20),
  GENERATION_RETRY_BACKOFF_MS: int(1_000, 0, 600_000),
  GENERATION_RETRY_BACKOFF_MAX_MS: int(30_000, 0, 3_600_000),
  COALESCE_WINDOW_MS: int(20, 0, 1_000),
  COALESCE_MAX_CHARS: int(2_048, 1, 1_000_000),
  HEARTBEAT_MS: int(10_000, 100, 300_000),
  /** Followers behind memory share one log read per generation, holding at most this many bytes (0: no sharing). */
  FOLLOW_CATCHUP_BYTES: int(4 * 1024 * 1024, 0, 1024 * 1024 * 1024),
  /** Most followers reading the log alone at once per process (a JetStream consumer each); the rest wait. */
  FOLLOW_MAX_CATCHUP_READS: int(64, 1, 100_000),
  /**
   * How a process receives the output it fans out. "stream": one consumer of all of GEN_OUTPUT
   * (every generation's output reaches every process, followed there or not); "subject": one
   * consumer per followed generation. "stream" costs nats-server far less with many followed
   * generations per process; "subject" less with many replicas each following few (ADR 0014).
   */
  FOLLOW_FEED: z.enum(["stream", "subject"]).default("stream"),
  MAX_MESSAGES: int(256, 1, 10_000),
  MAX_MESSAGE_CHARS: int(100_000, 1, 10_000_000),
  MAX_TOTAL_CHARS: int(500_000, 1, 50_000_000),
  /** File ids per StartGeneration (file_ids). */
  MAX_FILE_IDS: int(100, 0, 1_000),
  /**
   * File attachments: consume file-ingest's FILES stream into this service's projection and check
   * every file id a start names. Off: a start naming files is FAILED_PRECONDITION, and FILES is not
   * waited for (a deployment without file-ingest). On: the service waits for FILES at start.
   */
  FILES_ENABLED: envBoolean.default(false),
  /** How long a start naming a file not (yet) usable waits for the files projection to catch up. */
  FILES_CATCH_UP_MS: int(2_000, 0, 30_000),
  /** Tool definitions per StartGeneration (and tool calls per message); OpenAI's own limit is 128. */
  MAX_TOOLS: int(128, 0, 10_000),
  /** A tool's parameters JSON Schema, as JSON text. */
  MAX_TOOL_SCHEMA_CHARS: int(16_384, 2, 1_000_000),
  MAX_TOOL_DESCRIPTION_CHARS: int(1_024, 0, 100_000),
  /**
   * The deterministic built-in model ("builtin"): tokens per second (0 = as fast as possible), its
   * length when a request sets no max_tokens, and the ceiling on a request's max_tokens (it writes
   * exactly max_tokens tokens up to this; a larger max_tokens is cut here, finish reason "length").
   */
  BUILTIN_TOKENS_PER_SECOND: int(50, 0, 1_000_000),
  BUILTIN_LENGTH: int(200, 1, 1_000_000),
  BUILTIN_MAX_TOKENS: int(DEFAULT_BUILTIN_MAX_TOKENS, 1, 1_000_000),
  /** Models served only by external producers (ClaimGeneration), comma-separated. */
  EXTERNAL_MODELS: z.string().default(""),
  /** An OpenAI-compatible endpoint for built-in workers; unset = none. */
  OPENAI_BASE_URL: z.string().url().optional(),
  OPENAI_API_KEY: secret(z.string().min(1)).optional(),
  /** Spool model name = provider model name, comma-separated (e.g. "gpt=gpt-4o-mini"). */
  OPENAI_MODELS: z.string().default(""),
  OPENAI_CONNECT_TIMEOUT_MS: int(10_000, 100, 120_000),
  OPENAI_FIRST_TOKEN_TIMEOUT_MS: int(30_000, 100, 600_000),
  OPENAI_IDLE_TIMEOUT_MS: int(30_000, 100, 600_000),
  /**
   * HTTP tries of one run inside the provider (before any output). 1 by default: a transient
   * failure re-queues the generation instead (GENERATION_MAX_ATTEMPTS), so every attempt is an
   * event in its lifecycle and the worker's slot is free during the backoff.
   */
  OPENAI_MAX_ATTEMPTS: int(1, 1, 10),
};

export function loadGenConfig(env: NodeJS.ProcessEnv = process.env) {
  const config = loadConfig(genConfigShape, env);
  const problems: string[] = [];
  const models = new Map<string, string>();
  for (const pair of config.OPENAI_MODELS.split(",")
    .map((s) => s.trim())
    .filter(Boolean)) {
    const [spool, provider] = pair.split("=");
    if (!spool || !provider || !/^[A-Za-z0-9._:-]{1,128}$/.test(spool))
      problems.push(`SPOOL_OPENAI_MODELS: bad entry ${JSON.stringify(pair)}`);
    else models.set(spool, provider);
  }
  if (models.size > 0 && (!config.OPENAI_BASE_URL || !config.OPENAI_API_KEY)) {
    problems.push("SPOOL_OPENAI_MODELS needs SPOOL_OPENAI_BASE_URL and SPOOL_OPENAI_API_KEY (or _FILE)");
  }
  if (models.has("builtin")) problems.push("SPOOL_OPENAI_MODELS: 'builtin' is the built-in model's name");
  const externalModels = config.EXTERNAL_MODELS.split(",")
    .map((s) => s.trim())
    .filter(Boolean);
  for (const m of externalModels) {
    if (m === "builtin" || models.has(m))
      problems.push(`SPOOL_EXTERNAL_MODELS: ${m} is served by a built-in worker`);
  }
  if (problems.length > 0) throw new ConfigError(problems);
  return { ...config, openaiModels: models, externalModels };
}

export type GenConfig = ReturnType<typeof loadGenConfig>;

/** A user's limits, in the units UserLimits takes. */
export function userLimits(config: GenConfig) {
  return {
    maxActive: config.LIMIT_MAX_ACTIVE,
    maxStartsPerWindow: config.LIMIT_STARTS_PER_WINDOW,
    windowMs: config.LIMIT_WINDOW_SECONDS * 1000,
    // Outlives a lease comfortably: a slot is dropped only when its generation is surely settled elsewhere.
    activeTtlMs: config.LEASE_MS * 4,
    activeRetryMs: config.LIMIT_ACTIVE_RETRY_MS,
  };
}

/**
 * Producers stop appending a tenth of a lease before it runs out by their own clock; the sweeper
 * settles a lease only a fifth of a lease after it ran out (grace > margin: see LeaseSweeper).
 */
export function leaseTiming(config: GenConfig) {
  return {
    lease: { leaseMs: config.LEASE_MS, safetyMarginMs: Math.floor(config.LEASE_MS / 10) },
    sweep: { graceMs: Math.floor(config.LEASE_MS / 5), intervalMs: config.SWEEP_INTERVAL_MS },
  };
}

/** The built-in worker's tuning. */
export function workerTuning(config: GenConfig) {
  return {
    maxConcurrent: config.WORKER_CONCURRENCY,
    coalesceWindowMs: config.COALESCE_WINDOW_MS,
    coalesceMaxChars: config.COALESCE_MAX_CHARS,
    drainMs: config.WORKER_DRAIN_MS,
    retry: {
      maxAttempts: config.GENERATION_MAX_ATTEMPTS,
      backoffMs: config.GENERATION_RETRY_BACKOFF_MS,
      backoffMaxMs: config.GENERATION_RETRY_BACKOFF_MAX_MS,
    },
  };
}

/** What a request may hold. */
export function requestLimits(config: GenConfig) {
  return {
    maxMessages: config.MAX_MESSAGES,
    maxMessageChars: config.MAX_MESSAGE_CHARS,
    maxTotalChars: config.MAX_TOTAL_CHARS,
    maxFileIds: config.MAX_FILE_IDS,
    maxTools: config.MAX_TOOLS,
    maxToolSchemaChars: config.MAX_TOOL_SCHEMA_CHARS,
    maxToolDescriptionChars: config.MAX_TOOL_DESCRIPTION_CHARS,
  };
}
