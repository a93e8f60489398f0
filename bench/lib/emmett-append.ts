// Peer: the same events appended to Emmett's PostgreSQL event store, one
// appendToStream per event with its expected stream version, the same window
// of callers in flight. Emmett runs its own pool (pg's default, 10 connections).
import type { Event } from "@event-driven-io/emmett";
import { getPostgreSQLEventStore, type PostgresEventStore } from "@event-driven-io/emmett-postgresql";
import { type Measurement, measurement } from "./measure.js";
import { aggregatesOf, eventAt, eventsOf, runSlots, timed, type Workload } from "./workload.js";

export type CounterIncrementedEvent = Event<"CounterIncremented", { amount: number; incrementId: string }>;

/** Emmett takes the stream type from the name's first segment: "counter". */
export const emmettStream = (aggregate: number): string => `counter-${aggregate}`;

export function openEmmett(connectionString: string): PostgresEventStore {
  return getPostgreSQLEventStore(connectionString);
}

/**
 * The same database with commits acknowledged before their WAL is flushed
 * (synchronous_commit off, per session): the durability nats-server 2.9 gives
 * a JetStream append, which is acked before it reaches the disk.
 */
export function asyncCommitUrl(connectionString: string): string {
  const u = new URL(connectionString);
  u.searchParams.set("options", "-c synchronous_commit=off");
  return u.toString();
}

/** Appends the workload, each slot to its own streams with their expected versions. */
export async function appendToEmmett(store: PostgresEventStore, w: Workload): Promise<number> {
  let appended = 0;
  await runSlots(w.inFlight, async (slot) => {
    for (const a of aggregatesOf(w, slot)) {
      const stream = emmettStream(a);
      // 0n: the stream must not exist yet (Emmett's OCC, like expectedSequence 0 in the kit).
      let version = 0n;
      for (const k of eventsOf(w, a)) {
        const e = eventAt(k, w.aggregates);
        const event: CounterIncrementedEvent = {
          type: "CounterIncremented",
          data: { amount: e.amount, incrementId: e.incrementId },
        };
        const result = await store.appendToStream<CounterIncrementedEvent>(stream, [event], {
          expectedStreamVersion: version,
        });
        version = result.nextExpectedStreamVersion;
        appended++;
      }
    }
  });
  return appended;
}

export async function emmettAppend(
  store: PostgresEventStore,
  w: Workload,
  commit: "sync" | "async",
): Promise<Measurement> {
  const { seconds, cpu, value: appended } = await timed(() => appendToEmmett(store, w));
  if (appended !== w.events) throw new Error(`Emmett append stored ${appended} of ${w.events}`);
  return measurement(
    commit === "sync" ? "peer.append" : "peer.append.async-commit",
    commit === "sync" ? "Emmett append" : "Emmett append, synchronous_commit off",
    w.events,
    seconds,
    `appendToStream of one event per call with expectedStreamVersion, ${w.aggregates} streams, ` +
      `${w.inFlight} callers in flight on Emmett's default pool (pg.Pool, 10 connections)` +
      (commit === "sync"
        ? ", the server's synchronous_commit (on: each commit waits for its WAL flush)"
        : ", synchronous_commit off for its sessions (acked before the WAL flush, like nats-server 2.9)"),
    cpu,
  );
}
