// The authorization model of docs/SECURITY.md ("Authorization model"), cell by cell: every RPC of
// AuthService, GenerationService and AdminService (on auth and on generation-stream) against every
// kind of principal. A "no" cell must answer PERMISSION_DENIED (or NOT_FOUND for another
// organisation's object, UNAUTHENTICATED without a token) and never data; every "yes" cell is run.
import { createHash, randomBytes, randomUUID } from "node:crypto";
import { type ClientReadableStream, credentials, Metadata, type ServiceError, status } from "@grpc/grpc-js";
import { ServiceAccountCreated, Subjects } from "@spool/auth/testing";
import { connectNats, EventStore, Namespace } from "@spool/kit";
import { AdminServiceClient } from "@spool/proto/spool/admin/v1/admin.js";
import { Role } from "@spool/proto/spool/auth/v1/auth.js";
import type {
  FollowGenerationResponse,
  ProduceGenerationResponse,
} from "@spool/proto/spool/generation/v1/generation.js";
import { eventually, useInfra } from "@spool/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { authCall, bearer, call, type Stack, startRequest, startStack } from "./harness.js";

const infra = useInfra("authz");
let stack: Stack;
let authAdmin: AdminServiceClient;
let genAdmin: AdminServiceClient;
const OPERATOR = { email: "admin@spool.test", password: "correct horse battery staple 42" };

/** Principals, in the column order of every row's cells. */
const PRINCIPALS = [
  "anonymous", // no token
  "operator", // the bootstrap admin: user, owner of the platform organisation, scope auth:operator
  "ownerA",
  "adminA",
  "memberA",
  "ownerB",
  "produceA", // service account of A with gen:produce
  "introspectA", // service account of A with auth:introspect
  "followA", // service account of A with gen:follow
  "platformSa", // service account with spool:admin, created by the operator
] as const;
type Name = (typeof PRINCIPALS)[number];

interface Who {
  name: Name;
  /** Current access token (undefined for anonymous). */
  token: string | undefined;
  /** A new token of the same principal (a new session for users), for calls that end a session. */
  fresh(): Promise<string | undefined>;
  userId: string;
  /** Users only: their current password (ChangePassword changes it). */
  password: string;
}
const who = {} as Record<Name, Who>;

/** Objects of organisation A that the rows aim at. */
const a = {
  orgId: "",
  memberId: "",
  ownerId: "",
  genOfMember: "",
  genOfOwner: "",
  /** Member of A whose sessions the revocation rows revoke. */
  victim: { email: "victim@authz-a.test", password: "victim password long enough", userId: "" },
  userIds: new Set<string>(),
};

const authRpc = () => stack.auth.client;
const gen = () => stack.client;
let counter = 0;
const unique = (prefix: string) => `${prefix}-${++counter}-${randomUUID().slice(0, 8)}`;

async function login(email: string, password: string) {
  const c = authRpc();
  return authCall(c.login, c, { email, password });
}

async function serviceAccount(ownerToken: string, name: Name, scopes: string[]): Promise<Who> {
  const c = authRpc();
  const sa = await authCall(c.createServiceAccount, c, { name, scopes }, ownerToken);
  const id = sa.serviceAccount!.serviceAccountId;
  const exchange = async () =>
    (
      await authCall(c.exchangeClientCredentials, c, {
        clientId: id,
        clientSecret: sa.clientSecret,
        scopes: [],
      })
    ).accessToken;
  return { name, token: await exchange(), fresh: exchange, userId: id, password: "" };
}

async function user(name: Name, email: string, password: string): Promise<Who> {
  const r = await login(email, password);
  const w: Who = {
    name,
    token: r.tokens!.accessToken,
    fresh: async () => (await login(email, w.password)).tokens!.accessToken,
    userId: r.user!.userId,
    password,
  };
  return w;
}

