// Raw limit for appends: bare js.publish of messages as large as a kit event
// message, to the same subject layout, with the same window in flight.
import { randomBytes } from "node:crypto";
import type { NatsConnection } from "@nats-io/transport-node";
import { EventStore, Namespace } from "@spool/kit";
import { type Measurement, measurement } from "./measure.js";
import { aggregatesOf, eventsOf, runSlots, timed, type Workload } from "./workload.js";

/** Publishes w.events messages of `bytes` each to a fresh stream under `prefix`. */
export async function rawPublish(
  nc: NatsConnection,
  prefix: string,
  w: Workload,
  bytes: number,
): Promise<Measurement> {
  const store = new EventStore(nc, { namespace: new Namespace(prefix) });
  // Same stream configuration as the kit's event streams; only the publish path differs.
  const stream = await store.ensureStream({ name: "RAW", subjects: ["raw.>"] });
  const payload = randomBytes(bytes);
  const { js } = store;
  let stored = 0;
  const { seconds, cpu } = await timed(() =>
    runSlots(w.inFlight, async (slot) => {
      for (const a of aggregatesOf(w, slot)) {
        const subject = `${prefix}.raw.counter.${a}`;
        for (const _ of eventsOf(w, a)) {
          await js.publish(subject, payload);
          stored++;
        }
      }
    }),
  );
  if (stored !== w.events) throw new Error(`raw publish stored ${stored} of ${w.events}`);
  const info = await (await store.manager()).streams.info(stream);
  if (info.state.messages !== w.events) {
    throw new Error(`raw publish: stream holds ${info.state.messages} messages, expected ${w.events}`);
  }
  return measurement(
    "raw.publish",
    "raw JetStream publish",
    w.events,
    seconds,
    `js.publish of ${bytes}-byte payloads (the size of a kit event message, headers included) ` +
      `to ${w.aggregates} subjects, ${w.inFlight} in flight, awaiting each PubAck`,
    cpu,
  );
}
