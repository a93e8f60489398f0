// The filesystem blob store (the default): blobs at <root>/blobs/<aa>/<sha256>,
// staged under <root>/tmp, written with temp file + fsync + link + directory
// fsync, so a blob under its hash is always complete and durable.
//
// touchedAtMs is the file's modification time: a commit of bytes already
// stored sets it to now (utimes). The collector's conditional delete moves
// the blob into <root>/trash first (one atomic rename) and only then reads
// the moved file's time: a commit that touched it before the rename is seen
// (the blob is put back), one after the rename finds no blob and links its
// own staged copy in its place. Either way the commit's blob survives.
import { randomBytes } from "node:crypto";
import { createReadStream } from "node:fs";
import { link, mkdir, readdir, rename, rm, stat, utimes } from "node:fs/promises";
import { join } from "node:path";
import {
  assertBlobKey,
  BlobNotFoundError,
  type BlobStore,
  SHA256_HEX,
  type StagedBlob,
  type StageOptions,
  type StoredBlob,
} from "./blob-store.js";
import { errorCode, fsyncDirectory, removeStaleTempFiles, stagedBlob, stageToFile } from "./staging.js";

export interface FsBlobStoreOptions {
  /** The store's directory (created if missing); nothing outside it is ever written. */
  root: string;
  /** Temporary files not written for this long are removed at start (default 1 hour). */
  staleTempMs?: number;
  /** Clock (tests). */
  now?: () => number;
}

export interface FsBlobStore extends BlobStore {
  /** Removes stale temporary files now (also done at start); returns how many. */
  removeStaleTemp(): Promise<number>;
}

export const DEFAULT_STALE_TEMP_MS = 60 * 60 * 1000;

/** Opens (creating its directories) a filesystem blob store and sweeps what a crashed process left. */
export async function createFsBlobStore(options: FsBlobStoreOptions): Promise<FsBlobStore> {
  const now = options.now ?? Date.now;
  const staleTempMs = options.staleTempMs ?? DEFAULT_STALE_TEMP_MS;
  const tmpDir = join(options.root, "tmp");
  const blobsDir = join(options.root, "blobs");
  const trashDir = join(options.root, "trash");
  for (const dir of [tmpDir, blobsDir, trashDir]) await mkdir(dir, { recursive: true, mode: 0o700 });

  const dirOf = (sha256: string) => join(blobsDir, sha256.slice(0, 2));
  const pathOf = (sha256: string) => join(dirOf(sha256), sha256);
  const touchedAt = (mtimeMs: number) => Math.floor(mtimeMs);

  const removeStaleTemp = () => removeStaleTempFiles(tmpDir, staleTempMs, now());

  /** Puts back what a collector that crashed mid-delete left in the trash: the next collection decides again. */
  async function restoreTrash(): Promise<void> {
    for (const name of await readdir(trashDir)) {
      const trashed = join(trashDir, name);
      const sha256 = name.split(".")[0] ?? "";
      if (SHA256_HEX.test(sha256)) {
        await mkdir(dirOf(sha256), { recursive: true, mode: 0o700 });
        await link(trashed, pathOf(sha256)).catch((e) => {
          if (errorCode(e) !== "EEXIST") throw e;
        });
      }
      await rm(trashed, { force: true });
    }
  }

  async function publish(staged: string, sha256: string): Promise<void> {
    const dir = dirOf(sha256);
    const created = await mkdir(dir, { recursive: true, mode: 0o700 });
    if (created) await fsyncDirectory(blobsDir);
    const final = pathOf(sha256);
    const at = new Date(now());
    // The commit time, not the staging's last write, starts the grace period.
    await utimes(staged, at, at);
    for (;;) {
      try {
        // link, not rename: it fails when the blob exists instead of replacing it.
        await link(staged, final);
        await fsyncDirectory(dir);
        return;
      } catch (e) {
        if (errorCode(e) !== "EEXIST") throw e;
      }
      try {
        await utimes(final, at, at);
        return;
      } catch (e) {
        // The collector moved it away between our link and utimes: link ours in its place.
        if (errorCode(e) !== "ENOENT") throw e;
      }
    }
  }

  async function stage(source: AsyncIterable<Uint8Array>, stageOptions: StageOptions): Promise<StagedBlob> {
    return stagedBlob(await stageToFile(tmpDir, source, stageOptions), publish);
  }

  async function statBlob(sha256: string): Promise<StoredBlob | undefined> {
    assertBlobKey(sha256);
    try {
      const info = await stat(pathOf(sha256));
      return { sha256, size: info.size, touchedAtMs: touchedAt(info.mtimeMs) };
    } catch (e) {
      if (errorCode(e) === "ENOENT") return undefined;
      throw e;
    }
  }

  async function* read(sha256: string, range?: { start: number; end?: number }): AsyncIterable<Uint8Array> {
    assertBlobKey(sha256);
    const start = range?.start ?? 0;
    const end = range?.end;
    assertRange(start, end);
    if (end !== undefined && end <= start) return;
    const stream = createReadStream(pathOf(sha256), {
      start,
      ...(end !== undefined ? { end: end - 1 } : {}),
      highWaterMark: 256 * 1024,
    });
    try {
      for await (const chunk of stream) yield chunk as Buffer;
    } catch (e) {
      if (errorCode(e) === "ENOENT") throw new BlobNotFoundError();
      throw e;
    } finally {
      stream.destroy();
    }
  }

  async function* list(): AsyncIterable<StoredBlob> {
    for (const prefix of await readdir(blobsDir)) {
      if (!/^[0-9a-f]{2}$/.test(prefix)) continue;
      const names = await readdir(join(blobsDir, prefix)).catch(() => [] as string[]);
      for (const name of names) {
        if (!SHA256_HEX.test(name) || !name.startsWith(prefix)) continue;
        const blob = await statBlob(name);
        if (blob) yield blob;
      }
    }
  }

  async function deleteBlob(sha256: string, deleteOptions?: { ifTouchedAtMs?: number }): Promise<boolean> {
    assertBlobKey(sha256);
    const expected = deleteOptions?.ifTouchedAtMs;
    const final = pathOf(sha256);
    if (expected === undefined) {
      const existed = await stat(final).then(
        () => true,
        () => false,
      );
      await rm(final, { force: true });
      if (existed) await fsyncDirectory(dirOf(sha256));
      return existed;
    }
    // Compare-and-delete: take it away atomically, then look at what we took.
    const trashed = join(trashDir, `${sha256}.${randomBytes(8).toString("hex")}`);
    try {
      await rename(final, trashed);
    } catch (e) {
      if (errorCode(e) === "ENOENT") return false;
      throw e;
    }
    const info = await stat(trashed);
    if (touchedAt(info.mtimeMs) === expected) {
      await rm(trashed, { force: true });
      await fsyncDirectory(dirOf(sha256));
      return true;
    }
    // Touched by a commit since the collector looked: put it back (unless a commit already linked a new copy).
    await link(trashed, final).catch((e) => {
      if (errorCode(e) !== "EEXIST") throw e;
    });
    await rm(trashed, { force: true });
    return false;
  }

  await restoreTrash();
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

/** Byte ranges are validated here too: a caller's mistake is an error, never a read of something else. */
export function assertRange(start: number, end: number | undefined): void {
  if (!Number.isSafeInteger(start) || start < 0)
    throw new RangeError("range start must be a non-negative integer");
  if (end !== undefined && (!Number.isSafeInteger(end) || end < 0)) {
    throw new RangeError("range end must be a non-negative integer");
  }
}
