// Display names are shown to people and may end up as download file names:
// they are cleaned, not trusted. Storage never uses them (blobs are keyed by
// hash, records by a server-generated id).
import { InvalidArgumentError } from "@spool/kit";

/** C0, DEL, C1 controls; bidi embeddings, overrides, isolates and marks; zero-width characters and BOM. */
const INVISIBLE = /[\p{Cc}\u061c\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]/gu;
/** Path separators (and the Windows drive/stream colon), in every common look-alike that file systems map. */
const SEPARATORS = /[/\\:\u2215\u2044\u29f5\u29f8\uff0f\uff3c\uff1a]/gu;

/**
 * NFC, invisible and control characters removed, path separators replaced by
 * "_", whitespace trimmed, at most `maxChars` code points; "" when nothing
 * is left (or only dots, which name a directory).
 */
export function sanitiseDisplayName(raw: string, maxChars: number): string {
  const cleaned = raw.normalize("NFC").replace(INVISIBLE, "").replace(SEPARATORS, "_").trim();
  if (/^\.*$/u.test(cleaned)) return "";
  const points = Array.from(cleaned);
  return points.length > maxChars ? points.slice(0, maxChars).join("").trimEnd() : cleaned;
}

/** sanitiseDisplayName, refusing a name with nothing left (INVALID_ARGUMENT on `field`). */
export function displayNameOrRefuse(raw: string, maxChars: number, field: string): string {
  const name = sanitiseDisplayName(raw, maxChars);
  if (!name)
    throw new InvalidArgumentError(`${field}: nothing left after removing invisible and path characters`, [
      { field, description: "needs visible characters other than path separators and dots" },
    ]);
  return name;
}
