import { ConcurrencyError, type EventStore, handleCommand, type Logger } from "@spool/kit";
import { GenerationStatus } from "@spool/proto/spool/generation/v1/generation.js";
import { Subjects } from "../domain/events.js";
import { decideExpire, generationReducer } from "../domain/generation.js";
import type { UserLimits } from "../limits/user-limits.js";
import type { GenerationsReadModel } from "../projections/generations.js";
import type { OutputLog } from "./output-log.js";

/**
 * No generation stays running forever: a lease that ran out (its producer
 * died or stalled) is settled here — re-queued when nothing was produced yet,
 * failed with PRODUCER_LOST otherwise, and the terminal event is written to
 * the output so followers end. Every replica sweeps; optimistic concurrency
 * on the lifecycle subject lets exactly one settle each generation.
 */
export class LeaseSweeper {
  readonly #o: {
    store: EventStore;
    output: OutputLog;
    generations: GenerationsReadModel;
    limits: UserLimits;
    logger: Logger;
    intervalMs: number;
  };
  #timer: NodeJS.Timeout | undefined;
  #tick: Promise<void> = Promise.resolve();

  constructor(options: {
    store: EventStore;
    output: OutputLog;
    generations: GenerationsReadModel;
    limits: UserLimits;
    logger: Logger;
    intervalMs: number;
  }) {
    this.#o = options;
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

  /** Settles every expired lease found now; returns how many it settled. */
  async sweep(nowMs = Date.now()): Promise<number> {
    let settled = 0;
    const expired = await this.#o.generations.expiredLeases();
    for (const { generation_id: id, owner_id: owner } of expired) {
      const at = await this.#o.output.position(id);
      const result = await handleCommand(this.#o.store, {
        subject: Subjects.generation(id),
        reducer: generationReducer,
        actor: "lease-sweeper",
        decide: (state) => decideExpire(state, nowMs, at.producedOutput, at.sequence + 1),
      });
      if (result.events.length === 0) continue;
      settled++;
      const g = result.state;
      if (g.kind !== "finished" || !g.outcome) continue; // re-queued: a worker picks it up
      const usage = g.outcome.usage;
      const event =
        g.outcome.status === GenerationStatus.GENERATION_STATUS_CANCELLED
          ? ({ $case: "cancelled", value: { usage } } as const)
          : ({
              $case: "failed",
              value: { reason: g.outcome.failureReason, message: g.outcome.failureMessage, usage },
            } as const);
      await this.#o.output.append(id, at, event, `terminal:${id}`).catch((e: unknown) => {
        if (!(e instanceof ConcurrencyError)) throw e;
      });
      await this.#o.limits.release(owner, id);
      this.#o.logger.warn({ generationId: id, status: g.outcome.status }, "expired lease settled");
    }
    return settled;
  }
}
