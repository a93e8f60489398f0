// The workload every contender runs: N counter increments spread over A
// aggregates, appended by W concurrent slots, and the read model they fold to.
import { createHash } from "node:crypto";
import { eventType } from "@spool/kit";
import { CounterIncremented } from "@spool/proto/spool/example/v1/example.js";
import { type CpuShare, sampleCpu } from "./cpu.js";

/** The example counter event (the same type the kit's tests use). */
export const Incremented = eventType("spool.example.v1.CounterIncremented", CounterIncremented);

export interface Workload {
  events: number;
  aggregates: number;
  inFlight: number;
}

/** Event k: aggregate k mod A, amount 1..7, a unique increment id. */
export function eventAt(
  k: number,
  aggregates: number,
): { aggregate: number; amount: number; incrementId: string } {
  return { aggregate: k % aggregates, amount: (k % 7) + 1, incrementId: `inc-${k}` };
}

/** Event indexes of one aggregate, in order. */
export function* eventsOf(w: Workload, aggregate: number, offset = 0): Generator<number> {
  for (let k = aggregate; k < w.events; k += w.aggregates) yield k + offset;
}

/** Aggregates owned by one in-flight slot: a slot appends to its own aggregates only, so it always knows their version. */
export function* aggregatesOf(w: Workload, slot: number): Generator<number> {
  for (let a = slot; a < w.aggregates; a += w.inFlight) yield a;
}

export interface CounterRow {
  counterId: string;
  total: bigint;
  increments: number;
}

/** The read model the events fold to: counter id = the aggregate number as text. */
export function expectedRows(w: Workload): CounterRow[] {
  const totals = new Map<number, CounterRow>();
  for (let k = 0; k < w.events; k++) {
    const e = eventAt(k, w.aggregates);
    const row = totals.get(e.aggregate) ?? { counterId: String(e.aggregate), total: 0n, increments: 0 };
    row.total += BigInt(e.amount);
    row.increments += 1;
    totals.set(e.aggregate, row);
  }
  return [...totals.values()];
}

export interface Checksum {
  rows: number;
  total: string;
  increments: number;
  /** sha256 (first 16 hex) over the rows sorted by counter id. */
  digest: string;
}

export function checksum(rows: readonly CounterRow[]): Checksum {
  const sorted = [...rows].sort((a, b) =>
    a.counterId < b.counterId ? -1 : a.counterId > b.counterId ? 1 : 0,
  );
  const hash = createHash("sha256");
  let total = 0n;
  let increments = 0;
  for (const r of sorted) {
    hash.update(`${r.counterId}:${r.total}:${r.increments}\n`);
    total += r.total;
    increments += r.increments;
  }
  return {
    rows: sorted.length,
    total: total.toString(),
    increments,
    digest: hash.digest("hex").slice(0, 16),
  };
}

/**
 * Runs one worker per in-flight slot and waits for all: with W slots each
 * awaiting its own call in a loop, exactly W calls are in flight until the
 * slots run dry.
 */
export async function runSlots(slots: number, worker: (slot: number) => Promise<void>): Promise<void> {
  const running: Promise<void>[] = [];
  for (let s = 0; s < slots; s++) running.push(worker(s));
  await Promise.all(running);
}

export interface Timed<T> {
  seconds: number;
  value: T;
  cpu: CpuShare | undefined;
}

export async function timed<T>(fn: () => Promise<T>): Promise<Timed<T>> {
  const cpu = sampleCpu();
  const start = performance.now();
  const value = await fn();
  const seconds = (performance.now() - start) / 1_000;
  return { seconds, value, cpu: cpu() };
}
