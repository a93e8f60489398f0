import type { MsgHdrs } from "@nats-io/transport-node";
import type { EventMessage } from "./events.js";
import { Headers } from "./events.js";
import { type Executor, migrate, type Sql } from "./postgres.js";

/**
 * Events a projection or reactor gave up on, kept with their payload and
 * headers so they can be replayed after a fix even once the stream has
 * expired them. One table per database (per service schema).
 */
export interface DeadLetter {
  id: string;
  consumer: string;
  stream: string;
  streamSequence: number;
  subject: string;
  eventType: string;
  attempts: number;
  error: string;
  failedAt: Date;
  replayedAt: Date | undefined;
  /** The original message, for replay. */
  message: EventMessage;
}

export interface DeadLetterPage {
  items: DeadLetter[];
  /** Pass back to get the next page; undefined when there is none. */
  nextCursor: string | undefined;
}

const TABLE = "spool_dead_letters";

interface Row {
  id: string;
  consumer: string;
  stream: string;
  stream_sequence: string;
  subject: string;
  event_type: string;
  headers: Record<string, string[]>;
  data: Buffer;
  attempts: number;
  error: string;
  failed_at: Date;
  replayed_at: Date | null;
}

export class DeadLetterStore {
  readonly sql: Sql;
  constructor(sql: Sql) {
    this.sql = sql;
  }

  async migrate(): Promise<void> {
    await migrate(this.sql, TABLE, [
      `CREATE TABLE IF NOT EXISTS ${TABLE} (
        id bigserial PRIMARY KEY,
        consumer text NOT NULL,
        stream text NOT NULL,
        stream_sequence bigint NOT NULL,
        subject text NOT NULL,
        event_type text NOT NULL,
        headers jsonb NOT NULL,
        data bytea NOT NULL,
        attempts integer NOT NULL,
        error text NOT NULL,
        failed_at timestamptz NOT NULL DEFAULT now(),
        replayed_at timestamptz,
        UNIQUE (consumer, stream, stream_sequence)
      )`,
      `CREATE INDEX IF NOT EXISTS ${TABLE}_consumer_idx ON ${TABLE} (consumer, id DESC)`,
    ]);
  }

  /**
   * Records a failed message. Idempotent per (consumer, stream, sequence): a
   * redelivery after a crash updates the entry instead of adding a second.
   * Pass a transaction to record it atomically with a checkpoint move.
   */
  async add(
    entry: { consumer: string; stream: string; message: EventMessage; attempts: number; error: string },
    db: Executor = this.sql,
  ): Promise<void> {
    const headers = headersToJson(entry.message.headers);
    const eventType = entry.message.headers?.get(Headers.EventType) ?? "";
    await db`
      INSERT INTO spool_dead_letters (consumer, stream, stream_sequence, subject, event_type, headers, data, attempts, error)
      VALUES (${entry.consumer}, ${entry.stream}, ${entry.message.seq}, ${entry.message.subject}, ${eventType},
              ${db.json(headers)}, ${Buffer.from(entry.message.data)}, ${entry.attempts}, ${entry.error.slice(0, 2000)})
      ON CONFLICT (consumer, stream, stream_sequence)
      DO UPDATE SET attempts = EXCLUDED.attempts, error = EXCLUDED.error, failed_at = now(), replayed_at = NULL`;
  }

  async get(id: string): Promise<DeadLetter | undefined> {
    if (!/^\d{1,19}$/.test(id)) return undefined;
    const rows = await this.sql<Row[]>`SELECT * FROM spool_dead_letters WHERE id = ${id}`;
    return rows[0] ? fromRow(rows[0]) : undefined;
  }

  /** Newest first, keyset-paginated by id. */
  async list(filter: {
    consumer?: string;
    includeReplayed?: boolean;
    limit: number;
    cursor?: string;
  }): Promise<DeadLetterPage> {
    const before = filter.cursor && /^\d{1,19}$/.test(filter.cursor) ? filter.cursor : null;
    const rows = await this.sql<Row[]>`
      SELECT * FROM spool_dead_letters
      WHERE (${filter.consumer ?? null}::text IS NULL OR consumer = ${filter.consumer ?? null})
        AND (${filter.includeReplayed ?? false} OR replayed_at IS NULL)
        AND (${before}::bigint IS NULL OR id < ${before}::bigint)
      ORDER BY id DESC
      LIMIT ${filter.limit + 1}`;
    const items = rows.slice(0, filter.limit).map(fromRow);
    const last = items.at(-1);
    return { items, nextCursor: rows.length > filter.limit && last ? last.id : undefined };
  }

  async countPending(consumer: string): Promise<number> {
    const [row] = await this.sql<{ n: string }[]>`
      SELECT count(*) AS n FROM spool_dead_letters WHERE consumer = ${consumer} AND replayed_at IS NULL`;
    return Number(row?.n ?? 0);
  }

  /**
   * Marks an entry replayed, once: returns false when it already was (a
   * concurrent replay won). Pass the transaction that applied the event.
   */
  async markReplayed(id: string, db: Executor = this.sql): Promise<boolean> {
    const rows = await db`
      UPDATE spool_dead_letters SET replayed_at = now() WHERE id = ${id} AND replayed_at IS NULL RETURNING id`;
    return rows.length === 1;
  }

  /** Records a failed replay attempt's error on the entry. */
  async recordReplayFailure(id: string, error: string): Promise<void> {
    await this.sql`
      UPDATE spool_dead_letters SET error = ${error.slice(0, 2000)}, attempts = attempts + 1 WHERE id = ${id}`;
  }
}

function headersToJson(h: MsgHdrs | undefined): Record<string, string[]> {
  const out: Record<string, string[]> = {};
  if (!h) return out;
  for (const key of h.keys()) out[key] = h.values(key);
  return out;
}

function fromRow(r: Row): DeadLetter {
  return {
    id: String(r.id),
    consumer: r.consumer,
    stream: r.stream,
    streamSequence: Number(r.stream_sequence),
    subject: r.subject,
    eventType: r.event_type,
    attempts: r.attempts,
    error: r.error,
    failedAt: r.failed_at,
    replayedAt: r.replayed_at ?? undefined,
    message: {
      subject: r.subject,
      seq: Number(r.stream_sequence),
      data: new Uint8Array(r.data),
      headers: jsonToHeaders(r.headers),
    },
  };
}

import { headers as natsHeaders } from "@nats-io/transport-node";

function jsonToHeaders(json: Record<string, string[]>): MsgHdrs {
  const h = natsHeaders();
  for (const [k, values] of Object.entries(json)) for (const v of values) h.append(k, v);
  return h;
}
