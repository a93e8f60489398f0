// The follow hub's CPU per delivery, in-process and load-independent enough to
// compare variants on a shared machine (docs/BENCHMARKS.md, issue 10): G
// subjects × F live followers each on one FollowHub, a producer appending E
// events per subject (one event per append, G appends in flight, the real
// GenerationEvent encoding). Variants run interleaved; each reports this
// process's CPU per delivery (producing included, the same for every variant)
// and per append, and the appends alone are measured too. Optional baseline:
// a directory holding another version of src/follow (SPOOL_BENCH_FANOUT_BASELINE,
// e.g. main's, copied with `git show` under bench/node_modules/), measured
// against this one in the same run.
//   node --conditions=@spool/source --import tsx bench/gen/fanout-cpu.ts
import { randomBytes } from "node:crypto";
import path from "node:path";
import { jetstreamManager } from "@nats-io/jetstream";
import { connectNats, createLogger, EventStore, Namespace } from "@spool/kit";
import {
  GEN_STREAM,
  OutputEvent,
  outputStream,
  Subjects,
} from "../../services/generation-stream/src/domain/events.js";
import * as current from "../../services/generation-stream/src/follow/index.js";
import {
  outputFeed,
  type SharedEvent,
} from "../../services/generation-stream/src/grpc/generation-service.js";
import { envInt, infraUrls } from "../lib/env.js";

const G = envInt("SPOOL_BENCH_FANOUT_GENERATIONS", 50, 1);
const F = envInt("SPOOL_BENCH_FANOUT_FOLLOWERS", 10, 1);
const E = envInt("SPOOL_BENCH_FANOUT_EVENTS", 200, 2);
const ROUNDS = envInt("SPOOL_BENCH_FANOUT_ROUNDS", 3, 1);

type HubModule = typeof current;
interface Variant {
  label: string;
  hubs: HubModule | undefined;
  noAsyncTraces: boolean;
}

async function main(): Promise<void> {
  const baselineDir = process.env.SPOOL_BENCH_FANOUT_BASELINE;
  const baseline = baselineDir
    ? ((await import(path.resolve(baselineDir, "index.ts"))) as HubModule)
    : undefined;
  const variants: Variant[] = [
    ...(baseline ? [{ label: "baseline hub, async traces", hubs: baseline, noAsyncTraces: false }] : []),
    { label: "this hub, async traces", hubs: current, noAsyncTraces: false },
    { label: "this hub, noAsyncTraces", hubs: current, noAsyncTraces: true },
    { label: "appends alone, async traces", hubs: undefined, noAsyncTraces: false },
    { label: "appends alone, noAsyncTraces", hubs: undefined, noAsyncTraces: true },
  ];
  const urls = infraUrls();
  const prefix = `benchfo${randomBytes(3).toString("hex")}`;
  const logger = createLogger({ service: "bench-fanout", level: "error" });
  const conns = {
    traces: await connectNats({ url: urls.natsUrl, name: "bench-fanout-t", noAsyncTraces: false }),
    plain: await connectNats({ url: urls.natsUrl, name: "bench-fanout-p", noAsyncTraces: true }),
  };
  const stores = {
    traces: new EventStore(conns.traces, { namespace: new Namespace(prefix) }),
    plain: new EventStore(conns.plain, { namespace: new Namespace(prefix) }),
  };
  for (const s of Object.values(stores)) {
    await s.ensureStream(GEN_STREAM);
    await s.ensureStream(outputStream(3_600_000));
  }
  try {
    const rows: { label: string; usPerDelivery: number; usPerAppend: number }[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      for (const v of variants) {
        const store = v.noAsyncTraces ? stores.plain : stores.traces;
        const r = await measure(store, logger, v);
        rows.push({ label: v.label, ...r });
        console.log(
          `round ${round} ${v.label.padEnd(30)} ${r.usPerDelivery.toFixed(2).padStart(7)} µs CPU/delivery, ` +
            `${r.usPerAppend.toFixed(1)} µs CPU/append`,
        );
      }
    }
    for (const v of variants) {
      const mine = rows.filter((r) => r.label === v.label);
      const best = mine.reduce((a, b) => (a.usPerAppend < b.usPerAppend ? a : b));
      console.log(
        `best ${v.label.padEnd(30)} ${best.usPerDelivery.toFixed(2)} µs/delivery, ${best.usPerAppend.toFixed(1)} µs/append`,
      );
    }
  } finally {
    const jsm = await jetstreamManager(conns.plain);
    for (const s of [GEN_STREAM.name, "GEN_OUTPUT"])
      await jsm.streams.delete(stores.plain.namespace.stream(s)).catch(() => {});
    await conns.traces.close();
    await conns.plain.close();
  }
}

async function measure(
  store: EventStore,
  logger: ReturnType<typeof createLogger>,
  v: Variant,
): Promise<{ usPerDelivery: number; usPerAppend: number }> {
  const ids = Array.from({ length: G }, (_, g) => `fo${g}-${randomBytes(4).toString("hex")}`);
  const hub = v.hubs ? new v.hubs.FollowHub<SharedEvent>({ ...outputFeed(), store, logger }) : undefined;
  const ac = new AbortController();
  let delivered = 0;
  const following = hub
    ? ids.flatMap((id) =>
        Array.from({ length: F }, async () => {
          for await (const item of hub.follow(id, 0, ac.signal)) if (item.kind === "event") delivered++;
        }),
      )
    : [];
  // Let every follower reach its subscription's anchor (empty subjects) before producing.
  await new Promise((r) => setTimeout(r, 500));
  const cpu0 = process.cpuUsage();
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
          [OutputEvent.create({ generationId: id, sequence: BigInt(s), timeMs: BigInt(Date.now()), event })],
          { expectedSequence: last },
        );
        last = r.sequence;
      }
    }),
  );
  await Promise.all(following);
  const cpu = process.cpuUsage(cpu0);
  await hub?.close();
  const us = cpu.user + cpu.system;
  if (hub && delivered !== G * F * E) throw new Error(`delivered ${delivered} of ${G * F * E}`);
  return { usPerDelivery: hub ? us / delivered : 0, usPerAppend: us / (G * E) };
}

await main();
