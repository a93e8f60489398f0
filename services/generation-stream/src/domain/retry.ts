// Re-queueing a generation whose model provider failed transiently before any
// output: which attempt it was, whether another is allowed, when it may run,
// and the event that gives the generation back. Pure: the worker supplies the
// clock and the randomness.
import type { NewEvent } from "@spool/kit";
import type { FailureReason } from "@spool/proto/spool/generation/v1/generation.js";
import { GenerationRequeued } from "./events.js";
import { type Generation, StaleLeaseError } from "./generation.js";

export interface RetryPolicy {
  /** Runs of one generation in all, counting the first; 1 = never re-queue. */
  maxAttempts: number;
  /** Backoff before run n+1 is about backoffMs·2^(n-1), half of it jitter, at most backoffMaxMs. */
  backoffMs: number;
  backoffMaxMs: number;
}

export interface ProviderFailure {
  /** PROVIDER_TIMEOUT or PROVIDER_ERROR. */
  reason: FailureReason;
  /** Already free of credentials (the provider's messages are). */
  message: string;
  /** The provider's own requested wait, if it sent one. */
  retryAfterMs?: number | undefined;
}

/** The run that just failed (1 = the first), given the generation as its producer claimed it. */
export function attemptOf(g: Generation): number {
  return g.kind === "none" ? 1 : g.providerAttempts + 1;
}

/** Whether a transient failure of run `attempt` may be retried under `policy`. */
export function mayRetry(attempt: number, policy: RetryPolicy): boolean {
  return attempt < policy.maxAttempts;
}

/**
 * How long to wait before the run after `attempt`: exponential with half of
 * it jitter (`random` in [0, 1)), at least what the provider asked for
 * (retry-after), never more than backoffMaxMs.
 */
export function retryDelayMs(
  attempt: number,
  policy: RetryPolicy,
  retryAfterMs: number | undefined,
  random: number,
): number {
  const exp = Math.min(policy.backoffMaxMs, policy.backoffMs * 2 ** Math.max(0, attempt - 1));
  const jittered = exp / 2 + (random * exp) / 2;
  return Math.round(Math.min(policy.backoffMaxMs, Math.max(jittered, retryAfterMs ?? 0)));
}

/**
 * Gives the generation back to the queue after run `attempt` of the lease
 * `epoch` failed at the provider before any output. Only the holder of the
 * current lease may (StaleLeaseError otherwise: another producer or the
 * sweeper has it). A cancel request wins: nothing is re-queued ([]), and the
 * producer ends the generation as cancelled.
 */
export function decideProviderRequeue(
  state: Generation,
  epoch: number,
  attempt: number,
  failure: ProviderFailure,
  retryAtMs: number,
): NewEvent[] {
  if (state.kind !== "running" || state.epoch !== epoch) throw new StaleLeaseError();
  if (state.cancelRequested) return [];
  return [
    GenerationRequeued.create({
      epoch: BigInt(epoch),
      reason: failure.message.slice(0, 1000),
      failureReason: failure.reason,
      attempt,
      retryAtMs: BigInt(retryAtMs),
    }),
  ];
}
