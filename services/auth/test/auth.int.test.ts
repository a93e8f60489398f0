import { status } from "@grpc/grpc-js";
import {
  type AuthServiceClient,
  PrincipalKind,
  Role,
  WhoAmIResponse,
} from "@spool/proto/spool/auth/v1/auth.js";
import { eventually, useInfra } from "@spool/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { call, codeOf, startTestAuth, type TestAuth } from "./harness.js";

const infra = useInfra("auth");
let auth: TestAuth;
let c: AuthServiceClient;
const ADMIN = { email: "admin@spool.test", password: "correct horse battery staple 42" };

beforeAll(async () => {
  auth = await startTestAuth(infra(), { SPOOL_REFRESH_GRACE_MS: "1500" });
  c = auth.client;
});
afterAll(async () => {
  await auth?.stop();
});

const login = (email: string, password: string) => call(c.login, c, { email, password });

async function adminToken(): Promise<string> {
  const r = await login(ADMIN.email, ADMIN.password);
  return r.tokens!.accessToken;
}

async function orgWithOwner(slug: string) {
  const admin = await adminToken();
  const owner = { email: `owner@${slug}.test`, password: "owner password is long enough" };
  await call(
    c.createOrganization,
    c,
    { name: slug, slug, ownerEmail: owner.email, ownerDisplayName: "Owner", ownerPassword: owner.password },
    admin,
  );
  const ownerLogin = await login(owner.email, owner.password);
  return { owner, ownerToken: ownerLogin.tokens!.accessToken, ownerUser: ownerLogin.user! };
}

describe("bootstrap and login", () => {
  it("logs in the bootstrap admin; a restart converges without duplicating anything", async () => {
    const r = await login(ADMIN.email, ADMIN.password);
    expect(r.user?.roles).toEqual([Role.ROLE_OWNER]);
    expect(r.tokens?.refreshToken).toMatch(/^srt\./);
    const again = await startTestAuth(infra(), {}, { ...auth.env });
    await again.stop();
    const r2 = await login(ADMIN.email, ADMIN.password);
    expect(r2.user?.userId).toBe(r.user?.userId);
    expect(r2.user?.orgId).toBe(r.user?.orgId);
  });

  it("wrong password and unknown account get the same answer", async () => {
    const wrong = await login(ADMIN.email, "not the right password at all").catch((e) => e);
    const unknown = await login("nobody@spool.test", "not the right password at all").catch((e) => e);
    expect(wrong.code).toBe(status.UNAUTHENTICATED);
    expect(unknown.code).toBe(status.UNAUTHENTICATED);
    expect(wrong.details).toBe(unknown.details);
  });
});

describe("users and roles", () => {
  it("creates users with validated input; weak passwords and bad emails are field violations", async () => {
    const { ownerToken } = await orgWithOwner("acme");
    const bad = await call(
      c.createUser,
      c,
      { email: "nope", displayName: "", password: "password1234", roles: [Role.ROLE_MEMBER] },
      ownerToken,
    ).catch((e) => e);
    expect(bad.code).toBe(status.INVALID_ARGUMENT);
    const created = await call(
      c.createUser,
      c,
      { email: "m@acme.test", displayName: "M", password: "member password long", roles: [Role.ROLE_MEMBER] },
      ownerToken,
    );
    expect(created.user?.roles).toEqual([Role.ROLE_MEMBER]);
    const dup = await codeOf(
      call(
        c.createUser,
        c,
        {
          email: "M@ACME.test",
          displayName: "M",
          password: "member password long",
          roles: [Role.ROLE_MEMBER],
        },
        ownerToken,
      ),
    );
    expect(dup).toBe(status.ALREADY_EXISTS);
    // A member is not an admin: creating users is refused.
    const member = (await login("m@acme.test", "member password long")).tokens!.accessToken;
    expect(
      await codeOf(
        call(
          c.createUser,
          c,
          {
            email: "x@acme.test",
            displayName: "X",
            password: "member password long",
            roles: [Role.ROLE_MEMBER],
          },
          member,
        ),
      ),
    ).toBe(status.PERMISSION_DENIED);
    // Another organisation's user is NOT_FOUND.
    const other = await orgWithOwner("globex");
    expect(await codeOf(call(c.getUser, c, { userId: created.user!.userId }, other.ownerToken))).toBe(
      status.NOT_FOUND,
    );
  });

  it("20 parallel creations of one email: exactly one user", async () => {
    const { ownerToken } = await orgWithOwner("racer");
    const results = await Promise.allSettled(
      Array.from({ length: 20 }, () =>
        call(
          c.createUser,
          c,
          {
            email: "same@racer.test",
            displayName: "S",
            password: "same password long",
            roles: [Role.ROLE_MEMBER],
          },
          ownerToken,
        ),
      ),
    );
    expect(results.filter((r) => r.status === "fulfilled")).toHaveLength(1);
    for (const r of results)
      if (r.status === "rejected") expect((r.reason as { code: number }).code).toBe(status.ALREADY_EXISTS);
  });
});

