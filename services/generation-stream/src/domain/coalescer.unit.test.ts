import { describe, expect, it } from "vitest";
import { Coalescer } from "./coalescer.js";

function manualTimers() {
  const pending = new Set<() => void>();
  return {
    setTimer: (fn: () => void) => {
      pending.add(fn);
      return () => pending.delete(fn);
    },
    fire: () => {
      for (const fn of [...pending]) {
        pending.delete(fn);
        fn();
      }
    },
    count: () => pending.size,
  };
}

describe("Coalescer", () => {
  it("holds text for one window and emits it as one delta", async () => {
    const out: string[] = [];
    const timers = manualTimers();
    const c = new Coalescer({
      windowMs: 20,
      maxChars: 100,
      emit: async (t) => void out.push(t),
      setTimer: timers.setTimer,
    });
    for (const tok of ["Hel", "lo", ", ", "world"]) await c.push(tok);
    expect(out).toEqual([]);
    expect(timers.count()).toBe(1);
    timers.fire();
    await c.flush();
    expect(out).toEqual(["Hello, world"]);
  });

  it("emits at once when the size bound is reached, in order", async () => {
    const out: string[] = [];
    const timers = manualTimers();
    const c = new Coalescer({
      windowMs: 20,
      maxChars: 4,
      emit: async (t) => void out.push(t),
      setTimer: timers.setTimer,
    });
    for (const tok of ["ab", "cd", "ef", "g"]) await c.push(tok);
    await c.flush();
    expect(out).toEqual(["abcd", "efg"]);
    expect(out.join("")).toBe("abcdefg");
  });

  it("surfaces an emission failure on the next push", async () => {
    const c = new Coalescer({
      windowMs: 20,
      maxChars: 1,
      emit: async () => {
        throw new Error("lease lost");
      },
    });
    await expect(c.push("x")).rejects.toThrow(/lease lost/);
    await expect(c.push("y")).rejects.toThrow(/lease lost/);
  });
});
