import { FailedPreconditionError, type NewEvent, NotFoundError, type RecordedEvent } from "@spool/kit";
import { FailureReason, GenerationStatus } from "@spool/proto/spool/generation/v1/generation.js";
import { describe, expect, it } from "vitest";
import { GenerationLeaseGranted, GenerationRequeued } from "./events.js";
import {
  canProduce,
  decideCancel,
  decideGrantLease,
  decideRenew,
  decideRequest,
  decideRequeue,
  decideSettle,
  emptyOutcome,
  evolveGeneration,
  type Generation,
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
  messages: [{ role: "user", content: "hi" }],
  parameters: undefined,
  toolIds: [],
  fileIds: [],
  conversationId: "",
};

function apply(state: Generation, events: NewEvent[], at = T0): Generation {
  return events.reduce(
    (s, e, index) =>
      evolveGeneration(s, {
        stream: "GEN",
        subject: "gen.generation.g1",
        streamSequence: 1,
        index,
        type: e.type,
        schemaVersion: 1,
        eventId: "",
        data: e.data,
        time: new Date(at),
        correlationId: undefined,
        causationId: undefined,
        actor: undefined,
      } satisfies RecordedEvent),
    state,
  );
}

const queued = (orgId = request.orgId) =>
  apply(generationReducer.initial(), decideRequest(generationReducer.initial(), { ...request, orgId }));
const running = () => {
  const q = queued();
  return apply(q, decideGrantLease(q, builtin("a"), T0, LEASE));
};

describe("generation lifecycle", () => {
  it("a request creates it once", () => {
    const q = queued();
    expect(q.kind).toBe("queued");
    expect(decideRequest(q, request)).toEqual([]);
  });

  it("claiming grants the next epoch; a running generation cannot be claimed again", () => {
    const r = running();
    expect(r).toMatchObject({ kind: "running", epoch: 1, producer: "builtin:a" });
    expect(() => decideGrantLease(r, builtin("b"), T0 + 1, LEASE)).toThrow(/not waiting/);
  });

  it("a stale epoch or an expired lease cannot renew", () => {
    const r = running();
    expect(() => decideRenew(r, 2, T0 + 1, LEASE)).toThrow(StaleLeaseError);
    expect(() => decideRenew(r, 1, T0 + LEASE, LEASE)).toThrow(StaleLeaseError);
    expect(decideRenew(r, 1, T0 + 1, LEASE)).toHaveLength(1);
  });

  it("a lease is re-queued only once it lapsed by more than the grace, and the next producer gets a higher epoch", () => {
    const r = running();
    const GRACE = 2_000;
    expect(decideRequeue(r, 1, T0 + LEASE, GRACE)).toEqual([]);
    expect(decideRequeue(r, 1, T0 + LEASE + GRACE - 1, GRACE)).toEqual([]);
    // Another epoch's lapse says nothing about this one.
    expect(decideRequeue(r, 2, T0 + LEASE + GRACE, GRACE)).toEqual([]);
    const events = decideRequeue(r, 1, T0 + LEASE + GRACE, GRACE);
    expect(events.map((e) => e.type)).toEqual([GenerationRequeued.type]);
    const q = apply(r, events);
    expect(q.kind).toBe("queued");
    const again = apply(q, decideGrantLease(q, builtin("b"), T0 + LEASE + GRACE + 1, LEASE));
    expect(again).toMatchObject({ kind: "running", epoch: 2 });
    // The first producer is fenced out of the lifecycle.
    expect(() => decideRenew(again, 1, T0 + LEASE + GRACE + 2, LEASE)).toThrow(StaleLeaseError);
    // A cancelled generation is never re-queued (the sweeper ends it cancelled).
    const cancelled = apply(r, decideCancel(r, "u1"));
    expect(decideRequeue(cancelled, 1, T0 + LEASE + GRACE, GRACE)).toEqual([]);
  });

  it("the lifecycle copies the output's terminal once, whatever the lease says", () => {
    const outcome = {
      ...emptyOutcome(7),
      status: GenerationStatus.GENERATION_STATUS_FAILED,
      failureReason: FailureReason.FAILURE_REASON_PRODUCER_LOST,
    } as const;
    // Lapsed lease, or already re-queued: the terminal on the output decided, the lifecycle follows.
    for (const state of [running(), queued()]) {
      const f = apply(state, decideSettle(state, outcome));
      expect(f).toMatchObject({ kind: "finished", outcome: { lastSequence: 7 } });
      expect(decideSettle(f, { ...outcome, lastSequence: 9 })).toEqual([]);
    }
    expect(() => decideSettle(generationReducer.initial(), outcome)).toThrow(NotFoundError);
  });

  it("cancel is idempotent: a request is recorded once, a finished generation ignores it", () => {
    const r = running();
    const requested = apply(r, decideCancel(r, "u1"));
    expect(requested).toMatchObject({ kind: "running", cancelRequested: true });
    expect(decideCancel(requested, "u1")).toEqual([]);
    if (requested.kind === "none") throw new Error("expected a generation");
    expect(() => decideGrantLease({ ...requested, kind: "queued" }, external("o1", "p"), T0, LEASE)).toThrow(
      /cancelled/,
    );
    const done = apply(r, decideSettle(r, emptyOutcome(3)));
    expect(decideCancel(done, "u1")).toEqual([]);
  });

  it("lease events use the epoch they were granted with", () => {
    const [grant] = decideGrantLease(queued(), external("o1", "p"), T0, LEASE);
    expect(GenerationLeaseGranted.decode(grant!.data)).toMatchObject({
      epoch: 1n,
      producer: "p",
      expiresAtMs: BigInt(T0 + LEASE),
    });
  });

  it("an external producer claims only its own organisation's generations; foreign and unknown are NOT_FOUND", () => {
    const q = queued(); // of organisation o1
    expect(() => decideGrantLease(q, external("o2"), T0, LEASE)).toThrow(NotFoundError);
    // An empty organisation never matches (a token without one serves nobody).
    expect(() => decideGrantLease(queued(""), external(""), T0, LEASE)).toThrow(NotFoundError);
    expect(() => decideGrantLease(generationReducer.initial(), external("o1"), T0, LEASE)).toThrow(
      NotFoundError,
    );
    // Tenancy comes before lease state: a foreign running generation is NOT_FOUND, not "already taken".
    const r = running();
    const foreign = (() => {
      try {
        decideGrantLease(r, external("o2"), T0 + 1, LEASE);
      } catch (e) {
        return e;
      }
    })();
    expect(foreign).toBeInstanceOf(NotFoundError);
    expect(foreign).not.toBeInstanceOf(FailedPreconditionError);
    expect(decideGrantLease(q, external("o1"), T0, LEASE)).toHaveLength(1);
    expect(canProduce(external("o2"), r)).toBe(false);
    expect(canProduce(external("o1"), r)).toBe(true);
  });

  it("built-in workers are platform-internal and serve every organisation", () => {
    for (const orgId of ["o1", "o2"]) {
      const q = queued(orgId);
      expect(canProduce(builtin("a"), q)).toBe(true);
      expect(decideGrantLease(q, builtin("a"), T0, LEASE)).toHaveLength(1);
    }
    expect(canProduce(builtin("a"), generationReducer.initial())).toBe(false);
  });
});
