// The scan reactor against real NATS, PostgreSQL (dead letters) and a private
// clamd: verdicts as events, quarantine of EICAR, "pending" while clamd is
// down and scanned once it is back, idempotence.
import { randomUUID } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { NatsConnection } from "@nats-io/transport-node";
import {
  connectNats,
  createLogger,
  createPool,
  DeadLetterStore,
  EventStore,
  FileEvents,
  FilesStreams,
  Namespace,
  type Reactor,
  type Sql,
} from "@spool/kit";
import { FileOrigin, ScanVerdict } from "@spool/proto/spool/files/v1/events.js";
import { eventually, useInfra } from "@spool/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { EICAR, EICAR_SIGNATURE, type PrivateClamd, startClamd } from "../../test/clamd.js";
import type { BlobStore } from "../blobs/blob-store.js";
import { createFsBlobStore } from "../blobs/fs-blob-store.js";
import { createClamdScanner } from "./clamd-scanner.js";
import { createScanReactor } from "./scan-reactor.js";
import { type Scanner, ScannerUnavailableError } from "./scanner.js";

const infra = useInfra("scan");
const logger = createLogger({ service: "scan-reactor-test", level: process.env.SPOOL_TEST_LOG ?? "silent" });
let nc: NatsConnection;
let store: EventStore;
let sql: Sql;
let deadLetters: DeadLetterStore;
let blobs: BlobStore;
let clamd: PrivateClamd;
let blobRoot: string;
const reactors: Reactor[] = [];

/** The clamd scanner, counting how often it was found unavailable. */
let unavailable = 0;
let scanner: Scanner;

beforeAll(async () => {
  clamd = await startClamd();
  nc = await connectNats({ url: infra().natsUrl, name: "scan-reactor-test" });
  store = new EventStore(nc, { namespace: new Namespace(infra().streamPrefix) });
  await store.ensureStream(FilesStreams.FILES.definition());
  sql = createPool({ url: infra().databaseUrl, max: 2 });
  deadLetters = new DeadLetterStore(sql);
  await deadLetters.migrate();
  blobRoot = mkdtempSync(join(tmpdir(), "spool-scan-blobs-"));
  blobs = await createFsBlobStore({ root: blobRoot });
  const clamdScanner = createClamdScanner({
    address: { socketPath: clamd.socketPath },
    connectTimeoutMs: 500,
  });
  scanner = {
    name: clamdScanner.name,
    close: () => clamdScanner.close(),
    scan: async (content, options) => {
      try {
        return await clamdScanner.scan(content, options);
      } catch (e) {
        if (e instanceof ScannerUnavailableError) unavailable++;
        throw e;
      }
    },
  };
  const reactor = createScanReactor({
    store,
    deadLetters,
    logger,
    scanner,
    blobs,
    // Short retries; maxDeliver 2 so an outage outlasting it shows unavailability is never dead-lettered.
    backoffMs: [100, 200, 300],
    maxDeliver: 2,
  });
  reactors.push(reactor);
  await reactor.start();
});
afterAll(async () => {
  for (const r of reactors) await r.stop().catch(() => {});
  await clamd?.cleanup();
  await sql?.end();
  await nc?.close();
  if (blobRoot) rmSync(blobRoot, { recursive: true, force: true });
});

/** Stores the content and records a file for it, as the upload path does (commit before the record). */
async function recordFile(content: string): Promise<string> {
  const staged = await blobs.stage(
    (async function* () {
      yield Buffer.from(content);
    })(),
    { maxBytes: 1 << 20 },
  );
  await staged.commit();
  const fileId = randomUUID();
  await store.append(
    FilesStreams.FILES.subjects.file(fileId),
    [
      FileEvents.create("FileRecorded", {
        fileId,
        orgId: "org-1",
        ownerId: "user-1",
        displayName: "test.txt",
        sizeBytes: BigInt(staged.size),
        sha256: staged.sha256,
        declaredContentType: "text/plain",
        detectedContentType: "text/plain",
        origin: FileOrigin.FILE_ORIGIN_UPLOAD,
        sourceUrl: "",
        archiveFileId: "",
        archivePath: "",
        recordedAtMs: BigInt(Date.now()),
      }),
    ],
    { expectedSequence: 0, actor: "user-1" },
  );
  return fileId;
}

async function fileEvents(fileId: string) {
  const out = [];
  for await (const events of store.readSubject(FilesStreams.FILES.subjects.file(fileId))) {
    for (const e of events) out.push(FileEvents.decode(e));
  }
  return out;
}

