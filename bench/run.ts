// `make bench`: raw JetStream limits and the kit's figures beside them, with
// Emmett's PostgreSQL event store as the peer, all measured in one run on
// this machine. Not a timed test: it prints and records what it measured.
import path from "node:path";
import { fileURLToPath } from "node:url";
import { jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { connectNats } from "@spool/kit";
import { loadConfig } from "./lib/config.js";
import { waitForQuiet } from "./lib/cpu.js";
import { appendToEmmett, asyncCommitUrl, emmettAppend, openEmmett } from "./lib/emmett-append.js";
import { emmettRebuild, emmettRebuildByHand } from "./lib/emmett-rebuild.js";
import {
  deleteStreams,
  describeMachine,
  dropDatabase,
  gitCommit,
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
  type Report,
  renderDetails,
  renderTable,
  renderVerifications,
  type Verification,
  writeReport,
} from "./lib/report.js";
import { type CounterRow, checksum, expectedRows, type Workload } from "./lib/workload.js";

const here = path.dirname(fileURLToPath(import.meta.url));

function log(message: string): void {
  process.stderr.write(`[bench] ${message}\n`);
}

function done(m: Measurement): Measurement {
  log(
    `  ${m.label}: ${Math.round(m.rate).toLocaleString("en-US")} events/s (${m.events} in ${m.seconds.toFixed(2)} s)`,
  );
  return m;
}

async function main(): Promise<number> {
  const config = loadConfig();
  const startedAt = new Date().toISOString();
  const w: Workload = { events: config.events, aggregates: config.aggregates, inFlight: config.inFlight };
  const warm: Workload = { ...w, events: Math.min(config.warmup, w.events) };
  const prefix = runPrefix();
  const kitDb = config.databaseName;
  const peerDb = `${config.databaseName}_emmett`;
  const size = kitMessageBytes(w.events, w.aggregates);
  const expected = checksum(expectedRows(w));

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
  log(
    `machine: ${machine.cpus} CPUs (${machine.cpuModel}), ${machine.memoryGiB} GiB, Node ${machine.node}, ` +
      `nats-server ${machine.natsServer}, PostgreSQL ${machine.postgres}`,
  );

  const figures: Figure[] = [];
  const verifications: Verification[] = [];
  const notes: string[] = [];
  const verify = (label: string, scope: "kit" | "peer", rows: CounterRow[]): void => {
    const got = checksum(rows);
    const pass = got.digest === expected.digest && got.rows === expected.rows;
    verifications.push({ label, scope, checksum: got, expected, pass });
    log(`  ${pass ? "✓" : "✗"} ${label}: read model ${pass ? "equals" : "DIFFERS FROM"} the expected totals`);
  };
  const bytes = size.headers + size.data;
  const quiet = async (): Promise<void> => {
    const load = await waitForQuiet(config.quietWaitMs);
    if (load !== undefined && load > 0.3) {
      log(`  (still ${load.toFixed(2)} CPUs busy outside the bench after waiting; measuring anyway)`);
    }
  };
  const maxMessages = 2 * config.batchSize; // what the projector's reader asks for

  try {
    const kitUrl = await recreateDatabase(config.adminDatabaseUrl, kitDb);

    // Warm-up: the same code paths on throwaway streams, so no contender pays for a cold JIT.
    if (warm.events > 0) {
      log(`warm-up (${warm.events} events each)`);
      await rawPublish(nc, `${prefix}w0`, warm, bytes);
      await kitAppend(nc, `${prefix}w1`, warm, "occ");
      await deleteStreams(jsm, `${prefix}w`);
    }

    // Write side, rounds interleaved so drift (disk, page cache, other load) hits every contender alike.
    const pub: Measurement[] = [];
    const occRounds: Measurement[] = [];
    const plainRounds: Measurement[] = [];
    const dedupeRounds: Measurement[] = [];
    let events: KitAppendResult | undefined;
    for (let r = 0; r < config.rounds; r++) {
      log(`write round ${r + 1}/${config.rounds}`);
      await quiet();
      pub.push(done(await rawPublish(nc, `${prefix}r${r}`, w, bytes)));
      await deleteStreams(jsm, `${prefix}r${r}_`);
      // The first round's stream is kept: it is what the read side consumes and rebuilds from.
      await quiet();
      const occ = await kitAppend(nc, r === 0 ? prefix : `${prefix}o${r}`, w, "occ");
      occRounds.push(done(occ.measurement));
      if (r === 0) events = occ;
      else await deleteStreams(jsm, `${prefix}o${r}_`);
      await quiet();
      plainRounds.push(done((await kitAppend(nc, `${prefix}p${r}`, w, "plain")).measurement));
      await deleteStreams(jsm, `${prefix}p${r}_`);
      await quiet();
      dedupeRounds.push(done((await kitAppend(nc, `${prefix}d${r}`, w, "occ+dedupe")).measurement));
      await deleteStreams(jsm, `${prefix}d${r}_`);
    }
    if (!events) throw new Error("no kit stream written");

    // Read side.
    log("kit projector: initial catch-up");
    const projection = new KitProjection({
      store: events.store,
      databaseUrl: kitUrl,
      expected: w.events,
      batchSize: config.batchSize,
    });
    const acked: Measurement[] = [];
    const ordered: Measurement[] = [];
    const rebuilds: Measurement[] = [];
    let catchUp: Measurement;
    try {
      await quiet();
      catchUp = done(await projection.start());
      for (let r = 0; r < config.rounds; r++) {
        log(`read round ${r + 1}/${config.rounds}`);
        await quiet();
        acked.push(
          done(await rawConsumeAcked(nc, events.stream, w.events, { maxMessages, maxAckPending: 10_000 })),
        );
        await quiet();
        ordered.push(done(await rawConsumeOrdered(nc, events.stream, w.events, { maxMessages })));
        await quiet();
        rebuilds.push(done(await projection.rebuild()));
      }
      verify("kit rebuild", "kit", await projection.rows());
    } finally {
      await projection.close();
    }

    let peerAppend: Measurement | undefined;
    let peerAppendAsync: Measurement | undefined;
    let peerRebuild: Measurement | undefined;
    let peerByHand: Measurement | undefined;
    if (!config.skipPeer) {
      const peerUrl = await recreateDatabase(config.adminDatabaseUrl, peerDb);
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
        await quiet();
        peerAppendAsync = done(await emmettAppend(emmettAsync, w, "async"));
        await emmett.schema.dangerous.truncate({ resetSequences: true });
        log("peer: Emmett append");
        await quiet();
        peerAppend = done(await emmettAppend(emmett, w, "sync"));
      } finally {
        await emmettAsync.close();
        await emmett.close();
      }
      log("peer: Emmett rebuild (rebuildPostgreSQLProjections)");
      await quiet();
      const native = await emmettRebuild(peerUrl, w.events, config.batchSize);
      peerRebuild = done(native.measurement);
      verify("Emmett rebuild", "peer", native.rows);
      if (native.applied !== w.events) {
        notes.push(
          `Emmett's rebuild gave its projection ${native.applied} of ${w.events} events; see its read-model check.`,
        );
      }
      const byHand: Measurement[] = [];
      let byHandRows: CounterRow[] = [];
      for (let r = 0; r < config.rounds; r++) {
        log(`peer: batch rebuild by hand on Emmett's tables, round ${r + 1}/${config.rounds}`);
        await quiet();
        const result = await emmettRebuildByHand(peerUrl, w.events, config.batchSize);
        byHand.push(done(result.measurement));
        byHandRows = result.rows;
      }
      verify("Emmett store, rebuild by hand", "peer", byHandRows);
      peerByHand = best(byHand);
    }

    const rawPub = best(pub);
    const occ = best(occRounds);
    const rawAck = best(acked);
    const rawOrdered = best(ordered);
    const rebuild = best(rebuilds);
    figures.push(
      { measurement: rawPub, limits: [], checks: [] },
      {
        measurement: occ,
        limits: [rawPub],
        checks: [
          atLeastRatio(occ, rawPub, 0.8),
          aheadOf(occ, peerAppend),
          ...(peerAppendAsync ? [aheadOf(occ, peerAppendAsync)] : []),
        ],
      },
      { measurement: best(plainRounds), limits: [rawPub], checks: [] },
      { measurement: best(dedupeRounds), limits: [rawPub], checks: [] },
      ...(peerAppend ? [{ measurement: peerAppend, limits: [rawPub], checks: [] }] : []),
      ...(peerAppendAsync ? [{ measurement: peerAppendAsync, limits: [rawPub], checks: [] }] : []),
      { measurement: rawAck, limits: [], checks: [] },
      { measurement: rawOrdered, limits: [], checks: [] },
      { measurement: catchUp, limits: [rawAck, rawOrdered], checks: [] },
      {
        measurement: rebuild,
        limits: [rawAck, rawOrdered],
        checks: [
          atLeastRatio(rebuild, rawAck, 0.5),
          atLeastRate(rebuild, 40_000),
          aheadOf(rebuild, peerRebuild),
        ],
      },
      ...(peerRebuild ? [{ measurement: peerRebuild, limits: [rawAck, rawOrdered], checks: [] }] : []),
      ...(peerByHand ? [{ measurement: peerByHand, limits: [rawAck, rawOrdered], checks: [] }] : []),
    );
  } finally {
    if (config.keep) {
      log(`kept streams ${prefix}* and databases ${kitDb}, ${peerDb}`);
    } else {
      await deleteStreams(jsm, prefix);
      await dropDatabase(config.adminDatabaseUrl, kitDb);
      await dropDatabase(config.adminDatabaseUrl, peerDb);
    }
    await nc.close();
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
    verifications,
    notes,
  };
  const file = await writeReport(path.join(here, "results"), report);

  const out: string[] = [
    "",
    `Spool benchmark — ${w.events.toLocaleString("en-US")} events, ${w.aggregates} aggregates, ` +
      `${w.inFlight} in flight, batch ${config.batchSize}, best of ${config.rounds} rounds`,
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
  // Figures that miss a target are reported, not failed (CI does not run this);
  // a kit read model that differs from the expected totals is a defect.
  return verifications.every((v) => v.pass || v.scope === "peer") ? 0 : 1;
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
