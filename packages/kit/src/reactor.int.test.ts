import type { NatsConnection } from "@nats-io/transport-node";
import { eventually, useInfra } from "@spool/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Incremented } from "../test/counter.js";
import { DeadLetterStore } from "./dead-letters.js";
import { EventStore } from "./event-store.js";
import { createLogger } from "./logger.js";
import { Namespace } from "./namespace.js";
import { connectNats } from "./nats.js";
import { createPool, type Sql } from "./postgres.js";
import { Reactor } from "./reactor.js";

const infra = useInfra("reactor");
let nc: NatsConnection;
let store: EventStore;
let sql: Sql;
let deadLetters: DeadLetterStore;
const logger = createLogger({ service: "reactor-test", level: "silent" });

beforeAll(async () => {
  nc = await connectNats({ url: infra().natsUrl, name: "reactor-test" });
  store = new EventStore(nc, { namespace: new Namespace(infra().streamPrefix) });
  await store.ensureStream({ name: "EX", subjects: ["ex.>"] });
  sql = createPool({ url: infra().databaseUrl, max: 4 });
  deadLetters = new DeadLetterStore(sql);
  await deadLetters.migrate();
  // The reaction's effect: one row per increment id (idempotent by primary key).
  await sql`CREATE TABLE effects (increment_id text PRIMARY KEY, seq bigint NOT NULL)`;
});
afterAll(async () => {
  await sql?.end();
  await nc?.close();
});

