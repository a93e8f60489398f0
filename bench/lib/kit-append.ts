// The kit's append path: EventStore.append of one counter event per call,
// pipelined with a window in flight, each slot owning its aggregates so it
// always knows the expected sequence it passes for optimistic concurrency.
import type { NatsConnection } from "@nats-io/transport-node";
import { type AppendOptions, EventStore, Namespace } from "@spool/kit";
import { type Measurement, measurement } from "./measure.js";
import { aggregatesOf, eventAt, eventsOf, Incremented, runSlots, timed, type Workload } from "./workload.js";

export type AppendMode =
  /** Nats-Expected-Last-Subject-Sequence on every append (the command path). */
  | "occ"
  /** Expected sequence and a Nats-Msg-Id (a command id) for deduplication of retries. */
  | "occ+dedupe"
  /** Unconditional appends. */
  | "plain";

export const EVENT_STREAM = "EX";

export interface KitAppendResult {
  measurement: Measurement;
  /** Full stream name, for the scenarios that read it back. */
  stream: string;
  store: EventStore;
}

export async function kitAppend(
  nc: NatsConnection,
  prefix: string,
  w: Workload,
  mode: AppendMode,
): Promise<KitAppendResult> {
  const store = new EventStore(nc, { namespace: new Namespace(prefix) });
  const stream = await store.ensureStream({ name: EVENT_STREAM, subjects: ["ex.>"] });
  let appended = 0;
  const { seconds, cpu } = await timed(() =>
    runSlots(w.inFlight, async (slot) => {
      for (const a of aggregatesOf(w, slot)) {
        const subject = `ex.counter.${a}`;
        let version = 0;
        for (const k of eventsOf(w, a)) {
          const e = eventAt(k, w.aggregates);
          const options: AppendOptions =
            mode === "plain"
              ? {}
              : mode === "occ"
                ? { expectedSequence: version }
                : { expectedSequence: version, messageId: e.incrementId };
          const result = await store.append(
            subject,
            [Incremented.create({ amount: BigInt(e.amount), incrementId: e.incrementId })],
            options,
          );
          if (result.duplicate) throw new Error(`append of ${e.incrementId} reported a duplicate`);
          version = result.sequence;
          appended++;
        }
      }
    }),
  );
  if (appended !== w.events) throw new Error(`kit append stored ${appended} of ${w.events}`);
  const info = await (await store.manager()).streams.info(stream);
  if (info.state.messages !== w.events) {
    throw new Error(`kit append: stream holds ${info.state.messages} messages, expected ${w.events}`);
  }
  const what =
    mode === "plain"
      ? "unconditional"
      : mode === "occ"
        ? "with expectedSequence (optimistic concurrency)"
        : "with expectedSequence and messageId (deduplication)";
  return {
    measurement: measurement(
      `kit.append.${mode}`,
      `kit append, ${mode === "plain" ? "no OCC" : mode === "occ" ? "OCC" : "OCC + dedupe id"}`,
      w.events,
      seconds,
      `EventStore.append of one CounterIncremented per call ${what}, ${w.aggregates} aggregates, ` +
        `${w.inFlight} in flight`,
      cpu,
    ),
    stream,
    store,
  };
}
