import { FailureReason } from "@spool/proto/spool/generation/v1/generation.js";
import { deciderSpec } from "@spool/testing";
import { describe, expect, it } from "vitest";
import {
  decideCancel,
  decideGrantLease,
  decideRequest,
  decideRequeue,
  generationReducer,
  type Producer,
  StaleLeaseError,
} from "./generation.js";
import { attemptOf, decideProviderRequeue, mayRetry, type RetryPolicy, retryDelayMs } from "./retry.js";

const T0 = 1_700_000_000_000;
const LEASE = 10_000;
const worker: Producer = { kind: "platform", id: "builtin:a" };
const request = {
  generationId: "g1",
  orgId: "o1",
  ownerId: "u1",
  clientRequestId: "r1",
  model: "gpt",
  messages: [{ role: "user", content: "hi", toolCalls: [] }],
  parameters: undefined,
  toolIds: [],
  fileIds: [],
  conversationId: "",
  tools: [],
};
const policy: RetryPolicy = { maxAttempts: 3, backoffMs: 1_000, backoffMaxMs: 30_000 };
const timeout = { reason: FailureReason.FAILURE_REASON_PROVIDER_TIMEOUT, message: "no output in time" };

const spec = deciderSpec(generationReducer, { subject: "gen.generation.g1", nowMs: T0 });
const queued = spec.given(...decideRequest(generationReducer.initial(), request));
const claimed = (s = queued) => s.given(...decideGrantLease(s.state, worker, T0, LEASE));

describe("re-queue after a provider failure before output", () => {
  it("given a running generation, when its provider fails, then it is queued again with the attempt and the time to retry", () => {
    const r = claimed();
    expect(attemptOf(r.state)).toBe(1);
    r.when((s) => decideProviderRequeue(s, 1, 1, timeout, T0 + 700)).thenEvents({
      type: "GenerationRequeued",
      data: {
        epoch: 1n,
        reason: "no output in time",
        failureReason: FailureReason.FAILURE_REASON_PROVIDER_TIMEOUT,
        attempt: 1,
        retryAtMs: BigInt(T0 + 700),
      },
    });
    const again = r.given(...decideProviderRequeue(r.state, 1, 1, timeout, T0 + 700));
    expect(again.state).toMatchObject({ kind: "queued", providerAttempts: 1, retryAtMs: T0 + 700 });
    // The next run is attempt 2, under a new epoch.
    const second = claimed(again);
    expect(second.state).toMatchObject({ kind: "running", epoch: 2 });
    expect(attemptOf(second.state)).toBe(2);
  });

  it("only the current lease holder may give it back", () => {
    const r = claimed();
    r.when((s) => decideProviderRequeue(s, 2, 1, timeout, T0)).thenThrows(StaleLeaseError);
    queued.when((s) => decideProviderRequeue(s, 1, 1, timeout, T0)).thenThrows(StaleLeaseError);
  });

  it("a cancel request wins: nothing is re-queued", () => {
    const r = claimed();
    const cancelling = r.given(...decideCancel(r.state, "u1"));
    cancelling.when((s) => decideProviderRequeue(s, 1, 1, timeout, T0)).thenNothing();
  });

  it("a lapsed lease's re-queue counts no provider attempt and clears the backoff", () => {
    const r = claimed();
    const failedOnce = claimed(r.given(...decideProviderRequeue(r.state, 1, 1, timeout, T0 + 500)));
    const lapsed = failedOnce.given(...decideRequeue(failedOnce.state, 2, T0 + 2 * LEASE, 1_000));
    expect(lapsed.state).toMatchObject({ kind: "queued", providerAttempts: 1, retryAtMs: 0 });
  });

  it("attempts are bounded by the policy", () => {
    expect([1, 2, 3].map((n) => mayRetry(n, policy))).toEqual([true, true, false]);
    expect(mayRetry(1, { ...policy, maxAttempts: 1 })).toBe(false);
  });

  it("backoff doubles with jitter, honours the provider's retry-after, and is capped", () => {
    expect(retryDelayMs(1, policy, undefined, 0)).toBe(500);
    expect(retryDelayMs(1, policy, undefined, 0.999_999)).toBe(1_000);
    expect(retryDelayMs(2, policy, undefined, 0)).toBe(1_000);
    expect(retryDelayMs(3, policy, undefined, 1)).toBe(4_000);
    expect(retryDelayMs(1, policy, 7_000, 0)).toBe(7_000);
    expect(retryDelayMs(1, policy, 600_000, 0)).toBe(30_000);
    expect(retryDelayMs(20, policy, undefined, 1)).toBe(30_000);
  });
});
