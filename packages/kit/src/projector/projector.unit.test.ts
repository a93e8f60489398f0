import { describe, expect, it } from "vitest";
import { defineProjection, tableNames, validateDefinition } from "./definition.js";
import { FencedError, HaltedError, HandlerFailure, isTransient } from "./errors.js";
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
