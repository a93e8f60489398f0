// Staging shared by the blob stores: bytes streamed into a temporary file of
// a server-generated name, hashed and counted on the way, fsync'ed. Whatever
// goes wrong (the source throws, the signal aborts, the limit is passed) the
// file is removed before the error is rethrown: nothing stays behind.
import { createHash, randomBytes } from "node:crypto";
import { constants } from "node:fs";
import { open, readdir, rm, stat } from "node:fs/promises";
import { join } from "node:path";
import { BlobTooLargeError, type StagedBlob, type StageOptions } from "./blob-store.js";

/** Temporary names: 32 random hex digits; nothing else in a staging directory is ever touched. */
const TEMP_NAME = /^[0-9a-f]{32}\.part$/;

export interface StagedFile {
  readonly path: string;
  readonly sha256: string;
  readonly size: number;
}

/** Streams `source` into a new file under `dir`, hashing it; removes the file on any failure. */
export async function stageToFile(
  dir: string,
  source: AsyncIterable<Uint8Array>,
  options: StageOptions,
): Promise<StagedFile> {
  const { maxBytes, signal } = options;
  signal?.throwIfAborted();
  const path = join(dir, `${randomBytes(16).toString("hex")}.part`);
  // O_EXCL: a name that exists (never, with 128 random bits) is an error, never reused.
  const file = await open(path, constants.O_CREAT | constants.O_EXCL | constants.O_WRONLY, 0o600);
  const hash = createHash("sha256");
  let size = 0;
  const iterator = source[Symbol.asyncIterator]();
  try {
    for (;;) {
      const next = await untilAborted(iterator.next(), signal);
      if (next.done) break;
      const chunk = next.value;
      size += chunk.byteLength;
      if (size > maxBytes) throw new BlobTooLargeError(maxBytes);
      hash.update(chunk);
      await file.write(chunk);
      signal?.throwIfAborted();
    }
    await file.sync();
    await file.close();
    return { path, sha256: hash.digest("hex"), size };
  } catch (e) {
    // Tell the source we stop reading (a generator's finally runs); its own failure does not matter here.
    void Promise.resolve(iterator.return?.()).catch(() => {});
    await file.close().catch(() => {});
    await rm(path, { force: true });
    throw e;
  }
}

/**
 * A staged file as a StagedBlob: `publish` moves its bytes under their hash
 * (each store its own way); commit is idempotent, a discarded blob cannot be
 * committed, and the temporary file goes either way.
 */
export function stagedBlob(
  file: StagedFile,
  publish: (path: string, sha256: string) => Promise<unknown>,
): StagedBlob {
  let state: "staged" | "committed" | "discarded" = "staged";
  return {
    sha256: file.sha256,
    size: file.size,
    async commit() {
      if (state === "committed") return;
      if (state === "discarded") throw new Error("the staged blob was discarded");
      await publish(file.path, file.sha256);
      state = "committed";
      await rm(file.path, { force: true });
    },
    async discard() {
      if (state === "staged") state = "discarded";
      await rm(file.path, { force: true });
    },
  };
}

/** Rejects with the signal's reason as soon as it aborts, even while `promise` is still pending. */
function untilAborted<T>(promise: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (!signal) return promise;
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener("abort", onAbort, { once: true });
    promise.then(
      (v) => {
        signal.removeEventListener("abort", onAbort);
        resolve(v);
      },
      (e) => {
        signal.removeEventListener("abort", onAbort);
        reject(e);
      },
    );
  });
}

/**
 * Removes temporary files under `dir` not written for `olderThanMs`: what a
 * crashed process left. A live upload writes its file as bytes arrive, so
 * its modification time stays recent. Returns how many were removed.
 */
export async function removeStaleTempFiles(dir: string, olderThanMs: number, nowMs: number): Promise<number> {
  let removed = 0;
  for (const name of await readdir(dir)) {
    if (!TEMP_NAME.test(name)) continue;
    const path = join(dir, name);
    const info = await stat(path).catch(() => undefined);
    if (info && nowMs - info.mtimeMs >= olderThanMs) {
      await rm(path, { force: true });
      removed++;
    }
  }
  return removed;
}

/** Makes a directory's entries (a created, renamed or removed file) durable. */
export async function fsyncDirectory(dir: string): Promise<void> {
  const handle = await open(dir, constants.O_RDONLY | constants.O_DIRECTORY);
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** The error code of a failed fs call ("ENOENT", "EEXIST", ...). */
export function errorCode(e: unknown): string | undefined {
  return (e as { code?: unknown })?.code as string | undefined;
}