describe("refresh rotation", () => {
  it("RT1 -> RT2; replaying RT1 after the grace revokes the family: RT2 and the access token stop working", async () => {
    const first = await login(ADMIN.email, ADMIN.password);
    const rt1 = first.tokens!.refreshToken;
    const second = await call(c.refreshToken, c, { refreshToken: rt1 });
    const rt2 = second.tokens!.refreshToken;
    const at2 = second.tokens!.accessToken;
    expect(rt2).not.toBe(rt1);
    expect(second.tokens!.sessionId).toBe(first.tokens!.sessionId);
    expect(await codeOf(call(c.getUser, c, { userId: first.user!.userId }, at2))).toBeUndefined();
    await new Promise((r) => setTimeout(r, 1_600)); // past the 1.5 s grace configured above
    const reuse = await call(c.refreshToken, c, { refreshToken: rt1 }).catch((e) => e);
    expect(reuse.code).toBe(status.UNAUTHENTICATED);
    expect(reuse.details).toMatch(/reuse/);
    expect(await codeOf(call(c.refreshToken, c, { refreshToken: rt2 }))).toBe(status.UNAUTHENTICATED);
    await eventually(
      async () =>
        (await codeOf(call(c.getUser, c, { userId: first.user!.userId }, at2))) === status.UNAUTHENTICATED,
      {
        what: "access token of the revoked family rejected",
        timeoutMs: 3_000,
      },
    );
    const audit = await call(
      c.listAuditEvents,
      c,
      {
        type: "spool.auth.v1.RefreshTokenReused",
        userId: "",
        sinceMs: 0n,
        untilMs: 0n,
        pageSize: 10,
        pageToken: "",
      },
      await adminToken(),
    );
    expect(audit.events.length).toBeGreaterThanOrEqual(1);
  });

  it("two parallel refreshes with RT1 inside the grace both succeed with the same successor", async () => {
    const first = await login(ADMIN.email, ADMIN.password);
    const rt1 = first.tokens!.refreshToken;
    const results = await Promise.all(
      Array.from({ length: 5 }, () => call(c.refreshToken, c, { refreshToken: rt1 })),
    );
    const successors = new Set(results.map((r) => r.tokens!.refreshToken));
    expect(successors.size).toBe(1);
    // The successor works once more, and the family is intact.
    const next = await call(c.refreshToken, c, { refreshToken: [...successors][0]! });
    expect(next.tokens!.refreshToken).not.toBe([...successors][0]);
  });

  it("garbage, forged and access tokens are not refresh tokens", async () => {
    const first = await login(ADMIN.email, ADMIN.password);
    for (const bad of [
      "garbage",
      first.tokens!.accessToken,
      first.tokens!.refreshToken.replace(/.{4}$/, "AAAA"),
    ]) {
      expect(await codeOf(call(c.refreshToken, c, { refreshToken: bad }))).toBe(status.UNAUTHENTICATED);
    }
    // The forged one did not revoke the real family.
    expect(
      await codeOf(call(c.refreshToken, c, { refreshToken: first.tokens!.refreshToken })),
    ).toBeUndefined();
  });
});

