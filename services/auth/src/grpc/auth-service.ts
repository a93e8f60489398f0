import {
  AlreadyExistsError,
  type AsyncService,
  type CallContext,
  FailedPreconditionError,
  InvalidArgumentError,
  isKnownScope,
  NotFoundError,
  PermissionDeniedError,
  type Principal,
  principalOf,
  type RequestRules,
  type Rule,
  rule,
  type ServicePolicies,
  type TokenVerifier,
  UnauthenticatedError,
} from "@spool/kit";
import {
  type AuditEvent,
  type AuthServiceService,
  type CreateOrganizationRequest,
  type CreateUserRequest,
  PrincipalKind,
  Role,
  type ServiceAccount as ServiceAccountMessage,
  type SignUpRequest,
  type User as UserMessage,
} from "@spool/proto/spool/auth/v1/auth.js";
import type { Accounts, KnownUser } from "../app/accounts.js";
import type { KeyManager } from "../app/keys.js";
import { OAUTH_PURPOSE, type OAuthStates } from "../app/oauth-state.js";
import { hashPassword } from "../app/passwords.js";
import type { KnownAccount, ServiceAccounts } from "../app/service-accounts.js";
import type { ClientInfo, IssuedTokens, Sessions } from "../app/sessions.js";
import { emailProblem, slugProblem } from "../domain/organization.js";
import { passwordProblem } from "../domain/password-policy.js";
import { INTROSPECT_SCOPE, OPERATOR_SCOPE, type RoleName } from "../domain/roles.js";
import { overlapProblem, scopeProblem, serviceAccountIdProblem } from "../domain/service-account.js";
import { userIdProblem } from "../domain/user.js";
import type { AuditReadModel } from "../projections/audit.js";

type Definition = typeof AuthServiceService;

const ADMINS = { kind: "user", roles: ["owner", "admin"] } as const;
const OPERATOR = { kind: "user", scopes: [OPERATOR_SCOPE] } as const;
const ANY_USER = { kind: "user" } as const;

/** Who may call what; `guarded()` enforces it before any method body runs. */
export const authPolicies: ServicePolicies<Definition> = {
  createOrganization: OPERATOR,
  createUser: ADMINS,
  signUp: { public: true },
  setSignupPolicy: OPERATOR,
  setUserRoles: ADMINS,
  changePassword: ANY_USER,
  getUser: { kind: "user" },
  login: { public: true },
  refreshToken: { public: true },
  logout: ANY_USER,
  revokeSession: ADMINS,
  revokeUserSessions: ADMINS,
  createServiceAccount: ADMINS,
  exchangeClientCredentials: { public: true },
  introspectToken: { roles: ["owner", "admin"], scopes: [INTROSPECT_SCOPE] },
  // Every verified caller, user or service: it answers about the caller only.
  whoAmI: { kind: "any" },
  getJwks: { public: true },
  rotateSigningKey: OPERATOR,
  listAuditEvents: ADMINS,
  createOAuthState: ANY_USER,
  consumeOAuthState: ANY_USER,
  // Withdrawing credentials: organisation owners and admins (the org and owner-on-owner rules are in app/).
  disableUser: ADMINS,
  enableUser: ADMINS,
  deleteUser: ADMINS,
  resetUserPassword: ADMINS,
  rotateServiceAccountSecret: ADMINS,
  disableServiceAccount: ADMINS,
  enableServiceAccount: ADMINS,
  deleteServiceAccount: ADMINS,
};

const ROLE_NAMES: Record<number, RoleName> = {
  [Role.ROLE_OWNER]: "owner",
  [Role.ROLE_ADMIN]: "admin",
  [Role.ROLE_MEMBER]: "member",
};
const ROLE_VALUES: Record<RoleName, Role> = {
  owner: Role.ROLE_OWNER,
  admin: Role.ROLE_ADMIN,
  member: Role.ROLE_MEMBER,
};

/** The known roles among `roles` (authRules refuses unknown ones), once each. */
function roleNames(roles: Role[]): RoleName[] {
  return [...new Set(roles.flatMap((r) => ROLE_NAMES[r] ?? []))];
}

// --- request rules ------------------------------------------------------------------

const unknownRoles: Rule<Role[]> = (roles, field, v) => {
  for (const r of roles) v.check(field, ROLE_NAMES[r] ? undefined : `unknown role ${r}`);
};
const atLeastOneRole = rule.check((roles: Role[]) =>
  roleNames(roles).length === 0 ? "at least one role is required" : undefined,
);
const email = rule.check((value: string) => emailProblem(value.trim()));
const userId = rule.check(userIdProblem);
const serviceAccountId = rule.check(serviceAccountIdProblem);
const newPassword = rule.check((value: string) => passwordProblem(value));

