import { type EventOf, type NewEvent, type Reducer, unreachable } from "@spool/kit";
import { AuthEvents, OrganizationCreated, Subjects } from "./events.js";

const OrganizationEvents = AuthEvents.pick("OrganizationCreated");
const SlugEvents = AuthEvents.pick("OrganizationSlugClaimed");
const EmailEvents = AuthEvents.pick("EmailClaimed");
const SignupEvents = AuthEvents.pick("SignupPolicyChanged");

export type Organization = { kind: "none" } | { kind: "active"; orgId: string; name: string; slug: string };

export const organizationReducer: Reducer<Organization, EventOf<typeof OrganizationEvents>> = {
  initial: () => ({ kind: "none" }),
  decode: OrganizationEvents.decode,
  evolve: (state, event) => {
    switch (event.type) {
      case "OrganizationCreated": {
        const e = event.data;
        return { kind: "active", orgId: e.orgId, name: e.name, slug: e.slug };
      }
      case "unknown":
        return state;
      default:
        return unreachable(event);
    }
  },
};

export const OrganizationAggregate = { subject: Subjects.org, reducer: organizationReducer };

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

export const slugClaimReducer: Reducer<Claim, EventOf<typeof SlugEvents>> = {
  initial: () => ({ kind: "none" }),
  decode: SlugEvents.decode,
  evolve: (state, event) => {
    switch (event.type) {
      case "OrganizationSlugClaimed":
        return state.kind === "none" ? { kind: "claimed", ownerId: event.data.orgId } : state;
      case "unknown":
        return state;
      default:
        return unreachable(event);
    }
  },
};

export const emailClaimReducer: Reducer<Claim, EventOf<typeof EmailEvents>> = {
  initial: () => ({ kind: "none" }),
  decode: EmailEvents.decode,
  evolve: (state, event) => {
    switch (event.type) {
      case "EmailClaimed":
        return state.kind === "none" ? { kind: "claimed", ownerId: event.data.userId } : state;
      case "unknown":
        return state;
      default:
        return unreachable(event);
    }
  },
};

export const signupPolicyReducer: Reducer<{ open: boolean }, EventOf<typeof SignupEvents>> = {
  initial: () => ({ open: false }),
  decode: SignupEvents.decode,
  evolve: (state, event) => {
    switch (event.type) {
      case "SignupPolicyChanged":
        return { open: event.data.open };
      case "unknown":
        return state;
      default:
        return unreachable(event);
    }
  },
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
