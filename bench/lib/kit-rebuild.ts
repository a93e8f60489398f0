// The kit's projector feeding counter_totals from the stream the kit append
// wrote: first the initial catch-up (a fresh projection's live lane reads from
// sequence 1), then rebuild()s into the next table version from sequence 1
// while the current one keeps serving, each timed until the views swap. Every
// batch's rows and checkpoint commit in one transaction.
import {
  createLogger,
  createPool,
  DeadLetterStore,
  defineProjection,
  type EventStore,
  Projector,
  type Sql,
} from "@spool/kit";
import { sampleCpu } from "./cpu.js";
import { EVENT_STREAM } from "./kit-append.js";
import { type Measurement, measurement } from "./measure.js";
import {
  BatchFold,
  type CounterTotalsRow,
  counterTotalsDdl,
  selectCounterTotals,
  toCounterRows,
  upsertFold,
} from "./read-model.js";
import { type CounterRow, Incremented } from "./workload.js";

const SUBJECT_PREFIX = "ex.counter.";

/** The projection as a user of the kit writes a fast one: fold the batch, one multi-row upsert. */
export const counterTotalsProjection = defineProjection({
  name: "counter_totals",
  stream: EVENT_STREAM,
  tables: ["counter_totals"],
  async migrate(tx, tables) {
    await tx.unsafe(counterTotalsDdl(tables.counter_totals));
  },
  async applyBatch(tx, events, { tables }) {
    const fold = new BatchFold();
    for (const e of events) {
      if (Incremented.is(e))
        fold.add(e.subject.slice(SUBJECT_PREFIX.length), Incremented.decode(e.data).amount);
    }
    if (fold.size > 0) await upsertFold(tx, tables.counter_totals, fold);
  },
});

export interface KitProjectionOptions {
  store: EventStore;
  databaseUrl: string;
  /** Messages in the stream (one event each). */
  expected: number;
  batchSize: number;
}

interface Progress {
  batches: number;
  events: number;
  reached: PromiseWithResolvers<number>;
}

const progress = (): Progress => ({ batches: 0, events: 0, reached: Promise.withResolvers<number>() });
const average = (p: Progress): number => Math.round(p.events / Math.max(1, p.batches));

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not finish within ${ms} ms`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

/**
 * A running projector over the kit's stream. start() is the initial catch-up
 * of a fresh projection; each rebuild() after it fills the next table version
 * from sequence 1 and swaps, exactly as an operator's rebuild does.
 */
export class KitProjection {
  readonly #o: KitProjectionOptions;
  readonly #sql: Sql;
  readonly #projector: Projector<"counter_totals">;
  #live = progress();
  #rebuild = progress();
  /** Generous: about 1 ms per event before the bench gives up. */
  readonly #limitMs: number;

  constructor(o: KitProjectionOptions) {
    this.#o = o;
    this.#limitMs = Math.max(60_000, o.expected);
    // The writer lock holds one connection; batches run one at a time on another.
    this.#sql = createPool({ url: o.databaseUrl, max: 4, applicationName: "spool-bench" });
    this.#projector = new Projector(counterTotalsProjection, {
      store: o.store,
      sql: this.#sql,
      deadLetters: new DeadLetterStore(this.#sql),
      logger: createLogger({ service: "bench", level: process.env.SPOOL_BENCH_LOG ?? "warn" }),
      batchSize: o.batchSize,
      onBatchCommitted: (b) => {
        const p = b.rebuild ? this.#rebuild : this.#live;
        p.batches++;
        p.events += b.events;
        if (b.lastSequence >= o.expected) p.reached.resolve(performance.now());
      },
    });
  }

  /** Starts the projector on a fresh database and times its catch-up from sequence 1. */
  async start(): Promise<Measurement> {
    const sample = sampleCpu();
    const t0 = performance.now();
    await this.#projector.start();
    const started = performance.now();
    const t1 = await withTimeout(this.#live.reached.promise, this.#limitMs, "the projector's catch-up");
    const cpu = sample();
    await this.#check();
    return measurement(
      "kit.catchup",
      "kit projector catch-up",
      this.#live.events,
      (t1 - t0) / 1_000,
      `a new Projector (batchSize ${this.#o.batchSize}) applying the stream from sequence 1 into version 1 ` +
        `in ${this.#live.batches} transactions of ~${average(this.#live)} events (rows and checkpoint together); ` +
        `includes start() (schema set-up, writer election): ${Math.round(started - t0)} ms`,
      cpu,
    );
  }

  /** One rebuild from sequence 1 into the next version, timed from rebuild() to the swap. */
  async rebuild(): Promise<Measurement> {
    this.#rebuild = progress();
    const sample = sampleCpu();
    const t0 = performance.now();
    const { targetVersion } = await this.#projector.rebuild();
    await withTimeout(this.#rebuild.reached.promise, this.#limitMs, "the projector's rebuild");
    await this.#untilVersion(targetVersion);
    const t1 = performance.now();
    const cpu = sample();
    await this.#check();
    const p = this.#rebuild;
    return measurement(
      "kit.rebuild",
      "kit projector rebuild",
      p.events,
      (t1 - t0) / 1_000,
      `Projector.rebuild(): the next table version filled from sequence 1 through the projector's ordered ` +
        `consumer (nothing acked) in ${p.batches} transactions of ~${average(p)} events (fold + one unnest ` +
        `upsert, checkpoint moved by compare-and-set in the same transaction), then the views swapped; ` +
        `timed from rebuild() to the swap`,
      cpu,
    );
  }

  /** counter_totals as readers see it (the view over the serving version). */
  async rows(): Promise<CounterRow[]> {
    return toCounterRows(await this.#sql.unsafe<CounterTotalsRow[]>(selectCounterTotals("counter_totals")));
  }

  async close(): Promise<void> {
    await this.#projector.stop();
    await this.#sql.end({ timeout: 5 });
  }

  async #check(): Promise<void> {
    const status = await this.#projector.status();
    if (status.checkpoint !== this.#o.expected || status.deadLetters !== 0) {
      throw new Error(
        `projector at checkpoint ${status.checkpoint} of ${this.#o.expected} with ${status.deadLetters} dead letters`,
      );
    }
  }

  async #untilVersion(version: number): Promise<void> {
    const deadline = Date.now() + this.#limitMs;
    for (;;) {
      const [row] = await this.#sql<{ version: number; rebuild_version: number | null }[]>`
        SELECT version, rebuild_version FROM spool_projections WHERE name = ${counterTotalsProjection.name}`;
      if (row?.version === version && row.rebuild_version === null) return;
      if (Date.now() > deadline) throw new Error(`projection did not swap to version ${version}`);
      await new Promise((r) => setTimeout(r, 2));
    }
  }
}
