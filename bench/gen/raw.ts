// The raw limit beside the fan-out figures: a bare ordered (ephemeral, unacked)
// pull consumer reading the messages the service itself wrote to its
// GEN_OUTPUT stream during the run — real output events, their real sizes —
// nothing decoded. Every generation-stream follow is fed by such a consumer
// (one per followed generation per replica, fanned out in memory).
// observeOutput measures the same consumer's delay (append → receipt) live,
// beside a step.
import { DeliverPolicy, jetstream, jetstreamManager } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import { GenerationEvent } from "@spool/proto/spool/generation/v1/generation.js";
import { Histogram } from "../lib/summary.js";
import { wallClock } from "./shared.js";

export interface RawConsume {
  stream: string;
  /** Messages read per round. */
  messages: number;
  /** Average stored message size (payload + headers), bytes. */
  avgBytes: number;
  /** Messages per second of each round. */
  rounds: number[];
  /** The best round (noise only ever slows a round down). */
  rate: number;
  maxMessages: number;
}

export async function rawConsume(
  nc: NatsConnection,
  stream: string,
  limit: number,
  rounds: number,
  maxMessages: number,
): Promise<RawConsume> {
  const jsm = await jetstreamManager(nc);
  const info = await jsm.streams.info(stream);
  const messages = Math.min(limit, info.state.messages);
  if (messages === 0) throw new Error(`${stream} holds no messages`);
  const avgBytes = info.state.bytes / Math.max(1, info.state.messages);
  const js = jetstream(nc);
  const rates: number[] = [];
  for (let r = 0; r < rounds; r++) {
    const consumer = await js.consumers.get(stream, { deliver_policy: DeliverPolicy.All });
    try {
      const t = performance.now();
      const iter = await consumer.consume({ max_messages: maxMessages });
      let n = 0;
      for await (const _m of iter) {
        if (++n >= messages) break;
      }
      iter.stop();
      const seconds = (performance.now() - t) / 1000;
      if (n !== messages) throw new Error(`raw consume read ${n} of ${messages}`);
      rates.push(n / seconds);
    } finally {
      await consumer.delete().catch(() => {});
    }
  }
  return { stream, messages, avgBytes, rounds: rates, rate: Math.max(...rates), maxMessages };
}

/**
 * The JetStream leg of the delay, observed beside a Spool step: an ordered
 * consumer on every output subject (what one follow subscription of the
 * service is, for all generations at once) records, per message, receipt −
 * the event's producer append time. Returns a stop function giving
 * [receipt wall ms, delay ms] pairs.
 */
export async function observeOutput(
  nc: NatsConnection,
  stream: string,
  subject: string,
): Promise<() => Promise<Float64Array>> {
  const consumer = await jetstream(nc).consumers.get(stream, {
    filter_subjects: subject,
    deliver_policy: DeliverPolicy.New,
  });
  const iter = await consumer.consume({ max_messages: 256 });
  const clock = wallClock();
  let samples = new Float64Array(1 << 18);
  let n = 0;
  const loop = (async () => {
    for await (const m of iter) {
      const now = clock();
      let sent: number;
      try {
        sent = Number(GenerationEvent.decode(m.data).timeMs);
      } catch {
        continue; // a batch message (not written by the output log)
      }
      if (n + 2 > samples.length) {
        const bigger = new Float64Array(samples.length * 2);
        bigger.set(samples);
        samples = bigger;
      }
      samples[n++] = now;
      samples[n++] = now - sent;
    }
  })();
  return async () => {
    iter.stop();
    await loop.catch(() => {});
    await consumer.delete().catch(() => {});
    return samples.slice(0, n);
  };
}

/** The delays of observed messages received inside [fromMs, toMs). */
export function delaysWithin(samples: Float64Array, fromMs: number, toMs: number): Histogram {
  const h = new Histogram();
  for (let i = 0; i + 1 < samples.length; i += 2) {
    const at = samples[i] ?? 0;
    if (at >= fromMs && at < toMs) h.record(samples[i + 1] ?? 0);
  }
  return h;
}