describe("throttling", () => {
  it("100 parallel wrong passwords are counted exactly: only the limit reach verification", async () => {
    const { owner } = await orgWithOwner("brute");
    const results = await Promise.allSettled(
      Array.from({ length: 100 }, () => login(owner.email, "definitely the wrong password")),
    );
    const codes = results.map((r) => (r.status === "rejected" ? (r.reason as { code: number }).code : 0));
    expect(codes.filter((x) => x === status.UNAUTHENTICATED)).toHaveLength(10);
    expect(codes.filter((x) => x === status.RESOURCE_EXHAUSTED)).toHaveLength(90);
    // Blocked, even with the right password, and with retry-after; an unknown account answers alike.
    const blocked = await login(owner.email, owner.password).catch((e) => e);
    expect(blocked.code).toBe(status.RESOURCE_EXHAUSTED);
    expect(Number(blocked.metadata.get("retry-after-ms")[0])).toBeGreaterThan(0);
    const audit = await call(
      c.listAuditEvents,
      c,
      {
        type: "spool.auth.v1.LoginFailed",
        userId: "",
        sinceMs: 0n,
        untilMs: 0n,
        pageSize: 500,
        pageToken: "",
      },
      await adminToken(),
    );
    expect(audit.events).toBeDefined();
  });

  it("the per-account hourly limit is a rate: its retry-after-ms is the time until one attempt is earned back", async () => {
    const { owner } = await orgWithOwner("hourly");
    // Another instance on the same log, allowing 3 failures per account per hour.
    const strict = await startTestAuth(infra(), {}, { ...auth.env, SPOOL_THROTTLE_ACCOUNT_PER_HOUR: "3" });
    try {
      const s = strict.client;
      const attempt = (password: string) =>
        call(s.login, s, { email: owner.email, password }).catch((e) => e);
      for (let i = 0; i < 3; i++)
        expect((await attempt("wrong password number one")).code).toBe(status.UNAUTHENTICATED);
      const refused = await attempt(owner.password);
      expect(refused.code).toBe(status.RESOURCE_EXHAUSTED);
      // 3 per hour: one comes back every 20 minutes (a fixed window answered "until the hour is over").
      const retry = Number(refused.metadata.get("retry-after-ms")[0]);
      expect(retry).toBeLessThanOrEqual(1_200_000);
      expect(retry).toBeGreaterThan(1_200_000 - 60_000);
    } finally {
      await strict.stop();
    }
  });
});

describe("logout and admin revocation", () => {
  it("logout revokes the session; admins revoke all of a user's sessions", async () => {
    const { ownerToken, owner, ownerUser } = await orgWithOwner("revokers");
    await call(
      c.createUser,
      c,
      {
        email: "u@revokers.test",
        displayName: "U",
        password: "user password long",
        roles: [Role.ROLE_MEMBER],
      },
      ownerToken,
    );
    const s1 = await login("u@revokers.test", "user password long");
    const s2 = await login("u@revokers.test", "user password long");
    await call(c.logout, c, {}, s1.tokens!.accessToken);
    await eventually(
      async () =>
        (await codeOf(call(c.getUser, c, { userId: s1.user!.userId }, s1.tokens!.accessToken))) ===
        status.UNAUTHENTICATED,
      { timeoutMs: 3_000 },
    );
    expect(
      await codeOf(call(c.getUser, c, { userId: s2.user!.userId }, s2.tokens!.accessToken)),
    ).toBeUndefined();
    const r = await call(c.revokeUserSessions, c, { userId: s2.user!.userId }, ownerToken);
    expect(r.revokedSessions).toBe(1);
    await eventually(
      async () =>
        (await codeOf(call(c.getUser, c, { userId: s2.user!.userId }, s2.tokens!.accessToken))) ===
        status.UNAUTHENTICATED,
      { timeoutMs: 3_000 },
    );
    expect(owner.email).toContain("revokers");
    expect(ownerUser.roles).toEqual([Role.ROLE_OWNER]);
  });

  it("changing the password revokes the user's other sessions", async () => {
    const { owner } = await orgWithOwner("changers");
    const keep = await login(owner.email, owner.password);
    const other = await login(owner.email, owner.password);
    const r = await call(
      c.changePassword,
      c,
      { currentPassword: owner.password, newPassword: "a brand new long password" },
      keep.tokens!.accessToken,
    );
    // Every other session: the one orgWithOwner opened and `other`.
    expect(r.revokedSessions).toBe(2);
    expect(await codeOf(call(c.logout, c, {}, keep.tokens!.accessToken))).toBeUndefined();
    await eventually(
      async () => (await codeOf(call(c.logout, c, {}, other.tokens!.accessToken))) === status.UNAUTHENTICATED,
      { timeoutMs: 3_000 },
    );
    expect(await codeOf(login(owner.email, "a brand new long password"))).toBeUndefined();
  });
});

