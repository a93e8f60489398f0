// A counter read model for the projector's tests: per-subject totals plus a
// log with one row per applied increment (no unique key, so an increment
// applied twice shows up as a duplicate row instead of an error).
import { createHash } from "node:crypto";
import type { NatsConnection } from "@nats-io/transport-node";
import type { Redis } from "ioredis";
import { DeadLetterStore } from "../src/dead-letters.js";
import { EventStore } from "../src/event-store.js";
import type { RecordedEvent } from "../src/events.js";
import { Namespace } from "../src/namespace.js";
import { createPool, type Executor, type Sql } from "../src/postgres.js";
import {
  defineProjection,
  type ProjectionDefinition,
  type RedisProjectionDefinition,
  type RedisWrite,
} from "../src/projector/index.js";
import { Incremented } from "./counter.js";

/** One test's own corner of the file's infrastructure: a schema and a stream namespace. */
export interface Slice {
  label: string;
  sql: Sql;
  store: EventStore;
  deadLetters: DeadLetterStore;
  databaseUrl: string;
  streamPrefix: string;
}

/**
 * Projection tables have fixed logical names, so each test gets a schema of
 * its own (first on the pool's search_path) and a stream prefix of its own.
 */
export async function slice(
  nc: NatsConnection,
  infra: { databaseUrl: string; streamPrefix: string },
  label: string,
): Promise<Slice> {
  const admin = createPool({ url: infra.databaseUrl, max: 1 });
  try {
    await admin.unsafe(`CREATE SCHEMA IF NOT EXISTS ${label}`);
  } finally {
    await admin.end();
  }
  const sql = createPool({ url: infra.databaseUrl, schema: label, max: 8 });
  const streamPrefix = `${infra.streamPrefix}_${label}`;
  const store = new EventStore(nc, { namespace: new Namespace(streamPrefix) });
  await store.ensureStream({ name: "EX", subjects: ["ex.>"] });
  return {
    label,
    sql,
    store,
    deadLetters: new DeadLetterStore(sql),
    databaseUrl: infra.databaseUrl,
    streamPrefix,
  };
}

/** The i-th increment appendMany writes. */
export function incrementFor(
  i: number,
  subjects = 20,
  prefix = "i",
): { id: string; subject: string; amount: bigint } {
  return { id: `${prefix}${i}`, subject: `ex.counter.c${i % subjects}`, amount: BigInt((i % 7) + 1) };
}

export type CounterTables = "counter_totals" | "counter_log";

export interface CounterOptions {
  name?: string;
  strict?: boolean;
  filterSubject?: string;
  /** Increment ids the handler throws for, until `fixed` is set. */
  poison?: Set<string>;
  /** Per-event mode (apply) instead of the batch form. */
  perEvent?: boolean;
}

export interface CounterFixture {
  definition: ProjectionDefinition<CounterTables>;
  /** Flip to make poisoned increments succeed (the "fix"). */
  fixed: boolean;
  /** How often the handler saw each poisoned increment. */
  poisonAttempts: Map<string, number>;
}

