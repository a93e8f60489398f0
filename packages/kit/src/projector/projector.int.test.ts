import type { NatsConnection } from "@nats-io/transport-node";
import { eventually, useInfra } from "@spool/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  type CounterTables,
  counterChecksum,
  counterProjection,
  incrementFor,
  Ledger,
  type Slice,
  slice,
} from "../../test/projector-counter.js";
import { FailedPreconditionError, SpoolError } from "../errors.js";
import { createLogger } from "../logger.js";
import { connectNats } from "../nats.js";
import { createPool } from "../postgres.js";
import { type CommittedBatch, Projector, type ProjectorOptions } from "./index.js";

const infra = useInfra("projector");
const logger = createLogger({ service: "projector-test", level: process.env.SPOOL_TEST_LOG ?? "silent" });
let nc: NatsConnection;
const cleanups: (() => Promise<unknown>)[] = [];

beforeAll(async () => {
  nc = await connectNats({ url: infra().natsUrl, name: "projector-test" });
});
afterAll(async () => {
  for (const c of cleanups.reverse()) await c().catch(() => {});
  await nc?.close();
});

async function setUp(label: string): Promise<Slice> {
  const s = await slice(nc, infra(), label);
  cleanups.push(() => s.sql.end());
  return s;
}

function projector(
  s: Slice,
  definition: ReturnType<typeof counterProjection>["definition"],
  options: Partial<ProjectorOptions> = {},
): Projector<CounterTables> {
  const p = new Projector(definition, {
    store: s.store,
    sql: s.sql,
    deadLetters: s.deadLetters,
    logger,
    standbyRetryMs: 100,
    pollIntervalMs: 100,
    ...options,
  });
  cleanups.push(() => p.stop());
  return p;
}

/** Expected read model after the first n increments of appendMany, minus some ids. */
function ledgerOf(n: number, without: string[] = []): Ledger {
  const l = new Ledger();
  for (let i = 0; i < n; i++) {
    const inc = incrementFor(i);
    if (!without.includes(inc.id)) l.record(inc.subject, inc.id, inc.amount, i + 1);
  }
  return l;
}

