// Sources' command handlers: load the source, check its organisation, fetch,
// store the manifest, decide and append with optimistic concurrency on the
// source's subject (files.source.<id>). Every command on a source goes
// through that one subject, so snapshots, pins, unpins and deletion of one
// source serialise: a conflicting append reloads and decides again.
import { randomUUID } from "node:crypto";
import {
  type Aggregate,
  aggregate,
  type EventStore,
  FailedPreconditionError,
  NotFoundError,
  type Principal,
  UnavailableError,
} from "@spool/kit";
import { SourceKind } from "@spool/proto/spool/files/v1/sources.js";
import type { BlobStore } from "../blobs/blob-store.js";
import type { SourceSettings } from "./config.js";
import {
  type Change,
  decodeManifest,
  diffManifests,
  encodeManifest,
  type ManifestEntry,
  ManifestError,
  sha256Hex,
} from "./domain/manifest.js";
import {
  type ActiveSourceState,
  activeSource,
  deleteSource,
  pinSnapshot,
  registerSource,
  type SnapshotState,
  SourceEvents,
  type SourceState,
  SourceSubjects,
  snapshotOf,
  sourceReducer,
  takeSnapshot,
  unpinSnapshot,
} from "./domain/source.js";
import type { FetchedTree } from "./fetch/types.js";
import { SourceFetchError } from "./fetch/types.js";

/** Fetches a source's current content into the blob store. */
export type SourceFetcher = (
  source: { kind: SourceKind; url: string; gitRef: string },
  signal?: AbortSignal,
) => Promise<FetchedTree>;

export interface SourcesDeps {
  store: EventStore;
  blobs: BlobStore;
  fetch: SourceFetcher;
  settings: SourceSettings;
  now?: () => number;
}

export type ActiveSource = ActiveSourceState;

export class Sources {
  readonly #sources: Aggregate<SourceState, string>;
  readonly #now: () => number;

  constructor(private readonly deps: SourcesDeps) {
    this.#sources = aggregate(deps.store, { subject: SourceSubjects.source, reducer: sourceReducer });
    this.#now = deps.now ?? Date.now;
  }

  async register(
    by: Principal,
    request: { displayName: string; kind: SourceKind; url: string; gitRef: string },
  ): Promise<ActiveSource> {
    const sourceId = randomUUID();
    const result = await this.#sources.handle(
      sourceId,
      (state) =>
        registerSource(state, {
          sourceId,
          orgId: by.orgId,
          createdBy: by.subject,
          displayName: request.displayName,
          kind: request.kind,
          url: request.url,
          gitRef: request.gitRef,
          registeredAtMs: BigInt(this.#now()),
        }),
      { actor: by.subject },
    );
    return activeSource(result.state);
  }

  /** The caller's organisation's source, else NOT_FOUND (another organisation's, deleted or unknown alike). */
  async get(by: Principal, sourceId: string): Promise<ActiveSource> {
    const { state } = await this.#sources.load(sourceId);
    if (state.status !== "active" || state.source.orgId !== by.orgId)
      throw new NotFoundError("source not found");
    return activeSource(state);
  }

  /**
   * Fetches the source and records the snapshot. The fetch runs outside any
   * lock (it may take minutes); the append is conditional on the subject, so
   * parallel snapshots of one source get consecutive numbers and each one's
   * retention is decided on the state it actually follows.
   */
  async takeSnapshot(
    by: Principal,
    sourceId: string,
    signal?: AbortSignal,
  ): Promise<{ state: ActiveSource; snapshot: SnapshotState; pruned: number[] }> {
    const before = await this.get(by, sourceId);
    const { kind, url, gitRef } = before.source;
    let tree: FetchedTree;
    let manifest: Buffer;
    try {
      tree = await this.deps.fetch({ kind, url, gitRef }, signal);
      manifest = encodeManifest(tree.entries);
    } catch (e) {
      throw asRefusal(e);
    }
    const ref = sha256Hex(manifest);
    // The manifest is stored before the event names it (the collector's invariant).
    const staged = await this.deps.blobs.stage(one(manifest), { maxBytes: manifest.length });
    if (staged.sha256 !== ref) throw new UnavailableError("the blob store returned another hash");
    await staged.commit();
    const totalBytes = tree.entries.reduce((sum, e) => sum + BigInt(e.size), 0n);
    const result = await this.#sources.handle(
      sourceId,
      (state) => {
        if (state.status === "active" && state.source.orgId !== by.orgId)
          throw new NotFoundError("source not found");
        return takeSnapshot(
          state,
          {
            ref,
            fileCount: tree.entries.length,
            totalBytes,
            commit: tree.commit,
            skippedLinks: tree.skippedLinks,
          },
          { keep: this.deps.settings.keep, nowMs: this.#now(), by: by.subject },
        );
      },
      { actor: by.subject, maxAttempts: 50 },
    );
    const state = activeSource(result.state);
    const number = state.snapshots.length;
    const snapshot = snapshotOf(state, number);
    if (!snapshot) throw new UnavailableError("the snapshot was not recorded");
    // What this append pruned: the numbers of the SnapshotPruned events it carried.
    const prunedType = SourceEvents.typeName("SnapshotPruned");
    const pruned = result.events
      .filter((e) => e.type === prunedType)
      .map((e) => SourceEvents.types.SnapshotPruned.decode(e.data).number);
    return { state, snapshot, pruned };
  }