describe("service accounts, introspection and keys", () => {
  it("client credentials: secret shown once, works, wrong secret refused; introspection per RFC 7662", async () => {
    const { ownerToken } = await orgWithOwner("svc");
    const sa = await call(
      c.createServiceAccount,
      c,
      { name: "worker", scopes: ["gen:produce", "auth:introspect"] },
      ownerToken,
    );
    expect(sa.clientSecret).toMatch(/^sas_/);
    const id = sa.serviceAccount!.serviceAccountId;
    expect(
      await codeOf(
        call(c.exchangeClientCredentials, c, {
          clientId: id,
          clientSecret: `${sa.clientSecret}x`,
          scopes: [],
        }),
      ),
    ).toBe(status.UNAUTHENTICATED);
    const t = await call(c.exchangeClientCredentials, c, {
      clientId: id,
      clientSecret: sa.clientSecret,
      scopes: ["auth:introspect"],
    });
    expect(t.scopes).toEqual(["auth:introspect"]);
    const active = await call(c.introspectToken, c, { token: ownerToken }, t.accessToken);
    expect(active).toMatchObject({ active: true, tokenType: "access_token" });
    const inactive = await call(c.introspectToken, c, { token: "garbage" }, t.accessToken);
    expect(inactive).toMatchObject({ active: false, sub: "", org: "", scope: "" });
  });

  it("key rotation: new tokens use the new key, old tokens verify during the overlap", async () => {
    const before = await adminToken();
    const jwks1 = JSON.parse((await call(c.getJwks, c, {})).jwksJson) as { keys: { kid: string }[] };
    const rotated = await call(c.rotateSigningKey, c, {}, before);
    expect(rotated.previousKid).toBe(jwks1.keys[0]?.kid);
    const jwks2 = JSON.parse((await call(c.getJwks, c, {})).jwksJson) as { keys: { kid: string }[] };
    expect(jwks2.keys.map((k) => k.kid).sort()).toEqual([rotated.kid, rotated.previousKid].sort());
    expect(await codeOf(call(c.getJwks, c, {}, before))).toBeUndefined();
    const after = await adminToken();
    const header = JSON.parse(Buffer.from(after.split(".")[0]!, "base64url").toString()) as { kid: string };
    expect(header.kid).toBe(rotated.kid);
    expect(
      await codeOf(
        call(
          c.listAuditEvents,
          c,
          { type: "", userId: "", sinceMs: 0n, untilMs: 0n, pageSize: 1, pageToken: "" },
          before,
        ),
      ),
    ).toBeUndefined();
  });

  it("only operators rotate keys or create organisations", async () => {
    const { ownerToken } = await orgWithOwner("notops");
    expect(await codeOf(call(c.rotateSigningKey, c, {}, ownerToken))).toBe(status.PERMISSION_DENIED);
  });
});

describe("OAuth state", () => {
  it("is bound to user and purpose, single use", async () => {
    const admin = await adminToken();
    const { ownerToken } = await orgWithOwner("oauth");
    const s = await call(c.createOAuthState, c, { purpose: "github-link" }, admin);
    expect(
      await codeOf(call(c.consumeOAuthState, c, { state: s.state, purpose: "github-link" }, ownerToken)),
    ).toBe(status.FAILED_PRECONDITION);
    expect(
      await codeOf(call(c.consumeOAuthState, c, { state: s.state, purpose: "gitlab-link" }, admin)),
    ).toBe(status.FAILED_PRECONDITION);
    const attempts = await Promise.allSettled(
      Array.from({ length: 10 }, () =>
        call(c.consumeOAuthState, c, { state: s.state, purpose: "github-link" }, admin),
      ),
    );
    expect(attempts.filter((a) => a.status === "fulfilled")).toHaveLength(1);
  });
});

describe("audit", () => {
  it("lists the organisation's events newest first, paginated, filtered", async () => {
    const admin = await adminToken();
    const page1 = await call(
      c.listAuditEvents,
      c,
      {
        type: "spool.auth.v1.LoginSucceeded",
        userId: "",
        sinceMs: 0n,
        untilMs: 0n,
        pageSize: 2,
        pageToken: "",
      },
      admin,
    );
    expect(page1.events).toHaveLength(2);
    expect(page1.nextPageToken).not.toBe("");
    const page2 = await call(
      c.listAuditEvents,
      c,
      {
        type: "spool.auth.v1.LoginSucceeded",
        userId: "",
        sinceMs: 0n,
        untilMs: 0n,
        pageSize: 2,
        pageToken: page1.nextPageToken,
      },
      admin,
    );
    expect(page2.events[0]!.timeMs <= page1.events[1]!.timeMs).toBe(true);
    expect(page2.events.map((e) => e.eventId)).not.toContain(page1.events[0]!.eventId);
    for (const e of [...page1.events, ...page2.events]) {
      expect(e.detailsJson).not.toMatch(/password|srt\.|eyJ/);
    }
    expect(
      await codeOf(
        call(
          c.listAuditEvents,
          c,
          { type: "", userId: "", sinceMs: 0n, untilMs: 0n, pageSize: 2, pageToken: "nonsense" },
          admin,
        ),
      ),
    ).toBe(status.INVALID_ARGUMENT);
  });
});

