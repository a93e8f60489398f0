import { FileOrigin, ScanVerdict } from "@spool/proto/spool/files/v1/events.js";
import { deciderSpec } from "@spool/testing";
import { describe, expect, it } from "vitest";
import { decideDelete, decideRecord, decideScan, fileReducer } from "./file.js";

const T0 = 1_700_000_000_000;
const spec = deciderSpec(fileReducer, { subject: "files.file.f1", nowMs: T0 });
const record = {
  fileId: "f1",
  orgId: "o1",
  ownerId: "u1",
  displayName: "a.txt",
  sizeBytes: 3n,
  sha256: "a".repeat(64),
  declaredContentType: "",
  detectedContentType: "text/plain",
  origin: FileOrigin.FILE_ORIGIN_UPLOAD,
  sourceUrl: "",
  archiveFileId: "",
  archivePath: "",
  nowMs: T0,
};
const recorded = () => spec.given(...decideRecord(fileReducer.initial(), record));
const clean = { verdict: "clean" as const, signature: "", scanner: "clamd", nowMs: T0 + 1 };
const infected = { verdict: "infected" as const, signature: "Eicar", scanner: "clamd", nowMs: T0 + 1 };

describe("file aggregate", () => {
  it("records a new file as pending", () => {
    const state = spec
      .given()
      .when((s) => decideRecord(s, record))
      .thenEvents({
        type: "FileRecorded",
        data: { fileId: "f1", orgId: "o1", ownerId: "u1", recordedAtMs: BigInt(T0) },
      });
    expect(state.length).toBe(1);
    expect(recorded().state).toMatchObject({ kind: "active", scan: { status: "pending" } });
  });

  it("refuses to record a file id twice", () => {
    recorded()
      .when((s) => decideRecord(s, record))
      .thenThrows(/already recorded/);
  });

  it("takes the first verdict only: infected stays quarantined", () => {
    const quarantined = recorded().given(...decideScan(recorded().state, infected));
    expect(quarantined.state).toMatchObject({ scan: { status: "infected", signature: "Eicar" } });
    quarantined.when((s) => decideScan(s, clean)).thenNothing();
    recorded()
      .when((s) => decideScan(s, clean))
      .thenEvents({ type: "FileScanned", data: { verdict: ScanVerdict.SCAN_VERDICT_CLEAN, signature: "" } });
  });

  it("deletes once; a deleted or unknown file is neither scanned nor deleted again", () => {
    const deleted = recorded().given(...decideDelete(recorded().state, { deletedBy: "u2", nowMs: T0 + 5 }));
    expect(deleted.state).toMatchObject({ kind: "deleted", deletedBy: "u2", deletedAtMs: T0 + 5 });
    deleted.when((s) => decideDelete(s, { deletedBy: "u2", nowMs: T0 + 6 })).thenNothing();
    deleted.when((s) => decideScan(s, clean)).thenNothing();
    spec
      .given()
      .when((s) => decideScan(s, clean))
      .thenNothing();
    spec
      .given()
      .when((s) => decideDelete(s, { deletedBy: "u2", nowMs: T0 }))
      .thenNothing();
  });
});
