// Raw limits for reading the stream the kit wrote, nothing decoded or stored:
// - the definition: a durable pull consumer, explicit ack per message;
// - the projector's own read path: an ordered (ephemeral, unacked) pull
//   consumer. The projector keeps its checkpoint in PostgreSQL, so it acks
//   nothing; this is the stricter ceiling for it.
import { setTimeout as sleep } from "node:timers/promises";
import {
  AckPolicy,
  type ConsumerMessages,
  DeliverPolicy,
  jetstream,
  jetstreamManager,
} from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import { type Measurement, measurement } from "./measure.js";
import { timed } from "./workload.js";

export interface RawConsumeOptions {
  /** Messages the client asks for at a time (consume's max_messages). */
  maxMessages: number;
  /** Unacknowledged messages the server lets out at once (durable consumer). */
  maxAckPending: number;
}

async function drain(messages: ConsumerMessages, expected: number, ack: boolean): Promise<number> {
  let received = 0;
  for await (const m of messages) {
    if (ack) m.ack();
    if (++received >= expected) break;
  }
  messages.stop();
  return received;
}

export async function rawConsumeAcked(
  nc: NatsConnection,
  stream: string,
  expected: number,
  options: RawConsumeOptions,
): Promise<Measurement> {
  const jsm = await jetstreamManager(nc);
  const durable = "bench_raw_consume";
  await jsm.consumers.add(stream, {
    durable_name: durable,
    ack_policy: AckPolicy.Explicit,
    deliver_policy: DeliverPolicy.All,
    max_ack_pending: options.maxAckPending,
  });
  try {
    const consumer = await jetstream(nc).consumers.get(stream, durable);
    const {
      seconds,
      cpu,
      value: received,
    } = await timed(async () => {
      const n = await drain(await consumer.consume({ max_messages: options.maxMessages }), expected, true);
      // Acks are fire-and-forget; count the time until the server has read them all.
      await nc.flush();
      return n;
    });
    if (received !== expected) throw new Error(`raw consume received ${received} of ${expected}`);
    // Outside the timing: every ack must have landed.
    for (let i = 0; ; i++) {
      const info = await jsm.consumers.info(stream, durable);
      if (info.num_ack_pending === 0 && info.ack_floor.stream_seq >= expected) break;
      if (i > 100) throw new Error(`raw consume: ${info.num_ack_pending} messages still unacknowledged`);
      await sleep(20);
    }
    return measurement(
      "raw.consume",
      "raw consume (durable + ack)",
      received,
      seconds,
      `durable pull consumer, consume({ max_messages: ${options.maxMessages} }), ` +
        `max_ack_pending ${options.maxAckPending}, ack() per message, nothing decoded`,
      cpu,
    );
  } finally {
    await jsm.consumers.delete(stream, durable);
  }
}

export async function rawConsumeOrdered(
  nc: NatsConnection,
  stream: string,
  expected: number,
  options: Pick<RawConsumeOptions, "maxMessages">,
): Promise<Measurement> {
  const consumer = await jetstream(nc).consumers.get(stream, { deliver_policy: DeliverPolicy.All });
  try {
    const {
      seconds,
      cpu,
      value: received,
    } = await timed(async () =>
      drain(await consumer.consume({ max_messages: options.maxMessages }), expected, false),
    );
    if (received !== expected) throw new Error(`raw ordered consume received ${received} of ${expected}`);
    return measurement(
      "raw.consume.ordered",
      "raw consume (ordered, no ack)",
      received,
      seconds,
      `ordered pull consumer (the projector's reader), consume({ max_messages: ${options.maxMessages} }), ` +
        `nothing acked or decoded`,
      cpu,
    );
  } finally {
    await consumer.delete().catch(() => {});
  }
}
