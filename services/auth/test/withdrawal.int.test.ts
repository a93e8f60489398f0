// Withdrawing credentials (issue 11 item 4): disable, enable and delete users,
// admin password reset, and rotate, disable, enable and delete service
// accounts. Each withdrawal reaches a second service (a kit TokenVerifier with
// KvJwksSource and RevocationSet on the same stream namespace, the way every
// other service mounts them) within 1 s, including tokens it already verified.
import { status } from "@grpc/grpc-js";
import {
  connectNats,
  createLogger,
  EventStore,
  KvJwksSource,
  Namespace,
  openJwksBucket,
  RevocationSet,
  TokenVerifier,
} from "@spool/kit";
import { type AuthServiceClient, Role } from "@spool/proto/spool/auth/v1/auth.js";
import { eventually, useInfra } from "@spool/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { call, codeOf, startTestAuth, type TestAuth } from "./harness.js";

const infra = useInfra("authwd");
const logger = createLogger({ service: "second", level: "silent" });
const ADMIN = { email: "admin@spool.test", password: "correct horse battery staple 42" };
/** The contract: a withdrawal is refused on every service within 1 s of the call returning. */
const REACH_MS = 1_000;

let auth: TestAuth;
let c: AuthServiceClient;
let nc: Awaited<ReturnType<typeof connectNats>>;
let store: EventStore;
let revocations: RevocationSet;
let second: TokenVerifier;

