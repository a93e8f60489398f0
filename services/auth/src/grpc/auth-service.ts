import {
  AlreadyExistsError,
  type AsyncService,
  type CallContext,
  FailedPreconditionError,
  InvalidArgumentError,
  NotFoundError,
  PermissionDeniedError,
  type Principal,
  principalOf,
  type ServicePolicies,
  type TokenVerifier,
  timestampMsProblem,
  UnauthenticatedError,
} from "@spool/kit";
import {
  type AuditEvent,
  type AuthServiceService,
  PrincipalKind,
  Role,
  type ServiceAccount as ServiceAccountMessage,
  type User as UserMessage,
} from "@spool/proto/spool/auth/v1/auth.js";
import type { Accounts, KnownUser } from "../app/accounts.js";
import type { KeyManager } from "../app/keys.js";
import type { OAuthStates } from "../app/oauth-state.js";
import { hashPassword } from "../app/passwords.js";
import type { KnownAccount, ServiceAccounts } from "../app/service-accounts.js";
import type { ClientInfo, IssuedTokens, Sessions } from "../app/sessions.js";
import { Violations } from "../app/validation.js";
import { passwordProblem } from "../domain/password-policy.js";
import { INTROSPECT_SCOPE, OPERATOR_SCOPE, type RoleName } from "../domain/roles.js";
import { overlapProblem, serviceAccountIdProblem } from "../domain/service-account.js";
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

function roleNames(roles: Role[], v: Violations): RoleName[] {
  const names: RoleName[] = [];
  for (const r of roles) {
    const name = ROLE_NAMES[r];
    if (name) names.push(name);
    else v.check("roles", `unknown role ${r}`);
  }
  return [...new Set(names)];
}

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

function userIdViolations(userId: string): Violations {
  return new Violations().check("user_id", userIdProblem(userId));
}

function serviceAccountIdViolations(id: string): Violations {
  return new Violations().check("service_account_id", serviceAccountIdProblem(id));
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
      const v = new Violations();
      d.accounts.validateOrganization(req.name, req.slug, v);
      d.accounts.validateNewUser(
        {
          email: req.ownerEmail,
          displayName: req.ownerDisplayName,
          password: req.ownerPassword,
          roles: ["owner"],
        },
        v,
        "owner_",
      );
      v.throwIfAny();
      const { orgId, owner } = await d.accounts.createOrganizationWithOwner(
        { name: req.name, slug: req.slug },
        { email: req.ownerEmail, displayName: req.ownerDisplayName, password: req.ownerPassword },
        { createdVia: "admin", actor: caller(ctx).subject },
      );
      return { organization: { orgId, name: req.name.trim(), slug: req.slug }, owner: userMessage(owner) };
    },

    async createUser(req, ctx) {
      const p = caller(ctx);
      const v = new Violations();
      const roles = roleNames(req.roles, v);
      d.accounts.validateNewUser(
        { email: req.email, displayName: req.displayName, password: req.password, roles },
        v,
      );
      v.throwIfAny();
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
      const v = new Violations();
      d.accounts.validateOrganization(req.organizationName, req.organizationSlug, v, "organization_");
      d.accounts.validateNewUser(
        { email: req.email, displayName: req.displayName, password: req.password, roles: ["owner"] },
        v,
      );
      v.throwIfAny();
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
      const v = new Violations().required("user_id", req.userId, 64);
      const roles = roleNames(req.roles, v);
      if (roles.length === 0) v.check("roles", "at least one role is required");
      v.throwIfAny();
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
      new Violations().required("refresh_token", req.refreshToken, 8_192).throwIfAny();
      return { tokens: tokenPair(await d.sessions.refresh(req.refreshToken, clientInfo(ctx))) };
    },

    async logout(_req, ctx) {
      await d.sessions.logout(caller(ctx));
      return {};
    },

    async revokeSession(req, ctx) {
      new Violations().required("session_id", req.sessionId, 64).throwIfAny();
      await d.sessions.revokeInOrg(caller(ctx), req.sessionId);
      return {};
    },

    async revokeUserSessions(req, ctx) {
      new Violations().required("user_id", req.userId, 64).throwIfAny();
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
      const v = new Violations();
      if (req.pageSize < 0 || req.pageSize > 500) v.check("page_size", "must be 0-500 (0 means 50)");
      // Out of range would fail in PostgreSQL (INTERNAL) or lose precision in a number.
      v.check("since_ms", timestampMsProblem(req.sinceMs));
      v.check("until_ms", timestampMsProblem(req.untilMs));
      v.throwIfAny();
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
      userIdViolations(req.userId).throwIfAny();
      const p = caller(ctx);
      const { user } = await d.accounts.disableUser(p, req.userId);
      await d.catchUp();
      const revoked = await d.sessions.revokeAllOfUser(req.userId, "user_disabled", p.subject);
      return { user: userMessage(user), revokedSessions: revoked };
    },

    async enableUser(req, ctx) {
      userIdViolations(req.userId).throwIfAny();
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
      userIdViolations(req.userId).throwIfAny();
      const p = caller(ctx);
      await d.accounts.deleteUser(p, req.userId);
      await d.catchUp();
      return { revokedSessions: await d.sessions.revokeAllOfUser(req.userId, "user_deleted", p.subject) };
    },

    async resetUserPassword(req, ctx) {
      userIdViolations(req.userId).check("new_password", passwordProblem(req.newPassword)).throwIfAny();
      const p = caller(ctx);
      await d.accounts.userInOrg(p, req.userId); // NOT_FOUND before spending an argon2 hash
      await d.accounts.resetPassword(p, req.userId, await hashPassword(req.newPassword));
      await d.catchUp();
      return { revokedSessions: await d.sessions.revokeAllOfUser(req.userId, "password_reset", p.subject) };
    },

    async rotateServiceAccountSecret(req, ctx) {
      const overlap = Number(req.overlapSeconds);
      serviceAccountIdViolations(req.serviceAccountId)
        .check("overlap_seconds", overlapProblem(overlap))
        .throwIfAny();
      const r = await d.serviceAccounts.rotateSecret(caller(ctx), req.serviceAccountId, overlap);
      return {
        serviceAccount: serviceAccountMessage(r.account),
        clientSecret: r.clientSecret,
        previousSecretExpiresAtMs: BigInt(r.previousValidUntilMs),
      };
    },

    async disableServiceAccount(req, ctx) {
      serviceAccountIdViolations(req.serviceAccountId).throwIfAny();
      const a = await d.serviceAccounts.disable(caller(ctx), req.serviceAccountId);
      return { serviceAccount: serviceAccountMessage(a) };
    },

    async enableServiceAccount(req, ctx) {
      serviceAccountIdViolations(req.serviceAccountId).throwIfAny();
      const a = await d.serviceAccounts.enable(caller(ctx), req.serviceAccountId);
      return { serviceAccount: serviceAccountMessage(a) };
    },

    async deleteServiceAccount(req, ctx) {
      serviceAccountIdViolations(req.serviceAccountId).throwIfAny();
      await d.serviceAccounts.delete(caller(ctx), req.serviceAccountId);
      return {};
    },
  };
}
