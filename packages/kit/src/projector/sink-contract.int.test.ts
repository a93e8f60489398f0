// One behavioural suite for every projection sink: the PostgreSQL and the
// Redis projector must behave the same (single writer, lock loss, consumer
// re-creation, filtered lag, dead letters, strict halt, rebuild equality).
// Each sink is driven through a small adapter over the same counter model.
import { setTimeout as sleep } from "node:timers/promises";
import type { NatsConnection } from "@nats-io/transport-node";
import { eventually, useInfra } from "@spool/testing";
import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  type CounterChecksum,
  type CounterOptions,
  counterChecksum,
  counterProjection,
  incrementFor,
  Ledger,
  redisCounterChecksum,
  redisCounterProjection,
  type Slice,
  slice,
} from "../../test/projector-counter.js";
import { FailedPreconditionError, SpoolError } from "../errors.js";
import { createLogger } from "../logger.js";
import type { ConsumerStatus } from "../managed.js";
import { connectNats } from "../nats.js";
import { createPool, type Sql } from "../postgres.js";
import { type CommittedBatch, Projector, type ProjectorTuning, RedisProjector } from "./index.js";

const infra = useInfra("sinks");
const logger = createLogger({ service: "sink-contract-test", level: process.env.SPOOL_TEST_LOG ?? "silent" });
let nc: NatsConnection;
let redis: Redis;
const cleanups: (() => Promise<unknown>)[] = [];

beforeAll(async () => {
  nc = await connectNats({ url: infra().natsUrl, name: "sink-contract-test" });
  redis = new Redis(infra().redisUrl);
});
afterAll(async () => {
  for (const c of cleanups.reverse()) await c().catch(() => {});
  redis?.disconnect();
  await nc?.close();
});

type AnyProjector = Projector | RedisProjector;

/** A projector over the counter model, as the suite sees it. */
interface Counter {
  projector: AnyProjector;
  /** Flip to make poisoned increments succeed (the "fix"). */
  fix(): void;
  poisonAttempts: Map<string, number>;
}

interface SinkAdapter {
  name: string;
  counter(s: Slice, options: CounterOptions, tuning: Partial<ProjectorTuning>): Counter;
  /** The read model serving reads now, as counterChecksum sees it. */
  checksum(s: Slice): Promise<CounterChecksum>;
  /** Version, checkpoint and sum of totals read in one atomic step, as a reader sees them. */
  snapshot(s: Slice, db: Sql): Promise<{ version: number; checkpoint: number; sum: bigint }>;
  /** The writer lock's name, as hashed into its advisory key (with the schema). */
  lockName(s: Slice): string;
  /** The state the writer stores for other replicas. */
  storedState(s: Slice): Promise<string | undefined>;
  /** Versions whose tables/keys exist. */
  versions(s: Slice): Promise<number[]>;
}

const tuningDefaults = { logger, standbyRetryMs: 100, pollIntervalMs: 100 };

function keep<P extends AnyProjector>(p: P): P {
  cleanups.push(() => p.stop());
  return p;
}

const postgresSink: SinkAdapter = {
  name: "postgres",
  counter(s, options, tuning) {
    const fx = counterProjection(options);
    const projector = keep(
      new Projector(fx.definition, {
        store: s.store,
        sql: s.sql,
        deadLetters: s.deadLetters,
        ...tuningDefaults,
        ...tuning,
      }),
    );
    return {
      projector,
      fix: () => {
        fx.fixed = true;
      },
      poisonAttempts: fx.poisonAttempts,
    };
  },
  checksum: (s) => counterChecksum(s.sql),
  async snapshot(_s, db) {
    const [row] = await db<{ checkpoint: string; version: number; sum: string }[]>`
      SELECT p.checkpoint, p.version, (SELECT coalesce(sum(total), 0) FROM counter_totals)::text AS sum
      FROM spool_projections p WHERE p.name = 'counter'`;
    return { version: row?.version ?? 0, checkpoint: Number(row?.checkpoint), sum: BigInt(row?.sum ?? 0) };
  },
  lockName: () => "spool:projection:counter",
  async storedState(s) {
    const [row] = await s.sql<
      { state: string }[]
    >`SELECT state FROM spool_projections WHERE name = 'counter'`;
    return row?.state;
  },
  async versions(s) {
    const rows = await s.sql<{ name: string }[]>`
      SELECT table_name AS name FROM information_schema.tables
      WHERE table_schema = ${s.label} AND table_type = 'BASE TABLE' AND table_name LIKE 'counter_totals_v%'`;
    return rows.map((r) => Number(r.name.replace("counter_totals_v", ""))).sort();
  },
};

