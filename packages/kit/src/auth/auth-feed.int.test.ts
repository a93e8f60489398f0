import { generateKeyPairSync } from "node:crypto";
import type { NatsConnection } from "@nats-io/transport-node";
import { RefreshTokenReused, SessionRevoked, SessionStarted } from "@spool/proto/spool/auth/v1/events.js";
import { eventually, useInfra } from "@spool/testing";
import { exportJWK, SignJWT } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { EventStore } from "../event-store.js";
import { eventType } from "../events.js";
import { createLogger } from "../logger.js";
import { Namespace } from "../namespace.js";
import { connectNats } from "../nats.js";
import { createJwksBucket, JWKS_KEY, KvJwksSource } from "./jwks.js";
import { RevocationSet } from "./revocations.js";
import { TokenVerifier } from "./verifier.js";

const Revoked = eventType("spool.auth.v1.SessionRevoked", SessionRevoked);
const Started = eventType("spool.auth.v1.SessionStarted", SessionStarted);
const logger = createLogger({ service: "auth-feed-test", level: "silent" });
const infra = useInfra("authfeed");
let nc: NatsConnection;
let store: EventStore;

beforeAll(async () => {
  nc = await connectNats({ url: infra().natsUrl, name: "auth-feed-test" });
  store = new EventStore(nc, { namespace: new Namespace(infra().streamPrefix) });
  await store.ensureStream({ name: "AUTH", subjects: ["auth.>"] });
});
afterAll(async () => {
  await nc?.close();
});

const revoke = (sessionId: string) =>
  store.append(`auth.session.${sessionId}`, [
    Revoked.create({
      sessionId,
      userId: "u1",
      orgId: "o1",
      reason: "logout",
      revokedBy: "u1",
      absoluteExpiresAtMs: BigInt(Date.now() + 86_400_000),
    }),
  ]);

describe("revocation set", () => {
  it("is ready on an empty stream, learns revocations live, and is rebuilt from the log on restart", async () => {
    const first = new RevocationSet({ store, logger });
    await first.start();
    await first.ready;
    expect(first.isRevoked("s1")).toBe(false);
    await store.append("auth.session.s1", [
      Started.create({
        sessionId: "s1",
        userId: "u1",
        orgId: "o1",
        roles: [],
        refreshTokenHash: Buffer.alloc(32),
        idleExpiresAtMs: 0n,
        absoluteExpiresAtMs: 0n,
        ip: "",
        userAgent: "",
      }),
    ]);
    await revoke("s1");
    await eventually(() => first.isRevoked("s1"), { what: "live revocation", timeoutMs: 2_000 });
    await first.stop();

    const rebuilt = new RevocationSet({ store, logger });
    await rebuilt.start();
    await rebuilt.ready;
    // Ready means caught up: no window in which a revoked session is accepted.
    expect(rebuilt.isRevoked("s1")).toBe(true);
    expect(rebuilt.isRevoked("s2")).toBe(false);
    await rebuilt.stop();
  });
});

