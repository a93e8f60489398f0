import { createCipheriv, createDecipheriv, randomBytes } from "node:crypto";

/**
 * AES-256-GCM sealing of secrets at rest (DESIGN.md §7): 12-byte random IV,
 * 16-byte tag, associated data binding the ciphertext to its record and field,
 * and key ids so keys can rotate (the newest seals; older ones only open).
 *
 * Sealed layout: version(1) | keyIdLength(1) | keyId | iv(12) | tag(16) | ciphertext.
 */
const VERSION = 1;
const IV_BYTES = 12;
const TAG_BYTES = 16;
const KEY_BYTES = 32;

export class SecretBoxError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "SecretBoxError";
  }
}

export interface MasterKey {
  /** Short identifier stored beside each ciphertext (1-64 of [A-Za-z0-9_-]). */
  id: string;
  key: Buffer;
}

/**
 * Decodes canonical base64 (standard alphabet, padded), or returns undefined.
 * Node's own decoder is lenient: it skips characters outside the alphabet and
 * ignores whatever follows a "=", so a mistyped or truncated secret would
 * silently become a different key. Re-encoding must give back the same text,
 * which also refuses non-zero padding bits.
 */
export function decodeBase64Strict(text: string): Buffer | undefined {
  if (!/^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/.test(text)) return undefined;
  const bytes = Buffer.from(text, "base64");
  return bytes.toString("base64") === text ? bytes : undefined;
}

/**
 * Why bytes meant to be random key material look chosen rather than drawn, or
 * undefined. Random bytes practically never fail these (32 random bytes have
 * about 30 distinct values; all 32 printable is a 1e-13 chance), while the
 * usual mistakes do: zeros, one repeated character, a counter, a short
 * pattern, or a passphrase typed as text and then base64-encoded.
 */
export function keyMaterialProblem(bytes: Uint8Array): string | undefined {
  if (bytes.length === 0) return "is empty";
  const distinct = new Set(bytes).size;
  if (distinct === 1) return "is one byte repeated, not random bytes";
  const step = ((bytes[1] ?? 0) - (bytes[0] ?? 0)) & 0xff;
  if (bytes.every((b, i) => i === 0 || ((b - (bytes[i - 1] ?? 0)) & 0xff) === step)) {
    return "is a counting sequence, not random bytes";
  }
  if (distinct < Math.min(16, Math.ceil(bytes.length / 2))) {
    return `has only ${distinct} distinct byte values, not random bytes`;
  }
  if (bytes.every((b) => (b >= 0x20 && b <= 0x7e) || b === 0x09 || b === 0x0a || b === 0x0d)) {
    return "decodes to printable text (a passphrase?), not random bytes";
  }
  return undefined;
}

/**
 * Decodes base64 key material from configuration, strictly, and refuses the
 * wrong size or material that is not random. Messages name no value.
 * Generate with `openssl rand -base64 32`.
 */
export function decodeKeyMaterial(text: string, size: { exactly: number } | { atLeast: number }): Buffer {
  const bytes = decodeBase64Strict(text);
  if (bytes === undefined) {
    throw new SecretBoxError("is not canonical base64 (standard alphabet, '=' padding, nothing else)");
  }
  if ("exactly" in size && bytes.length !== size.exactly) {
    throw new SecretBoxError(`must be ${size.exactly} bytes of base64 (got ${bytes.length})`);
  }
  if ("atLeast" in size && bytes.length < size.atLeast) {
    throw new SecretBoxError(`must be at least ${size.atLeast} bytes of base64 (got ${bytes.length})`);
  }
  const problem = keyMaterialProblem(bytes);
  if (problem) throw new SecretBoxError(problem);
  return bytes;
}

/**
 * Parses master keys from configuration: a comma-separated list of
 * `<id>:<base64 of 32 bytes>`, newest first. A missing, malformed, weak or
 * repeated key is a start-up error, never a silent fallback.
 */