async function createOrg(operatorToken: string, slug: string) {
  const c = authRpc();
  const email = `owner@${slug}.test`;
  const r = await authCall(
    c.createOrganization,
    c,
    {
      name: slug,
      slug,
      ownerEmail: email,
      ownerDisplayName: "O",
      ownerPassword: "owner password long enough",
    },
    operatorToken,
  );
  return { orgId: r.organization!.orgId, email, password: "owner password long enough" };
}

async function addUser(ownerToken: string, email: string, password: string, roles: Role[]) {
  const c = authRpc();
  const r = await authCall(c.createUser, c, { email, displayName: "U", password, roles }, ownerToken);
  return r.user!.userId;
}

async function startGen(token: string, requestId: string) {
  const g = gen();
  const r = await call(g.startGeneration, g, startRequest(requestId, "hello"), token);
  return r.generation!.generationId;
}

/** Follows a generation to its end; the number of events, or the call's error. */
function follow(generationId: string, token: string | undefined): Promise<number> {
  return new Promise((resolve, reject) => {
    let events = 0;
    const s: ClientReadableStream<FollowGenerationResponse> = gen().followGeneration(
      { generationId, afterSequence: 0n },
      token ? bearer(token) : new Metadata(),
    );
    s.on("data", (r: FollowGenerationResponse) => {
      if (r.item?.$case === "event") events++;
    });
    s.on("end", () => resolve(events));
    s.on("error", reject);
  });
}

/** Opens ProduceGeneration, names a lease that does not exist, and returns how the stream ended. */
function produceUnknownLease(token: string | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    const s = gen().produceGeneration(token ? bearer(token) : new Metadata());
    s.on("data", (_r: ProduceGenerationResponse) => {});
    s.on("error", reject);
    s.on("end", () => resolve());
    s.write({
      item: { $case: "lease", value: { generationId: "no-such-generation", epoch: 1n, expiresAtMs: 0n } },
    });
  });
}

const secretHash = (secret: string) => `sha256:${createHash("sha256").update(secret).digest("hex")}`;

beforeAll(async () => {
  stack = await startStack(infra());
  authAdmin = new AdminServiceClient(`127.0.0.1:${stack.auth.running.port}`, credentials.createInsecure());
  genAdmin = new AdminServiceClient(`127.0.0.1:${stack.gen.port}`, credentials.createInsecure());
  const op = await user("operator", OPERATOR.email, OPERATOR.password);
  who.operator = op;
  who.anonymous = {
    name: "anonymous",
    token: undefined,
    fresh: async () => undefined,
    userId: "",
    password: "",
  };
  const orgA = await createOrg(op.token!, "authz-a");
  const orgB = await createOrg(op.token!, "authz-b");
  a.orgId = orgA.orgId;
  who.ownerA = await user("ownerA", orgA.email, orgA.password);
  who.ownerB = await user("ownerB", orgB.email, orgB.password);
  const ownerA = who.ownerA.token!;
  await addUser(ownerA, "admin@authz-a.test", "admin password long enough", [Role.ROLE_ADMIN]);
  await addUser(ownerA, "member@authz-a.test", "member password long enough", [Role.ROLE_MEMBER]);
  a.victim.userId = await addUser(ownerA, a.victim.email, a.victim.password, [Role.ROLE_MEMBER]);
  who.adminA = await user("adminA", "admin@authz-a.test", "admin password long enough");
  who.memberA = await user("memberA", "member@authz-a.test", "member password long enough");
  who.produceA = await serviceAccount(ownerA, "produceA", ["gen:produce"]);
  who.introspectA = await serviceAccount(ownerA, "introspectA", ["auth:introspect"]);
  who.followA = await serviceAccount(ownerA, "followA", ["gen:follow"]);
  who.platformSa = await serviceAccount(op.token!, "platformSa", ["spool:admin"]);
  a.ownerId = who.ownerA.userId;
  a.memberId = who.memberA.userId;
  for (const w of [who.ownerA, who.adminA, who.memberA]) a.userIds.add(w.userId);
  a.userIds.add(a.victim.userId);
  a.genOfMember = await startGen(who.memberA.token!, "member-gen");
  a.genOfOwner = await startGen(ownerA, "owner-gen");
  // Both finish quickly (built-in model, no pacing): follows of them end.
  await eventually(
    async () => (await follow(a.genOfMember, ownerA)) > 2 && (await follow(a.genOfOwner, ownerA)) > 2,
  );
});

