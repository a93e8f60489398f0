import {
  type EventOf,
  FailedPreconditionError,
  type NewEvent,
  NotFoundError,
  type Reducer,
  unreachable,
} from "@spool/kit";
import type { GenerationRequested as Requested } from "@spool/proto/spool/generation/v1/events.js";
import {
  FailureReason,
  GenerationStatus,
  type ToolCallRequested,
  type Usage,
} from "@spool/proto/spool/generation/v1/generation.js";
import {
  GenerationCancelRequested,
  GenerationEvents,
  GenerationFinished,
  GenerationLeaseGranted,
  GenerationLeaseRenewed,
  GenerationRequested,
  GenerationRequeued,
  Subjects,
} from "./events.js";

export interface Outcome {
  status:
    | GenerationStatus.GENERATION_STATUS_COMPLETED
    | GenerationStatus.GENERATION_STATUS_FAILED
    | GenerationStatus.GENERATION_STATUS_CANCELLED;
  failureReason: FailureReason;
  failureMessage: string;
  text: string;
  usage: Usage;
  toolCalls: ToolCallRequested[];
  lastSequence: number;
}

/** A generation's lifecycle, folded from its GEN subject. */
export type Generation =
  | { kind: "none" }
  | {
      kind: "queued" | "running" | "finished";
      request: Requested;
      createdAtMs: number;
      /** Epoch of the latest lease (0 before the first). */
      epoch: number;
      producer: string;
      leaseExpiresAtMs: number;
      cancelRequested: boolean;
      outcome: Outcome | undefined;
      finishedAtMs: number;
      /** Runs that failed transiently at the provider before any output and were re-queued (retry.ts). */
      providerAttempts: number;
      /** A re-queued generation is not claimed by built-in workers before this (backoff); 0 = at once. */
      retryAtMs: number;
    };

export type Existing = Exclude<Generation, { kind: "none" }>;

export type GenerationEvent = EventOf<typeof GenerationEvents>;

export const generationReducer: Reducer<Generation, GenerationEvent> = {
  initial: () => ({ kind: "none" }),
  decode: GenerationEvents.decode,
  evolve: (state, event) => evolveGeneration(state, event),
};

/** A generation's lifecycle aggregate: its subject and reducer, for aggregate(store, GenerationAggregate). */
export const GenerationAggregate = { subject: Subjects.generation, reducer: generationReducer };

export function evolveGeneration(state: Generation, event: GenerationEvent): Generation {
  if (event.type === "GenerationRequested") {
    if (state.kind !== "none") return state;
    return {
      kind: "queued",
      request: event.data,
      createdAtMs: event.meta.time.getTime(),
      epoch: 0,
      producer: "",
      leaseExpiresAtMs: 0,
      cancelRequested: false,
      outcome: undefined,
      finishedAtMs: 0,
      providerAttempts: 0,
      retryAtMs: 0,
    };
  }
  if (state.kind === "none") return state;
  switch (event.type) {
    case "GenerationLeaseGranted": {
      const e = event.data;
      return {
        ...state,
        kind: "running",
        epoch: Number(e.epoch),
        producer: e.producer,
        leaseExpiresAtMs: Number(e.expiresAtMs),
      };
    }
    case "GenerationLeaseRenewed": {
      const e = event.data;
      return Number(e.epoch) === state.epoch ? { ...state, leaseExpiresAtMs: Number(e.expiresAtMs) } : state;
    }
    case "GenerationRequeued": {
      const e = event.data;
      const providerFailure = e.failureReason !== FailureReason.FAILURE_REASON_UNSPECIFIED;
      return {
        ...state,
        kind: "queued",
        producer: "",
        leaseExpiresAtMs: 0,
        providerAttempts: providerFailure
          ? Math.max(state.providerAttempts, e.attempt)
          : state.providerAttempts,
        retryAtMs: providerFailure ? Number(e.retryAtMs) : 0,
      };
    }
    case "GenerationCancelRequested":
      return { ...state, cancelRequested: true };
    case "GenerationFinished": {
      const e = event.data;
      return {
        ...state,
        kind: "finished",
        finishedAtMs: event.meta.time.getTime(),
        outcome: {
          status: e.status as Outcome["status"],
          failureReason: e.failureReason,
          failureMessage: e.failureMessage,
          text: e.text,
          usage: e.usage ?? { promptTokens: 0n, completionTokens: 0n },
          toolCalls: e.toolCalls,
          lastSequence: Number(e.lastSequence),
        },
      };
    }
    case "unknown":
      return state;
    default:
      return unreachable(event);
  }
}

/** A producer's lease no longer holds: another took over, it expired, or the generation ended. */
export class StaleLeaseError extends FailedPreconditionError {
  constructor(message = "the lease is no longer held (another producer took over, or it expired)") {
    super(message);
  }
}

export function decideRequest(state: Generation, request: Requested): NewEvent[] {
  return state.kind === "none" ? [GenerationRequested.create(request)] : [];
}

/**
 * Who produces a generation. Built-in workers are platform-internal and serve
 * every organisation; an external producer (a service account with
 * gen:produce) serves only the organisation its verified token names.
 */