beforeAll(async () => {
  auth = await startTestAuth(infra());
  c = auth.client;
  nc = await connectNats({ url: infra().natsUrl, name: "withdrawal-second-service" });
  store = new EventStore(nc, { namespace: new Namespace(infra().streamPrefix) });
  await store.ensureStream({ name: "AUTH", subjects: ["auth.>"] });
  revocations = new RevocationSet({ store, logger });
  await revocations.start();
  await revocations.ready;
  second = new TokenVerifier({
    keys: new KvJwksSource(await openJwksBucket(nc, store.namespace)),
    issuer: "spool-auth",
    audience: "spool.generation",
    revocations,
  });
});
afterAll(async () => {
  await revocations?.stop();
  await nc?.close();
  await auth?.stop();
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const login = (email: string, password: string) => call(c.login, c, { email, password });

/** Verifies on the second service; the token is cached there from then on. */
async function acceptedOnSecond(token: string): Promise<void> {
  expect((await second.verify(token)).subject).toBeTruthy();
}

async function refusedOnSecondWithin1s(token: string, what: string): Promise<void> {
  await eventually(
    () =>
      second.verify(token).then(
        () => false,
        (e: Error) => /revoked/.test(e.message),
      ),
    { what, timeoutMs: REACH_MS, intervalMs: 10 },
  );
}

let orgCount = 0;
/** An organisation with two owners, an admin and two members; and a second organisation's owner. */
async function world() {
  const n = ++orgCount;
  const operator = (await login(ADMIN.email, ADMIN.password)).tokens!.accessToken;
  const make = async (slug: string) => {
    const owner = { email: `owner@${slug}.test`, password: "owner password is long enough" };
    await call(
      c.createOrganization,
      c,
      { name: slug, slug, ownerEmail: owner.email, ownerDisplayName: "Owner", ownerPassword: owner.password },
      operator,
    );
    const r = await login(owner.email, owner.password);
    return { token: r.tokens!.accessToken, user: r.user!, ...owner };
  };
  const a = await make(`wd-a${n}`);
  const b = await make(`wd-b${n}`);
  const user = async (name: string, roles: Role[]) => {
    const email = `${name}@wd-a${n}.test`;
    const password = `${name} password long enough`;
    const created = await call(c.createUser, c, { email, displayName: name, password, roles }, a.token);
    const r = await login(email, password);
    return {
      email,
      password,
      userId: created.user!.userId,
      token: r.tokens!.accessToken,
      refresh: r.tokens!.refreshToken,
    };
  };
  return {
    operator,
    owner: a,
    otherOrgOwner: b,
    owner2: await user("owner2", [Role.ROLE_OWNER]),
    admin: await user("admin", [Role.ROLE_ADMIN]),
    member: await user("member", [Role.ROLE_MEMBER]),
    target: await user("target", [Role.ROLE_MEMBER]),
  };
}

type World = Awaited<ReturnType<typeof world>>;

/** The "no" cases every user withdrawal shares. */
async function userRules(
  w: World,
  rpc: (req: { userId: string }, token: string) => Promise<unknown>,
  self: boolean,
): Promise<void> {
  expect(await codeOf(rpc({ userId: w.target.userId }, w.member.token))).toBe(status.PERMISSION_DENIED);
  expect(await codeOf(rpc({ userId: w.target.userId }, w.otherOrgOwner.token))).toBe(status.NOT_FOUND);
  expect(await codeOf(rpc({ userId: w.owner2.userId }, w.admin.token))).toBe(status.PERMISSION_DENIED);
  expect(await codeOf(rpc({ userId: "not/an id" }, w.owner.token))).toBe(status.INVALID_ARGUMENT);
  expect(await codeOf(rpc({ userId: "" }, w.owner.token))).toBe(status.INVALID_ARGUMENT);
  expect(await codeOf(rpc({ userId: "00000000-0000-4000-8000-000000000000" }, w.owner.token))).toBe(
    status.NOT_FOUND,
  );
  if (self) {
    expect(await codeOf(rpc({ userId: w.owner.user.userId }, w.owner.token))).toBe(
      status.FAILED_PRECONDITION,
    );
  }
  // Nothing of that changed the target or the owner.
  await acceptedOnSecond(w.target.token);
  await acceptedOnSecond(w.owner2.token);
  expect((await login(w.target.email, w.target.password)).user?.userId).toBe(w.target.userId);
}

describe("DisableUser / EnableUser", () => {
  it("refuses the user's tokens on another service within 1 s, login and refresh; enable restores login only", async () => {
    const w = await world();
    const disable = (req: { userId: string }, token: string) => call(c.disableUser, c, req, token);
    await userRules(w, disable, true);
    await acceptedOnSecond(w.target.token); // cached there as verified

    const r = await call(c.disableUser, c, { userId: w.target.userId }, w.admin.token);
    expect(r.user?.disabled).toBe(true);
    expect(r.revokedSessions).toBeGreaterThanOrEqual(1);
    await refusedOnSecondWithin1s(w.target.token, "disabled user's token refused on the second service");

    const disabled = await login(w.target.email, w.target.password).catch((e) => e);
    const wrong = await login(w.target.email, "not the right password at all").catch((e) => e);
    expect(disabled.code).toBe(status.UNAUTHENTICATED);
    expect(disabled.details).toBe(wrong.details);
    expect(await codeOf(call(c.refreshToken, c, { refreshToken: w.target.refresh }))).toBe(
      status.UNAUTHENTICATED,
    );
    // The user's own token is refused by auth itself as well.
    expect(await codeOf(call(c.getUser, c, { userId: w.target.userId }, w.target.token))).toBe(
      status.UNAUTHENTICATED,
    );
    expect((await call(c.getUser, c, { userId: w.target.userId }, w.owner.token)).user?.disabled).toBe(true);

    // Idempotent: disabling again succeeds and writes no second event.
    const again = await call(c.disableUser, c, { userId: w.target.userId }, w.owner.token);
    expect(again.user?.disabled).toBe(true);
    await eventually(async () => {
      const audit = await call(
        c.listAuditEvents,
        c,
        {
          userId: w.target.userId,
          type: "spool.auth.v1.UserDisabled",
          sinceMs: 0n,
          untilMs: 0n,
          pageSize: 10,
          pageToken: "",
        },
        w.owner.token,
      );
      return audit.events.length === 1 ? audit : undefined;
    });

    // Enable: the rules, then login works at once and its token is good on the second service;
    // the tokens and refresh tokens from before stay refused.
    const enable = (req: { userId: string }, token: string) => call(c.enableUser, c, req, token);
    expect(await codeOf(enable({ userId: w.target.userId }, w.member.token))).toBe(status.PERMISSION_DENIED);
    expect(await codeOf(enable({ userId: w.target.userId }, w.otherOrgOwner.token))).toBe(status.NOT_FOUND);
    expect(await codeOf(enable({ userId: "not/an id" }, w.owner.token))).toBe(status.INVALID_ARGUMENT);
    const enabled = await enable({ userId: w.target.userId }, w.admin.token);
    expect(enabled.user?.disabled).toBe(false);
    expect((await enable({ userId: w.target.userId }, w.admin.token)).user?.disabled).toBe(false);
    const back = await login(w.target.email, w.target.password);
    await acceptedOnSecond(back.tokens!.accessToken);
    await expect(second.verify(w.target.token)).rejects.toThrow(/revoked/);
    expect(await codeOf(call(c.refreshToken, c, { refreshToken: w.target.refresh }))).toBe(
      status.UNAUTHENTICATED,
    );
    const refreshed = await call(c.refreshToken, c, { refreshToken: back.tokens!.refreshToken });
    await acceptedOnSecond(refreshed.tokens!.accessToken);

    // An admin cannot disable or enable an owner; an owner can.
    await call(c.disableUser, c, { userId: w.owner2.userId }, w.owner.token);
    await refusedOnSecondWithin1s(w.owner2.token, "disabled owner's token refused");
    expect(await codeOf(enable({ userId: w.owner2.userId }, w.admin.token))).toBe(status.PERMISSION_DENIED);
    await enable({ userId: w.owner2.userId }, w.owner.token);
  });

  it("a login racing the disabling leaves no working token or session", async () => {
    const w = await world();
    // Logins spread over a window the disabling falls in: some finish before it, some race it.
    const attempts = Array.from({ length: 10 }, (_, i) =>
      sleep(i * 50)
        .then(() => login(w.target.email, w.target.password))
        .then(
          (r) => r.tokens!,
          () => undefined,
        ),
    );
    const disabled = sleep(400).then(() =>
      call(c.disableUser, c, { userId: w.target.userId }, w.owner.token),
    );
    const [raced] = await Promise.all([Promise.all(attempts), disabled]);
    // The target's session from world() was made before any of it: always checked.
    const tokens = [{ accessToken: w.target.token, refreshToken: w.target.refresh }, ...raced];
    for (const t of tokens) {
      if (!t) continue;
      await refusedOnSecondWithin1s(t.accessToken, "racing login's token refused");
      expect(await codeOf(call(c.refreshToken, c, { refreshToken: t.refreshToken }))).toBe(
        status.UNAUTHENTICATED,
      );
    }
  });
});

describe("DeleteUser", () => {
  it("is final: tokens refused on another service within 1 s, no login, not found, email stays taken", async () => {
    const w = await world();
    const del = (req: { userId: string }, token: string) => call(c.deleteUser, c, req, token);
    await userRules(w, del, true);
    await acceptedOnSecond(w.target.token);

    const r = await del({ userId: w.target.userId }, w.admin.token);
    expect(r.revokedSessions).toBeGreaterThanOrEqual(1);
    await refusedOnSecondWithin1s(w.target.token, "deleted user's token refused on the second service");
    expect(await codeOf(login(w.target.email, w.target.password))).toBe(status.UNAUTHENTICATED);
    expect(await codeOf(call(c.refreshToken, c, { refreshToken: w.target.refresh }))).toBe(
      status.UNAUTHENTICATED,
    );
    expect(await codeOf(call(c.getUser, c, { userId: w.target.userId }, w.owner.token))).toBe(
      status.NOT_FOUND,
    );
    expect(await codeOf(call(c.enableUser, c, { userId: w.target.userId }, w.owner.token))).toBe(
      status.NOT_FOUND,
    );
    expect(await codeOf(call(c.disableUser, c, { userId: w.target.userId }, w.owner.token))).toBe(
      status.NOT_FOUND,
    );
    expect(
      await codeOf(
        call(
          c.resetUserPassword,
          c,
          { userId: w.target.userId, newPassword: "a fresh long password" },
          w.owner.token,
        ),
      ),
    ).toBe(status.NOT_FOUND);
    // Deleting again is fine; the email stays claimed by the deleted user.
    await del({ userId: w.target.userId }, w.owner.token);
    expect(
      await codeOf(
        call(
          c.createUser,
          c,
          {
            email: w.target.email,
            displayName: "again",
            password: "member password long",
            roles: [Role.ROLE_MEMBER],
          },
          w.owner.token,
        ),
      ),
    ).toBe(status.ALREADY_EXISTS);
    // Nor to a new organisation's owner; and that refusal leaves no organisation behind (the slug stays free).
    const org = (slug: string, ownerEmail: string) =>
      call(
        c.createOrganization,
        c,
        {
          name: slug,
          slug,
          ownerEmail,
          ownerDisplayName: "O",
          ownerPassword: "owner password is long enough",
        },
        w.operator,
      );
    const slug = `wd-reuse${orgCount}`;
    expect(await codeOf(org(slug, w.target.email))).toBe(status.ALREADY_EXISTS);
    await org(slug, `fresh@${slug}.test`);
    // An owner deletes an owner.
    await del({ userId: w.owner2.userId }, w.owner.token);
    await refusedOnSecondWithin1s(w.owner2.token, "deleted owner's token refused");
  });
});

describe("ResetUserPassword", () => {
  it("sets the password, revokes every session and token (on another service within 1 s)", async () => {
    const w = await world();
    const newPassword = "a brand new password for target";
    const reset = (req: { userId: string }, token: string) =>
      call(c.resetUserPassword, c, { ...req, newPassword }, token);
    await userRules(w, reset, false);
    // Own password: ChangePassword (which asks for the current one), not this.
    expect(await codeOf(reset({ userId: w.owner.user.userId }, w.owner.token))).toBe(
      status.FAILED_PRECONDITION,
    );
    const weak = await call(
      c.resetUserPassword,
      c,
      { userId: w.target.userId, newPassword: "short" },
      w.owner.token,
    ).catch((e) => e);
    expect(weak.code).toBe(status.INVALID_ARGUMENT);
    expect(weak.details).toMatch(/new_password|invalid/);
    const second1 = await login(w.target.email, w.target.password);
    await acceptedOnSecond(w.target.token);
    await acceptedOnSecond(second1.tokens!.accessToken);

    const r = await reset({ userId: w.target.userId }, w.admin.token);
    expect(r.revokedSessions).toBeGreaterThanOrEqual(2);
    await refusedOnSecondWithin1s(w.target.token, "token refused after password reset");
    await refusedOnSecondWithin1s(second1.tokens!.accessToken, "other session's token refused");
    for (const refresh of [w.target.refresh, second1.tokens!.refreshToken]) {
      expect(await codeOf(call(c.refreshToken, c, { refreshToken: refresh }))).toBe(status.UNAUTHENTICATED);
    }
    expect(await codeOf(login(w.target.email, w.target.password))).toBe(status.UNAUTHENTICATED);
    // The new password logs in at once, and that token is good everywhere (issued after the not-before second).
    const fresh = await login(w.target.email, newPassword);
    await acceptedOnSecond(fresh.tokens!.accessToken);
    // An owner resets an owner.
    await call(c.resetUserPassword, c, { userId: w.owner2.userId, newPassword }, w.owner.token);
    await refusedOnSecondWithin1s(w.owner2.token, "owner's token refused after reset");
  });
});

describe("service accounts", () => {
  async function account(w: World) {
    const created = await call(
      c.createServiceAccount,
      c,
      { name: "worker", scopes: ["gen:produce"] },
      w.owner.token,
    );
    const id = created.serviceAccount!.serviceAccountId;
    const exchange = (secret: string) =>
      call(c.exchangeClientCredentials, c, { clientId: id, clientSecret: secret, scopes: [] });
    return { id, secret: created.clientSecret, exchange };
  }

  async function accountRules(
    w: World,
    id: string,
    rpc: (req: { serviceAccountId: string }, token: string) => Promise<unknown>,
  ) {
    expect(await codeOf(rpc({ serviceAccountId: id }, w.member.token))).toBe(status.PERMISSION_DENIED);
    expect(await codeOf(rpc({ serviceAccountId: id }, w.otherOrgOwner.token))).toBe(status.NOT_FOUND);
    expect(await codeOf(rpc({ serviceAccountId: "not/an id" }, w.owner.token))).toBe(status.INVALID_ARGUMENT);
    expect(
      await codeOf(rpc({ serviceAccountId: "00000000-0000-4000-8000-000000000000" }, w.owner.token)),
    ).toBe(status.NOT_FOUND);
  }

  it("DisableServiceAccount refuses its tokens on another service within 1 s and its exchange; enable restores exchange", async () => {
    const w = await world();
    const sa = await account(w);
    const before = (await sa.exchange(sa.secret)).accessToken;
    await acceptedOnSecond(before);
    const disable = (req: { serviceAccountId: string }, token: string) =>
      call(c.disableServiceAccount, c, req, token);
    await accountRules(w, sa.id, disable);
    await acceptedOnSecond(before);

    const r = await disable({ serviceAccountId: sa.id }, w.admin.token);
    expect(r.serviceAccount?.disabled).toBe(true);
    await refusedOnSecondWithin1s(before, "disabled account's token refused on the second service");
    const refused = await sa.exchange(sa.secret).catch((e) => e);
    const wrong = await sa.exchange("sas_wrong").catch((e) => e);
    expect(refused.code).toBe(status.UNAUTHENTICATED);
    expect(refused.details).toBe(wrong.details);
    expect((await disable({ serviceAccountId: sa.id }, w.owner.token)).serviceAccount?.disabled).toBe(true);

    const enable = (req: { serviceAccountId: string }, token: string) =>
      call(c.enableServiceAccount, c, req, token);
    await accountRules(w, sa.id, enable);
    expect((await enable({ serviceAccountId: sa.id }, w.owner.token)).serviceAccount?.disabled).toBe(false);
    const after = (await sa.exchange(sa.secret)).accessToken;
    await acceptedOnSecond(after);
    await expect(second.verify(before)).rejects.toThrow(/revoked/);
  });

  it("an exchange racing the disabling leaves no working token", async () => {
    const w = await world();
    const sa = await account(w);
    const early = (await sa.exchange(sa.secret)).accessToken;
    const attempts = Array.from({ length: 20 }, (_, i) =>
      sleep(i * 10)
        .then(() => sa.exchange(sa.secret))
        .then(
          (r) => r.accessToken,
          () => undefined,
        ),
    );
    const disabled = sleep(80).then(() =>
      call(c.disableServiceAccount, c, { serviceAccountId: sa.id }, w.owner.token),
    );
    const [raced] = await Promise.all([Promise.all(attempts), disabled]);
    const tokens = [early, ...raced];
    for (const t of tokens) if (t) await refusedOnSecondWithin1s(t, "racing exchange's token refused");
  });

  it("DeleteServiceAccount is final: tokens refused within 1 s, no exchange, not found", async () => {
    const w = await world();
    const sa = await account(w);
    const before = (await sa.exchange(sa.secret)).accessToken;
    await acceptedOnSecond(before);
    const del = (req: { serviceAccountId: string }, token: string) =>
      call(c.deleteServiceAccount, c, req, token);
    await accountRules(w, sa.id, del);
    await del({ serviceAccountId: sa.id }, w.admin.token);
    await refusedOnSecondWithin1s(before, "deleted account's token refused on the second service");
    expect(await codeOf(sa.exchange(sa.secret))).toBe(status.UNAUTHENTICATED);
    expect(await codeOf(call(c.enableServiceAccount, c, { serviceAccountId: sa.id }, w.owner.token))).toBe(
      status.NOT_FOUND,
    );
    expect(
      await codeOf(
        call(c.rotateServiceAccountSecret, c, { serviceAccountId: sa.id, overlapSeconds: 0n }, w.owner.token),
      ),
    ).toBe(status.NOT_FOUND);
    await del({ serviceAccountId: sa.id }, w.owner.token);
  });

  it("RotateServiceAccountSecret: the old secret exchanges during the overlap only; overlap 0 ends it at once", async () => {
    const w = await world();
    const sa = await account(w);
    const rotate = (req: { serviceAccountId: string; overlapSeconds?: bigint }, token: string) =>
      call(c.rotateServiceAccountSecret, c, { overlapSeconds: 2n, ...req }, token);
    await accountRules(w, sa.id, rotate);
    expect(
      await codeOf(rotate({ serviceAccountId: sa.id, overlapSeconds: 7n * 86_400n + 1n }, w.owner.token)),
    ).toBe(status.INVALID_ARGUMENT);
    expect(await codeOf(rotate({ serviceAccountId: sa.id, overlapSeconds: -1n }, w.owner.token))).toBe(
      status.INVALID_ARGUMENT,
    );
    // Nothing of that rotated anything.
    await sa.exchange(sa.secret);

    const r = await rotate({ serviceAccountId: sa.id, overlapSeconds: 2n }, w.admin.token);
    expect(r.clientSecret).toMatch(/^sas_/);
    expect(r.clientSecret).not.toBe(sa.secret);
    expect(Number(r.previousSecretExpiresAtMs)).toBeGreaterThan(Date.now());
    await acceptedOnSecond((await sa.exchange(r.clientSecret)).accessToken);
    await acceptedOnSecond((await sa.exchange(sa.secret)).accessToken); // inside the overlap
    await eventually(async () => (await codeOf(sa.exchange(sa.secret))) === status.UNAUTHENTICATED, {
      what: "old secret refused after the overlap",
      timeoutMs: 10_000,
      intervalMs: 200,
    });
    await sa.exchange(r.clientSecret);

    const r2 = await rotate({ serviceAccountId: sa.id, overlapSeconds: 0n }, w.owner.token);
    expect(r2.previousSecretExpiresAtMs).toBe(0n);
    expect(await codeOf(sa.exchange(r.clientSecret))).toBe(status.UNAUTHENTICATED);
    await sa.exchange(r2.clientSecret);
  });
});

describe("revocation set rebuilt from the log", () => {
  it("a restarted set refuses a withdrawn user's and service account's earlier tokens from the start", async () => {
    const w = await world();
    const sa = await (async () => {
      const created = await call(
        c.createServiceAccount,
        c,
        { name: "rb", scopes: ["gen:follow"] },
        w.owner.token,
      );
      return { id: created.serviceAccount!.serviceAccountId, secret: created.clientSecret };
    })();
    const saToken = (
      await call(c.exchangeClientCredentials, c, { clientId: sa.id, clientSecret: sa.secret, scopes: [] })
    ).accessToken;
    await call(c.disableUser, c, { userId: w.target.userId }, w.owner.token);
    await call(c.disableServiceAccount, c, { serviceAccountId: sa.id }, w.owner.token);

    const rebuilt = new RevocationSet({ store, logger });
    await rebuilt.start();
    await rebuilt.ready;
    const verifier = new TokenVerifier({
      keys: new KvJwksSource(await openJwksBucket(nc, store.namespace)),
      issuer: "spool-auth",
      audience: "spool.files",
      revocations: rebuilt,
    });
    // Ready means caught up: no window in which a withdrawn subject's token is accepted.
    await expect(verifier.verify(w.target.token)).rejects.toThrow(/revoked/);
    await expect(verifier.verify(saToken)).rejects.toThrow(/revoked/);
    expect((await verifier.verify(w.member.token)).subject).toBe(w.member.userId);
    await rebuilt.stop();
  });
});
