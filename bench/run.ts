// `make bench`: raw JetStream limits and the kit's figures beside them, with
// Emmett's PostgreSQL event store as the peer, all measured in one run on
// this machine. Not a timed test: it prints and records what it measured.
import path from "node:path";
import { type JetStreamManager, jetstreamManager } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { connectNats } from "@spool/kit";
import { type BenchConfig, loadConfig } from "./lib/config.js";
import { waitForQuiet } from "./lib/cpu.js";
import { appendToEmmett, asyncCommitUrl, emmettAppend, openEmmett } from "./lib/emmett-append.js";
import { emmettRebuild, emmettRebuildByHand } from "./lib/emmett-rebuild.js";
import { progressLog } from "./lib/env.js";
import {
  deleteStreams,
  describeMachine,
  dropDatabase,
  gitCommit,
  machineText,
  recreateDatabase,
  runPrefix,
} from "./lib/infra.js";
import { type KitAppendResult, kitAppend } from "./lib/kit-append.js";
import { KitProjection } from "./lib/kit-rebuild.js";
import { best, kitMessageBytes, type Measurement } from "./lib/measure.js";
import { rawConsumeAcked, rawConsumeOrdered } from "./lib/raw-consume.js";
import { rawPublish } from "./lib/raw-publish.js";
import {
  aheadOf,
  atLeastRate,
  atLeastRatio,
  type Figure,
  RESULTS_DIR,
  type Report,
  renderDetails,
  renderTable,
  renderVerifications,
  type Verification,
  writeReport,
} from "./lib/report.js";
import { type Checksum, type CounterRow, checksum, expectedRows, type Workload } from "./lib/workload.js";

const log = progressLog("bench");

function done(m: Measurement): Measurement {
  log(
    `  ${m.label}: ${Math.round(m.rate).toLocaleString("en-US")} events/s (${m.events} in ${m.seconds.toFixed(2)} s)`,
  );
  return m;
}

/** What every step of the run shares. */
interface Run {
  config: BenchConfig;
  w: Workload;
  /** The warm-up workload (fewer events). */
  warm: Workload;
  /** Stream prefix of this run. */
  prefix: string;
  nc: NatsConnection;
  jsm: JetStreamManager;
  /** Bytes of one kit message (headers + payload), which the raw publish matches. */
  bytes: number;
  /** What the projector's reader asks for per pull. */
  maxMessages: number;
  expected: Checksum;
  verifications: Verification[];
  notes: string[];
}

async function main(): Promise<number> {
  const config = loadConfig();
  const startedAt = new Date().toISOString();
  const w: Workload = { events: config.events, aggregates: config.aggregates, inFlight: config.inFlight };
  const warm: Workload = { ...w, events: Math.min(config.warmup, w.events) };
  const prefix = runPrefix();
  const size = kitMessageBytes(w.events, w.aggregates);

  // The kit's own connection settings, as services use them; the experiment
  // switch turns off nats.js's per-request async stack traces for both sides.
  const nc = config.noAsyncTraces
    ? await connect({ servers: config.natsUrl, name: "spool-bench", noAsyncTraces: true })
    : await connectNats({ url: config.natsUrl, name: "spool-bench" });
  const jsm = await jetstreamManager(nc);
  const machine = await describeMachine(nc, config.adminDatabaseUrl);
  log(
    `${w.events} events over ${w.aggregates} aggregates, ${w.inFlight} in flight, batch ${config.batchSize}; ` +
      `kit message ${size.headers} header + ${size.data} payload bytes; stream prefix ${prefix}`,
  );
  log(`machine: ${machineText(machine)}`);

  const run: Run = {
    config,
    w,
    warm,
    prefix,
    nc,
    jsm,
    bytes: size.headers + size.data,
    maxMessages: 2 * config.batchSize,
    expected: checksum(expectedRows(w)),
    verifications: [],
    notes: [],
  };
  let figures: Figure[];
  try {
    const kitUrl = await recreateDatabase(config.adminDatabaseUrl, config.databaseName);
    await warmUp(run);
    const write = await writeSide(run);
    const read = await readSide(run, write.events, kitUrl);
    const peer = config.skipPeer ? {} : await peerSide(run);
    figures = figuresOf(write, read, peer);
  } finally {
    await cleanUp(run);
  }

  const report: Report = {
    startedAt,
    commit: gitCommit(),
    machine,
    settings: {
      events: w.events,
      aggregates: w.aggregates,
      inFlight: w.inFlight,
      batchSize: config.batchSize,
      rounds: config.rounds,
      warmup: warm.events,
      quietWaitMs: config.quietWaitMs,
      noAsyncTraces: config.noAsyncTraces,
      kitMessageHeaderBytes: size.headers,
      kitMessagePayloadBytes: size.data,
    },
    figures,
    verifications: run.verifications,
    notes: run.notes,
  };
  const file = await writeReport(RESULTS_DIR, report);
  printReport(report, file);
  // Figures that miss a target are reported, not failed (CI does not run this);
  // a kit read model that differs from the expected totals is a defect.
  return run.verifications.every((v) => v.pass || v.scope === "peer") ? 0 : 1;
}