afterAll(async () => {
  authAdmin?.close();
  genAdmin?.close();
  await stack?.stop();
});

/**
 * One cell per principal, in PRINCIPALS order:
 *   Y  answers (row.check, if any, must hold)     E  answers, with nothing of organisation A in it
 *   I  INVALID_ARGUMENT (authorized, bad input)    n  NOT_FOUND: authorized, the object does not exist
 *   D  PERMISSION_DENIED                           N  NOT_FOUND: another organisation's (or member's) object
 *   U  UNAUTHENTICATED
 */
interface Row {
  rpc: string;
  cells: string;
  run(w: Who): Promise<unknown>;
  check?(res: unknown, w: Who): void;
  /** For E cells: true when the answer holds nothing of organisation A. */
  empty?(res: unknown): boolean;
}

const CODE: Record<string, number | undefined> = {
  Y: undefined,
  E: undefined,
  I: status.INVALID_ARGUMENT,
  n: status.NOT_FOUND,
  N: status.NOT_FOUND,
  D: status.PERMISSION_DENIED,
  U: status.UNAUTHENTICATED,
};

const listAudit = { type: "", userId: "", sinceMs: 0n, untilMs: 0n, pageSize: 500, pageToken: "" };
const listGens = {
  status: 0,
  conversationId: "",
  createdAfterMs: 0n,
  createdBeforeMs: 0n,
  pageSize: 500,
  pageToken: "",
};

const A = () => authRpc();
const G = () => gen();

/** A new user of A with this role, for rows whose yes-cells change the user. */
const targetUser = (role: Role) =>
  addUser(who.ownerA.token!, `${unique("t")}@authz-a.test`, "target password long enough", [role]);
/** A new service account of A, for rows whose yes-cells change it. */
const targetSa = async () =>
  (
    await authCall(
      A().createServiceAccount,
      A(),
      { name: "target", scopes: ["gen:produce"] },
      who.ownerA.token!,
    )
  ).serviceAccount!.serviceAccountId;