  async snapshot(by: Principal, sourceId: string, number: number): Promise<SnapshotState> {
    const snapshot = snapshotOf(await this.get(by, sourceId), number);
    if (!snapshot) throw new NotFoundError("snapshot not found");
    return snapshot;
  }

  /** A snapshot's manifest, read back from the blob store and checked against its ref. */
  async manifest(ref: string): Promise<ManifestEntry[]> {
    const parts: Uint8Array[] = [];
    try {
      for await (const chunk of this.deps.blobs.read(ref)) parts.push(chunk);
    } catch (e) {
      throw new UnavailableError("the snapshot's manifest is not readable", { cause: e });
    }
    const bytes = Buffer.concat(parts);
    if (sha256Hex(bytes) !== ref)
      throw new UnavailableError("the snapshot's manifest does not match its ref");
    return decodeManifest(bytes);
  }

  /**
   * The changes from `fromRef` to `toRef`, both looked up among this source's
   * snapshots only (a ref of another source or organisation is unknown here):
   * an empty or unknown `fromRef` lists every path of `toRef` as added.
   */
  async diff(
    by: Principal,
    sourceId: string,
    fromRef: string,
    toRef: string,
  ): Promise<{ changes: Change[]; fromKnown: boolean }> {
    const state = await this.get(by, sourceId);
    const has = (ref: string) => ref !== "" && state.snapshots.some((s) => s.ref === ref);
    if (!has(toRef)) throw new NotFoundError("to_ref is not a snapshot of this source");
    const fromKnown = has(fromRef);
    const from = fromKnown ? await this.manifest(fromRef) : undefined;
    return { changes: diffManifests(from, await this.manifest(toRef)), fromKnown };
  }

  async pin(by: Principal, sourceId: string, number: number, holder: string): Promise<SnapshotState> {
    return this.#onSnapshot(by, sourceId, number, (state) =>
      pinSnapshot(
        state,
        { number, holder },
        { maxPins: this.deps.settings.maxPins, nowMs: this.#now(), by: by.subject },
      ),
    );
  }

  async unpin(by: Principal, sourceId: string, number: number, holder: string): Promise<SnapshotState> {
    return this.#onSnapshot(by, sourceId, number, (state) =>
      unpinSnapshot(
        state,
        { number, holder },
        { keep: this.deps.settings.keep, nowMs: this.#now(), by: by.subject },
      ),
    );
  }

  async delete(by: Principal, sourceId: string): Promise<void> {
    await this.#sources.handle(
      sourceId,
      (state) => {
        if (state.status !== "active" || state.source.orgId !== by.orgId)
          throw new NotFoundError("source not found");
        return deleteSource(state, { nowMs: this.#now(), by: by.subject });
      },
      { actor: by.subject },
    );
  }

  async #onSnapshot(
    by: Principal,
    sourceId: string,
    number: number,
    decide: (state: SourceState) => ReturnType<typeof pinSnapshot>,
  ): Promise<SnapshotState> {
    const result = await this.#sources.handle(
      sourceId,
      (state) => {
        if (state.status !== "active" || state.source.orgId !== by.orgId)
          throw new NotFoundError("source not found");
        return decide(state);
      },
      { actor: by.subject, maxAttempts: 50 },
    );
    const snapshot = snapshotOf(result.state, number);
    if (!snapshot) throw new NotFoundError("snapshot not found");
    return snapshot;
  }
}

async function* one(bytes: Uint8Array): AsyncGenerator<Uint8Array> {
  yield bytes;
}

/**
 * A refused fetch as the kit's errors: FAILED_PRECONDITION naming the stable
 * reason (the URL and ref were checked at registration, so what fails now is
 * what the remote served or how it served it). Never git's own output.
 */
function asRefusal(e: unknown): unknown {
  if (e instanceof ManifestError)
    return new FailedPreconditionError(`source refused (${e.reason}): ${e.message}`);
  if (e instanceof SourceFetchError) return new FailedPreconditionError(`source refused (${e.message})`);
  return e;
}

export { SourceKind };