/** Checks a read model against the totals computed from the workload. */
function verify(run: Run, label: string, scope: "kit" | "peer", rows: CounterRow[]): void {
  const got = checksum(rows);
  const pass = got.digest === run.expected.digest && got.rows === run.expected.rows;
  run.verifications.push({ label, scope, checksum: got, expected: run.expected, pass });
  log(`  ${pass ? "✓" : "✗"} ${label}: read model ${pass ? "equals" : "DIFFERS FROM"} the expected totals`);
}

async function quiet(run: Run): Promise<void> {
  const load = await waitForQuiet(run.config.quietWaitMs);
  if (load !== undefined && load > 0.3) {
    log(`  (still ${load.toFixed(2)} CPUs busy outside the bench after waiting; measuring anyway)`);
  }
}

/** The same code paths on throwaway streams, so no contender pays for a cold JIT. */
async function warmUp({ nc, jsm, prefix, warm, bytes }: Run): Promise<void> {
  if (warm.events === 0) return;
  log(`warm-up (${warm.events} events each)`);
  await rawPublish(nc, `${prefix}w0`, warm, bytes);
  await kitAppend(nc, `${prefix}w1`, warm, "occ");
  await deleteStreams(jsm, `${prefix}w`);
}

interface WriteSide {
  pub: Measurement[];
  occ: Measurement[];
  plain: Measurement[];
  dedupe: Measurement[];
  /** The first round's kit stream: what the read side consumes and rebuilds from. */
  events: KitAppendResult;
}

/** Write side, rounds interleaved so drift (disk, page cache, other load) hits every contender alike. */
async function writeSide(run: Run): Promise<WriteSide> {
  const { nc, jsm, prefix, w, bytes, config } = run;
  const out: Omit<WriteSide, "events"> = { pub: [], occ: [], plain: [], dedupe: [] };
  let events: KitAppendResult | undefined;
  for (let r = 0; r < config.rounds; r++) {
    log(`write round ${r + 1}/${config.rounds}`);
    await quiet(run);
    out.pub.push(done(await rawPublish(nc, `${prefix}r${r}`, w, bytes)));
    await deleteStreams(jsm, `${prefix}r${r}_`);
    // The first round's stream is kept: it is what the read side consumes and rebuilds from.
    await quiet(run);
    const occ = await kitAppend(nc, r === 0 ? prefix : `${prefix}o${r}`, w, "occ");
    out.occ.push(done(occ.measurement));
    if (r === 0) events = occ;
    else await deleteStreams(jsm, `${prefix}o${r}_`);
    await quiet(run);
    out.plain.push(done((await kitAppend(nc, `${prefix}p${r}`, w, "plain")).measurement));
    await deleteStreams(jsm, `${prefix}p${r}_`);
    await quiet(run);
    out.dedupe.push(done((await kitAppend(nc, `${prefix}d${r}`, w, "occ+dedupe")).measurement));
    await deleteStreams(jsm, `${prefix}d${r}_`);
  }
  if (!events) throw new Error("no kit stream written");
  return { ...out, events };
}

