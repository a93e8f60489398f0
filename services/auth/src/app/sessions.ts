import { createHmac, randomUUID } from "node:crypto";
import {
  aggregate,
  type EventStore,
  FailedPreconditionError,
  NotFoundError,
  type Principal,
  UnauthenticatedError,
} from "@spool/kit";
import {
  LoginFailed,
  LoginLockedOut,
  LoginSucceeded,
  PasswordChanged,
  SessionStarted,
  Subjects,
} from "../domain/events.js";
import { normaliseEmail } from "../domain/organization.js";
import {
  formatRefreshToken,
  hashRefreshToken,
  newRefreshSecret,
  parseRefreshToken,
} from "../domain/refresh-token.js";
import { decideRefresh, decideRevoke, type RefreshDecision, SessionAggregate } from "../domain/session.js";
import { UserAggregate } from "../domain/user.js";
import type { Accounts, ActiveUser } from "./accounts.js";
import { hashPassword, verifyPassword } from "./passwords.js";
import { type LoginThrottle, ThrottledError } from "./throttle.js";
import type { AccessTokenIssuer } from "./tokens.js";
import { awaitIssuable, type WithdrawalClock } from "./withdrawals.js";

export interface SessionPolicy {
  accessTokenTtlSeconds: number;
  refreshIdleMs: number;
  refreshAbsoluteMs: number;
  refreshGraceMs: number;
}

export interface ClientInfo {
  ip: string;
  userAgent: string;
}

export interface IssuedTokens {
  accessToken: string;
  accessTokenExpiresIn: number;
  refreshToken: string;
  refreshTokenExpiresIn: number;
  sessionId: string;
}

/** Lists a user's active sessions (a projection; see projections/sessions.ts). */
export interface SessionIndex {
  activeSessions(userId: string): Promise<string[]>;
}

const INVALID_LOGIN = "invalid email or password";

export class Sessions {
  readonly #store: EventStore;
  readonly #sessions;
  readonly #users;
  readonly #accounts: Accounts;
  readonly #tokens: AccessTokenIssuer;
  readonly #throttle: LoginThrottle;
  readonly #index: SessionIndex;
  readonly #policy: SessionPolicy;
  readonly #refreshKey: Buffer;
  readonly #withdrawals: WithdrawalClock | undefined;

  constructor(deps: {
    store: EventStore;
    accounts: Accounts;
    tokens: AccessTokenIssuer;
    throttle: LoginThrottle;
    index: SessionIndex;
    policy: SessionPolicy;
    tokenSecret: Buffer;
    /** This process's revocation set: the exact not-before every verifier applies to a user. */
    withdrawals?: WithdrawalClock;
  }) {
    this.#withdrawals = deps.withdrawals;
    this.#store = deps.store;
    this.#sessions = aggregate(deps.store, SessionAggregate);
    this.#users = aggregate(deps.store, UserAggregate);
    this.#accounts = deps.accounts;
    this.#tokens = deps.tokens;
    this.#throttle = deps.throttle;
    this.#index = deps.index;
    this.#policy = deps.policy;
    this.#refreshKey = createHmac("sha256", deps.tokenSecret)
      .update("spool refresh-token successors")
      .digest();
  }

