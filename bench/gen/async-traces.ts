// Evidence for the kit's NATS `noAsyncTraces` default (docs/BENCHMARKS.md,
// "per-delivery CPU"): the same EventStore.append workload (one event per
// call, optimistic concurrency, WINDOW in flight, the shape of a producer's
// per-token appends) over two connections, one with nats.js async traces and
// one without, in interleaved rounds, reporting this process's CPU µs per
// append (load-independent enough to compare on a shared machine) and the
// appends/s. Run: node --conditions=@spool/source --import tsx bench/gen/async-traces.ts
import { randomBytes } from "node:crypto";
import { jetstreamManager } from "@nats-io/jetstream";
import { connectNats, EventStore, Namespace } from "@spool/kit";

const URL = process.env.SPOOL_TEST_NATS_URL ?? "nats://127.0.0.1:4222";
const EVENTS = Number(process.env.SPOOL_BENCH_TRACES_EVENTS ?? 20_000);
const WINDOW = Number(process.env.SPOOL_BENCH_TRACES_WINDOW ?? 100);
const ROUNDS = Number(process.env.SPOOL_BENCH_TRACES_ROUNDS ?? 3);

const prefix = `benchtr${randomBytes(3).toString("hex")}`;
const data = randomBytes(300);

async function round(store: EventStore, label: string, r: number): Promise<{ us: number; rate: number }> {
  const per = Math.ceil(EVENTS / WINDOW);
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: WINDOW }, async (_, slot) => {
      let last = 0;
      const subject = `tr.${label}.${r}.${slot}`;
      for (let i = 0; i < per; i++) {
        const res = await store.append(subject, [{ type: "spool.bench.v1.Token", schemaVersion: 1, data }], {
          expectedSequence: last,
        });
        last = res.sequence;
      }
    }),
  );
  const seconds = (performance.now() - t0) / 1000;
  const cpu = process.cpuUsage(cpu0);
  const n = per * WINDOW;
  return { us: (cpu.user + cpu.system) / n, rate: n / seconds };
}

const variants = [
  { label: "traces", noAsyncTraces: false },
  { label: "notraces", noAsyncTraces: true },
] as const;
const conns = await Promise.all(
  variants.map((v) => connectNats({ url: URL, name: `bench-${v.label}`, noAsyncTraces: v.noAsyncTraces })),
);
const stores = conns.map((nc) => new EventStore(nc, { namespace: new Namespace(prefix) }));
for (const s of stores) await s.ensureStream({ name: "TR", subjects: ["tr.>"], storage: "memory" });
const results: Record<string, { us: number; rate: number }[]> = { traces: [], notraces: [] };
try {
  for (let r = 0; r < ROUNDS; r++) {
    for (const [i, v] of variants.entries()) {
      const store = stores[i];
      if (!store) continue;
      const res = await round(store, v.label, r);
      results[v.label]?.push(res);
      console.log(
        `round ${r} ${v.label.padEnd(8)} ${res.us.toFixed(1)} µs CPU/append, ${Math.round(res.rate)} appends/s`,
      );
    }
  }
  for (const v of variants) {
    const rs = results[v.label] ?? [];
    const best = rs.reduce((a, b) => (a.us < b.us ? a : b));
    console.log(
      `${v.label}: best ${best.us.toFixed(1)} µs CPU/append; best rate ${Math.round(Math.max(...rs.map((x) => x.rate)))}/s`,
    );
  }
} finally {
  const nc = conns[0];
  if (nc)
    await (await jetstreamManager(nc)).streams
      .delete(stores[0]?.namespace.stream("TR") ?? "")
      .catch(() => {});
  await Promise.all(conns.map((c) => c.close()));
}