describe("JWKS from NATS KV", () => {
  it("verifies against published keys and refetches on an unknown kid (rotation)", async () => {
    const kv = await createJwksBucket(nc, store.namespace);
    const k1 = generateKeyPairSync("ed25519");
    const k2 = generateKeyPairSync("ed25519");
    const jwk = async (k: typeof k1, kid: string) => ({
      ...(await exportJWK(k.publicKey)),
      kid,
      alg: "EdDSA",
      use: "sig",
    });
    await kv.put(JWKS_KEY, JSON.stringify({ keys: [await jwk(k1, "k1")] }));
    const revocations = new RevocationSet({ store, logger });
    await revocations.start();
    const verifier = new TokenVerifier({
      keys: new KvJwksSource(kv, { minRefetchMs: 0 }),
      issuer: "iss",
      audience: "aud",
      revocations,
    });
    const sign = (k: typeof k1, kid: string) =>
      new SignJWT({ org: "o1", sid: "s-live" })
        .setProtectedHeader({ alg: "EdDSA", typ: "at+jwt", kid })
        .setIssuer("iss")
        .setAudience("aud")
        .setSubject("u1")
        .setJti("j1")
        .setIssuedAt()
        .setExpirationTime("5m")
        .sign(k.privateKey);
    expect((await verifier.verify(await sign(k1, "k1"))).subject).toBe("u1");
    await expect(verifier.verify(await sign(k2, "k2"))).rejects.toThrow(/unknown key/);
    await kv.put(JWKS_KEY, JSON.stringify({ keys: [await jwk(k2, "k2"), await jwk(k1, "k1")] }));
    expect((await verifier.verify(await sign(k2, "k2"))).subject).toBe("u1");
    // Logout reaches this verifier through the AUTH stream.
    const live = await sign(k2, "k2");
    await verifier.verify(live);
    await revoke("s-live");
    await eventually(
      () =>
        verifier.verify(live).then(
          () => false,
          (e: Error) => /revoked/.test(e.message),
        ),
      { what: "token rejected after logout", timeoutMs: 2_000 },
    );
    await revocations.stop();
  });

  it("a key withdrawn from the published set stops verifying at once, even for a cached token (KV watch)", async () => {
    const kv = await createJwksBucket(nc, store.namespace);
    const old = generateKeyPairSync("ed25519");
    const current = generateKeyPairSync("ed25519");
    const jwk = async (k: typeof old, kid: string) => ({
      ...(await exportJWK(k.publicKey)),
      kid,
      alg: "EdDSA",
    });
    await kv.put(JWKS_KEY, JSON.stringify({ keys: [await jwk(current, "w-new"), await jwk(old, "w-old")] }));
    // A max age far beyond the test: only the watch can bring the change.
    const source = new KvJwksSource(kv, { maxAgeMs: 3_600_000 });
    const verifier = new TokenVerifier({
      keys: source,
      issuer: "iss",
      audience: "aud",
      revocations: { isRevoked: () => false },
    });
    const sign = (k: typeof old, kid: string) =>
      new SignJWT({ org: "o1" })
        .setProtectedHeader({ alg: "EdDSA", typ: "at+jwt", kid })
        .setIssuer("iss")
        .setAudience("aud")
        .setSubject("svc")
        .setJti("j-w")
        .setIssuedAt()
        .setExpirationTime("1h")
        .sign(k.privateKey);
    const oldToken = await sign(old, "w-old");
    const newToken = await sign(current, "w-new");
    await verifier.verify(oldToken);
    await verifier.verify(newToken);
    await kv.put(JWKS_KEY, JSON.stringify({ keys: [await jwk(current, "w-new")] }));
    await eventually(
      () =>
        verifier.verify(oldToken).then(
          () => false,
          (e: Error) => /unknown key/.test(e.message),
        ),
      { what: "withdrawn key refused", timeoutMs: 5_000 },
    );
    expect((await verifier.verify(newToken)).subject).toBe("svc");
    await source.close();
  });
});

describe("revocations inside a command's batch", () => {
  it("a SessionRevoked written together with another event is seen", async () => {
    const Reused = eventType("spool.auth.v1.RefreshTokenReused", RefreshTokenReused);
    const set = new RevocationSet({ store, logger });
    await set.start();
    await set.ready;
    await store.append("auth.session.s-batch", [
      Reused.create({ sessionId: "s-batch", userId: "u1", reusedGeneration: 0, ip: "" }),
      Revoked.create({
        sessionId: "s-batch",
        userId: "u1",
        orgId: "o1",
        reason: "reuse",
        revokedBy: "",
        absoluteExpiresAtMs: 0n,
      }),
    ]);
    await eventually(() => set.isRevoked("s-batch"), { what: "batched revocation", timeoutMs: 2_000 });
    await set.stop();
  });
});
