// Bounded catch-up (issue 10): many followers resuming at once on a freshly
// started replica. G generations of E output events each are written to the
// log (the service's real event encoding), then, per variant, a fresh
// FollowHub (nothing in memory, as on a replica that just started) gets
// G × F follows from after_sequence 0 at once. Reported per variant: the
// JetStream consumers the hub created (catch-up reads plus shared
// subscriptions), the time until every follower had its terminal event, and
// this process's CPU. Every follower's sequence is checked (1…E, no gap, no
// duplicate). Variants run interleaved, best round kept.
//   node --conditions=@spool/source --import tsx bench/gen/catchup.ts
import { randomBytes } from "node:crypto";
import { jetstreamManager } from "@nats-io/jetstream";
import { connectNats, createLogger, EventStore, Namespace } from "@spool/kit";
import {
  GEN_STREAM,
  OutputEvent,
  outputStream,
  Subjects,
} from "../../services/generation-stream/src/domain/events.js";
import { FollowHub } from "../../services/generation-stream/src/follow/index.js";
import {
  outputFeed,
  type SharedEvent,
} from "../../services/generation-stream/src/grpc/generation-service.js";
import { envInt, infraUrls } from "../lib/env.js";

const G = envInt("SPOOL_BENCH_CATCHUP_GENERATIONS", 100, 1);
const F = envInt("SPOOL_BENCH_CATCHUP_FOLLOWERS", 10, 1);
const E = envInt("SPOOL_BENCH_CATCHUP_EVENTS", 200, 2);
const ROUNDS = envInt("SPOOL_BENCH_CATCHUP_ROUNDS", 2, 1);

interface Variant {
  label: string;
  options: { catchUpBytes?: number; maxCatchUpReads?: number };
}
const VARIANTS: Variant[] = [
  // The behaviour before: every follower behind memory opens its own consumer, all at once.
  { label: "one read per follower (before)", options: { catchUpBytes: 0, maxCatchUpReads: 1_000_000 } },
  { label: "reads alone, capped at 64", options: { catchUpBytes: 0 } },
  { label: "shared read per generation (default)", options: {} },
];

export interface CatchUpResult {
  label: string;
  followers: number;
  consumersCreated: number;
  sharedReads: number;
  mostReadsAloneAtOnce: number;
  /** Followers whose follow failed (e.g. NATS timeouts when too many consumers are created at once). */
  failed: number;
  firstError: string | undefined;
  seconds: number;
  cpuMs: number;
}

async function main(): Promise<void> {
  const urls = infraUrls();
  const prefix = `benchcu${randomBytes(3).toString("hex")}`;
  const nc = await connectNats({ url: urls.natsUrl, name: "bench-catchup" });
  const store = new EventStore(nc, { namespace: new Namespace(prefix) });
  const logger = createLogger({ service: "bench-catchup", level: "error" });
  await store.ensureStream(GEN_STREAM);
  await store.ensureStream(outputStream(3_600_000));
  try {
    const ids = Array.from({ length: G }, (_, g) => `cu${g}-${randomBytes(4).toString("hex")}`);
    const t0 = performance.now();
    await Promise.all(
      ids.map(async (id) => {
        let last = 0;
        for (let s = 1; s <= E; s++) {
          const event =
            s === E
              ? { $case: "completed" as const, value: { usage: undefined } }
              : { $case: "delta" as const, value: { text: ` word${s}` } };
          const r = await store.append(
            Subjects.output(id),
            [
              OutputEvent.create({
                generationId: id,
                sequence: BigInt(s),
                timeMs: BigInt(Date.now()),
                event,
              }),
            ],
            { expectedSequence: last },
          );
          last = r.sequence;
        }
      }),
    );
    console.log(
      `wrote ${G} generations × ${E} events in ${((performance.now() - t0) / 1000).toFixed(1)} s; ${G * F} followers per round`,
    );
    const results: CatchUpResult[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      for (const v of VARIANTS) {
        const r = await measure(store, logger, ids, v);
        results.push(r);
        console.log(
          `round ${round} ${v.label.padEnd(38)} consumers ${String(r.consumersCreated).padStart(5)} ` +
            `(shared ${r.sharedReads}, at most ${r.mostReadsAloneAtOnce} alone at once), ` +
            `${r.followers - r.failed} caught up in ${r.seconds.toFixed(2)} s, ${r.failed} failed` +
            `${r.firstError ? ` (${r.firstError})` : ""}, CPU ${r.cpuMs.toFixed(0)} ms`,
        );
      }
    }
    console.log(`RESULT ${JSON.stringify(results)}`);
  } finally {
    const jsm = await jetstreamManager(nc);
    for (const s of [GEN_STREAM.name, "GEN_OUTPUT"])
      await jsm.streams.delete(store.namespace.stream(s)).catch(() => {});
    await nc.close();
  }
}

async function measure(
  store: EventStore,
  logger: ReturnType<typeof createLogger>,
  ids: string[],
  v: Variant,
): Promise<CatchUpResult> {
  const hub = new FollowHub<SharedEvent>({ ...outputFeed(), store, logger, ...v.options });
  const ac = new AbortController();
  let most = 0;
  const sampler = setInterval(() => {
    most = Math.max(most, hub.stats().catchUpReadsOpen);
  }, 2);
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  let failed = 0;
  let firstError: string | undefined;
  try {
    await Promise.all(
      ids.flatMap((id) =>
        Array.from({ length: F }, async () => {
          let expected = 1;
          try {
            for await (const item of hub.follow(id, 0, ac.signal)) {
              if (item.kind !== "event") continue;
              if (item.sequence !== expected)
                throw new SequenceError(`${id}: got ${item.sequence}, expected ${expected}`);
              expected++;
            }
          } catch (e) {
            // A follow that fails is counted (a client would retry it); a wrong sequence is not tolerated.
            if (e instanceof SequenceError) throw e;
            failed++;
            firstError ??=
              e instanceof Error
                ? `${e.message}${e.cause instanceof Error ? `: ${e.cause.message}` : ""}`
                : String(e);
            return;
          }
          if (expected !== E + 1) throw new SequenceError(`${id}: ended after ${expected - 1} of ${E}`);
        }),
      ),
    );
    const seconds = (performance.now() - t0) / 1000;
    const cpu = process.cpuUsage(cpu0);
    const st = hub.stats();
    return {
      label: v.label,
      followers: ids.length * F,
      consumersCreated: st.catchUps + st.sharedConsumers,
      sharedReads: st.sharedCatchUps,
      mostReadsAloneAtOnce: most,
      failed,
      firstError,
      seconds,
      cpuMs: (cpu.user + cpu.system) / 1000,
    };
  } finally {
    clearInterval(sampler);
    await hub.close();
  }
}

class SequenceError extends Error {}

await main();
