// One behavioural suite for both blob stores (filesystem and JetStream object
// store): staging, dedupe under parallel commits, nothing left behind by a
// failed upload, ranges, key validation, conditional delete, and the
// collector (including its race with a commit).
import { createHash } from "node:crypto";
import { mkdtempSync, readdirSync, rmSync } from "node:fs";
import { utimes, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { jetstreamManager } from "@nats-io/jetstream";
import { Base64UrlPaddedCodec } from "@nats-io/obj";
import type { NatsConnection } from "@nats-io/transport-node";
import { connectNats, createLogger } from "@spool/kit";
import { eventually, useInfra } from "@spool/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BlobCollector, collectBlobs } from "./blob-collector.js";
import { type BlobStore, BlobTooLargeError, InvalidBlobKeyError } from "./blob-store.js";
import { createFsBlobStore } from "./fs-blob-store.js";
import { BlobReadStalledError, createNatsBlobStore } from "./nats-blob-store.js";

const infra = useInfra("blobs");
let nc: NatsConnection;
const cleanups: (() => unknown)[] = [];

beforeAll(async () => {
  nc = await connectNats({ url: infra().natsUrl, name: "blob-contract-test" });
});
afterAll(async () => {
  for (const c of cleanups.reverse()) await Promise.resolve(c()).catch(() => {});
  await nc?.close();
});

/** A store under test, with its local staging directory and a clock the test moves. */
interface Opened {
  store: BlobStore & { removeStaleTemp(): Promise<number> };
  stagingDir: string;
  clock: { now: number };
}

interface StoreAdapter {
  name: string;
  open(options?: { staleTempMs?: number }): Promise<Opened>;
}

function tempDir(label: string): string {
  const dir = mkdtempSync(join(tmpdir(), `spool-${label}-`));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

let buckets = 0;
const adapters: StoreAdapter[] = [
  {
    name: "filesystem",
    async open(options = {}) {
      const root = tempDir("fsblobs");
      const clock = { now: Date.now() };
      const store = await createFsBlobStore({ root, now: () => clock.now, ...options });
      return { store, stagingDir: join(root, "tmp"), clock };
    },
  },
  {
    name: "jetstream object store",
    async open(options = {}) {
      const stagingDir = tempDir("natsblobs");
      const clock = { now: Date.now() };
      const store = await createNatsBlobStore({
        nc,
        bucket: `${infra().streamPrefix}_blobs${++buckets}`,
        stagingDir,
        // Small chunks: ranges cross chunk boundaries.
        chunkBytes: 1024,
        now: () => clock.now,
        ...options,
      });
      return { store, stagingDir, clock };
    },
  },
];

const sha = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

function bytes(n: number, seed = 1): Uint8Array {
  const b = new Uint8Array(n);
  let x = seed;
  for (let i = 0; i < n; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    b[i] = x >>> 24;
  }
  return b;
}

async function* chunked(b: Uint8Array, size = 700): AsyncGenerator<Uint8Array> {
  for (let i = 0; i < b.length; i += size) yield b.subarray(i, i + size);
}

async function readAll(it: AsyncIterable<Uint8Array>): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  for await (const p of it) parts.push(p);
  return new Uint8Array(Buffer.concat(parts));
}

async function listAll(store: BlobStore) {
  const out = [];
  for await (const b of store.list()) out.push(b);
  return out;
}

async function put(store: BlobStore, content: Uint8Array): Promise<string> {
  const staged = await store.stage(chunked(content), { maxBytes: 1 << 24 });
  await staged.commit();
  return staged.sha256;
}

describe.each(adapters)("blob store contract: $name", (adapter) => {
  it("stages while hashing, commits under the sha256, reads whole and by range", async () => {
    const { store, stagingDir } = await adapter.open();
    const content = bytes(5_000);
    const staged = await store.stage(chunked(content), { maxBytes: 10_000 });
    expect(staged.sha256).toBe(sha(content));
    expect(staged.size).toBe(5_000);
    // Not visible before commit.
    expect(await store.stat(staged.sha256)).toBeUndefined();
    await staged.commit();
    await staged.commit(); // idempotent
    expect(await store.stat(staged.sha256)).toMatchObject({ sha256: sha(content), size: 5_000 });
    expect(await readAll(store.read(staged.sha256))).toEqual(content);
    for (const [start, end] of [
      [0, 1],
      [1000, 1030],
      [1020, 3100],
      [4999, 5000],
      [4000, undefined],
      [100, 100],
      [5000, undefined],
    ] as const) {
      const range = end === undefined ? { start } : { start, end };
      expect(await readAll(store.read(staged.sha256, range)), `range ${start}-${end}`).toEqual(
        content.subarray(start, end ?? content.length),
      );
    }
    expect((await listAll(store)).map((b) => b.sha256)).toEqual([sha(content)]);
    expect(readdirSync(stagingDir)).toEqual([]);
  });

  it("an empty blob is a blob", async () => {
    const { store } = await adapter.open();
    const empty = new Uint8Array(0);
    const key = await put(store, empty);
    expect(key).toBe(sha(empty));
    expect(await store.stat(key)).toMatchObject({ size: 0 });
    expect(await readAll(store.read(key))).toEqual(empty);
  });

  it("20 parallel stages and commits of the same bytes store one blob with the right content", async () => {
    const { store, stagingDir, clock } = await adapter.open();
    const content = bytes(20_000, 7);
    const first = clock.now;
    const keys = await Promise.all(Array.from({ length: 20 }, () => put(store, content)));
    expect(new Set(keys)).toEqual(new Set([sha(content)]));
    const listed = await listAll(store);
    expect(listed).toHaveLength(1);
    expect(listed[0]).toMatchObject({ sha256: sha(content), size: 20_000 });
    expect(listed[0]?.touchedAtMs).toBeGreaterThanOrEqual(first);
    expect(await readAll(store.read(sha(content)))).toEqual(content);
    expect(readdirSync(stagingDir)).toEqual([]);
  });

  it("a commit of bytes already stored refreshes touchedAt and drops the staged copy", async () => {
    const { store, stagingDir, clock } = await adapter.open();
    const content = bytes(3_000, 3);
    const key = await put(store, content);
    const before = (await store.stat(key))?.touchedAtMs ?? 0;
    clock.now += 60_000;
    await put(store, content);
    const after = (await store.stat(key))?.touchedAtMs ?? 0;
    expect(after).toBeGreaterThanOrEqual(before + 60_000);
    expect(readdirSync(stagingDir)).toEqual([]);
    expect(await listAll(store)).toHaveLength(1);
  });

  it("a failed or aborted stage leaves nothing behind: source error, abort signal, over the limit, discard", async () => {
    const { store, stagingDir } = await adapter.open();
    async function* failing(): AsyncGenerator<Uint8Array> {
      yield bytes(1_000);
      yield bytes(1_000, 2);
      throw new Error("client went away");
    }
    await expect(store.stage(failing(), { maxBytes: 10_000 })).rejects.toThrow("client went away");
    expect(readdirSync(stagingDir)).toEqual([]);

    // A source that stalls after its first chunk: the abort must not wait for it.
    const abort = new AbortController();
    let sent!: () => void;
    const firstSent = new Promise<void>((r) => {
      sent = r;
    });
    async function* stalling(): AsyncGenerator<Uint8Array> {
      yield bytes(1_000);
      sent();
      await new Promise(() => {});
    }
    const aborted = store.stage(stalling(), { maxBytes: 10_000, signal: abort.signal });
    await firstSent;
    abort.abort(new Error("upload cancelled"));
    await expect(aborted).rejects.toThrow("upload cancelled");
    expect(readdirSync(stagingDir)).toEqual([]);

    await expect(store.stage(chunked(bytes(10_001)), { maxBytes: 10_000 })).rejects.toBeInstanceOf(
      BlobTooLargeError,
    );
    expect(readdirSync(stagingDir)).toEqual([]);
    // Exactly at the limit is fine.
    const atLimit = await store.stage(chunked(bytes(10_000)), { maxBytes: 10_000 });
    expect(readdirSync(stagingDir)).toHaveLength(1);
    await atLimit.discard();
    await atLimit.discard();
    expect(readdirSync(stagingDir)).toEqual([]);
    await expect(atLimit.commit()).rejects.toThrow(/discarded/);
    expect(await listAll(store)).toEqual([]);
  });

  it("removes stale temporary files a crashed process left, and only those", async () => {
    const { store, stagingDir } = await adapter.open({ staleTempMs: 60_000 });
    const stale = join(stagingDir, `${"ab".repeat(16)}.part`);
    const fresh = join(stagingDir, `${"cd".repeat(16)}.part`);
    const foreign = join(stagingDir, "not-ours.txt");
    for (const f of [stale, fresh, foreign]) await writeFile(f, "x");
    const old = new Date(Date.now() - 3_600_000);
    await utimes(stale, old, old);
    await utimes(foreign, old, old);
    expect(await store.removeStaleTemp()).toBe(1);
    expect(readdirSync(stagingDir).sort()).toEqual([`${"cd".repeat(16)}.part`, "not-ours.txt"]);
  });

  it("refuses every key that is not a lowercase hex sha256 before it touches a path", async () => {
    const { store } = await adapter.open();
    for (const key of ["../../etc/passwd", "A".repeat(64), `${"a".repeat(63)}/`, "", `${"a".repeat(64)}\0`]) {
      await expect(store.stat(key)).rejects.toBeInstanceOf(InvalidBlobKeyError);
      await expect(store.delete(key)).rejects.toBeInstanceOf(InvalidBlobKeyError);
      await expect(readAll(store.read(key))).rejects.toBeInstanceOf(InvalidBlobKeyError);
    }
    await expect(readAll(store.read("0".repeat(64)))).rejects.toThrow(/not found/);
  });

  it("a conditional delete removes the blob only while touchedAt is unchanged", async () => {
    const { store, clock } = await adapter.open();
    const content = bytes(2_500, 9);
    const key = await put(store, content);
    const seen = (await store.stat(key))?.touchedAtMs ?? 0;
    clock.now += 1_000;
    await put(store, content); // touched since "seen"
    expect(await store.delete(key, { ifTouchedAtMs: seen })).toBe(false);
    expect(await readAll(store.read(key))).toEqual(content);
    const now = (await store.stat(key))?.touchedAtMs ?? 0;
    expect(await store.delete(key, { ifTouchedAtMs: now })).toBe(true);
    expect(await store.stat(key)).toBeUndefined();
    expect(await store.delete(key)).toBe(false);
    // Stored again after a delete: a new blob, complete.
    await put(store, content);
    expect(await readAll(store.read(key))).toEqual(content);
  });

  it("the collector removes old unreferenced blobs, keeps referenced and young ones", async () => {
    const { store, clock } = await adapter.open();
    const graceMs = 3_600_000;
    const old = await put(store, bytes(100, 11));
    const referenced = await put(store, bytes(100, 12));
    clock.now += graceMs + 1;
    const young = await put(store, bytes(100, 13));
    const result = await collectBlobs({
      store,
      graceMs,
      now: () => clock.now,
      isReferenced: async (key) => key === referenced,
    });
    expect(result.examined).toBe(3);
    expect(result.deleted).toEqual([old]);
    expect(await store.stat(old)).toBeUndefined();
    expect(await store.stat(referenced)).toBeDefined();
    expect(await store.stat(young)).toBeDefined();
  });

  it("race: an old unreferenced blob re-committed by an upload just before collection is not deleted", async () => {
    const { store, clock } = await adapter.open();
    const graceMs = 3_600_000;
    const content = bytes(4_000, 21);
    const key = await put(store, content);
    clock.now += graceMs * 2;
    // The upload commits after the collector listed the blob (old touchedAt) and while it asks about
    // references; its file record is not written yet, so the blob is still unreferenced.
    const result = await collectBlobs({
      store,
      graceMs,
      now: () => clock.now,
      isReferenced: async (candidate) => {
        if (candidate === key) await put(store, content);
        return false;
      },
    });
    expect(result.deleted).toEqual([]);
    expect(await readAll(store.read(key))).toEqual(content);
    // The next pass, once the grace period is over and the upload's record never came, collects it.
    clock.now += graceMs * 2;
    const later = await collectBlobs({
      store,
      graceMs,
      now: () => clock.now,
      isReferenced: async () => false,
    });
    expect(later.deleted).toEqual([key]);
  });

  it("race: commits and conditional deletes in parallel never leave a committed blob missing", async () => {
    const { store, clock } = await adapter.open();
    const content = bytes(3_000, 31);
    const key = await put(store, content);
    for (let round = 0; round < 5; round++) {
      clock.now += 10_000;
      const seen = (await store.stat(key))?.touchedAtMs;
      if (seen === undefined) await put(store, content);
      const touchedAt = (await store.stat(key))?.touchedAtMs ?? 0;
      clock.now += 10_000;
      // Each commit that returns promises the blob exists afterwards.
      const [, committed] = await Promise.all([
        store.delete(key, { ifTouchedAtMs: touchedAt }),
        put(store, content).then(() => true),
      ]);
      expect(committed).toBe(true);
      expect(await readAll(store.read(key)), `round ${round}`).toEqual(content);
    }
  });
});

describe("jetstream object store specifics", () => {
  it("an object whose chunks are gone (meta kept) is replaced by the next commit; reading it fails, never hangs", async () => {
    const bucket = `${infra().streamPrefix}_broken`;
    const store = await createNatsBlobStore({
      nc,
      bucket,
      stagingDir: tempDir("natsbroken"),
      chunkBytes: 1024,
      readIdleTimeoutMs: 500,
    });
    const content = bytes(3_000, 41);
    const key = await put(store, content);
    // What the library leaves when a put's meta publish answered too late: its chunks purged, its meta live.
    const jsm = await jetstreamManager(nc);
    const meta = await jsm.streams.getMessage(`OBJ_${bucket}`, {
      last_by_subj: `$O.${bucket}.M.${Base64UrlPaddedCodec.encode(key)}`,
    });
    const { nuid } = meta!.json<{ nuid: string }>();
    await jsm.streams.purge(`OBJ_${bucket}`, { filter: `$O.${bucket}.C.${nuid}` });
    await expect(readAll(store.read(key))).rejects.toBeInstanceOf(BlobReadStalledError);

    await put(store, content);
    expect(await readAll(store.read(key))).toEqual(content);
  });
});

describe("BlobCollector", () => {
  it("collects on its timer and stops cleanly", async () => {
    const root = tempDir("collector");
    const clock = { now: Date.now() };
    const store = await createFsBlobStore({ root, now: () => clock.now });
    const key = await put(store, bytes(100, 51));
    clock.now += 10_000;
    const collector = new BlobCollector({
      store,
      graceMs: 5_000,
      now: () => clock.now,
      isReferenced: async () => false,
      intervalMs: 50,
      logger: createLogger({ service: "collector-test", level: "silent" }),
    });
    collector.start();
    try {
      await eventually(async () => (await store.stat(key)) === undefined, { what: "the blob collected" });
    } finally {
      await collector.stop();
    }
  });
});