export type Producer = { kind: "platform"; id: string } | { kind: "organisation"; id: string; orgId: string };

/** Whether the producer may see, claim and append to the generation: tenancy first, before any lease rule. */
export function canProduce(producer: Producer, g: Generation): g is Existing {
  if (g.kind === "none") return false;
  if (producer.kind === "platform") return true;
  return producer.orgId !== "" && producer.orgId === g.request.orgId;
}

/** Unknown and foreign generations look the same to a producer, so ids reveal nothing. */
export function assertCanProduce(producer: Producer, g: Generation): asserts g is Existing {
  if (!canProduce(producer, g)) throw new NotFoundError("generation not found");
}

/**
 * Grants the next epoch to a producer; only a queued generation of an
 * organisation the producer serves can be claimed (anything else of another
 * organisation, or unknown, is NOT_FOUND).
 */
export function decideGrantLease(
  state: Generation,
  producer: Producer,
  nowMs: number,
  leaseMs: number,
): NewEvent[] {
  assertCanProduce(producer, state);
  if (state.kind !== "queued")
    throw new FailedPreconditionError("the generation is not waiting for a producer");
  if (state.cancelRequested) throw new FailedPreconditionError("the generation is being cancelled");
  return [
    GenerationLeaseGranted.create({
      epoch: BigInt(state.epoch + 1),
      producer: producer.id,
      expiresAtMs: BigInt(nowMs + leaseMs),
    }),
  ];
}

export function assertLease(state: Generation, epoch: number, nowMs: number): asserts state is Existing {
  if (state.kind !== "running" || state.epoch !== epoch || nowMs >= state.leaseExpiresAtMs)
    throw new StaleLeaseError();
}

export function decideRenew(state: Generation, epoch: number, nowMs: number, leaseMs: number): NewEvent[] {
  assertLease(state, epoch, nowMs);
  return [GenerationLeaseRenewed.create({ epoch: BigInt(epoch), expiresAtMs: BigInt(nowMs + leaseMs) })];
}

/**
 * Records a cancel request of a running generation (idempotent): its
 * producer stops and writes the terminal `cancelled` event (or the sweeper
 * does, should its lease lapse), and it can no longer be re-queued. A queued
 * one is ended by the canceller through its output, which records this
 * request together with the finish (see `decideSettle`).
 */
export function decideCancel(state: Generation, requestedBy: string): NewEvent[] {
  if (state.kind === "none" || state.kind === "finished" || state.cancelRequested) return [];
  return [GenerationCancelRequested.create({ requestedBy })];
}

/**
 * Ends the lifecycle as the output's terminal event says. The output terminal
 * is the decision (whoever placed it first, under the output subject's
 * sequence, won; any other writer is fenced by it), so this is no longer
 * subject to a lease: it only copies that decision, once. Whoever finds an
 * output terminal without a lifecycle finish completes it, so a crash between
 * the two appends is repaired.
 */
export function decideSettle(state: Generation, outcome: Outcome): NewEvent[] {
  if (state.kind === "none") throw new NotFoundError("generation not found");
  if (state.kind === "finished") return [];
  return [finished(outcome)];
}

/**
 * Whether the lease of `epoch` ran out more than `graceMs` ago. The grace is
 * longer than the margin producers keep before their own expiry, so a
 * producer frozen at its lease's edge has stopped by its own clock before
 * anyone settles its generation.
 */
export function leaseLapsed(state: Generation, epoch: number, nowMs: number, graceMs: number): boolean {
  return state.kind === "running" && state.epoch === epoch && nowMs >= state.leaseExpiresAtMs + graceMs;
}

/**
 * A lease that lapsed before any output (and with no cancel requested): the
 * generation is queued again for the next producer. Otherwise the sweeper
 * ends it through the output (failed PRODUCER_LOST, or cancelled): a
 * follower must not see a second, different text.
 */
export function decideRequeue(state: Generation, epoch: number, nowMs: number, graceMs: number): NewEvent[] {
  if (state.kind !== "running" || state.cancelRequested || !leaseLapsed(state, epoch, nowMs, graceMs))
    return [];
  return [
    GenerationRequeued.create({
      epoch: BigInt(epoch),
      reason: "lease expired before output",
      failureReason: FailureReason.FAILURE_REASON_UNSPECIFIED,
      attempt: 0,
      retryAtMs: 0n,
    }),
  ];
}

export function emptyOutcome(lastSequence: number): Outcome {
  return {
    status: GenerationStatus.GENERATION_STATUS_COMPLETED,
    failureReason: FailureReason.FAILURE_REASON_UNSPECIFIED,
    failureMessage: "",
    text: "",
    usage: { promptTokens: 0n, completionTokens: 0n },
    toolCalls: [],
    lastSequence,
  };
}

function finished(o: Outcome): NewEvent {
  return GenerationFinished.create({
    status: o.status,
    failureReason: o.failureReason,
    failureMessage: o.failureMessage,
    text: o.text,
    usage: o.usage,
    toolCalls: o.toolCalls,
    lastSequence: BigInt(o.lastSequence),
  });
}