export function counterProjection(options: CounterOptions = {}): CounterFixture {
  const fixture: CounterFixture = {
    fixed: false,
    poisonAttempts: new Map(),
    definition: undefined as unknown as ProjectionDefinition<CounterTables>,
  };
  const check = (id: string) => {
    if (!options.poison?.has(id)) return;
    fixture.poisonAttempts.set(id, (fixture.poisonAttempts.get(id) ?? 0) + 1);
    if (!fixture.fixed) throw new Error(`poisoned increment ${id}`);
  };
  fixture.definition = defineProjection<CounterTables>({
    name: options.name ?? "counter",
    stream: "EX",
    ...(options.filterSubject ? { filterSubject: options.filterSubject } : {}),
    ...(options.strict ? { strict: true } : {}),
    tables: ["counter_totals", "counter_log"],
    async migrate(tx, t) {
      await tx.unsafe(`CREATE TABLE ${t.counter_totals} (
        subject text PRIMARY KEY, total bigint NOT NULL, increments integer NOT NULL)`);
      await tx.unsafe(`CREATE TABLE ${t.counter_log} (
        seq bigint NOT NULL, idx integer NOT NULL, subject text NOT NULL, increment_id text NOT NULL, amount bigint NOT NULL)`);
    },
    ...(options.perEvent
      ? {
          async apply(tx, event, { tables }) {
            if (!Incremented.is(event)) return;
            const e = Incremented.decode(event.data);
            check(e.incrementId);
            await tx`
              INSERT INTO ${tx(tables.counter_totals)} AS t (subject, total, increments)
              VALUES (${event.subject}, ${e.amount.toString()}, 1)
              ON CONFLICT (subject) DO UPDATE SET total = t.total + EXCLUDED.total, increments = t.increments + 1`;
            await tx`
              INSERT INTO ${tx(tables.counter_log)} (seq, idx, subject, increment_id, amount)
              VALUES (${event.streamSequence}, ${event.index}, ${event.subject}, ${e.incrementId}, ${e.amount.toString()})`;
          },
        }
      : {
          async applyBatch(tx, events, { tables }) {
            const rows = increments(events);
            for (const r of rows) check(r.incrementId);
            if (rows.length === 0) return;
            const totals = new Map<string, { total: bigint; n: number }>();
            for (const r of rows) {
              const t = totals.get(r.subject) ?? { total: 0n, n: 0 };
              t.total += r.amount;
              t.n++;
              totals.set(r.subject, t);
            }
            await tx`
              INSERT INTO ${tx(tables.counter_totals)} AS t (subject, total, increments)
              SELECT * FROM unnest(${[...totals.keys()]}::text[], ${[...totals.values()].map((v) => v.total.toString())}::bigint[],
                                   ${[...totals.values()].map((v) => v.n)}::int[])
              ON CONFLICT (subject) DO UPDATE
              SET total = t.total + EXCLUDED.total, increments = t.increments + EXCLUDED.increments`;
            await tx`
              INSERT INTO ${tx(tables.counter_log)} (seq, idx, subject, increment_id, amount)
              SELECT * FROM unnest(${rows.map((r) => r.seq)}::bigint[], ${rows.map((r) => r.idx)}::int[],
                                   ${rows.map((r) => r.subject)}::text[], ${rows.map((r) => r.incrementId)}::text[],
                                   ${rows.map((r) => r.amount.toString())}::bigint[])`;
          },
        }),
  });
  return fixture;
}

interface IncrementRow {
  seq: number;
  idx: number;
  subject: string;
  incrementId: string;
  amount: bigint;
}

function increments(events: readonly RecordedEvent[]): IncrementRow[] {
  return events.filter(Incremented.is).map((event) => {
    const e = Incremented.decode(event.data);
    return {
      seq: event.streamSequence,
      idx: event.index,
      subject: event.subject,
      incrementId: e.incrementId,
      amount: e.amount,
    };
  });
}

/** An append ledger: what the read model must show, whatever crashed in between. */
export class Ledger {
  readonly subjects = new Map<string, { total: bigint; increments: number }>();
  readonly ids: string[] = [];
  /** Amount written at each stream sequence. */
  readonly amounts = new Map<number, bigint>();
  lastSequence = 0;

  async append(store: EventStore, subject: string, incrementId: string, amount: bigint): Promise<number> {
    const r = await store.append(subject, [Incremented.create({ amount, incrementId })]);
    this.record(subject, incrementId, amount, r.sequence);
    return r.sequence;
  }

  record(subject: string, incrementId: string, amount: bigint, sequence: number): void {
    const s = this.subjects.get(subject) ?? { total: 0n, increments: 0 };
    s.total += amount;
    s.increments++;
    this.subjects.set(subject, s);
    this.ids.push(incrementId);
    this.amounts.set(sequence, (this.amounts.get(sequence) ?? 0n) + amount);
    this.seen(sequence);
  }

  /** Sum of the amounts written up to a stream sequence: what a checkpoint at it must show. */
  sumUpTo(sequence: number): bigint {
    let s = 0n;
    for (const [seq, amount] of this.amounts) if (seq <= sequence) s += amount;
    return s;
  }

  seen(sequence: number): void {
    this.lastSequence = Math.max(this.lastSequence, sequence);
  }

  /** Appends n increments over `subjects` subjects, `parallel` at a time; `skip` ids are appended but not expected. */
  async appendMany(
    store: EventStore,
    n: number,
    options: { subjects?: number; parallel?: number; prefix?: string; skip?: (id: string) => boolean } = {},
  ): Promise<void> {
    const { subjects = 20, parallel = 100, prefix = "i", skip = () => false } = options;
    for (let start = 0; start < n; start += parallel) {
      const batch = Array.from({ length: Math.min(parallel, n - start) }, (_, k) => start + k);
      await Promise.all(
        batch.map(async (i) => {
          const { id, subject, amount } = incrementFor(i, subjects, prefix);
          const r = await store.append(subject, [Incremented.create({ amount, incrementId: id })]);
          if (skip(id)) this.seen(r.sequence);
          else this.record(subject, id, amount, r.sequence);
        }),
      );
    }
  }