interface ReadSide {
  catchUp: Measurement;
  acked: Measurement[];
  ordered: Measurement[];
  rebuilds: Measurement[];
}

/** Read side: the projector's catch-up, then raw consumers and rebuilds, interleaved. */
async function readSide(run: Run, events: KitAppendResult, kitUrl: string): Promise<ReadSide> {
  const { nc, w, config, maxMessages } = run;
  log("kit projector: initial catch-up");
  const projection = new KitProjection({
    store: events.store,
    databaseUrl: kitUrl,
    expected: w.events,
    batchSize: config.batchSize,
  });
  try {
    await quiet(run);
    const out: ReadSide = { catchUp: done(await projection.start()), acked: [], ordered: [], rebuilds: [] };
    for (let r = 0; r < config.rounds; r++) {
      log(`read round ${r + 1}/${config.rounds}`);
      await quiet(run);
      out.acked.push(
        done(await rawConsumeAcked(nc, events.stream, w.events, { maxMessages, maxAckPending: 10_000 })),
      );
      await quiet(run);
      out.ordered.push(done(await rawConsumeOrdered(nc, events.stream, w.events, { maxMessages })));
      await quiet(run);
      out.rebuilds.push(done(await projection.rebuild()));
    }
    verify(run, "kit rebuild", "kit", await projection.rows());
    return out;
  } finally {
    await projection.close();
  }
}

interface PeerSide {
  append?: Measurement;
  appendAsync?: Measurement;
  rebuild?: Measurement;
  byHand?: Measurement;
}

/** The Emmett peer: appends, its own rebuild, and a batch rebuild by hand on its tables. */
async function peerSide(run: Run): Promise<PeerSide> {
  const { w, warm, config } = run;
  const out: PeerSide = {};
  const peerUrl = await recreateDatabase(config.adminDatabaseUrl, `${config.databaseName}_emmett`);
  const emmett = openEmmett(peerUrl);
  const emmettAsync = openEmmett(asyncCommitUrl(peerUrl));
  try {
    await emmett.schema.migrate();
    // Emmett's cost per event is in PostgreSQL, not in a cold JIT: a short warm-up is enough.
    const peerWarm = { ...warm, events: Math.min(warm.events, 5_000) };
    if (peerWarm.events > 0) {
      log(`peer warm-up (${peerWarm.events} events)`);
      await appendToEmmett(emmett, peerWarm);
      await emmett.schema.dangerous.truncate({ resetSequences: true });
    }
    // At the durability JetStream 2.9 gives, then the log the rebuilds read, at the server's default.
    log("peer: Emmett append, synchronous_commit off");
    await quiet(run);
    out.appendAsync = done(await emmettAppend(emmettAsync, w, "async"));
    await emmett.schema.dangerous.truncate({ resetSequences: true });
    log("peer: Emmett append");
    await quiet(run);
    out.append = done(await emmettAppend(emmett, w, "sync"));
  } finally {
    await emmettAsync.close();
    await emmett.close();
  }
  log("peer: Emmett rebuild (rebuildPostgreSQLProjections)");
  await quiet(run);
  const native = await emmettRebuild(peerUrl, w.events, config.batchSize);
  out.rebuild = done(native.measurement);
  verify(run, "Emmett rebuild", "peer", native.rows);
  if (native.applied !== w.events) {
    run.notes.push(
      `Emmett's rebuild gave its projection ${native.applied} of ${w.events} events; see its read-model check.`,
    );
  }
  const byHand: Measurement[] = [];
  let byHandRows: CounterRow[] = [];
  for (let r = 0; r < config.rounds; r++) {
    log(`peer: batch rebuild by hand on Emmett's tables, round ${r + 1}/${config.rounds}`);
    await quiet(run);
    const result = await emmettRebuildByHand(peerUrl, w.events, config.batchSize);
    byHand.push(done(result.measurement));
    byHandRows = result.rows;
  }
  verify(run, "Emmett store, rebuild by hand", "peer", byHandRows);
  out.byHand = best(byHand);
  return out;
}

