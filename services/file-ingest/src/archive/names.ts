// Entry names: every check an archive library does not make for us, applied
// to the name as decoded (zip: UTF-8 or CP437; tar: UTF-8, pax overrides
// applied) before anything touches the disk. The name is validated in both
// its NFC form (the one written) and its NFKC form (so that compatibility
// characters such as "‥" U+2025 or "．" U+FF0E cannot become ".." or a
// trailing dot under a later normalisation), and registered under a key
// folded for Unicode and case, so no two entries can land on one file of a
// case-insensitive or normalising filesystem.
import { type ArchiveLimits, type ArchiveRefusalReason, ArchiveRefusedError } from "./archive.js";

/**
 * Characters refused anywhere in a name: C0 controls (NUL, TAB, LF, CR
 * included: none belongs in a file name), DEL, C1 controls, the bidi marks,
 * embeddings, overrides and isolates (U+061C, U+200E, U+200F, U+202A–U+202E,
 * U+2066–U+2069) that make a name display in another order than it is stored,
 * the line and paragraph separators, and U+FFFD, which is what a name that is
 * not valid UTF-8 decodes to (two different undecodable names would look alike).
 */
const FORBIDDEN_CHARACTER =
  // biome-ignore lint/suspicious/noControlCharactersInRegex: the control characters are what it finds
  /[\u0000-\u001F\u007F-\u009F\u061C\u200E\u200F\u2028\u2029\u202A-\u202E\u2066-\u2069\uFFFD]/u;

/** Windows device names, reserved whatever the extension ("con.txt") and the case; ¹²³ count as digits there. */
const RESERVED_DEVICE = /^(con|prn|aux|nul|conin\$|conout\$|clock\$|com[0-9¹²³]|lpt[0-9¹²³])$/iu;

/** A name longer than this many UTF-16 units is refused before it is normalised (bounded work). */
const RAW_NAME_FACTOR = 4;

export interface CheckedName {
  /** NFC, "/"-separated segments, without "." and empty segments; the path written (under the prefix). */
  readonly segments: readonly string[];
  /** True when the entry names a directory (trailing "/" or the format says so). */
  readonly directory: boolean;
}

/** The entry's name as shown in errors: escaped, never longer than 200 characters. */
export function displayName(name: string): string {
  const escaped = name.replace(
    // biome-ignore lint/suspicious/noControlCharactersInRegex: the control characters are what it escapes
    /[\u0000-\u001F\u007F-\u009F\u061C\u200E\u200F\u2028\u2029\u202A-\u202E\u2066-\u2069]/gu,
    (c) => `\\u{${(c.codePointAt(0) ?? 0).toString(16).toUpperCase()}}`,
  );
  return escaped.length > 200 ? `${escaped.slice(0, 197)}...` : escaped;
}

function refuse(reason: ArchiveRefusalReason, entry: string, detail: string): never {
  throw new ArchiveRefusedError(reason, displayName(entry), detail);
}

/**
 * Validates one entry name (as the archive spells it; `shownAs` is how errors
 * name it, e.g. with a nested archive's path before it) and returns its safe
 * segments. `prefix` is the nested archive's own path, counted in the length
 * limit. Throws ArchiveRefusedError with the first problem found.
 */
export function checkEntryName(
  raw: string,
  isDirectory: boolean,
  limits: Pick<ArchiveLimits, "maxPathBytes" | "maxSegmentBytes">,
  prefix: readonly string[] = [],
  shownAs: string = raw,
): CheckedName {
  if (raw.length > limits.maxPathBytes * RAW_NAME_FACTOR) {
    refuse("NAME_TOO_LONG", shownAs, `name longer than ${limits.maxPathBytes} bytes`);
  }
  const forbidden = FORBIDDEN_CHARACTER.exec(raw);
  if (forbidden) {
    const cp = (forbidden[0].codePointAt(0) ?? 0).toString(16).toUpperCase().padStart(4, "0");
    refuse(
      "FORBIDDEN_CHARACTER",
      shownAs,
      cp === "FFFD" ? "name is not valid UTF-8 (U+FFFD)" : `forbidden character U+${cp}`,
    );
  }
  const nfc = raw.normalize("NFC");
  const nfkc = raw.normalize("NFKC");
  // NFKC can produce characters NFC does not have (e.g. "／" → "/", "﹨" → "\"); both forms must pass.
  const segments = structuralSegments(nfc, shownAs);
  const compatSegments = structuralSegments(nfkc, shownAs);
  if (compatSegments.length !== segments.length) {
    refuse("FORBIDDEN_CHARACTER", shownAs, "a compatibility character acts as a path separator");
  }
  const directory = isDirectory || nfc.endsWith("/");
  if (segments.length === 0 && !directory) refuse("CORRUPT", shownAs, "file entry without a name");
  for (const form of [segments, compatSegments]) {
    for (const segment of form) checkSegment(segment, shownAs, limits);
  }
  const pathBytes = Buffer.byteLength([...prefix, ...segments].join("/"), "utf8");
  if (pathBytes > limits.maxPathBytes) {
    refuse("NAME_TOO_LONG", shownAs, `path of ${pathBytes} bytes, limit ${limits.maxPathBytes}`);
  }
  return { segments, directory };
}

