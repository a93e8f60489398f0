import { ConcurrencyError, type EventStore, handleCommand, NotFoundError } from "@spool/kit";
import {
  FailureReason,
  GenerationStatus,
  type ToolCallRequested,
  type Usage,
} from "@spool/proto/spool/generation/v1/generation.js";
import { Subjects } from "../domain/events.js";
import {
  assertCanProduce,
  decideFinish,
  decideGrantLease,
  decideRenew,
  type Existing,
  generationReducer,
  type Outcome,
  type Producer,
  StaleLeaseError,
} from "../domain/generation.js";
import type { OutputLog, OutputPosition } from "./output-log.js";

/** Ids as Generations issues them; anything else (dots, wildcards) must never reach a subject. */
const GENERATION_ID = /^[A-Za-z0-9_-]{1,128}$/;

function checkId(generationId: string): void {
  if (!GENERATION_ID.test(generationId)) throw new NotFoundError("generation not found");
}

export interface LeasePolicy {
  /** How long a lease lasts unless renewed. */
  leaseMs: number;
}

/**
 * A producer's hold on one generation: a lease (epoch) on its lifecycle
 * subject and the position of its output subject. Every output append is
 * fenced by the output subject's sequence; the terminal event is fenced by the
 * lease. Whoever claims after this producer appends first, so this producer's
 * next append fails with StaleLeaseError.
 */
export class ProducerSession {
  readonly generationId: string;
  readonly epoch: number;
  readonly generation: Existing;
  #position: OutputPosition;
  #usage: Usage = { promptTokens: 0n, completionTokens: 0n };
  readonly #toolCalls: ToolCallRequested[] = [];
  readonly #store: EventStore;
  readonly #output: OutputLog;
  readonly #policy: LeasePolicy;
  #finished = false;

  private constructor(
    deps: { store: EventStore; output: OutputLog; policy: LeasePolicy },
    generation: Existing,
    position: OutputPosition,
  ) {
    this.#store = deps.store;
    this.#output = deps.output;
    this.#policy = deps.policy;
    this.generation = generation;
    this.generationId = generation.request.generationId;
    this.epoch = generation.epoch;
    this.#position = position;
  }

  /**
   * Takes the lease (the next epoch, atomically: two claimants cannot both
   * win) and writes `started` with it to the output subject, which fences out
   * any earlier producer. A generation of an organisation the producer does
   * not serve is NOT_FOUND, like an unknown one.
   */
  static async claim(
    deps: { store: EventStore; output: OutputLog; policy: LeasePolicy },
    generationId: string,
    producer: Producer,
  ): Promise<ProducerSession> {
    checkId(generationId);
    const result = await handleCommand(deps.store, {
      subject: Subjects.generation(generationId),
      reducer: generationReducer,
      actor: producer.id,
      maxAttempts: 1,
      decide: (state) => decideGrantLease(state, producer, Date.now(), deps.policy.leaseMs),
    });
    const generation = result.state;
    if (generation.kind !== "running") throw new StaleLeaseError();
    for (;;) {
      const at = await deps.output.position(generationId);
      try {
        const position = await deps.output.append(generationId, at, {
          $case: "started",
          value: { epoch: BigInt(generation.epoch), producer: producer.id },
        });
        return new ProducerSession(deps, generation, position);
      } catch (e) {
        // The previous producer slipped an append in before seeing the new lease: start after it.
        if (!(e instanceof ConcurrencyError)) throw e;
      }
    }
  }

  /**
   * Picks up a lease granted earlier (an external producer's stream, possibly
   * on another replica): only the holder of the current, unexpired epoch,
   * and never a generation of an organisation the producer does not serve.
   */
  static async resume(
    deps: { store: EventStore; output: OutputLog; policy: LeasePolicy },
    generationId: string,
    epoch: number,
    producer: Producer,
  ): Promise<ProducerSession> {
    checkId(generationId);
    const { state } = await deps.store.load(Subjects.generation(generationId), generationReducer);
    assertCanProduce(producer, state);
    if (
      state.kind !== "running" ||
      state.epoch !== epoch ||
      state.producer !== producer.id ||
      Date.now() >= state.leaseExpiresAtMs
    ) {
      throw new StaleLeaseError();
    }
    return new ProducerSession(deps, state, await deps.output.position(generationId));
  }