describe("WhoAmI", () => {
  it("answers every authenticated caller about itself: a user and a service account each see themselves, nothing of anyone else", async () => {
    const { ownerToken, ownerUser } = await orgWithOwner("whoami");
    const member = { email: "member@whoami.test", password: "member password is long enough" };
    await call(
      c.createUser,
      c,
      { email: member.email, displayName: "Member M", password: member.password, roles: [Role.ROLE_MEMBER] },
      ownerToken,
    );
    const memberLogin = await login(member.email, member.password);
    const memberId = memberLogin.user!.userId;
    const sa = await call(
      c.createServiceAccount,
      c,
      { name: "whoami-worker", scopes: ["gen:produce", "gen:follow"] },
      ownerToken,
    );
    const saId = sa.serviceAccount!.serviceAccountId;
    const saToken = (
      await call(c.exchangeClientCredentials, c, {
        clientId: saId,
        clientSecret: sa.clientSecret,
        scopes: ["gen:follow"],
      })
    ).accessToken;

    const me = await call(c.whoAmI, c, {}, memberLogin.tokens!.accessToken);
    expect(me).toMatchObject({
      kind: PrincipalKind.PRINCIPAL_KIND_USER,
      subjectId: memberId,
      orgId: ownerUser.orgId,
      sessionId: memberLogin.tokens!.sessionId,
      roles: [Role.ROLE_MEMBER],
      scopes: [],
      identity: {
        $case: "user",
        value: { userId: memberId, email: member.email, displayName: "Member M", disabled: false },
      },
    });
    expect(Number(me.expiresAtMs)).toBeGreaterThan(Date.now());
    const owner = await call(c.whoAmI, c, {}, ownerToken);
    expect(owner).toMatchObject({
      kind: PrincipalKind.PRINCIPAL_KIND_USER,
      subjectId: ownerUser.userId,
      roles: [Role.ROLE_OWNER],
      identity: { $case: "user", value: { email: "owner@whoami.test", roles: [Role.ROLE_OWNER] } },
    });
    const svc = await call(c.whoAmI, c, {}, saToken);
    expect(svc).toMatchObject({
      kind: PrincipalKind.PRINCIPAL_KIND_SERVICE_ACCOUNT,
      subjectId: saId,
      orgId: ownerUser.orgId,
      sessionId: "",
      roles: [],
      // The token's scopes (asked for at the exchange) and every scope the account holds.
      scopes: ["gen:follow"],
      identity: {
        $case: "serviceAccount",
        value: { serviceAccountId: saId, name: "whoami-worker", scopes: ["gen:produce", "gen:follow"] },
      },
    });
    // There is no input to name anyone else: each answer holds its caller's id and no other's.
    const ids = [memberId, ownerUser.userId, saId];
    for (const [answer, self] of [
      [me, memberId],
      [owner, ownerUser.userId],
      [svc, saId],
    ] as const) {
      const text = JSON.stringify(WhoAmIResponse.toJSON(answer));
      expect(ids.filter((id) => text.includes(id))).toEqual([self]);
    }
    expect(await codeOf(call(c.whoAmI, c, {}))).toBe(status.UNAUTHENTICATED);
    expect(await codeOf(call(c.whoAmI, c, {}, "garbage"))).toBe(status.UNAUTHENTICATED);

    // A withdrawn caller's token is refused, never answered NOT_FOUND about itself.
    await call(c.disableUser, c, { userId: memberId }, ownerToken);
    expect(await codeOf(call(c.whoAmI, c, {}, memberLogin.tokens!.accessToken))).toBe(status.UNAUTHENTICATED);
    await call(c.deleteServiceAccount, c, { serviceAccountId: saId }, ownerToken);
    expect(await codeOf(call(c.whoAmI, c, {}, saToken))).toBe(status.UNAUTHENTICATED);
  });
});