/** Absolute, drive, UNC, backslash, ":" and ".." checks; returns the segments without "." and empty ones. */
function structuralSegments(name: string, shownAs: string): string[] {
  if (/^[/\\]{2}/u.test(name)) refuse("UNC_PATH", shownAs, "UNC or device path");
  if (/^[A-Za-z]:/u.test(name)) refuse("DRIVE_PATH", shownAs, "drive-letter path");
  if (/^[/\\]/u.test(name)) refuse("ABSOLUTE_PATH", shownAs, "absolute path");
  if (name.includes("\\")) refuse("BACKSLASH", shownAs, "backslash in name");
  // A colon names a drive ("a/C:x" on Windows) or an NTFS alternate data stream ("file:stream").
  if (name.includes(":")) refuse("FORBIDDEN_CHARACTER", shownAs, "colon in name");
  const segments: string[] = [];
  for (const segment of name.split("/")) {
    if (segment === "..") refuse("PARENT_SEGMENT", shownAs, '".." segment');
    // "./a", "a//b" and "a/./b" are spelled oddly but stay where they are; duplicates are caught after.
    if (segment === "" || segment === ".") continue;
    segments.push(segment);
  }
  return segments;
}

function checkSegment(
  segment: string,
  shownAs: string,
  limits: Pick<ArchiveLimits, "maxSegmentBytes">,
): void {
  const bytes = Buffer.byteLength(segment, "utf8");
  if (bytes > limits.maxSegmentBytes) {
    refuse("NAME_TOO_LONG", shownAs, `segment of ${bytes} bytes, limit ${limits.maxSegmentBytes}`);
  }
  // Windows drops trailing dots and spaces ("a." is "a"), so such a name aliases another.
  if (/[. ]$/u.test(segment)) refuse("RESERVED_NAME", shownAs, "segment ends with a dot or a space");
  const stem = segment.split(".")[0]?.trimEnd() ?? "";
  if (RESERVED_DEVICE.test(stem)) refuse("RESERVED_NAME", shownAs, `reserved device name "${stem}"`);
}

/** The key two names collide under: NFKC, case folded (upper then lower folds "ß" with "ss"), NFKC again. */
export function foldedKey(segments: readonly string[]): string {
  return segments.join("/").normalize("NFKC").toUpperCase().toLowerCase().normalize("NFKC");
}

interface Registered {
  kind: "file" | "directory";
  /** The NFC spelling first registered. */
  spelling: string;
}

/**
 * Every path of one expansion (nested archives included), by folded key.
 * Refuses a second file under a key, a file where a directory is (or is
 * implied: "a" file + "a/b"), and a directory spelled differently from an
 * earlier one with the same key ("A/" + "a/x"), since those would be two
 * directories on a case-sensitive disk and one elsewhere.
 */
export class NameRegistry {
  readonly #byKey = new Map<string, Registered>();

  register(segments: readonly string[], directory: boolean, shownAs: string): void {
    for (let i = 1; i <= segments.length; i++) {
      const path = segments.slice(0, i);
      const spelling = path.join("/");
      const key = foldedKey(path);
      const kind = i < segments.length || directory ? "directory" : "file";
      const existing = this.#byKey.get(key);
      if (!existing) {
        this.#byKey.set(key, { kind, spelling });
        continue;
      }
      if (existing.kind === "file" || kind === "file") {
        refuse(
          "DUPLICATE_NAME",
          shownAs,
          existing.kind === kind
            ? `same name as "${displayName(existing.spelling)}" after Unicode and case folding`
            : `"${displayName(existing.spelling)}" is both a file and a directory`,
        );
      }
      if (existing.spelling !== spelling) {
        refuse(
          "DUPLICATE_NAME",
          shownAs,
          `directory "${displayName(spelling)}" differs from "${displayName(existing.spelling)}" only in case or Unicode form`,
        );
      }
    }
  }

  /** A nested archive's file becomes the directory its entries are expanded into. */
  becomeDirectory(segments: readonly string[]): void {
    const entry = this.#byKey.get(foldedKey(segments));
    if (entry) entry.kind = "directory";
  }
}
