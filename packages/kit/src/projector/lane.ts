import { setTimeout as sleep } from "node:timers/promises";
import type { EventMessage, RecordedEvent } from "../events.js";
import type { Logger } from "../logger.js";
import { errorMessage, FencedError, HaltedError, HandlerFailure, isTransient } from "./errors.js";
import type { CommittedBatch, ProjectorMetrics } from "./types.js";

/**
 * Where a lane's batches land: a read model whose checkpoint moves in the same
 * atomic step as its rows (one SQL transaction, one Lua script).
 */
export interface Sink {
  /** Table version written; reported to hooks. */
  readonly version: number;
  /** True for the tables a rebuild is filling. */
  readonly rebuild: boolean;
  /**
   * Applies the events and moves the checkpoint from `from` to `last`, as one
   * atomic step. Throws HandlerFailure when the projection's code fails, and
   * FencedError when the stored checkpoint is not `from`.
   */
  commit(events: readonly RecordedEvent[], from: number, last: number): Promise<void>;
  /** Records the message as dead and moves the checkpoint from `from` to its sequence. */
  deadLetter(message: EventMessage, from: number, attempts: number, error: string): Promise<void>;
}

export interface LaneOptions {
  projection: string;
  sink: Sink;
  /** Last sequence already applied by the sink. */
  checkpoint: number;
  decode: (message: EventMessage) => RecordedEvent[];
  maxAttempts: number;
  strict: boolean;
  /** Aborts waits between retries (stop, loss of the writer role). */
  signal: AbortSignal;
  logger: Logger;
  metrics: ProjectorMetrics | undefined;
  onBatchCommitted: ((batch: CommittedBatch) => void | Promise<void>) | undefined;
  /** Called with each error that is retried without counting against the event. */
  onTransient: (e: unknown) => void;
}

const MAX_TRANSIENT_DELAY_MS = 5_000;

/**
 * Applies ordered messages to one sink: whole batches in one step; when a
 * batch fails, its messages one by one so the failing one is isolated and the
 * others still land; a message that fails maxAttempts times is dead-lettered
 * (or halts a strict projection). Those attempts follow each other at once:
 * the whole lane waits on them, and a handler that throws for an event
 * almost always throws again, so waiting between attempts would only stall
 * every later event (a second per poison event, paid again by each rebuild).
 * Outages are another matter: they are retried, with backoff, until they pass. Messages at or below the checkpoint are
 * skipped, which is what makes a redelivery harmless.
 */
export class Lane {
  #o: LaneOptions;
  checkpoint: number;

  constructor(options: LaneOptions) {
    this.#o = options;
    this.checkpoint = options.checkpoint;
  }

  get sink(): Sink {
    return this.#o.sink;
  }

  /** Points the lane at another sink (after a rebuild's swap) and its checkpoint. */
  retarget(sink: Sink, checkpoint: number): void {
    this.#o = { ...this.#o, sink };
    this.checkpoint = checkpoint;
  }

  async apply(messages: readonly EventMessage[]): Promise<void> {
    const fresh = messages.filter((m) => m.seq > this.checkpoint);
    if (fresh.length === 0) return;
    try {
      await this.#commit(fresh);
      return;
    } catch (e) {
      if (!(e instanceof HandlerFailure)) throw e;
      if (fresh.length > 1) {
        this.#o.logger.warn(
          { projection: this.#o.projection, err: e.cause, from: fresh[0]?.seq, to: fresh.at(-1)?.seq },
          "batch failed; applying its messages one by one",
        );
      }
    }
    for (const m of fresh) if (m.seq > this.checkpoint) await this.#applyAlone(m);
  }

  async #applyAlone(message: EventMessage): Promise<void> {
    let failure: unknown;
    for (let attempt = 1; attempt <= this.#o.maxAttempts; attempt++) {
      try {
        await this.#commit([message]);
        return;
      } catch (e) {
        if (!(e instanceof HandlerFailure)) throw e;
        failure = e.cause;
        this.#o.logger.warn(
          { projection: this.#o.projection, seq: message.seq, attempt, err: failure },
          "event failed",
        );
      }
    }
    if (this.#o.strict) throw new HaltedError(this.#o.projection, message.seq, failure);
    const error = errorMessage(failure);
    await this.#retryTransient(() =>
      this.#o.sink.deadLetter(message, this.checkpoint, this.#o.maxAttempts, error),
    );
    this.checkpoint = message.seq;
    this.#o.metrics?.deadLettered?.(this.#o.projection);
    this.#o.logger.error(
      { projection: this.#o.projection, seq: message.seq, attempts: this.#o.maxAttempts, error },
      "event dead-lettered; the projection moves on without it",
    );
  }

  async #commit(messages: readonly EventMessage[]): Promise<void> {
    let events: RecordedEvent[];
    try {
      events = messages.flatMap((m) => this.#o.decode(m));
    } catch (e) {
      throw new HandlerFailure(e);
    }
    const first = messages[0]?.seq ?? 0;
    const last = messages.at(-1)?.seq ?? 0;
    await this.#retryTransient(() => this.#o.sink.commit(events, this.checkpoint, last));
    this.checkpoint = last;
    const { sink } = this.#o;
    this.#o.metrics?.applied?.(this.#o.projection, events.length, sink.rebuild);
    await this.#o.onBatchCommitted?.({
      projection: this.#o.projection,
      version: sink.version,
      rebuild: sink.rebuild,
      messages: messages.length,
      events: events.length,
      firstSequence: first,
      lastSequence: last,
    });
  }

  /** Retries an outage of PostgreSQL/Redis until it passes (or the lane is stopped). */
  async #retryTransient(step: () => Promise<void>): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      try {
        await step();
        return;
      } catch (e) {
        if (e instanceof FencedError || !isTransient(e)) throw e;
        this.#o.onTransient(e);
        this.#o.logger.warn(
          { projection: this.#o.projection, err: e, attempt },
          "store unavailable; retrying",
        );
        await sleep(Math.min(200 * 2 ** attempt, MAX_TRANSIENT_DELAY_MS), undefined, {
          signal: this.#o.signal,
        });
      }
    }
  }
}
