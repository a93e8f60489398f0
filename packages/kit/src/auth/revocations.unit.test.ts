import { generateKeyPairSync } from "node:crypto";
import { SignJWT } from "jose";
import { describe, expect, it } from "vitest";
import { firstIssuableMs, issuedNoLaterThan } from "./revocations.js";
import { type KeySource, TokenVerifier } from "./verifier.js";

const signing = generateKeyPairSync("ed25519");
const keys: KeySource = {
  keyFor: async (kid) => (kid === "k1" ? signing.publicKey : undefined),
  has: (kid) => kid === "k1",
};

function token(sub: string, iatSec: number, sid?: string): Promise<string> {
  return new SignJWT({ org: "o1", ...(sid ? { sid } : {}) })
    .setProtectedHeader({ alg: "EdDSA", typ: "at+jwt", kid: "k1" })
    .setIssuer("iss")
    .setAudience("aud")
    .setSubject(sub)
    .setJti(`j${Math.random()}`)
    .setIssuedAt(iatSec)
    .setExpirationTime(iatSec + 600)
    .sign(signing.privateKey);
}

describe("subject not-before", () => {
  it("counts a token issued in the not-before's own second as issued before it (iat has whole seconds)", () => {
    expect(issuedNoLaterThan(10_000, 10_999)).toBe(true);
    expect(issuedNoLaterThan(10_999, 10_000)).toBe(true);
    expect(issuedNoLaterThan(9_000, 10_500)).toBe(true);
    expect(issuedNoLaterThan(11_000, 10_999)).toBe(false);
    expect(firstIssuableMs(10_000)).toBe(11_000);
    expect(firstIssuableMs(10_999)).toBe(11_000);
    expect(issuedNoLaterThan(firstIssuableMs(10_500), 10_500)).toBe(false);
  });

  it("the verifier refuses a withdrawn subject's earlier tokens on every call, cached or not, user or service", async () => {
    const notBefore = new Map<string, number>();
    const verifier = new TokenVerifier({
      keys,
      issuer: "iss",
      audience: "aud",
      revocations: { isRevoked: () => false, notBefore: (s) => notBefore.get(s) },
    });
    const now = Math.floor(Date.now() / 1000);
    const user = await token("u1", now - 10, "s1");
    const service = await token("sa1", now - 10);
    const later = await token("u1", now - 4, "s2");
    // Verified, hence cached.
    for (const t of [user, service, later]) await verifier.verify(t);
    notBefore.set("u1", (now - 5) * 1000 + 999);
    notBefore.set("sa1", (now - 10) * 1000 + 1);
    await expect(verifier.verify(user)).rejects.toThrow(/revoked/);
    await expect(verifier.verify(service)).rejects.toThrow(/revoked/);
    // Issued in a later second than the withdrawal: accepted.
    expect((await verifier.verify(later)).subject).toBe("u1");
    // Not cached (a fresh verifier): the same answers.
    const fresh = new TokenVerifier({
      keys,
      issuer: "iss",
      audience: "aud",
      revocations: { isRevoked: () => false, notBefore: (s) => notBefore.get(s) },
    });
    await expect(fresh.verify(user)).rejects.toThrow(/revoked/);
    await expect(fresh.verify(service)).rejects.toThrow(/revoked/);
    expect((await fresh.verify(later)).subject).toBe("u1");
  });
});
