import { FailedPreconditionError, NotFoundError } from "@spool/kit";
import { FailureReason, GenerationStatus } from "@spool/proto/spool/generation/v1/generation.js";
import { deciderSpec } from "@spool/testing";
import { describe, expect, it } from "vitest";
import {
  canProduce,
  decideCancel,
  decideGrantLease,
  decideRenew,
  decideRequest,
  decideRequeue,
  decideSettle,
  emptyOutcome,
  generationReducer,
  type Producer,
  StaleLeaseError,
} from "./generation.js";

const builtin = (replica: string): Producer => ({ kind: "platform", id: `builtin:${replica}` });
const external = (orgId: string, id = "sa1"): Producer => ({ kind: "organisation", id, orgId });

const T0 = 1_700_000_000_000;
const LEASE = 10_000;
const request = {
  generationId: "g1",
  orgId: "o1",
  ownerId: "u1",
  clientRequestId: "r1",
  model: "builtin",
  messages: [{ role: "user", content: "hi", toolCalls: [] }],
  parameters: undefined,
  toolIds: [],
  fileIds: [],
  conversationId: "",
  tools: [],
};

const spec = deciderSpec(generationReducer, { subject: "gen.generation.g1", nowMs: T0 });

const queued = (orgId = request.orgId) =>
  spec.given(...decideRequest(generationReducer.initial(), { ...request, orgId }));
const running = () => {
  const q = queued();
  return q.given(...decideGrantLease(q.state, builtin("a"), T0, LEASE));
};

