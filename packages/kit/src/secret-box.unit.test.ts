import { randomBytes } from "node:crypto";
import { describe, expect, it } from "vitest";
import {
  decodeBase64Strict,
  decodeKeyMaterial,
  keyMaterialProblem,
  parseMasterKeys,
  SecretBox,
  SecretBoxError,
} from "./secret-box.js";

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

  it("decodes master keys strictly: no characters Node's lenient decoder would skip (issue 11 item 6)", () => {
    const good = randomBytes(32).toString("base64");
    expect(good).toMatch(/=$/);
    // Each of these decodes to 32 bytes with Buffer.from(…, "base64"), so used to be accepted.
    const inside = `${good.slice(0, 20)}*${good.slice(20)}`;
    const afterPadding = `${good}AAAA`;
    const spaced = `${good.slice(0, 20)} ${good.slice(20)}`;
    const urlSafe = randomBytes(32).toString("base64url");
    for (const bad of [inside, afterPadding, spaced, good.slice(0, -1)]) {
      expect(Buffer.from(bad, "base64").length, bad).toBe(32);
      expect(() => parseMasterKeys(`k1:${bad}`), bad).toThrow(/master key k1: is not canonical base64/);
    }
    if (/[-_]/.test(urlSafe)) expect(() => parseMasterKeys(`k1:${urlSafe}=`)).toThrow(/not canonical/);
    // Non-zero padding bits: "AB==" and "AA==" both decode to one zero byte; only "AA==" is canonical.
    expect(decodeBase64Strict("AA==")).toEqual(Buffer.from([0]));
    expect(decodeBase64Strict("AB==")).toBeUndefined();
    expect(parseMasterKeys(`k1:${good}`)[0]?.key).toEqual(Buffer.from(good, "base64"));
  });

  it("refuses master keys that are not random bytes (issue 11 item 6)", () => {
    const spec = (bytes: Buffer) => `k1:${bytes.toString("base64")}`;
    expect(() => parseMasterKeys(spec(Buffer.alloc(32)))).toThrow(/master key k1: is one byte repeated/);
    expect(() => parseMasterKeys(spec(Buffer.alloc(32, 0x41)))).toThrow(/one byte repeated/);
    expect(() => parseMasterKeys(spec(Buffer.from(Array.from({ length: 32 }, (_, i) => i))))).toThrow(
      /counting sequence/,
    );
    expect(() => parseMasterKeys(spec(Buffer.from("0123456789abcdef".repeat(2))))).toThrow(
      /distinct byte values|printable text/,
    );
    expect(() => parseMasterKeys(spec(Buffer.from("The Quick Brown Fox Jumps Over 9")))).toThrow(
      /master key k1: decodes to printable text/,
    );
    expect(() => parseMasterKeys(spec(Buffer.from([1, 2, 3, 4].flatMap((b) => Array(8).fill(b)))))).toThrow(
      /only 4 distinct byte values/,
    );
    // The same key under two ids would make a rotation that changes nothing.
    const key = randomBytes(32).toString("base64");
    expect(() => parseMasterKeys(`new:${key},old:${key}`)).toThrow(/master keys must differ/);
  });

  it("decodeKeyMaterial checks size, encoding and randomness for other secrets", () => {
    expect(decodeKeyMaterial(randomBytes(48).toString("base64"), { atLeast: 32 })).toHaveLength(48);
    expect(() => decodeKeyMaterial(randomBytes(16).toString("base64"), { atLeast: 32 })).toThrow(
      /must be at least 32 bytes of base64 \(got 16\)/,
    );
    expect(() => decodeKeyMaterial("a".repeat(44), { atLeast: 32 })).toThrow(/distinct byte values/);
    expect(() => decodeKeyMaterial("not base64 at all!", { atLeast: 32 })).toThrow(SecretBoxError);
    // Practically never a false alarm: many random keys pass.
    for (let i = 0; i < 1_000; i++) expect(keyMaterialProblem(randomBytes(32))).toBeUndefined();
  });
});
