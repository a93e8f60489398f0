import { createHash, randomBytes, randomUUID, timingSafeEqual } from "node:crypto";
import {
  aggregate,
  type EventStore,
  isPlatformScope,
  type NewEvent,
  NotFoundError,
  OPERATOR_SCOPE,
  PermissionDeniedError,
  type Principal,
  UnauthenticatedError,
} from "@spool/kit";
import { ServiceAccountCreated, Subjects } from "../domain/events.js";
import { grantableScopes } from "../domain/roles.js";
import {
  decideDelete,
  decideDisable,
  decideEnable,
  decideRotate,
  type ServiceAccount,
  ServiceAccountAggregate,
  serviceAccountIdProblem,
} from "../domain/service-account.js";
import { UserAggregate } from "../domain/user.js";
import type { AccessTokenIssuer } from "./tokens.js";
import { awaitIssuable, awaitWithdrawalSeen, type WithdrawalClock } from "./withdrawals.js";

const SECRET_PREFIX = "sas_";

function secretHash(secret: string): string {
  return `sha256:${createHash("sha256").update(secret).digest("hex")}`;
}

function newSecret(): string {
  return `${SECRET_PREFIX}${randomBytes(32).toString("base64url")}`;
}

/** Constant-time comparison of two secret hashes. */
function sameHash(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

export type KnownAccount = Exclude<ServiceAccount, { kind: "none" }>;

/**
 * Rotating a secret or enabling an account puts its scopes back in someone's
 * hands: only a caller who could grant every one of them may (so a
 * non-operator of the platform organisation cannot take over a spool:admin
 * account). Disabling and deleting only withdraw, and stay open to the org.
 */
function refuseUngrantable(caller: Principal, account: ServiceAccount): void {
  const grantable = grantableScopes(caller);
  if (account.kind !== "none" && !account.scopes.every((s) => grantable.has(s)))
    throw new PermissionDeniedError("this account holds scopes you may not grant");
}

/** Service accounts: client credentials for other services, scoped, shown once, stored hashed. */
export class ServiceAccounts {
  readonly #store: EventStore;
  readonly #tokens: AccessTokenIssuer;
  readonly #ttlSeconds: number;
  readonly #clock: WithdrawalClock | undefined;
  readonly #accounts;

  /** `clock`: this process's revocation set (exact not-befores; withdrawals return once it has them). */
  constructor(store: EventStore, tokens: AccessTokenIssuer, ttlSeconds: number, clock?: WithdrawalClock) {
    this.#store = store;
    this.#tokens = tokens;
    this.#ttlSeconds = ttlSeconds;
    this.#clock = clock;
    this.#accounts = aggregate(store, ServiceAccountAggregate);
  }

  async create(caller: Principal, name: string, scopes: string[]) {
    const unique = [...new Set(scopes)];
    // A caller grants only scopes it holds; no organisation role holds a platform scope.
    const grantable = grantableScopes(caller);
    const refused = unique.filter((s) => !grantable.has(s));
    if (refused.length > 0) throw new PermissionDeniedError(`you may not grant ${refused.join(", ")}`);
    const serviceAccountId = randomUUID();
    const clientSecret = `${SECRET_PREFIX}${randomBytes(32).toString("base64url")}`;
    await this.#store.append(
      Subjects.serviceAccount(serviceAccountId),
      [
        ServiceAccountCreated.create({
          serviceAccountId,
          orgId: caller.orgId,
          name: name.trim(),
          scopes: unique,
          secretHash: secretHash(clientSecret),
          createdBy: caller.subject,
        }),
      ],
      { expectedSequence: 0, actor: caller.subject },
    );
    return { serviceAccountId, orgId: caller.orgId, name: name.trim(), scopes: unique, clientSecret };
  }

  /** An account as the log has it now, in any state ("none" for an id that is not one). */
  async load(serviceAccountId: string): Promise<ServiceAccount> {
    if (serviceAccountIdProblem(serviceAccountId)) return { kind: "none" };
    return (await this.#accounts.load(serviceAccountId)).state;
  }

  /** Client-credentials exchange; every failure is the same UNAUTHENTICATED answer. */
  async exchange(clientId: string, clientSecret: string, requested: string[]) {
    const refuse = () => new UnauthenticatedError("invalid client credentials");
    if (
      !/^[A-Za-z0-9_-]{1,64}$/.test(clientId) ||
      !clientSecret.startsWith(SECRET_PREFIX) ||
      clientSecret.length > 200
    ) {
      throw refuse();
    }
    const { state } = await this.#accounts.load(clientId);
    const presented = secretHash(clientSecret);
    // Both comparisons always run, so timing does not tell which secret (if any) matched.
    const active = state.kind === "active";
    const now = Date.now();
    const current = sameHash(active ? state.secretHash : secretHash("none"), presented);
    const previous = sameHash(
      active && state.previousSecret && state.previousSecret.validUntilMs > now
        ? state.previousSecret.hash
        : secretHash("none"),
      presented,
    );
    if (state.kind !== "active" || !(current || previous)) throw refuse();
    const held = await this.#trustedScopes(state);
    const scopes = requested.length === 0 ? held : [...new Set(requested)];
    if (!scopes.every((s) => held.includes(s)))
      throw new PermissionDeniedError("scope not granted to this client");
    // After the account's not-before second: a token issued in it would be refused everywhere.
    await awaitIssuable(state.serviceAccountId, state.notBeforeMs, this.#clock);
    const token = await this.#tokens.issue(
      {
        subject: state.serviceAccountId,
        orgId: state.orgId,
        roles: [],
        scopes,
        clientId: state.serviceAccountId,
      },
      this.#ttlSeconds,
    );
    // A disable or delete landing while this token was signed: if the account is unchanged now, a later
    // withdrawal is stored after the token's iat, so its not-before refuses the token; otherwise it never leaves.
    const { state: after } = await this.#accounts.load(clientId);
    if (after.kind !== "active" || after.notBeforeMs !== state.notBeforeMs) throw refuse();
    return { accessToken: token.token, expiresIn: token.expiresIn, scopes };
  }

  /**
   * A new client secret (returned once); the replaced one keeps exchanging for
   * `overlapSeconds` (0: not at all). Works on a disabled account too.
   */
  async rotateSecret(caller: Principal, serviceAccountId: string, overlapSeconds: number) {
    const clientSecret = newSecret();
    const previousValidUntilMs = overlapSeconds > 0 ? Date.now() + overlapSeconds * 1000 : 0;
    const { state } = await this.#onAccount(caller, serviceAccountId, false, (s) => {
      refuseUngrantable(caller, s);
      return decideRotate(s, secretHash(clientSecret), previousValidUntilMs, caller.subject);
    });
    return { account: state, clientSecret, previousValidUntilMs };
  }

  /** Disables the account (idempotent): no exchange, and its tokens are refused on every service. */
  async disable(caller: Principal, serviceAccountId: string): Promise<KnownAccount> {
    return (await this.#withdraw(caller, serviceAccountId, false, (s) => decideDisable(s, caller.subject)))
      .state;
  }

  /** Lets a disabled account exchange again (idempotent); its earlier tokens stay refused. */
  async enable(caller: Principal, serviceAccountId: string): Promise<KnownAccount> {
    return (
      await this.#onAccount(caller, serviceAccountId, false, (s) => {
        refuseUngrantable(caller, s);
        return decideEnable(s, caller.subject);
      })
    ).state;
  }

  /** Deletes the account for good; deleting a deleted account of the organisation succeeds and writes nothing. */
  async delete(caller: Principal, serviceAccountId: string): Promise<void> {
    await this.#withdraw(caller, serviceAccountId, true, (s) => decideDelete(s, caller.subject));
  }

  async #withdraw(
    caller: Principal,
    serviceAccountId: string,
    deletedIsFound: boolean,
    decide: (s: ServiceAccount) => readonly NewEvent[],
  ) {
    const before = this.#clock?.notBefore(serviceAccountId);
    const r = await this.#onAccount(caller, serviceAccountId, deletedIsFound, decide);
    if (r.changed) await awaitWithdrawalSeen(this.#clock, serviceAccountId, before);
    return r;
  }

  /**
   * A command on an account of the caller's organisation, checked on the
   * state the append is decided on: another organisation's account, or a
   * deleted one (unless `deletedIsFound`), is NOT_FOUND.
   */
  async #onAccount(
    caller: Principal,
    serviceAccountId: string,
    deletedIsFound: boolean,
    decide: (s: ServiceAccount) => readonly NewEvent[],
  ): Promise<{ state: KnownAccount; changed: boolean }> {
    const notFound = () => new NotFoundError("service account not found");
    if (serviceAccountIdProblem(serviceAccountId)) throw notFound();
    const result = await this.#accounts.handle(
      serviceAccountId,
      (state) => {
        if (state.kind === "none" || state.orgId !== caller.orgId) throw notFound();
        if (state.kind === "deleted" && !deletedIsFound) throw notFound();
        return decide(state);
      },
      { actor: caller.subject },
    );
    if (result.state.kind === "none") throw notFound();
    return { state: result.state, changed: result.events.length > 0 };
  }

  /**
   * The account's scopes without any platform scope it should not have:
   * accounts created before grants were checked may hold spool:admin from an
   * organisation owner. A platform scope is minted only when the account's
   * creator is an operator user; auth:operator never is (it is a user flag).
   */
  async #trustedScopes(account: { scopes: string[]; createdBy: string }): Promise<string[]> {
    const { scopes, createdBy } = account;
    if (!scopes.some(isPlatformScope)) return scopes;
    const creator = /^[A-Za-z0-9_-]{1,64}$/.test(createdBy)
      ? (await aggregate(this.#store, UserAggregate).load(createdBy)).state
      : undefined;
    const byOperator = creator !== undefined && creator.kind !== "none" && creator.operator;
    return scopes.filter((s) => !isPlatformScope(s) || (byOperator && s !== OPERATOR_SCOPE));
  }
}
