// Issue 10, "Revocation ends live streams": a FollowGeneration stream ends with UNAUTHENTICATED when
// its caller's session is revoked (logout, refresh-token reuse, admin revocation, user or service
// account disabled), on every replica, pushed by the revocation set (no polling); and at its access
// token's expiry, after which the client resumes with a fresh token from its last sequence.
import { status } from "@grpc/grpc-js";
import { Role } from "@spool/proto/spool/auth/v1/auth.js";
import type { GenerationServiceClient } from "@spool/proto/spool/generation/v1/generation.js";
import { useInfra } from "@spool/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BuiltinModel } from "../src/providers/index.js";
import { openFollow } from "./follow-client.js";
import { authCall, call, type Stack, startReplica, startRequest, startStack } from "./harness.js";

const infra = useInfra("genrevoke");
const TTL_SECONDS = 8;
const OPERATOR = { email: "admin@spool.test", password: "correct horse battery staple 42" };
// Paced far beyond the test's length: the generation is live throughout.
const slow = () => new Map([["builtin", new BuiltinModel({ tokensPerSecond: 20, length: 20_000 })]]);

let stack: Stack;
let replica2: Awaited<ReturnType<typeof startReplica>>;
let generationId: string;
let counter = 0;

const a = () => stack.auth.client;
const login = async (email: string, password: string) =>
  (await authCall(a().login, a(), { email, password })).tokens!;
const operator = async () => (await login(OPERATOR.email, OPERATOR.password)).accessToken;

/** A new admin of the root organisation (may follow the operator's generation), logged in. */
async function newAdmin() {
  const email = `follower-${++counter}@spool.test`;
  const password = "follower password long enough";
  const r = await authCall(
    a().createUser,
    a(),
    { email, displayName: "F", password, roles: [Role.ROLE_ADMIN] },
    await operator(),
  );
  return { userId: r.user!.userId, email, password, tokens: await login(email, password) };
}

/** Follows the live generation with `token` on both replicas; resolves once both stream events. */
async function followOnBoth(token: string) {
  const follows = [stack.client, replica2.client].map((c: GenerationServiceClient) =>
    openFollow(c, { generationId }, token),
  );
  await Promise.all(follows.map((f) => f.firstItem));
  return follows;
}

/** Both follows end with UNAUTHENTICATED "token revoked" (not by expiry, not by the generation ending). */
async function expectRevoked(follows: ReturnType<typeof openFollow>[], revokedAt: number, what: string) {
  const ends = await Promise.all(follows.map((f) => f.done));
  for (const [i, end] of ends.entries()) {
    expect(end.how, `${what} on replica ${i + 1}`).toBe("error");
    expect(end.error?.code).toBe(status.UNAUTHENTICATED);
    expect(end.error?.details).toBe("token revoked");
  }
  // Reported, not asserted (no timing assertions on a shared machine): the bound is 1 s.
  console.info(
    `${what}: streams ended ${ends.map((e) => e.at - revokedAt).join(" / ")} ms after the revocation`,
  );
}

beforeAll(async () => {
  stack = await startStack(
    infra(),
    { SPOOL_COALESCE_WINDOW_MS: "50" },
    slow(),
    // Short access tokens (the expiry case); refresh reuse detected at once (no grace).
    { SPOOL_ACCESS_TOKEN_TTL_SECONDS: String(TTL_SECONDS), SPOOL_REFRESH_GRACE_MS: "0" },
  );
  replica2 = await startReplica(stack, slow());
  const started = await call(
    stack.client.startGeneration,
    stack.client,
    startRequest("long-live", "talk for a long time"),
    await operator(),
  );
  generationId = started.generation!.generationId;
});

afterAll(async () => {
  if (generationId && stack) {
    await call(stack.client.cancelGeneration, stack.client, { generationId }, await operator()).catch(
      () => {},
    );
  }
  await replica2?.stop();
  await stack?.stop();
});