  get sum(): bigint {
    let s = 0n;
    for (const v of this.subjects.values()) s += v.total;
    return s;
  }

  /** The checksum the read model must have (same formulas as counterChecksum). */
  expected(): CounterChecksum {
    const totals = [...this.subjects.entries()]
      .sort(([a], [b]) => compareC(a, b))
      .map(([subject, v]) => `${subject}:${v.total}:${v.increments}`)
      .join(",");
    return {
      rows: this.ids.length,
      sum: this.sum.toString(),
      idsMd5: md5([...this.ids].sort(compareC).join(",")),
      totalsMd5: md5(totals),
    };
  }
}

export interface CounterChecksum {
  /** Rows in the log: one per applied increment. */
  rows: number;
  sum: string;
  /** md5 over the sorted increment ids in the log. */
  idsMd5: string;
  /** md5 over "subject:total:increments" of every totals row, sorted by subject. */
  totalsMd5: string;
}

/** Checksums of the read model, read through the logical (view) names. */
export async function counterChecksum(db: Executor): Promise<CounterChecksum> {
  const [log] = await db<{ rows: string; sum: string | null; md5: string }[]>`
    SELECT count(*) AS rows, sum(amount)::text AS sum,
           md5(coalesce(string_agg(increment_id, ',' ORDER BY increment_id COLLATE "C"), '')) AS md5
    FROM counter_log`;
  const [totals] = await db<{ md5: string }[]>`
    SELECT md5(coalesce(string_agg(subject || ':' || total || ':' || increments, ','
                                   ORDER BY subject COLLATE "C"), '')) AS md5
    FROM counter_totals`;
  return {
    rows: Number(log?.rows ?? 0),
    sum: log?.sum ?? "0",
    idsMd5: log?.md5 ?? "",
    totalsMd5: totals?.md5 ?? "",
  };
}

function md5(s: string): string {
  return createHash("md5").update(s).digest("hex");
}

/** Byte-wise order, as COLLATE "C" sorts. */
function compareC(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/**
 * The same counter as a Redis read model: per-subject totals and increment
 * counts in two hashes, and a count per increment id (so an increment applied
 * twice shows up as a duplicate, as in counter_log).
 */
export function redisCounterProjection(options: CounterOptions = {}): RedisCounterFixture {
  const fixture: RedisCounterFixture = {
    fixed: false,
    poisonAttempts: new Map(),
    definition: undefined as unknown as RedisProjectionDefinition,
  };
  fixture.definition = {
    name: options.name ?? "counter",
    stream: "EX",
    ...(options.filterSubject ? { filterSubject: options.filterSubject } : {}),
    ...(options.strict ? { strict: true } : {}),
    writes(events) {
      return increments(events).flatMap((r) => {
        if (options.poison?.has(r.incrementId)) {
          fixture.poisonAttempts.set(r.incrementId, (fixture.poisonAttempts.get(r.incrementId) ?? 0) + 1);
          if (!fixture.fixed) throw new Error(`poisoned increment ${r.incrementId}`);
        }
        return [
          { op: "hincrby", key: "totals", field: r.subject, by: r.amount },
          { op: "hincrby", key: "increments", field: r.subject, by: 1 },
          { op: "hincrby", key: "ids", field: r.incrementId, by: 1 },
        ] satisfies RedisWrite[];
      });
    },
  };
  return fixture;
}

export interface RedisCounterFixture {
  definition: RedisProjectionDefinition;
  fixed: boolean;
  poisonAttempts: Map<string, number>;
}

/** counterChecksum's formulas over the Redis counter's keys (key: relative key to full key). */
export async function redisCounterChecksum(
  redis: Redis,
  key: (relative: string) => string,
): Promise<CounterChecksum> {
  const [totals, incs, ids] = await Promise.all([
    redis.hgetall(key("totals")),
    redis.hgetall(key("increments")),
    redis.hgetall(key("ids")),
  ]);
  const all = Object.entries(ids).flatMap(([id, n]) => Array.from({ length: Number(n) }, () => id));
  let sum = 0n;
  for (const v of Object.values(totals)) sum += BigInt(v);
  const totalsLine = Object.keys(totals)
    .sort(compareC)
    .map((subject) => `${subject}:${totals[subject]}:${incs[subject] ?? 0}`)
    .join(",");
  return {
    rows: all.length,
    sum: all.length === 0 ? "0" : sum.toString(),
    idsMd5: md5(all.sort(compareC).join(",")),
    totalsMd5: md5(totalsLine),
  };
}