describe("projector", () => {
  it("applies the stream in batches, reports status and serves read-your-writes", async () => {
    const s = await setUp("basic");
    const fx = counterProjection();
    const batches: CommittedBatch[] = [];
    const p = projector(s, fx.definition, { batchSize: 100, onBatchCommitted: (b) => void batches.push(b) });
    const ledger = new Ledger();
    await ledger.appendMany(s.store, 1_000);
    await p.start();
    await p.waitFor(ledger.lastSequence, 10_000);

    expect(await counterChecksum(s.sql)).toEqual(ledger.expected());
    // Batched, not message by message, and never more than batchSize.
    expect(batches.length).toBeLessThan(100);
    expect(Math.max(...batches.map((b) => b.messages))).toBeLessThanOrEqual(100);
    const status = await p.status();
    expect(status).toMatchObject({
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

    // Read-your-writes: the write's sequence is visible once waitFor resolves.
    const seq = await ledger.append(s.store, "ex.counter.ryw", "ryw", 5n);
    await p.waitFor(seq, 5_000);
    const [row] = await s.sql<
      { total: string }[]
    >`SELECT total FROM counter_totals WHERE subject = 'ex.counter.ryw'`;
    expect(row?.total).toBe("5");

    await p.stop();
    expect((await p.status()).state).toBe("stopped");
    expect(p.healthy()).toBe(false);
  });

  it("dead-letters an event that keeps failing, moves on, and replays it exactly once after a fix", async () => {
    const s = await setUp("poison");
    const fx = counterProjection({ poison: new Set(["i7"]) });
    const p = projector(s, fx.definition, { maxAttempts: 3, batchSize: 50 });
    const ledger = new Ledger();
    // One at a time, so increment i has stream sequence i + 1.
    await ledger.appendMany(s.store, 20, { parallel: 1, skip: (id) => id === "i7" });
    await p.start();
    await p.waitFor(ledger.lastSequence, 10_000);

    // Everything but the poisoned event, including the events after it.
    expect(await counterChecksum(s.sql)).toEqual(ledger.expected());
    // Once inside its batch, then maxAttempts times alone.
    expect(fx.poisonAttempts.get("i7")).toBe(1 + 3);
    const status = await p.status();
    expect(status).toMatchObject({ state: "running", checkpoint: 20, lag: 0, deadLetters: 1 });
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
    expect(await counterChecksum(s.sql)).toEqual(ledger.expected());
    expect((await s.deadLetters.get(entry.id))?.attempts).toBe(4);

    fx.fixed = true;
    await p.replay(entry);
    const i7 = incrementFor(7);
    ledger.record(i7.subject, i7.id, i7.amount, 8);
    expect(await counterChecksum(s.sql)).toEqual(ledger.expected());
    expect(await s.deadLetters.countPending("counter")).toBe(0);

    // A second replay is refused and applies nothing.
    await expect(p.replay(entry)).rejects.toBeInstanceOf(FailedPreconditionError);
    expect(await counterChecksum(s.sql)).toEqual(ledger.expected());

    const seq = await ledger.append(s.store, "ex.counter.after", "after", 3n);
    await p.waitFor(seq, 5_000);
    expect(await counterChecksum(s.sql)).toEqual(ledger.expected());
  });

  it("a strict projection halts at the failing event instead: unhealthy, no skip, no dead letter", async () => {
    const s = await setUp("strict");
    const fx = counterProjection({ poison: new Set(["i7"]), strict: true });
    const p = projector(s, fx.definition, { maxAttempts: 3, batchSize: 50 });
    const ledger = new Ledger();
    await ledger.appendMany(s.store, 20, { parallel: 1 });
    await p.start();

    await eventually(async () => (await p.status()).state === "halted", { timeoutMs: 10_000, what: "halt" });
    expect(p.healthy()).toBe(false);
    const status = await p.status();
    // Stopped right before the poisoned event (sequence 8); the ones before it are applied.
    expect(status).toMatchObject({ checkpoint: 7, head: 20, lag: 13, deadLetters: 0, strict: true });
    expect(status.lastError).toContain("poisoned increment i7");
    expect(await counterChecksum(s.sql)).toEqual(ledgerOf(7).expected());
    expect(await s.deadLetters.countPending("counter")).toBe(0);
    const [row] = await s.sql<{ checkpoint: string; state: string }[]>`
      SELECT checkpoint, state FROM spool_projections WHERE name = 'counter'`;
    expect(row).toEqual({ checkpoint: "7", state: "halted" });
    // Read-your-writes gives up within its bound rather than serving a stale read.
    await expect(p.waitFor(20, 300)).rejects.toSatisfy(
      (e) => e instanceof SpoolError && e.code === "DEADLINE_EXCEEDED",
    );

    fx.fixed = true;
    await p.resume();
    await p.waitFor(20, 10_000);
    expect(p.healthy()).toBe(true);
    expect(await counterChecksum(s.sql)).toEqual(ledger.expected());
  });

  it("one writer per projection: the second instance stands by and takes over without double-applying", async () => {
    const s = await setUp("single");
    const sqlB = createPool({ url: s.databaseUrl, schema: s.label, max: 4 });
    cleanups.push(() => sqlB.end());
    const commits = { a: 0, b: 0 };
    const a = projector(s, counterProjection().definition, {
      batchSize: 50,
      onBatchCommitted: () => void commits.a++,
    });
    const b = projector({ ...s, sql: sqlB }, counterProjection().definition, {
      batchSize: 50,
      onBatchCommitted: () => void commits.b++,
    });
    await Promise.all([a.start(), b.start()]);
    const states = [(await a.status()).state, (await b.status()).state].sort();
    expect(states).toEqual(["running", "standby"]);
    const [active, standby, activeKey, standbyKey] =
      (await a.status()).state === "running" ? ([a, b, "a", "b"] as const) : ([b, a, "b", "a"] as const);

    const ledger = new Ledger();
    await ledger.appendMany(s.store, 500, { prefix: "x" });
    // The standby answers read-your-writes from the checkpoint row the writer keeps.
    await standby.waitFor(ledger.lastSequence, 10_000);
    expect(commits[standbyKey]).toBe(0);
    expect(commits[activeKey]).toBeGreaterThan(0);
    expect(await counterChecksum(s.sql)).toEqual(ledger.expected());

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
    expect(await counterChecksum(s.sql)).toEqual(ledger.expected());
  });

  it("a writer whose lock session dies steps down, and the next writer applies nothing twice", async () => {
    const s = await setUp("lostlock");
    const sqlB = createPool({ url: s.databaseUrl, schema: s.label, max: 4 });
    cleanups.push(() => sqlB.end());
    const a = projector(s, counterProjection().definition, { batchSize: 50 });
    const b = projector({ ...s, sql: sqlB }, counterProjection().definition, { batchSize: 50 });
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
        AND ((classid::bigint << 32) | objid::bigint) = hashtextextended(${`${s.label}:spool:projection:counter`}, 0)`;
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
    expect(await counterChecksum(s.sql)).toEqual(ledger.expected());
  });

  it("recreates its stream consumer when the server loses it", async () => {
    const s = await setUp("lostconsumer");
    const p = projector(s, counterProjection().definition, { stallTimeoutMs: 1_000 });
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
    expect(await counterChecksum(s.sql)).toEqual(ledger.expected());
  });

  it("a filtered projection sees only its subjects and counts lag against them", async () => {
    const s = await setUp("filtered");
    const fx = counterProjection({ filterSubject: "ex.counter.c1", perEvent: true });
    const p = projector(s, fx.definition);
    await new Ledger().appendMany(s.store, 40, { parallel: 1 });
    await p.start();
    // i = 1 and 21 are on c1, at sequences 2 and 22.
    await p.waitFor(22, 10_000);
    const expected = new Ledger();
    for (const i of [1, 21]) {
      const inc = incrementFor(i);
      expected.record(inc.subject, inc.id, inc.amount, i + 1);
    }
    expect(await counterChecksum(s.sql)).toEqual(expected.expected());
    expect(await p.status()).toMatchObject({ checkpoint: 22, head: 22, lag: 0 });
    // A write on another subject is not this projection's: waiting for it ends once caught up.
    await p.waitFor(40, 2_000);
  });
});
