import { aggregate, type EventStore, type Logger } from "@spool/kit";
import { FailureReason, GenerationStatus } from "@spool/proto/spool/generation/v1/generation.js";
import { decideRequeue, GenerationAggregate, leaseLapsed } from "../domain/generation.js";
import type { UserLimits } from "../limits/user-limits.js";
import type { GenerationsReadModel } from "../projections/generations.js";
import { type Clock, systemClock } from "./clock.js";
import { releaseSlot, settleThroughOutput, terminalEvent } from "./finish.js";
import type { OutputLog } from "./output-log.js";

export type Settled = "requeued" | "finished" | undefined;

/**
 * No generation stays running forever: a lease that lapsed (its producer
 * died or stalled) more than `graceMs` ago is settled here — re-queued when
 * nothing was produced yet, ended otherwise (failed PRODUCER_LOST, or
 * cancelled if a cancel was requested) through the output first, so
 * followers end and the lifecycle agrees with what they saw (finish.ts).
 * Every replica sweeps; the output's and the lifecycle's
 * optimistic concurrency let exactly one terminal event through.
 */
export class LeaseSweeper {
  readonly #o: {
    store: EventStore;
    output: OutputLog;
    generations: Pick<GenerationsReadModel, "expiredLeases">;
    limits: Pick<UserLimits, "release">;
    logger: Logger;
    intervalMs: number;
    /** How long past a lease's expiry before it is settled; longer than producers' safety margin. */
    graceMs: number;
    clock: Clock;
  };
  #timer: NodeJS.Timeout | undefined;
  #tick: Promise<void> = Promise.resolve();

  constructor(options: {
    store: EventStore;
    output: OutputLog;
    generations: Pick<GenerationsReadModel, "expiredLeases">;
    limits: Pick<UserLimits, "release">;
    logger: Logger;
    intervalMs: number;
    graceMs: number;
    clock?: Clock;
  }) {
    this.#o = { ...options, clock: options.clock ?? systemClock };
  }

  start(): void {
    this.#timer = setInterval(() => {
      this.#tick = this.#tick
        .then(async () => void (await this.sweep()))
        .catch((e: unknown) => {
          this.#o.logger.warn({ err: e }, "lease sweep failed");
        });
    }, this.#o.intervalMs);
    this.#timer.unref();
  }

  async stop(): Promise<void> {
    clearInterval(this.#timer);
    await this.#tick;
  }

  /** Settles every lapsed lease found now; returns how many it settled. */
  async sweep(): Promise<number> {
    let settled = 0;
    for (const { generation_id: id, owner_id: owner } of await this.#o.generations.expiredLeases()) {
      try {
        const result = await this.settle(id);
        if (!result) continue;
        settled++;
        if (result === "finished") await releaseSlot(this.#o.limits, owner, id);
        this.#o.logger.warn({ generationId: id, result }, "expired lease settled");
      } catch (e) {
        // One generation's trouble (NATS away, a conflict storm) must not stop the others; next sweep retries.
        this.#o.logger.warn({ err: e, generationId: id }, "could not settle a lapsed lease");
      }
    }
    return settled;
  }

  /**
   * Settles one generation if its lease lapsed more than the grace ago by
   * this replica's clock; otherwise does nothing.
   */
  async settle(generationId: string, nowMs = this.#o.clock.wallMs()): Promise<Settled> {
    const { store, output } = this.#o;
    const generations = aggregate(store, GenerationAggregate);
    const { state } = await generations.load(generationId);
    if (state.kind !== "running" || !leaseLapsed(state, state.epoch, nowMs, this.#o.graceMs))
      return undefined;
    const epoch = state.epoch;
    const at = await output.position(generationId);
    // A newer producer started since the lifecycle was read: nothing lapsed.
    if (at.epoch > epoch) return undefined;
    if (!at.terminal && !at.producedOutput && !state.cancelRequested) {
      const r = await generations.handle(
        generationId,
        (current) => decideRequeue(current, epoch, nowMs, this.#o.graceMs),
        { actor: "lease-sweeper" },
      );
      // Should an in-flight append of the lapsed producer land after this, the next claim fails it (producer.ts).
      return r.events.length > 0 ? "requeued" : undefined;
    }
    await settleThroughOutput(
      { store, output },
      generationId,
      state.request,
      (current) =>
        state.cancelRequested
          ? terminalEvent(GenerationStatus.GENERATION_STATUS_CANCELLED, current.usage)
          : terminalEvent(GenerationStatus.GENERATION_STATUS_FAILED, current.usage, {
              reason: FailureReason.FAILURE_REASON_PRODUCER_LOST,
              message: "the producer stopped renewing its lease",
            }),
      { name: "sweep", actor: "lease-sweeper" },
    );
    return "finished";
  }
}