async function verdictOf(fileId: string) {
  const scans = (await fileEvents(fileId)).filter((e) => e.type === "FileScanned");
  if (scans.length > 1) throw new Error(`file ${fileId} was scanned ${scans.length} times`);
  const [scan] = scans;
  return scan?.type === "FileScanned" ? scan : undefined;
}

describe("scan reactor", () => {
  it("clean content → clean verdict; EICAR → infected verdict with its signature (quarantined)", async () => {
    const clean = await recordFile("quarterly report, nothing to see\n");
    const infected = await recordFile(`prefix ${EICAR} suffix`);
    const cleanScan = await eventually(() => verdictOf(clean), { what: "a verdict on the clean file" });
    const infectedScan = await eventually(() => verdictOf(infected), { what: "a verdict on the EICAR file" });
    expect(cleanScan.data).toMatchObject({
      fileId: clean,
      verdict: ScanVerdict.SCAN_VERDICT_CLEAN,
      scanner: "clamd",
    });
    expect(infectedScan.data).toMatchObject({
      fileId: infected,
      verdict: ScanVerdict.SCAN_VERDICT_INFECTED,
      scanner: "clamd",
    });
    expect(infectedScan.data.signature).toMatch(new RegExp(`^${EICAR_SIGNATURE}`));
    expect(infectedScan.meta.actor).toBe("file-ingest/scanner");
  });

  it("clamd stopped: the file stays pending past maxDeliver, never dead-lettered; scanned once clamd is back", async () => {
    await clamd.stop();
    const before = unavailable;
    const fileId = await recordFile("written while the scanner was away\n");
    // Retried beyond maxDeliver (2) while clamd is down, with no verdict.
    await eventually(() => unavailable - before >= 4, {
      timeoutMs: 20_000,
      what: "several unavailable attempts",
    });
    expect(await verdictOf(fileId)).toBeUndefined();
    expect(await deadLetters.countPending("file-scanner")).toBe(0);

    await clamd.start();
    const scan = await eventually(() => verdictOf(fileId), {
      timeoutMs: 20_000,
      what: "the verdict after clamd returned",
    });
    expect(scan.data.verdict).toBe(ScanVerdict.SCAN_VERDICT_CLEAN);
    expect(await deadLetters.countPending("file-scanner")).toBe(0);
  });

  it("a file deleted before its scan gets no verdict; one already scanned is not scanned again", async () => {
    // Appended before the reactor sees the record: FileRecorded, FileDeleted (one message), and a scanned one.
    const deletedId = randomUUID();
    const scannedId = randomUUID();
    const recorded = (fileId: string) =>
      FileEvents.create("FileRecorded", {
        fileId,
        orgId: "org-1",
        ownerId: "user-1",
        displayName: "x.txt",
        sizeBytes: 1n,
        sha256: "0".repeat(64), // no such blob: reading it would fail, so a skip is the only way to pass
        declaredContentType: "",
        detectedContentType: "text/plain",
        origin: FileOrigin.FILE_ORIGIN_UPLOAD,
        sourceUrl: "",
        archiveFileId: "",
        archivePath: "",
        recordedAtMs: 1n,
      });
    await store.append(
      FilesStreams.FILES.subjects.file(deletedId),
      [
        recorded(deletedId),
        FileEvents.create("FileDeleted", { fileId: deletedId, deletedBy: "user-1", deletedAtMs: 2n }),
      ],
      { expectedSequence: 0 },
    );
    await store.append(
      FilesStreams.FILES.subjects.file(scannedId),
      [
        recorded(scannedId),
        FileEvents.create("FileScanned", {
          fileId: scannedId,
          verdict: ScanVerdict.SCAN_VERDICT_CLEAN,
          signature: "",
          scanner: "none",
          scannedAtMs: 2n,
        }),
      ],
      { expectedSequence: 0 },
    );
    // A file recorded after both: once it is scanned, the reactor has passed the two above.
    const marker = await recordFile("marker\n");
    await eventually(() => verdictOf(marker), { timeoutMs: 20_000, what: "the marker's verdict" });
    await eventually(async () => (await reactors[0]!.status()).lag === 0, { what: "no lag" });
    expect(await verdictOf(deletedId)).toBeUndefined();
    expect((await verdictOf(scannedId))?.data.scanner).toBe("none");
    expect(await deadLetters.countPending("file-scanner")).toBe(0);
  });
});
