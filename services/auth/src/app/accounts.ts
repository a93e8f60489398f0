import { createHmac, randomUUID } from "node:crypto";
import {
  AlreadyExistsError,
  aggregate,
  ConcurrencyError,
  type EventStore,
  FailedPreconditionError,
  type NewEvent,
  NotFoundError,
  PermissionDeniedError,
  type Principal,
  type Reducer,
} from "@spool/kit";
import { EmailClaimed, OrganizationSlugClaimed, SignupPolicyChanged, Subjects } from "../domain/events.js";
import {
  type Claim,
  decideCreateOrganization,
  emailClaimReducer,
  normaliseEmail,
  type Organization,
  OrganizationAggregate,
  signupPolicyReducer,
  slugClaimReducer,
} from "../domain/organization.js";
import type { RoleName } from "../domain/roles.js";
import {
  decideCreateUser,
  decideDelete,
  decideDisable,
  decideEnable,
  decideResetPassword,
  decideSetRoles,
  type ExistingUser,
  type User,
  UserAggregate,
  userIdProblem,
} from "../domain/user.js";
import { hashPassword } from "./passwords.js";
import { awaitWithdrawalSeen, type WithdrawalClock } from "./withdrawals.js";

export type ActiveUser = Extract<User, { kind: "active" }>;
export type { ExistingUser };
/** Any user that was ever created: active, disabled or deleted. */
export type KnownUser = Exclude<User, { kind: "none" }>;

export interface NewUserInput {
  email: string;
  displayName: string;
  password: string;
  roles: string[];
}

/**
 * Organisations and users. Uniqueness (slug, email) is a claim: a subject
 * whose first event names its owner, appended with expected sequence 0, so two
 * concurrent creations cannot both win. Every step converges: repeating a
 * half-finished creation completes it.
 */
export class Accounts {
  readonly #store: EventStore;
  readonly #emailKey: Buffer;
  readonly #clock: WithdrawalClock | undefined;
  readonly #users;
  readonly #organizations;
  readonly #signup;

  /** `clock`: this process's revocation set, so a withdrawal returns once it refuses the user's tokens here. */
  constructor(store: EventStore, emailKey: Buffer, clock?: WithdrawalClock) {
    this.#store = store;
    this.#emailKey = emailKey;
    this.#clock = clock;
    this.#users = aggregate(store, UserAggregate);
    this.#organizations = aggregate(store, OrganizationAggregate);
    this.#signup = aggregate(store, { subject: Subjects.signup, reducer: signupPolicyReducer });
  }

  /** Subject token for an email: keyed hash, so subjects do not list addresses. */
  emailSubject(email: string): string {
    const h = createHmac("sha256", this.#emailKey)
      .update(normaliseEmail(email))
      .digest("base64url")
      .slice(0, 32);
    return Subjects.email(h);
  }

  /** The active user with this email (the one that may log in), if any. */
  async userByEmail(email: string): Promise<ActiveUser | undefined> {
    const user = await this.#anyUserByEmail(email);
    return user?.kind === "active" ? user : undefined;
  }

  /** Whoever holds the email: active, disabled or deleted (a deleted user keeps its email). */
  async #anyUserByEmail(email: string): Promise<KnownUser | undefined> {
    const claim = await this.#store.load(this.emailSubject(email), emailClaimReducer);
    if (claim.state.kind !== "claimed") return undefined;
    const user = await this.#loadState(claim.state.ownerId);
    return user.kind !== "none" && user.email === normaliseEmail(email) ? user : undefined;
  }

  /** An active user: one that may log in and refresh (not disabled, not deleted). */
  async loadUser(userId: string): Promise<ActiveUser | undefined> {
    const state = await this.#loadState(userId);
    return state.kind === "active" ? state : undefined;
  }

  async #loadState(userId: string): Promise<User> {
    if (userIdProblem(userId)) return { kind: "none" };
    return (await this.#users.load(userId)).state;
  }

  /** A user (active or disabled) of the caller's organisation; any other, or a deleted one, is NOT_FOUND. */
  async userInOrg(caller: Principal, userId: string): Promise<ExistingUser> {
    const user = await this.#loadState(userId);
    if (user.kind === "none" || user.kind === "deleted" || user.orgId !== caller.orgId) {
      throw new NotFoundError("user not found");
    }
    return user;
  }