describe("generation lifecycle", () => {
  it("a request creates it once", () => {
    spec
      .given()
      .when((s) => decideRequest(s, request))
      .thenEvents({ type: "GenerationRequested", data: { generationId: "g1", orgId: "o1", ownerId: "u1" } });
    const q = queued();
    expect(q.state.kind).toBe("queued");
    q.when((s) => decideRequest(s, request)).thenNothing();
  });

  it("claiming grants the next epoch; a running generation cannot be claimed again", () => {
    const r = running();
    expect(r.state).toMatchObject({ kind: "running", epoch: 1, producer: "builtin:a" });
    r.when((s) => decideGrantLease(s, builtin("b"), T0 + 1, LEASE)).thenThrows(/not waiting/);
  });

  it("a stale epoch or an expired lease cannot renew", () => {
    const r = running();
    r.when((s) => decideRenew(s, 2, T0 + 1, LEASE)).thenThrows(StaleLeaseError);
    r.when((s) => decideRenew(s, 1, T0 + LEASE, LEASE)).thenThrows(StaleLeaseError);
    r.when((s) => decideRenew(s, 1, T0 + 1, LEASE)).thenEvents({
      type: "GenerationLeaseRenewed",
      data: { epoch: 1n, expiresAtMs: BigInt(T0 + 1 + LEASE) },
    });
  });

  it("a lease is re-queued only once it lapsed by more than the grace, and the next producer gets a higher epoch", () => {
    const r = running();
    const GRACE = 2_000;
    r.when((s) => decideRequeue(s, 1, T0 + LEASE, GRACE)).thenNothing();
    r.when((s) => decideRequeue(s, 1, T0 + LEASE + GRACE - 1, GRACE)).thenNothing();
    // Another epoch's lapse says nothing about this one.
    r.when((s) => decideRequeue(s, 2, T0 + LEASE + GRACE, GRACE)).thenNothing();
    const requeue = r.when((s) => decideRequeue(s, 1, T0 + LEASE + GRACE, GRACE));
    requeue.thenEvents({ type: "GenerationRequeued", data: { epoch: 1n } });
    const q = r.given(...requeue.thenEvents({ type: "GenerationRequeued" }));
    expect(q.state.kind).toBe("queued");
    const again = q.given(...decideGrantLease(q.state, builtin("b"), T0 + LEASE + GRACE + 1, LEASE));
    expect(again.state).toMatchObject({ kind: "running", epoch: 2 });
    // The first producer is fenced out of the lifecycle.
    again.when((s) => decideRenew(s, 1, T0 + LEASE + GRACE + 2, LEASE)).thenThrows(StaleLeaseError);
    // A cancelled generation is never re-queued (the sweeper ends it cancelled).
    r.given(...decideCancel(r.state, "u1"))
      .when((s) => decideRequeue(s, 1, T0 + LEASE + GRACE, GRACE))
      .thenNothing();
  });

  it("the lifecycle copies the output's terminal once, whatever the lease says", () => {
    const outcome = {
      ...emptyOutcome(7),
      status: GenerationStatus.GENERATION_STATUS_FAILED,
      failureReason: FailureReason.FAILURE_REASON_PRODUCER_LOST,
    } as const;
    // Lapsed lease, or already re-queued: the terminal on the output decided, the lifecycle follows.
    for (const given of [running(), queued()]) {
      const settle = given.when((s) => decideSettle(s, outcome));
      settle.thenEvents({
        type: "GenerationFinished",
        data: { status: outcome.status, failureReason: outcome.failureReason, lastSequence: 7n },
      });
      expect(settle.state()).toMatchObject({ kind: "finished", outcome: { lastSequence: 7 } });
      given
        .given(...settle.thenEvents({ type: "GenerationFinished" }))
        .when((s) => decideSettle(s, { ...outcome, lastSequence: 9 }))
        .thenNothing();
    }
    spec
      .given()
      .when((s) => decideSettle(s, outcome))
      .thenThrows(NotFoundError);
  });

  it("cancel is idempotent: a request is recorded once, a finished generation ignores it", () => {
    const r = running();
    const cancel = r.when((s) => decideCancel(s, "u1"));
    const requested = r.given(
      ...cancel.thenEvents({ type: "GenerationCancelRequested", data: { requestedBy: "u1" } }),
    );
    expect(requested.state).toMatchObject({ kind: "running", cancelRequested: true });
    requested.when((s) => decideCancel(s, "u1")).thenNothing();
    const state = requested.state;
    if (state.kind === "none") throw new Error("expected a generation");
    expect(() => decideGrantLease({ ...state, kind: "queued" }, external("o1", "p"), T0, LEASE)).toThrow(
      /cancelled/,
    );
    r.given(...decideSettle(r.state, emptyOutcome(3)))
      .when((s) => decideCancel(s, "u1"))
      .thenNothing();
  });

  it("lease events use the epoch they were granted with", () => {
    queued()
      .when((s) => decideGrantLease(s, external("o1", "p"), T0, LEASE))
      .thenEvents({
        type: "GenerationLeaseGranted",
        data: { epoch: 1n, producer: "p", expiresAtMs: BigInt(T0 + LEASE) },
      });
  });

  it("an external producer claims only its own organisation's generations; foreign and unknown are NOT_FOUND", () => {
    const q = queued(); // of organisation o1
    q.when((s) => decideGrantLease(s, external("o2"), T0, LEASE)).thenThrows(NotFoundError);
    // An empty organisation never matches (a token without one serves nobody).
    queued("")
      .when((s) => decideGrantLease(s, external(""), T0, LEASE))
      .thenThrows(NotFoundError);
    spec
      .given()
      .when((s) => decideGrantLease(s, external("o1"), T0, LEASE))
      .thenThrows(NotFoundError);
    // Tenancy comes before lease state: a foreign running generation is NOT_FOUND, not "already taken".
    const r = running();
    const foreign = (() => {
      try {
        decideGrantLease(r.state, external("o2"), T0 + 1, LEASE);
      } catch (e) {
        return e;
      }
    })();
    expect(foreign).toBeInstanceOf(NotFoundError);
    expect(foreign).not.toBeInstanceOf(FailedPreconditionError);
    q.when((s) => decideGrantLease(s, external("o1"), T0, LEASE)).thenEvents({
      type: "GenerationLeaseGranted",
      data: { epoch: 1n, producer: "sa1" },
    });
    expect(canProduce(external("o2"), r.state)).toBe(false);
    expect(canProduce(external("o1"), r.state)).toBe(true);
  });

  it("built-in workers are platform-internal and serve every organisation", () => {
    for (const orgId of ["o1", "o2"]) {
      const q = queued(orgId);
      expect(canProduce(builtin("a"), q.state)).toBe(true);
      q.when((s) => decideGrantLease(s, builtin("a"), T0, LEASE)).thenEvents({
        type: "GenerationLeaseGranted",
        data: { producer: "builtin:a" },
      });
    }
    expect(canProduce(builtin("a"), generationReducer.initial())).toBe(false);
  });

  it("an event type this version does not know is skipped, not a crash", () => {
    const unknown = {
      type: "spool.generation.v1.GenerationRenamed",
      schemaVersion: 1,
      data: new Uint8Array([1]),
    };
    const q = queued();
    expect(q.given(unknown).state).toEqual(q.state);
  });
});
