// A file's life on its subject files.file.<id>: recorded (bytes already
// committed to the blob store), scanned (clean or infected, once), deleted
// (soft, once). Pure: no I/O, no clock (times come in the commands).
import { type NewEvent, type Reducer, unreachable } from "@spool/kit";
import type { FileRecorded as Recorded } from "@spool/proto/spool/files/v1/events.js";
import { ScanVerdict } from "@spool/proto/spool/files/v1/events.js";
import { FileDeleted, type FileEvent, FileEvents, FileRecorded, FileScanned, Subjects } from "./events.js";

export type ScanState =
  | { status: "pending" }
  | { status: "clean"; scanner: string; scannedAtMs: number }
  | { status: "infected"; signature: string; scanner: string; scannedAtMs: number };

export type FileState =
  | { kind: "none" }
  | { kind: "active" | "deleted"; record: Recorded; scan: ScanState; deletedAtMs: number; deletedBy: string };

export type ExistingFile = Exclude<FileState, { kind: "none" }>;

export const fileReducer: Reducer<FileState, FileEvent> = {
  initial: () => ({ kind: "none" }),
  decode: FileEvents.decode,
  evolve: (state, event) => evolveFile(state, event),
};

/** The file aggregate: its subject and reducer, for aggregate(store, FileAggregate). */
export const FileAggregate = { subject: Subjects.file, reducer: fileReducer };

export function evolveFile(state: FileState, event: FileEvent): FileState {
  switch (event.type) {
    case "FileRecorded":
      if (state.kind !== "none") return state;
      return {
        kind: "active",
        record: event.data,
        scan: { status: "pending" },
        deletedAtMs: 0,
        deletedBy: "",
      };
    case "FileScanned": {
      if (state.kind === "none" || state.scan.status !== "pending") return state;
      const { verdict, signature, scanner } = event.data;
      const scannedAtMs = Number(event.data.scannedAtMs);
      const scan: ScanState =
        verdict === ScanVerdict.SCAN_VERDICT_INFECTED
          ? { status: "infected", signature, scanner, scannedAtMs }
          : verdict === ScanVerdict.SCAN_VERDICT_CLEAN
            ? { status: "clean", scanner, scannedAtMs }
            : state.scan;
      return { ...state, scan };
    }
    case "FileDeleted":
      if (state.kind !== "active") return state;
      return {
        ...state,
        kind: "deleted",
        deletedAtMs: Number(event.data.deletedAtMs),
        deletedBy: event.data.deletedBy,
      };
    case "unknown":
      return state; // a newer writer's event: nothing this version knows to change
    default:
      return unreachable(event);
  }
}

/** What a new file record holds (owner and organisation from the verified token). */
export type RecordFile = Omit<Recorded, "recordedAtMs"> & { nowMs: number };

/** Records a new file; the id is fresh, so a second record on it is a programming error. */
export function decideRecord(state: FileState, cmd: RecordFile): NewEvent[] {
  if (state.kind !== "none") throw new Error(`file ${cmd.fileId} is already recorded`);
  const { nowMs, ...record } = cmd;
  return [FileRecorded.create({ ...record, recordedAtMs: BigInt(nowMs) })];
}

export interface RecordScan {
  verdict: "clean" | "infected";
  signature: string;
  scanner: string;
  nowMs: number;
}

/** The first verdict counts; a file already scanned, deleted or unknown gets no more. */
export function decideScan(state: FileState, cmd: RecordScan): NewEvent[] {
  if (state.kind !== "active" || state.scan.status !== "pending") return [];
  return [
    FileScanned.create({
      fileId: state.record.fileId,
      verdict:
        cmd.verdict === "infected" ? ScanVerdict.SCAN_VERDICT_INFECTED : ScanVerdict.SCAN_VERDICT_CLEAN,
      signature: cmd.verdict === "infected" ? cmd.signature : "",
      scanner: cmd.scanner,
      scannedAtMs: BigInt(cmd.nowMs),
    }),
  ];
}

/** Soft delete; deleting what is not there (unknown or already deleted) is for the caller to refuse. */
export function decideDelete(state: FileState, cmd: { deletedBy: string; nowMs: number }): NewEvent[] {
  if (state.kind !== "active") return [];
  return [
    FileDeleted.create({
      fileId: state.record.fileId,
      deletedBy: cmd.deletedBy,
      deletedAtMs: BigInt(cmd.nowMs),
    }),
  ];
}