/** A new user's password, which must not be guessable from the user's own email and name. */
function userPassword<T>(
  field: string,
  of: (r: T) => [password: string, email: string, name: string],
): Rule<T> {
  return (request, _field, v) => {
    const [password, userEmail, displayName] = of(request);
    v.check(field, passwordProblem(password, { userInputs: [userEmail, displayName] }));
  };
}

const scopes: Rule<string[]> = (list, field, v) => {
  const unique = [...new Set(list)];
  if (unique.length === 0) v.check(field, "at least one scope is required");
  if (unique.length > 50) v.check(field, "at most 50 scopes");
  for (const s of unique)
    v.check(field, scopeProblem(s) ?? (isKnownScope(s) ? undefined : `unknown scope ${JSON.stringify(s)}`));
};

/** What each request must be, checked by `guarded()` after the policy; state-dependent rules are in app/. */
export const authRules: RequestRules<Definition> = {
  createOrganization: rule.fields<CreateOrganizationRequest>(
    {
      name: rule.required(200),
      slug: rule.check(slugProblem),
      ownerEmail: email,
      ownerDisplayName: rule.required(200),
    },
    userPassword("owner_password", (r) => [r.ownerPassword, r.ownerEmail, r.ownerDisplayName]),
  ),
  createUser: rule.fields<CreateUserRequest>(
    { roles: unknownRoles, email, displayName: rule.required(200) },
    userPassword("password", (r) => [r.password, r.email, r.displayName]),
    (r, _field, v) => atLeastOneRole(r.roles, "roles", v),
  ),
  signUp: rule.fields<SignUpRequest>(
    {
      organizationName: rule.required(200),
      organizationSlug: rule.check(slugProblem),
      email,
      displayName: rule.required(200),
    },
    userPassword("password", (r) => [r.password, r.email, r.displayName]),
  ),
  setSignupPolicy: {},
  setUserRoles: { userId: rule.required(64), roles: rule.all(unknownRoles, atLeastOneRole) },
  changePassword: { currentPassword: rule.required(1_024), newPassword },
  getUser: {},
  login: { email: rule.required(254), password: rule.required(1_024) },
  refreshToken: { refreshToken: rule.required(8_192) },
  logout: {},
  revokeSession: { sessionId: rule.required(64) },
  revokeUserSessions: { userId: rule.required(64) },
  createServiceAccount: { name: rule.required(200), scopes },
  exchangeClientCredentials: {},
  introspectToken: {},
  whoAmI: {},
  getJwks: {},
  rotateSigningKey: {},
  listAuditEvents: {
    pageSize: rule.check((n: number) => (n < 0 || n > 500 ? "must be 0-500 (0 means 50)" : undefined)),
    // Out of range would fail in PostgreSQL (INTERNAL) or lose precision in a number.
    sinceMs: rule.timestampMs,
    untilMs: rule.timestampMs,
  },
  createOAuthState: { purpose: rule.matches(OAUTH_PURPOSE, "must be 1-64 of a-z, 0-9, '-', '_'") },
  consumeOAuthState: {},
  disableUser: { userId },
  enableUser: { userId },
  deleteUser: { userId },
  resetUserPassword: { userId, newPassword },
  rotateServiceAccountSecret: {
    serviceAccountId,
    overlapSeconds: rule.check((seconds: bigint) => overlapProblem(Number(seconds))),
  },
  disableServiceAccount: { serviceAccountId },
  enableServiceAccount: { serviceAccountId },
  deleteServiceAccount: { serviceAccountId },
};

function userMessage(u: KnownUser): UserMessage {
  return {
    userId: u.userId,
    orgId: u.orgId,
    email: u.email,
    displayName: u.displayName,
    roles: u.roles.flatMap((r) => (r in ROLE_VALUES ? [ROLE_VALUES[r as RoleName]] : [])),
    createdAtMs: BigInt(u.createdAtMs),
    disabled: u.kind !== "active",
  };
}

function serviceAccountMessage(a: KnownAccount): ServiceAccountMessage {
  return {
    serviceAccountId: a.serviceAccountId,
    orgId: a.orgId,
    name: a.name,
    scopes: a.scopes,
    disabled: a.kind !== "active",
  };
}

