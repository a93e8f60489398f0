import type { NatsConnection } from "@nats-io/transport-node";
import { useInfra } from "@spool/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { counterReducer, Incremented, Noted } from "../test/counter.js";
import { handleCommand } from "./command.js";
import { ConcurrencyError } from "./errors.js";
import { EventStore } from "./event-store.js";
import { Namespace } from "./namespace.js";
import { connectNats } from "./nats.js";

const infra = useInfra("es");
let nc: NatsConnection;
let store: EventStore;

beforeAll(async () => {
  nc = await connectNats({ url: infra().natsUrl, name: "event-store-test" });
  store = new EventStore(nc, { namespace: new Namespace(infra().streamPrefix) });
  await store.ensureStream({ name: "EX", subjects: ["ex.>"] });
});
afterAll(async () => {
  await nc?.close();
});

describe("append", () => {
  it("stores a command's events in one message with typed headers", async () => {
    const r = await store.append(
      "ex.counter.multi",
      [Incremented.create({ amount: 2n, incrementId: "a" }), Noted.create({ note: "hi" })],
      { expectedSequence: 0, actor: "user-1", correlationId: "corr-1" },
    );
    const batches = [];
    for await (const b of store.readSubject("ex.counter.multi")) batches.push(b);
    expect(batches).toHaveLength(1);
    const [events] = batches;
    expect(events?.map((e) => e.type)).toEqual([
      "spool.example.v1.CounterIncremented",
      "spool.example.v1.CounterNoted",
    ]);
    expect(events?.every((e) => e.streamSequence === r.sequence && e.actor === "user-1")).toBe(true);
    expect(events?.[0]?.correlationId).toBe("corr-1");
    expect(Noted.decode(events?.[1]?.data ?? new Uint8Array()).note).toBe("hi");
  });

  it("rejects a stale expected sequence with the typed concurrency error", async () => {
    const subject = "ex.counter.stale";
    await store.append(subject, [Incremented.create({ amount: 1n, incrementId: "x" })], {
      expectedSequence: 0,
    });
    await expect(
      store.append(subject, [Incremented.create({ amount: 1n, incrementId: "y" })], { expectedSequence: 0 }),
    ).rejects.toBeInstanceOf(ConcurrencyError);
  });

  it("50 parallel appends with the same expected sequence: exactly one wins", async () => {
    const subject = "ex.counter.race";
    const first = await store.append(subject, [Incremented.create({ amount: 1n, incrementId: "seed" })]);
    const results = await Promise.allSettled(
      Array.from({ length: 50 }, (_, i) =>
        store.append(subject, [Incremented.create({ amount: 1n, incrementId: `p${i}` })], {
          expectedSequence: first.sequence,
        }),
      ),
    );
    const won = results.filter((r) => r.status === "fulfilled");
    const lost = results.filter((r) => r.status === "rejected");
    expect(won).toHaveLength(1);
    expect(lost).toHaveLength(49);
    for (const r of lost) expect((r as PromiseRejectedResult).reason).toBeInstanceOf(ConcurrencyError);
    expect(await store.lastSequence(subject)).toBe(
      (won[0] as PromiseFulfilledResult<{ sequence: number }>).value.sequence,
    );
  });

  it("the command helper's retry applies all 50 parallel commands with no lost update", async () => {
    const subject = "ex.counter.retry";
    const results = await Promise.all(
      Array.from({ length: 50 }, (_, i) =>
        handleCommand(store, {
          subject,
          reducer: counterReducer,
          maxAttempts: 200,
          decide: () => [Incremented.create({ amount: 1n, incrementId: `c${i}` })],
        }),
      ),
    );
    expect(results.some((r) => r.attempts > 1)).toBe(true);
    // A fresh store (empty state cache) replays the log from scratch.
    const fresh = new EventStore(nc, { namespace: store.namespace });
    await fresh.ensureStream({ name: "EX", subjects: ["ex.>"] });
    const { state } = await fresh.load(subject, counterReducer);
    expect(state.total).toBe(50n);
    expect(new Set(state.increments).size).toBe(50);
  });

  it("the same append retried with the same message id stores one event", async () => {
    const subject = "ex.counter.dedupe";
    const event = Incremented.create({ amount: 5n, incrementId: "once" });
    const a = await store.append(subject, [event], { messageId: "cmd-123", expectedSequence: 0 });
    const b = await store.append(subject, [event], { messageId: "cmd-123", expectedSequence: 0 });
    const c = await store.append(subject, [event], { messageId: "cmd-123" });
    expect(a.duplicate).toBe(false);
    expect(b).toMatchObject({ duplicate: true, sequence: a.sequence });
    expect(c).toMatchObject({ duplicate: true, sequence: a.sequence });
    store.forget(subject);
    const { state } = await store.load(subject, counterReducer);
    expect(state.increments).toEqual(["once"]);
  });

  it("load uses the state cache and replays only what is new", async () => {
    const subject = "ex.counter.cache";
    await store.append(subject, [Incremented.create({ amount: 1n, incrementId: "1" })]);
    const first = await store.load(subject, counterReducer);
    await store.append(subject, [Incremented.create({ amount: 2n, incrementId: "2" })]);
    const second = await store.load(subject, counterReducer);
    expect(first.state.total).toBe(1n);
    expect(second.state.total).toBe(3n);
    expect(second.version).toBeGreaterThan(first.version);
  });
});