  get position(): OutputPosition {
    return this.#position;
  }

  get finished(): boolean {
    return this.#finished;
  }

  async #append(event: Parameters<OutputLog["append"]>[2]): Promise<number> {
    if (this.#finished) throw new StaleLeaseError("the generation has finished");
    try {
      this.#position = await this.#output.append(this.generationId, this.#position, event);
      return this.#position.sequence;
    } catch (e) {
      if (e instanceof ConcurrencyError) throw new StaleLeaseError();
      throw e;
    }
  }

  delta(text: string): Promise<number> {
    return this.#append({ $case: "delta", value: { text } });
  }

  toolCall(call: ToolCallRequested): Promise<number> {
    this.#toolCalls.push(call);
    return this.#append({ $case: "toolCall", value: call });
  }

  usage(usage: Usage): Promise<number> {
    this.#usage = usage;
    return this.#append({ $case: "usage", value: { usage } });
  }

  /** Extends the lease; StaleLeaseError when it is no longer ours. */
  async renew(): Promise<number> {
    const r = await handleCommand(this.#store, {
      subject: Subjects.generation(this.generationId),
      reducer: generationReducer,
      maxAttempts: 5,
      decide: (state) => decideRenew(state, this.epoch, Date.now(), this.#policy.leaseMs),
    });
    return r.state.kind === "none" ? 0 : r.state.leaseExpiresAtMs;
  }

  complete(): Promise<void> {
    return this.#finish({
      status: GenerationStatus.GENERATION_STATUS_COMPLETED,
      failureReason: FailureReason.FAILURE_REASON_UNSPECIFIED,
      failureMessage: "",
    });
  }

  fail(reason: FailureReason, message: string): Promise<void> {
    return this.#finish({
      status: GenerationStatus.GENERATION_STATUS_FAILED,
      failureReason: reason,
      failureMessage: message.slice(0, 1000),
    });
  }

  cancelled(): Promise<void> {
    return this.#finish({
      status: GenerationStatus.GENERATION_STATUS_CANCELLED,
      failureReason: FailureReason.FAILURE_REASON_UNSPECIFIED,
      failureMessage: "",
    });
  }

  /**
   * The terminal event, twice: on the lifecycle subject under the lease (kept
   * for good, with the transcript), then on the output subject (followers end
   * there). The message id makes a retried output append land once.
   */
  async #finish(o: Pick<Outcome, "status" | "failureReason" | "failureMessage">): Promise<void> {
    if (this.#finished) return;
    const outcome: Outcome = {
      ...o,
      text: this.#position.text,
      usage: this.#usage,
      toolCalls: this.#toolCalls,
      lastSequence: this.#position.sequence + 1,
    };
    await handleCommand(this.#store, {
      subject: Subjects.generation(this.generationId),
      reducer: generationReducer,
      maxAttempts: 5,
      decide: (state) => decideFinish(state, this.epoch, Date.now(), outcome),
    });
    this.#finished = true;
    const event =
      o.status === GenerationStatus.GENERATION_STATUS_COMPLETED
        ? ({ $case: "completed", value: { usage: this.#usage } } as const)
        : o.status === GenerationStatus.GENERATION_STATUS_CANCELLED
          ? ({ $case: "cancelled", value: { usage: this.#usage } } as const)
          : ({
              $case: "failed",
              value: { reason: o.failureReason, message: o.failureMessage, usage: this.#usage },
            } as const);
    this.#position = await this.#output.append(
      this.generationId,
      this.#position,
      event,
      `terminal:${this.generationId}`,
    );
  }
}