describe("Reactor", () => {
  it("acks after the effect, retries with backoff, dead-letters a poisoned event and moves on", async () => {
    const attempts = new Map<string, number>();
    let poisoned = true;
    const reactor = new Reactor({
      name: "effects",
      store,
      stream: "EX",
      filterSubject: "ex.reactor.>",
      deadLetters,
      logger,
      maxDeliver: 3,
      backoffMs: [50, 100],
      handle: async (events) => {
        for (const event of events) {
          const { incrementId } = Incremented.decode(event.data);
          attempts.set(incrementId, (attempts.get(incrementId) ?? 0) + 1);
          if (poisoned && incrementId === "poison") throw new Error("cannot apply poison");
          await sql`INSERT INTO effects VALUES (${incrementId}, ${event.streamSequence}) ON CONFLICT DO NOTHING`;
        }
      },
    });
    await reactor.start();
    try {
      for (const id of ["a", "poison", "b", "c"]) {
        await store.append("ex.reactor.1", [Incremented.create({ amount: 1n, incrementId: id })]);
      }
      const rows = await eventually(
        async () => {
          const r = await sql<{ increment_id: string }[]>`SELECT increment_id FROM effects ORDER BY seq`;
          return r.length === 3 ? r : undefined;
        },
        { what: "three effects" },
      );
      expect(rows.map((r) => r.increment_id)).toEqual(["a", "b", "c"]);
      const page = await eventually(async () => {
        const p = await deadLetters.list({ consumer: "effects", limit: 10 });
        return p.items.length === 1 ? p : undefined;
      });
      const [entry] = page.items;
      expect(entry).toMatchObject({ consumer: "effects", attempts: 3, error: "cannot apply poison" });
      expect(attempts.get("poison")).toBe(3);
      await eventually(async () => (await reactor.status()).lag === 0, { what: "no lag" });

      // After the fix, a replay applies it once; a second replay is refused.
      poisoned = false;
      await reactor.replay(entry!);
      await expect(reactor.replay(entry!)).rejects.toThrow(/already replayed/);
      const poisonRows = await sql`SELECT 1 FROM effects WHERE increment_id = 'poison'`;
      expect(poisonRows).toHaveLength(1);
      expect(await deadLetters.countPending("effects")).toBe(0);
    } finally {
      await reactor.stop();
    }
  });

  it("a failing message waits for its redelivery without holding back the messages after it", async () => {
    // Unlike a projection lane (ordered: a poison event there holds every later one, so its attempts run
    // back to back), a reaction's failed message is nak'ed with a delay and the consumer keeps delivering
    // the next ones: a retry ten minutes away must not keep them waiting.
    const attempts = new Map<string, number>();
    const reactor = new Reactor({
      name: "nostall",
      store,
      stream: "EX",
      filterSubject: "ex.nostall.>",
      deadLetters,
      logger,
      maxDeliver: 3,
      backoffMs: [600_000],
      handle: async (events) => {
        for (const event of events) {
          const { incrementId } = Incremented.decode(event.data);
          attempts.set(incrementId, (attempts.get(incrementId) ?? 0) + 1);
          if (incrementId === "stuck") throw new Error("the other service is away");
          await sql`INSERT INTO effects VALUES (${incrementId}, ${event.streamSequence}) ON CONFLICT DO NOTHING`;
        }
      },
    });
    await reactor.start();
    try {
      for (const id of ["stuck", "next-1", "next-2"]) {
        await store.append("ex.nostall.1", [Incremented.create({ amount: 1n, incrementId: id })]);
      }
      await eventually(
        async () =>
          (await sql`SELECT 1 FROM effects WHERE increment_id IN ('next-1', 'next-2')`).length === 2,
        { what: "the messages after the failing one applied" },
      );
      // Still waiting for its redelivery, not dead-lettered, not retried in a loop.
      expect(attempts.get("stuck")).toBe(1);
      expect(await deadLetters.countPending("nostall")).toBe(0);
    } finally {
      await reactor.stop();
    }
  });

  it("retryIndefinitely: a 'not now' failure is retried past maxDeliver, never dead-lettered; others still are", async () => {
    class NotNow extends Error {}
    const attempts = new Map<string, number>();
    let away = true;
    const reactor = new Reactor({
      name: "notnow",
      store,
      stream: "EX",
      filterSubject: "ex.notnow.>",
      deadLetters,
      logger,
      maxDeliver: 2,
      backoffMs: [20, 40],
      retryIndefinitely: (e) => e instanceof NotNow,
      handle: async (events) => {
        for (const event of events) {
          const { incrementId } = Incremented.decode(event.data);
          attempts.set(incrementId, (attempts.get(incrementId) ?? 0) + 1);
          if (incrementId === "waits" && away) throw new NotNow("the scanner is away");
          if (incrementId === "poison") throw new Error("cannot apply poison");
          await sql`INSERT INTO effects VALUES (${incrementId}, ${event.streamSequence}) ON CONFLICT DO NOTHING`;
        }
      },
    });
    await reactor.start();
    try {
      for (const id of ["waits", "poison"]) {
        await store.append("ex.notnow.1", [Incremented.create({ amount: 1n, incrementId: id })]);
      }
      await eventually(() => (attempts.get("waits") ?? 0) >= 5, { what: "retries past maxDeliver" });
      expect(await sql`SELECT 1 FROM effects WHERE increment_id = 'waits'`).toHaveLength(0);
      away = false;
      await eventually(
        async () => (await sql`SELECT 1 FROM effects WHERE increment_id = 'waits'`).length === 1,
        {
          what: "applied once the dependency is back",
        },
      );
      const page = await eventually(async () => {
        const p = await deadLetters.list({ consumer: "notnow", limit: 10 });
        return p.items.length === 1 ? p : undefined;
      });
      expect(page.items[0]).toMatchObject({ error: "cannot apply poison", attempts: 2 });
    } finally {
      await reactor.stop();
    }
  });

  it("a restarted reactor resumes from its durable position without reprocessing acked events", async () => {
    const seen: string[] = [];
    const make = () =>
      new Reactor({
        name: "resume",
        store,
        stream: "EX",
        filterSubject: "ex.resume.>",
        deadLetters,
        logger,
        handle: async (events) => {
          for (const e of events) seen.push(Incremented.decode(e.data).incrementId);
        },
      });
    const first = make();
    await first.start();
    await store.append("ex.resume.1", [Incremented.create({ amount: 1n, incrementId: "r1" })]);
    await eventually(() => seen.length === 1);
    await eventually(async () => (await first.status()).checkpoint > 0, { what: "ack recorded" });
    await first.stop();
    await store.append("ex.resume.1", [Incremented.create({ amount: 1n, incrementId: "r2" })]);
    const second = make();
    await second.start();
    try {
      await eventually(() => seen.length === 2);
      expect(seen).toEqual(["r1", "r2"]);
    } finally {
      await second.stop();
    }
  });
});
