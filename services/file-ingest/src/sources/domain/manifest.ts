// A snapshot's manifest and ref (the canonical encoding is specified in
// proto/spool/files/v1/sources.proto and docs/SECURITY.md, "Sources"):
// one line "<sha256> <size> <path>\n" per regular file, sorted by the UTF-8
// bytes of the NFC path; the ref is the SHA-256 of those bytes. Pure: no I/O.
import { createHash } from "node:crypto";

export interface ManifestEntry {
  /** Relative, "/"-separated, NFC; see manifestPathProblem. */
  readonly path: string;
  readonly size: number;
  /** Lowercase hex SHA-256 of the file's bytes. */
  readonly sha256: string;
}

const SHA256_HEX = /^[0-9a-f]{64}$/;
// C0 and C1 controls (newline included: it ends a manifest line), DEL, and the
// bidi overrides and isolates that make a path read differently than it sorts.
// biome-ignore lint/suspicious/noControlCharactersInRegex: the control characters are what it finds
const FORBIDDEN = /[\u0000-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/u;

/** Why `path` cannot stand in a manifest (it must already be NFC), or undefined. */
export function manifestPathProblem(path: string, maxPathBytes: number): string | undefined {
  if (path.length === 0) return "empty path";
  if (Buffer.byteLength(path, "utf8") > maxPathBytes) return `longer than ${maxPathBytes} bytes`;
  if (path.normalize("NFC") !== path) return "not in Unicode NFC";
  if (path.isWellFormed && !path.isWellFormed()) return "not valid Unicode";
  if (FORBIDDEN.test(path)) return "control or bidi character";
  if (path.includes("\\")) return "backslash";
  if (path.startsWith("/")) return "absolute";
  for (const segment of path.split("/")) {
    if (segment === "") return "empty segment";
    if (segment === "." || segment === "..") return "'.' or '..' segment";
  }
  return undefined;
}

/** Unsigned bytewise order of the UTF-8 encodings (not JavaScript's UTF-16 order). */
export function comparePaths(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, "utf8"), Buffer.from(b, "utf8"));
}

export class ManifestError extends Error {
  constructor(
    readonly reason: "INVALID_PATH" | "DUPLICATE_PATH" | "INVALID_ENTRY" | "CORRUPT",
    readonly path: string,
    detail: string,
  ) {
    super(
      `manifest ${reason.toLowerCase().replace("_", " ")}${path ? ` ${JSON.stringify(path)}` : ""}: ${detail}`,
    );
    this.name = "ManifestError";
  }
}

/** The entries sorted canonically; throws ManifestError for a bad path, size, hash or a duplicate path. */
export function sortManifest(entries: readonly ManifestEntry[], maxPathBytes = 4096): ManifestEntry[] {
  for (const e of entries) {
    const problem = manifestPathProblem(e.path, maxPathBytes);
    if (problem) throw new ManifestError("INVALID_PATH", e.path, problem);
    if (!Number.isSafeInteger(e.size) || e.size < 0)
      throw new ManifestError("INVALID_ENTRY", e.path, "bad size");
    if (!SHA256_HEX.test(e.sha256)) throw new ManifestError("INVALID_ENTRY", e.path, "bad sha256");
  }
  const sorted = [...entries].sort((a, b) => comparePaths(a.path, b.path));
  for (let i = 1; i < sorted.length; i++) {
    const path = sorted[i]?.path ?? "";
    if (path === sorted[i - 1]?.path) throw new ManifestError("DUPLICATE_PATH", path, "listed twice");
  }
  return sorted;
}

/** The canonical bytes of a manifest (entries in any order; they are validated and sorted). */
export function encodeManifest(entries: readonly ManifestEntry[]): Buffer {
  const lines = sortManifest(entries).map((e) => `${e.sha256} ${e.size} ${e.path}\n`);
  return Buffer.from(lines.join(""), "utf8");
}

export function sha256Hex(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest("hex");
}

/** The snapshot ref of these entries: SHA-256 of their canonical manifest. */
export function snapshotRef(entries: readonly ManifestEntry[]): string {
  return sha256Hex(encodeManifest(entries));
}

/**
 * Parses canonical manifest bytes back into entries, checking they are
 * canonical (so a stored manifest that was tampered with or truncated is
 * refused rather than diffed): re-encoding the result gives the same bytes.
 */
export function decodeManifest(bytes: Uint8Array): ManifestEntry[] {
  const text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  if (text === "") return [];
  if (!text.endsWith("\n")) throw new ManifestError("CORRUPT", "", "does not end with a newline");
  const entries = text
    .slice(0, -1)
    .split("\n")
    .map((line) => {
      const match = /^([0-9a-f]{64}) (0|[1-9][0-9]*) (.+)$/su.exec(line);
      if (!match) throw new ManifestError("CORRUPT", "", "malformed line");
      return { sha256: match[1] ?? "", size: Number(match[2]), path: match[3] ?? "" };
    });
  if (!encodeManifest(entries).equals(Buffer.from(bytes))) {
    throw new ManifestError("CORRUPT", "", "not in canonical order or form");
  }
  return entries;
}

export type Change =
  | { kind: "added"; entry: ManifestEntry }
  | { kind: "modified"; entry: ManifestEntry; previous: ManifestEntry }
  | { kind: "removed"; entry: ManifestEntry };

/**
 * What changed from `from` to `to` (both canonically sorted), in path order.
 * `from` undefined (no earlier snapshot, or an unknown ref) means every path
 * of `to` is added. A path is modified when its size or sha256 differs.
 */
export function diffManifests(
  from: readonly ManifestEntry[] | undefined,
  to: readonly ManifestEntry[],
): Change[] {
  const before = from ?? [];
  const out: Change[] = [];
  let i = 0;
  let j = 0;
  while (i < before.length || j < to.length) {
    const a = before[i];
    const b = to[j];
    const order = a && b ? comparePaths(a.path, b.path) : a ? -1 : 1;
    if (order < 0 && a) {
      out.push({ kind: "removed", entry: a });
      i++;
    } else if (order > 0 && b) {
      out.push({ kind: "added", entry: b });
      j++;
    } else if (a && b) {
      if (a.sha256 !== b.sha256 || a.size !== b.size) out.push({ kind: "modified", entry: b, previous: a });
      i++;
      j++;
    }
  }
  return out;
}
