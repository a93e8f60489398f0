import { FailedPreconditionError, NotFoundError, ResourceExhaustedError } from "@spool/kit";
import { SourceKind } from "@spool/proto/spool/files/v1/sources.js";
import { describe, expect, it } from "vitest";
import {
  deleteSource,
  materialised,
  pinSnapshot,
  registerSource,
  SourceEvents,
  type SourceState,
  sourceReducer,
  takeSnapshot,
  unpinSnapshot,
} from "./source.js";

const info = {
  sourceId: "s1",
  orgId: "org",
  createdBy: "u1",
  displayName: "repo",
  kind: SourceKind.SOURCE_KIND_GIT,
  url: "https://git.example/repo.git",
  gitRef: "main",
  registeredAtMs: 1n,
};
const ctx = { keep: 3, nowMs: 1000, by: "u1", maxPins: 2 };
const taken = (n: number) => ({
  ref: `${n}`.padStart(64, "0"),
  fileCount: n,
  totalBytes: 10n,
  commit: "",
  skippedLinks: 0,
});

/** Applies a decision's events to the state, as the store would after the append. */
function apply(state: SourceState, events: ReturnType<typeof takeSnapshot>): SourceState {
  let seq = 0;
  return events.reduce(
    (s, e) =>
      sourceReducer.evolve(
        s,
        SourceEvents.decode({
          stream: "T",
          subject: "files.source.s1",
          streamSequence: ++seq,
          index: 0,
          type: e.type,
          schemaVersion: 1,
          eventId: "",
          data: e.data,
          time: new Date(0),
          correlationId: undefined,
          causationId: undefined,
          actor: undefined,
        }),
      ),
    state,
  );
}
const typesOf = (events: ReturnType<typeof takeSnapshot>) =>
  events.map((e) => SourceEvents.decode({ type: e.type, data: e.data } as never).type);
const registered = () => apply(sourceReducer.initial(), registerSource(sourceReducer.initial(), info));
function withSnapshots(n: number, state = registered()): SourceState {
  let s = state;
  for (let i = 0; i < n; i++)
    s = apply(s, takeSnapshot(s, taken(s.status === "none" ? 0 : s.snapshots.length + 1), ctx));
  return s;
}

describe("source aggregate", () => {
  it("numbers snapshots 1, 2, 3 and keeps the last N materialised, pruning older ones in the same message", () => {
    const three = withSnapshots(3);
    expect(materialised(three).map((s) => s.number)).toEqual([1, 2, 3]);
    const events = takeSnapshot(three, taken(4), ctx);
    expect(typesOf(events)).toEqual(["SnapshotTaken", "SnapshotPruned"]);
    const four = apply(three, events);
    expect(materialised(four).map((s) => s.number)).toEqual([2, 3, 4]);
    // The pruned snapshot keeps its ref (its manifest stays for diffs).
    expect(four.status !== "none" && four.snapshots[0]).toMatchObject({
      number: 1,
      ref: taken(1).ref,
      materialised: false,
    });
  });

  it("honours a configured N", () => {
    let s = registered();
    for (let i = 1; i <= 4; i++) s = apply(s, takeSnapshot(s, taken(i), { ...ctx, keep: 1 }));
    expect(materialised(s).map((x) => x.number)).toEqual([4]);
  });

  it("never prunes a pinned snapshot; unpinning it outside the last N prunes it then", () => {
    let s = withSnapshots(1);
    s = apply(s, pinSnapshot(s, { number: 1, holder: "gen:a" }, ctx));
    s = apply(s, pinSnapshot(s, { number: 1, holder: "gen:b" }, ctx));
    s = withSnapshots(5, s);
    expect(materialised(s).map((x) => x.number)).toEqual([1, 4, 5, 6]);
    const first = unpinSnapshot(s, { number: 1, holder: "gen:a" }, ctx);
    expect(typesOf(first)).toEqual(["SnapshotUnpinned"]);
    s = apply(s, first);
    const last = unpinSnapshot(s, { number: 1, holder: "gen:b" }, ctx);
    expect(typesOf(last)).toEqual(["SnapshotUnpinned", "SnapshotPruned"]);
    s = apply(s, last);
    expect(materialised(s).map((x) => x.number)).toEqual([4, 5, 6]);
  });

  it("unpinning a snapshot still among the last N prunes nothing", () => {
    let s = withSnapshots(2);
    s = apply(s, pinSnapshot(s, { number: 2, holder: "h" }, ctx));
    expect(typesOf(unpinSnapshot(s, { number: 2, holder: "h" }, ctx))).toEqual(["SnapshotUnpinned"]);
  });

  it("pins are idempotent per holder, limited, and refused on a pruned snapshot", () => {
    let s = withSnapshots(4);
    expect(() => pinSnapshot(s, { number: 1, holder: "h" }, ctx)).toThrow(FailedPreconditionError);
    expect(() => pinSnapshot(s, { number: 9, holder: "h" }, ctx)).toThrow(NotFoundError);
    s = apply(s, pinSnapshot(s, { number: 4, holder: "h" }, ctx));
    expect(pinSnapshot(s, { number: 4, holder: "h" }, ctx)).toEqual([]);
    s = apply(s, pinSnapshot(s, { number: 4, holder: "h2" }, ctx));
    expect(() => pinSnapshot(s, { number: 4, holder: "h3" }, ctx)).toThrow(ResourceExhaustedError);
    expect(unpinSnapshot(s, { number: 4, holder: "nobody" }, ctx)).toEqual([]);
  });

  it("deletion is refused while a snapshot is pinned, and prunes every materialised snapshot", () => {
    let s = withSnapshots(2);
    const pinned = apply(s, pinSnapshot(s, { number: 2, holder: "h" }, ctx));
    expect(() => deleteSource(pinned, ctx)).toThrow(FailedPreconditionError);
    const events = deleteSource(s, ctx);
    expect(typesOf(events)).toEqual(["SourceDeleted", "SnapshotPruned", "SnapshotPruned"]);
    s = apply(s, events);
    expect(s.status).toBe("deleted");
    expect(() => takeSnapshot(s, taken(3), ctx)).toThrow(NotFoundError);
    expect(() => takeSnapshot(sourceReducer.initial(), taken(1), ctx)).toThrow(NotFoundError);
  });

  it("a registration retried on an existing id writes nothing", () => {
    expect(registerSource(registered(), info)).toEqual([]);
  });
});