  async loadOrganization(orgId: string): Promise<Organization> {
    return (await this.#organizations.load(orgId)).state;
  }

  /**
   * Claims the email then creates the user. A claim left without its user (a
   * crash between the two appends) is adopted by the next creation of that email.
   */
  async createUser(
    orgId: string,
    input: NewUserInput,
    options: { createdVia: "admin" | "signup" | "bootstrap"; operator?: boolean; actor?: string },
  ): Promise<{ user: KnownUser; created: boolean }> {
    const email = normaliseEmail(input.email);
    const userId = await this.#claim(this.emailSubject(email), emailClaimReducer, randomUUID(), (id) =>
      EmailClaimed.create({ email, userId: id }),
    );
    // A disabled or deleted user keeps its email: the claim is never released.
    const existing = await this.#loadState(userId);
    if (existing.kind !== "none") return { user: existing, created: false };
    const passwordHash = await hashPassword(input.password);
    const result = await this.#users.handle(
      userId,
      (state) =>
        decideCreateUser(state, {
          userId,
          orgId,
          email,
          displayName: input.displayName.trim(),
          roles: input.roles,
          passwordHash,
          createdVia: options.createdVia,
          operator: options.operator ?? false,
        }),
      options.actor ? { actor: options.actor } : {},
    );
    if (result.state.kind === "none") throw new Error("user creation did not converge");
    return { user: result.state, created: result.events.length > 0 };
  }

  /** Creates the organisation (claiming its slug) and returns its id; repeating it converges. */
  async createOrganization(
    name: string,
    slug: string,
    actor?: string,
  ): Promise<{ orgId: string; created: boolean }> {
    const orgId = await this.#claim(Subjects.slug(slug), slugClaimReducer, randomUUID(), (id) =>
      OrganizationSlugClaimed.create({ slug, orgId: id }),
    );
    const result = await this.#organizations.handle(
      orgId,
      (state) => decideCreateOrganization(state, { orgId, name, slug }),
      actor ? { actor } : {},
    );
    return { orgId, created: result.events.length > 0 };
  }

  /** Owner-created orgs (operator) and signup both use this: the org, then its owner. */
  async createOrganizationWithOwner(
    org: { name: string; slug: string },
    owner: Omit<NewUserInput, "roles">,
    options: { createdVia: "admin" | "signup"; actor?: string },
  ): Promise<{ orgId: string; owner: ActiveUser }> {
    const existingOwner = await this.#anyUserByEmail(owner.email);
    if (existingOwner) throw new AlreadyExistsError("a user with this email already exists");
    const { orgId, created } = await this.createOrganization(org.name.trim(), org.slug, options.actor);
    if (!created) throw new AlreadyExistsError("an organisation with this slug already exists");
    const { user, created: userCreated } = await this.createUser(
      orgId,
      { ...owner, roles: ["owner"] },
      { createdVia: options.createdVia, ...(options.actor ? { actor: options.actor } : {}) },
    );
    if (!userCreated || user.kind !== "active")
      throw new AlreadyExistsError("a user with this email already exists");
    return { orgId, owner: user };
  }

  async setRoles(caller: Principal, userId: string, roles: RoleName[]): Promise<ExistingUser> {
    const target = await this.userInOrg(caller, userId);
    const grantsOwner = roles.includes("owner") && !target.roles.includes("owner");
    const removesOwner = target.roles.includes("owner") && !roles.includes("owner");
    if ((grantsOwner || removesOwner) && !caller.roles.includes("owner")) {
      throw new PermissionDeniedError("only an owner grants or removes the owner role");
    }
    const result = await this.#users.handle(userId, (state) => decideSetRoles(state, roles), {
      actor: caller.subject,
    });
    if (result.state.kind !== "active" && result.state.kind !== "disabled")
      throw new NotFoundError("user not found");
    return result.state;
  }

  /**
   * Disables a user of the caller's organisation (idempotent). The caller then
   * revokes the user's sessions; tokens are refused by the revocation feed.
   */
  async disableUser(caller: Principal, userId: string): Promise<{ user: ExistingUser; changed: boolean }> {
    const r = await this.#withdraw(caller, userId, "you cannot disable yourself", false, (s) =>
      decideDisable(s, caller.subject),
    );
    if (r.state.kind !== "disabled") throw new NotFoundError("user not found");
    return { user: r.state, changed: r.changed };
  }

  /** Lets a disabled user log in again (idempotent); a deleted user is NOT_FOUND. */
  async enableUser(caller: Principal, userId: string): Promise<ExistingUser> {
    const r = await this.#onUser(caller, userId, { deletedIsFound: false }, (s) =>
      decideEnable(s, caller.subject),
    );
    if (r.state.kind !== "active") throw new NotFoundError("user not found");
    return r.state;
  }

  /** Deletes a user for good; deleting a deleted user of the organisation succeeds and writes nothing. */
  async deleteUser(caller: Principal, userId: string): Promise<{ changed: boolean }> {
    const r = await this.#withdraw(caller, userId, "you cannot delete yourself", true, (s) =>
      decideDelete(s, caller.subject),
    );
    return { changed: r.changed };
  }

  /** Sets another user's password (already checked against the policy and hashed by the caller). */
  async resetPassword(caller: Principal, userId: string, passwordHash: string): Promise<void> {
    await this.#withdraw(caller, userId, "use ChangePassword for your own password", false, (s) =>
      decideResetPassword(s, passwordHash, caller.subject),
    );
  }

  /** A withdrawal: never on oneself; returns once this process's revocation set refuses the user's tokens. */
  async #withdraw(
    caller: Principal,
    userId: string,
    selfMessage: string,
    deletedIsFound: boolean,
    decide: (state: User) => readonly NewEvent[],
  ): Promise<{ state: User; changed: boolean }> {
    const before = this.#clock?.notBefore(userId);
    const r = await this.#onUser(caller, userId, { deletedIsFound, notSelf: selfMessage }, decide);
    if (r.changed) await awaitWithdrawalSeen(this.#clock, userId, before);
    return r;
  }

  /**
   * A command on a user of the caller's organisation by an owner or admin. The
   * rules are checked on the very state the append is decided on (a
   * concurrent role change cannot slip between check and write): another
   * organisation's or a deleted user is NOT_FOUND, only an owner acts on an
   * owner, and `notSelf` forbids acting on oneself.
   */
  async #onUser(
    caller: Principal,
    userId: string,
    rules: { deletedIsFound: boolean; notSelf?: string },
    decide: (state: User) => readonly NewEvent[],
  ): Promise<{ state: User; changed: boolean }> {
    if (userIdProblem(userId)) throw new NotFoundError("user not found");
    const result = await this.#users.handle(
      userId,
      (state) => {
        const visible =
          state.kind === "active" ||
          state.kind === "disabled" ||
          (rules.deletedIsFound && state.kind === "deleted");
        if (state.kind === "none" || !visible || state.orgId !== caller.orgId) {
          throw new NotFoundError("user not found");
        }
        if (rules.notSelf && state.userId === caller.subject)
          throw new FailedPreconditionError(rules.notSelf);
        if (state.roles.includes("owner") && !caller.roles.includes("owner")) {
          throw new PermissionDeniedError("only an owner acts on an owner");
        }
        return decide(state);
      },
      { actor: caller.subject },
    );
    return { state: result.state, changed: result.events.length > 0 };
  }

  async signupOpen(): Promise<boolean> {
    return (await this.#signup.load()).state.open;
  }

  async setSignupPolicy(open: boolean, changedBy: string): Promise<void> {
    await this.#signup.handle(
      undefined,
      (state) => (state.open === open ? [] : [SignupPolicyChanged.create({ open, changedBy })]),
      { actor: changedBy },
    );
  }

  /**
   * Appends a claim if the subject has none; returns the owner id either way.
   * Expected sequence 0 makes the first claim win atomically.
   */
  async #claim<E>(
    subject: string,
    reducer: Reducer<Claim, E>,
    proposedOwner: string,
    event: (ownerId: string) => ReturnType<typeof EmailClaimed.create>,
  ): Promise<string> {
    for (let attempt = 0; attempt < 3; attempt++) {
      const { state } = await this.#store.load(subject, reducer);
      if (state.kind === "claimed") return state.ownerId;
      try {
        await this.#store.append(subject, [event(proposedOwner)], { expectedSequence: 0 });
        return proposedOwner;
      } catch (e) {
        if (!(e instanceof ConcurrencyError)) throw e;
      }
    }
    throw new FailedPreconditionError("could not claim; try again");
  }
}
