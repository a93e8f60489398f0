// An in-memory BlobStore for tests of the fetchers (the filesystem store is
// the file-store engineer's; this one keeps the same contract: content
// addressed by sha256, limits while streaming, nothing visible before commit).
import { createHash } from "node:crypto";
import {
  type BlobStore,
  BlobTooLargeError,
  type StagedBlob,
  type StoredBlob,
} from "../../src/blobs/blob-store.js";

export class MemoryBlobStore implements BlobStore {
  readonly blobs = new Map<string, { bytes: Buffer; touchedAtMs: number }>();

  async stage(
    source: AsyncIterable<Uint8Array>,
    options: { maxBytes: number; signal?: AbortSignal },
  ): Promise<StagedBlob> {
    const hash = createHash("sha256");
    const parts: Buffer[] = [];
    let size = 0;
    for await (const chunk of source) {
      options.signal?.throwIfAborted();
      size += chunk.byteLength;
      if (size > options.maxBytes) throw new BlobTooLargeError(options.maxBytes);
      hash.update(chunk);
      parts.push(Buffer.from(chunk));
    }
    const sha256 = hash.digest("hex");
    const bytes = Buffer.concat(parts);
    let done = false;
    return {
      sha256,
      size,
      commit: async () => {
        if (done) return;
        done = true;
        this.blobs.set(sha256, { bytes, touchedAtMs: Date.now() });
      },
      discard: async () => {
        done = true;
      },
    };
  }

  async stat(sha256: string): Promise<StoredBlob | undefined> {
    const b = this.blobs.get(sha256);
    return b ? { sha256, size: b.bytes.length, touchedAtMs: b.touchedAtMs } : undefined;
  }

  async *read(sha256: string, range?: { start: number; end?: number }): AsyncIterable<Uint8Array> {
    const b = this.blobs.get(sha256);
    if (!b) throw new Error("no such blob");
    yield b.bytes.subarray(range?.start ?? 0, range?.end ?? b.bytes.length);
  }

  async *list(): AsyncIterable<StoredBlob> {
    for (const [sha256, b] of this.blobs) yield { sha256, size: b.bytes.length, touchedAtMs: b.touchedAtMs };
  }

  async delete(sha256: string): Promise<void> {
    this.blobs.delete(sha256);
  }

  async close(): Promise<void> {}
}
