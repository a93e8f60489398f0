import {
  aggregate,
  ConcurrencyError,
  type EventStore,
  FailedPreconditionError,
  isTransientNatsError,
  NotFoundError,
  UnavailableError,
} from "@spool/kit";
import {
  FailureReason,
  GenerationStatus,
  type ToolCallRequested,
  type Usage,
} from "@spool/proto/spool/generation/v1/generation.js";
import {
  assertCanProduce,
  decideGrantLease,
  decideRenew,
  type Existing,
  GenerationAggregate,
  type Outcome,
  type Producer,
  StaleLeaseError,
} from "../domain/generation.js";
import { decideProviderRequeue, type ProviderFailure } from "../domain/retry.js";
import { type Clock, systemClock } from "./clock.js";
import { completeLifecycle, hasTerminal, terminalEvent } from "./finish.js";
import { EMPTY_POSITION, type EventBody, type OutputLog, type OutputPosition } from "./output-log.js";

/** Ids as Generations issues them; anything else (dots, wildcards) must never reach a subject. */
const GENERATION_ID = /^[A-Za-z0-9_-]{1,128}$/;

function checkId(generationId: string): void {
  if (!GENERATION_ID.test(generationId)) throw new NotFoundError("generation not found");
}

export interface LeasePolicy {
  /** How long a lease lasts unless renewed. */
  leaseMs: number;
  /**
   * A producer appends nothing once its lease has less than this left by its
   * own clock. The lease sweeper waits longer than this past expiry
   * (LeaseSweeper's graceMs), so a producer frozen at its lease's edge has
   * stopped before its generation is settled.
   */
  safetyMarginMs: number;
  clock?: Clock;
}

type Deps = { store: EventStore; output: OutputLog; policy: LeasePolicy };

/** NATS away for now (timeout, reconnecting, no responders, a read cut short): worth another try. */
function retryable(e: unknown): boolean {
  return isTransientNatsError(e) || e instanceof UnavailableError;
}

/** Backoff between retries of a transient NATS error (doubling from 50 ms, at most 1 s, with jitter). */
function backoffMs(attempt: number): number {
  return Math.min(1_000, 50 * 2 ** attempt) * (0.5 + Math.random() / 2);
}

/**
 * A producer's hold on one generation: a lease (epoch) on its lifecycle
 * subject and the position of its output subject. Fenced twice:
 *
 * - by time: before every output append (and every retry of one) the lease
 *   must have `safetyMarginMs` left on this process's monotonic clock, counted
 *   from before the grant or renewal was requested;
 * - by the output subject: every append names the position this producer
 *   holds, so once anyone else appended (a new holder's `started`, a terminal
 *   event) its next append conflicts and it stops (StaleLeaseError).
 *
 * A transient NATS error (timeout, disconnection, no responders) is retried
 * with backoff for as long as the lease lasts; only a lost or lapsed lease
 * stops the producer.
 */
export class ProducerSession {
  readonly generationId: string;
  readonly epoch: number;
  readonly generation: Existing;
  #position: OutputPosition = EMPTY_POSITION;
  #usage: Usage = { promptTokens: 0n, completionTokens: 0n };
  readonly #store: EventStore;
  readonly #output: OutputLog;
  readonly #policy: LeasePolicy;
  readonly #clock: Clock;
  /** When the lease runs out, on the monotonic clock (never later than the lifecycle says). */
  #deadline: number;
  #finished = false;
  #requeued = false;

  private constructor(deps: Deps, generation: Existing, deadline: number) {
    this.#store = deps.store;
    this.#output = deps.output;
    this.#policy = deps.policy;
    this.#clock = deps.policy.clock ?? systemClock;
    this.generation = generation;
    this.generationId = generation.request.generationId;
    this.epoch = generation.epoch;
    this.#deadline = deadline;
  }

  /**
   * Takes the lease (the next epoch, atomically: two claimants cannot both
   * win) and writes `started` with it to the output subject, which fences out
   * any earlier producer. A generation of an organisation the producer does
   * not serve is NOT_FOUND, like an unknown one. If the output already holds
   * a terminal event (an earlier producer finished after its lease lapsed),
   * the generation is finished from it; if it holds output of an earlier
   * producer (one that lost its lease while an append was in flight), it
   * fails as PRODUCER_LOST rather than show followers a second text. Either
   * way the claim then fails with FAILED_PRECONDITION.
   */
  static async claim(deps: Deps, generationId: string, producer: Producer): Promise<ProducerSession> {
    checkId(generationId);
    const clock = deps.policy.clock ?? systemClock;
    // Measured before the grant is decided: the lease ends no earlier than this plus its length.
    const asked = clock.monoMs();
    const result = await aggregate(deps.store, GenerationAggregate).handle(
      generationId,
      (state) => decideGrantLease(state, producer, clock.wallMs(), deps.policy.leaseMs),
      { actor: producer.id, maxAttempts: 1 },
    );
    const generation = result.state;
    if (generation.kind !== "running") throw new StaleLeaseError();
    const session = new ProducerSession(deps, generation, asked + deps.policy.leaseMs);
    await session.#open();
    return session;
  }