function tokenPair(t: IssuedTokens) {
  return {
    accessToken: t.accessToken,
    accessTokenExpiresIn: BigInt(t.accessTokenExpiresIn),
    refreshToken: t.refreshToken,
    refreshTokenExpiresIn: BigInt(t.refreshTokenExpiresIn),
    sessionId: t.sessionId,
  };
}

/** Client address (from the connection, not from headers a client could forge) and user agent. */
function clientInfo(ctx: CallContext): ClientInfo {
  const peer = ctx.peer
    .replace(/^ipv[46]:/, "")
    .replace(/^\[(.*)\](:\d+)?$/, "$1")
    .replace(/:\d+$/, "");
  const ua = ctx.metadata.get("user-agent")[0];
  return { ip: peer.slice(0, 64), userAgent: typeof ua === "string" ? ua.slice(0, 256) : "" };
}

interface PageToken {
  seq: number;
  idx: number;
}

function decodePageToken(token: string): PageToken | undefined {
  if (!token) return undefined;
  try {
    const v = JSON.parse(Buffer.from(token, "base64url").toString("utf8")) as unknown;
    if (Array.isArray(v) && v.length === 2 && v.every((n) => Number.isSafeInteger(n) && n >= 0)) {
      return { seq: v[0] as number, idx: v[1] as number };
    }
  } catch {
    // fall through
  }
  throw new InvalidArgumentError("invalid page token", [
    { field: "page_token", description: "is not a token from this API" },
  ]);
}

export interface AuthServiceDeps {
  accounts: Accounts;
  sessions: Sessions;
  serviceAccounts: ServiceAccounts;
  keys: KeyManager;
  oauth: OAuthStates;
  audit: AuditReadModel;
  /** Verifier for introspection: accepts tokens for any Spool audience it was configured with. */
  introspector: TokenVerifier;
  /** Waits until the projections have applied everything on the stream now (read-your-writes). */
  catchUp: () => Promise<void>;
}