/** Key prefix of a slice's Redis model. */
const redisPrefix = (s: Slice) => `${infra().redisPrefix}${s.label}:`;
const metaKey = (s: Slice) => `${redisPrefix(s)}spool:projection:counter`;

/** Reads the version from the metadata and the totals of that version in one script. */
const SNAPSHOT = `
local m = redis.call('HMGET', KEYS[1], 'version', 'checkpoint')
local sum = 0
for _, v in ipairs(redis.call('HVALS', ARGV[1] .. m[1] .. ':totals')) do sum = sum + tonumber(v) end
return {m[1], m[2], tostring(sum)}`;

const redisSink: SinkAdapter = {
  name: "redis",
  counter(s, options, tuning) {
    const fx = redisCounterProjection(options);
    const projector = keep(
      new RedisProjector(fx.definition, {
        store: s.store,
        sql: s.sql,
        deadLetters: s.deadLetters,
        redis,
        keyPrefix: redisPrefix(s),
        ...tuningDefaults,
        ...tuning,
      }),
    );
    return {
      projector,
      fix: () => {
        fx.fixed = true;
      },
      poisonAttempts: fx.poisonAttempts,
    };
  },
  async checksum(s) {
    const version = Number((await redis.hget(metaKey(s), "version")) ?? 1);
    return redisCounterChecksum(redis, (k) => `${redisPrefix(s)}counter:v${version}:${k}`);
  },
  async snapshot(s) {
    const [version, checkpoint, sum] = (await redis.eval(
      SNAPSHOT,
      1,
      metaKey(s),
      `${redisPrefix(s)}counter:v`,
    )) as [string, string, string];
    return { version: Number(version), checkpoint: Number(checkpoint), sum: BigInt(sum) };
  },
  lockName: (s) => `spool:redis-projection:${redisPrefix(s)}:counter`,
  async storedState(s) {
    return (await redis.hget(metaKey(s), "state")) ?? undefined;
  },
  async versions(s) {
    const keys = await redis.keys(`${redisPrefix(s)}counter:v*:totals`);
    return keys.map((k) => Number(/:v(\d+):totals$/.exec(k)?.[1])).sort();
  },
};

/** Expected read model after the first n increments of appendMany. */
function ledgerOf(n: number): Ledger {
  const l = new Ledger();
  for (let i = 0; i < n; i++) {
    const inc = incrementFor(i);
    l.record(inc.subject, inc.id, inc.amount, i + 1);
  }
  return l;
}

async function swapped(p: AnyProjector, version: number): Promise<ConsumerStatus> {
  return eventually(
    async () => {
      const st = await p.status();
      return st.version === version && st.rebuild === undefined ? st : undefined;
    },
    { timeoutMs: 50_000, intervalMs: 50, what: `swap to v${version}` },
  );
}

