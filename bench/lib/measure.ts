// What every scenario returns, and the message size shared by the write scenarios.
import type { MsgHdrs } from "@nats-io/transport-node";
import { encodeMessage } from "@spool/kit";
import type { CpuShare } from "./cpu.js";
import { eventAt, Incremented } from "./workload.js";

export interface Round {
  rate: number;
  /** CPU use during the round, when /proc is there to tell. */
  cpu: CpuShare | undefined;
}

export interface Measurement {
  /** Stable key, e.g. "kit.append.occ". */
  key: string;
  label: string;
  events: number;
  seconds: number;
  /** Events per second (the best round, when there were several). */
  rate: number;
  /** CPU use during that round. */
  cpu: CpuShare | undefined;
  /** Every round, in order. */
  rounds: Round[];
  /** How it was measured, in a sentence or two. */
  detail: string;
}

export function measurement(
  key: string,
  label: string,
  events: number,
  seconds: number,
  detail: string,
  cpu: CpuShare | undefined,
): Measurement {
  const rate = events / seconds;
  return { key, label, events, seconds, rate, cpu, rounds: [{ rate, cpu }], detail };
}

/**
 * The best of several rounds of one scenario. Noise on a shared 2-core
 * machine only ever slows a round down, so the fastest is the closest to
 * what the code can do; every round is kept.
 */
export function best(rounds: readonly Measurement[]): Measurement {
  const first = rounds[0];
  if (!first) throw new Error("no rounds measured");
  const top = rounds.reduce((a, b) => (b.rate > a.rate ? b : a));
  return { ...top, rounds: rounds.flatMap((r) => r.rounds) };
}

/** Bytes of a header block on the wire: `NATS/1.0\r\n`, `k: v\r\n` per value, `\r\n`. */
export function headerBytes(h: MsgHdrs): number {
  let n = "NATS/1.0\r\n".length + 2;
  for (const [k, values] of h) {
    for (const v of values) n += Buffer.byteLength(`${k}: ${v}\r\n`);
  }
  return n;
}

/** Size of one kit event message (headers + protobuf payload) for the workload's largest increment id. */
export function kitMessageBytes(events: number, aggregates: number): { headers: number; data: number } {
  const e = eventAt(Math.max(0, events - 1), aggregates);
  const { headers, data } = encodeMessage(
    [Incremented.create({ amount: BigInt(e.amount), incrementId: e.incrementId })],
    {},
  );
  return { headers: headerBytes(headers), data: data.byteLength };
}