/** Each figure beside the raw limits it is a fraction of, with its targets. */
function figuresOf(write: WriteSide, read: ReadSide, peer: PeerSide): Figure[] {
  const rawPub = best(write.pub);
  const occ = best(write.occ);
  const rawAck = best(read.acked);
  const rawOrdered = best(read.ordered);
  const rebuild = best(read.rebuilds);
  return [
    { measurement: rawPub, limits: [], checks: [] },
    {
      measurement: occ,
      limits: [rawPub],
      checks: [
        atLeastRatio(occ, rawPub, 0.8),
        aheadOf(occ, peer.append),
        ...(peer.appendAsync ? [aheadOf(occ, peer.appendAsync)] : []),
      ],
    },
    { measurement: best(write.plain), limits: [rawPub], checks: [] },
    { measurement: best(write.dedupe), limits: [rawPub], checks: [] },
    ...(peer.append ? [{ measurement: peer.append, limits: [rawPub], checks: [] }] : []),
    ...(peer.appendAsync ? [{ measurement: peer.appendAsync, limits: [rawPub], checks: [] }] : []),
    { measurement: rawAck, limits: [], checks: [] },
    { measurement: rawOrdered, limits: [], checks: [] },
    { measurement: read.catchUp, limits: [rawAck, rawOrdered], checks: [] },
    {
      measurement: rebuild,
      limits: [rawAck, rawOrdered],
      checks: [
        atLeastRatio(rebuild, rawAck, 0.5),
        atLeastRate(rebuild, 40_000),
        aheadOf(rebuild, peer.rebuild),
      ],
    },
    ...(peer.rebuild ? [{ measurement: peer.rebuild, limits: [rawAck, rawOrdered], checks: [] }] : []),
    ...(peer.byHand ? [{ measurement: peer.byHand, limits: [rawAck, rawOrdered], checks: [] }] : []),
  ];
}

/** Removes the run's streams and databases (unless asked to keep them) and disconnects. */
async function cleanUp({ config, jsm, nc, prefix }: Run): Promise<void> {
  const kitDb = config.databaseName;
  const peerDb = `${config.databaseName}_emmett`;
  if (config.keep) {
    log(`kept streams ${prefix}* and databases ${kitDb}, ${peerDb}`);
  } else {
    await deleteStreams(jsm, prefix);
    await dropDatabase(config.adminDatabaseUrl, kitDb);
    await dropDatabase(config.adminDatabaseUrl, peerDb);
  }
  await nc.close();
}

function printReport(report: Report, file: string): void {
  const { machine, settings: s, figures, verifications, notes } = report;
  const out: string[] = [
    "",
    `Spool benchmark — ${Number(s.events).toLocaleString("en-US")} events, ${s.aggregates} aggregates, ` +
      `${s.inFlight} in flight, batch ${s.batchSize}, best of ${s.rounds} rounds`,
    `${machine.cpus} CPUs, ${machine.memoryGiB} GiB, Node ${machine.node}, nats-server ${machine.natsServer}, ` +
      `PostgreSQL ${machine.postgres}`,
    "",
    renderTable(figures),
    "",
    "How each figure was measured:",
    renderDetails(figures),
    "",
    "Read models (checksum of counter_totals against the totals computed from the workload):",
    renderVerifications(verifications),
    ...(notes.length > 0 ? ["", "Notes:", ...notes.map((n) => `- ${n}`)] : []),
    "",
    `Written to ${path.relative(process.cwd(), file)}`,
    "",
  ];
  process.stdout.write(out.join("\n"));
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (e: unknown) => {
    process.stderr.write(`[bench] failed: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
    process.exitCode = 1;
  },
);
