import { fileURLToPath } from "node:url";
import type { NatsConnection } from "@nats-io/transport-node";
import { runTs, useInfra } from "@spool/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  counterChecksum,
  counterProjection,
  Ledger,
  type Slice,
  slice,
} from "../../test/projector-counter.js";
import { createLogger } from "../logger.js";
import { connectNats } from "../nats.js";
import { Projector } from "./index.js";

const CHILD = fileURLToPath(new URL("../../test/projector-child.ts", import.meta.url));
const infra = useInfra("projcrash");
let nc: NatsConnection;
let s: Slice;
const pids = new Set<number>();

beforeAll(async () => {
  nc = await connectNats({ url: infra().natsUrl, name: "projector-crash-test" });
  s = await slice(nc, infra(), "crash");
});
afterAll(async () => {
  // A failed test can leave a paused child holding the writer lock.
  for (const pid of pids) {
    try {
      process.kill(pid, "SIGKILL");
    } catch {
      // already gone
    }
  }
  await s?.sql.end();
  await nc?.close();
});

/**
 * The projector child, and a SIGKILL that reaches it: tsx runs the script in
 * a grandchild process, and the CLI in between cannot relay SIGKILL.
 */
function child(env: Record<string, string>) {
  const c = runTs(CHILD, {
    env: {
      ...infra().env,
      SPOOL_STREAM_PREFIX: s.streamPrefix,
      PROJECTOR_SCHEMA: s.label,
      PROJECTOR_BATCH_SIZE: "100",
      ...env,
    },
  });
  const pid = c.waitFor(/PID (\d+)/).then((line) => {
    const n = Number(line.split(" ")[1]);
    pids.add(n);
    return n;
  });
  // Surfaces in sigkill(); never an unhandled rejection when the child dies early.
  pid.catch(() => {});
  return {
    ...c,
    async sigkill(): Promise<void> {
      const n = await pid;
      process.kill(n, "SIGKILL");
      pids.delete(n);
      await c.exited;
    },
  };
}

async function checkpoint(): Promise<number> {
  const [row] = await s.sql<
    { checkpoint: string }[]
  >`SELECT checkpoint FROM spool_projections WHERE name = 'counter'`;
  return Number(row?.checkpoint ?? 0);
}

/** The read model holds exactly the increments up to the checkpoint: none missing, none twice. */
async function expectExactlyUpTo(ledger: Ledger, seq: number): Promise<void> {
  const cs = await counterChecksum(s.sql);
  const expectedRows = [...ledger.amounts.keys()].filter((q) => q <= seq).length;
  expect(cs.rows).toBe(expectedRows);
  expect(BigInt(cs.sum)).toBe(ledger.sumUpTo(seq));
}

describe("exactly once in effect", () => {
  it("survives SIGKILL right after a commit and in the middle of a transaction", async () => {
    const ledger = new Ledger();
    await ledger.appendMany(s.store, 3_000, { parallel: 300 });

    // 1. Killed after its 5th commit, before it reads the next batch.
    const first = child({ PROJECTOR_PAUSE_AFTER_COMMIT: "5" });
    const paused = Number((await first.waitFor(/PAUSED (\d+)/, 30_000)).split(" ")[1]);
    await first.sigkill();
    expect(paused).toBeGreaterThan(0);
    // The commit it announced is durable, with exactly its rows.
    expect(await checkpoint()).toBe(paused);
    await expectExactlyUpTo(ledger, paused);

    // 2. Restarted while more events arrive; killed inside its 3rd transaction,
    //    after the rows were written but before the checkpoint and the commit.
    const more = ledger.appendMany(s.store, 1_000, { parallel: 50, prefix: "m" });
    const second = child({ PROJECTOR_HANG_IN_TX: "3" });
    const inTx = Number((await second.waitFor(/IN_TX (\d+)/, 30_000)).split(" ")[1]);
    await second.sigkill();
    await more;
    const afterSecond = await checkpoint();
    // Two batches committed after the restart; the third rolled back with the process.
    expect(afterSecond).toBeGreaterThan(paused);
    expect(afterSecond).toBeLessThan(inTx);
    await expectExactlyUpTo(ledger, afterSecond);

    // 3. A fresh projector finishes the stream from the checkpoint.
    const p = new Projector(counterProjection().definition, {
      store: s.store,
      sql: s.sql,
      deadLetters: s.deadLetters,
      logger: createLogger({ service: "projector-crash-test", level: "silent" }),
      standbyRetryMs: 100,
    });
    try {
      await p.start();
      await p.waitFor(ledger.lastSequence, 30_000);
      expect(await counterChecksum(s.sql)).toEqual(ledger.expected());
      expect(await p.status()).toMatchObject({ checkpoint: ledger.lastSequence, lag: 0, deadLetters: 0 });
    } finally {
      await p.stop();
    }
  });
});