  /**
   * Picks up a lease granted earlier (an external producer's stream, possibly
   * on another replica): only the holder of the current, unexpired epoch,
   * and never a generation of an organisation the producer does not serve.
   */
  static async resume(
    deps: Deps,
    generationId: string,
    epoch: number,
    producer: Producer,
  ): Promise<ProducerSession> {
    checkId(generationId);
    const clock = deps.policy.clock ?? systemClock;
    const { state } = await aggregate(deps.store, GenerationAggregate).load(generationId);
    assertCanProduce(producer, state);
    const left = state.leaseExpiresAtMs - clock.wallMs();
    if (state.kind !== "running" || state.epoch !== epoch || state.producer !== producer.id || left <= 0) {
      throw new StaleLeaseError();
    }
    const session = new ProducerSession(deps, state, clock.monoMs() + left);
    session.#position = await session.#retrying(() => deps.output.position(generationId));
    if (hasTerminal(session.#position)) {
      // Settled already (by the sweeper, or this producer's own finish whose lifecycle step was lost).
      await session.#adopt();
      throw new StaleLeaseError("the generation has finished");
    }
    if (session.#position.epoch !== epoch) throw new StaleLeaseError();
    session.#usage = session.#position.usage; // as reported on an earlier stream of this lease
    return session;
  }

  get position(): OutputPosition {
    return this.#position;
  }

  get finished(): boolean {
    return this.#finished;
  }

  /** Milliseconds of lease left on this process's clock (negative once it ran out). */
  get leaseLeftMs(): number {
    return this.#deadline - this.#clock.monoMs();
  }

  /** `created` if missing, then `started` with this epoch, after whatever the output holds. */
  async #open(): Promise<void> {
    const id = this.generationId;
    for (;;) {
      const at = await this.#retrying(() => this.#output.position(id));
      this.#position = at;
      if (hasTerminal(at)) {
        await this.#adopt();
        throw new FailedPreconditionError("the generation has finished");
      }
      if (at.sequence === 0) {
        await this.#retrying(() => this.#output.ensureCreated(id, this.generation.request));
        continue;
      }
      if (at.producedOutput) {
        await this.fail(
          FailureReason.FAILURE_REASON_PRODUCER_LOST,
          "a producer that lost its lease wrote output after the generation was re-queued",
        );
        throw new FailedPreconditionError("the generation has finished");
      }
      try {
        this.#position = await this.#retrying(() =>
          this.#output.append(
            id,
            at,
            { $case: "started", value: { epoch: BigInt(this.epoch), producer: this.generation.producer } },
            `started:${id}:${this.epoch}`,
          ),
        );
        return;
      } catch (e) {
        // An earlier producer's in-flight append landed first: look again.
        if (!(e instanceof ConcurrencyError)) throw e;
      }
    }
  }

  /** StaleLeaseError unless the lease has more than `marginMs` left by this process's clock. */
  #checkLease(marginMs: number): void {
    if (this.#finished) throw new StaleLeaseError("the generation has finished");
    if (this.#requeued) throw new StaleLeaseError("the generation was re-queued");
    if (this.leaseLeftMs <= marginMs) throw new StaleLeaseError("the lease ran out");
  }

  /**
   * Runs a NATS step, retrying transient errors with backoff while the lease
   * lasts; the lease is checked before every attempt.
   */
  async #retrying<T>(step: () => Promise<T>, marginMs = this.#policy.safetyMarginMs): Promise<T> {
    for (let attempt = 0; ; attempt++) {
      this.#checkLease(marginMs);
      try {
        return await step();
      } catch (e) {
        if (!retryable(e)) throw e;
        const left = this.leaseLeftMs - marginMs;
        if (left <= 0) throw new StaleLeaseError("the lease ran out while NATS was unavailable");
        await new Promise((r) => setTimeout(r, Math.min(backoffMs(attempt), left)));
      }
    }
  }

  /** The output already ends with a terminal event: the lifecycle follows it, and this producer is done. */
  async #adopt(): Promise<void> {
    const at = this.#position;
    this.#finished = true;
    if (hasTerminal(at)) await completeLifecycle(this.#store, this.generationId, at, "producer");
  }

  async #append(event: EventBody): Promise<number> {
    const at = this.#position;
    // Names this producer's epoch and the position: a retry after a lost ack is recognised as this event.
    const messageId = `out:${this.generationId}:${this.epoch}:${at.sequence + 1}`;
    try {
      this.#position = await this.#retrying(() =>
        this.#output.append(this.generationId, at, event, messageId),
      );
      return this.#position.sequence;
    } catch (e) {
      if (!(e instanceof ConcurrencyError)) throw e;
    }
    // Someone else appended: a new holder's `started`, or a terminal event (which ends it for us too).
    const now = await this.#output.position(this.generationId).catch(() => undefined);
    if (now && hasTerminal(now)) {
      this.#position = now;
      await this.#adopt().catch(() => {}); // the sweeper completes the lifecycle otherwise
    }
    throw new StaleLeaseError();
  }

  delta(text: string): Promise<number> {
    return this.#append({ $case: "delta", value: { text } });
  }

  toolCall(call: ToolCallRequested): Promise<number> {
    return this.#append({ $case: "toolCall", value: call });
  }

  usage(usage: Usage): Promise<number> {
    this.#usage = usage;
    return this.#append({ $case: "usage", value: { usage } });
  }

  /**
   * Extends the lease; StaleLeaseError when it is no longer ours or ran out.
   * Transient errors are retried up to the lease's end (the lifecycle's
   * optimistic concurrency, not this clock, decides whether it still holds).
   */
  async renew(): Promise<number> {
    return this.#retrying(async () => {
      const asked = this.#clock.monoMs();
      const r = await aggregate(this.#store, GenerationAggregate).handle(
        this.generationId,
        (state) => decideRenew(state, this.epoch, this.#clock.wallMs(), this.#policy.leaseMs),
        { maxAttempts: 5 },
      );
      this.#deadline = asked + this.#policy.leaseMs;
      return r.state.kind === "none" ? 0 : r.state.leaseExpiresAtMs;
    }, 0);
  }

  /**
   * Gives the generation back to the queue after the provider failed
   * transiently before any output (domain/retry.ts); the next claim writes a
   * new `started` that fences this session's output position. False when a
   * cancel request came first: nothing was re-queued and the caller ends the
   * generation as cancelled. StaleLeaseError when the lease is no longer ours.
   */
  async requeue(attempt: number, failure: ProviderFailure, retryAtMs: number): Promise<boolean> {
    if (this.#finished || this.#requeued) throw new StaleLeaseError("the generation has finished");
    if (this.#position.producedOutput) throw new Error("a generation with output cannot be re-queued");
    const r = await this.#retrying(
      () =>
        aggregate(this.#store, GenerationAggregate).handle(
          this.generationId,
          (state) => decideProviderRequeue(state, this.epoch, attempt, failure, retryAtMs),
          { actor: this.generation.producer, maxAttempts: 5 },
        ),
      0,
    );
    if (r.events.length === 0) return false;
    this.#requeued = true;
    return true;
  }

  /** Given back to the queue (requeue): this session appends nothing more. */
  get requeued(): boolean {
    return this.#requeued;
  }

  complete(): Promise<void> {
    return this.#finish(GenerationStatus.GENERATION_STATUS_COMPLETED);
  }

  fail(reason: FailureReason, message: string): Promise<void> {
    return this.#finish(GenerationStatus.GENERATION_STATUS_FAILED, {
      reason,
      message: message.slice(0, 1000),
    });
  }

  cancelled(): Promise<void> {
    return this.#finish(GenerationStatus.GENERATION_STATUS_CANCELLED);
  }

  /**
   * The terminal event: on the output first, under the lease and at this
   * producer's position (see finish.ts); then the lifecycle copies it. If
   * another writer's terminal is there first, this producer adopts it and
   * fails with StaleLeaseError: its own ending did not happen.
   */
  async #finish(
    status: Outcome["status"],
    failure?: { reason: FailureReason; message: string },
  ): Promise<void> {
    if (this.#finished) return;
    await this.#append(terminalEvent(status, this.#usage, failure));
    this.#finished = true;
    const at = this.#position;
    if (!hasTerminal(at)) throw new Error("a terminal event was appended but not recorded");
    // The output decided; copying it to the lifecycle is not bound to the lease (the sweeper does it otherwise).
    for (let attempt = 0; ; attempt++) {
      try {
        await completeLifecycle(this.#store, this.generationId, at, "producer");
        return;
      } catch (e) {
        if (!retryable(e) || attempt >= 10) throw e;
        await new Promise((r) => setTimeout(r, backoffMs(attempt)));
      }
    }
  }
}