describe("revocation ends live follows, on every replica", () => {
  it("logout", async () => {
    const u = await newAdmin();
    const follows = await followOnBoth(u.tokens.accessToken);
    const at = Date.now();
    await authCall(a().logout, a(), {}, u.tokens.accessToken);
    await expectRevoked(follows, at, "logout");
  });

  it("refresh-token reuse revokes the session family", async () => {
    const u = await newAdmin();
    const rotated = (await authCall(a().refreshToken, a(), { refreshToken: u.tokens.refreshToken })).tokens!;
    // Followed with the rotated pair's access token: the same session.
    const follows = await followOnBoth(rotated.accessToken);
    const at = Date.now();
    // The first refresh token again: reuse.
    await expect(
      authCall(a().refreshToken, a(), { refreshToken: u.tokens.refreshToken }),
    ).rejects.toMatchObject({
      code: status.UNAUTHENTICATED,
    });
    await expectRevoked(follows, at, "refresh reuse");
  });

  it("an admin revokes the session", async () => {
    const u = await newAdmin();
    const follows = await followOnBoth(u.tokens.accessToken);
    const at = Date.now();
    await authCall(a().revokeSession, a(), { sessionId: u.tokens.sessionId }, await operator());
    await expectRevoked(follows, at, "admin revocation");
  });

  it("the user is disabled", async () => {
    const u = await newAdmin();
    const follows = await followOnBoth(u.tokens.accessToken);
    const at = Date.now();
    await authCall(a().disableUser, a(), { userId: u.userId }, await operator());
    await expectRevoked(follows, at, "user disabled");
  });

  it("a service account with gen:follow is disabled", async () => {
    const op = await operator();
    const sa = await authCall(
      a().createServiceAccount,
      a(),
      { name: "follower", scopes: ["gen:follow"] },
      op,
    );
    const id = sa.serviceAccount!.serviceAccountId;
    const token = (
      await authCall(a().exchangeClientCredentials, a(), {
        clientId: id,
        clientSecret: sa.clientSecret,
        scopes: [],
      })
    ).accessToken;
    const follows = await followOnBoth(token);
    const at = Date.now();
    await authCall(a().disableServiceAccount, a(), { serviceAccountId: id }, await operator());
    await expectRevoked(follows, at, "service account disabled");
  });

  it("another session of the same user is not affected", async () => {
    const u = await newAdmin();
    const other = await login(u.email, u.password);
    const [kept] = await followOnBoth(other.accessToken).then((f) => {
      f[1]?.cancel();
      return f;
    });
    const revoked = openFollow(stack.client, { generationId }, u.tokens.accessToken);
    await revoked.firstItem;
    await authCall(a().logout, a(), {}, u.tokens.accessToken);
    expect((await revoked.done).error?.details).toBe("token revoked");
    // The other session's follow is still receiving events.
    const before = kept!.lastSequence();
    await new Promise((r) => setTimeout(r, 500));
    expect(kept!.lastSequence()).toBeGreaterThan(before);
    kept!.cancel();
    expect((await kept!.done).how).toBe("cancelled");
  });
});

describe("an access token's expiry ends the follow; the client resumes with a fresh token", () => {
  it("ends with UNAUTHENTICATED at exp, and a resume from the last sequence misses nothing", async () => {
    const u = await newAdmin();
    const exp =
      JSON.parse(Buffer.from(u.tokens.accessToken.split(".")[1]!, "base64url").toString()).exp * 1000;
    const follows = await followOnBoth(u.tokens.accessToken);
    const ends = await Promise.all(follows.map((f) => f.done));
    for (const end of ends) {
      expect(end.how).toBe("error");
      expect(end.error?.code).toBe(status.UNAUTHENTICATED);
      expect(end.error?.details).toBe("access token expired");
      // Not before exp (the token was good until then).
      expect(end.at).toBeGreaterThanOrEqual(exp);
    }
    console.info(`expiry: streams ended ${ends.map((e) => e.at - exp).join(" / ")} ms after exp`);
    // Resume on the other replica with a fresh token, from the last sequence seen: the next one follows.
    for (const [i, f] of follows.entries()) {
      const last = f.lastSequence();
      const fresh = (await login(u.email, u.password)).accessToken;
      const resumed = openFollow(
        [replica2.client, stack.client][i]!,
        { generationId, afterSequence: BigInt(last) },
        fresh,
      );
      await resumed.firstItem;
      expect(Number(resumed.events()[0]?.sequence)).toBe(last + 1);
      resumed.cancel();
      await resumed.done;
    }
  });
});

describe("access is checked again on every resume", () => {
  it("an admin demoted to member while following: the follow ends with its token, and the resume is NOT_FOUND", async () => {
    const u = await newAdmin();
    const [follow] = await followOnBoth(u.tokens.accessToken).then((f) => {
      f[1]?.cancel();
      return f;
    });
    await authCall(a().setUserRoles, a(), { userId: u.userId, roles: [Role.ROLE_MEMBER] }, await operator());
    // The token it was opened with carried the admin role: the stream lasts at most until it expires.
    const end = await follow!.done;
    expect(end.how).toBe("error");
    expect(end.error?.code).toBe(status.UNAUTHENTICATED);
    // A fresh token says member: another user's generation is no longer visible, on either replica.
    const fresh = (await login(u.email, u.password)).accessToken;
    for (const client of [stack.client, replica2.client]) {
      const resumed = openFollow(
        client,
        { generationId, afterSequence: BigInt(follow!.lastSequence()) },
        fresh,
      );
      const r = await resumed.done;
      expect(r.error?.code).toBe(status.NOT_FOUND);
      expect(resumed.items).toEqual([]);
    }
  });
});
