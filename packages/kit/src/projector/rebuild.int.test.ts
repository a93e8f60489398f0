import { setTimeout as sleep } from "node:timers/promises";
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
import { createLogger } from "../logger.js";
import type { ConsumerStatus } from "../managed.js";
import { connectNats } from "../nats.js";
import { createPool, type Sql } from "../postgres.js";
import { Projector, type ProjectorOptions } from "./index.js";

const infra = useInfra("rebuild");
const logger = createLogger({ service: "rebuild-test", level: process.env.SPOOL_TEST_LOG ?? "silent" });
let nc: NatsConnection;
const cleanups: (() => Promise<unknown>)[] = [];

beforeAll(async () => {
  nc = await connectNats({ url: infra().natsUrl, name: "rebuild-test" });
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

function pool(s: Slice): Sql {
  const sql = createPool({ url: s.databaseUrl, schema: s.label, max: 4 });
  cleanups.push(() => sql.end());
  return sql;
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

async function swapped(p: Projector<CounterTables>, version: number): Promise<ConsumerStatus> {
  return eventually(
    async () => {
      const st = await p.status();
      return st.version === version && st.rebuild === undefined ? st : undefined;
    },
    { timeoutMs: 50_000, intervalMs: 50, what: `swap to v${version}` },
  );
}

// Rebuild under writes, atomic swap and equality with the live state are in
// sink-contract.int.test.ts, for every sink; these are the PostgreSQL projector's own.
describe("rebuild", () => {
  it("measures rebuild speed on a quiet stream", async () => {
    const s = await setUp("speed");
    const p = projector(s, counterProjection().definition);
    const ledger = new Ledger();
    await ledger.appendMany(s.store, 30_000, { parallel: 1_000 });
    await p.start();
    await p.waitFor(ledger.lastSequence, 30_000);
    const started = Date.now();
    await p.rebuild();
    await swapped(p, 2);
    const seconds = (Date.now() - started) / 1000;
    console.info(
      `rebuild: 30000 events in ${seconds.toFixed(2)} s (${Math.round(30_000 / seconds)} events/s)`,
    );
    expect(await counterChecksum(s.sql)).toEqual(ledger.expected());
  });

  it("a rebuild survives a change of writer: the new writer resumes it from its checkpoint", async () => {
    const s = await setUp("takeover");
    const rebuildBatches: { by: string; first: number }[] = [];
    const slowRebuild = (by: string) => async (b: { rebuild: boolean; firstSequence: number }) => {
      if (!b.rebuild) return;
      rebuildBatches.push({ by, first: b.firstSequence });
      await sleep(10);
    };
    const a = projector(s, counterProjection().definition, {
      batchSize: 100,
      onBatchCommitted: slowRebuild("a"),
    });
    const b = projector({ ...s, sql: pool(s) }, counterProjection().definition, {
      batchSize: 100,
      onBatchCommitted: slowRebuild("b"),
    });
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
    const swappedStatus = await swapped(b, 2);
    expect(swappedStatus.state).toBe("running");

    const byB = rebuildBatches.filter((x) => x.by === "b");
    expect(byB.length).toBeGreaterThan(0);
    // B started where A's last committed rebuild batch ended, not from 1.
    expect(byB[0]!.first).toBeGreaterThan(400);
    expect(await counterChecksum(s.sql)).toEqual(ledger.expected());
  });

  it("the rebuilt version supersedes the old one's dead letters and keeps its own", async () => {
    const s = await setUp("deadletters");
    const fx = counterProjection({ poison: new Set(["i3", "i5"]) });
    const p = projector(s, fx.definition, { maxAttempts: 2 });
    const ledger = new Ledger();
    await ledger.appendMany(s.store, 10, { parallel: 1, skip: (id) => id === "i3" || id === "i5" });
    await p.start();
    await p.waitFor(10, 10_000);
    expect(await s.deadLetters.countPending("counter")).toBe(2);

    // A fix for i3 only, shipped with a rebuild instead of replays.
    const fixedOnlyI3 = counterProjection({ poison: new Set(["i5"]), name: "counter" });
    await p.stop();
    const q = projector(s, fixedOnlyI3.definition, { maxAttempts: 2 });
    await q.start();
    await q.rebuild();
    await swapped(q, 2);
    const i3 = incrementFor(3);
    ledger.record(i3.subject, i3.id, i3.amount, 4);
    expect(await counterChecksum(s.sql)).toEqual(ledger.expected());

    // i3's old entry is resolved; i5 failed again in the rebuild and is pending, for version 2.
    const pending = (await s.deadLetters.list({ consumer: "counter", limit: 10 })).items;
    expect(pending.map((d) => d.streamSequence)).toEqual([6]);
    const all = (await s.deadLetters.list({ consumer: "counter", includeReplayed: true, limit: 10 })).items;
    expect(all.find((d) => d.streamSequence === 4)?.error).toMatch(/^superseded by rebuild to v2/);

    fixedOnlyI3.fixed = true;
    await q.replay(pending[0]!);
    const i5 = incrementFor(5);
    ledger.record(i5.subject, i5.id, i5.amount, 6);
    expect(await counterChecksum(s.sql)).toEqual(ledger.expected());
    expect(await s.deadLetters.countPending("counter")).toBe(0);
  });
});
