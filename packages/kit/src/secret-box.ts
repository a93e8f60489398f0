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
 * Parses master keys from configuration: a comma-separated list of
 * `<id>:<base64 of 32 bytes>`, newest first. A missing or malformed key is a
 * start-up error, never a silent fallback.
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
      const key = Buffer.from(entry.slice(sep + 1), "base64");
      if (key.length !== KEY_BYTES) {
        throw new SecretBoxError(
          `master key ${id}: must be ${KEY_BYTES} bytes of base64 (got ${key.length})`,
        );
      }
      return { id, key };
    });
  if (keys.length === 0) throw new SecretBoxError("no master key configured");
  if (new Set(keys.map((k) => k.id)).size !== keys.length)
    throw new SecretBoxError("master key ids must be unique");
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