// biome-ignore format: the cells line up with PRINCIPALS
const rows: Row[] = [
  //                                                    anon op  oA  aA  mA  oB  pA  iA  fA  pSa
  { rpc: "AuthService.GetJwks (public)",             cells: "Y   Y   Y   Y   Y   Y   Y   Y   Y   Y",
    run: (w) => call(A().getJwks, A(), {}, w.token) },
  { rpc: "AuthService.CreateOrganization",           cells: "U   Y   D   D   D   D   D   D   D   D",
    run: (w) => { const slug = unique("neworg"); return call(A().createOrganization, A(), { name: slug, slug, ownerEmail: `o@${slug}.test`, ownerDisplayName: "O", ownerPassword: "owner password long enough" }, w.token); } },
  { rpc: "AuthService.SetSignupPolicy",              cells: "U   Y   D   D   D   D   D   D   D   D",
    run: (w) => call(A().setSignupPolicy, A(), { open: false }, w.token) },
  { rpc: "AuthService.CreateUser (member, own org)", cells: "U   Y   Y   Y   D   Y   D   D   D   D",
    run: (w) => call(A().createUser, A(), { email: `${unique("u")}@x.test`, displayName: "U", password: "new user password long", roles: [Role.ROLE_MEMBER] }, w.token) },
  { rpc: "AuthService.CreateUser (owner role)",      cells: "U   Y   Y   D   D   Y   D   D   D   D",
    run: (w) => call(A().createUser, A(), { email: `${unique("o")}@x.test`, displayName: "U", password: "new user password long", roles: [Role.ROLE_OWNER] }, w.token) },
  { rpc: "AuthService.SetUserRoles (member of A)",   cells: "U   N   Y   Y   D   N   D   D   D   D",
    run: (w) => call(A().setUserRoles, A(), { userId: a.victim.userId, roles: [Role.ROLE_MEMBER] }, w.token) },
  { rpc: "AuthService.SetUserRoles (A member → owner)", cells: "U   N   Y   D   D   N   D   D   D   D",
    run: async (w) => { const id = await addUser(who.ownerA.token!, `${unique("p")}@authz-a.test`, "promoted password long", [Role.ROLE_MEMBER]); return call(A().setUserRoles, A(), { userId: id, roles: [Role.ROLE_OWNER] }, w.token); } },
  { rpc: "AuthService.SetUserRoles (A owner → member)", cells: "U   N   Y   D   D   N   D   D   D   D",
    run: async (w) => { const id = await addUser(who.ownerA.token!, `${unique("d")}@authz-a.test`, "demoted password long", [Role.ROLE_OWNER]); return call(A().setUserRoles, A(), { userId: id, roles: [Role.ROLE_MEMBER] }, w.token); } },
  { rpc: "AuthService.GetUser (member of A)",        cells: "U   N   Y   Y   Y   N   D   D   D   D",
    run: (w) => call(A().getUser, A(), { userId: a.memberId }, w.token),
    check: (res) => expect((res as { user: { userId: string } }).user.userId).toBe(a.memberId) },
  { rpc: "AuthService.GetUser (owner of A)",         cells: "U   N   Y   Y   N   N   D   D   D   D",
    run: (w) => call(A().getUser, A(), { userId: a.ownerId }, w.token) },
  { rpc: "AuthService.Logout",                       cells: "U   Y   Y   Y   Y   Y   D   D   D   D",
    run: async (w) => call(A().logout, A(), {}, await w.fresh()) },
  { rpc: "AuthService.RevokeSession (session of A)", cells: "U   N   Y   Y   D   N   D   D   D   D",
    run: async (w) => { const s = (await login(a.victim.email, a.victim.password)).tokens!.sessionId; return call(A().revokeSession, A(), { sessionId: s }, w.token); } },
  { rpc: "AuthService.RevokeUserSessions (user of A)", cells: "U   N   Y   Y   D   N   D   D   D   D",
    run: (w) => call(A().revokeUserSessions, A(), { userId: a.victim.userId }, w.token) },
  // Withdrawing credentials: owner or admin of the same organisation; only an owner acts on an owner.
  //                                                    anon op  oA  aA  mA  oB  pA  iA  fA  pSa
  { rpc: "AuthService.DisableUser (member of A)",    cells: "U   N   Y   Y   D   N   D   D   D   D",
    run: async (w) => call(A().disableUser, A(), { userId: await targetUser(Role.ROLE_MEMBER) }, w.token) },
  { rpc: "AuthService.DisableUser (owner of A)",     cells: "U   N   Y   D   D   N   D   D   D   D",
    run: async (w) => call(A().disableUser, A(), { userId: await targetUser(Role.ROLE_OWNER) }, w.token) },
  { rpc: "AuthService.EnableUser (member of A)",     cells: "U   N   Y   Y   D   N   D   D   D   D",
    run: async (w) => call(A().enableUser, A(), { userId: await targetUser(Role.ROLE_MEMBER) }, w.token) },
  { rpc: "AuthService.EnableUser (owner of A)",      cells: "U   N   Y   D   D   N   D   D   D   D",
    run: async (w) => call(A().enableUser, A(), { userId: await targetUser(Role.ROLE_OWNER) }, w.token) },
  { rpc: "AuthService.DeleteUser (member of A)",     cells: "U   N   Y   Y   D   N   D   D   D   D",
    run: async (w) => call(A().deleteUser, A(), { userId: await targetUser(Role.ROLE_MEMBER) }, w.token) },
  { rpc: "AuthService.DeleteUser (owner of A)",      cells: "U   N   Y   D   D   N   D   D   D   D",
    run: async (w) => call(A().deleteUser, A(), { userId: await targetUser(Role.ROLE_OWNER) }, w.token) },
  { rpc: "AuthService.ResetUserPassword (member of A)", cells: "U   N   Y   Y   D   N   D   D   D   D",
    run: async (w) => call(A().resetUserPassword, A(), { userId: await targetUser(Role.ROLE_MEMBER), newPassword: "a reset password, long" }, w.token) },
  { rpc: "AuthService.ResetUserPassword (owner of A)", cells: "U   N   Y   D   D   N   D   D   D   D",
    run: async (w) => call(A().resetUserPassword, A(), { userId: await targetUser(Role.ROLE_OWNER), newPassword: "a reset password, long" }, w.token) },
  { rpc: "AuthService.RotateServiceAccountSecret (of A)", cells: "U   N   Y   Y   D   N   D   D   D   D",
    run: async (w) => call(A().rotateServiceAccountSecret, A(), { serviceAccountId: await targetSa(), overlapSeconds: 0n }, w.token) },
  { rpc: "AuthService.DisableServiceAccount (of A)", cells: "U   N   Y   Y   D   N   D   D   D   D",
    run: async (w) => call(A().disableServiceAccount, A(), { serviceAccountId: await targetSa() }, w.token) },
  { rpc: "AuthService.EnableServiceAccount (of A)",  cells: "U   N   Y   Y   D   N   D   D   D   D",
    run: async (w) => call(A().enableServiceAccount, A(), { serviceAccountId: await targetSa() }, w.token) },
  { rpc: "AuthService.DeleteServiceAccount (of A)",  cells: "U   N   Y   Y   D   N   D   D   D   D",
    run: async (w) => call(A().deleteServiceAccount, A(), { serviceAccountId: await targetSa() }, w.token) },
  { rpc: "AuthService.CreateServiceAccount (gen:produce)", cells: "U   Y   Y   Y   D   Y   D   D   D   D",
    run: (w) => call(A().createServiceAccount, A(), { name: "p", scopes: ["gen:produce"] }, w.token) },
  { rpc: "AuthService.CreateServiceAccount (every organisation scope)", cells: "U   Y   Y   Y   D   Y   D   D   D   D",
    run: (w) => call(A().createServiceAccount, A(), { name: "all", scopes: ["gen:produce", "gen:follow", "auth:introspect"] }, w.token) },
  { rpc: "AuthService.CreateServiceAccount (spool:admin)", cells: "U   Y   D   D   D   D   D   D   D   D",
    run: (w) => call(A().createServiceAccount, A(), { name: "adm", scopes: ["spool:admin"] }, w.token) },
  { rpc: "AuthService.CreateServiceAccount (gen:produce + spool:admin)", cells: "U   Y   D   D   D   D   D   D   D   D",
    run: (w) => call(A().createServiceAccount, A(), { name: "mix", scopes: ["gen:produce", "spool:admin"] }, w.token) },
  { rpc: "AuthService.CreateServiceAccount (auth:operator)", cells: "U   D   D   D   D   D   D   D   D   D",
    run: (w) => call(A().createServiceAccount, A(), { name: "op", scopes: ["auth:operator"] }, w.token) },
  { rpc: "AuthService.CreateServiceAccount (unknown scope)", cells: "U   I   I   I   D   I   D   D   D   D",
    run: (w) => call(A().createServiceAccount, A(), { name: "typo", scopes: ["gen:produces"] }, w.token) },
  { rpc: "AuthService.IntrospectToken (token of A)", cells: "U   E   Y   Y   D   E   D   Y   D   D",
    run: (w) => call(A().introspectToken, A(), { token: who.memberA.token! }, w.token),
    check: (res) => expect(res).toMatchObject({ active: true, sub: a.memberId, org: a.orgId }),
    empty: (res) => (res as { active: boolean; sub: string }).active === false && (res as { sub: string }).sub === "" },
  { rpc: "AuthService.WhoAmI (about the caller only)", cells: "U   Y   Y   Y   Y   Y   Y   Y   Y   Y",
    run: (w) => call(A().whoAmI, A(), {}, w.token),
    check: (res, w) => expect(res).toMatchObject({ subjectId: w.userId, identity: { value: w.password ? { userId: w.userId } : { serviceAccountId: w.userId } } }) },
  { rpc: "AuthService.ListAuditEvents",              cells: "U   E   Y   Y   D   E   D   D   D   D",
    run: (w) => call(A().listAuditEvents, A(), listAudit, w.token),
    check: (res) => expect((res as { events: unknown[] }).events.length).toBeGreaterThan(0),
    empty: (res) => (res as { events: { userId: string; actor: string }[] }).events.every((e) => !a.userIds.has(e.userId) && !a.userIds.has(e.actor)) },
  { rpc: "AuthService.CreateOAuthState",             cells: "U   Y   Y   Y   Y   Y   D   D   D   D",
    run: (w) => call(A().createOAuthState, A(), { purpose: "link" }, w.token) },
  { rpc: "AuthService.ConsumeOAuthState (own state)", cells: "U   Y   Y   Y   Y   Y   D   D   D   D",
    run: async (w) => { const s = await call(A().createOAuthState, A(), { purpose: "link" }, w.password ? w.token : who.ownerA.token); return call(A().consumeOAuthState, A(), { state: s.state, purpose: "link" }, w.token); } },

  //                                                    anon op  oA  aA  mA  oB  pA  iA  fA  pSa
  { rpc: "GenerationService.StartGeneration",        cells: "U   Y   Y   Y   Y   Y   D   D   D   D",
    run: (w) => startGen(w.token as string, unique("start")) },
  { rpc: "GenerationService.GetGeneration (member's, of A)", cells: "U   N   Y   Y   Y   N   N   N   Y   N",
    run: (w) => call(G().getGeneration, G(), { generationId: a.genOfMember }, w.token),
    check: (res) => expect((res as { generation: { generationId: string } }).generation.generationId).toBe(a.genOfMember) },
  { rpc: "GenerationService.GetGeneration (owner's, of A)", cells: "U   N   Y   Y   N   N   N   N   Y   N",
    run: (w) => call(G().getGeneration, G(), { generationId: a.genOfOwner }, w.token) },
  { rpc: "GenerationService.FollowGeneration (member's, of A)", cells: "U   N   Y   Y   Y   N   N   N   Y   N",
    run: (w) => follow(a.genOfMember, w.token),
    check: (res) => expect(res).toBeGreaterThan(2) },
  { rpc: "GenerationService.FollowGeneration (owner's, of A)", cells: "U   N   Y   Y   N   N   N   N   Y   N",
    run: (w) => follow(a.genOfOwner, w.token) },
  { rpc: "GenerationService.ListGenerations",        cells: "U   E   Y   Y   Y   E   D   D   D   D",
    run: (w) => call(G().listGenerations, G(), listGens, w.token),
    check: (res, w) => {
      const ids = (res as { generations: { generationId: string }[] }).generations.map((g) => g.generationId);
      // Every role lists only its own generations (the proto's "the caller's generations").
      expect(ids.includes(a.genOfMember)).toBe(w.name === "memberA");
      expect(ids.includes(a.genOfOwner)).toBe(w.name === "ownerA");
    },
    empty: (res) => (res as { generations: { generationId: string }[] }).generations.every((g) => g.generationId !== a.genOfMember && g.generationId !== a.genOfOwner) },
  { rpc: "GenerationService.CancelGeneration (member's, of A)", cells: "U   N   Y   Y   Y   N   D   D   D   D",
    run: (w) => call(G().cancelGeneration, G(), { generationId: a.genOfMember }, w.token) },
  { rpc: "GenerationService.CancelGeneration (owner's, of A)", cells: "U   N   Y   Y   N   N   D   D   D   D",
    run: (w) => call(G().cancelGeneration, G(), { generationId: a.genOfOwner }, w.token) },
  { rpc: "GenerationService.ClaimGeneration (oldest queued)", cells: "U   D   D   D   D   D   Y   D   D   D",
    run: (w) => call(G().claimGeneration, G(), { generationId: "", waitMs: 0 }, w.token),
    check: (res) => expect((res as { lease?: unknown }).lease).toBeUndefined() },
  { rpc: "GenerationService.ProduceGeneration (unknown lease)", cells: "U   D   D   D   D   D   n   D   D   D",
    run: (w) => produceUnknownLease(w.token) },

  // AdminService, on both services: platform-wide, so no organisation role reaches it.
  ...(["auth", "generation-stream"] as const).flatMap((service): Row[] => {
    const c = () => (service === "auth" ? authAdmin : genAdmin);
    const projection = service === "auth" ? "auth_audit" : "generations";
    // biome-ignore format: aligned cells
    return [
      //                                                anon op  oA  aA  mA  oB  pA  iA  fA  pSa
      { rpc: `AdminService.ListProjections on ${service}`, cells: "U   Y   D   D   D   D   D   D   D   Y",
        run: (w) => call(c().listProjections, c(), {}, w.token),
        check: (res) => expect((res as { projections: unknown[] }).projections.length).toBeGreaterThan(0) },
      { rpc: `AdminService.GetProjection on ${service}`, cells: "U   Y   D   D   D   D   D   D   D   Y",
        run: (w) => call(c().getProjection, c(), { name: projection }, w.token) },
      { rpc: `AdminService.RebuildProjection (unknown) on ${service}`, cells: "U   n   D   D   D   D   D   D   D   n",
        run: (w) => call(c().rebuildProjection, c(), { name: "no_such_projection" }, w.token) },
      { rpc: `AdminService.ListDeadLetters on ${service}`, cells: "U   Y   D   D   D   D   D   D   D   Y",
        run: (w) => call(c().listDeadLetters, c(), { consumer: "", includeReplayed: true, pageSize: 10, pageToken: "" }, w.token) },
      { rpc: `AdminService.ReplayDeadLetter (unknown) on ${service}`, cells: "U   n   D   D   D   D   D   D   D   n",
        run: (w) => call(c().replayDeadLetter, c(), { id: "1" }, w.token) },
    ];
  }),

  // Last: it changes passwords, and a rotation changes the key new tokens are signed with.
  //                                                    anon op  oA  aA  mA  oB  pA  iA  fA  pSa
  { rpc: "AuthService.ChangePassword (own)",         cells: "U   Y   Y   Y   Y   Y   D   D   D   D",
    run: async (w) => { const next = `${w.password} changed`; const r = await call(A().changePassword, A(), { currentPassword: w.password || "not a user password", newPassword: next }, w.token); w.password = next; return r; } },
  { rpc: "AuthService.RotateSigningKey",             cells: "U   Y   D   D   D   D   D   D   D   D",
    run: (w) => call(A().rotateSigningKey, A(), {}, w.token) },
];

