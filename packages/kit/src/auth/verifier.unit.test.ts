import { createHmac, generateKeyPairSync, type KeyObject } from "node:crypto";
import { base64url, exportJWK, SignJWT } from "jose";
import { describe, expect, it } from "vitest";
import { UnauthenticatedError } from "../errors.js";
import { importJwks } from "./jwks.js";
import { hasRole } from "./principal.js";
import { type KeySource, TokenVerifier } from "./verifier.js";

const ISS = "https://auth.spool.test";
const AUD = "spool.generation";
const signing = generateKeyPairSync("ed25519");
const stranger = generateKeyPairSync("ed25519");

/** The key set: "k1" can be withdrawn, as when a signing key's overlap ends. */
const published = new Set(["k1"]);
const keys: KeySource = {
  keyFor: async (kid) => (published.has(kid) && kid === "k1" ? signing.publicKey : undefined),
  has: (kid) => published.has(kid),
};
const revoked = new Set<string>();
const verifier = () =>
  new TokenVerifier({ keys, issuer: ISS, audience: AUD, revocations: { isRevoked: (s) => revoked.has(s) } });

interface Overrides {
  header?: Record<string, unknown>;
  claims?: Record<string, unknown>;
  key?: KeyObject;
  exp?: number | null;
}

async function token(o: Overrides = {}): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  const claims: Record<string, unknown> = {
    iss: ISS,
    aud: AUD,
    sub: "u1",
    jti: `j${Math.random()}`,
    iat: now,
    sid: "s1",
    org: "o1",
    roles: ["read"],
    scope: "gen:read",
    ...(o.exp === null ? {} : { exp: o.exp ?? now + 900 }),
    ...o.claims,
  };
  return new SignJWT(claims)
    .setProtectedHeader({ alg: "EdDSA", typ: "at+jwt", kid: "k1", ...o.header } as never)
    .sign(o.key ?? signing.privateKey);
}

const rejects = async (t: string, message: RegExp) => {
  const error = await verifier()
    .verify(t)
    .then(
      () => undefined,
      (e: unknown) => e,
    );
  expect(error).toBeInstanceOf(UnauthenticatedError);
  expect((error as Error).message).toMatch(message);
};

/** A JWT assembled by hand (for algorithms jose refuses to produce with these keys). */
function handMade(header: object, payload: object, sign: (input: string) => string): string {
  const input = `${base64url.encode(JSON.stringify(header))}.${base64url.encode(JSON.stringify(payload))}`;
  return `${input}.${sign(input)}`;
}

describe("access token verification", () => {
  it("accepts a valid token and exposes its claims", async () => {
    const p = await verifier().verify(await token());
    expect(p).toMatchObject({
      kind: "user",
      subject: "u1",
      sessionId: "s1",
      orgId: "o1",
      roles: ["read"],
      scopes: ["gen:read"],
    });
  });

  it("rejects alg none", async () => {
    const now = Math.floor(Date.now() / 1000);
    const t = handMade(
      { alg: "none", typ: "at+jwt", kid: "k1" },
      { iss: ISS, aud: AUD, sub: "u1", org: "o1", jti: "j", iat: now, exp: now + 900 },
      () => "",
    );
    await rejects(t, /algorithm not accepted/);
  });

  it("rejects HS256 signed with the public key as the HMAC secret", async () => {
    const now = Math.floor(Date.now() / 1000);
    const publicJwk = await exportJWK(signing.publicKey);
    for (const secret of [
      signing.publicKey.export({ type: "spki", format: "pem" }),
      JSON.stringify(publicJwk),
      publicJwk.x ?? "",
    ]) {
      const t = handMade(
        { alg: "HS256", typ: "at+jwt", kid: "k1" },
        { iss: ISS, aud: AUD, sub: "u1", org: "o1", jti: "j", iat: now, exp: now + 900 },
        (input) => createHmac("sha256", secret).update(input).digest("base64url"),
      );
      await rejects(t, /algorithm not accepted/);
    }
  });

  it("rejects a token without exp", async () => {
    await rejects(await token({ exp: null }), /invalid access token/);
  });

  it("rejects wrong aud, iss or typ", async () => {
    await rejects(await token({ claims: { aud: "spool.files" } }), /invalid access token/);
    await rejects(await token({ claims: { iss: "https://evil.example" } }), /invalid access token/);
    await rejects(await token({ header: { typ: "JWT" } }), /not an access token/);
    await rejects(await token({ header: { typ: "refresh+jwt" } }), /not an access token/);
  });

  it("rejects a refresh token or garbage used as an access token", async () => {
    await rejects(`srt.s1.0.${"A".repeat(43)}`, /malformed access token/);
    await rejects("garbage", /malformed access token/);
    await rejects("a.b.c", /malformed access token/);
    await rejects("", /malformed access token/);
  });

  it("rejects an expired token", async () => {
    const now = Math.floor(Date.now() / 1000);
    await rejects(await token({ exp: now - 60 }), /expired/);
  });

  it("rejects a token signed by an unknown key, or by another key under a known kid", async () => {
    await rejects(await token({ header: { kid: "k9" }, key: stranger.privateKey }), /unknown key/);
    await rejects(await token({ key: stranger.privateKey }), /invalid access token/);
  });

  it("rejects a revoked session's token, even when it was cached before the revocation", async () => {
    const v = verifier();
    const t = await token({ claims: { sid: "s-revoked" } });
    await v.verify(t);
    revoked.add("s-revoked");
    await expect(v.verify(t)).rejects.toThrow(/revoked/);
    expect(v.cacheStats.hits).toBe(1);
  });

  it("refuses a cached token once its signing key leaves the key set (retired key)", async () => {
    const v = verifier();
    const t = await token();
    await v.verify(t);
    await v.verify(t);
    expect(v.cacheStats).toEqual({ hits: 1, misses: 1 });
    published.delete("k1");
    try {
      await expect(v.verify(t)).rejects.toThrow(/unknown key/);
      // The refusal did not come from the cache: the hit count did not move.
      expect(v.cacheStats.hits).toBe(1);
    } finally {
      published.add("k1");
    }
    // Back in the set (a refetch that brings it again), the token verifies afresh.
    expect((await v.verify(t)).subject).toBe("u1");
  });

  it("checks roles by exact equality: bread does not satisfy read", async () => {
    const p = await verifier().verify(await token({ claims: { roles: ["bread", "reader"] } }));
    expect(hasRole(p, "read")).toBe(false);
    expect(hasRole(p, "bread")).toBe(true);
  });

  it("imports only Ed25519 keys from a JWKS", async () => {
    const jwk = { ...(await exportJWK(signing.publicKey)), kid: "k1", alg: "EdDSA" };
    const imported = await importJwks({
      keys: [jwk, { kty: "oct", k: "c2VjcmV0", kid: "h1", alg: "HS256" }],
    });
    expect([...imported.keys()]).toEqual(["k1"]);
  });
});