export function parseMasterKeys(spec: string): MasterKey[] {
  const keys = spec
    .split(",")
    .map((s) => s.trim())
    .filter(Boolean)
    .map((entry, i) => {
      const sep = entry.indexOf(":");
      const id = sep > 0 ? entry.slice(0, sep) : "";
      if (!/^[A-Za-z0-9_-]{1,64}$/.test(id)) {
        throw new SecretBoxError(`master key ${i + 1}: expected <id>:<base64 key> with a 1-64 character id`);
      }
      try {
        return { id, key: decodeKeyMaterial(entry.slice(sep + 1), { exactly: KEY_BYTES }) };
      } catch (e) {
        throw new SecretBoxError(`master key ${id}: ${(e as Error).message}`);
      }
    });
  if (keys.length === 0) throw new SecretBoxError("no master key configured");
  if (new Set(keys.map((k) => k.id)).size !== keys.length)
    throw new SecretBoxError("master key ids must be unique");
  // One key under two ids would make rotation a no-op while looking done.
  if (new Set(keys.map((k) => k.key.toString("hex"))).size !== keys.length)
    throw new SecretBoxError("master keys must differ (the same key appears under two ids)");
  return keys;
}

export class SecretBox {
  readonly #keys: Map<string, Buffer>;
  readonly #current: MasterKey;

  /** keys: newest first; the first seals, all open. */
  constructor(keys: readonly MasterKey[]) {
    const [current] = keys;
    if (!current) throw new SecretBoxError("no master key configured");
    this.#current = current;
    this.#keys = new Map(keys.map((k) => [k.id, k.key]));
  }

  get currentKeyId(): string {
    return this.#current.id;
  }

  /** Seals plaintext; `associatedData` names the record and field it belongs to (e.g. "signing-key:<kid>"). */
  seal(plaintext: Uint8Array, associatedData: string): Buffer {
    const iv = randomBytes(IV_BYTES);
    const cipher = createCipheriv("aes-256-gcm", this.#current.key, iv, { authTagLength: TAG_BYTES });
    cipher.setAAD(Buffer.from(associatedData, "utf8"));
    const ciphertext = Buffer.concat([cipher.update(plaintext), cipher.final()]);
    const id = Buffer.from(this.#current.id, "utf8");
    return Buffer.concat([Buffer.from([VERSION, id.length]), id, iv, cipher.getAuthTag(), ciphertext]);
  }

  /** Opens a sealed value; fails on tampering, a wrong associated data or an unknown key id. */
  open(sealed: Uint8Array, associatedData: string): Buffer {
    const buf = Buffer.from(sealed.buffer, sealed.byteOffset, sealed.byteLength);
    if (buf.length < 2 || buf[0] !== VERSION) throw new SecretBoxError("unsupported sealed value");
    const idLength = buf[1] ?? 0;
    const headerEnd = 2 + idLength;
    if (buf.length < headerEnd + IV_BYTES + TAG_BYTES) throw new SecretBoxError("sealed value is truncated");
    const id = buf.subarray(2, headerEnd).toString("utf8");
    const key = this.#keys.get(id);
    if (!key) throw new SecretBoxError(`sealed with unknown master key ${JSON.stringify(id)}`);
    const iv = buf.subarray(headerEnd, headerEnd + IV_BYTES);
    const tag = buf.subarray(headerEnd + IV_BYTES, headerEnd + IV_BYTES + TAG_BYTES);
    const decipher = createDecipheriv("aes-256-gcm", key, iv, { authTagLength: TAG_BYTES });
    decipher.setAAD(Buffer.from(associatedData, "utf8"));
    decipher.setAuthTag(tag);
    try {
      return Buffer.concat([
        decipher.update(buf.subarray(headerEnd + IV_BYTES + TAG_BYTES)),
        decipher.final(),
      ]);
    } catch {
      throw new SecretBoxError("sealed value failed authentication (tampered, or wrong record)");
    }
  }

  /** Id of the key that sealed a value (to find values due for re-sealing after rotation). */
  static keyIdOf(sealed: Uint8Array): string {
    const idLength = sealed[1] ?? 0;
    return Buffer.from(sealed.subarray(2, 2 + idLength)).toString("utf8");
  }
}
