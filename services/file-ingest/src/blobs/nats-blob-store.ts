// The JetStream object store blob store, for several replicas sharing blobs:
// one object per blob, named by its sha256, in a bucket (@nats-io/obj).
//
// Staging goes to a local temporary file, not to the bucket under a temporary
// name: the object's name is its hash, known only after the last byte, and
// the object store cannot rename chunks. A local file costs nothing on NATS
// when the bytes are already stored (the common dedupe case), an aborted
// upload never reaches the bucket, and a crashed process leaves only a local
// file that the start-up sweep removes, instead of orphaned chunks in the
// bucket that something would have to find.
//
// Every change to an object's meta message (create, touch, delete) is
// published with Nats-Expected-Last-Subject-Sequence on that message's
// subject, so parallel commits of the same bytes and a racing collector
// serialise: exactly one create wins (the losers' chunks are purged by the
// library and they touch the winner), a touch moves the meta's sequence, and
// the collector's delete is conditional on the sequence it read.
import { createReadStream } from "node:fs";
import { mkdir } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import {
  JetStreamApiCodes,
  JetStreamApiError,
  type JetStreamClient,
  type JetStreamManager,
  jetstream,
  jetstreamManager,
} from "@nats-io/jetstream";
import { Base64UrlPaddedCodec, type ObjectStore, Objm, StorageType } from "@nats-io/obj";
import { headers, type NatsConnection } from "@nats-io/transport-node";
import {
  assertBlobKey,
  BlobNotFoundError,
  type BlobStore,
  SHA256_HEX,
  type StagedBlob,
  type StageOptions,
  type StoredBlob,
} from "./blob-store.js";
import { assertRange, DEFAULT_STALE_TEMP_MS } from "./fs-blob-store.js";
import { removeStaleTempFiles, stagedBlob, stageToFile } from "./staging.js";

export interface NatsBlobStoreOptions {
  nc: NatsConnection;
  /** Bucket name (letters, digits, `-`, `_`); the stream is OBJ_<bucket>. Created if missing. */
  bucket: string;
  /** Local directory for staging (created if missing; default <os tmpdir>/spool-blob-staging). */
  stagingDir?: string;
  /** Staged files not written for this long are removed at start (default 1 hour). */
  staleTempMs?: number;
  /** Replicas of the bucket's stream when it is created (default 1; production 3). */
  replicas?: number;
  /** Chunk size of new objects (default 128 KiB, capped by the server's max payload). */
  chunkBytes?: number;
  /**
   * A read fails when no chunk arrived for this long (default 30 s): the
   * library's delivery would otherwise wait for ever on chunks that are gone.
   */
  readIdleTimeoutMs?: number;
  /** Clock (tests). */
  now?: () => number;
}

export interface NatsBlobStore extends BlobStore {
  removeStaleTemp(): Promise<number>;
}

/** What the object store keeps as an object's meta message (the library's ServerObjectInfo). */
interface RawObjectInfo {
  name: string;
  nuid: string;
  size: number;
  chunks: number;
  digest: string;
  deleted?: boolean;
  mtime: string;
  metadata?: Record<string, string>;
  [key: string]: unknown;
}

const TOUCHED_AT = "spool-touched-at-ms";
const ROLLUP = "Nats-Rollup";
const EXPECTED_LAST_SUBJECT_SEQ = "Nats-Expected-Last-Subject-Sequence";

