// Errors of a dependency that is away (NATS, PostgreSQL, Redis) rather than
// of the request: the gRPC edge answers them UNAVAILABLE with retry info, and
// start-up waits them out (retryTransient) instead of exiting.
import type { Logger } from "./logger.js";
import { isTransientNatsError } from "./nats-errors.js";

// postgres.js connection errors (its own codes and Node's socket errors).
const POSTGRES_CONNECTION_CODES = new Set([
  "CONNECTION_ENDED",
  "CONNECTION_CLOSED",
  "CONNECTION_DESTROYED",
  "CONNECT_TIMEOUT",
  "ECONNREFUSED",
  "ECONNRESET",
  "EPIPE",
  "ETIMEDOUT",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "ENOTFOUND",
  "EAI_AGAIN",
]);

// SQLSTATEs of a server going away or refusing connections for now:
// admin_shutdown, crash_shutdown, cannot_connect_now, too_many_connections.
const POSTGRES_TRANSIENT_STATES = new Set(["57P01", "57P02", "57P03", "53300"]);

/** True for a PostgreSQL error a later attempt may not get: no connection, server restarting or full. */
export function isTransientPostgresError(e: unknown): boolean {
  if (!(e instanceof Error)) return false;
  const code = (e as { code?: unknown }).code;
  if (typeof code !== "string") return false;
  if (e.name === "PostgresError") return code.startsWith("08") || POSTGRES_TRANSIENT_STATES.has(code);
  return POSTGRES_CONNECTION_CODES.has(code);
}

// ioredis throws plain Errors for these; matched by message.
const REDIS_MESSAGES = [
  /^Connection is closed\.?$/,
  /^Stream isn't writeable and enableOfflineQueue options is false/,
  /^Command timed out$/,
];

/** True for an ioredis error of a Redis that is away (not connected, command timeout, retries exhausted). */
export function isTransientRedisError(e: unknown): boolean {
  if (!(e instanceof Error)) return false;
  if (e.name === "MaxRetriesPerRequestError") return true;
  return REDIS_MESSAGES.some((re) => re.test(e.message));
}

/** A dependency error worth retrying later: NATS, PostgreSQL or Redis being away. */
export function isTransientError(e: unknown): boolean {
  return isTransientNatsError(e) || isTransientPostgresError(e) || isTransientRedisError(e);
}

export interface RetryOptions {
  logger: Logger;
  /** Stops waiting (the promise rejects with the signal's reason): a shutdown during start-up. */
  signal?: AbortSignal | undefined;
  /** First delay (default 250 ms), doubled per attempt up to maxDelayMs (default 5 s), with jitter. */
  initialDelayMs?: number;
  maxDelayMs?: number;
  /** Which errors are worth waiting out (default isTransientError); others are thrown at once. */
  isTransient?: (e: unknown) => boolean;
}

/**
 * Runs `fn` until it succeeds, waiting with backoff while it fails with a
 * transient dependency error, and logging what it waits for. For idempotent
 * start-up steps (create a stream, migrate tables): a service started before
 * its dependencies waits for them instead of exiting.
 */
export async function retryTransient<T>(
  what: string,
  fn: () => Promise<T>,
  options: RetryOptions,
): Promise<T> {
  const isTransient = options.isTransient ?? isTransientError;
  const maxDelayMs = options.maxDelayMs ?? 5_000;
  let delayMs = options.initialDelayMs ?? 250;
  for (let attempt = 1; ; attempt++) {
    options.signal?.throwIfAborted();
    try {
      const result = await fn();
      if (attempt > 1) options.logger.info({ attempts: attempt }, `${what}: done after waiting`);
      return result;
    } catch (err) {
      if (!isTransient(err) || options.signal?.aborted) throw err;
      const waitMs = Math.round(delayMs * (0.5 + Math.random() / 2));
      options.logger.warn({ err, attempt, retryInMs: waitMs }, `${what}: dependency unavailable, waiting`);
      await sleep(waitMs, options.signal);
      delayMs = Math.min(maxDelayMs, delayMs * 2);
    }
  }
}

/** Resolves after ms, or rejects with the signal's reason when it aborts first. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}