  /**
   * Login. The answer is the same whether the account is missing, disabled or
   * deleted, or the password is wrong, in content and (argon2 runs either
   * way) in timing.
   */
  async login(
    emailInput: string,
    password: string,
    client: ClientInfo,
  ): Promise<{ tokens: IssuedTokens; user: ActiveUser }> {
    const account = normaliseEmail(emailInput);
    let armedBlockMs: number;
    try {
      armedBlockMs = await this.#throttle.begin(account, client.ip);
    } catch (e) {
      if (e instanceof ThrottledError)
        await this.#audit(LoginFailed.create({ account, userId: "", ip: client.ip, reason: "throttled" }));
      throw e;
    }
    const user = await this.#accounts.userByEmail(account);
    if (!(await verifyPassword(user?.passwordHash, password))) {
      await this.#audit(
        LoginFailed.create({ account, userId: user?.userId ?? "", ip: client.ip, reason: "bad_credentials" }),
      );
      if (armedBlockMs > 0) {
        await this.#audit(
          LoginLockedOut.create({
            account,
            ip: client.ip,
            blockedUntilMs: BigInt(Date.now() + armedBlockMs),
            scope: "account_ip",
          }),
          "lockout",
        );
      }
      throw new UnauthenticatedError(INVALID_LOGIN);
    }
    if (!user) throw new UnauthenticatedError(INVALID_LOGIN);
    await this.#throttle.succeed(account, client.ip);
    // Session and token come after the user's not-before second, so an enable or a reset followed at once
    // by a login does not hand out a token every verifier refuses.
    await awaitIssuable(user.userId, user.notBeforeMs, this.#withdrawals);
    const tokens = await this.#startSession(user, client);
    await this.#stillEntitled(user, tokens.sessionId, INVALID_LOGIN);
    return { tokens, user };
  }

  /**
   * Closes the race with a withdrawal (disable, delete, password reset) that
   * lands while a login or refresh is issuing, from a user loaded before it.
   * Called after the token is signed: if the user is unchanged now, any later
   * withdrawal is stored after the token's iat and its not-before covers the
   * token; and the session, already on the stream, is revoked by that
   * withdrawal's revoke-all. If the user did change, the session is revoked
   * here and the token never leaves.
   */
  async #stillEntitled(user: ActiveUser, sessionId: string, refusal: string): Promise<void> {
    const now = await this.#accounts.loadUser(user.userId);
    if (now && now.notBeforeMs === user.notBeforeMs) return;
    await this.revoke(sessionId, "user_withdrawn", "");
    throw new UnauthenticatedError(refusal);
  }

  async #startSession(user: ActiveUser, client: ClientInfo): Promise<IssuedTokens> {
    const now = Date.now();
    const sessionId = randomUUID();
    const first = { sessionId, generation: 0, secret: newRefreshSecret() };
    const absoluteExpiresAtMs = now + this.#policy.refreshAbsoluteMs;
    const idleExpiresAtMs = Math.min(now + this.#policy.refreshIdleMs, absoluteExpiresAtMs);
    await this.#store.append(
      Subjects.session(sessionId),
      [
        SessionStarted.create({
          sessionId,
          userId: user.userId,
          orgId: user.orgId,
          roles: user.roles,
          refreshTokenHash: hashRefreshToken(first),
          idleExpiresAtMs: BigInt(idleExpiresAtMs),
          absoluteExpiresAtMs: BigInt(absoluteExpiresAtMs),
          ip: client.ip.slice(0, 64),
          userAgent: client.userAgent.slice(0, 256),
        }),
        LoginSucceeded.create({
          userId: user.userId,
          orgId: user.orgId,
          sessionId,
          ip: client.ip.slice(0, 64),
        }),
      ],
      { expectedSequence: 0, actor: user.userId },
    );
    return this.#issue(user, sessionId, formatRefreshToken(first), idleExpiresAtMs, now);
  }

  async #issue(
    user: ActiveUser,
    sessionId: string,
    refreshToken: string,
    idleExpiresAtMs: number,
    now: number,
  ) {
    const access = await this.#tokens.issue(
      {
        subject: user.userId,
        orgId: user.orgId,
        sessionId,
        roles: user.roles,
        scopes: user.operator ? ["auth:operator"] : [],
      },
      this.#policy.accessTokenTtlSeconds,
    );
    return {
      accessToken: access.token,
      accessTokenExpiresIn: access.expiresIn,
      refreshToken,
      refreshTokenExpiresIn: Math.max(0, Math.floor((idleExpiresAtMs - now) / 1000)),
      sessionId,
    };
  }

  /**
   * Rotation with reuse detection (domain/session.ts). Two concurrent
   * refreshes with the same token: one rotates, the other conflicts, reloads,
   * and — inside the grace period — gets the same successor.
   */
  async refresh(refreshToken: string, client: ClientInfo): Promise<IssuedTokens> {
    const presented = parseRefreshToken(refreshToken);
    if (!presented) throw new UnauthenticatedError("invalid refresh token");
    let decision: RefreshDecision | undefined;
    await this.#sessions.handle(
      presented.sessionId,
      (state) => {
        decision = decideRefresh(
          state,
          presented,
          Date.now(),
          {
            refreshKey: this.#refreshKey,
            graceMs: this.#policy.refreshGraceMs,
            idleMs: this.#policy.refreshIdleMs,
          },
          client.ip.slice(0, 64),
        );
        return decision.events;
      },
      { maxAttempts: 20 },
    );
    if (!decision) throw new UnauthenticatedError("invalid refresh token");
    if (decision.outcome === "reused")
      throw new UnauthenticatedError("refresh token reuse detected; session revoked");
    if (decision.outcome === "rejected") throw new UnauthenticatedError("invalid refresh token");
    const session = decision.session;
    // Roles come from the user as it is now, so a role change applies from the next refresh.
    // A disabled or deleted user refreshes nothing (their sessions are revoked as well).
    const user = await this.#accounts.loadUser(session.userId);
    if (!user) throw new UnauthenticatedError("invalid refresh token");
    await awaitIssuable(user.userId, user.notBeforeMs, this.#withdrawals);
    const tokens = await this.#issue(
      user,
      session.sessionId,
      formatRefreshToken(decision.token),
      session.idleExpiresAtMs,
      Date.now(),
    );
    await this.#stillEntitled(user, session.sessionId, "invalid refresh token");
    return tokens;
  }

  async revoke(sessionId: string, reason: string, revokedBy: string): Promise<boolean> {
    const result = await this.#sessions.handle(sessionId, (state) => decideRevoke(state, reason, revokedBy), {
      actor: revokedBy,
    });
    return result.events.length > 0;
  }

  async logout(caller: Principal): Promise<void> {
    if (!caller.sessionId) throw new FailedPreconditionError("this token has no session to log out of");
    await this.revoke(caller.sessionId, "logout", caller.subject);
  }

  /** An admin revokes a session of their organisation; others' sessions are NOT_FOUND. */
  async revokeInOrg(caller: Principal, sessionId: string): Promise<void> {
    if (!/^[A-Za-z0-9_-]{1,64}$/.test(sessionId)) throw new NotFoundError("session not found");
    const { state } = await this.#sessions.load(sessionId);
    if (state.kind === "none" || state.orgId !== caller.orgId) throw new NotFoundError("session not found");
    await this.revoke(sessionId, "admin", caller.subject);
  }

  async revokeAllOfUser(userId: string, reason: string, revokedBy: string, except?: string): Promise<number> {
    const ids = (await this.#index.activeSessions(userId)).filter((id) => id !== except);
    let revoked = 0;
    for (const id of ids) if (await this.revoke(id, reason, revokedBy)) revoked++;
    return revoked;
  }

  /** Changes the caller's password and revokes every other session of theirs. */
  async changePassword(
    caller: Principal,
    current: string,
    next: string,
    client: ClientInfo,
  ): Promise<number> {
    if (caller.kind !== "user") throw new FailedPreconditionError("only users have passwords");
    const user = await this.#accounts.loadUser(caller.subject);
    if (!user) throw new UnauthenticatedError();
    // The same throttle as login: a stolen access token must not become a password oracle.
    await this.#throttle.begin(user.email, client.ip);
    if (!(await verifyPassword(user.passwordHash, current))) {
      await this.#audit(
        LoginFailed.create({
          account: user.email,
          userId: user.userId,
          ip: client.ip,
          reason: "bad_credentials",
        }),
      );
      throw new UnauthenticatedError("current password is wrong");
    }
    await this.#throttle.succeed(user.email, client.ip);
    const passwordHash = await hashPassword(next);
    await this.#users.handle(
      user.userId,
      (state) =>
        state.kind === "active"
          ? [
              PasswordChanged.create({
                userId: user.userId,
                passwordHash,
                keptSessionId: caller.sessionId ?? "",
              }),
            ]
          : [],
      { actor: caller.subject },
    );
    return this.revokeAllOfUser(user.userId, "password_changed", caller.subject, caller.sessionId);
  }

  async #audit(
    event: ReturnType<typeof LoginFailed.create>,
    kind: "login" | "lockout" = "login",
  ): Promise<void> {
    await this.#store.append(Subjects.audit(kind), [event]);
  }
}
