import { randomBytes } from "node:crypto";
import { describe, expect, it } from "vitest";
import { parseMasterKeys, SecretBox, SecretBoxError } from "./secret-box.js";

const keySpec = (id: string) => `${id}:${randomBytes(32).toString("base64")}`;

describe("SecretBox", () => {
  it("round-trips and binds the ciphertext to its associated data", () => {
    const box = new SecretBox(parseMasterKeys(keySpec("k1")));
    const sealed = box.seal(Buffer.from("private key bytes"), "signing-key:kid-1");
    expect(box.open(sealed, "signing-key:kid-1").toString()).toBe("private key bytes");
    expect(() => box.open(sealed, "signing-key:kid-2")).toThrow(SecretBoxError);
    // Same plaintext twice: different IVs, different ciphertexts.
    expect(box.seal(Buffer.from("x"), "a").equals(box.seal(Buffer.from("x"), "a"))).toBe(false);
  });

  it("detects any tampering", () => {
    const box = new SecretBox(parseMasterKeys(keySpec("k1")));
    const sealed = box.seal(Buffer.from("secret"), "ad");
    for (const i of [3, sealed.length - 20, sealed.length - 1]) {
      const t = Buffer.from(sealed);
      t[i] = (t[i] ?? 0) ^ 1;
      expect(() => box.open(t, "ad")).toThrow(SecretBoxError);
    }
  });

  it("rotates: the newest key seals, older keys still open, removed keys do not", () => {
    const old = keySpec("old");
    const next = keySpec("new");
    const sealedOld = new SecretBox(parseMasterKeys(old)).seal(Buffer.from("v"), "ad");
    const rotated = new SecretBox(parseMasterKeys(`${next},${old}`));
    expect(rotated.currentKeyId).toBe("new");
    expect(rotated.open(sealedOld, "ad").toString()).toBe("v");
    expect(SecretBox.keyIdOf(rotated.seal(Buffer.from("v"), "ad"))).toBe("new");
    expect(() => new SecretBox(parseMasterKeys(next)).open(sealedOld, "ad")).toThrow(/unknown master key/);
  });

  it("refuses missing or malformed keys", () => {
    expect(() => parseMasterKeys("")).toThrow(/no master key/);
    expect(() => parseMasterKeys("k1:c2hvcnQ=")).toThrow(/32 bytes/);
    expect(() => parseMasterKeys(randomBytes(32).toString("base64"))).toThrow(/<id>:<base64 key>/);
    const k = keySpec("dup");
    expect(() => parseMasterKeys(`${k},${k}`)).toThrow(/unique/);
  });
});
