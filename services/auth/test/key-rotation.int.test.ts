import { createPrivateKey, randomUUID } from "node:crypto";
import {
  connectNats,
  createLogger,
  EventStore,
  KvJwksSource,
  Namespace,
  openJwksBucket,
  parseMasterKeys,
  RevocationSet,
  SecretBox,
  TokenVerifier,
} from "@spool/kit";
import { eventually, useInfra } from "@spool/testing";
import { SignJWT } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadAuthConfig } from "../src/config.js";
import { AUTH_STREAM, Subjects } from "../src/domain/events.js";
import { keyRingReducer } from "../src/domain/keyring.js";
import { authEnv, call, startTestAuth, type TestAuth } from "./harness.js";

const infra = useInfra("authkeys");
/** Short overlap; token lifetimes may not exceed it. */
const OVERLAP_SECONDS = 5;
/** Documented bound after the overlap ends: republish (timer, at worst the 60 s periodic run) + 30 s JWKS max age. */
const BOUND_MS = 90_000;
const ADMIN = { email: "admin@spool.test", password: "correct horse battery staple 42" };

let auth: TestAuth;
let nc: Awaited<ReturnType<typeof connectNats>>;
let store: EventStore;
let revocations: RevocationSet;
let jwks: KvJwksSource;
/** Another service's verifier: the kit on the same namespace, as generation-stream mounts it. */
let other: TokenVerifier;

beforeAll(async () => {
  auth = await startTestAuth(infra(), {
    SPOOL_SIGNING_KEY_OVERLAP_SECONDS: String(OVERLAP_SECONDS),
    SPOOL_ACCESS_TOKEN_TTL_SECONDS: String(OVERLAP_SECONDS),
    SPOOL_SERVICE_TOKEN_TTL_SECONDS: String(OVERLAP_SECONDS),
  });
  nc = await connectNats({ url: infra().natsUrl, name: "key-rotation-test" });
  store = new EventStore(nc, { namespace: new Namespace(infra().streamPrefix) });
  await store.ensureStream(AUTH_STREAM);
  revocations = new RevocationSet({ store, logger: createLogger({ service: "other", level: "silent" }) });
  await revocations.start();
  await revocations.ready;
  jwks = new KvJwksSource(await openJwksBucket(nc, store.namespace));
  other = new TokenVerifier({ keys: jwks, issuer: "spool-auth", audience: "spool.generation", revocations });
});
afterAll(async () => {
  await jwks?.close();
  await revocations?.stop();
  await nc?.close();
  await auth?.stop();
});

const ring = async () => (await store.load(Subjects.keys(), keyRingReducer)).state;

/**
 * A token valid for an hour signed with a ring key's private half, opened
 * with the master key as only the auth service could: what a token signed by
 * that key looks like if anything outlived the overlap.
 */
async function longLivedToken(kid: string): Promise<string> {
  const key = (await ring()).keys.find((k) => k.kid === kid);
  if (!key) throw new Error(`no key ${kid}`);
  const box = new SecretBox(parseMasterKeys(auth.env.SPOOL_MASTER_KEYS!));
  const privateKey = createPrivateKey({
    key: box.open(key.sealedPrivateKey, `signing-key:${kid}`),
    format: "der",
    type: "pkcs8",
  });
  return new SignJWT({ org: "o-forged", scope: "gen:produce" })
    .setProtectedHeader({ alg: "EdDSA", typ: "at+jwt", kid })
    .setIssuer("spool-auth")
    .setAudience("spool.generation")
    .setSubject("svc-forged")
    .setJti(randomUUID())
    .setIssuedAt()
    .setExpirationTime("1h")
    .sign(privateKey);
}

const adminToken = async () => (await call(auth.client.login, auth.client, ADMIN)).tokens!.accessToken;
const refused = (token: string) =>
  other.verify(token).then(
    () => false,
    (e: Error) => /unknown key/.test(e.message),
  );

describe("signing key rotation, seen from another service", () => {
  it(
    "a retired key's tokens are refused after its overlap, even cached ones, across two rotations",
    async () => {
      const k0 = (await ring()).currentKid!;
      const t0 = await longLivedToken(k0);
      // Verified (and cached) by the other service while k0 signs.
      expect((await other.verify(t0)).subject).toBe("svc-forged");

      const r1 = await call(auth.client.rotateSigningKey, auth.client, {}, await adminToken());
      expect(r1.previousKid).toBe(k0);
      const t1 = await longLivedToken(r1.kid);
      expect((await other.verify(t1)).subject).toBe("svc-forged");
      // The second rotation comes inside k0's overlap, so it does not retire k0: only the end of the overlap can.
      const r2 = await call(auth.client.rotateSigningKey, auth.client, {}, await adminToken());
      expect(r2.previousKid).toBe(r1.kid);

      await eventually(async () => (await refused(t0)) && (await refused(t1)), {
        what: "tokens of both retired keys refused by the other service",
        timeoutMs: 2 * OVERLAP_SECONDS * 1000 + BOUND_MS,
      });
      // The log says so, and only the current key is published.
      const after = await ring();
      expect(after.keys.filter((k) => k.retired).map((k) => k.kid)).toEqual(
        expect.arrayContaining([k0, r1.kid]),
      );
      const published = JSON.parse((await call(auth.client.getJwks, auth.client, {})).jwksJson) as {
        keys: { kid: string }[];
      };
      expect(published.keys.map((k) => k.kid)).toEqual([r2.kid]);
      // Tokens of the current key still work there.
      const fresh = await adminToken();
      expect((await other.verify(fresh)).subject).toBeTruthy();
    },
    2 * OVERLAP_SECONDS * 1000 + BOUND_MS + 30_000,
  );
});

describe("token lifetimes and the overlap", () => {
  it("start-up refuses a service or access token lifetime longer than the signing key overlap", () => {
    const env = (overrides: Record<string, string>) =>
      authEnv(infra(), {
        SPOOL_SIGNING_KEY_OVERLAP_SECONDS: "60",
        SPOOL_ACCESS_TOKEN_TTL_SECONDS: "60",
        SPOOL_SERVICE_TOKEN_TTL_SECONDS: "60",
        ...overrides,
      });
    expect(() => loadAuthConfig(env({}))).not.toThrow();
    expect(() => loadAuthConfig(env({ SPOOL_SERVICE_TOKEN_TTL_SECONDS: "61" }))).toThrow(
      /SPOOL_SIGNING_KEY_OVERLAP_SECONDS: must be at least SPOOL_SERVICE_TOKEN_TTL_SECONDS/,
    );
    expect(() => loadAuthConfig(env({ SPOOL_ACCESS_TOKEN_TTL_SECONDS: "61" }))).toThrow(
      /SPOOL_SIGNING_KEY_OVERLAP_SECONDS: must be at least SPOOL_ACCESS_TOKEN_TTL_SECONDS/,
    );
  });
});