/** Opens (creating it if missing) the bucket and sweeps the local staging directory. */
export async function createNatsBlobStore(options: NatsBlobStoreOptions): Promise<NatsBlobStore> {
  const now = options.now ?? Date.now;
  const stagingDir = options.stagingDir ?? join(tmpdir(), "spool-blob-staging");
  const staleTempMs = options.staleTempMs ?? DEFAULT_STALE_TEMP_MS;
  await mkdir(stagingDir, { recursive: true, mode: 0o700 });
  const js: JetStreamClient = jetstream(options.nc);
  const jsm: JetStreamManager = await jetstreamManager(options.nc);
  const objm = new Objm(js);
  const os: ObjectStore = await objm.create(options.bucket, {
    storage: StorageType.File,
    replicas: options.replicas ?? 1,
  });
  const stream = `OBJ_${options.bucket}`;
  const metaSubject = (sha256: string) => `$O.${options.bucket}.M.${Base64UrlPaddedCodec.encode(sha256)}`;
  const chunkSubject = (nuid: string) => `$O.${options.bucket}.C.${nuid}`;
  const chunkBytes = options.chunkBytes ?? 128 * 1024;
  const readIdleTimeoutMs = options.readIdleTimeoutMs ?? 30_000;

  async function rawInfo(sha256: string): Promise<{ info: RawObjectInfo; seq: number } | undefined> {
    try {
      const m = await jsm.streams.getMessage(stream, { last_by_subj: metaSubject(sha256) });
      if (!m) return undefined;
      return { info: m.json<RawObjectInfo>(), seq: m.seq };
    } catch (e) {
      if (e instanceof JetStreamApiError && e.code === JetStreamApiCodes.NoMessageFound) return undefined;
      throw e;
    }
  }

  const touchedAtOf = (info: RawObjectInfo) => {
    const v = Number(info.metadata?.[TOUCHED_AT]);
    return Number.isFinite(v) ? v : Date.parse(info.mtime);
  };

  /** Replaces the meta message, only if it is still the one at `seq`; false when another change came first. */
  async function replaceMeta(sha256: string, info: RawObjectInfo, seq: number): Promise<boolean> {
    const h = headers();
    h.set(ROLLUP, "sub");
    h.set(EXPECTED_LAST_SUBJECT_SEQ, `${seq}`);
    try {
      await js.publish(metaSubject(sha256), JSON.stringify(info), { headers: h });
      return true;
    } catch (e) {
      if (isWrongLastSequence(e)) return false;
      throw e;
    }
  }

  /**
   * False for a live meta whose chunks are gone: the library purges a put's
   * chunks when the meta publish fails, also when it failed only to answer
   * (a timeout after the server stored it). Such an object is replaced by the
   * next commit of its bytes instead of being touched.
   */
  async function chunksPresent(info: RawObjectInfo): Promise<boolean> {
    if (info.size === 0) return true;
    try {
      return (await jsm.streams.getMessage(stream, { last_by_subj: chunkSubject(info.nuid) })) !== null;
    } catch (e) {
      if (e instanceof JetStreamApiError && e.code === JetStreamApiCodes.NoMessageFound) return false;
      throw e;
    }
  }

  async function publish(path: string, sha256: string): Promise<void> {
    for (;;) {
      const current = await rawInfo(sha256);
      if (current && !current.info.deleted && (await chunksPresent(current.info))) {
        // Stored already: refresh touchedAt (never backwards, even across replicas' clocks).
        const touched = Math.max(now(), touchedAtOf(current.info) + 1);
        const info = { ...current.info, metadata: { ...current.info.metadata, [TOUCHED_AT]: `${touched}` } };
        if (await replaceMeta(sha256, info, current.seq)) return;
        continue;
      }
      try {
        const data = Readable.toWeb(createReadStream(path)) as unknown as ReadableStream<Uint8Array>;
        await os.put(
          {
            name: sha256,
            metadata: { [TOUCHED_AT]: `${now()}` },
            options: { max_chunk_size: chunkBytes },
          },
          data,
          // 0 = the meta subject must be new; else the (deleted or broken) entry we saw.
          { previousRevision: current?.seq ?? 0 },
        );
        return;
      } catch (e) {
        // A parallel commit created it first (the library purged our chunks): touch theirs.
        if (!isWrongLastSequence(e)) throw e;
      }
    }
  }

  async function stage(source: AsyncIterable<Uint8Array>, stageOptions: StageOptions): Promise<StagedBlob> {
    return stagedBlob(await stageToFile(stagingDir, source, stageOptions), publish);
  }

  async function statBlob(sha256: string): Promise<StoredBlob | undefined> {
    assertBlobKey(sha256);
    const current = await rawInfo(sha256);
    if (!current || current.info.deleted) return undefined;
    return { sha256, size: current.info.size, touchedAtMs: touchedAtOf(current.info) };
  }

  async function* read(sha256: string, range?: { start: number; end?: number }): AsyncIterable<Uint8Array> {
    assertBlobKey(sha256);
    const start = range?.start ?? 0;
    const end = range?.end;
    assertRange(start, end);
    const result = await os.get(sha256);
    if (!result) throw new BlobNotFoundError();
    // A read stopped early (a range, a cancelled download) makes the library's delivery loop fail on the
    // cancelled stream; that failure is awaited below only when the whole object was read.
    result.error.catch(() => {});
    const limit = end ?? Number.POSITIVE_INFINITY;
    if (limit <= start) {
      await result.data.cancel();
      return;
    }
    // The library delivers whole chunks (and checks the digest at the end): skip to the range, stop after it.
    const reader = result.data.getReader();
    let offset = 0;
    try {
      for (;;) {
        const { done, value } = await withIdleTimeout(reader.read(), readIdleTimeoutMs);
        if (done) break;
        const chunkStart = offset;
        offset += value.byteLength;
        if (offset <= start) continue;
        const from = Math.max(0, start - chunkStart);
        const to = Math.min(value.byteLength, limit - chunkStart);
        if (to > from) yield value.subarray(from, to);
        if (offset >= limit) break;
      }
      if (offset < limit || end === undefined) {
        const error = await result.error;
        if (error) throw error;
      }
    } finally {
      await reader.cancel().catch(() => {});
    }
  }

  async function* list(): AsyncIterable<StoredBlob> {
    for (const info of await os.list()) {
      if (info.deleted || !SHA256_HEX.test(info.name)) continue;
      const v = Number(info.metadata?.[TOUCHED_AT]);
      yield {
        sha256: info.name,
        size: info.size,
        touchedAtMs: Number.isFinite(v) ? v : Date.parse(info.mtime),
      };
    }
  }

  async function deleteBlob(sha256: string, deleteOptions?: { ifTouchedAtMs?: number }): Promise<boolean> {
    assertBlobKey(sha256);
    const expected = deleteOptions?.ifTouchedAtMs;
    for (;;) {
      const current = await rawInfo(sha256);
      if (!current || current.info.deleted) return false;
      if (expected !== undefined && touchedAtOf(current.info) !== expected) return false;
      const tombstone: RawObjectInfo = { ...current.info, deleted: true, size: 0, chunks: 0, digest: "" };
      if (!(await replaceMeta(sha256, tombstone, current.seq))) continue;
      // The meta now says deleted; its chunks go with it (a failure here leaves only unreachable chunks).
      await jsm.streams.purge(stream, { filter: chunkSubject(current.info.nuid) });
      return true;
    }
  }

  const removeStaleTemp = () => removeStaleTempFiles(stagingDir, staleTempMs, now());
  await removeStaleTemp();

  return {
    stage,
    stat: statBlob,
    read,
    list,
    delete: deleteBlob,
    removeStaleTemp,
    close: async () => {},
  };
}

function isWrongLastSequence(e: unknown): boolean {
  return e instanceof JetStreamApiError && e.code === JetStreamApiCodes.StreamWrongLastSequence;
}

function withIdleTimeout<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new BlobReadStalledError(ms)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** No bytes of a blob arrived from the object store within the idle timeout. */
export class BlobReadStalledError extends Error {
  constructor(readonly idleMs: number) {
    super(`no bytes of the blob arrived within ${idleMs} ms`);
    this.name = "BlobReadStalledError";
  }
}
