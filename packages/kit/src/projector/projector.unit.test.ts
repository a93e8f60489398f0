import { describe, expect, it } from "vitest";
import type { EventMessage, RecordedEvent } from "../events.js";
import { createLogger } from "../logger.js";
import { defineProjection, tableNames, validateDefinition } from "./definition.js";
import { FencedError, HaltedError, HandlerFailure, isTransient } from "./errors.js";
import { Lane, type Sink } from "./lane.js";
import { Mutex } from "./shared.js";

function pgError(code: string): Error {
  return Object.assign(new Error(`pg ${code}`), { name: "PostgresError", code });
}

describe("isTransient", () => {
  it("retries outages, not the event's own failures", () => {
    // Connection loss, deadlock, serialization failure, shutdown, statement timeout.
    for (const code of ["08006", "40P01", "40001", "57P01", "57014", "53300"]) {
      expect(isTransient(pgError(code))).toBe(true);
    }
    expect(isTransient(Object.assign(new Error("closed"), { code: "CONNECTION_CLOSED" }))).toBe(true);
    expect(isTransient(Object.assign(new Error("refused"), { code: "ECONNREFUSED" }))).toBe(true);
    // Constraint violation, bad data, syntax: the event (or the handler) is at fault.
    for (const code of ["23505", "22P02", "42601"]) expect(isTransient(pgError(code))).toBe(false);
    expect(isTransient(new Error("poisoned"))).toBe(false);
  });

  it("looks through a handler failure to its cause", () => {
    expect(isTransient(new HandlerFailure(pgError("40P01")))).toBe(true);
    expect(isTransient(new HandlerFailure(new TypeError("x is undefined")))).toBe(false);
  });

  it("never retries a fence or a halt as an outage", () => {
    expect(isTransient(new FencedError("p", "the checkpoint"))).toBe(false);
    expect(isTransient(new HaltedError("p", 7, new Error("bad")))).toBe(false);
  });
});

describe("projection definitions", () => {
  const base = {
    name: "totals",
    stream: "EX",
    tables: ["counter_totals", "counter_log"] as const,
    migrate: async () => {},
    apply: async () => {},
  };

  it("names each version's physical tables", () => {
    expect(tableNames(["counter_totals", "counter_log"], 3)).toEqual({
      counter_totals: "counter_totals_v3",
      counter_log: "counter_log_v3",
    });
  });

  it("refuses names that are not plain identifiers, and handlerless projections", () => {
    expect(() => validateDefinition(defineProjection({ ...base, tables: ["counter_totals"] }))).not.toThrow();
    expect(() => validateDefinition({ ...base, name: "Totals" })).toThrow(/projection name/);
    expect(() => validateDefinition({ ...base, tables: ["x; DROP TABLE y"] })).toThrow(/table name/);
    expect(() => validateDefinition({ ...base, tables: ["t".repeat(51)] })).toThrow(/table name/);
    expect(() => validateDefinition({ ...base, tables: [] })).toThrow(/no tables/);
    const { apply: _, ...noHandler } = base;
    expect(() => validateDefinition(noHandler)).toThrow(/apply or applyBatch/);
  });
});

describe("Mutex", () => {
  it("runs sections one at a time, in order, past a failing one", async () => {
    const mutex = new Mutex();
    const log: string[] = [];
    const section = (name: string, ms: number, fail = false) =>
      mutex.run(async () => {
        log.push(`start ${name}`);
        await new Promise((r) => setTimeout(r, ms));
        log.push(`end ${name}`);
        if (fail) throw new Error(name);
        return name;
      });
    const results = await Promise.allSettled([section("a", 20), section("b", 1, true), section("c", 5)]);
    expect(results.map((r) => r.status)).toEqual(["fulfilled", "rejected", "fulfilled"]);
    expect(log).toEqual(["start a", "end a", "start b", "end b", "start c", "end c"]);
  });
});

describe("Lane", () => {
  /** A sink in memory whose handler throws for one stream sequence, and answers without I/O. */
  function poisonedSink(poison: number) {
    const applied: number[] = [];
    const attempts: number[] = [];
    const deadLetters: { seq: number; attempts: number; from: number }[] = [];
    const sink: Sink = {
      version: 1,
      rebuild: false,
      async commit(events) {
        const seqs = events.map((e) => e.streamSequence);
        if (seqs.includes(poison)) {
          attempts.push(seqs.length);
          throw new HandlerFailure(new Error("poisoned"));
        }
        applied.push(...seqs);
      },
      async deadLetter(message, from, n) {
        deadLetters.push({ seq: message.seq, attempts: n, from });
      },
    };
    return { sink, applied, attempts, deadLetters };
  }

  const decode = (m: EventMessage): RecordedEvent[] => [
    {
      stream: "EX",
      subject: m.subject,
      streamSequence: m.seq,
      index: 0,
      type: "t",
      schemaVersion: 1,
      eventId: `e${m.seq}`,
      data: m.data,
      time: new Date(0),
      correlationId: undefined,
      causationId: undefined,
    } as RecordedEvent,
  ];

  it("dead-letters a poison event after maxAttempts immediate attempts and applies the later ones", async () => {
    const { sink, applied, attempts, deadLetters } = poisonedSink(4);
    const lane = new Lane({
      projection: "p",
      sink,
      checkpoint: 0,
      decode,
      maxAttempts: 3,
      strict: false,
      signal: new AbortController().signal,
      logger: createLogger({ service: "lane-test", level: "silent" }),
      metrics: undefined,
      onBatchCommitted: undefined,
      onTransient: () => {},
    });
    const messages = Array.from({ length: 10 }, (_, i) => ({
      subject: "ex.a",
      seq: i + 1,
      data: new Uint8Array(),
    }));
    // The sink never does I/O, so a lane that never waits on a timer finishes
    // before this zero-delay timer fires; one that backs off between attempts
    // (the whole lane waiting, ~1.5 s per poison event before) does not.
    let timerFired = false;
    const timer = setTimeout(() => {
      timerFired = true;
    }, 0);
    await lane.apply(messages);
    clearTimeout(timer);

    // Once inside the batch, then three times alone.
    expect(attempts).toEqual([10, 1, 1, 1]);
    expect(deadLetters).toEqual([{ seq: 4, attempts: 3, from: 3 }]);
    expect(applied).toEqual([1, 2, 3, 5, 6, 7, 8, 9, 10]);
    expect(lane.checkpoint).toBe(10);
    expect(timerFired).toBe(false);
  });
});
