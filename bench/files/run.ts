// bench:files — file-ingest's figures from issue 9, each beside its raw limit
// measured in the same run on the same disk:
//   1. Upload throughput of one 1 GiB client stream over gRPC into the service
//      (a child process), beside sha256 + write + fsync of the same bytes in
//      the service's staging directory; the service's peak RSS meanwhile.
//   2. Archive expansion rate (expandArchive) beside yauzl / tar-stream
//      reading the same archive and writing the same bytes without checks
//      (services/file-ingest/src/archive/benchmark.test.ts, file-archive's).
// Not a timed test: a missed goal is reported; the run fails (exit 1) only
// when the upload's size or sha256 is wrong or a step breaks.
import { randomInt } from "node:crypto";
import { mkdtemp, rm, stat, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { credentials } from "@grpc/grpc-js";
import { connect } from "@nats-io/transport-node";
import { startTestAuth, type TestAuth } from "@spool/auth/testing";
import { authCall, filesEnv } from "@spool/file-ingest/testing";
import { type Child, type Isolated, isolate, runTs } from "@spool/testing";
import {
  type ArchiveBenchFigure,
  type ArchiveBenchResult,
  measureArchiveExpansion,
} from "../../services/file-ingest/src/archive/benchmark.test.js";
import { type CpuBreakdown, sampleCpu, sampleCpuOf, waitForQuiet } from "../lib/cpu.js";
import { envInt, infraUrls, progressLog } from "../lib/env.js";
import { describeMachine, gitCommit, type Machine, machineText } from "../lib/infra.js";
import { RESULTS_DIR, writeResultFile } from "../lib/report.js";
import { fmtCount, fmtPct, markdownTable } from "../lib/table.js";
import {
  type MemoryDuring,
  MiB,
  type RawHashWrite,
  rawHashWrite,
  sampleMemory,
  seededBlock,
  UploadBenchClient,
  type UploadResult,
  uploadStream,
} from "./upload.js";

const log = progressLog("bench:files");
const here = path.dirname(fileURLToPath(import.meta.url));
const FILES_MAIN = path.join(here, "../../services/file-ingest/src/main.ts");
const OPERATOR = { email: "admin@spool.test", password: "correct horse battery staple 42" };

/** The goals from the issue. */
const GOALS = {
  /** Upload MB/s ÷ raw hash + write MB/s. */
  minUploadRatio: 0.7,
  /** The service's peak RSS during the upload. */
  maxPeakRssMiB: 256,
} as const;

function settings() {
  return {
    /** Upload size in MiB (the issue: 1 GiB). */
    uploadMiB: envInt("SPOOL_BENCH_FILES_UPLOAD_MIB", 1024, 1),
    /** Bytes per chunk message: the service's documented maximum (SPOOL_UPLOAD_MAX_CHUNK_BYTES default). */
    chunkBytes: envInt("SPOOL_BENCH_FILES_CHUNK_BYTES", MiB, 1024),
    /** Raw hash + write rounds; they bracket the upload (before, after, before, ...); the best counts. */
    rawRounds: envInt("SPOOL_BENCH_FILES_RAW_ROUNDS", 2, 1),
    rssIntervalMs: envInt("SPOOL_BENCH_FILES_RSS_INTERVAL_MS", 100, 10),
    archiveEntries: envInt("SPOOL_BENCH_FILES_ARCHIVE_ENTRIES", 5_000, 1),
    archiveMeanBytes: envInt("SPOOL_BENCH_FILES_ARCHIVE_MEAN_BYTES", 8 * 1024, 64),
    /** Whole archive measurements (zip and tar.gz, each: expandArchive, raw write, raw read); best of each. */
    archiveRounds: envInt("SPOOL_BENCH_FILES_ARCHIVE_ROUNDS", 2, 1),
    /** Where the blob root (and the archives) go: the disk measured. */
    dir: process.env.SPOOL_BENCH_FILES_DIR || os.tmpdir(),
    quietWaitMs: envInt("SPOOL_BENCH_FILES_QUIET_WAIT_MS", 5_000, 0),
    /** Set: the service writes a V8 CPU profile (--cpu-prof) here. */
    profileDir: process.env.SPOOL_BENCH_FILES_PROFILE_DIR ?? "",
    /** Extra Node options for the service (e.g. --trace-gc), after the profile's. */
    serviceNodeOptions: process.env.SPOOL_BENCH_FILES_SERVICE_NODE_OPTIONS ?? "",
    /** Set: the service's log is written to this file at the end. */
    serviceLog: process.env.SPOOL_BENCH_FILES_SERVICE_LOG ?? "",
    /** Seed of the upload's bytes (default: random, so the blob is new). */
    seed: envInt("SPOOL_BENCH_FILES_SEED", randomInt(1, 2 ** 31), 1),
  };
}
type Settings = ReturnType<typeof settings>;

const COMMS = ["nats-server", "redis-server", "postgres"] as const;
const round2 = (n: number | undefined) => Math.round((n ?? 0) * 100) / 100;

interface UploadCpu {
  service: number;
  bench: number;
  natsServer: number;
  redis: number;
  postgres: number;
  machine: number;
  other: number;
}

function uploadCpu(b: CpuBreakdown | undefined): UploadCpu | undefined {
  if (!b) return undefined;
  const r = {
    service: round2(b.pids.service),
    bench: round2(b.pids.bench),
    natsServer: round2(b.comms["nats-server"]),
    redis: round2(b.comms["redis-server"]),
    postgres: round2(b.comms.postgres),
    machine: round2(b.machine),
  };
  const known = r.service + r.bench + r.natsServer + r.redis + r.postgres;
  return { ...r, other: round2(Math.max(0, r.machine - known)) };
}

interface RawRound extends RawHashWrite {
  /** CPUs busy elsewhere just before (after waiting for quiet). */
  otherLoadBefore: number | undefined;
  cpu: ReturnType<ReturnType<typeof sampleCpu>>;
}

interface UploadStep {
  result: Omit<UploadResult, "response">;
  fileId: string;
  returnedSha256: string;
  returnedSize: number;
  detectedContentType: string;
  expectedSha256: string;
  /** The blob under its hash in the store, as the bench finds it on disk. */
  storedBlobBytes: number | undefined;
  verified: boolean;
  otherLoadBefore: number | undefined;
  cpu: UploadCpu | undefined;
  memory: MemoryDuring;
}

interface ArchiveRound {
  results: ArchiveBenchResult[];
  otherLoadBefore: number | undefined;
  cpu: ReturnType<ReturnType<typeof sampleCpu>>;
}

async function stopChild(child: Child | undefined): Promise<void> {
  if (!child || child.proc.exitCode !== null || child.proc.signalCode !== null) return;
  child.kill("SIGTERM");
  const r = await Promise.race([
    child.exited,
    new Promise((res) => setTimeout(() => res("timeout"), 15_000)),
  ]);
  if (r === "timeout") {
    child.kill("SIGKILL");
    await child.exited;
  }
}

/** The service's environment: file-ingest's test harness's, with its limits opened for one 1 GiB file. */
function serviceEnv(slice: Isolated, auth: TestAuth, blobDir: string, s: Settings): Record<string, string> {
  const size = s.uploadMiB * MiB;
  return {
    ...filesEnv(slice, blobDir, {
      SPOOL_LOG_LEVEL: "info",
      // The default per-file limit is 100 MiB; the bench's file must fit (the organisation's 10 GiB stays).
      SPOOL_UPLOAD_MAX_FILE_BYTES: String(Math.max(size, 100 * MiB)),
      // Random bytes are detected as application/octet-stream, not in the default allow-list.
      SPOOL_ALLOWED_CONTENT_TYPES: "*",
    }),
    SPOOL_MASTER_KEYS: auth.env.SPOOL_MASTER_KEYS ?? "",
    SPOOL_TOKEN_SECRET: auth.env.SPOOL_TOKEN_SECRET ?? "",
    ...(s.profileDir || s.serviceNodeOptions
      ? {
          NODE_OPTIONS: [
            s.profileDir ? `--cpu-prof --cpu-prof-dir=${s.profileDir}` : "",
            s.serviceNodeOptions,
          ]
            .filter(Boolean)
            .join(" "),
        }
      : {}),
  };
}

async function startService(env: Record<string, string>): Promise<{ child: Child; port: number }> {
  const child = runTs(FILES_MAIN, { env });
  const line = await child.waitFor(/"port":\d+[^\n]*grpc server listening/, 90_000);
  return { child, port: Number(/"port":(\d+)/.exec(line)?.[1]) };
}

/** An organisation of its own for the run, and its owner's access token. */
async function ownerToken(auth: TestAuth, slug: string): Promise<string> {
  const c = auth.client;
  const op = await authCall(c.login, c, OPERATOR);
  const ownerEmail = `owner@${slug}.test`;
  const password = "a password long enough for the bench";
  await authCall(
    c.createOrganization,
    c,
    { name: slug, slug, ownerEmail, ownerDisplayName: "Bench", ownerPassword: password },
    op.tokens?.accessToken ?? "",
  );
  const owner = await authCall(c.login, c, { email: ownerEmail, password });
  return owner.tokens?.accessToken ?? "";
}

async function rawRound(s: Settings, dir: string, block: Buffer, chunks: number, label: string) {
  const otherLoadBefore = await waitForQuiet(s.quietWaitMs);
  const stopCpu = sampleCpu();
  const raw = await rawHashWrite(dir, block, chunks);
  const r: RawRound = { ...raw, otherLoadBefore, cpu: stopCpu() };
  log(
    `raw ${label}: sha256 + write + fsync ${(r.bytes / MiB).toFixed(0)} MiB in ${r.seconds.toFixed(2)} s = ` +
      `${r.mbPerSecond.toFixed(1)} MB/s (cpu bench ${r.cpu?.bench ?? "?"}, other ${r.cpu?.other ?? "?"}; ` +
      `load before ${otherLoadBefore?.toFixed(2) ?? "?"})`,
  );
  return r;
}

async function uploadStep(
  s: Settings,
  svc: { child: Child; port: number },
  token: string,
  block: Buffer,
  chunks: number,
  expectedSha256: string,
  blobDir: string,
): Promise<UploadStep> {
  const pid = svc.child.proc.pid ?? 0;
  const client = new UploadBenchClient(`127.0.0.1:${svc.port}`, credentials.createInsecure());
  try {
    // A small upload first, so the measured one does not pay for the first call (key fetch, connections, JIT).
    const warm = await uploadStream(client, token, block, 1, {
      displayName: "bench-warm-up.bin",
      deadlineMs: 120_000,
    });
    log(`warm-up upload: 1 chunk in ${(warm.seconds * 1000).toFixed(0)} ms`);
    const otherLoadBefore = await waitForQuiet(s.quietWaitMs);
    const stopMemory = sampleMemory(pid, s.rssIntervalMs);
    const stopCpu = sampleCpuOf({ service: pid, bench: "self" }, COMMS);
    const result = await uploadStream(client, token, block, chunks, {
      displayName: `bench-${s.uploadMiB}MiB-${s.seed}.bin`,
      deadlineMs: 30 * 60_000,
    });
    const cpu = uploadCpu(stopCpu());
    const memory = stopMemory();
    const file = result.response.file;
    const returnedSha256 = file?.sha256 ?? "";
    const returnedSize = Number(file?.sizeBytes ?? -1);
    const storedBlobBytes = await stat(
      path.join(blobDir, "blobs", returnedSha256.slice(0, 2), returnedSha256),
    )
      .then((st) => st.size)
      .catch(() => undefined);
    const verified =
      returnedSha256 === expectedSha256 && returnedSize === result.bytes && storedBlobBytes === result.bytes;
    const { response: _response, ...rest } = result;
    const step: UploadStep = {
      result: rest,
      fileId: file?.fileId ?? "",
      returnedSha256,
      returnedSize,
      detectedContentType: file?.detectedContentType ?? "",
      expectedSha256,
      storedBlobBytes,
      verified,
      otherLoadBefore,
      cpu,
      memory,
    };
    log(
      `upload: ${(result.bytes / MiB).toFixed(0)} MiB in ${result.seconds.toFixed(2)} s = ${result.mbPerSecond.toFixed(1)} MB/s ` +
        `(chunks handed to the stream in ${result.sentSeconds.toFixed(2)} s, then ${(result.tailSeconds * 1000).toFixed(0)} ms to the response; ` +
        `${result.drains} waits for drain); sha256 ${verified ? "= local, size and stored blob match" : "MISMATCH"}; ` +
        `service RSS ${memory.rssBeforeMiB} MiB before, peak ${memory.peakMiB} MiB (${memory.samples} samples); ` +
        `cpu service ${cpu?.service ?? "?"} bench ${cpu?.bench ?? "?"} nats ${cpu?.natsServer ?? "?"} ` +
        `redis ${cpu?.redis ?? "?"} pg ${cpu?.postgres ?? "?"} other ${cpu?.other ?? "?"}; load before ${otherLoadBefore?.toFixed(2) ?? "?"}`,
    );
    return step;
  } finally {
    client.close();
  }
}

async function archiveRound(s: Settings, dir: string, i: number): Promise<ArchiveRound> {
  const otherLoadBefore = await waitForQuiet(s.quietWaitMs);
  const stopCpu = sampleCpu();
  const results = await measureArchiveExpansion({
    entries: s.archiveEntries,
    meanBytes: s.archiveMeanBytes,
    tmpBase: dir,
  });
  const cpu = stopCpu();
  for (const r of results) {
    log(
      `archive ${r.format} round ${i + 1}: ${r.spool.entries} entries, ${(r.spool.bytes / 1e6).toFixed(1)} MB from ` +
        `${(r.archiveBytes / 1e6).toFixed(1)} MB — ${[r.spool, r.rawWrite, r.rawRead].map(figureText).join("; ")}`,
    );
  }
  log(
    `  (cpu bench ${cpu?.bench ?? "?"}, other ${cpu?.other ?? "?"}; load before ${otherLoadBefore?.toFixed(2) ?? "?"})`,
  );
  return { results, otherLoadBefore, cpu };
}

const entriesPerSecond = (f: ArchiveBenchFigure) => f.entries / f.seconds;
const mbPerSecond = (f: ArchiveBenchFigure) => f.bytes / 1e6 / f.seconds;
const figureText = (f: ArchiveBenchFigure) =>
  `${f.label} ${fmtCount(entriesPerSecond(f))} entries/s, ${mbPerSecond(f).toFixed(1)} MB/s`;

/** The fastest of each figure over the rounds (noise only ever slows a round down). */
function bestArchive(rounds: readonly ArchiveRound[]): ArchiveBenchResult[] {
  const formats = rounds[0]?.results.map((r) => r.format) ?? [];
  const fastest = (fs: ArchiveBenchFigure[]) => fs.reduce((b, f) => (f.seconds < b.seconds ? f : b));
  return formats.map((format) => {
    const of = rounds.map((r) => r.results.find((x) => x.format === format)).filter((x) => x !== undefined);
    return {
      format,
      archiveBytes: of[0]?.archiveBytes ?? 0,
      spool: fastest(of.map((x) => x.spool)),
      rawWrite: fastest(of.map((x) => x.rawWrite)),
      rawRead: fastest(of.map((x) => x.rawRead)),
    };
  });
}

type Verdict = "PASS" | "FAIL" | "—";

function tableRows(
  s: Settings,
  raws: readonly RawRound[],
  upload: UploadStep | undefined,
  archive: readonly ArchiveBenchResult[],
  archiveRounds: readonly ArchiveRound[],
): { rows: string[][]; results: Record<string, Verdict> } {
  const rows: string[][] = [];
  const results: Record<string, Verdict> = {};
  const bestRaw = raws.reduce<RawRound | undefined>(
    (b, r) => (!b || r.mbPerSecond > b.mbPerSecond ? r : b),
    undefined,
  );
  const rawText = bestRaw
    ? `sha256 + write + fsync ${bestRaw.mbPerSecond.toFixed(1)} MB/s (best of ${raws.length}: ${raws.map((r) => r.mbPerSecond.toFixed(1)).join(", ")})`
    : "—";
  if (upload && bestRaw) {
    const ratio = upload.result.mbPerSecond / bestRaw.mbPerSecond;
    results.uploadRatio = ratio >= GOALS.minUploadRatio ? "PASS" : "FAIL";
    rows.push([
      `Upload, one ${s.uploadMiB} MiB stream, ${s.chunkBytes / 1024} KiB chunks`,
      `${upload.result.mbPerSecond.toFixed(1)} MB/s (${upload.result.seconds.toFixed(1)} s) = **${fmtPct(ratio)}** of raw`,
      rawText,
      `≥ ${fmtPct(GOALS.minUploadRatio)} of raw`,
      results.uploadRatio,
    ]);
    const m = upload.memory;
    results.peakRss = m.peakMiB < GOALS.maxPeakRssMiB ? "PASS" : "FAIL";
    rows.push([
      "Service peak RSS during the upload",
      `**${m.peakMiB} MiB** (${m.rssBeforeMiB} MiB before; VmHWM ${m.hwmBeforeMiB} → ${m.hwmAfterMiB} MiB; ${m.samples} samples every ${m.intervalMs} ms)`,
      "—",
      `< ${GOALS.maxPeakRssMiB} MiB`,
      results.peakRss,
    ]);
    // CPU cost per GiB: steadier than MB/s on a shared machine (a starved process is slow, not costlier).
    const perGiB = (cores: number | undefined, seconds: number, bytes: number) =>
      cores === undefined ? Number.NaN : (cores * seconds) / (bytes / 1024 ** 3);
    const serviceCost = perGiB(upload.cpu?.service, upload.result.seconds, upload.result.bytes);
    const clientCost = perGiB(upload.cpu?.bench, upload.result.seconds, upload.result.bytes);
    const rawCost = perGiB(bestRaw.cpu?.bench, bestRaw.seconds, bestRaw.bytes);
    rows.push([
      "CPU per GiB uploaded",
      `service ${serviceCost.toFixed(2)} CPU-s (client and auth process ${clientCost.toFixed(2)} CPU-s)`,
      `raw sha256 + write + fsync ${rawCost.toFixed(2)} CPU-s`,
      "reported",
      "—",
    ]);
    results.uploadVerified = upload.verified ? "PASS" : "FAIL";
    rows.push([
      "Upload result verified",
      upload.verified
        ? `size ${fmtCount(upload.returnedSize)} B and sha256 ${upload.returnedSha256.slice(0, 12)}… = computed locally; blob stored once at that size`
        : `returned size ${upload.returnedSize}, sha256 ${upload.returnedSha256}, stored ${upload.storedBlobBytes}; expected ${upload.expectedSha256}`,
      "—",
      "size and sha256 equal",
      results.uploadVerified,
    ]);
  } else {
    rows.push([
      `Upload, one ${s.uploadMiB} MiB stream`,
      "not measured",
      rawText,
      `≥ ${fmtPct(GOALS.minUploadRatio)} of raw`,
      "—",
    ]);
  }
  for (const a of archive) {
    const lib = a.format === "zip" ? "yauzl" : "tar-stream + zlib";
    // Each round runs expandArchive and the raw write back to back: their ratio round by round is the firmer figure.
    const paired = archiveRounds
      .map((r) => r.results.find((x) => x.format === a.format))
      .filter((x) => x !== undefined)
      .map((x) => fmtPct(x.rawWrite.seconds / x.spool.seconds));
    rows.push([
      `Archive expansion, ${a.format}, ${fmtCount(a.spool.entries)} files, ${(a.spool.bytes / 1e6).toFixed(1)} MB (archive ${(a.archiveBytes / 1e6).toFixed(1)} MB)`,
      `${fmtCount(entriesPerSecond(a.spool))} entries/s, ${mbPerSecond(a.spool).toFixed(1)} MB/s (best round); ` +
        `round by round ${paired.join(", ")} of the raw write's rate`,
      `${lib} write ${fmtCount(entriesPerSecond(a.rawWrite))} entries/s, ${mbPerSecond(a.rawWrite).toFixed(1)} MB/s; read only ${fmtCount(entriesPerSecond(a.rawRead))} entries/s, ${mbPerSecond(a.rawRead).toFixed(1)} MB/s (best rounds)`,
      "reported",
      "—",
    ]);
  }
  return { rows, results };
}

async function main(): Promise<number> {
  const s = settings();
  const urls = infraUrls();
  const startedAt = new Date().toISOString();
  const t0 = performance.now();
  const nc = await connect({ servers: urls.natsUrl, name: "spool-bench-files" });
  let machine: Machine;
  try {
    machine = await describeMachine(nc, urls.databaseUrl);
  } finally {
    await nc.close().catch(() => {});
  }
  log(`machine: ${machineText(machine)}`);

  const chunks = Math.ceil((s.uploadMiB * MiB) / s.chunkBytes);
  if ((s.uploadMiB * MiB) % s.chunkBytes !== 0)
    throw new Error(
      "SPOOL_BENCH_FILES_UPLOAD_MIB × 1 MiB must be a multiple of SPOOL_BENCH_FILES_CHUNK_BYTES",
    );
  const block = seededBlock(s.seed, s.chunkBytes);
  const base = await mkdtemp(path.join(s.dir, "spool-bench-files-"));
  const blobDir = path.join(base, "blobs");
  const stagingDir = path.join(blobDir, "tmp");
  const slice = await isolate(urls, "benchfiles");
  let auth: TestAuth | undefined;
  let svc: { child: Child; port: number } | undefined;
  const raws: RawRound[] = [];
  let upload: UploadStep | undefined;
  const archiveRounds: ArchiveRound[] = [];
  try {
    log(`slice ${slice.id}: auth in this process; blob root ${blobDir}`);
    auth = await startTestAuth(slice);
    const token = await ownerToken(auth, `bench-${slice.id}`.slice(0, 40));
    svc = await startService(serviceEnv(slice, auth, blobDir, s));
    log(`file-ingest: pid ${svc.child.proc.pid}, port ${svc.port}`);
    log(
      `upload: ${s.uploadMiB} MiB of a seeded ${s.chunkBytes / 1024} KiB block (seed ${s.seed}), ${chunks} chunks`,
    );

    // Raw rounds bracket the upload: the first before it (and it gives the expected sha256), the rest after.
    raws.push(await rawRound(s, stagingDir, block, chunks, "1"));
    const expected = raws[0]?.sha256 ?? "";
    upload = await uploadStep(s, svc, token, block, chunks, expected, blobDir);
    for (let i = 1; i < s.rawRounds; i++)
      raws.push(await rawRound(s, stagingDir, block, chunks, String(i + 1)));
    if (raws.some((r) => r.sha256 !== expected)) throw new Error("raw rounds hashed different bytes");
    await stopChild(svc.child);
    if (s.serviceLog) await writeFile(s.serviceLog, svc.child.output());
    svc = undefined;
    // The blob is 1 GiB: free the disk before the archives.
    await rm(blobDir, { recursive: true, force: true });

    log(`archives: ${s.archiveEntries} files, mean ${s.archiveMeanBytes} B, ${s.archiveRounds} rounds`);
    for (let i = 0; i < s.archiveRounds; i++) archiveRounds.push(await archiveRound(s, base, i));
  } finally {
    await stopChild(svc?.child);
    await auth?.stop().catch(() => {});
    await slice.cleanup().catch(() => {});
    await rm(base, { recursive: true, force: true });
  }

  const archive = bestArchive(archiveRounds);
  const { rows, results } = tableRows(s, raws, upload, archive, archiveRounds);
  const table = markdownTable(["figure", "value", "raw limit beside it (same run)", "goal", "result"], rows);
  process.stdout.write(`\n${table}\n\n`);
  const notes: string[] = [];
  for (const r of raws)
    if ((r.cpu?.other ?? 0) > 0.3) notes.push(`a raw round ran with ${r.cpu?.other} CPUs busy elsewhere`);
  if ((upload?.cpu?.other ?? 0) > 0.3)
    notes.push(`the upload ran with ${upload?.cpu?.other} CPUs busy elsewhere`);
  for (const a of archiveRounds)
    if ((a.cpu?.other ?? 0) > 0.3)
      notes.push(`an archive round ran with ${a.cpu?.other} CPUs busy elsewhere`);
  const report = {
    startedAt,
    seconds: (performance.now() - t0) / 1000,
    commit: gitCommit(),
    machine,
    settings: { ...s, goals: GOALS },
    raw: raws,
    upload,
    archiveRounds,
    archive,
    results,
    table: rows,
    notes,
  };
  const file = await writeResultFile(RESULTS_DIR, "files", startedAt, report);
  log(`wrote ${path.relative(process.cwd(), file)} (${report.seconds.toFixed(0)} s)`);
  for (const n of notes) log(`note: ${n}`);
  return upload?.verified ? 0 : 1;
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (e: unknown) => {
    log(`failed: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
    process.exitCode = 1;
  },
);
