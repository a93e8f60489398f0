// Peer rebuilds of counter_totals from Emmett's PostgreSQL event store.
//
// 1. Emmett's own way: rebuildPostgreSQLProjections (its event-store consumer
//    with a projector that truncates the read model and replays from the
//    beginning, checkpointing in emt_processors in the same transaction).
//    The puller reads `batchSize` messages per query and runs one transaction
//    per batch, but its projector hands the projection one event at a time and
//    stores the checkpoint after each event. Pulling is tuned for a rebuild:
//    the same batch size as the kit, no pause between full batches.
// 2. A strong rebuild a user could write by hand on Emmett's tables: read emt_messages
//    in batches in global-position order, fold the batch, one upsert and one
//    checkpoint row per transaction (the kit's projection strategy).

import type { ReadEvent } from "@event-driven-io/emmett";
import {
  messagesTable,
  type PostgreSQLProjectionHandlerContext,
  type PostgresReadEventMetadata,
  postgreSQLProjection,
  rebuildPostgreSQLProjections,
} from "@event-driven-io/emmett-postgresql";
import postgres from "postgres";
import type { CounterIncrementedEvent } from "./emmett-append.js";
import { type Measurement, measurement } from "./measure.js";
import {
  BatchFold,
  type CounterTotalsRow,
  counterTotalsDdl,
  selectCounterTotals,
  toCounterRows,
  upsertCounterTotals,
  upsertFold,
} from "./read-model.js";
import { type CounterRow, timed } from "./workload.js";

const counterIdOf = (streamName: string): string => streamName.slice("counter-".length);

const TABLE = "counter_totals";
const UPSERT = upsertCounterTotals(TABLE);

export interface PeerRebuildResult {
  /** Events per second over the whole log (events read, whether or not applied). */
  measurement: Measurement;
  rows: CounterRow[];
  /** Events the projection was given. */
  applied: number;
}

async function readRows(connectionString: string): Promise<CounterRow[]> {
  const sql = postgres(connectionString, { max: 1, onnotice: () => {} });
  try {
    return toCounterRows(await sql.unsafe<CounterTotalsRow[]>(selectCounterTotals(TABLE)));
  } finally {
    await sql.end();
  }
}

export async function emmettRebuild(
  connectionString: string,
  expected: number,
  batchSize: number,
): Promise<PeerRebuildResult> {
  let applied = 0;
  let calls = 0;
  const projection = postgreSQLProjection<CounterIncrementedEvent>({
    name: TABLE,
    canHandle: ["CounterIncremented"],
    init: async ({ context }) => {
      await context.connection.client.query(counterTotalsDdl(TABLE));
    },
    truncate: async (context) => {
      await context.connection.client.query("TRUNCATE counter_totals");
    },
    handle: async (
      events: ReadEvent<CounterIncrementedEvent, PostgresReadEventMetadata>[],
      context: PostgreSQLProjectionHandlerContext,
    ) => {
      const fold = new BatchFold();
      for (const e of events) fold.add(counterIdOf(e.metadata.streamName), BigInt(e.data.amount));
      const { ids, totals, increments } = fold.result();
      await context.connection.client.query(UPSERT, [ids, totals, increments]);
      applied += events.length;
      calls++;
    },
  });
  const consumer = rebuildPostgreSQLProjections<CounterIncrementedEvent>({
    connectionString,
    projections: [projection],
    pulling: { batchSize, pullingFrequencyInMs: 0 },
  });
  try {
    const { seconds, cpu } = await timed(() => consumer.start());
    // Not thrown: a peer that drops events is a finding to report, and the
    // read-model check beside it shows the damage.
    const skipped =
      applied === expected
        ? ""
        : ` — it applied only ${applied} of the ${expected} events: Emmett 0.42.0 reads in ` +
          `(transaction_id, global_position) order but checkpoints by global_position alone, so an event ` +
          `from a later transaction that drew a lower global_position than one already applied is ` +
          `skipped as "already handled"`;
    return {
      measurement: measurement(
        "peer.rebuild",
        "Emmett rebuild",
        expected,
        seconds,
        `rebuildPostgreSQLProjections with a postgreSQLProjection doing the same fold + unnest upsert; ` +
          `puller batch ${batchSize}, pullingFrequencyInMs 0; Emmett called the projection ` +
          `${calls} times (one event per call, checkpoint stored per event)${skipped}`,
        cpu,
      ),
      rows: await readRows(connectionString),
      applied,
    };
  } finally {
    await consumer.close();
  }
}

const CHECKPOINT_DDL = `
CREATE TABLE IF NOT EXISTS counter_totals_checkpoint (
  name text PRIMARY KEY,
  position bigint NOT NULL
)`;

export async function emmettRebuildByHand(
  connectionString: string,
  expected: number,
  batchSize: number,
): Promise<PeerRebuildResult> {
  const sql = postgres(connectionString, { max: 2, onnotice: () => {} });
  try {
    await sql.unsafe(counterTotalsDdl(TABLE));
    await sql.unsafe(CHECKPOINT_DDL);
    await sql`TRUNCATE counter_totals`;
    await sql`DELETE FROM counter_totals_checkpoint`;
    const table = sql(messagesTable.name);
    let applied = 0;
    let batches = 0;
    const { seconds, cpu } = await timed(async () => {
      let after = 0n;
      for (;;) {
        const got = await sql.begin(async (tx) => {
          const rows = await tx<{ stream_id: string; position: string; amount: string }[]>`
            SELECT stream_id, global_position::text AS position, message_data->>'amount' AS amount
            FROM ${table}
            WHERE partition = 'emt:default' AND is_archived = FALSE
              AND global_position > ${after.toString()}::bigint
              AND transaction_id < pg_snapshot_xmin(pg_current_snapshot())
            ORDER BY global_position
            LIMIT ${batchSize}`;
          const last = rows.at(-1);
          if (!last) return 0;
          const fold = new BatchFold();
          for (const r of rows) fold.add(counterIdOf(r.stream_id), BigInt(r.amount));
          await upsertFold(tx, TABLE, fold);
          await tx`
            INSERT INTO counter_totals_checkpoint (name, position) VALUES ('counter_totals', ${last.position}::bigint)
            ON CONFLICT (name) DO UPDATE SET position = excluded.position`;
          after = BigInt(last.position);
          return rows.length;
        });
        if (got === 0) break;
        applied += got;
        batches++;
      }
    });
    if (applied !== expected) {
      throw new Error(`hand-written Emmett rebuild applied ${applied} of ${expected} events`);
    }
    return {
      measurement: measurement(
        "peer.rebuild.by-hand",
        "Emmett store, batch rebuild by hand",
        applied,
        seconds,
        `SELECT ${batchSize} rows of emt_messages by global_position per transaction, fold, ` +
          `one unnest upsert and one checkpoint row per batch (${batches} batches) — not Emmett's API`,
        cpu,
      ),
      rows: await readRows(connectionString),
      applied,
    };
  } finally {
    await sql.end();
  }
}
