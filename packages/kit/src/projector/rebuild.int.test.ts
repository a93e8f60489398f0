import type { NatsConnection } from "@nats-io/transport-node";
import { eventually, useInfra } from "@spool/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  type CounterTables,
  counterChecksum,
  counterProjection,
  Ledger,
  type Slice,
  slice,
} from "../../test/projector-counter.js";
import { createLogger } from "../logger.js";
import type { ConsumerStatus } from "../managed.js";
import { connectNats } from "../nats.js";
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

// What a rebuild does (under writes, atomic swap, equality with the live state,
// takeover, dead letters) is in sink-contract.int.test.ts, for every sink; this
// measures the PostgreSQL projector's speed.
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
});