export function authService(d: AuthServiceDeps): AsyncService<Definition> {
  const caller = (ctx: CallContext): Principal => principalOf(ctx);
  return {
    async createOrganization(req, ctx) {
      const { orgId, owner } = await d.accounts.createOrganizationWithOwner(
        { name: req.name, slug: req.slug },
        { email: req.ownerEmail, displayName: req.ownerDisplayName, password: req.ownerPassword },
        { createdVia: "admin", actor: caller(ctx).subject },
      );
      return { organization: { orgId, name: req.name.trim(), slug: req.slug }, owner: userMessage(owner) };
    },

    async createUser(req, ctx) {
      const p = caller(ctx);
      const roles = roleNames(req.roles);
      if (roles.includes("owner") && !p.roles.includes("owner")) {
        throw new PermissionDeniedError("only an owner grants the owner role");
      }
      const { user, created } = await d.accounts.createUser(
        p.orgId,
        { email: req.email, displayName: req.displayName, password: req.password, roles },
        { createdVia: "admin", actor: p.subject },
      );
      if (!created) throw new AlreadyExistsError("a user with this email already exists");
      return { user: userMessage(user) };
    },

    async signUp(req) {
      if (!(await d.accounts.signupOpen())) throw new FailedPreconditionError("signup is closed");
      const { orgId, owner } = await d.accounts.createOrganizationWithOwner(
        { name: req.organizationName, slug: req.organizationSlug },
        { email: req.email, displayName: req.displayName, password: req.password },
        { createdVia: "signup" },
      );
      return {
        organization: { orgId, name: req.organizationName.trim(), slug: req.organizationSlug },
        user: userMessage(owner),
      };
    },

    async setSignupPolicy(req, ctx) {
      await d.accounts.setSignupPolicy(req.open, caller(ctx).subject);
      return { open: req.open };
    },

    async setUserRoles(req, ctx) {
      const roles = roleNames(req.roles);
      return { user: userMessage(await d.accounts.setRoles(caller(ctx), req.userId, roles)) };
    },

    async changePassword(req, ctx) {
      await d.catchUp();
      const revoked = await d.sessions.changePassword(
        caller(ctx),
        req.currentPassword,
        req.newPassword,
        clientInfo(ctx),
      );
      return { revokedSessions: revoked };
    },

    async getUser(req, ctx) {
      const p = caller(ctx);
      // Members see themselves; owners and admins see their organisation.
      if (req.userId !== p.subject && !p.roles.some((r) => r === "owner" || r === "admin")) {
        throw new NotFoundError("user not found");
      }
      return { user: userMessage(await d.accounts.userInOrg(p, req.userId)) };
    },

    async login(req, ctx) {
      const { tokens, user } = await d.sessions.login(req.email, req.password, clientInfo(ctx));
      return { tokens: tokenPair(tokens), user: userMessage(user) };
    },

    async refreshToken(req, ctx) {
      return { tokens: tokenPair(await d.sessions.refresh(req.refreshToken, clientInfo(ctx))) };
    },

    async logout(_req, ctx) {
      await d.sessions.logout(caller(ctx));
      return {};
    },

    async revokeSession(req, ctx) {
      await d.sessions.revokeInOrg(caller(ctx), req.sessionId);
      return {};
    },

    async revokeUserSessions(req, ctx) {
      const p = caller(ctx);
      await d.accounts.userInOrg(p, req.userId);
      await d.catchUp();
      return {
        revokedSessions: await d.sessions.revokeAllOfUser(req.userId, "user_sessions_revoked", p.subject),
      };
    },

    async createServiceAccount(req, ctx) {
      const sa = await d.serviceAccounts.create(caller(ctx), req.name, req.scopes);
      return {
        serviceAccount: {
          serviceAccountId: sa.serviceAccountId,
          orgId: sa.orgId,
          name: sa.name,
          scopes: sa.scopes,
          disabled: false,
        },
        clientSecret: sa.clientSecret,
      };
    },

    async exchangeClientCredentials(req) {
      const t = await d.serviceAccounts.exchange(req.clientId, req.clientSecret, req.scopes);
      return { accessToken: t.accessToken, expiresIn: BigInt(t.expiresIn), scopes: t.scopes };
    },

    async introspectToken(req, ctx) {
      const p = caller(ctx);
      const inactive = {
        active: false,
        sub: "",
        sid: "",
        org: "",
        roles: [],
        scope: "",
        exp: 0n,
        iat: 0n,
        iss: "",
        aud: [],
        jti: "",
        tokenType: "",
        clientId: "",
      };
      const t = await d.introspector.verify(req.token).catch(() => undefined);
      // RFC 7662: an inactive token says nothing else; another organisation's token is inactive to this caller.
      if (!t || t.orgId !== p.orgId) return inactive;
      return {
        ...inactive,
        active: true,
        sub: t.subject,
        sid: t.sessionId ?? "",
        org: t.orgId,
        roles: [...t.roles],
        scope: t.scopes.join(" "),
        exp: BigInt(Math.floor(t.expiresAtMs / 1000)),
        iat: BigInt(Math.floor(t.issuedAtMs / 1000)),
        iss: t.issuer,
        aud: [...t.audience],
        jti: t.tokenId,
        tokenType: "access_token",
        clientId: t.kind === "service" ? t.subject : "",
      };
    },

    async whoAmI(_req, ctx) {
      const p = caller(ctx);
      // The verifier refuses a withdrawn subject's tokens within 1 s of the withdrawal; the log may know
      // sooner, and then this answers as the verifier soon will, never NOT_FOUND for the caller itself.
      const withdrawn = () => new UnauthenticatedError("the token's subject is disabled or deleted");
      const claims = {
        subjectId: p.subject,
        orgId: p.orgId,
        roles: p.roles.flatMap((r) => (r in ROLE_VALUES ? [ROLE_VALUES[r as RoleName]] : [])),
        scopes: [...p.scopes],
        expiresAtMs: BigInt(p.expiresAtMs),
      };
      if (p.kind === "user") {
        const user = await d.accounts.loadUser(p.subject);
        if (!user || user.orgId !== p.orgId) throw withdrawn();
        return {
          ...claims,
          kind: PrincipalKind.PRINCIPAL_KIND_USER,
          sessionId: p.sessionId ?? "",
          identity: { $case: "user", value: userMessage(user) },
        };
      }
      const account = await d.serviceAccounts.load(p.subject);
      if (account.kind !== "active" || account.orgId !== p.orgId) throw withdrawn();
      return {
        ...claims,
        kind: PrincipalKind.PRINCIPAL_KIND_SERVICE_ACCOUNT,
        sessionId: "",
        identity: { $case: "serviceAccount", value: serviceAccountMessage(account) },
      };
    },

    async getJwks() {
      return { jwksJson: JSON.stringify(await d.keys.jwks()) };
    },

    async rotateSigningKey() {
      const r = await d.keys.rotate();
      return {
        kid: r.kid,
        previousKid: r.previousKid,
        previousRetireAfterMs: BigInt(r.previousRetireAfterMs),
      };
    },

    async listAuditEvents(req, ctx) {
      const after = decodePageToken(req.pageToken);
      const limit = req.pageSize || 50;
      const { entries, more } = await d.audit.list({
        orgId: caller(ctx).orgId,
        ...(req.userId ? { userId: req.userId } : {}),
        ...(req.type ? { type: req.type } : {}),
        ...(req.sinceMs > 0n ? { sinceMs: Number(req.sinceMs) } : {}),
        ...(req.untilMs > 0n ? { untilMs: Number(req.untilMs) } : {}),
        limit,
        ...(after ? { after } : {}),
      });
      const last = entries.at(-1);
      return {
        events: entries.map(
          (e): AuditEvent => ({
            eventId: e.eventId,
            type: e.type,
            timeMs: BigInt(e.timeMs),
            userId: e.userId,
            actor: e.actor,
            ip: e.ip,
            detailsJson: JSON.stringify(e.details),
          }),
        ),
        nextPageToken:
          more && last ? Buffer.from(JSON.stringify([last.seq, last.idx])).toString("base64url") : "",
      };
    },

    async createOAuthState(req, ctx) {
      const s = d.oauth.create(caller(ctx), req.purpose);
      return { state: s.state, expiresAtMs: BigInt(s.expiresAtMs) };
    },

    async consumeOAuthState(req, ctx) {
      await d.oauth.consume(caller(ctx), req.state, req.purpose);
      return {};
    },

    // Withdrawing credentials. A user withdrawal appends its event (the revocation feed then refuses the
    // user's tokens everywhere), and only then revokes the sessions, after the sessions projection has
    // caught up with the stream: a session started by a login racing the withdrawal is on the stream
    // before the withdrawal, so it is in the list. Repeating a call that failed half-way completes it.

    async disableUser(req, ctx) {
      const p = caller(ctx);
      const { user } = await d.accounts.disableUser(p, req.userId);
      await d.catchUp();
      const revoked = await d.sessions.revokeAllOfUser(req.userId, "user_disabled", p.subject);
      return { user: userMessage(user), revokedSessions: revoked };
    },

    async enableUser(req, ctx) {
      const p = caller(ctx);
      const target = await d.accounts.userInOrg(p, req.userId);
      if (target.kind === "disabled") {
        if (target.roles.includes("owner") && !p.roles.includes("owner")) {
          throw new PermissionDeniedError("only an owner acts on an owner");
        }
        // No session from before the disabling may come back with the user (in case the
        // disabling stopped before revoking them).
        await d.catchUp();
        await d.sessions.revokeAllOfUser(req.userId, "user_disabled", p.subject);
      }
      return { user: userMessage(await d.accounts.enableUser(p, req.userId)) };
    },

    async deleteUser(req, ctx) {
      const p = caller(ctx);
      await d.accounts.deleteUser(p, req.userId);
      await d.catchUp();
      return { revokedSessions: await d.sessions.revokeAllOfUser(req.userId, "user_deleted", p.subject) };
    },

    async resetUserPassword(req, ctx) {
      const p = caller(ctx);
      await d.accounts.userInOrg(p, req.userId); // NOT_FOUND before spending an argon2 hash
      await d.accounts.resetPassword(p, req.userId, await hashPassword(req.newPassword));
      await d.catchUp();
      return { revokedSessions: await d.sessions.revokeAllOfUser(req.userId, "password_reset", p.subject) };
    },

    async rotateServiceAccountSecret(req, ctx) {
      const overlap = Number(req.overlapSeconds);
      const r = await d.serviceAccounts.rotateSecret(caller(ctx), req.serviceAccountId, overlap);
      return {
        serviceAccount: serviceAccountMessage(r.account),
        clientSecret: r.clientSecret,
        previousSecretExpiresAtMs: BigInt(r.previousValidUntilMs),
      };
    },

    async disableServiceAccount(req, ctx) {
      const a = await d.serviceAccounts.disable(caller(ctx), req.serviceAccountId);
      return { serviceAccount: serviceAccountMessage(a) };
    },

    async enableServiceAccount(req, ctx) {
      const a = await d.serviceAccounts.enable(caller(ctx), req.serviceAccountId);
      return { serviceAccount: serviceAccountMessage(a) };
    },

    async deleteServiceAccount(req, ctx) {
      await d.serviceAccounts.delete(caller(ctx), req.serviceAccountId);
      return {};
    },
  };
}
