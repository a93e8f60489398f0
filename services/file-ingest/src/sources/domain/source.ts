// A source's aggregate (subject files.source.<source_id> in FILES): its
// registration, snapshots, pins, retention and deletion. Pure: decide
// functions return the events a command produces, evolve folds them.
//
// Retention: the last `keep` snapshots (by number) stay materialised; a
// snapshot outside them is pruned as soon as nothing pins it. A pruned
// snapshot keeps its manifest (its ref stays diffable) and is never
// materialised again: snapshots are immutable.
import {
  defineEvents,
  type EventOf,
  FailedPreconditionError,
  family,
  type NewEvent,
  NotFoundError,
  ResourceExhaustedError,
  unreachable,
} from "@spool/kit";
import * as ev from "@spool/proto/spool/files/v1/source_events.js";
import type { SourceKind } from "@spool/proto/spool/files/v1/sources.js";

/** The source's events; the type header is "spool.files.v1." + the short name. */
export const SourceEvents = defineEvents(
  {
    SourceRegistered: ev.SourceRegistered,
    SnapshotTaken: ev.SnapshotTaken,
    SnapshotPruned: ev.SnapshotPruned,
    SnapshotPinned: ev.SnapshotPinned,
    SnapshotUnpinned: ev.SnapshotUnpinned,
    SourceDeleted: ev.SourceDeleted,
  },
  { prefix: "spool.files.v1." },
);
export type SourceEvent = EventOf<typeof SourceEvents>;

/**
 * The subject family of sources, inside the FILES stream (its filter
 * "files.>" covers it; the kit's FilesStreams is not changed for it).
 */
export const SourceSubjects = { source: family("files.source") };

export interface SnapshotState {
  readonly number: number;
  readonly ref: string;
  readonly fileCount: number;
  readonly totalBytes: bigint;
  readonly commit: string;
  readonly skippedLinks: number;
  readonly takenAtMs: bigint;
  readonly materialised: boolean;
  /** Holders pinning it, sorted. */
  readonly pins: readonly string[];
}

export interface SourceInfo {
  readonly sourceId: string;
  readonly orgId: string;
  readonly createdBy: string;
  readonly displayName: string;
  readonly kind: SourceKind;
  readonly url: string;
  readonly gitRef: string;
  readonly registeredAtMs: bigint;
}

export interface ExistingSource {
  readonly status: "active" | "deleted";
  readonly source: SourceInfo;
  /** Every snapshot ever taken, by ascending number (numbers are 1..n without gaps). */
  readonly snapshots: readonly SnapshotState[];
}
export type ActiveSourceState = ExistingSource & { readonly status: "active" };

export type SourceState = { readonly status: "none" } | ExistingSource;

export const sourceReducer = {
  initial: (): SourceState => ({ status: "none" }),
  decode: SourceEvents.decode,
  evolve(state: SourceState, event: SourceEvent): SourceState {
    switch (event.type) {
      case "SourceRegistered": {
        const e = event.data;
        const source: SourceInfo = {
          sourceId: e.sourceId,
          orgId: e.orgId,
          createdBy: e.createdBy,
          displayName: e.displayName,
          kind: e.kind,
          url: e.url,
          gitRef: e.gitRef,
          registeredAtMs: e.registeredAtMs,
        };
        return { status: "active", source, snapshots: [] };
      }
      case "SnapshotTaken": {
        if (state.status === "none") return state;
        const e = event.data;
        const snapshot: SnapshotState = {
          number: e.number,
          ref: e.ref,
          fileCount: e.fileCount,
          totalBytes: e.totalBytes,
          commit: e.commit,
          skippedLinks: e.skippedLinks,
          takenAtMs: e.takenAtMs,
          materialised: true,
          pins: [],
        };
        return { ...state, snapshots: [...state.snapshots, snapshot] };
      }
      case "SnapshotPruned":
        return updateSnapshot(state, event.data.number, (s) => ({ ...s, materialised: false }));
      case "SnapshotPinned": {
        const { number, holder } = event.data;
        return updateSnapshot(state, number, (s) =>
          s.pins.includes(holder) ? s : { ...s, pins: [...s.pins, holder].sort() },
        );
      }
      case "SnapshotUnpinned": {
        const { number, holder } = event.data;
        return updateSnapshot(state, number, (s) => ({ ...s, pins: s.pins.filter((h) => h !== holder) }));
      }
      case "SourceDeleted":
        return state.status === "none" ? state : { ...state, status: "deleted" };
      case "unknown":
        return state; // written by a newer version: nothing this one folds
      default:
        return unreachable(event);
    }
  },
};

function updateSnapshot(
  state: SourceState,
  number: number,
  change: (s: SnapshotState) => SnapshotState,
): SourceState {
  if (state.status === "none") return state;
  return { ...state, snapshots: state.snapshots.map((s) => (s.number === number ? change(s) : s)) };
}

/** The source's snapshot `number`, or undefined. */
export function snapshotOf(state: SourceState, number: number): SnapshotState | undefined {
  return state.status === "none" ? undefined : state.snapshots[number - 1];
}

