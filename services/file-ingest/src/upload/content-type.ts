// What a file is, from its bytes (file-type's magic numbers; UTF-8 text as
// text/plain), checked against what the client declared and the server's
// allow-list. The declared type is a claim; the detected type is recorded.
import { fileTypeFromBuffer } from "file-type";

/** Bytes read from the start of a file for detection (zip-based office formats need more than the magic). */
export const SNIFF_BYTES = 64 * 1024;
export const OCTET_STREAM = "application/octet-stream";
export const TEXT_PLAIN = "text/plain";

/** Declared types that are text, so bytes detected as text/plain agree with them. */
const TEXTUAL = new Set([
  "application/json",
  "application/xml",
  "application/javascript",
  "application/ecmascript",
  "application/x-yaml",
  "application/yaml",
  "application/x-ndjson",
  "application/toml",
  "application/sql",
  "application/csv",
  "application/x-sh",
  "application/x-python",
  "application/graphql",
]);

/** Declared names for the detected type (common aliases). */
const ALIASES: Record<string, readonly string[]> = {
  "image/jpeg": ["image/jpg", "image/pjpeg"],
  "application/zip": [
    "application/x-zip-compressed",
    "application/x-zip",
    // Zip containers file-type may report as plain zip when the sample does not reach the manifest.
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    "application/epub+zip",
    "application/java-archive",
  ],
  "application/gzip": ["application/x-gzip", "application/x-gtar", "application/x-tgz"],
  "application/x-tar": ["application/tar"],
  "application/pdf": ["application/x-pdf"],
};

/** The media type of the bytes whose first SNIFF_BYTES (or fewer) are `sample`. */
export async function detectContentType(sample: Uint8Array): Promise<string> {
  const found = await fileTypeFromBuffer(sample);
  if (found) return found.mime;
  return looksLikeText(sample) ? TEXT_PLAIN : OCTET_STREAM;
}

/** UTF-8 without NUL (a sequence cut at the end of the sample is fine). */
function looksLikeText(sample: Uint8Array): boolean {
  if (sample.includes(0)) return false;
  try {
    new TextDecoder("utf-8", { fatal: true }).decode(sample, { stream: true });
    return true;
  } catch {
    return false;
  }
}

/** Why `declared` does not describe bytes detected as `detected`, or undefined when it does. */
export function declaredMismatch(declared: string, detected: string): string | undefined {
  const d = declared.toLowerCase();
  if (!d || d === detected) return undefined;
  if (detected === TEXT_PLAIN && (d.startsWith("text/") || TEXTUAL.has(d) || /\+(json|xml)$/.test(d)))
    return undefined;
  if (ALIASES[detected]?.includes(d)) return undefined;
  return `declared ${d}, but the content is ${detected}`;
}

/** Whether the allow-list ("type/subtype", "type/*", "*") admits `type`. */
export function allowedType(allowList: readonly string[], type: string): boolean {
  const family = `${type.split("/")[0]}/*`;
  return allowList.some((a) => a === "*" || a === type || a === family);
}
