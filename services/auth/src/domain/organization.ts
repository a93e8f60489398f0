import type { NewEvent, Reducer } from "@spool/kit";
import { EmailClaimed, OrganizationCreated, OrganizationSlugClaimed, SignupPolicyChanged } from "./events.js";

export type Organization = { kind: "none" } | { kind: "active"; orgId: string; name: string; slug: string };

export const organizationReducer: Reducer<Organization> = {
  initial: () => ({ kind: "none" }),
  evolve: (state, event) => {
    if (OrganizationCreated.is(event)) {
      const e = OrganizationCreated.decode(event.data);
      return { kind: "active", orgId: e.orgId, name: e.name, slug: e.slug };
    }
    return state;
  },
};

export function decideCreateOrganization(
  state: Organization,
  org: { orgId: string; name: string; slug: string },
): NewEvent[] {
  return state.kind === "none" ? [OrganizationCreated.create(org)] : [];
}

/**
 * A claim (slug or email) is a subject whose first event names its owner.
 * Appending the claim with expected sequence 0 makes uniqueness atomic.
 */
export type Claim = { kind: "none" } | { kind: "claimed"; ownerId: string };

export const slugClaimReducer: Reducer<Claim> = {
  initial: () => ({ kind: "none" }),
  evolve: (state, event) =>
    OrganizationSlugClaimed.is(event) && state.kind === "none"
      ? { kind: "claimed", ownerId: OrganizationSlugClaimed.decode(event.data).orgId }
      : state,
};

export const emailClaimReducer: Reducer<Claim> = {
  initial: () => ({ kind: "none" }),
  evolve: (state, event) =>
    EmailClaimed.is(event) && state.kind === "none"
      ? { kind: "claimed", ownerId: EmailClaimed.decode(event.data).userId }
      : state,
};

export const signupPolicyReducer: Reducer<{ open: boolean }> = {
  initial: () => ({ open: false }),
  evolve: (state, event) =>
    SignupPolicyChanged.is(event) ? { open: SignupPolicyChanged.decode(event.data).open } : state,
};

/** 3-40 of a-z, 0-9 and '-', not starting or ending with '-'. */
export function slugProblem(slug: string): string | undefined {
  return /^[a-z0-9](?:[a-z0-9-]{1,38})[a-z0-9]$/.test(slug) ? undefined : "must be 3-40 of a-z, 0-9 and '-'";
}

/** Emails are compared in a normalised form: trimmed, NFKC, lowercased. */
export function normaliseEmail(email: string): string {
  return email.trim().normalize("NFKC").toLowerCase();
}

export function emailProblem(email: string): string | undefined {
  if (email.length > 254) return "must be at most 254 characters";
  return /^[^\s@]+@[^\s@]+\.[^\s@]+$/u.test(email) ? undefined : "must be an email address";
}
