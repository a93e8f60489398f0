import { describe, expect, it } from "vitest";
import { Marks, Ring, type RingEntry } from "./ring.js";

function entry(sequence: number, bytes = 1, terminal = false): RingEntry<string> {
  return { sequence, terminal, payload: `e${sequence}`, streamSequence: sequence * 10, bytes };
}

describe("Ring", () => {
  it("holds a contiguous run and serves events by sequence", () => {
    const ring = new Ring<string>({ maxEvents: 10, maxBytes: 1_000 });
    ring.reset(5);
    for (let s = 5; s <= 8; s++) expect(ring.push(entry(s))).toBe(true);
    expect([ring.first, ring.next, ring.size]).toEqual([5, 9, 4]);
    expect(ring.get(4)).toBeUndefined();
    expect(ring.get(6)?.payload).toBe("e6");
    expect(ring.get(9)).toBeUndefined();
  });

  it("ignores duplicates and restarts at an event past a gap", () => {
    const ring = new Ring<string>({ maxEvents: 10, maxBytes: 1_000 });
    ring.reset(1);
    ring.push(entry(1));
    ring.push(entry(2));
    expect(ring.push(entry(2))).toBe(false);
    expect(ring.push(entry(1))).toBe(false);
    expect(ring.push(entry(5))).toBe(true);
    expect([ring.first, ring.next]).toEqual([5, 6]);
    expect(ring.get(2)).toBeUndefined();
  });

  it("evicts the oldest events by count and by bytes, keeping the newest", () => {
    const byCount = new Ring<string>({ maxEvents: 3, maxBytes: 1_000 });
    byCount.reset(1);
    for (let s = 1; s <= 5; s++) byCount.push(entry(s));
    expect([byCount.first, byCount.next]).toEqual([3, 6]);

    const byBytes = new Ring<string>({ maxEvents: 100, maxBytes: 10 });
    byBytes.reset(1);
    for (let s = 1; s <= 4; s++) byBytes.push(entry(s, 4));
    expect([byBytes.first, byBytes.next, byBytes.bytes]).toEqual([3, 5, 8]);
    byBytes.push(entry(5, 50));
    expect([byBytes.first, byBytes.next, byBytes.bytes]).toEqual([5, 6, 50]);
  });

  it("stays correct across compactions of a long run", () => {
    const ring = new Ring<string>({ maxEvents: 100, maxBytes: 1_000_000 });
    ring.reset(1);
    for (let s = 1; s <= 10_000; s++) {
      ring.push(entry(s));
      if (s % 997 === 0) {
        expect(ring.first).toBe(Math.max(1, s - 99));
        for (let q = ring.first; q < ring.next; q++) expect(ring.get(q)?.sequence).toBe(q);
      }
    }
    expect(ring.size).toBe(100);
  });
});

describe("Marks", () => {
  it("finds the closest message at or below a sequence", () => {
    const marks = new Marks();
    marks.add(10, 100);
    marks.add(20, 200);
    marks.add(5, 50); // learned out of order, from a read of older events
    marks.add(20, 999); // already known
    expect(marks.floor(4)).toBe(0);
    expect(marks.floor(5)).toBe(50);
    expect(marks.floor(19)).toBe(100);
    expect(marks.floor(20)).toBe(200);
    expect(marks.floor(1_000)).toBe(200);
  });

  it("stays bounded and never points past the sequence asked for", () => {
    const marks = new Marks(64);
    for (let s = 1; s <= 5_000; s++) marks.add(s, s * 3);
    expect(marks.size).toBeLessThanOrEqual(64);
    for (const q of [1, 2, 77, 2_500, 4_999, 5_000]) {
      const at = marks.floor(q);
      expect(at).toBeGreaterThan(0);
      expect(at).toBeLessThanOrEqual(q * 3);
    }
  });
});