/** The active source, or NOT_FOUND (also for a deleted one). */
export function activeSource(state: SourceState): ActiveSourceState {
  if (state.status !== "active") throw new NotFoundError("source not found");
  return state as ActiveSourceState;
}

// --- decisions ----------------------------------------------------------------------------

export function registerSource(state: SourceState, source: SourceInfo): NewEvent[] {
  // Ids are server-generated: a second registration of one id is a retried command.
  if (state.status !== "none") return [];
  return [SourceEvents.create("SourceRegistered", { ...source })];
}

export interface TakenSnapshot {
  ref: string;
  fileCount: number;
  totalBytes: bigint;
  commit: string;
  skippedLinks: number;
}

/**
 * Records the next snapshot and prunes what it pushes out of the last `keep`
 * (pinned snapshots excepted), in one message: the new snapshot and the
 * retention it implies land together or not at all.
 */
export function takeSnapshot(
  state: SourceState,
  taken: TakenSnapshot,
  context: { keep: number; nowMs: number; by: string },
): NewEvent[] {
  const active = activeSource(state);
  const sourceId = active.source.sourceId;
  const number = active.snapshots.length + 1;
  const events = [
    SourceEvents.create("SnapshotTaken", {
      sourceId,
      number,
      ...taken,
      takenAtMs: BigInt(context.nowMs),
      takenBy: context.by,
    }),
  ];
  for (const s of active.snapshots) {
    if (s.materialised && s.pins.length === 0 && s.number <= number - context.keep) {
      events.push(prune(sourceId, s, context.nowMs));
    }
  }
  return events;
}

function prune(sourceId: string, s: SnapshotState, nowMs: number): NewEvent {
  return SourceEvents.create("SnapshotPruned", {
    sourceId,
    number: s.number,
    ref: s.ref,
    prunedAtMs: BigInt(nowMs),
  });
}

/** Pins a materialised snapshot for `holder` (nothing when it already holds it). */
export function pinSnapshot(
  state: SourceState,
  pin: { number: number; holder: string },
  context: { maxPins: number; nowMs: number; by: string },
): NewEvent[] {
  const active = activeSource(state);
  const snapshot = snapshotOf(active, pin.number);
  if (!snapshot) throw new NotFoundError("snapshot not found");
  if (snapshot.pins.includes(pin.holder)) return [];
  if (!snapshot.materialised)
    throw new FailedPreconditionError("the snapshot was pruned: only its manifest is kept");
  if (snapshot.pins.length >= context.maxPins)
    throw new ResourceExhaustedError(`a snapshot has at most ${context.maxPins} pins`);
  return [
    SourceEvents.create("SnapshotPinned", {
      sourceId: active.source.sourceId,
      number: pin.number,
      holder: pin.holder,
      pinnedBy: context.by,
      pinnedAtMs: BigInt(context.nowMs),
    }),
  ];
}

/**
 * Drops `holder`'s pin (nothing when it holds none). When that was the last
 * pin and the snapshot is outside the last `keep`, it is pruned in the same
 * message, so no moment exists where it is unpinned, outside retention and
 * still materialised.
 */
export function unpinSnapshot(
  state: SourceState,
  pin: { number: number; holder: string },
  context: { keep: number; nowMs: number; by: string },
): NewEvent[] {
  const active = activeSource(state);
  const snapshot = snapshotOf(active, pin.number);
  if (!snapshot) throw new NotFoundError("snapshot not found");
  if (!snapshot.pins.includes(pin.holder)) return [];
  const sourceId = active.source.sourceId;
  const events = [
    SourceEvents.create("SnapshotUnpinned", {
      sourceId,
      number: pin.number,
      holder: pin.holder,
      unpinnedBy: context.by,
      unpinnedAtMs: BigInt(context.nowMs),
    }),
  ];
  const latest = active.snapshots.length;
  if (snapshot.pins.length === 1 && snapshot.materialised && snapshot.number <= latest - context.keep) {
    events.push(prune(sourceId, snapshot, context.nowMs));
  }
  return events;
}

/** Deletes the source and prunes its materialised snapshots; refused while any is pinned. */
export function deleteSource(state: SourceState, context: { nowMs: number; by: string }): NewEvent[] {
  const active = activeSource(state);
  const pinned = active.snapshots.filter((s) => s.pins.length > 0).map((s) => s.number);
  if (pinned.length > 0)
    throw new FailedPreconditionError(`snapshots in use (pinned): ${pinned.join(", ")}; unpin them first`);
  const sourceId = active.source.sourceId;
  return [
    SourceEvents.create("SourceDeleted", {
      sourceId,
      deletedBy: context.by,
      deletedAtMs: BigInt(context.nowMs),
    }),
    ...active.snapshots.filter((s) => s.materialised).map((s) => prune(sourceId, s, context.nowMs)),
  ];
}

/** The snapshots a source keeps materialised (for the blob collector and tests). */
export function materialised(state: SourceState): SnapshotState[] {
  return state.status === "none" ? [] : state.snapshots.filter((s) => s.materialised);
}