// Issue 7 item 16: every uncached load used to leave an ephemeral consumer on
// the stream for its 5-minute inactivity threshold.
describe("reads leave no consumers behind", () => {
  const consumerCount = async () => {
    const jsm = await store.manager();
    return (await jsm.streams.info(store.streamFor("ex.x"))).state.consumer_count;
  };

  it("1,000 uncached loads of short and long aggregates: consumer count unchanged, state right", async () => {
    const short = "ex.counter.leak-short";
    const long = "ex.counter.leak-long";
    await store.append(short, [Incremented.create({ amount: 1n, incrementId: "s1" })]);
    await store.append(short, [Incremented.create({ amount: 2n, incrementId: "s2" })]);
    // Longer than what is read message by message: the rest goes through a consumer.
    for (let i = 0; i < 40; i++) {
      await store.append(long, [Incremented.create({ amount: 1n, incrementId: `l${i}` })]);
      await store.append("ex.counter.leak-other", [Incremented.create({ amount: 1n, incrementId: `o${i}` })]);
    }
    const before = await consumerCount();
    for (let i = 0; i < 1_000; i++) {
      const subject = i % 10 === 0 ? long : short;
      store.forget(subject);
      const { state } = await store.load(subject, counterReducer);
      expect(state.total).toBe(subject === long ? 40n : 3n);
    }
    expect(await consumerCount()).toBe(before);
  });

  it("a long subject is read in order from any position, and an abandoned read deletes its consumer", async () => {
    const subject = "ex.counter.leak-partial";
    const sequences: number[] = [];
    for (let i = 0; i < 60; i++) {
      sequences.push(
        (await store.append(subject, [Incremented.create({ amount: 1n, incrementId: `p${i}` })])).sequence,
      );
    }
    const read = async (after: number) => {
      const got: number[] = [];
      for await (const events of store.readSubject(subject, after)) got.push(events[0]?.streamSequence ?? -1);
      return got;
    };
    expect(await read(0)).toEqual(sequences);
    expect(await read(sequences[9] ?? 0)).toEqual(sequences.slice(10));
    expect(await read(sequences[59] ?? 0)).toEqual([]);

    const before = await consumerCount();
    let n = 0;
    for await (const _ of store.readSubject(subject)) if (++n === 30) break;
    expect(await consumerCount()).toBe(before);
  });
});