describe("authorization table (docs/SECURITY.md, Authorization model)", () => {
  for (const row of rows) {
    it(row.rpc, async () => {
      const cells = row.cells.trim().split(/\s+/);
      expect(cells, "one cell per principal").toHaveLength(PRINCIPALS.length);
      const wrong: string[] = [];
      for (const [i, name] of PRINCIPALS.entries()) {
        const cell = cells[i]!;
        const w = who[name];
        let res: unknown;
        let code: number | undefined;
        try {
          res = await row.run(w);
        } catch (e) {
          code = (e as ServiceError).code;
          if (code === undefined) throw e;
        }
        if (code !== CODE[cell]) {
          wrong.push(`${name}: expected ${cell}, got ${code === undefined ? "an answer" : status[code]}`);
          continue;
        }
        if (cell === "Y") row.check?.(res, w);
        if (cell === "E" && !row.empty?.(res)) wrong.push(`${name}: answered with data of organisation A`);
      }
      expect(wrong).toEqual([]);
    });
  }
});

describe("platform scopes cannot be minted by an organisation", () => {
  it("an admin of the platform organisation who is no operator cannot take over the platform admin account", async () => {
    const c = authRpc();
    const email = `${unique("rootadmin")}@spool.test`;
    await addUser(who.operator.token!, email, "root admin password long", [Role.ROLE_ADMIN]);
    const rootAdmin = (await login(email, "root admin password long")).tokens!.accessToken;
    // Its organisation's account, but one holding a scope it could not grant: rotating would hand it the secret.
    const rotated = await call(
      c.rotateServiceAccountSecret,
      c,
      { serviceAccountId: who.platformSa.userId, overlapSeconds: 0n },
      rootAdmin,
    ).catch((e: ServiceError) => e.code);
    expect(rotated).toBe(status.PERMISSION_DENIED);
    const enabled = await call(
      c.enableServiceAccount,
      c,
      { serviceAccountId: who.platformSa.userId },
      rootAdmin,
    ).catch((e: ServiceError) => e.code);
    expect(enabled).toBe(status.PERMISSION_DENIED);
    expect(
      await call(c.createServiceAccount, c, { name: "x", scopes: ["spool:admin"] }, rootAdmin).catch(
        (e: ServiceError) => e.code,
      ),
    ).toBe(status.PERMISSION_DENIED);
    // The account still works with its own secret.
    expect(
      (await call(authAdmin.listProjections, authAdmin, {}, await who.platformSa.fresh())).projections.length,
    ).toBeGreaterThan(0);
  });

  it("an owner's service account can never hold spool:admin; one created before the fix loses it at exchange", async () => {
    const c = authRpc();
    // What an owner could do before the fix: an account of its organisation holding spool:admin.
    const id = randomUUID();
    const secret = `sas_${randomBytes(32).toString("base64url")}`;
    const nc = await connectNats({ url: infra().natsUrl, name: "authz-legacy" });
    try {
      const store = new EventStore(nc, { namespace: new Namespace(infra().streamPrefix) });
      await store.append(
        Subjects.serviceAccount(id),
        [
          ServiceAccountCreated.create({
            serviceAccountId: id,
            orgId: a.orgId,
            name: "legacy-admin",
            scopes: ["gen:produce", "spool:admin", "auth:operator"],
            secretHash: secretHash(secret),
            createdBy: who.ownerA.userId,
          }),
        ],
        { expectedSequence: 0 },
      );
    } finally {
      await nc.close();
    }
    // Asking for the platform scopes explicitly is refused; by default they are left out.
    const explicit = await call(c.exchangeClientCredentials, c, {
      clientId: id,
      clientSecret: secret,
      scopes: ["spool:admin"],
    }).catch((e: ServiceError) => e.code);
    expect(explicit).toBe(status.PERMISSION_DENIED);
    const t = await call(c.exchangeClientCredentials, c, { clientId: id, clientSecret: secret, scopes: [] });
    expect(t.scopes).toEqual(["gen:produce"]);
    for (const admin of [authAdmin, genAdmin]) {
      const code = await call(
        admin.listDeadLetters,
        admin,
        { consumer: "", includeReplayed: true, pageSize: 10, pageToken: "" },
        t.accessToken,
      ).catch((e: ServiceError) => e.code);
      expect(code).toBe(status.PERMISSION_DENIED);
    }
    // The operator's admin account keeps its scope.
    const platform = await call(authAdmin.listProjections, authAdmin, {}, await who.platformSa.fresh());
    expect(platform.projections.length).toBeGreaterThan(0);
  });
});