describe.each([postgresSink, redisSink])("projection sink: $name", (sink) => {
  async function setUp(label: string): Promise<Slice> {
    const s = await slice(nc, infra(), `${sink.name}_${label}`);
    cleanups.push(() => s.sql.end());
    return s;
  }

  function secondPool(s: Slice): Slice {
    const sql = createPool({ url: s.databaseUrl, schema: s.label, max: 4 });
    cleanups.push(() => sql.end());
    return { ...s, sql };
  }

  /** The old version is gone (Redis deletes its keys right after the swap, not in it). */
  async function retired(s: Slice, version: number): Promise<void> {
    await eventually(async () => !(await sink.versions(s)).includes(version), {
      timeoutMs: 5_000,
      what: `version ${version} dropped`,
    });
    expect(await sink.versions(s)).toEqual([version + 1]);
  }

  it("applies whole batches exactly once, across a restart, with status and read-your-writes", async () => {
    const s = await setUp("basic");
    const batches: CommittedBatch[] = [];
    const { projector: p } = sink.counter(
      s,
      {},
      { batchSize: 100, onBatchCommitted: (b) => void batches.push(b) },
    );
    const ledger = new Ledger();
    await ledger.appendMany(s.store, 1_000);
    await p.start();
    await p.waitFor(ledger.lastSequence, 10_000);

    expect(await sink.checksum(s)).toEqual(ledger.expected());
    // Batched, not message by message, and never more than batchSize.
    expect(batches.length).toBeLessThan(100);
    expect(Math.max(...batches.map((b) => b.messages))).toBeLessThanOrEqual(100);
    expect(await p.status()).toMatchObject({
      name: "counter",
      state: "running",
      checkpoint: ledger.lastSequence,
      head: ledger.lastSequence,
      lag: 0,
      version: 1,
      deadLetters: 0,
      rebuild: undefined,
    });
    expect(p.healthy()).toBe(true);

    const seq = await ledger.append(s.store, "ex.counter.ryw", "ryw", 5n);
    await p.waitFor(seq, 5_000);
    expect(await sink.checksum(s)).toEqual(ledger.expected());

    await p.stop();
    expect((await p.status()).state).toBe("stopped");
    expect(p.healthy()).toBe(false);

    // A new instance resumes from the stored checkpoint: nothing applied twice, nothing missed.
    await ledger.appendMany(s.store, 500, { prefix: "r" });
    const { projector: again } = sink.counter(s, {}, { batchSize: 100 });
    await again.start();
    await again.waitFor(ledger.lastSequence, 10_000);
    expect(await sink.checksum(s)).toEqual(ledger.expected());
  });

  it("one writer per projection: the second instance stands by and takes over without double-applying", async () => {
    const s = await setUp("single");
    const commits = { a: 0, b: 0 };
    const a = sink.counter(s, {}, { batchSize: 50, onBatchCommitted: () => void commits.a++ }).projector;
    const b = sink.counter(
      secondPool(s),
      {},
      { batchSize: 50, onBatchCommitted: () => void commits.b++ },
    ).projector;
    await Promise.all([a.start(), b.start()]);
    const states = [(await a.status()).state, (await b.status()).state].sort();
    expect(states).toEqual(["running", "standby"]);
    const [active, standby, activeKey, standbyKey] =
      (await a.status()).state === "running" ? ([a, b, "a", "b"] as const) : ([b, a, "b", "a"] as const);

    const ledger = new Ledger();
    await ledger.appendMany(s.store, 500, { prefix: "x" });
    // The standby answers read-your-writes from the checkpoint the writer stores.
    await standby.waitFor(ledger.lastSequence, 10_000);
    expect(commits[standbyKey]).toBe(0);
    expect(commits[activeKey]).toBeGreaterThan(0);
    expect(await sink.checksum(s)).toEqual(ledger.expected());

    await active.stop();
    await eventually(async () => (await standby.status()).state === "running", {
      timeoutMs: 5_000,
      what: "takeover",
    });
    const before = commits[activeKey];
    await ledger.appendMany(s.store, 500, { prefix: "y" });
    await standby.waitFor(ledger.lastSequence, 10_000);
    expect(commits[standbyKey]).toBeGreaterThan(0);
    expect(commits[activeKey]).toBe(before);
    expect(await sink.checksum(s)).toEqual(ledger.expected());
  });

  it("a writer whose lock session dies steps down, and the next writer applies nothing twice", async () => {
    const s = await setUp("lostlock");
    const a = sink.counter(s, {}, { batchSize: 50 }).projector;
    const b = sink.counter(secondPool(s), {}, { batchSize: 50 }).projector;
    await a.start();
    await b.start();
    expect((await a.status()).state).toBe("running");
    const ledger = new Ledger();
    await ledger.appendMany(s.store, 500);
    await a.waitFor(ledger.lastSequence, 10_000);

    // While events keep coming, the database ends the writer's lock session.
    const writes = ledger.appendMany(s.store, 2_000, { prefix: "w", parallel: 20 });
    await eventually(async () => (await a.status()).checkpoint > 600, { timeoutMs: 10_000 });
    const terminated = await s.sql`
      SELECT pg_terminate_backend(pid) FROM pg_locks
      WHERE locktype = 'advisory' AND objsubid = 1 AND granted
        AND ((classid::bigint << 32) | objid::bigint) = hashtextextended(${`${s.label}:${sink.lockName(s)}`}, 0)`;
    expect(terminated).toHaveLength(1);
    await writes;

    // It notices on its next lock check, or earlier when the new writer's commits fence it off.
    await eventually(
      async () => /lost the writer lock|another writer is active/.test((await a.status()).lastError ?? ""),
      { timeoutMs: 5_000, what: "step-down" },
    );
    const writer = await eventually(
      async () => {
        const [sa, sb] = await Promise.all([a.status(), b.status()]);
        if (sa.state === "running" && sb.state === "standby") return a;
        if (sb.state === "running" && sa.state === "standby") return b;
        return undefined;
      },
      { timeoutMs: 5_000, what: "one writer again" },
    );
    await writer.waitFor(ledger.lastSequence, 10_000);
    expect(await sink.checksum(s)).toEqual(ledger.expected());
  });

  it("recreates its stream consumer when the server loses it, without gap or duplicate", async () => {
    const s = await setUp("lostconsumer");
    const { projector: p } = sink.counter(s, {}, { stallTimeoutMs: 1_000 });
    const ledger = new Ledger();
    await ledger.appendMany(s.store, 100);
    await p.start();
    await p.waitFor(ledger.lastSequence, 10_000);

    const jsm = await s.store.manager();
    const stream = s.store.namespace.stream("EX");
    let deleted = 0;
    for await (const c of jsm.consumers.list(stream)) {
      await jsm.consumers.delete(stream, c.name);
      deleted++;
    }
    expect(deleted).toBeGreaterThan(0);
    await ledger.appendMany(s.store, 100, { prefix: "after" });
    // Well before nats.js would notice missed heartbeats (2 x 5 s): the stall watchdog.
    await p.waitFor(ledger.lastSequence, 6_000);
    expect(await sink.checksum(s)).toEqual(ledger.expected());
  });

  it("a filtered projection sees only its subjects and counts lag (status and metric) against them", async () => {
    const s = await setUp("filtered");
    const lags: number[] = [];
    const { projector: p } = sink.counter(
      s,
      { filterSubject: "ex.counter.c1", perEvent: true },
      { metrics: { lag: (_name, lag) => void lags.push(lag) } },
    );
    await new Ledger().appendMany(s.store, 40, { parallel: 1 });
    await p.start();
    // i = 1 and 21 are on c1, at sequences 2 and 22; the stream's head is 40.
    await p.waitFor(22, 10_000);
    const expected = new Ledger();
    for (const i of [1, 21]) {
      const inc = incrementFor(i);
      expected.record(inc.subject, inc.id, inc.amount, i + 1);
    }
    expect(await sink.checksum(s)).toEqual(expected.expected());
    expect(await p.status()).toMatchObject({ checkpoint: 22, head: 22, lag: 0 });
    // The metric the writer refreshes says the same: 0, not the 18 unfiltered messages after 22.
    const seen = lags.length;
    await eventually(() => lags.length > seen, { timeoutMs: 5_000, what: "a lag report" });
    expect(lags.slice(seen)).not.toContain(18);
    expect(lags.at(-1)).toBe(0);
    // A write on another subject is not this projection's: waiting for it ends once caught up.
    await p.waitFor(40, 2_000);
  });

  it("dead-letters an event that keeps failing, moves on, and replays it exactly once after a fix", async () => {
    const s = await setUp("poison");
    const fx = sink.counter(s, { poison: new Set(["i7"]) }, { maxAttempts: 3, batchSize: 50 });
    const p = fx.projector;
    const ledger = new Ledger();
    // One at a time, so increment i has stream sequence i + 1.
    await ledger.appendMany(s.store, 20, { parallel: 1, skip: (id) => id === "i7" });
    await p.start();
    await p.waitFor(ledger.lastSequence, 10_000);

    // Everything but the poisoned event, including the events after it.
    expect(await sink.checksum(s)).toEqual(ledger.expected());
    // Once inside its batch, then maxAttempts times alone.
    expect(fx.poisonAttempts.get("i7")).toBe(1 + 3);
    expect(await p.status()).toMatchObject({ state: "running", checkpoint: 20, lag: 0, deadLetters: 1 });
    const { items } = await s.deadLetters.list({ consumer: "counter", limit: 10 });
    expect(items).toHaveLength(1);
    const entry = items[0]!;
    expect(entry).toMatchObject({
      consumer: "counter",
      streamSequence: 8,
      subject: `${s.streamPrefix}.ex.counter.c7`,
      eventType: "spool.example.v1.CounterIncremented",
      attempts: 3,
      replayedAt: undefined,
    });
    expect(entry.error).toContain("poisoned increment i7");

    // Replaying before the fix fails, records the error, and changes nothing.
    await expect(p.replay(entry)).rejects.toThrow("poisoned increment i7");
    expect(await sink.checksum(s)).toEqual(ledger.expected());
    expect((await s.deadLetters.get(entry.id))?.attempts).toBe(4);

    fx.fix();
    await p.replay(entry);
    const i7 = incrementFor(7);
    ledger.record(i7.subject, i7.id, i7.amount, 8);
    expect(await sink.checksum(s)).toEqual(ledger.expected());
    expect(await s.deadLetters.countPending("counter")).toBe(0);

    // A second replay is refused and applies nothing.
    await expect(p.replay(entry)).rejects.toBeInstanceOf(FailedPreconditionError);
    expect(await sink.checksum(s)).toEqual(ledger.expected());

    const seq = await ledger.append(s.store, "ex.counter.after", "after", 3n);
    await p.waitFor(seq, 5_000);
    expect(await sink.checksum(s)).toEqual(ledger.expected());
  });

  it("a strict projection halts at the failing event instead: unhealthy, no skip, no dead letter", async () => {
    const s = await setUp("strict");
    const fx = sink.counter(s, { poison: new Set(["i7"]), strict: true }, { maxAttempts: 3, batchSize: 50 });
    const p = fx.projector;
    const ledger = new Ledger();
    await ledger.appendMany(s.store, 20, { parallel: 1 });
    await p.start();

    await eventually(async () => (await p.status()).state === "halted", { timeoutMs: 10_000, what: "halt" });
    expect(p.healthy()).toBe(false);
    const status = await p.status();
    // Stopped right before the poisoned event (sequence 8); the ones before it are applied.
    expect(status).toMatchObject({ checkpoint: 7, head: 20, lag: 13, deadLetters: 0, strict: true });
    expect(status.lastError).toContain("poisoned increment i7");
    expect(await sink.checksum(s)).toEqual(ledgerOf(7).expected());
    expect(await s.deadLetters.countPending("counter")).toBe(0);
    // Other replicas and operators see it too.
    expect(await sink.storedState(s)).toBe("halted");
    // Read-your-writes gives up within its bound rather than serving a stale read.
    await expect(p.waitFor(20, 300)).rejects.toSatisfy(
      (e) => e instanceof SpoolError && e.code === "DEADLINE_EXCEEDED",
    );

    fx.fix();
    await p.resume();
    await p.waitFor(20, 10_000);
    expect(p.healthy()).toBe(true);
    expect(await sink.storedState(s)).toBe("running");
    expect(await sink.checksum(s)).toEqual(ledger.expected());
  });

  it("rebuilds a new version from sequence 1 under writes while the old one serves, swaps atomically, and equals the live state", async () => {
    const s = await setUp("rebuild");
    const { projector: p } = sink.counter(s, {}, {});
    const ledger = new Ledger();
    await ledger.appendMany(s.store, 5_000, { parallel: 500 });
    await p.start();
    await p.waitFor(ledger.lastSequence, 30_000);
    const live = await sink.checksum(s);
    expect(live).toEqual(ledger.expected());

    // Writers keep appending through the whole rebuild.
    let writing = true;
    const writes = (async () => {
      for (let round = 0; writing; round++) {
        await Promise.all(
          Array.from({ length: 10 }, (_, k) => {
            const inc = incrementFor(round * 10 + k, 20, "w");
            return ledger.append(s.store, inc.subject, inc.id, inc.amount);
          }),
        );
      }
    })();
    // A reader samples version, checkpoint and model in one step the whole time.
    const reader = secondPool(s);
    const samples: { version: number; checkpoint: number; sum: bigint }[] = [];
    const readErrors: unknown[] = [];
    let reading = true;
    const reads = (async () => {
      while (reading) {
        try {
          samples.push(await sink.snapshot(reader, reader.sql));
        } catch (e) {
          readErrors.push(e);
        }
      }
    })();
    const progress: ConsumerStatus[] = [];
    let watching = true;
    const watch = (async () => {
      while (watching) {
        const st = await p.status();
        if (st.rebuild) progress.push(st);
        await sleep(20);
      }
    })();

    await sleep(200);
    expect(await p.rebuild()).toEqual({ targetVersion: 2 });
    // Asking again while it runs is refused: one rebuild at a time.
    await expect(p.rebuild()).rejects.toMatchObject({ code: "FAILED_PRECONDITION" });
    await swapped(p, 2);
    await sleep(200);
    writing = false;
    await writes;
    await p.waitFor(ledger.lastSequence, 20_000);
    reading = false;
    watching = false;
    await Promise.all([reads, watch]);

    expect(readErrors).toEqual([]);
    expect(samples.some((x) => x.version === 1)).toBe(true);
    expect(samples.some((x) => x.version === 2)).toBe(true);
    // Every read matches its checkpoint exactly: no half-built version, no half-applied batch.
    for (const x of samples) expect(x.sum).toBe(ledger.sumUpTo(x.checkpoint));
    for (let i = 1; i < samples.length; i++) {
      expect(samples[i]!.checkpoint).toBeGreaterThanOrEqual(samples[i - 1]!.checkpoint);
    }
    const during = progress.find((st) => st.state === "rebuilding" && (st.rebuild?.applied ?? 0) > 0);
    expect(during?.rebuild).toMatchObject({ targetVersion: 2 });
    expect(during?.rebuild?.startedAt).toBeInstanceOf(Date);

    // The rebuilt state equals the one the live lane kept; the old version is gone.
    expect(await sink.checksum(s)).toEqual(ledger.expected());
    await retired(s, 1);
    expect(await p.status()).toMatchObject({ state: "running", version: 2, lag: 0 });
  });

  it("a rebuild survives a change of writer: the new writer resumes it from its checkpoint", async () => {
    const s = await setUp("takeover");
    const rebuildBatches: { by: string; first: number }[] = [];
    const slowRebuild = (by: string) => async (b: CommittedBatch) => {
      if (!b.rebuild) return;
      rebuildBatches.push({ by, first: b.firstSequence });
      await sleep(10);
    };
    const a = sink.counter(s, {}, { batchSize: 100, onBatchCommitted: slowRebuild("a") }).projector;
    const b = sink.counter(
      secondPool(s),
      {},
      { batchSize: 100, onBatchCommitted: slowRebuild("b") },
    ).projector;
    const ledger = new Ledger();
    await ledger.appendMany(s.store, 5_000, { parallel: 500 });
    await a.start();
    await b.start();
    expect((await b.status()).state).toBe("standby");
    await a.waitFor(ledger.lastSequence, 20_000);

    // Requested through the standby: the writer picks the request up.
    expect(await b.rebuild()).toEqual({ targetVersion: 2 });
    await eventually(() => rebuildBatches.filter((x) => x.by === "a").length >= 5, { timeoutMs: 10_000 });
    await a.stop();
    expect((await swapped(b, 2)).state).toBe("running");

    const byB = rebuildBatches.filter((x) => x.by === "b");
    expect(byB.length).toBeGreaterThan(0);
    // B started where A's last committed rebuild batch ended, not from 1.
    expect(byB[0]!.first).toBeGreaterThan(400);
    expect(await sink.checksum(s)).toEqual(ledger.expected());
    await retired(s, 1);
  });

  it("the rebuilt version supersedes the old one's dead letters and keeps its own", async () => {
    const s = await setUp("rebuilddl");
    const p = sink.counter(s, { poison: new Set(["i3", "i5"]) }, { maxAttempts: 2 }).projector;
    const ledger = new Ledger();
    await ledger.appendMany(s.store, 10, { parallel: 1, skip: (id) => id === "i3" || id === "i5" });
    await p.start();
    await p.waitFor(10, 10_000);
    expect(await s.deadLetters.countPending("counter")).toBe(2);

    // A fix for i3 only, shipped with a rebuild instead of replays.
    await p.stop();
    const fixedOnlyI3 = sink.counter(s, { poison: new Set(["i5"]) }, { maxAttempts: 2 });
    const q = fixedOnlyI3.projector;
    await q.start();
    await q.rebuild();
    await swapped(q, 2);
    const i3 = incrementFor(3);
    ledger.record(i3.subject, i3.id, i3.amount, 4);
    expect(await sink.checksum(s)).toEqual(ledger.expected());

    // i3's old entry is resolved; i5 failed again in the rebuild and is pending, for version 2.
    const pending = (await s.deadLetters.list({ consumer: "counter", limit: 10 })).items;
    expect(pending.map((d) => d.streamSequence)).toEqual([6]);
    const all = (await s.deadLetters.list({ consumer: "counter", includeReplayed: true, limit: 10 })).items;
    expect(all.find((d) => d.streamSequence === 4)?.error).toMatch(/^superseded by rebuild to v2/);

    fixedOnlyI3.fix();
    await q.replay(pending[0]!);
    const i5 = incrementFor(5);
    ledger.record(i5.subject, i5.id, i5.amount, 6);
    expect(await sink.checksum(s)).toEqual(ledger.expected());
    expect(await s.deadLetters.countPending("counter")).toBe(0);
  });
});
