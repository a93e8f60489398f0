// Checks every service shares, applied at the gRPC edge (grpc/handlers.ts)
// or by handlers for their int64 filters, so a value no store can hold (NUL
// in PostgreSQL text), no terminal or log viewer shows honestly (control and
// bidi-override characters), or no JavaScript number represents exactly
// (int64 beyond 2^53) is refused as INVALID_ARGUMENT naming the proto field,
// instead of failing later as INTERNAL or poisoning a projection.
import { type FieldViolation, InvalidArgumentError } from "./errors.js";

/**
 * C0 controls except TAB, LF and CR (kept: message content is text with
 * lines and indentation), DEL, C1 controls, and the bidi embedding/override
 * and isolate characters that make text display in another order than it is
 * stored (U+202A–U+202E, U+2066–U+2069). NUL is among the C0 controls.
 */
// biome-ignore lint/suspicious/noControlCharactersInRegex: the control characters are what it finds
const UNSAFE_TEXT = /[\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F\u202A-\u202E\u2066-\u2069]/u;

/** Deepest nesting walked; requests are a few levels deep, this only bounds a hostile one. */
const MAX_DEPTH = 32;
/** Violations reported per request; the first ones are enough to fix the client. */
const MAX_VIOLATIONS = 20;

/** True when the text holds a character `requestTextViolations` refuses. */
export function hasUnsafeText(text: string): boolean {
  return UNSAFE_TEXT.test(text);
}

/** Describes the first refused character, e.g. "must not contain control characters (U+0000 at 3)". */
export function unsafeTextProblem(text: string): string | undefined {
  const match = UNSAFE_TEXT.exec(text);
  if (!match) return undefined;
  const cp = (match[0].codePointAt(0) ?? 0).toString(16).toUpperCase().padStart(4, "0");
  const bidi = /[\u202A-\u202E\u2066-\u2069]/u.test(match[0]);
  const what = bidi ? "bidirectional override characters" : "control characters other than tab, LF and CR";
  return `must not contain ${what} (U+${cp} at index ${match.index})`;
}

/**
 * Every string in a decoded request message that holds a refused character,
 * by proto field path ("messages[1].content", "delta.text").
 *
 * It walks the object ts-proto decoded: keys are the lowerCamelCase JSON
 * names and become the .proto's snake_case names again; a oneof
 * (`{ $case, value }` under the oneof's name) is named by its member, as in
 * the .proto; map keys are checked as strings too. A unit test checks the
 * name conversion against every field in the Spool descriptor set.
 */
export function requestTextViolations(message: unknown): FieldViolation[] {
  const out: FieldViolation[] = [];
  walk(message, "", 0, out);
  return out;
}

/** Throws INVALID_ARGUMENT when requestTextViolations finds anything. */
export function checkRequestText(message: unknown): void {
  const violations = requestTextViolations(message);
  if (violations.length > 0) {
    const first = violations[0] as FieldViolation;
    throw new InvalidArgumentError(`${first.field || "request"}: ${first.description}`, violations);
  }
}

function walk(value: unknown, path: string, depth: number, out: FieldViolation[]): void {
  if (out.length >= MAX_VIOLATIONS || depth > MAX_DEPTH) return;
  if (typeof value === "string") {
    const problem = unsafeTextProblem(value);
    if (problem) out.push({ field: path, description: problem });
    return;
  }
  if (typeof value !== "object" || value === null || ArrayBuffer.isView(value)) return;
  if (Array.isArray(value)) {
    value.forEach((item, i) => {
      walk(item, `${path}[${i}]`, depth + 1, out);
    });
    return;
  }
  if (value instanceof Map) {
    for (const [k, v] of value) walkMapEntry(k, v, path, depth, out);
    return;
  }
  for (const [key, v] of Object.entries(value)) {
    // A oneof's own name is not part of a field path; its member's is.
    if (isOneof(v)) walk(v.value, join(path, snakeCase(v.$case)), depth + 1, out);
    else walk(v, join(path, snakeCase(key)), depth + 1, out);
  }
}

function isOneof(v: unknown): v is { $case: string; value: unknown } {
  return typeof v === "object" && v !== null && typeof (v as { $case?: unknown }).$case === "string";
}

function walkMapEntry(
  key: unknown,
  value: unknown,
  path: string,
  depth: number,
  out: FieldViolation[],
): void {
  const entry = `${path}[${JSON.stringify(String(key)).slice(0, 40)}]`;
  if (typeof key === "string") {
    const problem = unsafeTextProblem(key);
    if (problem) out.push({ field: entry, description: `key ${problem}` });
  }
  walk(value, entry, depth + 1, out);
}

function join(path: string, name: string): string {
  return path ? `${path}.${name}` : name;
}

/** "afterSequence" → "after_sequence": the inverse of protoc's JSON name for Spool's field names. */
export function snakeCase(camel: string): string {
  return camel.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
}

// --- int64 fields -------------------------------------------------------------

/**
 * The last millisecond of year 9999 (9999-12-31T23:59:59.999Z). A JavaScript
 * Date goes further (8.64e15), but past year 9999 its ISO form has a signed,
 * six-digit year that PostgreSQL does not parse, and no Spool time is that far.
 */
export const MAX_TIMESTAMP_MS = 253_402_300_799_999;
/** Largest stream sequence a JavaScript number holds exactly. */
export const MAX_SEQUENCE = Number.MAX_SAFE_INTEGER;

/**
 * Why an int64 millisecond timestamp (a `*_ms` time or filter, 0 meaning
 * "not set") is unacceptable, or undefined when it is fine.
 */
export function timestampMsProblem(value: bigint | number): string | undefined {
  return inRange(value, MAX_TIMESTAMP_MS)
    ? undefined
    : `must be milliseconds since the Unix epoch, between 0 and ${MAX_TIMESTAMP_MS}`;
}

/** Why an int64 stream sequence (`after_sequence` and the like) is unacceptable, or undefined. */
export function sequenceProblem(value: bigint | number): string | undefined {
  return inRange(value, MAX_SEQUENCE) ? undefined : `must be a stream sequence between 0 and ${MAX_SEQUENCE}`;
}

function inRange(value: bigint | number, max: number): boolean {
  if (typeof value === "bigint") return value >= 0n && value <= BigInt(max);
  return Number.isSafeInteger(value) && value >= 0 && value <= max;
}

// --- what a projection stores ------------------------------------------------------

/**
 * The text PostgreSQL can hold: `text` and `jsonb` refuse NUL, so a
 * projection applying an event written before the edge refused NUL (or by a
 * producer that does not check) stores U+FFFD in its place instead of
 * failing the event forever.
 */
export function storableText(text: string): string {
  return text.includes("\u0000") ? text.replaceAll("\u0000", "\uFFFD") : text;
}

/** storableText applied to every string (and object key) in a JSON-like value. */
export function storableJson<T>(value: T): T {
  if (typeof value === "string") return storableText(value) as T;
  if (Array.isArray(value)) return value.map(storableJson) as T;
  if (typeof value === "object" && value !== null && !ArrayBuffer.isView(value)) {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [storableText(k), storableJson(v)])) as T;
  }
  return value;
}
