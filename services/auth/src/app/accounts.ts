import { createHmac, randomUUID } from "node:crypto";
import {
  AlreadyExistsError,
  ConcurrencyError,
  type EventStore,
  FailedPreconditionError,
  handleCommand,
  NotFoundError,
  PermissionDeniedError,
  type Principal,
} from "@spool/kit";
import { EmailClaimed, OrganizationSlugClaimed, SignupPolicyChanged, Subjects } from "../domain/events.js";
import {
  type Claim,
  decideCreateOrganization,
  emailClaimReducer,
  emailProblem,
  normaliseEmail,
  type Organization,
  organizationReducer,
  signupPolicyReducer,
  slugClaimReducer,
  slugProblem,
} from "../domain/organization.js";
import { passwordProblem } from "../domain/password-policy.js";
import { isRole, type RoleName } from "../domain/roles.js";
import { decideCreateUser, decideSetRoles, type User, userReducer } from "../domain/user.js";
import { hashPassword } from "./passwords.js";
import { Violations } from "./validation.js";

export type ActiveUser = Extract<User, { kind: "active" }>;

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

  constructor(store: EventStore, emailKey: Buffer) {
    this.#store = store;
    this.#emailKey = emailKey;
  }

  /** Subject token for an email: keyed hash, so subjects do not list addresses. */
  emailSubject(email: string): string {
    const h = createHmac("sha256", this.#emailKey)
      .update(normaliseEmail(email))
      .digest("base64url")
      .slice(0, 32);
    return Subjects.email(h);
  }

  async userByEmail(email: string): Promise<ActiveUser | undefined> {
    const claim = await this.#store.load(this.emailSubject(email), emailClaimReducer);
    if (claim.state.kind !== "claimed") return undefined;
    const user = await this.loadUser(claim.state.ownerId);
    return user?.email === normaliseEmail(email) ? user : undefined;
  }

  async loadUser(userId: string): Promise<ActiveUser | undefined> {
    if (!/^[A-Za-z0-9_-]{1,64}$/.test(userId)) return undefined;
    const { state } = await this.#store.load(Subjects.user(userId), userReducer);
    return state.kind === "active" ? state : undefined;
  }

  /** A user of the caller's organisation; any other is NOT_FOUND. */
  async userInOrg(caller: Principal, userId: string): Promise<ActiveUser> {
    const user = await this.loadUser(userId);
    if (!user || user.orgId !== caller.orgId) throw new NotFoundError("user not found");
    return user;
  }

  async loadOrganization(orgId: string): Promise<Organization> {
    return (await this.#store.load(Subjects.org(orgId), organizationReducer)).state;
  }

  validateNewUser(input: NewUserInput, v = new Violations(), prefix = ""): RoleName[] {
    v.check(`${prefix}email`, emailProblem(input.email.trim()));
    v.required(`${prefix}display_name`, input.displayName, 200);
    v.check(`${prefix}password`, passwordProblem(input.password));
    const roles = [...new Set(input.roles)];
    for (const r of roles)
      v.check(`${prefix}roles`, isRole(r) ? undefined : `unknown role ${JSON.stringify(r)}`);
    if (roles.length === 0) v.check(`${prefix}roles`, "at least one role is required");
    return roles.filter(isRole);
  }

  /**
   * Claims the email then creates the user. A claim left without its user (a
   * crash between the two appends) is adopted by the next creation of that email.
   */
  async createUser(
    orgId: string,
    input: NewUserInput,
    options: { createdVia: "admin" | "signup" | "bootstrap"; operator?: boolean; actor?: string },
  ): Promise<{ user: ActiveUser; created: boolean }> {
    const email = normaliseEmail(input.email);
    const userId = await this.#claim(this.emailSubject(email), emailClaimReducer, randomUUID(), (id) =>
      EmailClaimed.create({ email, userId: id }),
    );
    const existing = await this.loadUser(userId);
    if (existing) return { user: existing, created: false };
    const passwordHash = await hashPassword(input.password);
    const result = await handleCommand(this.#store, {
      subject: Subjects.user(userId),
      reducer: userReducer,
      ...(options.actor ? { actor: options.actor } : {}),
      decide: (state) =>
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
    });
    if (result.state.kind !== "active") throw new Error("user creation did not converge");
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
    const result = await handleCommand(this.#store, {
      subject: Subjects.org(orgId),
      reducer: organizationReducer,
      ...(actor ? { actor } : {}),
      decide: (state) => decideCreateOrganization(state, { orgId, name, slug }),
    });
    return { orgId, created: result.events.length > 0 };
  }

  validateOrganization(name: string, slug: string, v: Violations, prefix = ""): void {
    v.required(`${prefix}name`, name, 200);
    v.check(`${prefix}slug`, slugProblem(slug));
  }

  /** Owner-created orgs (operator) and signup both use this: the org, then its owner. */
  async createOrganizationWithOwner(
    org: { name: string; slug: string },
    owner: Omit<NewUserInput, "roles">,
    options: { createdVia: "admin" | "signup"; actor?: string },
  ): Promise<{ orgId: string; owner: ActiveUser }> {
    const existingOwner = await this.userByEmail(owner.email);
    if (existingOwner) throw new AlreadyExistsError("a user with this email already exists");
    const { orgId, created } = await this.createOrganization(org.name.trim(), org.slug, options.actor);
    if (!created) throw new AlreadyExistsError("an organisation with this slug already exists");
    const { user, created: userCreated } = await this.createUser(
      orgId,
      { ...owner, roles: ["owner"] },
      { createdVia: options.createdVia, ...(options.actor ? { actor: options.actor } : {}) },
    );
    if (!userCreated) throw new AlreadyExistsError("a user with this email already exists");
    return { orgId, owner: user };
  }

  async setRoles(caller: Principal, userId: string, roles: RoleName[]): Promise<ActiveUser> {
    const target = await this.userInOrg(caller, userId);
    const grantsOwner = roles.includes("owner") && !target.roles.includes("owner");
    const removesOwner = target.roles.includes("owner") && !roles.includes("owner");
    if ((grantsOwner || removesOwner) && !caller.roles.includes("owner")) {
      throw new PermissionDeniedError("only an owner grants or removes the owner role");
    }
    const result = await handleCommand(this.#store, {
      subject: Subjects.user(userId),
      reducer: userReducer,
      actor: caller.subject,
      decide: (state) => decideSetRoles(state, roles),
    });
    if (result.state.kind !== "active") throw new NotFoundError("user not found");
    return result.state;
  }

  async signupOpen(): Promise<boolean> {
    return (await this.#store.load(Subjects.signup(), signupPolicyReducer)).state.open;
  }

  async setSignupPolicy(open: boolean, changedBy: string): Promise<void> {
    await handleCommand(this.#store, {
      subject: Subjects.signup(),
      reducer: signupPolicyReducer,
      actor: changedBy,
      decide: (state) => (state.open === open ? [] : [SignupPolicyChanged.create({ open, changedBy })]),
    });
  }

  /**
   * Appends a claim if the subject has none; returns the owner id either way.
   * Expected sequence 0 makes the first claim win atomically.
   */
  async #claim(
    subject: string,
    reducer: typeof emailClaimReducer,
    proposedOwner: string,
    event: (ownerId: string) => ReturnType<typeof EmailClaimed.create>,
  ): Promise<string> {
    for (let attempt = 0; attempt < 3; attempt++) {
      const { state } = await this.#store.load(subject, reducer);
      if ((state as Claim).kind === "claimed") return (state as Extract<Claim, { kind: "claimed" }>).ownerId;
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
