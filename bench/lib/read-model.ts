// The read model both contenders rebuild: counter_totals, fed the way a user
// who wants speed writes a projection: fold the batch in memory, then one
// multi-row upsert with unnest arrays.
import type postgres from "postgres";
import type { CounterRow } from "./workload.js";

/** DDL of the read model under a physical table name (the kit's projector versions its tables). */
export function counterTotalsDdl(table: string): string {
  return `CREATE TABLE IF NOT EXISTS ${table} (
  counter_id text PRIMARY KEY,
  total bigint NOT NULL,
  increments int NOT NULL
)`;
}

/**
 * The same upsert as text for other drivers: $1 counter ids, $2 totals (as
 * text, so no driver has to carry bigint arrays), $3 increments.
 */
export function upsertCounterTotals(table: string): string {
  return `INSERT INTO ${table} AS t (counter_id, total, increments)
SELECT * FROM unnest($1::text[], $2::bigint[], $3::int[])
ON CONFLICT (counter_id) DO UPDATE
SET total = t.total + excluded.total, increments = t.increments + excluded.increments`;
}

export interface FoldedBatch {
  ids: string[];
  totals: string[];
  increments: number[];
}

/** Sums a batch per counter, so each counter is one row of the upsert. */
export class BatchFold {
  readonly #byId = new Map<string, { total: bigint; increments: number }>();

  add(counterId: string, amount: bigint): void {
    const row = this.#byId.get(counterId);
    if (row) {
      row.total += amount;
      row.increments += 1;
    } else {
      this.#byId.set(counterId, { total: amount, increments: 1 });
    }
  }

  get size(): number {
    return this.#byId.size;
  }

  result(): FoldedBatch {
    const out: FoldedBatch = { ids: [], totals: [], increments: [] };
    for (const [id, row] of this.#byId) {
      out.ids.push(id);
      out.totals.push(row.total.toString());
      out.increments.push(row.increments);
    }
    return out;
  }
}

/** The fold as one prepared multi-row upsert (postgres.js, inside the caller's transaction). */
export async function upsertFold(tx: postgres.TransactionSql, table: string, fold: BatchFold): Promise<void> {
  const { ids, totals, increments } = fold.result();
  await tx`
    INSERT INTO ${tx(table)} AS t (counter_id, total, increments)
    SELECT * FROM unnest(${ids}::text[], ${totals}::bigint[], ${increments}::int[])
    ON CONFLICT (counter_id) DO UPDATE
    SET total = t.total + excluded.total, increments = t.increments + excluded.increments`;
}

export interface CounterTotalsRow {
  counter_id: string;
  total: string;
  increments: number;
}

export function toCounterRows(rows: readonly CounterTotalsRow[]): CounterRow[] {
  return rows.map((r) => ({ counterId: r.counter_id, total: BigInt(r.total), increments: r.increments }));
}

/** Reads the read model back (a table, or the kit's view over the serving version). */
export function selectCounterTotals(relation: string): string {
  return `SELECT counter_id, total::text AS total, increments FROM ${relation}`;
}
